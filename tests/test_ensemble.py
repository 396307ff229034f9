"""An ensemble trained at once follows, to rounding, the trajectories of its members trained one by
one with torch.optim.SGD (plain and heavy ball, per-model learning rates, shared or per-model
data)."""

import pytest
import torch

from lmbook.ensemble import (
    base_model,
    ensemble_loss_and_grad,
    momentum_step,
    sgd_step,
    stack,
    train_ensemble,
    unstack,
    zeros_like,
)

N, STEPS = 4, 25
LRS = torch.tensor([0.05, 0.1, 0.2, 0.3], dtype=torch.float64)
mse = torch.nn.functional.mse_loss


pytestmark = pytest.mark.usefixtures("one_thread")


def models(n=N):
    out = []
    for seed in range(n):
        torch.manual_seed(seed)
        out.append(
            torch.nn.Sequential(
                torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)
            ).double()
        )
    return out


def data(per_model=False):
    g = torch.Generator().manual_seed(0)
    shape = (N, 20) if per_model else (20,)
    return torch.randn(*shape, 3, generator=g, dtype=torch.float64), torch.randn(
        *shape, 2, generator=g, dtype=torch.float64
    )


def loop(ms, x, y, lrs, momentum, per_model=False):
    """The reference: each model alone, torch.optim.SGD, the loss recorded before each step."""
    losses = torch.empty(STEPS, len(ms), dtype=torch.float64)
    for i, m in enumerate(ms):
        opt = torch.optim.SGD(m.parameters(), lr=float(lrs[i]), momentum=momentum)
        xi, yi = (x[i], y[i]) if per_model else (x, y)
        for t in range(STEPS):
            opt.zero_grad()
            loss = mse(m(xi), yi)
            loss.backward()
            opt.step()
            losses[t, i] = loss.detach()
    return losses


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("per_model", [False, True])
def test_ensemble_matches_a_loop_of_torch_sgd(momentum, per_model):
    x, y = data(per_model)
    ens_losses, params = train_ensemble(
        models(), x, y, mse, LRS, STEPS, momentum=momentum, per_model_data=per_model
    )
    ref = models()
    ref_losses = loop(ref, x, y, LRS, momentum, per_model)
    assert ens_losses.shape == (STEPS, N)
    assert torch.allclose(ens_losses, ref_losses, rtol=0, atol=1e-10)
    for name, p in params.items():
        assert torch.allclose(
            p,
            torch.stack([dict(m.named_parameters())[name] for m in ref]).detach(),
            rtol=0,
            atol=1e-10,
        )
    # the runs differ from each other (different seeds and step sizes) and the loss went down
    assert (ens_losses[-1] < ens_losses[0]).all() and ens_losses[-1].unique().numel() == N


def test_scalar_lr_and_the_functional_steps():
    ms = models()
    params, buffers = stack(ms)
    assert params["0.weight"].shape == (N, 8, 3) and buffers == {}
    x, y = data()
    losses, grads = ensemble_loss_and_grad(base_model(ms[0]), params, buffers, x, y, mse)
    assert losses.shape == (N,) and torch.allclose(losses[2], mse(ms[2](x), y))
    before = {k: v.clone() for k, v in params.items()}
    new = sgd_step(params, grads, 0.1)
    assert all(torch.equal(before[k], params[k]) for k in params)  # inputs untouched
    assert torch.allclose(new["2.bias"], params["2.bias"] - 0.1 * grads["2.bias"])
    p1, b1 = momentum_step(params, grads, zeros_like(params), 0.1, 0.9)  # first step: buf = grad
    assert all(torch.allclose(p1[k], new[k]) and torch.equal(b1[k], grads[k]) for k in params)
    unstack(new, ms)
    assert torch.equal(ms[3][2].bias.detach(), new["2.bias"][3])
    with pytest.raises(ValueError):
        sgd_step(params, grads, torch.ones(N + 1))
    with pytest.raises(ValueError):
        stack([])
