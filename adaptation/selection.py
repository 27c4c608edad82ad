"""Model selection without target labels: selectors (SND, DEV, entropy, IM) and the ``auto`` method that uses them."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from prodkg.adaptation.config import AUTO, AUTO_SCHEDULES, TrainConfig
from prodkg.adaptation.features import MultiModal
from prodkg.errors import ConfigError, StageError
from prodkg.registry import Registry

if TYPE_CHECKING:
    from prodkg.adaptation.model import AdaptedModel

_MAX_ROWS = 1000  # rows of each domain a selector looks at; SND is quadratic in them


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64) - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def _entropy(p: np.ndarray) -> np.ndarray:
    return -(p * np.log(p + 1e-12)).sum(axis=1)


def _sample(n: int, k: int, seed: int) -> np.ndarray:
    if n <= k:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


@dataclass
class Evidence:
    """What every selector may look at: a model's outputs on held-out source rows and on the target.

    ``val_*`` are source rows the model was not trained on (with their labels);
    ``train_embed`` are bottleneck features of (a sample of) its source training rows.
    No target label is ever part of it.
    """

    val_logits: np.ndarray
    y_val: np.ndarray
    val_embed: np.ndarray
    target_logits: np.ndarray
    target_embed: np.ndarray
    train_embed: np.ndarray

    @functools.cached_property
    def dev_rows(self) -> np.ndarray:
        """DEV's risk row by row (:func:`dev_terms` of the held-out losses and importance weights), computed once:
        the DEV selector and :func:`dev_gain` both read it, and its domain classifier is the costly part."""
        return _dev_terms_of(self)

    @classmethod
    def collect(
        cls,
        model: AdaptedModel,
        source_val: MultiModal,
        y_val: np.ndarray,
        target: MultiModal,
        source_train: MultiModal,
        seed: int = 0,
    ) -> Evidence:
        if len(target) < 1 or len(source_train) < 1:
            raise StageError(
                f"selection needs source-train and target rows; got {len(source_train)} and {len(target)}"
            )
        tgt = target.subset(_sample(len(target), _MAX_ROWS, seed))
        tr = source_train.subset(_sample(len(source_train), _MAX_ROWS, seed + 1))
        return cls(
            val_logits=model.logits(source_val),
            y_val=np.asarray(y_val, dtype=np.int64),
            val_embed=model.embed(source_val),
            target_logits=model.logits(tgt),
            target_embed=model.embed(tgt),
            train_embed=model.embed(tr),
        )


Selector = Callable[[Evidence], float]

#: Label-free selectors by name; each maps :class:`Evidence` to a score, higher meaning better.
SELECTORS: Registry[Selector] = Registry("selector")


@SELECTORS.register("source_val", aliases=("source_accuracy",))
def source_val_accuracy(ev: Evidence) -> float:
    """Accuracy on held-out source rows: blind to the shift, the baseline every selector must beat."""
    return float((ev.val_logits.argmax(1) == ev.y_val).mean())


@SELECTORS.register("entropy")
def neg_entropy(ev: Evidence) -> float:
    """Minus the mean entropy of the target predictions (confident target predictions score high)."""
    return float(-_entropy(_softmax(ev.target_logits)).mean())


@SELECTORS.register("im", aliases=("information_maximization",))
def information_maximization(ev: Evidence) -> float:
    """Mutual information between target inputs and predicted classes, ``H(mean p) - mean H(p)``
    (Gomes, Krause & Perona, NeurIPS 2010; used as a criterion by Shi & Sha, ICML 2012).

    High when predictions are individually confident yet spread over the classes, so
    a model that collapses onto one class does not score well.
    """
    p = _softmax(ev.target_logits)
    return float(_entropy(p.mean(axis=0, keepdims=True))[0] - _entropy(p).mean())


def soft_neighborhood_density(probs: np.ndarray, temperature: float = 0.05) -> float:
    """SND of Saito et al., "Tune it the right way", ICCV 2021, eq. 1-3.

    Rows of ``probs`` are L2-normalised, their cosine similarities (self excluded)
    divided by ``temperature`` go through a row-wise softmax, and the score is the
    mean entropy of those rows: high when each target product has many close
    neighbours in prediction space (dense, well-clustered predictions).

    Shape:
        probs ``(N, C)`` with ``N >= 2``; output scalar.
    """
    if probs.ndim != 2 or probs.shape[0] < 2:
        raise StageError(f"SND needs an (N, C) probability matrix with N >= 2; got shape {probs.shape}")
    f = probs / np.linalg.norm(probs, axis=1, keepdims=True).clip(min=1e-12)
    sim = f @ f.T / temperature
    np.fill_diagonal(sim, -np.inf)
    return float(_entropy(_softmax(sim)).mean())


@SELECTORS.register("snd")
def snd(ev: Evidence) -> float:
    """Soft neighbourhood density of the target predictions (:func:`soft_neighborhood_density`)."""
    return soft_neighborhood_density(_softmax(ev.target_logits))


def importance_weights(train_embed: np.ndarray, target_embed: np.ndarray, val_embed: np.ndarray) -> np.ndarray:
    """Density ratios ``p_target(x) / p_source(x)`` of the validation rows, from a logistic domain classifier.

    The classifier is fitted on source-training vs target features (balanced
    classes) and evaluated on the validation features, ``w = p(t|x) / p(s|x)``.
    Shape: ``(N_val,)``.
    """
    from sklearn.linear_model import LogisticRegression

    x = np.concatenate([train_embed, target_embed]).astype(np.float64)
    d = np.concatenate([np.zeros(len(train_embed)), np.ones(len(target_embed))])
    mu, sd = x.mean(0), x.std(0) + 1e-6
    clf = LogisticRegression(C=1.0, max_iter=300, class_weight="balanced")
    clf.fit((x - mu) / sd, d)
    p = clf.predict_proba((val_embed.astype(np.float64) - mu) / sd)[:, 1].clip(1e-4, 1 - 1e-4)
    return p / (1.0 - p)


def deep_embedded_validation(losses: np.ndarray, weights: np.ndarray) -> float:
    """Risk estimate of DEV (You et al., "Towards accurate model selection in deep unsupervised domain
    adaptation", ICML 2019, Algorithm 1): importance-weighted validation loss with a control variate.

    ``L = w * loss``; ``eta = -Cov(L, w) / Var(w)``; risk ``mean(L) + eta * mean(w) - eta``.
    Lower is better. Shape: ``(N,)`` losses and weights in, scalar out.
    """
    return float(dev_terms(losses, weights).mean())


def dev_terms(losses: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The DEV risk row by row: ``w * loss + eta * (w - 1)``, whose mean is :func:`deep_embedded_validation`.

    Two models scored on the same held-out rows can then be compared row by row (:func:`dev_gain`).
    Shape: ``(N,)`` losses and weights in, ``(N,)`` out.
    """
    if losses.shape != weights.shape or losses.ndim != 1 or losses.size < 2:
        raise StageError(f"DEV needs two equal (N,) arrays with N >= 2; got {losses.shape} and {weights.shape}")
    weighted = weights * losses
    var_w = weights.var(ddof=1)
    eta = 0.0 if var_w < 1e-12 else -np.cov(weighted, weights, ddof=1)[0, 1] / var_w
    return weighted + eta * (weights - 1.0)


def _dev_terms_of(ev: Evidence) -> np.ndarray:
    p = _softmax(ev.val_logits)
    losses = -np.log(p[np.arange(len(ev.y_val)), ev.y_val] + 1e-12)
    return dev_terms(losses, normalised_weights(importance_weights(ev.train_embed, ev.target_embed, ev.val_embed)))


def dev_gain(baseline: Evidence, other: Evidence) -> tuple[float, float]:
    """How much lower ``other``'s DEV risk is than ``baseline``'s on the same held-out rows, and the standard
    error of that difference from its row-by-row values: ``(mean(d), std(d) / sqrt(N))`` with
    ``d = terms(baseline) - terms(other)``. The gain equals the difference of the two :func:`dev` scores."""
    d = baseline.dev_rows - other.dev_rows
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d)))


