"""Curvature of a loss over stacked parameters: Hessian-vector products, Lanczos, power iteration.

Conventions
- Parameters are stacked: a dict name -> tensor with a leading ensemble axis of length E, member e
  being {name: t[e]} (the convention of `lmbook.ensemble` and `lmbook.mlp`). A single network is an
  ensemble of one.
- `loss(params) -> (E,)` returns every member's loss, member e's depending on member e's parameters
  only. The Hessian of the summed loss is then block diagonal, one block H_e per member, so one
  Hessian-vector product of the sum serves every member at once.
- Vectors are flat (E, P) matrices, one row per member: each member's tensors concatenated in the
  dict's order (`flat` / `unflat`).
- HVPs are forward-over-reverse with torch.func: H v = jvp(grad(sum_e loss_e))(params; v). Data are
  captured by `loss` (closed over), never differentiated. Measured on the shared 2-core CPU, one
  thread, 4 members of a (10, 64, 64, 10) tanh MLP on 500 samples, float32: 40 ms per HVP, against
  33 ms for a double backward that reuses the first backward's graph and 9 ms for a gradient.
- Sharpness is the largest *algebraic* eigenvalue lambda_max(H_e) of each member.
  - `lanczos` (full reorthogonalisation, vectors normalised per member) returns the largest Ritz
    values. They are lower bounds on the top eigenvalues that rise to them with the number of steps;
    warm-started from the previous top Ritz vector they track lambda_max during training. With
    several eigenvalues close together at the top (as at the edge of stability) Lanczos converges
    far faster than power iteration.
  - `power_iteration` runs until every member's relative residual ||H v - lambda v|| / |lambda| is
    at most `tol` (the eigenvalue error is then about tol^2 |lambda|^2 / gap). A member whose
    dominant
    eigenvalue is negative is iterated again on H - lambda I (spectrum >= 0) and shifted back.
- A member whose loss is not finite (diverged) gets NaN values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch.func import grad, jvp


def flat(state: dict) -> torch.Tensor:
    """A stacked state as one (E, P) matrix: each member's tensors concatenated in dict order."""
    return torch.cat([t.flatten(1) for t in state.values()], 1)


def unflat(m: torch.Tensor, like: dict) -> dict:
    """The inverse of `flat`: split an (E, P) matrix into tensors shaped like `like`'s values."""
    sizes = [t[0].numel() for t in like.values()]
    if sum(sizes) != m.shape[1]:
        raise ValueError(f"the flat vectors have {m.shape[1]} entries, the parameters {sum(sizes)}")
    parts = m.split(sizes, dim=1)
    return {k: part.reshape(m.shape[0], *t.shape[1:]) for (k, t), part in zip(like.items(), parts)}


def hvp_operator(loss: Callable, params: dict) -> tuple[Callable, torch.Tensor]:
    """(op, theta): op(V) = H V for an (E, P) matrix V (one row per member) at `params`, and the
    parameters as an (E, P) matrix theta."""
    p = {k: t.detach() for k, t in params.items()}
    g = grad(lambda q: loss(q).sum())

    def op(v: torch.Tensor) -> torch.Tensor:
        return flat(jvp(g, (p,), (unflat(v.to(theta.dtype), p),))[1])

    theta = flat(p)
    return op, theta


def hvp(loss: Callable, params: dict, v: dict) -> dict:
    """H v for every member at once, v stacked like params."""
    op, _ = hvp_operator(loss, params)
    return unflat(op(flat(v)), params)


def _start(theta: torch.Tensor, v0, generator) -> torch.Tensor:
    if v0 is None:
        v0 = torch.randn(theta.shape, generator=generator, dtype=theta.dtype).to(theta.device)
    if v0.shape != theta.shape:
        raise ValueError(
            f"v0 must have shape {tuple(theta.shape)} (members, parameters), got {tuple(v0.shape)}"
        )
    if not (v0.norm(dim=1) > 0).all():
        raise ValueError("v0 must be a non-zero, finite vector for every member")
    return v0.to(theta.dtype)


