"""Finite width at finite depth: the squared-norm ratio of a random bias-free ReLU network.

Conventions
- Network: x^0 in R^{n_0}, x^l = relu(W^l x^{l-1}) for l = 1..L, W^l an n_l x n_{l-1} matrix.
  "gaussian" (He): W_ij ~ N(0, 2/n_{l-1}) i.i.d.; "orthogonal": W = sqrt(2 n_l / n_{l-1}) O with O
  Haar-orthogonal (square layers only, n_l = n_{l-1}).
- R = (|x^L|^2 / n_L) / (|x^0|^2 / n_0), the ratio of mean squared activations. By the rotation
  invariance of the weights R = prod_l R_l with independent layer factors
      gaussian:   R_l = (2 / n_l) Y_l,  Y_l = sum_{i <= n_l} 1[g_i > 0] g_i^2,  g_i ~ N(0, 1),
      orthogonal: R_l = 2 B_l,          B_l = (the squared norm of the positive part of a uniform
                  unit vector in R^{n_l}),
  K_l = #{g_i > 0} ~ Binomial(n_l, 1/2) active units; given K = k, Y ~ chi^2_k and B ~ Beta(k/2,
  (n - k)/2). So E[R_l^s | K = k] = (4/n)^s Gamma(k/2 + s) / Gamma(k/2) (gaussian) or
  2^s Gamma(k/2 + s) Gamma(n/2) / (Gamma(k/2) Gamma(n/2 + s)) (orthogonal).
- The atom. With probability 2^-n_l a layer has no active unit and R = 0 from there on (log R =
  -inf). Every statement about log R here is CONDITIONAL on K_l >= 1 in every layer (k = 1..n);
  the Monte Carlo drops the networks with a dead layer (`forward_log_norms` returns -inf there).
- Cumulants of log R: the law of total cumulance over K (`total_cumulants`, SymPy) applied to the
  conditional cumulants a_j = d^j/ds^j log E[R_l^s | K] at s = 0 (polygamma functions), summed
  over layers (independent factors).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import scipy.special as sc
import sympy as sp
import torch
from scipy.optimize import brentq

__all__ = [
    "active_weights",
    "conditional_cumulants",
    "derive_norm_moments",
    "derive_large_width_log_moments",
    "total_cumulants",
    "log_cumulants",
    "log_cf",
    "log_cdf",
    "log_median",
    "derive_ntk_pair_factors",
    "ntk_ratio",
    "residual_limit_variance",
    "forward_log_norms",
    "ntk_diagonal",
]

INITS = ("gaussian", "orthogonal")


def derive_norm_moments():
    """SymPy: (n, E[R_l], E[R_l^2]) for one He-Gaussian layer of width n, from the moments of
    t = 1[g > 0] g^2 (E t^m = (2m - 1)!! / 2) and Y = a sum of n i.i.d. copies of t."""
    n = sp.Symbol("n", positive=True, integer=True)
    g = sp.Symbol("g", real=True)
    density = sp.exp(-(g**2) / 2) / sp.sqrt(2 * sp.pi)
    m1, m2 = (sp.integrate(g ** (2 * m) * density, (g, 0, sp.oo)) for m in (1, 2))
    ey = n * m1
    ey2 = n * m2 + n * (n - 1) * m1**2
    return n, sp.simplify(2 / n * ey), sp.simplify((2 / n) ** 2 * ey2)


def derive_large_width_log_moments(order: int = 2):
    """SymPy: (n, E[log R_l], Var[log R_l]) as series in 1/n to O(n^-order) for one He-Gaussian
    layer, from log(1 + eps), eps = R_l - 1, whose cumulants are n (2/n)^j kappa_j(t) (the atom
    at R_l = 0 is exponentially small and does not enter a power series)."""
    n, eps = sp.Symbol("n", positive=True), sp.Symbol("epsilon")
    # cumulants of t = 1[g>0] g^2 from its moments (2m-1)!!/2
    mom_t = [sp.Integer(1)] + [sp.factorial2(2 * m - 1) / 2 for m in range(1, 7)]
    s = sp.Symbol("s")
    mgf = sum(mom_t[m] * s**m / sp.factorial(m) for m in range(7))
    cgf = sp.series(sp.log(mgf), s, 0, 7).removeO()
    kt = [sp.factorial(j) * cgf.coeff(s, j) for j in range(7)]
    k_eps = [0, 0] + [n * (2 / n) ** j * kt[j] for j in range(2, 7)]
    cgf_eps = sum(k_eps[j] * s**j / sp.factorial(j) for j in range(2, 7))
    mgf_eps = sp.series(sp.exp(cgf_eps), s, 0, 7).removeO()
    mom_eps = {m: sp.expand(sp.factorial(m) * mgf_eps.coeff(s, m)) for m in range(7)}
    top = 2 * order + 1

    def expect(expr):
        poly = sp.expand(sp.series(expr, eps, 0, top).removeO())
        return sp.expand(sum(poly.coeff(eps, m) * mom_eps[m] for m in range(top)))

    def truncate(expr):
        u = sp.Symbol("u", positive=True)
        ser = sp.series(sp.expand(expr.subs(n, 1 / u)), u, 0, order + 1).removeO()
        return sp.expand(ser.subs(u, 1 / n))

    mean = truncate(expect(sp.log(1 + eps)))
    var = truncate(expect(sp.log(1 + eps) ** 2) - mean**2)
    return n, mean, var


@lru_cache(maxsize=None)
def total_cumulants(order: int = 4):
    """SymPy: the law of total cumulance. With the conditional cumulants a_1..a_order of log R_l
    given K (random through K), returns (a, kappa): kappa[j] (j = 1..order) is the j-th cumulant of
    the mixture as a polynomial in the expectations E[a-monomials], written as sp.Function('E')
    applied to the monomials. From log E_K[exp(sum_j a_j s^j / j!)], expanded in s."""
    s = sp.Symbol("s")
    a = sp.symbols(f"a1:{order + 1}", real=True)
    expo = sum(a[j - 1] * s**j / sp.factorial(j) for j in range(1, order + 1))
    inner = sp.expand(sp.series(sp.exp(expo), s, 0, order + 1).removeO())
    E = sp.Function("E")
    mgf = 1
    for m in range(1, order + 1):
        coeff = sp.expand(inner.coeff(s, m))
        terms = sp.Add.make_args(coeff)
        mgf += s**m * sum(t.as_coeff_Mul()[0] * E(t.as_coeff_Mul()[1]) for t in terms)
    cgf = sp.expand(sp.series(sp.log(mgf), s, 0, order + 1).removeO())
    kappa = {j: sp.expand(sp.factorial(j) * cgf.coeff(s, j)) for j in range(1, order + 1)}
    return a, kappa


def active_weights(n: int) -> np.ndarray:
    """P(K = k | K >= 1) for k = 1..n, K ~ Binomial(n, 1/2)."""
    k = np.arange(1, n + 1)
    logp = sc.gammaln(n + 1) - sc.gammaln(k + 1) - sc.gammaln(n - k + 1) - n * math.log(2)
    p = np.exp(logp)
    return p / p.sum()


def conditional_cumulants(n: int, order: int = 4, init: str = "gaussian") -> np.ndarray:
    """(order, n) array: the j-th cumulant of log R_l given K = k, for k = 1..n (columns)."""
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    half = np.arange(1, n + 1) / 2.0
    out = np.stack([sc.polygamma(j - 1, half) for j in range(1, order + 1)])
    if init == "gaussian":
        out[0] += math.log(4.0 / n)
    else:
        out -= np.array([sc.polygamma(j - 1, n / 2.0) for j in range(1, order + 1)])[:, None]
        out[0] += math.log(2.0)
    return out


@lru_cache(maxsize=None)
def _cumulant_evaluators(order: int):
    """[(kappa_j as a function of the monomial expectations, the monomials as numpy functions of
    a_1..a_order)] for j = 1..order, lambdified once from `total_cumulants`."""
    a, kappa = total_cumulants(order)
    out = []
    for j in range(1, order + 1):
        atoms = sorted(kappa[j].atoms(sp.Function("E")), key=str)
        slots = sp.symbols(f"m0:{len(atoms)}")
        outer = sp.lambdify(slots, kappa[j].subs(dict(zip(atoms, slots))), "math")
        inner = [sp.lambdify(a, ex.args[0], "numpy") for ex in atoms]
        out.append((outer, inner))
    return out


def log_cumulants(widths, order: int = 4, init: str = "gaussian") -> np.ndarray:
    """The exact cumulants kappa_1..kappa_order of log R for hidden widths n_1..n_L, conditional
    on no dead layer: the SymPy law of total cumulance evaluated on each layer's mixture, summed."""
    total = np.zeros(order)
    for n in set(int(w) for w in widths):
        count = sum(int(w) == n for w in widths)
        p = active_weights(n)
        c = conditional_cumulants(n, order, init)
        for j, (outer, inner) in enumerate(_cumulant_evaluators(order)):
            total[j] += count * outer(*[float(np.sum(p * f(*c))) for f in inner])
    return total


