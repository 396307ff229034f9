"""lmbook.committee: Gaussian averages against Monte Carlo, the ODE right-hand side against
sampled SGD increments, the fixed point as a root, the simulators against each other and against
the ODE over a short window."""

import math

import numpy as np
import pytest
import sympy as sp
import torch

from lmbook import committee, gaussian_averages


def random_cov(rng, n):
    A = rng.standard_normal((n, n))
    return A @ A.T / n + 0.1 * np.eye(n)


def g(z):
    from scipy.special import erf

    return erf(z / math.sqrt(2))


def dg(z):
    return math.sqrt(2 / math.pi) * np.exp(-z * z / 2)


def mc(f, C, rng, n=400_000):
    u = rng.standard_normal((n, C.shape[0])) @ np.linalg.cholesky(C).T
    v = f(u)
    return v.mean(), v.std() / math.sqrt(n)


def test_averages_match_monte_carlo():
    rng = np.random.default_rng(1)
    for _ in range(3):
        C = random_cov(rng, 4)
        cases = [
            (committee.i2(C, 0, 1), lambda u: g(u[:, 0]) * g(u[:, 1])),
            (committee.i3(C, 0, 1, 2), lambda u: dg(u[:, 0]) * u[:, 1] * g(u[:, 2])),
            (committee.i3(C, 2, 2, 0), lambda u: dg(u[:, 2]) * u[:, 2] * g(u[:, 0])),
            (committee.i4(C, 0, 1, 2, 3),
             lambda u: dg(u[:, 0]) * dg(u[:, 1]) * g(u[:, 2]) * g(u[:, 3])),
            (committee.i4(C, 0, 0, 1, 1), lambda u: dg(u[:, 0]) ** 2 * g(u[:, 1]) ** 2),
        ]
        for exact, f in cases:
            m, se = mc(f, C, rng)
            assert abs(exact - m) < 5 * se, (exact, m, se)


def test_derivation_is_the_printed_closed_forms():
    d = committee.derive_averages()
    rng = np.random.default_rng(2)
    f = {k: sp.lambdify(committee._entries(n), d[k], "numpy")
         for n, k in ((3, "I3"), (3, "I3_saad_solla"), (4, "I4"), (4, "I4_saad_solla"))}
    for _ in range(10):
        C = random_cov(rng, 4)
        e3 = [C[i, j] for i in range(3) for j in range(i, 3)]
        e4 = [C[i, j] for i in range(4) for j in range(i, 4)]
        assert f["I3"](*e3) == pytest.approx(f["I3_saad_solla"](*e3), abs=1e-14)
        assert f["I4"](*e4) == pytest.approx(f["I4_saad_solla"](*e4), abs=1e-14)
        i2 = float(d["I2"].subs({d["C3"][0, 0]: C[0, 0], d["C3"][0, 1]: C[0, 1],
                                 d["C3"][1, 1]: C[1, 1]}))
        assert i2 == pytest.approx(
            gaussian_averages.phiphi(C[0, 0], C[0, 1], C[1, 1], 1 / math.sqrt(2)), abs=1e-14)


def test_eps_g_zero_at_teacher_and_monte_carlo():
    T = np.eye(2)
    assert committee.eps_g(T, T, T) == pytest.approx(0, abs=1e-15)
    rng = np.random.default_rng(3)
    C = random_cov(rng, 4)
    Q, R = C[:2, :2], C[:2, 2:]
    T = C[2:, 2:]
    m, se = mc(lambda u: 0.5 * (g(u[:, 2:]).sum(1) - g(u[:, :2]).sum(1)) ** 2, C, rng)
    assert abs(committee.eps_g(Q, R, T) - m) < 5 * se


