import math

import numpy as np
import pytest
import scipy.integrate
import scipy.stats
import sympy as sp
import torch
from torch.func import grad, vmap

from lmbook import sgd_noise as sn

F64 = torch.float64

# The recursion in closed form (typed here as the exact answer the library must reproduce):
# s_i' = (1 - eta l_i)^2 s_i + (eta^2/B)(l_i^2 s_i + l_i sum_j l_j s_j + sigma^2 l_i).
EXACT = sn.MomentRecursion(
    diag=lambda eta, B, lm: (1 - eta * lm) ** 2 + 2 * eta**2 * lm**2 / B,
    cross=lambda eta, B, li, lj: eta**2 * li * lj / B,
    const=lambda eta, B, sigma, lm: eta**2 * sigma**2 * lm / B,
)


def test_gaussian_expectation_moments_and_isserlis():
    x, y = sp.symbols("x y")
    u, v = sp.symbols("u v", positive=True)
    assert sn.gaussian_expectation(x**4, [x], [v]) == 3 * v**2
    assert sn.gaussian_expectation(x**6, [x], [v]) == 15 * v**3
    assert sn.gaussian_expectation(x**2 * y**2 + x * y + x**3, [x, y], [u, v]) == u * v
    assert sn.gaussian_expectation(5 + x**2, [x], [v]) == 5 + v
    # Isserlis: E[x x^T A x x^T] = 2 L A L + tr(L A) L for x ~ N(0, L), L diagonal (d = 2)
    a11, a12, a22 = sp.symbols("a11 a12 a22")
    A, L, X = sp.Matrix([[a11, a12], [a12, a22]]), sp.diag(u, v), sp.Matrix([x, y])
    lhs = (X * X.T * A * X * X.T).applyfunc(lambda z: sn.gaussian_expectation(z, [x, y], [u, v]))
    assert (lhs - 2 * L * A * L - (L * A).trace() * L).expand() == sp.zeros(2, 2)


@pytest.mark.parametrize("d,B,lam", [(1, 1, 1.0), (5, 4, 0.3), (20, 16, 2.0)])
def test_isotropic_eta_max_closed_form(d, B, lam):
    assert EXACT.eta_max(B, np.full(d, lam)) == pytest.approx(
        2 * B / (lam * (B + d + 1)), rel=1e-10
    )


def test_stationary_risk_isotropic_closed_form_and_instability():
    d, B, lam, sigma = 6, 3, 0.7, 0.5
    lams = np.full(d, lam)
    for eta in [0.05, 0.3, 0.9 * EXACT.eta_max(B, lams)]:
        T = d * eta * lam / (2 * B - eta * lam * (B + 1))
        assert EXACT.stationary_risk(eta, B, sigma, lams) == pytest.approx(
            sigma**2 * T / (2 * (1 - T)), rel=1e-10
        )
    assert EXACT.stationary_risk(1.01 * EXACT.eta_max(B, lams), B, sigma, lams) == math.inf


def test_small_step_limit_is_the_sde_value():
    lam, B, sigma, eta = sn.power_law_spectrum(20, 1.5), 4, 0.5, 1e-5
    assert EXACT.stationary_risk(eta, B, sigma, lam) == pytest.approx(
        eta * sigma**2 * lam.sum() / (4 * B), rel=1e-4
    )


def test_perron_vector_and_risk_path():
    lam, B, sigma, eta = sn.power_law_spectrum(8, 1.5), 2, 0.5, 0.4
    rho, v = EXACT.perron(eta, B, lam)
    assert (
        np.allclose(EXACT.matrix(eta, B, lam) @ v, rho * v)
        and (v >= 0).all()
        and v.sum() == pytest.approx(1)
    )
    assert rho == pytest.approx(EXACT.spectral_radius(eta, B, lam))
    path = EXACT.risk_path(eta, B, sigma, lam, 3000)
    assert path[0] == 0 and path[-1] == pytest.approx(
        EXACT.stationary_risk(eta, B, sigma, lam), rel=1e-6
    )
    s_inf = EXACT.stationary(eta, B, sigma, lam)
    assert np.allclose(EXACT.risk_path(eta, B, sigma, lam, 5, s0=s_inf), 0.5 * lam @ s_inf)


