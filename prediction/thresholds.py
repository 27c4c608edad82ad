"""Publication thresholds from a precision target and a label-free estimate of per-item correctness.

The estimated precision of publishing every item with confidence >= t is the mean estimated
correctness of those items (:func:`estimated_precision`). :func:`threshold_for_precision` picks the
smallest such t whose estimated precision reaches the target: the most facts the estimate says
are right often enough. With ``z`` > 0 it is the estimate's lower confidence bound that must reach the
target (:func:`precision_lower_bound`), so a small published set publishes less. No target label is read.
"""

from __future__ import annotations

import numpy as np

__all__ = ["NEVER", "estimated_precision", "precision_lower_bound", "threshold_for_precision"]

#: The threshold that publishes nothing (no confidence exceeds 1).
NEVER = float("inf")


def estimated_precision(confidence: np.ndarray, correctness: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every distinct confidence t (descending): t, the estimated precision of items >= t, their count."""
    t, prec, count, _ = _cumulative(confidence, correctness)
    return t, prec, count


def _cumulative(confidence, correctness):
    confidence = np.asarray(confidence, dtype=np.float64)
    correctness = np.asarray(correctness, dtype=np.float64)
    if confidence.shape != correctness.shape:
        raise ValueError(f"confidence {confidence.shape} and correctness {correctness.shape} differ in shape")
    if len(confidence) == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0)
    order = np.argsort(-confidence, kind="stable")
    c = confidence[order]
    q = np.clip(correctness[order], 0.0, 1.0)
    cum = np.cumsum(q)
    var = np.cumsum(q * (1.0 - q))  # variance of the number right among the items so far, each right with its own q
    last = np.flatnonzero(np.r_[c[1:] != c[:-1], True])  # end of each group of ties
    count = last + 1
    return c[last], cum[last] / count, count, var[last]


def precision_lower_bound(correct: np.ndarray, variance: np.ndarray, count: np.ndarray, *, z: float) -> np.ndarray:
    """A lower confidence bound on the precision of a published set: its estimate minus ``z`` standard errors.

    The share right among ``count`` items, each right with its own probability q_i, is a Poisson-binomial count
    over ``count``: ``correct`` is its mean, ``variance`` the sum of q_i (1 - q_i), so the standard error is
    ``sqrt(variance) / count``. A few dozen items at 96 % may well be 93 % right; a thousand hardly. (The
    uncertainty of the q_i themselves is the accuracy estimate's: :func:`prediction.publication.decide` sets them
    from its lower bound.) Arrays broadcast; returns the bounds.
    """
    correct = np.asarray(correct, dtype=np.float64)
    count = np.maximum(np.asarray(count, dtype=np.float64), 1.0)
    return correct - z * np.sqrt(np.asarray(variance, dtype=np.float64)) / count


def threshold_for_precision(confidence: np.ndarray, correctness: np.ndarray, min_precision: float, *, min_items: int = 1,
                            z: float = 0.0, already: tuple[float, float, int] = (0.0, 0.0, 0)) -> float:
    """Smallest threshold t whose published set (confidence >= t, at least ``min_items`` items) has estimated
    precision >= ``min_precision``; :data:`NEVER` when no threshold reaches it.

    Args:
        confidence: (N,) the score the threshold applies to.
        correctness: (N,) the estimated probability that each item's prediction is right.
        min_precision: the target, in (0, 1].
        min_items: refuse thresholds that publish fewer items than this (a precision over one or two
            items says little).
        z: with ``z`` > 0 the bound of :func:`precision_lower_bound` must reach the target, not the estimate
            itself (0: the estimate, as it is).
        already: facts published before (a finer taxonomy level) that the target is for together with these:
            the sum of their estimated correctness, of its q (1 - q) and their count.
    """
    if not 0.0 < float(min_precision) <= 1.0:
        raise ValueError(f"min_precision must be in (0, 1], got {min_precision!r}")
    t, prec, count, var = _cumulative(confidence, correctness)
    right, var0, n0 = already
    pooled = (prec * count + right) / np.maximum(count + n0, 1)
    bound = precision_lower_bound(pooled, var + var0, count + n0, z=z) if z > 0 else pooled
    ok = (bound >= min_precision - 1e-12) & (count >= min_items)
    if not ok.any():
        return NEVER
    return float(t[np.flatnonzero(ok)[-1]])