def test_rhs_is_the_mean_sgd_increment():
    """N E[Delta Q], N E[Delta R] of one SGD step (fields sampled from C, |x|^2/N = 1) against
    the ODE right-hand side, eta^2 term included; and batch dims."""
    rng = np.random.default_rng(4)
    C = random_cov(rng, 4)
    Q, R, T = C[:2, :2], C[:2, 2:], C[2:, 2:]
    eta = 0.8
    u = rng.standard_normal((400_000, 4)) @ np.linalg.cholesky(C).T
    lam, nu = u[:, :2], u[:, 2:]
    delta = dg(lam) * (g(nu).sum(1) - g(lam).sum(1))[:, None]
    dQ = eta * (delta[:, :, None] * lam[:, None, :] + delta[:, None, :] * lam[:, :, None]) \
        + eta**2 * delta[:, :, None] * delta[:, None, :]
    dR = eta * delta[:, :, None] * nu[:, None, :]
    eQ, eR = committee.rhs(Q, R, T, eta)
    for exact, samples in ((eQ, dQ), (eR, dR)):
        se = samples.std(0) / math.sqrt(len(samples))
        assert np.all(np.abs(exact - samples.mean(0)) < 5 * se + 1e-12)
    bQ, bR = committee.rhs(np.stack([Q, Q]), np.stack([R, R]), T, eta)
    assert np.allclose(bQ[1], eQ) and np.allclose(bR[0], eR)
    sQ, _ = committee.rhs(Q, R, T, eta, small_eta=True)
    assert not np.allclose(sQ, eQ)


def test_fixed_point_and_jacobian():
    T = np.eye(2)
    Q, R = committee.symmetric_fixed_point(2, 1.0)
    assert max(np.abs(x).max() for x in committee.rhs(Q, R, T, 1.0)) < 1e-11
    Q0, R0 = committee.symmetric_fixed_point(2, 1.0, small_eta=True, guess=(0.33, 0.33, 0.4))
    assert np.allclose([Q0[0, 0], Q0[0, 1]], 1 / 3, atol=1e-7)
    assert R0[0, 1] == pytest.approx(1 / math.sqrt(6), abs=1e-7)
    J = committee.jacobian(Q, R, T, 1.0)
    y = committee.pack(Q, R)
    h = 1e-6
    for j in range(len(y)):
        e = np.zeros(len(y))
        e[j] = h
        fp = committee.pack(*committee.rhs(*committee.unpack(y + e, 2, 2), T, 1.0))
        fm = committee.pack(*committee.rhs(*committee.unpack(y - e, 2, 2), T, 1.0))
        assert np.allclose(J[:, j], (fp - fm) / (2 * h), atol=1e-7)
    lam, v, w = committee.escape_eigen(Q, R, T, 1.0)
    assert np.allclose(J @ v, lam * v) and w @ v == pytest.approx(1.0)
    assert lam > 0


def test_simulators_follow_the_ode_over_a_short_window():
    """Weight-space SGD and the exact overlap simulation against the ODE at alpha = 1 and 2, and
    against each other (N = 400: the O(1/N) bias is far below the tolerance)."""
    K = M = 2
    N, S, eta, sigma = 400, 16, 1.0, 0.5
    gen = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(N, M, generator=gen, dtype=torch.float64))
    B = math.sqrt(N) * basis.T
    w0 = sigma * torch.randn(S, K, N, generator=gen, dtype=torch.float64)
    _, Qw, Rw = committee.simulate(w0, B, eta, 2 * N, N, gen)
    T = np.eye(2)
    ew = committee.eps_g(Qw.numpy(), Rw.numpy(), T)                        # (3, S)
    rng = np.random.default_rng(0)
    alphas, Qf, Rf = committee.simulate_fields(
        committee.initial_gram(256, K, M, N, sigma, rng), K, N, eta, 2 * N, N, rng)
    ef = committee.eps_g(Qf, Rf, T)
    assert np.allclose(alphas, [0, 1, 2])
    ode = committee.eps_g(
        *committee.integrate(sigma**2 * np.eye(K), np.zeros((K, M)), T, eta, alphas), T)
    for e in (ew, ef):
        se = e.std(1) / math.sqrt(e.shape[1])
        assert np.all(np.abs(e.mean(1)[1:] - ode[1:]) < 5 * se[1:] + 0.002), (e.mean(1), ode)


