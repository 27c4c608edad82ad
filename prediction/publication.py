"""Which predictions become published facts: precision-targeted thresholds, taxonomy back-off, unknown products.

:func:`decide` turns one head's target probabilities into predictions at every taxonomy level and picks
the published ones, from the deepest level up:

1. the level's probabilities are the sums over its concepts' classes (:mod:`prediction.backoff`);
2. its accuracy on the target is estimated without labels (ATC, with DoC and, given a second head,
   agreement recorded beside it, and given a third classifier the three-way agreement estimate too;
   :mod:`prediction.estimates`), and so is a lower bound on it: ``z`` standard
   errors down, the estimate's sampling error and its typical error under shift (``estimate_error``) together;
3. every item gets an estimated probability of being right, its confidence re-tempered so the mean is that
   lower bound; where the source hold-out shows a class wrong more (or less) often than the shared estimate
   expects, its items' chances of being wrong are scaled by the class's shrunk ratio (per-class thresholds);
   where the target holds a group of products unlike the source, each item's chance is also weighed by its
   probability of being of a known class (:func:`prediction.unknown.known_probability`), and items are ranked by it;
4. the items not yet published and not unknown get the lowest bar at which the published set's estimated
   precision, less ``z`` standard errors of its own count, reaches ``min_precision`` (:mod:`prediction.thresholds`),
   or the fixed ``threshold`` when one is given;
5. what clears it is published at that level; the rest try the next broader level.

Given a target calibration set (reviewed target products predicted out of fold or held out of training,
:mod:`prediction.target_calibration`), it is the evidence in place of the source hold-out: step 2 reads the
level's accuracy on those rows, lowered to its one-sided Clopper-Pearson bound, and the per-item shape and the
per-class ratios come from them; step 4's bar is lowered one calibration row at a time while the calibration rows
published so far (over the levels, with ``pool``) keep a Clopper-Pearson lower bound on their precision of at least
``min_precision``, and stops at the first bar that fails (fixed-sequence testing, :func:`_calibration_bar`).
The rows are labelled target data, so they set the bar themselves; a level at none of whose bars they reach it
publishes nothing.

:func:`evaluate` measures the outcome against target labels; it is for reports and benchmarks only and
never feeds back into :func:`decide`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from prodkg.prediction.backoff import TaxonomyLevels
from prodkg.prediction.estimates import (
    _as_logp,
    agreement_estimate,
    apply_class_ratios,
    atc_bootstrap_se,
    atc_estimate,
    class_error_ratios,
    doc_estimate,
    match_accuracy,
    match_accuracy_reliable,
    source_reliability,
    triplet_estimate,
)
from prodkg.prediction.metrics import confidence_ece, open_set_scores, risk_coverage
from prodkg.prediction.target_calibration import bound_confidence, precision_lower_bound
from prodkg.prediction.thresholds import NEVER, threshold_for_precision
from prodkg.prediction.thresholds import precision_lower_bound as estimated_precision_bound

__all__ = ["DEFAULT_ESTIMATE_ERROR", "DEFAULT_MIN_PRECISION", "DEFAULT_SPECIFICITY", "DEFAULT_Z", "Decision", "decide", "estimate_standard_error", "evaluate",
           "information_share", "pick_estimator"]

DEFAULT_MIN_PRECISION = 0.95
CLASS_EVIDENCE = ("none", "source", "agreement")
DEFAULT_CLASS_EVIDENCE = "source"
#: the per-class rate ratios' prior strength, in expected errors (see :func:`prediction.estimates.class_error_ratios`)
DEFAULT_CLASS_PRIOR = 5.0
#: the accuracy estimate's error beyond sampling (its bias under shift), as a standard deviation; see :func:`decide`
DEFAULT_ESTIMATE_ERROR = 0.02
#: a published fact's worth is 1 plus this times its information (1 at the finest class): see :func:`_allocate_levels`
DEFAULT_SPECIFICITY = 2.0
#: standard errors between the estimated precision of what is published and ``min_precision`` (see :func:`decide`)
DEFAULT_Z = 1.0
ESTIMATORS = ("auto", "atc", "atc_mc", "doc", "agreement", "atc+agreement", "triplet", "calibration", "none")
#: ATC's threshold is the (k+1)-th smallest held-out source score, k the number of held-out errors: with fewer
#: rows or errors than these it is an extreme order statistic, and ``auto`` leans on agreement instead
MIN_SOURCE_ROWS = 20
MIN_SOURCE_ERRORS = 3


def pick_estimator(n_source_rows: int, has_other: bool, n_source_errors: int | None = None, *, atc_se: float | None = None,
                   max_atc_se: float = DEFAULT_ESTIMATE_ERROR) -> str:
    """The estimator ``auto`` uses.

    * ``atc`` when the source hold-out has at least :data:`MIN_SOURCE_ROWS` rows and :data:`MIN_SOURCE_ERRORS`
      errors, and ATC's own sampling error from the hold-out (``atc_se``, :func:`prediction.estimates.atc_bootstrap_se`)
      is at most ``max_atc_se`` (the bias allowance of the estimates, ``estimate_error`` in :func:`decide`);
    * ``agreement`` with a second head when the hold-out is too small or too clean for ATC, or so small that ATC's
      threshold moves more than that between hold-outs (office-caltech-10, about 100 held-out rows with 3-11 errors:
      resamples spread ATC by up to 8 points; of 14 task runs where it had at least 3 errors it missed by more than 3 points on 8, and
      agreement missed 6 of those 8 by less).
      Agreement overestimates where the two heads share their mistakes (by 22 points on instacart, where catalog and
      new feed hardly differ), but there the hold-out is large and ATC's sampling error small, so ATC is kept;
    * ``none`` when neither is available. :func:`decide` then publishes nothing under ``min_precision`` (the
      source-calibrated confidence is no estimate under shift); named by the caller, it takes that confidence at its word.
    """
    errors = MIN_SOURCE_ERRORS if n_source_errors is None else n_source_errors
    if n_source_rows >= MIN_SOURCE_ROWS and errors >= MIN_SOURCE_ERRORS:
        if has_other and atc_se is not None and np.isfinite(atc_se) and atc_se > max_atc_se:
            return "agreement"
        return "atc"
    if has_other:
        return "agreement"
    return "atc" if n_source_rows >= MIN_SOURCE_ROWS else "none"


def estimate_standard_error(estimator: str, accuracy: float, *, n_target: int, source_correct: np.ndarray,
                            atc_se: float | None = None) -> float:
    """The standard error of a label-free accuracy estimate from the counts behind it.

    Every estimate counts target items (a share of ``n_target``: binomial, ``a (1 - a) / n``); ATC's threshold also
    comes from the held-out source rows: its bootstrap standard deviation ``atc_se`` where given
    (:func:`prediction.estimates.atc_bootstrap_se`), else a binomial term for the hold-out's accuracy, a share of
    ``len(source_correct)``. The variances add. It is sampling error only: an estimator's bias under shift
    (agreement where two heads share their mistakes) is not in it. NaN accuracy or ``none``: 0.
    """
    if not np.isfinite(accuracy) or estimator == "none" or n_target <= 0:
        return 0.0
    a = float(np.clip(accuracy, 0.0, 1.0))
    var = a * (1 - a) / n_target
    m = len(source_correct)
    if "atc" in estimator and atc_se is not None and np.isfinite(atc_se):
        var += float(atc_se) ** 2
    elif "atc" in estimator and m:
        s = float(np.mean(source_correct))
        var += s * (1 - s) / m
    return float(np.sqrt(var))


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
    level_conf_log: list[np.ndarray] = field(default_factory=list)  # per level, each item's log-confidence there

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
    third: Sequence[str | None] | None = None,
    known_probability: np.ndarray | None = None,
    require_third: bool = True,
    estimator: str = "auto",
    min_items: int = 5,
    require_agreement: bool = True,
    estimate_error: float = DEFAULT_ESTIMATE_ERROR,
    z: float = DEFAULT_Z,
    class_evidence: str = DEFAULT_CLASS_EVIDENCE,
    class_prior: float = DEFAULT_CLASS_PRIOR,
    pool: bool = True,
    calibration: Mapping[int, str] | None = None,
    specificity: float | None = DEFAULT_SPECIFICITY,
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
        third: (N,) a third classifier's target predictions, as class names (None or a name not in ``classes``: no
            answer, never agreeing), for the ``triplet`` estimate with ``other_probs``
            (:func:`prediction.estimates.triplet_estimate`); the predict stage gives the nearest source prototype's class.
        known_probability: (N,) each item's probability of being of a known class
            (:func:`prediction.unknown.known_probability`): its estimated correctness is weighed by it, and items are
            ranked by that correctness. None: 1.
        require_third: with ``third`` (default on) and where the agreement (or triplet) estimate drives the rule,
            publish only items whose finest class the third classifier names too, and estimate over those items alone (they are not flagged unknown: they get no fact, as items the two
            heads disagree on get none at their level). Where the baseline is the weaker head, its agreement with the
            head reads the baseline's errors as the head's and the bound falls; among the products the nearest source
            prototype also supports it does much less so (office-caltech-10, DANN on Lite0, three seeds of 12 tasks: mean
            coverage 90.9 / 83.6 / 73.6 % without, 91.9 / 88.9 / 87.6 % with, every task at 95 % or more both ways;
            docs/BENCHMARKS.md, section ``trust-rule-parts``). ATC-driven levels are left alone: there the head's
            own hold-out sets the estimate, and a weaker prototype would only hold back what it vouches for.
        estimator: which estimate sets the per-item correctness: ``auto`` (default, :func:`pick_estimator`),
            ``atc``, ``atc_mc``, ``doc``, ``agreement`` (needs ``other_probs``) or ``triplet`` (also needs ``third``).
        min_items: a threshold must publish at least this many items of its level (``min_precision`` rule).
        require_agreement: with ``other_probs``, publish an item at a level only where both heads predict the same
            concept there (it may still be published at a broader level where they agree); ``min_precision`` rule
            only. Two heads that
            disagree cannot both be right; on office-caltech-10 the items they disagree on were right 38-41 % of
            the time against 92-99 % for the rest.
        estimate_error: the accuracy estimate's error beyond sampling, as a standard deviation (default 0.02:
            the estimates behind the office-caltech-10 benchmark were 2.0 points from the truth on average, the
            errors of ATC and agreement under shift are mostly bias, which no count of items shows).
        z: how many standard errors of caution, twice: the per-item estimates are set by the accuracy estimate
            less ``z`` times ``hypot(sampling error, estimate_error)`` (:func:`estimate_standard_error`), and the
            published set's estimated precision less ``z`` standard errors of its own count
            (:func:`prediction.thresholds.precision_lower_bound`) must reach ``min_precision``. 0 takes the
            estimate at its word.
        class_evidence: what sets per-class error ratios (:func:`prediction.estimates.class_error_ratios`):
            ``source`` (default) the held-out source rows predicted as each class, their errors against those the
            per-item estimates expect; ``agreement`` the target items' disagreement with the second head per
            class; ``none`` one shared estimate. A class with few rows keeps the shared estimate (the prior).
        class_prior: the ratios' prior strength, in expected errors.
        pool: ``min_precision`` is for all the facts published, over every level: a broader level's bar is the lowest
            at which the facts of the finer levels and its own together reach it (False: each level's own facts
            must). Products published at a finer level were the easy ones; judged without them, the products left
            for the broader level are the hard ones, and on instacart the back-off covered less than publishing every
            product at the department would have.
        calibration: target item index -> its reviewed class (a name of ``classes``; another name counts as wrong at
            every level): the target calibration set. With it ``auto`` picks the ``calibration`` estimator, and under
            ``min_precision`` the bars are held to what these rows support (see the module docstring), at the
            one-sided confidence ``Phi(z)`` (:func:`prediction.target_calibration.bound_confidence`).
        specificity: with broader taxonomy levels, under ``min_precision`` and the label-free estimate (no
            calibration rows), every item's level is chosen at once (:func:`_allocate_levels`): a fact is worth
            ``1 + specificity * information`` (1 at the finest class), so 0 publishes as many products as the target
            allows and at the broadest level that helps, large values favour the finest facts. None (or
            ``pool=False``): the levels in turn, finest first, each taking the lowest bar the target allows given
            what the finer levels published (on instacart that published fewer products at every setting).
    """
    target_lp = _as_logp(target_probs)
    source_lp = _as_logp(source_probs)
    other_lp = None if other_probs is None else _as_logp(other_probs)
    source_labels = np.asarray(source_labels)
    n = len(target_lp)
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; expected one of {', '.join(ESTIMATORS)}")
    cal_items = np.array(sorted(int(i) for i in (calibration or {})), dtype=np.int64)
    cal_labels = [calibration[int(i)] for i in cal_items] if len(cal_items) else []
    if estimator == "calibration" and not len(cal_items):
        raise ValueError("the calibration estimator needs target calibration rows (calibration)")
    if len(cal_items) and (cal_items.min() < 0 or cal_items.max() >= n):
        raise ValueError(f"calibration rows must index the {n} target items")
    if "agreement" in estimator and other_probs is None:
        raise ValueError("the agreement estimator needs a second head's probabilities (other_probs)")
    if estimator == "triplet" and (other_probs is None or third is None):
        raise ValueError("the triplet estimator needs a second head's probabilities (other_probs) and a third classifier's predictions (third)")
    if known_probability is not None and bool((np.asarray(known_probability) >= 1).all()):
        known_probability = None  # one group of similarities (a closed-set target): nothing to weigh, the rule as without
    index_of = {c: j for j, c in enumerate(classes)}
    third_idx = None if third is None else np.array([index_of.get(t, -1) if t is not None else -1 for t in third], np.int64)
    if third_idx is not None and len(third_idx) != n:
        raise ValueError(f"third has {len(third_idx)} predictions for {n} target items")
    if specificity is not None and not (isinstance(specificity, (int, float)) and np.isfinite(specificity) and specificity >= 0):
        raise ValueError(f"specificity must be a finite number >= 0 or None, got {specificity!r}")
    if class_evidence not in CLASS_EVIDENCE:
        raise ValueError(f"unknown class evidence {class_evidence!r}; expected one of {', '.join(CLASS_EVIDENCE)}")
    chosen_by_default = estimator == "auto"
    if estimator == "auto" and len(cal_items):
        estimator = "calibration"
    unknown = np.zeros(n, bool) if unknown is None else np.asarray(unknown, bool)
    known = ~unknown  # the items that can be published, which the estimates are of
    choice_se = None  # ATC's bootstrap error at the finest level, where it decided between ATC and agreement
    if estimator == "auto":
        n_errors = int((source_lp.argmax(1) != source_labels).sum()) if len(source_labels) else 0
        estimator = pick_estimator(len(source_labels), other_probs is not None, n_errors)
        if estimator == "atc" and other_probs is not None and known.any():
            choice_se = atc_bootstrap_se(source_lp, source_labels, target_lp, target_rows=None if known.all() else known)
            estimator = pick_estimator(len(source_labels), True, n_errors, atc_se=choice_se, max_atc_se=estimate_error)
    # where agreement drives the estimate, publish (and estimate) only where the third classifier names the head's class
    third_filter = bool(require_third and third_idx is not None and threshold is None and estimator in ("agreement", "triplet"))
    if third_filter:
        known = known & (third_idx == target_lp.argmax(1))
    tax = TaxonomyLevels(classes, taxonomy)
    # No labelled row was held out of training (one catalog product per class): no estimate of target accuracy has
    # anything labelled behind it, and agreement between two heads trained on the same few rows overestimates
    # (grocery: the rule published coarse facts 59 % right, estimated above 95 %). Nor is there an estimate when the
    # hold-out is too small for ATC and no second head or review gives another (``auto`` chose ``none``): the
    # source-calibrated confidence taken at its word is what the rule replaced (grocery's manufacturer head, 4 held-out
    # rows and no second head, published "ARLA KO" for 66 cucumbers and zucchini, estimated 97 % right). Under
    # ``min_precision`` nothing is published then; a fixed ``threshold``, or an estimator named by the caller, is the
    # caller's own call.
    no_anchor = threshold is None and chosen_by_default and not len(cal_items) and (len(source_labels) == 0 or estimator == "none")
    use_cal = estimator == "calibration"
    confidence = bound_confidence(z)
    cal_done = [0, 0]  # calibration rows published so far, over the levels: right, rows
    published: list[str | None] = [None] * n
    published_level = np.full(n, -1)
    rows, levels, level_values = [], [], []
    done: list[np.ndarray] = []  # per level so far, the estimated correctness of what it published
    info: list[dict] = []  # per level, finest first: what pass 2 needs (vectors of N, no (N, K) matrix)
    for level in range(tax.depth, -1, -1):
        p, names = tax.aggregate_log(target_lp, level)  # log-probabilities of the level's concepts
        sp, _ = tax.aggregate_log(source_lp, level)
        m, _ = tax.membership(level)
        s_lab = m.argmax(1)[source_labels] if len(source_labels) else source_labels
        # the estimates are of the items that can be published: those not flagged unknown
        pk = p if known.all() else p[known]  # no copy of the (N, K) matrix when nothing is flagged
        estimates = {"atc": atc_estimate(sp, s_lab, pk, kind="ne") if len(sp) else float("nan"),
                     "atc_mc": atc_estimate(sp, s_lab, pk, kind="mc") if len(sp) else float("nan"),
                     "doc": doc_estimate(sp, s_lab, pk) if len(sp) and len(pk) else float("nan"),
                     "mean_confidence": float(np.exp(pk.max(1)).mean()) if len(pk) else float("nan")}
        op = None
        if other_probs is not None:
            op, _ = tax.aggregate_log(other_lp, level)
            estimates["agreement"] = agreement_estimate(pk.argmax(1), op[known].argmax(1))
            estimates["atc+agreement"] = (estimates["atc"] + estimates["agreement"]) / 2
            if third_idx is not None:  # the third classifier's classes at this level (-1, no answer, stays -1)
                t_level = np.where(third_idx >= 0, m.argmax(1)[np.maximum(third_idx, 0)], -1)
                estimates["triplet"] = triplet_estimate(pk.argmax(1), op[known].argmax(1), t_level[known])
        conf_log = p.max(1)  # thresholds compare log-confidences: no ties among predictions rounded to 1.0
        conf = np.exp(conf_log)
        pred = p.argmax(1)
        # the calibration rows' reviewed concept at this level (-1: not one the head knows, so never right)
        index = {c: j for j, c in enumerate(names)}
        cal_truth = np.array([-1 if t is None else index.get(t, -1) for t in tax.labels_at(cal_labels, level)], dtype=np.int64)
        cal_right = pred[cal_items] == cal_truth
        cal_rows = known[cal_items]  # like the estimates, of the items that can be published
        if len(cal_items):
            k_cal, n_cal = int(cal_right[cal_rows].sum()), int(cal_rows.sum())
            estimates["calibration"] = k_cal / n_cal if n_cal else float("nan")
        # the rows the estimate's shape and the per-class ratios are read from: the calibration rows, or the source hold-out
        anchor_lp, anchor_lab = (p[cal_items[cal_rows]], cal_truth[cal_rows]) if use_cal else (sp, s_lab)
        driver = estimates.get(estimator, float("nan"))  # "none": NaN, the confidence itself is the correctness
        correctness = conf.copy()
        atc_se = None
        if use_cal:
            se = float(np.sqrt(driver * (1 - driver) / n_cal)) if n_cal and np.isfinite(driver) else 0.0
            # labelled target rows: no shift between them and the items, the bound is their sampling error's
            bound = precision_lower_bound(k_cal, n_cal, confidence) if threshold is None else driver
        else:
            if choice_se is not None and p is target_lp and sp is source_lp:
                atc_se = choice_se  # the level is the classes themselves: the bootstrap the choice ran, on the same rows
            else:
                atc_se = atc_bootstrap_se(sp, s_lab, pk) if "atc" in estimator and len(sp) >= 2 and len(pk) else None
            se = estimate_standard_error(estimator, driver, n_target=int(known.sum()), source_correct=sp.argmax(1) == s_lab, atc_se=atc_se)
            # the per-item estimates are set by the accuracy's lower bound, z standard errors (sampling and bias) down
            bound = float(np.clip(driver - z * np.hypot(se, estimate_error), 0.0, 1.0)) if np.isfinite(driver) and threshold is None else driver
        if np.isfinite(driver) and len(pk):
            # the hold-out's reliability curve gives the shape where it has enough rows and errors
            reliability = (source_reliability(anchor_lp, anchor_lab, min_rows=MIN_SOURCE_ROWS, min_errors=MIN_SOURCE_ERRORS)
                           if len(anchor_lp) else None)
            correctness[known] = (match_accuracy_reliable(pk, bound, reliability) if reliability is not None
                                  else match_accuracy(pk, bound).max(1))
            ratios = _class_ratios(class_evidence, class_prior, len(names), anchor_lp, anchor_lab, reliability, pred[known], correctness[known],
                                   None if op is None else op[known].argmax(1))
            if ratios is not None:
                correctness[known] = apply_class_ratios(correctness[known], pred[known], ratios)
            if known_probability is not None:
                correctness[known] *= np.asarray(known_probability, np.float64)[known]
        else:
            ratios = None
        # with per-class ratios (or known-class probabilities) the items are ranked by their estimated correctness
        # (within a class that is their confidence's order), so the one bar below is a confidence threshold per class
        weighed = ratios is not None or (known_probability is not None and np.isfinite(driver))
        key = conf_log if not weighed else _rank(correctness, conf_log)
        eligible = known.copy()
        if op is not None and require_agreement and threshold is None:
            eligible &= pred == op.argmax(1)
        info.append({"level": level, "names": names, "pred": pred, "conf_log": conf_log, "conf": conf, "correctness": correctness,
                     "key": key, "eligible": eligible, "estimates": estimates, "driver": driver, "se": se, "atc_se": atc_se,
                     "bound": bound, "ratios": weighed, "cal_right": cal_right, "cal_rows": cal_rows,
                     "k_cal": k_cal if len(cal_items) else 0, "n_cal": n_cal if len(cal_items) else 0})
        del p, sp, op, pk
    # the second pass reads ``info``: the target's (N, C) log-probabilities are let go of here (with the caller's, see
    # prediction.stage.publish_task, 0.21 GiB at a 200,000-product target of 134 classes, held through the allocation)
    has_other = other_probs is not None
    del target_probs, target_lp, other_probs, other_lp
    # one joint choice of every item's level (Lagrangian, information-gain rewards) where broader levels exist and the
    # label-free estimate drives the rule; else each level's bar in turn, finest first
    allocate = (specificity is not None and pool and threshold is None and not use_cal and not no_anchor and tax.depth > 0)
    allocation = (_allocate_levels(info, tax, min_precision, specificity, z=z, min_items=min_items) if allocate else None)
    for lv in info:
        level, names, pred, conf_log, conf = lv["level"], lv["names"], lv["pred"], lv["conf_log"], lv["conf"]
        correctness, key, estimates, driver, se, atc_se, bound = (lv[k] for k in ("correctness", "key", "estimates", "driver", "se",
                                                                                  "atc_se", "bound"))
        cal_right, cal_rows, k_cal, n_cal = lv["cal_right"], lv["cal_rows"], lv["k_cal"], lv["n_cal"]
        remaining = (published_level < 0) & lv["eligible"]
        if allocation is not None:
            new = remaining & (allocation.level == level)
            t = float(conf_log[new].min()) if new.any() else NEVER
        elif threshold is not None:
            t = float(np.log(threshold)) if threshold > 0 else -np.inf
            new = remaining & (conf_log >= t)
        else:
            if use_cal:  # the labelled target rows decide: the lowest bar their bound supports, tested in sequence
                bar = _calibration_bar(key, remaining, cal_items, cal_right, tuple(cal_done) if pool else (0, 0), min_precision, confidence)
            else:
                bar = threshold_for_precision(key[remaining], correctness[remaining], min_precision, min_items=min_items, z=z,
                                              already=_published_so_far(done, pool))
            new = remaining & (key >= bar) if not no_anchor else np.zeros(n, bool)
            t = float(conf_log[new].min()) if new.any() else NEVER  # the lowest confidence published
        done.append(np.clip(correctness[new], 0.0, 1.0))
        cal_record = None
        if len(cal_items):
            published_cal = new[cal_items]
            cal_done[0] += int(cal_right[published_cal].sum())
            cal_done[1] += int(published_cal.sum())
            cal_record = {"n_rows": n_cal, "n_right": k_cal, "accuracy": round(k_cal / n_cal, 6) if n_cal else None,
                          "accuracy_bound": round(precision_lower_bound(k_cal, n_cal, confidence), 6),
                          "n_published": int(published_cal.sum()), "n_published_right": int(cal_right[published_cal].sum()),
                          # the label-free estimates against the calibration rows' accuracy (the rows are the queue's choice)
                          "estimate_minus_calibration": {k: round(v - k_cal / n_cal, 6) for k, v in estimates.items()
                                                         if k != "calibration" and n_cal and np.isfinite(v)}}
        # what `prodkg predict` replays on new rows: per concept, a confidence bar above which this run published
        # every item (conservative: ranked by estimated correctness, the run may also publish a few items below it)
        # (a joint allocation is not a confidence bar per level either: it always records the per-concept bars)
        prefix = _confidence_prefix(new, remaining, pred, conf_log) if lv["ratios"] or allocation is not None else None
        class_thresholds = ({names[k]: float(np.exp(conf_log[prefix & (pred == k)].min())) for k in np.unique(pred[prefix])}
                            if prefix is not None else None)
        values = [names[k] for k in pred]
        level_values.append(values)
        for i in np.flatnonzero(new):
            published[i], published_level[i] = values[i], level
        # every item's row at this level, as columns (a dict per row held 0.2 GiB for a 200,000-product target)
        rows.append(level_rows(n, level, names, pred, conf, correctness, new))
        levels.append({"level": level, "n_concepts": len(names), "threshold": None if t == NEVER else float(np.exp(t)),
                       "threshold_log": None if t == NEVER else float(t),
                       "estimates": {k: round(v, 6) for k, v in estimates.items()}, "estimator": estimator,
                       "estimated_accuracy": round(float(driver), 6) if np.isfinite(driver) else None,
                       "estimate_se": round(se, 6),
                       "atc_bootstrap_se": round(float(atc_se), 6) if atc_se is not None and np.isfinite(atc_se) else None,
                       "accuracy_bound": round(float(bound), 6) if np.isfinite(bound) else None,
                       "class_thresholds": class_thresholds,
                       "n_published": int(new.sum()),
                       "estimated_precision": round(float(correctness[new].mean()), 6) if new.any() else None,
                       "calibration": cal_record})
    level_values.reverse()  # index by level, root first
    level_conf_log = [lv["conf_log"] for lv in reversed(info)]
    if threshold is not None:
        rule = {"rule": "threshold", "threshold": float(threshold)}
    else:
        rule = {"rule": "min_precision", "min_precision": float(min_precision), "z": float(z), "estimate_error": float(estimate_error),
                "class_evidence": class_evidence, "pool": bool(pool),
                "backoff": "allocation" if allocation is not None else "finest_first"}
        if allocation is not None:
            rule["allocation"] = {"specificity": float(specificity), "multiplier": round(allocation.lam, 6) if np.isfinite(allocation.lam) else None,
                                  "reward": round(allocation.reward, 6)}
    if choice_se is not None:  # why auto chose ATC or agreement
        rule["atc_bootstrap_se"] = round(float(choice_se), 6)
    rule["require_agreement"] = bool(has_other and require_agreement and threshold is None)
    rule["require_third"] = third_filter
    if len(cal_items):
        rule["calibration"] = {"n_rows": len(cal_items), "bound": "clopper-pearson", "confidence": round(confidence, 6),
                               "n_published": cal_done[1], "n_published_right": cal_done[0],
                               "precision_bound": round(precision_lower_bound(cal_done[0], cal_done[1], confidence), 6)}
    if no_anchor and len(source_labels) == 0:
        rule["abstained"] = ("no labelled source row was held out and no reviewed target product calibrates the rule: no estimate of "
                             "target accuracy can be checked, nothing is published")
    elif no_anchor:
        rule["abstained"] = (f"{len(source_labels)} labelled source row(s) held out (ATC needs {MIN_SOURCE_ROWS}), no second head and no "
                             "reviewed target product: no estimate of target accuracy, nothing is published (a fixed --threshold "
                             "publishes on the source-calibrated confidence)")
    frame = prediction_rows(rows)
    return Decision(predictions=frame, published=published, published_level=published_level, unknown=unknown, levels=levels,
                    rule=rule, n_levels=tax.n_levels, level_values=level_values,
                    level_conf_log=level_conf_log)


