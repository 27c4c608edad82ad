"""Score new rows with a saved model: a feature table, or a catalog extracted with the encoders the model was trained with.

A model is the folder ``prodkg adapt`` writes (``manifest.json`` + ``model/``) or a run folder of ``prodkg run``
(``runs/<run_id>/``, whose manifest names every head, the encoders, their resolved precision and the publication
record). :func:`load_saved_model` reads either; :func:`score_features` scores a :class:`adaptation.MultiModal`
into the predictions table (:data:`prodkg.contracts.PREDICTIONS`); :func:`score_catalog` first validates a
catalog as ingest does (bad rows are quarantined with their reason) and extracts its vectors through the run's
feature cache, with the same encoders, options and precision as the run (and its fine-tuned image block, if any).

What is published for a new row follows the run's own rule, not a new estimate: under ``min_precision`` the
threshold the run picked at each taxonomy level, the agreement with the run's baseline head where the run required
it, and no category for a product below the run's unknown bar; under a fixed ``threshold`` that threshold. A
model without a recorded rule (``prodkg adapt``) publishes nothing unless a threshold is given.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from prodkg.contracts import PREDICTIONS, QUARANTINE, check_table
from prodkg.errors import CatalogError, ConfigError, ModelLoadError, StageError

__all__ = ["CatalogScores", "SavedHead", "SavedModel", "load_saved_model", "score_catalog", "score_features"]


@dataclass
class SavedHead:
    """One task's saved head and what its run recorded about publishing it."""

    task: str
    model: object  # adaptation.AdaptedModel
    classes: list[str]
    temperature: float
    model_id: str
    publication: dict | None = None  # metrics[task]["publication"] of the run (None: no rule recorded)
    taxonomy: list[tuple] = field(default_factory=list)
    baseline: object | None = None  # the baseline head (agreement rule), when the run saved it
    baseline_temperature: float = 1.0
    prototypes: dict | None = None  # unknown scores: modality -> (prototypes, has)
    publish_floor: float = float("-inf")  # the run published no product less similar than this to its nearest prototype
    prototype_classes: list[str] | None = None  # the prototypes' class names in their order (the third classifier's answers)
    unknown_bar: float | None = None
    notes: list[str] = field(default_factory=list)  # what of the run's rule cannot be applied, and why
    # the fold heads that made the run's published predictions (reviews cross-fitted: prediction.stage.cross_fitted),
    # each (model, its classes, temperature); when there are some, they predict, averaged, in place of ``model``
    folds: list[tuple[object, list[str], float]] = field(default_factory=list)


@dataclass
class SavedModel:
    """A model folder: its heads and, for a ``prodkg run`` folder, the encoders its features came from."""

    path: Path
    kind: str  # "run" or "adapt"
    heads: list[SavedHead]
    features: dict | None  # modality -> the run's extract stats (encoder, encoder_id, precision, dim); None: a feature table
    config: dict
    cache_dir: Path | None  # the run's feature cache
    finetune: dict | None = None  # the run's fine-tuning record (its saved block under "path"), when it fine-tuned

    @property
    def modalities(self) -> dict[str, int]:
        """Modality -> width the heads read (every head of a run reads the same fused inputs)."""
        return dict(self.heads[0].model.dims)


