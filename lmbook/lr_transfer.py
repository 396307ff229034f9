"""Learning-rate sweeps as one batched ensemble, and the optimal learning rate eta* they give
(Yang et al. 2022, Tensor Programs V: hyperparameter transfer over width).

Conventions
- Networks are one-hidden-layer ReLU `lmbook.mlp` networks without biases, "sp" or "mup"
  (`Net((d, n, k), "relu", param, bias=False)`), nested across widths
  as in `lmbook.coord_check` (the stored weights at every width are the leading block of one
  standard normal draw at the largest width, times the parameterisation's init std).
- A sweep trains, for one width, every (learning rate, replicate) pair as one ensemble of
  len(lrs) x R networks (learning rate outermost): replicate r has its own draw z[r] and its own
  data x[r], y[r]. Loss: mlp's (1/2P) sum_p ||f(x_p) - y_p||^2, full batch unless `batch` is given
  (then a fresh minibatch of `batch` of the P points per step, without replacement within a step,
  the same minibatch for every learning rate of a replicate).
- Optimisers act on the stored tensors w with a per-tensor learning-rate scale r(w) (`scales`):
    "sgd":  w <- w - lr r(w) g, with r = Net.lr_scales() (mlp's SGD muP: Tensor Programs V table 3);
    "adam": torch.optim.Adam's rule with bias correction, w <- w - lr r(w) mhat/(sqrt(vhat) + eps),
            with r = coord_check.adam_scales (muP's Adam table: 1/fan_in on hidden and readout).
  lr is the global learning rate eta that a sweep varies; `scale_exponents` gives the width
  exponents of r, which the chapter checks against lmbook.power_counting's c.
- A diverged network (non-finite loss, or loss above `cap` times the largest initial loss of its
  replicate) gets the loss cap: log losses stay finite, and a learning rate where some replicates
  diverge has a large mean log loss.
- `vertex`: the vertex of a least-squares parabola in log(lr) through a curve (the mean over
  replicates of the log loss), at the `points` grid points centred on a given grid index or on
  the curve's minimum (NaN if that window leaves the grid or the parabola opens downwards).
  `common_centre` gives one centre for a whole family of curves (all widths): the minimum of
  their average.
- How eta* moves across a family (widths): `align`, each width's curve (PCHIP interpolant) slid
  against the family's shared shape (the PCHIP interpolant of the mean curve, rebuilt from the
  realigned curves) over a window fixed on the shape: a pure shift of a curve moves its shift
  one-for-one whatever the shape (a fixed-window parabola does not). The optima are
  `location(shape) + shifts`. `drift_gains` checks, on given curves, that a statistic of the
  optima (a slope) follows a drift added to them: its response g, 1 for an estimator that follows
  a moving optimum one-for-one. Natural logarithms throughout.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import sympy as sp
import torch
from scipy.interpolate import PchipInterpolator

from . import coord_check, mlp
from .power_counting import bend_factor

__all__ = ["align", "common_centre", "divergence_threshold", "drift_gains", "extrapolated_slope",
           "location", "scale_exponents", "shared_shape", "shifted", "slope", "resolution",
           "sweep", "vertex"]


def scale_exponents(param: str, optimiser: str, d: int, k: int, widths=(64, 128)) -> dict:
    """{tensor name: width exponent of its learning-rate scale r} for Net((d, n, k), param) (one
    hidden layer: "W0" the input layer, "W1" the readout), from two widths: r ~ n^exponent."""
    n1, n2 = widths
    r = [
        (lambda net: net.lr_scales() if optimiser == "sgd" else coord_check.adam_scales(net))(
            mlp.Net((d, n, k), "relu", param, bias=False)
        )
        for n in (n1, n2)
    ]
    return {name: math.log(r[1][name] / r[0][name]) / math.log(n2 / n1) for name in r[0]}


def sweep(
    net: mlp.Net,
    z: dict,
    x: torch.Tensor,
    y: torch.Tensor,
    lrs,
    steps: int,
    optimiser: str = "sgd",
    record=(),
    betas: tuple = (0.9, 0.999),
    eps: float = 1e-12,
    batch: int | None = None,
    generator=None,
    cap: float = 1e3,
    scales: dict | None = None,
    rises: bool = False,
):
    """Train the nested networks of `net` (module docstring) at every learning rate of `lrs`:
    z from coord_check.draw (R replicates), x (R, P, d), y (R, P, k); lrs a sequence of L
    learning rates, or an (L, R) array of one learning rate per network. Returns the full-batch
    training loss of shape (len(record) + 1, len(lrs), R): at the steps listed in `record` (before
    the update of that step) and after the last step. `scales` overrides the per-tensor
    learning-rate scales (module docstring). With `rises` (full batch only) it also returns a
    boolean (len(lrs), R): whether the full-batch loss ever rose from one step to the next (or
    became non-finite), from the residual that every step computes anyway.

    One hidden layer ("sp" or "mup", whose forward multipliers are 1): the forward and backward
    passes are mlp.forward/mlp.grads written out with preallocated buffers (the same arithmetic,
    tested against mlp.train), because allocating the (networks, P, n) activations anew at every
    step dominates the CPU time of a sweep."""
    if rises and batch is not None:
        raise ValueError("`rises` tracks the full-batch loss: full-batch training only")
    if optimiser not in ("sgd", "adam"):
        raise ValueError(f"optimiser must be 'sgd' or 'adam', got {optimiser!r}")
    if net.bias or net.depth != 2 or net.activation != "relu":
        raise ValueError("sweep trains one-hidden-layer ReLU networks without biases")
    if any(m != 1.0 for _, m, _ in net.scales().values()):
        raise ValueError("sweep needs forward multipliers 1 (param 'sp' or 'mup')")
    lrs = torch.as_tensor(np.asarray(lrs, dtype=float), dtype=x.dtype, device=x.device)
    L, (R, P, _) = len(lrs), x.shape
    per_net = lrs.reshape(L, R) if lrs.ndim == 2 else lrs[:, None].expand(L, R)
    params = {k: v.repeat(L, *[1] * (v.ndim - 1)) for k, v in coord_check.nested(net, z).items()}
    W0, W1 = params["W0"], params["W1"]
    X, Y = x.repeat(L, 1, 1), y.repeat(L, 1, 1)
    if scales is None:
        scales = net.lr_scales() if optimiser == "sgd" else coord_check.adam_scales(net)
    step = {k: (per_net.reshape(-1) * scales[k]).view(-1, 1, 1) for k in params}
    m = {k: torch.zeros_like(v) for k, v in params.items()}
    v2 = {k: torch.zeros_like(v) for k, v in params.items()}
    g = {k: torch.empty_like(v) for k, v in params.items()}
    b1, b2 = betas
    Pb = P if batch is None else batch
    n = W0.shape[1]
    pre = torch.empty(L * R, Pb, n, dtype=x.dtype, device=x.device)
    act, back = torch.empty_like(pre), torch.empty_like(pre)
    full = (torch.empty(L * R, P, n, dtype=x.dtype, device=x.device)
            if batch is not None else pre)

    def outputs(xs, z_buf, a_buf):
        torch.bmm(xs, W0.transpose(1, 2), out=z_buf)
        torch.clamp_min(z_buf, 0, out=a_buf)
        return torch.bmm(a_buf, W1.transpose(1, 2))

    def full_loss():
        a_buf = act if batch is None else full
        f = outputs(X, full, a_buf)
        return (0.5 * (f - Y).square().sum(-1).mean(-1)).view(L, R)

    out, ceiling = [], None
    rose = torch.zeros(L * R, dtype=torch.bool, device=x.device)
    previous = None
    for t in range(steps + 1):
        if t == 0:
            ceiling = cap * full_loss().amax(0)
        if t in record or t == steps:
            out.append(full_loss())
        if t == steps:
            if rises:
                last = out[-1].reshape(-1)
                rose |= ~(last <= previous)
            break
        if batch is None:
            xb, yb = X, Y
        else:
            idx = torch.argsort(torch.rand(R, P, generator=generator), -1).to(x.device)
            idx = idx[:, :batch].repeat(L, 1)
            xb = X.gather(1, idx[..., None].expand(-1, -1, X.shape[-1]))
            yb = Y.gather(1, idx[..., None].expand(-1, -1, Y.shape[-1]))
        residual = (outputs(xb, pre, act) - yb) / Pb
        if rises:                                  # the full-batch loss before this step
            current = 0.5 * Pb * residual.square().sum((1, 2))
            if previous is not None:
                rose |= ~(current <= previous)     # a rise, or a non-finite loss
            previous = current
        torch.bmm(residual.transpose(1, 2), act, out=g["W1"])
        torch.mul(residual, W1, out=back)                     # the outer product, (S, Pb, n)
        back = torch.ops.aten.threshold_backward(back, pre, 0)  # times relu'(z), relu'(0) = 0
        torch.bmm(back.transpose(1, 2), xb, out=g["W0"])
        for k, p in params.items():
            if optimiser == "sgd":
                p.sub_(step[k] * g[k])
                continue
            m[k].mul_(b1).add_(g[k], alpha=1 - b1)
            v2[k].mul_(b2).addcmul_(g[k], g[k], value=1 - b2)
            denom = (v2[k] / (1 - b2 ** (t + 1))).sqrt_().add_(eps)
            p.sub_(step[k] / (1 - b1 ** (t + 1)) * m[k] / denom)
    loss = torch.stack(out)
    bad = ~torch.isfinite(loss) | (loss > ceiling)
    loss = torch.where(bad, ceiling.expand_as(loss), loss)
    return (loss, rose.view(L, R)) if rises else loss


def vertex(log_lr, mean_log_loss, points: int = 5, centre: int | None = None) -> float:
    """The vertex (in log lr) of the least-squares parabola through the `points` grid points
    centred on grid index `centre` (default: the minimum of mean_log_loss); NaN if the window
    leaves the grid or the parabola does not open upwards. A resampling keeps `centre` fixed at
    the full sample's minimum, so the statistic is a smooth function of the replicates."""
    log_lr, f = np.asarray(log_lr, dtype=float), np.asarray(mean_log_loss, dtype=float)
    j, h = int(np.argmin(f)) if centre is None else int(centre), points // 2
    if j - h < 0 or j + h >= len(f):
        return math.nan
    a, b, _ = np.polyfit(log_lr[j - h: j + h + 1], f[j - h: j + h + 1], 2)
    return -b / (2 * a) if a > 0 else math.nan


