"""Measurements: first-passage times, log-log slopes and finite-size exponents, crossings of sampled
curves. "Never crossed" is NaN everywhere (lmbook.stats)."""

from __future__ import annotations

import math

import numpy as np
import torch


def crossing_times(traj: torch.Tensor, level) -> torch.Tensor:
    """First time index at which traj (time, ...) reaches `level` (broadcast over the trailing
    dims), linearly interpolated between steps; NaN where it never does."""
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
    return (lx * (ly - ly.mean(-1, keepdim=True))).sum(-1) / (lx**2).sum(-1)


def finite_size_exponent(n, y: torch.Tensor, correction: float) -> torch.Tensor:
    """The leading exponent p of y = A n^p (1 + c n^correction), fitted along the last dimension by
    nonlinear least squares on log y (A, p and the amplitude c of the first correction all fitted;
    the linearised fit on (1, log n, n^correction) is the starting point). `correction` < 0 is the
    known exponent of the relative first correction; n broadcasts against y. Returns p with y's
    leading shape (NaN where y is not positive and finite)."""
    from scipy.optimize import least_squares

    y64 = torch.as_tensor(y, dtype=torch.float64).cpu()
    n64 = torch.as_tensor(n, dtype=torch.float64).cpu().expand_as(y64)
    rows_y, rows_n = y64.reshape(-1, y64.shape[-1]).numpy(), n64.reshape(-1, y64.shape[-1]).numpy()
    out = []
    for yr, nr in zip(rows_y, rows_n):
        if not (yr > 0).all() or not torch.isfinite(torch.as_tensor(yr)).all():
            out.append(float("nan"))
            continue
        ly, ln_, corr = (
            torch.as_tensor(yr).log().numpy(),
            torch.as_tensor(nr).log().numpy(),
            nr**correction,
        )
        start = (
            torch.linalg.lstsq(
                torch.as_tensor([[1.0, a, b] for a, b in zip(ln_, corr)]),
                torch.as_tensor(ly)[:, None],
            )
            .solution[:, 0]
            .numpy()
        )
        start[2] = max(start[2], -0.9 / corr.max())  # keep 1 + c n^correction positive

        def residual(q, ln_=ln_, corr=corr, ly=ly):
            return q[0] + q[1] * ln_ + np.log(np.maximum(1 + q[2] * corr, 1e-12)) - ly

        out.append(float(least_squares(residual, start, xtol=1e-14, ftol=1e-14, gtol=1e-14).x[1]))
    return torch.tensor(out, dtype=torch.float64).reshape(y64.shape[:-1])


def fit_crossing(x, y, level: float = 0.0) -> float:
    """Where the least-squares straight line through the points (x, y) reaches `level`."""
    slope, intercept = np.polyfit(np.asarray(x, dtype=float), np.asarray(y, dtype=float), 1)
    return float((level - intercept) / slope)


def first_crossing(x, y, level: float = 0.0) -> float:
    """Linear interpolation between the first neighbouring pair of points (x increasing) whose y
    values straddle `level`; nan when no pair does."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    for k in range(len(x) - 1):
        if (y[k] - level) * (y[k + 1] - level) <= 0 and y[k] != y[k + 1]:
            return float(x[k] + (level - y[k]) * (x[k + 1] - x[k]) / (y[k + 1] - y[k]))
    return math.nan
