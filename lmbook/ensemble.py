"""Many small networks of one architecture trained at once with torch.func
(vmap over functional_call).

Conventions
- An ensemble's state is a dict name -> tensor with a leading model axis of length n (as from
  torch.func.stack_module_state), for parameters and for buffers. Tensors here are detached: the
  gradients come from torch.func.grad, not from .backward().
- `base` is a template of the architecture (e.g. `base_model(models[0])`, a copy on the meta
  device); its own weights are never read.
- The loss of model i is loss_fn(model_i(x_i), y_i): x, y are shared by all models, or per-model
  with a leading model axis (`per_model_data=True`).
- Optimisers are functional: they return new dicts and never mutate their inputs. A learning rate
  is a scalar or one value per model (shape (n,)). Heavy ball follows
  torch.optim.SGD(momentum=beta, dampening=0, nesterov=False): buf <- beta * buf + grad (buf starts
  at 0, so the first buf is grad), p <- p - lr * buf.
- Randomness inside the model (dropout in train mode) is refused by vmap; use eval mode or no
  dropout.
"""

from __future__ import annotations

import copy
from typing import Callable, Sequence

import torch
from torch.func import functional_call, grad_and_value, stack_module_state, vmap


def stack(models: Sequence[torch.nn.Module]) -> tuple[dict, dict]:
    """(params, buffers) of n models of one architecture, stacked along a new leading axis
    (copies)."""
    if not models:
        raise ValueError("need at least one model")
    params, buffers = stack_module_state(list(models))
    return ({k: v.detach() for k, v in params.items()}, {k: v.detach() for k, v in buffers.items()})


def base_model(model: torch.nn.Module) -> torch.nn.Module:
    """A weightless template of `model`'s architecture (a copy on the meta device), for
    functional_call."""
    return copy.deepcopy(model).to("meta")


def unstack(params: dict, models: Sequence[torch.nn.Module], buffers: dict | None = None) -> None:
    """Copy the ensemble's state back into the n models, in place."""
    state = {**(buffers or {}), **params}
    with torch.no_grad():
        for i, m in enumerate(models):
            for name, t in list(m.named_parameters()) + list(m.named_buffers()):
                if name in state:
                    t.copy_(state[name][i])


def _per_model(value, like: torch.Tensor) -> torch.Tensor:
    """A scalar, or one value per model reshaped to broadcast against `like` (n, ...)."""
    v = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if v.ndim == 0:
        return v
    if v.shape != like.shape[:1]:
        raise ValueError(
            f"a per-model value must have shape ({like.shape[0]},), got {tuple(v.shape)}"
        )
    return v.reshape(-1, *([1] * (like.ndim - 1)))


def ensemble_loss_and_grad(
    base: torch.nn.Module,
    params: dict,
    buffers: dict,
    x,
    y,
    loss_fn: Callable,
    per_model_data: bool = False,
) -> tuple[torch.Tensor, dict]:
    """(losses (n,), grads): each model's loss and its gradient with respect to its own
    parameters."""

    def one(p, b, xi, yi):
        return loss_fn(functional_call(base, (p, b), (xi,)), yi)

    d = 0 if per_model_data else None
    grads, losses = vmap(grad_and_value(one), in_dims=(0, 0, d, d))(params, buffers, x, y)
    return losses, grads


def sgd_step(params: dict, grads: dict, lr) -> dict:
    """p - lr * g for every tensor; `lr` a scalar or one per model."""
    return {k: p - _per_model(lr, p) * grads[k] for k, p in params.items()}


def momentum_step(params: dict, grads: dict, bufs: dict, lr, beta) -> tuple[dict, dict]:
    """Heavy ball in torch's convention: buf <- beta * buf + g; p <- p - lr * buf. Returns
    (params, bufs); start with bufs of zeros (`zeros_like`). `lr` and `beta` scalars or one per
    model."""
    new_bufs = {k: _per_model(beta, b) * b + grads[k] for k, b in bufs.items()}
    return {k: p - _per_model(lr, p) * new_bufs[k] for k, p in params.items()}, new_bufs


def zeros_like(params: dict) -> dict:
    """Zero tensors shaped like `params`: the initial momentum buffers."""
    return {k: torch.zeros_like(v) for k, v in params.items()}


def train_ensemble(
    models: Sequence[torch.nn.Module],
    x,
    y,
    loss_fn: Callable,
    lr,
    steps: int,
    momentum=0.0,
    per_model_data: bool = False,
) -> tuple[torch.Tensor, dict]:
    """Full-batch (S)GD on every model at once, `steps` steps from the models' current weights
    (which are not modified; see `unstack`). Returns (losses (steps, n), each row the losses
    *before* that step's update, as a plain loop records them, and the final stacked params)."""
    params, buffers = stack(models)
    base = base_model(models[0])
    heavy = torch.is_tensor(momentum) or momentum != 0
    bufs = zeros_like(params) if heavy else None
    losses = []
    for _ in range(steps):
        loss, grads = ensemble_loss_and_grad(base, params, buffers, x, y, loss_fn, per_model_data)
        losses.append(loss)
        if heavy:
            params, bufs = momentum_step(params, grads, bufs, lr, momentum)
        else:
            params = sgd_step(params, grads, lr)
    n = len(models)
    return (torch.stack(losses) if losses else torch.empty(0, n)), params