def _layer_cf(t: np.ndarray, n: int, init: str) -> np.ndarray:
    k = np.arange(1, n + 1)[None, :] / 2.0
    it = 1j * np.asarray(t, dtype=float)[:, None]
    if init == "gaussian":
        logm = it * math.log(4.0 / n) + sc.loggamma(k + it) - sc.gammaln(k)
    elif init == "orthogonal":
        logm = (it * math.log(2.0) + sc.loggamma(k + it) - sc.gammaln(k)
                + sc.gammaln(n / 2.0) - sc.loggamma(n / 2.0 + it))
    else:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    return np.exp(logm) @ active_weights(n)


def log_cf(t, widths, init: str = "gaussian") -> np.ndarray:
    """The characteristic function E[exp(i t log R)] (conditional on no dead layer)."""
    t = np.atleast_1d(np.asarray(t, dtype=float))
    out = np.ones(t.shape, dtype=complex)
    for n in set(int(w) for w in widths):
        count = sum(int(w) == n for w in widths)
        out *= _layer_cf(t, n, init) ** count
    return out


def _grid(widths, init, points):
    """A t grid on [0, T] with |cf(T)| below 1e-15 (Gil-Pelaez integration)."""
    T = 1.0
    while abs(log_cf([T], widths, init)[0]) > 1e-15:
        T *= 1.5
    return np.linspace(0.0, T, points)


