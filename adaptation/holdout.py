"""Held-out source rows that keep a product's augmented views together (adaptation.selection, prediction.heads)."""

from __future__ import annotations

import numpy as np

__all__ = ["grouped_holdout"]


def grouped_holdout(y: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of held-out rows, whole groups at a time: ``fraction`` of each class's groups.

    A group is one product: its catalog photo and the augmented views made from it
    (:mod:`prodkg.extractors.views`). Holding out a view whose product is trained on would score a model on
    a distortion of an image it has seen, so a view is held out only with its product. A class with fewer
    than 3 products holds none out (never its last 2), as :func:`adaptation.selection.stratified_holdout`
    does per row: with one catalog photo per class nothing can be held out, however many views it has.

    Shape:
        y, groups: ``(N,)``; rows of one group must share their class.
    """
    y, groups = np.asarray(y), np.asarray(groups)
    if y.shape != groups.shape:
        raise ValueError(f"y and groups must have the same shape; got {y.shape} and {groups.shape}")
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(y), dtype=bool)
    for cls in np.unique(y):
        members = np.unique(groups[y == cls])
        if len(members) < 3:
            continue
        k = min(max(1, round(fraction * len(members))), len(members) - 2)
        mask[np.isin(groups, rng.choice(members, size=k, replace=False)) & (y == cls)] = True
    return mask
