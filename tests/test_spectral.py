"""Fourier tools on the circle against exact answers."""
import math

import numpy as np
import torch

from lmbook.spectral import (
    circle_grid,
    cosine_coefficient,
    fourier_amplitudes,
    grid_eigenvalues,
    learning_times,
)


def test_grid_and_amplitudes():
    theta, x = circle_grid(64)
    assert torch.allclose(x.norm(dim=1), torch.ones(64, dtype=torch.float64))
    amp = fourier_amplitudes(3 * torch.cos(5 * theta + 0.7) + 2.0)
    assert math.isclose(amp[5].item(), 1.5, rel_tol=1e-12)
    assert math.isclose(amp[0].item(), 2.0, rel_tol=1e-12)
    assert amp[[1, 2, 3, 4, 6]].abs().max() < 1e-12


def test_learning_times_of_exponential_decays():
    theta, _ = circle_grid(32)
    rates = {1: 0.5, 3: 0.05}
    t = torch.arange(200, dtype=torch.float64)[:, None]
    traj = sum(torch.exp(-r * t) * torch.cos(j * theta) for j, r in rates.items())
    times = learning_times(traj, [1, 3])
    # log interpolation is exact
    assert torch.allclose(times, torch.tensor([2.0, 20.0], dtype=torch.float64), rtol=1e-12)
    assert torch.isnan(learning_times(traj, [1, 3], level=1e-30)).all()


def test_cosine_coefficients_of_a_cosine_series():
    kernel = lambda t: 1.0 + 0.5 * np.cos(2 * t) - 0.25 * np.cos(3 * t)
    # the operator (1/2 pi) int k(theta - theta') f(theta') has eigenvalue a_0 for the constant,
    # a_j / 2 for cos(j theta)
    assert [round(cosine_coefficient(kernel, j), 12) for j in range(4)] == [1.0, 0.0, 0.25, -0.125]


def test_grid_eigenvalues_are_the_continuum_ones_plus_aliases():
    kernel = lambda t: 1.0 + 0.5 * np.cos(2 * t) - 0.25 * np.cos(3 * t) + 0.125 * np.cos(9 * t)
    lam = grid_eigenvalues(kernel, 8)                     # on 8 points frequency 9 aliases onto 1
    expected = [cosine_coefficient(kernel, j) for j in range(5)]
    expected[1] += cosine_coefficient(kernel, 9)
    assert np.allclose(lam, expected, atol=1e-12)
