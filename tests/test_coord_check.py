"""lmbook.coord_check against mlp.train (SGD) and torch.optim.Adam on nn.Modules (brute force)."""

import pytest
import torch

from lmbook import coord_check as cc
from lmbook import mlp


def data(d=5, k=3, P=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(P, d, generator=g, dtype=torch.float64)
    return g, x, torch.randn(P, k, generator=g, dtype=torch.float64)


def test_sgd_matches_mlp_train():
    g, x, y = data()
    big = cc.draw((5, 12, 12, 3), 2, g)
    net = mlp.Net((5, 8, 8, 3), "relu", "mup", bias=False)
    r = cc.coord_check(net, big, x, y, 0.3, 4, "sgd", centred=False)
    p0 = cc.nested(net, big)
    _, rec = mlp.train(net, p0, x, y, 0.3, 4)
    want = (rec["train"][1:] - rec["train"][0]).square().flatten(2).mean(2).sqrt()
    assert torch.allclose(r["f"], want, rtol=1e-10)
    z = mlp.preactivations(net, p0, x)
    assert torch.allclose(r["h0"][0], z[0].square().flatten(1).mean(1).sqrt())


def test_adam_matches_torch_optim():
    g, x, y = data(seed=1)
    big = cc.draw((5, 6, 6, 3), 1, g)
    net = mlp.Net((5, 6, 6, 3), "relu", "sp", bias=False)
    r = cc.coord_check(net, big, x, y, 0.01, 3, "adam", eps=1e-8, centred=False)
    model = mlp.modules(net, cc.nested(net, big))[0]
    f0 = model(x).detach()
    opt = torch.optim.Adam(model.parameters(), lr=0.01, eps=1e-8)
    for t in range(3):
        opt.zero_grad()
        loss = 0.5 * (model(x) - y).square().sum(-1).mean()
        loss.backward()
        opt.step()
        moved = (model(x).detach() - f0).square().mean().sqrt()
        assert torch.allclose(r["f"][t, 0], moved, rtol=1e-8)


def test_adam_first_step_is_sign_and_centring():
    g, x, y = data(seed=2)
    big = cc.draw((5, 6, 3), 1, g)
    net = mlp.Net((5, 6, 3), "linear", "sp", bias=False)
    r = cc.coord_check(net, big, x, y, 1e-3, 1, "adam", eps=0.0)
    p0 = cc.nested(net, big)
    f0 = mlp.apply(net, p0, x)
    gr = mlp.grads(net, p0, x, -y[None] / x.shape[0])  # centred: residual -y
    p1 = {k: p0[k] - 1e-3 * torch.sign(gr[k]) for k in p0}
    z1 = mlp.preactivations(net, p1, x)[0] - mlp.preactivations(net, p0, x)[0]
    assert torch.allclose(r["h"][0, 0], z1.square().flatten(1).mean(1).sqrt())
    f1 = mlp.apply(net, p1, x) - f0
    assert torch.allclose(r["f"][0], f1.square().flatten(1).mean(1).sqrt())


def test_adam_scales_and_errors():
    net = mlp.Net((5, 8, 8, 3), "relu", "mup", bias=False)
    assert cc.adam_scales(net) == {"W0": 1 / 5, "W1": 1 / 8, "W2": 1 / 8}
    assert set(cc.adam_scales(mlp.Net((5, 8, 3), param="sp", bias=False)).values()) == {1.0}
    with pytest.raises(ValueError):
        cc.coord_check(mlp.Net((5, 8, 3)), cc.draw((5, 8, 3), 1), torch.zeros(2, 5),
                       torch.zeros(2, 3), 0.1, 1)
