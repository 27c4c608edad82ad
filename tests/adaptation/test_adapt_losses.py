"""Each adaptation loss against a naive reference computation (double loops, NumPy covariance, manual products)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from prodkg.adaptation.losses import (
    ConditionalDomainAdversarialLoss,
    CoralLoss,
    MultilinearMap,
    MultipleKernelMMD,
    ResidualBlock,
    entropy,
    entropy_weights,
)
from prodkg.errors import StageError


def naive_mmd(xs: np.ndarray, xt: np.ndarray, multipliers: tuple[float, ...]) -> float:
    z = np.concatenate([xs, xt])
    n = len(z)
    sq = [[float(((z[i] - z[j]) ** 2).sum()) for j in range(n)] for i in range(n)]
    scale = sum(sq[i][j] for i in range(n) for j in range(n) if i != j) / (n * n - n)

    def k(i: int, j: int) -> float:
        return sum(math.exp(-sq[i][j] / (m * scale)) for m in multipliers)

    ns, nt = len(xs), len(xt)
    kss = sum(k(i, j) for i in range(ns) for j in range(ns)) / ns**2
    ktt = sum(k(i, j) for i in range(ns, n) for j in range(ns, n)) / nt**2
    kst = sum(k(i, j) for i in range(ns) for j in range(ns, n)) / (ns * nt)
    return kss + ktt - 2 * kst


def test_mmd_matches_double_loop() -> None:
    rng = np.random.default_rng(0)
    xs, xt = rng.normal(size=(7, 4)), rng.normal(loc=0.7, size=(5, 4))
    loss = MultipleKernelMMD((0.5, 1.0, 2.0))
    got = loss(torch.tensor(xs, dtype=torch.float64), torch.tensor(xt, dtype=torch.float64)).item()
    assert got == pytest.approx(naive_mmd(xs, xt, (0.5, 1.0, 2.0)), rel=1e-9)


def test_mmd_grows_with_the_shift_and_is_zero_for_identical_sets() -> None:
    rng = np.random.default_rng(1)
    x = torch.tensor(rng.normal(size=(30, 3)))
    loss = MultipleKernelMMD()
    assert loss(x, x.clone()).item() == pytest.approx(0.0, abs=1e-12)
    small, large = loss(x, x + 0.3).item(), loss(x, x + 3.0).item()
    assert 0 < small < large


def test_coral_matches_numpy_covariance() -> None:
    rng = np.random.default_rng(2)
    xs, xt = rng.normal(size=(20, 5)), rng.normal(size=(13, 5)) * 2.0
    expected = ((np.cov(xs, rowvar=False) - np.cov(xt, rowvar=False)) ** 2).sum() / (4 * 5**2)
    got = CoralLoss()(torch.tensor(xs), torch.tensor(xt)).item()
    assert got == pytest.approx(expected, rel=1e-10)


def test_coral_needs_two_rows_per_domain() -> None:
    with pytest.raises(StageError, match="at least 2"):
        CoralLoss()(torch.zeros(1, 3), torch.zeros(4, 3))


def test_exact_multilinear_map_is_the_flattened_outer_product() -> None:
    rng = np.random.default_rng(3)
    f, g = rng.normal(size=(4, 3)), rng.dirichlet(np.ones(2), size=4)
    mm = MultilinearMap(3, 2)
    assert not mm.randomized and mm.out_dim == 6
    got = mm(torch.tensor(f), torch.tensor(g)).numpy()
    expected = np.stack([np.outer(g[i], f[i]).ravel() for i in range(4)])
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_randomized_multilinear_map_is_the_product_of_fixed_projections_and_keeps_inner_products() -> None:
    rng = np.random.default_rng(4)
    f, g = rng.normal(size=(2, 16)), rng.dirichlet(np.ones(8), size=2)
    mm = MultilinearMap(16, 8, max_dim=4096 * 4).double()
    assert not mm.randomized
    mm = MultilinearMap(16, 8, max_dim=64).double()
    assert mm.randomized and mm.out_dim == 64
    ft, gt = torch.tensor(f), torch.tensor(g)
    # Independent of the product form: the randomized map is a fixed linear projection of the exact map f ⊗ g.
    # Column k of the projection holds R_g[j, k] * R_f[i, k] / sqrt(64) at the exact map's (j, i) position.
    r_f, r_g = mm.r_f.numpy(), mm.r_g.numpy()
    projection = np.zeros((8 * 16, 64))
    for k in range(64):
        for j in range(8):
            for i in range(16):
                projection[j * 16 + i, k] = r_g[j, k] * r_f[i, k] / 8.0
    exact = np.stack([np.outer(g[n], f[n]).ravel() for n in range(2)])
    np.testing.assert_allclose(mm(ft, gt).numpy(), exact @ projection, rtol=1e-10, atol=1e-12)
    # inner products estimate the exact map's: close for a wide map
    wide = MultilinearMap(16, 8, max_dim=100).double()
    wide_h = wide(ft, gt).numpy()
    h_exact = MultilinearMap(16, 8, max_dim=128).double()(ft, gt).numpy()
    assert float(wide_h[0] @ wide_h[0]) == pytest.approx(float(h_exact[0] @ h_exact[0]), rel=0.5)


def test_entropy_and_cdan_weights_match_manual_values() -> None:
    p = np.array([[1.0, 0.0], [0.5, 0.5], [0.9, 0.1]])
    h = np.array([0.0, math.log(2), -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))])
    np.testing.assert_allclose(entropy(torch.tensor(p)).numpy(), h, atol=1e-6)
    w = 1 + np.exp(-h)
    np.testing.assert_allclose(entropy_weights(torch.tensor(p)).numpy(), w / w.sum(), atol=1e-6)


def test_cdan_loss_is_the_weighted_bce_of_the_discriminator_on_the_map() -> None:
    torch.manual_seed(0)
    disc = torch.nn.Linear(6, 1).double()
    loss = ConditionalDomainAdversarialLoss(disc, MultilinearMap(3, 2), entropy_conditioning=True)
    fs, ft = torch.randn(4, 3, dtype=torch.float64), torch.randn(3, 3, dtype=torch.float64)
    gs, gt = torch.softmax(torch.randn(4, 2, dtype=torch.float64), 1), torch.softmax(torch.randn(3, 2, dtype=torch.float64), 1)
    got = loss(fs, ft, gs, gt).item()

    def half(f: torch.Tensor, g: torch.Tensor, label: float) -> float:
        total, weights = 0.0, []
        for i in range(len(f)):
            h = -(g[i] * torch.log(g[i] + 1e-8)).sum().item()
            weights.append(1 + math.exp(-h))
        for i in range(len(f)):
            z = disc(torch.outer(g[i], f[i]).reshape(1, -1)).item()
            p = 1 / (1 + math.exp(-z))
            bce = -(label * math.log(p) + (1 - label) * math.log(1 - p))
            total += weights[i] / sum(weights) * bce
        return total

    assert got == pytest.approx(0.5 * (half(fs, gs, 1.0) + half(ft, gt, 0.0)), rel=1e-9)


def test_residual_block_starts_as_identity_and_learns_an_additive_residual() -> None:
    block = ResidualBlock(5, hidden=8)
    x = torch.randn(3, 5)
    assert torch.equal(block(x), x)
    with torch.no_grad():
        block.delta[2].bias.fill_(1.0)
    # last layer's weight still zero: the residual is its bias alone, whatever the input
    assert torch.allclose(block(x), x + 1.0)
    with torch.no_grad():
        block.delta[0].weight.copy_(torch.eye(8, 5))  # hidden h = relu(x[:5], then zeros) + b0
        block.delta[0].bias.zero_()
        block.delta[2].weight.copy_(2.0 * torch.eye(5, 8))  # residual = 2 h[:5] + 1
    by_hand = torch.tensor([[1.0, -2.0, 0.5, 0.0, 3.0]])
    assert torch.allclose(block(by_hand), torch.tensor([[1.0 + 3.0, -2.0 + 1.0, 0.5 + 2.0, 0.0 + 1.0, 3.0 + 7.0]]))
