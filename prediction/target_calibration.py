"""Reviewed target products as labelled target evidence: they train the head and calibrate the publication rule.

A reviewer's answer is a labelled *target* row, better evidence of the head's precision on the target than any
source hold-out under shift. The publication rule (:func:`prediction.publication.decide`) reads reviewed rows as
its calibration set: it estimates each level's accuracy on them and never publishes more than a one-sided
Clopper-Pearson lower bound on the precision of the calibration rows it would publish supports
(:func:`precision_lower_bound`). A calibration row must be predicted by a head that did not train on it; two ways:

* **cross-fitting** (:func:`cross_fit_split`, the default): every review trains the head, and the reviews are cut
  into ``K`` folds by a hash of the product id; each fold's rows are predicted by a head fitted on the other
  folds' reviews (out-of-fold predictions, as in cross-validation and the cross-conformal predictor: Vovk 2015;
  Barber et al., "Predictive inference with the jackknife+", 2021). It costs ``K`` more fits of the head. The fold
  heads, averaged, also predict every product nobody reviewed, so the bar their out-of-fold rows set is on the
  scale of what it admits. Publishing from the head fitted on every review instead, more confident than the fold
  heads, let more products through than the bar held for: with 100 *random* reviews on grocery in-store at 30
  epochs the products published were 93.3-96.0 % right under a 95 % target; from the fold heads 96.4-98.6 %
  (docs/BENCHMARKS.md, "Review loop (review-loop-grocery-30)").
* **hold-out** (:func:`split_reviewed`): a share of the reviews is held out of training. Cheaper, but the held-out
  answers teach the head nothing (on grocery in-store, 100 queue-chosen reviews gained 26.2 points of fine accuracy
  with 40 % held out, 44.2 with all of them training: docs/BENCHMARKS.md, "Review loop").

The calibration rows are the queue's choice, not a random sample of the target: typical products of dense
regions. Their precision is the evidence the rule has, not an unbiased estimate of the catalog's.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import TypeVar

__all__ = ["DEFAULT_FOLDS", "DEFAULT_SHARE", "bound_confidence", "calibration_rank", "cross_fit_split", "fold_of", "min_calibration_rows",
           "precision_lower_bound", "split_reviewed"]

#: the share of reviewed products held out of training as the target calibration set (hold-out mode)
DEFAULT_SHARE = 0.4
#: cross-fitting folds: each fold's reviews are predicted by a head fitted on the others
DEFAULT_FOLDS = 3

K = TypeVar("K")


def bound_confidence(z: float) -> float:
    """The one-sided confidence of a bound ``z`` standard errors down (``Phi(z)``): the rule's own caution, in
    the form a binomial bound takes (z = 1: 0.841)."""
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def precision_lower_bound(k: int, n: int, confidence: float) -> float:
    """One-sided Clopper-Pearson lower bound on a proportion: the smallest p under which ``k`` or more successes in
    ``n`` trials have probability at least ``1 - confidence``. 0 for ``k = 0`` (and for ``n = 0``: no evidence)."""
    from scipy.stats import beta

    if n <= 0 or k <= 0:
        return 0.0
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    return float(beta.ppf(1.0 - confidence, k, n - k + 1))


def min_calibration_rows(min_precision: float, confidence: float) -> int:
    """The fewest calibration rows whose bound can reach ``min_precision`` at all (every one of them right):
    ``n`` with ``(1 - confidence) ** (1 / n) >= min_precision``. Fewer rows cannot support any publication."""
    if min_precision >= 1.0:
        raise ValueError("no finite calibration set bounds precision at 1")
    return max(1, math.ceil(math.log(1.0 - confidence) / math.log(min_precision) - 1e-9))


def calibration_rank(product_id: str) -> float:
    """A product's fixed place in the calibration draw, in [0, 1): the first 8 bytes of the SHA-256 of its id over
    2**64. A product is held out when its rank is below the share, so its place never changes as reviews arrive."""
    return int.from_bytes(hashlib.sha256(str(product_id).encode("utf-8")).digest()[:8], "big") / 2.0**64


def split_reviewed(reviewed: Mapping[K, str], product_ids: Mapping[K, str], *, share: float = DEFAULT_SHARE,
                   min_rows: int = 1) -> tuple[dict[K, str], dict[K, str], dict]:
    """Split reviewed target rows into those that train the head and those that calibrate the publication rule.

    Args:
        reviewed: row key (a row index or product id) -> the reviewer's category.
        product_ids: row key -> product id; a row is held out when its product's :func:`calibration_rank` is below
            ``share`` (about ``share`` of the rows; a product held out once stays held out while the share holds).
        share: the share held out for calibration.
        min_rows: hold out nothing unless at least this many rows would be held out (fewer cannot support the
            precision target: :func:`min_calibration_rows`); they then all train the head.

    Returns ``(train, calibration, record)``; ``record`` is for the manifest: the share, the counts, the
    calibration products' ids and why nothing was held out when nothing was.
    """
    if not 0.0 <= share < 1.0:
        raise ValueError(f"share must be in [0, 1), got {share!r}")
    held = {k for k in reviewed if calibration_rank(product_ids[k]) < share}
    record: dict = {"mode": "hold-out", "share": float(share), "n_reviewed": len(reviewed), "min_rows": int(min_rows), "draw": "sha256(product_id) < share"}
    if len(held) < max(1, min_rows):
        record.update({"n_train": len(reviewed), "n_calibration": 0, "calibration_ids": [],
                       "reason": f"{len(held)} of {len(reviewed)} reviews would be held out, fewer than the {max(1, min_rows)} "
                                 "that can support the precision target: all train the head"})
        return dict(reviewed), {}, record
    train = {k: v for k, v in reviewed.items() if k not in held}
    calibration = {k: v for k, v in reviewed.items() if k in held}
    record.update({"n_train": len(train), "n_calibration": len(calibration),
                   "calibration_ids": sorted(str(product_ids[k]) for k in calibration)})
    return train, calibration, record


def fold_of(product_id: str, folds: int) -> int:
    """A product's cross-fitting fold, in ``range(folds)``: from its :func:`calibration_rank`, so it never changes as
    reviews arrive."""
    if folds < 2:
        raise ValueError(f"cross-fitting needs at least 2 folds, got {folds!r}")
    return min(folds - 1, int(calibration_rank(product_id) * folds))


def cross_fit_split(reviewed: Mapping[K, str], product_ids: Mapping[K, str], *, folds: int = DEFAULT_FOLDS,
                    min_rows: int = 1) -> tuple[dict[K, str], dict[K, str], dict]:
    """Every reviewed row trains the head, and every one calibrates the rule through the head of its fold.

    Returns ``(train, calibration, record)`` like :func:`split_reviewed`: ``train`` is all the rows;
    ``calibration`` is all of them too, unless fewer than ``min_rows`` (they cannot support the precision target:
    :func:`min_calibration_rows`), then none. ``record`` is for the manifest: the folds and their sizes, the
    counts, the calibration products' ids. The out-of-fold predictions are :func:`prediction.stage.cross_fitted`'s.
    """
    if folds < 2:
        raise ValueError(f"cross-fitting needs at least 2 folds, got {folds!r}")
    record: dict = {"mode": "cross-fit", "folds": int(folds), "n_reviewed": len(reviewed), "min_rows": int(min_rows),
                    "draw": "fold = floor(folds * sha256(product_id) / 2**64)", "n_train": len(reviewed)}
    if len(reviewed) < max(1, min_rows):
        record.update({"n_calibration": 0, "calibration_ids": [],
                       "reason": f"{len(reviewed)} reviews, fewer than the {max(1, min_rows)} that can support the precision "
                                 "target: they train the head and calibrate nothing"})
        return dict(reviewed), {}, record
    by_fold: dict[int, list[str]] = {f: [] for f in range(folds)}
    for k in reviewed:
        by_fold[fold_of(product_ids[k], folds)].append(str(product_ids[k]))
    record.update({"n_calibration": len(reviewed), "calibration_ids": sorted(str(product_ids[k]) for k in reviewed),
                   "fold_sizes": [len(by_fold[f]) for f in range(folds)]})
    return dict(reviewed), dict(reviewed), record
