import math

import numpy as np
import pytest
import torch

from lmbook.eigenlearning import effective_ridge, eigenlearning, gaussian_krr, population_krr


def spectrum(m=200, a=1.5, b=2.0):
    i = np.arange(1, m + 1)
    return i**-a, i ** (-b / 2)


def test_kappa_solves_the_equation_and_conservation_law():
    lam, v = spectrum()
    for ridge in (0.0, 1e-3, 1.0):
        for n in (3, 50, 150):
            r = eigenlearning(lam, v, n, ridge, noise=0.1)
            lhs = np.sum(lam / (lam + r.kappa)) + ridge / r.kappa
            assert lhs == pytest.approx(n, rel=1e-10)
            assert r.learnabilities.sum() == pytest.approx(n - ridge / r.kappa, rel=1e-10)
            assert r.e0 == pytest.approx(n / (n - np.sum(r.learnabilities**2)))
            bias = np.sum((1 - r.learnabilities) ** 2 * v**2)
            assert r.test_mse == pytest.approx(r.e0 * (bias + 0.01))
            assert r.train_mse == pytest.approx((ridge / (n * r.kappa)) ** 2 * r.test_mse)


def test_vectorised_over_n_and_ridgeless_edge_cases():
    lam, v = spectrum(50)
    ns = np.array([[5, 10], [20, 49]])
    r = eigenlearning(lam, v, ns, ridge=1e-4)
    assert r.kappa.shape == (2, 2) and r.learnabilities.shape == (2, 2, 50)
    assert r.test_mse[1, 0] == pytest.approx(eigenlearning(lam, v, 20, ridge=1e-4).test_mse)
    # ridgeless, n < modes: a positive root however close n is to the number of modes
    assert effective_ridge(lam, 49.9) > 0
    # ridgeless, n >= modes: every mode learned, E0 = n / (n - M)
    r = eigenlearning(lam, v, 100, noise=0.5)
    assert r.kappa == 0 and np.all(r.learnabilities == 1)
    assert r.test_mse == pytest.approx(100 / 50 * 0.25)
    with pytest.raises(ValueError):
        eigenlearning(lam, v[:-1], 10)
    with pytest.raises(ValueError):
        eigenlearning(lam, v, 10, noise=-1)


def test_matches_brute_force_krr_on_gaussian_features():
    """Average test MSE, per-mode learnabilities and ridge * tr (K + ridge)^-1 of brute-force KRR
    against the predictions, at n = 60 with 300 draws: the finite-size corrections measured by
    the mode-split control are a few per cent here."""
    lam, v = spectrum(120)
    gen = torch.Generator().manual_seed(0)
    n, ridge, noise = 60, 1e-2, 0.1
    th = eigenlearning(lam, v, n, ridge, noise)
    d = gaussian_krr(lam, v, n, ridge, noise, 300, gen)
    assert d.test_mse.mean() == pytest.approx(th.test_mse, rel=0.05)
    assert d.train_mse.mean() == pytest.approx(th.train_mse, rel=0.08)
    assert d.ridge_term.mean() == pytest.approx(ridge / th.kappa, rel=0.02)
    assert np.abs(d.learnabilities.mean(0) - th.learnabilities).max() < 0.02
    # the empirical learnabilities sum to n - ridge tr (K + ridge)^-1, draw by draw (an identity)
    np.testing.assert_allclose(d.learnabilities.sum(1), n - d.ridge_term, rtol=1e-9)


def test_split_system_has_the_same_prediction_and_converges():
    lam, v = spectrum(40)
    th = eigenlearning(lam, v, 20, 1e-2, 0.1)
    th2 = eigenlearning(np.repeat(lam / 2, 2), np.repeat(v / math.sqrt(2), 2), 40, 1e-2, 0.1)
    assert th2.test_mse == pytest.approx(th.test_mse, rel=1e-10)
    assert th2.kappa == pytest.approx(th.kappa / 2, rel=1e-10)
    gen = torch.Generator().manual_seed(1)
    d2 = gaussian_krr(lam, v, 20, 1e-2, 0.1, 200, gen, split=2)
    assert d2.learnabilities.shape == (200, 40)
    assert d2.test_mse.mean() == pytest.approx(th.test_mse, rel=0.06)


