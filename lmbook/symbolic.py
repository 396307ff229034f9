"""SymPy helpers shared by the chapters' derivations."""

from __future__ import annotations

import sympy as sp


def pick_root(roots, sample: dict):
    """The one root in `roots` that is real and positive at the parameter values `sample`
    (sp.solve returns every branch of a logarithm; the physical one is real)."""
    good = []
    for r in roots:
        v = complex(sp.N(r.subs(sample)))
        if abs(v.imag) < 1e-12 * max(1.0, abs(v.real)) and v.real > 0:
            good.append(r)
    if len(good) != 1:
        raise ValueError(
            f"expected exactly one real positive root at {sample}, found {len(good)} among {roots}"
        )
    return good[0]


def loglog_derivative(expr, x):
    """d log(expr) / d log(x), simplified: the exponent of a power law in x."""
    return sp.simplify(x * sp.diff(sp.log(expr), x))
