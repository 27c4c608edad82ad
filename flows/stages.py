"""The pipeline's stages as plain functions of plain data; the Prefect tasks in flows.pipeline only wrap them."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from prodkg.catalogs import CatalogSource, ingest, load_dataset, product_text
from prodkg.catalogs.ingest import read_catalog
from prodkg.flows.config import RunConfig
from prodkg.flows.progress import Progress, on_terminal, run_logger
from prodkg.kb.incremental import frame_digest
from prodkg.errors import CatalogError, ConfigError, StageError


@dataclass
class IngestOutput:
    products: pd.DataFrame
    quarantine: pd.DataFrame
    attributes: list[str]
    taxonomy: list[tuple[str, str | None]]
    catalog_name: str
    source: list[str]
    target: list[str]
    n_in: int
    n_out_of_scope: int
    input_hash: str
    warnings: list[str] = field(default_factory=list)


def _read_taxonomy(path: str) -> list[tuple[str, str | None]]:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if not {"concept", "parent"} <= set(frame.columns):
        raise ConfigError(f"taxonomy file {path} needs columns concept,parent (got {', '.join(frame.columns)})")
    return [(c, p or None) for c, p in zip(frame["concept"], frame["parent"]) if c]


def ingest_stage(cfg: RunConfig) -> IngestOutput:
    """Load the catalog (file or dataset), keep the chosen domains, validate every row.

    Whole-catalog problems (missing columns, no rows, an unknown or empty domain)
    raise CatalogError before anything is written.
    """
    if cfg.dataset:
        src: CatalogSource = load_dataset(cfg.dataset, cfg.data_home)
        frame, unparsed, name, taxonomy = src.frame, [], src.name, list(src.taxonomy)
        source, target = cfg.source or src.default_source, cfg.target or src.default_target
        base_dir = src.root
    else:
        frame, unparsed = read_catalog(cfg.catalog)
        name = Path(str(cfg.catalog)).stem
        taxonomy = []
        source, target = cfg.source, cfg.target
        base_dir = Path(str(cfg.catalog)).resolve().parent if "://" not in str(cfg.catalog) else None
    if cfg.taxonomy:
        taxonomy = _read_taxonomy(cfg.taxonomy)
    domains = sorted({d.strip() for d in frame["domain"].dropna().astype(str) if d.strip()}) if "domain" in frame.columns else []
    if not source or not target:
        raise ConfigError(f"name the source and target domains (--source, --target); this catalog has: {', '.join(domains) or 'none'}")
    for role, chosen in (("source", source), ("target", target)):
        missing = [d for d in chosen if d not in domains]
        if missing:
            raise CatalogError(f"{role} domain(s) {', '.join(missing)} not in the catalog; it has: {', '.join(domains) or 'none'}")
    # Rows whose domain is blank are in scope: ingest quarantines them with their reason.
    chosen = {*source, *target}
    domains_by_row = [d.strip() if isinstance(d, str) else "" for d in frame["domain"].tolist()]
    in_scope = np.array([d == "" or d in chosen for d in domains_by_row], dtype=bool)
    if not in_scope.any() and not unparsed:
        raise CatalogError("no rows in the chosen domains")
    result = ingest(frame[in_scope], base_dir=base_dir, attributes=cfg.attributes, unparsed=unparsed)
    for role, chosen in (("source", source), ("target", target)):
        if not result.products["domain"].isin(chosen).any():
            raise CatalogError(f"the {role} domain ({', '.join(chosen)}) has no valid product after validation; see the quarantine reasons")
    return IngestOutput(
        products=result.products,
        quarantine=result.quarantine,
        attributes=result.attributes,
        taxonomy=taxonomy,
        catalog_name=name,
        source=list(source),
        target=list(target),
        n_in=result.n_in,
        n_out_of_scope=int((~in_scope).sum()),
        input_hash=frame_digest(frame),  # every cell as it arrived, undecodable bytes included
        warnings=result.warnings,
    )


# --- extract ---------------------------------------------------------------------------


def modality_items(products: pd.DataFrame, modality: str) -> list[str | None]:
    if modality == "image":
        return [v if isinstance(v, str) and v else None for v in products["image"].tolist()]
    if modality == "text":
        return [product_text(t, d) or None for t, d in zip(products["title"].tolist(), products["description"].tolist())]
    raise StageError(f"unknown modality {modality!r}; expected image or text")


def modalities_present(products: pd.DataFrame) -> list[str]:
    """Modalities that at least one product has; an absent one is not extracted at all."""
    return [m for m in ("image", "text") if any(v is not None for v in modality_items(products, m))]


@functools.lru_cache(maxsize=4)
def _encoder(name: str, options_json: str):
    from prodkg.extractors import get_encoder

    return get_encoder(name, **json.loads(options_json))


def encoder_for(cfg: RunConfig, modality: str):
    """The run's encoder for ``modality`` as a LazyEncoder: its cache identity now, from weight-file digests;
    its model (the one :func:`_encoder` shares with fine-tuning) only when a shard has something to encode."""
    from prodkg.extractors import LazyEncoder

    name = cfg.image_encoder if modality == "image" else cfg.text_encoder
    options = cfg.image_options if modality == "image" else cfg.text_options
    options_json = json.dumps(options, sort_keys=True)
    return LazyEncoder(name, json.loads(options_json), build=lambda: _encoder(name, options_json))


# One shard at a time per process: Prefect's default runner starts shards on threads, and both the
# first import of transformers and the model itself are not safe to share between concurrent threads
# (a torch forward already uses every core). Dask workers are separate processes, each with its own lock.
_EXTRACT_LOCK = threading.Lock()


def extract_shard(items: list[str | None], cfg: RunConfig, modality: str) -> dict:
    """Features of one shard of products for one modality (cached by content hash + encoder id)."""
    with _EXTRACT_LOCK:
        return _extract_shard(items, cfg, modality)


def _extract_shard(items: list[str | None], cfg: RunConfig, modality: str) -> dict:
    from prodkg.extractors import FeatureCache, extract_features

    encoder = encoder_for(cfg, modality)
    cache = FeatureCache(cfg.cache_path)
    # ~10 steps of whole batches: progress is reported between steps and a batch is never split
    step = cfg.batch_size * max(1, -(-len(items) // (10 * cfg.batch_size)))
    parts = []
    with Progress(len(items), f"extract {modality} ({encoder.name})", enabled=cfg.progress) as bar:
        for a, b in shards(len(items), step) or [(0, 0)]:
            parts.append(extract_features(items[a:b], encoder, cache=cache, batch_size=cfg.batch_size, num_workers=cfg.num_workers, progress=False))
            bar.update(b - a)
    features = np.concatenate([r.features for r in parts])
    errors, offset = {}, 0
    for r in parts:
        errors.update({offset + int(i): reason for i, reason in r.errors.items()})
        offset += len(r.ok)
    return {
        "features": features,
        "ok": np.concatenate([r.ok for r in parts]),
        "errors": errors,
        "n_computed": sum(r.n_computed for r in parts),
        "n_cached": sum(r.n_cached for r in parts),
        "encoder_id": parts[0].encoder_id,
        "seconds": sum(r.seconds for r in parts),
        "dim": int(features.shape[1]),
        "encoder": encoder.name,
        "worker": f"{socket.gethostname()}:{os.getpid()}",  # which process did the work (several under Dask)
    }


def shards(n: int, size: int) -> list[tuple[int, int]]:
    return [(i, min(i + size, n)) for i in range(0, n, size)]


@dataclass
class ExtractOutput:
    products: pd.DataFrame  # products that survived extraction
    features: object  # adaptation.MultiModal aligned with products
    quarantine: pd.DataFrame
    stats: dict


def assemble_features(products: pd.DataFrame, results: dict[str, list[dict]]) -> ExtractOutput:
    """Join per-shard results into one MultiModal; products whose given image failed are quarantined."""
    from prodkg.adaptation import MultiModal

    blocks, present, stats, bad = {}, {}, {}, {}
    for modality, parts in results.items():
        if not parts:
            continue
        feats = np.concatenate([p["features"] for p in parts]) if parts else np.zeros((0, 0), np.float32)
        ok = np.concatenate([p["ok"] for p in parts]) if parts else np.zeros(0, bool)
        offset = 0
        for p in parts:
            for i, reason in p["errors"].items():
                bad.setdefault(offset + int(i), []).append(f"{modality}: {reason}")
            offset += len(p["ok"])
        blocks[modality], present[modality] = feats.astype(np.float32, copy=False), ok
        stats[modality] = {
            "encoder": parts[0]["encoder"] if parts else None,
            "encoder_id": parts[0]["encoder_id"] if parts else None,
            "dim": int(feats.shape[1]) if feats.ndim == 2 else 0,
            "computed": int(sum(p["n_computed"] for p in parts)),
            "cached": int(sum(p["n_cached"] for p in parts)),
            "failed": int(sum(len(p["errors"]) for p in parts)),
            "present": int(ok.sum()),
            "seconds": round(sum(p["seconds"] for p in parts), 3),
            "shards": len(parts),
            "workers": sorted({str(p.get("worker")) for p in parts}),  # host:pid of each process that extracted a shard
        }
    keep = np.ones(len(products), dtype=bool)
    keep[list(bad)] = False
    rows = []
    for i in sorted(bad):
        rec = products.iloc[i]
        rows.append({"stage": "extract", "source_row": int(rec["source_row"]), "product_id": rec["product_id"], "reason": "; ".join(bad[i]),
                     "raw": json.dumps({"image": rec["image"], "title": rec["title"]}, default=str)[:4000]})
    quarantine = pd.DataFrame(rows, columns=["stage", "source_row", "product_id", "reason", "raw"])
    idx = np.flatnonzero(keep)
    features = MultiModal(blocks={m: b[idx] for m, b in blocks.items()}, present={m: p[idx] for m, p in present.items()})
    if not features.modalities or not any(p.any() for p in features.present.values()):
        raise StageError("no product has any usable modality after extraction")
    return ExtractOutput(products=products.iloc[idx].reset_index(drop=True), features=features, quarantine=quarantine, stats=stats)


# --- backbone fine-tuning (optional) -----------------------------------------------------

FINETUNE_FILE = "image_backbone_finetuned.pt"
_FINETUNE_RESERVED = {"epochs": "finetune_epochs", "seed": "seed", "max_images_cpu": "finetune_max_images_cpu", "force": "finetune_force"}


def finetune_config(cfg: RunConfig):
    """The run's :class:`adaptation.finetune.FinetuneConfig`: ``finetune_options`` plus the run-level keys."""
    from prodkg.adaptation.finetune import FinetuneConfig

    clash = sorted(set(cfg.finetune_options) & set(_FINETUNE_RESERVED))
    if clash:
        raise ConfigError(f"finetune_options may not set {', '.join(clash)}; use {', '.join(_FINETUNE_RESERVED[k] for k in clash)} instead")
    return FinetuneConfig.from_dict({**cfg.finetune_options, "epochs": cfg.finetune_epochs, "seed": cfg.seed,
                                     "max_images_cpu": cfg.finetune_max_images_cpu, "force": cfg.finetune_force})


