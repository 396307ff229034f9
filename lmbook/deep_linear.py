"""Deep linear networks y = W_N ... W_2 W_1 x trained by full-batch gradient descent on the
population loss.

Conventions
- Whitened inputs (Sigma_xx = I), so the loss is L = 1/2 E||y - W x||^2 = 1/2 ||Sigma_yx - W||_F^2
  + const, with W = W_N ... W_1 the end-to-end map.
- The task is Sigma_yx = U diag(s) V^T with random orthonormal columns U, V (dim x r).
- An ensemble of n networks is a list of batched weights [W_1 (n, hidden, dim),
  W_2 (n, hidden, hidden), ..., W_N (n, dim, hidden)], first layer first.
- Gradient descent with step `lr`; time in units of tau = 1/lr, i.e. t = step * lr.
- The strength of mode alpha is u_alpha = u_alpha^T W v_alpha.
"""
from __future__ import annotations

import math

import torch


def singular_task(dim: int, strengths, generator: torch.Generator, dtype=torch.float64):
    """(Sigma_yx, U, V): a dim x dim input-output covariance with the given singular values."""
    s = torch.as_tensor(strengths, dtype=dtype)
    if s.ndim != 1 or len(s) > dim or (s <= 0).any():
        got = list(map(float, s))
        raise ValueError(f"strengths must be 1 to {dim} positive numbers, got {got}")
    U, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=dtype))
    V, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=dtype))
    r = len(s)
    return U[:, :r] @ torch.diag(s) @ V[:, :r].T, U[:, :r], V[:, :r]


def init_std_for_u0(u0: float, hidden: int) -> float:
    """For two layers: the i.i.d. Gaussian entry std that makes the expected effective initial
    strength |W1 v + W2^T u|^2 / 4 equal u0 (its mean is 2 * hidden * std^2 / 4)."""
    return math.sqrt(2 * u0 / hidden)


def init_network(n: int, dim: int, hidden: int, depth: int, std, generator: torch.Generator,
                 dtype=torch.float64):
    """`depth` weight tensors with i.i.d. N(0, std^2) entries; `std` a float or one value per
    network."""
    if depth < 2:
        raise ValueError(f"depth must be at least 2, got {depth}")
    std = torch.as_tensor(std, dtype=dtype).reshape(-1, 1, 1).expand(n, 1, 1)
    shapes = [(hidden, dim)] + [(hidden, hidden)] * (depth - 2) + [(dim, hidden)]
    return [std * torch.randn(n, *shape, generator=generator, dtype=dtype) for shape in shapes]


def effective_u0(weights, U, V):
    """Two layers only: |W1 v_a + W2^T u_a|^2 / 4 per network and mode, shape (n, r), the initial
    condition of the logistic mode dynamics that a small random initialisation reduces to
    (chapter 1 derives it)."""
    if len(weights) != 2:
        raise ValueError("effective_u0 is derived for two-layer networks")
    W1, W2 = weights
    return ((W1 @ V + W2.transpose(1, 2) @ U) ** 2).sum(1) / 4


def balanced_and_difference(weights, U, V):
    """Two layers only: P = |W1 v_a + W2^T u_a|^2 and M = |W1 v_a - W2^T u_a|^2 per network and
    mode, shape (n, r) each. Gradient flow of an isolated mode conserves P * M, and
    u_a = (P - M) / 4."""
    if len(weights) != 2:
        raise ValueError("P and M are defined for two-layer networks")
    a, b = weights[0] @ V, weights[1].transpose(1, 2) @ U
    return ((a + b) ** 2).sum(1), ((a - b) ** 2).sum(1)


def removal_adjusted(weights, U, V):
    """Two layers only, modes listed strongest first: (P, M, overlap) per network and mode, shape
    (n, r) each. P and M are |p|^2 and |m|^2 of p = W1 v_a + W2^T u_a and m = W1 v_a - W2^T u_a
    after removing the span of the stronger modes' p (chapter 1: a learned mode removes its hidden
    direction from the weaker ones); overlap is the sum over the other modes b of
    cos^2(p_a, p_b)."""
    if len(weights) != 2:
        raise ValueError("P and M are defined for two-layer networks")
    a, b = weights[0] @ V, weights[1].transpose(1, 2) @ U          # (n, hidden, r)
    p, m = a + b, a - b
    Q, _ = torch.linalg.qr(p)               # Q[..., :k] spans the first k columns of p
    P, M = torch.empty_like(p[:, 0]), torch.empty_like(p[:, 0])
    for k in range(p.shape[-1]):
        B = Q[..., :k]
        pk = p[..., k] - (B @ (B.transpose(1, 2) @ p[..., k:k + 1]))[..., 0]
        mk = m[..., k] - (B @ (B.transpose(1, 2) @ m[..., k:k + 1]))[..., 0]
        P[:, k], M[:, k] = (pk ** 2).sum(1), (mk ** 2).sum(1)
    unit = p / p.norm(dim=1, keepdim=True)
    overlap = ((unit.transpose(1, 2) @ unit) ** 2).sum(-1) - 1
    return P, M, overlap