#: Largest importance weight, as a multiple of the mean weight, that :func:`normalised_weights` lets through.
MAX_WEIGHT_RATIO = 20.0


def normalised_weights(weights: np.ndarray, max_ratio: float = MAX_WEIGHT_RATIO) -> np.ndarray:
    """Density ratios made to average 1 over the validation rows, with no row above ``max_ratio``.

    A density ratio ``p_t / p_s`` averages 1 under the source. Estimated ones do not: a domain
    classifier in a high-dimensional bottleneck separates source-training rows (which the model
    has fitted) from everything else, so held-out source rows look target-like and their mean
    weight can be far above 1. DEV's control variate then moves the risk by
    ``eta * (mean(w) - 1)`` with a large ``eta`` and can drive the estimate of a cross-entropy
    below zero. Self-normalising restores the constraint (the risk is then a weighted mean of
    non-negative losses), and clipping (then normalising again) bounds the weight of any one row.
    Shape: ``(N,)`` in and out.
    """
    w = np.asarray(weights, dtype=np.float64).clip(min=0.0)
    if w.size == 0 or not np.isfinite(w).all() or w.sum() <= 0:
        return np.ones_like(w)
    for _ in range(50):  # clipping lowers the mean, normalising lifts the rest: repeat until both hold
        w = np.minimum(w / w.mean(), max_ratio)
        if abs(w.mean() - 1.0) < 1e-9:
            break
    return w / w.mean()


@SELECTORS.register("dev", aliases=("deep_embedded_validation",))
def dev(ev: Evidence) -> float:
    """Minus the DEV risk (:func:`deep_embedded_validation`) of the model's cross-entropy on held-out source rows,
    with the importance weights self-normalised and clipped (:func:`normalised_weights`), so it is never above 0."""
    return -float(ev.dev_rows.mean())