@pytest.mark.parametrize(
    "eta,B,burn,steps", [(0.4, 2, 0, 1), (0.4, 2, 50, 300), (0.05, 1, 400, 1200)]
)
def test_window_mean_is_the_average_of_the_risk_path(eta, B, burn, steps):
    lam, sigma = sn.power_law_spectrum(8, 1.5), 0.5
    path = EXACT.risk_path(eta, B, sigma, lam, burn + steps)
    assert EXACT.window_mean(eta, B, sigma, lam, burn, steps) == pytest.approx(
        path[burn + 1 :].mean(), rel=1e-10
    )
    s0 = np.linspace(0.1, 1.0, 8)
    path0 = EXACT.risk_path(eta, B, sigma, lam, burn + steps, s0=s0)
    assert EXACT.window_mean(eta, B, sigma, lam, burn, steps, s0=s0) == pytest.approx(
        path0[burn + 1 :].mean(), rel=1e-10
    )
    assert EXACT.window_mean(1.01 * EXACT.eta_max(B, lam), B, sigma, lam, burn, steps) == math.inf


def test_sgd_update_is_minus_eta_times_the_autograd_gradient():
    g = torch.Generator().manual_seed(0)
    lam = torch.tensor(sn.power_law_spectrum(5, 1.5))
    w_star, w = torch.randn(5, generator=g, dtype=F64), torch.randn(3, 7, 5, generator=g, dtype=F64)
    x, y = sn.draw_batch((3, 7), 4, lam, w_star, 0.5, g)
    eta = torch.tensor([0.1, 0.2, 0.3], dtype=F64).reshape(-1, 1, 1)

    def batch_loss(wi, xi, yi):
        return 0.5 * ((yi - xi @ wi) ** 2).mean()

    g_auto = vmap(vmap(grad(batch_loss)))(w, x, y)
    assert torch.allclose(sn.sgd_update(w, x, y, eta), w - eta * g_auto, atol=1e-13)


def test_draw_batch_statistics():
    g = torch.Generator().manual_seed(1)
    lam = torch.tensor([2.0, 0.5], dtype=F64)
    w_star = torch.tensor([1.0, -1.0], dtype=F64)
    x, y = sn.draw_batch((20000,), 5, lam, w_star, 0.5, g)
    assert x.shape == (20000, 5, 2) and y.shape == (20000, 5)
    assert torch.allclose(x.var((0, 1)), lam, rtol=0.02)
    assert (y - x @ w_star).var().item() == pytest.approx(0.25, rel=0.02)


def test_one_step_growth_mean_is_the_moment_map():
    """E[r_1]/r_0 from any start e0 is lam.(M e0^2) / lam.e0^2 (sigma = 0), here within 4 SE."""
    g = torch.Generator().manual_seed(2)
    lam_np = sn.power_law_spectrum(4, 1.5)
    lam = torch.tensor(lam_np)
    e0 = torch.tensor([[1.0, 0.5, -0.3, 0.2], [0.0, 1.0, 0.0, 0.0]], dtype=F64)
    etas, B = [0.5, 0.9], 2
    ratio = sn.one_step_growth(etas, B, lam, e0, 40000, g)
    for k, eta in enumerate(etas):
        s0 = e0[k].numpy() ** 2
        pred = lam_np @ EXACT.matrix(eta, B, lam_np) @ s0 / (lam_np @ s0)
        se = ratio[k].std().item() / math.sqrt(ratio.shape[1])
        assert abs(ratio[k].mean().item() - pred) < 4 * se


def test_stationary_runs_match_the_exact_risk():
    g = torch.Generator().manual_seed(3)
    lam_np = sn.power_law_spectrum(5, 1.5)
    lam, sigma = torch.tensor(lam_np), 0.5
    configs = [(0.3, 2), (0.6, 4), (0.2, 1)]
    runs = sn.stationary_runs(configs, lam, sigma, torch.ones(5, dtype=F64), 64, 300, 600, g)
    assert runs.chain_means.shape == (3, 64) and torch.equal(runs.of(0.6, 4), runs.chain_means[1])
    for (eta, B), m, se in zip(configs, runs.mean, runs.se):
        path = EXACT.risk_path(eta, B, sigma, lam_np, 900)
        assert abs(m - path[301:].mean()) < 4 * se


def test_lyapunov_exponent_of_one_mode():
    """d = 1, B = 1: e' = (1 - eta lam z^2) e, so the exponent is E ln|1 - eta lam z^2|, z ~ N(0,
    1)."""
    g = torch.Generator().manual_seed(4)
    lam, eta = torch.tensor([1.0], dtype=F64), 1.5
    exact = sum(
        scipy.integrate.quad(
            lambda z: math.log(abs(1 - eta * z * z)) * scipy.stats.norm.pdf(z),
            a,
            b,
            points=None if not (a < (1 / eta) ** 0.5 < b) else [(1 / eta) ** 0.5],
            limit=200,
        )[0]
        for a, b in [(-np.inf, -1), (-1, 0), (0, 1), (1, np.inf)]
    )
    ly = sn.lyapunov_exponents([eta], 1, lam, 64, 2000, 10, g)
    assert ly.shape == (1, 64)
    assert abs(ly.mean().item() - exact) < 4 * ly.std().item() / 8