def common_centre(mean_log_loss, points: int = 5, clip: bool = False) -> int:
    """One window centre for a family of curves mean_log_loss (..., len(lrs)) (e.g. widths x grid):
    the grid index of the minimum of their average over every leading index. If a window of
    `points` grid points around it leaves the grid: the nearest index whose window fits (`clip`),
    else ValueError."""
    f = np.asarray(mean_log_loss, dtype=float)
    avg = f.reshape(-1, f.shape[-1]).mean(0)
    j, h = int(np.argmin(avg)), points // 2
    if clip:
        return min(max(j, h), len(avg) - 1 - h)
    if j - h < 0 or j + h >= len(avg):
        raise ValueError(f"a window of {points} points around the common minimum (index {j}) "
                         f"leaves the grid of {len(avg)} points")
    return j


def slope(widths, values) -> np.ndarray:
    """Least-squares slope of values (..., len(widths)) against log width."""
    lw = np.log(np.asarray(widths, dtype=float))
    lw = lw - lw.mean()
    v = np.asarray(values, dtype=float)
    return (v * lw).sum(-1) / (lw**2).sum()


@functools.lru_cache(maxsize=64)
def _kappa(widths: tuple, lower: tuple, upper: tuple, omega) -> float:
    """bend_factor as a float, cached: resampling statistics call extrapolated_slope often."""
    return float(bend_factor(widths, lower, upper, omega))


