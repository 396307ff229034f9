import math

import mpmath
import numpy as np
import pytest
import sympy as sp
import torch

from lmbook import relu_nngp_ntk
from lmbook.kernels import arccos_expectations, derive_arccos_expectations

F64 = torch.float64


def naive(x, L, sw, sb):
    """Textbook recursion with arccos(rho): right to ~1e-15 away from rho = +-1, off by ~sqrt(eps)
    near it."""
    S = sw**2 * x @ x.T / x.shape[1] + sb**2
    T = S.copy()
    for _ in range(L):
        rr = np.sqrt(np.outer(np.diag(S), np.diag(S)))
        t = np.arccos(np.clip(S / rr, -1, 1))
        S = sw**2 * rr * (np.sin(t) + (np.pi - t) * np.cos(t)) / (2 * np.pi) + sb**2
        T = S + T * sw**2 * (np.pi - t) / (2 * np.pi)
    return S, T


def mp_pair(x, y, L, sw, sb):
    """(Sigma^L, Theta^L) of one pair, the same recursion in 50-digit arithmetic (mpmath)."""
    with mpmath.workdps(50):
        sw, sb, d = mpmath.mpf(sw), mpmath.mpf(sb), len(x)
        dot = lambda u, v: mpmath.fsum(mpmath.mpf(a) * mpmath.mpf(b) for a, b in zip(u, v))
        q1, q2, c = (sw**2 * dot(u, v) / d + sb**2 for u, v in [(x, x), (y, y), (x, y)])
        T = c
        for _ in range(L):
            t = mpmath.acos(c / mpmath.sqrt(q1 * q2))
            c = (
                sw**2
                * mpmath.sqrt(q1 * q2)
                * (mpmath.sin(t) + (mpmath.pi - t) * mpmath.cos(t))
                / (2 * mpmath.pi)
                + sb**2
            )
            T = c + T * sw**2 * (mpmath.pi - t) / (2 * mpmath.pi)
            q1, q2 = sw**2 * q1 / 2 + sb**2, sw**2 * q2 / 2 + sb**2
        return float(c), float(T)


def test_sympy_derivation_gives_the_closed_forms():
    theta, q1, q2, e_relu, e_step = arccos_expectations()
    _, _, _, d_relu, d_step = derive_arccos_expectations()
    assert sp.simplify(d_relu - e_relu) == 0 and sp.simplify(d_step - e_step) == 0
    # the chapter card's Monte Carlo check: 0.2414 and 0.2985 at rho = 0.3, unit variances
    at = {theta: sp.acos(sp.Rational(3, 10)), q1: 1, q2: 1}
    assert float(e_relu.subs(at)) == pytest.approx(0.24138, abs=1e-5)
    assert float(e_step.subs(at)) == pytest.approx(0.29849, abs=1e-5)


def test_sympy_lambdified_agrees_with_numpy_closed_form():
    """Sigma^1 = sw^2 E_relu + sb^2 and Theta^1 - Sigma^1 = Sigma^0 sw^2 E_step, with
    (q1, q2, theta) from Sigma^0."""
    theta, q1, q2, e_relu, e_step = arccos_expectations()
    f_relu, f_step = (
        sp.lambdify((theta, q1, q2), e_relu, "numpy"),
        sp.lambdify(theta, e_step, "numpy"),
    )
    x = np.random.default_rng(1).normal(size=(7, 4))
    sw, sb = 1.3, 0.4
    S0 = sw**2 * x @ x.T / 4 + sb**2
    q = np.diag(S0)
    t = np.arccos(np.clip(S0 / np.sqrt(np.outer(q, q)), -1, 1))
    off = ~np.eye(7, dtype=bool)  # arccos is only accurate off the diagonal
    S1, T1 = relu_nngp_ntk(x, 1, sw, sb)
    np.testing.assert_allclose(
        S1[off], (sw**2 * f_relu(t, q[:, None], q[None, :]) + sb**2)[off], rtol=1e-13
    )
    np.testing.assert_allclose(
        (T1 - S1)[off], (S0 * sw**2 * f_step(t))[off], rtol=1e-12, atol=1e-14
    )


def test_matches_textbook_recursion_for_generic_inputs():
    x = np.random.default_rng(0).normal(size=(30, 6))
    off = ~np.eye(30, dtype=bool)
    for L in range(4):
        for sw, sb in [(math.sqrt(2), 0.0), (1.0, 0.3), (2.0, 1.0)]:
            for mine, ref in zip(relu_nngp_ntk(x, L, sw, sb), naive(x, L, sw, sb)):
                assert np.abs(mine - ref)[off].max() <= 1e-13 * np.abs(ref).max()


