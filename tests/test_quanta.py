import math

import numpy as np
import torch

from lmbook import mlp, quanta


def test_zipf_and_tail():
    p = quanta.zipf(10, 1.0)
    assert abs(p.sum().item() - 1) < 1e-12
    assert abs((p[0] / p[1]).item() - 4.0) < 1e-12
    for K in range(11):
        assert abs(quanta.tail(p, K).item() - p[K:].sum().item()) < 1e-12
    assert torch.allclose(quanta.tail(p, torch.tensor([0, 3])), torch.stack([p.sum(), p[3:].sum()]))


def test_subsets_distinct():
    g = torch.Generator().manual_seed(0)
    r = quanta.subsets(6, 2, 15, g)
    assert r.shape == (15, 2)
    assert len({tuple(sorted(x)) for x in r.tolist()}) == 15


def test_labels_parity_and_padding():
    g = torch.Generator().manual_seed(1)
    n = 7
    rules = torch.tensor([[0, 3, n], [1, 2, 5]])  # subtask 0: 2-bit (padded), subtask 1: 3-bit
    task, bits = quanta.sample(torch.tensor([0.5, 0.5]), n, (3, 50), g)
    y = quanta.labels(task, bits, rules[None].expand(3, -1, -1))
    for s in range(3):
        for i in range(50):
            b = bits[s, i].tolist()
            want = (b[0] + b[3]) % 2 if task[s, i] == 0 else (b[1] + b[2] + b[5]) % 2
            assert y[s, i].item() == want


def test_inputs_one_hot():
    task = torch.tensor([[2, 0]])
    bits = torch.tensor([[[1, 0], [0, 1]]], dtype=torch.int8)
    x = quanta.inputs(task, bits, 3, torch.float32)
    assert x.tolist() == [[[0, 0, 1, 1, 0], [1, 0, 0, 0, 1]]]


def test_logits_is_mlp_apply():
    net = mlp.Net((5, 8, 2), param="sp", bias=True, sigma_b=0.3)
    params = mlp.init(net, 3, generator=torch.Generator().manual_seed(2))
    x = torch.randn(3, 4, 5, dtype=torch.float64)
    assert torch.allclose(quanta.logits(params, x), mlp.apply(net, params, x))


def test_staircase_brute_force():
    p = quanta.zipf(12, 1.5)
    sizes, taus = [100, 1000, 10000], [5.0, 50.0]
    K, tl = quanta.staircase(sizes, p, taus)
    for i, tau in enumerate(taus):
        for j, D in enumerate(sizes):
            want = sum(1 for pk in p.tolist() if D * pk >= tau)
            assert K[i, j].item() == want
            assert abs(tl[i, j].item() - p[want:].sum().item()) < 1e-12


def test_eval_steps_and_learning_times():
    steps = quanta.eval_steps(1000, 20)
    assert steps[0] == 0 and steps[-1] == 1000 and np.all(np.diff(steps) > 0)
    t = torch.tensor([0.0, 10.0, 20.0, 30.0])
    test = torch.stack([torch.full((4,), 0.5) - 0.01 * t, torch.full((4,), 0.5)], -1)[:, None]
    run = quanta.Run(t.numpy(), test, test, test)
    lt = quanta.learning_times(run, 0.35)
    assert abs(lt[0, 0].item() - 15.0) < 1e-5 and math.isnan(lt[0, 1].item())


def test_early_stopped_picks_validation_minimum():
    p = torch.tensor([0.75, 0.25], dtype=torch.float64)
    val = torch.tensor([[[0.5, 0.5]], [[0.1, 0.5]], [[0.2, 0.1]]], dtype=torch.float64)
    test = val + 0.01
    run = quanta.Run(np.array([0, 5, 9]), val, test, test)
    losses, agg, stop = quanta.early_stopped(run, p)
    assert stop.tolist() == [9]  # 0.75*0.2 + 0.25*0.1 = 0.175 < 0.2
    assert torch.allclose(losses, test[2]) and torch.allclose(agg, (test[2] * p).sum(-1))


def test_train_smoke_and_sharing():
    g = torch.Generator().manual_seed(3)
    p = quanta.zipf(4, 1.0).float()
    rules = torch.stack([quanta.subsets(6, 2, 4, g)] * 4)
    run = quanta.train(p, rules, 6, [50, 100, 0, 0], width=8, steps=20, batch=8, lr=0.1,
                       evals=5, per_task=4, share=[0, 0, 1, 2], generator=g)
    E = len(run.steps)
    assert run.val.shape == (E, 4, 4) and run.test.shape == run.ce.shape == (E, 4, 4)
    assert torch.equal(run.test[0, 0], run.test[0, 1])  # same init and test set at step 0
    assert not torch.equal(run.test[0, 2], run.test[0, 3])
    assert run.steps[-1] == 20 and torch.isfinite(run.ce).all()


def test_train_learns_the_frequent_subtask():
    g = torch.Generator().manual_seed(4)
    p = torch.tensor([0.9, 0.1])
    rules = quanta.subsets(4, 2, 2, g)[None]
    run = quanta.train(p, rules, 4, [0], width=32, steps=400, batch=32, lr=0.3, evals=5,
                       per_task=64, generator=g)
    assert run.test[-1, 0, 0].item() < 0.25  # subtask 1 learned online
    t = quanta.learning_times(run, 0.25)
    assert t[0, 0] <= run.steps[-1]


def test_probit_threshold_recovers_and_slopes():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 8, 4000)
    y = x >= 4.0 + 0.7 * rng.standard_normal(4000)
    mu, sigma = quanta.probit_threshold(x, y)
    assert abs(mu - 4.0) < 0.1 and abs(sigma - 0.7) < 0.1
    assert quanta.probit_threshold(x, y, sigma=0.7)[1] == 0.7
    p = quanta.zipf(30, 1.5)
    sU, sK = quanta.threshold_slopes([10, 100, 1000], p, 1.0, 1e-6)
    K, tl = quanta.staircase([10, 100, 1000], p, [math.e])  # sharp threshold: the staircase
    lx = np.log([10, 100, 1000])
    assert abs(sU + np.polyfit(lx, np.log(tl[0].numpy()), 1)[0]) < 1e-9
    assert abs(sK - np.polyfit(lx, np.log(K[0].numpy()), 1)[0]) < 1e-9
