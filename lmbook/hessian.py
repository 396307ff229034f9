"""Hessian-vector products and the top Hessian eigenvalue (sharpness) of a training loss.

Conventions
- The loss is L(theta) = criterion(model(x), y) with theta the model's parameters that require grad, in
  `named_parameters()` order; a flat vector is their concatenation (`flatten`/`unflatten`).
- HVPs are forward-over-reverse: H v = jvp(grad L)(theta; v), with torch.func.functional_call on
  detached copies of the parameters and buffers. The model object is never modified.
- The model is evaluated *as given*: in train mode dropout draws new masks on every call (H is then
  not a fixed matrix) and batch norm uses batch statistics. Call `model.eval()` first unless you mean
  the train-mode loss; these functions do not change the mode, they only warn.
- `dtype=torch.float64` evaluates in float64 (parameters, buffers and floating x, y cast; integer
  targets kept).
- Sharpness is the largest *algebraic* eigenvalue lambda_max(H). `power_iteration` finds the
  largest-magnitude eigenvalue first; if that one is negative it iterates again on H - lambda I
  (all eigenvalues >= 0) and shifts back, so negative curvature is handled. Convergence is on the residual: stop when
  ||H v - lambda v|| <= tol * |lambda|, which bounds the eigenvalue error by about tol^2 |lambda|^2 / gap.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from torch.func import functional_call, grad, jvp


def flatten(tensors: dict) -> torch.Tensor:
    """Concatenate a dict of tensors (in its order) into one flat vector."""
    return torch.cat([t.reshape(-1) for t in tensors.values()])


def unflatten(flat: torch.Tensor, like: dict) -> dict:
    """Split a flat vector into tensors shaped like the values of `like` (same order)."""
    out, i = {}, 0
    for name, t in like.items():
        out[name] = flat[i:i + t.numel()].view_as(t)
        i += t.numel()
    if i != flat.numel():
        raise ValueError(f"flat vector has {flat.numel()} entries, the parameters {i}")
    return out


def _cast(t, dtype):
    return t.to(dtype) if dtype is not None and torch.is_tensor(t) and t.is_floating_point() else t


def _warn_if_stochastic(model: torch.nn.Module) -> None:
    if model.training and any(isinstance(m, (torch.nn.modules.dropout._DropoutNd,
                                              torch.nn.modules.batchnorm._BatchNorm))
                              for m in model.modules()):
        warnings.warn("the model is in train mode and has dropout or batch norm: the Hessian is of the "
                      "train-mode loss (call model.eval() for the deterministic one)", stacklevel=3)


def loss_function(model: torch.nn.Module, criterion: Callable, x, y, dtype=None):
    """(f, params): f(params_dict) -> scalar loss, and detached copies of the trainable parameters."""
    _warn_if_stochastic(model)
    params = {n: _cast(p.detach(), dtype) for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n: _cast(p.detach(), dtype) for n, p in model.named_parameters() if not p.requires_grad}
    buffers = {n: _cast(b.detach(), dtype) for n, b in model.named_buffers()}
    x, y = _cast(x, dtype), _cast(y, dtype)

    def f(p, x=x, y=y):
        # fresh buffer copies per call: a train-mode batch norm updates its running stats in place
        b = {n: t.clone() for n, t in buffers.items()}
        return criterion(functional_call(model, ({**p, **frozen}, b), (x,)), y)

    return f, params


def hvp_dict(f: Callable, params: dict, v: dict) -> dict:
    """H v for f(params_dict) -> scalar, forward-over-reverse; v a dict shaped like params. (For a loss
    with data captured by f, prefer `make_hvp`, which works around pytorch/pytorch#123996.)"""
    return jvp(grad(f), (params,), (v,))[1]


def make_hvp(model: torch.nn.Module, criterion: Callable, x, y, dtype=None):
    """(hvp, theta): hvp(v) = H v on flat vectors at the model's current parameters theta (flat)."""
    f, params = loss_function(model, criterion, x, y, dtype)
    y = _cast(y, dtype)
    gf = grad(f)
    if torch.is_tensor(y) and y.is_floating_point():
        # a floating target goes in as a jvp primal with a *materialised* zero tangent: with none,
        # F.mse_loss(reduction="mean") under jvp(grad) fails on an immutable ZeroTensor (pytorch#123996)
        zero = torch.zeros_like(y)

        def hvp(v: torch.Tensor) -> torch.Tensor:
            return flatten(jvp(lambda p, t: gf(p, y=t), (params, y), (unflatten(v, params), zero))[1])
    else:
        def hvp(v: torch.Tensor) -> torch.Tensor:
            return flatten(jvp(gf, (params,), (unflatten(v, params),))[1])

    return hvp, flatten(params)


def hvp(model: torch.nn.Module, criterion: Callable, x, y, v: torch.Tensor, dtype=None) -> torch.Tensor:
    """One Hessian-vector product H v, v flat (see `flatten`)."""
    return make_hvp(model, criterion, x, y, dtype)[0](v)


@dataclass
class Eigen:
    """Result of `power_iteration`: eigenvalue, unit eigenvector (flat), iterations used (all phases),
    final relative residual ||H v - lambda v|| / |lambda|, and whether it reached `tol`."""
    value: float
    vector: torch.Tensor
    iterations: int
    residual: float
    converged: bool


def _power(op, v, iters, tol, shift=0.0):
    """Power iteration on op; the residual is taken relative to |lam + shift| (op = H - shift I)."""
    v = v / v.norm()
    lam, res = 0.0, float("inf")
    for k in range(1, iters + 1):
        w = op(v)
        lam = float(v @ w)
        res = float((w - lam * v).norm()) / max(abs(lam + shift), torch.finfo(v.dtype).tiny)
        if (tol is not None and res <= tol) or k == iters:
            return lam, v, k, res
        n = w.norm()
        if n == 0:  # v is in the null space: H = 0 on it
            return 0.0, v, k, 0.0
        v = w / n
    raise ValueError(f"iters must be at least 1, got {iters}")


def power_iteration(hvp: Callable, v0: torch.Tensor, iters: int = 100, tol: float | None = None,
                    which: str = "algebraic") -> Eigen:
    """Top eigenvalue of the symmetric operator `hvp` by power iteration from `v0` (a flat vector; pass the
    previous eigenvector to warm-start when tracking sharpness during training). Runs `iters` iterations,
    or fewer once the relative residual is <= `tol`. which="algebraic" (sharpness, lambda_max) or
    "magnitude" (largest |lambda|); "algebraic" may run shifted phases of up to `iters` more each."""
    if which not in ("algebraic", "magnitude"):
        raise ValueError(f"which must be 'algebraic' or 'magnitude', got {which!r}")
    if not v0.norm() > 0:
        raise ValueError("v0 must be a non-zero, finite vector")
    lam, v, k, res = _power(hvp, v0, iters, tol)
    shift, phases = 0.0, 1
    while which == "algebraic" and lam < 0 and phases < 4:
        # a negative eigenvalue dominated: iterate on H - s I with s = that eigenvalue estimate, whose
        # spectrum is then >= 0 (up to the estimate's error; a new negative result lowers s again)
        shift, phases = shift + lam, phases + 1
        lam, v, k2, res = _power(lambda u, s=shift: hvp(u) - s * u, v0, iters, tol, shift)
        k += k2
    ok = tol is not None and res <= tol and (which == "magnitude" or lam >= 0)
    return Eigen(lam + shift, v, k, res, ok)


def sharpness(model: torch.nn.Module, criterion: Callable, x, y, iters: int = 100, tol: float | None = 1e-6,
              v0: torch.Tensor | None = None, dtype=None, generator: torch.Generator | None = None) -> Eigen:
    """lambda_max of the Hessian of criterion(model(x), y) at the model's parameters; `v0` warm start
    (default: a random vector from `generator`, or torch's global one)."""
    op, theta = make_hvp(model, criterion, x, y, dtype)
    if v0 is None:
        v0 = torch.randn(theta.shape, generator=generator, dtype=theta.dtype).to(theta.device)
    return power_iteration(op, _cast(v0, theta.dtype), iters, tol, "algebraic")
