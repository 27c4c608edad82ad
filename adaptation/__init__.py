"""Fusion of per-modality product features and domain adaptation from a labelled to an unlabelled catalog."""

from __future__ import annotations

if __name__ != "prodkg.adaptation":  # the folder installs as prodkg.adaptation; a bare `import adaptation` would load a second copy
    raise ImportError("import prodkg.adaptation, not adaptation")

from prodkg.adaptation.config import TrainConfig
from prodkg.adaptation.features import MultiModal, Rows
from prodkg.adaptation.fusion import FUSIONS, AttentionFusion, EarlyFusion, Fusion, LateFusion
from prodkg.adaptation.methods import CDAN, CORAL, DAN, DANN, METHODS, RTN, AdaptationMethod, SourceOnly, list_methods
from prodkg.adaptation.model import AdaptedModel
from prodkg.adaptation.selection import SELECTORS, auto_train
from prodkg.adaptation.trainer import train


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
    "Rows",
    "SourceOnly",
    "TrainConfig",
    "list_fusions",
    "list_methods",
    "train",
]