def test_simulation_restores_the_thread_count():
    before = torch.get_num_threads()
    g = torch.Generator().manual_seed(5)
    lam = torch.tensor(sn.power_law_spectrum(3, 1.5))
    sn.stationary_runs([(0.1, 1)], lam, 0.5, torch.zeros(3, dtype=F64), 4, 2, 3, g)
    sn.lyapunov_exponents([0.5], 1, lam, 4, 3, 1, g)
    assert torch.get_num_threads() == before


def _one_mode_fourth_edge(B):
    """First root of E(1 - uY)^4 = 1, Y = chi^2_B / B (E chi2^n = B (B+2) ... (B+2n-2))."""
    m = [np.prod([B + 2 * j for j in range(n)]) / B**n for n in range(5)]
    coef = [math.comb(4, n) * (-1) ** n * m[n] for n in range(1, 5)]   # of u^1 .. u^4
    roots = np.roots(coef[::-1])                                          # divided by u
    return min(r.real for r in roots if abs(r.imag) < 1e-12 and r.real > 0)


@pytest.fixture(scope="module")
def fourth():
    off, diag, symbols = sn.fourth_moment_polynomials()
    return off, diag, symbols, sn.FourthMomentMap.from_polynomials(off, diag, symbols)


@pytest.mark.parametrize("B", [1, 3])
def test_fourth_moment_edge_of_one_mode(fourth, B):
    edge = fourth[3].edge(B, np.ones(1), upper=2 * B / (B + 2))
    assert edge == pytest.approx(_one_mode_fourth_edge(B), rel=1e-7)


def test_fourth_moment_polynomials_against_brute_force_isserlis(fourth):
    """d = 2, B = 2: expand e' with two explicit samples and take the Gaussian expectation."""
    off, diag, (eta, B, li, lj, ei, ej, q) = fourth[:3]
    l1, l2 = sp.Rational(1), sp.Rational(1, 3)
    e1, e2 = sp.symbols("e1 e2", real=True)
    xs = sp.symbols("x11 x12 x21 x22", real=True)
    samples = [sp.Matrix(xs[:2]), sp.Matrix(xs[2:])]
    e = sp.Matrix([e1, e2])
    h = sp.Rational(3, 10)
    new = e - h / 2 * sum((x * (x.T * e)[0] for x in samples), sp.zeros(2, 1))
    var = [l1, l2, l1, l2]
    brute_off = sn.gaussian_expectation(new[0] ** 2 * new[1] ** 2, xs, var)
    brute_diag = sn.gaussian_expectation(new[0] ** 4, xs, var)
    point = {eta: h, B: 2, li: l1, lj: l2, ei: e1, ej: e2, q: l1 * e1**2 + l2 * e2**2}
    assert sp.expand(off.subs(point) - brute_off) == 0
    assert sp.expand(diag.subs({eta: h, B: 2, li: l1, ei: e1, q: l1 * e1**2 + l2 * e2**2})
                     - brute_diag) == 0


def test_fourth_moment_map_applies_the_sign_averaged_polynomials(fourth):
    off, diag, (eta, B, li, lj, ei, ej, q), F = fourth
    lam, e, h, b = np.array([1.0, 0.4, 0.1]), np.array([0.7, -1.2, 2.0]), 0.35, 3
    S = np.outer(e**2, e**2)          # sign-averaged state of a fixed |e|
    qv = float(lam @ e**2)
    got = F.apply(h, b, lam, S)
    f_off = sp.lambdify((eta, B, li, lj, ei, ej, q), off)
    f_diag = sp.lambdify((eta, B, li, ei, q), diag)
    for i in range(3):
        for j in range(3):
            if i == j:
                want = f_diag(h, b, lam[i], e[i], qv)
            else:             # average over the signs of e_i, e_j (q does not depend on them)
                want = np.mean([f_off(h, b, lam[i], lam[j], si * e[i], sj * e[j], qv)
                                for si in (1, -1) for sj in (1, -1)])
            assert got[i, j] == pytest.approx(want, rel=1e-10)
    assert F.spectral_radius(h, b, lam) > 0
