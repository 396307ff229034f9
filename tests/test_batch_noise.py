"""lmbook.batch_noise against brute force: the optimal step on the exact recursion, chains against
the recursion, the hyperbola fit, the linearised network against brute force."""

import numpy as np
import pytest
import torch

from lmbook import batch_noise as bn
from lmbook import sgd_noise as sn

SIGMA = 0.3
LAM = 1.0 / np.arange(1, 5)
RECURSION = sn.MomentRecursion(
    diag=lambda eta, B, li: (1 - eta * li) ** 2 + eta**2 / B * 2 * li**2,
    cross=lambda eta, B, li, lj: eta**2 / B * li * lj,
    const=lambda eta, B, sigma, li: eta**2 / B * sigma**2 * li,
)


def coefficients(s):
    """Ensemble |G|^2, G^T H G, tr(H Sigma) of the linear model (the chapter's closed form)."""
    m1, m2, m3 = (LAM * s).sum(), (LAM**2 * s).sum(), (LAM**3 * s).sum()
    return m2, m3, m3 + (m1 + SIGMA**2) * (LAM**2).sum()


def step(s, B):
    g2, ghg, trhs = coefficients(s)
    return g2 / (ghg + trhs / B)


def b_noise(s):
    _, ghg, trhs = coefficients(s)
    return trhs / ghg


def dl_max(s):
    g2, ghg, _ = coefficients(s)
    return 0.5 * g2**2 / ghg


def path(B, target=0.05):
    return bn.greedy_path(RECURSION, step, b_noise, dl_max, LAM, SIGMA, B, target)


def test_greedy_step_minimises_the_next_mean_loss():
    s = np.array([1.0, 0.5, 2.0, 3.0])
    for B in (1, 8, 64):
        etas = np.linspace(0.01, 3.0, 3000)
        nxt = [0.5 * LAM @ (RECURSION.matrix(h, B, LAM) @ s + RECURSION.constant(h, B, SIGMA, LAM))
               for h in etas]
        assert abs(etas[int(np.argmin(nxt))] - step(s, B)) < 2e-3


def test_path_sums_split_the_steps_exactly():
    for B in (2, 16, 128):
        p = path(B)
        a_b, n_b = p.sums()
        assert abs(a_b + n_b / B - p.steps) < 1e-9 * p.steps
        assert p.risk[-1] <= 0.05 < p.risk[-2]
        assert p.steps < len(p.etas) <= p.steps + 1


def test_schedule_chains_follow_the_recursion():
    gen = torch.Generator().manual_seed(0)
    p = path(4, target=0.3)
    curves = bn.schedule_chains(p.etas, 4, torch.tensor(LAM), SIGMA, 20000, gen)
    mean = curves.mean(1).numpy()
    se = (curves.std(1) / curves.shape[1] ** 0.5).numpy()
    assert np.all(np.abs(mean - p.risk) < 5 * se + 1e-12)


def test_fit_hyperbola_recovers_its_parameters():
    b = np.array([1, 2, 4, 8, 16, 64.0])
    s_min, e_min = bn.fit_hyperbola(b, 12.0 + 300.0 / b)
    assert s_min == pytest.approx(12.0) and e_min == pytest.approx(300.0)


def test_crossing_step_interpolates():
    r = torch.tensor([[1.0], [0.5], [0.25]])
    assert float(bn.crossing_step(r, 0.375)[0]) == pytest.approx(1.5)


def _linearised(seed=2, n=40, p=6):
    gen = torch.Generator().manual_seed(seed)
    phi = torch.randn(n, p, generator=gen, dtype=torch.float64)
    u0 = torch.randn(n, generator=gen, dtype=torch.float64)
    return bn.LinearisedNetwork(phi, u0), gen


def test_linearised_coefficients_against_brute_force():
    lin, gen = _linearised()
    delta = torch.randn(3, 6, generator=gen, dtype=torch.float64)
    r, G, g2, ghg, trs, trhs = lin.coefficients(delta)
    Phi, N = lin.phi.numpy(), lin.phi.shape[0]
    H = Phi.T @ Phi / N
    for c in range(3):
        res = lin.u0.numpy() + Phi @ delta[c].numpy()
        g = Phi * res[:, None]                       # per-example gradients
        Gc = g.mean(0)
        Sig = (g - Gc).T @ (g - Gc) / N
        assert float(g2[c]) == pytest.approx(Gc @ Gc, rel=1e-10)
        assert float(ghg[c]) == pytest.approx(Gc @ H @ Gc, rel=1e-10)
        assert float(trs[c]) == pytest.approx(np.trace(Sig), rel=1e-10)
        assert float(trhs[c]) == pytest.approx(np.trace(H @ Sig), rel=1e-10)
    fit = np.linalg.lstsq(Phi, -lin.u0.numpy(), rcond=None)[0]
    assert lin.l_min == pytest.approx(0.5 * np.mean((lin.u0.numpy() + Phi @ fit) ** 2))


