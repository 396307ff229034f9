"""Tests for lmbook.collapse: the ETF, the metrics on exact configurations, the UFM optimum, the
Newton step, the class means, the cross-entropy trainer and the two stationarity identities
(feature decay: lam_W ||W||^2 = lam_H ||H||^2 at any width; uniform decay: ||W||_F = ||V||_F)."""

import math

import pytest
import torch

from lmbook import collapse, mlp


def test_etf_gram_and_cosine():
    for C, d in [(3, 2), (10, 10), (10, 32)]:
        M = collapse.etf(C, d)
        G = M @ M.T
        expect = C / (C - 1) * (torch.eye(C, dtype=M.dtype) - 1.0 / C)
        assert torch.allclose(G, expect, atol=1e-13)
        assert torch.allclose(M.sum(0), torch.zeros(d, dtype=M.dtype), atol=1e-13)
    with pytest.raises(ValueError):
        collapse.etf(10, 8)


def test_metrics_on_an_exact_collapse():
    C, n, d = 5, 3, 6
    M = collapse.etf(C, d)
    y = collapse.labels(C, n)
    H = (0.7 * M[y])[None]
    W = (2.0 * M)[None]
    m = collapse.metrics(H, y, W, C)
    assert m["nc1"].item() < 1e-20 and m["nc3"].item() < 1e-20
    assert abs(m["cos"].item() + 1 / (C - 1)) < 1e-14 and m["cos_rms"].item() < 1e-7
    assert m["norm_cv"].item() < 1e-13 and m["nc4"].item() == 0 and m["error"].item() == 0
    assert abs(m["ratio"].item() - 2.0 / 0.7) < 1e-13


def test_metrics_orthogonal_frame_and_nc1():
    C, n, d = 4, 2, 4
    y = collapse.labels(C, n)
    M = torch.eye(C, d, dtype=torch.float64)
    noise = torch.tensor([[0.1, 0, 0, 0], [-0.1, 0, 0, 0]], dtype=torch.float64).repeat(C, 1)
    H = (M[y] + noise)[None]
    m = collapse.metrics(H, y, M[None], C)
    assert abs(m["cos"].item()) < 1e-14
    # Sigma_W = diag(0.01, 0, 0, 0); Sigma_B = (I - 11^T/C)/C; tr(Sw Sb^+)/C by brute force
    Sw = torch.zeros(4, 4, dtype=torch.float64)
    Sw[0, 0] = 0.01
    Sb = (torch.eye(4, dtype=torch.float64) - 0.25) / 4
    brute = torch.trace(Sw @ torch.linalg.pinv(Sb)) / C
    assert abs(m["nc1"].item() - brute.item()) < 1e-12


def test_ufm_optimum_is_the_symmetric_minimum():
    C, n, lw, lh = 10, 10, 0.02, 0.02
    opt = collapse.ufm_optimum(C, n, lw, lh)
    M = collapse.etf(C, 16)
    y = collapse.labels(C, n)
    a, b = math.sqrt(opt["w2"]), math.sqrt(opt["h2"])
    f = collapse.objective((a * M)[None], (b * M[y])[None], y, lw, lh)
    assert abs(f.item() - opt["f"]) < 1e-13
    for eps in (1e-3, -1e-3):   # a minimum along both scales
        for sa, sb in ((1 + eps, 1), (1, 1 + eps)):
            g = collapse.objective((sa * a * M)[None], (sb * b * M[y])[None], y, lw, lh)
            assert g.item() > opt["f"]
    with pytest.raises(ValueError):
        collapse.ufm_optimum(C, n, 0.1, 0.1)


def test_ufm_fit_and_newton_reach_the_optimum():
    C, n, d, lw, lh = 4, 3, 5, 0.05, 0.05
    g = torch.Generator().manual_seed(0)
    r = collapse.ufm_fit(C, d, n, lw, lh, 3, g, iters=200)
    y = collapse.labels(C, n)
    W, H = collapse.newton_step(r["W"], r["H"], y, lw, lh)
    opt = collapse.ufm_optimum(C, n, lw, lh)
    f = collapse.objective(W, H, y, lw, lh)
    assert (f - opt["f"]).abs().max().item() < 1e-12
    m = collapse.metrics(H, y, W, C)
    assert (m["cos"] + 1 / (C - 1)).abs().max().item() < 1e-9
    assert (m["ratio"] - opt["ratio"]).abs().max().item() < 1e-9


