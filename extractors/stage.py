"""The extract stage: products → one feature vector per product and modality, cached by content hash + encoder id."""

from __future__ import annotations

import functools
import json
import os
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from prodkg.blocks import PACK_AT_MOST, PackedBlock, take_rows
from prodkg.errors import StageError
from prodkg.extractors.cache import FeatureCache
from prodkg.memory import mapped_zeros, trim_heap
from prodkg.progress import Progress

__all__ = ["ExtractOutput", "ExtractSettings", "SourceViews", "assemble_features", "encoder_for", "extract_shard", "extract_source_views", "release_encoders",
           "shards"]


@dataclass(frozen=True)
class ExtractSettings:
    """Which encoders run and how: the slice of the run configuration the extract stage needs."""

    image_encoder: str = "efficientnet_lite0"
    text_encoder: str = "minilm"
    image_options: dict[str, Any] = field(default_factory=dict)
    text_options: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 64
    num_workers: int = 0
    progress: bool = True
    image_limits: object | None = None  # an extractors.sources.ImageLimits: which image files and URLs may be read, and how much
    stat_memo: bool = True  # trust an image file's remembered hash while its stat signature is unchanged (False: --full-check)

    def encoder(self, modality: str) -> tuple[str, dict[str, Any]]:
        """The encoder name and options of ``modality``."""
        if modality == "image":
            return self.image_encoder, dict(self.image_options)
        return self.text_encoder, dict(self.text_options)


@functools.lru_cache(maxsize=4)
def shared_encoder(name: str, options_json: str):
    """One model per (name, options) and process, shared by extraction and fine-tuning."""
    from prodkg.extractors import get_encoder

    return get_encoder(name, **json.loads(options_json))


def release_encoders() -> None:
    """Drop the models :func:`shared_encoder` keeps, and give their memory back (a later call loads them again).

    A run is done with them once its features (and any fine-tuning and source views) are made: MiniLM and what
    encoding left behind held about 0.8 GiB through the heads and the graph stage of a 1 M run."""
    import gc

    shared_encoder.cache_clear()
    gc.collect()
    trim_heap()


def encoder_for(settings: ExtractSettings, modality: str):
    """The encoder for ``modality`` as a LazyEncoder: its cache identity now, from weight-file digests;
    its model (the one :func:`shared_encoder` shares with fine-tuning) only when a shard has something to encode."""
    from prodkg.extractors import LazyEncoder

    name, options = settings.encoder(modality)
    options_json = json.dumps(options, sort_keys=True)
    return LazyEncoder(name, json.loads(options_json), build=lambda: shared_encoder(name, options_json))


# One shard at a time per process: Prefect's default runner starts shards on threads, and both the
# first import of transformers and the model itself are not safe to share between concurrent threads
# (a torch forward already uses every core). Dask workers are separate processes, each with its own lock.
_EXTRACT_LOCK = threading.Lock()


def extract_shard(items: list[str | None], settings: ExtractSettings, modality: str, cache: FeatureCache, encoder=None) -> dict:
    """Features of one shard of products for one modality (cached by content hash + encoder id).

    ``encoder``: an encoder already built (a fine-tuned one) instead of the settings' own.
    """
    with _EXTRACT_LOCK:
        return _extract_shard(items, settings, modality, cache, encoder)


