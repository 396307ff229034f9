"""Benchmarks behind `lmbook bench`. One for now: "ensemble", many small MLPs trained at once vs one by one.

The task: n MLPs input -> width -> width -> 1 (tanh), seeds 0..n-1, torch's default init, full-batch GD
with per-model learning rates (log-spaced 0.02 .. 0.1) on one shared batch (x ~ N(0, I), y a fixed
teacher), MSE loss, `steps` steps. The same models are trained three ways in one run:
- loop: one model at a time, the usual `torch.optim.SGD` / zero_grad / backward / step loop;
- vmap: `lmbook.ensemble.train_ensemble` (torch.func: vmap over functional_call, functional SGD);
- bmm: the stacked weights as (n, in, out) tensors, the layers as one addmm (shared input) and two
  baddbmm calls, one autograd pass over the summed losses, one in-place foreach SGD update.
The final losses (the loss at the last step, before its update) must agree across the three; speedup is
loop time / the faster ensemble's time. Each method runs once untimed (2 steps) to warm up first.
"""
from __future__ import annotations

import math
import time

import torch

from .errors import UsageError

BENCHMARKS = ("ensemble",)
AGREE_RTOL = {torch.float32: 1e-3, torch.float64: 1e-9}


def _models(n, dim, width, dtype):
    out = []
    for seed in range(n):
        torch.manual_seed(seed)
        out.append(torch.nn.Sequential(torch.nn.Linear(dim, width), torch.nn.Tanh(), torch.nn.Linear(width, width),
                                       torch.nn.Tanh(), torch.nn.Linear(width, 1)).to(dtype))
    return out


def _data(batch, dim, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, dim, generator=g, dtype=torch.float64)
    u = torch.randn(dim, generator=g, dtype=torch.float64) / math.sqrt(dim)
    y = torch.sin(2 * x @ u).unsqueeze(1)
    return x.to(dtype), y.to(dtype)


def _lrs(n, dtype):
    return torch.logspace(math.log10(0.02), math.log10(0.1), n, dtype=dtype)


def train_loop(models, x, y, lrs, steps) -> torch.Tensor:
    """Each model alone with torch.optim.SGD; the last step's loss of each."""
    final = torch.empty(len(models), dtype=x.dtype)
    for i, m in enumerate(models):
        opt = torch.optim.SGD(m.parameters(), lr=float(lrs[i]))
        loss = torch.full((), float("nan"))
        for _ in range(steps):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(m(x), y)
            loss.backward()
            opt.step()
        final[i] = loss.detach()
    return final


def train_vmap(models, x, y, lrs, steps) -> torch.Tensor:
    from .ensemble import train_ensemble

    losses, _ = train_ensemble(models, x, y, torch.nn.functional.mse_loss, lrs, steps)
    return losses[-1] if steps else torch.full((len(models),), float("nan"))


def train_bmm(models, x, y, lrs, steps) -> torch.Tensor:
    """The layers of all models fused, in nn.Linear's (out, in) layout with features-by-batch activations
    (n, width, batch), so nothing is transposed or copied: one addmm for the shared input layer, then
    baddbmm per layer; one autograd pass over the summed losses; one foreach in-place SGD update."""
    n, (batch, _), width = len(models), x.shape, models[0][0].out_features
    with torch.no_grad():
        params = [torch.cat([m[0].weight for m in models]),                     # (n * width, dim)
                  torch.cat([m[0].bias for m in models]).unsqueeze(1),          # (n * width, 1)
                  torch.stack([m[2].weight for m in models]),                   # (n, width, width)
                  torch.stack([m[2].bias for m in models]).unsqueeze(2),        # (n, width, 1)
                  torch.stack([m[4].weight for m in models]),                   # (n, 1, width)
                  torch.stack([m[4].bias for m in models]).unsqueeze(2)]        # (n, 1, 1)
    params = [t.contiguous().requires_grad_() for t in params]
    w1, b1, w2, b2, w3, b3 = params
    per_row = lrs.repeat_interleave(width).unsqueeze(1)                         # the first layer's rows
    lr = [per_row, per_row] + [lrs.view(n, 1, 1)] * 4
    xt, yt = x.T, y.T                                                           # (dim, batch), (1, batch)
    per = torch.full((n,), float("nan"))
    for _ in range(steps):
        h = torch.tanh(torch.addmm(b1, w1, xt)).view(n, width, batch)
        h = torch.tanh(torch.baddbmm(b2, w2, h))
        err = torch.baddbmm(b3, w3, h).squeeze(1) - yt                          # (n, batch)
        per = err.square().mean(1)
        grads = torch.autograd.grad(per.sum(), params)
        with torch.no_grad():
            torch._foreach_addcmul_(params, grads, lr, value=-1)
    return per.detach()


