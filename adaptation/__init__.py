"""Fusion of per-modality product features and domain adaptation from a labelled to an unlabelled catalog."""

from __future__ import annotations

from adaptation.config import TrainConfig
from adaptation.features import MultiModal
from adaptation.fusion import FUSIONS, EarlyFusion, Fusion
from adaptation.methods import DANN, METHODS, AdaptationMethod, SourceOnly, list_methods
from adaptation.model import AdaptedModel
from adaptation.trainer import train


def list_fusions() -> list[str]:
    """Registered fusion names, sorted."""
    return FUSIONS.names()


__all__ = [
    "DANN",
    "FUSIONS",
    "METHODS",
    "AdaptationMethod",
    "AdaptedModel",
    "EarlyFusion",
    "Fusion",
    "MultiModal",
    "SourceOnly",
    "TrainConfig",
    "list_fusions",
    "list_methods",
    "train",
]
