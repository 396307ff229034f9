"""lmbook.finite_width against brute force: the SymPy moments against direct sampling of the
Binomial-chi^2 mixture, the total-cumulance cumulants against quadrature over each component, the
Gil-Pelaez median against sampled medians, the large-width series against the exact cumulants, and
the batched networks against the mixture."""

import math

import numpy as np
import sympy as sp
import torch
from scipy import integrate, stats

from lmbook import finite_width as fw


def _mixture(n, size, rng, init="gaussian"):
    """log R_l sampled from the mixture itself (conditional on K >= 1)."""
    k = rng.binomial(n, 0.5, size=4 * size)
    k = k[k >= 1][:size]
    if init == "gaussian":
        return np.log(2.0 / n * rng.chisquare(k))
    return np.log(2.0 * rng.beta(k / 2.0, np.maximum(n - k, 1e-300) / 2.0))


def test_sympy_norm_moments():
    n, m1, m2 = fw.derive_norm_moments()
    assert m1 == 1 and sp.simplify(m2 - (1 + 5 / n)) == 0


def test_cumulants_against_quadrature():
    for n in (3, 8):
        p = fw.active_weights(n)
        moments = np.zeros(4)
        for k, pk in zip(range(1, n + 1), p):
            dist = stats.chi2(k)
            for m in range(1, 5):
                def integrand(u, n=n, m=m, dist=dist):  # over u = log y: a smooth density
                    return (math.log(2.0 / n) + u) ** m * dist.pdf(math.exp(u)) * math.exp(u)

                val = integrate.quad(integrand, -80, 6, limit=400)[0]
                moments[m - 1] += pk * val
        mu = moments[0]
        central2 = moments[1] - mu**2
        central3 = moments[2] - 3 * mu * moments[1] + 2 * mu**3
        central4 = moments[3] - 4 * mu * moments[2] + 6 * mu**2 * moments[1] - 3 * mu**4
        exact = fw.log_cumulants([n], 4)
        assert np.allclose(exact, [mu, central2, central3, central4 - 3 * central2**2], rtol=1e-6,
                           atol=1e-8)
        # L layers: cumulants add
        assert np.allclose(fw.log_cumulants([n] * 5, 4), 5 * exact)


def test_cumulants_against_sampling():
    rng = np.random.default_rng(0)
    for init in ("gaussian", "orthogonal"):
        x = _mixture(16, 400_000, rng, init)
        k1, k2 = fw.log_cumulants([16], 2, init)
        assert abs(x.mean() - k1) < 5 * x.std() / math.sqrt(x.size)
        assert abs(x.var() - k2) < 5 * k2 * math.sqrt(2.5 / x.size) * 3


def test_large_width_series():
    n, mean, var = fw.derive_large_width_log_moments(2)
    assert sp.simplify(mean - (-sp.Rational(5, 2) / n - sp.Rational(49, 12) / n**2)) == 0
    for width in (200, 800):
        k1, k2 = fw.log_cumulants([width], 2)
        assert abs(k1 - float(mean.subs(n, width))) < 60 / width**3
        assert abs(k2 - float(var.subs(n, width))) < 400 / width**3


def test_median_against_sampling():
    rng = np.random.default_rng(1)
    L, n = 6, 8
    x = sum(_mixture(n, 200_000, rng) for _ in range(L))
    med = fw.log_median([n] * L)
    assert abs(np.median(x) - med) < 0.01
    assert abs(fw.log_cdf([med], [n] * L)[0] - 0.5) < 1e-10
    q = np.quantile(x, [0.1, 0.9])
    assert np.allclose(fw.log_cdf(q, [n] * L), [0.1, 0.9], atol=0.003)
    assert abs(fw.log_median([n] * L, points=20001) - med) < 1e-9


def test_networks_follow_the_mixture():
    g = torch.Generator().manual_seed(0)
    for init in ("gaussian", "orthogonal"):
        logr = fw.forward_log_norms(20_000, 8, 3, init=init, generator=g, dtype=torch.float64)
        ok = torch.isfinite(logr[:, -1])
        x = logr[ok, -1].numpy()
        k1, k2 = fw.log_cumulants([8] * 3, 2, init)
        assert abs(x.mean() - k1) < 5 * x.std() / math.sqrt(x.size)
        assert abs(x.var() - k2) < 0.06 * k2
    dead = fw.forward_log_norms(4000, 1, 2, generator=g)
    assert torch.isinf(dead[:, -1]).float().mean().item() > 0.6   # 1 - (1/2)^2 of them


def test_ntk_diagonal_mean_and_ratio():
    g = torch.Generator().manual_seed(2)
    th = fw.ntk_diagonal(6000, 12, 3, generator=g, dtype=torch.float64)
    # each of the L + 1 weight matrices contributes 2 on average (module docstring)
    assert abs(th.mean().item() - 8.0) < 5 * th.std().item() / math.sqrt(th.numel())
    n, same, cross = fw.derive_ntk_pair_factors()
    assert sp.simplify(same - (1 + 5 / n)) == 0 and sp.simplify(cross - (1 + 1 / n)) == 0
    # one hidden layer: Var(T1 + T2) from E[F^2] = 1 + 5/n and E[F B] = 1 + 1/n
    assert math.isclose(fw.ntk_ratio(12, 1), (2 * (1 + 5 / 12) + 2 * (1 + 1 / 12)) / 4 - 1)
    # one layer, no neighbours: the ratio is exactly the pair formula's
    assert math.isclose(fw.ntk_ratio(10, 0), 0.0)


def test_residual_limit_variance():
    # Monte Carlo of Phi (the docstring's Brownian functional), 4000 steps, 100k paths: 6.50 +- 0.02
    assert abs(fw.residual_limit_variance() - 6.457) < 0.005
    assert abs(fw.residual_limit_variance(80) - fw.residual_limit_variance(160)) < 1e-3


def test_tied_weights_reuse_the_matrix():
    g = torch.Generator().manual_seed(3)
    x = fw.forward_log_norms(2000, 8, 6, tied=True, generator=g)
    x = x[torch.isfinite(x[:, -1]), -1]
    k2 = fw.log_cumulants([8] * 6, 2)[1]
    assert x.var().item() > 1.5 * k2   # the same W every layer: the factors are correlated
