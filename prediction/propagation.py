"""Spread reviewers' labels to similar target products (label spreading over a k-nearest-neighbour graph).

A reviewed target product says more than its own category: its close neighbours in the target
domain (same product photographed again, same packaging) very likely share it. The category head
learns from the reviewed rows too, but a few rows among thousands of source rows move it little;
label spreading (Zhou et al., NIPS 2003) carries each answer along the target's own similarity
graph. The head's probabilities and the spread labels are mixed per product by how much label
mass reached it, so a product far from every reviewed one keeps the head's prediction.
"""

from __future__ import annotations

import numpy as np

from prodkg.knn import knn_affinity

__all__ = ["blend_with_reviews", "spread_labels", "unit_features"]


def unit_features(features, rows: np.ndarray) -> np.ndarray:
    """Each modality L2-normalised (absent: zeros), concatenated: what the similarity graph compares."""
    blocks = []
    for modality in sorted(features.blocks):
        block = np.asarray(features.blocks[modality][rows], dtype=np.float32)
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        block = np.divide(block, norms, out=np.zeros_like(block), where=norms > 0)
        blocks.append(block * np.asarray(features.present[modality][rows], bool)[:, None])
    x = np.concatenate(blocks, axis=1)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def spread_labels(x: np.ndarray, seeds: np.ndarray, *, k: int = 10, alpha: float = 0.8, iterations: int = 30) -> np.ndarray:
    """Spread the rows of ``seeds`` (one label distribution per row, zeros for none) over the k-NN graph of ``x``:
    ``F = αSF + (1-α)Y`` iterated (Zhou et al. 2003). Returns F, rows normalised to sum to 1."""
    s = knn_affinity(x, k)
    f = seeds.copy()
    for _ in range(iterations):
        f = alpha * (s @ f) + (1 - alpha) * seeds
    total = f.sum(1, keepdims=True)
    return np.divide(f, total, out=np.full_like(f, 1.0 / f.shape[1]), where=total > 0)


def blend_with_reviews(features, tgt_idx: np.ndarray, rev_idx: np.ndarray, y_rev: np.ndarray, probs: np.ndarray, *, k: int = 10,
                       prior: float = 0.2) -> np.ndarray:
    """The head's target probabilities, with the reviewers' labels spread over the target's k-NN graph.

    Every target product starts with the head's probabilities scaled by ``prior``, a reviewed one
    with its label (weight 1); spreading then lets a product's neighbours vote. Near a reviewed
    product the reviewer's label wins; far from every one, the head's prediction stays.
    """
    keep = y_rev >= 0
    if not keep.any() or len(tgt_idx) < 3:
        return probs
    position = {int(r): i for i, r in enumerate(tgt_idx)}
    labelled = np.array([position[int(r)] for r in rev_idx[keep]])
    seeds = prior * np.asarray(probs, dtype=np.float64)
    seeds[labelled] = 0.0
    seeds[labelled, y_rev[keep]] = 1.0
    return spread_labels(unit_features(features, tgt_idx), seeds, k=k)
