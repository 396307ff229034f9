"""Closed-form NNGP and NTK of ReLU MLPs: the arc-cosine kernels (Cho & Saul 2009) and their
recursions (Lee et al. 2018; Jacot et al. 2018; Lee et al. 2019; Arora et al. 2019).

Network (NTK parameterisation, all weights and biases i.i.d. N(0, 1), L = `hidden_layers` ReLU
layers):
    h^1     = sigma_w/sqrt(d) W^1 x + sigma_b b^1                        (x in R^d)
    h^{l+1} = sigma_w/sqrt(n_l) W^{l+1} relu(h^l) + sigma_b b^{l+1},      l = 1..L
    f(x)    = h^{L+1}, a scalar: the readout is one more such linear layer, with its own bias.

Kernels (index l counts the ReLU layers passed;
(u, v) ~ N(0, [[S(x,x), S(x,x')], [S(x,x'), S(x',x')]]), S = Sigma^{l-1}):
    Sigma^0    = sigma_w^2 x.x'/d + sigma_b^2                             covariance of h^1
    Sigma^l    = sigma_w^2 E[relu(u) relu(v)] + sigma_b^2                 covariance of h^{l+1}
    dotSigma^l = sigma_w^2 E[relu'(u) relu'(v)]
    Theta^0    = Sigma^0,   Theta^l = Sigma^l + Theta^{l-1} dotSigma^l
NNGP = Sigma^L and NTK = Theta^L, the limits as all widths n_l -> infinity of the output
covariance over initialisations and of the Gram matrix of parameter gradients
sum_p df(x)/dp df(x')/dp (the readout's own weights and bias contribute the term Sigma^L, the
biases of layer l+1 the sigma_b^2 inside Sigma^l).
(Chapter card II-1 writes Sigma^(l+1) for our Sigma^l.) With t = arccos(rho) the angle of (u, v):
    E[relu(u) relu(v)]   = sqrt(q1 q2)/(2 pi) (sin t + (pi - t) cos t),
    E[relu'(u) relu'(v)] = (pi - t)/(2 pi).
"""

from __future__ import annotations

import math
import operator

import numpy as np
import sympy as sp

__all__ = ["arccos_expectations", "derive_arccos_expectations", "relu_nngp_ntk"]


def arccos_expectations():
    """SymPy closed forms (theta, q1, q2, E_relu, E_step): E[relu(u) relu(v)] and
    E[relu'(u) relu'(v)] for (u, v) centred Gaussian with variances q1, q2 and correlation
    cos(theta), 0 <= theta <= pi."""
    theta = sp.Symbol("theta", nonnegative=True)
    q1, q2 = sp.symbols("q1 q2", positive=True)
    e_relu = sp.sqrt(q1 * q2) / (2 * sp.pi) * (sp.sin(theta) + (sp.pi - theta) * sp.cos(theta))
    e_step = (sp.pi - theta) / (2 * sp.pi)
    return theta, q1, q2, e_relu, e_step


def derive_arccos_expectations():
    """The same two expectations derived by SymPy, by Gaussian integration in polar coordinates.

    Write u = sqrt(q1) z1, v = sqrt(q2) (cos(theta) z1 + sin(theta) z2) with
    z = r (cos phi, sin phi) ~ N(0, I): u > 0 and v > 0 exactly for theta - pi/2 < phi < pi/2, and
    the density is exp(-r^2/2) r dr dphi / (2 pi).
    Returns (theta, q1, q2, E_relu, E_step), simplified."""
    theta, q1, q2, _, _ = arccos_expectations()
    r, phi = sp.symbols("r phi", nonnegative=True)
    arc = (phi, theta - sp.pi / 2, sp.pi / 2)
    radial = lambda k: sp.integrate(r**k * sp.exp(-(r**2) / 2), (r, 0, sp.oo))
    e_relu = (
        sp.sqrt(q1 * q2)
        / (2 * sp.pi)
        * radial(3)
        * sp.integrate(sp.cos(phi) * sp.cos(phi - theta), arc)
    )
    e_step = radial(1) * sp.integrate(1, arc) / (2 * sp.pi)
    return theta, q1, q2, sp.simplify(e_relu), sp.simplify(e_step)


