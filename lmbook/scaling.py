"""Neural scaling laws of a linear random-feature model with power-law spectra (Maloney, Roberts
& Sully 2022; Bahri, Dyer, Kaplan, Lee & Sharma 2021; Bordelon, Atanasov & Pehlevan 2024).

Conventions
- Data covariance (kernel operator) eigenvalues lambda_k = k^-a, k = 1, 2, ..., with a > 1.
- The target's power in mode k (its contribution v_k^2 to the loss when not learned, with
  orthonormal eigenfunctions) is k^-b, b > 1; for Maloney et al.'s "target weights of equal
  per-feature variance" b = a.
- N: number of random features (the model sees the data through an N-dimensional projection);
  P: number of training samples; t: gradient-flow time (learning rate times steps).
- Data: x = Lambda^(1/2) g with g ~ N(0, I_M) (M modes); target y = z . g with z_k^2 the
  target power (z_k = sqrt(lambda_k) w*_k). Random features phi = F x / sqrt(N) with F an N x M
  matrix of i.i.d. N(0, 1) entries, so phi = G^T g with G = Lambda^(1/2) F^T / sqrt(N) (M x N).
  A model f = theta . phi has test loss |G theta - z|^2 (the mean squared error against y, no
  factor 1/2); gradient flow d theta/dt = -G^T (G theta - z) from theta = 0 (the gradient of half
  the loss), so the loss at time t is z^T exp(-2 t G G^T) z.
- Resolution-limited regime: the loss is dominated by the modes the model cannot yet resolve,
  L ~ x^(-exponent) with x = N, P or t; variance-limited regime: a smooth 1/x correction
  around a finite limit (Bahri et al.'s second regime), exponent 1.
"""

from __future__ import annotations

import math

import numpy as np
import sympy as sp

__all__ = ["exponents", "feature_limited_loss", "flow_losses", "frontier", "krr_losses",
           "rf_ridge_losses"]

_a, _b = sp.symbols("alpha beta", positive=True)
_k, _u, _x, _kappa, _t, _m = sp.symbols("k u x kappa t M", positive=True)


def _loglog(expr, x):
    """d log(expr) / d log(x) (positive symbols)."""
    return sp.simplify(sp.expand_power_base(x * sp.diff(sp.log(expr), x), force=True))


def _derive():
    """The four exponents for symbolic a = alpha, b = beta (cached on first use)."""
    # N: the deterministic equivalent of the projection onto N features leaves the fraction
    # kappa/(lambda_k + kappa) of mode k (first power: no overfitting factor), with kappa fixed by
    # N = sum_k lambda_k/(lambda_k + kappa); with k = kappa^(-1/a) u the residual scales as
    # kappa^((b-1)/a) (the u-integral converges when b - 1 < a: otherwise saturation at a) and
    # the count as kappa^(-1/a), so kappa ~ N^-a.
    k_of_u = _kappa ** (-1 / _a) * _u
    proj = ((_kappa / (_k**-_a + _kappa)) * _k**-_b).subs(_k, k_of_u) * sp.diff(k_of_u, _u)
    count_n = (_k**-_a / (_k**-_a + _kappa)).subs(_k, k_of_u) * sp.diff(k_of_u, _u)
    e_n = -_loglog(proj, _kappa) / _loglog(count_n, _kappa)
    # P: ridge regression on P samples learns mode k in proportion L_k = lambda_k/(lambda_k +
    # kappa); the unlearned power sum_k (kappa/(lambda_k + kappa))^2 k^-b, with k = kappa^(-1/a) u,
    # scales as kappa^((b-1)/a) (the u-integral converges when b - 1 < 2a: otherwise saturation),
    # and the self-consistency P = sum_k 1/(1 + kappa k^a) scales as kappa^(-1/a).
    k_of_u = _kappa ** (-1 / _a) * _u
    resid = ((_kappa / (_k**-_a + _kappa)) ** 2 * _k**-_b).subs(_k, k_of_u) * sp.diff(k_of_u, _u)
    count = (1 / (1 + _kappa * _k**_a)).subs(_k, k_of_u) * sp.diff(k_of_u, _u)
    e_p = -_loglog(resid, _kappa) / _loglog(count, _kappa)
    # t: gradient flow leaves mode k's residual exp(-2 lambda_k t) k^-b; with k = t^(1/a) u
    # the sum scales as t^(-(b-1)/a).
    k_of_u = _t ** (1 / _a) * _u
    flow = (sp.exp(-2 * _k**-_a * _t) * _k**-_b).subs(_k, k_of_u) * sp.diff(k_of_u, _u)
    e_t = -_loglog(flow, _t)
    # variance-limited: with M modes all resolved (x >> M) the excess over the limit is the
    # overfitting factor E0 - 1 = M/(x - M) -> M/x: exponent -lim d log(E0 - 1)/d log x.
    e_var = sp.limit(-_loglog(_m / (_x - _m), _x), _x, sp.oo)
    return {"N": sp.simplify(e_n), "P": sp.simplify(e_p), "t": sp.simplify(e_t),
            "variance": sp.sympify(e_var)}


