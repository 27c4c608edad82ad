"""DANN building blocks: the domain discriminator, the domain-adversarial loss and the lambda schedule."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from prodkg.adaptation.gradient_reversal import GradientReversal
from prodkg.errors import StageError


def dann_lambda(progress: float, gamma: float = 10.0) -> float:
    """Schedule of the reversal coefficient, ``2 / (1 + exp(-gamma * p)) - 1``.

    It rises from 0 at the start of training to almost 1 at the end, so the
    discriminator's noisy early gradients do not disturb the features
    (Ganin et al., JMLR 2016, section 5.2.2, with gamma = 10).

    Args:
        progress: fraction of training done, in [0, 1].
        gamma: steepness.
    """
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"progress must lie in [0, 1]; got {progress}")
    return 2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0


class DomainDiscriminator(nn.Module):
    """MLP that tells source features from target features, ending in one logit.

    ``Linear -> ReLU -> Dropout`` twice, then ``Linear(hidden, 1)`` (Ganin et al.,
    JMLR 2016, use the same three-layer shape).

    Args:
        in_features: width of the features being aligned.
        hidden: width of both hidden layers.
        dropout: dropout probability after each hidden layer.

    Shape:
        input: ``(N, in_features)``; output: ``(N, 1)`` logits, positive meaning "source".
    """

    def __init__(self, in_features: int, hidden: int = 256, dropout: float = 0.5) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class DomainAdversarialLoss(nn.Module):
    """Domain-adversarial loss of DANN (Ganin et al., JMLR 2016, eq. 9-10).

    Features pass through a :class:`GradientReversal` into the discriminator, which
    is scored by binary cross-entropy with logits, source label 1, target label 0.
    The loss is the mean of the source-side and the target-side means, so both
    domains weigh the same whatever their batch sizes. Minimising it trains the
    discriminator to separate the domains and, through the reversed gradient, the
    feature extractor to make them inseparable.

    Args:
        discriminator: module mapping ``(N, d)`` features to ``(N, 1)`` logits.
        coeff: initial reversal coefficient (set ``loss.grl.coeff`` during training).

    Inputs:
        f_s: ``(N_s, d)`` source features; f_t: ``(N_t, d)`` target features;
        w_s: optional ``(N_s,)`` non-negative weights of the source rows (PADA's class weights),
        the source-side loss then being their weighted mean.

    Shape:
        output: scalar. After each call ``domain_accuracy`` holds the discriminator's
        accuracy on that batch (a 0-d tensor without gradient), a training diagnostic.
    """

    def __init__(self, discriminator: nn.Module, coeff: float = 1.0) -> None:
        super().__init__()
        self.grl = GradientReversal(coeff)
        self.discriminator = discriminator
        self.domain_accuracy: torch.Tensor | None = None

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor, w_s: torch.Tensor | None = None) -> torch.Tensor:
        if f_s.ndim != 2 or f_t.ndim != 2 or f_s.shape[1] != f_t.shape[1]:
            raise StageError(
                f"DomainAdversarialLoss expects (N_s, d) and (N_t, d) features; "
                f"got {tuple(f_s.shape)} and {tuple(f_t.shape)}"
            )
        if f_s.shape[0] == 0 or f_t.shape[0] == 0:
            raise StageError("DomainAdversarialLoss needs at least one source and one target row")
        logits = self.discriminator(self.grl(torch.cat([f_s, f_t], dim=0))).squeeze(1)
        d_s, d_t = logits[: f_s.shape[0]], logits[f_s.shape[0] :]
        if w_s is None:
            loss_s = F.binary_cross_entropy_with_logits(d_s, torch.ones_like(d_s))
        else:
            per_row = F.binary_cross_entropy_with_logits(d_s, torch.ones_like(d_s), reduction="none")
            loss_s = (w_s * per_row).sum() / w_s.sum().clamp(min=1e-12)
        loss_t = F.binary_cross_entropy_with_logits(d_t, torch.zeros_like(d_t))
        with torch.no_grad():
            correct = (d_s > 0).sum() + (d_t <= 0).sum()
            self.domain_accuracy = correct.float() / logits.shape[0]
        return 0.5 * (loss_s + loss_t)
