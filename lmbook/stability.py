"""Edge of stability: full-batch training of an ensemble of tanh MLPs with the sharpness tracked as it trains.

Conventions
- Data (`teacher_classes`): n inputs x ~ N(0, I_d), standardised per feature over the sample (mean 0,
  variance 1), labelled by the argmax of a random two-layer tanh teacher with C outputs; targets are
  one-hot vectors in R^C.
- Model: a tanh MLP with widths (d, h, ..., h, C), in the parameter names and layout of
  nn.Sequential(Linear, Tanh, ..., Linear): "0.weight" (out, in), "0.bias" (out,), "2.weight", ...
  and PyTorch's default initialisation. An ensemble is that state stacked along a leading model axis of
  length E (the convention of `lmbook.ensemble`); `init_mlp` gives every member the *same* initial
  weights, so members differ only by their optimiser.
- Loss: L(theta) = (1 / 2n) sum_i ||f_theta(x_i) - y_i||^2 (squared error summed over the C outputs,
  averaged over the n samples), as in Cohen et al. 2021. Gradients and Hessians are of this L.
- Optimiser: `lmbook.ensemble.momentum_step`, i.e. torch.optim.SGD(momentum=beta, dampening=0) with a
  learning rate and a beta per member; beta = 0 is plain gradient descent. With `batch` set, each step
  uses a minibatch of that many samples drawn without replacement (shared by the members): SGD.
- Sharpness: lambda_max of the Hessian of the *full-batch* L of each member. The members' losses are
  summed, so the ensemble Hessian is block diagonal and one Hessian-vector product (double backward)
  serves every member. `sharpness` runs a few Lanczos steps per member (vectors normalised per member,
  full reorthogonalisation), warm-started from the previous top Ritz vector, and returns the largest
  Ritz value: a lower bound on lambda_max (the largest algebraic eigenvalue) that rises to it with the
  number of steps. Vectors are flat (E, P) matrices (`flat` / `unflat`).
- Time is counted in steps k; `Trace` rows are steps, columns ensemble members.

Why not vmap: the layers of all members are fused (one batched matmul per layer, as in
`lmbook.bench.train_bmm`) and differentiated by one autograd pass. Measured on the 2-core CPU, one thread,
4 members, 500 samples, widths (10, 64, 64, 10), float32: gradient 4.5 ms fused vs 7.5 ms with
`lmbook.ensemble.ensemble_loss_and_grad` (vmap over functional_call); Hessian-vector product 7.4 ms fused
(double backward, the first backward's graph reused by every Lanczos step) vs 21.6 ms with vmap over
torch.func.jvp(grad). Warm-started power iteration (3 steps every 5) underestimated lambda_max by about
5% at the edge of stability, where several eigenvalues crowd near 2/eta; 8 Lanczos steps every 15, by
about 1%.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .ensemble import momentum_step, stack, zeros_like


def teacher_classes(n: int, dim: int, classes: int, generator: torch.Generator, teacher_width: int = 100,
                    dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y): n standardised Gaussian inputs (n, dim) and one-hot targets (n, classes) from the argmax of a
    random tanh teacher tanh(2 x A / sqrt(dim)) B with Gaussian A (dim, teacher_width), B (teacher_width, classes)."""
    x = torch.randn(n, dim, generator=generator, dtype=dtype)
    a = torch.randn(dim, teacher_width, generator=generator, dtype=dtype)
    b = torch.randn(teacher_width, classes, generator=generator, dtype=dtype)
    labels = (torch.tanh(2 * x @ a / math.sqrt(dim)) @ b).argmax(1)
    x = (x - x.mean(0)) / x.std(0)
    return x, torch.nn.functional.one_hot(labels, classes).to(dtype)


def mlp_module(widths) -> torch.nn.Sequential:
    """nn.Sequential(Linear, Tanh, ..., Linear) with the given widths (PyTorch's default initialisation)."""
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers += [torch.nn.Linear(a, b)] + ([torch.nn.Tanh()] if i < len(widths) - 2 else [])
    return torch.nn.Sequential(*layers)


