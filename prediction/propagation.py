"""Spread reviewers' labels to similar target products (label spreading over a k-nearest-neighbour graph).

A reviewed target product says more than its own category: its close neighbours in the target
domain (same product photographed again, same packaging) very likely share it. The category head
learns from the reviewed rows too, but a few rows among thousands of source rows move it little;
label spreading (Zhou et al., NIPS 2003) carries each answer along the target's own similarity
graph. The head's probabilities and the spread labels are mixed per product by how much label
mass reached it, so a product far from every reviewed one keeps the head's prediction.

The head's own predictions can be spread the same way (:func:`spread_predictions`, ``--label-spreading``):
every target product seeds the graph with its probabilities, and each ends with a mix of its own and its
neighbours'. Photos of one product in a store form tight clusters that a head trained on one catalog photo
splits between classes; spreading lets each cluster vote (the transductive step of Zhou et al. 2003, used on
a classifier's outputs as in Iscen et al., CVPR 2019, "Label Propagation for Deep Semi-supervised Learning").
"""

from __future__ import annotations

import numpy as np

from prodkg.knn import knn_affinity

__all__ = ["MAX_SPREAD_ROWS", "blend_with_reviews", "spread_labels", "spread_predictions", "unit_features"]

#: The largest target that :func:`spread_predictions` builds a graph over: the k-NN search compares every pair of
#: target products (``N^2`` dot products, ``chunk x N`` floats at a time; docs/BENCHMARKS.md "Label spreading" times it).
MAX_SPREAD_ROWS = 50_000


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


def spread_predictions(features, tgt_idx: np.ndarray, probs: np.ndarray, alpha: float, *, k: int = 10,
                       max_rows: int = MAX_SPREAD_ROWS) -> tuple[np.ndarray, dict]:
    """The head's target probabilities ``probs`` (``(len(tgt_idx), K)``), each row mixed with its neighbours' along
    the target's k-NN graph (:func:`spread_labels` seeded with ``probs`` themselves, weight ``1 - alpha`` on a
    product's own prediction at the fixed point). Returns ``(probs, record)``: the record says how many
    predictions changed class, or why nothing was spread (a target over ``max_rows``, or under 3 products).
    """
    probs = np.asarray(probs)
    n = len(tgt_idx)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1); got {alpha!r}")
    if n > max_rows:
        return probs, {"alpha": alpha, "k": k, "skipped": f"a target of {n:,} products is over the limit of {max_rows:,} "
                                                          "for the pairwise neighbour search"}
    if n < 3:
        return probs, {"alpha": alpha, "k": k, "skipped": f"a target of {n} product(s) has no neighbourhood to spread over"}
    spread = spread_labels(unit_features(features, tgt_idx), np.asarray(probs, dtype=np.float64), k=k, alpha=alpha)
    changed = int((spread.argmax(1) != probs.argmax(1)).sum())
    return spread.astype(probs.dtype, copy=False), {"alpha": alpha, "k": k, "changed": changed, "changed_share": round(changed / n, 4)}