def extrapolated_slope(widths, values, omega, half: int | None = None) -> np.ndarray:
    """s_inf = s - kappa(omega) * ds: the least-squares slope s of values (..., len(widths))
    against log width, corrected for a relative first correction 1 + C n^omega, with ds the
    slope over the lower `half` widths minus that over the upper `half` (default: the rounded-up
    half) and kappa the exact bend factor (`bend_factor`). Signed: the correction's sign is kept."""
    widths = list(widths)
    h = (len(widths) + 1) // 2 if half is None else half
    v = np.asarray(values, dtype=float)
    kappa = _kappa(tuple(widths), tuple(widths[:h]), tuple(widths[-h:]), sp.sympify(omega))
    ds = slope(widths[:h], v[..., :h]) - slope(widths[-h:], v[..., -h:])
    return slope(widths, v) - kappa * ds


def resolution(statistic, size: int, step: float) -> float:
    """The largest change of a linear statistic of `size` values when every value moves by at
    most step / 2 (each known only to a bracket of width `step`): (step / 2) sum_i |statistic(e_i)|,
    e_i the unit vectors. For a slope, or an extrapolated slope, of bisected thresholds."""
    return float(step / 2 * sum(abs(float(statistic(e))) for e in np.eye(size)))


def divergence_threshold(net: mlp.Net, z: dict, x, y, log2_lo: float, log2_hi: float,
                         iters: int, steps: int, optimiser: str = "sgd", cap: float = 1e3):
    """The largest stable learning rate of each replicate by bisection in log2 lr: a network is
    unstable when its loss after `steps` steps is non-finite or above `cap` times its initial loss
    (sweep's cap). Starts from the bracket [log2_lo, log2_hi] (stable, unstable: checked) and
    halves it `iters` times, all replicates at once. Returns (midpoints of the final brackets, (R,)
    log2 lr; the final bracket width (log2 units))."""
    R = x.shape[0]

    def stable(log2_lr):
        lrs = (2.0 ** np.asarray(log2_lr, dtype=float))[None, :]
        out = sweep(net, z, x, y, lrs, steps, optimiser, record=(0,), cap=cap)
        return (out[-1, 0] < cap * out[0, 0]).cpu().numpy()

    lo, hi = np.full(R, float(log2_lo)), np.full(R, float(log2_hi))
    if not stable(lo).all() or stable(hi).any():
        raise ValueError("the bracket does not contain every replicate's threshold")
    for _ in range(iters):
        mid = (lo + hi) / 2
        ok = stable(mid)
        lo, hi = np.where(ok, mid, lo), np.where(ok, hi, mid)
    return (lo + hi) / 2, (log2_hi - log2_lo) / 2**iters


