"""Unknown products: target items unlike every source class get an explicit "unknown" outcome.

The score is the cosine similarity of an item's frozen features to the nearest source class prototype
(the class mean of the L2-normalised source features): the nearest-class-mean feature distance of
Mensink et al. (TPAMI 2013), the identity-covariance case of the Mahalanobis out-of-distribution score
(Lee et al., NeurIPS 2018). It reads the frozen encoder features, not the adapted head, because domain
adaptation pulls unknown target items towards the source classes (the negative transfer of open-set
adaptation, Busto & Gall ICCV 2017, Saito et al. ECCV 2018).

The bar is label-free (:func:`unknown_threshold`):

* the source's own spread: the ``quantile`` (default 1 %) of the similarity of each source item to its
  own class prototype computed without it (leave one out);
* scaled by the domain shift, the ratio of the 90th percentiles of target and source similarities (never
  above 1: a target more compact than the source does not raise the bar);
* and, when the target has at least ``min_target`` items, no higher than Otsu's split of the target's
  similarities (Otsu, IEEE SMC 1979), which falls between the two modes when the target holds a group
  of unknown products.

Items below the bar are unknown. On the office-caltech-10 open-set protocol (6 source classes, 10 in
the target) this flags 81-99 % of the unknown items from dslr and webcam sources and 11-20 % from
amazon and caltech (the larger, more varied sources, whose spread is wide); most of the rest fall below
the precision threshold. See docs/BENCHMARKS.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["UnknownScores", "fused_unit_features", "otsu_threshold", "prototype_similarity", "unknown_threshold"]


def fused_unit_features(blocks: dict[str, np.ndarray], present: dict[str, np.ndarray]) -> np.ndarray:
    """Each modality L2-normalised (absent: zeros), concatenated, the whole row L2-normalised again."""
    parts = []
    for modality in sorted(blocks):
        b = np.asarray(blocks[modality], dtype=np.float64)
        n = np.linalg.norm(b, axis=1, keepdims=True)
        b = np.divide(b, n, out=np.zeros_like(b), where=n > 0)
        parts.append(b * np.asarray(present[modality], dtype=bool)[:, None])
    x = np.concatenate(parts, axis=1)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, n, out=np.zeros_like(x), where=n > 0)


def prototype_similarity(source: np.ndarray, source_labels: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(target similarity to its nearest source prototype, each source item's leave-one-out similarity to its own).

    Rows must be L2-normalised. A class with a single source item has no leave-one-out prototype; its
    item is left out of the second array.
    """
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    labels = np.asarray(source_labels)
    classes = np.unique(labels)
    sums = np.stack([source[labels == c].sum(0) for c in classes])
    counts = np.array([(labels == c).sum() for c in classes])

    def unit(v):
        n = np.linalg.norm(v, axis=-1, keepdims=True)
        return np.divide(v, n, out=np.zeros_like(v), where=n > 0)

    target_sim = (target @ unit(sums).T).max(axis=1) if len(target) else np.zeros(0)
    own = np.searchsorted(classes, labels)
    keep = counts[own] > 1
    loo = unit(sums[own] - source)
    source_sim = (source * loo).sum(axis=1)[keep]
    return target_sim, source_sim


def otsu_threshold(values: np.ndarray, bins: int = 64) -> float:
    """The split of ``values`` that maximises the between-group variance (Otsu 1979)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2 or values.min() == values.max():
        return float("-inf")
    hist, edges = np.histogram(values, bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w = hist / hist.sum()
    best, split = -1.0, float("-inf")
    for i in range(1, bins):
        w0, w1 = w[:i].sum(), w[i:].sum()
        if w0 == 0 or w1 == 0:
            continue
        m0, m1 = (w[:i] * centres[:i]).sum() / w0, (w[i:] * centres[i:]).sum() / w1
        between = w0 * w1 * (m0 - m1) ** 2
        if between > best:
            best, split = between, float(edges[i])
    return split


@dataclass
class UnknownScores:
    """Per-target-item similarity, the bar, and which items fall below it."""

    similarity: np.ndarray
    threshold: float
    unknown: np.ndarray
    details: dict

    def manifest(self) -> dict:
        return {"method": "nearest source prototype (cosine, frozen features)", "threshold": round(float(self.threshold), 6),
                "n_unknown": int(self.unknown.sum()), "n_target": int(len(self.unknown)),
                **{k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.details.items()}}


def unknown_threshold(target_sim: np.ndarray, source_sim: np.ndarray, *, quantile: float = 0.01, min_target: int = 50) -> tuple[float, dict]:
    """The label-free bar below which a target item is unknown, and how it was reached (see the module docstring)."""
    target_sim, source_sim = np.asarray(target_sim, np.float64), np.asarray(source_sim, np.float64)
    if len(source_sim) == 0:
        return float("-inf"), {"reason": "no source class has two items"}
    base = float(np.quantile(source_sim, quantile))
    details: dict = {"source_quantile": quantile, "source_bar": base}
    bar = base
    if len(target_sim) >= min_target:
        scale = float(min(1.0, np.quantile(target_sim, 0.9) / max(np.quantile(source_sim, 0.9), 1e-12)))
        split = otsu_threshold(target_sim)
        bar = min(base * scale, split)
        details.update({"shift_scale": scale, "otsu_split": split})
    return bar, details


def score_unknown(source: np.ndarray, source_labels: np.ndarray, target: np.ndarray, **kwargs) -> UnknownScores:
    """Similarities, the bar and the unknown flags for L2-normalised source and target features."""
    target_sim, source_sim = prototype_similarity(source, source_labels, target)
    bar, details = unknown_threshold(target_sim, source_sim, **kwargs)
    return UnknownScores(similarity=target_sim, threshold=bar, unknown=target_sim < bar, details=details)


__all__.append("score_unknown")
