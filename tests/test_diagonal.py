import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad

from lmbook import diagonal as dg

F64 = torch.float64


@pytest.fixture(scope="module")
def problem():
    X, y, beta_star = dg.sparse_task(3, 12, 30, 2, torch.Generator().manual_seed(0))
    return X, y, beta_star


def test_q_is_the_integral_of_the_mirror_map():
    for z in (-7.0, -0.3, 0.0, 0.5, 4.0, 60.0):
        integral = quad(lambda s: math.asinh(s / 2), 0.0, z)[0]
        assert abs(dg.q(z) - integral) < 1e-9 * max(1.0, abs(integral))
    z = 1e-3
    assert abs(dg.q(z) - z**2 / 4) < 1e-14


@pytest.mark.parametrize("alpha", [1e-4, 1e-2, 0.3, 1.0, 10.0, 1e2])
def test_interpolator_solves_the_kkt_conditions(problem, alpha):
    X, y, _ = problem
    beta, mu = dg.interpolator(X, y, alpha, return_mu=True)
    assert torch.allclose(torch.einsum("rnd,rd->rn", X, beta), y, atol=1e-9)
    assert torch.allclose(beta, 2 * alpha**2 * torch.sinh(torch.einsum("rnd,rn->rd", X, mu)),
                          rtol=1e-10, atol=1e-14)
    # Q_alpha is minimal on the affine set: no null-space perturbation lowers it
    gen = torch.Generator().manual_seed(1)
    for r in range(len(X)):
        Xr = X[r].numpy()
        null = np.linalg.svd(Xr)[2][Xr.shape[0]:]
        q0 = dg.Q(beta[r].numpy(), alpha)
        for _ in range(5):
            step = null.T @ torch.randn(null.shape[0], generator=gen, dtype=F64).numpy()
            for eps in (1e-3, 1e-1):
                assert dg.Q(beta[r].numpy() + eps * step * max(alpha**2, 1e-3), alpha) >= q0 - 1e-12


def test_limits_are_min_l2_and_min_l1(problem):
    X, y, beta_star = problem
    l2, l1 = dg.min_l2(X, y), dg.min_l1(X, y)
    assert torch.allclose(torch.einsum("rnd,rd->rn", X, l1), y, atol=1e-8)
    big = dg.interpolator(X, y, 100.0)
    assert ((big - l2).norm(dim=-1) / l2.norm(dim=-1)).max() < 1e-6
    small = dg.interpolator(X, y, 1e-4)
    assert ((small - l1).norm(dim=-1) / l1.norm(dim=-1)).max() < 1e-2
    # the l1 norm moves monotonically from min-l1 to min-l2 as alpha grows
    norms = torch.stack([dg.interpolator(X, y, a).abs().sum(-1)
                         for a in (1e-4, 1e-2, 0.1, 1.0, 100.0)])
    assert (norms.diff(dim=0) > -1e-9).all()
    assert (l1.abs().sum(-1) <= norms[0] + 1e-9).all()
    assert torch.allclose(norms[-1], l2.abs().sum(-1), rtol=1e-6)


def test_per_coordinate_alpha_reduces_to_scalar(problem):
    X, y, _ = problem
    scalar = dg.interpolator(X, y, 0.2)
    vector = dg.interpolator(X, y, torch.full((3, 30), 0.2, dtype=F64), per_coordinate=True)
    assert torch.allclose(scalar, vector, atol=1e-12)


@pytest.mark.parametrize("alpha", [0.05, 0.3, 2.0])
def test_interpolator_matches_long_small_step_gradient_descent(problem, alpha):
    """Brute force: gradient descent at a small step, run long, lands on the Q_alpha interpolator
    of its own outputs (exact for the flow at any time) and near beta_alpha; the remaining
    difference is first order in the step (halving the step halves it)."""
    X, y, _ = problem
    lam = torch.linalg.eigvalsh(X @ X.transpose(1, 2) / X.shape[1]).max().item()
    lr = min(0.02, 0.1 / (8 * alpha**2 * lam))
    errs = []
    for halvings in (0, 1):
        out = dg.train(X, y, torch.tensor([alpha]), lr / 2**halvings, 4000 * 2**halvings)
        beta = out["beta"][:, 0]
        assert out["loss"].max() < 1e-4
        target = dg.interpolator(X, torch.einsum("rnd,rd->rn", X, beta), alpha)
        errs.append(((beta - target).norm(dim=-1) / target.norm(dim=-1)).max().item())
    limit = dg.interpolator(X, y, alpha)
    assert ((beta - limit).norm(dim=-1) / limit.norm(dim=-1)).max() < 5e-2
    assert errs[0] < 1e-2
    assert errs[1] < 0.6 * errs[0] + 1e-9


def test_gradient_matches_autograd(problem):
    X, y, _ = problem
    u = torch.rand(3, 30, dtype=F64, generator=torch.Generator().manual_seed(2)).requires_grad_()
    v = torch.rand(3, 30, dtype=F64, generator=torch.Generator().manual_seed(3)).requires_grad_()
    beta = u * u - v * v
    loss = ((torch.einsum("rnd,rd->rn", X, beta) - y) ** 2).sum() / (2 * X.shape[1])
    gu, gv = torch.autograd.grad(loss, (u, v))
    g = torch.einsum("rnd,rn->rd", X, torch.einsum("rnd,rd->rn", X, beta.detach()) - y) / X.shape[1]
    assert torch.allclose(gu, 2 * u.detach() * g) and torch.allclose(gv, -2 * v.detach() * g)


