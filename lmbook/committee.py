"""Online SGD in soft committee machines: the order-parameter ODEs of Saad and Solla (1995) and
Biehl and Schwarze (1995), in the notation of Goldt et al. (2019), and a batched SGD simulator.

Conventions
- g(z) = erf(z / sqrt 2), g'(z) = sqrt(2/pi) exp(-z^2/2).
- Input x ~ N(0, I_N), fresh at every step (online learning). Student with K hidden units
  w_k in R^N, output sum_k g(lambda_k), lambda_k = w_k.x / sqrt N; teacher with M units B_m,
  output sum_m g(nu_m), nu_m = B_m.x / sqrt N. Loss 1/2 (student - teacher)^2.
- SGD: w_k <- w_k + (eta / sqrt N) delta_k x, delta_k = g'(lambda_k) (sum_m g(nu_m) -
  sum_j g(lambda_j)); time alpha = steps / N.
- Order parameters Q = w w^T / N (K x K), R = w B^T / N (K x M), T = B B^T / N (M x M).
  The fields u = (lambda_1..lambda_K, nu_1..nu_M) are Gaussian with covariance
  C = [[Q, R], [R^T, T]] (L x L, L = K + M); s = (-1,...,-1, +1,...,+1) signs the error
  sum_c s_c g(u_c) = teacher - student.
- Gaussian averages (indices into C; closed forms derived by `derive_averages`):
      I2(a,b)     = E[g(u_a) g(u_b)]
                  = (2/pi) arcsin(C_ab / sqrt((1 + C_aa)(1 + C_bb)))
      I3(a,b,c)   = E[g'(u_a) u_b g(u_c)]
                  = (2/pi) (C_bc (1 + C_aa) - C_ab C_ac) / ((1 + C_aa) sqrt(L3)),
                    L3 = (1 + C_aa)(1 + C_cc) - C_ac^2
      I4(a,b,c,d) = E[g'(u_a) g'(u_b) g(u_c) g(u_d)]
                  = (4/pi^2) L4^(-1/2) arcsin(L0 / sqrt(L1 L2)),  L4 = (1+C_aa)(1+C_bb) - C_ab^2,
                    L0 = L4 C_cd - C_bc C_bd (1+C_aa) - C_ac C_ad (1+C_bb)
                         + C_ab C_ac C_bd + C_ab C_ad C_bc,
                    L1 = L4 (1+C_cc) - C_bc^2 (1+C_aa) - C_ac^2 (1+C_bb) + 2 C_ab C_ac C_bc,
                    L2 = the same with d for c.
- Generalisation error eps_g = 1/2 sum_{c,d} s_c s_d I2(c,d) (= (1/pi) times a signed sum of
  arcsins).
- The ODEs (N -> infinity, T constant):
      dR_in/dalpha = eta sum_c s_c I3(i, K+n, c)
      dQ_ik/dalpha = eta sum_c s_c [I3(i,k,c) + I3(k,i,c)] + eta^2 sum_{c,d} s_c s_d I4(i,k,c,d)
  The eta^2 term is the variance of the SGD step (|x|^2 / N -> 1); `small_eta=True` drops it
  (the gradient-flow limit).
- Arrays: Q (..., K, K), R (..., K, M), T (M, M) or (..., M, M); leading dims batch students.
  The state vector of the ODE is (Q upper triangle, R) per student, flattened.

The three- and four-point averages I3, I4 could move to lmbook.gaussian_averages, which holds the
two-point erf averages (`phiphi` at a = 1/sqrt 2 is I2).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import sympy as sp
import torch
from scipy.integrate import solve_ivp
from scipy.optimize import root

from . import gaussian_averages

__all__ = ["derive_averages", "i2", "i3", "i4", "field_covariance", "eps_g", "rhs", "pack",
           "unpack", "integrate", "symmetric_fixed_point", "jacobian", "escape_eigen",
           "simulate", "simulate_fields", "initial_gram", "order_parameters", "g", "dg",
           "extrapolation_weights"]


# ----------------------------------------------------------------------------- Gaussian averages

def _tilt(C, idx):
    """Gaussian tilt: E_C[exp(-1/2 sum_{i in idx} u_i^2) F(u)] = det(I + C_SS)^(-1/2) E_C'[F]
    with C' = C - C_{:,S} (I + C_SS)^(-1) C_{S,:}. Returns (det(I + C_SS), C') (C' unsimplified)."""
    cs = C[:, idx]
    m = sp.eye(len(idx)) + C.extract(idx, idx)
    return sp.expand(m.det()), C - cs * m.inv() * cs.T


def derive_averages():
    """SymPy derivation of I2, I3, I4 for g = erf(z/sqrt 2) (module docstring), in about a second.

    Write g'(z) = sqrt(2/pi) exp(-z^2/2): a product of g' factors tilts the Gaussian (`_tilt`).
    - I2: Price's theorem, dI2/dC_ab = E[g'(u_a) g'(u_b)] = (2/pi) det(I + C)^(-1/2) (a tilt),
      integrated from C_ab = 0 (where I2 vanishes, g being odd); it is lmbook.gaussian_averages'
      E[erf(a u) erf(a v)] at a = 1/sqrt 2 (checked in the tests).
    - I3: E[g'(u_a) u_b g(u_c)] = sqrt(2/pi) det^(-1/2) E'[u_b g(u_c)], and by Stein's lemma
      E'[u_b g(u_c)] = C'_bc E'[g'(u_c)] = C'_bc sqrt(2/pi) (1 + C'_cc)^(-1/2) (a tilt again).
    - I4: E[g'(u_a) g'(u_b) g(u_c) g(u_d)] = (2/pi) det^(-1/2) I2(C'_cc, C'_cd, C'_dd).
    The square roots are combined (det (1 + C'_cc) etc. cancelled to polynomials) so that the
    results are the printed closed forms exactly. Returns dict(C3, C4 (symmetric symbol
    matrices), I2 (of C3's first two fields), I3, I4, I3_saad_solla, I4_saad_solla (the forms of
    the module docstring, typed from Saad and Solla 1995, to be compared))."""
    sym = lambda n: sp.Matrix(n, n, lambda i, j: sp.Symbol(  # noqa: E731
        f"C_{min(i, j) + 1}{max(i, j) + 1}", real=True))
    C3, C4 = sym(3), sym(4)
    A = sp.Symbol("A", positive=True)
    t, c = sp.Symbol("t", real=True), sp.Symbol("c", real=True)
    # dI2/dC_12 = (2/pi) / sqrt(det(I + C)) = (2/pi) / sqrt(A - C_12^2), A = (1 + C_11)(1 + C_22)
    two_point = 2 / sp.pi * sp.integrate(1 / sp.sqrt(A - t**2), (t, 0, c), conds="none")

    def i2_of(c11, c12, c22):
        return two_point.subs({A: (1 + c11) * (1 + c22), c: c12}, simultaneous=True)

    I2 = i2_of(C3[0, 0], C3[0, 1], C3[1, 1])
    det3, C3t = _tilt(C3, [0])
    # sqrt(2/pi)^2 det3^(-1/2) C'_23 (1 + C'_33)^(-1/2): combine the roots
    I3 = 2 / sp.pi * sp.cancel(C3t[1, 2]) / sp.sqrt(sp.factor(sp.cancel(det3 * (1 + C3t[2, 2]))))
    det4, C4t = _tilt(C4, [0, 1])
    cd, cc, dd = (sp.cancel(C4t[i, j]) for i, j in ((2, 3), (2, 2), (3, 3)))
    n_cd, den = sp.fraction(cd)                  # the common denominator is det4
    n_cc, n_dd = (sp.expand(sp.cancel((1 + x) * den)) for x in (cc, dd))
    assert sp.expand(den - det4) == 0
    I4 = 4 / sp.pi**2 / sp.sqrt(det4) * sp.asin(n_cd / sp.sqrt(n_cc * n_dd))

    e = lambda M, i, j: M[i - 1, j - 1]  # noqa: E731
    l3 = (1 + e(C3, 1, 1)) * (1 + e(C3, 3, 3)) - e(C3, 1, 3) ** 2
    I3_ss = 2 / sp.pi * (e(C3, 2, 3) * (1 + e(C3, 1, 1)) - e(C3, 1, 2) * e(C3, 1, 3)) / (
        (1 + e(C3, 1, 1)) * sp.sqrt(l3))
    C = lambda i, j: e(C4, i, j)  # noqa: E731
    l4 = (1 + C(1, 1)) * (1 + C(2, 2)) - C(1, 2) ** 2
    l0 = (l4 * C(3, 4) - C(2, 3) * C(2, 4) * (1 + C(1, 1)) - C(1, 3) * C(1, 4) * (1 + C(2, 2))
          + C(1, 2) * C(1, 3) * C(2, 4) + C(1, 2) * C(1, 4) * C(2, 3))

    def l12(k):
        return (l4 * (1 + C(k, k)) - C(2, k) ** 2 * (1 + C(1, 1)) - C(1, k) ** 2 * (1 + C(2, 2))
                + 2 * C(1, 2) * C(1, k) * C(2, k))

    I4_ss = 4 / sp.pi**2 / sp.sqrt(l4) * sp.asin(l0 / sp.sqrt(l12(3) * l12(4)))
    return dict(C3=C3, C4=C4, I2=I2, I3=I3, I4=I4, I3_saad_solla=I3_ss, I4_saad_solla=I4_ss)


def _entries(n):
    return [sp.Symbol(f"C_{i + 1}{j + 1}", real=True) for i in range(n) for j in range(i, n)]


@functools.cache
def _lambdified():
    d = derive_averages()
    f3 = sp.lambdify(_entries(3), d["I3"], "numpy")
    f4 = sp.lambdify(_entries(4), d["I4"], "numpy")
    return f3, f4


def _upper(C, idx):
    """The upper-triangle entries of C restricted to the index arrays idx (broadcast)."""
    n = len(idx)
    return [C[..., idx[i], idx[j]] for i in range(n) for j in range(i, n)]


def i2(C, a, b):
    """I2(a, b) = E[g(u_a) g(u_b)] for fields with covariance C (..., L, L); a, b index arrays."""
    return gaussian_averages.phiphi(C[..., a, a], C[..., a, b], C[..., b, b], 1 / math.sqrt(2))


def i3(C, a, b, c):
    """I3(a, b, c) = E[g'(u_a) u_b g(u_c)], from the SymPy derivation (lambdified)."""
    return _lambdified()[0](*_upper(C, [a, b, c]))


def i4(C, a, b, c, d):
    """I4(a, b, c, d) = E[g'(u_a) g'(u_b) g(u_c) g(u_d)], from the SymPy derivation."""
    return _lambdified()[1](*_upper(C, [a, b, c, d]))


# ----------------------------------------------------------------------------- the ODEs

def field_covariance(Q, R, T):
    """C = [[Q, R], [R^T, T]] with batch dims broadcast (numpy)."""
    Q, R, T = (np.asarray(x, dtype=np.result_type(x, float)) for x in (Q, R, T))
    batch = np.broadcast_shapes(Q.shape[:-2], R.shape[:-2], T.shape[:-2])
    K, M = R.shape[-2:]
    C = np.zeros(batch + (K + M, K + M), dtype=np.result_type(Q, R, T))
    C[..., :K, :K] = Q
    C[..., :K, K:] = R
    C[..., K:, :K] = np.swapaxes(R, -1, -2)
    C[..., K:, K:] = T
    return C


def _signs(K, M):
    return np.r_[-np.ones(K), np.ones(M)]


def eps_g(Q, R, T):
    """Generalisation error 1/2 E[(teacher - student)^2] (numpy, batch dims allowed)."""
    C = field_covariance(Q, R, T)
    K, M = np.shape(R)[-2:]
    s = _signs(K, M)
    L = K + M
    a, b = np.ix_(range(L), range(L))
    return 0.5 * np.einsum("...cd,c,d->...", i2(C, a, b), s, s)


def rhs(Q, R, T, eta, small_eta=False):
    """(dQ/dalpha, dR/dalpha) of the module docstring; batch dims allowed."""
    C = field_covariance(Q, R, T)
    K, M = np.shape(R)[-2:]
    L = K + M
    s = _signs(K, M)
    a, b, c = np.ix_(range(K), range(L), range(L))
    I3 = i3(C, a, b, c)                                    # (..., K, L, L): (i, b, c)
    drive = np.einsum("...ibc,c->...ib", I3, s)            # sum_c s_c I3(i, b, c)
    dR = eta * drive[..., K:]
    dQ = eta * (drive[..., :K] + np.swapaxes(drive[..., :K], -1, -2))
    if not small_eta:
        a, b, c, d = np.ix_(range(K), range(K), range(L), range(L))
        dQ = dQ + eta**2 * np.einsum("...ikcd,c,d->...ik", i4(C, a, b, c, d), s, s)
    return dQ, dR


def pack(Q, R):
    """State vector(s): (..., K(K+1)/2 + K M) from Q's upper triangle and R."""
    K = np.shape(Q)[-1]
    iu = np.triu_indices(K)
    return np.concatenate([np.asarray(Q)[..., iu[0], iu[1]],
                           np.asarray(R).reshape(np.shape(R)[:-2] + (-1,))], -1)


def unpack(y, K, M):
    """Inverse of `pack`."""
    y = np.asarray(y)
    iu = np.triu_indices(K)
    nq = len(iu[0])
    Q = np.zeros(y.shape[:-1] + (K, K), dtype=y.dtype)
    Q[..., iu[0], iu[1]] = y[..., :nq]
    Q[..., iu[1], iu[0]] = y[..., :nq]
    return Q, y[..., nq:].reshape(y.shape[:-1] + (K, M))


def integrate(Q0, R0, T, eta, alphas, small_eta=False, rtol=1e-9, atol=1e-11):
    """Integrate the ODEs from (Q0, R0) (batch dims allowed: all students in one stacked system)
    with scipy's solve_ivp (DOP853), returning Q, R at `alphas`: (len(alphas), ..., K, K) and
    (len(alphas), ..., K, M)."""
    Q0, R0 = np.asarray(Q0, float), np.asarray(R0, float)
    K, M = R0.shape[-2:]
    y0 = pack(Q0, R0)
    shape = y0.shape

    def f(_, y):
        Q, R = unpack(y.reshape(shape), K, M)
        return pack(*rhs(Q, R, T, eta, small_eta)).ravel()

    alphas = np.asarray(alphas, float)
    sol = solve_ivp(f, (0.0, float(alphas[-1])), y0.ravel(), method="DOP853", t_eval=alphas,
                    rtol=rtol, atol=atol)
    if not sol.success:
        raise RuntimeError(sol.message)
    return unpack(sol.y.T.reshape((len(alphas),) + shape), K, M)


def symmetric_fixed_point(K, eta, T=None, guess=(0.5, 0.3, 0.4), small_eta=False):
    """The unspecialised (plateau) fixed point for a K = M committee with teacher overlaps T
    (default identity): Q_ii = q, Q_ik = c (i != k), R_in = r for all i, n. Solved by
    scipy.optimize.root on the three symmetric components of the RHS. Returns (Q, R)."""
    T = np.eye(K) if T is None else np.asarray(T, float)

    def build(p):
        q, cc, r = p
        return cc * np.ones((K, K)) + (q - cc) * np.eye(K), r * np.ones((K, K))

    def f(p):
        dQ, dR = rhs(*build(p), T, eta, small_eta)
        return [dQ[0, 0], dQ[0, 1] if K > 1 else 0.0, dR[0, 0]]

    sol = root(f, guess, tol=1e-13)
    if not np.abs(f(sol.x)).max() < 1e-11:
        raise RuntimeError(f"no symmetric fixed point found from {guess}: {sol.message}")
    return build(sol.x)


def jacobian(Q, R, T, eta, small_eta=False, h=1e-30):
    """The Jacobian of the packed RHS at (Q, R), by complex-step differentiation (exact to
    rounding: d f/d y_j = Im f(y + i h e_j) / h, no truncation error for analytic f)."""
    K, M = np.shape(R)
    y = pack(Q, R).astype(complex)
    n = len(y)
    Y = y[None, :] + 1j * h * np.eye(n)
    dQ, dR = rhs(*unpack(Y, K, M), np.asarray(T, complex), eta, small_eta)
    return np.imag(pack(dQ, dR)).T / h


def escape_eigen(Q, R, T, eta, small_eta=False):
    """(eigenvalue, right eigenvector, left eigenvector) of the Jacobian with the largest real
    part: the escape rate from a fixed point (positive: unstable) and its direction (packed
    coordinates). The left eigenvector is normalised so that left . right = 1."""
    J = jacobian(Q, R, T, eta, small_eta)
    w, V = np.linalg.eig(J)
    k = int(np.argmax(w.real))
    wl, U = np.linalg.eig(J.T)
    kl = int(np.argmin(np.abs(wl - w[k])))
    v, u = np.real(V[:, k]), np.real(U[:, kl])
    return float(w[k].real), v, u / (u @ v)


# ----------------------------------------------------------------------------- simulation

def initial_gram(S, K, M, N, sigma, rng):
    """Gram matrices C = W W^T / N (S, L, L) of S students drawn as w_k ~ N(0, sigma^2 I_N) and
    a teacher with orthogonal rows of norm sqrt N (T = I exactly): the fields' covariance at
    initialisation. rng: numpy Generator."""
    L = K + M
    X = rng.standard_normal((S, N, L))
    q, _ = np.linalg.qr(X[:, :, K:])                         # teacher: orthonormal columns
    W = np.concatenate([sigma * X[:, :, :K], math.sqrt(N) * q], -1)
    return np.swapaxes(W, -1, -2) @ W / N


def simulate_fields(C0, K, N, eta, steps, every, rng, chunk=512):
    """Online SGD at input dimension N, simulated exactly through its order parameters.

    With a fresh x ~ N(0, I_N) at every step, the fields u = (lambda, nu) are N(0, C) given the
    current Gram matrix C = W W^T / N of the L = K + M vectors (students, teacher), and
    |x|^2 = u^T C^-1 u + chi^2_{N-L}, with the chi^2 independent of u (the part of x orthogonal
    to the L vectors). The SGD step of the module docstring changes C by
        dQ_kl = (eta/N) (delta_k lambda_l + delta_l lambda_k) + (eta^2/N) delta_k delta_l |x|^2/N,
        dR_km = (eta/N) delta_k nu_m,
    so (Q, R) is an exact Markov chain: SGD at finite N with no large-N approximation, at a cost
    per step independent of N (`simulate` is the same SGD on the weights). C0 (S, L, L) from
    `initial_gram`; the teacher block stays fixed. rng: numpy Generator. Returns
    (alphas, Q (n_rec, S, K, K), R (n_rec, S, K, M)), recorded at step 0 and every `every` steps."""
    from scipy.special import erf

    C0 = np.asarray(C0, dtype=float)
    S, L, _ = C0.shape
    T = C0[0, K:, K:]
    assert np.allclose(C0[:, K:, K:], T), "one teacher overlap matrix T for all students"
    # Whitened teacher fields nu~ = Lt^-1 nu ~ N(0, I), R~ = R Lt^-T: lambda | nu = R~ nu~ +
    # chol(Q - R~ R~^T) z, and dR~ = (eta/N) delta nu~^T. Students are the last axis (S,
    # contiguous), so that every operation is one vectorised pass over the students.
    Lt = np.linalg.cholesky(T)
    Q = np.ascontiguousarray(np.moveaxis(C0[:, :K, :K], 0, -1))            # (K, K, S)
    R = np.ascontiguousarray(np.moveaxis(C0[:, :K, K:] @ np.linalg.inv(Lt).T, 0, -1))
    c1, c2 = eta / N, eta * eta / N / N
    r2, r2pi = 1 / math.sqrt(2), math.sqrt(2 / math.pi)
    Lc = np.zeros((K, K, S))

    def snapshot():
        return np.moveaxis(Q, -1, 0).copy(), np.moveaxis(R, -1, 0) @ Lt.T

    rec = [snapshot()]
    t = 0
    while t < steps:
        c = min(chunk, steps - t)
        Z = rng.standard_normal((c, L, S))
        xx = rng.chisquare(N - L, (c, S)) + (Z * Z).sum(1)             # |x|^2
        nu_t = Z[:, K:]                                                  # whitened (c, M, S)
        target = erf(np.einsum("mn,cns->cms", Lt, nu_t) * r2).sum(1)   # teacher outputs
        for j in range(c):
            nut = nu_t[j]
            sigma = Q - (R[:, None] * R[None]).sum(2)                    # Q - R~ R~^T
            for k in range(K):                                           # Cholesky, by rows
                for i in range(k):
                    Lc[k, i] = (sigma[k, i] - (Lc[k, :i] * Lc[i, :i]).sum(0)) / Lc[i, i]
                Lc[k, k] = np.sqrt(sigma[k, k] - (Lc[k, :k] ** 2).sum(0))
            lam = (R * nut[None]).sum(1) + (Lc * Z[j, None, :K]).sum(1)  # (K, S)
            err = target[j] - erf(lam * r2).sum(0)
            delta = (r2pi * err) * np.exp(-0.5 * lam * lam)
            half = delta[:, None] * (c1 * lam[None] + (0.5 * c2 * xx[j]) * delta[None])
            Q += half + half.transpose(1, 0, 2)
            R += c1 * delta[:, None] * nut[None]
            if (t + j + 1) % every == 0:
                rec.append(snapshot())
        t += c
    alphas = np.arange(len(rec)) * every / N
    return alphas, np.stack([q for q, _ in rec]), np.stack([r for _, r in rec])


def extrapolation_weights(Ns):
    """Weights w_j with sum_j w_j y_j = the least-squares intercept a of y = a + c / N fitted to
    one value y_j per input dimension N_j (the N -> infinity limit of a quantity whose finite-N
    correction is O(1/N)). They sum to 1 and do not depend on the y_j, so w applied to one
    replicate from each ensemble is a replicate of the intercept. Ns = (100, 200, 400) gives
    (-1/2, 1/2, 1)."""
    x = 1.0 / np.asarray(Ns, dtype=float)
    if len(x) < 2 or np.ptp(x) == 0:
        raise ValueError(f"need at least two different N, got {Ns}")
    d = x - x.mean()
    return 1.0 / len(x) - x.mean() * d / (d @ d)


def g(z):
    """erf(z / sqrt 2) (torch)."""
    return torch.erf(z * (1 / math.sqrt(2)))


def dg(z):
    """g'(z) = sqrt(2/pi) exp(-z^2 / 2) (torch)."""
    return math.sqrt(2 / math.pi) * torch.exp(-0.5 * z * z)


def order_parameters(w, B):
    """(Q, R, T) of students w (S, K, N) and teacher B (M, N) or (S, M, N), as torch tensors."""
    N = w.shape[-1]
    Bs = B.expand(w.shape[0], *B.shape[-2:])
    return (w @ w.transpose(-1, -2) / N, w @ Bs.transpose(-1, -2) / N,
            Bs @ Bs.transpose(-1, -2) / N)


def simulate(w0, B, eta, steps, every, generator, data=None, chunk=256):
    """Online SGD (module docstring) for S students at once: w0 (S, K, N), teacher B (M, N) or
    (S, M, N) (one teacher per student). A fresh x ~ N(0, I_N) per student and step, unless
    `data` (S, P, N) is given: then each step draws one of that student's P samples uniformly
    (with replacement), i.e. a finite training set reused over epochs. Records Q and R every
    `every` steps (and at 0). Returns (w, Q (n_rec, S, K, K), R (n_rec, S, K, M)) on w0's device
    and dtype."""
    w = w0.clone()
    S, K, N = w.shape
    Bs = B.expand(S, *B.shape[-2:])
    dev, dt = w.device, w.dtype
    scale = eta / math.sqrt(N)
    rq, rr = [], []

    def record():
        Q, R, _ = order_parameters(w, Bs)
        rq.append(Q.clone())
        rr.append(R.clone())

    record()
    rows = torch.arange(S, device=dev)[:, None]
    t = 0
    while t < steps:
        c = min(chunk, steps - t, every - t % every)
        if data is None:
            X = torch.randn(S, c, N, generator=generator, device=dev, dtype=dt)
        else:
            idx = torch.randint(data.shape[1], (S, c), generator=generator, device=dev)
            X = data[rows, idx]
        nu = X @ Bs.transpose(-1, -2) / math.sqrt(N)           # (S, c, M): teacher fixed
        target = g(nu).sum(-1)                                  # (S, c)
        for j in range(c):
            x = X[:, j]                                         # (S, N)
            lam = torch.bmm(w, x[:, :, None])[..., 0] / math.sqrt(N)
            err = target[:, j] - g(lam).sum(-1)
            delta = dg(lam) * err[:, None] * scale              # (S, K)
            w.baddbmm_(delta[:, :, None], x[:, None, :])
        t += c
        if t % every == 0:
            record()
    return w, torch.stack(rq), torch.stack(rr)