def rank_scores(scores: Sequence[float]) -> np.ndarray:
    """Ranks of ``scores`` (0 = worst), ties averaged."""
    from scipy.stats import rankdata

    return rankdata(np.asarray(scores, dtype=np.float64)) - 1.0


# --- the "auto" method -------------------------------------------------------------------

#: Default candidate grid of ``method="auto"``: (method, overrides of TrainConfig fields).
#: Source-only is always a candidate, so the selection can fall back to it when adaptation hurts.
#: Besides the method, the grid searches the adaptation trade-off (0.3 and 1.0) of the adversarial
#: methods (DANN, CDAN) and of RTN, and the learning rate (1e-3 and 3e-3) of RTN; the discrepancy
#: methods keep one trade-off each (CORAL at 0.3: at 1.0 it fell below source-only on
#: office-caltech-10, see docs/BENCHMARKS.md). Ten candidates: under the ``full`` schedule each is a full training run,
#: under ``halving`` (the default) they share about 2.3 runs of training (:func:`auto_train`).
#: Fields a candidate does not override (epochs, and lr for most) come from the caller's config.
DEFAULT_CANDIDATES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("source_only", {}),
    ("dann", {"tradeoff": 0.3}),
    ("dann", {"tradeoff": 1.0}),
    ("cdan", {"tradeoff": 0.3}),
    ("cdan", {"tradeoff": 1.0}),
    ("dan", {"tradeoff": 1.0}),
    ("coral", {"tradeoff": 0.3}),
    ("rtn", {"tradeoff": 0.3}),
    ("rtn", {"tradeoff": 1.0}),
    ("rtn", {"tradeoff": 1.0, "lr": 3e-3}),
)

#: Grid for targets that may hold only some of the source classes (a partial catalog): the default grid plus PADA.
PARTIAL_CANDIDATES: tuple[tuple[str, dict[str, Any]], ...] = (*DEFAULT_CANDIDATES, ("pada", {"tradeoff": 1.0}))

#: How many of the best-scored candidates ``method="auto"`` averages (1: the winner alone).
DEFAULT_ENSEMBLE_TOP = 1

#: Whether ``method="auto"`` refines the chosen model's target predictions by class centroids.
DEFAULT_REFINE = True
#: Refinement that relabels more than this share of the target is discarded: the target's clusters then
#: do not follow its classes, and the chosen model's own predictions are kept (:func:`refinement_verdict`).
MAX_REFINE_CHANGE = 0.15

#: Selectors that score held-out labelled source rows, and the one used instead when none can be held out.
NEEDS_SOURCE_VAL = frozenset({"dev", "deep_embedded_validation", "source_val", "source_accuracy"})
TARGET_ONLY_FALLBACK = "snd"

#: Selector used by ``method="auto"`` unless another is asked for; see docs/BENCHMARKS.md for the evidence.
DEFAULT_SELECTOR = "dev"

#: Label-free signals that must all say an adapted candidate beats source-only before ``auto`` adopts it
#: (:func:`safe_choice`): its DEV risk is lower, its target predictions are at least as dense (SND), and they
#: agree at least as often with the candidates' majority vote (:func:`consensus_agreement`). On office-caltech-10
#: (12 tasks, docs/BENCHMARKS.md) the three together, with refinement, gave mean 97.1 and worst task -0.6 against
#: source-only; DEV and SND alone 97.1 and -1.3.
SAFETY_SIGNALS = ("dev", "snd", "consensus")
#: How many standard errors (of the row-by-row difference, :func:`dev_gain`) an adapted candidate's DEV risk must
#: lie below source-only's for the DEV signal to confirm it (:func:`safe_choice`).
DEV_MARGIN_SE = 0.0


def consensus_agreement(predictions: Sequence[np.ndarray]) -> np.ndarray:
    """Share of target rows on which each candidate's class is the majority vote of all candidates.

    An agreement-based estimate of accuracy (Jiang et al., "Assessing generalization of SGD via
    disagreement", ICLR 2022; Platanios et al., "Estimating accuracy from unlabeled data", UAI 2014):
    when the candidates err in different ways, the vote is right more often than any one of them,
    and a candidate that agrees with it more is more likely right. Ties go to the lowest class index.

    Shape: ``K`` arrays of ``(N,)`` class indices in, ``(K,)`` agreements in ``[0, 1]`` out.
    """
    preds = np.stack([np.asarray(p, dtype=np.int64) for p in predictions])
    return (preds == majority_vote(preds)[None, :]).mean(1)


def majority_vote(predictions: Sequence[np.ndarray]) -> np.ndarray:
    """Most frequent class per row over ``K`` prediction arrays, ties to the lowest index. Shape: ``(N,)``."""
    preds = np.stack([np.asarray(p, dtype=np.int64) for p in predictions])
    if preds.ndim != 2 or preds.shape[1] == 0 or preds.min() < 0:
        raise StageError(f"a majority vote needs K equal non-empty (N,) arrays of class indices; got shape {preds.shape}")
    votes = np.zeros((preds.shape[1], int(preds.max()) + 1), dtype=np.int64)
    for p in preds:
        votes[np.arange(preds.shape[1]), p] += 1
    return votes.argmax(1)


