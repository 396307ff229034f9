"""Measurements on trajectories, finite-size exponents and crossings against exact answers."""

import math

import numpy as np
import pytest
import torch

from lmbook.measure import (
    crossing_times,
    finite_size_exponent,
    first_crossing,
    fit_crossing,
    loglog_slope,
)


def test_crossing_times_interpolate_and_give_nan_when_never_reached():
    traj = torch.tensor([[0.0, 0.0], [0.5, 0.1], [1.0, 0.2]])
    t = crossing_times(traj, 0.75)
    assert torch.isclose(t[0], torch.tensor(1.5)) and torch.isnan(t[1])


def test_finite_size_exponent_recovers_the_leading_power_under_a_correction():
    n = torch.tensor([256.0, 512, 1024, 2048, 4096], dtype=torch.float64)
    y = 3.0 * n**-0.5 * (1 + 1.6 * n**-0.5)
    assert abs(loglog_slope(n, y) - (-0.5)) > 0.01  # the plain fit is biased by the correction
    assert torch.isclose(
        finite_size_exponent(n, y, -0.5), torch.tensor(-0.5, dtype=torch.float64), atol=1e-3
    )
    batch = torch.stack([y, 2 * n**-0.75 * (1 - 0.5 * n**-0.25)])
    corr = finite_size_exponent(n, batch[1:], -0.25)
    assert torch.isclose(corr[0], torch.tensor(-0.75, dtype=torch.float64), atol=1e-3)


def test_crossings():
    x = np.array([0.0, 1.0, 2.0, 3.0])
    assert fit_crossing(x, 2 * x - 3) == pytest.approx(1.5)
    assert first_crossing(x, np.array([-2.0, -1.0, 1.0, 3.0])) == pytest.approx(1.5)
    assert math.isnan(first_crossing(x, np.ones(4)))
