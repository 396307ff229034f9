import math

import numpy as np
import sympy as sp
import torch

from lmbook.eigenlearning import eigenlearning
from lmbook.scaling import (
    exponents,
    feature_limited_loss,
    flow_losses,
    frontier,
    krr_losses,
    rf_ridge_losses,
)


def test_exponents_symbolic_and_numeric():
    a, b = sp.symbols("a b", positive=True)
    e = exponents(a, b)
    assert sp.simplify(e["N"] - (b - 1)) == 0
    assert sp.simplify(e["P"] - (b - 1)) == 0
    assert sp.simplify(e["t"] - (b - 1) / a) == 0
    assert e["variance"] == 1
    assert exponents(2, 3) == {"N": 2, "P": 2, "t": 1, "variance": 1}
    assert exponents(1.5, 2.5)["t"] == 1


def _spectrum(m=120, a=2.0, b=2.0):
    k = np.arange(1, m + 1, dtype=float)
    return k**-a, k**-b


def test_feature_limited_loss_limits_and_projection_average():
    lam, z2 = _spectrum()
    assert feature_limited_loss(lam, z2, 200) == 0.0                 # N >= M: everything fitted
    ns = np.array([10.0, 20.0])
    de = feature_limited_loss(lam, z2, ns)
    assert de.shape == (2,) and de[0] > de[1] > 0
    g = torch.Generator().manual_seed(0)
    _, loss_inf = flow_losses(lam, z2, [10, 20], [1.0], 400, g)
    ratio = loss_inf.mean(0) / de
    se = loss_inf.std(0, ddof=1) / math.sqrt(400) / de
    assert np.all(np.abs(ratio - 1) < 4 * se + 0.05)                  # DE to O(1/N)


def test_flow_losses_match_matrix_exponential():
    lam, z2 = _spectrum(m=40)
    ns, ts = [5, 12], np.array([0.0, 0.3, 3.0, 30.0])
    loss_t, loss_inf = flow_losses(lam, z2, ns, ts, 1, torch.Generator().manual_seed(3))
    f = torch.randn(1, 12, 40, generator=torch.Generator().manual_seed(3),
                    dtype=torch.float64)[0].numpy()
    z = np.sqrt(z2)
    for j, n in enumerate(ns):
        g_mat = (f[:n] * np.sqrt(lam)).T / math.sqrt(n)               # M x N
        w, v = np.linalg.eigh(g_mat @ g_mat.T)
        for i, t in enumerate(ts):
            direct = z @ v @ np.diag(np.exp(-2 * t * np.clip(w, 0, None))) @ v.T @ z
            assert abs(loss_t[0, j, i] - direct) < 1e-10
        resid = z - g_mat @ np.linalg.lstsq(g_mat, z, rcond=None)[0]
        assert abs(loss_inf[0, j] - resid @ resid) < 1e-10
    assert abs(loss_t[0, 0, 0] - z2.sum()) < 1e-12


def test_krr_losses_direct_and_eigenlearning():
    lam, z2 = _spectrum(m=60)
    ps, ridge = [8, 20], 1e-3
    loss = krr_losses(lam, z2, ps, ridge, 1, torch.Generator().manual_seed(1))
    g = torch.randn(1, 20, 60, generator=torch.Generator().manual_seed(1),
                    dtype=torch.float64)[0].numpy()
    z = np.sqrt(z2)
    for j, p in enumerate(ps):
        phi = g[:p]
        alpha = np.linalg.solve((phi * lam) @ phi.T + ridge * np.eye(p), phi @ z)
        assert abs(loss[0, j] - ((lam * (phi.T @ alpha) - z) ** 2).sum()) < 1e-10
    many = krr_losses(lam, z2, [20], ridge, 400, torch.Generator().manual_seed(2))[:, 0]
    pred = eigenlearning(lam, np.sqrt(z2), 20.0, ridge).test_mse
    assert abs(many.mean() / pred - 1) < 4 * many.std() / math.sqrt(400) / pred + 0.05


def test_rf_ridge_losses_variance_limited_excess_is_inverse_wishart():
    lam, z2 = _spectrum(m=80)
    n, ps = 6, [6, 40, 200]
    loss, loss_inf = rf_ridge_losses(lam, z2, n, ps, 0.0, 2000,
                                     torch.Generator().manual_seed(4))
    excess = loss / loss_inf[:, None] - 1
    assert (excess > 0).all()
    for j, p in enumerate(ps[1:], start=1):
        exact = n / (p - n - 1)
        se = excess[:, j].std() / math.sqrt(excess.shape[0])
        assert abs(excess[:, j].mean() - exact) < 4 * se
    assert np.median(excess[:, 0]) > 10 * n / (ps[1] - n - 1)        # the interpolation peak


def test_frontier_of_additive_power_laws():
    ns = np.unique(np.geomspace(4, 4096, 40).astype(int)).astype(float)
    ts = np.logspace(-2, 10, 241)
    p, q = 1.5, 0.5
    surface = ns[:, None] ** -p + ts[None, :] ** -q
    budgets = np.geomspace(1e4, 1e8, 9)
    log_n, log_l = frontier(ns, ts, surface, budgets)
    slope_n = np.polyfit(np.log(budgets), log_n, 1)[0]
    slope_l = np.polyfit(np.log(budgets), log_l, 1)[0]
    assert abs(slope_n - q / (p + q)) < 0.01                          # N* ~ C^(q/(p+q))
    assert abs(slope_l + p * q / (p + q)) < 0.005


def test_feature_limited_loss_saturates_at_a():
    # b - 1 > a: the projection leaves kappa z^2/lambda of the first modes, kappa ~ N^-a
    lam, z2 = _spectrum(m=8192, a=1.5, b=3.5)
    ns = np.array([64.0, 128.0, 256.0])
    slope = -np.polyfit(np.log(ns), np.log(feature_limited_loss(lam, z2, ns)), 1)[0]
    assert abs(slope - 1.5) < 0.1 and abs(slope - float(exponents(1.5, 3.5)["N"])) > 0.8
