"""Batches of two-layer ReLU networks trained by full-batch gradient descent, with closed-form gradients
and empirical NTKs (one hidden layer, so no autograd is needed and S networks train as one batched matmul).

Network s of the batch (all parameters i.i.d. N(0, 1) at initialisation; inputs x of shape (P, d), shared by
the batch, or (S, P, d), one set of inputs per network; targets (P,) or (S, P) likewise):
    h = sigma_w / sqrt(d) * W x + sigma_b * b                              (W: n x d, b: n)
    f(x) = width**(1/2 - readout_exponent) * (sigma_w / sqrt(width) * v . relu(h) + sigma_b * c)   (v: n, c: scalar)
readout_exponent = 1/2 is the NTK parameterisation of lmbook.kernels / lmbook.ntk.NTKMLP (its kernels are
relu_nngp_ntk(x, 1, sigma_w, sigma_b)); readout_exponent = 1 is the mean-field parameterisation: the output is
sqrt(width) times smaller, the NTK `width` times smaller, and a step of `lr * width` gives the same initial
(linearised) dynamics as step `lr` in the NTK parameterisation while the hidden features move at order one.
sigma_b = 0 is a bias-free network (b and c then carry zero gradient).

Loss: L = (1/2P) sum_p (F(x_p) - y_p)^2, the mean squared error over the P training inputs, where the trained
function is F = f (alpha = None) or, after Chizat, Oyallon & Bach (2019), F = alpha (f - f_0), the centred output
scaled by alpha: with step lr / alpha^2 its linearisation is the same for every alpha (lazy as alpha grows).
Under the linearisation F follows F_{t+1} = F_t - (lr/P) Theta (F_t - y), Theta the NTK of F.

Parameters travel as a dict {"W": (S, n, d), "b": (S, n), "v": (S, n), "c": (S,)}.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["TwoLayer", "init_params", "preactivations", "outputs", "ntk", "train"]


@dataclass(frozen=True)
class TwoLayer:
    """The architecture: input dimension d, width n, the two standard deviations, the readout exponent."""
    d: int
    width: int
    sigma_w: float = math.sqrt(2.0)
    sigma_b: float = 0.0
    readout_exponent: float = 0.5

    @property
    def scale(self) -> float:
        """The output multiplier width**(1/2 - readout_exponent) (1 in the NTK parameterisation)."""
        return self.width ** (0.5 - self.readout_exponent)

    @property
    def readout(self) -> float:
        """The readout weights' multiplier sigma_w * width**(-readout_exponent)."""
        return self.sigma_w * self.width ** (-self.readout_exponent)


def init_params(arch: TwoLayer, networks: int, generator=None, dtype=torch.float64, device=None) -> dict:
    """`networks` independent draws of every parameter from N(0, 1)."""
    kw = dict(generator=generator, dtype=dtype, device=device)
    n, d = arch.width, arch.d
    return {"W": torch.randn(networks, n, d, **kw), "b": torch.randn(networks, n, **kw),
            "v": torch.randn(networks, n, **kw), "c": torch.randn(networks, **kw)}


def preactivations(arch: TwoLayer, params: dict, x: torch.Tensor) -> torch.Tensor:
    """Pre-activations h of the hidden layer, shape (S, P, n)."""
    return torch.baddbmm(arch.sigma_b * params["b"][:, None, :], x.expand(params["W"].shape[0], -1, -1) if x.ndim == 2 else x,
                         params["W"].transpose(1, 2), alpha=arch.sigma_w / math.sqrt(arch.d))


def outputs(arch: TwoLayer, params: dict, x: torch.Tensor, h: torch.Tensor | None = None) -> torch.Tensor:
    """f(x) of every network, shape (S, P) (h: the pre-activations on x, when already computed)."""
    a = torch.relu(preactivations(arch, params, x) if h is None else h)
    return arch.readout * torch.bmm(a, params["v"][:, :, None])[..., 0] + arch.scale * arch.sigma_b * params["c"][:, None]


