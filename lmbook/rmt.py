"""Random-matrix spectra: Marchenko-Pastur, Tracy-Widom edges, and rank-one (BBP) spikes.

Conventions
- Sample-covariance form: for X (m x n) with iid centred entries of variance sigma2, the
  eigenvalues of S = X X^T / n follow the Marchenko-Pastur (MP) law with ratio gamma = m / n <= 1
  (no atom at zero) and scale sigma2: support sigma2 [(1 - sqrt gamma)^2, (1 + sqrt gamma)^2],
  density sqrt((lam_+ - lam)(lam - lam_-)) / (2 pi sigma2 gamma lam). An lmbook.mlp layer W of shape
  (fan_out m, fan_in n) with W_ij ~ N(0, sigma_w^2 / n) has W W^T / sigma_w^2 = S with sigma2 = 1.
- Edges at finite size (Johnstone 2001; Ma 2012 for the half-integer centring): the largest
  eigenvalue of S is approximately centre_+ + scale_+ TW1 and the smallest centre_- - scale_- TW1,
  with TW1 the GOE Tracy-Widom law, centre_+- = (sqrt(n - 1/2) +- sqrt(m - 1/2))^2 / n and
  scale_+- = n^(-2/3) gamma^(-1/6) lam_+-^(2/3) (sigma2 = 1).
- KS distance of a spectrum (R, m) to a limit law: sup |F_ESD - F| per row, with the ESD a step
  function of m jumps of 1/m, so KS >= 1/(2m) (attained by the classical locations F^-1((k-1/2)/m)).
- Rank-one rectangular spike (Benaych-Georges & Nadakuditi 2012, arXiv:1103.2221):
  Y = theta u v^T + N with |u| = |v| = 1, N (m x n) iid of variance 1/n, c = m / n <= 1. The bulk
  of singular values ends at 1 + sqrt c; for theta > c^(1/4) the top singular value tends to
  sqrt((1 + theta^2)(c + theta^2)) / theta, with squared overlaps
  |<u_top, u>|^2 -> 1 - c (1 + theta^2) / (theta^2 (theta^2 + c)) (left, m-dimensional) and
  |<v_top, v>|^2 -> 1 - (c + theta^2) / (theta^2 (theta^2 + 1)) (right, n-dimensional).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.special import airy

__all__ = ["bgn_location", "bgn_overlaps", "bgn_threshold", "edge_cdf", "hill_alpha",
           "iid_ks_mean_log", "ks_distance", "ks_to_mp", "mp_cdf", "mp_density", "mp_edges",
           "mp_quantile", "spiked", "tw1_cdf", "tw1_moments", "tw_edge"]


def mp_edges(gamma: float, sigma2: float = 1.0) -> tuple[float, float]:
    """(lam_-, lam_+) of the MP law with ratio gamma <= 1 and scale sigma2."""
    r = math.sqrt(gamma)
    return sigma2 * (1 - r) ** 2, sigma2 * (1 + r) ** 2


def mp_density(x, gamma: float, sigma2: float = 1.0) -> np.ndarray:
    """The MP density at x (zero outside the support), gamma <= 1."""
    x = np.asarray(x, dtype=float)
    lo, hi = mp_edges(gamma, sigma2)
    inside = (x > lo) & (x < hi)
    out = np.zeros_like(x)
    xi = x[inside]
    out[inside] = np.sqrt((hi - xi) * (xi - lo)) / (2 * math.pi * sigma2 * gamma * xi)
    return out


def edge_cdf(density, lo: float, hi: float, x, nodes: int = 48) -> np.ndarray:
    """The distribution function at x of a density supported on [lo, hi] that vanishes as a square
    root at both ends (MP, semicircle), by Gauss-Legendre quadrature in the angle
    lam = lo + (hi - lo)(1 - cos t)/2, which removes the endpoint singularities. `density` is any
    vectorised callable (a lambdified SymPy expression will do); it is evaluated at the interior
    Gauss nodes (and at lo, with weight zero, for x <= lo). Clipped to [0, 1]."""
    x = np.asarray(x, dtype=float)
    t_all = np.arccos(np.clip(1 - 2 * (x.ravel() - lo) / (hi - lo), -1, 1))  # in [0, pi]
    g, w = np.polynomial.legendre.leggauss(nodes)
    out = np.empty_like(t_all)
    for s in range(0, t_all.size, 4096):  # in chunks, to keep the (points, nodes) arrays small
        t_end = t_all[s : s + 4096]
        t = 0.5 * t_end[:, None] * (g + 1)
        lam = lo + (hi - lo) * (1 - np.cos(t)) / 2
        dlam = (hi - lo) * np.sin(t) / 2
        with np.errstate(invalid="ignore", divide="ignore"):  # t = 0 (x <= lo) has weight 0
            f = np.where(t > 0, density(lam), 0.0)
        out[s : s + 4096] = (0.5 * t_end[:, None] * w * f * dlam).sum(-1)
    return np.clip(out.reshape(x.shape), 0, 1)


def mp_cdf(x, gamma: float, sigma2: float = 1.0, nodes: int = 48) -> np.ndarray:
    """The MP distribution function at x (gamma <= 1), by `edge_cdf` (error < 1e-12)."""
    lo, hi = mp_edges(gamma, sigma2)
    return edge_cdf(lambda lam: mp_density(lam, gamma, sigma2), lo, hi, x, nodes)


def mp_quantile(u, gamma: float, sigma2: float = 1.0, nodes: int = 4096) -> np.ndarray:
    """The MP quantile function F^-1(u), u in [0, 1] (gamma <= 1): `mp_cdf` tabulated on a grid
    uniform in the angle of `edge_cdf` (dense at the edges) and inverted by linear interpolation,
    |F(F^-1(u)) - u| < 1e-6. F^-1 of uniform draws gives iid draws from MP (inverse CDF)."""
    lo, hi = mp_edges(gamma, sigma2)
    lam = lo + (hi - lo) * (1 - np.cos(np.linspace(0, math.pi, nodes + 1))) / 2
    F = np.maximum.accumulate(mp_cdf(lam, gamma, sigma2))
    F[0], F[-1] = 0.0, 1.0
    return np.interp(np.asarray(u, dtype=float), F, lam)


def iid_ks_mean_log(m: int, nodes: int = 200) -> float:
    """E ln D_m, D_m the KS distance of m iid draws to their own continuous law (the same for every
    law): E ln D = -int_{1/(2m)}^1 F(x) dx / x with F the exact distribution function of D_m
    (scipy's kstwo), by Gauss-Legendre in ln x. Kolmogorov: sqrt(m) D_m -> K, E K = 0.87."""
    from scipy.stats import kstwo

    g, w = np.polynomial.legendre.leggauss(nodes)
    a = math.log(1 / (2 * m))
    s = a * (1 - g) / 2  # from a to 0
    return float(-(w * (-a) / 2 * kstwo.cdf(np.exp(s), m)).sum())


def ks_distance(samples, cdf) -> np.ndarray:
    """Kolmogorov distance sup_x |F_emp - F| of each row of samples (R, m) to a continuous
    distribution function `cdf` (vectorised callable): one value per row. With F evaluated at the
    sorted row, m * KS = 1/2 + max_k |m F(x_(k)) - (k - 1/2)|: the floor 1/(2m) plus the largest
    displacement of a sample from its classical location, counted in samples."""
    e = np.sort(np.asarray(samples, dtype=float), axis=-1)
    m = e.shape[-1]
    F = np.asarray(cdf(e), dtype=float)
    i = np.arange(1, m + 1)
    return np.maximum(np.abs(F - i / m), np.abs(F - (i - 1) / m)).max(-1)


def ks_to_mp(eigs, gamma: float, sigma2: float = 1.0) -> np.ndarray:
    """Kolmogorov-Smirnov distance sup |F_ESD - F_MP| of each row of eigs (R, m): one per matrix."""
    return ks_distance(eigs, lambda e: mp_cdf(e, gamma, sigma2))


def tw1_cdf(s, nodes: int = 60, upper: float = 16.0) -> np.ndarray:
    """The GOE Tracy-Widom distribution F1(s) as the Fredholm determinant det(I - K) on L2(s, inf),
    K(x, y) = Ai((x + y)/2) / 2 (Ferrari & Spohn 2005), by Gauss-Legendre on (s, upper) (Bornemann
    2010); accurate to about 1e-12 for s in (-10, 8)."""
    s = np.atleast_1d(np.asarray(s, dtype=float))
    g, w = np.polynomial.legendre.leggauss(nodes)
    out = np.empty_like(s)
    for k, sk in enumerate(s):
        if sk >= upper:
            out[k] = 1.0
            continue
        x = sk + (upper - sk) * (g + 1) / 2
        sw = np.sqrt(w * (upper - sk) / 2)
        K = 0.5 * airy((x[:, None] + x[None, :]) / 2)[0]
        out[k] = np.linalg.det(np.eye(nodes) - sw[:, None] * K * sw[None, :])
    return out


def tw1_moments(lo: float = -10.0, hi: float = 8.0, nodes: int = 160) -> tuple[float, float]:
    """(mean, standard deviation) of TW1 from its CDF by Gauss-Legendre on (lo, hi):
    E s = hi - int F ds and E s^2 = hi^2 - int 2 s F ds (F(lo) ~ 1e-18, 1 - F(hi) ~ 1e-11)."""
    g, w = np.polynomial.legendre.leggauss(nodes)
    s = lo + (hi - lo) * (g + 1) / 2
    w = w * (hi - lo) / 2
    F = tw1_cdf(s)
    mean = hi - (w * F).sum()
    second = hi**2 - (w * 2 * s * F).sum()
    return float(mean), float(math.sqrt(second - mean**2))


def tw_edge(m: int, n: int, edge: str = "top") -> tuple[float, float]:
    """(centre, scale) of the largest ("top") or smallest ("bottom") eigenvalue of X X^T / n,
    X (m x n) iid of variance 1, m <= n: lam_max ~ centre + scale TW1, lam_min ~ centre - scale TW1
    (module docstring: half-integer centring, scale n^(-2/3) gamma^(-1/6) lam_edge^(2/3))."""
    sign = 1.0 if edge == "top" else -1.0
    centre = (math.sqrt(n - 0.5) + sign * math.sqrt(m - 0.5)) ** 2 / n
    gamma = m / n
    lam = (1 + sign * math.sqrt(gamma)) ** 2
    return centre, n ** (-2 / 3) * gamma ** (-1 / 6) * lam ** (2 / 3)


def bgn_threshold(c: float) -> float:
    """The spike strength above which an outlier singular value separates: c^(1/4)."""
    return c**0.25


def bgn_location(theta, c: float):
    """The limit of the top singular value of theta u v^T + N (module docstring): the outlier
    sqrt((1 + theta^2)(c + theta^2)) / theta above threshold, the bulk edge 1 + sqrt c below."""
    theta = np.asarray(theta, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.sqrt((1 + theta**2) * (c + theta**2)) / theta
    return np.where(theta > bgn_threshold(c), out, 1 + math.sqrt(c))


def bgn_overlaps(theta, c: float):
    """(left, right) limits of the squared overlaps of the top singular vectors with u and v
    (module docstring); zero below threshold."""
    theta = np.asarray(theta, dtype=float)
    t2 = theta**2
    above = theta > bgn_threshold(c)
    with np.errstate(divide="ignore", invalid="ignore"):
        left = 1 - c * (1 + t2) / (t2 * (t2 + c))
        right = 1 - (c + t2) / (t2 * (t2 + 1))
    return np.where(above, left, 0.0), np.where(above, right, 0.0)


def spiked(replicates: int, m: int, n: int, theta, generator=None, dtype=torch.float64,
           device=None):
    """(Y, u, v): `replicates` draws of Y = theta u v^T + N (module docstring), shape (R, m, n),
    with u (R, m), v (R, n) uniform on their spheres, independent of N. theta is a scalar or one
    value per replicate."""
    kw = dict(generator=generator, dtype=dtype, device=device)
    N = torch.randn(replicates, m, n, **kw) / math.sqrt(n)
    u = torch.randn(replicates, m, **kw)
    v = torch.randn(replicates, n, **kw)
    u, v = u / u.norm(dim=-1, keepdim=True), v / v.norm(dim=-1, keepdim=True)
    th = torch.as_tensor(theta, dtype=dtype, device=device).reshape(-1, 1, 1)
    return N + th * u[:, :, None] * v[:, None, :], u, v


def hill_alpha(eigs, k: int) -> np.ndarray:
    """Hill estimate of a power-law tail exponent alpha of the density, rho ~ lam^(-alpha), from the
    k largest of each row of eigs (R, m): alpha = 1 + k / sum log(lam_(i) / lam_(k+1)).
    Phenomenology: a fit, not a prediction (and it depends on k)."""
    e = np.sort(np.asarray(eigs, dtype=float), axis=-1)[..., ::-1]
    logs = np.log(e[..., :k] / e[..., k : k + 1])
    return 1 + k / logs.sum(-1)