def end_to_end(weights):
    W = weights[0]
    for w in weights[1:]:
        W = w @ W
    return W


def project(W, U, V):
    """The diagonal of U^T W V for a batch of maps W: u_a = u_a^T W v_a, shape (n, r)."""
    return ((W @ V) * U).sum(-2)


def mode_strengths(weights, U, V):
    """u_a = u_a^T W v_a of the end-to-end map, shape (n, r)."""
    return project(end_to_end(weights), U, V)


def population_grads(weights, Syx, Sxx=None):
    """Gradients of the population loss 1/2 E||y - W x||^2 with respect to each weight (batched),
    and the end-to-end map W = W_N...W_1. Layer j's gradient is
    -(W_N...W_{j+1})^T E (W_{j-1}...W_1)^T with E = Sigma_yx - W Sigma_xx (Sigma_xx = I, whitened
    inputs, when Sxx is None)."""
    below, acc = [], None                        # below[j] = W_{j-1} ... W_1
    for w in weights:
        below.append(acc)
        acc = w if acc is None else torch.bmm(w, acc)
    W = acc
    above, acc = [None] * len(weights), None     # above[j] = W_N ... W_{j+1}
    for j in range(len(weights) - 1, 0, -1):
        acc = weights[j] if acc is None else torch.bmm(acc, weights[j])
        above[j - 1] = acc
    E = Syx - W if Sxx is None else Syx - W @ Sxx
    grads = []
    for j in range(len(weights)):
        g = E if above[j] is None else torch.bmm(above[j].transpose(1, 2), E)
        if below[j] is not None:
            g = torch.bmm(g, below[j].transpose(1, 2))
        grads.append(-g)
    return grads, W


def train(weights, Syx, U, V, lr: float, steps: int, Sxx=None):
    """Run `steps` of gradient descent (input covariance Sxx, identity when None); return the mode
    strengths after every step, shape (steps+1, n, r), and the final weights."""
    weights = [w.clone() for w in weights]
    traj = torch.empty(steps + 1, weights[0].shape[0], U.shape[1], dtype=weights[0].dtype,
                       device=weights[0].device)
    for k in range(steps + 1):
        grads, W = population_grads(weights, Syx, Sxx)
        traj[k] = project(W, U, V)
        if k < steps:
            for w, g in zip(weights, grads):
                w.sub_(g, alpha=lr)
    return traj, weights


def gram_flow(weights, Syx, U, V, times, rtol: float = 1e-10):
    """Exact gradient flow (tau = 1) of two-layer networks with whitened inputs, through the Gram
    matrix G = Q Q^T of Q = [W1^T; W2] (2 dim x hidden): tau dG/dt = F G + G F with
    F = [[0, E^T], [E, 0]], E = Sigma_yx - W2 W1, a closed equation of size (2 dim)^2 whatever the
    width. Returns the mode strengths u_a(t) at `times`, shape (len(times), n, r), as a float64
    CPU tensor."""
    import numpy as np
    from scipy.integrate import solve_ivp

    if len(weights) != 2:
        raise ValueError("the Gram-matrix flow is exact for two-layer networks")
    W1, W2 = (w.detach().to("cpu", torch.float64) for w in weights)
    Q = torch.cat([W1.transpose(1, 2), W2], dim=1)
    G0 = (Q @ Q.transpose(1, 2)).numpy()
    n, d2 = G0.shape[0], G0.shape[1]
    d = d2 // 2
    S = Syx.detach().to("cpu", torch.float64).numpy()

    def rhs(_, g):
        G = g.reshape(n, d2, d2)
        E = S - G[:, d:, :d]
        F = np.zeros_like(G)
        F[:, :d, d:], F[:, d:, :d] = E.transpose(0, 2, 1), E
        FG = F @ G
        return (FG + FG.transpose(0, 2, 1)).reshape(-1)

    times = np.asarray(times, dtype=float)
    sol = solve_ivp(rhs, (0.0, float(times[-1])), G0.reshape(-1), method="DOP853",
                    dense_output=True, rtol=rtol, atol=1e-14)
    if not sol.success:
        raise RuntimeError(f"Gram-matrix flow failed: {sol.message}")
    out = []
    for chunk in np.array_split(times, max(1, len(times) // 256)):
        G = torch.as_tensor(sol.sol(chunk).T.reshape(len(chunk), n, d2, d2))
        out.append(project(G[:, :, d:, :d], U.cpu().to(G.dtype), V.cpu().to(G.dtype)))
    return torch.cat(out)
