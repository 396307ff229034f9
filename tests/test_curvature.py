"""lmbook.curvature against the dense Hessian (torch.func.hessian) in float64: Hessian-vector
products on stacked parameters, Lanczos Ritz values and power iteration, per member of an
ensemble."""

import math

import pytest
import torch
from torch.func import functional_call, hessian, vmap

from lmbook import curvature as cv
from lmbook.ensemble import stack

pytestmark = pytest.mark.usefixtures("one_thread")
MEMBERS = 3


def mlp(seed, act=torch.nn.Tanh):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(5, 16), act(), torch.nn.Linear(16, 12), act(), torch.nn.Linear(12, 2)
    ).double()  # 5*16+16 + 16*12+12 + 12*2+2 = 326


def data(seed=0, n=40):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g, dtype=torch.float64), torch.randn(
        n, 2, generator=g, dtype=torch.float64
    )


def stacked_loss(template, x, y, criterion):
    """loss(params) -> (E,): every member's criterion(member(x), y)."""
    base = template.to("meta")
    return lambda p: vmap(lambda q: criterion(functional_call(base, q, (x,)), y))(p)


def dense(loss, params, i):
    """Member i's dense Hessian, from torch.func.hessian of its loss on its flat parameters."""
    one = {k: t[i : i + 1] for k, t in params.items()}
    return hessian(lambda th: loss(cv.unflat(th[None], one))[0])(cv.flat(one)[0])


@pytest.fixture(scope="module")
def setup():
    x, y = data(seed=2)
    params, _ = stack([mlp(seed=s) for s in (2, 3, 4)])  # three different networks
    loss = stacked_loss(mlp(0), x, y, torch.nn.functional.mse_loss)
    hs = [dense(loss, params, i) for i in range(MEMBERS)]
    return loss, params, hs, [torch.linalg.eigvalsh(h) for h in hs]


def test_flat_and_unflat_are_inverse(setup):
    _, params, _, _ = setup
    m = cv.flat(params)
    assert m.shape == (MEMBERS, 326)
    back = cv.unflat(m, params)
    assert list(back) == list(params) and all(torch.equal(back[k], params[k]) for k in params)
    with pytest.raises(ValueError):
        cv.unflat(torch.zeros(MEMBERS, 5), params)


def test_the_hessians_are_nontrivial_and_indefinite(setup):
    *_, evals = setup
    for e in evals:
        assert e[-1] > 0.1 and e[0] < -1e-4  # curved, non-convex: the tests mean something
    assert len({round(float(e[-1]), 6) for e in evals}) == MEMBERS  # the members differ


def test_hvp_matches_the_dense_hessian_per_member(setup):
    # F.mse_loss with a captured float target under jvp(grad): pytorch#123996 must not bite here
    loss, params, hs, _ = setup
    op, theta = cv.hvp_operator(loss, params)
    assert torch.equal(theta, cv.flat(params))
    g = torch.Generator().manual_seed(1)
    for _ in range(2):
        v = torch.randn(theta.shape, generator=g, dtype=torch.float64)
        hv = op(v)
        for i, h in enumerate(hs):
            assert torch.allclose(
                hv[i], h @ v[i], atol=1e-10 * max(1.0, float((h @ v[i]).abs().max())), rtol=0
            )
    as_dict = cv.hvp(loss, params, cv.unflat(v, params))
    assert torch.allclose(cv.flat(as_dict), hv, atol=1e-12, rtol=0)