def _read_manifest(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc


def _load_head(path: Path):
    from prodkg.adaptation import AdaptedModel

    if not path.is_dir():
        raise ModelLoadError(f"saved head {path} not found")
    return AdaptedModel.load(path, device="cpu")


def _beside(local: Path, recorded: str | None) -> Path:
    return local if local.exists() or not recorded else Path(recorded)


def load_saved_model(path: str | Path) -> SavedModel:
    """The model saved in ``path``: a ``prodkg adapt`` folder, a run folder (``<out>/runs/<run_id>``), or an output
    folder of ``prodkg run`` (its newest run).

    Raises:
        ConfigError: ``path`` holds none of these.
        ModelLoadError: the manifest or a saved head cannot be read, or they disagree.
    """
    from prodkg.prediction.stage import _safe, load_prototypes, model_id

    run = Path(path)
    manifest = None
    if not (run / "manifest.json").is_file() and (run / "runs").is_dir():  # an output folder: its newest run with heads
        runs = sorted((p for p in (run / "runs").iterdir() if (p / "manifest.json").is_file()), key=lambda p: p.name)
        for candidate in reversed(runs):
            read = _read_manifest(candidate / "manifest.json")
            if read.get("models"):
                run, manifest = candidate, read
                break
    manifest_file = run / "manifest.json"
    if not manifest_file.is_file():
        raise ConfigError(f"--model {path}: expected a folder written by `prodkg adapt` (manifest.json and model/) "
                          f"or by `prodkg run` (its output folder, or one of its runs/<run_id> folders)")
    if manifest is None:
        manifest = _read_manifest(manifest_file)
    if manifest.get("command") == "adapt" or "classes" in manifest:
        try:
            classes = list(manifest["classes"])
        except (KeyError, TypeError) as exc:
            raise ModelLoadError(f"{manifest_file}: no class list in it ({exc})") from exc
        model_dir = run / "model"
        model = _load_head(model_dir)
        if model.n_classes != len(classes):
            raise ModelLoadError(f"{run}: the model predicts {model.n_classes} classes, its manifest lists {len(classes)}")
        head = SavedHead(task="category", model=model, classes=classes,
                         temperature=float((manifest.get("metrics") or {}).get("temperature", 1.0)),
                         model_id=model_id("category", model.config.method, model_dir),
                         notes=["`prodkg adapt` records no publication rule: nothing is published unless a threshold is given"])
        return SavedModel(path=run, kind="adapt", heads=[head], features=None, config=dict(manifest.get("config") or {}), cache_dir=None)
    entries = manifest.get("models")
    if not entries:
        raise ModelLoadError(f"{manifest_file}: the run saved no head (no 'models' in its manifest)")
    heads = []
    for entry in entries:
        task = entry["task"]
        # the head beside this manifest (a moved or copied run folder too), else where the run recorded it (a fast-path
        # re-run's heads are its previous run's)
        head_dir = _beside(run / "models" / _safe(task), entry.get("path"))
        model = _load_head(head_dir)
        classes = list(entry["classes"])
        if model.n_classes != len(classes):
            raise ModelLoadError(f"{head_dir}: the head predicts {model.n_classes} classes, the manifest lists {len(classes)}")
        head = SavedHead(task=task, model=model, classes=classes, temperature=float(entry.get("temperature", 1.0)),
                         model_id=entry["model_id"], publication=((manifest.get("metrics") or {}).get(task) or {}).get("publication"),
                         taxonomy=[tuple(t) for t in entry.get("taxonomy") or []])
        for fold in entry.get("folds") or []:
            fold_dir = _beside(head_dir / "folds" / str(int(fold["fold"])), fold.get("path"))
            fold_model = _load_head(fold_dir)
            if fold_model.n_classes != len(fold["classes"]):
                raise ModelLoadError(f"{fold_dir}: the fold head predicts {fold_model.n_classes} classes, the manifest lists {len(fold['classes'])}")
            head.folds.append((fold_model, list(fold["classes"]), float(fold.get("temperature", 1.0))))
        base = entry.get("baseline")
        if base:
            base_dir = _beside(run / "models" / f"{_safe(task)}.baseline", base.get("path"))
            head.baseline, head.baseline_temperature = _load_head(base_dir), float(base.get("temperature", 1.0))
        protos = entry.get("prototypes")
        if not protos and ((manifest.get("metrics") or {}).get(task) or {}).get("unknown"):
            head.notes.append("the run flagged unknown products but saved no prototypes: no product is flagged unknown here")
        if protos:
            proto_path = _beside(run / "models" / f"{_safe(task)}.prototypes.npz", protos)
            try:
                head.prototypes, head.unknown_bar, head.publish_floor, head.prototype_classes = load_prototypes(proto_path)
            except (OSError, KeyError, ValueError) as exc:
                raise ModelLoadError(f"cannot read the unknown prototypes {proto_path}: {exc}") from exc
        heads.append(head)
    config = dict(manifest.get("config") or {})
    cache = Path(config["cache_dir"]) if config.get("cache_dir") and Path(config["cache_dir"]).is_absolute() else run.parent.parent / "cache"
    return SavedModel(path=run, kind="run", heads=heads, features=manifest.get("features"), config=config, cache_dir=cache,
                      finetune=manifest.get("finetune") if (manifest.get("finetune") or {}).get("ran") else None)


# --- scoring ---------------------------------------------------------------------------------------------


def _logp(model, features, temperature: float) -> np.ndarray:
    from prodkg.prediction.estimates import log_softmax

    return log_softmax(model.logits(features) / temperature)


def _head_logp(head: SavedHead, features) -> np.ndarray:
    """The head's log-probabilities over its classes; with fold heads, their averaged probabilities, as the run published."""
    if not head.folds:
        return _logp(head.model, features, head.temperature)
    from prodkg.prediction.stage import logp_on_classes, mean_logp

    return mean_logp([logp_on_classes(_logp(model, features, t), classes, head.classes) for model, classes, t in head.folds])


def recorded_decision(head: SavedHead, logp: np.ndarray, *, threshold: float | None = None, other_logp: np.ndarray | None = None,
                      unknown: np.ndarray | None = None, blocked: np.ndarray | None = None):
    """A :class:`prediction.publication.Decision` for new items under the rule ``head``'s run recorded.

    ``threshold`` (a fixed bar at every level) overrides the record. Under ``min_precision`` each level publishes what
    clears the threshold the run picked there, from the deepest level up, where the baseline head agrees (when the run
    required that) and the item is not ``unknown``. Where the run set per-class bars (per-class error ratios), an item
    is held to its concept's bar: the confidence above which the run published every item of that concept, so on the
    run's own rows the replay publishes the run's fact, a broader one, or nothing. A rule that needs a baseline head the run did not save publishes nothing.
    ``blocked`` items (less similar to the source than any product the run published, where its rule weighed
    known-class probabilities) are not published under the recorded rule, nor flagged unknown.
    """
    from prodkg.prediction.backoff import TaxonomyLevels
    from prodkg.prediction.publication import Decision, level_rows, prediction_rows

    tax = TaxonomyLevels(head.classes, head.taxonomy)
    n = len(logp)
    pub = head.publication or {}
    if threshold is not None:
        rule = {"rule": "threshold", "threshold": float(threshold)}
    elif pub.get("rule") == "threshold":
        rule = {"rule": "threshold", "threshold": float(pub["threshold"])}
    elif pub.get("rule") == "min_precision":
        rule = {"rule": "min_precision", "min_precision": float(pub["min_precision"])}
    else:
        rule = {"rule": "none"}
    agree = rule["rule"] == "min_precision" and bool(pub.get("require_agreement"))
    recorded = {lv["level"]: lv.get("threshold_log") for lv in pub.get("levels") or []}
    # with per-class error ratios the run published, per concept, what reached that concept's lowest published confidence
    per_class = {lv["level"]: lv.get("class_thresholds") for lv in pub.get("levels") or []}
    unknown = np.zeros(n, bool) if unknown is None else np.asarray(unknown, bool)
    published: list[str | None] = [None] * n
    published_level = np.full(n, -1)
    rows, levels, level_values = [], [], []
    for level in range(tax.depth, -1, -1):
        p, names = tax.aggregate_log(logp, level)
        conf_log = p.max(1)
        pred = p.argmax(1)
        remaining = (published_level < 0) & ~unknown
        if blocked is not None and rule["rule"] == "min_precision" and threshold is None:
            remaining &= ~np.asarray(blocked, bool)
        if rule["rule"] == "threshold":
            t = float(np.log(rule["threshold"])) if rule["threshold"] > 0 else -np.inf
        elif rule["rule"] == "min_precision" and recorded.get(level) is not None and (other_logp is not None or not agree):
            t = float(recorded[level])
        else:
            t = np.inf  # no rule, a level the run published nothing at, or an agreement rule without the baseline head
        if agree and other_logp is not None:
            op, _ = tax.aggregate_log(other_logp, level)
            remaining &= pred == op.argmax(1)
        bars = per_class.get(level) if rule["rule"] == "min_precision" and np.isfinite(t) else None
        if bars is not None:
            cut = np.array([bars.get(name, np.inf) for name in names], dtype=float)[pred]
            new = remaining & (np.exp(conf_log) >= cut)
        else:
            new = remaining & (conf_log >= t)
        values = [names[k] for k in pred]
        level_values.append(values)
        for i in np.flatnonzero(new):
            published[i], published_level[i] = values[i], level
        rows.append(level_rows(n, level, names, pred, np.exp(conf_log), None, new))
        levels.append({"level": level, "threshold": float(np.exp(t)) if np.isfinite(t) else None, "n_published": int(new.sum())})
    level_values.reverse()
    rule["require_agreement"] = agree
    frame = prediction_rows(rows)
    return Decision(predictions=frame, published=published, published_level=published_level, unknown=unknown, levels=levels,
                    rule=rule, n_levels=tax.n_levels, level_values=level_values)


def score_features(saved: SavedModel, features, product_ids, *, threshold: float | None = None) -> tuple[pd.DataFrame, dict]:
    """Every head of ``saved`` on ``features`` (rows aligned with ``product_ids``).

    Returns the predictions table (:data:`prodkg.contracts.PREDICTIONS`: one ``class`` row per product and distinct
    concept along the taxonomy levels, one ``unknown`` row per product below the run's unknown bar, ``published``
    under the recorded rule) and a summary per task (rule, published count, unknown count, notes).

    Raises:
        ConfigError: the features' modalities or widths are not the ones the heads were trained on.
    """
    from prodkg.extractors.extract import torch_threads
    from prodkg.prediction.publication import publication_frame
    from prodkg.prediction.stage import NO_VALUE
    from prodkg.prediction.unknown import fused_unit_features, nearest_prototype

    ids = [str(i) for i in product_ids]
    frames, summary = [], {}
    for head in saved.heads:
        if dict(features.dims) != dict(head.model.dims):
            raise ConfigError(f"the {head.task} head was trained on modalities {dict(head.model.dims)}; the rows to score have {dict(features.dims)}")
        with torch_threads(1):  # small MLPs: one thread is fastest (see prediction.stage)
            logp = _head_logp(head, features)
            other = _logp(head.baseline, features, head.baseline_temperature) if head.baseline is not None else None
        notes = list(head.notes)
        unknown = similarity = blocked = None
        if head.prototypes is not None and head.unknown_bar is not None:
            unit = fused_unit_features(features.blocks, features.present)
            similarity, which = nearest_prototype(head.prototypes, unit)
            unknown = similarity < head.unknown_bar
            blocked = similarity < head.publish_floor
            if (head.publication or {}).get("require_third"):
                # the run published only where the nearest source prototype named the head's class: so do new rows
                # (a run saved without the prototypes' classes cannot say, and publishes nothing here)
                if head.prototype_classes is None:
                    blocked = np.ones(len(ids), bool)
                    notes.append("the run required the nearest prototype's agreement but saved no prototype classes: nothing is published")
                else:
                    third = np.array(head.prototype_classes, dtype=object)[which]
                    blocked |= third != np.array(head.classes, dtype=object)[logp.argmax(1)]
        pub = head.publication or {}
        if threshold is None and pub.get("rule") == "min_precision" and pub.get("require_agreement") and other is None:
            notes.append("the run required agreement with its baseline head but did not save it: nothing is published")
        decision = recorded_decision(head, logp, threshold=threshold, other_logp=other, unknown=unknown, blocked=blocked)
        frame = publication_frame(decision, ids, head.task, head.model_id, unknown_similarity=similarity)
        frames.append(frame[frame["value"] != NO_VALUE].reset_index(drop=True))
        summary[head.task] = {**decision.rule, "n_products": len(ids), "n_published": int((decision.published_level >= 0).sum()),
                              "n_unknown": int(decision.unknown.sum()), "notes": notes}
    predictions = pd.concat(frames, ignore_index=True) if frames else PREDICTIONS.empty()
    return check_table(predictions[PREDICTIONS.columns], PREDICTIONS), summary


# --- catalogs --------------------------------------------------------------------------------------------


@dataclass
class CatalogScores:
    """What :func:`score_catalog` returns."""

    predictions: pd.DataFrame  # prodkg.contracts.PREDICTIONS
    quarantine: pd.DataFrame  # prodkg.contracts.QUARANTINE: rows set aside at ingest or extraction, with the reason
    products: pd.DataFrame  # the products scored (ingest's table)
    n_in: int  # catalog rows read (in the chosen domains)
    features: dict  # modality -> extract stats
    summary: dict  # task -> publication summary (score_features)
    n_superseded: int = 0  # predictions not written because the catalog asserts that task's value


def extract_settings_for(saved: SavedModel, modalities: list[str], *, progress: bool = False, image_limits=None):
    """The :class:`extractors.stage.ExtractSettings` that rebuild the run's encoders of ``modalities``: the encoder names
    and options of its config, with the precision pinned to the one its features were computed in, checked against the
    run's encoder ids (which digest weights, preprocessing and precision).

    Raises:
        ModelLoadError: an encoder cannot be built offline, or builds with an id other than the run's.
    """
    from prodkg.extractors import LazyEncoder
    from prodkg.extractors.stage import ExtractSettings

    cfg = saved.config
    names = {"image": cfg.get("image_encoder", "efficientnet_lite0"), "text": cfg.get("text_encoder", "minilm")}
    options = {"image": dict(cfg.get("image_options") or {}), "text": dict(cfg.get("text_options") or {})}
    for m in modalities:
        rec = (saved.features or {}).get(m) or {}
        if not rec.get("encoder_id"):
            raise ModelLoadError(f"{saved.path}: its manifest records no {m} encoder id")
        # a fine-tuned image encoder is the frozen one plus the saved block (finetuned_encoder): check the frozen one here
        wanted = rec["frozen_encoder_id"] if rec.get("finetuned") else rec["encoder_id"]
        recorded = rec.get("precision")
        tried = []
        for precision in dict.fromkeys([recorded, options[m].get("precision"), "fp32", "bf16"]):
            if precision is None or precision == "auto":
                continue
            trial = {**options[m], "precision": precision}
            try:
                encoder_id = LazyEncoder(names[m], trial).encoder_id
            except (ModelLoadError, OSError, ImportError) as exc:
                raise ModelLoadError(f"the run's {m} encoder {names[m]!r} ({wanted}) is not available offline "
                                     f"on this machine: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
            tried.append(encoder_id)
            if encoder_id == wanted:
                options[m] = trial
                break
        else:
            raise ModelLoadError(f"the run's {m} features came from {wanted}; this machine builds {' or '.join(tried) or 'nothing'} "
                                 f"from encoder {names[m]!r} (other weights or preprocessing): its vectors would not match the model")
    return ExtractSettings(image_encoder=names["image"], text_encoder=names["text"], image_options=options["image"],
                           text_options=options["text"], batch_size=int(cfg.get("batch_size") or 64), progress=progress,
                           image_limits=image_limits)


def finetuned_encoder(saved: SavedModel, settings):
    """The run's fine-tuned image encoder: the frozen encoder of ``settings`` with the block the run saved.

    Raises:
        ModelLoadError: the block is missing or unreadable, or does not give the run's encoder id.
    """
    from prodkg.adaptation.stage import FINETUNE_FILE
    from prodkg.extractors.image_cnn import FineTunedImageEncoder
    from prodkg.extractors.stage import shared_encoder

    path = Path((saved.finetune or {}).get("path") or "")
    if not path.is_file():
        path = saved.path / "models" / FINETUNE_FILE
    if not path.is_file():
        raise ModelLoadError(f"the run fine-tuned its image encoder but its block {path} is not there")
    name, options = settings.encoder("image")
    encoder = FineTunedImageEncoder.load(path, shared_encoder(name, json.dumps(options, sort_keys=True)))
    if encoder.encoder_id != saved.features["image"]["encoder_id"]:
        raise ModelLoadError(f"{path} gives the image encoder {encoder.encoder_id}, the run's features came from "
                             f"{saved.features['image']['encoder_id']}")
    return encoder


def score_catalog(saved: SavedModel, catalog: str, *, domains: list[str] | None = None, image_roots: list[str] | tuple = (),
                  cache_dir: str | Path | None = None, threshold: float | None = None, progress: bool = False) -> CatalogScores:
    """Validate ``catalog`` as ingest does, extract the vectors the heads read, and score every product.

    ``domains`` keeps the rows of those domains (default: every row). Images are read under the catalog's folder and
    ``image_roots``, within the run's byte and pixel caps. Features come from and go to the run's feature cache
    (``cache_dir`` overrides it).

    Raises:
        ConfigError: the model was trained on a feature table (its encoders are unknown), or its modalities do not
            match what the catalog holds (a modality the model reads that no row has, or one the model never saw).
        CatalogError: the catalog is unusable as a whole, or no row survives validation (``.quarantine`` holds the reasons).
        ModelLoadError: an encoder is not available offline, or not the one the run used.
    """
    from prodkg.catalogs import ingest
    from prodkg.catalogs.ingest import read_catalog
    from prodkg.catalogs.stage import hide_target_labels, modalities_present, modality_items, unasserted_predictions
    from prodkg.extractors.cache import FeatureCache
    from prodkg.extractors.sources import limits_for
    from prodkg.extractors.stage import assemble_features, extract_shard, shards

    if saved.kind != "run" or not saved.features:
        raise ConfigError(f"{saved.path} was trained by `prodkg adapt` on a feature table: which encoders made its vectors is not "
                          "recorded, so a catalog cannot be extracted for it; extract the vectors yourself and pass --features")
    if "://" not in str(catalog) and not Path(catalog).is_file():  # a usage error, as for `prodkg run`
        raise ConfigError(f"--catalog {str(catalog)!r} {'is a directory, not a file' if Path(catalog).is_dir() else 'not found'}")
    needed = sorted(saved.modalities)
    frame, unparsed = read_catalog(catalog)
    if domains:
        present = sorted({str(d).strip() for d in frame["domain"].dropna()} - {""})
        missing = [d for d in domains if d not in present]
        if missing:
            raise ConfigError(f"domain(s) {', '.join(missing)} not in {catalog}; it has: {', '.join(present) or 'none'}")
        keep = frame["domain"].map(lambda d: not isinstance(d, str) or not d.strip() or d.strip() in domains).to_numpy(bool)
        frame = frame[keep]
    local = "://" not in str(catalog)
    base_dir = Path(str(catalog)).resolve().parent if local else None
    cfg = saved.config
    roots = ([str(base_dir)] if base_dir is not None else []) + [str(Path(r).expanduser().resolve()) for r in image_roots]
    limits = limits_for(roots, max_bytes=cfg.get("image_max_bytes"), max_pixels=cfg.get("image_max_pixels"),
                        connect_timeout=cfg.get("image_connect_timeout"), read_timeout=cfg.get("image_read_timeout"),
                        fsspec_schemes=tuple(cfg.get("image_fsspec_schemes") or ()))
    result = ingest(frame, base_dir=base_dir, attributes=None, unparsed=unparsed, image_limits=limits)
    products = result.products
    if not len(products):
        exc = CatalogError(f"no row of {catalog} is a valid product ({len(result.quarantine)} quarantined)")
        exc.quarantine = result.quarantine
        raise exc
    have = modalities_present(products)
    lacking = [m for m in needed if m not in have]
    extra = [m for m in have if m not in needed]
    if lacking or extra:
        what = {"image": "an image", "text": "a title or description"}
        parts = [f"no row of the catalog has {what[m]}" for m in lacking]
        parts += [f"the catalog has {'images' if m == 'image' else 'text'} the model never saw (blank that column to score without it)" for m in extra]
        raise ConfigError(f"the model at {saved.path} reads {' and '.join(needed)}; " + "; ".join(parts))
    settings = extract_settings_for(saved, needed, progress=progress, image_limits=limits)
    cache = FeatureCache(Path(cache_dir) if cache_dir else saved.cache_dir)
    results = {}
    for m in needed:
        items = modality_items(products, m)
        encoder = finetuned_encoder(saved, settings) if saved.features[m].get("finetuned") else None
        results[m] = [extract_shard(items[a:b], settings, m, cache, encoder) for a, b in shards(len(items), 4096)]
    for m, parts in results.items():
        got = parts[0]["encoder_id"]
        if got != saved.features[m]["encoder_id"]:  # never score with vectors of another encoder
            raise ModelLoadError(f"the {m} vectors came from {got}, the model's from {saved.features[m]['encoder_id']}")
    try:
        ext = assemble_features(products, results)
    except StageError as exc:  # every product's inputs failed to decode
        raise CatalogError(f"no product of {catalog} could be extracted: {exc}") from exc
    parts = [q for q in (result.quarantine, ext.quarantine) if len(q)]
    quarantine = pd.concat(parts, ignore_index=True) if parts else QUARANTINE.empty()
    quarantine = check_table(quarantine.astype({"source_row": "Int64"})[QUARANTINE.columns], QUARANTINE)
    predictions, summary = score_features(saved, ext.features, ext.products["product_id"].tolist(), threshold=threshold)
    # Asserted beats predicted, as in the run: a product asserting a value for a task gets no prediction for it, except
    # for the run's evaluation-label columns (category by default), which are there to be predicted
    facts = hide_target_labels(ext.products, list(ext.products["domain"].unique()), list(cfg.get("eval_labels") or ["category"]))
    predictions, superseded = unasserted_predictions(predictions, facts)
    return CatalogScores(predictions=predictions, quarantine=quarantine, products=ext.products, n_in=result.n_in, features=ext.stats,
                         summary=summary, n_superseded=superseded)


def score_table(saved: SavedModel, path: str | Path, *, domains: list[str] | None = None,
                threshold: float | None = None) -> tuple[pd.DataFrame, dict, dict[str, str]]:
    """Score the rows of a feature table (layout: :func:`adaptation.byo.load_feature_table`), those of ``domains`` only
    when given. Returns the predictions, the per-task summary and the table's labels (product id -> label) where it has any.

    Raises:
        ConfigError: the file is missing, no row has one of ``domains``, or the table's modalities or widths are not the model's.
    """
    from prodkg.adaptation.byo import load_feature_table

    if not Path(path).is_file():
        raise ConfigError(f"--features {str(path)!r} not found")
    features, labels, table_domains, ids = load_feature_table(str(path), require_labels=False)
    keep = np.ones(len(ids), dtype=bool)
    if domains:
        keep = np.isin(table_domains, domains)
        if not keep.any():
            raise ConfigError(f"no row of {path} has domain {domains}; its domains are {sorted(set(table_domains.tolist()))}")
    rows = np.flatnonzero(keep)
    x = features.subset(rows)
    if dict(x.dims) != saved.modalities:
        raise ConfigError(f"{path}: the model was trained on modalities {saved.modalities}; the table has {dict(x.dims)}")
    predictions, summary = score_features(saved, x, ids[rows].tolist(), threshold=threshold)
    known = {str(ids[i]): str(labels[i]) for i in rows if labels[i] is not None}
    return predictions, summary, known


def deepest_class(predictions: pd.DataFrame, task: str = "category") -> pd.Series:
    """Product id -> the task's predicted class (the deepest taxonomy level's row)."""
    rows = predictions[(predictions["task"] == task) & (predictions["kind"] == "class")]
    rows = rows.assign(_depth=rows["level"].fillna(0).astype(int)).sort_values("_depth", ascending=False, kind="stable")
    return rows.drop_duplicates("product_id").set_index("product_id")["value"]


__all__ += ["deepest_class", "score_table"]