def test_population_krr_against_gaussian_population():
    """A finite population whose Gram matrix is exactly rank M with Gaussian-like eigenfeatures:
    the population learning curve matches the prediction from the Gram eigensystem."""
    rng = np.random.default_rng(0)
    big_n, m = 2000, 30
    lam = np.arange(1, m + 1) ** -1.5
    x = rng.standard_normal((big_n, m))
    gram = (x * lam) @ x.T
    w, u = np.linalg.eigh(gram / big_n)
    f = x @ (np.arange(1, m + 1) ** -1.0)
    coeff = u.T @ f / math.sqrt(big_n)
    th = eigenlearning(np.maximum(w, 0), coeff, 20, ridge=1e-3)
    d = population_krr(torch.as_tensor(gram), f, 20, 1e-3, 300, torch.Generator().manual_seed(2),
                       resolvent=True)
    assert d.test_mse.mean() == pytest.approx(th.test_mse, rel=0.08)
    assert d.learnabilities is None and d.ridge_term.shape == (300,)
    assert np.all((d.ridge_term > 0) & (d.ridge_term < 20))     # ridge tr (K + ridge)^-1 in (0, n)
    lean = gaussian_krr(lam, lam, 20, 1e-3, 0.0, 4, torch.Generator(), transfer=False)
    assert lean.learnabilities is None and lean.ridge_term is None and lean.test_mse.shape == (4,)


def test_circulant_spectrum_and_krr_match_dense():
    """On a small circle the FFT eigensystem and the FFT-based KRR equal the dense computation."""
    from lmbook.eigenlearning import circulant_krr, circulant_spectrum, finite_size_fit

    p = 64
    theta = 2 * math.pi * np.arange(p) / p
    row = np.exp(np.cos(theta) - 1) + 0.1 * np.cos(3 * theta)     # a positive-definite circulant
    f = np.sign(np.cos(2 * theta + 0.1))
    gram = row[(np.arange(p)[None, :] - np.arange(p)[:, None]) % p]
    lams, vs = circulant_spectrum(row, f)
    np.testing.assert_allclose(np.sort(lams), np.sort(np.linalg.eigvalsh(gram / p)), atol=1e-12)
    assert (vs**2).sum() == pytest.approx((f**2).mean())                          # Parseval
    gen = torch.Generator().manual_seed(3)
    d = circulant_krr(torch.as_tensor(row), f, 10, 1e-3, 5, gen)
    gen = torch.Generator().manual_seed(3)
    idx = torch.rand(5, p, generator=gen, dtype=torch.float64).argsort(-1)[:, :10].numpy()
    for k in range(5):
        alpha = np.linalg.solve(gram[np.ix_(idx[k], idx[k])] + 1e-3 * np.eye(10), f[idx[k]])
        assert d.test_mse[k] == pytest.approx(((gram[:, idx[k]] @ alpha - f) ** 2).mean())
        assert d.train_mse[k] == pytest.approx(1e-6 * (alpha**2).mean())
    # the joint fit recovers a planted 1/(s n) correction
    rng = np.random.default_rng(0)
    ns = [10, 20, 40]
    planted = {s: [(1 + 0.8 * j) * (1 + 3.0 / (s * n_)) * (1 + 0.01 * rng.standard_normal(400))
                   for j, n_ in enumerate(ns)] for s in (1, 2, 4)}
    c, se_c, chi2, dof = finite_size_fit(planted, ns, (1, 2, 4))
    assert abs(c - 3.0) < 4 * se_c and se_c < 0.3 and dof == 9 - 4
