"""One MLP family for the book: stacked ensembles as pure functions, the parameterisation as data.

Conventions
- A network is described by a frozen `Net` (widths, activation, parameterisation, sigmas, bias). Its
  parameters are a dict {"W0", "b0", "W1", "b1", ..., "WL", "bL"} of tensors with a leading
  ensemble axis of length S: W_l has shape (S, n_{l+1}, n_l) (nn.Linear's (out, in) layout), b_l
  (S, n_{l+1}). Layer L (the last) is the readout; widths = (d, n_1, ..., n_L, k) with k outputs.
  `bias=False` means no b_l at all.
- Inputs x are shared, shape (P, d), or one set per network, (S, P, d). Outputs are (S, P, k).
- Forward (layer l = 0..L, a_0 = x, a_{l+1} = phi(z_l) for l < L, f = z_L):
      z_l = m_W(l) a_l W_l^T + m_b(l) b_l,        stored W_l ~ N(0, s_W(l)^2), b_l ~ N(0, s_b(l)^2)
  with the init standard deviations s and the forward multipliers m fixed by `param` (below), and a
  per-tensor learning-rate scale r: gradient descent updates p <- p - lr * r(p) * dL/dp.
- Parameterisations (n_in the layer's fan-in, N = n_L the readout's fan-in, "the width";
  sigma_o = the readout's sigma_w, default sigma_w):
      "ntk"        s_W = 1, m_W = sigma_w / sqrt(n_in); s_b = 1, m_b = sigma_b; r = 1.
                   Jacot et al. 2018; the kernels of lmbook.kernels.relu_nngp_ntk for ReLU.
      "sp"         s_W = sigma_w / sqrt(n_in), m_W = 1; s_b = sigma_b, m_b = 1; r = 1 (the standard
                   parameterisation: same function at init as "ntk", different dynamics).
      "mean-field" "ntk" with the readout scaled down by sqrt(N) (m_W(L) = sigma_o / N,
                   m_b(L) = sigma_b / sqrt(N)) and r = N for every tensor: the NTK is N times
                   smaller, the step N times larger, so the initial kernel dynamics equal "ntk"'s
                   while every hidden unit moves at order one (Mei et al. 2018; Chizat & Bach 2018).
                   In Yang & Hu's abc form: a = (0, 1/2, ..., 1/2, 1), b = 0, c = -1.
      "mup"        "mean-field" with every multiplier folded into the init (m = 1, s = s_mf m_mf,
                   r = r_mf m_mf^2): input weights r = N sigma_w^2 / d, hidden
                   r = sigma_w^2 N / n_in, readout r = sigma_o^2 / N and s = sigma_o / N, hidden
                   biases r = N sigma_b^2, readout bias r = sigma_b^2 and s = sigma_b / sqrt(N).
                   The width exponents are those of Yang et al. 2021 (Tensor Programs V, table 3,
                   SGD); the constants make "mup" and "mean-field" follow exactly the same
                   trajectory from the same draw.
- Loss: L = (1/2P) sum_p ||F(x_p) - y_p||^2 per network (squared error summed over the k outputs,
  averaged over the P inputs), with F = f, or F = alpha (f - f_0) (Chizat, Oyallon & Bach 2019),
  trained with step lr / alpha^2, whose linearisation is the same for every alpha (lazy as alpha
  grows). Under the linearisation F_{t+1} = F_t - (lr/P) Theta (F_t - y), Theta the NTK of F.
- NTK: Theta(x, x') = sum over parameters p (of one network) of df(x)/dp . df(x')/dp, no 1/width:
  by the layerwise Gram identity, sum_l (G_l(x) . G_l(x')) (m_W(l)^2 a_l(x) . a_l(x') + m_b(l)^2),
  G_l = df/dz_l. Traced over the k outputs unless full=True (neural-tangents' trace_axes).
  relu'(0) = 0, as autograd.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["Net", "apply", "from_modules", "grads", "init", "loss", "modules", "names", "ntk",
           "preactivations", "train"]

PARAMS = ("ntk", "sp", "mean-field", "mup")
ACTIVATIONS = {
    "relu": (torch.relu, lambda z: (z > 0).to(z.dtype)),
    "tanh": (torch.tanh, lambda z: 1 - torch.tanh(z) ** 2),
    "erf": (torch.erf, lambda z: 2 / math.sqrt(math.pi) * torch.exp(-z * z)),
    "linear": (lambda z: z, torch.ones_like),
}


@dataclass(frozen=True)
class Net:
    """The description of a network (module docstring): widths (d, n_1, ..., n_L, k), the activation
    ("relu", "tanh", "erf", "linear"), the parameterisation ("ntk", "sp", "mean-field", "mup"),
    sigma_w, sigma_b, bias (whether the b_l exist) and sigma_out (the readout's sigma_w)."""

    widths: tuple
    activation: str = "relu"
    param: str = "ntk"
    sigma_w: float = math.sqrt(2.0)
    sigma_b: float = 0.0
    bias: bool = True
    sigma_out: float | None = None

    def __post_init__(self):
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if len(self.widths) < 2 or min(self.widths) < 1:
            raise ValueError(f"widths must be (d, ..., k), all >= 1; got {self.widths}")
        if self.param not in PARAMS:
            raise ValueError(f"unknown param {self.param!r}; choose one of {', '.join(PARAMS)}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {self.activation!r}; choose one of {', '.join(ACTIVATIONS)}"
            )

    @property
    def depth(self) -> int:
        """The number of linear layers, L + 1."""
        return len(self.widths) - 1

    def scales(self) -> dict:
        """{name: (init std s, forward multiplier m, learning-rate scale r)} for every tensor."""
        L, N = self.depth - 1, self.widths[-2]
        so = self.sigma_w if self.sigma_out is None else self.sigma_out
        out = {}
        for i in range(L + 1):
            n_in, sw = self.widths[i], (so if i == L else self.sigma_w)
            if self.param == "sp":
                out[f"W{i}"], out[f"b{i}"] = (
                    (sw / math.sqrt(n_in), 1.0, 1.0),
                    (self.sigma_b, 1.0, 1.0),
                )
                continue
            mw, mb, r = sw / math.sqrt(n_in), self.sigma_b, 1.0
            if self.param in ("mean-field", "mup"):
                r = float(N)
                if i == L:
                    mw, mb = mw / math.sqrt(N), mb / math.sqrt(N)
            out[f"W{i}"], out[f"b{i}"] = (1.0, mw, r), (1.0, mb, r)
            if self.param == "mup":
                out[f"W{i}"], out[f"b{i}"] = (mw, 1.0, r * mw * mw), (mb, 1.0, r * mb * mb)
        return out if self.bias else {k: v for k, v in out.items() if k[0] == "W"}

    def lr_scales(self) -> dict:
        """{name: r}: the per-tensor learning-rate scales of the parameterisation."""
        return {k: v[2] for k, v in self.scales().items()}


def names(net: Net) -> list:
    """The parameter names in order: W0, b0, W1, b1, ... (no b without bias)."""
    return list(net.scales())


def init(net: Net, networks: int, generator=None, dtype=torch.float64, device=None) -> dict:
    """`networks` independent draws (stored tensors N(0, s^2), drawn in the order of `names`)."""
    kw = dict(generator=generator, dtype=dtype, device=device)
    out = {}
    for name, (s, _, _) in net.scales().items():
        i = int(name[1:])
        shape = (
            (networks, net.widths[i + 1], net.widths[i])
            if name[0] == "W"
            else (networks, net.widths[i + 1])
        )
        out[name] = s * torch.randn(shape, **kw)
    return out


def forward(net: Net, params: dict, x: torch.Tensor):
    """(acts, pres): a_0 = x, ..., a_L and z_0, ..., z_L (z_L = f, shape (S, P, k)); the cache
    that `grads` accepts."""
    phi = ACTIVATIONS[net.activation][0]
    sc = net.scales()
    acts, pres = [x], []
    for i in range(net.depth):
        W = params[f"W{i}"]
        z = sc[f"W{i}"][1] * torch.matmul(acts[-1], W.transpose(1, 2))
        if net.bias:
            z = z + sc[f"b{i}"][1] * params[f"b{i}"][:, None, :]
        pres.append(z)
        if i < net.depth - 1:
            acts.append(phi(z))
    return acts, pres


def apply(net: Net, params: dict, x: torch.Tensor) -> torch.Tensor:
    """f(x) of every network, shape (S, P, k); x is (P, d) shared or (S, P, d) per network."""
    return forward(net, params, x)[1][-1]


def preactivations(net: Net, params: dict, x: torch.Tensor) -> list:
    """The hidden pre-activations [z_0, ..., z_{L-1}], each (S, P, n_{i+1})."""
    return forward(net, params, x)[1][:-1]


def loss(net: Net, params: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """L per network, (S,): (1/2P) sum_p ||f(x_p) - y_p||^2; y is (P, k) or (S, P, k)."""
    return 0.5 * (apply(net, params, x) - y).square().sum(-1).mean(-1)


def grads(net: Net, params: dict, x: torch.Tensor, g_out: torch.Tensor, cache=None) -> dict:
    """Closed-form backpropagation: the gradients of sum_{s,p,k} g_out[s,p,k] f_s(x_p)_k with
    respect to every tensor (g_out (S, P, k)); `cache` = forward(net, params, x) when already
    computed."""
    dphi = ACTIVATIONS[net.activation][1]
    acts, pres = forward(net, params, x) if cache is None else cache
    sc = net.scales()
    out, g = {}, g_out
    for i in range(net.depth - 1, -1, -1):
        W = params[f"W{i}"]
        out[f"W{i}"] = sc[f"W{i}"][1] * torch.matmul(g.transpose(1, 2), acts[i])
        if net.bias:
            out[f"b{i}"] = sc[f"b{i}"][1] * g.sum(1)
        if i > 0:
            g = sc[f"W{i}"][1] * torch.matmul(g, W) * dphi(pres[i - 1])
    return {k: out[k] for k in params}


def _jacobians(net: Net, params: dict, x: torch.Tensor):
    """(acts, [G_0, ..., G_L]) with G_l = df/dz_l, shape (S, P, k, n_{i+1})."""
    dphi = ACTIVATIONS[net.activation][1]
    acts, pres = forward(net, params, x)
    S, P, k = pres[-1].shape
    G = [torch.eye(k, dtype=pres[-1].dtype, device=pres[-1].device).expand(S, P, k, k)]
    for i in range(net.depth - 1, 0, -1):
        m = net.scales()[f"W{i}"][1]
        G.insert(
            0, m * torch.matmul(G[0], params[f"W{i}"][:, None]) * dphi(pres[i - 1])[:, :, None, :]
        )
    return acts, G


def ntk(
    net: Net, params: dict, x1: torch.Tensor, x2: torch.Tensor | None = None, full: bool = False
) -> torch.Tensor:
    """Empirical NTK of f from the layerwise Gram identity (module docstring): (S, P1, P2), traced
    over the k outputs, or (S, P1, P2, k, k) with full=True. One forward and one backward per input
    set; memory O(S P k width)."""
    sc = net.scales()
    a1, g1 = _jacobians(net, params, x1)
    a2, g2 = (a1, g1) if x2 is None else _jacobians(net, params, x2)
    total = 0
    for i in range(net.depth):
        inputs = sc[f"W{i}"][1] ** 2 * torch.matmul(a1[i], a2[i].transpose(-1, -2))
        if net.bias:
            inputs = inputs + sc[f"b{i}"][1] ** 2
        if inputs.ndim == 2:
            inputs = inputs.expand(g1[i].shape[0], -1, -1)
        if full:
            total = total + torch.einsum("spki,sqji->spqkj", g1[i], g2[i]) * inputs[..., None, None]
        else:
            total = total + torch.einsum("spki,sqki->spq", g1[i], g2[i]) * inputs
    return total


def _per_network(value, like: torch.Tensor, S: int) -> torch.Tensor:
    return torch.as_tensor(value, dtype=like.dtype, device=like.device).expand(S).clone()


def train(
    net: Net,
    params: dict,
    x: torch.Tensor,
    y: torch.Tensor,
    lr,
    steps: int,
    *,
    alpha=None,
    momentum=0.0,
    x_eval: torch.Tensor | None = None,
    every: int = 1,
):
    """Full-batch gradient descent (heavy ball if momentum != 0, torch.optim.SGD's convention
    buf <- beta buf + g, p <- p - step buf) on the loss of the module docstring, `steps` steps.
    The step of tensor p of network s is lr[s] * r(p) (/ alpha[s]^2 with alpha). lr, alpha and
    momentum are scalars or one value per network.

    Returns (params, record): the final parameters (new tensors) and the trajectory recorded every
    `every` steps and at the end: "step" (T,), "train" (T, S, P, k) the outputs F on x, "loss"
    (T, S), and "eval" (T, S, Q, k) on x_eval when given."""
    like = next(iter(params.values()))
    S = like.shape[0]
    lr = _per_network(lr, like, S)
    beta = _per_network(momentum, like, S)
    a = None if alpha is None else _per_network(alpha, like, S)
    step = lr if a is None else lr / a**2
    f0 = apply(net, params, x)
    e0 = None if x_eval is None else apply(net, params, x_eval)
    scale = net.lr_scales()
    params = {k: v.detach().clone() for k, v in params.items()}
    bufs = {k: torch.zeros_like(v) for k, v in params.items()}
    heavy = bool((beta != 0).any())
    rec = {"step": [], "train": [], "loss": [], "eval": []}
    P = x.shape[-2]
    for t in range(steps + 1):
        cache = forward(net, params, x)
        F = cache[1][-1] if a is None else a[:, None, None] * (cache[1][-1] - f0)
        if t % every == 0 or t == steps:
            rec["step"].append(t)
            rec["train"].append(F)
            rec["loss"].append(0.5 * (F - y).square().sum(-1).mean(-1))
            if x_eval is not None:
                fe = apply(net, params, x_eval)
                rec["eval"].append(fe if a is None else a[:, None, None] * (fe - e0))
        if t == steps:
            break
        g_out = (F - y) / P if a is None else a[:, None, None] * (F - y) / P
        g = grads(net, params, x, g_out, cache)
        for k, p in params.items():
            shape = (-1,) + (1,) * (p.ndim - 1)
            if heavy:
                bufs[k] = beta.view(shape) * bufs[k] + g[k]
                g[k] = bufs[k]
            params[k] = p - (step * scale[k]).view(shape) * g[k]
    out = {
        "step": torch.tensor(rec["step"]),
        "train": torch.stack(rec["train"]),
        "loss": torch.stack(rec["loss"]),
    }
    if x_eval is not None:
        out["eval"] = torch.stack(rec["eval"])
    return params, out


_MODULES = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "linear": torch.nn.Identity}


def modules(net: Net, params: dict) -> list:
    """One nn.Sequential(Linear, act, ..., Linear) per network, holding the effective weights m W
    and m b (copies): the same function. Trained with torch.optim it follows `train` only where
    every multiplier and learning-rate scale is 1 ("sp")."""
    if net.activation not in _MODULES:
        raise ValueError(f"no nn.Module for activation {net.activation!r}")
    sc, like = net.scales(), next(iter(params.values()))
    out = []
    for s in range(like.shape[0]):
        layers = []
        for i in range(net.depth):
            lin = torch.nn.Linear(
                net.widths[i],
                net.widths[i + 1],
                bias=net.bias,
                dtype=like.dtype,
                device=like.device,
            )
            with torch.no_grad():
                lin.weight.copy_(sc[f"W{i}"][1] * params[f"W{i}"][s])
                if net.bias:
                    lin.bias.copy_(sc[f"b{i}"][1] * params[f"b{i}"][s])
            layers += [lin] + ([_MODULES[net.activation]()] if i < net.depth - 1 else [])
        out.append(torch.nn.Sequential(*layers))
    return out


def from_modules(net: Net, mods) -> dict:
    """The inverse of `modules`: stacked parameters from nn.Sequential(Linear, act, ...) networks
    (e.g. PyTorch's default initialisation), the effective weights divided by the multipliers."""
    sc = net.scales()
    linears = [[m for m in seq if isinstance(m, torch.nn.Linear)] for seq in mods]
    out = {}
    with torch.no_grad():
        for i in range(net.depth):
            out[f"W{i}"] = torch.stack([ls[i].weight for ls in linears]) / sc[f"W{i}"][1]
            if net.bias:
                out[f"b{i}"] = torch.stack([ls[i].bias for ls in linears]) / sc[f"b{i}"][1]
    return {k: v.detach().clone() for k, v in out.items()}