def safe_choice(
    methods: Sequence[str],
    scores: Sequence[dict[str, float]],
    agreement: np.ndarray,
    selector: str,
    signals: Sequence[str] = SAFETY_SIGNALS,
    scan: bool = False,
    dev_gains: Sequence[tuple[float, float] | None] | None = None,
    dev_margin: float | None = None,
) -> tuple[int, dict[str, Any]]:
    """Index of the candidate ``auto`` adopts: the selector's best, unless the safety signals overrule it.

    Candidates are taken in the order of ``selector``'s scores. Source-only is adopted when it
    comes first. An adapted candidate is adopted only when every signal in ``signals`` says it
    beats source-only: ``dev`` (lower DEV risk), ``snd`` (denser target predictions), ``im``
    (more mutual information), ``consensus`` (agrees with the candidates' majority vote at least
    as often, :func:`consensus_agreement`). A signal that could not be scored (DEV where no source
    row could be held out) confirms nothing and counts against the candidate: on grocery-store-dataset
    with one catalog product per class, SND and consensus alone adopted RTN at 6.0% against
    source-only's 26.4% (seed 1 of 3, docs/BENCHMARKS.md "shelf-rollup"). Otherwise the next
    candidate is tried when ``scan`` is true, and source-only is adopted when it is false.

    ``dev_gains`` (per candidate, against source-only: :func:`dev_gain`'s ``(gain, standard error)``, None for
    source-only) make the DEV signal ask for a gain above ``dev_margin`` (default :data:`DEV_MARGIN_SE`) standard
    errors instead of any gain.

    Returns ``(index, record)``, the record naming every signal's verdict for the selector's best candidate
    and, under ``missing``, the signals that could not be scored.
    """
    margin = DEV_MARGIN_SE if dev_margin is None else dev_margin
    so = next(i for i, m in enumerate(methods) if m == "source_only")
    order = sorted(range(len(scores)), key=lambda i: -scores[i][selector])
    missing = sorted(n for n in signals if n != "consensus" and any(n not in sc for sc in scores))

    def record(adopted: str, overruled: bool, checks: dict[str, bool]) -> dict[str, Any]:
        return {"adopted": adopted, "overruled": overruled, "checks": checks, "missing": missing}

    checks: dict[str, bool] = {}
    for i in order:
        if i == so:
            return so, record("source_only", bool(checks), checks)
        verdict: dict[str, bool] = {}
        for name in signals:
            if name == "consensus":
                verdict[name] = bool(agreement[i] >= agreement[so])
            elif name == "dev" and dev_gains is not None and dev_gains[i] is not None:
                gain, se = dev_gains[i]
                verdict[name] = bool(gain > margin * se and gain > 0)
            elif name in scores[i] and name in scores[so]:
                better = scores[i][name] > scores[so][name] if name == "dev" else scores[i][name] >= scores[so][name]
                verdict[name] = bool(better)
            else:
                verdict[name] = False
        if not checks:
            checks = verdict
        if all(verdict.values()):
            return i, record(methods[i], i != order[0], verdict)
        if not scan:
            return so, record("source_only", True, checks)
    return so, record("source_only", True, checks)


def schedule_rungs(schedule: str | Sequence[float]) -> tuple[float, ...]:
    """The rungs of a budget schedule of ``auto``: a name in :data:`~adaptation.config.AUTO_SCHEDULES`, or
    shares of the full training, increasing, in ``(0, 1]`` and ending in 1."""
    if isinstance(schedule, str):
        if schedule not in AUTO_SCHEDULES:
            raise ConfigError(f"unknown auto schedule {schedule!r}; valid: {', '.join(AUTO_SCHEDULES)}")
        return AUTO_SCHEDULES[schedule]
    try:
        rungs = tuple(float(x) for x in schedule)
    except (TypeError, ValueError):
        raise ConfigError(f"an auto schedule is a name or a sequence of shares; got {schedule!r}") from None
    if (not rungs or rungs[-1] != 1.0 or any(not 0 < x <= 1 for x in rungs)
            or any(b <= a for a, b in itertools.pairwise(rungs))):
        raise ConfigError(f"auto schedule rungs must increase within (0, 1] and end in 1; got {list(schedule)}")
    return rungs


def schedule_label(schedule: str | Sequence[float]) -> str:
    """A schedule's name, or its rungs written out (``1/9,1/3,1`` style decimals) when it has none."""
    return schedule if isinstance(schedule, str) else ",".join(f"{x:.3g}" for x in schedule_rungs(schedule))


def rung_keep(n: int, share: float, next_share: float) -> int:
    """How many of ``n`` adapted candidates scored at ``share`` of their training go on to ``next_share``:
    ``ceil(n * share / next_share)``, at least 1, so that each rung costs about as much training as the first
    (9 candidates at 1/9, 1/3, 1: 9, then 3, then 1)."""
    return max(1, math.ceil(n * share / next_share - 1e-9))