_CACHE: dict = {}


def exponents(a, b) -> dict:
    """Scaling exponents of the loss, L ~ x^(-exponent), for covariance eigenvalues k^-a and
    per-mode target power k^-b (module conventions), derived in SymPy from the deterministic
    equivalents' sums taken as integrals (N: projection residual kappa/(lambda + kappa); P: ridge
    residual squared; t: exp(-2 lambda t)):
    {"N": b - 1, "P": b - 1, "t": (b - 1)/a, "variance": 1}. `a` and `b` may be numbers or SymPy
    expressions; the values are SymPy expressions (numbers are made exact with nsimplify).
    The P exponent holds for b - 1 < 2a (beyond it ridge regression saturates at 2a), the N
    exponent for b - 1 < a (beyond it the projection saturates at a); the resolution-limited
    exponents hold where that variable alone is the bottleneck."""
    if not _CACHE:
        _CACHE.update(_derive())
    sub = {_a: sp.nsimplify(a), _b: sp.nsimplify(b)}
    return {key: sp.simplify(val.subs(sub)) for key, val in _CACHE.items()}


def feature_limited_loss(eigenvalues, target_power, n_features):
    """Deterministic equivalent of the loss of the best model on N random features with unlimited
    data and time (the projection of the target onto the features' span): kappa solves
    sum_k lambda_k/(lambda_k + kappa) = N (lmbook.eigenlearning.effective_ridge with no ridge) and
    the loss is sum_k kappa/(lambda_k + kappa) z_k^2, the first power of 1 - L_k: a projection
    leaves the fraction kappa/(lambda + kappa) of each mode, with no overfitting factor (no noise
    is fitted). Vectorised over n_features; for N >= the number of modes the loss is 0."""
    from .eigenlearning import effective_ridge

    lam = np.asarray(eigenvalues, dtype=float)
    z2 = np.asarray(target_power, dtype=float)
    kappa = np.atleast_1d(effective_ridge(lam, np.asarray(n_features, dtype=float), 0.0))
    out = np.array([(k / (lam + k) * z2).sum() for k in kappa.reshape(-1)])
    return out.reshape(np.shape(n_features)) if np.ndim(n_features) else float(out[0])


def _setup(eigenvalues, target_power, device):
    import torch

    lam = torch.as_tensor(np.asarray(eigenvalues, dtype=float), device=device)
    z = torch.as_tensor(np.sqrt(np.asarray(target_power, dtype=float)), device=device)
    return torch, lam, z


