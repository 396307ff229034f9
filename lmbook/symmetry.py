"""Rescaling and scale symmetries of the loss, and the norm dynamics they imply.

Two chapters use this module: conservation laws (a two-layer ReLU network, whose loss is invariant
under w_in,j -> c w_in,j, w_out,j -> w_out,j / c for every hidden unit j and c > 0) and the
weight-decay equilibrium (a network whose hidden weights feed a parameter-free normalisation, so
that each row of a hidden weight matrix is scale-invariant).

Conventions
- Ensembles carry a leading axis of length S, as in `lmbook.mlp` (W has shape (S, out, in)).
- Two-layer net (`lmbook.mlp.Net((d, n, k), "relu", "sp", bias=False)`): f = relu(x W0^T) W1^T,
  loss (1/2P) sum_p ||f(x_p) - y_p||^2. The balance of unit j is
  q_j = ||W0[j, :]||^2 - ||W1[:, j]||^2 (row j in, column j out).
- Gradient descent with coupled L2 weight decay lam: w <- (1 - lr lam) w - lr g. Adam is
  Kingma & Ba's, with bias correction, epsilon added to sqrt(v_hat).
- Rounding budgets use the unit roundoff u = 2^-53 of float64 and Higham's
  gamma_n = n u / (1 - n u) for a length-n sum (Higham 2002, section 3.1).
- Normalised MLP (`norm_*`): h_0 = x; z_l = h_l W_l^T, h_{l+1} = relu(N(z_l)) for the hidden
  layers, f = h_L W_L^T + b for the readout; N normalises each unit over the batch to zero mean and
  unit variance (BatchNorm in training mode without gain, bias or epsilon), so the loss does not
  change when a row of a hidden W_l is scaled: every hidden row is scale-invariant.
"""

from __future__ import annotations

import math

import torch
from torch.func import grad, vmap

U = 2.0**-53

__all__ = ["U", "gamma", "balance", "rescale", "two_layer_grads", "gd_balance", "flow_balance",
           "adam_balance",
           "norm_init", "norm_apply", "norm_loss", "norm_train", "rotation"]


def gamma(n) -> float:
    """Higham's gamma_n = n u / (1 - n u): the relative rounding bound of a length-n float64 sum."""
    return n * U / (1 - n * U)


def balance(params: dict) -> torch.Tensor:
    """q_j = ||W0[j,:]||^2 - ||W1[:,j]||^2 of every hidden unit, shape (S, n)."""
    return params["W0"].square().sum(-1) - params["W1"].square().sum(-2)


def rescale(params: dict, c) -> dict:
    """The rescaling symmetry: W0[j,:] * c_j and W1[:,j] / c_j (c of shape (n,) or (S, n), > 0).
    The function of a ReLU network does not change."""
    c = torch.as_tensor(c, dtype=params["W0"].dtype, device=params["W0"].device)
    out = dict(params)
    out["W0"] = params["W0"] * c[..., :, None]
    out["W1"] = params["W1"] / c[..., None, :]
    return out


def two_layer_grads(params: dict, x: torch.Tensor, y: torch.Tensor):
    """Gradients of the two-layer loss (module docstring) and the absolute-value sums that bound
    their rounding: returns (g, absg, loss) with g = {"W0", "W1"}, absg = {"W0": |delta|^T |x|,
    "W1": |e|^T a} (the same shapes) and loss (S,)."""
    W0, W1 = params["W0"], params["W1"]
    P = x.shape[-2]
    z = torch.matmul(x, W0.transpose(1, 2))
    a = torch.relu(z)
    f = torch.matmul(a, W1.transpose(1, 2))
    r = f - y
    e = r / P
    delta = torch.matmul(e, W1) * (z > 0).to(z.dtype)
    g = {"W0": torch.matmul(delta.transpose(1, 2), x), "W1": torch.matmul(e.transpose(1, 2), a)}
    absg = {"W0": torch.matmul(delta.abs().transpose(1, 2), x.abs()),
            "W1": torch.matmul(e.abs().transpose(1, 2), a)}
    return g, absg, 0.5 * r.square().sum(-1).mean(-1)


