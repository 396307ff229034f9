"""Gaussian averages of phi(x) = erf(a x) in closed form, and the signal-propagation maps of random
networks built from them (Poole et al. 2016; Schoenholz et al. 2017; the same arcsin forms are
Saad and Solla's for the soft committee machine).

Conventions
- (u, v) ~ N(0, C), C = [[C11, C12], [C12, C22]]; phi = erf(a x),
  phi' = (2a/sqrt(pi)) exp(-a^2 x^2).
      E[phi(u) phi(v)]   = (2/pi) arcsin(2a^2 C12 / sqrt((1 + 2a^2 C11)(1 + 2a^2 C22)))
      E[phi'(u) phi'(v)] = (4a^2/pi) [(1 + 2a^2 C11)(1 + 2a^2 C22) - 4a^4 C12^2]^(-1/2)
- Random network: h^{l+1} = W^l phi(h^l) + b^l with W_ij ~ N(0, sigma_w^2 / n) (n the fan-in) and
  b_i ~ N(0, sigma_b^2); sw2 = sigma_w^2, sb2 = sigma_b^2. q is the pre-activation variance per
  unit, c the correlation of the pre-activations at two inputs.
      q-map      q' = sw2 E[phi(u)^2] + sb2,                          u ~ N(0, q)
      c-map      c' = (sw2 E[phi(u) phi(v)] + sb2) / q*,              C = q* [[1, c], [c, 1]]
      chi_c(c)   = sw2 E[phi'(u) phi'(v)] at that C  (= d c'/d c, by Price's theorem)
      chi_1      = chi_c(1) = sw2 (4a^2/pi) (1 + 4a^2 q*)^(-1/2)
      xi_c       = -1 / ln chi_c(c*),   c* the stable fixed point of the c-map (1 when chi_1 <= 1)
  The critical line chi_1 = 1 is parametric in q*: sw2 = (pi/(4a^2)) sqrt(1 + 4a^2 q*),
  sb2 = q* - sw2 (2/pi) arcsin(2a^2 q*/(1 + 2a^2 q*)).
- Numeric functions take floats or NumPy arrays (and torch tensors for the two averages).
"""

from __future__ import annotations

import math

import numpy as np
import sympy as sp
import torch
from scipy.optimize import brentq

__all__ = ["erf_averages", "derive_erf_averages", "erf_maps", "phiphi", "dphidphi", "q_map",
           "c_map", "chi_1", "chi_c", "q_star", "c_star", "xi_c", "critical_line",
           "critical_sw2", "gaussian_expectation"]


def _lib(x):
    return torch if isinstance(x, torch.Tensor) else np


def erf_averages():
    """SymPy (a, C11, C12, C22, E[phi phi], E[phi' phi']): the closed forms of the docstring."""
    a = sp.Symbol("a", positive=True)
    C11, C22 = sp.symbols("C_11 C_22", positive=True)
    C12 = sp.Symbol("C_12", real=True)
    D = (1 + 2 * a**2 * C11) * (1 + 2 * a**2 * C22)
    e_phi = 2 / sp.pi * sp.asin(2 * a**2 * C12 / sp.sqrt(D))
    e_dphi = 4 * a**2 / sp.pi / sp.sqrt(D - 4 * a**4 * C12**2)
    return a, C11, C12, C22, e_phi, e_dphi


def derive_erf_averages():
    """The two averages derived by SymPy. E[phi' phi'] is a Gaussian integral: with
    phi'(u) phi'(v) = (4a^2/pi) exp(-a^2 x.x), x = (u, v), it equals
    (4a^2/pi) det(C)^(-1/2) det(C^-1 + 2a^2 I)^(-1/2) = (4a^2/pi) det(I + 2a^2 C)^(-1/2).
    E[phi phi] then follows from Price's theorem, d E[phi phi]/d C12 = E[phi' phi'], integrated
    from C12 = 0, where it vanishes (phi is odd). Returns (a, C11, C12, C22, E_phi, E_dphi)."""
    a, C11, C12, C22, _, _ = erf_averages()
    C = sp.Matrix([[C11, C12], [C12, C22]])
    det = sp.expand(sp.cancel(C.det() * (C.inv() + 2 * a**2 * sp.eye(2)).det()))
    e_dphi = 4 * a**2 / sp.pi / sp.sqrt(det)
    # e_dphi = (4a^2/pi) (D - 4a^4 C12^2)^(-1/2): integrate in C12 with D a symbol
    D, t = sp.Symbol("D", positive=True), sp.Symbol("t", real=True)
    d_value = sp.factor(det + 4 * a**4 * C12**2)
    assert sp.expand(d_value - (1 + 2 * a**2 * C11) * (1 + 2 * a**2 * C22)) == 0
    integrand = 4 * a**2 / sp.pi / sp.sqrt(D - 4 * a**4 * t**2)
    e_phi = sp.integrate(integrand, (t, 0, C12), conds="none").subs(D, d_value)
    return a, C11, C12, C22, e_phi, e_dphi