def finetune_device(cfg: RunConfig) -> str:
    """The image encoder's ``device`` option when given, else CUDA when present, else CPU."""
    from prodkg.adaptation.finetune import default_device

    return str(cfg.image_options.get("device") or default_device())


def check_finetune(cfg: RunConfig, products: pd.DataFrame) -> None:
    """Before anything is extracted: refuse fine-tuning on CPU above the image limit (ConfigError)."""
    if not cfg.finetune:
        return
    from prodkg.adaptation.finetune import check_image_budget

    n_images = sum(v is not None for v in modality_items(products, "image")) if len(products) else 0
    check_image_budget(n_images, finetune_device(cfg), finetune_config(cfg))


def finetune_stage(ext: ExtractOutput, cfg: RunConfig, source: list[str], models_dir: Path) -> tuple[ExtractOutput, dict]:
    """Fine-tune the image encoder's last block on the source categories and swap in its image features.

    Text features are untouched. The fine-tuned block goes to ``models_dir``; a run over the same
    images, labels and settings reuses the stored block and features (``reuse_heads``) instead of
    training again. Returns the new extract output and the record for the manifest.
    """
    if "image" not in ext.features.blocks or not ext.features.present["image"].any():
        return ext, {"ran": False, "reason": "no product has an image"}
    is_source = ext.products["domain"].isin(source).to_numpy(bool)
    present = np.asarray(ext.features.present["image"], bool)
    cats = ext.products["category"].astype(object).where(ext.products["category"].notna(), None).tolist()
    classes = sorted({c for c, s, p in zip(cats, is_source, present) if s and p and isinstance(c, str) and c})
    if len(classes) < 2:
        return ext, {"ran": False, "reason": f"the source domain has {len(classes)} category label(s) on products with images; fine-tuning needs at least 2"}
    # target labels (kept for evaluation) never reach fine-tuning: only source rows get a class
    labels = np.array([classes.index(c) if s and p and c in classes else -1 for c, s, p in zip(cats, is_source, present)], np.int64)
    is_target = ~is_source
    items = [item if p else None for item, p in zip(modality_items(ext.products, "image"), present)]
    fcfg = finetune_config(cfg)
    device = finetune_device(cfg)
    if "num_threads" not in cfg.finetune_options and device == "cpu":
        # as for the heads: on a small shared CPU one thread beats two (0.56 s against 1.3 s per 64-image step)
        fcfg.num_threads = 1
    options = dict(cfg.image_options)
    if device != "cpu":
        options["device"] = device  # on CPU the options stay as they are, so the extract stage's encoder is reused
    base = _encoder(cfg.image_encoder, json.dumps(options, sort_keys=True))
    key = _finetune_key(base.encoder_id, fcfg, device, ext.features.blocks["image"], present, labels, is_target)
    entry = cfg.cache_path / "finetune" / key
    models_dir.mkdir(parents=True, exist_ok=True)
    path = models_dir / FINETUNE_FILE
    info, features = _reuse_finetune(entry, base, path) if cfg.reuse_heads else (None, None)
    if info is None:
        from prodkg.adaptation.finetune import finetune_backbone

        result = finetune_backbone(base, items, labels, is_source, is_target, len(classes), fcfg, num_workers=cfg.num_workers,
                                   progress=cfg.progress and on_terminal())
        lost = sorted(set(np.flatnonzero(present)) - set(np.flatnonzero(result.ok)))
        if lost:
            raise StageError(f"fine-tuning could not read {len(lost)} image(s) that extraction read; first: {result.errors.get(lost[0])}")
        info = {**result.manifest(), "classes": classes, "reused": False}
        features = result.features
        result.encoder.save(path, **{k: info[k] for k in ("method", "epochs", "seed", "device", "images", "classes")})
        if cfg.reuse_heads:
            _store_finetune(entry, path, features, info)
    info["path"] = str(path)
    blocks = dict(ext.features.blocks)
    blocks["image"] = np.where(present[:, None], features, 0.0).astype(np.float32)
    from prodkg.adaptation import MultiModal

    stats = dict(ext.stats)
    stats["image"] = {**stats["image"], "encoder": f"{base.name}+finetuned", "encoder_id": info["encoder_id"],
                      "frozen_encoder_id": info["base_encoder_id"], "finetuned": True}
    new = ExtractOutput(products=ext.products, features=MultiModal(blocks=blocks, present=dict(ext.features.present)),
                        quarantine=ext.quarantine, stats=stats)
    return new, info


