"""Fit one prediction task (category or an attribute) on source labels, adapt to the target, predict it."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from prodkg.adaptation import AdaptedModel, MultiModal, Rows, TrainConfig, train
from prodkg.adaptation.model import softmax
from prodkg.adaptation.holdout import grouped_holdout
from prodkg.adaptation.selection import stratified_holdout
from prodkg.prediction.calibration import expected_calibration_error, fit_temperature
from prodkg.prediction.estimates import by_rows, log_softmax
from prodkg.prediction.labels import LabelSpace
from prodkg.errors import StageError


@dataclass
class TaskResult:
    """One fitted task: its model, calibration, target predictions and metrics."""

    task: str
    labels: LabelSpace
    model: AdaptedModel
    temperature: float
    predictions: pd.DataFrame  # product_id, task, value, confidence
    metrics: dict = field(default_factory=dict)
    # what the label-free estimates and the publication rule read (prediction.publication): calibrated
    # log-probabilities of the held-out source rows ("source_logp") with their class indices ("source_labels"),
    # and of the target rows ("target_logp", in the order of ``predictions``)
    evidence: dict = field(default_factory=dict)


def fit_task(
    task: str,
    features: MultiModal,
    labels: Sequence[str | None],
    is_source: np.ndarray,
    is_target: np.ndarray,
    product_ids: Sequence[str],
    config: TrainConfig,
    *,
    val_fraction: float = 0.1,
    progress: bool = False,
    reviewed: Mapping[int, str] | None = None,
    view_of: np.ndarray | None = None,
    self_training: int = 0,
    label_spreading: float = 0.0,
) -> TaskResult:
    """Train ``config.method`` on labelled source rows and unlabelled target rows, then predict the target.

    Source rows without a label are not used for the classifier. A stratified
    ``val_fraction`` of the source is held out to fit the temperature that makes
    confidences calibrated (and to report source validation accuracy); target labels,
    when present, are used for the reported target accuracy only.

    ``reviewed`` (row index -> label) are target rows a person labelled: they join the labelled
    training rows (semi-supervised adaptation), repeated (see :func:`reviewed_repeat`), their labels are spread to similar target products
    (:mod:`prediction.propagation`), and they are left out of the target evaluation.

    ``view_of`` (``(N,)``, -1 for a product's own row) marks source rows that are augmented views of the product
    in that row (:mod:`prodkg.extractors.views`). Whole products are held out with their views
    (:func:`adaptation.holdout.grouped_holdout`), and only the held-out products' own rows calibrate and
    estimate: a view is a distortion made here, not a photo of the domain. With one product per class
    nothing is held out, views or not.

    ``self_training`` rounds of class-balanced self-training (:func:`adaptation.self_training.self_train`,
    shares 0.2, 0.4, ... of the target) follow the first model; with ``auto`` they retrain the candidate it chose.

    ``config.ensemble`` heads from different seeds average their probabilities (:mod:`adaptation.ensemble`); with
    ``self_training`` each member self-trains from its own pseudo-labels.

    ``label_spreading`` (alpha in (0, 1); 0: off) spreads the head's own target probabilities over the target's
    k-NN graph (:func:`prediction.propagation.spread_predictions`) before the reviews are blended in: what is
    published, estimated and evaluated is the spread prediction. It is transductive: a saved head scoring other
    rows (`prodkg predict`, kept heads) does not spread.
    """
    labels = list(labels)
    is_source = np.asarray(is_source, dtype=bool)
    is_target = np.asarray(is_target, dtype=bool)
    src_labelled = is_source & np.array([lab is not None for lab in labels])
    reviewed = {int(i): lab for i, lab in (reviewed or {}).items() if is_target[int(i)] and lab}
    space = LabelSpace.from_labels([labels[i] for i in np.flatnonzero(src_labelled)] + list(reviewed.values()))
    if len(space) < 2:
        raise StageError(f"task {task!r}: the source domain has {len(space)} distinct label(s); at least 2 are needed")
    if not is_target.any():
        raise StageError(f"task {task!r}: the target domain has no products")
    y_all = space.encode(labels)
    src_idx = np.flatnonzero(src_labelled)
    groups = None
    if view_of is None:
        val_mask = stratified_holdout(y_all[src_idx], val_fraction, config.seed)
    else:
        view_of = np.asarray(view_of, np.int64)
        if view_of.shape != (len(labels),):
            raise StageError(f"task {task!r}: view_of must have one entry per row ({len(labels)}); got {view_of.shape}")
        groups = np.where(view_of >= 0, view_of, np.arange(len(labels)))
        val_mask = grouped_holdout(y_all[src_idx], groups[src_idx], val_fraction, config.seed)
    train_idx, val_idx = src_idx[~val_mask], src_idx[val_mask]
    if view_of is not None:
        val_idx = val_idx[view_of[val_idx] < 0]
    tgt_idx = np.flatnonzero(is_target)
    rev_idx = np.array(sorted(reviewed), dtype=np.int64)
    fit_idx, y_fit = train_idx, y_all[train_idx]
    repeat = 0
    if len(rev_idx):
        repeat = reviewed_repeat(len(train_idx), len(space))
        fit_idx = np.concatenate([train_idx, np.tile(rev_idx, repeat)])
        y_fit = np.concatenate([y_fit, np.tile(space.encode([reviewed[i] for i in rev_idx]), repeat)])

    started = time.perf_counter()
    # the rows are read in place from the whole features (Rows), not copied out of them first
    model = train(Rows(features, fit_idx), y_fit, Rows(features, tgt_idx), len(space), config, progress=progress,
                  groups=None if groups is None else groups[fit_idx])
    rounds = None
    if self_training:
        from prodkg.adaptation.self_training import self_train

        chosen = model.selection
        model, rounds = self_train(features.subset(fit_idx), y_fit, features.subset(tgt_idx), len(space), model.config,
                                   shares=[min(1.0, 0.2 * (r + 1)) for r in range(self_training)], first=model, progress=progress)
        model.selection = chosen
    seconds = time.perf_counter() - started

    metrics: dict = {"task": task, "method": model.config.method, "n_classes": len(space), "n_source_train": int(len(train_idx)),
                     "n_source_val": int(len(val_idx)), "n_target": int(len(tgt_idx)), "train_seconds": round(seconds, 3)}
    if rounds is not None:
        metrics["self_training"] = rounds
    if config.ensemble > 1:  # a deep ensemble (adaptation/ensemble.py): its members' seeds, or why it has none
        skipped = ((model.selection or {}).get("seed_ensemble") or {}).get("skipped")
        members = model.member_configs() if not skipped else None
        metrics["ensemble"] = ({"members": len(members), "seeds": [c["seed"] for c in members]} if members
                               else {"members": 1, "skipped": skipped or "one head"})
    if view_of is not None:
        metrics["n_source_train_views"] = int((view_of[train_idx] >= 0).sum())
    temperature = 1.0
    evidence = {"source_logp": np.zeros((0, len(space))), "source_labels": np.zeros(0, np.int64)}
    if len(val_idx) >= 2:
        val_logits = model.logits(features.subset(val_idx))
        y_val = y_all[val_idx]
        temperature = fit_temperature(val_logits, y_val)
        metrics["source_val_accuracy"] = float((val_logits.argmax(1) == y_val).mean())
        metrics["source_val_ece_raw"] = expected_calibration_error(by_rows(softmax, val_logits, dtype=np.float32), y_val)
        metrics["source_val_ece"] = expected_calibration_error(by_rows(lambda z: softmax(z, temperature), val_logits, dtype=np.float32),
                                                               y_val)
        evidence = {"source_logp": by_rows(lambda z: log_softmax(z / temperature), val_logits), "source_labels": np.asarray(y_val, np.int64)}
    metrics["temperature"] = temperature
    if len(rev_idx):
        metrics["n_target_reviewed"] = int(len(rev_idx))
        metrics["reviewed_repeat"] = int(repeat)
    if model.selection is not None:  # method "auto": which candidate won and why, for the run manifest
        metrics["requested_method"] = config.method
        metrics["selection"] = {"selector": model.selection["selector"], "chosen": model.selection["chosen"],
                                "reason": model.selection["reason"]}

    target_logits = model.logits(Rows(features, tgt_idx))
    # A chunk of rows at a time: whole-matrix temporaries of a 200,000-product target (four float64 copies in
    # log_softmax, three in softmax) were the heads stage's peak at a million products.
    probs = by_rows(lambda z: softmax(z, temperature), target_logits, dtype=np.float32)
    # log-probabilities keep the ranking of confident predictions that float probabilities round to 1.0
    evidence["target_logp"] = by_rows(lambda z: log_softmax(z / temperature), target_logits)
    del target_logits
    if label_spreading:  # each target product's prediction mixed with those of the target products most like it
        from prodkg.prediction.propagation import spread_predictions

        probs, metrics["label_spreading"] = spread_predictions(features, tgt_idx, probs, label_spreading)
    if len(rev_idx):  # each reviewed label also spreads to the target products most like it
        from prodkg.prediction.propagation import blend_with_reviews

        probs = blend_with_reviews(features, tgt_idx, rev_idx, space.encode([reviewed[i] for i in rev_idx]), probs)
    if len(rev_idx) or "changed" in metrics.get("label_spreading", {}):  # the rule reads the mixed probabilities
        evidence["target_logp"] = np.log(np.clip(probs, 1e-300, None))
    pred = probs.argmax(1)
    predictions = pd.DataFrame(
        {
            "product_id": [product_ids[i] for i in tgt_idx],
            "task": task,
            "value": space.decode(pred),
            "confidence": probs.max(1).astype(float),
        }
    )
    y_tgt = y_all[tgt_idx]
    known = (y_tgt >= 0) & ~np.isin(tgt_idx, rev_idx)  # reviewed rows were trained on: not evaluated
    if known.any():
        # target labels: evaluation only, never seen by training or calibration
        metrics["target_accuracy"] = float((pred[known] == y_tgt[known]).mean())
        metrics["target_ece"] = expected_calibration_error(probs[known], y_tgt[known])
        metrics["n_target_labelled"] = int(known.sum())
        unseen = sum(1 for i in tgt_idx if labels[i] is not None and labels[i] not in space)
        if unseen:
            metrics["n_target_unseen_label"] = unseen
    metrics["mean_confidence"] = float(probs.max(1).mean())
    return TaskResult(task=task, labels=space, model=model, temperature=temperature, predictions=predictions, metrics=metrics,
                      evidence=evidence)


def reviewed_repeat(n_source: int, n_classes: int, *, cap: int = 10) -> int:
    """How many times each reviewed target row is repeated in the training set: a tenth of the source
    rows of an average class, at least once and at most ``cap`` times. With few source rows per class
    (one iconic photo per product) a reviewed row counts once: repeated, a handful of reviews of a few
    classes would pull every prediction towards those classes."""
    return int(max(1, min(cap, round(0.1 * n_source / max(1, n_classes)))))


def with_method(config: TrainConfig, method: str) -> TrainConfig:
    return dataclasses.replace(config, method=method)
