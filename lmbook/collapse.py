"""Neural collapse: the NC1-NC4 metrics, the simplex ETF, the unconstrained-features model (UFM) and
a batched cross-entropy trainer for bias-free networks with decay on the classifier, on the features
and/or on the backbone.

Conventions
- C classes, n training samples per class (balanced), N = nC samples sorted by class:
  y = (0,...,0, 1,...,1, ...), `labels(C, n)`. Features H are (R, N, d) with a leading replicate
  axis R (row i is h_i); the linear classifier W is (R, C, d) (row c is w_c), no bias: the logits
  of sample i are W h_i.
- The UFM objective (Zhu et al. 2021, eq. (3), with their 1/N normalisation and no bias):
      f(W, H) = (1/N) sum_i CE(W h_i, y_i) + (lam_w/2) ||W||_F^2 + (lam_h/2) ||H||_F^2,
  lam_h multiplies the SUM of the squared feature norms (not the mean).
- The network: any `lmbook.mlp.Net` whose readout is the feature layer (the chapter uses
  h = V tanh(U x / sqrt(d_in)) / sqrt(m), NTK parameterisation, no biases), then logits W h. `train`
  minimises f(W, H(theta)) + (lam_theta/2) ||theta||^2: lam_h > 0, lam_theta = 0 is the UFM's
  objective at the network's features; lam_h = 0, lam_theta = lam_w is ordinary weight decay on
  every layer. The penalties act on the stored parameters (NTK: before the 1/sqrt(fan-in)).
- Metrics (`metrics`) use the UNCENTRED class means mu_c (bias-free model: the optimum has a zero
  global mean); `class_means` returns them.
"""

from __future__ import annotations

import math

import scipy.optimize
import torch

from . import mlp

__all__ = [
    "class_means", "etf", "labels", "metrics", "newton_step", "objective", "train",
    "ufm_fit", "ufm_optimum",
]


def labels(C: int, n: int, device=None) -> torch.Tensor:
    """y = (0 x n, 1 x n, ..., C-1 x n), shape (nC,), int64."""
    return torch.arange(C, device=device).repeat_interleave(n)


def etf(C: int, d: int | None = None, dtype=torch.float64) -> torch.Tensor:
    """A simplex ETF: C unit rows in R^d (d >= C - 1, default C) with pairwise cosines -1/(C-1) and
    zero sum: the rows of sqrt(C/(C-1)) (I - 11^T/C), rotated into d dimensions."""
    d = C if d is None else d
    if d < C - 1:
        raise ValueError(f"a simplex ETF of {C} vectors needs d >= {C - 1}, got {d}")
    P = torch.eye(C, dtype=dtype) - 1.0 / C
    U, S, _ = torch.linalg.svd(P)  # P = U diag(S) U^T, rank C-1
    M = (U[:, : C - 1] * S[: C - 1]) * math.sqrt(C / (C - 1))
    out = torch.zeros(C, d, dtype=dtype)
    out[:, : C - 1] = M
    return out


def objective(W, H, y, lam_w, lam_h):
    """The UFM objective f per replicate, (R,) (module docstring)."""
    logits = torch.einsum("rnd,rcd->rnc", H, W)
    ce = torch.logsumexp(logits, -1) - logits.gather(-1, y.expand(H.shape[0], -1)[..., None])[
        ..., 0
    ]
    pw = 0.5 * lam_w * W.square().sum((-1, -2))
    ph = 0.5 * lam_h * H.square().sum((-1, -2))
    return ce.mean(-1) + pw + ph


def ufm_optimum(C: int, n: int, lam_w: float, lam_h: float) -> dict:
    """The symmetric (ETF) optimum in closed form (numbers; the chapter derives it in SymPy):
    s = sqrt(n lam_w lam_h) < 1/C, rho = ||w_c|| ||h_i|| = (C-1)/C log(1/s - (C-1)),
    ||w_c||^2 = rho sqrt(n lam_h/lam_w), ||h_i||^2 = rho sqrt(lam_w/(n lam_h)),
    f* = log(1 + (C-1) exp(-rho C/(C-1))) + C s rho."""
    s = math.sqrt(n * lam_w * lam_h)
    if s >= 1.0 / C:
        raise ValueError(f"sqrt(n lam_w lam_h) = {s:.3g} >= 1/C: the optimum is W = H = 0")
    rho = (C - 1) / C * math.log(1 / s - (C - 1))
    return dict(
        rho=rho,
        w2=rho * math.sqrt(n * lam_h / lam_w),
        h2=rho * math.sqrt(lam_w / (n * lam_h)),
        f=math.log1p((C - 1) * math.exp(-rho * C / (C - 1))) + C * s * rho,
        ratio=math.sqrt(n * lam_h / lam_w),
    )


