"""Diagonal linear networks f(x) = <beta, x>, beta = u*u - v*v, and the interpolator their gradient
flow selects (Woodworth et al. 2020, arXiv:2002.09277, Theorem 1 with depth D = 2).

Conventions
- Data: X of shape (..., n, d) with n < d (underdetermined), targets y of shape (..., n). Loss
  L(beta) = ||X beta - y||^2 / (2n); its gradient in beta is g = X^T (X beta - y) / n.
- Parameterisation: beta = u*u - v*v (u, v in R^d; Woodworth et al.'s w_+ and w_-), initialised at
  u = v = alpha * 1, so beta(0) = 0. Gradient flow on (u, v): du/dt = -2 u g, dv/dt = +2 v g, hence
  u = alpha exp(-2 int g), v = alpha exp(+2 int g) and beta(t) = -2 alpha^2 sinh(4 int_0^t g);
  since int g lies in the row space of X, beta(t) = 2 alpha^2 sinh(X^T mu) for some mu in R^n at
  every time.
- The limit (Woodworth et al. Theorem 1): beta_alpha = argmin Q_alpha(beta) subject to
  X beta = y, with Q_alpha(beta) = alpha^2 sum_i q(beta_i / alpha^2),
  q(z) = 2 - sqrt(4 + z^2) + z arcsinh(z / 2), so that dQ_alpha/dbeta_i = q'(beta_i/alpha^2) =
  arcsinh(beta_i / (2 alpha^2)) (the mirror map). The KKT condition gives
  beta_alpha = 2 alpha^2 sinh(X^T mu) with X beta_alpha = y: `interpolator` finds mu by damped
  Newton on the convex dual Phi(mu) = sum_i 2 alpha^2 cosh((X^T mu)_i) - y.mu, whose gradient is
  X beta(mu) - y and Hessian X diag(2 alpha^2 cosh(X^T mu)) X^T (analytic). `alpha` may also be a
  vector (one scale per coordinate: an effective alpha, as large steps and SGD produce).
- Large alpha: q(z) ~ z^2/4, the minimum-l2 interpolator; alpha -> 0: Q_alpha / ln(1/alpha^2) ->
  ||beta||_1, the minimum-l1 interpolator (`min_l2`, `min_l1` by scipy's linprog).
- Training (`train`): (stochastic) gradient descent with step `lr` on (u, v), time
  t = step * lr. Each step multiplies u by (1 - 2 lr g) and v by (1 + 2 lr g), so
  u*v = alpha^2 prod(1 - 4 lr^2 g^2) shrinks: gradient descent is the flow with a smaller,
  coordinate-wise effective alpha (`effective_alpha`: sqrt|u v|; Even et al. 2023,
  arXiv:2302.08982; Pesme et al. 2021, arXiv:2106.09524 for SGD).
"""

from __future__ import annotations

import math

import numpy as np
import torch


def q(z):
    """The potential q(z) = 2 - sqrt(4 + z^2) + z arcsinh(z/2) (numpy, elementwise)."""
    z = np.asarray(z, dtype=float)
    return 2 - np.sqrt(4 + z * z) + z * np.arcsinh(z / 2)


def Q(beta, alpha):
    """Q_alpha(beta) = sum_i alpha_i^2 q(beta_i / alpha_i^2), summed over the last axis."""
    a2 = np.asarray(alpha, dtype=float) ** 2
    return (a2 * q(np.asarray(beta, dtype=float) / a2)).sum(-1)


def _as_numpy(x):
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=float)


