"""Domain-adaptation methods behind one small interface, and their registry."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from adaptation.dann import DomainAdversarialLoss, DomainDiscriminator, dann_lambda
from prodkg.registry import Registry

if TYPE_CHECKING:
    from adaptation.config import TrainConfig

#: Adaptation methods by name; each entry is an :class:`AdaptationMethod` subclass.
METHODS: Registry[type[AdaptationMethod]] = Registry("adaptation method")


class AdaptationMethod(nn.Module):
    """What the trainer needs from a method: an extra loss on the bottleneck and its modules.

    The trainer computes ``cls_loss + config.tradeoff * adaptation_loss(...)`` and
    optimises the network together with this module's own parameters (a
    discriminator, say). A method is used only during training; it is not part
    of the saved model.

    Args:
        feature_dim: width of the bottleneck features it receives.
        n_classes: number of categories (class-conditional methods need it).
        config: the run's configuration.
    """

    #: False for methods that ignore the target; the trainer then skips target batches.
    needs_target: ClassVar[bool] = True

    def __init__(self, feature_dim: int, n_classes: int, config: TrainConfig) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.n_classes = n_classes

    def adaptation_loss(
        self,
        features_s: torch.Tensor,
        features_t: torch.Tensor,
        logits_s: torch.Tensor,
        logits_t: torch.Tensor,
        progress: float,
    ) -> torch.Tensor:
        """Scalar loss for one step.

        Args:
            features_s, features_t: ``(N_s, feature_dim)``, ``(N_t, feature_dim)`` bottleneck features.
            logits_s, logits_t: ``(N_s, C)``, ``(N_t, C)`` classifier logits.
            progress: fraction of training done, in [0, 1].
        """
        raise NotImplementedError

    def step_metrics(self) -> dict[str, float]:
        """Diagnostics of the last step (averaged per epoch into the history)."""
        return {}


@METHODS.register("source_only", aliases=("source", "none"))
class SourceOnly(AdaptationMethod):
    """No adaptation: the classifier is trained on source labels only (the baseline every method must beat)."""

    needs_target = False

    def adaptation_loss(
        self,
        features_s: torch.Tensor,
        features_t: torch.Tensor,
        logits_s: torch.Tensor,
        logits_t: torch.Tensor,
        progress: float,
    ) -> torch.Tensor:
        return features_s.new_zeros(())


@METHODS.register("dann")
class DANN(AdaptationMethod):
    """Domain-adversarial training (Ganin et al., JMLR 2016).

    A :class:`~adaptation.dann.DomainDiscriminator` on the bottleneck features,
    behind a gradient reversal layer whose coefficient follows
    :func:`~adaptation.dann.dann_lambda` over training progress.
    """

    def __init__(self, feature_dim: int, n_classes: int, config: TrainConfig) -> None:
        super().__init__(feature_dim, n_classes, config)
        discriminator = DomainDiscriminator(feature_dim, hidden=config.hidden, dropout=config.dropout)
        self.domain_loss = DomainAdversarialLoss(discriminator, coeff=0.0)

    def adaptation_loss(
        self,
        features_s: torch.Tensor,
        features_t: torch.Tensor,
        logits_s: torch.Tensor,
        logits_t: torch.Tensor,
        progress: float,
    ) -> torch.Tensor:
        self.domain_loss.grl.coeff = dann_lambda(progress)
        return self.domain_loss(features_s, features_t)

    def step_metrics(self) -> dict[str, float]:
        acc = self.domain_loss.domain_accuracy
        metrics = {"grl_coeff": self.domain_loss.grl.coeff}
        if acc is not None:
            metrics["domain_accuracy"] = float(acc)
        return metrics


def list_methods() -> list[str]:
    """Registered method names, sorted."""
    return METHODS.names()
