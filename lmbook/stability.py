"""Edge of stability: teacher data, and full-batch (or minibatch) training of an ensemble of
networks with the sharpness of every member tracked as it trains.

Conventions
- Data (`teacher_classes`): n inputs x ~ N(0, I_d), standardised per feature over the sample
  (mean 0, variance 1), labelled by the argmax of a random two-layer tanh teacher with C outputs;
  targets are
  one-hot vectors in R^C.
- Model: any `lmbook.mlp.Net` with stacked parameters (leading ensemble axis E); the loss is
  `lmbook.mlp.loss`, L(theta) = (1 / 2n) sum_i ||f_theta(x_i) - y_i||^2 (squared error summed over
  the C outputs, averaged over the n samples), as in Cohen et al. 2021. Gradients and Hessians are
  of this L, with respect to the stored parameters.
- Data are shared, x (n, d) and y (n, C), or one data set per member, x (E, n, d) and y (E, n, C)
  (`teacher_sets`).
- Optimiser: `lmbook.ensemble.momentum_step`, i.e. torch.optim.SGD(momentum=beta, dampening=0)
  with a learning rate and a beta per member; beta = 0 is plain gradient descent. With `batch` set,
  each step uses a minibatch of that many samples drawn without replacement, a different draw for
  every member: SGD.
- Time-averaged weights (`average`): the mean of the iterates theta_k over the last L steps
  (k = steps - L, ..., steps - 1), the smoothed trajectory that the central flow of Cohen et al.
  2025 models; an even L cancels the period-2 oscillation at the edge of stability.
- Sharpness: lambda_max of the Hessian of the *full-batch* L of each member, by
  `lmbook.curvature.sharpness` (Lanczos, warm-started from the previous top Ritz vector): a lower
  bound that rises to lambda_max with the number of steps. Measured on the 2-core CPU: warm-started
  power iteration (3 steps every 5) underestimated lambda_max by about 5% at the edge of stability,
  where several eigenvalues crowd near 2/eta; 8 Lanczos steps every 15, by about 1%.
- Time is counted in steps k; `Trace` rows are steps, columns ensemble members.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import curvature, mlp
from .ensemble import momentum_step, zeros_like


def teacher_classes(
    n: int,
    dim: int,
    classes: int,
    generator: torch.Generator,
    teacher_width: int = 100,
    dtype=torch.float64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y): n standardised Gaussian inputs (n, dim) and one-hot targets (n, classes) from the
    argmax of a random tanh teacher tanh(2 x A / sqrt(dim)) B with Gaussian A (dim, teacher_width)
    and
    B (teacher_width, classes)."""
    x = torch.randn(n, dim, generator=generator, dtype=dtype)
    a = torch.randn(dim, teacher_width, generator=generator, dtype=dtype)
    b = torch.randn(teacher_width, classes, generator=generator, dtype=dtype)
    labels = (torch.tanh(2 * x @ a / math.sqrt(dim)) @ b).argmax(1)
    x = (x - x.mean(0)) / x.std(0)
    return x, torch.nn.functional.one_hot(labels, classes).to(dtype)


def teacher_sets(networks: int, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """One data set and teacher per network: `networks` draws of `teacher_classes(*args, **kwargs)`
    in turn from its generator, stacked: x (networks, n, dim), y (networks, n, classes)."""
    sets = [teacher_classes(*args, **kwargs) for _ in range(networks)]
    return torch.stack([s[0] for s in sets]), torch.stack([s[1] for s in sets])


@dataclass
class Trace:
    """A training run. loss (steps + 1, E): the loss at every step before its update (the minibatch
    loss under SGD); at_step (m,): the steps where the sharpness was measured; sharp (m, E) and
    full_loss (m, E): the sharpness and the full-batch loss there; params: the final state;
    averages: {L: the mean of the iterates over the last L steps} for each L in `average`."""

    loss: torch.Tensor
    at_step: torch.Tensor
    sharp: torch.Tensor
    full_loss: torch.Tensor
    params: dict
    averages: dict


def train(
    net: mlp.Net,
    params: dict,
    x,
    y,
    lr,
    steps: int,
    momentum=0.0,
    every: int = 5,
    lanczos: int = 10,
    first_lanczos: int = 30,
    batch: int | None = None,
    generator: torch.Generator | None = None,
    sparse: int | None = None,
    dense_from: int = 0,
    average: tuple = (),
) -> Trace:
    """Train every member for `steps` steps (full batch, or minibatches of `batch`), measuring the
    full-batch sharpness every `every` steps (and at the end) by `lanczos` Lanczos steps
    warm-started from the previous Ritz vector (`first_lanczos` from a random start at step 0). `lr`
    and `momentum` are scalars or one per member. An odd `every` samples both phases of the
    period-2 oscillation at
    the edge of stability. With `sparse`, steps before `dense_from` are measured every `sparse`
    steps only (a cheaper look at the rise). x, y are shared or per member (module docstring);
    `average` lists the window lengths L of the time-averaged weights to return."""
    if any(r != 1 for r in net.lr_scales().values()):
        raise ValueError(
            f"train steps every tensor by lr (the threshold 2/lr is for that); {net.param!r} "
            "scales the step per tensor"
        )
    members = next(iter(params.values())).shape[0]
    dev, dt = x.device, x.dtype
    lr, beta = (
        torch.as_tensor(z, dtype=dt, device=dev).expand(members).clone() for z in (lr, momentum)
    )
    params = {k: t.detach().clone() for k, t in params.items()}
    bufs = zeros_like(params)
    if batch is not None and x.ndim == 2:
        x, y = x.expand(members, *x.shape), y.expand(members, *y.shape)
    if any(not 0 < L <= steps for L in average):
        raise ValueError(f"average windows must lie in 1..steps = {steps}, got {average}")
    sums = {L: zeros_like(params) for L in average}
    v = None
    rows, at, sharp, full = [], [], [], []

    def full_loss(p):
        return mlp.loss(net, p, x, y)

    for k in range(steps + 1):
        gap = every if sparse is None or k >= dense_from else sparse
        if k % gap == 0 or k == steps:
            lam, v = curvature.sharpness(
                full_loss, params, v, first_lanczos if k == 0 else lanczos, generator
            )
            v = torch.where(
                v.isfinite().all(1, keepdim=True), v, 1.0
            )  # a diverged member: NaN stays
            at.append(k)
            sharp.append(lam)
            full.append(full_loss(params))
        if batch is None:
            xb, yb = x, y
        else:  # a draw without replacement per member: the first `batch` of a random permutation
            idx = torch.rand(members, x.shape[-2], generator=generator).argsort(1)[:, :batch]
            idx = idx.to(dev)[..., None]
            xb = torch.gather(x, 1, idx.expand(-1, -1, x.shape[-1]))
            yb = torch.gather(y, 1, idx.expand(-1, -1, y.shape[-1]))
        for L, acc in sums.items():
            if k >= steps - L and k < steps:
                for name in acc:
                    acc[name] += params[name] / L
        if k == steps:
            rows.append(mlp.loss(net, params, xb, yb))
            break
        out = mlp.apply(net, params, xb)
        rows.append(0.5 * (out - yb).square().sum(-1).mean(-1))
        grads = mlp.grads(net, params, xb, (out - yb) / xb.shape[-2])
        params, bufs = momentum_step(params, grads, bufs, lr, beta)
    return Trace(
        torch.stack(rows), torch.tensor(at), torch.stack(sharp), torch.stack(full), params, sums
    )