def init_mlp(members: int, widths, generator: torch.Generator, dtype=torch.float64, device="cpu") -> dict:
    """The stacked state of `members` copies of one tanh MLP, initialised (PyTorch default) from a seed
    drawn from `generator`; the global torch RNG is left as it was."""
    seed = int(torch.randint(0, 2**62, (), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = mlp_module(widths).to(dtype)
    params, _ = stack([model])
    return {k: v.expand(members, *v.shape[1:]).clone().to(device) for k, v in params.items()}


def forward(params: dict, x: torch.Tensor) -> torch.Tensor:
    """Outputs of every member, (E, n, C), for inputs x (n, d) shared by the members."""
    names = sorted({k.rsplit(".", 1)[0] for k in params}, key=int)
    h = x.T                                                              # (d, n): features by batch
    for i, name in enumerate(names):
        w, b = params[name + ".weight"], params[name + ".bias"]
        h = torch.baddbmm(b.unsqueeze(2), w, h.expand(w.shape[0], *h.shape) if h.ndim == 2 else h)
        if i < len(names) - 1:
            h = torch.tanh(h)
    return h.transpose(1, 2)


def losses(params: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """L of every member, (E,): squared error summed over outputs, halved, averaged over samples."""
    return 0.5 * (forward(params, x) - y).square().sum(2).mean(1)


def flat(state: dict) -> torch.Tensor:
    """A stacked state as one (E, P) matrix: each member's tensors concatenated in the dict's order."""
    return torch.cat([t.flatten(1) for t in state.values()], 1)


def unflat(m: torch.Tensor, like: dict) -> dict:
    """The inverse of `flat`: split an (E, P) matrix into tensors shaped like the values of `like`."""
    out, i = {}, 0
    for k, t in like.items():
        size = t[0].numel()
        out[k] = m[:, i:i + size].view_as(t)
        i += size
    return out


def _hvp_operator(params: dict, x, y):
    """(op, theta): op(V) = H V for an (E, P) matrix V, one row per member, reusing one double-backward graph."""
    p = {k: t.detach().requires_grad_() for k, t in params.items()}
    g = torch.autograd.grad(losses(p, x, y).sum(), list(p.values()), create_graph=True)

    def op(v: torch.Tensor) -> torch.Tensor:
        parts = unflat(v, p)
        return flat(dict(zip(p, torch.autograd.grad(g, list(p.values()), [parts[k] for k in p], retain_graph=True))))

    return op, flat(p).detach()


def hvp(params: dict, x, y, v: dict) -> dict:
    """H v for every member at once (v stacked like params): double backward through the summed loss,
    whose Hessian is block diagonal (one block per member)."""
    op, _ = _hvp_operator(params, x, y)
    return unflat(op(flat(v)), params)


def sharpness(params: dict, x, y, v0: torch.Tensor | None = None, steps: int = 10,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(lambda (E,), unit Ritz vectors (E, P)): the largest Ritz value of every member's Hessian after `steps`
    Lanczos steps (full reorthogonalisation) from v0 (E, P), e.g. the previous Ritz vector (warm start), or
    a random start. Ritz values increase towards lambda_max with `steps`; with few top eigenvalues close
    together Lanczos converges far faster than power iteration."""
    op, theta = _hvp_operator(params, x, y)
    if v0 is None:
        v0 = torch.randn(theta.shape, generator=generator, dtype=theta.dtype).to(theta.device)
    q = v0 / v0.norm(dim=1, keepdim=True)
    basis, alpha, beta = [q], [], []
    for j in range(steps):
        w = op(basis[-1])
        alpha.append((w * basis[-1]).sum(1))
        if j < steps - 1:
            b = torch.stack(basis, 1)                                      # (E, j + 1, P)
            for _ in range(2):                                             # full reorthogonalisation, twice
                w = w - torch.einsum("ejp,ej->ep", b, torch.einsum("ejp,ep->ej", b, w))
            beta.append(w.norm(dim=1))
            basis.append(w / beta[-1].clamp_min(torch.finfo(w.dtype).tiny).unsqueeze(1))
    t = torch.diag_embed(torch.stack(alpha, 1))
    if beta:
        off = torch.diag_embed(torch.stack(beta, 1), offset=1)
        t = t + off + off.transpose(1, 2)
    ok = t.flatten(1).isfinite().all(1)                                    # a diverged member gives NaN
    evals, evecs = torch.linalg.eigh(torch.where(ok[:, None, None], t, 0).double())
    ritz = torch.einsum("ejp,ej->ep", torch.stack(basis, 1), evecs[:, :, -1].to(t.dtype))
    nan = torch.tensor(float("nan"), dtype=t.dtype, device=t.device)
    return torch.where(ok, evals[:, -1].to(t.dtype), nan), ritz / ritz.norm(dim=1, keepdim=True)


@dataclass
class Trace:
    """A training run. loss (steps + 1, E): the loss at every step before its update (the minibatch loss
    under SGD); at_step (m,): the steps where the sharpness was measured; sharp (m, E) and full_loss (m, E):
    the sharpness and the full-batch loss there; params: the final state."""
    loss: torch.Tensor
    at_step: torch.Tensor
    sharp: torch.Tensor
    full_loss: torch.Tensor
    params: dict


def train(params: dict, x, y, lr, steps: int, momentum=0.0, every: int = 5, lanczos: int = 10,
          first_lanczos: int = 30, batch: int | None = None, generator: torch.Generator | None = None) -> Trace:
    """Train every member for `steps` steps (full batch, or minibatches of `batch`), measuring the full-batch
    sharpness every `every` steps (and at the end) by `lanczos` Lanczos steps warm-started from the previous
    Ritz vector (`first_lanczos` from a random start at step 0). `lr` and `momentum` are scalars or one per member. An odd `every` samples both phases of
    the period-2 oscillation at the edge of stability."""
    members = next(iter(params.values())).shape[0]
    dev, dt = x.device, x.dtype
    lr, beta = (torch.as_tensor(z, dtype=dt, device=dev).expand(members).clone() for z in (lr, momentum))
    params = {k: t.detach().clone() for k, t in params.items()}
    bufs = zeros_like(params)
    v = None
    rows, at, sharp, full = [], [], [], []
    for k in range(steps + 1):
        if k % every == 0 or k == steps:
            lam, v = sharpness(params, x, y, v, first_lanczos if k == 0 else lanczos, generator)
            at.append(k)
            sharp.append(lam)
            with torch.no_grad():
                full.append(losses(params, x, y))
        if batch is None:
            xb, yb = x, y
        else:
            idx = torch.randperm(x.shape[0], generator=generator)[:batch].to(dev)
            xb, yb = x[idx], y[idx]
        p = {k_: t.requires_grad_() for k_, t in params.items()}
        loss = losses(p, xb, yb)
        rows.append(loss.detach())
        if k == steps:
            break
        grads = dict(zip(p, torch.autograd.grad(loss.sum(), list(p.values()))))
        with torch.no_grad():
            params, bufs = momentum_step({k_: t.detach() for k_, t in p.items()}, grads, bufs, lr, beta)
    return Trace(torch.stack(rows), torch.tensor(at), torch.stack(sharp), torch.stack(full),
                 {k: t.detach() for k, t in params.items()})


def member_module(params: dict, i: int, widths) -> torch.nn.Sequential:
    """Member i of a stacked state as an nn.Sequential (for `lmbook.hessian`), same dtype and device."""
    like = next(iter(params.values()))
    model = mlp_module(widths).to(dtype=like.dtype, device=like.device)
    model.load_state_dict({k: t[i] for k, t in params.items()})
    return model


def first_reach(series: torch.Tensor, level) -> torch.Tensor:
    """Index of the first sample of each column of `series` (m, E) at or above `level` (scalar or (E,));
    -1 where a column never reaches it."""
    above = series >= torch.as_tensor(level, dtype=series.dtype, device=series.device)
    return torch.where(above.any(0), above.to(torch.int8).argmax(0), torch.full_like(above[0], -1, dtype=torch.long))