def _sq_in(g):
    return g["W0"].square().sum(-1)


def _sq_out(g):
    return g["W1"].square().sum(-2)


def gd_balance(params: dict, x: torch.Tensor, y: torch.Tensor, lr: float, steps: int,
               weight_decay: float = 0.0, every: int = 1) -> dict:
    """Full-batch GD with coupled L2 weight decay on the two-layer net, tracking the balances.

    Returns a dict with
    - "q" (T, S, n): the measured q_j every `every` steps and at the end; "step" (T,);
    - "q_pred" (S, n): q_0 propagated by the exact recursion
      q_{t+1} = c^2 q_t + lr^2 (||g_in,t||^2 - ||g_out,t||^2), c = fl(1 - lr lam), with the
      gradients of the run;
    - "forcing" (T, S, n): F_t = sum_{s<t} c^{-2(s+1)} lr^2 (||g_in,s||^2 - ||g_out,s||^2), the
      gradient part of q_t / c^{2t} - q_0;
    - "bound" (S, n): a worst-case float64 bound on |q_T - q_pred| (per step: the update's
      rounding 2 gamma_3 sum |w'|(|c w| + lr |g|); the first-order mismatch of the computed
      gradients 2 lr c gamma_K (|w_in|.|delta|^T|x| + 2 |w_out|.|e|^T a), K = P + d + k + 2; the
      rounding of the predicted increment; propagated by c^2; plus the evaluation of q at both
      ends, gamma_{d+k+1} (||w_in||^2 + ||w_out||^2));
    - "loss" (T, S), "params" (the final parameters)."""
    p = {k: v.detach().clone() for k, v in params.items()}
    S, n, d = p["W0"].shape
    k = p["W1"].shape[1]
    P = x.shape[-2]
    c = 1.0 - lr * weight_decay
    gK = gamma(P + d + k + 2)
    q0 = balance(p)
    q_pred, bound = q0.clone(), gamma(d + k + 1) * (_sq_in(p) + _sq_out(p))
    forcing = torch.zeros_like(q0)
    rec = {"step": [], "q": [], "forcing": [], "loss": []}
    for t in range(steps + 1):
        g, absg, loss = two_layer_grads(p, x, y)
        if t % every == 0 or t == steps:
            rec["step"].append(t)
            rec["q"].append(balance(p))
            rec["forcing"].append(forcing.clone())
            rec["loss"].append(loss)
        if t == steps:
            break
        inc = lr**2 * (_sq_in(g) - _sq_out(g))
        first = 2 * lr * abs(c) * gK * ((p["W0"].abs() * absg["W0"]).sum(-1)
                                        + 2 * (p["W1"].abs() * absg["W1"]).sum(-2))
        new = {key: c * p[key] - lr * g[key] for key in p}
        upd = {key: (new[key].abs() * (abs(c) * p[key].abs() + lr * g[key].abs()))
               for key in p}
        rnd = 2 * gamma(3) * (upd["W0"].sum(-1) + upd["W1"].sum(-2))
        bound = c * c * bound + first + rnd + gamma(4) * lr**2 * (_sq_in(g) + _sq_out(g))
        q_pred = c * c * q_pred + inc
        forcing = forcing + inc / c ** (2 * (t + 1))
        p = new
    bound = bound + gamma(d + k + 1) * (_sq_in(p) + _sq_out(p)) + gamma(steps + 1) * q_pred.abs()
    out = {key: torch.stack(v) for key, v in rec.items() if key != "step"}
    out.update(step=torch.tensor(rec["step"]), q_pred=q_pred, bound=bound, params=p)
    return out