def _finetune_key(encoder_id: str, fcfg, device: str, frozen: np.ndarray, present: np.ndarray, labels: np.ndarray,
                  is_target: np.ndarray) -> str:
    """Content hash of what fine-tuning depends on; the frozen features stand for the images' contents."""
    import torch

    import prodkg

    h = hashlib.sha256(json.dumps({"encoder": encoder_id, "config": {k: v for k, v in fcfg.to_dict().items() if k not in {"force", "max_images_cpu", "num_threads"}},
                                   "device": str(device).split(":")[0], "torch": torch.__version__, "prodkg": prodkg.__version__}, sort_keys=True).encode())
    for arr in (np.ascontiguousarray(frozen, np.float32), present.astype(bool), labels.astype(np.int64), is_target.astype(bool)):
        h.update(arr.tobytes())
    return h.hexdigest()[:32]


def _reuse_finetune(entry: Path, base, path: Path) -> tuple[dict | None, np.ndarray | None]:
    if not (entry / "meta.json").is_file():
        return None, None
    from prodkg.extractors.image_cnn import FineTunedImageEncoder

    encoder = FineTunedImageEncoder.load(entry / FINETUNE_FILE, base)  # refuses a block of other base weights
    info = {**json.loads((entry / "meta.json").read_text(encoding="utf-8")), "reused": True}
    if info.get("encoder_id") != encoder.encoder_id:
        return None, None
    encoder.save(path, **{k: info.get(k) for k in ("method", "epochs", "seed", "device", "images", "classes")})
    return info, np.load(entry / "features.npy")