def level_rows(n: int, level: int, names: Sequence[str], pred: np.ndarray, conf: np.ndarray, correctness: np.ndarray | None,
               new: np.ndarray) -> dict[str, np.ndarray]:
    """One level's rows for :func:`prediction_rows`: each of the ``n`` items' concept there, as columns."""
    return {"item": np.arange(n), "level": np.full(n, level), "value": np.asarray(names, dtype=object)[np.asarray(pred, np.int64)],
            "confidence": np.asarray(conf, np.float64).copy(),
            "correctness": np.full(n, np.nan) if correctness is None else np.asarray(correctness, np.float64).copy(),
            "published": np.asarray(new, bool).copy()}


def prediction_rows(levels: list[dict[str, np.ndarray]]) -> pd.DataFrame:
    """Every level's rows, finest level first and items in order, a concept one item has at several levels (a class
    that is its own broader concept) as one row, at its finest level, published if any of its levels published it."""
    columns = ["item", "level", "value", "confidence", "correctness", "published"]
    if not sum(len(lv["item"]) for lv in levels):
        return pd.DataFrame([], columns=columns)
    frame = pd.DataFrame({c: np.concatenate([lv[c] for lv in levels]) for c in columns})
    again = frame.duplicated(["item", "value"], keep="first")
    if again.any():
        frame["published"] = frame.groupby(["item", "value"], sort=False)["published"].transform("any")
        frame = frame[~again.to_numpy()].reset_index(drop=True)
    return frame


