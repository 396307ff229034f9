"""Coordinate checks: how far a few optimiser steps move each layer's pre-activations and the
outputs, as a function of width (Yang et al. 2022, Tensor Programs V, coordinate checking).

Conventions
- Networks are `lmbook.mlp` networks without biases (`Net(..., bias=False)`): the parameterisation's
  init standard deviations s and forward multipliers m are `Net.scales()`. Width n = every hidden
  width. For each network the stored weights at every width are the leading block of one standard
  normal draw at the largest width, times s (nested networks, common random numbers: a network's
  slope across widths is less noisy and not biased).
- Loss: mlp's (1/2P) sum_p ||F(x_p) - y_p||^2 on one fixed batch (full batch), gradients by
  `mlp.grads`, with F = f - f_0 (centred, the default) or F = f.
- Optimisers act on the stored tensors p with a per-tensor learning-rate scale r(p):
    "sgd":  p <- p - lr r(p) g;
    "adam": torch.optim.Adam's rule with bias correction, m <- b1 m + (1 - b1) g,
            v <- b2 v + (1 - b2) g^2, p <- p - lr r(p) mhat / (sqrt(vhat) + eps); at the first step
            and eps = 0 this is lr r(p) sign(g).
  `sgd_scales(net)` is `Net.lr_scales()`; `adam_scales(net)` are Tensor Programs V's Adam rules for
  "mup" (input 1/d, hidden 1/fan_in, readout 1/fan_in: the width exponents of its table 3, the input
  layer's constant 1/d only to put every layer at the same order) and 1 otherwise.
- Measured: RMS over the batch and the coordinates, per network, of h^l_t - h^l_0 for the hidden
  pre-activations l = 1..L and of f_t - f_0, at every step t = 1..steps, on the training batch.
"""

from __future__ import annotations

import torch

from . import mlp

__all__ = ["adam_scales", "coord_check", "draw", "nested", "sgd_scales"]


def sgd_scales(net: mlp.Net) -> dict:
    """Per-tensor SGD learning-rate scales: mlp's (Net.lr_scales)."""
    return net.lr_scales()


def adam_scales(net: mlp.Net) -> dict:
    """Per-tensor Adam learning-rate scales (module docstring): for "mup" 1/d for the input weights,
    1/fan_in for hidden and readout weights (Tensor Programs V, table 3); 1 for other
    parameterisations (a width-independent Adam step)."""
    out = {}
    for name in net.lr_scales():
        i = int(name[1:])
        out[name] = 1.0 / net.widths[i] if net.param == "mup" else 1.0
    return out


def draw(widths: tuple, networks: int, generator=None, dtype=torch.float64, device=None) -> dict:
    """Standard normal stored weights at the largest widths (d, N, ..., N, k): {"W0", ..., "WL"}."""
    kw = dict(generator=generator, dtype=dtype, device=device)
    return {
        f"W{i}": torch.randn(networks, widths[i + 1], widths[i], **kw)
        for i in range(len(widths) - 1)
    }


def nested(net: mlp.Net, z: dict) -> dict:
    """The leading block of the standard normal draw z at net's widths, times the init std s."""
    sc = net.scales()
    out = {}
    for i in range(net.depth):
        rows, cols = net.widths[i + 1], net.widths[i]
        out[f"W{i}"] = sc[f"W{i}"][0] * z[f"W{i}"][:, :rows, :cols]
    return out


def coord_check(
    net: mlp.Net,
    z: dict,
    x: torch.Tensor,
    y: torch.Tensor,
    lr: float,
    steps: int,
    optimiser: str = "sgd",
    scales: dict | None = None,
    eps: float = 0.0,
    betas: tuple = (0.9, 0.999),
    centred: bool = True,
) -> dict:
    """Train the nested networks of `net` (module docstring) for `steps` steps.

    z: standard normal draws of shape at least net's (from `draw`); x (P, d), y (P, k).
    scales: per-tensor learning-rate scales (default: sgd_scales or adam_scales).
    centred: train the centred outputs f - f_0 (the loss's residual is f_t - f_0 - y), so that the
    residual at the first step is -y at every width and for every draw.
    Returns {"h": (steps, L, S) RMS of h^l_t - h^l_0, "f": (steps, S) RMS of f_t - f_0,
    "h0": (L, S) RMS of h^l_0, "f0": (S,) RMS of f_0, "grad": {name: (S,) RMS of the first
    gradient}}."""
    if net.bias:
        raise ValueError("coord_check uses networks without biases (Net(..., bias=False))")
    if optimiser not in ("sgd", "adam"):
        raise ValueError(f"optimiser must be 'sgd' or 'adam', got {optimiser!r}")
    if scales is None:
        scales = sgd_scales(net) if optimiser == "sgd" else adam_scales(net)
    params = nested(net, z)
    P = x.shape[-2]
    b1, b2 = betas
    m = {k: torch.zeros_like(v) for k, v in params.items()}
    v = {k: torch.zeros_like(p) for k, p in params.items()}

    def rms(t):
        return t.square().flatten(1).mean(1).sqrt()

    acts, pres = mlp.forward(net, params, x)
    h0, f0 = pres[:-1], pres[-1]
    out_h, out_f, grad0 = [], [], None
    cache = (acts, pres)
    for t in range(1, steps + 1):
        residual = cache[1][-1] - (f0 + y if centred else y)
        g = mlp.grads(net, params, x, residual / P, cache)
        if grad0 is None:
            grad0 = {k: rms(gk) for k, gk in g.items()}
        for k, p in params.items():
            if optimiser == "sgd":
                params[k] = p - lr * scales[k] * g[k]
                continue
            m[k].mul_(b1).add_(g[k], alpha=1 - b1)
            v[k].mul_(b2).addcmul_(g[k], g[k], value=1 - b2)
            denom = (v[k] / (1 - b2**t)).sqrt_().add_(eps)
            params[k] = p.addcdiv(m[k], denom, value=-lr * scales[k] / (1 - b1**t))
        cache = mlp.forward(net, params, x)
        out_h.append(torch.stack([rms(h - h_0) for h, h_0 in zip(cache[1][:-1], h0)]))
        out_f.append(rms(cache[1][-1] - f0))
    return {
        "h": torch.stack(out_h),
        "f": torch.stack(out_f),
        "h0": torch.stack([rms(h) for h in h0]),
        "f0": rms(f0),
        "grad": grad0,
    }
