import math

import numpy as np
import pytest
import sympy as sp
import torch
from scipy.special import erf

from lmbook import gaussian_averages as ga

A = [0.5, math.sqrt(math.pi) / 2, 1.7]
COVS = [[[1.0, 0.3], [0.3, 0.5]], [[2.0, -1.2], [-1.2, 1.0]], [[0.2, 0.199], [0.199, 0.2]]]


@pytest.mark.parametrize("a", A)
@pytest.mark.parametrize("C", COVS)
def test_closed_forms_against_quadrature(a, C):
    (c11, c12), (_, c22) = C
    quad = ga.gaussian_expectation(lambda u, v: erf(a * u) * erf(a * v), C, degree=200)
    assert ga.phiphi(c11, c12, c22, a) == pytest.approx(quad, abs=1e-12)
    d = lambda x: 2 * a / math.sqrt(math.pi) * np.exp(-a * a * x * x)
    quad = ga.gaussian_expectation(lambda u, v: d(u) * d(v), C, degree=200)
    assert ga.dphidphi(c11, c12, c22, a) == pytest.approx(quad, rel=1e-10)


def test_closed_forms_against_monte_carlo():
    rng = np.random.default_rng(0)
    a, C = 1.3, np.array([[1.5, 0.9], [0.9, 0.8]])
    u, v = (rng.standard_normal((400_000, 2)) @ np.linalg.cholesky(C).T).T
    x = erf(a * u) * erf(a * v)
    assert abs(x.mean() - ga.phiphi(1.5, 0.9, 0.8, a)) < 5 * x.std() / math.sqrt(x.size)


def test_sympy_forms_and_derivation():
    a, C11, C12, C22, e_phi, e_dphi = ga.erf_averages()
    _, _, _, _, d_phi, d_dphi = ga.derive_erf_averages()
    f = sp.lambdify((a, C11, C12, C22), [e_phi, e_dphi, d_phi, d_dphi])
    for args in [(0.7, 1.0, 0.3, 0.5), (1.3, 2.0, -1.2, 1.0)]:
        v = f(*args)
        assert v[0] == pytest.approx(v[2], rel=1e-12) and v[1] == pytest.approx(v[3], rel=1e-12)
        assert v[0] == pytest.approx(ga.phiphi(*args[1:], args[0]), rel=1e-12)
        assert v[1] == pytest.approx(ga.dphidphi(*args[1:], args[0]), rel=1e-12)
    # Price's theorem: d E[phi phi] / d C12 = E[phi' phi']
    assert sp.simplify(sp.diff(e_phi, C12) - e_dphi) == 0


def test_torch_and_numpy_agree():
    t = ga.phiphi(*torch.tensor([1.0, 0.4, 0.7], dtype=torch.float64), 0.9)
    assert float(t) == pytest.approx(ga.phiphi(1.0, 0.4, 0.7, 0.9), rel=1e-14)
    t = ga.dphidphi(*torch.tensor([1.0, 0.4, 0.7], dtype=torch.float64), 0.9)
    assert float(t) == pytest.approx(ga.dphidphi(1.0, 0.4, 0.7, 0.9), rel=1e-14)


def test_maps_fixed_points_and_critical_line():
    m = ga.erf_maps()
    a = math.sqrt(math.pi) / 2
    for sw2, sb2 in [(1.5, 0.3), (4.0, 0.3), (3.0, 0.0), (0.8, 0.0)]:
        q = ga.q_star(sw2, sb2, a)
        assert ga.q_map(q, sw2, sb2, a) == pytest.approx(q, abs=1e-12)
        if q == 0:
            assert ga.chi_1(0.0, sw2, a) <= 1
            continue
        c = ga.c_star(sw2, sb2, a)
        assert ga.c_map(c, q, sw2, sb2, a) == pytest.approx(c, abs=1e-10)
        sub = {m["q"]: q, m["sw2"]: sw2, m["sb2"]: sb2, m["a"]: a}
        assert float(m["chi_1"].subs(sub)) == pytest.approx(ga.chi_1(q, sw2, a), rel=1e-12)
        assert float(m["q_map"].subs(sub)) == pytest.approx(q, rel=1e-12)
        # chi_c is the slope of the c-map (finite difference)
        h, c0 = 1e-6, 0.4
        slope = (ga.c_map(c0 + h, q, sw2, sb2, a) - ga.c_map(c0 - h, q, sw2, sb2, a)) / (2 * h)
        assert slope == pytest.approx(ga.chi_c(c0, q, sw2, a), rel=1e-6)
        stable = ga.chi_c(c, q, sw2, a)
        assert stable < 1 + 1e-12
    # critical line: chi_1 = 1 and q* on it
    for sb2 in [0.05, 0.3, 1.0]:
        sw2 = ga.critical_sw2(sb2, a)
        q = ga.q_star(sw2, sb2, a)
        assert ga.chi_1(q, sw2, a) == pytest.approx(1.0, abs=1e-6)
        sub = {m["q"]: q, m["a"]: a}
        assert float(m["critical_sw2"].subs(sub)) == pytest.approx(sw2, rel=1e-6)
        assert float(m["critical_sb2"].subs(sub)) == pytest.approx(sb2, rel=1e-6)
    assert ga.xi_c(1.5, 0.3, a) == pytest.approx(-1 / math.log(ga.chi_1(ga.q_star(1.5, 0.3, a),
                                                                        1.5, a)))