def test_hidden_layers_zero_is_the_linear_readout():
    x = np.random.default_rng(2).normal(size=(5, 3))
    S, T = relu_nngp_ntk(x, 0, 1.5, 0.2)
    np.testing.assert_allclose(S, 1.5**2 * x @ x.T / 3 + 0.04, rtol=1e-14, atol=1e-15)
    np.testing.assert_array_equal(S, T)


@pytest.mark.parametrize("L", [1, 2, 4])
def test_symmetric_psd_and_float64(L):
    x = np.random.default_rng(3).normal(size=(25, 5))
    for K in relu_nngp_ntk(torch.as_tensor(x), L, 1.2, 0.1):  # torch input accepted too
        assert K.dtype == np.float64 and K.shape == (25, 25)
        np.testing.assert_array_equal(K, K.T)
        assert np.linalg.eigvalsh(K).min() >= -1e-12 * np.abs(K).max()


def test_identical_rows_give_exactly_the_diagonal_and_diagonal_is_exact():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(6, 5))
    x = np.vstack([x, x[2], 3 * x[1], x[2]])  # rows 2, 6 and 8 identical
    sw, sb, L = 1.4, 0.3, 3
    S, T = relu_nngp_ntk(x, L, sw, sb)
    for K in (S, T):
        assert K[2, 6] == K[2, 2] == K[6, 6] == K[2, 8] == K[8, 8]
        np.testing.assert_array_equal(K[2], K[6])
    # the diagonal against its exact recursion
    # q^l = sw^2 q/2 + sb^2, Theta^l = q^l + Theta^{l-1} sw^2/2
    q = sw**2 * (x * x).sum(1) / 5 + sb**2
    th = q.copy()
    for _ in range(L):
        q = sw**2 * q / 2 + sb**2
        th = q + th * sw**2 / 2
    np.testing.assert_allclose(np.diag(S), q, rtol=1e-14)
    np.testing.assert_allclose(np.diag(T), th, rtol=1e-14)


@pytest.mark.parametrize("sb", [0.0, 0.5])
def test_nearly_identical_and_colinear_rows_keep_full_accuracy(sb):
    """Plain arccos(rho) errs by ~sqrt(eps) ~ 1e-8 at rho ~ 1 (colinear x, 3x with sb = 0 or
    x, x + 1e-9 dx); the closed form must agree with 50-digit arithmetic to 1e-13 relative."""
    rng = np.random.default_rng(5)
    x0 = rng.normal(size=4)
    pairs = [
        (x0, x0 + 1e-9 * rng.normal(size=4)),
        (x0, x0 + 1e-5 * rng.normal(size=4)),
        (x0, 3 * x0),
    ]
    for L in (1, 3):
        for a, b in pairs:
            S, T = relu_nngp_ntk(np.stack([a, b]), L, 1.3, sb)
            s_ref, t_ref = mp_pair(a, b, L, 1.3, sb)
            assert S[0, 1] == pytest.approx(s_ref, rel=1e-13) and T[0, 1] == pytest.approx(
                t_ref, rel=1e-13
            )


def test_antipodal_rows_take_the_t_equals_pi_limit():
    x = np.array([[0.3, -1.2, 0.7], [-0.3, 1.2, -0.7], [-0.6, 2.4, -1.4]])  # x, -x, -2x
    sw = 1.4
    q0 = sw**2 * (x[0] ** 2).sum() / 3
    S1, T1 = relu_nngp_ntk(x, 1, sw, 0.0)
    # t = pi: E[relu relu] = 0 and E[relu' relu'] = 0,
    # so Sigma^1 = Theta^1 = 0 between x and -x, -2x
    assert np.abs(S1[0, 1:]).max() <= 1e-15 * q0 and np.abs(T1[0, 1:]).max() <= 1e-15 * q0
    # one layer later the angle is pi/2: Sigma^2 = sw^2 sqrt(q1 q1')/(2 pi), Theta^2 = Sigma^2 + 0
    S2, T2 = relu_nngp_ntk(x, 2, sw, 0.0)
    q1 = sw**2 * q0 / 2
    np.testing.assert_allclose(S2[0, 1:], sw**2 * q1 * np.array([1, 2]) / (2 * np.pi), rtol=1e-14)
    np.testing.assert_allclose(T2[0, 1:], S2[0, 1:], rtol=1e-14)
    # the same through SymPy at theta = pi
    theta, q1s, q2s, e_relu, e_step = arccos_expectations()
    assert e_relu.subs(theta, sp.pi) == 0 and e_step.subs(theta, sp.pi) == 0
    # with a bias the rows are no longer antipodal: finite and equal to the textbook recursion
    for L in (1, 3):
        for mine, ref in zip(relu_nngp_ntk(x, L, sw, 0.5), naive(x, L, sw, 0.5)):
            assert np.isfinite(mine).all()
            np.testing.assert_allclose(mine, ref, rtol=1e-13)