def _class_ratios(evidence: str, prior: float, n_concepts: int, source_lp: np.ndarray, source_labels: np.ndarray, reliability,
                  predicted: np.ndarray, correctness: np.ndarray, other_predicted: np.ndarray | None) -> np.ndarray | None:
    """Per-concept error-rate ratios from the chosen evidence (None: no per-class adjustment).

    * ``source``: the held-out source rows, each expected wrong with 1 - its estimated correctness (the
      reliability curve, or the confidence without one) against whether it was wrong;
    * ``agreement``: the target items, their disagreement with the second head against their estimated chance of
      being wrong, scaled to the same total.
    """
    if evidence == "source" and len(source_lp):
        s_pred = source_lp.argmax(1)
        s_conf = source_lp.max(1)
        expected = 1.0 - (reliability(s_conf) if reliability is not None else np.exp(s_conf))
        return class_error_ratios(s_pred, s_pred != source_labels, expected, n_concepts, prior=prior)
    if evidence == "agreement" and other_predicted is not None and len(predicted):
        wrong = 1.0 - correctness
        disagree = (predicted != other_predicted).astype(float)
        if wrong.sum() <= 0 or disagree.sum() <= 0:
            return None
        return class_error_ratios(predicted, disagree, wrong * disagree.sum() / wrong.sum(), n_concepts, prior=prior)
    return None