def lanczos(
    op: Callable, v0: torch.Tensor, steps: int, k: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """(values (E, k), vectors (E, k, P)): the k largest Ritz values of every member's operator, in
    decreasing order, after `steps` Lanczos steps (full reorthogonalisation, twice) from v0 (E, P),
    with their unit Ritz vectors. A member with a non-finite entry gets NaN values."""
    if steps < 1 or not 1 <= k <= steps:
        raise ValueError(f"need steps >= 1 and 1 <= k <= steps, got steps={steps}, k={k}")
    q = v0 / v0.norm(dim=1, keepdim=True)
    basis, alpha, beta = [q], [], []
    for j in range(steps):
        w = op(basis[-1])
        alpha.append((w * basis[-1]).sum(1))
        if j < steps - 1:
            b = torch.stack(basis, 1)  # (E, j + 1, P)
            for _ in range(2):
                w = w - torch.einsum("ejp,ej->ep", b, torch.einsum("ejp,ep->ej", b, w))
            beta.append(w.norm(dim=1))
            basis.append(w / beta[-1].clamp_min(torch.finfo(w.dtype).tiny).unsqueeze(1))
    t = torch.diag_embed(torch.stack(alpha, 1))
    if beta:
        off = torch.diag_embed(torch.stack(beta, 1), offset=1)
        t = t + off + off.transpose(1, 2)
    ok = t.flatten(1).isfinite().all(1)
    evals, evecs = torch.linalg.eigh(torch.where(ok[:, None, None], t, 0).double())
    top = evecs[:, :, -k:].flip(-1).to(t.dtype)  # (E, steps, k)
    vecs = torch.einsum("ejp,ejk->ekp", torch.stack(basis, 1), top)
    vecs = vecs / vecs.norm(dim=2, keepdim=True)
    values = torch.where(ok[:, None], evals[:, -k:].flip(-1).to(t.dtype), torch.nan)
    return values, vecs


def sharpness(
    loss: Callable,
    params: dict,
    v0: torch.Tensor | None = None,
    steps: int = 10,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(lambda (E,), unit Ritz vectors (E, P)): every member's largest Ritz value after `steps`
    Lanczos steps from v0 (E, P), e.g. the previous Ritz vector (warm start), or a random start
    drawn from
    `generator`. A lower bound on lambda_max that rises to it with `steps`."""
    op, theta = hvp_operator(loss, params)
    values, vecs = lanczos(op, _start(theta, v0, generator), steps)
    return values[:, 0], vecs[:, 0]


@dataclass
class Eigen:
    """Result of `power_iteration`, per member: eigenvalue (E,), unit eigenvector (E, P), iterations
    used (all phases), final relative residual (E,), and whether every member reached `tol`."""

    value: torch.Tensor
    vector: torch.Tensor
    iterations: int
    residual: torch.Tensor
    converged: bool


def _power(op, v, iters, tol, shift):
    """Power iteration on op - shift I (shift (E,)); residuals relative to |lambda| of op."""
    v = v / v.norm(dim=1, keepdim=True)
    tiny = torch.finfo(v.dtype).tiny
    for it in range(1, iters + 1):
        w = op(v) - shift[:, None] * v
        lam = (v * w).sum(1)
        res = (w - lam[:, None] * v).norm(dim=1) / (lam + shift).abs().clamp_min(tiny)
        if (tol is not None and bool((res <= tol).all())) or it == iters:
            return lam, v, it, res
        v = w / w.norm(dim=1, keepdim=True).clamp_min(tiny)
    raise ValueError(f"iters must be at least 1, got {iters}")


def power_iteration(
    op: Callable, v0: torch.Tensor, iters: int = 100, tol: float | None = None
) -> Eigen:
    """lambda_max of every member's symmetric operator `op` ((E, P) -> (E, P)) by power iteration
    from v0 (E, P); warm-start with the previous eigenvector when tracking. Runs `iters`
    iterations, or
    fewer once every relative residual is <= `tol`; members whose dominant eigenvalue is negative
    run shifted phases (up to `iters` more each, at most three)."""
    shift = torch.zeros(v0.shape[0], dtype=v0.dtype, device=v0.device)
    lam, v, used, res = _power(op, v0, iters, tol, shift)
    for _ in range(3):
        neg = lam < 0
        if not bool(neg.any()):
            break
        # iterate on H - s I with s the negative estimate: its spectrum is >= 0; members already
        # positive keep their shift and start from their eigenvector, so they stay put
        shift = torch.where(neg, shift + lam, shift)
        lam, v, more, res = _power(op, torch.where(neg[:, None], v0, v), iters, tol, shift)
        used += more
    ok = tol is not None and bool((res <= tol).all()) and bool((lam >= 0).all())
    return Eigen(lam + shift, v, used, res, ok)
