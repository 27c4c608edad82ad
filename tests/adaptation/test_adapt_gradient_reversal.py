"""Tests of the gradient reversal layer against a hand computation."""

from __future__ import annotations

import torch

from prodkg.adaptation.gradient_reversal import GradientReversal, GradientReverseFunction


def test_forward_is_identity_and_backward_is_minus_lambda_times_grad() -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 5, requires_grad=True)
    w = torch.randn(4, 5)
    lam = 0.37
    out = GradientReversal(lam)(x)
    assert torch.equal(out, x)
    (w * out).sum().backward()
    # d/dx sum(w * x) = w, reversed and scaled: exactly -lambda * w
    assert torch.equal(x.grad, -lam * w)


def test_coefficient_can_be_changed_between_steps() -> None:
    layer = GradientReversal(1.0)
    x = torch.ones(3, requires_grad=True)
    layer(x).sum().backward()
    assert torch.equal(x.grad, -torch.ones(3))
    x.grad = None
    layer.coeff = 0.25
    (2.0 * layer(x)).sum().backward()
    assert torch.equal(x.grad, torch.full((3,), -0.5))
    assert "coeff=0.25" in repr(layer)


def test_zero_coefficient_blocks_the_gradient_and_layers_before_see_the_reversal() -> None:
    lin = torch.nn.Linear(2, 2)
    x = torch.tensor([[1.0, -2.0]])
    plain = lin(x).sum()
    (g_plain,) = torch.autograd.grad(plain, lin.weight)
    reversed_ = GradientReverseFunction.apply(lin(x), 3.0).sum()
    (g_rev,) = torch.autograd.grad(reversed_, lin.weight)
    assert torch.allclose(g_rev, -3.0 * g_plain)
    zero = GradientReverseFunction.apply(lin(x), 0.0).sum()
    (g_zero,) = torch.autograd.grad(zero, lin.weight)
    assert torch.count_nonzero(g_zero) == 0