def ufm_fit(C, d, n, lam_w, lam_h, replicates, generator=None, iters=400, scale=1.0):
    """Minimise the UFM objective directly: float64 L-BFGS (scipy, on the CPU) from Gaussian starts
    (W, H entries N(0, scale^2/d)), all replicates in one stacked problem (their objectives add and
    do not interact). Returns dict(W, H (final), iterations (done), grad (final gradient norm per
    replicate))."""
    y = labels(C, n)
    N = C * n
    R = replicates
    # drawn on the generator's device (a CUDA generator on a GPU run), optimised on the CPU
    kw = dict(generator=generator, dtype=torch.float64,
              device=None if generator is None else generator.device)
    W0 = (torch.randn(R, C, d, **kw) * scale / math.sqrt(d)).cpu()
    H0 = (torch.randn(R, N, d, **kw) * scale / math.sqrt(d)).cpu()
    nw = W0.numel()

    def unpack(v):
        t = torch.as_tensor(v, dtype=torch.float64)
        return t[:nw].view(R, C, d), t[nw:].view(R, N, d)

    def fun(v):
        W, H = unpack(v)
        W.requires_grad_(True)
        H.requires_grad_(True)
        f = objective(W, H, y, lam_w, lam_h).sum()
        gW, gH = torch.autograd.grad(f, (W, H))
        return f.item(), torch.cat([gW.flatten(), gH.flatten()]).numpy()

    state = {"k": 0}

    def callback(v):
        state["k"] += 1

    v0 = torch.cat([W0.flatten(), H0.flatten()]).numpy()
    res = scipy.optimize.minimize(
        fun, v0, jac=True, method="L-BFGS-B", callback=callback,
        options=dict(maxiter=iters, maxfun=4 * iters, gtol=0.0, ftol=0.0, maxcor=30),
    )
    W, H = unpack(res.x)
    W.requires_grad_(True)
    H.requires_grad_(True)
    gW, gH = torch.autograd.grad(objective(W, H, y, lam_w, lam_h).sum(), (W, H))
    grad = (gW.square().sum((-1, -2)) + gH.square().sum((-1, -2))).sqrt()
    return dict(W=W.detach(), H=H.detach(), iterations=state["k"], grad=grad)


def newton_step(W, H, y, lam_w, lam_h, iters=200, tol=1e-30):
    """One Newton step of the UFM objective from (W, H): solves Hess delta = grad by conjugate
    gradients on Hessian-vector products (torch.func), all replicates together (their Hessian is
    block diagonal), and returns (W - delta_W, H - delta_H). Near a minimum this is the point the
    optimiser is heading to; the gradient is orthogonal to the Hessian's null space (the rotations
    W -> WQ, H -> HQ), so CG stays in its range. float64."""

    def f(W_, H_):
        return objective(W_, H_, y, lam_w, lam_h).sum()

    grad = torch.func.grad(f, argnums=(0, 1))

    def hvp(v):
        return torch.func.jvp(lambda a, b: grad(a, b), (W, H), v)[1]

    def dot(a, b):
        return sum((ai * bi).sum() for ai, bi in zip(a, b))

    g = grad(W, H)
    x = [torch.zeros_like(W), torch.zeros_like(H)]
    r = [gi.clone() for gi in g]
    p = [ri.clone() for ri in r]
    rr = dot(r, r)
    for _ in range(iters):
        if rr <= tol:
            break
        Ap = hvp(tuple(p))
        alpha = rr / dot(p, Ap)
        x = [xi + alpha * pi for xi, pi in zip(x, p)]
        r = [ri - alpha * ai for ri, ai in zip(r, Ap)]
        rr_new = dot(r, r)
        p = [ri + (rr_new / rr) * pi for ri, pi in zip(r, p)]
        rr = rr_new
    return W - x[0], H - x[1]


def class_means(H, y, C) -> torch.Tensor:
    """The uncentred class means mu_c, (R, C, d), of features H (R, N, d) with labels y (N,)."""
    onehot = torch.nn.functional.one_hot(y, C).to(H.dtype)  # (N, C)
    return torch.einsum("nc,rnd->rcd", onehot, H) / onehot.sum(0)[:, None]


