"""The batched tanh MLP of lmbook.stability against nn.Sequential, its Hessian-vector products against
lmbook.hessian, its Lanczos sharpness against the dense Hessian, and its training loop against
torch.optim.SGD (plain and heavy ball)."""
import math

import pytest
import torch
from torch.func import hessian

from lmbook import hessian as hs
from lmbook import stability as st
from lmbook.measure import time_average

pytestmark = pytest.mark.usefixtures("one_thread")
WIDTHS = (5, 12, 9, 3)          # 5*12+12 + 12*9+9 + 9*3+3 = 219 parameters
mse_half_sum = lambda out, y: 0.5 * (out - y).square().sum(1).mean()   # noqa: E731  the module's loss


@pytest.fixture(scope="module")
def setup():
    g = torch.Generator().manual_seed(3)
    x, y = st.teacher_classes(40, WIDTHS[0], WIDTHS[-1], g)
    params = st.init_mlp(3, WIDTHS, g)
    # make the members differ, as after training at different step sizes
    noise = {k: 0.3 * torch.randn(t.shape, generator=g, dtype=t.dtype) for k, t in params.items()}
    noise = {k: t * torch.tensor([0.0, 1.0, -1.0], dtype=t.dtype).view(-1, *[1] * (t.ndim - 1)) for k, t in noise.items()}
    return x, y, {k: params[k] + noise[k] for k in params}


def dense_hessian(params, i, x, y):
    model = st.member_module(params, i, WIDTHS)
    f, p = hs.loss_function(model, mse_half_sum, x, y)
    return hessian(lambda th: f(hs.unflatten(th, p)))(hs.flatten(p))


def test_teacher_classes_are_standardised_one_hot():
    x, y = st.teacher_classes(500, 10, 7, torch.Generator().manual_seed(0))
    assert x.shape == (500, 10) and y.shape == (500, 7) and x.dtype == torch.float64
    assert x.mean(0).abs().max() < 1e-12 and (x.std(0) - 1).abs().max() < 1e-12
    assert (y.sum(1) == 1).all() and set(y.unique().tolist()) == {0.0, 1.0}
    assert (y.sum(0) > 0).all()                                          # every class occurs


def test_init_gives_identical_members_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    p = st.init_mlp(4, WIDTHS, torch.Generator().manual_seed(0))
    assert torch.equal(torch.random.get_rng_state(), before)
    assert list(p) == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
    assert p["2.weight"].shape == (4, 9, 12) and all(torch.equal(t[0], t[3]) for t in p.values())
    bound = 1 / math.sqrt(WIDTHS[0])                                     # PyTorch default: U(-1/sqrt(fan_in), ..)
    assert p["0.weight"].abs().max() <= bound and p["0.weight"].abs().max() > 0.8 * bound


def test_forward_and_loss_match_nn_sequential(setup):
    x, y, params = setup
    out, loss = st.forward(params, x), st.losses(params, x, y)
    for i in range(3):
        model = st.member_module(params, i, WIDTHS)
        assert torch.allclose(out[i], model(x), atol=1e-13, rtol=0)
        assert abs(float(loss[i]) - mse_half_sum(model(x), y).item()) < 1e-13


def test_hvp_matches_lmbook_hessian_per_member(setup):
    x, y, params = setup
    g = torch.Generator().manual_seed(1)
    v = {k: torch.randn(t.shape, generator=g, dtype=t.dtype) for k, t in params.items()}
    hv = st.flat(st.hvp(params, x, y, v))
    for i in range(3):
        model = st.member_module(params, i, WIDTHS)
        ref = hs.hvp(model, mse_half_sum, x, y, st.flat(v)[i])
        assert torch.allclose(hv[i], ref, atol=1e-12, rtol=0)


def test_flat_and_unflat_are_inverse(setup):
    _, _, params = setup
    m = st.flat(params)
    assert m.shape == (3, 219)
    back = st.unflat(m, params)
    assert all(torch.equal(back[k], params[k]) for k in params)


def test_lanczos_sharpness_is_the_top_eigenvalue_of_the_dense_hessian(setup):
    x, y, params = setup
    lam, vec = st.sharpness(params, x, y, steps=60, generator=torch.Generator().manual_seed(0))
    for i in range(3):
        H = dense_hessian(params, i, x, y)
        evals = torch.linalg.eigvalsh(H)
        assert evals[-1] > 0.05 and evals[-1] > abs(evals[0])           # lambda_max dominates in magnitude
        assert abs(float(lam[i]) - float(evals[-1])) <= 1e-9 * float(evals[-1])
        assert torch.allclose(H @ vec[i], lam[i] * vec[i], atol=1e-6)


def test_few_lanczos_steps_bound_the_sharpness_from_below_and_improve(setup):
    x, y, params = setup
    top = torch.stack([torch.linalg.eigvalsh(dense_hessian(params, i, x, y))[-1] for i in range(3)])
    v0 = torch.randn(3, 219, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    l2, _ = st.sharpness(params, x, y, v0, steps=2)
    l6, _ = st.sharpness(params, x, y, v0, steps=6)
    assert (l2 <= l6 + 1e-12).all() and (l6 <= top + 1e-12).all()        # Ritz values rise towards lambda_max


def test_train_matches_torch_sgd_plain_and_heavy_ball(setup):
    x, y, params = setup
    lrs, betas, steps = torch.tensor([0.05, 0.2, 0.1]), torch.tensor([0.0, 0.0, 0.9]), 15
    tr = st.train(params, x, y, lrs, steps, betas, every=4, lanczos=5, generator=torch.Generator().manual_seed(0))
    assert tr.loss.shape == (steps + 1, 3) and tr.at_step.tolist() == [0, 4, 8, 12, 15]
    for i in range(3):
        model = st.member_module(params, i, WIDTHS)
        opt = torch.optim.SGD(model.parameters(), lr=float(lrs[i]), momentum=float(betas[i]))
        for k in range(steps + 1):
            loss = mse_half_sum(model(x), y)
            assert abs(loss.item() - tr.loss[k, i].item()) <= 1e-12
            if k < steps:
                opt.zero_grad()
                loss.backward()
                opt.step()
        final = dict(model.named_parameters())
        assert all(torch.allclose(tr.params[k][i], final[k], atol=1e-12, rtol=0) for k in final)
    assert torch.allclose(tr.full_loss, tr.loss[tr.at_step])             # full batch: the same loss


def test_train_with_minibatches_records_the_full_batch_loss_where_it_measures(setup):
    x, y, params = setup
    tr = st.train(params, x, y, 0.1, 6, every=3, lanczos=3, batch=8, generator=torch.Generator().manual_seed(0))
    assert tr.full_loss.shape == (3, 3) and torch.allclose(tr.full_loss[0], st.losses(params, x, y))
    assert not torch.allclose(tr.loss[3], tr.full_loss[1])                # the minibatch loss differs


def test_first_reach_and_time_average_exact():
    s = torch.tensor([[0.0, 5.0], [2.0, 1.0], [1.0, 1.0], [3.0, 1.0]])
    assert st.first_reach(s, 2.0).tolist() == [1, 0]
    assert st.first_reach(s, torch.tensor([3.0, 6.0])).tolist() == [3, -1]
    mean, se = time_average(torch.tensor([1.0, 1.0, 3.0, 3.0]), batches=2)
    assert mean == 2.0 and abs(se - 1.0) < 1e-15                        # block means 1, 3: sd sqrt(2) / sqrt(2)
    mean, se = time_average(torch.tensor([1.0, 2.0, 3.0]), batches=2)
    assert mean == 2.0 and math.isnan(se)