def _timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t, out


def ensemble_bench(models: int = 64, width: int = 64, steps: int = 100, batch: int = 128, dim: int = 32,
                   dtype: str = "float32", threads: int | None = None, repeats: int = 1) -> dict:
    """Train `models` MLPs by loop, vmap and bmm from the same init on the same data; times (best of
    `repeats`), speedups and the largest relative disagreement of the final losses."""
    for name, v in (("models", models), ("width", width), ("steps", steps), ("batch", batch), ("dim", dim),
                    ("repeats", repeats)) + ((("threads", threads),) if threads is not None else ()):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise UsageError(f"--{name} must be a positive integer, got {v!r}")
    if dtype not in ("float32", "float64"):
        raise UsageError(f"unknown dtype {dtype!r}; choose one of: float32, float64")
    dt = getattr(torch, dtype)
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        x, y = _data(batch, dim, dt)
        lrs = _lrs(models, dt)
        methods = {"loop": train_loop, "vmap": train_vmap, "bmm": train_bmm}
        seconds, finals = {}, {}
        for name, fn in methods.items():
            fn(_models(min(models, 2), dim, width, dt), x, y, lrs[:min(models, 2)], 2)  # warm-up
            best = float("inf")
            for _ in range(repeats):
                ms = _models(models, dim, width, dt)  # same init every time, outside the timing
                s, finals[name] = _timed(fn, ms, x, y, lrs, steps)
                best = min(best, s)
            seconds[name] = best
        threads_used = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    ref = finals["loop"]
    diff = max(float(((finals[k] - ref).abs() / ref.abs().clamp_min(1e-12)).max()) for k in ("vmap", "bmm"))
    fastest = min(("vmap", "bmm"), key=seconds.get)
    return {
        "benchmark": "ensemble", "models": models, "width": width, "hidden_layers": 2, "input_dim": dim,
        "batch": batch, "steps": steps, "dtype": dtype, "threads": threads_used, "torch": torch.__version__,
        "repeats": repeats,
        "loop_seconds": seconds["loop"], "ensemble_seconds": seconds[fastest], "ensemble_method": fastest,
        "speedup": seconds["loop"] / seconds[fastest],
        "vmap_seconds": seconds["vmap"], "vmap_speedup": seconds["loop"] / seconds["vmap"],
        "bmm_seconds": seconds["bmm"], "bmm_speedup": seconds["loop"] / seconds["bmm"],
        "final_loss_mean": float(ref.mean()), "max_relative_loss_difference": diff,
        "agree": bool(diff <= AGREE_RTOL[dt]), "tolerance": AGREE_RTOL[dt],
    }


def run(name: str, **kwargs) -> dict:
    """Run the benchmark `name` (see BENCHMARKS) with its keyword arguments."""
    if name not in BENCHMARKS:
        raise UsageError(f"unknown benchmark {name!r}; choose one of: {', '.join(BENCHMARKS)}")
    return ensemble_bench(**kwargs)


def text_table(r: dict) -> str:
    """A few aligned lines for the terminal."""
    lines = [f"ensemble of {r['models']} MLPs ({r['input_dim']}-{r['width']}-{r['width']}-1, tanh), "
             f"batch {r['batch']}, {r['steps']} steps, {r['dtype']}, {r['threads']} threads, torch {r['torch']}"]
    for k in ("loop", "vmap", "bmm"):
        ratio = "" if k == "loop" else f"  {r[k + '_speedup']:6.2f}x"
        lines.append(f"  {k:<5} {r[k + '_seconds']:8.3f} s{ratio}")
    verdict = "agree" if r["agree"] else "DISAGREE"
    lines.append(f"  speedup {r['speedup']:.2f}x ({r['ensemble_method']}); final losses {verdict} "
                 f"(max relative difference {r['max_relative_loss_difference']:.1e}, tolerance {r['tolerance']:.0e})")
    return "\n".join(lines)
