"""Domain-adaptation methods behind one small interface, and their registry."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from prodkg.adaptation.dann import DomainAdversarialLoss, DomainDiscriminator, dann_lambda
from prodkg.adaptation.losses import (
    ConditionalDomainAdversarialLoss,
    CoralLoss,
    MultilinearMap,
    MultipleKernelMMD,
    ResidualBlock,
    entropy,
)
from prodkg.registry import Registry

if TYPE_CHECKING:
    from prodkg.adaptation.config import TrainConfig

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

    def source_logits(self, logits_s: torch.Tensor) -> torch.Tensor:
        """Logits the source classification loss is computed on; the network's own logits unless a method
        gives the source a classifier of its own (residual transfer)."""
        return logits_s

    def step_metrics(self) -> dict[str, float]:
        """Diagnostics of the last step (averaged per epoch into the history)."""
        return {}

    def source_weights(self, y_s: torch.Tensor) -> torch.Tensor | None:
        """Weights of the source rows in the classification loss (None: an unweighted mean).

        Called before :meth:`adaptation_loss` of the same step, which may reuse them.
        Shape: ``(N_s,)`` labels in, ``(N_s,)`` out.
        """
        return None


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


@METHODS.register("dan", aliases=("mmd", "mk_mmd"))
class DAN(AdaptationMethod):
    """Deep adaptation network (Long et al., ICML 2015): multi-kernel MMD between the domains' bottleneck features.

    The loss is :class:`~adaptation.losses.MultipleKernelMMD`; ``config.tradeoff`` weighs it.
    """

    def __init__(self, feature_dim: int, n_classes: int, config: TrainConfig) -> None:
        super().__init__(feature_dim, n_classes, config)
        self.mmd = MultipleKernelMMD()

    def adaptation_loss(
        self,
        features_s: torch.Tensor,
        features_t: torch.Tensor,
        logits_s: torch.Tensor,
        logits_t: torch.Tensor,
        progress: float,
    ) -> torch.Tensor:
        return self.mmd(features_s, features_t)


@METHODS.register("coral", aliases=("deep_coral",))
class CORAL(AdaptationMethod):
    """Deep CORAL (Sun & Saenko, ECCV 2016 workshops): match the second-order statistics of the bottleneck features."""

    def __init__(self, feature_dim: int, n_classes: int, config: TrainConfig) -> None:
        super().__init__(feature_dim, n_classes, config)
        self.coral = CoralLoss()

    def adaptation_loss(
        self,
        features_s: torch.Tensor,
        features_t: torch.Tensor,
        logits_s: torch.Tensor,
        logits_t: torch.Tensor,
        progress: float,
    ) -> torch.Tensor:
        if features_s.shape[0] < 2 or features_t.shape[0] < 2:
            return features_s.new_zeros(())  # a covariance needs two rows; a one-product domain cannot be aligned
        # scaled by d^2 back: the 1/(4 d^2) of the paper makes the loss vanish for a 256-wide bottleneck
        return self.coral(features_s, features_t) * features_s.shape[1]


@METHODS.register("rtn", aliases=("residual", "residual_transfer"))
class RTN(AdaptationMethod):
    """Residual transfer network (Long et al., NeurIPS 2016).

    The network's classifier is the *target* classifier ``f_T``; the source is
    classified by ``f_S = f_T + Δ(f_T)`` (a :class:`~adaptation.losses.ResidualBlock`
    owned by this method, used in training only), so the two classifiers may
    differ by a small learned residual. Features are aligned by multi-kernel MMD
    and ``f_T`` is pushed through low-density regions of the target by entropy
    minimisation: loss ``MMD + entropy_weight * mean H(softmax(f_T(x_t)))``.

    Args:
        entropy_weight: weight of the target entropy relative to the MMD term (RTN used 0.3
            on raw logits; 0.1 here, as the loss is also scaled by ``config.tradeoff``).
    """

    entropy_weight = 0.1

    def __init__(self, feature_dim: int, n_classes: int, config: TrainConfig) -> None:
        super().__init__(feature_dim, n_classes, config)
        self.residual = ResidualBlock(n_classes, hidden=min(64, 4 * n_classes))
        self.mmd = MultipleKernelMMD()
        self._entropy = 0.0

    def source_logits(self, logits_s: torch.Tensor) -> torch.Tensor:
        return self.residual(logits_s)

    def adaptation_loss(
        self,
        features_s: torch.Tensor,
        features_t: torch.Tensor,
        logits_s: torch.Tensor,
        logits_t: torch.Tensor,
        progress: float,
    ) -> torch.Tensor:
        ent = entropy(torch.softmax(logits_t, dim=1)).mean()
        self._entropy = float(ent.detach())
        return self.mmd(features_s, features_t) + self.entropy_weight * ent

    def step_metrics(self) -> dict[str, float]:
        return {"target_entropy": self._entropy}


@METHODS.register("cdan", aliases=("cdan_e", "cdan+e"))
class CDAN(AdaptationMethod):
    """Conditional domain-adversarial network with entropy conditioning, CDAN+E (Long et al., NeurIPS 2018).

    A discriminator on the multilinear map of bottleneck features and class
    probabilities (:class:`~adaptation.losses.ConditionalDomainAdversarialLoss`),
    behind gradient reversal on the :func:`~adaptation.dann.dann_lambda` schedule.
    """

    def __init__(self, feature_dim: int, n_classes: int, config: TrainConfig) -> None:
        super().__init__(feature_dim, n_classes, config)
        # randomized map above 1024 columns: the exact 256 x C map made the discriminator the slowest part of a step
        multilinear = MultilinearMap(feature_dim, n_classes, max_dim=1024)
        discriminator = DomainDiscriminator(multilinear.out_dim, hidden=config.hidden, dropout=config.dropout)
        self.domain_loss = ConditionalDomainAdversarialLoss(discriminator, multilinear, entropy_conditioning=True)

    def adaptation_loss(
        self,
        features_s: torch.Tensor,
        features_t: torch.Tensor,
        logits_s: torch.Tensor,
        logits_t: torch.Tensor,
        progress: float,
    ) -> torch.Tensor:
        self.domain_loss.grl.coeff = dann_lambda(progress)
        return self.domain_loss(
            features_s, features_t, torch.softmax(logits_s, dim=1), torch.softmax(logits_t, dim=1)
        )

    def step_metrics(self) -> dict[str, float]:
        acc = self.domain_loss.domain_accuracy
        metrics = {"grl_coeff": self.domain_loss.grl.coeff}
        if acc is not None:
            metrics["domain_accuracy"] = float(acc)
        return metrics


@METHODS.register("pada", aliases=("partial",))
class PADA(DANN):
    """Partial adversarial domain adaptation (Cao, Ma, Long & Wang, ECCV 2018), for targets holding only
    some of the source classes.

    DANN whose source rows are weighted by class: the weight of class ``k`` is the mean
    probability the classifier gives ``k`` on the target (eq. 5), divided by the largest
    such mean, so classes the target lacks fade from both the classification loss and the
    discriminator, and the features of the target are not pulled towards them. The means are
    a running average over target batches (momentum :attr:`momentum`) instead of the paper's
    full pass every few epochs, and the weights stay 1 during the first :attr:`warmup` of
    training, while the classifier is still untrained.
    """

    momentum = 0.9
    warmup = 0.1

    def __init__(self, feature_dim: int, n_classes: int, config: TrainConfig) -> None:
        super().__init__(feature_dim, n_classes, config)  # DANN's discriminator and loss
        self.register_buffer("class_mass", torch.full((n_classes,), 1.0 / n_classes))
        self._active = False
        self._w_s: torch.Tensor | None = None

    def class_weights(self) -> torch.Tensor:
        """``(C,)`` class weights in ``(0, 1]``, the largest 1 (all 1 during warm-up)."""
        if not self._active:
            return torch.ones_like(self.class_mass)
        return self.class_mass / self.class_mass.max().clamp(min=1e-12)

    def source_weights(self, y_s: torch.Tensor) -> torch.Tensor:
        self._w_s = self.class_weights()[y_s]
        return self._w_s

    def adaptation_loss(
        self,
        features_s: torch.Tensor,
        features_t: torch.Tensor,
        logits_s: torch.Tensor,
        logits_t: torch.Tensor,
        progress: float,
    ) -> torch.Tensor:
        with torch.no_grad():
            batch_mass = torch.softmax(logits_t, dim=1).mean(0)
            self.class_mass.mul_(self.momentum).add_((1.0 - self.momentum) * batch_mass)
        self._active = progress >= self.warmup
        self.domain_loss.grl.coeff = dann_lambda(progress)
        # the loop hands the source labels to source_weights first; alone, weigh by the predicted classes
        w_s = self._w_s if self._w_s is not None and len(self._w_s) == len(features_s) else \
            self.class_weights()[logits_s.argmax(1)]
        self._w_s = None
        return self.domain_loss(features_s, features_t, w_s.detach())

    def step_metrics(self) -> dict[str, float]:
        w = self.class_weights()
        return {"grl_coeff": self.domain_loss.grl.coeff, "min_class_weight": float(w.min())}


def list_methods() -> list[str]:
    """Registered method names, sorted."""
    return METHODS.names()