def log_cdf(x, widths, init: str = "gaussian", points: int = 4001) -> np.ndarray:
    """P(log R <= x) by the Gil-Pelaez inversion of `log_cf`, Simpson's rule on `points` points
    (the integrand Im[exp(-itx) cf(t)] / t is smooth; its value at t = 0 is mean - x)."""
    return _cdf_function(widths, init, points)(x)


def _cdf_function(widths, init, points):
    t = _grid(widths, init, points)
    cf = log_cf(t[1:], widths, init)
    mean = log_cumulants(widths, 1, init)[0]
    h = t[1] - t[0]
    w = np.ones(t.size)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    w *= h / 3.0 / math.pi

    def cdf(x):
        x = np.atleast_1d(np.asarray(x, dtype=float))
        integrand = np.empty((x.size, t.size))
        integrand[:, 1:] = np.imag(np.exp(-1j * np.outer(x, t[1:])) * cf) / t[1:]
        integrand[:, 0] = mean - x
        return 0.5 - integrand @ w

    return cdf


def log_median(widths, init: str = "gaussian", points: int = 4001) -> float:
    """The median of log R (conditional on no dead layer): the root of log_cdf = 1/2."""
    k1, k2 = log_cumulants(widths, 2, init)
    sd = math.sqrt(k2)
    cdf = _cdf_function(widths, init, points)
    return brentq(lambda x: cdf([x])[0] - 0.5, k1 - 3 * sd, k1 + 3 * sd, xtol=1e-12)