def flow_losses(eigenvalues, target_power, ns, ts, replicates, generator, device="cpu",
                chunk=16):
    """Exact gradient-flow test losses of the random-feature model with unlimited data (module
    conventions), nested in N: each replicate draws one F with max(ns) rows and uses its first N
    rows. Per replicate, one QR of G = Lambda^(1/2) F^T / sqrt(N_max) = Q R gives, for every N,
    span(G_N) = span(Q[:, :N]) and G_N G_N^T = Q_N R_N R_N^T Q_N^T (scaled by N_max/N), so
    L(N, t) = |z|^2 - sum_j (1 - exp(-2 s_j t)) (w_j . Q_N^T z)^2 with (s_j, w_j) the eigenpairs of
    R_N R_N^T N_max/N; no division by small eigenvalues. Returns (loss_t, loss_inf): arrays of
    shape (replicates, len(ns), len(ts)) and (replicates, len(ns)), the latter the t -> infinity
    limit (the projection residual). float64 on `device`, `generator` on that device."""
    torch, lam, z = _setup(eigenvalues, target_power, device)
    ns = [int(n) for n in ns]
    n_max, m = max(ns), lam.numel()
    t = torch.as_tensor(np.asarray(ts, dtype=float), device=device)
    out_t, out_inf = [], []
    for start in range(0, replicates, chunk):
        r = min(chunk, replicates - start)
        f = torch.randn(r, n_max, m, generator=generator, dtype=torch.float64, device=device)
        q, rr = torch.linalg.qr((f * lam.sqrt()).transpose(1, 2) / math.sqrt(n_max))
        qz = q.transpose(1, 2) @ z                                    # (r, n_max)
        total = (z**2).sum()
        lt, li = [], []
        for n in ns:
            s, w = torch.linalg.eigh(rr[:, :n, :n] @ rr[:, :n, :n].transpose(1, 2) * n_max / n)
            c2 = ((w.transpose(1, 2) @ qz[:, :n, None])[..., 0]) ** 2   # (r, n)
            decay = -torch.expm1(-2 * s.clamp_min(0)[..., None] * t)     # (r, n, len(ts))
            lt.append(total - (c2[..., None] * decay).sum(1))
            li.append(total - c2.sum(1))
        out_t.append(torch.stack(lt, 1))
        out_inf.append(torch.stack(li, 1))
    return torch.cat(out_t).cpu().numpy(), torch.cat(out_inf).cpu().numpy()


def krr_losses(eigenvalues, target_power, ps, ridge, replicates, generator, device="cpu",
               chunk=16):
    """Test losses of ridge regression on the data itself (N = infinity: kernel ridge regression
    with kernel eigenvalues lambda_k on Gaussian eigenfeatures), nested in P: each replicate draws
    max(ps) samples g_i ~ N(0, I_M) and fits its first P, y = z . g noiseless, with the
    unnormalised ridge `ridge` on the P x P Gram matrix. Exact per replicate: the learned
    coefficients are Lambda Phi^T (Phi Lambda Phi^T + ridge I)^-1 y and the loss is their squared
    distance to z. Returns an array (replicates, len(ps)); its mean is predicted by
    lmbook.eigenlearning.eigenlearning(eigenvalues, sqrt(target_power), P, ridge).test_mse."""
    torch, lam, z = _setup(eigenvalues, target_power, device)
    ps = [int(p) for p in ps]
    out = []
    for start in range(0, replicates, chunk):
        r = min(chunk, replicates - start)
        g = torch.randn(r, max(ps), lam.numel(), generator=generator, dtype=torch.float64,
                        device=device)
        y = g @ z
        rows = []
        for p in ps:
            phi = g[:, :p]
            gram = (phi * lam) @ phi.transpose(1, 2)
            gram = gram + ridge * torch.eye(p, dtype=torch.float64, device=device)
            alpha = torch.linalg.solve(gram, y[:, :p, None])
            v_hat = lam * (phi.transpose(1, 2) @ alpha)[..., 0]
            rows.append(((v_hat - z) ** 2).sum(-1))
        out.append(torch.stack(rows, 1))
    return torch.cat(out).cpu().numpy()