def erf_maps():
    """SymPy expressions of the maps (module docstring), as a dict with the symbols:
    q, c, sw2, sb2, a and 'q_map', 'c_map' (at q), 'chi_c' (at q, c), 'chi_1' (at q),
    'critical_sw2' and 'critical_sb2' (the critical line, parametric in q = q*)."""
    a, C11, C12, C22, e_phi, e_dphi = erf_averages()
    q = sp.Symbol("q", positive=True)
    c = sp.Symbol("c", real=True)
    sw2, sb2 = sp.symbols("sigma_w^2 sigma_b^2", positive=True)
    at = {C11: q, C22: q}
    qmap = sw2 * e_phi.subs(at).subs(C12, q) + sb2
    cmap = (sw2 * e_phi.subs(at).subs(C12, q * c) + sb2) / q
    chic = sp.simplify(sw2 * e_dphi.subs(at).subs(C12, q * c))
    chi1 = sp.simplify(chic.subs(c, 1))
    crit_sw2 = sp.solve(sp.Eq(chi1, 1), sw2)[0]
    crit_sb2 = sp.solve(sp.Eq(qmap.subs(sw2, crit_sw2), q), sb2)[0]
    return dict(q=q, c=c, sw2=sw2, sb2=sb2, a=a, q_map=qmap, c_map=cmap, chi_c=chic, chi_1=chi1,
                critical_sw2=crit_sw2, critical_sb2=crit_sb2)


def phiphi(C11, C12, C22, a):
    """E[erf(a u) erf(a v)] for (u, v) ~ N(0, C)."""
    lib = _lib(C12)
    ka = 2 * a * a
    return 2 / math.pi * lib.arcsin(ka * C12 / lib.sqrt((1 + ka * C11) * (1 + ka * C22)))


def dphidphi(C11, C12, C22, a):
    """E[phi'(u) phi'(v)] for phi = erf(a x), (u, v) ~ N(0, C)."""
    lib = _lib(C12)
    ka = 2 * a * a
    return 4 * a * a / math.pi / lib.sqrt((1 + ka * C11) * (1 + ka * C22) - (ka * C12) ** 2)


def q_map(q, sw2, sb2, a):
    """One layer of the length map."""
    return sw2 * phiphi(q, q, q, a) + sb2


def c_map(c, q, sw2, sb2, a):
    """One layer of the correlation map at variance q in both inputs (q = q* keeps it fixed)."""
    return (sw2 * phiphi(q, q * c, q, a) + sb2) / q_map(q, sw2, sb2, a)


def chi_c(c, q, sw2, a):
    """sw2 E[phi'(u) phi'(v)] at C = q [[1, c], [c, 1]]: the slope of the c-map at c."""
    return sw2 * dphidphi(q, q * c, q, a)


def chi_1(q, sw2, a):
    """chi_c(1): the mean squared singular value of a layer's Jacobian at variance q."""
    return chi_c(1.0, q, sw2, a)


def q_star(sw2, sb2, a, q_max=1e6):
    """The fixed point of the length map (brentq). With sb2 = 0 and chi_1(0) <= 1 it is 0."""
    f = lambda q: q_map(q, sw2, sb2, a) - q
    if sb2 == 0 and chi_1(0.0, sw2, a) <= 1:
        return 0.0
    lo = 1e-12 if sb2 == 0 else 0.0
    return brentq(f, lo if f(lo) > 0 else 1e-6, q_max, xtol=1e-15, rtol=1e-14)


def c_star(sw2, sb2, a):
    """The stable fixed point of the c-map at q*: 1 in the ordered phase (chi_1 <= 1), else the
    root below 1 (brentq; 0 when sb2 = 0, phi being odd)."""
    q = q_star(sw2, sb2, a)
    if chi_1(q, sw2, a) <= 1:
        return 1.0
    if sb2 == 0:
        return 0.0
    f = lambda c: c_map(c, q, sw2, sb2, a) - c
    hi = 1.0 - 1e-9
    return brentq(f, 0.0, hi, xtol=1e-15, rtol=1e-14)


def xi_c(sw2, sb2, a):
    """The correlation depth scale -1 / ln chi_c(c*) (infinite on the critical line)."""
    q = q_star(sw2, sb2, a)
    slope = chi_c(c_star(sw2, sb2, a), q, sw2, a)
    return math.inf if slope == 1 else -1.0 / math.log(slope)


def critical_line(q, a):
    """(sb2, sw2) on the critical line chi_1 = 1, parametrised by q* = q (array or float)."""
    q = np.asarray(q, dtype=float)
    sw2 = math.pi / (4 * a * a) * np.sqrt(1 + 4 * a * a * q)
    return q - sw2 * phiphi(q, q, q, a), sw2


def critical_sw2(sb2, a):
    """sw2 on the critical line at bias variance sb2 (brentq in q*)."""
    if sb2 == 0:
        return math.pi / (4 * a * a)
    q = brentq(lambda q: critical_line(q, a)[0] - sb2, 1e-12, 1e8, xtol=1e-15, rtol=1e-14)
    return float(critical_line(q, a)[1])


def gaussian_expectation(f, C, degree=64):
    """E[f(u, v)] for (u, v) ~ N(0, C) by tensor-product Gauss-Hermite quadrature (probabilists'
    weights, `degree` nodes per axis) after the Cholesky map (u, v) = L z. Exact for polynomials of
    degree < 2 `degree`; for smooth f the error falls faster than any power of `degree`."""
    z, w = np.polynomial.hermite_e.hermegauss(degree)
    w = w / w.sum()
    L = np.linalg.cholesky(np.asarray(C, dtype=float))
    z1, z2 = np.meshgrid(z, z, indexing="ij")
    u = L[0, 0] * z1
    v = L[1, 0] * z1 + L[1, 1] * z2
    return float((np.outer(w, w) * f(u, v)).sum())
