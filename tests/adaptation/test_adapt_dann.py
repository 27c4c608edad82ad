"""Tests of the DANN loss against a naive NumPy reference, and of the lambda schedule."""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import pytest
import torch
from torch import nn

from prodkg.adaptation.dann import DomainAdversarialLoss, DomainDiscriminator, dann_lambda
from prodkg.errors import StageError


def _linear_discriminator(w: np.ndarray, b: float) -> nn.Linear:
    lin = nn.Linear(len(w), 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(w[None, :], dtype=torch.float32))
        lin.bias.fill_(b)
    return lin


def _naive_bce(f_s: np.ndarray, f_t: np.ndarray, w: np.ndarray, b: float) -> float:
    z_s, z_t = f_s @ w + b, f_t @ w + b
    sigmoid = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    loss_s = -np.mean(np.log(sigmoid(z_s)))  # label 1
    loss_t = -np.mean(np.log(1.0 - sigmoid(z_t)))  # label 0
    return 0.5 * (loss_s + loss_t)


def test_domain_adversarial_loss_matches_naive_bce() -> None:
    f_s = np.array([[0.5, -1.0, 2.0], [1.5, 0.0, -0.5]], dtype=np.float64)
    f_t = np.array([[-1.0, 0.25, 0.0], [0.0, 2.0, 1.0], [0.3, -0.7, -1.2]], dtype=np.float64)
    w, b = np.array([0.8, -0.6, 0.3]), 0.1
    loss_fn = DomainAdversarialLoss(_linear_discriminator(w, b))
    got = loss_fn(torch.tensor(f_s, dtype=torch.float32), torch.tensor(f_t, dtype=torch.float32))
    assert got.item() == pytest.approx(_naive_bce(f_s, f_t, w, b), rel=1e-6)
    # logits: source 1.7, 1.15 (right side); target -0.85, -0.8 (right side), 0.4 (wrong side)
    assert loss_fn.domain_accuracy.item() == pytest.approx(4 / 5)


def test_features_receive_the_reversed_gradient_and_the_discriminator_the_plain_one() -> None:
    torch.manual_seed(0)
    disc = DomainDiscriminator(4, hidden=8, dropout=0.0)
    f_s = torch.randn(5, 4, requires_grad=True)
    f_t = torch.randn(6, 4, requires_grad=True)
    coeff = 0.6
    loss = DomainAdversarialLoss(disc, coeff=coeff)(f_s, f_t)
    g_s, g_t, *g_disc = torch.autograd.grad(loss, [f_s, f_t, *disc.parameters()])

    # reference: the same loss with no reversal layer
    logits = disc(torch.cat([f_s, f_t])).squeeze(1)
    ref = 0.5 * (
        nn.functional.binary_cross_entropy_with_logits(logits[:5], torch.ones(5))
        + nn.functional.binary_cross_entropy_with_logits(logits[5:], torch.zeros(6))
    )
    r_s, r_t, *r_disc = torch.autograd.grad(ref, [f_s, f_t, *disc.parameters()])
    assert torch.allclose(g_s, -coeff * r_s, atol=1e-7)
    assert torch.allclose(g_t, -coeff * r_t, atol=1e-7)
    for got, want in zip(g_disc, r_disc, strict=True):
        assert torch.allclose(got, want, atol=1e-7)


def test_domain_adversarial_loss_rejects_mismatched_features() -> None:
    loss_fn = DomainAdversarialLoss(DomainDiscriminator(3, hidden=4))
    with pytest.raises(StageError, match="features"):
        loss_fn(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(StageError, match="at least one"):
        loss_fn(torch.zeros(2, 3), torch.zeros(0, 3))


def test_discriminator_outputs_one_logit_per_row() -> None:
    assert DomainDiscriminator(7, hidden=5)(torch.zeros(3, 7)).shape == (3, 1)


def test_dann_lambda_schedule() -> None:
    assert dann_lambda(0.0) == 0.0
    assert dann_lambda(0.5) == pytest.approx(2.0 / (1.0 + math.exp(-5.0)) - 1.0)
    assert dann_lambda(0.5) == pytest.approx(0.98661, abs=1e-5)
    assert dann_lambda(1.0) == pytest.approx(1.0, abs=1e-4)
    values = [dann_lambda(p) for p in np.linspace(0, 1, 21)]
    assert all(a < b for a, b in pairwise(values))
    assert all(0.0 <= v < 1.0 for v in values)
    with pytest.raises(ValueError, match="progress"):
        dann_lambda(1.5)