def mc_kernels(x, L, sw, sb, width, nets, seed):
    """Per random network: (Sigma^L_emp, Theta^1_emp), the readout's conditional covariance given
    the last hidden layer, sw^2 relu(h^L).relu(h^L)'/width + sb^2, and (L = 1 only) the empirical
    NTK of the network.

    Layer 1 uses real N(0, 1) weights. A later layer's pre-activations on the m inputs, given the
    activations A of the layer below, are exactly i.i.d. rows N(0, sw^2 A A^T/width + sb^2), so
    they are drawn from that law: the same finite-width networks, at O(width m) rather than
    O(width^2) cost."""
    g = torch.Generator().manual_seed(seed)
    X = torch.as_tensor(x, dtype=F64)
    m, d = X.shape
    W1 = torch.randn(nets, width, d, generator=g, dtype=F64)
    h = sw / math.sqrt(d) * W1 @ X.T + sb * torch.randn(
        nets, width, 1, generator=g, dtype=F64
    )  # (nets, width, m)
    for _ in range(L - 1):
        a = torch.relu(h)
        K = sw**2 * a.transpose(1, 2) @ a / width + sb**2
        lam, V = torch.linalg.eigh(K)
        h = torch.randn(nets, width, m, generator=g, dtype=F64) @ (
            V * lam.clamp(min=0).sqrt().unsqueeze(1)
        ).transpose(1, 2)
    a = torch.relu(h)
    S = sw**2 * a.transpose(1, 2) @ a / width + sb**2
    if L != 1:
        return S.numpy(), None
    # L = 1: d f/d(W1, b1) of unit k is sw/sqrt(width) v_k 1(h_k > 0) (sw x/sqrt(d), sb);
    # readout gives S
    v = torch.randn(nets, width, 1, generator=g, dtype=F64)
    D = v * (h > 0)
    S0 = sw**2 * X @ X.T / d + sb**2
    return S.numpy(), (S + S0 * sw**2 * (D.transpose(1, 2) @ D) / width).numpy()


@pytest.mark.parametrize(
    "L, sw, sb", [(1, math.sqrt(2), 0.0), (1, 1.3, 0.4), (2, 1.3, 0.4), (3, 1.6, 0.2)]
)
def test_nngp_and_ntk_match_monte_carlo_of_wide_networks(L, sw, sb):
    """Mean over 32 random networks of width 16384 vs the closed form, entry by entry.

    Tolerance: 5 standard errors of that mean (SE = spread over the networks / sqrt(32); a t
    statistic with 31 degrees of freedom exceeds 5 with probability ~2e-5), plus L/width of the
    diagonal scale for the finite-width bias of Sigma^L, which is O(1/width) (zero for L = 1, where
    every estimate here is unbiased at any width). The resulting relative precision is ~0.3%: a
    wrong index, e.g. dotSigma^l from Sigma^l instead of Sigma^{l-1}, moves the L = 1 NTK by ~5%
    and is rejected."""
    x = np.random.default_rng(10).normal(size=(5, 4))
    x[4] = -x[0]  # an antipodal pair
    width, nets = 16384, 32
    S_mc, T_mc = mc_kernels(x, L, sw, sb, width, nets, seed=L)
    S, T = relu_nngp_ntk(x, L, sw, sb)
    for K, mc in [(S, S_mc), (T, T_mc)]:
        if mc is None:
            continue
        se = mc.std(0, ddof=1) / math.sqrt(nets)
        scale = np.sqrt(np.outer(np.diag(K), np.diag(K)))
        assert (np.abs(mc.mean(0) - K) <= 5 * se + (L - 1) / width * scale + 1e-15 * scale).all(), (
            mc.mean(0) - K
        ) / se


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.ones(3), "shape"),
        (np.ones((2, 3, 1)), "shape"),
        (np.ones((0, 3)), "shape"),
        (np.ones((3, 0)), "shape"),
        (np.array([[1.0, np.nan]]), "finite"),
    ],
)
def test_bad_inputs_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        relu_nngp_ntk(bad, 1, 1.0, 0.1)


def test_bad_arguments_raise():
    x = np.ones((2, 3))
    for L in (-1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="hidden_layers"):
            relu_nngp_ntk(x, L, 1.0, 0.1)
    for sw, sb in [(0.0, 0.1), (-1.0, 0.1), (1.0, -0.1), (np.inf, 0.0), (1.0, np.nan)]:
        with pytest.raises(ValueError, match="sigma"):
            relu_nngp_ntk(x, 1, sw, sb)
    with pytest.raises(ValueError, match="zero"):
        relu_nngp_ntk(np.array([[1.0, 2.0], [0.0, 0.0]]), 1, 1.0, 0.0)
    assert np.isfinite(relu_nngp_ntk(np.array([[1.0, 2.0], [0.0, 0.0]]), 2, 1.0, 0.1)[1]).all()