def interpolator(X, y, alpha, tol: float = 1e-12, max_iter: int = 500, return_mu: bool = False,
                 per_coordinate: bool = False):
    """beta_alpha = 2 alpha^2 sinh(X^T mu) with X beta_alpha = y: the minimiser of Q_alpha among the
    interpolators (module docstring). X (..., n, d), y (..., n) and alpha broadcast against each
    other over the batch axes (...): alpha is one scale per problem, or with per_coordinate=True
    an array (..., d) of one scale per coordinate. Torch tensors or arrays; computed in float64 on
    X's device (torch), returned as a float64 tensor on that device (and mu with return_mu).

    Damped Newton on the convex dual Phi(mu) = sum 2 alpha^2 cosh(X^T mu) - y.mu (gradient
    X beta - y, Hessian X diag(2 alpha^2 cosh(X^T mu)) X^T: analytic), vectorised over the batch;
    each step is capped so that no |(X^T dmu)_i| exceeds 2, then halved until the dual decreases
    (Armijo), or until the residual halves (near the optimum, where the dual's decrease is below
    its rounding error). Converged when ||X beta - y|| <= tol * max(||y||, 1) for every problem;
    raises RuntimeError otherwise (ValueError on non-finite values). Robust for alpha from 1e-4
    to 1e2 and beyond (tests/test_diagonal.py)."""
    X = torch.as_tensor(X, dtype=torch.float64)
    y = torch.as_tensor(y, dtype=torch.float64, device=X.device)
    a = torch.as_tensor(alpha, dtype=torch.float64, device=X.device)
    n, d = X.shape[-2:]
    a2 = a**2 if per_coordinate else (a**2)[..., None].expand(*a.shape, d)
    batch = torch.broadcast_shapes(X.shape[:-2], y.shape[:-1], a2.shape[:-1])
    Xb = X.expand(*batch, n, d).reshape(-1, n, d)
    yb = y.expand(*batch, n).reshape(-1, n)
    a2 = a2.expand(*batch, d).reshape(-1, d)
    mu = torch.zeros_like(yb)

    def dual(m):
        return (2 * a2 * torch.cosh(torch.einsum("bnd,bn->bd", Xb, m))).sum(-1) - (yb * m).sum(-1)

    scale = yb.norm(dim=-1).clamp(min=1.0)
    for _ in range(max_iter):
        z = torch.einsum("bnd,bn->bd", Xb, mu)
        beta = 2 * a2 * torch.sinh(z)
        grad = torch.einsum("bnd,bd->bn", Xb, beta) - yb
        if bool((grad.norm(dim=-1) <= tol * scale).all()):
            break
        if not bool(torch.isfinite(grad).all()):
            raise ValueError("interpolator: non-finite inputs or overflow (is alpha positive?)")
        hess = torch.einsum("bnd,bd,bmd->bnm", Xb, 2 * a2 * torch.cosh(z), Xb)
        step = -torch.linalg.solve(hess, grad[..., None])[..., 0]
        reach = torch.einsum("bnd,bn->bd", Xb, step).abs().amax(-1)
        step = step * (2.0 / reach.clamp(min=1e-300)).clamp(max=1.0)[:, None]
        f0, t = dual(mu), torch.ones(len(mu), dtype=mu.dtype, device=mu.device)
        slope = (grad * step).sum(-1)
        gnorm = grad.norm(dim=-1)
        for _ in range(60):
            trial = mu + t[:, None] * step
            ok = dual(trial) <= f0 + 1e-4 * t * slope
            # near the optimum the dual's decrease drops below its rounding error: then accept a
            # step that halves the residual instead
            resid = torch.einsum("bnd,bd->bn", Xb, 2 * a2 * torch.sinh(
                torch.einsum("bnd,bn->bd", Xb, trial))) - yb
            ok = ok | (resid.norm(dim=-1) <= 0.5 * gnorm)
            if bool(ok.all()):
                break
            t = torch.where(ok, t, t / 2)
        mu = mu + t[:, None] * step
    else:
        raise RuntimeError("interpolator: Newton did not converge; residual "
                           f"{grad.norm(dim=-1).max().item():.3g}")
    beta = beta.reshape(*batch, d)
    return (beta, mu.reshape(*batch, n)) if return_mu else beta


def min_l2(X, y):
    """The minimum-l2 interpolator X^T (X X^T)^{-1} y, batched over leading axes (float64 tensor on
    X's device)."""
    X = torch.as_tensor(X, dtype=torch.float64)
    y = torch.as_tensor(y, dtype=torch.float64, device=X.device)
    Xt = X.transpose(-1, -2)
    return (Xt @ torch.linalg.solve(X @ Xt, y[..., None]))[..., 0]


