"""Publication thresholds from a precision target and a label-free estimate of per-item correctness.

The estimated precision of publishing every item with confidence >= t is the mean estimated
correctness of those items (:func:`estimated_precision`). :func:`threshold_for_precision` picks the
smallest such t whose estimated precision reaches the target: the most facts the estimate says
are right often enough. No target label is read.
"""

from __future__ import annotations

import numpy as np

__all__ = ["NEVER", "estimated_precision", "threshold_for_precision"]

#: The threshold that publishes nothing (no confidence exceeds 1).
NEVER = float("inf")


def estimated_precision(confidence: np.ndarray, correctness: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every distinct confidence t (descending): t, the estimated precision of items >= t, their count."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correctness = np.asarray(correctness, dtype=np.float64)
    if confidence.shape != correctness.shape:
        raise ValueError(f"confidence {confidence.shape} and correctness {correctness.shape} differ in shape")
    if len(confidence) == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64)
    order = np.argsort(-confidence, kind="stable")
    c = confidence[order]
    cum = np.cumsum(correctness[order])
    last = np.flatnonzero(np.r_[c[1:] != c[:-1], True])  # end of each group of ties
    count = last + 1
    return c[last], cum[last] / count, count


def threshold_for_precision(confidence: np.ndarray, correctness: np.ndarray, min_precision: float, *, min_items: int = 1) -> float:
    """Smallest threshold t whose published set (confidence >= t, at least ``min_items`` items) has estimated
    precision >= ``min_precision``; :data:`NEVER` when no threshold reaches it.

    Args:
        confidence: (N,) the score the threshold applies to.
        correctness: (N,) the estimated probability that each item's prediction is right.
        min_precision: the target, in (0, 1].
        min_items: refuse thresholds that publish fewer items than this (a precision over one or two
            items says little).
    """
    if not 0.0 < float(min_precision) <= 1.0:
        raise ValueError(f"min_precision must be in (0, 1], got {min_precision!r}")
    t, prec, count = estimated_precision(confidence, correctness)
    ok = (prec >= min_precision - 1e-12) & (count >= min_items)
    if not ok.any():
        return NEVER
    return float(t[np.flatnonzero(ok)[-1]])
