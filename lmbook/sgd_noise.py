"""Online minibatch SGD on Gaussian linear regression: the exact second-moment theory as numbers,
and many SGD chains simulated at once.

Conventions
- Coordinates are the eigenbasis of the input covariance: x ~ N(0, diag(lam)), y = w_star . x + eps
  with eps ~ N(0, sigma^2). The loss of one sample is (1/2)(y - w.x)^2; one SGD step draws B fresh
  samples and moves w against the batch-averaged gradient: w <- w + (eta/B) sum_b x_b (y_b - w.x_b).
- e = w - w_star is the error. The excess risk r = L(w) - sigma^2/2 = (1/2) sum_k lam_k e_k^2 is
  computed exactly from w (a population quantity: no test set, no sampling noise). Time counts
  steps.
- Theory: s_k = E[e_k^2] obeys s' = M s + c exactly (and S_ij = E[e_i^2 e_j^2] a closed linear map,
  `FourthMomentMap`). `MomentRecursion` takes the entries as
  callables, which the chapter lambdifies from its SymPy derivation: diag(eta, B, lam_i) = M_ii,
  cross(eta, B, lam_i, lam_j) = M_ij (i != j), const(eta, B, sigma, lam_i) = c_i. Stationary
  quantities are +inf where the spectral radius of M is >= 1 (mean-square unstable).
- Simulation: float64 state and float64 draws, on the device of `lam`; random numbers come from a
  torch.Generator on that device (`lmbook.device_generator` derives one from the chapter's CPU
  generator). Chains of one batch size B run as one tensor (configs x chains x d); different B run
  one after another.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Callable, Sequence

import numpy as np
import scipy.optimize
import scipy.stats
import sympy as sp
import torch

F64 = torch.float64


# ---------------------------------------------------- symbolic: Gaussian moments (Isserlis)


def gaussian_expectation(expr, xs, variances):
    """E[expr] for independent centred Gaussians xs[k] ~ N(0, variances[k]), expr a polynomial in xs
    (other symbols are constants): each monomial prod_k x_k^{n_k} becomes prod_k (n_k - 1)!!
    v_k^{n_k/2}, or 0 if some n_k is odd. This is Isserlis' theorem for a diagonal covariance."""
    xs = list(xs)
    poly = sp.Poly(sp.expand(expr), *xs)
    total = sp.Integer(0)
    for powers, coeff in poly.terms():
        if any(n % 2 for n in powers):
            continue
        term = coeff
        for n, v in zip(powers, variances):
            term *= sp.factorial2(n - 1) * v ** (n // 2)
        total += term
    return sp.expand(total)


def fourth_moment_polynomials():
    """E[e_i'^2 e_j'^2 | e] and E[e_i'^4 | e] for one noise-free SGD step e' = e - (eta/B) sum_b
    x_b (x_b . e), as SymPy polynomials in (e_i, e_j, q) with q = e^T Lambda e.

    Derivation: given e, the pair (x_i, x_j) and s = x . e of one sample are jointly Gaussian, s =
    e_i x_i + e_j x_j + r with r ~ N(0, q - lam_i e_i^2 - lam_j e_j^2) independent (Isserlis via
    `gaussian_expectation`). The batch gradient G is the mean of B iid copies of v = (x_i s,
    x_j s); a moment of G of order n sums over the set partitions of its n factors, a partition into
    k blocks counting B (B-1) ... (B-k+1) index tuples. Returns (off, diag, symbols) with
    symbols = (eta, B, lam_i, lam_j, e_i, e_j, q); diag is E[e_i'^4 | e] (no j)."""
    from sympy.utilities.iterables import multiset_partitions

    eta, B = sp.symbols("eta B", positive=True)
    li, lj = sp.symbols("lambda_i lambda_j", positive=True)
    ei, ej, q = sp.symbols("e_i e_j q", real=True)
    xi, xj, r = sp.symbols("x_i x_j r", real=True)

    def expectation_of_mean(factors, e_j, with_j):
        s = ei * xi + e_j * xj + r
        xs = (xi, xj, r) if with_j else (xi, r)
        var_r = q - li * ei**2 - (lj * e_j**2 if with_j else 0)
        variances = (li, lj, var_r) if with_j else (li, var_r)
        comp = (xi, xj)
        total = sp.Integer(0)
        for part in multiset_partitions(list(range(len(factors)))):
            count = sp.prod([B - m for m in range(len(part))])
            blocks = [gaussian_expectation(sp.prod([comp[factors[m]] * s for m in blk]), xs,
                                           variances) for blk in part]
            total += count * sp.prod(blocks)
        return total / B ** len(factors)

    gi, gj = sp.symbols("g_i g_j")

    def step(poly_expr, e_j, with_j):
        out = sp.Integer(0)
        for (a, b), coeff in sp.Poly(sp.expand(poly_expr), gi, gj).terms():
            factors = [0] * a + [1] * b
            out += coeff * (expectation_of_mean(factors, e_j, with_j) if factors else 1)
        return sp.expand(out)

    off = step((ei - eta * gi) ** 2 * (ej - eta * gj) ** 2, ej, True)
    diag = step((ei - eta * gi) ** 4, 0, False)
    return off, diag, (eta, B, li, lj, ei, ej, q)


@dataclasses.dataclass(frozen=True)
class FourthMomentMap:
    """The linear map S -> S' on S_ij = E[e_i^2 e_j^2] of noise-free SGD (with label noise the map
    is affine with this linear part, fed by the second moments). For a sign-symmetric distribution
    of e (each e_k -> -e_k leaves it unchanged, true from w_star on Gaussian inputs) only even
    monomials survive, and with u = S lam,
    S'_ij = a1 S_ii + a2 S_jj + a3 S_ij + a4 u_i + a5 u_j + a6 lam^T S lam (i != j),
    S'_ii = b1 S_ii + b2 u_i + b3 lam^T S lam. `off(eta, B, li, lj)` returns (a1..a6) and
    `diag(eta, B, li)` returns (b1, b2, b3), lambdified from `fourth_moment_polynomials`."""

    off: Callable
    diag: Callable

    @classmethod
    def from_polynomials(cls, off_poly, diag_poly, symbols):
        eta, B, li, lj, ei, ej, q = symbols
        P, Pd = sp.Poly(off_poly, ei, ej, q), sp.Poly(diag_poly, ei, q)
        slots = [(4, 0, 0), (0, 4, 0), (2, 2, 0), (2, 0, 1), (0, 2, 1), (0, 0, 2)]
        even = {m for m, _ in P.terms() if m[0] % 2 == 0 and m[1] % 2 == 0}
        assert even <= set(slots), even          # odd monomials average to 0 by sign symmetry
        assert {m for m, _ in Pd.terms()} <= {(4, 0), (2, 1), (0, 2)}
        off = [P.coeff_monomial(ei**a * ej**b * q**c) for a, b, c in slots]
        diag = [Pd.coeff_monomial(ei**a * q**c) for a, c in [(4, 0), (2, 1), (0, 2)]]
        return cls(off=sp.lambdify((eta, B, li, lj), off, "numpy"),
                   diag=sp.lambdify((eta, B, li), diag, "numpy"))

    def apply(self, eta, B, lam, S) -> np.ndarray:
        """S' for S of shape (..., d, d)."""
        lam = np.asarray(lam, dtype=float)
        S = np.asarray(S, dtype=float)
        u = S @ lam
        total = u @ lam
        a = [np.broadcast_to(c, S.shape[-2:]) for c in self.off(eta, B, lam[:, None], lam[None, :])]
        b = [np.broadcast_to(c, lam.shape) for c in self.diag(eta, B, lam)]
        diag_s = np.diagonal(S, axis1=-2, axis2=-1)
        out = (a[0] * diag_s[..., :, None] + a[1] * diag_s[..., None, :] + a[2] * S
               + a[3] * u[..., :, None] + a[4] * u[..., None, :] + a[5] * total[..., None, None])
        idx = np.arange(lam.size)
        out[..., idx, idx] = b[0] * diag_s + b[1] * u + b[2] * total[..., None]
        return out

    def spectral_radius(self, eta, B, lam) -> float:
        """The spectral radius of the map on the d^2 states (dense for d <= 40, else ARPACK)."""
        lam = np.asarray(lam, dtype=float)
        d = lam.size
        if d <= 40:
            K = self.apply(eta, B, lam, np.eye(d * d).reshape(d * d, d, d)).reshape(d * d, d * d)
            return float(np.max(np.abs(np.linalg.eigvals(K.T))))
        import scipy.sparse.linalg as sla

        mv = lambda v: self.apply(eta, B, lam, v.reshape(d, d)).ravel()
        op = sla.LinearOperator((d * d, d * d), matvec=mv, dtype=float)
        return float(np.abs(sla.eigs(op, k=1, which="LM", return_eigenvectors=False)[0]))

    def edge(self, B, lam, upper: float, grid: int = 8) -> float:
        """The smallest eta in (0, upper] where the spectral radius reaches 1 (the fourth moments of
        e, the variance of the loss, stop being finite): a coarse grid, then Brent's method."""
        f = lambda eta: self.spectral_radius(eta, B, lam) - 1.0
        prev = upper * 1e-3
        for h in np.linspace(0, upper, grid + 1)[1:]:
            if f(h) >= 0:
                return float(scipy.optimize.brentq(f, prev, h, xtol=1e-8))
            prev = h
        return math.inf


# ---------------------------------------------------- numeric theory: the moment recursion


def power_law_spectrum(d: int, exponent: float) -> np.ndarray:
    """Eigenvalues lam_k = k^(-exponent), k = 1..d."""
    return np.arange(1, d + 1, dtype=float) ** (-float(exponent))


@dataclasses.dataclass(frozen=True)
class MomentRecursion:
    """s' = M s + c for s_k = E[e_k^2]; entries as callables (see the module docstring)."""

    diag: Callable
    cross: Callable
    const: Callable

    def matrix(self, eta, B, lam) -> np.ndarray:
        lam = np.asarray(lam, dtype=float)
        M = np.array(
            np.broadcast_to(self.cross(eta, B, lam[:, None], lam[None, :]), (lam.size, lam.size)),
            dtype=float,
        )
        np.fill_diagonal(M, np.broadcast_to(self.diag(eta, B, lam), lam.shape))
        return M

    def constant(self, eta, B, sigma, lam) -> np.ndarray:
        lam = np.asarray(lam, dtype=float)
        return np.array(np.broadcast_to(self.const(eta, B, sigma, lam), lam.shape), dtype=float)

    def perron(self, eta, B, lam):
        """(rho, v): the Perron root of M (M >= 0, so it is real and equals the spectral radius) and
        its right eigenvector, non-negative and normalised to sum 1."""
        vals, vecs = np.linalg.eig(self.matrix(eta, B, lam))
        k = int(np.argmax(vals.real))
        v = np.abs(vecs[:, k].real)
        return float(vals[k].real), v / v.sum()

    def spectral_radius(self, eta, B, lam) -> float:
        return float(np.max(np.abs(np.linalg.eigvals(self.matrix(eta, B, lam)))))

    def stationary(self, eta, B, sigma, lam) -> np.ndarray:
        """The fixed point s = (I - M)^{-1} c; +inf everywhere when the spectral radius is >= 1."""
        lam = np.asarray(lam, dtype=float)
        if self.spectral_radius(eta, B, lam) >= 1:
            return np.full(lam.shape, np.inf)
        return np.linalg.solve(
            np.eye(lam.size) - self.matrix(eta, B, lam), self.constant(eta, B, sigma, lam)
        )

    def stationary_risk(self, eta, B, sigma, lam) -> float:
        lam = np.asarray(lam, dtype=float)
        return float(0.5 * lam @ self.stationary(eta, B, sigma, lam))

    def risk_path(self, eta, B, sigma, lam, steps: int, s0=None) -> np.ndarray:
        """E[r_t] for t = 0..steps from s_0 = s0 (default 0: the chains start at w_star)."""
        lam = np.asarray(lam, dtype=float)
        M, c = self.matrix(eta, B, lam), self.constant(eta, B, sigma, lam)
        s = np.zeros(lam.size) if s0 is None else np.asarray(s0, dtype=float)
        out = np.empty(steps + 1)
        out[0] = 0.5 * lam @ s
        for t in range(1, steps + 1):
            s = M @ s + c
            out[t] = 0.5 * lam @ s
        return out

    def window_mean(self, eta, B, sigma, lam, burn: int, steps: int, s0=None) -> float:
        """The mean of E[r_t] over t = burn+1 .. burn+steps from s_0 = s0 (default 0: chains started
        at w_star), in closed form. With M = V diag(rho) V^-1, s_t = s* + V diag(rho^t) V^-1 (s_0 -
        s*), so the window sums the geometric series rho^(burn+1) (1 - rho^steps) / (1 - rho) mode
        by mode; the transient decays like rho_max^t, rho_max the Perron root of M. +inf where s*
        does not exist."""
        lam = np.asarray(lam, dtype=float)
        s_star = self.stationary(eta, B, sigma, lam)
        if not np.isfinite(s_star).all():
            return math.inf
        rho, V = np.linalg.eig(self.matrix(eta, B, lam))
        start = np.zeros(lam.size) if s0 is None else np.asarray(s0, dtype=float)
        coef = np.linalg.solve(V, start - s_star)
        geometric = rho ** (burn + 1) * (1 - rho**steps) / (1 - rho) / steps
        return float(0.5 * lam @ (s_star + (V @ (geometric * coef)).real))

    def eta_max(self, B, lam, grid: int = 100) -> float:
        """The smallest eta > 0 at which the spectral radius of M reaches 1, searched on (0,
        2/max(lam)] (at 2/max(lam) even full-batch gradient descent is marginal) and refined with
        Brent's method."""
        lam = np.asarray(lam, dtype=float)
        f = lambda eta: self.spectral_radius(eta, B, lam) - 1.0
        etas = np.linspace(0, 2.0 / lam.max(), grid + 1)[1:]
        vals = np.array([f(e) for e in etas])
        up = np.flatnonzero(vals >= 0)
        if up.size == 0:
            return math.inf
        k = int(up[0])
        if k == 0:
            return float(scipy.optimize.brentq(f, etas[0] * 1e-6, etas[0], xtol=1e-14))
        return float(scipy.optimize.brentq(f, etas[k - 1], etas[k], xtol=1e-14))


# ---------------------------------------------------------------- simulation


@contextlib.contextmanager
def one_thread_on_cpu(device):
    """Run tiny per-step tensor ops on one CPU thread: splitting a (configs x chains x B x d) tensor
    of a few 10^5 elements across threads costs more in synchronisation than it saves, and on a
    loaded machine several times more. No effect on other devices; the thread count is restored
    after."""
    if torch.device(device).type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


_one_thread_on_cpu = one_thread_on_cpu      # the former private name, kept for compatibility


def excess_risk(w: torch.Tensor, w_star: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """(1/2) sum_k lam_k (w - w_star)_k^2 over the last axis."""
    e = w - w_star
    return 0.5 * (e * e) @ lam


def draw_batch(shape, B: int, lam: torch.Tensor, w_star: torch.Tensor, sigma: float, generator):
    """B fresh samples for every chain of `shape`: x (*shape, B, d) ~ N(0, diag(lam)), y = x.w_star
    + eps."""
    z = torch.randn(*shape, B, lam.numel() + 1, generator=generator, dtype=F64, device=lam.device)
    x = z[..., :-1] * lam.sqrt()
    y = x @ w_star + sigma * z[..., -1]
    return x, y


def sgd_update(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor, eta) -> torch.Tensor:
    """w - eta * grad of (1/B) sum_b (1/2)(y_b - w.x_b)^2, for w (..., d), x (..., B, d), y (...,
    B); eta is a number or broadcasts against w (e.g. shape (n, 1, 1) for n configs)."""
    resid = y - (x @ w.unsqueeze(-1)).squeeze(-1)
    return w + eta / x.shape[-2] * (resid.unsqueeze(-2) @ x).squeeze(-2)


@dataclasses.dataclass
class StationaryRuns:
    """Time-averaged excess risk of every chain: `chain_means[i, c]` for configs[i] = (eta, B)."""

    configs: list
    chain_means: torch.Tensor
    burn: int
    steps: int

    @property
    def mean(self) -> np.ndarray:
        return self.chain_means.mean(1).cpu().numpy()

    @property
    def se(self) -> np.ndarray:
        return (self.chain_means.std(1) / math.sqrt(self.chain_means.shape[1])).cpu().numpy()

    def of(self, eta, B) -> torch.Tensor:
        """The chain means of one config."""
        return self.chain_means[self.configs.index((eta, B))]


def stationary_runs(
    configs: Sequence,
    lam: torch.Tensor,
    sigma: float,
    w_star: torch.Tensor,
    chains: int,
    burn: int,
    steps: int,
    generator: torch.Generator,
) -> StationaryRuns:
    """Run `chains` independent online-SGD chains for every (eta, B) in `configs`, all started at
    w_star; discard `burn` steps and average the excess risk over the next `steps` (after each
    update)."""
    configs = [(float(eta), int(B)) for eta, B in configs]
    out = torch.empty(len(configs), chains, dtype=F64, device=lam.device)
    with one_thread_on_cpu(lam.device):
        for B in sorted({B for _, B in configs}):
            _run_batch_size(configs, B, lam, sigma, w_star, chains, burn, steps, generator, out)
    return StationaryRuns(configs, out, burn, steps)


def _run_batch_size(configs, B, lam, sigma, w_star, chains, burn, steps, generator, out):
    """The chains of every config with batch size B, as one tensor; their time averages go into
    out."""
    idx = [i for i, (_, b) in enumerate(configs) if b == B]
    eta = torch.tensor([configs[i][0] for i in idx], dtype=F64, device=lam.device).reshape(-1, 1, 1)
    w = w_star.expand(len(idx), chains, -1).clone()
    acc = torch.zeros(len(idx), chains, dtype=F64, device=lam.device)
    for t in range(burn + steps):
        x, y = draw_batch((len(idx), chains), B, lam, w_star, sigma, generator)
        w = sgd_update(w, x, y, eta)
        if t >= burn:
            acc += excess_risk(w, w_star, lam)
    out[idx] = acc / steps


def one_step_growth(
    etas, B: int, lam: torch.Tensor, e0: torch.Tensor, chains: int, generator: torch.Generator
) -> torch.Tensor:
    """r_1 / r_0 of every chain after one SGD step on noise-free labels (sigma = 0) from w = w_star
    + e0[i] at step etas[i]: shape (len(etas), chains). Its mean is the mean-square growth of the
    loss in one step. Every (step size, chain) draws its own minibatch."""
    w_star = torch.zeros(lam.numel(), dtype=F64, device=lam.device)
    eta = torch.as_tensor(etas, dtype=F64, device=lam.device).reshape(-1, 1, 1)
    w0 = e0.to(lam.device, F64)[:, None, :].expand(-1, chains, -1)
    x, y = draw_batch(w0.shape[:2], B, lam, w_star, 0.0, generator)
    return excess_risk(sgd_update(w0, x, y, eta), w_star, lam) / excess_risk(w0, w_star, lam)


def lyapunov_exponents(
    etas, B: int, lam: torch.Tensor, chains: int, steps: int, burn: int, generator: torch.Generator
) -> torch.Tensor:
    """The top Lyapunov exponent of SGD's error, per chain: (1/steps) sum_t ln(|e_{t+1}| / |e_t|)
    with |e| = sqrt(2 r), on noise-free labels (label noise adds a constant, not a multiplicative
    factor), renormalising |e| to 1 after each step; random start, `burn` steps discarded. Shape
    (len(etas), chains). Negative: a single run contracts (with label noise it stays finite);
    positive: it diverges. Common random numbers: chain c uses the same start and the same
    minibatches at every step size."""
    w_star = torch.zeros(lam.numel(), dtype=F64, device=lam.device)
    eta = torch.as_tensor(etas, dtype=F64, device=lam.device).reshape(-1, 1, 1)
    w = torch.randn(1, chains, lam.numel(), generator=generator, dtype=F64, device=lam.device)
    w = (w / excess_risk(w, w_star, lam).mul(2).sqrt().unsqueeze(-1)).expand(eta.shape[0], -1, -1)
    acc = torch.zeros(eta.shape[0], chains, dtype=F64, device=lam.device)
    with one_thread_on_cpu(lam.device):
        for t in range(burn + steps):
            x, y = draw_batch((1, chains), B, lam, w_star, 0.0, generator)
            w = sgd_update(w, x, y, eta)
            norm = excess_risk(w, w_star, lam).mul(2).sqrt()
            if t >= burn:
                acc += norm.log()
            w = w / norm.unsqueeze(-1)
    return acc / steps
