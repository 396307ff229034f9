"""Functions on the circle: inputs, Fourier amplitudes of residuals, learning times per frequency,
and the eigenvalues of rotation-invariant kernels.

Conventions
- P inputs on a uniform grid, theta_p = 2 pi p / P, x_p = (cos theta_p, sin theta_p) (unit circle,
  d = 2).
- A rotation-invariant kernel K(x, x') = k(t), t the angle between x and x', defines the integral
  operator (T f)(theta) = (1/2 pi) int k(theta - theta') f(theta') dtheta'. Its eigenvalue for
  cos(j theta) and sin(j theta) is lambda_j = (1/pi) int_0^pi k(t) cos(j t) dt. On the grid the
  kernel matrix divided by P has these eigenvalues (up to aliasing by lambda_{j + P m}), so gradient
  descent on the mean squared error with step lr shrinks the residual's frequency-j part by
  1 - lr lambda_j per step.
- Fourier amplitude j of values v on the grid: |sum_p v_p exp(-i j theta_p)| / P (half the
  amplitude of a cosine).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy.integrate import quad

from .measure import crossing_times

__all__ = ["circle_grid", "fourier_amplitudes", "learning_times", "cosine_coefficient",
           "grid_eigenvalues"]


def circle_grid(P: int, dtype=torch.float64, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(theta (P,), x (P, 2)): the uniform grid on the unit circle."""
    theta = torch.arange(P, dtype=dtype, device=device) * (2 * math.pi / P)
    return theta, torch.stack([torch.cos(theta), torch.sin(theta)], 1)


def fourier_amplitudes(values: torch.Tensor) -> torch.Tensor:
    """|rfft| / P along the last axis (grid points): amplitude of each frequency 0 .. P/2."""
    return torch.fft.rfft(values, dim=-1).abs() / values.shape[-1]


def learning_times(residuals: torch.Tensor, frequencies, level: float = math.exp(-1)
                   ) -> torch.Tensor:
    """First record index at which the residual's amplitude at each frequency falls below `level`
    times its initial amplitude, interpolated linearly in the log of the amplitude (exact for an
    exponential decay). residuals: (T, ..., P) on the grid; returns (..., len(frequencies)), NaN
    where the amplitude never falls that far. Multiply by the recording interval to get steps."""
    amp = fourier_amplitudes(residuals)[..., list(frequencies)]
    return crossing_times(-torch.log(amp / amp[0]), -math.log(level))


def cosine_coefficient(kernel, j: int) -> float:
    """lambda_j = (1/pi) int_0^pi kernel(t) cos(j t) dt by adaptive quadrature; `kernel` maps an
    angle in [0, pi] to a float."""
    value, _ = quad(lambda t: float(kernel(t)) * math.cos(j * t), 0.0, math.pi, limit=200,
                    epsabs=1e-13, epsrel=1e-11)
    return value / math.pi


def grid_eigenvalues(kernel, P: int) -> np.ndarray:
    """Eigenvalues lambda_j^grid, j = 0 .. P/2, of the kernel matrix divided by P on the P-point
    grid: the discrete cosine sums (1/P) sum_p kernel(t_p) cos(j theta_p), t_p = the angle between
    theta_p and 0. They equal the continuum lambda_j plus the aliased lambda_{j + P m}, m != 0.
    `kernel` maps an array of angles in [0, pi] to values."""
    theta = 2 * np.pi * np.arange(P) / P
    values = np.asarray(kernel(np.arccos(np.cos(theta))), dtype=np.float64)
    return np.fft.rfft(values).real / P