#: Fewest voters a consensus vote needs; with fewer, every candidate votes.
MIN_VOTERS = 3


def consensus_voters(trained_shares: Sequence[float], rungs: Sequence[float]) -> list[int]:
    """Candidates whose target predictions make up the consensus vote of :func:`safe_choice`: those that trained
    at least to the schedule's last pruning rung (``rungs[-2]``; every candidate under a one-rung schedule), or
    every candidate when that leaves fewer than :data:`MIN_VOTERS`.

    A candidate stopped after 1/9 of its steps has barely left its start (low adaptation weight, high learning
    rate), so its vote echoes source-only: on office-caltech-10 (36 runs, docs/BENCHMARKS.md "auto-cost") a vote
    of every candidate as far as it trained kept source-only in 29 runs and reached 96.5, one without those
    early-stopped ones 96.9 (the full grid: 97.0). Pruned candidates still vote with the network they stopped with.
    """
    floor = rungs[-2] if len(rungs) > 1 else 1.0
    voters = [i for i, share in enumerate(trained_shares) if share >= floor - 1e-9]
    return voters if len(voters) >= MIN_VOTERS else list(range(len(trained_shares)))


def candidate_label(method: str, overrides: dict[str, Any]) -> str:
    extra = ",".join(f"{k}={v}" for k, v in sorted(overrides.items()))
    return f"{method}({extra})" if extra else method


def searched_fields(candidates: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
    """TrainConfig fields that some candidate overrides, sorted: the hyper-parameters a grid searches."""
    return sorted({k for _, overrides in candidates for k in overrides})


def candidate_configs(config: TrainConfig, candidates: Sequence[tuple[str, dict[str, Any]]]) -> list[TrainConfig]:
    """One TrainConfig per candidate: ``config`` with the candidate's method and overrides.

    Checked before anything trains: an override must name a TrainConfig field other than
    ``method`` and hold a valid value, and no two candidates may be the same.
    """
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"method"}
    configs, seen = [], {}
    for i, candidate in enumerate(candidates):
        if not (isinstance(candidate, (tuple, list)) and len(candidate) == 2 and isinstance(candidate[1], dict)):
            raise ConfigError(f"auto candidate {i}: expected a (method, {{field: value}}) pair; got {candidate!r}")
        method, overrides = candidate
        if method == AUTO:
            raise ConfigError(f"auto candidate {i}: the method of a candidate cannot be {AUTO!r}")
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ConfigError(f"auto candidate {candidate_label(method, overrides)}: unknown TrainConfig field(s) "
                              f"{unknown}; valid: {sorted(fields)}")
        cfg = TrainConfig.from_dict({**config.to_dict(), "method": method, **overrides})  # validates the values
        label = candidate_label(method, overrides)
        if label in seen:
            raise ConfigError(f"auto candidate {label} is listed twice (positions {seen[label]} and {i})")
        seen[label] = i
        configs.append(cfg)
    return configs


def stratified_holdout(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of held-out rows: ``fraction`` of each class that has at least 3 rows (never its last 2)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(y), dtype=bool)
    for cls in np.unique(y):
        idx = np.flatnonzero(y == cls)
        if len(idx) < 3:
            continue
        k = min(max(1, round(fraction * len(idx))), len(idx) - 2)
        mask[rng.choice(idx, size=k, replace=False)] = True
    return mask


def score_candidates(
    models: Sequence[AdaptedModel],
    source_train: MultiModal,
    source_val: MultiModal,
    y_val: np.ndarray,
    target: MultiModal,
    selectors: Sequence[str],
    seed: int = 0,
    evidence_out: list[Evidence] | None = None,
) -> list[dict[str, float]]:
    """Every selector's score of every model (one dict per model); ``evidence_out`` receives each model's
    :class:`Evidence`, for comparisons between models on the same rows (:func:`dev_gain`).

    BLAS runs on one thread meanwhile: DEV's domain classifier is small, and on a shared
    2-core machine under other load two OpenBLAS threads spinning on it were 35 times slower
    than one (2.8 s against 0.08 s per model, office-caltech-10 A->C, timed by hand 2026-11-30).
    """
    from threadpoolctl import threadpool_limits

    funcs = {name: SELECTORS.get(name) for name in selectors}
    out = []
    with threadpool_limits(limits=1, user_api="blas"):
        for model in models:
            ev = Evidence.collect(model, source_val, y_val, target, source_train, seed=seed)
            out.append({name: float(fn(ev)) for name, fn in funcs.items()})
            if evidence_out is not None:
                evidence_out.append(ev)
    return out