def test_linearised_one_step_gain_is_the_quadratic_model():
    """The expected loss drop of one SGD step (sampling with replacement) is eps |G|^2 -
    eps^2 (G^T H G + tr(H Sigma)/B)/2 exactly: Monte Carlo over many chains from one state."""
    lin, gen = _linearised()
    B, eps, chains = 4, 0.3, 200_000
    delta = torch.zeros(chains, 6, dtype=torch.float64)
    r, _, g2, ghg, _, trhs = lin.coefficients(delta[:1])
    idx = torch.randint(r.shape[1], (chains, B), generator=gen)
    g_batch = (r[0][idx][..., None] * lin.phi[idx]).mean(1)
    r_after = lin.coefficients(-eps * g_batch)[0]
    drop = 0.5 * r[0].square().mean() - 0.5 * r_after.square().mean(1)
    pred = float(eps * g2[0] - eps**2 / 2 * (ghg[0] + trhs[0] / B))
    assert abs(float(drop.mean()) - pred) < 5 * float(drop.std()) / chains**0.5


def test_linearised_chains_reach_the_target_and_path_sums_split_the_steps():
    lin, gen = _linearised()
    target = 0.5 * (0.5 * float(lin.u0.square().mean()) - lin.l_min)
    risk, noise, simple, dl_max = lin.chains(8, 64, target, gen)
    mean = risk.mean(1)
    assert mean[-1] <= 0.8 * target and noise.size == dl_max.size == simple.size == mean.size - 1
    a, n = bn.path_sums(mean, noise, dl_max, target)
    steps = float(bn.crossing_step(torch.as_tensor(mean)[:, None], target)[0])
    assert a > 0 and n > 0
    assert abs(a + n / 8 - steps) < 0.25 * steps        # the split, up to the chains' noise


def test_path_sums_on_a_known_path():
    risk = np.array([1.0, 0.5, 0.25, 0.1])
    a, n = bn.path_sums(risk, np.array([2.0, 4.0, 8.0]), np.array([0.5, 0.25, 0.5]), 0.2)
    assert a == pytest.approx(0.5 / 0.5 + 0.25 / 0.25 + 0.05 / 0.5)
    assert n == pytest.approx(2.0 + 4.0 + 8.0 * 0.1)


def test_jacobian_rows_of_a_linear_function():
    x = torch.randn(5, 3, dtype=torch.float64)
    phi = bn.jacobian_rows(lambda p, xi: p["w"] @ xi + p["c"], {"w": torch.ones(3,
                           dtype=torch.float64), "c": torch.zeros((), dtype=torch.float64)}, x)
    assert torch.allclose(phi, torch.cat([x, torch.ones(5, 1, dtype=torch.float64)], 1))


def test_full_batch_path_gains_dl_max_every_step():
    lin, _ = _linearised()
    risk, noise, simple, dl_max, eps_max = lin.full_batch_path(6)
    assert risk.shape == (7,) and noise.shape == simple.shape == dl_max.shape == (6,)
    assert (noise / simple <= eps_max * lin.h_max * (1 + 1e-12)).all()   # the chapter's bound
    np.testing.assert_allclose(-np.diff(risk), dl_max, rtol=1e-9)   # the loss is quadratic
    a, n = bn.path_sums(risk, noise, dl_max, risk[-1])
    assert a == pytest.approx(6.0) and n / a == pytest.approx(noise.mean())


def test_constant_lr_chains_sgd_and_adam():
    lin, gen = _linearised()
    target = 0.5 * (0.5 * float(lin.u0.square().mean()) - lin.l_min)
    h_max = float(torch.linalg.eigvalsh(lin.phi.T @ lin.phi / lin.phi.shape[0])[-1])
    for opt, lrs in [("sgd", [0.1 / h_max, 1.0 / h_max, 3.0 / h_max]), ("adam", [0.01, 0.1])]:
        risk = lin.constant_lr_chains(8, lrs, 16, target, gen, opt)
        assert risk.shape[1:] == (len(lrs), 16)
        steps = bn.best_steps(risk.mean(-1), target)
        assert np.isfinite(steps) and steps < risk.shape[0]
    assert np.isinf(risk[-1, :, 0]).sum() == 0
    sgd = lin.constant_lr_chains(8, [3.0 / h_max], 4, target, gen, "sgd", max_steps=200)
    assert (sgd[-1] > 1e6 * sgd[0]).all()            # beyond 2/h_max SGD diverges


def test_best_steps_takes_the_fastest_learning_rate():
    curves = np.array([[1.0, 1.0], [0.8, 0.4], [0.6, 0.2]])
    assert bn.best_steps(curves, 0.5) == pytest.approx(5 / 6)   # column 0 never gets there


def test_best_steps_interpolates_a_parabola_in_log_lr():
    log_lrs = np.log([0.1, 0.2, 0.4, 0.8])
    vertex = np.log(0.3)
    steps = 10.0 + 5.0 * (log_lrs - vertex) ** 2          # S(lr), exactly a parabola in log lr
    curves = np.stack([np.linspace(1.0, 0.0, 41) for _ in steps], 1)
    for j, s in enumerate(steps):                         # a curve crossing 0.5 at step s
        curves[:, j] = np.clip(1.0 - 0.5 * np.arange(41) / s, 0.0, None)
    assert bn.best_steps(curves, 0.5) == pytest.approx(steps.min())
    assert bn.best_steps(curves, 0.5, log_lrs) == pytest.approx(10.0)