def flow_balance(params: dict, x: torch.Tensor, y: torch.Tensor, time: float, h: float,
                 weight_decay: float = 0.0) -> dict:
    """Reference gradient flow of the two-layer net with L2 decay, d theta/dT = -g - lam theta,
    integrated by classical RK4 with step h up to physical time `time`, together with the forcing
    F_j(T) = int_0^T exp(-2 lam (T - tau)) (||g_in,j||^2 - ||g_out,j||^2)(theta(tau)) dtau as an
    extra state (dF/dT = -2 lam F + Delta_g). At lam = 0, F is the plain integral of Delta_g.
    Delta_g jumps where a unit's ReLU pattern switches, so the quadrature of F is only first
    order in h across those switches: estimate its error by repeating at 2h.
    Returns "forcing" (S, n), "q" (S, n) the final balances, "params" (final)."""
    p = {k: v.detach().clone() for k, v in params.items()}
    F = torch.zeros_like(balance(p))

    def rhs(p, F):
        g, _, _ = two_layer_grads(p, x, y)
        return ({k: -g[k] - weight_decay * p[k] for k in p},
                -2 * weight_decay * F + _sq_in(g) - _sq_out(g))

    for _ in range(round(time / h)):
        k1, f1 = rhs(p, F)
        k2, f2 = rhs({k: p[k] + h / 2 * k1[k] for k in p}, F + h / 2 * f1)
        k3, f3 = rhs({k: p[k] + h / 2 * k2[k] for k in p}, F + h / 2 * f2)
        k4, f4 = rhs({k: p[k] + h * k3[k] for k in p}, F + h * f3)
        p = {k: p[k] + h / 6 * (k1[k] + 2 * k2[k] + 2 * k3[k] + k4[k]) for k in p}
        F = F + h / 6 * (f1 + 2 * f2 + 2 * f3 + f4)
    return dict(forcing=F, q=balance(p), params=p)


def adam_balance(params: dict, x: torch.Tensor, y: torch.Tensor, lr: float, steps: int,
                 betas=(0.9, 0.999), eps: float = 1e-8) -> dict:
    """Full-batch Adam on the two-layer net. Returns "q" (2, S, n) at the start and the end,
    "first" (S, n) = sum_t -2 lr (<w_in,u_in> - <w_out,u_out>) (the first-order change, which
    vanishes for GD but not for Adam's update u = m_hat / (sqrt(v_hat) + eps)), "second" (S, n)
    = sum_t lr^2 (||u_in||^2 - ||u_out||^2), and "bound" (S, n) = sum_t 2 lr (||w_in|| ||u_in||
    + ||w_out|| ||u_out||), a bound on |first|."""
    p = {k: v.detach().clone() for k, v in params.items()}
    b1, b2 = betas
    m = {k: torch.zeros_like(v) for k, v in p.items()}
    v2 = {k: torch.zeros_like(v) for k, v in p.items()}
    q0 = balance(p)
    first, second, bnd = (torch.zeros_like(q0) for _ in range(3))
    for t in range(1, steps + 1):
        g, _, _ = two_layer_grads(p, x, y)
        u = {}
        for key in p:
            m[key] = b1 * m[key] + (1 - b1) * g[key]
            v2[key] = b2 * v2[key] + (1 - b2) * g[key].square()
            u[key] = (m[key] / (1 - b1**t)) / ((v2[key] / (1 - b2**t)).sqrt() + eps)
        dot_in = (p["W0"] * u["W0"]).sum(-1)
        dot_out = (p["W1"] * u["W1"]).sum(-2)
        first = first - 2 * lr * (dot_in - dot_out)
        second = second + lr**2 * (_sq_in(u) - _sq_out(u))
        bnd = bnd + 2 * lr * (_sq_in(p).sqrt() * _sq_in(u).sqrt()
                              + _sq_out(p).sqrt() * _sq_out(u).sqrt())
        p = {key: p[key] - lr * u[key] for key in p}
    return dict(q=torch.stack([q0, balance(p)]), first=first, second=second, bound=bnd, params=p)


# --- the normalised MLP (scale-invariant hidden rows) ---------------------------------------------

