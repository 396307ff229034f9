"""Benchmarks behind `lmbook bench`. One for now: "ensemble", many small MLPs trained at once vs one
by one.

The task: n MLPs input -> width -> width -> 1 (tanh), an `lmbook.mlp.Net` in the standard
parameterisation (weights N(0, 1/fan_in), biases N(0, 0.1^2), drawn by `lmbook.mlp.init` from
seed 0), full-batch GD with per-model learning rates (log-spaced 0.02 .. 0.1) on one shared batch
(x ~ N(0, I), y a fixed teacher), MSE loss (torch's mse_loss, the mean of the squared error),
`steps` steps. The same networks are trained three ways in one run:
- loop: one nn.Module at a time (`lmbook.mlp.modules`), the usual `torch.optim.SGD` / zero_grad /
  backward / step loop;
- vmap: `lmbook.ensemble.train_ensemble` (torch.func: vmap over functional_call, functional SGD);
- mlp: the stacked pure functions of `lmbook.mlp` (`mlp.train`: batched matmuls, closed-form
  backpropagation), with step 2 lr because its loss is half the squared error.
The final losses (the loss at the last step, before its update) must agree across the three;
speedup is loop time / the faster ensemble's time. Each method runs once untimed (2 steps) to warm
up first.
"""

from __future__ import annotations

import math
import time

import torch

from .. import mlp
from ..errors import UsageError

BENCHMARKS = ("ensemble",)
AGREE_RTOL = {torch.float32: 1e-3, torch.float64: 1e-9}


def _net(dim, width) -> mlp.Net:
    return mlp.Net((dim, width, width, 1), "tanh", "sp", sigma_w=1.0, sigma_b=0.1)


def _models(n, dim, width, dtype):
    """The n benchmark networks as nn.Modules (the same draw every call)."""
    net = _net(dim, width)
    return mlp.modules(net, mlp.init(net, n, torch.Generator().manual_seed(0), dtype=dtype))


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
    from ..ensemble import train_ensemble

    losses, _ = train_ensemble(models, x, y, torch.nn.functional.mse_loss, lrs, steps)
    return losses[-1] if steps else torch.full((len(models),), float("nan"))


def train_mlp(models, x, y, lrs, steps) -> torch.Tensor:
    """The networks stacked into lmbook.mlp's parameters and trained by `mlp.train` (its loss is
    half torch's mse_loss for one output, hence the step 2 lr and the loss 2 L)."""
    if not steps:
        return torch.full((len(models),), float("nan"))
    linear = models[0][0]
    net = _net(linear.in_features, linear.out_features)
    _, record = mlp.train(net, mlp.from_modules(net, models), x, y, 2 * lrs, steps)
    return 2 * record["loss"][-2]


def _timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t, out


def ensemble_bench(
    models: int = 64,
    width: int = 64,
    steps: int = 100,
    batch: int = 128,
    dim: int = 32,
    dtype: str = "float32",
    threads: int | None = None,
    repeats: int = 1,
) -> dict:
    """Train `models` MLPs by loop, vmap and lmbook.mlp from the same init on the same data; times
    (best of
    `repeats`), speedups and the largest relative disagreement of the final losses."""
    for name, v in (
        ("models", models),
        ("width", width),
        ("steps", steps),
        ("batch", batch),
        ("dim", dim),
        ("repeats", repeats),
    ) + ((("threads", threads),) if threads is not None else ()):
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
        methods = {"loop": train_loop, "vmap": train_vmap, "mlp": train_mlp}
        seconds, finals = {}, {}
        for name, fn in methods.items():
            fn(_models(min(models, 2), dim, width, dt), x, y, lrs[: min(models, 2)], 2)  # warm-up
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
    diff = max(
        float(((finals[k] - ref).abs() / ref.abs().clamp_min(1e-12)).max()) for k in ("vmap", "mlp")
    )
    fastest = min(("vmap", "mlp"), key=seconds.get)
    return {
        "benchmark": "ensemble",
        "models": models,
        "width": width,
        "hidden_layers": 2,
        "input_dim": dim,
        "batch": batch,
        "steps": steps,
        "dtype": dtype,
        "threads": threads_used,
        "torch": torch.__version__,
        "repeats": repeats,
        "loop_seconds": seconds["loop"],
        "ensemble_seconds": seconds[fastest],
        "ensemble_method": fastest,
        "speedup": seconds["loop"] / seconds[fastest],
        "vmap_seconds": seconds["vmap"],
        "vmap_speedup": seconds["loop"] / seconds["vmap"],
        "mlp_seconds": seconds["mlp"],
        "mlp_speedup": seconds["loop"] / seconds["mlp"],
        "final_loss_mean": float(ref.mean()),
        "max_relative_loss_difference": diff,
        "agree": bool(diff <= AGREE_RTOL[dt]),
        "tolerance": AGREE_RTOL[dt],
    }


def run(name: str, **kwargs) -> dict:
    """Run the benchmark `name` (see BENCHMARKS) with its keyword arguments."""
    if name not in BENCHMARKS:
        raise UsageError(f"unknown benchmark {name!r}; choose one of: {', '.join(BENCHMARKS)}")
    return ensemble_bench(**kwargs)


def text_table(r: dict) -> str:
    """A few aligned lines for the terminal."""
    lines = [
        f"ensemble of {r['models']} MLPs ({r['input_dim']}-{r['width']}-{r['width']}-1, tanh), "
        f"batch {r['batch']}, {r['steps']} steps, {r['dtype']}, {r['threads']} threads, "
        f"torch {r['torch']}"
    ]
    for k in ("loop", "vmap", "mlp"):
        ratio = "" if k == "loop" else f"  {r[k + '_speedup']:6.2f}x"
        lines.append(f"  {k:<5} {r[k + '_seconds']:8.3f} s{ratio}")
    verdict = "agree" if r["agree"] else "DISAGREE"
    lines.append(
        f"  speedup {r['speedup']:.2f}x ({r['ensemble_method']}); final losses {verdict} "
        f"(max relative difference {r['max_relative_loss_difference']:.1e}, "
        f"tolerance {r['tolerance']:.0e})"
    )
    return "\n".join(lines)
