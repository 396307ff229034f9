"""Power counting for abc-parameterisations: the width exponents of a network's updates, in SymPy
(Yang & Hu 2021, Tensor Programs IV, section 3; Yang et al. 2022, Tensor Programs V, table 3).

Conventions
- An MLP with L hidden layers of width n: layer 1 (the input layer, fan-in d fixed), layers
  2..L (hidden, n x n) and layer L+1 (the output layer, fan-out k fixed). "input", "hidden" and
  "output" name the three kinds; every hidden layer has the same exponents.
- abc form (Tensor Programs IV): the effective weight is W^l = n^(-a_l) w^l, the trained tensor w^l
  is initialised with entries N(0, n^(-2 b_l)), and its learning rate is eta n^(-c_l). So a is the
  multiplier exponent, b the init-std exponent and c the learning-rate exponent. Everything else
  (sigma_w, d, k, the batch, eta) is O(1).
- Every quantity is tracked by its exponent e: a typical coordinate is Theta(n^e). Rules:
    forward      h^1 = W^1 x: -theta_1 (theta_l = a_l + b_l); h^l = W^l x^(l-1): a random sum of n
                 terms, +1/2; x = phi(h) keeps h's exponent (phi positively homogeneous, ReLU);
    backward     dx^L = W^(L+1)T chi (chi = df loss, exponent max(e_f0, 0)); dx^(l-1) = W^lT dh^l:
                 random sum, +1/2 - theta_l; dh = phi'(h) dx keeps the exponent;
    update       the update of layer l moves h^l by Delta W^l x^(l-1): the update is an outer
                 product aligned with x^(l-1), so the product is a correlated sum, +1 over a fan-in
                 of n (+0 for the input layer's fan-in d). SGD: Delta W^l = -eta n^(-c_l - 2 a_l)
                 dh^l x^(l-1)T; Adam as a sign-like update (eps << |gradient|): entries
                 eta n^(-c_l - a_l) whatever the gradient's size;
    propagation  a hidden layer passes its input's update on with a random sum, +1/2 - theta_l
                 (W^l times the update of x^(l-1), an O(1) operator when theta_l = 1/2); the output
                 layer with a correlated sum, +1 - theta_(L+1): the update of x^L is aligned with
                 W^(L+1), because the backward pass put W^(L+1) into it.
  The exponent of a sum is the largest of its terms' exponents (sympy Max).
- What is counted: the RMS over coordinates of h^l_t - h^l_0 and of f_t - f_0 after a fixed number
  of steps t, to first order in the learning rate (linear response). In a stable parameterisation
  (every update exponent <= 0) the higher orders are no larger and the exponents hold at finite
  steps; in an unstable one they are the exponents of the first-order response, valid while the
  update is small against the initialisation (beyond, the ReLU rectifies the update and larger
  exponents appear).
- Adam with eps >> |gradient| is SGD with learning rate eta/eps: `exponents(p, "sgd")` for the
  Adam parameterisation p gives that limit.
- aligned=False: the count without alignment (Everett et al. 2024's "no alignment" setting, their
  alignment exponents at 1/2): every product over a fan-in of n in an update, a hidden or output
  layer's own update Delta W^l x^(l-1) and the output layer's W^(L+1) Delta x^L, is counted as a
  random sum, +1/2 (instead of +1 and +1 - theta_(L+1) -> +1/2 - theta_(L+1)). The forward and
  backward passes at initialisation and the input layer (fan-in d) are unchanged. It is the count a
  reader gets who treats every sum over the width as random: the strongest alternative prediction
  for the same network.
- Exponents may be SymPy numbers or symbols; results are SymPy expressions (Max of the terms).

Public API (Part IV's learning-rate chapter reuses it)
    Parameterisation(name, a, b, c)          a, b, c: (input, hidden, output) exponents
    preset(name, optimiser)                  "sp", "ntk", "mup" for "sgd" or "adam"
    terms(p, optimiser, depth=3, aligned=True)      {quantity: {term: exponent}} (below)
    exponents(p, optimiser, depth=3, aligned=True)  {quantity: exponent}, the Max of the terms
    max_stable_lr_exponent(p, optimiser, depth=3, aligned=True)
                                             gamma: the largest lr ~ n^-gamma keeping all <= 0
    at_lr_exponent(p, optimiser, gamma)      p with every c raised by gamma
    regime(p, optimiser)                     "unstable", "feature learning", "kernel", "trivial"
    correction_exponent(p, optimiser, q)     omega of the first correction 1 + C n^omega
    derive_mup(optimiser)                    the muP table: init variance and lr exponents
    shift(p, theta, optimiser, layer)        Tensor Programs IV's symmetry a+theta, b-theta,
                                             c-2 theta (SGD) or c-theta (Adam)
  Quantities: "h1".."hL" (RMS of the update of layer l's pre-activations), "f" (of the outputs),
  "init_h1".."init_hL", "init_f" (sizes at initialisation), "grad_W0".."grad_WL" (RMS of the
  first gradient's entries with respect to the trained tensor w^l, layers counted from 0 as in
  lmbook.mlp).
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

__all__ = [
    "KINDS",
    "OPTIMISERS",
    "Parameterisation",
    "at_lr_exponent",
    "bend_factor",
    "correction_exponent",
    "derive_mup",
    "exponents",
    "max_stable_lr_exponent",
    "preset",
    "regime",
    "shift",
    "terms",
]

KINDS = ("input", "hidden", "output")
OPTIMISERS = ("sgd", "adam")
HALF = sp.Rational(1, 2)


def _rationals(values) -> tuple:
    values = tuple(sp.sympify(v) for v in values)
    if len(values) != 3:
        raise ValueError(f"give three exponents (input, hidden, output), got {values}")
    return tuple(sp.nsimplify(v) if v.is_number else v for v in values)


@dataclass(frozen=True)
class Parameterisation:
    """An abc-parameterisation (module docstring): a, b, c as (input, hidden, output)."""

    name: str
    a: tuple
    b: tuple
    c: tuple

    def __post_init__(self):
        for k in "abc":
            object.__setattr__(self, k, _rationals(getattr(self, k)))

    def layer(self, kind: str) -> tuple:
        """(a, b, c) of one kind of layer."""
        i = KINDS.index(kind)
        return self.a[i], self.b[i], self.c[i]


def _check(optimiser: str) -> None:
    if optimiser not in OPTIMISERS:
        raise ValueError(f"optimiser must be one of {OPTIMISERS}, got {optimiser!r}")


def preset(name: str, optimiser: str = "sgd") -> Parameterisation:
    """The standard (sp: multipliers 1, init 1/fan_in, lr n^0), NTK (ntk: multipliers
    1/sqrt(fan_in) on hidden and output layers, init 1, lr n^0) and maximal-update (mup: Tensor
    Programs V table 3, multipliers 1) parameterisations; c of mup depends on the optimiser."""
    _check(optimiser)
    h = HALF
    if name == "sp":
        return Parameterisation("SP", (0, 0, 0), (0, h, h), (0, 0, 0))
    if name == "ntk":
        return Parameterisation("NTK", (0, h, h), (0, 0, 0), (0, 0, 0))
    if name == "mup":
        c = (-1, 0, 1) if optimiser == "sgd" else (0, 1, 1)
        return Parameterisation("muP", (0, 0, 0), (0, h, 1), c)
    raise ValueError(f"unknown preset {name!r}; choose sp, ntk or mup")


def _kind(layer: int, depth: int) -> int:
    return 0 if layer == 1 else (2 if layer == depth + 1 else 1)


def terms(p: Parameterisation, optimiser: str, depth: int = 3, aligned: bool = True) -> dict:
    """{quantity: {term name: exponent}} by the rules of the module docstring, for an MLP with
    `depth` hidden layers (depth >= 1); aligned=False: the count without alignment (docstring)."""
    _check(optimiser)
    if depth < 1:
        raise ValueError("depth (the number of hidden layers) must be at least 1")
    L = depth
    a = {lyr: p.a[_kind(lyr, L)] for lyr in range(1, L + 2)}
    b = {lyr: p.b[_kind(lyr, L)] for lyr in range(1, L + 2)}
    c = {lyr: p.c[_kind(lyr, L)] for lyr in range(1, L + 2)}
    theta = {lyr: a[lyr] + b[lyr] for lyr in a}
    corr = 1 if aligned else HALF  # a sum over a fan-in of n inside an update
    fan_in = {lyr: (0 if lyr == 1 else corr) for lyr in a}
    # forward at initialisation (e_x[0] = 0: the inputs)
    ex = {0: sp.Integer(0)}
    for lyr in range(1, L + 1):
        ex[lyr] = -theta[lyr] + (0 if lyr == 1 else HALF + ex[lyr - 1])
    e_f0 = HALF - theta[L + 1] + ex[L]
    chi = sp.Max(e_f0, 0)
    # backward
    edh = {L + 1: chi, L: -theta[L + 1] + chi}
    for lyr in range(L, 1, -1):
        edh[lyr - 1] = HALF - theta[lyr] + edh[lyr]
    out = {}
    for lyr in range(1, L + 2):
        q = "f" if lyr == L + 1 else f"h{lyr}"
        out[f"init_{q}"] = {"forward": e_f0 if lyr == L + 1 else ex[lyr]}
        out[f"grad_W{lyr - 1}"] = {"backward": -a[lyr] + edh[lyr] + ex[lyr - 1]}
    # updates
    moved = {}
    for lyr in range(1, L + 2):
        q = "f" if lyr == L + 1 else f"h{lyr}"
        if optimiser == "sgd":
            own = -c[lyr] - 2 * a[lyr] + edh[lyr] + 2 * ex[lyr - 1] + fan_in[lyr]
        else:
            own = -a[lyr] - c[lyr] + ex[lyr - 1] + fan_in[lyr]
        t = {f"own update of layer {lyr}": own}
        if lyr > 1:
            gain = corr - theta[lyr] if lyr == L + 1 else HALF - theta[lyr]
            t[f"layer {lyr - 1}'s update passed on"] = gain + moved[lyr - 1]
        out[q] = t
        moved[lyr] = sp.Max(*t.values())
    return out


def exponents(p: Parameterisation, optimiser: str, depth: int = 3, aligned: bool = True) -> dict:
    """{quantity: exponent}: the largest term of each quantity of `terms`."""
    return {
        q: sp.simplify(sp.Max(*t.values()))
        for q, t in terms(p, optimiser, depth, aligned).items()
    }


def _updates(e: dict, depth: int) -> list:
    return [e[f"h{lyr}"] for lyr in range(1, depth + 1)] + [e["f"]]


def correction_exponent(p: Parameterisation, optimiser: str, quantity: str, depth: int = 3):
    """omega of the first relative correction 1 + C n^omega to the mean of log RMS(quantity) over
    networks: the gap from the leading term to the next-largest term of the count, if that is
    -1/2; else -1. A term below the leading one by a half-integer gap adds coherently; random parts
    of the sums are zero-mean and add to the RMS in quadrature (n^-1), and the fluctuations of
    correlated sums are zero-mean across networks (a spread, with a bias at second order, n^-1)."""
    values = sorted(set(sp.simplify(v) for v in terms(p, optimiser, depth)[quantity].values()),
                    reverse=True)
    if len(values) > 1 and values[1] - values[0] == -HALF:
        return -HALF
    return sp.Integer(-1)


def max_stable_lr_exponent(
    p: Parameterisation, optimiser: str, depth: int = 3, aligned: bool = True
):
    """gamma such that the learning rate eta n^(-gamma) (on top of p's c) is the largest that keeps
    every update exponent <= 0: every update is first order in the learning rate, so gamma is the
    largest update exponent at gamma = 0."""
    return sp.simplify(sp.Max(*_updates(exponents(p, optimiser, depth, aligned), depth)))


def at_lr_exponent(p: Parameterisation, optimiser: str, gamma) -> Parameterisation:
    """p with its learning rate multiplied by n^(-gamma) on every layer (c -> c + gamma)."""
    _check(optimiser)
    g = sp.sympify(gamma)
    return Parameterisation(f"{p.name}, lr n^-{g}", p.a, p.b, tuple(ci + g for ci in p.c))


def regime(p: Parameterisation, optimiser: str, depth: int = 3) -> str:
    """Tensor Programs IV's classification (numeric exponents): "unstable" if an init size or an
    update grows with n; else "feature learning" if the last hidden layer's update is Theta(1);
    else "kernel" if the outputs move at Theta(1); else "trivial"."""
    e = exponents(p, optimiser, depth)
    sizes = [e[f"init_h{lyr}"] for lyr in range(1, depth + 1)] + [e["init_f"]]
    if any(v > 0 for v in sizes + _updates(e, depth)):
        return "unstable"
    if e[f"h{depth}"] == 0:
        return "feature learning"
    return "kernel" if e["f"] == 0 else "trivial"


def shift(p: Parameterisation, theta, optimiser: str, kind: str | None = None) -> Parameterisation:
    """Tensor Programs IV's symmetry: a -> a + theta, b -> b - theta and c -> c - 2 theta (SGD) or
    c - theta (Adam), on one kind of layer or (kind=None) on all; every exponent is unchanged."""
    _check(optimiser)
    t = sp.sympify(theta)
    dc = 2 * t if optimiser == "sgd" else t
    on = [int(kind is None or kind == k) for k in KINDS]
    return Parameterisation(
        f"{p.name} shifted",
        tuple(v + t * o for v, o in zip(p.a, on)),
        tuple(v - t * o for v, o in zip(p.b, on)),
        tuple(v - dc * o for v, o in zip(p.c, on)),
    )


def derive_mup(optimiser: str, depth: int = 3) -> dict:
    """The maximal-update parameterisation with multipliers 1 (a = 0), solved by SymPy from the
    counting: pre-activations Theta(1) at init, and every term of every update Theta(1) (each
    layer's own update and the output's update from the features). Returns {"b": (..), "c": (..),
    "init_variance": (..), "lr": (..)}: init variance n^(-2b) and learning rate n^(-c), as width
    exponents (input, hidden, output)."""
    _check(optimiser)
    bs = sp.symbols("b_in b_hid b_out", real=True)
    cs = sp.symbols("c_in c_hid c_out", real=True)
    p = Parameterisation("muP (unknown)", (0, 0, 0), bs, cs)
    t = terms(p, optimiser, depth)
    eqs = [t["init_h1"]["forward"], t["init_h2"]["forward"]]
    # the output at init is smaller than Theta(1) here, so the loss derivative chi is Theta(1)
    replace = {sp.Max(HALF - bs[2], 0): 0}
    for q in [f"h{lyr}" for lyr in range(1, depth + 1)] + ["f"]:
        eqs += [e.subs(replace) for e in t[q].values()]
    sol = sp.solve(eqs, bs + cs, dict=True)
    if len(sol) != 1:
        raise ValueError(f"expected one muP solution, got {sol}")
    b = tuple(sol[0][v] for v in bs)
    c = tuple(sol[0][v] for v in cs)
    assert HALF - b[2] < 0, "the output at init must be o(1) for chi = Theta(1)"
    return {"b": b, "c": c, "init_variance": tuple(-2 * v for v in b), "lr": tuple(-v for v in c)}


def bend_factor(widths, lower, upper, omega) -> sp.Expr:
    """kappa(omega), exact: a relative correction 1 + C n^omega to a power law bends the
    least-squares log-log slope over `widths` by C s(widths), s(W) the slope of n^omega against
    log n over W; the difference of the slopes over the `lower` and `upper` widths is
    C (s(lower) - s(upper)), so the bend is kappa times that difference, kappa =
    s(widths) / (s(lower) - s(upper)). Subtracting kappa times the measured half-slope difference
    removes the first correction from a slope without using the exponent under test."""

    def ls(ns):
        logs = [sp.log(sp.Integer(int(v))) for v in ns]
        vals = [sp.Integer(int(v)) ** sp.sympify(omega) for v in ns]
        ml, mv = sum(logs) / len(ns), sum(vals) / len(ns)
        return (sum((lg - ml) * (v - mv) for lg, v in zip(logs, vals))
                / sum((lg - ml) ** 2 for lg in logs))

    return sp.nsimplify(ls(widths) / (ls(lower) - ls(upper)))