def min_l1(X, y):
    """The minimum-l1 interpolator (basis pursuit) by scipy's linprog (HiGHS), beta = p - m with
    p, m >= 0; batched over leading axes by a loop on the CPU (float64 tensor on X's device)."""
    from scipy.optimize import linprog

    Xt = torch.as_tensor(X, dtype=torch.float64)
    X, y = _as_numpy(Xt), _as_numpy(y)
    batch, (n, d) = X.shape[:-2], X.shape[-2:]
    Xb, yb = X.reshape(-1, n, d), np.broadcast_to(y, batch + (n,)).reshape(-1, n)
    out = np.empty((len(Xb), d))
    for k, (Xk, yk) in enumerate(zip(Xb, yb)):
        res = linprog(np.ones(2 * d), A_eq=np.hstack([Xk, -Xk]), b_eq=yk, bounds=(0, None),
                      method="highs")
        if res.status != 0:
            raise RuntimeError(f"min_l1: linprog failed: {res.message}")
        out[k] = res.x[:d] - res.x[d:]
    return torch.as_tensor(out.reshape(batch + (d,)), device=Xt.device)


def sparse_task(replicates: int, n: int, d: int, k: int, generator: torch.Generator,
                low: float = 0.5, high: float = 1.5, dtype=torch.float64):
    """(X, y, beta_star): X (R, n, d) with i.i.d. N(0, 1) entries, beta_star (R, d) k-sparse with
    random support, random signs and magnitudes uniform in [low, high]; y = X beta_star
    (noiseless). The population test error of beta is ||beta - beta_star||^2 (isotropic x)."""
    X = torch.randn(replicates, n, d, generator=generator, dtype=dtype)
    support = torch.rand(replicates, d, generator=generator).argsort(-1)[:, :k]
    mag = low + (high - low) * torch.rand(replicates, k, generator=generator, dtype=dtype)
    sign = torch.randint(0, 2, (replicates, k), generator=generator).to(dtype) * 2 - 1
    beta_star = torch.zeros(replicates, d, dtype=dtype).scatter(1, support, mag * sign)
    return X, (X @ beta_star[..., None])[..., 0], beta_star


def train(X, y, alpha, lr, steps: int, batch_size: int | None = None,
          generator: torch.Generator | None = None, record_every: int = 0, threshold=None):
    """(Stochastic) gradient descent on (u, v), beta = u*u - v*v, from u = v = alpha, for a batch of
    problems and initialisation scales at once.

    X (R, n, d), y (R, n) torch tensors; alpha (A,) the scales; lr a number, (A,) per-scale steps or
    (R, A) one step per network. Every (problem, alpha) pair is one network: u, v of shape (R, A,
    d). With batch_size, each step uses `batch_size` samples drawn uniformly with replacement
    (independently per network) and the gradient X_B^T (X_B beta - y_B) / batch_size: SGD. Returns a
    dict with the final "u", "v", "beta", the final training "loss" (R, A), and with record_every >
    0 the step indices "times" and the training "losses" (T, R, A) recorded every `record_every`
    steps; with `threshold` also "crossing" (R, A): the first time (lr * steps, linearly
    interpolated between steps) at which max_i |beta_i| reaches the threshold (NaN if never). Always
    also "loss_integral" (R, A): sum over steps of lr * L(beta), the integral of the full training
    loss over time t (Pesme et al.'s int L dt), and "grad_sq_sum" (R, A, d): sum over steps of lr^2
    E[g_i^2], the expectation of the squared step gradient over the sampled batch given the current
    beta (full batch: g_i^2 itself). The sampled indices are drawn on the CPU from `generator` in
    chunks of 256 steps."""
    R, n, d = X.shape
    alpha = torch.as_tensor(alpha, dtype=X.dtype, device=X.device)
    A = alpha.numel()
    lr_t = torch.as_tensor(lr, dtype=X.dtype, device=X.device)
    lr_t = lr_t[..., None] if lr_t.ndim == 2 else lr_t.expand(A).reshape(1, A, 1)
    u = alpha.reshape(1, A, 1).expand(R, A, d).clone()
    v = u.clone()
    Xt = X.transpose(1, 2)
    losses, times = [], []
    chunk = 256
    crossing = torch.full((R, A), math.nan, dtype=X.dtype, device=X.device)
    prev = torch.zeros(R, A, dtype=X.dtype, device=X.device)
    loss_int = torch.zeros(R, A, dtype=X.dtype, device=X.device)
    grad_sq = torch.zeros(R, A, d, dtype=X.dtype, device=X.device)
    X2 = X * X
    for step in range(steps + 1):
        beta = u * u - v * v
        resid = beta @ Xt - y[:, None, :]                          # (R, A, n)
        if record_every and step % record_every == 0:
            losses.append((resid**2).mean(-1) / 2)
            times.append(step)
        if threshold is not None:
            top = beta.abs().amax(-1)
            new = torch.isnan(crossing) & (top >= threshold)
            if new.any():
                frac = (threshold - prev) / (top - prev)
                crossing = torch.where(new, (step - 1 + frac) * lr_t[..., 0], crossing)
            prev = top
        if step == steps:
            break
        full = resid @ X / n                                        # (R, A, d)
        loss_int = loss_int + lr_t[..., 0] * (resid**2).mean(-1) / 2
        if batch_size is None:
            g = full
            grad_sq = grad_sq + lr_t**2 * g * g
        else:
            # E[g_i^2], b samples with replacement: gbar^2 + (E_j[(x_ji r_j)^2] - gbar^2) / b
            per_sample = (resid * resid) @ X2 / n
            grad_sq = grad_sq + lr_t**2 * (full * full + (per_sample - full * full) / batch_size)
            if step % chunk == 0:                                   # sample counts, per network
                idx = torch.randint(0, n, (chunk, R, A, batch_size), generator=generator)
                counts = torch.nn.functional.one_hot(idx, n).sum(-2).to(X.dtype).to(X.device)
            g = (resid * counts[step % chunk]) @ X / batch_size
        u = u * (1 - 2 * lr_t * g)
        v = v * (1 + 2 * lr_t * g)
    out = {"u": u, "v": v, "beta": beta, "loss": (resid**2).mean(-1) / 2,
           "loss_integral": loss_int, "grad_sq_sum": grad_sq}
    if record_every:
        out["times"] = torch.tensor(times, dtype=X.dtype)
        out["losses"] = torch.stack(losses)
    if threshold is not None:
        out["crossing"] = crossing
    return out


