"""lmbook.cka and lmbook.representations: hand values from the definitions, invariances, bad input,
the exact permutation means, and the deficit constant against a Monte Carlo at large width."""

import itertools
import math

import numpy as np
import pytest
import torch

import lmbook
from lmbook import cka
from lmbook import representations as rep


def test_public_api_is_the_function():
    assert lmbook.cka is rep.cka and callable(lmbook.cka)
    assert "cka" in lmbook.__all__
    from lmbook import cka as imported

    assert imported is rep.cka


def test_one_feature_is_squared_correlation_by_hand():
    # x_c = (-1, 0, 1), y_c = (-5/3, -2/3, 7/3): <x_c, y_c>^2 / (|x_c|^2 |y_c|^2) = 16 / (2 78/9)
    x, y = np.array([[0.0], [1.0], [2.0]]), np.array([[0.0], [1.0], [4.0]])
    assert cka(x, y) == pytest.approx(12 / 13, rel=1e-14)


def _hsic_by_hand(k, m):
    p = len(k)
    h = [[(1.0 if i == j else 0.0) - 1.0 / p for j in range(p)] for i in range(p)]
    kc = [[sum(h[i][a] * k[a][b] * h[b][j] for a in range(p) for b in range(p))
           for j in range(p)] for i in range(p)]
    return sum(kc[i][j] * m[j][i] for i in range(p) for j in range(p)) / (p - 1) ** 2


def _unbiased_hsic_u_statistic(k, m):
    """Song et al.'s HSIC_1 as the U-statistic it is: the mean over distinct (i, j, q, r) of
    k_ij m_ij + k_ij m_qr - 2 k_ij m_iq."""
    p = len(k)
    total, count = 0.0, 0
    for i, j, q, r in itertools.permutations(range(p), 4):
        total += k[i][j] * m[i][j] + k[i][j] * m[q][r] - 2 * k[i][j] * m[i][q]
        count += 1
    return total / count


def test_against_definitions_small_matrices():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(6, 4))
    k, m = (x @ x.T).tolist(), (y @ y.T).tolist()
    for debiased, f in ((False, _hsic_by_hand), (True, _unbiased_hsic_u_statistic)):
        assert rep.hsic(np.array(k), np.array(m), debiased) == pytest.approx(f(k, m), rel=1e-12)
        expected = f(k, m) / math.sqrt(f(k, k) * f(m, m))
        assert cka(x, y, debiased=debiased) == pytest.approx(expected, rel=1e-12)


def test_self_similarity_invariances_and_torch():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(20, 5)), rng.normal(size=(20, 7))
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    for debiased in (False, True):
        assert cka(x, x, debiased) == pytest.approx(1.0, abs=1e-12)
        base = cka(x, y, debiased)
        assert cka(x @ q, y, debiased) == pytest.approx(base, rel=1e-12)
        assert cka(3.7 * x, 0.2 * y, debiased) == pytest.approx(base, rel=1e-12)
        assert cka(x + 5.0, y, debiased) == pytest.approx(base, rel=1e-12)
        assert cka(torch.tensor(x), torch.tensor(y), debiased) == pytest.approx(base, rel=1e-12)
        assert isinstance(cka(torch.tensor(x), y, debiased), float)
        stack = rep.cka_stack(np.stack([x, x]), np.stack([y[:, :5], x]), debiased)
        assert stack == pytest.approx([cka(x, y[:, :5], debiased), 1.0], rel=1e-12)
    # not invariant to a general invertible linear map
    a = np.diag([10.0, 1, 1, 1, 1])
    assert abs(cka(x @ a, y) - cka(x, y)) > 1e-3


def test_bad_input():
    x = np.ones((5, 2)) + np.arange(10).reshape(5, 2) ** 2
    with pytest.raises(ValueError, match="same rows"):
        cka(x, x[:4])
    with pytest.raises(ValueError, match="matrix"):
        cka(x[:, 0], x)
    with pytest.raises(ValueError, match="at least 4"):
        cka(x[:3], x[:3], debiased=True)
    with pytest.raises(ValueError, match="undefined"):
        cka(np.ones((5, 3)), x)
    with pytest.raises(ValueError, match="undefined"):
        cka(x, np.full((5, 3), 2.0), debiased=True)
    with pytest.raises(ValueError, match="non-finite"):
        cka(np.full((5, 2), np.nan), x)
    with pytest.raises(ValueError, match="stacks"):
        rep.cka_stack(x[None], x[None, :4])


def test_permutation_means_are_exact():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(5, 30)), rng.normal(size=(5, 30)) ** 2
    perms = [list(p) for p in itertools.permutations(range(5))]
    biased = np.mean([cka(a, b[p]) for p in perms])
    debiased = np.mean([cka(a, b[p], debiased=True) for p in perms])
    assert biased == pytest.approx(
        math.sqrt(rep.effective_rank(a) * rep.effective_rank(b)) / 4, rel=1e-12
    )
    assert abs(debiased) < 1e-12
    assert rep.effective_rank(np.stack([a, b])) == pytest.approx(
        [rep.effective_rank(a), rep.effective_rank(b)], rel=1e-12
    )


def test_wishart_constant_against_unit_moments_and_formula():
    rng = np.random.default_rng(3)
    m = rng.normal(size=(6, 6))
    kc = m @ m.T
    lam = np.linalg.eigvalsh(kc)
    expected = lam.sum() ** 2 / (lam**2).sum() + 1 - 2 * (lam**4).sum() / (lam**2).sum() ** 2
    assert rep.wishart_deficit(kc) == pytest.approx(expected, rel=1e-12)
    g = torch.Generator().manual_seed(0)
    u = torch.randn(400_000, 6, generator=g, dtype=torch.float64) @ torch.tensor(
        np.linalg.cholesky(kc).T
    )
    mom = rep.unit_moments(u)
    c = float((mom["quartic"] - mom["along"]).mean() / mom["norm2"])
    assert c == pytest.approx(expected, rel=0.03)


def test_deficit_constant_matches_monte_carlo_at_large_width():
    """n E[1 - CKA] between independent draws of n Gaussian units approaches the Wishart c; the
    remainder is O(c / n) relative, about 1% here; 6 standard errors of Monte Carlo."""
    rng = np.random.default_rng(4)
    p, n, pairs = 8, 2000, 300
    m = rng.normal(size=(p, p)) + 2.0
    hm = np.eye(p) - 1.0 / p
    kc = hm @ (m @ m.T) @ hm
    c = rep.wishart_deficit(kc)
    w, v = np.linalg.eigh(kc)
    root = v * np.sqrt(np.clip(w, 0, None))
    g = torch.Generator().manual_seed(1)
    feats = torch.tensor(root) @ torch.randn(2 * pairs, p, n, generator=g, dtype=torch.float64)
    scaled = n * (1 - rep.cka_stack(feats[:pairs], feats[pairs:]))
    se = scaled.std() / math.sqrt(pairs)
    assert abs(scaled.mean() - c) < 6 * se + 0.02 * c
