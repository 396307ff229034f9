"""The gradient noise scale and the critical batch size (McCandlish et al. 2018): the optimal step
of the quadratic model on the exact moment recursion of `lmbook.sgd_noise`, SGD chains run on a step
schedule, the steps-versus-examples hyperbola, and noise scales from per-example gradients.

Conventions
- Linear model: that of `lmbook.sgd_noise` (eigenbasis of the input covariance diag(lam), loss of
  one sample (1/2)(y - w.x)^2, excess risk r = (1/2) sum_k lam_k e_k^2, online batches of B fresh
  samples). Chains here start at e_0 ~ N(0, I) (w_star = 0, w_0 random), so s_0 = E e_0^2 = 1 and
  the law of e stays symmetric under every e_k -> -e_k: the diagonal second moments s_k = E e_k^2
  are all the recursion needs.
- Quadratic model of one step (McCandlish et al. eq. 2.2): with G the gradient, H the Hessian, Sigma
  the covariance of one sample's gradient, E L(theta - eps G_B) = L - eps |G|^2 + (eps^2/2)(G^T H G
  + tr(H Sigma)/B). For the ensemble (expectations over the chains' states) the same holds with
  every coefficient averaged: `greedy_path` takes the step eps_opt(s, B) that minimises it, as
  callables the chapter lambdifies from its SymPy derivation.
- Steps to target S(B): the first (linearly interpolated) step at which the mean excess risk over
  the chains reaches `target` (`lmbook.measure.crossing_times` on -r). Examples E = B S.
- Hyperbola: S = S_min + E_min / B, i.e. (S/S_min - 1)(E/E_min - 1) = 1, B_crit = E_min / S_min;
  `fit_hyperbola` is the least-squares fit of S against 1/B with relative weights 1/S.
- Linearised network (`LinearisedNetwork`): residuals u = u0 + Phi delta, loss (1/2N)|u|^2,
  batches sampled with replacement; the quadratic model is then exact for every chain, and the
  ensemble conventions are those of the linear model (coefficients averaged over chains, the
  noise scales ratios of those averages, one common step).
- Noise scales of the linearised network are those of sampling with replacement from its data
  set: G is the mean of the per-example gradients g_i = phi_i u_i and Sigma their population
  covariance (1/N) sum (g_i - G)(g_i - G)^T, exactly.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import torch
from torch.func import grad, vmap

from . import sgd_noise as sn

F64 = torch.float64


# ------------------------------------------------------------------ the exact greedy path


@dataclasses.dataclass
class GreedyPath:
    """The exact mean-loss path of SGD with the quadratic model's optimal step at every step.

    etas[t] is the step taken at step t; risk[t] = E r_t (t = 0..len(etas)); b_noise[t] and
    dl_max[t] are the ensemble noise scale and the best full-batch improvement at step t;
    steps is the interpolated first step at which risk reaches the target; recorded[name][t] is
    any further quantity asked for (`greedy_path`'s record)."""

    B: float
    etas: np.ndarray
    risk: np.ndarray
    b_noise: np.ndarray
    dl_max: np.ndarray
    steps: float
    recorded: dict = dataclasses.field(default_factory=dict)
    target: float = 0.0

    @property
    def weights(self) -> np.ndarray:
        """dL / dL_max of every step: the steps an infinitely large batch would need for it. The
        last step counts only its part above the target, as the interpolated `steps` does."""
        drop = -np.diff(self.risk)
        if drop.size and self.risk[-1] < self.target:
            drop[-1] = self.risk[-2] - self.target
        return drop / self.dl_max

    def sums(self) -> tuple[float, float]:
        """(a_B, n_B) = (sum dL/dL_max, sum B_noise dL/dL_max) along this path: with the
        optimal step, S = a_B + n_B / B exactly (each step gains dL_max / (1 + B_noise/B)),
        and the hyperbola is the approximation that a_B and n_B do not depend on B."""
        w = self.weights
        return float(w.sum()), float((w * self.b_noise[: w.size]).sum())

    def averaged(self, quantity: np.ndarray) -> float:
        """The weighted average of a per-step quantity with weights dL/dL_max: the path average
        sum (dL/dL_max) q / sum (dL/dL_max) of McCandlish's integrated tradeoff."""
        w = self.weights
        return float((w * quantity[: w.size]).sum() / w.sum())


def greedy_path(
    recursion: sn.MomentRecursion,
    step: Callable,
    b_noise: Callable,
    dl_max: Callable,
    lam,
    sigma: float,
    B: float,
    target: float,
    s0=None,
    max_steps: int = 100_000,
    record: dict | None = None,
) -> GreedyPath:
    """Iterate s' = M(eta_t, B) s + c(eta_t, B) with eta_t = step(s, B) (the ensemble's optimal
    step) from s0 (default 1) until E r = (1/2) lam . s falls below `target` (one step past it).
    `b_noise(s)` and `dl_max(s)` are recorded along the way, and f(s) for every name: f of
    `record`."""
    lam = np.asarray(lam, dtype=float)
    s = np.ones(lam.size) if s0 is None else np.asarray(s0, dtype=float).copy()
    etas, risk, noise, dm = [], [0.5 * lam @ s], [], []
    rec = {name: [] for name in (record or {})}
    for _ in range(max_steps):
        if risk[-1] <= target:
            break
        eta = float(step(s, B))
        etas.append(eta)
        noise.append(float(b_noise(s)))
        dm.append(float(dl_max(s)))
        for name, f in (record or {}).items():
            rec[name].append(float(f(s)))
        s = recursion.matrix(eta, B, lam) @ s + recursion.constant(eta, B, sigma, lam)
        risk.append(0.5 * lam @ s)
    risk = np.array(risk)
    steps = float(crossing_step(torch.as_tensor(risk)[:, None], target)[0])
    return GreedyPath(float(B), np.array(etas), risk, np.array(noise), np.array(dm), steps,
                      {name: np.array(v) for name, v in rec.items()}, float(target))


def crossing_step(risk: torch.Tensor, target: float) -> torch.Tensor:
    """The first step at which a decreasing curve risk (time, ...) reaches `target`, linearly
    interpolated; NaN where it never does."""
    from .measure import crossing_times

    return crossing_times(-risk, -target)


# ------------------------------------------------------------------ chains


def schedule_chains(
    etas, B: int, lam: torch.Tensor, sigma: float, chains: int, generator: torch.Generator
) -> torch.Tensor:
    """Online SGD with the step schedule etas (one value per step) on `chains` independent chains
    started at e_0 ~ N(0, I): the excess risk of every chain after every step, shape
    (len(etas) + 1, chains)."""
    d = lam.numel()
    zero = torch.zeros(d, dtype=F64, device=lam.device)
    w = torch.randn(chains, d, generator=generator, dtype=F64, device=lam.device)
    out = torch.empty(len(etas) + 1, chains, dtype=F64, device=lam.device)
    out[0] = sn.excess_risk(w, zero, lam)
    with sn.one_thread_on_cpu(lam.device):
        for t, eta in enumerate(etas):
            x, y = sn.draw_batch((chains,), B, lam, zero, sigma, generator)
            w = sn.sgd_update(w, x, y, float(eta))
            out[t + 1] = sn.excess_risk(w, zero, lam)
    return out


# ------------------------------------------------------------------ a linearised network


@dataclasses.dataclass
class LinearisedNetwork:
    """f(theta_w + delta) = f(theta_w) + Phi delta on a data set of N examples, squared loss
    L = (1/2N) |u|^2 with residuals u = u0 + Phi delta, SGD sampling B examples WITH replacement.
    Per-example gradients are g_i = phi_i u_i (phi_i the Jacobian row of example i), so one state's
    quadratic-model coefficients are exact and O(NP): |G|^2, G^T H G = |Phi G|^2/N, tr Sigma =
    (1/N) sum u_i^2 |phi_i|^2 - |G|^2, tr(H Sigma) = (1/N) sum u_i^2 phi_i^T H phi_i - G^T H G,
    with H = Phi^T Phi / N and Sigma the population covariance of the g_i. l_min is the least
    loss of the linear model (excess risk = L - l_min), h_max the largest eigenvalue of H."""

    phi: torch.Tensor
    u0: torch.Tensor

    def __post_init__(self):
        n = self.phi.shape[0]
        k = self.phi @ self.phi.T
        self.k_diag = k.diagonal().clone()
        self.k2_diag = (k @ k).diagonal() / n
        self.h_max = float(torch.linalg.eigvalsh(k / n)[-1])   # the largest eigenvalue of H
        fit = torch.linalg.lstsq(self.phi, -self.u0[:, None]).solution[:, 0]
        self.l_min = float(0.5 * (self.u0 + self.phi @ fit).square().mean())

    def coefficients(self, delta: torch.Tensor):
        """(u, G, |G|^2, G^T H G, tr Sigma, tr(H Sigma)) of every chain delta (chains, P)."""
        n = self.phi.shape[0]
        u = self.u0 + delta @ self.phi.T
        G = u @ self.phi / n
        g2, ghg = (G * G).sum(1), (G @ self.phi.T).square().sum(1) / n
        u2 = u * u
        return u, G, g2, ghg, u2 @ self.k_diag / n - g2, u2 @ self.k2_diag / n - ghg

    def chains(self, B: int, chains: int, target: float, generator, max_steps: int = 10_000,
               overshoot: float = 0.8):
        """SGD chains from delta = 0 with the ENSEMBLE's optimal step at every step, eps =
        E|G|^2 / (E G^T H G + E tr(H Sigma)/B) (E over the chains), until the chains' mean excess
        risk reaches overshoot * target (so that subsets of the chains reach the target too).
        Returns (excess risk (steps + 1, chains), b_noise, b_simple, dl_max), the last three per
        step as ratios of chain means (module docstring)."""
        P = self.phi.shape[1]
        delta = torch.zeros(chains, P, dtype=self.phi.dtype, device=self.phi.device)
        risk, noise, simple, dl_max = [], [], [], []
        with sn.one_thread_on_cpu(self.phi.device):
            for _ in range(max_steps + 1):
                u, G, g2, ghg, trs, trhs = self.coefficients(delta)
                risk.append(0.5 * u.square().mean(1) - self.l_min)
                if float(risk[-1].mean()) <= overshoot * target or len(risk) > max_steps:
                    break
                a, b, c, d = g2.mean(), ghg.mean(), trs.mean(), trhs.mean()
                noise.append(float(d / b))
                simple.append(float(c / a))
                dl_max.append(float(a * a / (2 * b)))
                idx = torch.randint(u.shape[1], (chains, B), generator=generator,
                                    device=u.device)
                ones = torch.ones_like(idx, dtype=u.dtype)
                counts = torch.zeros_like(u).scatter_add_(1, idx, ones)   # draws of each example
                g_batch = (counts * u) @ self.phi / B     # the mean of the B sampled g_i
                delta = delta - a / (b + d / B) * g_batch
        return (torch.stack(risk).cpu().numpy(), np.array(noise), np.array(simple),
                np.array(dl_max))


    def full_batch_path(self, steps: int):
        """Gradient descent with the optimal full-batch step eps_max = |G|^2 / G^T H G (the chains'
        step at B -> infinity) for `steps` steps from delta = 0: (excess risk (steps + 1,), b_noise,
        b_simple, dl_max, eps_max (steps,)). Each step gains exactly dl_max (the loss is quadratic),
        so the sum of dL/dL_max along it is `steps`."""
        delta = torch.zeros(1, self.phi.shape[1], dtype=self.phi.dtype, device=self.phi.device)
        risk, noise, simple, dl_max, eps_max = [], [], [], [], []
        for t in range(steps + 1):
            u, G, g2, ghg, trs, trhs = self.coefficients(delta)
            risk.append(float(0.5 * u.square().mean()) - self.l_min)
            if t == steps:
                break
            noise.append(float(trhs / ghg))
            simple.append(float(trs / g2))
            dl_max.append(float(g2 * g2 / (2 * ghg)))
            eps_max.append(float(g2 / ghg))
            delta = delta - g2 / ghg * G
        return tuple(np.array(v) for v in (risk, noise, simple, dl_max, eps_max))


    def constant_lr_chains(self, B: int, lrs, chains: int, target: float, generator,
                           optimizer: str = "sgd", betas=(0.9, 0.999), eps: float = 1e-8,
                           max_steps: int = 2000, overshoot: float = 0.8) -> np.ndarray:
        """The practitioner's protocol: one constant learning rate for the whole run, every lr of
        `lrs` at once (`chains` chains each), optimizer "sgd" (delta -= lr g_B) or "adam" (Kingma &
        Ba, bias-corrected moments, betas, eps; no weight decay), from delta = 0 until the best
        learning rate's mean excess risk reaches overshoot * target. Returns the excess risk
        (steps + 1, len(lrs), chains); a run that diverges is +inf (or huge) from then on."""
        P, L = self.phi.shape[1], len(lrs)
        lr = torch.as_tensor(np.repeat(np.asarray(lrs, dtype=float), chains),
                             dtype=self.phi.dtype, device=self.phi.device)[:, None]
        delta = torch.zeros(L * chains, P, dtype=self.phi.dtype, device=self.phi.device)
        m, v = torch.zeros_like(delta), torch.zeros_like(delta)
        risk = []
        with sn.one_thread_on_cpu(self.phi.device):
            for t in range(max_steps + 1):
                u = self.u0 + delta @ self.phi.T
                now = 0.5 * u.square().mean(1) - self.l_min
                now = torch.where(torch.isfinite(now), now, torch.full_like(now, float("inf")))
                risk.append(now)
                best = float(now.view(L, chains).mean(1).min())
                if best <= overshoot * target or t == max_steps:
                    break
                idx = torch.randint(u.shape[1], (L * chains, B), generator=generator,
                                    device=u.device)
                counts = torch.zeros_like(u).scatter_add_(1, idx, torch.ones_like(u[:, :1])
                                                          .expand(-1, B))
                g = torch.nan_to_num((counts * u) @ self.phi / B, nan=0.0, posinf=0.0,
                                     neginf=0.0)
                if optimizer == "sgd":
                    delta = delta - lr * g
                else:
                    m = betas[0] * m + (1 - betas[0]) * g
                    v = betas[1] * v + (1 - betas[1]) * g * g
                    step = (m / (1 - betas[0] ** (t + 1))) / ((v / (1 - betas[1] ** (t + 1)))
                                                              .sqrt() + eps)
                    delta = delta - lr * step
        return torch.stack(risk).view(-1, L, chains).cpu().numpy()


def best_steps(mean_curves, target: float, log_lrs=None) -> float:
    """The fewest steps to `target` over learning rates: mean_curves (steps + 1, lrs) of mean excess
    risk, each column's interpolated first crossing (`crossing_step`; inf if none crosses). With
    log_lrs (the grid, ascending) and the best learning rate inside the grid, the minimum of the
    parabola through the best and its two neighbours in log lr (never above the best point);
    otherwise the smallest crossing."""
    steps = crossing_step(torch.as_tensor(np.nan_to_num(mean_curves, posinf=1e300)), target)
    steps = np.where(np.isfinite(steps.numpy()), steps.numpy(), np.inf)
    k = int(np.argmin(steps))
    if log_lrs is None or k == 0 or k == steps.size - 1:
        return float(steps[k])
    near = steps[k - 1 : k + 2]
    if not np.isfinite(near).all():
        return float(steps[k])
    c2, c1, c0 = np.polyfit(np.asarray(log_lrs, dtype=float)[k - 1 : k + 2], near, 2)
    return float(min(steps[k], c0 - c1 * c1 / (4 * c2))) if c2 > 0 else float(steps[k])


def path_sums(risk, quantity, dl_max, target) -> tuple[float, float]:
    """(a, n) = (sum dL/dL_max, sum q dL/dL_max) along a mean-risk path up to the target (the step
    that crosses it counted to the target, as `crossing_step` interpolates; steps after it are
    ignored). With q = B_noise, S ~ a + n/B and B_crit = n/a; n/a is the path average of q."""
    risk = np.asarray(risk, dtype=float)
    below = np.nonzero(risk <= target)[0]
    end = int(below[0]) if below.size else risk.size - 1
    drop = risk[:end] - risk[1 : end + 1]
    if below.size:
        drop[-1] = risk[end - 1] - target
    w = drop / np.asarray(dl_max)[:end]
    return float(w.sum()), float((w * np.asarray(quantity)[:end]).sum())


def jacobian_rows(f_one: Callable, params: dict, x: torch.Tensor) -> torch.Tensor:
    """Phi (N, P): the gradient of the scalar f_one(params, x_i) for every example, flattened in
    dict order (torch.func vmap of grad)."""
    g = vmap(grad(f_one), in_dims=(None, 0))(params, x)
    return torch.cat([t.reshape(t.shape[0], -1) for t in g.values()], 1)


# ------------------------------------------------------------------ the hyperbola


def fit_hyperbola(batches, steps, se=None):
    """(S_min, E_min) of S = S_min + E_min / B by weighted least squares in 1/B, weights 1/se^2
    (default se = S: relative errors). B_crit = E_min / S_min."""
    b = np.asarray(batches, dtype=float)
    s = np.asarray(steps, dtype=float)
    w = 1.0 / np.asarray(s if se is None else se, dtype=float) ** 2
    X = np.stack([np.ones_like(b), 1.0 / b], axis=1)
    coef = np.linalg.solve(X.T @ (w[:, None] * X), X.T @ (w * s))
    return float(coef[0]), float(coef[1])


__all__ = [
    "GreedyPath", "LinearisedNetwork", "best_steps", "crossing_step", "fit_hyperbola",
    "greedy_path", "jacobian_rows", "path_sums", "schedule_chains",
]