def effective_alpha(u, v):
    """sqrt(|u v|) per coordinate: the alpha of the flow that the (stochastic) gradient descent run
    follows, since beta = u^2 - v^2 = 2 |u v| sinh(ln|u/v|) (exactly alpha under gradient flow,
    smaller after discrete steps; a step with 2 lr |g_i| > 1 flips the sign of u_i or v_i, hence the
    absolute value)."""
    return torch.sqrt((u * v).abs())


def finite_time_l1(X, beta, alpha, resid, per_coordinate: bool = False):
    """First-order change of ||beta_alpha(yhat)||_1 when the targets move from yhat to yhat + resid,
    at a beta of the mirror form beta = 2 alpha^2 sinh(X^T mu) (the Q_alpha interpolator of yhat):
    differentiating X beta = yhat with d beta = D X^T d mu, D = diag(2 alpha^2 cosh(X^T mu)) =
    diag(sqrt(beta^2 + 4 alpha^4)), gives d beta = D X^T (X D X^T)^{-1} resid, and the l1 norm moves
    by sign(beta)^T d beta. X (..., n, d), beta (..., d), resid (..., n); alpha one scale per
    problem (broadcast over the batch axes), or per coordinate (..., d) with per_coordinate=True.
    Returns the signed shift, shape (...)."""
    X = torch.as_tensor(X, dtype=torch.float64)
    beta = torch.as_tensor(beta, dtype=torch.float64, device=X.device)
    resid = torch.as_tensor(resid, dtype=torch.float64, device=X.device)
    a = torch.as_tensor(alpha, dtype=torch.float64, device=X.device)
    a2 = a**2 if per_coordinate else (a**2)[..., None]
    D = torch.sqrt(beta**2 + 4 * a2**2)
    M = torch.einsum("...nd,...d,...md->...nm", X, D, X)
    w = torch.linalg.solve(M, resid[..., None])[..., 0]
    dbeta = D * torch.einsum("...nd,...n->...d", X, w)
    return (torch.sign(beta) * dbeta).sum(-1)