@lru_cache(maxsize=None)
def derive_ntk_pair_factors():
    """SymPy: (n, same, cross) for one hidden layer of width n: same = E[F^2] / E[F]^2 for a
    layer whose factor plays the same role (forward or backward) in both terms of E[T_k T_k'],
    from `derive_norm_moments`; cross = E[F B] = 4 E[K^2] / n^2 for a forward and a backward
    factor of one layer, which share only its active count K ~ Binomial(n, 1/2) (E[K^2] from
    sympy.stats)."""
    from sympy.stats import Bernoulli
    from sympy.stats import E as expect

    n, mean_layer, second_layer = derive_norm_moments()
    b = Bernoulli("b", sp.Rational(1, 2))               # one unit active; K = a sum of n of them
    second_K = n * expect(b**2) + n * (n - 1) * expect(b) ** 2
    cross = sp.simplify(4 * second_K / n**2)
    return n, sp.simplify(second_layer / mean_layer**2), cross


@lru_cache(maxsize=None)
def _pair_factor_fns():
    n, same, cross = derive_ntk_pair_factors()
    return sp.lambdify(n, same, "math"), sp.lambdify(n, cross, "math")


def ntk_ratio(width: int, depth: int) -> float:
    """Var[Theta(x, x)] / E[Theta(x, x)]^2 by layer-pair counting for the network of
    `ntk_diagonal` (depth hidden layers of width n, Theta = sum_k T_k over the depth + 1 weight
    matrices, equal means). Each T_k is a product of one factor per hidden layer j, forward
    (j < k) or backward (j >= k); E[T_k T_k'] / (E T_k E T_k') = same^(L - |k - k'|)
    cross^|k - k'| with the per-layer factors of `derive_ntk_pair_factors` (1 + 5/n and
    1 + 1/n). Correlations through a weight matrix shared by a backward and the next forward
    factor (the ReLU masks depend on W) are not counted; the chapter measures them by a width
    control."""
    same_fn, cross_fn = _pair_factor_fns()
    same, cross, L = same_fn(width), cross_fn(width), int(depth)
    k = np.arange(L + 1)
    d = np.abs(k[:, None] - k[None, :])
    return float((same ** (L - d) * cross**d).mean() - 1)


def residual_limit_variance(points: int = 160) -> float:
    """lim n Var[log R] for the residual stream of `forward_log_norms` with alpha = 1/sqrt(L),
    L = n, as n -> infinity. In that limit the coordinates y_i = sqrt(n) h_i are Brownian motions
    Y started at N(0, 1), run in the time tau = int 2 A dt with A = |relu h|^2 (so the network
    ends at the tau* with int_0^tau* dtau / (2 A) = 1, tau* = e - 1 at leading order), and
    linearising log R = log G(tau*) - log G(0) (G = |h|^2) in the O(n^-1/2) fluctuations of A
    and G gives n Var log R -> Var Phi,
        Phi = 2 int_0^{e-1} relu(Y_tau)^2 / (1 + tau)^2 dtau + Y_{e-1}^2 / e - Y_0^2,
    for one Brownian motion with Cov(Y_s, Y_t) = 1 + min(s, t). The covariances are Gaussian:
    Cov(relu U^2, relu V^2) = p q (k2(c) - 1/4) with k2 the degree-2 arc-cosine kernel,
    Cov(relu U^2, V^2) = p q c^2, Cov(U^2, V^2) = 2 p q c^2 (p, q the variances, c the
    correlation); the double integral is done by Gauss-Legendre quadrature on `points` nodes."""
    x, w = np.polynomial.legendre.leggauss(points)
    T = math.e - 1
    s, w = (x + 1) * T / 2, w * T / 2
    f = 1 / (1 + s) ** 2
    p, q = 1 + s[:, None], 1 + s[None, :]
    c = (1 + np.minimum(s[:, None], s[None, :])) / np.sqrt(p * q)
    th = np.arccos(np.clip(c, -1.0, 1.0))
    k2 = (3 * np.sin(th) * np.cos(th) + (np.pi - th) * (1 + 2 * np.cos(th) ** 2)) / (2 * np.pi)
    var = 4 * np.einsum("i,j,i,j,ij", w, w, f, f, p * q * (k2 - 0.25))
    var += 2 * (1 + T) ** 2 / math.e**2 + 2 - 4 / math.e                # Y_T^2 / e - Y_0^2
    var += 4 * np.sum(w * f * (1 + s) ** 2) / math.e - 4 * np.sum(w * f)  # cross terms
    return float(var)