def _window(n_grid: int, centre: int, points: int) -> np.ndarray:
    h = points // 2
    if centre - h < 0 or centre + h >= n_grid:
        raise ValueError(f"a window of {points} points around index {centre} leaves the grid")
    return np.arange(centre - h, centre + h + 1)


def shared_shape(log_lr, mean_log_loss, shifts=None) -> PchipInterpolator:
    """H: the PCHIP interpolant (in log lr) of the mean over rows of mean_log_loss (rows, grid),
    each row first moved back by its shift (row i read at log_lr + shifts[i], PCHIP-interpolated,
    extrapolated past the grid's ends), so that H is the rows' common shape."""
    u, f = np.asarray(log_lr, dtype=float), np.asarray(mean_log_loss, dtype=float)
    if shifts is None:
        return PchipInterpolator(u, f.mean(0), extrapolate=True)
    rows = PchipInterpolator(u, f.T, axis=0, extrapolate=True)   # every row at once
    return _realigned(u, rows, np.asarray(shifts, dtype=float))


def _realigned(u, rows, shifts) -> PchipInterpolator:
    """PCHIP of the mean of the rows (a vector-valued interpolant, rows last) read at u + shifts."""
    back = rows(u[:, None] + shifts[None, :])                   # (grid, rows, rows)
    i = np.arange(len(shifts))
    return PchipInterpolator(u, back[:, i, i].mean(1), extrapolate=True)