def norm_init(widths, networks: int, generator=None, dtype=torch.float64, device=None) -> dict:
    """Parameters of the normalised MLP with widths (d, n_1, ..., n_L, k): hidden W_l of shape
    (S, n_{l+1}, n_l) with N(0, 1/n_l) entries (any scale: the rows are scale-invariant), readout
    W_L (S, k, n_L) with N(0, 1/n_L) entries and a readout bias b (S, k) = 0."""
    kw = dict(generator=generator, dtype=dtype, device=device)
    out = {}
    for i in range(len(widths) - 1):
        shape = (networks, widths[i + 1], widths[i])
        out[f"W{i}"] = torch.randn(shape, **kw) / math.sqrt(widths[i])
    out["b"] = torch.zeros((networks, widths[-1]), dtype=dtype, device=device)
    return out


def _normalise(z):
    """Zero mean, unit variance over the batch axis (-2), without epsilon (so the hidden rows are
    exactly scale-invariant). A unit that is constant over the batch has variance 0: its output is
    then 0 rather than NaN (the variance is clamped at the smallest normal number)."""
    zc = z - z.mean(-2, keepdim=True)
    var = zc.square().mean(-2, keepdim=True)
    return zc / var.clamp_min(torch.finfo(z.dtype).tiny).sqrt()


def norm_apply(params: dict, x: torch.Tensor) -> torch.Tensor:
    """Outputs (S, P, k) of the normalised MLP (module docstring) on a batch x (P, d) or
    (S, P, d); the normalisation is over the batch axis."""
    L = sum(1 for key in params if key[0] == "W") - 1
    h = x
    for i in range(L):
        h = torch.relu(_normalise(torch.matmul(h, params[f"W{i}"].transpose(-1, -2))))
    return torch.matmul(h, params[f"W{L}"].transpose(-1, -2)) + params["b"][..., None, :]


