import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad

from lmbook import rmt


def test_mp_density_integrates_to_one_and_cdf_matches_quadrature():
    for gamma, sigma2 in [(0.5, 1.0), (0.2, 2.5), (1.0, 1.0)]:
        lo, hi = rmt.mp_edges(gamma, sigma2)

        def rho(t, gamma=gamma, sigma2=sigma2):
            return rmt.mp_density(np.array([t]), gamma, sigma2)[0]

        assert abs(quad(rho, lo, hi, limit=200)[0] - 1) < 1e-6
        for x in np.linspace(lo, hi, 7)[1:-1]:
            assert abs(rmt.mp_cdf(x, gamma, sigma2) - quad(rho, lo, x, limit=200)[0]) < 1e-9
        assert rmt.mp_cdf(lo - 1, gamma, sigma2) == 0
        assert abs(rmt.mp_cdf(hi + 1, gamma, sigma2) - 1) < 1e-12


def test_mp_second_moment_is_one_plus_gamma():
    gamma = 0.3
    lo, hi = rmt.mp_edges(gamma)
    m2 = quad(lambda x: x * x * rmt.mp_density(np.array([x]), gamma)[0], lo, hi, limit=200)[0]
    assert abs(m2 - (1 + gamma)) < 1e-6


def test_ks_to_mp_by_brute_force():
    rng = np.random.default_rng(0)
    e = rng.uniform(0.2, 2.5, size=(3, 50))
    got = rmt.ks_to_mp(e, 0.5)
    grid = np.sort(e, axis=-1)
    for r in range(3):
        F = rmt.mp_cdf(grid[r], 0.5)
        emp_hi = np.arange(1, 51) / 50
        emp_lo = np.arange(0, 50) / 50
        assert math.isclose(got[r], max(np.abs(F - emp_hi).max(), np.abs(F - emp_lo).max()))


def test_tracy_widom_moments_match_published_values():
    mean, sd = rmt.tw1_moments()
    assert abs(mean + 1.2065335745820) < 1e-7
    assert abs(sd - math.sqrt(1.6077810345810)) < 1e-6
    assert rmt.tw1_cdf(20.0)[0] == 1.0


def test_tw_edge_scale_matches_johnstone():
    n, m = 400, 200
    _, s = rmt.tw_edge(m, n, "top")
    johnstone = (math.sqrt(n) + math.sqrt(m)) * (1 / math.sqrt(n) + 1 / math.sqrt(m)) ** (1 / 3)
    assert math.isclose(s, johnstone / n, rel_tol=1e-12)


def test_bgn_formulas_at_threshold_and_large_theta():
    c = 0.5
    tc = rmt.bgn_threshold(c)
    assert math.isclose(float(rmt.bgn_location(tc * (1 + 1e-12), c)), 1 + math.sqrt(c),
                        rel_tol=1e-9)
    left, right = rmt.bgn_overlaps(tc * (1 + 1e-9), c)
    assert abs(left) < 1e-7 and abs(right) < 1e-7
    assert float(rmt.bgn_location(0.3, c)) == 1 + math.sqrt(c)
    big = 1e4
    assert math.isclose(float(rmt.bgn_location(big, c)), big, rel_tol=1e-6)
    assert np.allclose(rmt.bgn_overlaps(big, c), 1, atol=1e-6)


def test_spiked_model_shapes_and_norms():
    g = torch.Generator().manual_seed(0)
    Y, u, v = rmt.spiked(3, 20, 40, 2.0, generator=g)
    assert Y.shape == (3, 20, 40) and u.shape == (3, 20) and v.shape == (3, 40)
    assert torch.allclose(u.norm(dim=-1), torch.ones(3, dtype=torch.float64))
    assert torch.allclose(v.norm(dim=-1), torch.ones(3, dtype=torch.float64))


@pytest.mark.slow
def test_spiked_top_singular_value_near_bgn():
    g = torch.Generator().manual_seed(1)
    Y, _, _ = rmt.spiked(16, 300, 600, 1.5, generator=g)
    s1 = torch.linalg.svdvals(Y)[:, 0].mean().item()
    assert abs(s1 - float(rmt.bgn_location(1.5, 0.5))) < 0.02


def test_hill_alpha_recovers_a_pareto_tail():
    rng = np.random.default_rng(0)
    alpha = 3.0                                   # density ~ x^-alpha: Pareto with index alpha - 1
    x = (1 - rng.uniform(size=(1, 200_000))) ** (-1 / (alpha - 1))
    assert abs(rmt.hill_alpha(x, 5000)[0] - alpha) < 0.1