def align(log_lr, mean_log_loss, centre: int, points: int = 5, iterations: int = 3,
          resolution: float = 0.02, pad: float = 0.5, density: int = 8, offset: float = 0.0):
    """Per-row shifts of a family of curves against their shared shape (eta* up to one common
    constant). mean_log_loss (rows, grid) on the grid log_lr (natural log, equally spaced);
    returns (shifts (rows,), mean zero; H). With F_i the PCHIP interpolant of row i, the shift
    delta_i minimises, over delta and an offset a_i, the squared misfit of F_i(v + delta) - a_i
    against H(v) over the window v of `points` grid points (`density` samples per grid step)
    centred on grid index `centre` (moved by `offset` grid steps), H = `shared_shape`: the window
    is fixed on the shape, and each row's curve slides against it, so that a row moved by m
    moves its shift by m (up to PCHIP's interpolation error) whatever the shape. H is then
    rebuilt from the rows moved back by their shifts and the fit repeated (`iterations` fits in
    all). delta is bounded so that v + delta
    stays within `pad` grid steps of the grid (a shift too large for the grid ends at the bound).
    Minimisation: a scan at `resolution` grid steps, refined by the parabola through the best scan
    point and its neighbours."""
    u, f = np.asarray(log_lr, dtype=float), np.asarray(mean_log_loss, dtype=float)
    k = _window(len(u), centre, points)
    step = u[1] - u[0]
    v = np.linspace(u[k[0]], u[k[-1]], density * (points - 1) + 1) + offset * step
    lo, hi = u[0] - pad * step - v[0], u[-1] + pad * step - v[-1]
    deltas = np.arange(lo, hi + 1e-12, resolution * step)
    grid = v[None, :] + deltas[:, None]                       # (scan, window samples)
    interp = PchipInterpolator(u, f.T, axis=0, extrapolate=True)   # every row at once
    rows = interp(grid)                                            # (scan, samples, rows)
    rows = np.moveaxis(rows - rows.mean(1, keepdims=True), -1, 0)
    shifts, H = np.zeros(len(f)), shared_shape(u, f)
    for _ in range(iterations):
        h = H(v)
        h = h - h.mean()
        new = np.empty(len(f))
        for i, r in enumerate(rows):
            cost = ((r - h) ** 2).sum(1)
            j = int(np.argmin(cost))
            if 0 < j < len(deltas) - 1:
                c0, c1, c2 = cost[j - 1: j + 2]
                curv = c0 - 2 * c1 + c2
                off = 0.5 * (c0 - c2) / curv if curv > 0 else 0.0
                new[i] = deltas[j] + off * (deltas[1] - deltas[0])
            else:
                new[i] = deltas[j]
        shifts = new - new.mean()
        H = _realigned(u, interp, shifts)
    return shifts, H


def location(log_lr, H, points: int = 5, centre: int | None = None) -> float:
    """The location of a shape H (from `align`): the vertex of the least-squares parabola through
    H at the `points` grid points centred on grid index `centre` (default: the grid minimum of
    H; `vertex`). With `align`'s shifts, the optima of the rows are location + shifts."""
    u = np.asarray(log_lr, dtype=float)
    return vertex(u, H(u), points, centre)


def shifted(log_lr, mean_log_loss, moves) -> np.ndarray:
    """The curves (rows, grid) with row i moved by moves[i] in log lr (its minimum goes to
    u* + moves[i]): PCHIP of the row read at log_lr - moves[i], extrapolated past the grid's ends.
    For drift-recovery controls."""
    u, f = np.asarray(log_lr, dtype=float), np.asarray(mean_log_loss, dtype=float)
    return np.stack([PchipInterpolator(u, row, extrapolate=True)(u - m)
                     for row, m in zip(f, moves)])


def drift_gains(log_lr, mean_log_loss, statistic, widths, adds=(-0.25, 0.25)) -> np.ndarray:
    """The response of a slope statistic to a drift added to a family of curves: for each s_add
    in `adds`, g = (statistic(curves moved by s_add (log n - mean log n)) - statistic(curves))
    / s_add, the curves (widths, grid) moved by `shifted`. g = 1: the statistic follows a moving
    optimum one-for-one; g << 1: a drift leaves it (e.g. the optima leave the grid)."""
    ln = np.log(np.asarray(widths, dtype=float))
    f = np.asarray(mean_log_loss, dtype=float)
    base = statistic(f)
    return np.array([(statistic(shifted(log_lr, f, a * (ln - ln.mean()))) - base) / a
                     for a in adds])
