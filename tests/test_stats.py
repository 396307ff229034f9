"""Statistics of replicates: the band, its calibration under skew, jackknife and batch means."""

import math

import numpy as np
import pytest
import torch

from lmbook.stats import ALPHA, FAMILY, estimate, group_means, jackknife, t_quantile, time_average


def test_estimate_of_few_replicates_is_the_t_interval():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    e = estimate(x)
    assert e.value == 2.5 and e.dof == 3 and e.se == pytest.approx(x.std(ddof=1) / 2)
    assert e.band() == pytest.approx(t_quantile(ALPHA / FAMILY, 3) * e.se)


def test_many_replicates_are_batch_means():
    x = np.arange(1000.0)
    g = group_means(x)
    assert g.size == 32 and estimate(x).value == x.mean()
    assert estimate(x).dof == 31


def test_nan_gives_nan_se():
    assert math.isnan(estimate([1.0, math.nan, 2.0]).se)
    assert math.isnan(estimate([1.0]).se)


def test_the_band_is_calibrated_for_skewed_replicates():
    """Exponential per-chain values (skew 2), 6400 chains: a 1% two-sided band covers the true mean
    in about 99% of 2000 experiments (batch means make the group means near-normal)."""
    rng = np.random.default_rng(0)
    x = rng.exponential(size=(2000, 6400))
    g = x.reshape(2000, 32, 200).mean(-1)
    se = g.std(1, ddof=1) / math.sqrt(32)
    miss = np.abs(g.mean(1) - 1.0) / (t_quantile(0.01, 31) * se)
    assert 0.985 < (miss <= 1).mean() < 0.996


def test_jackknife_of_the_mean_is_the_usual_se():
    samples = np.random.default_rng(0).normal(size=(3, 40))
    e = jackknife(lambda y: y[1], samples, groups=40)
    assert e.value == pytest.approx(samples[1].mean()) and e.dof == 39
    assert e.se == pytest.approx(samples[1].std(ddof=1) / math.sqrt(40))
    assert 0.5 < jackknife(lambda y: y[1], samples, groups=8).se / e.se < 2


def test_time_average_batch_means():
    series = torch.arange(100, dtype=torch.float64)
    e = time_average(series, batches=5)
    means = series.view(5, 20).mean(1)
    assert e.value == pytest.approx(49.5) and e.se == pytest.approx(
        means.std().item() / math.sqrt(5)
    )
    assert math.isnan(time_average(torch.ones(3), batches=5).se)
