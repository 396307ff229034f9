"""Kernel gradient descent in closed form equals iterating the update."""
import torch

from lmbook.kernel_gd import output_change, residual_trajectory


def test_closed_form_equals_iterated_kernel_gradient_descent():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(12, 7, generator=g, dtype=torch.float64)
    X, Xt = A[:7], A[7:]
    kern = lambda a, b: torch.exp(-torch.cdist(a, b) ** 2 / 4)
    K, Ks = kern(X, X), kern(Xt, X)
    y = torch.randn(7, generator=g, dtype=torch.float64)
    f0 = torch.randn(3, 7, generator=g, dtype=torch.float64)
    lr, steps = 0.8 * 7 / torch.linalg.eigvalsh(K).max().item(), 25
    f, ft = f0.clone(), torch.zeros(3, 5, dtype=torch.float64)
    for _ in range(steps):
        step = -(lr / 7) * (f - y)
        f = f + step @ K
        ft = ft + step @ Ks.T
    train, test = output_change(K, y - f0, lr, steps, Ks)
    assert torch.allclose(train, f - f0, atol=1e-12)
    assert torch.allclose(test, ft, atol=1e-12)
    only_train, none = output_change(K, y - f0[0], lr, steps)
    assert none is None and torch.allclose(only_train, train[0], atol=1e-12)


def test_residual_trajectory_iterates_the_update_for_one_or_many_kernels():
    g = torch.Generator().manual_seed(1)
    A = torch.randn(2, 6, 6, generator=g, dtype=torch.float64)
    K = A @ A.transpose(1, 2) + torch.eye(6, dtype=torch.float64)
    r0 = torch.randn(2, 6, generator=g, dtype=torch.float64)
    lr = 0.5 * 6 / torch.linalg.eigvalsh(K).max().item()
    traj = residual_trajectory(K, r0, lr, 10)
    r = r0.clone()
    for t in range(11):
        assert torch.allclose(traj[t], r, atol=1e-12)
        r = r - (lr / 6) * torch.einsum("spq,sq->sp", K, r)
    assert torch.allclose(residual_trajectory(K[0], r0[0], lr, 10), traj[:, 0], atol=1e-12)


def test_eigh_one_matrix_at_a_time_matches_batched():
    from lmbook.kernel_gd import _eigh

    g = torch.Generator().manual_seed(2)
    A = torch.randn(2, 3, 5, 5, generator=g, dtype=torch.float64)
    K = A @ A.transpose(-1, -2)
    evals, evecs = _eigh(K)
    assert evals.shape == (2, 3, 5) and evecs.shape == (2, 3, 5, 5)
    assert torch.allclose(evals, torch.linalg.eigvalsh(K), atol=1e-12)
    assert torch.allclose(evecs @ torch.diag_embed(evals) @ evecs.transpose(-1, -2), K, atol=1e-10)
