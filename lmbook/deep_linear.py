"""Two-layer linear networks y = W2 W1 x trained by full-batch gradient descent on the population loss.

Conventions
- Whitened inputs (Sigma_xx = I), so the loss is L = 1/2 E||y - W2 W1 x||^2 = 1/2 ||Sigma_yx - W2 W1||_F^2 + const.
- The task is Sigma_yx = U diag(s) V^T with random orthogonal U, V (dim x dim); modes beyond len(s) have s = 0.
- An ensemble of n networks is held as batched tensors W1 (n, hidden, dim), W2 (n, dim, hidden).
- Gradient descent with step `lr`; time in units of tau = 1/lr, i.e. t = step * lr.
- The strength of mode alpha is u_alpha = u_alpha^T W2 W1 v_alpha.
"""
from __future__ import annotations

import math

import torch


def singular_task(dim: int, strengths, generator: torch.Generator, dtype=torch.float64):
    """(Sigma_yx, U, V): a dim x dim input-output covariance with the given singular values."""
    s = torch.as_tensor(strengths, dtype=dtype)
    if s.ndim != 1 or len(s) > dim or (s <= 0).any():
        raise ValueError(f"strengths must be 1 to {dim} positive numbers, got {list(map(float, s))}")
    U, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=dtype))
    V, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=dtype))
    r = len(s)
    return U[:, :r] @ torch.diag(s) @ V[:, :r].T, U[:, :r], V[:, :r]


def init_std_for_u0(u0: float, hidden: int) -> float:
    """The i.i.d. Gaussian entry std that makes the expected effective initial strength |W1 v + W2^T u|^2/4
    equal u0: E = 2 * hidden * std^2 / 4."""
    return math.sqrt(2 * u0 / hidden)


def init_two_layer(n: int, hidden: int, dim: int, std, generator: torch.Generator, dtype=torch.float64):
    """W1 (n, hidden, dim), W2 (n, dim, hidden) with i.i.d. N(0, std^2) entries; `std` a float or one per network."""
    std = torch.as_tensor(std, dtype=dtype).reshape(-1, 1, 1).expand(n, 1, 1)
    W1 = std * torch.randn(n, hidden, dim, generator=generator, dtype=dtype)
    W2 = std * torch.randn(n, dim, hidden, generator=generator, dtype=dtype)
    return W1, W2


def effective_u0(W1, W2, U, V):
    """|W1 v_a + W2^T u_a|^2 / 4 per network and mode, shape (n, r): the initial condition of the logistic
    mode dynamics that a small random initialisation reduces to (the chapter derives it)."""
    a = W1 @ V                       # (n, hidden, r)
    b = W2.transpose(1, 2) @ U       # (n, hidden, r)
    return ((a + b) ** 2).sum(1) / 4


def mode_strengths(W1, W2, U, V):
    """u_a = u_a^T W2 W1 v_a, shape (n, r)."""
    return torch.diagonal(U.T @ (W2 @ W1) @ V, dim1=-2, dim2=-1)


def population_grads(W1, W2, Syx):
    """Gradients of 1/2 ||Sigma_yx - W2 W1||_F^2 with respect to W1 and W2 (batched)."""
    E = Syx - W2 @ W1
    return -W2.transpose(1, 2) @ E, -E @ W1.transpose(1, 2)


def train(W1, W2, Syx, U, V, lr: float, steps: int):
    """Run `steps` of gradient descent (the update of `population_grads`, fused in place for speed);
    return the mode strengths after every step, shape (steps+1, n, r), and the final weights."""
    W1, W2 = W1.clone(), W2.clone()
    traj = torch.empty(steps + 1, W1.shape[0], U.shape[1], dtype=W1.dtype, device=W1.device)
    E = torch.empty(W1.shape[0], *Syx.shape, dtype=W1.dtype, device=W1.device)
    for k in range(steps + 1):
        torch.bmm(W2, W1, out=E)                        # end-to-end map W = W2 W1
        traj[k] = ((E @ V) * U).sum(-2)                 # u_a = u_a^T W v_a
        if k < steps:
            torch.sub(Syx, E, out=E)                    # residual Sigma_yx - W
            step1 = torch.bmm(W2.transpose(1, 2), E)    # -grad W1, with the old W2
            W2.baddbmm_(E, W1.transpose(1, 2), alpha=lr)
            W1.add_(step1, alpha=lr)
    return traj, (W1, W2)