def rf_ridge_losses(eigenvalues, target_power, n_features, ps, ridge, replicates, generator,
                    device="cpu", chunk=16):
    """Test losses of ridge regression on N random features and P samples (module conventions),
    nested in P; ridge = 0 is ordinary least squares (needs P >= N; P = N is the interpolation
    threshold). theta = (Phi^T Phi + ridge I)^-1 Phi^T y with Phi = g G (P x N), y = g z; the loss
    |G theta - z|^2 is exact per replicate. Returns (loss, loss_inf): (replicates, len(ps)) and
    (replicates,), the latter the same features' P -> infinity loss (the projection residual).
    The samples enter only through (phi, y), drawn from their exact joint Gaussian law."""
    torch, lam, z = _setup(eigenvalues, target_power, device)
    ps = [int(p) for p in ps]
    n = int(n_features)
    out, out_inf = [], []
    for start in range(0, replicates, chunk):
        r = min(chunk, replicates - start)
        f = torch.randn(r, n, lam.numel(), generator=generator, dtype=torch.float64, device=device)
        big_g = (f * lam.sqrt()).transpose(1, 2) / math.sqrt(n)       # (r, M, N)
        q, _ = torch.linalg.qr(big_g)
        out_inf.append((z**2).sum() - ((q.transpose(1, 2) @ z) ** 2).sum(-1))
        # the rows (phi, y) = g [G, z] are Gaussian with covariance B^T B, B = [G, z]: sample
        # them through its Cholesky factor (N + 1 numbers per sample instead of M)
        b = torch.cat([big_g, z.expand(r, -1)[..., None]], -1)
        chol = torch.linalg.cholesky(b.transpose(1, 2) @ b)
        h = torch.randn(r, max(ps), n + 1, generator=generator, dtype=torch.float64,
                        device=device) @ chol.transpose(1, 2)
        phi_all, y_all = h[..., :n], h[..., n]
        rows = []
        for p in ps:
            phi, y = phi_all[:, :p], y_all[:, :p]
            a = phi.transpose(1, 2) @ phi + ridge * torch.eye(n, dtype=torch.float64,
                                                              device=device)
            theta = torch.linalg.solve(a, (phi.transpose(1, 2) @ y[..., None]))
            rows.append((((big_g @ theta)[..., 0] - z) ** 2).sum(-1))
        out.append(torch.stack(rows, 1))
    return torch.cat(out).cpu().numpy(), torch.cat(out_inf).cpu().numpy()


def frontier(ns, ts, losses, budgets, points: int = 5):
    """The compute frontier of one or more loss surfaces L(N, t) (losses: (..., len(ns), len(ts)),
    positive), with compute C = N t: for each budget C, log L(N, C/N) at every N of the grid
    (linear interpolation of log L in log t) and its minimum over the grid, refined (minimiser and
    minimum) by the vertex of the least-squares parabola in log N through `points` (odd, >= 3)
    grid points centred on the best one (shifted inwards near the ends of the grid).
    Returns (log_n_star, log_l_star), each (..., len(budgets)); log_n_star is NaN where the best
    N is at the edge of the grid (the frontier is not resolved there; log_l_star is then the grid
    minimum)."""
    ns = np.asarray(ns, dtype=float)
    half = int(points) // 2
    if points < 3 or points % 2 == 0 or ns.size < points:
        raise ValueError(f"points must be odd, >= 3 and <= the grid size, got {points}")
    log_t, log_n = np.log(np.asarray(ts, dtype=float)), np.log(ns)
    losses = np.log(np.asarray(losses, dtype=float))
    lead = losses.shape[:-2]
    flat = losses.reshape(-1, ns.size, log_t.size)
    out_n = np.full((flat.shape[0], len(budgets)), np.nan)
    out_l = np.empty((flat.shape[0], len(budgets)))
    for i, surface in enumerate(flat):
        for c, budget in enumerate(budgets):
            lt = math.log(budget) - log_n
            if lt.min() < log_t[0] or lt.max() > log_t[-1]:
                raise ValueError(f"budget {budget:g} needs times outside the grid")
            vals = np.array([np.interp(x, log_t, row) for x, row in zip(lt, surface)])
            j = int(np.argmin(vals))
            out_l[i, c] = vals[j]
            if 0 < j < ns.size - 1:
                lo = min(max(j - half, 0), ns.size - points)
                c2, c1, c0 = np.polyfit(log_n[lo:lo + points], vals[lo:lo + points], 2)
                out_n[i, c] = -c1 / (2 * c2)
                out_l[i, c] = c0 - c1**2 / (4 * c2)
    return out_n.reshape(lead + (len(budgets),)), out_l.reshape(lead + (len(budgets),))