def metrics(H, y, W, C) -> dict:
    """NC metrics per replicate, each (R,), for features H (R, N, d), labels y (N,), classifier
    W (R, C, d):
    nc1       tr(Sigma_W Sigma_B^+)/C (Papyan et al. 2020), Sigma_W the within-class covariance
              (1/N) sum_i (h_i - mu_{y_i})(...)^T, Sigma_B (1/C) sum_c (mu_c - mu_G)(...)^T;
    cos       mean pairwise cosine of the uncentred class means mu_c;
    cos_rms   RMS over pairs of cos(mu_c, mu_c') + 1/(C-1) (equiangularity);
    norm_cv   std/mean over c of ||mu_c||;
    nc3       || W/||W||_F - M/||M||_F ||_F^2 (self-duality; M the (C, d) uncentred means);
    nc4       fraction of samples where argmax_c w_c.h differs from argmin_c ||h - mu_c||;
    ratio     sqrt(mean_c ||w_c||^2 / mean_i ||h_i||^2) (the UFM predicts sqrt(n lam_h/lam_w));
    error     training error of the classifier."""
    R, N, d = H.shape
    mu = class_means(H, y, C)
    mu_g = H.mean(1)
    within = H - mu[:, y]
    Sw = torch.einsum("rni,rnj->rij", within, within) / N
    B = mu - mu_g[:, None]
    Sb = torch.einsum("rci,rcj->rij", B, B) / C
    nc1 = torch.einsum("rij,rji->r", Sw, torch.linalg.pinv(Sb, hermitian=True)) / C
    M = mu
    Mn = M / M.norm(dim=-1, keepdim=True)
    G = Mn @ Mn.transpose(1, 2)
    off = ~torch.eye(C, dtype=torch.bool, device=H.device)
    cosines = G[:, off]
    norms = M.norm(dim=-1)
    wn = W.norm(dim=-1)
    nc3 = (W / W.norm(dim=(1, 2), keepdim=True) - M / M.norm(dim=(1, 2), keepdim=True)).square()
    logits = torch.einsum("rnd,rcd->rnc", H, W)
    dist = torch.cdist(H, mu)
    return dict(
        nc1=nc1,
        cos=cosines.mean(-1),
        cos_rms=(cosines + 1.0 / (C - 1)).square().mean(-1).sqrt(),
        norm_cv=norms.std(-1) / norms.mean(-1),
        nc3=nc3.sum((1, 2)),
        nc4=(logits.argmax(-1) != dist.argmin(-1)).to(H.dtype).mean(-1),
        ratio=(wn.square().mean(-1) / H.square().sum(-1).mean(-1)).sqrt(),
        error=(logits.argmax(-1) != y).to(H.dtype).mean(-1),
    )


def train(net, params, W, x, y, lam_w, lam_h, lr, steps, momentum=0.9, checkpoints=(),
          lam_theta=0.0):
    """Full-batch heavy-ball GD (torch.optim.SGD's convention) on
    f(W, H(theta)) + (lam_theta/2) ||theta||^2 per replicate: H = mlp.apply(net, params, x) the
    penultimate features (R, N, d), W (R, C, d) the bias-free classifier with weight decay lam_w,
    feature decay lam_h on H, weight decay lam_theta on every backbone tensor. Replicates are
    independent (their losses add). Returns (params, W, snaps) with snaps[t] = (params, W) at each
    step t in checkpoints."""
    params = {k: v.detach().clone() for k, v in params.items()}
    W = W.detach().clone()
    names = list(params) + ["W"]
    bufs = [None] * len(names)
    snaps = {}

    def total(*tensors):
        p = dict(zip(names[:-1], tensors[:-1]))
        H = mlp.apply(net, p, x)
        decay = sum(v.square().sum() for v in p.values())
        return objective(tensors[-1], H, y, lam_w, lam_h).sum() + 0.5 * lam_theta * decay

    grad = torch.func.grad(total, argnums=tuple(range(len(names))))
    tensors = [params[k] for k in names[:-1]] + [W]
    for t in range(steps + 1):
        if t in checkpoints:
            snaps[t] = (dict(zip(names[:-1], tensors[:-1])), tensors[-1])
        if t == steps:
            break
        g = grad(*tensors)
        for i, gi in enumerate(g):
            bufs[i] = gi if bufs[i] is None else momentum * bufs[i] + gi
            tensors[i] = tensors[i] - lr * bufs[i]
    return dict(zip(names[:-1], tensors[:-1])), tensors[-1], snaps