@dataclass
class Allocation:
    """Each item's published level from :func:`_allocate_levels` (``level``: -1 for none), the multiplier it
    settled on and the information published (the rewards' sum)."""

    level: np.ndarray
    lam: float
    reward: float


def information_share(tax: TaxonomyLevels, level: int, concepts: np.ndarray) -> np.ndarray:
    """The information of a fact naming each of ``concepts`` (indices of ``level``'s concepts), as a share of a finest
    class's: ``1 - log(classes under the concept) / log(classes)`` (1 for a class, 0 for a concept over all of them)."""
    member, _ = tax.membership(level)
    under = np.asarray(member, dtype=np.float64).sum(0)[np.asarray(concepts)]
    n_classes = len(tax.classes)
    return 1.0 - np.log(under) / np.log(n_classes) if n_classes > 1 else np.ones(len(under))


def _allocate_levels(info: list[dict], tax: TaxonomyLevels, min_precision: float, specificity: float, *, z: float,
                     min_items: int) -> Allocation:
    """Every item's level at once: the published set of most reward whose estimated precision, less ``z`` standard
    errors of its count, reaches ``min_precision``.

    A fact at a level is worth ``1 + specificity * information``, its information the share of a finest class's
    (``log C - log(classes under the concept)``, over ``log C``): 1 for publishing a fact at all, more for a more
    specific one. The constraint is relaxed with a multiplier ``lam`` (the hedging of Deng et al., "Hedging your
    bets", CVPR 2012, with precision over what is published in place of accuracy over every item): each item takes
    the level where ``reward + lam * (correctness - min_precision)`` is largest (ties to the finer level), the items
    are ranked by that value (equal values, which the stepwise estimates make common, by confidence), and the most of
    them whose estimated precision reaches the target are published. A larger ``lam`` leans towards the levels more
    likely right; of a grid of multipliers the one that publishes the most reward is kept. With ``specificity`` 0
    this publishes the most items the target allows, each at its likeliest level.

    Finest level first, each level its own bar in turn, the finer facts took the precision the broader ones needed
    (instacart: 37.0 % of the new feed at the aisle and 17.4 % more at the department, while every product judged at
    the department would have covered 63 %).
    """
    n = len(info[0]["pred"])
    score_c = np.stack([np.clip(lv["correctness"], 0.0, 1.0) for lv in info])  # (levels, N), finest first
    eligible = np.stack([lv["eligible"] for lv in info])
    reward = np.stack([1.0 + specificity * information_share(tax, lv["level"], lv["pred"]) for lv in info])
    conf_log = np.stack([lv["conf_log"] for lv in info])
    level_of = np.array([lv["level"] for lv in info])
    cols = np.arange(n)

    def pick(lam: float) -> tuple[np.ndarray, float]:
        value = np.where(eligible, reward + lam * (score_c - min_precision), -np.inf)
        best = value.argmax(0)  # the first (finest) of equal values
        v = value[best, cols]
        idx = np.flatnonzero(np.isfinite(v))
        # best first; equal values (estimated correctness comes in steps) by confidence at the chosen level
        order = idx[np.lexsort((-conf_log[best[idx], idx], -v[idx]))]
        q = score_c[best[order], order]
        count = np.arange(1, len(order) + 1)
        bound = estimated_precision_bound(np.cumsum(q) / count, np.cumsum(q * (1 - q)), count, z=z)
        ok = np.flatnonzero((bound >= min_precision - 1e-12) & (count >= min_items))
        levels = np.full(n, -1)
        if not len(ok):
            return levels, 0.0
        top = order[: ok[-1] + 1]  # the most items whose estimated precision, in this order, reaches the target
        levels[top] = level_of[best[top]]
        return levels, float(reward[best[top], top].sum())

    grid = np.logspace(-3, 6, 46)  # a factor of about 1.6 apart, then 31 points between the best one's neighbours
    found = [(pick(float(lam))[1], float(lam)) for lam in grid]
    reward_best, lam = max(found)
    if reward_best <= 0:
        return Allocation(np.full(n, -1), float("nan"), 0.0)
    i = int(np.searchsorted(grid, lam))
    for fine in np.linspace(grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)], 31):
        found.append((pick(float(fine))[1], float(fine)))
    reward_best, lam = max(found)
    return Allocation(pick(lam)[0], float(lam), float(reward_best))


