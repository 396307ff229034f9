"""Measurements on trajectories: first-passage times and log-log slopes."""
from __future__ import annotations

import torch


def crossing_times(traj: torch.Tensor, level) -> torch.Tensor:
    """First time index at which traj (time, ...) reaches `level` (broadcast over the trailing dims),
    linearly interpolated between steps; NaN where it never does."""
    level = torch.as_tensor(level, dtype=traj.dtype, device=traj.device).expand(traj.shape[1:])
    above = traj >= level
    reached = above.any(0)
    k = above.to(torch.int8).argmax(0).clamp(min=1)
    y1 = traj.gather(0, k[None])[0]
    y0 = traj.gather(0, (k - 1)[None])[0]
    t = (k - 1) + (level - y0) / (y1 - y0)
    t = torch.where(above[0], torch.zeros_like(t), t)
    return torch.where(reached, t, torch.full_like(t, float("nan")))


def loglog_slope(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Least-squares slope of log y against log x along the last dimension."""
    lx, ly = torch.log(x), torch.log(y)
    lx = lx - lx.mean(-1, keepdim=True)
    return (lx * (ly - ly.mean(-1, keepdim=True))).sum(-1) / (lx ** 2).sum(-1)


def mean_and_se(x: torch.Tensor, dim: int = 0):
    """Mean and standard error of the mean along `dim` (NaNs propagate: a NaN never passes a claim)."""
    n = x.shape[dim]
    return x.mean(dim), x.std(dim) / n ** 0.5
