"""Typed, validated configuration of one adaptation run (method, fusion, network and optimiser settings)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from prodkg.errors import ConfigError

NORMS = ("layer", "batch", "none")
#: The method name that asks :func:`adaptation.train` to choose a method without target labels.
AUTO = "auto"
SAMPLINGS = ("plain", "balanced")
#: Budget schedules of ``auto`` (:func:`adaptation.selection.auto_train`): the shares of its full training at
#: which the adapted candidates are scored and pruned, the last always 1. ``halving`` trains every adapted
#: candidate for 1/9 of its steps, keeps the best third, trains those to 1/3, keeps the best third again and
#: trains that one to the end (successive halving with a factor of 3); ``full`` trains every candidate in full.
#: Source-only, the fallback, is always trained in full.
AUTO_SCHEDULES: dict[str, tuple[float, ...]] = {"halving": (1 / 9, 1 / 3, 1.0), "full": (1.0,)}


@dataclass
class TrainConfig:
    """Settings of :func:`adaptation.train`; checked on construction.

    Attributes:
        method: name in :data:`adaptation.METHODS` (``source_only``, ``dann``, ``cdan``, ``dan``,
            ``coral``, ``rtn``), or ``auto`` to pick one without target labels
            (:func:`adaptation.selection.auto_train`).
        fusion: name in :data:`adaptation.FUSIONS` (``early``, ``late``, ``attention``).
        hidden: width of the bottleneck features (and of the DANN discriminator).
        epochs: passes over the larger of the two domains; there is no early
            stopping, since the target has no labels to stop on. DANN needs
            steps more than epochs: on office-caltech-10 amazon->webcam
            (958 -> 295 products, 15 steps an epoch) 30 epochs gave 91.8% target
            accuracy and 100 gave 96.8%; lower it for catalogs of many thousands.
        batch_size: rows per batch and per domain.
        lr: peak learning rate of AdamW, annealed as ``lr / (1 + 10 p) ** 0.75``
            with ``p`` the fraction of training done (Ganin et al., JMLR 2016).
        weight_decay: decoupled weight decay of AdamW.
        tradeoff: weight of the adaptation loss against the classification loss.
        dropout: dropout probability in the bottleneck and the discriminator.
        norm: normalisation in the bottleneck: ``layer`` (per product, so it never
            mixes domains), ``batch`` (statistics of the joint source+target batch) or ``none``.
        sampling: ``plain`` (shuffled passes over the source) or ``balanced``
            (source rows drawn with replacement, every class equally likely).
            ``plain`` is the default: the target's class prior is unknown, so a
            uniform prior is no better a guess than the source's, and resampling
            repeats the few products of rare classes until the head memorises them.
            Use ``balanced`` when the source is so skewed that rare classes vanish.
        seed: seeds weight initialisation, dropout and batch order.
        device: torch device string (``cpu``, ``cuda``, ``cuda:1``).
        auto_schedule: for ``method="auto"``, how its candidates share the training budget, a name in
            :data:`AUTO_SCHEDULES`: ``halving`` (successive halving, about 3 times one method's training)
            or ``full`` (every candidate trained in full, about 10 times). Ignored by a named method.
        ensemble: heads trained, each from its own seed, whose class probabilities are averaged (a deep
            ensemble, :mod:`adaptation.ensemble`); with ``auto`` the extra heads retrain the candidate it chose.
            1 (the default): one head.
    """

    method: str = "dann"
    fusion: str = "early"
    hidden: int = 256
    epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-2
    tradeoff: float = 1.0
    dropout: float = 0.5
    norm: str = "layer"
    sampling: str = "plain"
    seed: int = 0
    device: str = "cpu"
    auto_schedule: str = "halving"
    ensemble: int = 1

    def __post_init__(self) -> None:
        # Imported here: the registries live in modules that import torch and this config.
        from prodkg.adaptation.fusion import FUSIONS
        from prodkg.adaptation.methods import METHODS

        for name in ("method", "fusion", "norm", "sampling", "device", "auto_schedule"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ConfigError(f"TrainConfig.{name}: expected a non-empty string, got {value!r}")
        if self.method != AUTO:
            METHODS.get(self.method)  # raises UnknownComponentError listing the valid names
        FUSIONS.get(self.fusion)
        for name in ("hidden", "epochs", "batch_size", "ensemble"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"TrainConfig.{name}: expected a positive integer, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"TrainConfig.seed: expected a non-negative integer, got {self.seed!r}")
        for name, low_open in (("lr", True), ("weight_decay", False), ("tradeoff", False)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"TrainConfig.{name}: expected a finite number, got {value!r}")
            if value < 0 or (low_open and value == 0):
                bound = "> 0" if low_open else ">= 0"
                raise ConfigError(f"TrainConfig.{name}: expected a number {bound}, got {value!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ConfigError(f"TrainConfig.dropout: expected a probability in [0, 1), got {self.dropout!r}")
        if self.norm not in NORMS:
            raise ConfigError(f"TrainConfig.norm: expected one of {', '.join(NORMS)}, got {self.norm!r}")
        if self.sampling not in SAMPLINGS:
            raise ConfigError(f"TrainConfig.sampling: expected one of {', '.join(SAMPLINGS)}, got {self.sampling!r}")
        if self.auto_schedule not in AUTO_SCHEDULES:
            raise ConfigError(f"TrainConfig.auto_schedule: expected one of {', '.join(AUTO_SCHEDULES)}, "
                              f"got {self.auto_schedule!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict of every field; ``ensemble`` only when above 1, so that the configs of single
        heads (cache keys of fitted heads, saved models) read as they did before the field existed."""
        data = dataclasses.asdict(self)
        if data["ensemble"] == 1:
            del data["ensemble"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ConfigError rather than being ignored."""
        if not isinstance(data, dict):
            raise ConfigError(f"TrainConfig.from_dict expects a dict, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown TrainConfig key(s) {unknown}; valid keys: {sorted(known)}")
        return cls(**data)