def _calibration_bar(key: np.ndarray, remaining: np.ndarray, cal_items: np.ndarray, cal_right: np.ndarray,
                     already: tuple[int, int], min_precision: float, confidence: float) -> float:
    """The lowest bar reached by fixed-sequence testing: the calibration rows still ``remaining`` are taken by
    ``key`` from the top; each bar (a calibration row's own key) publishes the rows at or above it, with the
    ``already`` published (right, rows) of finer levels, and passes when their one-sided Clopper-Pearson lower bound
    on precision reaches ``min_precision``. The bars are tested in that order, from the first one with enough rows
    to pass at all (:func:`prediction.target_calibration.min_calibration_rows`: a count, not a label), and the
    testing stops at the first that fails (Learn then Test: Angelopoulos, Bates, Candès, Jordan and Lei, 2021).
    :data:`NEVER` when none passes.

    Taking the lowest bar that passes anywhere, as before, picks the bar where the rows happen to look best after a
    bar that failed, and the bound does not hold for a bar chosen that way.

    The test needs its first ``min_calibration_rows`` rows all right (36 for 95 %), so one error among the most
    confident calibration rows publishes nothing at that level: with 100 queue-chosen reviews on grocery in-store at 30
    epochs, one seed of three published nothing (docs/BENCHMARKS.md, "Review loop (review-loop-grocery-30)").
    """
    from prodkg.prediction.target_calibration import min_calibration_rows

    rows = remaining[cal_items]
    if not rows.any():
        return NEVER
    keys, right = key[cal_items][rows], cal_right[rows]
    order = np.argsort(-keys, kind="stable")
    keys, right = keys[order], right[order]
    last = np.flatnonzero(np.r_[keys[1:] != keys[:-1], True])  # the end of each group of tied keys
    k0, n0 = already
    need = min_calibration_rows(min_precision, confidence) if min_precision < 1.0 else len(keys) + n0 + 1
    bar = NEVER
    for j in last:
        if n0 + j + 1 < need:  # too few rows for any bound to reach the target: not yet a test
            continue
        if precision_lower_bound(k0 + int(right[:j + 1].sum()), n0 + j + 1, confidence) < min_precision - 1e-12:
            break
        bar = float(keys[j])
    return bar


