"""Eigenlearning: the omniscient (deterministic-equivalent) learning curve of kernel ridge
regression (Bordelon, Canatar & Pehlevan 2020; Canatar, Bordelon & Pehlevan 2021; Simon, Dickens,
Karkada & DeWeese 2021/23, "the eigenlearning framework").

Conventions
- The kernel K(x, x') = sum_i lambda_i phi_i(x) phi_i(x') is expanded in the eigenfunctions of its
  integral operator with respect to the data distribution mu: int K(x, x') phi_i(x') dmu(x') =
  lambda_i phi_i(x), E_mu[phi_i phi_j] = delta_ij. `eigenvalues` are these lambda_i (so, for a
  finite population of N points, the eigenvalues of the Gram matrix divided by N).
- The target is f*(x) = sum_i v_i phi_i(x); `target_coeffs` are the v_i (its power beyond the
  listed modes is taken to be zero).
- Training labels are y = f*(x) + noise, the noise i.i.d. with standard deviation `noise`.
- Kernel ridge regression on n samples with an unnormalised ridge delta:
  f_hat(x) = k(x)^T (K + delta I)^{-1} y, K the n x n Gram matrix.
- The effective ridge kappa solves  sum_i lambda_i / (lambda_i + kappa) + delta / kappa = n;
  learnabilities L_i = lambda_i / (lambda_i + kappa) (E[v_hat_i] = L_i v_i); the conservation law
  sum_i L_i = n - delta / kappa; the overfitting coefficient E0 = n / (n - sum_i L_i^2);
  test MSE = E0 (sum_i (1 - L_i)^2 v_i^2 + noise^2), the error against *noisy* test labels
  (subtract noise^2 for the error against f*); train MSE = (delta / (n kappa))^2 test MSE, the
  mean squared residual against the noisy training labels (the generalised cross-validation
  identity with tr K (K + delta I)^{-1} replaced by sum_i L_i).
- Ridgeless (delta = 0) with n >= the number of positive eigenvalues M+: kappa = 0, every mode
  with lambda_i > 0 is learned (L_i = 1), and E0 = n / (n - M+) (infinite at n = M+).

The predictions are asymptotic (n and the number of modes large together); at finite n they are
the leading term of the expected learning curve.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy.optimize import brentq

__all__ = [
    "EigenlearningResult", "KRRDraws", "circulant_krr", "circulant_spectrum", "effective_ridge",
    "eigenlearning", "finite_size_fit", "gaussian_krr", "population_krr",
]


@dataclasses.dataclass(frozen=True)
class EigenlearningResult:
    """The eigenlearning predictions. With n an array of shape S: kappa, e0, test_mse and
    train_mse have shape S, learnabilities shape S + (number of modes,); with a scalar n they are
    floats and a 1-D array."""

    n: object
    ridge: float
    noise: float
    kappa: object
    learnabilities: np.ndarray
    e0: object
    test_mse: object
    train_mse: object


def _kappa_one(lam: np.ndarray, n: float, ridge: float) -> float:
    """The root kappa > 0 of sum_i lam_i / (lam_i + kappa) + ridge / kappa = n (0 when ridgeless
    and n >= the number of positive eigenvalues)."""
    pos = lam[lam > 0]
    m_pos = pos.size
    if ridge == 0 and n >= m_pos:
        return 0.0

    def excess(log_k):
        k = math.exp(log_k)
        return float(np.sum(pos / (pos + k)) + ridge / k - n)

    hi = 2.0 * (float(pos.sum()) + ridge) / n  # there the sum is below n / 2: excess < 0
    if ridge > 0:
        lo = ridge / n  # there ridge / kappa = n alone: excess > 0
    else:
        lo = float(pos.min()) * (m_pos / n - 1.0) / 2.0  # every term > 1 / (1 + eps): excess > 0
    lo = min(lo, hi / 2)
    log_k = brentq(excess, math.log(lo), math.log(hi), xtol=1e-14, rtol=4 * np.finfo(float).eps,
                   maxiter=500)
    return math.exp(log_k)


def effective_ridge(eigenvalues, n, ridge: float = 0.0):
    """kappa for each n (scalar or array): the root of sum_i lambda_i/(lambda_i + kappa) +
    ridge/kappa = n, bracketed in log kappa and solved by Brent's method."""
    lam = np.asarray(eigenvalues, dtype=float).reshape(-1)
    if lam.size == 0 or not np.isfinite(lam).all() or (lam < 0).any() or not (lam > 0).any():
        raise ValueError("eigenvalues must be a finite, non-negative 1-D array with one > 0")
    ridge = float(ridge)
    if not (math.isfinite(ridge) and ridge >= 0):
        raise ValueError(f"ridge must be finite and >= 0, got {ridge!r}")
    n_arr = np.asarray(n, dtype=float)
    if not (np.isfinite(n_arr).all() and (n_arr > 0).all()):
        raise ValueError(f"n must be positive and finite, got {n!r}")
    out = np.array([_kappa_one(lam, float(v), ridge) for v in n_arr.reshape(-1)])
    return out.reshape(n_arr.shape) if n_arr.ndim else float(out[0])