def test_reused_data_is_drawn_from_the_set():
    """With a data set of one sample, every step uses that sample: the student moves only along
    it (and the teacher is untouched)."""
    gen = torch.Generator().manual_seed(1)
    N = 50
    B = torch.randn(2, N, generator=gen, dtype=torch.float64)
    w0 = torch.randn(3, 2, N, generator=gen, dtype=torch.float64)
    data = torch.randn(3, 1, N, generator=gen, dtype=torch.float64)
    w, _, _ = committee.simulate(w0, B, 0.5, 10, 10, gen, data=data)
    moved = w - w0
    cross = moved - (moved @ data.transpose(1, 2)) / (data * data).sum(-1, keepdim=True) * data
    assert cross.abs().max() < 1e-10


class _Replay:
    """A numpy-Generator stand-in that hands simulate_fields the whitened fields and chi^2 of
    given inputs x, so that its step can be compared with SGD on those very inputs."""

    def __init__(self, Z, chi2):
        self.Z, self.chi2 = Z, chi2

    def standard_normal(self, shape):
        assert shape == self.Z.shape
        return self.Z

    def chisquare(self, df, shape):
        assert shape == self.chi2.shape
        return self.chi2


def test_one_field_step_is_the_weight_step():
    """One SGD step of the overlap simulator, fed the fields of a real x, changes the Gram matrix
    exactly as the weight-space step on x does (to rounding)."""
    K = M = 2
    N, S, eta = 30, 3, 0.7
    gen = torch.Generator().manual_seed(5)
    basis, _ = torch.linalg.qr(torch.randn(N, M, generator=gen, dtype=torch.float64))
    B = math.sqrt(N) * basis.T                                   # T = I
    w0 = 0.6 * torch.randn(S, K, N, generator=gen, dtype=torch.float64)
    x = torch.randn(S, 1, N, generator=gen, dtype=torch.float64)
    _, Qw, Rw = committee.simulate(w0, B, eta, 1, 1, gen, data=x)
    Q0, R0, T = (t.numpy() for t in committee.order_parameters(w0, B))
    lam = (w0 @ x.transpose(1, 2))[..., 0].numpy() / math.sqrt(N)   # (S, K)
    nu = (x[:, 0] @ B.T).numpy() / math.sqrt(N)                      # (S, M), whitened: T = I
    # lambda = R nu + chol(Q - R R^T) z
    z = np.stack([np.linalg.solve(np.linalg.cholesky(Q0[s] - R0[s] @ R0[s].T),
                                  lam[s] - R0[s] @ nu[s]) for s in range(S)])
    Z = np.concatenate([z, nu], 1).T[None]                           # (1, L, S)
    chi2 = ((x[:, 0] ** 2).sum(-1).numpy() - (Z[0] ** 2).sum(0))[None]
    C0 = committee.field_covariance(Q0, R0, np.eye(M))
    _, Qf, Rf = committee.simulate_fields(C0, K, N, eta, 1, 1, _Replay(Z, chi2))
    assert np.abs(Qf[-1] - Qw[-1].numpy()).max() < 1e-13
    assert np.abs(Rf[-1] - Rw[-1].numpy()).max() < 1e-13
    assert np.abs(Qf[-1] - Q0).max() > 1e-3                         # the step did something


def test_extrapolation_weights():
    w = committee.extrapolation_weights((100, 200, 400))
    assert np.allclose(w, [-0.5, 0.5, 1.0])
    Ns = np.array([50, 80, 200, 1000.0])
    w = committee.extrapolation_weights(Ns)
    assert w @ (0.3 + 2.0 / Ns) == pytest.approx(0.3)              # exact on a + c / N
    with pytest.raises(ValueError):
        committee.extrapolation_weights((100, 100))
