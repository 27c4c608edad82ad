"""Training a classifier adapted from labelled source products to unlabelled target products.

:func:`train` trains the method ``config.method`` names with the training loop of
:mod:`adaptation.loop`, or, for ``auto``, chooses among candidate methods without target labels
(:func:`adaptation.selection.auto_train`, which trains each candidate with that loop too).
"""

from __future__ import annotations

import numpy as np

from prodkg.adaptation.config import AUTO, TrainConfig
from prodkg.adaptation.features import MultiModal
from prodkg.adaptation.loop import train_method
from prodkg.adaptation.model import AdaptedModel
from prodkg.adaptation.selection import auto_train
from prodkg.errors import ConfigError

__all__ = ["train"]


def train(
    source: MultiModal,
    y_source: np.ndarray,
    target: MultiModal,
    n_classes: int,
    config: TrainConfig,
    *,
    progress: bool = False,
    groups: np.ndarray | None = None,
) -> AdaptedModel:
    """Train a classifier on labelled source products, adapted to unlabelled target products.

    Each step draws one source batch and (for methods that use it) one target
    batch, runs both through the network in one pass, and minimises
    ``cross_entropy(source) + config.tradeoff * method.adaptation_loss(...)`` with
    AdamW under the DANN learning-rate annealing. An epoch is
    ``ceil(max(N_s, N_t) / batch_size)`` steps, so the larger domain is seen once
    per epoch and a large unlabelled catalog is not undersampled. The model after
    the last epoch is returned: there are no target labels to select on.

    ``config.method == "auto"`` trains a grid of candidate methods and keeps the
    one a label-free selector scores best (:func:`adaptation.selection.auto_train`).

    ``config.ensemble > 1`` trains that many heads from different seeds and averages their class
    probabilities (:func:`adaptation.ensemble.train_ensemble`).

    The result depends only on the inputs and ``config`` (weights, dropout and
    batch order are all seeded from ``config.seed``); the caller's global torch
    random state is left untouched.

    Args:
        source: labelled products.
        y_source: ``(N_s,)`` integer class indices in ``[0, n_classes)``.
        target: unlabelled products with the same modalities and widths as ``source``.
        n_classes: number of categories.
        config: method, fusion and hyper-parameters.
        progress: show a progress bar over epochs.
        groups: ``(N_s,)`` the product each source row belongs to, when rows include augmented views of
            products (:mod:`prodkg.extractors.views`); ``auto`` then holds out whole products. Other methods
            train on every row and ignore it.
    """
    if not isinstance(config, TrainConfig):
        raise ConfigError(f"config must be a TrainConfig; got {type(config).__name__}")
    # re-validated copy: the dataclass is mutable, and the model keeps a snapshot of what it was trained with
    config = TrainConfig.from_dict(config.to_dict())
    if config.ensemble > 1:
        from prodkg.adaptation.ensemble import train_ensemble

        return train_ensemble(source, y_source, target, n_classes, config, progress=progress, groups=groups)
    if config.method == AUTO:
        return auto_train(source, y_source, target, n_classes, config, progress=progress, groups=groups)
    return train_method(source, y_source, target, n_classes, config, progress=progress)
