"""Comparing representations: linear CKA (biased and debiased) and its finite-width deficit.

Conventions
- A representation is a feature matrix with one row per probe example, shape (P, n) (P examples,
  n features), as a NumPy array or a torch tensor; a stack of S representations is (S, P, n).
  Two representations compared must have the same rows (the same P examples, in the same order);
  their feature counts may differ.
- Linear kernel K = X X^T, centring matrix H = I - 11^T / P, centred Gram K_c = H K H.
- Biased HSIC (Gretton et al. 2005): tr(K_c L_c) / (P - 1)^2. Linear CKA (Kornblith et al. 2019):
      CKA(X, Y) = <K_c, L_c>_F / (|K_c|_F |L_c|_F)    (the (P - 1)^2 cancels).
- Debiased HSIC (Song et al. 2012, eq. 5), with K~ = K with its diagonal set to zero, P >= 4:
      HSIC_1 = [tr(K~ L~) + 1^T K~ 1 1^T L~ 1 / ((P - 1)(P - 2)) - 2/(P - 2) 1^T K~ L~ 1]
               / (P(P - 3)),
  an unbiased estimator of the population HSIC for i.i.d. rows; debiased CKA is
  HSIC_1(K, L) / sqrt(HSIC_1(K, K) HSIC_1(L, L)).
- CKA is invariant to orthogonal transforms and isotropic scaling of the features (and to adding a
  constant to every row), not to general invertible linear maps.
- Finite-width deficit. For features h = phi(X w_i), i = 1..n, with i.i.d. units w_i, the Gram
  matrix is K_hat = (1/n) sum_i v_i v_i^T, v_i = phi(X w_i); with u = H v (a centred unit) and the
  limit K_c = E[u u^T], two independent draws have E[1 - CKA] = c / n + O(n^-2) with
      c = E[|u|^4 - (u^T k u)^2] / |K_c|_F^2,     k = K_c / |K_c|_F
  (the variance of one unit's rank-one Gram orthogonal to the limit, in units of |K_c|^2).
  For Gaussian u (Wishart) this is c = (tr K_c)^2 / |K_c|^2 + 1 - 2 tr(K_c^4) / |K_c|^4.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = [
    "cka",
    "cka_stack",
    "centred_gram",
    "hsic",
    "effective_rank",
    "unit_moments",
    "wishart_deficit",
]


def _as_features(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    x = np.asarray(x, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a (examples, features) matrix; got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} has non-finite entries")
    return x


def centred_gram(x) -> np.ndarray:
    """K_c = H X X^T H of a (P, n) feature matrix (module docstring)."""
    x = _as_features(x, "x")
    xc = x - x.mean(0, keepdims=True)
    return xc @ xc.T


def hsic(k: np.ndarray, m: np.ndarray, debiased: bool = False) -> float:
    """HSIC of two (P, P) Gram matrices: biased tr(H K H L) / (P - 1)^2, or Song et al.'s
    unbiased HSIC_1 (module docstring; needs P >= 4)."""
    k, m = np.asarray(k, dtype=float), np.asarray(m, dtype=float)
    p = k.shape[0]
    if not debiased:
        h = np.eye(p) - 1.0 / p
        return float(np.sum((h @ k @ h) * m) / (p - 1) ** 2)
    if p < 4:
        raise ValueError(f"the debiased HSIC needs at least 4 examples; got {p}")
    kt, lt = k - np.diag(np.diag(k)), m - np.diag(np.diag(m))
    one_k, one_l = kt.sum(0), lt.sum(0)
    value = (
        np.sum(kt * lt)
        + one_k.sum() * one_l.sum() / ((p - 1) * (p - 2))
        - 2.0 / (p - 2) * one_k @ one_l
    )
    return float(value / (p * (p - 3)))


def cka(x, y, debiased: bool = False) -> float:
    """Linear CKA of two feature matrices with the same rows (examples): (P, n_x) and (P, n_y),
    NumPy arrays or torch tensors; a Python float. debiased=True uses the unbiased HSIC estimator
    of Song et al. 2012 (module docstring); it can be negative and needs P >= 4."""
    x, y = _as_features(x, "x"), _as_features(y, "y")
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x and y must have the same rows (examples): x has {x.shape[0]}, y has {y.shape[0]}"
        )
    if x.shape[0] < 2:
        raise ValueError(f"CKA needs at least 2 examples; got {x.shape[0]}")
    for name, f in (("x", x), ("y", y)):
        if np.abs(f - f.mean(0)).max() <= 1e-12 * max(np.abs(f).max(), 1e-300):
            raise ValueError(f"CKA is undefined: {name} is the same for every example")
    kx, ky = x @ x.T, y @ y.T
    hxy, hxx, hyy = (hsic(a, b, debiased) for a, b in ((kx, ky), (kx, kx), (ky, ky)))
    if not (hxx > 0 and hyy > 0):
        raise ValueError(
            "CKA is undefined: a representation has zero (or, debiased, non-positive) "
            "self-similarity, e.g. constant features"
        )
    return float(hxy / math.sqrt(hxx * hyy))


def cka_stack(x, y, debiased: bool = False) -> np.ndarray:
    """CKA of each pair of a stack, x (S, P, n_x) and y (S, P, n_y): an array of S floats.
    Computed from the Gram matrices in torch (batched), with the same definitions as `cka`."""
    x = torch.as_tensor(x).to(torch.float64)
    y = torch.as_tensor(y).to(torch.float64)
    if x.ndim != 3 or y.ndim != 3 or x.shape[:2] != y.shape[:2]:
        raise ValueError(f"x and y must be stacks (S, P, n) with equal S and P; got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    kx, ky = x @ x.transpose(1, 2), y @ y.transpose(1, 2)
    p = x.shape[1]
    if debiased:
        def h(a, b):
            at = a - torch.diag_embed(torch.diagonal(a, dim1=1, dim2=2))
            bt = b - torch.diag_embed(torch.diagonal(b, dim1=1, dim2=2))
            sa, sb = at.sum(1), bt.sum(1)
            v = ((at * bt).sum((1, 2)) + sa.sum(1) * sb.sum(1) / ((p - 1) * (p - 2))
                 - 2.0 / (p - 2) * (sa * sb).sum(1))
            return v / (p * (p - 3))
    else:
        hm = torch.eye(p, dtype=x.dtype, device=x.device) - 1.0 / p

        def h(a, b):
            return ((hm @ a @ hm) * b).sum((1, 2)) / (p - 1) ** 2
    out = h(kx, ky) / torch.sqrt(h(kx, kx) * h(ky, ky))
    return out.cpu().numpy()


def effective_rank(x):
    """(tr K_c)^2 / |K_c|_F^2 of a (P, n) feature matrix, a float: the participation ratio of its
    centred Gram spectrum, between 1 and P - 1. A stack (S, P, n) gives an array of S values."""
    if getattr(x, "ndim", 2) == 3:
        x = torch.as_tensor(x).to(torch.float64)
        xc = x - x.mean(1, keepdim=True)
        kc = xc @ xc.transpose(1, 2)
        tr = torch.diagonal(kc, dim1=1, dim2=2).sum(1)
        return (tr**2 / (kc * kc).sum((1, 2))).cpu().numpy()
    kc = centred_gram(x)
    return float(np.trace(kc) ** 2 / np.sum(kc * kc))


def unit_moments(u: torch.Tensor) -> dict:
    """Per-unit samples of the quantities in the deficit constant c (module docstring) from M
    independent centred units u, shape (M, P), and the limit K_c = E[u u^T] they estimate:
    {"K": K_c (P, P), "norm2": |K_c|_F^2, "quartic": |u|^4 (M,), "along": (u^T k u)^2 (M,)},
    with k = K_c / |K_c|_F. c is mean(quartic - along) / norm2 to O(1/M)."""
    u = torch.as_tensor(u, dtype=torch.float64)
    kc = u.T @ u / u.shape[0]
    norm2 = (kc * kc).sum()
    k = kc / norm2.sqrt()
    sq = (u * u).sum(1)
    along = ((u @ k) * u).sum(1)
    return {"K": kc, "norm2": float(norm2), "quartic": sq * sq, "along": along * along}


def wishart_deficit(kc) -> float:
    """The deficit constant c for Gaussian units u ~ N(0, K_c) (module docstring):
    (tr K_c)^2 / |K_c|^2 + 1 - 2 tr(K_c^4) / |K_c|^4."""
    kc = np.asarray(kc.cpu() if isinstance(kc, torch.Tensor) else kc, dtype=float)
    n2 = np.sum(kc * kc)
    k2 = kc @ kc
    return float(np.trace(kc) ** 2 / n2 + 1 - 2 * np.sum(k2 * k2) / n2**2)
