"""Hessian-vector products against the dense Hessian, and power iteration against its eigenvalues."""
import warnings

import pytest
import torch
from torch.func import hessian

from lmbook.hessian import (flatten, hvp, loss_function, make_hvp, power_iteration, sharpness,
                            unflatten)


pytestmark = pytest.mark.usefixtures("one_thread")


def mlp(seed=0, act=torch.nn.Tanh, dtype=torch.float64):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 16), act(), torch.nn.Linear(16, 12), act(),
                               torch.nn.Linear(12, 2)).to(dtype)  # 5*16+16 + 16*12+12 + 12*2+2 = 326


def data(seed=0, n=40, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g, dtype=dtype), torch.randn(n, 2, generator=g, dtype=dtype)


def dense_hessian(model, x, y, criterion=torch.nn.functional.mse_loss):
    f, params = loss_function(model, criterion, x, y)
    return hessian(lambda th: f(unflatten(th, params)))(flatten(params))


@pytest.fixture(scope="module")
def setup():
    model, (x, y) = mlp(seed=2), data(seed=2)  # gap lambda_2/lambda_1 = 0.79: power iteration is quick
    H = dense_hessian(model, x, y)
    return model, x, y, H, torch.linalg.eigvalsh(H)


def test_hvp_matches_dense_hessian(setup):
    model, x, y, H, _ = setup
    assert H.shape == (326, 326) and torch.allclose(H, H.T, atol=1e-12)
    op, theta = make_hvp(model, torch.nn.functional.mse_loss, x, y)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        v = torch.randn(theta.shape, generator=g, dtype=torch.float64)
        assert (op(v) - H @ v).abs().max() <= 1e-10 * max(1.0, (H @ v).abs().max())
    assert torch.allclose(hvp(model, torch.nn.functional.mse_loss, x, y, v), H @ v, atol=1e-10, rtol=0)


def test_the_hessian_is_nontrivial_and_indefinite(setup):
    *_, evals = setup
    assert evals[-1] > 0.1 and evals[0] < -1e-4  # a curved, non-convex loss: the test means something


def test_power_iteration_finds_the_sharpness(setup):
    model, x, y, H, evals = setup
    r = sharpness(model, torch.nn.functional.mse_loss, x, y, iters=500, tol=1e-7,
                  generator=torch.Generator().manual_seed(0))
    assert r.converged and abs(r.value - float(evals[-1])) <= 1e-8 * abs(float(evals[-1]))
    assert torch.allclose(H @ r.vector, r.value * r.vector, atol=1e-7)
    # a warm start at the answer converges at once
    again = sharpness(model, torch.nn.functional.mse_loss, x, y, tol=1e-6, v0=r.vector)
    assert again.iterations == 1 < r.iterations and abs(again.value - r.value) <= 1e-10 * abs(r.value)


def test_negative_curvature_dominating_is_handled():
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(30, 30, generator=g, dtype=torch.float64))
    lam = torch.cat([torch.tensor([-5.0, 2.0, 1.0], dtype=torch.float64), torch.linspace(-1, 0.5, 27)])
    A = Q @ torch.diag(lam) @ Q.T
    v0 = torch.randn(30, generator=g, dtype=torch.float64)
    top = power_iteration(lambda v: A @ v, v0, iters=3000, tol=1e-10)
    assert top.converged and abs(top.value - 2.0) <= 1e-8 * 2
    mag = power_iteration(lambda v: A @ v, v0, iters=3000, tol=1e-10, which="magnitude")
    assert mag.converged and abs(mag.value + 5.0) <= 1e-8 * 5
    neg = power_iteration(lambda v: A @ v - 10 * v, v0, iters=3000, tol=1e-10)  # spectrum all negative
    assert neg.converged and abs(neg.value - (2.0 - 10.0)) <= 1e-8 * 8
    fixed = power_iteration(lambda v: A @ v, v0, iters=5)  # a fixed number of iterations, no tolerance
    assert not fixed.converged and fixed.iterations <= 10


def test_mode_and_model_untouched_float32_model_in_float64():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.BatchNorm1d(8), torch.nn.Softplus(),
                                torch.nn.Dropout(0.5), torch.nn.Linear(8, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = data(dtype=torch.float32)
    with pytest.warns(UserWarning, match="train mode"):
        make_hvp(model, torch.nn.functional.mse_loss, x, y)[0](torch.ones(sum(p.numel() for p in model.parameters())))
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # running stats untouched
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        op, theta = make_hvp(model, torch.nn.functional.mse_loss, x, y, dtype=torch.float64)
    assert theta.dtype == torch.float64 and not model.training
    assert next(model.parameters()).dtype == torch.float32
    v = torch.randn(theta.shape, dtype=torch.float64)
    H = dense_hessian(model.double(), x.double(), y.double())
    assert torch.allclose(op(v), H @ v, atol=1e-10, rtol=0)


def test_bad_inputs():
    with pytest.raises(ValueError):
        power_iteration(lambda v: v, torch.zeros(3))
    with pytest.raises(ValueError):
        power_iteration(lambda v: v, torch.ones(3), which="smallest")
    with pytest.raises(ValueError):
        unflatten(torch.zeros(5), {"a": torch.zeros(2, 2)})


def test_cross_entropy_with_integer_labels():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Softplus(), torch.nn.Linear(8, 3)).double()
    x = torch.randn(30, 5, dtype=torch.float64)
    labels = torch.randint(0, 3, (30,))
    ce = torch.nn.functional.cross_entropy
    H = dense_hessian(model, x, labels, ce)
    op, theta = make_hvp(model, ce, x, labels)
    v = torch.randn(theta.shape, dtype=torch.float64)
    assert torch.allclose(op(v), H @ v, atol=1e-10, rtol=0)
    r = sharpness(model, ce, x, labels, iters=1000, tol=1e-7)
    assert abs(r.value - float(torch.linalg.eigvalsh(H)[-1])) <= 1e-8 * abs(r.value)
