"""Which predictions become published facts: precision-targeted thresholds, taxonomy back-off, unknown products.

:func:`decide` turns one head's target probabilities into predictions at every taxonomy level and picks
the published ones, from the deepest level up:

1. the level's probabilities are the sums over its concepts' classes (:mod:`prediction.backoff`);
2. its accuracy on the target is estimated without labels (ATC, with DoC and, given a second head,
   agreement recorded beside it; :mod:`prediction.estimates`);
3. the items not yet published and not unknown get the smallest threshold whose estimated precision reaches
   ``min_precision`` (:mod:`prediction.thresholds`), or the fixed ``threshold`` when one is given;
4. what clears it is published at that level; the rest try the next broader level.

:func:`evaluate` measures the outcome against target labels; it is for reports and benchmarks only and
never feeds back into :func:`decide`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from prodkg.prediction.backoff import TaxonomyLevels
from prodkg.prediction.estimates import (
    _as_logp,
    agreement_estimate,
    atc_estimate,
    doc_estimate,
    match_accuracy,
    match_accuracy_reliable,
    source_reliability,
)
from prodkg.prediction.metrics import confidence_ece, open_set_scores, risk_coverage
from prodkg.prediction.thresholds import NEVER, threshold_for_precision

__all__ = ["DEFAULT_MIN_PRECISION", "Decision", "decide", "evaluate", "pick_estimator"]

DEFAULT_MIN_PRECISION = 0.95
ESTIMATORS = ("auto", "atc", "atc_mc", "doc", "agreement", "atc+agreement", "none")
#: ATC's threshold is the (k+1)-th smallest held-out source score, k the number of held-out errors: with fewer
#: rows or errors than these it is an extreme order statistic, and ``auto`` leans on agreement instead
MIN_SOURCE_ROWS = 20
MIN_SOURCE_ERRORS = 3


def pick_estimator(n_source_rows: int, has_other: bool, n_source_errors: int | None = None) -> str:
    """The estimator ``auto`` uses.

    * ``atc`` when the source hold-out has at least :data:`MIN_SOURCE_ROWS` rows and :data:`MIN_SOURCE_ERRORS`
      errors (on office-caltech-10 within 3 points of the truth on 4 of 5 such tasks, on instacart within 1.2);
    * ``agreement`` with a second head when the hold-out is too small or too clean for ATC (it overestimates where
      the two heads share their mistakes: by 22 points on instacart, where catalog and new feed hardly differ);
    * ``none`` when neither is available: the source-calibrated confidence is taken at its word.
    """
    errors = MIN_SOURCE_ERRORS if n_source_errors is None else n_source_errors
    if n_source_rows >= MIN_SOURCE_ROWS and errors >= MIN_SOURCE_ERRORS:
        return "atc"
    if has_other:
        return "agreement"
    return "atc" if n_source_rows >= MIN_SOURCE_ROWS else "none"


@dataclass
class Decision:
    """The outcome for every target item.

    ``predictions``: one row per item and distinct concept along its levels (``item``, ``level``, ``value``,
    ``confidence`` -- the level's aggregated source-calibrated probability --, ``correctness`` -- the estimated
    probability it is right --, ``published``). ``published`` / ``published_level``: per item, the published
    concept (None: nothing) and its level (-1). ``unknown``: per item, flagged unknown. ``levels``: per level,
    thresholds and estimates for the manifest.
    """

    predictions: pd.DataFrame
    published: list[str | None]
    published_level: np.ndarray
    unknown: np.ndarray
    levels: list[dict]
    rule: dict
    n_levels: int
    level_values: list[list[str]] = field(default_factory=list)  # per level, each item's predicted concept

    def summary(self) -> dict:
        n = len(self.published)
        k = int((self.published_level >= 0).sum())
        pub = self.predictions[self.predictions["published"]]
        return {**self.rule, "n_target": n, "n_published": k, "coverage": k / n if n else float("nan"),
                "estimated_precision": float(pub["correctness"].mean()) if len(pub) else float("nan"),
                "n_unknown": int(self.unknown.sum()), "levels": self.levels}


def decide(
    target_probs: np.ndarray,
    classes: Sequence[str],
    *,
    source_probs: np.ndarray,
    source_labels: np.ndarray,
    taxonomy: Iterable[tuple] = (),
    min_precision: float = DEFAULT_MIN_PRECISION,
    threshold: float | None = None,
    unknown: np.ndarray | None = None,
    other_probs: np.ndarray | None = None,
    estimator: str = "auto",
    min_items: int = 5,
    require_agreement: bool = True,
) -> Decision:
    """Predictions at every level and the published ones (see the module docstring).

    Args:
        target_probs: (N, C) source-calibrated class probabilities of the target items, or their log-probabilities
            (better: they keep the order of predictions whose probabilities round to 1.0).
        classes: the C class names (the head's label space).
        source_probs, source_labels: held-out source rows' probabilities or log-probabilities (M, C) and class indices (M,).
        taxonomy: ``(concept, parent[, label])`` entries; classes absent from it are roots (flat).
        min_precision: the precision the published facts should reach, by the label-free estimate.
        threshold: a fixed confidence bar instead (applied at every level); None uses ``min_precision``.
        unknown: (N,) bool, items flagged unknown: they get no published category.
        other_probs: (N, C) a second head's target probabilities, for the agreement estimate.
        estimator: which estimate sets the per-item correctness: ``auto`` (default, :func:`pick_estimator`),
            ``atc``, ``atc_mc``, ``doc`` or ``agreement`` (needs ``other_probs``).
        min_items: a threshold must publish at least this many items of its level (``min_precision`` rule).
        require_agreement: with ``other_probs``, publish an item at a level only where both heads predict the same
            concept there (it may still be published at a broader level where they agree); ``min_precision`` rule
            only. Two heads that
            disagree cannot both be right; on office-caltech-10 the items they disagree on were right 38-41 % of
            the time against 92-99 % for the rest.
    """
    target_lp = _as_logp(target_probs)
    source_lp = _as_logp(source_probs)
    other_lp = None if other_probs is None else _as_logp(other_probs)
    source_labels = np.asarray(source_labels)
    n = len(target_lp)
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; expected one of {', '.join(ESTIMATORS)}")
    if "agreement" in estimator and other_probs is None:
        raise ValueError("the agreement estimator needs a second head's probabilities (other_probs)")
    if estimator == "auto":
        n_errors = int((source_lp.argmax(1) != source_labels).sum()) if len(source_labels) else 0
        estimator = pick_estimator(len(source_labels), other_probs is not None, n_errors)
    tax = TaxonomyLevels(classes, taxonomy)
    unknown = np.zeros(n, bool) if unknown is None else np.asarray(unknown, bool)
    published: list[str | None] = [None] * n
    published_level = np.full(n, -1)
    rows, levels, level_values = [], [], []
    known = ~unknown
    seen: list[dict[str, int]] = [{} for _ in range(n)]  # per item: concept -> its row, so a class repeated at a broader level is one row
    for level in range(tax.depth, -1, -1):
        p, names = tax.aggregate_log(target_lp, level)  # log-probabilities of the level's concepts
        sp, _ = tax.aggregate_log(source_lp, level)
        m, _ = tax.membership(level)
        s_lab = m.argmax(1)[source_labels] if len(source_labels) else source_labels
        # the estimates are of the items that can be published: those not flagged unknown
        pk = p[known]
        estimates = {"atc": atc_estimate(sp, s_lab, pk, kind="ne") if len(sp) else float("nan"),
                     "atc_mc": atc_estimate(sp, s_lab, pk, kind="mc") if len(sp) else float("nan"),
                     "doc": doc_estimate(sp, s_lab, pk) if len(sp) and len(pk) else float("nan"),
                     "mean_confidence": float(np.exp(pk.max(1)).mean()) if len(pk) else float("nan")}
        op = None
        if other_probs is not None:
            op, _ = tax.aggregate_log(other_lp, level)
            estimates["agreement"] = agreement_estimate(pk.argmax(1), op[known].argmax(1))
            estimates["atc+agreement"] = (estimates["atc"] + estimates["agreement"]) / 2
        driver = estimates.get(estimator, float("nan"))  # "none": NaN, the confidence itself is the correctness
        conf_log = p.max(1)  # thresholds compare log-confidences: no ties among predictions rounded to 1.0
        conf = np.exp(conf_log)
        pred = p.argmax(1)
        correctness = conf.copy()
        if np.isfinite(driver) and len(pk):
            # the source hold-out's reliability curve gives the shape where it has enough rows and errors
            reliability = source_reliability(sp, s_lab, min_rows=MIN_SOURCE_ROWS, min_errors=MIN_SOURCE_ERRORS) if len(sp) else None
            correctness[known] = (match_accuracy_reliable(pk, driver, reliability) if reliability is not None
                                  else match_accuracy(pk, driver).max(1))
        remaining = (published_level < 0) & ~unknown
        if op is not None and require_agreement and threshold is None:
            remaining &= pred == op.argmax(1)
        if threshold is not None:
            t = float(np.log(threshold)) if threshold > 0 else -np.inf
        else:
            t = threshold_for_precision(conf_log[remaining], correctness[remaining], min_precision, min_items=min_items)
        new = remaining & (conf_log >= t)
        values = [names[k] for k in pred]
        level_values.append(values)
        for i in np.flatnonzero(new):
            published[i], published_level[i] = values[i], level
        for i in range(n):
            j = seen[i].get(values[i])
            if j is None:
                seen[i][values[i]] = len(rows)
                rows.append({"item": i, "level": level, "value": values[i], "confidence": float(conf[i]),
                             "correctness": float(correctness[i]), "published": bool(new[i])})
            elif new[i]:
                rows[j]["published"] = True
        levels.append({"level": level, "n_concepts": len(names), "threshold": None if t == NEVER else float(np.exp(t)),
                       "threshold_log": None if t == NEVER else float(t),
                       "estimates": {k: round(v, 6) for k, v in estimates.items()}, "estimator": estimator,
                       "estimated_accuracy": round(float(driver), 6) if np.isfinite(driver) else None,
                       "n_published": int(new.sum()),
                       "estimated_precision": round(float(correctness[new].mean()), 6) if new.any() else None})
    level_values.reverse()  # index by level, root first
    rule = {"rule": "threshold", "threshold": float(threshold)} if threshold is not None else {"rule": "min_precision", "min_precision": float(min_precision)}
    rule["require_agreement"] = bool(other_probs is not None and require_agreement and threshold is None)
    frame = pd.DataFrame(rows, columns=["item", "level", "value", "confidence", "correctness", "published"])
    return Decision(predictions=frame, published=published, published_level=published_level, unknown=unknown, levels=levels,
                    rule=rule, n_levels=tax.n_levels, level_values=level_values)


def evaluate(decision: Decision, classes: Sequence[str], taxonomy: Iterable[tuple], true_labels: Sequence[str | None],
             *, target_probs: np.ndarray | None = None) -> dict:
    """Target-label measures of a :class:`Decision` (evaluation only).

    ``true_labels`` are the items' true classes (None: unlabelled, left out; a label outside ``classes``
    is an unknown-class item). Returns accuracy (all predictions, deepest level), precision / coverage of
    the published facts overall and by level, target ECE, the risk-coverage curve of the deepest level,
    estimated vs true accuracy by level, and the open-set scores when some items are of unknown classes.
    """
    tax = TaxonomyLevels(classes, taxonomy)
    known_classes = set(classes)
    labelled = np.array([t is not None for t in true_labels])
    is_known = np.array([t in known_classes for t in true_labels])
    deep = tax.depth
    out: dict = {"n_labelled": int(labelled.sum()), "n_unknown_class": int((labelled & ~is_known).sum())}
    # the published facts: right when the published concept is the item's true concept at that level
    correct_pub = np.zeros(len(true_labels), bool)
    for i, (lab, value, level) in enumerate(zip(true_labels, decision.published, decision.published_level)):
        if value is not None and lab in known_classes:
            correct_pub[i] = tax.labels_at([lab], int(level))[0] == value
    pub = decision.published_level >= 0
    scope = labelled
    out["precision"] = float(correct_pub[scope & pub].mean()) if (scope & pub).any() else float("nan")
    out["coverage"] = float(pub[scope].mean()) if scope.any() else float("nan")
    out["n_published"] = int((scope & pub).sum())
    by_level = []
    for level in range(tax.depth, -1, -1):
        truth = tax.labels_at(list(true_labels), level)
        values = decision.level_values[level]
        correct = np.array([t is not None and t == v for t, v in zip(truth, values)])
        at = pub & (decision.published_level == level) & scope
        est = next(lv for lv in decision.levels if lv["level"] == level)
        rec = {"level": level, "accuracy": float(correct[scope & is_known].mean()) if (scope & is_known).any() else float("nan"),
               "accuracy_all": float(correct[scope].mean()) if scope.any() else float("nan"),
               # the population the estimate is of: labelled items not flagged unknown
               "accuracy_unflagged": float(correct[scope & ~decision.unknown].mean()) if (scope & ~decision.unknown).any() else float("nan"),
               "estimated_accuracy": est["estimated_accuracy"], "estimates": est["estimates"],
               "coverage": float(at.sum() / scope.sum()) if scope.any() else float("nan"),
               "precision": float(correct[at].mean()) if at.any() else float("nan"), "n_published": int(at.sum())}
        if target_probs is not None:
            lp, _ = tax.aggregate_log(_as_logp(target_probs), level)
            conf_log = lp.max(1)
            rec["ece"] = confidence_ece(np.exp(conf_log)[scope], correct[scope])
            if level == deep:
                curve = risk_coverage(conf_log[scope], correct[scope])  # ranked by log-confidence: no ties at 1.0
                curve["threshold"] = np.exp(curve["threshold"])
                out["risk_coverage"] = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in curve.items()}
        by_level.append(rec)
    out["levels"] = by_level
    deepest = by_level[0]
    out["accuracy"] = deepest["accuracy_all"]
    out["target_ece"] = deepest.get("ece", float("nan"))
    if out["n_unknown_class"]:
        predicted = [None if decision.unknown[i] else decision.level_values[deep][i] for i in range(len(true_labels))]
        idx = np.flatnonzero(labelled)
        out["open_set"] = open_set_scores([true_labels[i] for i in idx], [predicted[i] for i in idx], list(classes))
        unk = labelled & ~is_known
        out["open_set"]["unknown_published"] = float(pub[unk].mean())
    return out



def publication_frame(decision: Decision, product_ids: Sequence[str], task: str, model_id: str, *,
                      unknown_similarity: np.ndarray | None = None, with_levels: bool | None = None) -> pd.DataFrame:
    """The prediction rows a run writes to the graph for one task.

    Columns ``product_id, task, value, confidence, model, level, kind, published``: one ``class`` row per item and
    distinct concept along its levels (``level`` only when the taxonomy has more than one, so a flat task keeps
    one prediction per product), and one ``unknown`` row per item flagged unknown whose confidence is its unknown
    score, 1 - the cosine similarity to the nearest source prototype, clipped to [0, 1].
    """
    with_levels = decision.n_levels > 1 if with_levels is None else with_levels
    p = decision.predictions
    ids = np.asarray(list(product_ids), dtype=object)
    frame = pd.DataFrame({
        "product_id": ids[p["item"].to_numpy(int)] if len(p) else [],
        "task": task,
        "value": p["value"].to_numpy(object),
        "confidence": np.clip(p["confidence"].to_numpy(float), 0.0, 1.0),
        "model": model_id,
        "level": pd.array(p["level"].to_numpy(int) if with_levels else [pd.NA] * len(p), dtype="Int64"),
        "kind": "class",
        "published": p["published"].to_numpy(bool),
    })
    if unknown_similarity is not None and decision.unknown.any():
        idx = np.flatnonzero(decision.unknown)
        score = np.clip(1.0 - np.asarray(unknown_similarity, float)[idx], 0.0, 1.0)
        frame = pd.concat([frame, pd.DataFrame({"product_id": ids[idx], "task": task, "value": None, "confidence": score, "model": model_id,
                                                "level": pd.array([pd.NA] * len(idx), dtype="Int64"), "kind": "unknown",
                                                "published": False})], ignore_index=True)
    return frame


__all__.append("publication_frame")