def test_lanczos_gives_the_top_eigenvalues(setup):
    loss, params, hs, evals = setup
    op, theta = cv.hvp_operator(loss, params)
    v0 = torch.randn(theta.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    values, vectors = cv.lanczos(op, v0, steps=80, k=3)
    assert values.shape == (MEMBERS, 3) and vectors.shape == (MEMBERS, 3, 326)
    for i in range(MEMBERS):
        top = evals[i].flip(0)[:3]
        assert torch.allclose(values[i], top, rtol=1e-9, atol=0)
        assert torch.allclose(hs[i] @ vectors[i, 0], values[i, 0] * vectors[i, 0], atol=1e-6)
    lam, vec = cv.sharpness(loss, params, steps=60, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(lam, torch.stack([e[-1] for e in evals]), rtol=1e-9, atol=0)
    assert torch.allclose(vec.norm(dim=1), torch.ones(MEMBERS, dtype=torch.float64))


def test_few_lanczos_steps_bound_the_sharpness_from_below_and_improve(setup):
    loss, params, _, evals = setup
    top = torch.stack([e[-1] for e in evals])
    v0 = torch.randn(MEMBERS, 326, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    l2, _ = cv.sharpness(loss, params, v0, steps=2)
    l6, r6 = cv.sharpness(loss, params, v0, steps=6)
    assert (l2 <= l6 + 1e-12).all() and (l6 <= top + 1e-12).all() and (l6 < top - 1e-6).any()
    warm, _ = cv.sharpness(loss, params, r6, steps=6)  # a warm start from the Ritz vector improves
    assert (warm >= l6 - 1e-12).all() and (warm <= top + 1e-12).all()


def test_power_iteration_finds_the_sharpness_and_a_warm_start_stops_at_once(setup):
    loss, params, hs, evals = setup
    op, theta = cv.hvp_operator(loss, params)
    v0 = torch.randn(theta.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    r = cv.power_iteration(op, v0, iters=3000, tol=1e-7)
    top = torch.stack([e[-1] for e in evals])
    assert r.converged and torch.allclose(r.value, top, rtol=1e-8, atol=0)
    for i in range(MEMBERS):
        assert torch.allclose(hs[i] @ r.vector[i], r.value[i] * r.vector[i], atol=1e-6)
    again = cv.power_iteration(op, r.vector, tol=1e-6)
    assert again.converged and again.iterations == 1 < r.iterations
    assert torch.allclose(again.value, r.value, rtol=1e-10, atol=0)


def test_negative_curvature_dominating_is_handled_per_member():
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(30, 30, generator=g, dtype=torch.float64))
    spectra = [
        torch.cat([torch.tensor([-5.0, 2.0, 1.0]), torch.linspace(-1, 0.5, 27)]),  # |-5| dominates
        torch.cat([torch.tensor([3.0, -1.0]), torch.linspace(-0.5, 0.5, 28)]),  # positive dominates
        torch.linspace(-12, -8, 30),
    ]  # all negative
    mats = torch.stack([q @ torch.diag(s.double()) @ q.T for s in spectra])

    def op(v):
        return torch.einsum("eij,ej->ei", mats, v)

    v0 = torch.randn(3, 30, generator=g, dtype=torch.float64)
    r = cv.power_iteration(op, v0, iters=3000, tol=1e-10)
    assert r.converged and torch.allclose(
        r.value, torch.tensor([2.0, 3.0, -8.0], dtype=torch.float64), rtol=1e-8
    )
    fixed = cv.power_iteration(op, v0, iters=5)  # a fixed number of iterations, no tolerance
    assert not fixed.converged and fixed.iterations <= 20


def test_cross_entropy_with_integer_labels():
    x = data(seed=4, n=30)[0]
    labels = torch.randint(0, 2, (30,), generator=torch.Generator().manual_seed(0))
    params, _ = stack([mlp(seed=s, act=torch.nn.Softplus) for s in (5, 6)])
    loss = stacked_loss(mlp(0, act=torch.nn.Softplus), x, labels, torch.nn.functional.cross_entropy)
    op, theta = cv.hvp_operator(loss, params)
    v = torch.randn(theta.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    hv = op(v)
    for i in range(2):
        h = dense(loss, params, i)
        assert torch.allclose(hv[i], h @ v[i], atol=1e-10, rtol=0)
    lam, _ = cv.sharpness(loss, params, steps=80, generator=torch.Generator().manual_seed(0))
    assert abs(float(lam[1]) - float(torch.linalg.eigvalsh(h)[-1])) <= 1e-8 * abs(float(lam[1]))


def test_a_diverged_member_gives_nan_and_the_others_are_untouched(setup):
    loss, params, _, evals = setup
    broken = {k: t.clone() for k, t in params.items()}
    broken["0.weight"][1, 0, 0] = math.inf
    lam, _ = cv.sharpness(loss, broken, steps=60, generator=torch.Generator().manual_seed(0))
    assert math.isnan(lam[1]) and torch.allclose(
        lam[[0, 2]], torch.stack([evals[0][-1], evals[2][-1]]), rtol=1e-9
    )


def test_bad_inputs(setup):
    loss, params, _, _ = setup
    with pytest.raises(ValueError):
        cv.sharpness(loss, params, torch.zeros(MEMBERS, 326))
    with pytest.raises(ValueError):
        cv.sharpness(loss, params, torch.ones(MEMBERS, 5))
    with pytest.raises(ValueError):
        cv.lanczos(lambda v: v, torch.ones(1, 3), steps=2, k=3)
