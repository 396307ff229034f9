import math

import numpy as np
import pytest
import torch
from torch import nn

from lmbook.kernels import relu_nngp_ntk
from lmbook.ntk import NTKMLP, empirical_ntk, mlp_ntk

F64 = torch.float64


def loop_ntk(model, x1, x2):
    """J(x1) J(x2)^T from one torch.autograd.grad call per example and output component."""
    def jac(x):
        rows = []
        for i in range(len(x)):
            out = model(x[i:i + 1]).reshape(-1)
            for k in range(len(out)):
                g = torch.autograd.grad(out[k], list(model.parameters()), retain_graph=True)
                rows.append(torch.cat([t.reshape(-1) for t in g]))
        return torch.stack(rows)
    return jac(x1) @ jac(x2).T


def test_ntkmlp_is_the_stated_parameterisation():
    g = torch.Generator().manual_seed(0)
    m = NTKMLP(3, 5, 2, 1.3, 0.4, generator=g, dtype=F64)
    assert [tuple(w.shape) for w in m.weights] == [(5, 3), (5, 5), (1, 5)]
    assert [tuple(b.shape) for b in m.biases] == [(5,), (5,), (1,)]
    x = torch.randn(4, 3, generator=g, dtype=F64)
    (W1, W2, W3), (b1, b2, b3) = m.weights, m.biases
    h = 1.3 / math.sqrt(3) * x @ W1.T + 0.4 * b1
    h = 1.3 / math.sqrt(5) * torch.relu(h) @ W2.T + 0.4 * b2
    f = 1.3 / math.sqrt(5) * torch.relu(h) @ W3.T + 0.4 * b3
    assert m(x).shape == (4,) and torch.equal(m(x), f[:, 0])
    wide = NTKMLP(10, 1000, 1, 1.0, 0.0, generator=g)
    assert wide.weights[0].dtype == torch.get_default_dtype()
    assert abs(wide.weights[0].std().item() - 1) < 0.03 and abs(wide.biases[0].mean().item()) < 0.2


@pytest.mark.parametrize("L, sb", [(0, 0.3), (1, 0.0), (2, 0.4)])
def test_empirical_ntk_equals_explicit_jacobian_product(L, sb):
    g = torch.Generator().manual_seed(L)
    m = NTKMLP(4, 6, L, 1.2, sb, generator=g, dtype=F64)
    x1, x2 = torch.randn(5, 4, generator=g, dtype=F64), torch.randn(3, 4, generator=g, dtype=F64)
    K11, K12 = empirical_ntk(m, x1), empirical_ntk(m, x1, x2)
    assert K11.shape == (5, 5) and K12.shape == (5, 3) and K11.dtype == F64
    torch.testing.assert_close(K11, loop_ntk(m, x1, x1), rtol=0, atol=1e-10)
    torch.testing.assert_close(K12, loop_ntk(m, x1, x2), rtol=0, atol=1e-10)
    # the layerwise Gram identity gives the same matrix
    torch.testing.assert_close(mlp_ntk(m, x1), K11, rtol=0, atol=1e-10)
    torch.testing.assert_close(mlp_ntk(m, x1, x2), K12, rtol=0, atol=1e-10)


def test_empirical_ntk_flattens_vector_outputs_and_skips_frozen_parameters():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x1, x2 = torch.randn(3, 3, dtype=F64), torch.randn(2, 3, dtype=F64)
    K = empirical_ntk(m, x1, x2)
    assert K.shape == (6, 4)  # (n1 k, n2 k), example-major
    torch.testing.assert_close(K, loop_ntk(m, x1, x2), rtol=0, atol=1e-10)
    # only parameters that require grad count: the last layer alone gives its own block
    for p in m[0].parameters():
        p.requires_grad_(False)
    h1, h2 = torch.tanh(m[0](x1)), torch.tanh(m[0](x2))
    expected = torch.kron((h1 @ h2.T + 1), torch.eye(2, dtype=F64))  # d f_k/d(W_k., b_k) = (h, 1)
    torch.testing.assert_close(empirical_ntk(m, x1, x2), expected, rtol=0, atol=1e-12)


def test_linear_readout_ntk_is_exact_at_any_width():
    """hidden_layers = 0: f = sw/sqrt(d) W x + sb b, whose NTK sw^2 x.x'/d + sb^2 has no fluctuation at all."""
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    m = NTKMLP(3, 1, 0, 1.7, 0.6, generator=torch.Generator().manual_seed(2), dtype=F64)
    np.testing.assert_allclose(empirical_ntk(m, x).numpy(), relu_nngp_ntk(x, 0, 1.7, 0.6)[1], rtol=1e-13)


# Tolerance for one wide network: relative Frobenius error <= C / sqrt(width). The error is a sum of O(width)
# weakly dependent unit contributions, so error * sqrt(width) has a width-independent law; we measured it over
# independent seeds (d = 5, six Gaussian inputs, sw = 1.4, sb = 0.3): for the NTK, mean 1.7 / 2.5 and 99th
# percentile 4.0 / 6.6 (one / two hidden layers, 300 / 200 seeds at width 1024; 2.9 / 5.2 at width 4096); for the
# NNGP (two hidden layers) mean 3.0, 99th percentile 7.0-7.7, largest of 1000 seeds 11. C = 8 (NTK) and 12 (NNGP)
# sit above those tails. The rival "NTK without the readout's own term Sigma^L" is off by 44-57%, far outside
# 8 / sqrt(2048) = 18%; index errors of a few % are caught by test_kernels' Monte Carlo at 0.3% precision.
@pytest.mark.parametrize("L, width", [(1, 4096), (2, 2048)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wide_network_ntk_approaches_closed_form(L, width, seed):
    sw, sb = 1.4, 0.3
    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(100 + seed), dtype=F64)
    x[5] = x[0]                                            # a repeated input
    m = NTKMLP(5, width, L, sw, sb, generator=torch.Generator().manual_seed(seed), dtype=F64)
    nngp, ntk = relu_nngp_ntk(x, L, sw, sb)
    K = empirical_ntk(m, x).numpy()
    assert np.linalg.norm(K - ntk) / np.linalg.norm(ntk) <= 8 / math.sqrt(width)
    no_readout = ntk - nngp                                # the rival: forgetting the readout's gradient
    assert np.linalg.norm(K - no_readout) / np.linalg.norm(no_readout) > 8 / math.sqrt(width)
    # the readout's own parameters alone give the empirical NNGP sw^2 relu(h^L).relu(h^L)'/width + sb^2
    for p in list(m.weights[:-1]) + list(m.biases[:-1]):
        p.requires_grad_(False)
    K_readout = empirical_ntk(m, x).numpy()
    assert np.linalg.norm(K_readout - nngp) / np.linalg.norm(nngp) <= 12 / math.sqrt(width)