def test_linear_phase_crossing_and_effective_alpha(problem):
    X, y, _ = problem
    alpha, lr, theta = 1e-6, 0.01, 1e-3
    c = (torch.einsum("rnd,rn->rd", X, y) / X.shape[1]).abs().amax(-1)
    steps = int(1.5 * math.asinh(theta / (2 * alpha**2)) / (4 * c.min().item() * lr))
    out = dg.train(X, y, torch.tensor([alpha]), lr, steps, threshold=theta)
    for r in range(len(X)):
        a, b = 1 + 2 * lr * c[r].item(), 1 - 2 * lr * c[r].item()
        k = np.arange(steps + 1)
        traj = alpha**2 * (a ** (2 * k) - b ** (2 * k))
        j = int(np.argmax(traj >= theta))
        exact = lr * (j - 1 + (theta - traj[j - 1]) / (traj[j] - traj[j - 1]))
        assert abs(out["crossing"][r, 0].item() - exact) < 1e-3 * exact
    eff = dg.effective_alpha(out["u"], out["v"])
    assert (eff <= alpha * (1 + 1e-12)).all() and (eff > 0).all()


def test_effective_alpha_is_the_product_of_step_factors(problem):
    X, y, _ = problem
    alpha, lr = 0.3, 0.05
    factor = torch.ones(3, 30, dtype=F64)
    beta = torch.zeros(3, 30, dtype=F64)
    u = v = torch.full((3, 30), alpha, dtype=F64)
    for _ in range(5):
        g = torch.einsum("rnd,rn->rd", X, torch.einsum("rnd,rd->rn", X, beta) - y) / X.shape[1]
        factor = factor * (1 - 4 * lr**2 * g**2)
        u, v = u * (1 - 2 * lr * g), v * (1 + 2 * lr * g)
        beta = u * u - v * v
    out = dg.train(X, y, torch.tensor([alpha]), lr, 5)
    assert torch.allclose(out["beta"][:, 0], beta)
    assert torch.allclose(dg.effective_alpha(out["u"], out["v"])[:, 0],
                          alpha * factor.abs().sqrt())


def test_sgd_runs_and_is_reproducible(problem):
    X, y, _ = problem
    runs = [dg.train(X, y, torch.tensor([0.3, 1.0]), 0.005, 300, batch_size=2,
                     generator=torch.Generator().manual_seed(5))["beta"] for _ in range(2)]
    assert torch.equal(runs[0], runs[1]) and torch.isfinite(runs[0]).all()
    with pytest.raises(ValueError):
        dg.interpolator(X, y, float("nan"))


def test_finite_time_l1_is_the_derivative_of_the_interpolator(problem):
    X, y, _ = problem
    gen = torch.Generator().manual_seed(7)
    for alpha in (0.01, 0.3, 3.0):
        beta = dg.interpolator(X, y, alpha)
        resid = 1e-6 * torch.randn(y.shape, generator=gen, dtype=F64)
        moved = dg.interpolator(X, y + resid, alpha, tol=1e-14)
        shift = dg.finite_time_l1(X, beta, alpha, resid)
        exact = moved.abs().sum(-1) - beta.abs().sum(-1)
        assert torch.allclose(shift, exact, rtol=1e-3, atol=1e-12)
    a_vec = torch.full((3, 30), 0.3, dtype=F64)
    assert torch.allclose(dg.finite_time_l1(X, beta, a_vec, resid, per_coordinate=True),
                          dg.finite_time_l1(X, beta, 0.3, resid))


def test_train_integrals(problem):
    X, y, _ = problem
    lr, steps = 0.01, 50
    out = dg.train(X, y, torch.tensor([0.5]), lr, steps, record_every=1)
    assert torch.allclose(out["loss_integral"], lr * out["losses"][:-1].sum(0))
    # full batch: E[g^2] is g^2, and u v shrinks by prod(1 - 4 lr^2 g^2) ~ exp(-4 sum lr^2 g^2)
    eff = dg.effective_alpha(out["u"], out["v"])
    approx = 0.5 * torch.exp(-2 * out["grad_sq_sum"])
    assert torch.allclose(eff, approx, rtol=1e-4)


def test_per_network_steps(problem):
    X, y, _ = problem
    lrs = torch.tensor([[0.01, 0.02], [0.03, 0.01], [0.02, 0.02]], dtype=F64)
    out = dg.train(X, y, torch.tensor([0.3, 1.0]), lrs, 40)
    for r in range(3):
        for a_i, a in enumerate((0.3, 1.0)):
            one = dg.train(X[r:r + 1], y[r:r + 1], torch.tensor([a]), lrs[r, a_i].item(), 40)
            assert torch.allclose(out["beta"][r, a_i], one["beta"][0, 0])