def _confidence_prefix(new: np.ndarray, remaining: np.ndarray, pred: np.ndarray, conf_log: np.ndarray) -> np.ndarray:
    """Per predicted concept, the part of ``new`` that a confidence bar gives: the most confident items of the
    concept down to the first one left out. Ranked by estimated correctness (which reads the whole re-tempered
    distribution) an item may be chosen below a more confident one that is not; the bar a new row can be held to
    (`prodkg predict`) stops above the first one left out."""
    out = np.zeros_like(new)
    for k in np.unique(pred[new]):
        idx = np.flatnonzero(remaining & (pred == k))
        idx = idx[np.argsort(-conf_log[idx], kind="stable")]
        chosen = new[idx]
        stop = int(np.argmin(chosen)) if not chosen.all() else len(idx)
        keep = idx[:stop]
        # items tied in confidence with the first one left out are left out too: a bar cannot split a tie
        if stop < len(idx):
            keep = keep[conf_log[keep] > conf_log[idx[stop]]]
        out[keep] = True
    return out


def _published_so_far(done: list[np.ndarray], pool: bool) -> tuple[float, float, int]:
    """The facts finer levels published, for a precision target pooled over levels: their summed correctness, its
    summed q (1 - q), their count (all 0 when each level meets the target on its own)."""
    if not pool or not done:
        return 0.0, 0.0, 0
    q = np.concatenate(done)
    return float(q.sum()), float((q * (1 - q)).sum()), len(q)