def _store_finetune(entry: Path, block_path: Path, features: np.ndarray, info: dict) -> None:
    """Written to a temporary folder and renamed into place, so a killed run never leaves half an entry."""
    import shutil

    tmp = entry.with_name(entry.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copyfile(block_path, tmp / FINETUNE_FILE)
    np.save(tmp / "features.npy", features)
    (tmp / "meta.json").write_text(json.dumps(info, default=str), encoding="utf-8")
    try:
        os.replace(tmp, entry)
    except OSError:  # another process stored the same key first: theirs is equally good
        shutil.rmtree(tmp, ignore_errors=True)


# --- adapt + predict -------------------------------------------------------------------


NO_VALUE = "(none)"  # the class of an attribute head for "this product has no such attribute"


@dataclass
class PredictOutput:
    predictions: pd.DataFrame  # product_id, task, value, confidence, model
    metrics: dict[str, dict]  # task -> metrics
    baseline: dict | None  # the baseline method's metrics on the category task
    models: list[dict]  # one per fitted head: model_id, task, method, path, details
    skipped: dict[str, str]  # task -> why it was not fitted
    # for the run report: a subsample of source and target products before and after adaptation
    embedding_sample: dict | None = None


def train_config(cfg: RunConfig, method: str):
    from prodkg.adaptation import TrainConfig

    overrides = {k: getattr(cfg, k) for k in ("epochs", "hidden", "lr", "tradeoff") if getattr(cfg, k) is not None}
    return TrainConfig(method=method, fusion=cfg.fusion, seed=cfg.seed, **overrides)


def _model_id(task: str, method: str, path: Path) -> str:
    """Model identity from its saved weights, so the same weights always get the same IRI."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*.pt") if p.is_file()) if path.is_dir() else [path]:
        digest.update(file.read_bytes())
    return f"{task}/{method}/{digest.hexdigest()[:12]}"


def predict_stage(products: pd.DataFrame, features, cfg: RunConfig, source: list[str], target: list[str], attributes: list[str], models_dir: Path,
                  taxonomy: list[tuple] | None = None) -> PredictOutput:
    """Fit the category head and one head per attribute with source labels; predict every target product;
    pick what is published (:func:`publish_task`: precision target or fixed threshold, back-off along ``taxonomy``,
    unknown products)."""
    from prodkg.extractors.extract import torch_threads

    # The heads are small MLPs: on 2 cores one thread is 30x faster than two under any other
    # load, because OpenMP workers spin on tiny matmuls.
    with torch_threads(1):
        return _predict(products, features, cfg, source, target, attributes, models_dir, taxonomy or [])


def _predict(products, features, cfg: RunConfig, source, target, attributes, models_dir: Path, taxonomy: list[tuple]) -> PredictOutput:
    from prodkg.prediction import fit_task
    from prodkg.prediction.reuse import features_digest, fit_or_reuse, task_key

    is_source = products["domain"].isin(source).to_numpy(bool)
    is_target = products["domain"].isin(target).to_numpy(bool)
    ids = products["product_id"].tolist()
    digest = features_digest(features)  # once per run, not once per head: it reads every feature
    models_dir.mkdir(parents=True, exist_ok=True)
    frames, metrics, models, skipped = [], {}, [], {}
    baseline = embedding_sample = None
    progress_log = run_logger() if cfg.progress else None
    n_heads = 1 + len(attributes)
    for task in ["category", *attributes]:
        labels = [v if isinstance(v, str) and v else None for v in products[task].astype(object).where(products[task].notna(), None).tolist()]
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
        tcfg = train_config(cfg, cfg.method)
        key = task_key(task, digest, labels, is_source, is_target, ids, tcfg.to_dict())
        result, reused = fit_or_reuse(cfg.cache_path if cfg.reuse_heads else None, key,
                                      lambda: fit_task(task, features, labels, is_source, is_target, ids, tcfg, progress=cfg.progress and on_terminal()))
        if progress_log is not None:
            progress_log.info(f"adapt-predict: fitted the {task} head ({len(models) + 1} of {n_heads} possible)")
        if task == "category":
            embedding_sample = sample_embeddings(features, result.model, is_source, is_target, seed=cfg.seed)
        path = models_dir / _safe(task)
        result.model.save(path)
        chosen = result.model.config.method  # differs from cfg.method when cfg.method is "auto"
        model_id = _model_id(task, chosen, path)
        other = None
        if task == "category" and cfg.baseline and cfg.baseline != cfg.method:
            bcfg = train_config(cfg, cfg.baseline)
            other, _ = fit_or_reuse(cfg.cache_path if cfg.reuse_heads else None, task_key(task, digest, labels, is_source, is_target, ids, bcfg.to_dict()),
                                    lambda: fit_task(task, features, labels, is_source, is_target, ids, bcfg, progress=False))
            baseline = other.metrics
        frame, publication = publish_task(result, other, cfg, task, model_id, labels, is_source, is_target, features,
                                          taxonomy if task == "category" else [])
        frames.append(frame[frame["value"] != NO_VALUE].reset_index(drop=True))
        metrics[task] = {**result.metrics, **publication}
        models.append({"model_id": model_id, "task": task, "method": chosen, "requested_method": cfg.method, "path": str(path),
                       "classes": result.labels.classes, "temperature": result.temperature, "details": result.model.describe()})
    columns = ["product_id", "task", "value", "confidence", "model", "level", "kind", "published"]
    predictions = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    return PredictOutput(predictions=predictions[columns], metrics=metrics, baseline=baseline, models=models, skipped=skipped,
                         embedding_sample=embedding_sample)


def publish_task(result, other, cfg: RunConfig, task: str, model_id: str, labels: list[str | None], is_source: np.ndarray,
                 is_target: np.ndarray, features, taxonomy: list[tuple]) -> tuple[pd.DataFrame, dict]:
    """One task's prediction rows (every back-off level, unknown products) and its publication record.

    The rule is :func:`prediction.publication.decide`: ``cfg.min_precision`` by the label-free estimate, or the
    fixed ``cfg.threshold``. Unknown products are scored for the category task only. Target labels, where the
    catalog has them, are read afterwards by :func:`prediction.publication.evaluate`, for the manifest and
    report only.
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
        unknown = score_unknown(subset(unit, src), np.array([labels[i] for i in src], dtype=object).astype(str), subset(unit, target_idx))
    other_probs = other.evidence.get("target_probs") if other is not None and other.labels.classes == classes else None
    decision = decide(ev["target_probs"], classes, source_probs=ev["source_probs"], source_labels=ev["source_labels"], taxonomy=taxonomy,
                      min_precision=cfg.min_precision, threshold=cfg.threshold, unknown=None if unknown is None else unknown.unknown,
                      other_probs=other_probs)
    frame = publication_frame(decision, result.predictions["product_id"].tolist(), task, model_id,
                              unknown_similarity=None if unknown is None else unknown.similarity)
    record: dict = {"publication": decision.summary()}
    if unknown is not None:
        record["unknown"] = unknown.manifest()
    truth = [labels[i] for i in target_idx]
    if any(t is not None for t in truth):  # evaluation only: nothing above read these
        evaluation = evaluate(decision, classes, taxonomy, truth, target_probs=ev["target_probs"])
        curve = evaluation.pop("risk_coverage", None)
        if curve:  # at most ~200 points in the manifest
            step = max(1, len(curve["coverage"]) // 200)
            curve = {k: (v[::step] + v[-1:] if isinstance(v, list) else v) for k, v in curve.items()}
        record["evaluation"] = {**evaluation, "risk_coverage": curve}
    return frame, record


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
               "estimated_precision": pub.get("estimated_precision"), "n_unknown": pub.get("n_unknown")}
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
    from prodkg.flows.report import fused_input

    rows = np.flatnonzero(np.asarray(is_source, bool) | np.asarray(is_target, bool))
    if len(rows) > limit:
        rows = np.sort(np.random.default_rng(seed).choice(rows, size=limit, replace=False))
    part = features.subset(rows)
    return {"is_target": np.asarray(is_target, bool)[rows], "before": fused_input(part), "after": np.asarray(model.embed(part), np.float32)}


def hide_target_labels(products: pd.DataFrame, target: list[str], columns: list[str]) -> pd.DataFrame:
    """A copy whose target-domain rows carry no label: those labels are for evaluation only."""
    out = products.copy()
    mask = out["domain"].isin(target)
    for col in columns:
        if col in out.columns:
            out.loc[mask, col] = None
    return out


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name) or "task"


