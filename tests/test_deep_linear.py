import math

import pytest
import sympy as sp
import torch

from lmbook import deep_linear as dl
from lmbook.measure import crossing_times, loglog_slope
from lmbook.stats import mean_and_se
from lmbook.symbolic import loglog_derivative, pick_root

F64 = torch.float64


@pytest.fixture
def setup():
    g = torch.Generator().manual_seed(0)
    Syx, U, V = dl.singular_task(6, [3.0, 1.0, 0.5], g)
    return Syx, U, V, dl.init_network(4, 6, 10, 2, 0.3, g)


def test_task_has_the_requested_singular_values(setup):
    Syx = setup[0]
    assert torch.allclose(torch.linalg.svdvals(Syx)[:3], torch.tensor([3.0, 1.0, 0.5], dtype=F64))
    with pytest.raises(ValueError):
        dl.singular_task(2, [1.0, 2.0, 3.0], torch.Generator())


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_population_grads_match_autograd(setup, depth):
    Syx = setup[0]
    init = dl.init_network(3, 6, 5, depth, 0.4, torch.Generator().manual_seed(1))
    weights = [w.requires_grad_() for w in init]
    loss = 0.5 * ((Syx - dl.end_to_end(weights)) ** 2).sum()
    auto = torch.autograd.grad(loss, weights)
    mine, W = dl.population_grads([w.detach() for w in weights], Syx)
    assert all(torch.allclose(a, m, atol=1e-12) for a, m in zip(auto, mine))
    assert torch.allclose(W, dl.end_to_end(weights).detach())


def test_population_grads_with_input_covariance(setup):
    Syx = setup[0]
    init = dl.init_network(3, 6, 5, 3, 0.4, torch.Generator().manual_seed(4))
    L = torch.randn(6, 6, generator=torch.Generator().manual_seed(5), dtype=F64)
    Sxx = L @ L.T / 6 + torch.eye(6, dtype=F64)
    weights = [w.requires_grad_() for w in init]
    W = dl.end_to_end(weights)
    loss = 0.5 * (W @ Sxx * W).sum() - (W * Syx).sum()      # 1/2 E||y - Wx||^2 + const
    auto = torch.autograd.grad(loss.sum(), weights)
    mine, _ = dl.population_grads([w.detach() for w in weights], Syx, Sxx)
    assert all(torch.allclose(a, m, atol=1e-12) for a, m in zip(auto, mine))


@pytest.mark.parametrize("depth", [2, 3])
def test_train_is_plain_gradient_descent(setup, depth):
    Syx, U, V = setup[:3]
    weights = dl.init_network(4, 6, 10, depth, 0.3, torch.Generator().manual_seed(2))
    traj, final = dl.train(weights, Syx, U, V, lr=0.01, steps=25)
    for _ in range(25):
        grads, _ = dl.population_grads(weights, Syx)
        weights = [w - 0.01 * g for w, g in zip(weights, grads)]
    assert all(torch.allclose(f, w, atol=1e-12) for f, w in zip(final, weights))
    assert torch.allclose(traj[-1], dl.mode_strengths(weights, U, V), atol=1e-12)
    assert traj.shape == (26, 4, 3)


def test_init_shapes_and_effective_u0(setup):
    _, U, V, (W1, W2) = setup
    a, b = W1[1] @ V[:, 2], W2[1].T @ U[:, 2]
    u0 = dl.effective_u0([W1, W2], U, V)[1, 2].item()
    assert math.isclose(u0, ((a + b) ** 2).sum().item() / 4)
    assert math.isclose(dl.init_std_for_u0(1e-4, 256) ** 2 * 256 / 2, 1e-4)
    shapes = [tuple(w.shape) for w in dl.init_network(2, 6, 10, 4, [0.1, 1.0], torch.Generator())]
    assert shapes == [(2, 10, 6), (2, 10, 10), (2, 10, 10), (2, 6, 10)]
    with pytest.raises(ValueError):
        dl.effective_u0(dl.init_network(2, 6, 10, 3, 0.1, torch.Generator()), U, V)


def test_balanced_and_difference(setup):
    _, U, V, weights = setup
    P, M = dl.balanced_and_difference(weights, U, V)
    assert torch.allclose((P - M) / 4, dl.mode_strengths(weights, U, V), atol=1e-12)
    assert torch.allclose(P / 4, dl.effective_u0(weights, U, V))
    with pytest.raises(ValueError):
        dl.balanced_and_difference(dl.init_network(2, 6, 10, 3, 0.1, torch.Generator()), U, V)


def test_removal_adjusted(setup):
    _, U, V, weights = setup
    P, M, overlap = dl.removal_adjusted(weights, U, V)
    P0, M0 = dl.balanced_and_difference(weights, U, V)
    assert torch.allclose(P[:, 0], P0[:, 0]) and torch.allclose(M[:, 0], M0[:, 0])
    assert (P <= P0 + 1e-12).all() and (M <= M0 + 1e-12).all()
    p = weights[0] @ V + weights[1].transpose(1, 2) @ U
    cos = p[0, :, 0] @ p[0, :, 1] / (p[0, :, 0].norm() * p[0, :, 1].norm())
    assert torch.isclose(P[0, 1], P0[0, 1] * (1 - cos ** 2))        # one stronger mode
    assert (overlap >= 0).all() and overlap.shape == P.shape


def test_gram_flow_is_the_limit_of_gradient_descent(setup):
    """Gradient descent approaches the Gram-matrix flow at rate eta (Euler is first order)."""
    Syx, U, V, weights = setup
    t_end = 1.0
    flow = dl.gram_flow(weights, Syx, U, V, [0.0, t_end])
    assert torch.allclose(flow[0], dl.mode_strengths(weights, U, V), atol=1e-12)
    errors = []
    for lr in (2e-3, 1e-3):
        traj, _ = dl.train(weights, Syx, U, V, lr, int(round(t_end / lr)))
        errors.append((traj[-1] - flow[-1]).abs().max().item())
    assert errors[1] < 1e-2 and 1.8 < errors[0] / errors[1] < 2.2


def test_crossing_times_on_a_known_curve():
    t = torch.arange(0, 1001, dtype=F64) * 0.01
    traj = torch.stack([1 - torch.exp(-t), 1 - torch.exp(-2 * t)], dim=1)
    times = crossing_times(traj, 0.5) * 0.01
    assert torch.allclose(times, torch.tensor([math.log(2), math.log(2) / 2], dtype=F64), atol=1e-4)
    assert torch.isnan(crossing_times(traj, 2.0)).all()
    assert crossing_times(traj, -1.0).eq(0).all()


def test_loglog_slope_and_se():
    x = torch.tensor([1.0, 2.0, 4.0, 8.0], dtype=F64)
    assert math.isclose(loglog_slope(x, 3 * x ** -1.5).item(), -1.5, rel_tol=1e-12)
    m, se = mean_and_se(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert m == 2.5 and math.isclose(se.item(), torch.tensor([1.0, 2.0, 3.0, 4.0]).std().item() / 2)


def test_symbolic_helpers():
    t, s = sp.symbols("t s", positive=True)
    roots = sp.solve(sp.Eq(t ** 2, s), t) + [-sp.sqrt(s), sp.I * s]
    assert pick_root(roots, {s: 4}) == sp.sqrt(s)
    with pytest.raises(ValueError):
        pick_root([sp.sqrt(s), 2 * sp.sqrt(s)], {s: 4})
    assert loglog_derivative(3 * s ** -2, s) == -2
