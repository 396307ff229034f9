"""Batched two-layer ReLU networks: closed-form gradients and NTKs against autograd, the parameterisations,
and the alpha-scaled (Chizat) training step."""
import math

import pytest
import torch

from lmbook import relu_nngp_ntk
from lmbook import two_layer as tl
from lmbook.ntk import NTKMLP, empirical_ntk


def _data(seed=0, P=5, d=3):
    g = torch.Generator().manual_seed(seed)
    return g, torch.randn(P, d, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("readout_exponent, sigma_b", [(0.5, 0.3), (1.0, 0.0), (1.0, 0.7)])
def test_gradients_equal_autograd(readout_exponent, sigma_b):
    g, x = _data()
    arch = tl.TwoLayer(3, 7, 1.3, sigma_b, readout_exponent)
    p = tl.init_params(arch, 2, g)
    g_out = torch.randn(2, 5, generator=g, dtype=torch.float64)
    leaf = {k: v.clone().requires_grad_() for k, v in p.items()}
    (tl.outputs(arch, leaf, x) * g_out).sum().backward()
    mine = tl._grads(arch, p, x, g_out)
    for k in p:
        assert torch.allclose(mine[k], leaf[k].grad, atol=1e-13), k


@pytest.mark.parametrize("readout_exponent, sigma_b", [(0.5, 0.3), (1.0, 0.5)])
def test_ntk_equals_explicit_jacobian_product(readout_exponent, sigma_b):
    g, x = _data(1)
    x2 = torch.randn(4, 3, generator=g, dtype=torch.float64)
    arch = tl.TwoLayer(3, 6, 1.1, sigma_b, readout_exponent)
    p = tl.init_params(arch, 2, g)
    for s in range(2):
        def jac(z):
            f = lambda W, b, v, c: tl.outputs(arch, {"W": W[None], "b": b[None], "v": v[None], "c": c[None]}, z)[0]  # noqa: E731
            return torch.cat([j.reshape(len(z), -1) for j in torch.autograd.functional.jacobian(f, tuple(p[k][s] for k in "Wbvc"))], 1)
        assert torch.allclose(tl.ntk(arch, p, x, x2)[s], jac(x) @ jac(x2).T, atol=1e-12)


def test_ntk_parameterisation_is_the_ntkmlp_and_converges_to_the_closed_form():
    g, x = _data(2, P=4, d=3)
    arch = tl.TwoLayer(3, 5, math.sqrt(2), 0.4)
    p = tl.init_params(arch, 1, g)
    net = NTKMLP(3, 5, 1, math.sqrt(2), 0.4, dtype=torch.float64)
    with torch.no_grad():
        net.weights[0].copy_(p["W"][0]); net.biases[0].copy_(p["b"][0])
        net.weights[1].copy_(p["v"][0][None]); net.biases[1].copy_(p["c"][0][None])
    assert torch.allclose(tl.outputs(arch, p, x)[0], net(x), atol=1e-13)
    assert torch.allclose(tl.ntk(arch, p, x)[0], empirical_ntk(net, x), atol=1e-12)
    wide = tl.TwoLayer(3, 200_000, math.sqrt(2), 0.4)
    limit = torch.as_tensor(relu_nngp_ntk(x, 1, math.sqrt(2), 0.4)[1])
    err = torch.linalg.norm(tl.ntk(wide, tl.init_params(wide, 1, g), x)[0] - limit) / torch.linalg.norm(limit)
    assert err < 0.02


def test_mean_field_is_the_ntk_network_scaled_down():
    g, x = _data(3)
    ntk_arch, mf_arch = tl.TwoLayer(3, 64, 1.2, 0.3, 0.5), tl.TwoLayer(3, 64, 1.2, 0.3, 1.0)
    p = tl.init_params(ntk_arch, 2, g)
    assert torch.allclose(tl.outputs(mf_arch, p, x), tl.outputs(ntk_arch, p, x) / 8, atol=1e-13)
    assert torch.allclose(tl.ntk(mf_arch, p, x), tl.ntk(ntk_arch, p, x) / 64, atol=1e-12)


def test_training_steps_and_the_alpha_invariant_first_step():
    g, x = _data(4)
    y = torch.randn(5, generator=g, dtype=torch.float64)
    arch = tl.TwoLayer(3, 2000, math.sqrt(2), 0.2)
    p = tl.init_params(arch, 3, g)
    # one step of plain GD equals p - lr * autograd gradient of the mean squared error
    leaf = {k: v.clone().requires_grad_() for k, v in p.items()}
    (0.5 * ((tl.outputs(arch, leaf, x) - y) ** 2).mean(1)).sum().backward()
    p1, rec = tl.train(arch, p, x, y, 0.1, 1)
    for k in p:
        assert torch.allclose(p1[k], p[k] - 0.1 * leaf[k].grad, atol=1e-13)
    assert rec["train"].shape == (2, 3, 5) and rec["step"].tolist() == [0, 1]
    # with F = alpha (f - f0) and step lr/alpha^2, the first move of F is (lr/P) Theta y for every alpha
    for alpha in (0.5, 4.0, 64.0):
        _, rec = tl.train(arch, p, x, y, 0.05, 1, alpha=alpha, x_eval=x[:2])
        assert torch.allclose(rec["train"][0], torch.zeros(3, 5, dtype=torch.float64))
        linear = 0.05 / 5 * torch.einsum("spq,q->sp", tl.ntk(arch, p, x), y)
        assert torch.allclose(rec["train"][1], linear, rtol=0.05 / alpha + 1e-3, atol=1e-3 / alpha)
        assert rec["eval"].shape == (2, 3, 2)


def test_inputs_per_network_equal_running_each_network_alone():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 6, 4, generator=g, dtype=torch.float64)
    y = torch.randn(3, 6, generator=g, dtype=torch.float64)
    arch = tl.TwoLayer(4, 32, 1.4, 0.2)
    p = tl.init_params(arch, 3, g)
    pT, rec = tl.train(arch, p, x, y, 0.3, 5, x_eval=x[:, :2])
    th = tl.ntk(arch, p, x)
    for s in range(3):
        one = {k: v[s:s + 1] for k, v in p.items()}
        oneT, one_rec = tl.train(arch, one, x[s], y[s], 0.3, 5, x_eval=x[s, :2])
        assert all(torch.allclose(pT[k][s], oneT[k][0], atol=1e-13) for k in p)
        assert torch.allclose(rec["eval"][:, s], one_rec["eval"][:, 0], atol=1e-13)
        assert torch.allclose(th[s], tl.ntk(arch, one, x[s])[0], atol=1e-13)
