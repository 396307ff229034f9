"""Multitask sparse parity (Michaud et al. 2023, arXiv:2303.13506, section 4) and the quantization
model's finite sums.

Conventions
- Subtasks k = 1..T have frequencies p_k = k^-(alpha+1) / sum_{j<=T} j^-(alpha+1) (`zipf`), a
  truncated Zipf law; index 0 of every tensor is subtask k = 1.
- An example is (task, bits): task ~ p, bits uniform in {0,1}^n. The input is the one-hot task id
  (T entries) followed by the n bits (as 0/1 floats), d = T + n. The label is the parity (sum mod 2)
  of the bits at the subtask's own subset of bit positions (`subsets`: distinct subsets, so that no
  two subtasks share a rule). Subsets of different orders share one tensor, padded with the index n,
  which points at a column of zeros appended to the bits (`labels`).
- The network is lmbook.mlp's one-hidden-layer ReLU MLP in SP (sigma_w = sqrt 2, biases, 2
  outputs: logits), trained on the mean cross-entropy of a batch (nats) with SGD and heavy-ball
  momentum; every network of the ensemble has its own data stream: a fixed training set of size
  D (sampled with replacement, many epochs) or, for D = 0, fresh examples every step (online).
- Losses are per-subtask test errors (0-1 loss, chance 1/2) and cross-entropies (nats, chance
  ln 2), on a held-out set with the same number of examples of every subtask, split in two halves:
  one picks the early-stopping time, the other measures (`early_stopped`). The aggregate loss
  weights subtask k by p_k.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch

from . import mlp

__all__ = ["Run", "early_stopped", "eval_steps", "inputs", "labels", "learning_times", "logits",
           "probit_threshold", "threshold_slopes",
           "sample", "staircase", "subsets", "tail", "train", "zipf"]


def zipf(n_tasks: int, alpha: float, dtype=torch.float64) -> torch.Tensor:
    """p_k proportional to k^-(alpha+1), k = 1..n_tasks, normalised to sum to 1."""
    k = torch.arange(1, n_tasks + 1, dtype=dtype)
    p = k ** -(alpha + 1.0)
    return p / p.sum()


def tail(p: torch.Tensor, K) -> torch.Tensor:
    """sum_{k > K} p_k for integer K (broadcast): the share of the loss the subtasks after the first
    K carry (the exact finite sum of the quantization model, truncated at T = len(p))."""
    c = torch.cat([p.new_zeros(1), torch.cumsum(p, 0)])
    K = torch.as_tensor(K).long().clamp(0, len(p))
    return c[-1] - c[K]


def subsets(n_bits: int, order: int, n_tasks: int, generator=None) -> torch.Tensor:
    """n_tasks distinct subsets of `order` bit positions out of n_bits, (n_tasks, order), drawn
    uniformly without replacement."""
    every = torch.tensor(list(itertools.combinations(range(n_bits), order)))
    if len(every) < n_tasks:
        raise ValueError(f"only {len(every)} distinct {order}-subsets of {n_bits} bits")
    return every[torch.randperm(len(every), generator=generator)[:n_tasks]]


def sample(p: torch.Tensor, n_bits: int, shape, generator=None, device=None):
    """(task, bits): task indices ~ p with the given shape, bits (shape + (n_bits,)) uniform 0/1
    (int8)."""
    shape = tuple(shape)
    task = torch.multinomial(p.to(device), math.prod(shape), replacement=True,
                             generator=generator).view(shape)
    bits = torch.randint(0, 2, shape + (n_bits,), generator=generator, device=device,
                         dtype=torch.int8)
    return task, bits


def labels(task: torch.Tensor, bits: torch.Tensor, rules: torch.Tensor) -> torch.Tensor:
    """Parity labels (long, 0/1). task (S, P), bits (S, P, n), rules (S, T, k) per network: the
    parity of bits[rules[s, task]] (index n reads a zero, so padded rules have lower order)."""
    padded = torch.cat([bits, bits.new_zeros(bits.shape[:-1] + (1,))], -1)
    idx = rules.gather(1, task[..., None].expand(-1, -1, rules.shape[-1]))
    return (padded.gather(-1, idx).sum(-1, dtype=torch.long)) % 2


def inputs(task: torch.Tensor, bits: torch.Tensor, n_tasks: int, dtype) -> torch.Tensor:
    """The one-hot task id followed by the bits, shape task.shape + (n_tasks + n_bits,)."""
    x = torch.zeros(task.shape + (n_tasks + bits.shape[-1],), dtype=dtype, device=task.device)
    x[..., n_tasks:] = bits
    return x.scatter_(-1, task[..., None], 1.0)


@dataclass
class Run:
    """The record of `train`: steps (E,) at which the test set was evaluated; val and test, the
    per-subtask test errors (0-1 loss, chance 1/2) on the two halves, and ce, the per-subtask
    cross-entropy (nats, chance ln 2) on the test half, each of shape (E, S, T)."""

    steps: np.ndarray
    val: torch.Tensor
    test: torch.Tensor
    ce: torch.Tensor


def eval_steps(steps: int, count: int) -> np.ndarray:
    """About `count` evaluation steps from 0 to `steps`, evenly spaced in log(1 + step)."""
    return np.unique(np.round(np.expm1(np.linspace(0, np.log1p(steps), count))).astype(int))


def logits(params: dict, x: torch.Tensor) -> torch.Tensor:
    """mlp.apply for the one-hidden-layer SP ReLU net with biases (every multiplier is 1 in SP),
    fused into two baddbmm calls: (S, P, 2) from x (S, P, d)."""
    h = torch.relu(torch.baddbmm(params["b0"][:, None], x, params["W0"].transpose(1, 2)))
    return torch.baddbmm(params["b1"][:, None], h, params["W1"].transpose(1, 2))


def train(p, rules, n_bits, data_sizes, width, steps, batch, lr, momentum=0.9, evals=40,
          per_task=32, share=None, generator=None, device=None, dtype=torch.float32) -> Run:
    """Train S = len(data_sizes) one-hidden-layer MLPs (lmbook.mlp, SP) as one batched ensemble.
    Network s learns the parities rules[s] (S, T, k) from a fixed training set of data_sizes[s]
    examples (0: online, fresh examples every step), by SGD with momentum on the batch-mean
    cross-entropy, for `steps` steps of `batch` examples. At about `evals` steps (`eval_steps`) the
    per-subtask errors and cross-entropies are measured on 2 x per_task test examples of every
    subtask. Networks with the same `share` id (a sequence of S ints; default: all different)
    start from the same initial parameters and draw their training sets as prefixes of one
    stream (common random numbers: a network with a larger D sees a superset of the examples);
    their test sets are the same too."""
    T = len(p)
    S = len(data_sizes)
    share = torch.arange(S) if share is None else torch.as_tensor(share)
    _, ids = torch.unique(share, return_inverse=True)
    U = int(ids.max()) + 1
    ids = ids.to(device)
    rules = rules.to(device)
    sizes = torch.as_tensor(data_sizes, device=device)
    net = mlp.Net((T + n_bits, width, 2), param="sp", bias=True)
    params = {k: v[ids].clone().requires_grad_() for k, v in
              mlp.init(net, U, generator=generator, dtype=dtype, device=device).items()}
    opt = torch.optim.SGD(list(params.values()), lr=lr, momentum=momentum)
    big = max(int(sizes.max()), 1)
    d_task, d_bits = sample(p, n_bits, (U, big), generator, device)
    d_task, d_bits = d_task[ids], d_bits[ids]
    t_task = torch.arange(T, device=device).repeat_interleave(2 * per_task)[None].expand(S, -1)
    _, t_bits = sample(p, n_bits, (U, T * 2 * per_task), generator, device)
    t_bits = t_bits[ids]
    t_y = labels(t_task, t_bits, rules)
    t_x = inputs(t_task, t_bits, T, dtype)
    online = (sizes == 0)[:, None]
    at = eval_steps(steps, evals)
    val, test, ces = [], [], []
    for step in range(steps + 1):
        if step in at:
            with torch.no_grad():
                out = logits(params, t_x)
                ce = torch.nn.functional.cross_entropy(out.reshape(-1, 2), t_y.reshape(-1),
                                                       reduction="none").view(S, T, 2, per_task)
                err = ((out[..., 1] > out[..., 0]).long() != t_y).view(S, T, 2, per_task)
                val.append(err[:, :, 0].double().mean(-1))
                test.append(err[:, :, 1].double().mean(-1))
                ces.append(ce[:, :, 1].mean(-1).double())
        if step == steps:
            break
        task, bits = sample(p, n_bits, (S, batch), generator, device)
        idx = (torch.rand(S, batch, generator=generator, device=device)
               * sizes.clamp(min=1)[:, None]).long()
        task = torch.where(online, task, d_task.gather(1, idx))
        bits = torch.where(online[..., None], bits,
                           d_bits.gather(1, idx[..., None].expand(-1, -1, n_bits)))
        out = logits(params, inputs(task, bits, T, dtype))
        y = labels(task, bits, rules)
        loss = torch.nn.functional.cross_entropy(out.reshape(-1, 2), y.reshape(-1),
                                                 reduction="sum") / batch
        opt.zero_grad()
        loss.backward()
        opt.step()
    return Run(at, torch.stack(val), torch.stack(test), torch.stack(ces))


def early_stopped(run: Run, p: torch.Tensor):
    """(per-subtask test errors (S, T), aggregate test error (S,), stopping step (S,)) at the
    evaluation where the p-weighted error on the validation half is lowest (the first such one),
    per network."""
    agg_val = (run.val * p).sum(-1)
    best = agg_val.argmin(0)
    losses = run.test[best, torch.arange(run.test.shape[1])]
    return losses, (losses * p).sum(-1), run.steps[best.cpu().numpy()]


def learning_times(run: Run, level: float, curve: str = "test") -> torch.Tensor:
    """Steps at which each subtask's curve (`curve`: "test" error, "val" error or "ce", the test
    cross-entropy) first falls below `level` (linear interpolation between evaluations), (S, T);
    NaN where it never does."""
    from .measure import crossing_times

    idx = crossing_times(-getattr(run, curve), -level)
    steps = torch.as_tensor(run.steps, dtype=idx.dtype)
    lo = idx.floor().clamp(0, len(steps) - 1).nan_to_num(0).long()
    hi = (lo + 1).clamp(max=len(steps) - 1)
    frac = idx - idx.floor()
    return torch.where(idx.isnan(), idx, steps[lo] + frac * (steps[hi] - steps[lo]))


def staircase(sizes, p: torch.Tensor, taus):
    """The quantization model's exact finite sums at the data sizes `sizes`: subtask k is learned
    when it has been seen tau times, D p_k >= tau, so the count of learned subtasks is
    K(D) = #{k <= T: D p_k >= tau} and the unlearned share of the loss is tail(p, K(D)).
    Returns (K, tail), each (len(taus), len(sizes)), float64."""
    D = torch.as_tensor(np.asarray(sizes, dtype=float))
    tau = torch.as_tensor(np.asarray(taus, dtype=float))
    K = (p.double()[None, None] * D[None, :, None] >= tau[:, None, None]).sum(-1)
    return K.double(), tail(p.double(), K)


def probit_threshold(x, y, sigma=None):
    """Maximum-likelihood lognormal threshold: P(y = 1) = Phi((x - mu)/sigma), with x = ln(D p_k)
    (examples of the subtask seen) and y the learned indicators (any matching shapes). Returns
    (mu, sigma); with `sigma` given, only mu is fitted."""
    from scipy.optimize import minimize
    from scipy.stats import norm

    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=bool).ravel()
    sign = np.where(y, 1.0, -1.0)

    def nll(theta):
        s = math.exp(theta[1]) if sigma is None else sigma
        return -norm.logcdf(sign * (x - theta[0]) / s).sum()

    start = [float(np.median(x)), 0.0]
    res = minimize(nll, start if sigma is None else start[:1] + [0.0], method="Nelder-Mead",
                   options=dict(xatol=1e-6, fatol=1e-9))
    return float(res.x[0]), (math.exp(res.x[1]) if sigma is None else float(sigma))


def threshold_slopes(sizes, p: torch.Tensor, mu: float, sigma: float, draws: int = 4000,
                     seed: int = 0):
    """The quantization model with a lognormal threshold: replicate r learns subtask k from D
    examples iff ln(D p_k) >= ln tau_rk, ln tau_rk ~ N(mu, sigma^2), one draw per (replicate,
    subtask) shared by all D (nested training sets). Returns the expected least-squares exponents
    (-d ln U/d ln D, d ln K/d ln D) of the unlearned share U = sum_k p_k [k not learned] and of the
    count K over the given sizes, by Monte Carlo over `draws` replicates (fixed seed: common random
    numbers, so nearby (mu, sigma) give smoothly varying results)."""
    rng = np.random.default_rng(seed)
    z = torch.as_tensor(rng.standard_normal((draws, 1, len(p))))
    x = torch.log(torch.as_tensor(np.asarray(sizes, dtype=float)))[:, None] + torch.log(p.double())
    learned = x[None] >= mu + sigma * z  # (draws, sizes, T)
    U = ((~learned) * p.double()).sum(-1)
    K = learned.sum(-1).double().clamp(min=0.5)
    lx = x[:, 0] - x[:, 0].mean()
    slope = lambda v: (torch.log(v) * lx).sum(-1) / (lx**2).sum()  # noqa: E731
    return -slope(U).mean().item(), slope(K).mean().item()