def _extract_shard(items: list[str | None], settings: ExtractSettings, modality: str, cache: FeatureCache, encoder=None) -> dict:
    from prodkg.extractors import extract_features
    from prodkg.extractors.extract import _is_absent

    encoder = encoder if encoder is not None else encoder_for(settings, modality)
    # Only the items the shard has are encoded, into an array of their own (``rows`` says whose they are): a photo
    # on a tenth of the products made a shard's array 90 % zeros, with each vector's two or three pages resident
    # among them (0.85 GiB over a million products for 0.48 GiB of vectors) until the shards were stacked.
    given = [i for i, item in enumerate(items) if not _is_absent(item)]
    rows = None if len(given) == len(items) else np.asarray(given, np.int64)
    wanted = items if rows is None else [items[i] for i in given]
    # One call for the whole shard, so the items missing from the cache form whole batches: on a nightly re-run they
    # are a few in every hundred, and split into steps they made batches of a few items each, which encoded MiniLM
    # titles about 6x slower than full batches. Progress is reported per batch instead.
    with Progress(len(wanted), f"extract {modality} ({encoder.name})", enabled=settings.progress) as bar:
        result = extract_features(wanted, encoder, cache=cache, batch_size=settings.batch_size, num_workers=settings.num_workers,
                                  progress=False, limits=settings.image_limits if modality == "image" else None, on_progress=bar.update,
                                  stat_memo=settings.stat_memo)
    features = result.features  # the one call's own array (on a mapping of its own): no copy
    ok = result.ok
    if rows is not None:  # back to the shard's rows
        ok = np.zeros(len(items), bool)
        ok[rows] = result.ok
    return {
        "features": features,
        "rows": rows,  # the shard's rows ``features`` holds, in order (None: every row)
        "ok": ok,
        "errors": {int(i if rows is None else rows[i]): reason for i, reason in result.errors.items()},
        "n_computed": result.n_computed,
        "n_cached": result.n_cached,
        "n_absent": len(items) - len(given),
        "encoder_id": result.encoder_id,
        "seconds": result.seconds,
        "dim": int(features.shape[1]),
        "encoder": encoder.name,
        "precision": encoder.precision,  # resolved ("auto" → fp32 or bf16); `prodkg predict` pins it for new rows
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
    """Join per-shard results into one MultiModal; products whose given image failed are quarantined.

    Each shard's ``features`` array is moved into the output (popped from its dict as it is copied), so the
    vectors are held once: at a million products of 384 dimensions the shards and their concatenation
    together held 2.9 GiB, and the shards stayed alive as long as the caller kept ``results``.
    """
    from prodkg.adaptation import MultiModal
    from prodkg.contracts import QUARANTINE

    blocks, present, stats, bad = {}, {}, {}, {}
    for modality, parts in results.items():
        if not parts:
            continue
        feats = _stack_moving(parts)
        ok = np.concatenate([p["ok"] for p in parts]) if parts else np.zeros(0, bool)
        offset = 0
        for p in parts:
            for i, reason in p["errors"].items():
                bad.setdefault(offset + int(i), []).append(f"{modality}: {reason}")
            offset += len(p["ok"])
        blocks[modality], present[modality] = feats if isinstance(feats, PackedBlock) else feats.astype(np.float32, copy=False), ok
        stats[modality] = {
            "encoder": parts[0]["encoder"] if parts else None,
            "encoder_id": parts[0]["encoder_id"] if parts else None,
            "precision": parts[0].get("precision") if parts else None,
            "dim": int(feats.shape[1]) if feats.ndim == 2 else 0,
            "computed": int(sum(p["n_computed"] for p in parts)),  # distinct contents encoded
            "cached": int(sum(p["n_cached"] for p in parts)),  # products served from the cache
            "failed": int(sum(len(p["errors"]) for p in parts)),
            "absent": int(sum(p.get("n_absent", 0) for p in parts)),  # products without this modality
            "products": int(len(ok)),
            "present": int(ok.sum()),
            "seconds": round(sum(p["seconds"] for p in parts), 3),
            "shards": len(parts),
            "workers": sorted({str(p.get("worker")) for p in parts}),  # host:pid of each process that extracted a shard
        }
    for st in stats.values():
        # products whose vector was encoded in this run (several products may share one content)
        st["computed_products"] = st["products"] - st["cached"] - st["absent"] - st["failed"]
    keep = np.ones(len(products), dtype=bool)
    keep[list(bad)] = False
    rows = []
    for i in sorted(bad):
        rec = products.iloc[i]
        rows.append({"stage": "extract", "source_row": int(rec["source_row"]), "product_id": rec["product_id"], "reason": "; ".join(bad[i]),
                     "raw": json.dumps({"image": rec["image"], "title": rec["title"]}, default=str)[:4000]})
    quarantine = pd.DataFrame(rows, columns=QUARANTINE.columns)
    idx = np.flatnonzero(keep)
    if keep.all():  # nothing quarantined: no copy
        features = MultiModal(blocks=blocks, present=present)
    else:
        features = MultiModal(blocks={m: take_rows(b, idx) for m, b in blocks.items()},
                              present={m: p[idx] for m, p in present.items()})
    if not features.modalities or not any(p.any() for p in features.present.values()):
        raise StageError("no product has any usable modality after extraction")
    return ExtractOutput(products=products.iloc[idx].reset_index(drop=True), features=features, quarantine=quarantine, stats=stats)


def _stack_moving(parts: list[dict]) -> np.ndarray | PackedBlock:
    """The shards' ``features`` stacked into one float32 array, each popped from its shard once copied.

    Only the rows a shard encoded (``ok``) are copied: the others are zeros (absent or failed items), and on a
    mapping of their own they stay untouched pages that hold no memory. A modality at most
    :data:`~prodkg.blocks.PACK_AT_MOST` of the products have is stacked packed (:class:`~prodkg.blocks.PackedBlock`,
    its encoded rows only): a million products, 10 % with a photo, held a 5 GB block of Lite0 vectors, 90 % of it
    zeros (peak RSS 12.6 GiB), and with the zeros left untouched each scattered row still kept two or three pages
    resident (about 0.9 GiB for 0.48 GiB of vectors)."""
    arrays = [p["features"] for p in parts]
    widths = {a.shape[1] for a in arrays if a.ndim == 2}
    if len(widths) != 1 or any(a.ndim != 2 for a in arrays):
        raise StageError(f"extract shards disagree on the feature shape: {sorted({a.shape[1:] for a in arrays})}")
    del arrays
    n, width = sum(len(p["ok"]) for p in parts), widths.pop()
    held = sum(int(np.count_nonzero(p["ok"])) for p in parts)
    packed = bool(n) and held <= PACK_AT_MOST * n
    out = mapped_zeros((held if packed else n, width), np.float32)
    rows = np.empty(held, np.int64) if packed else None  # packed: the product row of each of ``out``'s rows
    offset = at = 0
    for k, p in enumerate(parts, start=1):
        block = p.pop("features")
        where, dest = _encoded(p)
        if packed:
            rows[at:at + len(dest)] = offset + dest
            out[at:at + len(dest)] = block[where]
            at += len(dest)
        elif len(where) == len(block) == len(p["ok"]):
            out[offset:offset + len(block)] = block
        else:
            out[offset + dest] = block[where]
        offset += len(p["ok"])
        del block
        if k % 32 == 0:  # freed shards stay in the heap until trimmed: without this the stack peaked at twice the vectors
            trim_heap()
    trim_heap()
    return PackedBlock(rows, out, n) if packed else out


def _encoded(part: dict) -> tuple[np.ndarray, np.ndarray]:
    """A shard's encoded rows: their positions in its ``features`` array and their rows in the shard."""
    rows = part.get("rows")
    if rows is None:  # the array has a row per product
        dest = np.flatnonzero(part["ok"])
        return dest, dest
    at = np.flatnonzero(part["ok"][rows])
    return at, rows[at]


@dataclass
class SourceViews:
    """Augmented views of source products: extra labelled training rows, never products of their own.

    ``features`` has the products' modalities: the image block holds the views' vectors, every other block the
    product's own (its description is the same whatever the photo). ``of[i]`` is the row of the extract output's
    products view ``i`` was made from (its group: a hold-out keeps a product's views with it), ``view[i]`` its index.
    """

    features: object  # adaptation.MultiModal
    of: np.ndarray
    view: np.ndarray
    stats: dict

    def __len__(self) -> int:
        return len(self.of)


def extract_source_views(ext: ExtractOutput, settings: ExtractSettings, source: list[str], cache: FeatureCache, k: int,
                         seed: int = 0) -> SourceViews | None:
    """``k`` shelf-style views (extractors.augment) of every source product's image, encoded by the run's image
    encoder through the feature cache. Backgrounds and clutter come from source images only. None when no
    source product has an image."""
    from prodkg.adaptation import MultiModal
    from prodkg.catalogs.stage import modality_items
    from prodkg.extractors.views import extract_views

    if "image" not in ext.features.blocks:
        return None
    is_source = ext.products["domain"].isin(source).to_numpy(bool)
    present = np.asarray(ext.features.present["image"], bool)
    items = [item if s and p else None for item, s, p in zip(modality_items(ext.products, "image"), is_source, present)]
    if not any(items):
        return None
    encoder = encoder_for(settings, "image")
    with _EXTRACT_LOCK, Progress(1, f"source views ({k} per image)", enabled=settings.progress) as bar:
        res = extract_views(items, encoder, k, seed=seed, cache=cache, batch_size=min(settings.batch_size, 32),
                            limits=settings.image_limits, stat_memo=settings.stat_memo)
        bar.update(1)
    if res.errors:  # read once by extraction, so a failure here is a change under the run's feet
        row, reason = next(iter(res.errors.items()))
        raise StageError(f"could not make views of {len(res.errors)} source image(s) that extraction read; first: {reason}")
    blocks = {m: (res.features if m == "image" else b[res.of]) for m, b in ext.features.blocks.items()}
    has = {m: (np.ones(len(res.of), bool) if m == "image" else p[res.of]) for m, p in ext.features.present.items()}
    stats = {"views_per_image": k, "images": int(len(set(res.of.tolist()))), "views": int(len(res.of)), "computed": res.n_computed,
             "cached": res.n_cached, "spec_id": res.spec_id, "encoder_id": res.encoder_id, "seed": seed, "seconds": round(res.seconds, 3)}
    return SourceViews(features=MultiModal(blocks=blocks, present=has), of=res.of, view=res.view, stats=stats)