def auto_train(
    source: MultiModal,
    y_source: np.ndarray,
    target: MultiModal,
    n_classes: int,
    config: TrainConfig,
    *,
    selector: str = DEFAULT_SELECTOR,
    candidates: Sequence[tuple[str, dict[str, Any]]] = DEFAULT_CANDIDATES,
    val_fraction: float = 0.1,
    ensemble_top: int | None = None,
    refine: bool | None = None,
    safe: bool = True,
    schedule: str | Sequence[float] | None = None,
    progress: bool = False,
    candidates_out: list | None = None,
    groups: np.ndarray | None = None,
) -> AdaptedModel:
    """Train the candidates on most of the source, score them with ``selector`` (no target labels), keep the best.

    A stratified ``val_fraction`` of the source is held out for the selectors
    that need labelled rows the model has not seen (DEV, source accuracy); every
    candidate trains on the rest with ``config``'s other settings (fusion, seed,
    epochs, ...) and its own method and overrides.

    How far each candidate trains is the budget ``schedule`` (successive halving,
    Jamieson & Talwalkar, AISTATS 2016; Li et al., "Hyperband", JMLR 2018): source-only,
    the fallback, trains in full; the adapted candidates train to the schedule's first
    rung (a share of their steps), are scored with ``selector``, and the best
    :func:`rung_keep` of them go on to the next rung, until the last trains in full.
    A paused candidate goes on exactly where it stopped (:class:`~adaptation.loop.MethodRun`),
    so a candidate that reaches the end is the model the ``full`` schedule trains.
    Only candidates trained in full compete for adoption (and for ``safe_choice``);
    the consensus vote counts the candidates that trained at least to the last pruning rung
    (:func:`consensus_voters`), a pruned one as it stood when it stopped. The winner's
    :meth:`~adaptation.model.AdaptedModel.describe` carries a ``selection``
    record: the selector; the chosen candidate, its method and the values of the
    hyper-parameters the grid searched (``chosen_method``, ``chosen_hyperparameters``);
    what was searched (``searched``); every candidate with its hyper-parameters,
    full config, scores, training time and epochs trained; the schedule; and why the winner won.

    Args:
        source, y_source, target, n_classes: as for :func:`adaptation.train`.
        config: base settings; its ``method`` is ignored.
        selector: name in :data:`SELECTORS`.
        candidates: ``(method, {field: value})`` pairs, the values overriding ``config``'s;
            must include ``source_only``. Default :data:`DEFAULT_CANDIDATES`.
        val_fraction: share of each source class held out for selection.
        ensemble_top: average the class probabilities of the ``k`` best-scored candidates
            (:class:`~adaptation.model.EnsembleNetwork`); 1 keeps the winner alone. Default
            :data:`DEFAULT_ENSEMBLE_TOP`.
        refine: replace the chosen model's logits by target class centroids
            (:func:`adaptation.refine.centroid_refine`), unless that changes more than
            :data:`MAX_REFINE_CHANGE` of its target predictions (:func:`refinement_verdict`).
            Default :data:`DEFAULT_REFINE`.
        safe: adopt an adapted candidate only when every label-free signal in :data:`SAFETY_SIGNALS`
            says it beats source-only (:func:`safe_choice`), else source-only; False keeps the
            selector's best whatever the other signals say.
        schedule: a name in :data:`~adaptation.config.AUTO_SCHEDULES` (``halving``, ``full``) or the
            rungs themselves, increasing shares in ``(0, 1]`` ending in 1. Default ``config.auto_schedule``.
        candidates_out: a list that receives every candidate, in grid order, as far as it trained (for benchmarks).
        groups: ``(N_s,)`` product of each source row, when rows include augmented views of products:
            whole products are held out (:func:`adaptation.holdout.grouped_holdout`).
    """
    from prodkg.adaptation.loop import MethodRun

    SELECTORS.get(selector)
    if not candidates:
        raise ConfigError("auto selection needs at least one candidate; got none")
    configs = candidate_configs(config, candidates)
    if not any(c.method == "source_only" for c in configs):
        raise ConfigError("auto selection must include source_only among its candidates, as the fallback")
    searched = searched_fields(candidates)
    y_source = np.asarray(y_source)
    if y_source.shape != (len(source),):
        raise StageError(f"y_source must have shape ({len(source)},); got {y_source.shape}")
    if groups is None:
        held = stratified_holdout(y_source, val_fraction, config.seed)
    else:
        from prodkg.adaptation.holdout import grouped_holdout

        held = grouped_holdout(y_source, groups, val_fraction, config.seed)
    fallback = None
    if held.sum() < 2:
        # too few products per class to hold any out: train on all of them and score on the target alone
        held[:] = False
        if selector in NEEDS_SOURCE_VAL:
            fallback = (f"selector {selector} needs held-out source rows, but no source class has 3 or more "
                        f"products; used {TARGET_ONLY_FALLBACK} instead")
            selector = TARGET_ONLY_FALLBACK
    tr, va = np.flatnonzero(~held), np.flatnonzero(held)
    source_train, source_val = source.subset(tr), source.subset(va)
    k = DEFAULT_ENSEMBLE_TOP if ensemble_top is None else ensemble_top
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"ensemble_top must be a positive integer; got {k!r}")
    schedule_name = config.auto_schedule if schedule is None else schedule
    rungs = schedule_rungs(schedule_name)
    labels = [candidate_label(m, o) for m, o in candidates]
    runs = [MethodRun(source_train, y_source[tr], target, n_classes, cfg, progress=progress) for cfg in configs]
    seconds = [0.0] * len(runs)

    def advance(i: int, share: float) -> None:
        started = time.perf_counter()
        runs[i].advance(share)
        seconds[i] += time.perf_counter() - started

    fallbacks = [i for i, c in enumerate(configs) if c.method == "source_only"]
    for i in fallbacks:  # the fallback is never pruned: safe_choice compares the adopted candidate with it
        advance(i, 1.0)
    alive = [i for i in range(len(runs)) if i not in fallbacks]
    stopped: dict[int, dict[str, Any]] = {}  # pruned candidate -> the rung it stopped at and its score there
    pruning_seconds = 0.0
    for r, share in enumerate(rungs):
        for i in alive:
            advance(i, share)
        if r == len(rungs) - 1 or len(alive) <= 1:
            break
        started = time.perf_counter()
        rung_scores = score_candidates([runs[i].model() for i in alive], source_train, source_val, y_source[va],
                                       target, [selector], seed=config.seed)
        ranked = sorted(range(len(alive)), key=lambda j: -rung_scores[j][selector])  # ties: grid order
        keep = rung_keep(len(alive), share, rungs[r + 1])
        for j in ranked[keep:]:
            stopped[alive[j]] = {"rung": r + 1, "share": share, "scores": rung_scores[j]}
            runs[alive[j]].close()
        alive = sorted(alive[j] for j in ranked[:keep])
        pruning_seconds += time.perf_counter() - started
    for i in alive:  # a schedule whose candidates ran out before its last rung: the survivor still trains in full
        advance(i, 1.0)
    finalists = sorted([*fallbacks, *alive])
    models = [run.model() for run in runs]
    for run in runs:
        run.close()
    if candidates_out is not None:
        candidates_out.extend(models)
    signals = [n for n in (SAFETY_SIGNALS if safe else ()) if n != "consensus"]  # consensus: not a selector
    wanted = {selector, *signals, "source_val"} if len(va) >= 2 else {selector, *signals}
    names = sorted(n for n in wanted if len(va) >= 2 or n not in NEEDS_SOURCE_VAL)
    final_evidence: list[Evidence] = []
    final_scores = score_candidates([models[i] for i in finalists], source_train, source_val, y_source[va], target,
                                    names, seed=config.seed, evidence_out=final_evidence)
    scores: list[dict[str, float]] = [stopped[i]["scores"] if i in stopped else {} for i in range(len(models))]
    for i, sc in zip(finalists, final_scores, strict=True):
        scores[i] = sc
    # only candidates trained in full compete; a pruned one's score was taken earlier in its training
    order = sorted(finalists, key=lambda i: -scores[i][selector])
    voters = consensus_voters([run.fraction_done for run in runs], rungs)
    target_preds = [models[i].predict(target) for i in voters]
    agreement = np.zeros(len(models))
    agreement[voters] = consensus_agreement(target_preds)
    safety = None
    if safe:
        gains = None
        if "dev" in signals and len(va) >= 2:  # DEV's gain over source-only, row by row, with its standard error
            # the final scoring computed each finalist's DEV rows (Evidence.dev_rows) already
            evidence = dict(zip(finalists, final_evidence, strict=True))
            so_i = next(i for i in finalists if configs[i].method == "source_only")
            gains = [None if i == so_i else dev_gain(evidence[so_i], evidence[i]) for i in finalists]
        j, safety = safe_choice([configs[i].method for i in finalists], [scores[i] for i in finalists],
                                agreement[finalists], selector, dev_gains=gains)
        if gains is not None:
            safety["dev_gain"] = {labels[i]: {"gain": round(g[0], 6), "se": round(g[1], 6)}
                                  for i, g in zip(finalists, gains, strict=True) if g is not None}
            safety["dev_margin_se"] = DEV_MARGIN_SE
        best = finalists[j]
    else:
        best = order[0]
    if best == order[0]:
        reason = f"highest {selector} score ({scores[best][selector]:.4f}) of {len(finalists)} candidates"
        if stopped:
            reason += " trained in full"
    else:
        failed = ", ".join(n for n, ok in safety["checks"].items() if not ok)
        reason = (f"the highest {selector} score went to {labels[order[0]]}, but {failed} did not confirm that it "
                  f"beats source-only; kept {labels[best]}")
        if safety["missing"]:
            reason += f" ({', '.join(safety['missing'])} could not be scored: no held-out source rows)"
    if searched:
        reason += ", with " + ", ".join(f"{f}={getattr(configs[best], f)}" for f in searched)
    if len(order) > 1 and best == order[0]:
        j = order[1]
        reason += f"; runner-up {labels[j]} scored {scores[j][selector]:.4f}"
    top = order[: min(k, len(order))] if best == order[0] else [best]
    if len(top) > 1:
        from prodkg.adaptation.model import AdaptedModel, EnsembleNetwork

        winner = AdaptedModel(
            EnsembleNetwork([models[i].network for i in top]), configs[best], models[best].n_classes,
            models[best].dims, history=models[best].history, n_adaptation_params=models[best].n_adaptation_params,
        )
        reason += f"; probabilities averaged over the top {len(top)}: " + ", ".join(labels[i] for i in top)
    else:
        winner = models[best]
    refinement = None
    if refine if refine is not None else DEFAULT_REFINE:
        winner, refinement = _refine(winner, source_train, target, n_classes, y_source[tr])
        if refinement["kept"]:
            reason += (f"; target predictions refined by class centroids ({refinement['changed_fraction']:.1%} "
                       f"of them changed)")
        else:
            reason += f"; centroid refinement discarded: {refinement['why']}"
    if stopped:
        reason += (f"; successive halving ({schedule_label(schedule_name)}) stopped "
                   + ", ".join(f"{labels[i]} at {stopped[i]['share']:.0%}" for i in sorted(stopped))
                   + " of their training")
    if fallback:
        reason = f"{fallback}; {reason}"
    winner.selection = {
        "selector": selector,
        "chosen": labels[best],
        "chosen_method": configs[best].method,
        "chosen_hyperparameters": {f: getattr(configs[best], f) for f in searched},
        "searched": {"methods": list(dict.fromkeys(c.method for c in configs)),
                     **{f: sorted({getattr(c, f) for c in configs}) for f in searched}},
        "ensemble": [labels[i] for i in top],
        "selector_choice": labels[order[0]],
        "safety": safety,
        "refinement": refinement,
        "reason": reason,
        "n_source_train": int(len(tr)),
        "n_source_val": int(len(va)),
        "schedule": {"name": schedule_label(schedule_name), "rungs": [round(x, 6) for x in rungs],
                     "finalists": [labels[i] for i in finalists], "voters": [labels[i] for i in voters],
                     "pruning_seconds": round(pruning_seconds, 3)},
        "candidates": [
            {"candidate": labels[i], "method": configs[i].method,
             "hyperparameters": {f: getattr(configs[i], f) for f in searched}, "config": configs[i].to_dict(),
             "scores": scores[i], "consensus": round(float(agreement[i]), 4) if i in voters else None,
             "train_seconds": round(seconds[i], 3),
             "epochs_trained": round(runs[i].epochs_done, 4), "trained_share": round(runs[i].fraction_done, 6),
             "stopped_at_rung": stopped[i]["rung"] if i in stopped else None}
            for i in range(len(models))
        ],
    }
    return winner


