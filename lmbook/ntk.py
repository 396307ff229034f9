"""Empirical neural tangent kernels with torch.func, and the NTK-parameterised ReLU MLP of lmbook.kernels.

empirical_ntk(model, x1, x2)[i, j] = sum over every trainable parameter p of df(x1_i)/dp . df(x2_j)/dp, with no
1/width or other normalisation: in the NTK parameterisation this sum itself converges, as the width grows, to the
closed form lmbook.kernels.relu_nngp_ntk(x, L, sigma_w, sigma_b)[1] (deviations O(width^-1/2)).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap

__all__ = ["NTKMLP", "empirical_ntk", "mlp_ntk"]


class NTKMLP(nn.Module):
    """ReLU MLP in the NTK parameterisation: `hidden_layers` ReLU layers of `width` units, then a linear readout
    to one output. Every weight and bias is an N(0, 1) parameter; layer l computes
    sigma_w / sqrt(fan_in) * W_l h + sigma_b * b_l, so that f has exactly the NNGP/NTK of lmbook.kernels.
    forward maps x of shape (n, d) to f of shape (n,). hidden_layers = 0 is the linear readout alone."""

    def __init__(self, d, width, hidden_layers, sigma_w, sigma_b, *, generator=None, dtype=None, device=None):
        super().__init__()
        if d < 1 or width < 1 or hidden_layers < 0:
            raise ValueError(f"need d >= 1, width >= 1, hidden_layers >= 0; got {d}, {width}, {hidden_layers}")
        self.sigma_w, self.sigma_b = float(sigma_w), float(sigma_b)
        dims = [d] + [width] * hidden_layers + [1]
        kw = dict(generator=generator, dtype=dtype or torch.get_default_dtype(), device=device)
        self.weights = nn.ParameterList(nn.Parameter(torch.randn(o, i, **kw)) for i, o in zip(dims, dims[1:]))
        self.biases = nn.ParameterList(nn.Parameter(torch.randn(o, **kw)) for o in dims[1:])

    def forward(self, x):
        h = x
        for l, (W, b) in enumerate(zip(self.weights, self.biases)):
            if l > 0:
                h = torch.relu(h)
            h = self.sigma_w / math.sqrt(W.shape[1]) * h @ W.T + self.sigma_b * b
        return h.squeeze(-1)


def empirical_ntk(model, x1, x2=None):
    """Gram matrix J(x1) J(x2)^T of the parameter Jacobians, summed over all parameters that require grad.

    The model is applied to one example at a time (x[i:i+1], via torch.func.functional_call, jacrev and vmap), so
    it must treat examples independently (no train-mode BatchNorm). Each example's output is flattened to k
    numbers; the result has shape (n1 k, n2 k), rows example-major, i.e. (n1, n2) for a scalar output.
    x2 = None means x2 = x1. Memory: the Jacobians, (n1 + n2) k P numbers for P parameters."""
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def f(p, x):
        return functional_call(model, (p, buffers), (x.unsqueeze(0),)).reshape(-1)

    jac = vmap(jacrev(f), in_dims=(None, 0))
    j1 = jac(params, x1)
    j2 = j1 if x2 is None else jac(params, x2)
    return sum(a.reshape(a.shape[0] * a.shape[1], -1) @ b.reshape(b.shape[0] * b.shape[1], -1).T
               for a, b in zip(j1.values(), j2.values()))


def mlp_ntk(model: NTKMLP, x1, x2=None):
    """The same Gram matrix as empirical_ntk for an NTKMLP, from the layerwise identity
    Theta = sum_l (G_l G_l'^T) * (sigma_w^2 A_{l-1} A_{l-1}'^T / fan_in + sigma_b^2) (elementwise product),
    with A_{l-1} the inputs of linear layer l and G_l = df/dh_l its backpropagated output gradients
    (relu'(0) = 0, as autograd). Costs one forward and backward pass; memory O((n1 + n2) width)."""
    def acts_and_grads(x):
        acts, pre = [x], []
        for l, (W, b) in enumerate(zip(model.weights, model.biases)):
            a = torch.relu(pre[-1]) if l > 0 else x
            if l > 0:
                acts.append(a)
            pre.append(model.sigma_w / math.sqrt(W.shape[1]) * a @ W.T + model.sigma_b * b)
        grads = [torch.ones_like(pre[-1])]
        for l in range(len(pre) - 1, 0, -1):
            W = model.weights[l]
            grads.insert(0, (model.sigma_w / math.sqrt(W.shape[1]) * grads[0] @ W) * (pre[l - 1] > 0))
        return acts, grads

    with torch.no_grad():
        a1, g1 = acts_and_grads(x1)
        a2, g2 = (a1, g1) if x2 is None else acts_and_grads(x2)
        return sum((ga @ gb.T) * (model.sigma_w ** 2 * (aa @ ab.T) / aa.shape[1] + model.sigma_b ** 2)
                   for aa, ab, ga, gb in zip(a1, a2, g1, g2))