def norm_loss(params: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the normalised MLP per network, (S,); y holds class indices (P,) or
    (S, P)."""
    f = norm_apply(params, x)
    logp = torch.log_softmax(f, -1)
    y = y.expand(f.shape[:-1])
    return -logp.gather(-1, y[..., None]).squeeze(-1).mean(-1)


def _single_loss(params, x, y):
    one = {k: v[None] for k, v in params.items()}
    return norm_loss(one, x[None] if x.ndim == 2 else x, y)[0]


def rotation(w_old: torch.Tensor, w_new: torch.Tensor) -> torch.Tensor:
    """The angle (radians) between consecutive values of every row: (S, out) for W (S, out, in)."""
    cos = (w_old * w_new).sum(-1) / (w_old.norm(dim=-1) * w_new.norm(dim=-1))
    return torch.arccos(cos.clamp(-1.0, 1.0))


def norm_train(params: dict, x: torch.Tensor, y: torch.Tensor, lr, steps: int, *,
               optimizer: str = "adamw", weight_decay: float = 0.0, batch: int | None = None,
               betas=(0.9, 0.999), eps: float = 1e-8, generator=None, every: int = 1,
               lr_schedule=None, same_batches: bool = False) -> dict:
    """Train the normalised MLP ensemble with minibatches of `batch` examples (full batch if None;
    each network draws its own batches), per-network gradients by torch.func.vmap(grad).

    optimizer: "adamw" (decoupled: w <- w - lr (u + lam w), u = m_hat / (sqrt(v_hat) + eps)),
    "adam-l2" (coupled: the gradient is g + lam w before Adam's normalisation), or "sgdm" (heavy
    ball with L2, torch.optim.SGD's convention: buf <- beta1 buf + g + lam w, w <- w - lr buf).
    weight_decay: a scalar or one value per network. For "sgdm" with betas[0] = 0 the coupled and
    decoupled forms coincide: w <- (1 - lr lam) w - lr g.
    lr_schedule: optional function of the step t (1, 2, ...) giving the learning-rate multiplier.
    same_batches: if True (S even, minibatches), network i + S/2 draws the same minibatches as
    network i (a paired control).

    Records every `every` steps, for every weight matrix W_l (the hidden ones and the readout),
    per row, under keys "W<l>_<name>": "norm2" (T, S, n_l) ||w||^2 after the step, "rot" the angle
    of that step's update, "u2" ||u||^2 and "wu" <w, u> with u the update divided by the learning
    rate (for "adamw" without the decay term; for "adam-l2" and "sgdm" the decay is inside u, for
    "sgdm" u is the heavy-ball buffer), "wgh" <w, g_hat> with g_hat = g / (sqrt(v_hat) + eps) the
    normalised gradient of the loss alone (g itself for "sgdm"), "g2" ||g||^2 of the loss alone;
    and "loss" (T, S), "step" (T,), "params" (final)."""
    p = {k: v.detach().clone() for k, v in params.items()}
    S, Pn = p["W0"].shape[0], x.shape[0]
    L = sum(1 for key in p if key[0] == "W") - 1
    tracked = [f"W{i}" for i in range(L + 1)]
    gfun = vmap(grad(_single_loss), in_dims=(0, 0, 0))
    like = p["W0"]
    lam_s = torch.as_tensor(weight_decay, dtype=like.dtype, device=like.device).expand(S)
    b1, b2 = betas
    m = {k: torch.zeros_like(v) for k, v in p.items()}
    v2 = {k: torch.zeros_like(v) for k, v in p.items()}
    rec = {"step": [], "loss": [], **{f"{key}_{w}": [] for key in tracked
                                       for w in ("norm2", "rot", "u2", "wu", "wgh", "g2")}}
    for t in range(1, steps + 1):
        if batch is None:
            xb = x.expand(S, *x.shape)
            yb = y.expand(S, *y.shape)
        else:
            if same_batches:
                idx = torch.randint(0, Pn, (S // 2, batch), generator=generator, device=x.device)
                idx = torch.cat([idx, idx])
            else:
                idx = torch.randint(0, Pn, (S, batch), generator=generator, device=x.device)
            xb, yb = x[idx], y[idx]
        g = gfun(p, xb, yb)
        eta = lr * (1.0 if lr_schedule is None else lr_schedule(t))
        new, u, gh = {}, {}, {}
        for key in p:
            lam_k = lam_s.view((-1,) + (1,) * (p[key].ndim - 1))
            gk = g[key] + lam_k * p[key] if optimizer in ("adam-l2", "sgdm") else g[key]
            if optimizer == "sgdm":
                m[key] = b1 * m[key] + gk
                u[key] = m[key]
                gh[key] = g[key]
                new[key] = p[key] - eta * u[key]
                continue
            m[key] = b1 * m[key] + (1 - b1) * gk
            v2[key] = b2 * v2[key] + (1 - b2) * gk.square()
            denom = (v2[key] / (1 - b2**t)).sqrt() + eps
            u[key] = (m[key] / (1 - b1**t)) / denom
            gh[key] = g[key] / denom
            decay = lam_k * p[key] if optimizer == "adamw" else 0.0
            new[key] = p[key] - eta * (u[key] + decay)
        if t % every == 0 or t == steps:
            rec["step"].append(t)
            rec["loss"].append(norm_loss(p, xb, yb) if batch is None else
                               vmap(_single_loss)(p, xb, yb))
            for key in tracked:
                rec[f"{key}_norm2"].append(new[key].square().sum(-1))
                rec[f"{key}_rot"].append(rotation(p[key], new[key]))
                rec[f"{key}_u2"].append(u[key].square().sum(-1))
                rec[f"{key}_wu"].append((u[key] * p[key]).sum(-1))
                rec[f"{key}_wgh"].append((gh[key] * p[key]).sum(-1))
                rec[f"{key}_g2"].append(g[key].square().sum(-1))
        p = new
    out = {key: torch.stack(v) for key, v in rec.items() if key != "step"}
    out.update(step=torch.tensor(rec["step"]), params=p)
    return out
