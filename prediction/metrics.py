"""What a set of published facts is worth, measured against target labels (evaluation only, never a choice).

* :func:`selective_metrics` -- accuracy of every prediction, precision of the published ones, coverage.
* :func:`confidence_ece` -- expected calibration error of confidences against correctness.
* :func:`risk_coverage` -- the risk-coverage curve of a confidence ranking (Geifman & El-Yaniv, NeurIPS 2017).
* :func:`h_score` / :func:`open_set_scores` -- the open-set H-score, the harmonic mean of known-class accuracy
  and unknown recall (Fu et al., ECCV 2020; as TLlib's open-set benchmark reports it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["confidence_ece", "h_score", "open_set_scores", "risk_coverage", "selective_metrics"]


def selective_metrics(correct: np.ndarray, published: np.ndarray) -> dict:
    """Accuracy of all predictions, precision and coverage of the published ones.

    Args:
        correct: (N,) bool, the prediction for item i is right.
        published: (N,) bool, item i got a published fact.

    Returns ``accuracy``, ``precision`` (NaN when nothing is published), ``coverage`` (published share of all N),
    ``n`` and ``n_published``.
    """
    correct = np.asarray(correct, dtype=bool)
    published = np.asarray(published, dtype=bool)
    if correct.shape != published.shape:
        raise ValueError(f"correct {correct.shape} and published {published.shape} differ in shape")
    n, k = len(correct), int(published.sum())
    return {
        "accuracy": float(correct.mean()) if n else float("nan"),
        "precision": float(correct[published].mean()) if k else float("nan"),
        "coverage": k / n if n else float("nan"),
        "n": int(n),
        "n_published": k,
    }


def confidence_ece(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> float:
    """ECE: |accuracy - mean confidence| over equal-width confidence bins, weighted by the bin's share of items."""
    confidence = np.asarray(confidence, dtype=float)
    correct = np.asarray(correct, dtype=bool)
    if len(confidence) == 0:
        return float("nan")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > lo) & (confidence <= hi)
        if lo == 0.0:
            in_bin |= confidence == 0.0
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def risk_coverage(confidence: np.ndarray, correct: np.ndarray) -> dict:
    """Risk (error rate of the accepted items) at every coverage a confidence threshold can reach.

    Items are accepted from the most confident down; items of equal confidence are accepted together,
    so every point is reachable by a threshold. Returns ``coverage``, ``risk`` and ``threshold`` arrays
    (one point per distinct confidence, coverage increasing) and ``aurc``, the area under the curve
    (mean risk over the coverage steps, each point weighted by the items it adds).
    """
    confidence = np.asarray(confidence, dtype=float)
    correct = np.asarray(correct, dtype=bool)
    n = len(confidence)
    if n == 0:
        empty = np.zeros(0)
        return {"coverage": empty, "risk": empty, "threshold": empty, "aurc": float("nan")}
    order = np.argsort(-confidence, kind="stable")
    conf_sorted = confidence[order]
    errors = np.cumsum(~correct[order])
    # last index of each group of equal confidence
    last = np.flatnonzero(np.r_[conf_sorted[1:] != conf_sorted[:-1], True])
    accepted = last + 1
    risk = errors[last] / accepted
    coverage = accepted / n
    added = np.diff(np.r_[0, accepted])
    return {"coverage": coverage, "risk": risk, "threshold": conf_sorted[last], "aurc": float((risk * added).sum() / n)}


def h_score(known_accuracy: float, unknown_recall: float) -> float:
    """Harmonic mean of known-class accuracy and unknown recall; 0 when either is 0."""
    a, b = float(known_accuracy), float(unknown_recall)
    return 0.0 if a + b == 0 else 2 * a * b / (a + b)


def open_set_scores(true_labels: Sequence[str], predicted: Sequence[str | None], known_classes: Sequence[str]) -> dict:
    """Open-set scores of target predictions where ``None`` means "flagged unknown".

    Known accuracy is the mean over known classes of the share of that class's items predicted as that
    class (the per-class mean, "OS*"); unknown recall is the share of items of classes outside
    ``known_classes`` that are flagged unknown; ``h_score`` is their harmonic mean. ``unknown_published`` is
    the share of unknown-class items that were *not* flagged (they got some category).
    """
    known = set(known_classes)
    true_labels = list(true_labels)
    predicted = list(predicted)
    per_class = []
    for cls in sorted({t for t in true_labels if t in known}):
        idx = [i for i, t in enumerate(true_labels) if t == cls]
        per_class.append(np.mean([predicted[i] == cls for i in idx]))
    unknown_idx = [i for i, t in enumerate(true_labels) if t not in known]
    known_acc = float(np.mean(per_class)) if per_class else float("nan")
    unknown_recall = float(np.mean([predicted[i] is None for i in unknown_idx])) if unknown_idx else float("nan")
    return {
        "known_accuracy": known_acc,
        "unknown_recall": unknown_recall,
        "h_score": h_score(known_acc, unknown_recall) if per_class and unknown_idx else float("nan"),
        "n_known": len(true_labels) - len(unknown_idx),
        "n_unknown": len(unknown_idx),
    }
