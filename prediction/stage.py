"""The adapt-and-predict stage: fit the category head and one head per attribute on source labels, predict the target."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from prodkg.contracts import PREDICTIONS
from prodkg.memory import trim_heap
from prodkg.progress import on_terminal, run_logger

__all__ = ["NO_VALUE", "PredictOutput", "PredictSettings", "cross_fitted", "predict_stage", "publication_summary", "publish_task"]

NO_VALUE = "(none)"  # the class of an attribute head for "this product has no such attribute"
LOG_ZERO = float(np.log(1e-300))  # the log-probability of a class a head cannot predict (heads.fit_task clips at 1e-300)


@dataclass(frozen=True)
class PredictSettings:
    """The slice of the run configuration the heads need."""

    method: str = "dann"
    baseline: str | None = "source_only"  # also trained on the category task, for comparison
    fusion: str = "early"
    epochs: int | None = None
    hidden: int | None = None
    lr: float | None = None
    tradeoff: float | None = None
    seed: int = 0
    progress: bool = True
    min_precision: float = 0.95  # published facts should be right this often, by the label-free estimate
    specificity: float = 2.0  # with a taxonomy: a fact is worth 1 plus this times its information (publication._allocate_levels)
    threshold: float | None = None  # or a fixed confidence bar instead
    auto_schedule: str = "halving"  # how method "auto" shares the training among its candidates
    self_training: int = 0  # rounds of class-balanced self-training of each head (not of the baseline)
    ensemble: int = 1  # heads per task from different seeds, their probabilities averaged (adaptation/ensemble.py)
    label_spreading: float = 0.0  # alpha of the spread of each head's target predictions over the target's k-NN graph (0: off)
    # reviewed target products as the rule's target calibration set (prediction/target_calibration.py): predicted
    # out of fold by heads fitted on the other folds' reviews (review_folds >= 2), or a share held out of training (0)
    review_folds: int = 5
    calibration_share: float = 0.4

    def split_reviewed(self, reviewed: dict, product_ids: dict, n_source_holdout: int = 0) -> tuple[dict, dict, dict]:
        """Reviewed target rows -> (train, calibration, record) under these settings, where the rule has no other
        anchor, that is where the labelled source rows held out of training (``n_source_holdout``) are fewer than
        ATC needs. With ``review_folds`` >= 2 every review trains and every one calibrates through its fold's head
        (:func:`cross_fitted`); with 0, ``calibration_share`` of them is held out of training.

        None calibrates when fewer than can support ``min_precision`` would, under a fixed ``threshold`` (which
        reads no estimate), or beside a source hold-out: there the source rule does better (on office-caltech-10
        about 40 queue-chosen reviews, the hard products the queue seeks, supported no bar at 95 % where the source
        hold-out's rule published 40-90 % of the products at 100 % precision).
        """
        from prodkg.prediction.publication import DEFAULT_Z, MIN_SOURCE_ROWS
        from prodkg.prediction.target_calibration import bound_confidence, cross_fit_split, min_calibration_rows, split_reviewed

        if self.review_folds == 1 or self.review_folds < 0:
            raise ValueError(f"review_folds must be 0 (hold-out) or at least 2, got {self.review_folds!r}")
        if self.threshold is not None or self.min_precision >= 1.0:
            return split_reviewed(reviewed, product_ids, share=0.0)
        if n_source_holdout >= MIN_SOURCE_ROWS:
            train, calibration, record = split_reviewed(reviewed, product_ids, share=0.0)
            record["reason"] = f"the {n_source_holdout} labelled source rows held out anchor the rule: all reviews train the head"
            return train, calibration, record
        need = min_calibration_rows(self.min_precision, bound_confidence(DEFAULT_Z))
        if self.review_folds >= 2:
            return cross_fit_split(reviewed, product_ids, folds=self.review_folds, min_rows=need)
        return split_reviewed(reviewed, product_ids, share=self.calibration_share, min_rows=need)

    def train_config(self, method: str | None = None):
        """The :class:`adaptation.TrainConfig` of ``method`` (default: the run's method) under these settings."""
        from prodkg.adaptation import TrainConfig

        overrides = {k: getattr(self, k) for k in ("epochs", "hidden", "lr", "tradeoff") if getattr(self, k) is not None}
        method = method or self.method
        if method == "auto":  # only auto's config carries it, so a named method's cached head stays valid
            overrides["auto_schedule"] = self.auto_schedule
        return TrainConfig(method=method, fusion=self.fusion, seed=self.seed, ensemble=self.ensemble, **overrides)


@dataclass
class PredictOutput:
    predictions: pd.DataFrame  # product_id, task, value, confidence, model, level, kind, published (prodkg.contracts.PREDICTIONS)
    metrics: dict[str, dict]  # task -> metrics
    baseline: dict | None  # the baseline method's metrics on the category task
    models: list[dict]  # one per fitted head: model_id, task, method, path, details
    skipped: dict[str, str]  # task -> why it was not fitted
    # for the run report: a subsample of source and target products before and after adaptation
    embedding_sample: dict | None = None


def model_id(task: str, method: str, path: Path) -> str:
    """Model identity from its saved weights, so the same weights always get the same IRI."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*.pt") if p.is_file()) if path.is_dir() else [path]:
        digest.update(file.read_bytes())
    return f"{task}/{method}/{digest.hexdigest()[:12]}"


def predict_stage(products: pd.DataFrame, features, settings: PredictSettings, source: list[str], target: list[str], attributes: list[str],
                  models_dir: Path, heads_cache: Path | None, taxonomy: list[tuple] | None = None, reviewed: dict[str, str] | None = None,
                  views=None) -> PredictOutput:
    """Fit the category head and one head per attribute with source labels; predict every target product; pick what
    is published (:func:`publish_task`: precision target or fixed threshold, back-off along ``taxonomy``, unknown products).

    ``heads_cache`` is where fitted heads are kept by the content hash of their inputs (None: always fit).
    ``reviewed`` (product id -> category) are target products a reviewer labelled: the category head
    also learns from them, and they are not counted in its target evaluation.
    ``views`` (:class:`~prodkg.extractors.stage.SourceViews`, or None): augmented views of source products, extra
    training rows of every head with their product's labels; they are held out only with their product, never
    calibrate or estimate anything, and are neither predicted nor published.
    """
    from prodkg.extractors.extract import torch_threads

    # The heads are small MLPs: on 2 cores one thread is 30x faster than two under any other
    # load, because OpenMP workers spin on tiny matmuls.
    with torch_threads(1):
        return _predict(products, features, settings, source, target, attributes, models_dir, heads_cache, taxonomy or [], reviewed or {}, views)


def _predict(products, features, settings: PredictSettings, source, target, attributes, models_dir: Path, heads_cache: Path | None,
             taxonomy: list[tuple], reviewed: dict[str, str], views=None) -> PredictOutput:
    from prodkg.prediction import fit_task
    from prodkg.prediction.reuse import features_digest, fit_or_reuse, task_key

    is_source = products["domain"].isin(source).to_numpy(bool)
    is_target = products["domain"].isin(target).to_numpy(bool)
    ids = products["product_id"].tolist()
    # the heads train on the products and their views (if any); publication, unknown scores and the report see products only
    n, of = len(products), (np.zeros(0, np.int64) if views is None else np.asarray(views.of, np.int64))
    train_features = features if not len(of) else type(features).concat([features, views.features])
    train_is_source = np.concatenate([is_source, np.ones(len(of), bool)])
    train_is_target = np.concatenate([is_target, np.zeros(len(of), bool)])
    train_ids = ids + [f"{ids[r]}#view{v}" for r, v in zip(of, [] if views is None else views.view)]
    view_of = np.concatenate([np.full(n, -1, np.int64), of]) if len(of) else None
    digest = features_digest(train_features)  # once per run, not once per head: it reads every feature
    models_dir.mkdir(parents=True, exist_ok=True)
    frames, metrics, models, skipped = [], {}, [], {}
    baseline = embedding_sample = None
    progress_log = run_logger() if settings.progress else None
    n_heads = 1 + len(attributes)
    for task in ["category", *attributes]:
        labels = _label_list(products[task])
        source_labels = [labels[i] for i in np.flatnonzero(is_source) if labels[i] is not None]
        n_labels = len(set(source_labels))
        if n_labels < 2:
            skipped[task] = f"source domain has {n_labels} distinct label(s); a head needs at least 2"
            continue
        if task != "category" and n_labels > len(source_labels) / 2:
            # an identifier or free-text column, not a label: a head would learn nothing but noise
            skipped[task] = f"looks like free text or an identifier ({n_labels} distinct values over {len(source_labels)} labelled source rows)"
            continue
        if task != "category" and any(labels[i] is None for i in np.flatnonzero(is_source)):
            # The attribute does not apply to every product (fruit has no manufacturer): the head
            # learns that as a class of its own, and predicting it writes nothing to the graph.
            labels = [NO_VALUE if labels[i] is None and is_source[i] else labels[i] for i in range(len(labels))]
        tcfg = settings.train_config()
        rows = {i: reviewed[pid] for i, pid in enumerate(ids) if is_target[i] and pid in reviewed} if task == "category" else {}
        calibration: dict[int, str] = {}
        split = None
        if rows:  # the reviews also calibrate the publication rule on target data: out of fold (default) or a share held out
            rows, calibration, split = settings.split_reviewed(rows, {i: ids[i] for i in rows},
                                                               source_holdout_size(labels, is_source, settings.seed))
        train_labels = labels + [labels[r] for r in of]
        extra = {**({"reviewed": sorted(rows.items())} if rows else {}), **({"views": views.stats["spec_id"]} if len(of) else {}),
                 **({"self_training": settings.self_training} if settings.self_training else {}),
                 **({"label_spreading": settings.label_spreading} if settings.label_spreading else {})}
        key = task_key(task, digest, train_labels, train_is_source, train_is_target, train_ids, tcfg.to_dict(), extra=extra or None)
        result, reused = fit_or_reuse(heads_cache, key,
                                      lambda: fit_task(task, train_features, train_labels, train_is_source, train_is_target, train_ids, tcfg,
                                                       progress=settings.progress and on_terminal(), reviewed=rows, view_of=view_of,
                                                       self_training=settings.self_training, label_spreading=settings.label_spreading))
        trim_heap()  # what fitting freed, before scoring and publishing add theirs
        if progress_log is not None:
            progress_log.info(f"adapt-predict: fitted the {task} head ({len(models) + 1} of {n_heads} possible)")
        if task == "category":
            embedding_sample = sample_embeddings(features, result.model, is_source, is_target, seed=settings.seed)
        path = models_dir / _safe(task)
        result.model.save(path)
        chosen = result.model.config.method  # differs from settings.method when it is "auto"
        other = None
        if task == "category" and settings.baseline and settings.baseline != settings.method:
            bcfg = settings.train_config(settings.baseline)
            other, _ = fit_or_reuse(heads_cache, task_key(task, digest, train_labels, train_is_source, train_is_target, train_ids, bcfg.to_dict(),
                                                          extra={"views": views.stats["spec_id"]} if len(of) else None),
                                    lambda: fit_task(task, train_features, train_labels, train_is_source, train_is_target, train_ids, bcfg,
                                                     progress=False, view_of=view_of))
            baseline = other.metrics
        published_by, fold_heads = result, []
        if calibration and split is not None and split.get("mode") == "cross-fit":
            fold_config = result.model.config  # the method the head ended with ("auto" chose it): the fold heads choose nothing

            def fit_fold(sub: dict[int, str]):
                fold_key = task_key(task, digest, train_labels, train_is_source, train_is_target, train_ids, fold_config.to_dict(),
                                    extra={**extra, "reviewed": sorted(sub.items())})
                return fit_or_reuse(heads_cache, fold_key,
                                    lambda: fit_task(task, train_features, train_labels, train_is_source, train_is_target, train_ids,
                                                     fold_config, reviewed=sub, view_of=view_of, self_training=settings.self_training,
                                                     label_spreading=settings.label_spreading))[0]

            if progress_log is not None:
                progress_log.info(f"adapt-predict: {settings.review_folds} fold heads predict the {len(calibration)} reviews out of fold")
            published_by, split["folds_right"], fold_heads = cross_fitted(result, calibration, ids, train_is_target, settings.review_folds,
                                                                          fit_fold)
        shutil.rmtree(path / "folds", ignore_errors=True)  # none left from another fit in this folder
        for f, head in fold_heads:  # they made the published predictions: saved inside the head's folder, so its id covers them
            head.model.save(path / "folds" / str(f))
        mid = model_id(task, chosen, path)
        # reviewed target rows were trained on or calibrated the rule: their held-out labels are not evaluated
        eval_labels = [None if i in rows or i in calibration else lab for i, lab in enumerate(labels)] if rows or calibration else labels
        prototypes = models_dir / f"{_safe(task)}.prototypes.npz" if task == "category" else None
        frame, publication = publish_task(published_by, other, settings, task, mid, eval_labels, is_source, is_target, features,
                                          taxonomy if task == "category" else [], prototypes_to=prototypes, calibration=calibration,
                                          release=True)
        if split is not None:  # how many reviews trained the head, how many calibrated the rule, and which
            publication["review_split"] = split
        # published: what the rule read is let go of (the target's log-probabilities at every class, 0.2 GiB for a
        # 200,000-product target of 133 classes; the heads' own prediction tables), the models and metrics are kept
        for held in {id(r): r for r in (result, published_by, other, *(h for _, h in fold_heads)) if r is not None}.values():
            held.evidence, held.predictions = {}, held.predictions.iloc[:0]
        frames.append(frame[frame["value"] != NO_VALUE].reset_index(drop=True))
        metrics[task] = {**result.metrics, **publication}
        entry = {"model_id": mid, "task": task, "method": chosen, "requested_method": settings.method, "path": str(path),
                 "classes": result.labels.classes, "temperature": result.temperature, "details": result.model.describe()}
        # what `prodkg predict` needs to decide publication for new rows as this run did (prediction/scoring.py):
        # the taxonomy of the back-off levels, the baseline head the agreement rule compares with, the unknown prototypes
        if task == "category":
            entry["taxonomy"] = [list(t) for t in taxonomy]
        if other is not None and other.labels.classes == result.labels.classes:
            other_path = models_dir / f"{_safe(task)}.baseline"
            other.model.save(other_path)
            entry["baseline"] = {"method": other.model.config.method, "path": str(other_path), "temperature": other.temperature}
        if prototypes is not None and prototypes.is_file():
            entry["prototypes"] = str(prototypes)
        if fold_heads:  # they made the published predictions (cross_fitted): `prodkg predict` averages them too
            entry["folds"] = [{"fold": f, "path": str(path / "folds" / str(f)), "temperature": head.temperature,
                               "classes": list(head.labels.classes)} for f, head in fold_heads]
        models.append(entry)
    predictions = pd.concat(frames, ignore_index=True) if frames else PREDICTIONS.empty()
    return PredictOutput(predictions=predictions[PREDICTIONS.columns], metrics=metrics, baseline=baseline, models=models, skipped=skipped,
                         embedding_sample=embedding_sample)


def publish_task(result, other, settings: PredictSettings, task: str, mid: str, labels: list[str | None], is_source: np.ndarray,
                 is_target: np.ndarray, features, taxonomy: list[tuple], prototypes_to: Path | None = None,
                 calibration: dict[int, str] | None = None, release: bool = False) -> tuple[pd.DataFrame, dict]:
    """One task's prediction rows (every back-off level, unknown products) and its publication record.

    The rule is :func:`prediction.publication.decide`: ``settings.min_precision`` by the label-free estimate, or the
    fixed ``settings.threshold``; ``other`` (the baseline head, or None) gives the agreement estimate. Unknown
    products are scored for the category task only. Target labels, where the catalog has them, are read afterwards
    by :func:`prediction.publication.evaluate`, for the manifest and report only. ``prototypes_to``: where to save the
    unknown scores' source class prototypes (category task), so new rows can be scored later without the source.
    ``calibration`` (row index -> reviewed category) are reviewed target rows held out of training: the rule's target
    calibration set (see :func:`prediction.publication.decide`). ``release``: hand ``result``'s target log-probabilities
    to the rule, which lets go of them after its first pass (a caller that drops the evidence afterwards anyway).
    """
    from prodkg.prediction.publication import decide, evaluate, publication_frame
    from prodkg.prediction.unknown import fused_unit_features, score_unknown, subset

    ev = result.evidence
    classes = result.labels.classes
    target_idx = np.flatnonzero(is_target)
    unknown = None
    if task == "category":
        unit = fused_unit_features(features.blocks, features.present)
        src = np.flatnonzero(is_source & np.array([lab is not None for lab in labels]))
        src_labels = np.array([labels[i] for i in src], dtype=object).astype(str)
        unknown = score_unknown(subset(unit, src), src_labels, subset(unit, target_idx))
        trim_heap()  # the scores' chunks are freed: their pages go back before the rule's own work starts
    other_probs = other.evidence.get("target_logp") if other is not None and other.labels.classes == classes else None
    decision = decide(ev.pop("target_logp") if release else ev["target_logp"], classes, source_probs=ev["source_logp"], source_labels=ev["source_labels"], taxonomy=taxonomy,
                      min_precision=settings.min_precision, specificity=settings.specificity, threshold=settings.threshold, unknown=None if unknown is None else unknown.unknown,
                      other_probs=other_probs, third=None if unknown is None or other_probs is None else unknown.nearest.tolist(),
                      known_probability=None if unknown is None else unknown.known_probability,
                      calibration=_target_positions(calibration, target_idx))
    if unknown is not None and prototypes_to is not None:
        # where the known-class probabilities weighed the rule, new rows are held to the least similar product this run
        # published (`prodkg predict` replays the rule's bars, not the weights)
        weighed = unknown.known_probability is not None and bool((unknown.known_probability < 1).any())
        published = decision.published_level >= 0
        floor = float(unknown.similarity[published].min()) if weighed and published.any() else None
        save_prototypes(prototypes_to, unknown.prototypes, unknown.threshold, publish_floor=floor,
                        classes=sorted(set(src_labels.tolist())))
    frame = publication_frame(decision, result.predictions["product_id"].tolist(), task, mid,
                              unknown_similarity=None if unknown is None else unknown.similarity)
    record: dict = {"publication": decision.summary()}
    if unknown is not None:
        record["unknown"] = unknown.manifest()
    truth = [labels[i] for i in target_idx]
    if any(t is not None for t in truth):  # evaluation only: nothing above read these
        evaluation = evaluate(decision, classes, taxonomy, truth)  # the rule's own log-confidences at every level
        curve = evaluation.pop("risk_coverage", None)
        if curve:  # at most ~200 points in the manifest
            step = max(1, len(curve["coverage"]) // 200)
            curve = {k: (v[::step] + v[-1:] if isinstance(v, list) else v) for k, v in curve.items()}
        record["evaluation"] = {**evaluation, "risk_coverage": curve}
    return frame, record


def cross_fitted(result, reviewed: dict[int, str], product_ids: list[str], is_target: np.ndarray, folds: int,
                 fit_fold) -> tuple[object, list[dict], list[tuple[int, object]]]:
    """``result`` with its target rows predicted by the fold heads: the reviewed rows of fold ``f``
    (:func:`prediction.target_calibration.fold_of`) by ``fit_fold(reviews of the other folds)``, a head that never saw
    their answers, and every other target row by the fold heads together (their probabilities averaged). The
    publication rule reads the reviewed rows as its target calibration set, so what it publishes is on the scale
    those rows measured. A class only the fold's own reviews named is one the fold head cannot predict (probability 0).

    Why not publish from ``result``, the head fitted on every review: its confidences are higher than the fold heads'
    (it saw 3/2 as many answers), so a bar the out-of-fold rows support admits more of its predictions than the bound
    holds for. On grocery in-store at 30 epochs with 100 random reviews its facts were 93.3-96.0 % right under a 95 %
    target, the fold heads' 96.4-98.6 %, and their average was no less accurate (docs/BENCHMARKS.md, "Review loop").

    Returns the new result (source hold-out rows averaged the same way), per fold its rows and how many the fold head
    got right (for the manifest), and the fold heads by fold (``prodkg predict`` averages them likewise).
    """
    from prodkg.prediction.target_calibration import fold_of

    classes = list(result.labels.classes)
    fold = {int(i): fold_of(product_ids[int(i)], folds) for i in reviewed}
    position = {int(r): j for j, r in enumerate(np.flatnonzero(is_target))}
    target = np.array(result.evidence["target_logp"], dtype=np.float64, copy=True)
    on_classes = []  # per fold head: its target and source log-probabilities over ``classes``
    record, heads = [], []
    held_rows = np.zeros(len(target), bool)
    for f in range(folds):
        held = sorted(i for i in fold if fold[i] == f)
        if not held:  # no review in the fold: its head would be ``result`` itself
            continue
        head = fit_fold({int(i): lab for i, lab in reviewed.items() if fold[int(i)] != f})
        t_lp, s_lp = (logp_on_classes(head.evidence[k], head.labels.classes, classes) for k in ("target_logp", "source_logp"))
        rows = np.array([position[i] for i in held])
        target[rows] = t_lp[rows]
        held_rows[rows] = True
        on_classes.append((t_lp, s_lp, head.evidence["source_labels"]))
        right = sum(classes[int(j)] == reviewed[i] for i, j in zip(held, t_lp[rows].argmax(1), strict=True))
        record.append({"fold": f, "n_rows": len(held), "n_right": int(right)})
        heads.append((f, head))
    evidence = dict(result.evidence)
    if on_classes:
        target[~held_rows] = mean_logp([t[~held_rows] for t, _, _ in on_classes])
        # the same source rows are held out for every fold head (a draw of the seed and the source labels)
        if all(np.array_equal(lab, result.evidence["source_labels"]) for _, _, lab in on_classes):
            evidence["source_logp"] = mean_logp([s for _, s, _ in on_classes])
    evidence["target_logp"] = target
    return dataclasses.replace(result, evidence=evidence), record, heads


def _label_list(column: pd.Series) -> list[str | None]:
    """The column's values as a list, a non-empty string or None per row, each distinct value one shared string (a
    million products' labels were a million string objects, 60 MB, held through fitting)."""
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    names = [u if isinstance(u, str) and u else None for u in uniques.tolist()] + [None]  # code -1 (missing): the last
    return [names[c] for c in codes.tolist()]


def logp_on_classes(logp: np.ndarray, own: list[str], classes: list[str]) -> np.ndarray:
    """A head's log-probabilities over ``own`` classes laid out over ``classes`` (one it lacks: :data:`LOG_ZERO`)."""
    columns = {c: j for j, c in enumerate(own)}
    out = np.full((len(logp), len(classes)), LOG_ZERO)
    for k, c in enumerate(classes):
        if c in columns:
            out[:, k] = logp[:, columns[c]]
    return out


def mean_logp(logps: list[np.ndarray]) -> np.ndarray:
    """The log of the heads' averaged probabilities (a log-sum-exp, so predictions near 1.0 keep their order)."""
    from scipy.special import logsumexp

    return np.maximum(logsumexp(np.stack(logps), axis=0) - np.log(len(logps)), LOG_ZERO)


def source_holdout_size(labels: list[str | None], is_source: np.ndarray, seed: int) -> int:
    """How many labelled source rows :func:`prediction.heads.fit_task` holds out of training for calibration (its
    stratified tenth; classes of fewer than 3 rows give none), known before any fit."""
    from prodkg.adaptation.selection import stratified_holdout

    y = np.array([lab for lab, src in zip(labels, is_source, strict=True) if src and lab is not None], dtype=object)
    return int(stratified_holdout(y.astype(str), 0.1, seed).sum()) if len(y) else 0


def _target_positions(rows: dict[int, str] | None, target_idx: np.ndarray) -> dict[int, str] | None:
    """Row index -> label, re-keyed by position among the target rows (rows that are not target rows are dropped)."""
    if not rows:
        return None
    position = {int(r): j for j, r in enumerate(target_idx)}
    return {position[int(i)]: lab for i, lab in rows.items() if int(i) in position}


def publication_summary(metrics: dict[str, dict]) -> dict[str, dict]:
    """Per task, the headline numbers of the run summary: published share, estimated and (with target labels)
    measured accuracy and precision, unknown products."""
    out = {}
    for task, m in metrics.items():
        pub = m.get("publication")
        if not pub:
            continue
        levels = pub.get("levels") or [{}]
        row = {"rule": pub.get("rule"), "n_published": pub.get("n_published"), "coverage": pub.get("coverage"),
               "estimated_accuracy": levels[0].get("estimated_accuracy"), "estimator": levels[0].get("estimator"),
               "estimated_precision": pub.get("estimated_precision"), "n_unknown": pub.get("n_unknown"),
               "atc_bootstrap_se": pub.get("atc_bootstrap_se"), "estimate_error": pub.get("estimate_error")}
        if pub.get("calibration"):  # the target calibration set: rows, and the precision they support for what was published
            split = m.get("review_split") or {}
            row["calibration"] = {**pub["calibration"], **({"folds": split["folds"]} if split.get("mode") == "cross-fit" else {})}
        if pub.get("abstained"):
            row["abstained"] = pub["abstained"]
        ev = m.get("evaluation")
        if ev:
            row.update({"accuracy": ev.get("accuracy"), "precision": ev.get("precision"), "measured_coverage": ev.get("coverage"),
                        "target_ece": ev.get("target_ece")})
            if "open_set" in ev:
                row["h_score"] = ev["open_set"].get("h_score")
        out[task] = row
    return out


def sample_embeddings(features, model, is_source: np.ndarray, is_target: np.ndarray, *, limit: int = 2000, seed: int = 0) -> dict:
    """Up to ``limit`` source and target products: fused input features ("before") and the model's
    bottleneck embedding ("after"), for the report's plot of the domains before and after adaptation."""
    from prodkg.adaptation.features import fused_input

    rows = np.flatnonzero(np.asarray(is_source, bool) | np.asarray(is_target, bool))
    if len(rows) > limit:
        rows = np.sort(np.random.default_rng(seed).choice(rows, size=limit, replace=False))
    part = features.subset(rows)
    return {"is_target": np.asarray(is_target, bool)[rows], "before": fused_input(part), "after": np.asarray(model.embed(part), np.float32)}


def save_prototypes(path: Path, prototypes: dict[str, tuple[np.ndarray, np.ndarray]], threshold: float,
                    publish_floor: float | None = None, classes: list[str] | None = None) -> None:
    """Write the unknown scores' class prototypes (:func:`prediction.unknown.class_prototypes`) and the bar to ``path``
    (.npz); ``publish_floor``: the similarity below which the run published nothing, where its rule weighed
    known-class probabilities (None: none); ``classes``: the prototypes' class names in their order."""
    arrays = {"threshold": np.float64(threshold), "modalities": np.array(sorted(prototypes), dtype=str)}
    if publish_floor is not None:
        arrays["publish_floor"] = np.float64(publish_floor)
    if classes is not None:  # the prototypes' classes, in their order: new rows' nearest class by name
        arrays["classes"] = np.array(classes, dtype=str)
    for m, (protos, has) in prototypes.items():
        arrays[f"protos_{m}"], arrays[f"has_{m}"] = protos.astype(np.float64), has
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)


def load_prototypes(path: Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], float, float, list[str] | None]:
    """Inverse of :func:`save_prototypes`: (prototypes, the unknown bar, the publish floor -- -inf when none --, the
    prototypes' classes -- None in files written before they were saved)."""
    with np.load(path, allow_pickle=False) as z:
        floor = float(z["publish_floor"]) if "publish_floor" in z.files else float("-inf")
        classes = [str(c) for c in z["classes"]] if "classes" in z.files else None
        return ({str(m): (z[f"protos_{m}"], z[f"has_{m}"].astype(bool)) for m in z["modalities"]}, float(z["threshold"]), floor,
                classes)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name) or "task"
