"""Kernel gradient descent: what a network in the lazy (fixed-kernel) regime does, in closed form.

Convention: the loss is the mean squared error (1/2P) sum_p (f(x_p) - y_p)^2 over P training inputs
and the step is lr, so the training outputs follow f_{t+1} = f_t - (lr/P) K (f_t - y) with K the
(P, P) kernel on the training inputs. After t steps the change of the outputs is
    train:  (I - (I - lr K / P)^t) (y - f_0)
    test:   K_*X K^{-1} (I - (I - lr K / P)^t) (y - f_0)   (K_*X the (Q, P) test-train kernel)
which is the continuous-time (I - exp(-lr K t / P)) form with exact discrete-time decay factors.
"""
from __future__ import annotations

import torch

__all__ = ["output_change", "decay_factors", "residual_trajectory"]


def decay_factors(eigenvalues: torch.Tensor, lr: float, steps: int, P: int) -> torch.Tensor:
    """(1 - lr lambda / P)^steps: the factor by which the residual along each kernel eigenvector
    shrinks."""
    return (1 - lr * eigenvalues / P) ** steps


def output_change(K: torch.Tensor, residual0: torch.Tensor, lr: float, steps: int,
                  K_test: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(train change, test change) of the outputs after `steps` steps of kernel gradient descent.

    K: (P, P) symmetric positive definite; residual0 = y - f_0, shape (P,) or (S, P) for S runs
    sharing K; K_test: (Q, P) or None. Returns tensors shaped like residual0 (test: (..., Q)), or
    None for the test part."""
    P = K.shape[0]
    evals, evecs = torch.linalg.eigh(K)
    grown = 1 - decay_factors(evals, lr, steps, P)
    coeff = residual0 @ evecs                                   # (..., P) in the eigenbasis
    train = (coeff * grown) @ evecs.T
    test = None if K_test is None else (coeff * grown / evals) @ (K_test @ evecs).T
    return train, test


def _eigh(K: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.linalg.eigh, one matrix at a time on the CPU: batched CPU eigh of many small matrices
    is up to 50 times slower than a loop when the threads are contended."""
    if K.ndim < 3 or K.device.type != "cpu":
        return torch.linalg.eigh(K)
    pairs = [torch.linalg.eigh(k) for k in K.reshape(-1, *K.shape[-2:])]
    return (torch.stack([e for e, _ in pairs]).reshape(K.shape[:-1]),
            torch.stack([v for _, v in pairs]).reshape(K.shape))


def residual_trajectory(K: torch.Tensor, residual0: torch.Tensor, lr: float, steps: int
                        ) -> torch.Tensor:
    """The training residuals y - f_t of kernel gradient descent for t = 0 .. steps, shape
    (steps + 1, ..., P): r_t = (I - lr K / P)^t r_0. K: (P, P), or (S, P, P) with residual0
    (S, P), one kernel per run."""
    P = K.shape[-1]
    evals, evecs = _eigh(K)
    coeff = (residual0.unsqueeze(-2) @ evecs).squeeze(-2)      # (..., P) in each eigenbasis
    t = torch.arange(steps + 1, dtype=K.dtype, device=K.device).reshape(-1, *([1] * evals.ndim))
    decayed = (coeff * (1 - lr * evals / P) ** t).movedim(0, -2)           # (..., T, P)
    return (decayed @ evecs.transpose(-1, -2)).movedim(-2, 0)             # one matmul per kernel
