"""lmbook.stability: the teacher data, and the training loop against torch.optim.SGD (plain and
heavy ball) one network at a time, with its tracked sharpness against the dense Hessian."""

import pytest
import torch
from torch.func import hessian

from lmbook import curvature as cv
from lmbook import mlp
from lmbook import stability as st

pytestmark = pytest.mark.usefixtures("one_thread")
NET = mlp.Net((5, 12, 9, 3), "tanh", "sp", sigma_w=1.0, sigma_b=0.3)  # 219 parameters


@pytest.fixture(scope="module")
def setup():
    g = torch.Generator().manual_seed(3)
    x, y = st.teacher_classes(40, 5, 3, g)
    return x, y, mlp.init(NET, 3, g)


def test_teacher_classes_are_standardised_one_hot():
    x, y = st.teacher_classes(500, 10, 7, torch.Generator().manual_seed(0))
    assert x.shape == (500, 10) and y.shape == (500, 7) and x.dtype == torch.float64
    assert x.mean(0).abs().max() < 1e-12 and (x.std(0) - 1).abs().max() < 1e-12
    assert (y.sum(1) == 1).all() and set(y.unique().tolist()) == {0.0, 1.0}
    assert (y.sum(0) > 0).all()  # every class occurs


def test_train_matches_torch_sgd_plain_and_heavy_ball(setup):
    x, y, params = setup
    lrs, betas, steps = torch.tensor([0.05, 0.2, 0.1]), torch.tensor([0.0, 0.0, 0.9]), 15
    tr = st.train(
        NET,
        params,
        x,
        y,
        lrs,
        steps,
        betas,
        every=4,
        lanczos=5,
        generator=torch.Generator().manual_seed(0),
    )
    assert tr.loss.shape == (steps + 1, 3) and tr.at_step.tolist() == [0, 4, 8, 12, 15]
    for i, model in enumerate(mlp.modules(NET, params)):
        opt = torch.optim.SGD(model.parameters(), lr=float(lrs[i]), momentum=float(betas[i]))
        for k in range(steps + 1):
            loss = 0.5 * (model(x) - y).square().sum(1).mean()
            assert abs(loss.item() - tr.loss[k, i].item()) <= 1e-12
            if k < steps:
                opt.zero_grad()
                loss.backward()
                opt.step()
        final = mlp.from_modules(NET, [model])
        assert all(torch.allclose(tr.params[k][i], final[k][0], atol=1e-12, rtol=0) for k in final)
    assert torch.allclose(tr.full_loss, tr.loss[tr.at_step])  # full batch: the same loss


def test_the_tracked_sharpness_is_a_lower_bound_that_reaches_lambda_max(setup):
    x, y, params = setup
    tr = st.train(
        NET,
        params,
        x,
        y,
        0.1,
        0,
        every=1,
        first_lanczos=60,
        generator=torch.Generator().manual_seed(0),
    )
    for i in range(3):
        one = {k: t[i : i + 1] for k, t in params.items()}
        h = hessian(lambda th, one=one: mlp.loss(NET, cv.unflat(th[None], one), x, y)[0])(
            cv.flat(one)[0]
        )
        top = torch.linalg.eigvalsh(h)[-1]
        assert abs(float(tr.sharp[0, i]) - float(top)) <= 1e-9 * float(top)


def test_train_with_minibatches_records_the_full_batch_loss_where_it_measures(setup):
    x, y, params = setup
    tr = st.train(
        NET,
        params,
        x,
        y,
        0.1,
        6,
        every=3,
        lanczos=3,
        batch=8,
        generator=torch.Generator().manual_seed(0),
    )
    assert tr.full_loss.shape == (3, 3) and torch.allclose(
        tr.full_loss[0], mlp.loss(NET, params, x, y)
    )
    assert not torch.allclose(tr.loss[3], tr.full_loss[1])  # the minibatch loss differs


def test_train_refuses_per_tensor_step_scales(setup):
    x, y, _ = setup
    net = mlp.Net((5, 12, 3), "tanh", "mup")
    with pytest.raises(ValueError, match="scales the step"):
        st.train(net, mlp.init(net, 1, torch.Generator().manual_seed(0)), x, y, 0.1, 1)


def test_per_network_data_and_time_averaged_weights(setup):
    """One data set per member trains each member on its own data (the same as a run of that member
    alone), and the averages are the means of the iterates over the last L steps."""
    _, _, params = setup
    xs, ys = st.teacher_sets(3, 30, 5, 3, torch.Generator().manual_seed(1))
    assert xs.shape == (3, 30, 5) and ys.shape == (3, 30, 3)
    assert not torch.allclose(xs[0], xs[1])
    tr = st.train(
        NET,
        params,
        xs,
        ys,
        0.2,
        6,
        every=3,
        lanczos=3,
        average=(2, 6),
        generator=torch.Generator().manual_seed(0),
    )
    for i in range(3):
        one = {k: t[i : i + 1] for k, t in params.items()}
        alone = st.train(
            NET,
            one,
            xs[i],
            ys[i],
            0.2,
            6,
            every=3,
            lanczos=3,
            average=(2,),
            generator=torch.Generator().manual_seed(0),
        )
        assert torch.allclose(tr.loss[:, i], alone.loss[:, 0], atol=1e-12, rtol=0)
        for k in params:
            assert torch.allclose(tr.averages[2][k][i], alone.averages[2][k][0], atol=1e-12)
    # the 2-step average is the midpoint of the last two iterates
    before = st.train(
        NET, params, xs, ys, 0.2, 4, every=3, lanczos=3, generator=torch.Generator().manual_seed(0)
    ).params
    last = st.train(
        NET, params, xs, ys, 0.2, 5, every=3, lanczos=3, generator=torch.Generator().manual_seed(0)
    ).params
    for k in params:
        assert torch.allclose(tr.averages[2][k], (before[k] + last[k]) / 2, atol=1e-12)


def test_minibatches_are_drawn_per_member(setup):
    x, y, params = setup
    same = {k: t[:1].expand(2, *t.shape[1:]).clone() for k, t in params.items()}
    tr = st.train(
        NET,
        same,
        x,
        y,
        0.1,
        3,
        every=3,
        lanczos=3,
        batch=8,
        generator=torch.Generator().manual_seed(0),
    )
    assert not torch.allclose(tr.loss[1, 0], tr.loss[1, 1])  # identical nets, different batches
    with pytest.raises(ValueError, match="average windows"):
        st.train(NET, params, x, y, 0.1, 3, average=(4,))