def test_tw_edge_bottom_centre_and_scale():
    n, m = 400, 200
    centre, s = rmt.tw_edge(m, n, "bottom")
    assert math.isclose(centre, (math.sqrt(n - 0.5) - math.sqrt(m - 0.5)) ** 2 / n, rel_tol=1e-12)
    lam = (1 - math.sqrt(m / n)) ** 2
    assert math.isclose(s, n ** (-2 / 3) * (m / n) ** (-1 / 6) * lam ** (2 / 3), rel_tol=1e-12)
    # the bottom-edge scale is smaller than the top one and both sit inside the MP support
    assert s < rmt.tw_edge(m, n, "top")[1]
    lo, hi = rmt.mp_edges(m / n)
    assert lo < centre < rmt.tw_edge(m, n, "top")[0] < hi


def test_below_threshold_top_singular_value_stays_at_the_bulk_edge():
    g = torch.Generator().manual_seed(2)
    m, n, c = 60, 120, 0.5
    Y, _, _ = rmt.spiked(64, m, n, 0.5, generator=g)
    lam = torch.linalg.eigvalsh(Y @ Y.transpose(1, 2))[:, -1].mean().item()
    centre, s = rmt.tw_edge(m, n, "top")
    mu_tw = -1.2065335745820
    assert float(rmt.bgn_location(0.5, c)) == 1 + math.sqrt(c)
    assert abs(lam - (centre + mu_tw * s)) < 0.05          # ~ 0.6 TW scales at this size
    assert lam < float(np.sqrt((1 + 0.25) * (c + 0.25)) / 0.5) ** 2 - 0.5  # no continued BGN


def test_edge_cdf_of_the_semicircle_and_mp_from_a_callable():
    # semicircle on [-2, 2]: F(x) = 1/2 + (x sqrt(4 - x^2) / 4 + asin(x / 2)) / pi
    x = np.linspace(-1.9, 1.9, 9)
    exact = 0.5 + (x * np.sqrt(4 - x**2) / 4 + np.arcsin(x / 2)) / math.pi
    got = rmt.edge_cdf(lambda t: np.sqrt(4 - t**2) / (2 * math.pi), -2.0, 2.0, x)
    assert np.allclose(got, exact, atol=1e-12)
    lo, hi = rmt.mp_edges(0.5)
    F = rmt.edge_cdf(lambda t: rmt.mp_density(t, 0.5), lo, hi, np.array([lo - 1, lo, hi, hi + 1]))
    assert F[0] == 0 and F[1] == 0 and abs(F[2] - 1) < 1e-12 and abs(F[3] - 1) < 1e-12


def test_ks_distance_of_classical_locations_is_the_floor():
    # samples at the classical locations F(x_k) = (k - 1/2)/m sit at the floor 1/(2m) exactly
    gamma, m = 0.5, 64
    lo, hi = rmt.mp_edges(gamma)
    grid = np.linspace(lo, hi, 20001)
    classical = np.interp((np.arange(1, m + 1) - 0.5) / m, rmt.mp_cdf(grid, gamma), grid)
    assert abs(rmt.ks_to_mp(classical[None], gamma)[0] - 1 / (2 * m)) < 1e-6
    # moving one sample by a count of d raises m KS to 1/2 + d
    rng = np.random.default_rng(1)
    e = rng.uniform(0, 1, size=(4, m))
    ks = rmt.ks_distance(e, lambda x: np.clip(x, 0, 1))
    k = np.arange(1, m + 1)
    disp = np.abs(m * np.sort(e, -1) - (k - 0.5)).max(-1)
    assert np.allclose(m * ks, 0.5 + disp, atol=1e-12)


def test_mp_quantile_inverts_the_cdf_and_samples_mp():
    for gamma in (0.5, 0.2):
        u = np.linspace(0, 1, 2001)
        x = rmt.mp_quantile(u, gamma)
        lo, hi = rmt.mp_edges(gamma)
        assert x[0] == lo and x[-1] == hi and np.all(np.diff(x) > 0)
        assert np.abs(rmt.mp_cdf(x, gamma) - u).max() < 1e-6
    # inverse-CDF draws are iid from MP: their mean ln KS is the exact iid value
    rng = np.random.default_rng(2)
    m, reps = 40, 2000
    ks = rmt.ks_to_mp(rmt.mp_quantile(rng.uniform(size=(reps, m)), 0.5), 0.5)
    lk = np.log(ks)
    assert abs(lk.mean() - rmt.iid_ks_mean_log(m)) < 4 * lk.std() / reps**0.5


def test_iid_ks_mean_log_matches_kstwo_and_kolmogorov():
    from scipy.stats import kstwo

    for m in (10, 50):
        assert abs(rmt.iid_ks_mean_log(m) - kstwo.expect(np.log, args=(m,))) < 1e-6
    # sqrt(m) D_m -> Kolmogorov's K, E K = sqrt(pi/2) ln 2: E ln K lies below ln E K (Jensen)
    big = rmt.iid_ks_mean_log(4000) + 0.5 * math.log(4000)
    assert -0.25 < big < math.log(math.sqrt(math.pi / 2) * math.log(2))