def _orthogonal(S, n, generator, dtype, device):
    z = torch.randn(S, n, n, generator=generator, dtype=dtype, device=device)
    q, r = torch.linalg.qr(z)
    return q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]  # Haar


def _draw(init, S, n, generator, dtype, device):
    if init == "gaussian":
        return torch.randn(S, n, n, generator=generator, dtype=dtype, device=device) * math.sqrt(
            2.0 / n)
    if init == "orthogonal":
        return math.sqrt(2.0) * _orthogonal(S, n, generator, dtype, device)
    raise ValueError(f"init must be one of {INITS}, got {init!r}")


def forward_log_norms(networks: int, width: int, depth: int, *, init: str = "gaussian",
                      residual: float | None = None, tied: bool = False, generator=None,
                      device=None, dtype=torch.float32, chunk: int = 4096) -> torch.Tensor:
    """log R after every layer, shape (networks, depth), float64, for `networks` independent
    square networks of width n = `width` (input dimension n too), one random unit input each.
    The weights are drawn layer by layer (batched over networks, in chunks of `chunk`); the norm
    is divided out after every layer and its log accumulated in float64, so depth does not
    underflow. A network with a dead layer gets -inf from there on.

    residual=None: the plain network of the module docstring. residual=alpha: the residual stream
    h^l = h^{l-1} + alpha W^l relu(h^{l-1}), W^l ~ N(0, 2/n), R = |h^l|^2 / |h^0|^2 (no
    nonlinearity on the stream). tied=True: one matrix W per network, drawn once and used in
    every layer (the layer factors are then no longer independent)."""
    out = torch.empty(networks, depth, dtype=torch.float64)
    for start in range(0, networks, chunk):
        S = min(chunk, networks - start)
        x = torch.randn(S, width, 1, generator=generator, dtype=dtype, device=device)
        x = x / x.norm(dim=1, keepdim=True)
        logr = torch.zeros(S, dtype=torch.float64, device=device)
        for layer in range(depth):
            if layer == 0 or not tied:
                W = _draw(init, S, width, generator, dtype, device)
            if residual is None:
                x = torch.relu(torch.bmm(W, x))
            else:
                x = x + residual * torch.bmm(W, torch.relu(x))
            norm = x.norm(dim=1, keepdim=True)
            logr = logr + 2 * torch.log(norm[:, 0, 0].double())
            x = x / torch.where(norm > 0, norm, torch.ones_like(norm))
            out[start:start + S, layer] = logr.cpu()
    return out


def ntk_diagonal(networks: int, width: int, depth: int, *, generator=None, device=None,
                 dtype=torch.float32, chunk: int = 2048) -> torch.Tensor:
    """Theta(x, x) of `networks` independent bias-free ReLU networks (lmbook.mlp, "ntk"
    parameterisation, sigma_w = sqrt(2): He at initialisation) with input dimension and `depth`
    hidden layers of width n = `width`, and one output, at one random input of norm sqrt(n) per
    network: lmbook.mlp.ntk (the layerwise Gram identity), in chunks of `chunk` networks.
    Returns (networks,) float64."""
    from . import mlp

    net = mlp.Net((width,) * (depth + 1) + (1,), "relu", "ntk", math.sqrt(2.0), 0.0, bias=False)
    out = []
    for start in range(0, networks, chunk):
        S = min(chunk, networks - start)
        params = mlp.init(net, S, generator, dtype=dtype, device=device)
        x = torch.randn(S, 1, width, generator=generator, dtype=dtype, device=device)
        x = x / x.norm(dim=-1, keepdim=True) * math.sqrt(width)
        out.append(mlp.ntk(net, params, x)[:, 0, 0].double().cpu())
    return torch.cat(out)
