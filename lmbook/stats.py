"""Statistics of replicates: the statistical band of a claim, standard errors, jackknife, batch
means.

Conventions
- Replicates are independent runs of one experiment (seeds, chains, networks); they are
  exchangeable, so contiguous groups of them are random groups.
- The statistical band of a claim is a two-sided Student-t interval for the mean at family-wise
  level ALPHA over FAMILY claims (Bonferroni): each claim uses alpha = ALPHA / FAMILY, so a
  chapter whose predictions are all correct passes all its statistical claims with probability
  at least 1 - ALPHA.
- Skew. The interval is computed on group means (batch means): with n >= GROUPED_FROM replicates
  they are cut into GROUPS contiguous groups (at least 5 per group), whose means are close to
  normal even when single replicates are skewed (per-chain averages of a loss, first-passage
  times), and the t quantile has GROUPS - 1 degrees of freedom. With fewer replicates each one is
  its own group. `lmbook sweep` measures whether the bands are calibrated.
- "Never happened" (a first-passage time that never occurred, a crossing that does not exist) is
  NaN everywhere in lmbook: a NaN propagates to the mean, and a NaN never passes a claim.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np
import scipy.stats
import torch

ALPHA = 0.01  # family-wise error rate of one chapter run
FAMILY = 20  # claims per chapter at most (the runner enforces it): the Bonferroni divisor
GROUPS = 32  # batch-means groups for many replicates
GROUPED_FROM = 160  # replicates from which they are grouped (5 or more per group)


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A measured value with its standard error, degrees of freedom and how the SE was obtained.
    dof = math.inf means a normal quantile; se = 0 means an exact (deterministic) measurement."""

    value: float
    se: float = 0.0
    dof: float = math.inf
    method: str = "exact: no statistical error"
    n: int = 1

    def band(self, alpha: float = ALPHA / FAMILY) -> float:
        """Half-width of the two-sided (1 - alpha) interval: t quantile x SE (0 when se is 0)."""
        if self.se == 0:
            return 0.0
        return t_quantile(alpha, self.dof) * self.se


def t_quantile(alpha: float, dof: float) -> float:
    """The two-sided Student-t quantile at level alpha (normal for infinite dof)."""
    return float(
        scipy.stats.norm.isf(alpha / 2) if math.isinf(dof) else scipy.stats.t.isf(alpha / 2, dof)
    )


def as_array(x) -> np.ndarray:
    """A flat float64 NumPy copy of a tensor, array, list or scalar."""
    from .errors import UsageError

    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    try:
        return np.asarray(x, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise UsageError(f"expected numbers (a number, list, array or tensor), got {x!r}") from None


def group_means(samples) -> np.ndarray:
    """The per-group means used for the band: the replicates themselves below GROUPED_FROM, else the
    means of GROUPS contiguous groups (sizes differing by at most one)."""
    x = as_array(samples)
    if x.size < GROUPED_FROM:
        return x
    return np.array([part.mean() for part in np.array_split(x, GROUPS)])


def estimate(samples) -> Estimate:
    """The mean of replicate values and its batch-means standard error (module docstring).
    Fewer than two replicates, or any NaN, give a NaN standard error (which never passes)."""
    x = as_array(samples)
    g = group_means(x)
    if x.size < 2 or not np.isfinite(x).all():
        return Estimate(
            float(np.mean(x)) if x.size else math.nan,
            math.nan,
            math.nan,
            "fewer than 2 finite replicates",
            int(x.size),
        )
    se = float(g.std(ddof=1) / math.sqrt(g.size))
    how = (
        f"t interval over {x.size} replicates"
        if g.size == x.size
        else f"batch means: {x.size} replicates in {g.size} groups, t interval over the group means"
    )
    return Estimate(float(x.mean()), se, g.size - 1, how, int(x.size))


def mean_and_se(x: torch.Tensor, dim: int = 0):
    """Mean and plain standard error of the mean along `dim`, for tables and figures (claims use
    `estimate`). NaNs propagate."""
    n = x.shape[dim]
    return x.mean(dim), x.std(dim) / n**0.5


def jackknife(statistic: Callable, samples, groups: int = 64) -> Estimate:
    """statistic(mean over chains) for samples of shape (..., chains), with the delete-a-group
    jackknife SE over `groups` contiguous groups of chains (one chain per group when there are
    fewer); the Estimate has groups - 1 degrees of freedom. For statistics of the mean that have no
    per-replicate value (a crossing of a mean curve, a ratio of means)."""
    samples = np.asarray(
        samples.cpu() if isinstance(samples, torch.Tensor) else samples, dtype=float
    )
    n = samples.shape[-1]
    g = min(groups, n)
    sums = np.stack([part.sum(-1) for part in np.array_split(samples, g, axis=-1)], axis=-1)
    counts = np.array([part.shape[-1] for part in np.array_split(np.arange(n), g)])
    value = statistic(sums.sum(-1) / n)
    loo = np.array([statistic((sums.sum(-1) - sums[..., j]) / (n - counts[j])) for j in range(g)])
    se = math.sqrt((g - 1) / g * ((loo - loo.mean()) ** 2).sum())
    return Estimate(
        float(value), se, g - 1, f"delete-a-group jackknife over {g} groups of {n} chains", n
    )


def time_average(series: torch.Tensor, batches: int = 5) -> Estimate:
    """The mean of a correlated time series with its SE by batch means: the series is cut into
    `batches` consecutive blocks (the last len % batches samples dropped from the error) and the SE
    is the standard deviation of the block means over sqrt(batches), with batches - 1 dof. Valid
    when a block is longer than the correlation time; NaN SE for fewer than 2 samples per block."""
    x = torch.as_tensor(series, dtype=torch.float64).flatten()
    size = x.numel() // batches
    if batches < 2 or size < 2:
        return Estimate(
            float(x.mean()) if x.numel() else math.nan,
            math.nan,
            math.nan,
            "too short for batch means",
            int(x.numel()),
        )
    means = x[: size * batches].view(batches, size).mean(1)
    return Estimate(
        float(x.mean()),
        float(means.std() / math.sqrt(batches)),
        batches - 1,
        f"batch means over {batches} blocks of a time series",
        int(x.numel()),
    )
