"""Fusion of per-modality product features and domain adaptation from a labelled to an unlabelled catalog."""

from __future__ import annotations

from adaptation.config import TrainConfig
from adaptation.features import MultiModal
from adaptation.fusion import FUSIONS, AttentionFusion, EarlyFusion, Fusion, LateFusion
from adaptation.methods import CDAN, CORAL, DAN, DANN, METHODS, RTN, AdaptationMethod, SourceOnly, list_methods
from adaptation.model import AdaptedModel
from adaptation.selection import SELECTORS, auto_train
from adaptation.trainer import train


def list_fusions() -> list[str]:
    """Registered fusion names, sorted."""
    return FUSIONS.names()


__all__ = [
    "CDAN",
    "CORAL",
    "DAN",
    "DANN",
    "RTN",
    "SELECTORS",
    "AttentionFusion",
    "LateFusion",
    "auto_train",
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
