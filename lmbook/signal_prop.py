"""Signal propagation through random MLPs of finite width, sampled exactly without weight matrices.

Network (Poole et al. 2016; Schoenholz et al. 2017): h^{l+1} = W^l phi(h^l) + b^l, l = 1..L-1,
with W^l_ij ~ N(0, sw2 / n) (n x n, fan-in n), b^l_i ~ N(0, sb2), fresh at every layer, and
h^1 = W^0 x + b^0 for P inputs x whose layer-1 covariance sw2 x.x'/d + sb2 is `sigma1` (P x P).

The sampler. Only the action of W^l on the P vectors a^l = phi(h^l) (columns of A, n x P) enters the
forward pass. Given A, the rows of U = W^l A are independent N(0, sw2 A^T A / n), so
h^{l+1} = U + b is drawn from that law with a P x P Cholesky factor: O(n P^2) per layer instead of
O(n^2 P), and exactly the law of the explicit network's pre-activations at these P inputs.
Backward (one input, P = 1): conditional on the forward pass,
W^l = u a^T/|a|^2 + W' (I - a a^T/|a|^2) with u = W^l a and W' an independent copy of W^l, so
W^{l T} delta = a (u.delta)/|a|^2 + (I - a a^T/|a|^2) xi with xi ~ N(0, sw2 |delta|^2 / n I):
again exact, not the "gradient independence" approximation. Singular covariances (collinear inputs)
fall back to an eigendecomposition factor. tests/test_signal_prop.py checks both against explicit
weight matrices.
"""

from __future__ import annotations

import math

import torch

__all__ = ["propagate", "gradient_norms"]


def _factor(C):
    """F with F F^T = C: the Cholesky factor, or V sqrt(max(lambda, 0)) from the eigendecomposition
    where C is singular to working precision (inputs collinear, e.g. deep narrow ReLU networks)."""
    L, info = torch.linalg.cholesky_ex(C)
    bad = info != 0
    if bool(bad.any()):
        lam, V = torch.linalg.eigh(C[bad])
        L = L.clone()
        L[bad] = V * lam.clamp(min=0).sqrt()[..., None, :]
    return L


def _draw(sigma, networks, n, generator, dtype, device):
    P = sigma.shape[-1]
    z = torch.randn(networks, n, P, generator=generator, dtype=dtype, device=device)
    return z @ _factor(sigma).transpose(-1, -2)


def propagate(phi, sigma1, sw2, sb2, n, layers, networks, generator=None, dtype=torch.float64,
              device=None):
    """Forward pass of `networks` independent width-n networks at P inputs (module docstring).

    Returns (q, one_minus_c), each (layers, networks, P, P): q[l] = H^T H / n, the empirical
    second moments of the pre-activations h^{l+1} (l = 0 is layer 1), and one_minus_c[l] = 1 - the
    empirical correlations, computed as |h_p/|h_p| - h_r/|h_r||^2 / 2 (no cancellation near
    c = 1)."""
    sigma1 = torch.as_tensor(sigma1, dtype=dtype, device=device)
    H = _draw(sigma1.expand(networks, -1, -1), networks, n, generator, dtype, device)
    qs, omc = [], []
    for layer in range(layers):
        qs.append(H.transpose(1, 2) @ H / n)
        unit = (H / H.norm(dim=1, keepdim=True)).transpose(1, 2).contiguous()
        # pairwise |u_p - u_r| summed over the units directly (no n x P x P temporary, no Gram
        # matrix: the Gram form 1 - u_p.u_r would cancel near c = 1)
        dist = torch.cdist(unit, unit, compute_mode="donot_use_mm_for_euclid_dist")
        omc.append(0.5 * dist.square())
        if layer == layers - 1:
            break
        A = phi(H)
        H = _draw(sw2 * A.transpose(1, 2) @ A / n, networks, n, generator, dtype, device)
        if sb2:                                            # no draw at all for bias-free networks
            H = H + math.sqrt(sb2) * torch.randn(networks, n, 1, generator=generator, dtype=dtype,
                                                 device=device)
    return torch.stack(qs), torch.stack(omc)


def gradient_norms(phi, dphi, q1, sw2, sb2, n, layers, networks, generator=None,
                   dtype=torch.float64, device=None):
    """Squared norms of the weight gradients |dF/dW^l|_F^2 = |delta^{l+1}|^2 |a^l|^2, l = 1..L-1,
    of F = g . h^L with a random g ~ N(0, I_n) (a random readout), for one input with layer-1
    variance q1; shape (layers - 1, networks), row l - 1 for W^l. Exact conditional backward pass
    (module docstring)."""
    kw = dict(generator=generator, dtype=dtype, device=device)
    H = math.sqrt(q1) * torch.randn(networks, n, **kw)
    pre, acts, us = [H], [], []
    for _ in range(layers - 1):
        A = phi(H)
        U = torch.sqrt(sw2 * A.square().mean(1, keepdim=True)) * torch.randn(networks, n, **kw)
        H = U + math.sqrt(sb2) * torch.randn(networks, n, **kw)
        acts.append(A)
        us.append(U)
        pre.append(H)
    delta = torch.randn(networks, n, **kw)
    out = []
    for layer in range(layers - 2, -1, -1):
        A, U = acts[layer], us[layer]
        out.append(delta.square().sum(1) * A.square().sum(1))
        a2 = A.square().sum(1, keepdim=True)
        xi = torch.sqrt(sw2 * delta.square().sum(1, keepdim=True) / n) * torch.randn(networks, n,
                                                                                    **kw)
        xi = xi - A * (A * xi).sum(1, keepdim=True) / a2
        t = A * (U * delta).sum(1, keepdim=True) / a2 + xi
        delta = dphi(pre[layer]) * t
    return torch.stack(out[::-1])