def refinement_verdict(before: np.ndarray, after: np.ndarray) -> dict[str, Any]:
    """Whether centroid refinement of target predictions ``before`` into ``after`` is kept, and why.

    Kept when it relabels at most :data:`MAX_REFINE_CHANGE` of the target. What was measured
    (docs/BENCHMARKS.md): on office-caltech-10 images refinement changed 3-8% of the predictions
    and raised accuracy on every task; on held-out text features it changed 20-26% and lowered
    accuracy on 4 of 6 tasks. Agreement with the other candidates cannot judge it: refinement
    draws on the target's clusters, which no candidate sees, so where it helps it moves away
    from all of them (on office-caltech-10 it lowered that agreement on every task while raising
    accuracy by 1-7 points), so it is no guard here, unlike for the choice of the candidate.
    Shape: ``(N,)`` class indices each.
    """
    changed = float((np.asarray(after) != np.asarray(before)).mean())
    info: dict[str, Any] = {"changed_fraction": round(changed, 4), "kept": changed <= MAX_REFINE_CHANGE, "why": ""}
    if not info["kept"]:
        info["why"] = f"it changed {changed:.1%} of the target predictions, more than {MAX_REFINE_CHANGE:.0%}"
    return info


def _refine(
    model: AdaptedModel, source_train: MultiModal, target: MultiModal, n_classes: int, y_source_train: np.ndarray
) -> tuple[AdaptedModel, dict[str, Any]]:
    from prodkg.adaptation.model import AdaptedModel
    from prodkg.adaptation.refine import CentroidHead, centred_inputs, centroid_refine

    both = MultiModal.concat([source_train, target])
    means = {m: (both.blocks[m][both.present[m]].astype(np.float64).mean(0) if both.present[m].any()
                 else np.zeros(both.blocks[m].shape[1])) for m in both.modalities}
    probs = model.predict_proba(target)
    prior = np.bincount(y_source_train, minlength=n_classes) / max(1, len(y_source_train))
    centroids, labels = centroid_refine(centred_inputs(target, means), probs, source_prior=prior)
    info = refinement_verdict(probs.argmax(1), labels)
    if not info["kept"]:
        return model, info
    head = CentroidHead(model.network, model.dims, n_classes)
    head.set_state(means, centroids)
    head.to(model.device)
    refined = AdaptedModel(head.eval(), model.config, model.n_classes, model.dims, history=model.history,
                           n_adaptation_params=model.n_adaptation_params)
    return refined, info


def is_auto(config: TrainConfig) -> bool:
    return config.method == AUTO
