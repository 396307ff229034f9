import math

import torch

from lmbook import mlp
from lmbook import symmetry as sym


def _two_layer(S=3, d=5, n=4, k=2, P=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    net = mlp.Net((d, n, k), "relu", "sp", bias=False)
    params = mlp.init(net, S, generator=g)
    x = torch.randn(P, d, generator=g, dtype=torch.float64)
    y = torch.randn(P, k, generator=g, dtype=torch.float64)
    return net, params, x, y


def test_two_layer_grads_match_mlp_and_autograd():
    net, params, x, y = _two_layer()
    g, absg, loss = sym.two_layer_grads(params, x, y)
    ref = mlp.grads(net, params, x, (mlp.apply(net, params, x) - y) / x.shape[0])
    for key in ref:
        assert torch.allclose(g[key], ref[key], atol=1e-14)
        assert bool((absg[key] >= g[key].abs() - 1e-15).all())
    p = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    mlp.loss(net, p, x, y).sum().backward()
    for key in p:
        assert torch.allclose(g[key], p[key].grad, atol=1e-14)
    assert torch.allclose(loss, mlp.loss(net, params, x, y))


def test_rescale_keeps_function_and_noether_identity():
    net, params, x, y = _two_layer()
    c = torch.tensor([0.5, 2.0, 3.0, 1.5], dtype=torch.float64)
    big = sym.rescale(params, c)
    assert torch.allclose(mlp.apply(net, big, x), mlp.apply(net, params, x), atol=1e-13)
    g, _, _ = sym.two_layer_grads(params, x, y)
    lhs = (params["W0"] * g["W0"]).sum(-1)
    rhs = (params["W1"] * g["W1"]).sum(-2)
    assert torch.allclose(lhs, rhs, atol=1e-13)


def test_gd_balance_exact_increment_within_bound():
    _, params, x, y = _two_layer()
    for wd in (0.0, 0.3):
        r = sym.gd_balance(params, x, y, lr=0.1, steps=30, weight_decay=wd)
        err = (r["q"][-1] - r["q_pred"]).abs()
        assert bool((err <= r["bound"]).all())
        assert float(r["bound"].max()) < 1e-12
    # the first step by hand
    r = sym.gd_balance(params, x, y, lr=0.1, steps=1)
    g, _, _ = sym.two_layer_grads(params, x, y)
    inc = 0.01 * (g["W0"].square().sum(-1) - g["W1"].square().sum(-2))
    assert torch.allclose(r["q"][1] - r["q"][0], inc, atol=1e-14)


def test_adam_balance_decomposition():
    _, params, x, y = _two_layer()
    r = sym.adam_balance(params, x, y, lr=0.01, steps=20)
    dq = r["q"][1] - r["q"][0]
    assert torch.allclose(dq, r["first"] + r["second"], atol=1e-12)
    assert bool((r["first"].abs() <= r["bound"]).all())
    assert float(r["first"].abs().max()) > 1e-3          # Adam does not conserve q


def test_normalised_mlp_rows_are_scale_invariant():
    g = torch.Generator().manual_seed(1)
    params = sym.norm_init((6, 8, 5, 3), 2, generator=g)
    x = torch.randn(10, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (10,), generator=g)
    scaled = dict(params)
    scaled["W0"] = params["W0"] * torch.rand(2, 8, 1, generator=g, dtype=torch.float64).add(0.5)
    scaled["W1"] = params["W1"] * 3.0
    assert torch.allclose(sym.norm_loss(scaled, x, y), sym.norm_loss(params, x, y), atol=1e-12)
    p = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    sym.norm_loss(p, x, y).sum().backward()
    for key in ("W0", "W1"):
        assert torch.allclose((p[key] * p[key].grad).sum(-1), torch.zeros(2, p[key].shape[1],
                              dtype=torch.float64), atol=1e-12)


def test_norm_train_sgd_grows_norm_by_gradient_square():
    g = torch.Generator().manual_seed(2)
    params = sym.norm_init((6, 8, 5, 3), 2, generator=g)
    x = torch.randn(12, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (12,), generator=g)
    r = sym.norm_train(params, x, y, 0.1, 5, optimizer="sgdm", betas=(0.0, 0.0))
    n2 = torch.cat([params["W0"].square().sum(-1)[None], r["W0_norm2"]])
    grow = n2[1:] - n2[:-1]
    assert torch.allclose(grow, 0.01 * r["W0_g2"], rtol=1e-9, atol=1e-13)


def test_rotation_and_gamma():
    w = torch.tensor([[[1.0, 0.0]]], dtype=torch.float64)
    v = torch.tensor([[[1.0, 1.0]]], dtype=torch.float64)
    assert math.isclose(float(sym.rotation(w, v)), math.pi / 4, rel_tol=1e-12)
    assert math.isclose(sym.gamma(10), 10 * 2.0**-53 / (1 - 10 * 2.0**-53))


def test_flow_balance_conserves_and_predicts_gd_drift():
    _, params, x, y = _two_layer()
    q0 = sym.balance(params)
    for lam in (0.0, 0.5):
        f = sym.flow_balance(params, x, y, 1.0, 0.01, weight_decay=lam)
        # gradient flow with decay: dq/dT = -2 lam q exactly (RK4 error only; ReLU kinks make it
        # irregular, hence the loose tolerance)
        assert torch.allclose(f["q"], math.exp(-2 * lam) * q0, rtol=0, atol=1e-3)
        scale = float(f["forcing"].abs().max())
        coef = []
        for lr in (0.02, 0.01):
            r = sym.gd_balance(params, x, y, lr, round(1.0 / lr), weight_decay=lam)
            coef.append((r["q"][-1] - (1 - lr * lam) ** (2 * round(1.0 / lr)) * q0) / lr)
        rich = 2 * coef[1] - coef[0]
        err_rich = float((rich - f["forcing"]).abs().max())
        assert err_rich < 0.03 * scale
        assert float((coef[1] - f["forcing"]).abs().max()) > err_rich


def _norm_problem(S=2, seed=3):
    g = torch.Generator().manual_seed(seed)
    params = sym.norm_init((6, 8, 5, 3), S, generator=g)
    x = torch.randn(12, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (12,), generator=g)
    return params, x, y


def _torch_reference(params, x, y, make_opt, steps):
    p = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    opt = make_opt(list(p.values()))
    for _ in range(steps):
        opt.zero_grad()
        sym.norm_loss(p, x, y).sum().backward()       # networks are independent: sum of losses
        opt.step()
    return {k: v.detach() for k, v in p.items()}


def test_norm_train_matches_torch_optimizers_step_for_step():
    params, x, y = _norm_problem()
    lr, wd, steps = 0.01, 0.5, 6
    cases = [
        ("adamw", (0.9, 0.999), lambda ps: torch.optim.AdamW(ps, lr=lr, betas=(0.9, 0.999),
                                                              eps=1e-8, weight_decay=wd)),
        ("adam-l2", (0.9, 0.999), lambda ps: torch.optim.Adam(ps, lr=lr, betas=(0.9, 0.999),
                                                               eps=1e-8, weight_decay=wd)),
        ("sgdm", (0.9, 0.0), lambda ps: torch.optim.SGD(ps, lr=lr, momentum=0.9,
                                                         weight_decay=wd)),
    ]
    for name, betas, make in cases:
        r = sym.norm_train(params, x, y, lr, steps, optimizer=name, weight_decay=wd, betas=betas)
        ref = _torch_reference(params, x, y, make, steps)
        for key in params:
            assert torch.allclose(r["params"][key], ref[key], rtol=1e-10, atol=1e-12), (name, key)


def test_normalise_constant_unit_is_finite():
    z = torch.ones(1, 4, 3, dtype=torch.float64)
    z[..., 0] = torch.arange(4.0)
    out = sym._normalise(z)
    assert bool(torch.isfinite(out).all())
    assert torch.allclose(out[..., 1:], torch.zeros(1, 4, 2, dtype=torch.float64))


def test_same_batches_pairs_networks():
    params, x, y = _norm_problem(S=2)
    both = {k: torch.cat([v[:1], v[:1]]) for k, v in params.items()}
    r = sym.norm_train(both, x, y, 0.05, 4, optimizer="sgdm", betas=(0.0, 0.0), batch=3,
                       generator=torch.Generator().manual_seed(0), same_batches=True)
    for key in params:
        assert torch.allclose(r["params"][key][0], r["params"][key][1])


def test_momentum_random_walk_equilibrium_by_simulation():
    # the three-moment fixed point x* = lr U (1 + b c) / ((1 - b c) wd (2 - lr wd)), U = E|m|^2,
    # against a brute-force random walk with gradients orthogonal to w and independent over steps
    g = torch.Generator().manual_seed(4)
    lr, wd, b, C, n = 0.05, 2.0, 0.9, 16, 1000
    c = 1 - lr * wd
    w = torch.randn(n, C, generator=g, dtype=torch.float64) * 0.1
    m = torch.zeros_like(w)
    x_acc, u_acc, count = 0.0, 0.0, 0
    for t in range(500):
        gh = torch.randn(n, C, generator=g, dtype=torch.float64)
        gh = gh - (gh * w).sum(-1, keepdim=True) * w / w.square().sum(-1, keepdim=True)
        m = b * m + (1 - b) * gh
        w = c * w - lr * m
        if t >= 250:
            x_acc += float(w.square().sum(-1).mean())
            u_acc += float(m.square().sum(-1).mean())
            count += 1
    x_sim, U = x_acc / count, u_acc / count
    x_star = lr * U * (1 + b * c) / ((1 - b * c) * wd * (2 - lr * wd))
    assert abs(x_sim / x_star - 1) < 0.03