def _unit_angles(a):
    """Angles between the unit rows of a, accurate near 0 and pi where arccos(a.a') loses
    sqrt(eps)."""
    c = np.clip(a @ a.T, -1.0, 1.0)
    t = np.arccos(c)
    i, j = np.nonzero(np.triu(np.abs(c) > 1 - 1e-3))  # elsewhere arccos' slope is below 23
    step = max(1, 2**20 // a.shape[1])
    for s in range(0, len(i), step):
        ai, aj = a[i[s : s + step]], a[j[s : s + step]]
        t[i[s : s + step], j[s : s + step]] = 2 * np.arctan2(
            np.linalg.norm(ai - aj, axis=1), np.linalg.norm(ai + aj, axis=1)
        )
    return np.triu(t) + np.triu(t, 1).T


def relu_nngp_ntk(x, hidden_layers, sigma_w, sigma_b):
    """(NNGP, NTK): float64 (n, n) Gram matrices Sigma^L and Theta^L on the rows of x (shape (n, d))
    for the ReLU MLP with L = `hidden_layers` >= 0 ReLU layers in the NTK parameterisation of the
    module docstring.

    hidden_layers = 0 is the linear readout alone: NNGP = NTK = sigma_w^2 x.x'/d + sigma_b^2.
    Numerics: each pair is carried as (norms, angle) and the angle is updated from the
    cancellation-free gap sqrt(q1 q2) - Sigma, so identical rows give exactly the diagonal values,
    antipodal rows the t = pi limit, and nearly identical rows keep full relative accuracy (plain
    arccos(rho) would err by sqrt(eps))."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"x must have shape (n, d) with n, d >= 1, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("x must be finite")
    try:
        L = operator.index(hidden_layers)
    except TypeError:
        raise ValueError(f"hidden_layers must be an integer >= 0, got {hidden_layers!r}") from None
    if L < 0 or isinstance(hidden_layers, bool):
        raise ValueError(f"hidden_layers must be an integer >= 0, got {hidden_layers!r}")
    sw, sb = float(sigma_w), float(sigma_b)
    if not (math.isfinite(sw) and sw > 0 and math.isfinite(sb) and sb >= 0):
        raise ValueError(
            f"need sigma_w > 0 and sigma_b >= 0 (finite), got {sigma_w!r}, {sigma_b!r}"
        )

    # Work on the distinct rows (duplicates then share every value bit for bit).
    xu, inv = np.unique(x, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    z = np.hstack([sw * xu / math.sqrt(x.shape[1]), np.full((len(xu), 1), sb)])  # Sigma^0 = z.z'
    r = np.sqrt((z * z).sum(axis=1))
    if (r == 0).any():
        raise ValueError(
            "a row of x is zero and sigma_b = 0: its pre-activations vanish "
            "and relu'(0) is undefined"
        )
    t = _unit_angles(z / r[:, None])
    rr = np.outer(r, r)
    S = rr * np.cos(t)
    T = S.copy()
    sw2, a, b = sw * sw, sw * sw / 2, sb * sb
    for _ in range(L):
        sin_t, cos_t = np.sin(t), np.cos(t)
        S = sw2 * rr * (sin_t + (np.pi - t) * cos_t) / (2 * np.pi) + b
        T = S + T * (sw2 * (np.pi - t) / (2 * np.pi))
        r_new = np.sqrt(a * r * r + b)
        rr_new = np.outer(r_new, r_new)
        # gap = rr_new - S >= 0 without cancellation;
        # pi - (sin t + (pi - t) cos t) = 2 pi sin^2(t/2) - (sin t - t cos t)
        sin_minus = sin_t - t * cos_t
        small = t < 1e-2  # series there: sin t - t cos t cancels
        ts = t[small]
        sin_minus[small] = ts**3 * (1 / 3 - ts * ts * (1 / 30 - ts * ts / 840))
        gap = a * b * np.subtract.outer(r, r) ** 2 / (rr_new + a * rr + b) + sw2 * rr * (
            2 * np.pi * np.sin(t / 2) ** 2 - sin_minus
        ) / (2 * np.pi)
        t = 2 * np.arctan2(
            np.sqrt(np.maximum(gap, 0.0)), np.sqrt(rr_new + S)
        )  # S >= 0 after a ReLU layer
        r, rr = r_new, rr_new
    return S[np.ix_(inv, inv)], T[np.ix_(inv, inv)]