def _rank(correctness: np.ndarray, conf_log: np.ndarray) -> np.ndarray:
    """Items' ranks (0 = least likely right) by estimated correctness, ties broken by confidence."""
    order = np.lexsort((conf_log, correctness))
    rank = np.empty(len(order), dtype=np.float64)
    rank[order] = np.arange(len(order))
    return rank


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
    truth_at = {level: tax.labels_at(list(true_labels), level) for level in range(tax.n_levels)}  # once per level, not per item
    correct_pub = np.zeros(len(true_labels), bool)
    for i, (lab, value, level) in enumerate(zip(true_labels, decision.published, decision.published_level)):
        if value is not None and lab in known_classes:
            correct_pub[i] = truth_at[int(level)][i] == value
    pub = decision.published_level >= 0
    scope = labelled
    out["precision"] = float(correct_pub[scope & pub].mean()) if (scope & pub).any() else float("nan")
    out["coverage"] = float(pub[scope].mean()) if scope.any() else float("nan")
    out["n_published"] = int((scope & pub).sum())
    by_level = []
    for level in range(tax.depth, -1, -1):
        truth = truth_at[level]
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
        if decision.level_conf_log or target_probs is not None:
            # the rule's own log-confidences, or the same from the target's log-probabilities
            conf_log = (decision.level_conf_log[level] if decision.level_conf_log
                        else tax.aggregate_log(_as_logp(target_probs), level)[0].max(1))
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
