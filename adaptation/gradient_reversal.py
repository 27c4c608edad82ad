"""Gradient reversal layer: identity on the way forward, gradient times -lambda on the way back."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class GradientReverseFunction(torch.autograd.Function):
    """Autograd function of the gradient reversal layer (GRL).

    Forward returns its input unchanged; backward returns ``-coeff * grad``, so
    whatever precedes it is trained to *maximise* the loss that follows it.
    Ganin & Lempitsky, "Unsupervised Domain Adaptation by Backpropagation", ICML 2015;
    Ganin et al., "Domain-Adversarial Training of Neural Networks", JMLR 17(59), 2016.

    Args:
        x: any tensor.
        coeff: the reversal strength lambda (a Python float, not trained).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, coeff: float = 1.0) -> torch.Tensor:
        ctx.coeff = float(coeff)
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad_output.neg() * ctx.coeff, None


class GradientReversal(nn.Module):
    """Gradient reversal layer with a settable coefficient (Ganin & Lempitsky, ICML 2015).

    Args:
        coeff: initial lambda; change it during training with ``layer.coeff = value``
            (DANN anneals it with :func:`adaptation.dann.dann_lambda`).

    Shape:
        input and output: any shape, identical.
    """

    def __init__(self, coeff: float = 1.0) -> None:
        super().__init__()
        self.coeff = float(coeff)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return GradientReverseFunction.apply(x, self.coeff)

    def extra_repr(self) -> str:
        return f"coeff={self.coeff}"