# --- knowledge graph -------------------------------------------------------------------


def flat_taxonomy(products: pd.DataFrame, predictions: pd.DataFrame) -> list[tuple[str, str | None]]:
    labels = set(products["category"].dropna().astype(str))
    rows = predictions["task"] == "category"
    if "kind" in predictions.columns:  # an unknown prediction names no concept
        rows &= predictions["kind"].fillna("class") != "unknown"
    labels |= set(predictions.loc[rows, "value"].astype(str))
    return [(c, None) for c in sorted(labels)]


def graph_stage(products: pd.DataFrame, predictions: pd.DataFrame, taxonomy: list[tuple[str, str | None]], attributes: list[str],
                run_info, cfg: RunConfig, catalog_name: str, features=None) -> dict:
    """Build the run's quads, record what changed since the live graph, validate, publish atomically.

    A graph that violates the SHACL shapes is not published: the last good graph stays live,
    ``shacl_report.txt`` in the run directory says why, and StageError is raised.
    With ``features`` (the extract stage's MultiModal) it also writes ``embeddings.parquet``.
    """
    from prodkg.kb.incremental import (
        change_quads,
        diff_products,
        digest_quads,
        graph_input_digest,
        live_input_digest,
        product_hashes,
        stored_hashes,
    )
    from prodkg.kb.iri import DEFAULT_BASE
    from prodkg.kb.store import KnowledgeGraph
    from prodkg.errors import StoreError
    from prodkg.kb.triples import alt_label_quads, catalog_quads, prediction_quads, run_quads, taxonomy_quads
    from prodkg.prediction.reuse import features_digest

    base = cfg.base_iri or DEFAULT_BASE
    scheme = catalog_name
    run_dir = cfg.out_path / "runs" / run_info.run_id
    concepts = {t[0] for t in taxonomy}
    missing = sorted(set(flat_taxonomy(products, predictions)) - {(c, None) for c in concepts})
    taxonomy = list(taxonomy) + [m for m in missing if m[0] not in concepts]
    started = time.perf_counter()
    # the features decide the embeddings file the run publishes beside the graph
    features_hash = features_digest(features) if features is not None else None
    digest = graph_input_digest(products=products, predictions=predictions, taxonomy=taxonomy, catalog=catalog_name,
                                attributes=list(attributes), base=base, threshold=[cfg.threshold, cfg.min_precision], features=features_hash)
    kg = KnowledgeGraph(cfg.out_path / "kg")
    live_digest = content_run = None
    try:
        if kg.current_path() is not None:
            with kg.open(read_only=True) as live:
                if live.query("ASK { ?run pkg:runId ?id }", {"id": run_info.run_id}).boolean:
                    # a retry of this stage after the local publish succeeded (the server mirror failed):
                    # publishing again would count this run's own graph as the one before it
                    path = kg.current_path()
                    return {"quads": len(live), "store": str(path), "seconds": round(time.perf_counter() - started, 3),
                            "changes": _recorded_changes(live, run_info.run_id), "shacl": "conforms (published by an earlier attempt of this run)",
                            "server": _mirror_to_server(cfg, path, run_info.run_id)}
                live_digest, content_run = live_input_digest(live)
    except StoreError:
        pass  # a broken CURRENT pointer: the full build below repairs it

    if digest == live_digest and content_run is not None:
        # Nothing the graph is built from changed: the live graph already holds this run's content.
        # Publish it again plus this run's provenance (which names the run whose content it reuses),
        # instead of rebuilding, re-validating and re-loading every quad.
        quads = run_quads(run_info, base=base) + digest_quads(run_info.run_id, digest, informed_by=content_run, base=base)
        _validate_or_refuse(quads, run_dir)
        if features is not None:
            _reuse_embeddings(cfg.out_path / "runs" / content_run / "embeddings.parquet", run_dir / "embeddings.parquet", products, features)
        path = kg.publish_extension(quads, run_info.run_id)
        with kg.open(read_only=True) as published:
            total = len(published)
        server = _mirror_to_server(cfg, path, run_info.run_id)
        unchanged = {"added": 0, "changed": 0, "removed": 0, "unchanged": int(products["product_id"].nunique())}
        return {"quads": total, "quads_written": len(quads), "store": str(path), "seconds": round(time.perf_counter() - started, 3),
                "changes": unchanged, "shacl": "conforms (unchanged content; this run's provenance validated)",
                "reused_graph_of": content_run, "server": server}

    quads = []
    quads += taxonomy_quads(scheme, taxonomy, base=base)
    quads += alt_label_quads(scheme, taxonomy, base=base)
    catalog = catalog_quads(products, catalog=catalog_name, attributes=attributes, scheme=scheme, base=base, content_hash=True)
    quads += catalog
    quads += run_quads(run_info, base=base)
    quads += digest_quads(run_info.run_id, digest, base=base)
    quads += prediction_quads(predictions, run_info, catalog=catalog_name, scheme=scheme, threshold=cfg.threshold, base=base,
                              min_precision=cfg.min_precision if cfg.threshold is None else None)
    previous = None
    try:
        if kg.current_path() is not None:
            with kg.open(read_only=True) as live:
                previous = stored_hashes(live)
    except StoreError:
        previous = None  # a broken CURRENT pointer: this publish repairs it, and every product counts as added
    current = product_hashes(catalog)
    changes = diff_products(previous, current)
    quads += change_quads(run_info.run_id, catalog_name, changes, previous, current, base=base)
    _validate_or_refuse(quads, run_dir)
    if features is not None:
        write_embeddings(products, features, run_dir / "embeddings.parquet")
    path = kg.publish(quads, run_info.run_id)
    server = _mirror_to_server(cfg, path, run_info.run_id)
    return {"quads": len(quads), "store": str(path), "seconds": round(time.perf_counter() - started, 3),
            "changes": changes.counts(), "shacl": "conforms", "server": server}