def test_train_gradient_matches_autograd_and_decreases():
    C, n, d = 3, 4, 6
    net = mlp.Net((5, 16, d), activation="tanh", param="ntk", sigma_w=1.0, bias=False)
    g = torch.Generator().manual_seed(1)
    p = mlp.init(net, 2, g)
    W = torch.randn(2, C, d, generator=g, dtype=torch.float64)
    x = torch.randn(C * n, 5, generator=g, dtype=torch.float64)
    y = collapse.labels(C, n)

    def f(p_, W_):
        return collapse.objective(W_, mlp.apply(net, p_, x), y, 0.01, 0.01)

    # one plain step equals p - lr grad (momentum buffer starts at the gradient)
    lr = 0.1
    p1, W1, snaps = collapse.train(net, p, W, x, y, 0.01, 0.01, lr, 1, momentum=0.9,
                                   checkpoints={0, 1})
    leaves = {k: v.clone().requires_grad_(True) for k, v in p.items()}
    Wl = W.clone().requires_grad_(True)
    f(leaves, Wl).sum().backward()
    assert torch.allclose(W1, W - lr * Wl.grad, atol=1e-14)
    for k in p:
        assert torch.allclose(p1[k], p[k] - lr * leaves[k].grad, atol=1e-14)
    assert torch.equal(snaps[0][1], W)
    p50, W50, _ = collapse.train(net, p, W, x, y, 0.01, 0.01, lr, 50)
    assert (f(p50, W50) < f(p, W)).all()


def test_class_means():
    C, n = 3, 2
    y = collapse.labels(C, n)
    H = torch.arange(C * n * 2, dtype=torch.float64).view(1, C * n, 2)
    mu = collapse.class_means(H, y, C)
    assert torch.allclose(mu[0], torch.tensor([[1.0, 2.0], [5.0, 6.0], [9.0, 10.0]],
                                              dtype=torch.float64))


def test_stationarity_identity_on_the_network():
    # H is linear in the readout V, so tr(W^T grad_W) - tr(V^T grad_V) = lam_w ||W||^2
    # - lam_h ||H||^2 at ANY point and any width; at a stationary point both sides vanish
    C, n, d, m = 3, 4, 5, 8                     # m < N = 12: the features are not free
    net = mlp.Net((6, m, d), activation="tanh", param="ntk", sigma_w=1.0, bias=False)
    g = torch.Generator().manual_seed(2)
    p = mlp.init(net, 2, g)
    W = torch.randn(2, C, d, generator=g, dtype=torch.float64)
    x = torch.randn(C * n, 6, generator=g, dtype=torch.float64)
    y = collapse.labels(C, n)
    lw, lh = 0.03, 0.02

    def gap(p_, W_):
        return lw * W_.square().sum((1, 2)) - lh * mlp.apply(net, p_, x).square().sum((1, 2))

    leaves = {k: v.clone().requires_grad_(True) for k, v in p.items()}
    Wl = W.clone().requires_grad_(True)
    collapse.objective(Wl, mlp.apply(net, leaves, x), y, lw, lh).sum().backward()
    lhs = (Wl * Wl.grad).sum((1, 2)) - (leaves["W1"] * leaves["W1"].grad).sum((1, 2))
    assert torch.allclose(lhs, gap(p, W), atol=1e-12)
    p1, W1, _ = collapse.train(net, p, W, x, y, lw, lh, 1.0, 1000)
    assert (gap(p1, W1).abs() < 1e-4).all() and (gap(p, W).abs() > 1e-3).all()


def test_uniform_decay_balances_the_layers():
    # weight decay lam on every layer, none on H: tr(W^T grad_W) - tr(V^T grad_V)
    # = lam (||W||^2 - ||V||^2), so a stationary point has ||W||_F = ||V||_F
    C, n, d, m = 3, 4, 5, 8
    net = mlp.Net((6, m, d), activation="tanh", param="ntk", sigma_w=1.0, bias=False)
    g = torch.Generator().manual_seed(3)
    p = mlp.init(net, 2, g)
    W = 3 * torch.randn(2, C, d, generator=g, dtype=torch.float64)
    x = torch.randn(C * n, 6, generator=g, dtype=torch.float64)
    y = collapse.labels(C, n)
    p1, W1, _ = collapse.train(net, p, W, x, y, 0.05, 0.0, 2.0, 300, lam_theta=0.05)
    ratio = W1.square().sum((1, 2)) / p1["W1"].square().sum((1, 2))
    ratio0 = W.square().sum((1, 2)) / p["W1"].square().sum((1, 2))
    assert (ratio - 1).abs().max() < 1e-3 and (ratio0 - 1).abs().min() > 0.5
