"""lmbook.mlp against brute force: the stated forward pass, closed-form gradients against autograd,
the layerwise NTK against explicit Jacobian products, the wide limit against the arc-cosine NTK, the
parameterisations against each other, stacked ensembles against one network at a time, and the
nn.Module view against torch.optim."""

import math

import numpy as np
import pytest
import torch
from torch.func import jacrev

from lmbook import mlp, relu_nngp_ntk

F64 = torch.float64
PARAMS = ("ntk", "sp", "mean-field", "mup")


def _x(seed, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def test_ntk_parameterisation_is_the_stated_forward_pass():
    net = mlp.Net((3, 5, 4, 1), "relu", "ntk", 1.3, 0.4)
    p = mlp.init(net, 2, torch.Generator().manual_seed(0))
    assert mlp.names(net) == ["W0", "b0", "W1", "b1", "W2", "b2"]
    assert [tuple(p[k].shape) for k in ("W0", "b0", "W2", "b2")] == [
        (2, 5, 3),
        (2, 5),
        (2, 1, 4),
        (2, 1),
    ]
    x = _x(1, 6, 3)
    for s in range(2):
        h = 1.3 / math.sqrt(3) * x @ p["W0"][s].T + 0.4 * p["b0"][s]
        h = 1.3 / math.sqrt(5) * torch.relu(h) @ p["W1"][s].T + 0.4 * p["b1"][s]
        f = 1.3 / math.sqrt(4) * torch.relu(h) @ p["W2"][s].T + 0.4 * p["b2"][s]
        assert torch.allclose(mlp.apply(net, p, x)[s], f, atol=1e-14)
    wide = mlp.init(mlp.Net((10, 2000, 1)), 1, torch.Generator().manual_seed(1))
    assert abs(wide["W0"].std().item() - 1) < 0.02 and abs(wide["b0"].mean().item()) < 0.1


def test_scales_table():
    N, d = 16, 3
    sc = {
        prm: mlp.Net((d, N, N, 2), "tanh", prm, 1.5, 0.5, sigma_out=0.7).scales() for prm in PARAMS
    }
    assert sc["ntk"]["W1"] == (1.0, 1.5 / 4, 1.0) and sc["ntk"]["W2"] == (1.0, 0.7 / 4, 1.0)
    assert sc["sp"]["W0"] == (1.5 / math.sqrt(3), 1.0, 1.0) and sc["sp"]["b2"] == (0.5, 1.0, 1.0)
    assert sc["mean-field"]["W2"] == (1.0, 0.7 / 16, 16.0) and sc["mean-field"]["b2"] == (
        1.0,
        0.5 / 4,
        16.0,
    )
    assert sc["mean-field"]["W0"] == (1.0, 1.5 / math.sqrt(3), 16.0)
    # muP's width exponents (Tensor Programs V, table 3, SGD): input and biases r ~ N, hidden r ~ 1,
    # readout r ~ 1/N and init std ~ 1/N
    for name, expect in [
        ("W0", N * 1.5**2 / d),
        ("W1", 1.5**2),
        ("W2", 0.7**2 / N),
        ("b0", N * 0.25),
        ("b2", 0.25),
    ]:
        assert sc["mup"][name][1] == 1.0 and sc["mup"][name][2] == pytest.approx(expect)
    assert sc["mup"]["W2"][0] == pytest.approx(0.7 / N)
    assert "b0" not in mlp.Net((3, 4, 1), bias=False).scales()
    with pytest.raises(ValueError):
        mlp.Net((3, 4, 1), param="nt")


def _autograd_grads(net, p, x, g_out):
    leaf = {k: v.clone().requires_grad_() for k, v in p.items()}
    (mlp.apply(net, leaf, x) * g_out).sum().backward()
    return {k: leaf[k].grad for k in p}


@pytest.mark.parametrize("param", PARAMS)
@pytest.mark.parametrize("activation, bias", [("relu", True), ("tanh", False), ("erf", True)])
@pytest.mark.parametrize("per_network", [False, True])
def test_closed_form_gradients_equal_autograd(param, activation, bias, per_network):
    net = mlp.Net((3, 7, 6, 2), activation, param, 1.3, 0.4, bias)
    p = mlp.init(net, 2, torch.Generator().manual_seed(2))
    x = _x(3, 2, 5, 3) if per_network else _x(3, 5, 3)
    g_out = _x(4, 2, 5, 2)
    mine, ref = mlp.grads(net, p, x, g_out), _autograd_grads(net, p, x, g_out)
    assert set(mine) == set(p)
    for k in p:
        assert torch.allclose(mine[k], ref[k], atol=1e-13), k


def _jacobian_ntk(net, p, s, x1, x2):
    """J(x1) J(x2)^T of network s over its stored parameters (torch.func.jacrev), (P1, P2, k, k)."""

    def f(q, x):
        return mlp.apply(net, {k: v[None] for k, v in q.items()}, x)[0]

    one = {k: v[s] for k, v in p.items()}
    j1, j2 = jacrev(f)(one, x1), jacrev(f)(one, x2)
    return sum(torch.einsum("pk...,qj...->pqkj", j1[k], j2[k]) for k in one)


@pytest.mark.parametrize("param", PARAMS)
@pytest.mark.parametrize(
    "activation, widths, bias",
    [("relu", (4, 6, 1), True), ("relu", (4, 6, 5, 1), False), ("tanh", (4, 5, 6, 3), True)],
)
def test_ntk_equals_explicit_jacobian_product(param, activation, widths, bias):
    net = mlp.Net(widths, activation, param, 1.2, 0.3, bias)
    p = mlp.init(net, 2, torch.Generator().manual_seed(5))
    x1, x2 = _x(6, 5, 4), _x(7, 3, 4)
    full, traced = mlp.ntk(net, p, x1, x2, full=True), mlp.ntk(net, p, x1, x2)
    assert full.shape == (2, 5, 3, widths[-1], widths[-1]) and traced.shape == (2, 5, 3)
    for s in range(2):
        ref = _jacobian_ntk(net, p, s, x1, x2)
        assert torch.allclose(full[s], ref, atol=1e-12)
        assert torch.allclose(traced[s], torch.einsum("pqkk->pq", ref), atol=1e-12)
    assert torch.allclose(mlp.ntk(net, p, x1), mlp.ntk(net, p, x1, x1), atol=1e-14)


def test_linear_readout_ntk_is_exact_at_any_width():
    """No hidden layer: f = sw/sqrt(d) W x + sb b, whose NTK sw^2 x.x'/d + sb^2 cannot fluctuate."""
    x = _x(1, 4, 3)
    net = mlp.Net((3, 1), "relu", "ntk", 1.7, 0.6)
    th = mlp.ntk(net, mlp.init(net, 2, torch.Generator().manual_seed(2)), x)
    for s in range(2):
        np.testing.assert_allclose(th[s].numpy(), relu_nngp_ntk(x, 0, 1.7, 0.6)[1], rtol=1e-13)


# Tolerance for one wide network (moved from the old test_ntk.py): relative Frobenius error <= C /
# sqrt(width). The error is a sum of O(width) weakly dependent unit contributions, so error *
# sqrt(width) has a width-independent law, measured over independent seeds (d = 5, six Gaussian
# inputs, sw = 1.4, sb = 0.3): for the NTK, mean 1.7 / 2.5 and 99th percentile 4.0 / 6.6 (one /
# two hidden layers, 300 / 200 seeds at width 1024; 2.9 / 5.2 at width 4096); for the NNGP (two
# hidden layers) mean 3.0, 99th percentile 7.0-7.7, largest of 1000 seeds 11. C = 8 (NTK) and 12
# (NNGP) sit above those tails. The rival "NTK without the readout's own term Sigma^L" is off by
# 44-57%, far outside 8 / sqrt(2048) = 18%.
@pytest.mark.parametrize("hidden, width", [(1, 4096), (2, 2048)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wide_ntk_converges_to_the_arccos_ntk(hidden, width, seed):
    sw, sb = 1.4, 0.3
    x = _x(100 + seed, 6, 5)
    x[5] = x[0]                                            # a repeated input
    net = mlp.Net((5,) + (width,) * hidden + (1,), "relu", "ntk", sw, sb)
    p = mlp.init(net, 1, torch.Generator().manual_seed(seed))
    nngp, ntk = relu_nngp_ntk(x, hidden, sw, sb)
    K = mlp.ntk(net, p, x)[0].numpy()
    assert np.linalg.norm(K - ntk) / np.linalg.norm(ntk) <= 8 / math.sqrt(width)
    no_readout = ntk - nngp                    # the rival: forgetting the readout's own gradient
    assert np.linalg.norm(K - no_readout) / np.linalg.norm(no_readout) > 8 / math.sqrt(width)
    # the readout's own parameters give the empirical NNGP sw^2 relu(h^L).relu(h^L)'/width + sb^2
    a = torch.relu(mlp.preactivations(net, p, x)[-1][0])
    K_readout = (sw ** 2 * a @ a.T / width + sb ** 2).numpy()
    assert np.linalg.norm(K_readout - nngp) / np.linalg.norm(nngp) <= 12 / math.sqrt(width)


def test_parameterisations_against_each_other():
    x = _x(10, 5, 3)
    y = _x(11, 5, 1)
    base = dict(widths=(3, 64, 64, 1), activation="tanh", sigma_w=1.2, sigma_b=0.3)
    nets = {prm: mlp.Net(param=prm, **base) for prm in PARAMS}
    z = mlp.init(nets["ntk"], 2, torch.Generator().manual_seed(12))  # standard normal draws
    p = {prm: {k: v * net.scales()[k][0] for k, v in z.items()} for prm, net in nets.items()}
    f = {prm: mlp.apply(nets[prm], p[prm], x) for prm in PARAMS}
    assert torch.allclose(f["sp"], f["ntk"], atol=1e-13)  # same function at init
    assert torch.allclose(f["mean-field"], f["ntk"] / 8, atol=1e-13)  # readout 1/sqrt(N) smaller
    th = {prm: mlp.ntk(nets[prm], p[prm], x) for prm in ("ntk", "mean-field")}
    assert torch.allclose(th["mean-field"], th["ntk"] / 64, atol=1e-12)
    # mean-field and muP: the same trajectory from the same draw; F's first move is "ntk"'s
    runs = {
        prm: mlp.train(nets[prm], p[prm], x, y, 0.3, 20)[1]["train"]
        for prm in ("mean-field", "mup")
    }
    assert torch.allclose(runs["mean-field"], runs["mup"], atol=1e-12)
    first = {
        prm: mlp.train(nets[prm], p[prm], x, y, 1e-4, 1, alpha=1.0)[1]["train"][1]
        for prm in ("ntk", "mean-field")
    }
    assert torch.allclose(first["mean-field"], first["ntk"], rtol=1e-3, atol=1e-9)


def test_training_step_and_the_alpha_invariant_first_step():
    x, y = _x(13, 5, 3), _x(14, 5, 1)
    net = mlp.Net((3, 2000, 1), "relu", "ntk", math.sqrt(2), 0.2)
    p = mlp.init(net, 3, torch.Generator().manual_seed(15))
    leaf = {k: v.clone().requires_grad_() for k, v in p.items()}
    mlp.loss(net, leaf, x, y).sum().backward()
    p1, rec = mlp.train(net, p, x, y, 0.1, 1)
    for k in p:
        assert torch.allclose(p1[k], p[k] - 0.1 * leaf[k].grad, atol=1e-13)
    assert rec["train"].shape == (2, 3, 5, 1) and rec["step"].tolist() == [0, 1]
    assert torch.allclose(rec["loss"][0], mlp.loss(net, p, x, y), atol=1e-14)
    # with F = alpha (f - f0) and step lr/alpha^2, the first move of F is (lr/P) Theta y, any alpha
    for alpha in (0.5, 4.0, 64.0):
        _, rec = mlp.train(net, p, x, y, 0.05, 1, alpha=alpha, x_eval=x[:2])
        assert torch.allclose(rec["train"][0], torch.zeros(3, 5, 1, dtype=F64))
        linear = 0.05 / 5 * torch.einsum("spq,q->sp", mlp.ntk(net, p, x), y[:, 0])
        assert torch.allclose(
            rec["train"][1, ..., 0], linear, rtol=0.05 / alpha + 1e-3, atol=1e-3 / alpha
        )
        assert rec["eval"].shape == (2, 3, 2, 1)


@pytest.mark.parametrize("param", ["ntk", "mean-field"])
def test_stacked_equals_one_network_at_a_time(param):
    x, y = _x(16, 3, 6, 4), _x(17, 3, 6, 2)
    net = mlp.Net((4, 16, 8, 2), "relu", param, 1.4, 0.2)
    p = mlp.init(net, 3, torch.Generator().manual_seed(18))
    lr, alpha, beta = (
        torch.tensor(v, dtype=F64) for v in ([0.1, 0.2, 0.3], [1.0, 2.0, 8.0], [0.0, 0.5, 0.9])
    )
    pT, rec = mlp.train(net, p, x, y, lr, 5, alpha=alpha, momentum=beta, x_eval=x[:, :2], every=2)
    th = mlp.ntk(net, p, x)
    assert rec["step"].tolist() == [0, 2, 4, 5]
    for s in range(3):
        one = {k: v[s : s + 1] for k, v in p.items()}
        oneT, one_rec = mlp.train(
            net,
            one,
            x[s],
            y[s],
            lr[s],
            5,
            alpha=alpha[s],
            momentum=beta[s],
            x_eval=x[s, :2],
            every=2,
        )
        assert all(torch.allclose(pT[k][s], oneT[k][0], atol=1e-13) for k in p)
        assert torch.allclose(rec["eval"][:, s], one_rec["eval"][:, 0], atol=1e-13)
        assert torch.allclose(th[s], mlp.ntk(net, one, x[s])[0], atol=1e-13)


def test_momentum_equals_torch_sgd_on_the_modules():
    """With multipliers 1 ("sp"), the nn.Module view trained by torch.optim.SGD is `train`."""
    net = mlp.Net((5, 12, 9, 3), "tanh", "sp", 1.0, 0.1)
    p = mlp.init(net, 2, torch.Generator().manual_seed(19))
    x, y = _x(20, 10, 5), _x(21, 10, 3)
    lrs, betas = [0.05, 0.2], [0.0, 0.9]
    pT, _ = mlp.train(
        net, p, x, y, torch.tensor(lrs, dtype=F64), 7, momentum=torch.tensor(betas, dtype=F64)
    )
    mods = mlp.modules(net, p)
    assert torch.allclose(mods[1](x), mlp.apply(net, p, x)[1], atol=1e-14)
    for s, m in enumerate(mods):
        opt = torch.optim.SGD(m.parameters(), lr=lrs[s], momentum=betas[s])
        for _ in range(7):
            opt.zero_grad()
            (0.5 * (m(x) - y).square().sum(1).mean()).backward()
            opt.step()
    back = mlp.from_modules(net, mods)
    assert all(torch.allclose(back[k], pT[k], atol=1e-12) for k in p)


def test_modules_round_trip_torch_default_init():
    torch.manual_seed(0)
    seqs = [
        torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).to(F64)
        for _ in range(3)
    ]
    for prm in ("sp", "ntk"):
        net = mlp.Net((4, 8, 2), "tanh", prm, 1.0, 0.5)
        p = mlp.from_modules(net, seqs)
        x = _x(22, 5, 4)
        assert torch.allclose(mlp.apply(net, p, x), torch.stack([m(x) for m in seqs]), atol=1e-14)
        again = mlp.modules(net, p)
        assert all(torch.equal(a[0].weight, b[0].weight) for a, b in zip(again, seqs))