def eigenlearning(eigenvalues, target_coeffs, n, ridge: float = 0.0, noise: float = 0.0):
    """Eigenlearning predictions for kernel ridge regression (module docstring: conventions).

    eigenvalues: the kernel operator's eigenvalues lambda_i under the data distribution (1-D).
    target_coeffs: the target's coefficients v_i in the same eigenbasis (1-D, same length).
    n: number of training samples, a number or an array (the result is vectorised over it).
    ridge: the unnormalised ridge delta >= 0 added to the n x n Gram matrix.
    noise: the standard deviation of the label noise.
    Returns an EigenlearningResult (kappa, learnabilities, e0, test_mse, train_mse)."""
    lam = np.asarray(eigenvalues, dtype=float).reshape(-1)
    v = np.asarray(target_coeffs, dtype=float).reshape(-1)
    if v.shape != lam.shape:
        raise ValueError(f"target_coeffs has {v.size} entries, eigenvalues {lam.size}")
    if not np.isfinite(v).all():
        raise ValueError("target_coeffs must be finite")
    noise = float(noise)
    if not (math.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise is a standard deviation (finite, >= 0), got {noise!r}")
    ridge = float(ridge)
    kappa = np.asarray(effective_ridge(lam, n, ridge), dtype=float)
    n_arr = np.asarray(n, dtype=float)
    k = kappa[..., None]
    with np.errstate(invalid="ignore", divide="ignore"):
        L = np.where(lam > 0, lam / (lam + k), 0.0)
        denom = n_arr - (L**2).sum(-1)
        e0 = np.where(denom > 0, n_arr / np.where(denom > 0, denom, 1.0), np.inf)
        test = e0 * (((1 - L) ** 2 * v**2).sum(-1) + noise**2)
        train = np.where(kappa > 0, (ridge / (n_arr * np.where(kappa > 0, kappa, 1.0))) ** 2, 0.0)
        train = train * np.where(np.isfinite(test), test, 0.0)
    scalar = n_arr.ndim == 0
    conv = float if scalar else np.asarray
    return EigenlearningResult(
        n=conv(n_arr), ridge=ridge, noise=noise, kappa=conv(kappa),
        learnabilities=L, e0=conv(e0), test_mse=conv(test), train_mse=conv(train),
    )


@dataclasses.dataclass(frozen=True)
class KRRDraws:
    """Brute-force kernel ridge regression, one entry per independent training set (draw).

    test_mse: (draws,) the population test MSE against noisy labels (module conventions);
    train_mse: (draws,) the mean squared training residual;
    learnabilities: (draws, modes) the diagonal of the learning transfer matrix, the response of
        v_hat_i to v_i (Gaussian features with transfer=True; else None);
    ridge_term: (draws,) ridge * tr (K + ridge I)^{-1}, the measured counterpart of ridge / kappa
        (divided by `split`, the scale of the unsplit system); None unless asked for."""

    test_mse: np.ndarray
    train_mse: np.ndarray
    learnabilities: np.ndarray | None
    ridge_term: np.ndarray | None


def gaussian_krr(eigenvalues, target_coeffs, n: int, ridge: float, noise: float, draws: int,
                 generator, device="cpu", split: int = 1, chunk: int = 64,
                 transfer: bool = True) -> KRRDraws:
    """Kernel ridge regression on Gaussian eigenfeatures: phi_i(x) = x_i with x ~ N(0, I_M), so
    K(x, x') = sum_i lambda_i x_i x'_i, the target f* = sum_i v_i x_i, labels f* + noise (standard
    deviation `noise`). Everything is exact per draw: v_hat = Lambda Phi^T (K + ridge I)^{-1} y,
    test MSE = |v - v_hat|^2 + noise^2, learnabilities = diag(Lambda Phi^T (K + ridge I)^{-1} Phi).

    split = s > 1 runs the mode-split system: every mode i becomes s copies with eigenvalue
    lambda_i / s and coefficient v_i / sqrt(s), with s n samples and the same ridge. Its
    eigenlearning prediction is exactly that of the original system (kappa / s, the same L_i, E0
    and test MSE), while the finite-size corrections shrink as 1/s: a control for them. The
    returned learnabilities are averaged over each mode's copies, and ridge_term is divided by s.
    transfer=False skips the learnabilities and ridge_term (the errors alone cost a third as much).
    The draws run in chunks of `chunk` on `device` (float64), from `generator` (a torch.Generator
    on that device)."""
    import torch

    s = int(split)
    lam = torch.as_tensor(np.repeat(np.asarray(eigenvalues, float) / s, s), device=device)
    v = torch.as_tensor(np.repeat(np.asarray(target_coeffs, float) / math.sqrt(s), s),
                        device=device)
    big_n, m = int(n) * s, lam.numel()
    eye = torch.eye(big_n, dtype=torch.float64, device=device)
    out = {k: [] for k in ("test", "train", "learn", "ridge")}
    for start in range(0, draws, chunk):
        r = min(chunk, draws - start)
        phi = torch.randn(r, big_n, m, generator=generator, dtype=torch.float64, device=device)
        y = phi @ v + noise * torch.randn(r, big_n, generator=generator, dtype=torch.float64,
                                          device=device)
        c = torch.linalg.cholesky((phi * lam) @ phi.transpose(1, 2) + ridge * eye)
        a_y = torch.cholesky_solve(y[..., None], c)[..., 0]
        v_hat = lam * (phi.transpose(1, 2) @ a_y[..., None])[..., 0]
        out["test"].append(((v - v_hat) ** 2).sum(-1) + noise**2)
        out["train"].append(ridge**2 * (a_y**2).mean(-1))
        if transfer:
            a_phi = torch.cholesky_solve(phi, c)
            out["learn"].append((lam * (phi * a_phi).sum(1)).view(r, -1, s).mean(-1))
            a_inv = torch.cholesky_inverse(c)
            out["ridge"].append(ridge * a_inv.diagonal(dim1=1, dim2=2).sum(-1) / s)
    cat = {k: torch.cat(x).cpu().numpy() if x else None for k, x in out.items()}
    return KRRDraws(cat["test"], cat["train"], cat["learn"], cat["ridge"])


def population_krr(gram, target, n: int, ridge: float, draws: int, generator,
                   chunk: int = 32, resolvent: bool = False) -> KRRDraws:
    """Kernel ridge regression on a finite population of N points taken as the data distribution:
    each draw samples n training points i.i.d. uniformly (with replacement), fits noiseless
    labels f*(x) with ridge `ridge`, and measures the test MSE exactly as the mean over all N
    points of (f_hat - f*)^2; resolvent=True also returns ridge_term. Needs ridge > 0 (the
    Gram matrix of a sample with repeated points is singular). gram: the (N, N) kernel matrix
    (a torch tensor on the device to use), target: (N,). The matching eigenlearning inputs are
    the eigenvalues of gram / N and v = U^T f* / sqrt(N)."""
    import torch

    k = torch.as_tensor(gram, dtype=torch.float64)
    f = torch.as_tensor(target, dtype=torch.float64, device=k.device)
    big_n = k.shape[0]
    eye = torch.eye(int(n), dtype=torch.float64, device=k.device)
    out = {key: [] for key in ("test", "train", "ridge")}
    for start in range(0, draws, chunk):
        r = min(chunk, draws - start)
        idx = torch.randint(0, big_n, (r, int(n)), generator=generator, device=k.device)
        a = k[idx[:, :, None], idx[:, None, :]] + ridge * eye
        c = torch.linalg.cholesky(a)
        alpha = torch.cholesky_solve(f[idx][..., None], c)[..., 0]
        pred = (k[:, idx].permute(1, 0, 2) @ alpha[..., None])[..., 0]
        out["test"].append(((pred - f) ** 2).mean(-1))
        out["train"].append(ridge**2 * (alpha**2).mean(-1))
        if resolvent:
            a_inv = torch.cholesky_inverse(c)
            out["ridge"].append(ridge * a_inv.diagonal(dim1=1, dim2=2).sum(-1))
    cat = {key: torch.cat(x).cpu().numpy() if x else None for key, x in out.items()}
    return KRRDraws(cat["test"], cat["train"], None, cat["ridge"])


def circulant_spectrum(row, target):
    """The eigensystem of a translation-invariant kernel on P evenly spaced points of the circle,
    taken as the data distribution: K(x_a, x_b) = row[(b - a) mod P] (row symmetric). The complex
    Fourier modes are orthonormal eigenfunctions, so the eigenvalues are fft(row) / P and the
    target's power in mode k is |fft(target)_k / P|^2. Returns (eigenvalues, coefficients) as
    numpy arrays in frequency order (eigenlearning only uses each mode's eigenvalue and power)."""
    row = np.asarray(row, dtype=float)
    target = np.asarray(target, dtype=float)
    lams = np.fft.fft(row).real / row.size
    return np.clip(lams, 0.0, None), np.abs(np.fft.fft(target)) / row.size


def circulant_krr(row, target, n: int, ridge: float, draws: int, generator,
                  chunk: int = 32) -> KRRDraws:
    """Kernel ridge regression on P evenly spaced points of the circle with a translation-invariant
    kernel, K(x_a, x_b) = row[(b - a) mod P]: each draw takes n distinct training points uniformly
    (without replacement: keep P >> n, so that this is i.i.d. sampling up to O(n/P)), fits the
    noiseless labels with ridge `ridge`, and measures the test MSE exactly over all P points. The
    prediction at every point is a circular convolution of the dual coefficients with the row,
    done by FFT: O(P log P) per draw, so P = 2^14 or more is cheap and no P x P matrix is formed.
    row, target: (P,) torch tensors on the device to use; generator on that device."""
    import torch

    row = torch.as_tensor(row, dtype=torch.float64)
    f = torch.as_tensor(target, dtype=torch.float64, device=row.device)
    big_p, n = row.numel(), int(n)
    if not 0 < n <= big_p:
        raise ValueError(f"need 0 < n <= P = {big_p}, got n = {n}")
    row_hat = torch.fft.rfft(row)
    eye = torch.eye(n, dtype=torch.float64, device=row.device)
    out = {"test": [], "train": []}
    for start in range(0, draws, chunk):
        r = min(chunk, draws - start)
        idx = torch.rand(r, big_p, generator=generator, dtype=torch.float64,
                         device=row.device).argsort(-1)[:, :n]
        gram = row[(idx[:, None, :] - idx[:, :, None]) % big_p]
        c = torch.linalg.cholesky(gram + ridge * eye)
        alpha = torch.cholesky_solve(f[idx][..., None], c)[..., 0]
        spikes = torch.zeros(r, big_p, dtype=torch.float64, device=row.device)
        spikes.scatter_add_(1, idx, alpha)
        pred = torch.fft.irfft(torch.fft.rfft(spikes) * row_hat, n=big_p)
        out["test"].append(((pred - f) ** 2).mean(-1))
        out["train"].append(ridge**2 * (alpha**2).mean(-1))
    cat = {k: torch.cat(x).cpu().numpy() for k, x in out.items()}
    return KRRDraws(cat["test"], cat["train"], None, None)


def finite_size_fit(samples, ns, splits):
    """Fit the finite-size correction of a measured average jointly over a grid of sizes.

    samples[s][j]: per-draw values of a positive quantity q (an error) in the mode-split run with
    split s at size ns[j] (s = 1 is the unsplit system). Model: mean q(s, n) = A_n (1 + c/(s n)),
    one free A_n per size and one common c, fitted by weighted least squares (Gauss-Newton,
    weights from the SE of each mean). The relative correction of the s = 1 run at size n is then
    c/n. Returns (c, se_c, chi2, dof): the SE from the weights, and the fit's chi-squared with its
    degrees of freedom (a check of the 1/(s n) form)."""
    ns = np.asarray(ns, dtype=float)
    splits = list(splits)
    m = np.array([[np.mean(samples[s][j]) for j in range(ns.size)] for s in splits])
    se = np.array([[np.std(samples[s][j], ddof=1) / math.sqrt(len(samples[s][j]))
                    for j in range(ns.size)] for s in splits])
    inv_sn = 1.0 / (np.asarray(splits, dtype=float)[:, None] * ns[None, :])
    w = (1.0 / se**2).reshape(-1)
    a, c = m[0].copy(), 0.0
    for _ in range(50):
        model = a[None, :] * (1 + c * inv_sn)
        jac = np.zeros(m.shape + (ns.size + 1,))
        for j in range(ns.size):
            jac[:, j, j] = 1 + c * inv_sn[:, j]
        jac[..., -1] = a[None, :] * inv_sn
        jac = jac.reshape(-1, ns.size + 1)
        cov = np.linalg.inv(jac.T @ (jac * w[:, None]))
        step = cov @ (jac.T @ (w * (m - model).reshape(-1)))
        a, c = a + step[:-1], c + step[-1]
        if np.abs(step[-1]) < 1e-12 * (1 + abs(c)):
            break
    resid = (m - a[None, :] * (1 + c * inv_sn)).reshape(-1)
    return float(c), float(math.sqrt(cov[-1, -1])), float((w * resid**2).sum()), \
        int(m.size - ns.size - 1)
