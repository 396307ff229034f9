import math

import torch

from lmbook.signal_prop import gradient_norms, propagate

F64 = torch.float64
a = math.sqrt(math.pi) / 2
phi = lambda x: torch.erf(a * x)
dphi = lambda x: 2 * a / math.sqrt(math.pi) * torch.exp(-a * a * x * x)


def explicit(sigma1, sw2, sb2, n, layers, networks, gen, backward=False):
    """The same networks with explicit n x n weight matrices and autograd."""
    L1 = torch.linalg.cholesky(torch.as_tensor(sigma1, dtype=F64))
    H = torch.randn(networks, n, L1.shape[0], generator=gen, dtype=F64) @ L1.T
    Ws = [math.sqrt(sw2 / n) * torch.randn(networks, n, n, generator=gen, dtype=F64)
          for _ in range(layers - 1)]
    for W in Ws:
        W.requires_grad_(True)
    qs, cs = [H.transpose(1, 2) @ H / n], []
    for W in Ws:
        H = W @ phi(H) + math.sqrt(sb2) * torch.randn(networks, n, 1, generator=gen, dtype=F64)
        qs.append(H.transpose(1, 2) @ H / n)
    if backward:
        g = torch.randn(networks, n, 1, generator=gen, dtype=F64)
        grads = torch.autograd.grad((g * H).sum(), Ws)
        return torch.stack([gr.square().sum((1, 2)) for gr in grads])
    return torch.stack(qs).detach(), cs


def _agree(x, y, k=4.5):
    x, y = x.flatten(), y.flatten()
    se = math.sqrt(x.var() / x.numel() + y.var() / y.numel())
    assert abs(x.mean() - y.mean()) <= k * se, (x.mean(), y.mean(), se)


def test_forward_law_matches_explicit_weights():
    gen = torch.Generator().manual_seed(0)
    sigma1 = [[1.0, 0.3], [0.3, 0.5]]
    q, omc = propagate(phi, sigma1, 2.5, 0.3, 24, 4, 3000, gen)
    qe, _ = explicit(sigma1, 2.5, 0.3, 24, 4, 3000, gen)
    for i, j in [(0, 0), (0, 1), (1, 1)]:
        _agree(q[-1, :, i, j], qe[-1, :, i, j])
        _agree(q[-1, :, i, j] ** 2, qe[-1, :, i, j] ** 2)
    c = q[:, :, 0, 1] / torch.sqrt(q[:, :, 0, 0] * q[:, :, 1, 1])
    assert torch.allclose(1 - c, omc[:, :, 0, 1], atol=1e-12)


def test_backward_law_matches_explicit_weights():
    gen = torch.Generator().manual_seed(1)
    g = gradient_norms(phi, dphi, 0.8, 2.5, 0.3, 16, 5, 4000, gen)
    ge = explicit([[0.8]], 2.5, 0.3, 16, 5, 4000, gen, backward=True)
    assert g.shape == ge.shape == (4, 4000)
    for layer in range(4):
        _agree(torch.log(g[layer] / g[-1]), torch.log(ge[layer] / ge[-1]))
        _agree(torch.log(g[layer]), torch.log(ge[layer]))


def test_collinear_inputs_fall_back_to_eigendecomposition():
    gen = torch.Generator().manual_seed(2)
    q, omc = propagate(torch.relu, [[1.0, 0.0], [0.0, 1.0]], 2.0, 0.0, 16, 150, 8, gen)
    assert torch.isfinite(q).all() and torch.isfinite(omc).all() and (omc >= 0).all()


def test_one_minus_c_is_exact_near_collinear():
    """1 - c from the pairwise distances keeps its relative precision where c -> 1 (no Gram-matrix
    cancellation), for several inputs at once."""
    gen = torch.Generator().manual_seed(3)
    eps = 1e-13
    sigma1 = torch.full((4, 4), 1 - eps, dtype=F64) + eps * torch.eye(4, dtype=F64)
    _, omc = propagate(torch.relu, sigma1, 2.0, 0.0, 64, 3, 5, gen)
    assert omc.shape == (3, 5, 4, 4)
    assert torch.equal(omc, omc.transpose(-1, -2)) and (omc.diagonal(dim1=-2, dim2=-1) == 0).all()
    off = omc[0][:, ~torch.eye(4, dtype=torch.bool)]
    assert (off > 0).all() and (off < 1e-11).all()              # of order eps, not rounding noise
    q, omc = propagate(phi, [[1.0, 0.2, 0.0], [0.2, 1.0, 0.1], [0.0, 0.1, 1.0]], 2.5, 0.3, 32, 3,
                       4, gen)
    c = q / torch.sqrt(q.diagonal(dim1=-2, dim2=-1)[..., :, None]
                       * q.diagonal(dim1=-2, dim2=-1)[..., None, :])
    assert torch.allclose(1 - c, omc, atol=1e-12)