def ntk(arch: TwoLayer, params: dict, x1: torch.Tensor, x2: torch.Tensor | None = None) -> torch.Tensor:
    """Empirical NTK of f, shape (S, P1, P2): the sum over all parameters of df(x1)/dp df(x2)/dp,
    from the layerwise identity (readout: m^2 A A'^T + (scale sigma_b)^2; hidden: G G'^T * (sigma_w^2 x.x'/d + sigma_b^2),
    with A = relu(h), G = m v relu'(h), m the readout multiplier and relu'(0) = 0)."""
    x2 = x1 if x2 is None else x2
    h1, h2 = preactivations(arch, params, x1), preactivations(arch, params, x2)
    m = arch.readout
    a_term = m * m * torch.einsum("spn,sqn->spq", torch.relu(h1), torch.relu(h2))
    g1 = (h1 > 0) * params["v"][:, None, :]
    g2 = (h2 > 0) * params["v"][:, None, :]
    g_term = m * m * torch.einsum("spn,sqn->spq", g1.to(h1.dtype), g2.to(h2.dtype))
    inputs = arch.sigma_w ** 2 * (x1 @ x2.transpose(-1, -2)) / arch.d + arch.sigma_b ** 2
    return a_term + (arch.scale * arch.sigma_b) ** 2 + g_term * inputs


def _grads(arch: TwoLayer, params: dict, x: torch.Tensor, g_out: torch.Tensor, h: torch.Tensor | None = None) -> dict:
    """Gradients of sum_p g_out[s, p] f_s(x_p) with respect to every parameter (g_out: (S, P))."""
    h = preactivations(arch, params, x) if h is None else h
    a = torch.relu(h)
    m = arch.readout
    dh = torch.ops.aten.threshold_backward(m * torch.bmm(g_out[:, :, None], params["v"][:, None, :]), h, 0.0)
    return {"W": arch.sigma_w / math.sqrt(arch.d) * torch.matmul(dh.transpose(1, 2), x),
            "b": arch.sigma_b * dh.sum(1),
            "v": m * torch.bmm(g_out[:, None, :], a)[:, 0],
            "c": arch.scale * arch.sigma_b * g_out.sum(1)}


def train(arch: TwoLayer, params: dict, x: torch.Tensor, y: torch.Tensor, lr, steps: int, alpha=None,
          x_eval: torch.Tensor | None = None, every: int = 1):
    """Full-batch gradient descent on the mean squared error of F (see the module docstring) for `steps` steps;
    the step is lr (alpha = None) or lr / alpha^2. `lr` and `alpha` are scalars or one value per network.

    Returns (params, record): the final parameters (new tensors) and a dict of trajectories recorded every
    `every` steps and at the end, "step" (T,), "train" (T, S, P) the outputs F on x, and "eval" (T, S, Q) on
    x_eval when given. y has shape (P,) or (S, P)."""
    s = params["v"].shape[0]
    like = params["c"]
    lr = torch.as_tensor(lr, dtype=like.dtype, device=like.device).expand(s)
    alpha_t = None if alpha is None else torch.as_tensor(alpha, dtype=like.dtype, device=like.device).expand(s)
    step = lr if alpha_t is None else lr / alpha_t ** 2
    f0 = outputs(arch, params, x)
    f0_eval = None if x_eval is None else outputs(arch, params, x_eval)

    def centred(f, f_init):
        return f if alpha_t is None else alpha_t[:, None] * (f - f_init)

    params = {k: v.clone() for k, v in params.items()}
    record = {"step": [], "train": [], "eval": []}
    P = x.shape[-2]
    for k in range(steps + 1):
        h = preactivations(arch, params, x)
        f = centred(outputs(arch, params, x, h), f0)
        if k % every == 0 or k == steps:
            record["step"].append(k)
            record["train"].append(f)
            if x_eval is not None:
                record["eval"].append(centred(outputs(arch, params, x_eval), f0_eval))
        if k == steps:
            break
        g_out = (f - y) / P if alpha_t is None else alpha_t[:, None] * (f - y) / P
        grads = _grads(arch, params, x, g_out, h)
        params = {name: p - step.reshape(-1, *([1] * (p.ndim - 1))) * grads[name] for name, p in params.items()}
    out = {"step": torch.tensor(record["step"]), "train": torch.stack(record["train"])}
    if x_eval is not None:
        out["eval"] = torch.stack(record["eval"])
    return params, out