def _validate_or_refuse(quads: list[tuple], run_dir: Path) -> None:
    """SHACL-validate what is about to be published; on a violation write ``shacl_report.txt`` and raise StageError."""
    from prodkg.kb.validation import validate_quads

    report = validate_quads(quads)
    if not report.conforms:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "shacl_report.txt").write_text(report.text, encoding="utf-8")
        raise StageError(f"graph not published, the last good graph stays live: {report.summary()} (full report: {run_dir / 'shacl_report.txt'})")


def _mirror_to_server(cfg: RunConfig, store_dir: Path, run_id: str) -> dict | None:
    """Copy the graph just published locally (the record) to cfg.store_url; StageError when the server was not updated."""
    if not cfg.store_url:
        return None
    from prodkg.kb.remote import mirror_to_server

    return mirror_to_server(store_dir, run_id, cfg.store_url, update_url=cfg.store_update_url, gsp_url=cfg.store_gsp_url)


def _recorded_changes(store, run_id: str) -> dict[str, int]:
    """Counts of the change records a run already published (for a retried graph stage)."""
    rows = store.query(
        "SELECT ?type (COUNT(?c) AS ?n) ?id WHERE { ?c a pkg:Change ; pkg:changeType ?type ; prov:wasGeneratedBy ?r . "
        "?r pkg:runId ?id } GROUP BY ?type ?id", {"id": run_id}).rows
    counts = {"added": 0, "changed": 0, "removed": 0}
    counts.update({str(r[0]): int(r[1]) for r in rows})
    return counts


def _reuse_embeddings(previous: Path, path: Path, products: pd.DataFrame, features) -> None:
    """Link the content run's embeddings file into this run's directory (same inputs, same vectors), or write it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(previous, path)
    except OSError:
        write_embeddings(products, features, path)


def write_embeddings(products: pd.DataFrame, features, path: Path) -> int:
    """One vector per product for similarity exports: its modalities' features, each L2-normalised, concatenated.

    An absent modality contributes zeros, so products compare on what they have.
    """
    blocks = []
    for modality in sorted(features.blocks):
        block = np.asarray(features.blocks[modality], dtype=np.float32)
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        block = np.divide(block, norms, out=np.zeros_like(block), where=norms > 0)
        present = np.asarray(features.present[modality], dtype=bool)
        blocks.append(block * present[:, None])
    if not blocks or len(products) != len(blocks[0]):
        raise StageError(f"write_embeddings: {len(products)} products but features for {len(blocks[0]) if blocks else 0}")
    matrix = np.concatenate(blocks, axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"product_id": products["product_id"].astype(str).tolist(), "vector": list(matrix)}).to_parquet(path, index=False)
    return len(matrix)
