"""Adaptation losses as small, self-contained modules: multi-kernel MMD, CORAL, CDAN's conditional adversary, entropy."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from prodkg.adaptation.gradient_reversal import GradientReversal
from prodkg.errors import StageError


def _check_pair(name: str, a: torch.Tensor, b: torch.Tensor, min_rows: int = 1) -> None:
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise StageError(f"{name} expects (N_s, d) and (N_t, d) inputs; got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[0] < min_rows or b.shape[0] < min_rows:
        raise StageError(f"{name} needs at least {min_rows} row(s) per domain; got {a.shape[0]} and {b.shape[0]}")


def entropy(probs: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Shannon entropy (nats) of each row of a probability matrix. Shape: ``(N, C)`` -> ``(N,)``."""
    return -(probs * torch.log(probs + eps)).sum(dim=1)


class MultipleKernelMMD(nn.Module):
    """Squared maximum mean discrepancy under a sum of Gaussian kernels (DAN: Long et al., ICML 2015).

    ``k(x, y) = sum_i exp(-||x - y||^2 / (m_i * s))`` where ``s`` is the mean
    squared distance between all pairs of the pooled batch (detached, so the
    bandwidth follows the features without being a way to shrink the loss) and
    ``m_i`` are the ``multipliers``. The estimate is the biased (V-statistic)
    ``mean K_ss + mean K_tt - 2 mean K_st`` of Gretton et al. (JMLR 2012), which
    is never negative.

    Args:
        multipliers: bandwidth multipliers of the kernels (DAN uses five, from 2^-2 to 2^2 here in steps of 2).

    Inputs:
        x_s: ``(N_s, d)`` source features; x_t: ``(N_t, d)`` target features.

    Shape:
        output: scalar.
    """

    def __init__(self, multipliers: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0)) -> None:
        super().__init__()
        if not multipliers or any(not m > 0 for m in multipliers):
            raise StageError(f"kernel multipliers must be positive numbers; got {list(multipliers)}")
        self.multipliers = tuple(float(m) for m in multipliers)

    def kernel(self, z: torch.Tensor) -> torch.Tensor:
        """Summed Gaussian kernel matrix of the rows of ``z``. Shape: ``(N, d)`` -> ``(N, N)``."""
        sq = torch.cdist(z, z).pow(2)
        n = z.shape[0]
        scale = sq.detach().sum() / max(n * n - n, 1)
        scale = torch.clamp(scale, min=1e-8)
        return sum(torch.exp(-sq / (m * scale)) for m in self.multipliers)

    def forward(self, x_s: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
        _check_pair("MultipleKernelMMD", x_s, x_t)
        k = self.kernel(torch.cat([x_s, x_t], dim=0))
        n_s = x_s.shape[0]
        return k[:n_s, :n_s].mean() + k[n_s:, n_s:].mean() - 2.0 * k[:n_s, n_s:].mean()


class CoralLoss(nn.Module):
    """Deep CORAL loss (Sun & Saenko, ECCV 2016 workshops, eq. 1).

    ``||C_s - C_t||_F^2 / (4 d^2)`` with ``C`` the unbiased covariance matrix of
    each domain's features in the batch.

    Inputs:
        x_s: ``(N_s, d)``; x_t: ``(N_t, d)``; at least two rows each.

    Shape:
        output: scalar.
    """

    @staticmethod
    def covariance(x: torch.Tensor) -> torch.Tensor:
        centred = x - x.mean(dim=0, keepdim=True)
        return centred.T @ centred / (x.shape[0] - 1)

    def forward(self, x_s: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
        _check_pair("CoralLoss", x_s, x_t, min_rows=2)
        d = x_s.shape[1]
        diff = self.covariance(x_s) - self.covariance(x_t)
        return (diff * diff).sum() / (4.0 * d * d)


class MultilinearMap(nn.Module):
    """The conditioning map of CDAN (Long et al., NeurIPS 2018, eq. 4-5).

    Exact map: the flattened outer product ``f ⊗ g`` (``d * C`` columns). When that
    is wider than ``max_dim`` the randomized map ``(R_f f) ⊙ (R_g g) / sqrt(max_dim)``
    with fixed Gaussian ``R_f``, ``R_g`` is used instead, whose inner products
    are unbiased estimates of the exact map's.

    Args:
        feature_dim: ``d``; n_classes: ``C``; max_dim: widest exact map allowed.

    Inputs:
        f: ``(N, d)`` features; g: ``(N, C)`` class probabilities.

    Shape:
        output: ``(N, out_dim)`` with ``out_dim = d * C`` or ``max_dim``.
    """

    def __init__(self, feature_dim: int, n_classes: int, max_dim: int = 4096) -> None:
        super().__init__()
        self.randomized = feature_dim * n_classes > max_dim
        self.out_dim = max_dim if self.randomized else feature_dim * n_classes
        if self.randomized:
            gen = torch.Generator().manual_seed(0)  # fixed projections: part of the loss, not learned
            self.register_buffer("r_f", torch.randn(feature_dim, max_dim, generator=gen))
            self.register_buffer("r_g", torch.randn(n_classes, max_dim, generator=gen))

    def forward(self, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        if self.randomized:
            return (f @ self.r_f) * (g @ self.r_g) / math.sqrt(self.out_dim)
        return torch.bmm(g.unsqueeze(2), f.unsqueeze(1)).flatten(1)


def entropy_weights(probs: torch.Tensor) -> torch.Tensor:
    """CDAN+E example weights ``1 + exp(-H(g))`` normalised to sum to 1 within the batch. Shape: ``(N, C)`` -> ``(N,)``."""
    w = 1.0 + torch.exp(-entropy(probs))
    return w / w.sum()


class ConditionalDomainAdversarialLoss(nn.Module):
    """Conditional domain-adversarial loss, CDAN and CDAN+E (Long et al., NeurIPS 2018).

    The discriminator sees the multilinear map of features and (detached) class
    probabilities through a gradient reversal layer; with ``entropy_conditioning``
    each example's binary cross-entropy is weighted by :func:`entropy_weights`
    (computed per domain), so confident, transferable examples count more. As in
    DANN the loss averages the source and target halves.

    Args:
        discriminator: maps ``(N, map.out_dim)`` to ``(N, 1)`` logits.
        multilinear: the :class:`MultilinearMap`.
        entropy_conditioning: CDAN+E when True.

    Inputs:
        f_s, f_t: ``(N_s, d)``, ``(N_t, d)`` features; g_s, g_t: ``(N_s, C)``, ``(N_t, C)`` probabilities.

    Shape:
        output: scalar.
    """

    def __init__(self, discriminator: nn.Module, multilinear: MultilinearMap, entropy_conditioning: bool = True) -> None:
        super().__init__()
        self.grl = GradientReversal(1.0)
        self.discriminator = discriminator
        self.multilinear = multilinear
        self.entropy_conditioning = entropy_conditioning
        self.domain_accuracy: torch.Tensor | None = None

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor, g_s: torch.Tensor, g_t: torch.Tensor) -> torch.Tensor:
        _check_pair("ConditionalDomainAdversarialLoss", f_s, f_t)
        _check_pair("ConditionalDomainAdversarialLoss", g_s, g_t)
        g_s, g_t = g_s.detach(), g_t.detach()
        h = self.multilinear(torch.cat([f_s, f_t]), torch.cat([g_s, g_t]))
        logits = self.discriminator(self.grl(h)).squeeze(1)
        n_s = f_s.shape[0]
        d_s, d_t = logits[:n_s], logits[n_s:]
        if self.entropy_conditioning:
            w_s, w_t = entropy_weights(g_s), entropy_weights(g_t)
        else:
            w_s = torch.full_like(d_s, 1.0 / n_s)
            w_t = torch.full_like(d_t, 1.0 / d_t.shape[0])
        loss_s = (w_s * F.binary_cross_entropy_with_logits(d_s, torch.ones_like(d_s), reduction="none")).sum()
        loss_t = (w_t * F.binary_cross_entropy_with_logits(d_t, torch.zeros_like(d_t), reduction="none")).sum()
        with torch.no_grad():
            self.domain_accuracy = ((d_s > 0).sum() + (d_t <= 0).sum()).float() / logits.shape[0]
        return 0.5 * (loss_s + loss_t)


class ResidualBlock(nn.Module):
    """The residual function of RTN (Long et al., NeurIPS 2016, section 4.2): ``x + Δ(x)``.

    ``Δ`` is ``Linear -> ReLU -> Linear``; its last layer starts at zero, so the
    block starts as the identity and the source classifier starts equal to the
    target classifier, drifting away only as far as the source data pulls it.

    Args:
        width: ``C``, the number of logits; hidden: width of ``Δ``'s hidden layer.

    Shape:
        ``(N, C)`` in and out.
    """

    def __init__(self, width: int, hidden: int = 64) -> None:
        super().__init__()
        self.delta = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, width))
        nn.init.zeros_(self.delta[2].weight)
        nn.init.zeros_(self.delta[2].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.delta(x)
