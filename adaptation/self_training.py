"""Class-balanced self-training: the target's most confident predictions, a fixed quota per class, become labelled rows.

After a first model is trained, each round takes, for every class, at most ``share * N_t / n_classes`` target
rows predicted as that class with confidence at least ``min_confidence`` (the most confident first), adds them
to the labelled rows with their predicted class, and trains the same method again from scratch. The quota is
per class so that the classes the first model already favours do not take over the pseudo-labels (Zou et al.,
"Unsupervised Domain Adaptation for Semantic Segmentation via Class-Balanced Self-Training", ECCV 2018); the
share grows from round to round as the model gets better. No target label is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from prodkg.adaptation.config import AUTO, TrainConfig
from prodkg.adaptation.features import MultiModal
from prodkg.errors import ConfigError

__all__ = ["balanced_pseudo_labels", "self_train"]


def balanced_pseudo_labels(probs: np.ndarray, share: float, min_confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Target rows to pseudo-label and their classes: per class the most confident rows predicted as it that
    reach ``min_confidence``, at most ``max(1, round(share * N / K))`` of them.

    Shape:
        probs: ``(N, K)`` class probabilities; returns ``(M,)`` row indices (ascending) and ``(M,)`` classes.
    """
    probs = np.asarray(probs)
    if probs.ndim != 2:
        raise ValueError(f"probs must be (N, K); got shape {probs.shape}")
    n, k = probs.shape
    quota = max(1, round(share * n / k))
    pred, conf = probs.argmax(1), probs.max(1)
    chosen = []
    for c in range(k):
        idx = np.flatnonzero((pred == c) & (conf >= min_confidence))
        chosen.append(idx[np.argsort(-conf[idx], kind="stable")][:quota])
    rows = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)
    return rows.astype(np.int64), pred[rows]


def self_train(
    source: MultiModal,
    y_source: np.ndarray,
    target: MultiModal,
    n_classes: int,
    config: TrainConfig,
    *,
    shares: Sequence[float] = (0.2, 0.4),
    min_confidence: float = 0.0,
    first=None,
    progress: bool = False,
):
    """Train ``config``'s method, then one round of class-balanced self-training per entry of ``shares``.

    An ensemble of seeds (``config.ensemble > 1``, :mod:`adaptation.ensemble`) is self-trained member by member, each
    from its own pseudo-labels, and averaged again: members that learn from their own mistakes stay different,
    where pseudo-labels from the average would make them alike (grocery, 3 Lite0 heads, 3 seeds: 58.5% on the coarse
    classes after spreading with shared pseudo-labels, 60.1% with each member's own; docs/BENCHMARKS.md "Label spreading").
    Each round's record then gives the first member's counts and, under ``members``, every member's.

    Args:
        source, y_source, target, n_classes: as for :func:`adaptation.train`.
        config: the method to train in every round; ``auto`` is refused (its hold-out would score
            candidates on pseudo-labels): pass the config ``auto`` chose, and its model as ``first``.
        shares: per round, the share of the target that may be pseudo-labelled (split evenly over classes).
        min_confidence: a prediction less confident than this is never a pseudo-label. The default 0 leaves
            the choice to the per-class quota alone (CBST's per-class confidence quantile): with one photo per
            class a head's raw confidences on the target are low across the board, and no held-out source row
            can calibrate them.
        first: an already trained first model (else one is trained).

    Returns:
        ``(model, rounds)``: the last round's model and, per round, how many target rows were pseudo-labelled
        and how many classes they cover.
    """
    from prodkg.adaptation.trainer import train

    if config.method == AUTO:
        raise ConfigError("self-training retrains one method; pass the configuration auto chose, not auto")
    if not shares or any(not 0 < s <= 1 for s in shares):
        raise ConfigError(f"shares must be numbers in (0, 1]; got {list(shares)!r}")
    if not 0 <= min_confidence < 1:
        raise ConfigError(f"min_confidence must be in [0, 1); got {min_confidence!r}")
    y_source = np.asarray(y_source)
    model = first if first is not None else train(source, y_source, target, n_classes, config, progress=progress)
    if config.ensemble > 1:  # each member of an ensemble of seeds goes on from its own pseudo-labels
        from prodkg.adaptation.ensemble import combine, members_of

        runs = [self_train(source, y_source, target, n_classes, member.config, shares=shares, min_confidence=min_confidence,
                           first=member, progress=progress) for member in members_of(model)]
        out = combine([m for m, _ in runs], config)
        out.selection = model.selection
        record = [{**per_round[0], "members": [{k: r[k] for k in ("pseudo_labelled", "classes")} for r in per_round]}
                  for per_round in zip(*(rec for _, rec in runs))]
        return out, record
    record: list[dict[str, Any]] = []
    for share in shares:
        rows, labels = balanced_pseudo_labels(model.predict_proba(target), share, min_confidence)
        record.append({"share": share, "pseudo_labelled": len(rows), "classes": len(np.unique(labels))})
        if not len(rows):
            break
        model = train(MultiModal.concat([source, target.subset(rows)]), np.concatenate([y_source, labels]), target, n_classes, config,
                      progress=progress)
    return model, record
