"""Batch feature extraction: hash items, reuse cached vectors, encode the rest through a DataLoader."""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from prodkg.extractors.base import MODALITIES, Encoder, ItemError, LazyEncoder, read_bytes
from prodkg.extractors.cache import FeatureCache
from prodkg.extractors.sources import ImageLimits, SourceRefused, check_local, current_limits, file_url_path, using_limits
from prodkg.memory import mapped_zeros

# Hashing image files is I/O bound (and hashlib drops the GIL on large buffers), so a few threads help,
# most of all for remote URLs.
_HASH_THREADS = 8
# A file whose mtime or ctime is this close to the moment it was hashed may still be being written within the
# file system's timestamp granularity ("racy git"): its digest is not remembered, so the next run reads it again.
_RACY_NS = 2_000_000_000


def content_hash(item: str, modality: str, limits: ImageLimits | None = None) -> str:
    """sha256 hex of an item's content: an image's file bytes (path or fsspec URL) or a text's UTF-8 bytes.

    Raises:
        ItemError: the image cannot be read (missing file, unreachable URL, permission denied) or ``limits``
            (default: the context's, see :mod:`prodkg.extractors.sources`) refuse it.
        ValueError: ``modality`` is not ``"image"`` or ``"text"``.
    """
    if modality == "image":
        return hashlib.sha256(read_bytes(item, limits)).hexdigest()
    if modality == "text":
        if not isinstance(item, str):
            raise ItemError(f"text item must be a string, got {type(item).__name__}")
        return hashlib.sha256(item.encode("utf-8")).hexdigest()
    raise ValueError(f"modality must be one of {', '.join(MODALITIES)}, got {modality!r}")


@dataclass
class ExtractResult:
    """Features of one extraction, row-aligned with the items given.

    Attributes:
        features: ``(N, dim)`` float32; rows that are not ok are zeros.
        ok: ``(N,)`` bool; False for failed items and for absent ones (``None`` / empty).
        errors: row index -> why that item failed; absent items are not errors.
        n_computed: distinct contents encoded in this call.
        n_cached: rows served from the cache.
        encoder_id: identity of the encoder (model, weights, preprocessing, precision).
        seconds: wall time of the call.
    """

    features: np.ndarray
    ok: np.ndarray
    errors: dict[int, str] = field(default_factory=dict)
    n_computed: int = 0
    n_cached: int = 0
    encoder_id: str = ""
    seconds: float = 0.0

    @property
    def n_ok(self) -> int:
        return int(self.ok.sum())

    @property
    def n_failed(self) -> int:
        return len(self.errors)


class _ItemDataset(Dataset):
    """One entry per distinct content still to encode; load failures travel as values, not exceptions."""

    def __init__(self, encoder: Encoder, items: Sequence[str], limits: ImageLimits | None = None) -> None:
        self.encoder = encoder
        self.items = items
        self.limits = limits  # pickled with the dataset, so DataLoader workers read under the same limits

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[int, Any, str | None]:
        try:
            with using_limits(self.limits):
                return index, self.encoder.load_item(self.items[index]), None
        except ItemError as exc:
            return index, None, str(exc)


def _collate(samples: list[tuple[int, Any, str | None]]) -> tuple[list[int], list[Any], dict[int, str]]:
    """Keep the loaded items of a batch together and set the failed ones aside with their reasons."""
    indices, loaded, failed = [], [], {}
    for index, value, error in samples:
        if error is None:
            indices.append(index)
            loaded.append(value)
        else:
            failed[index] = error
    return indices, loaded, failed


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with ``n`` torch intra-op threads, then restore the previous count (None: leave as is)."""
    if n is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _is_absent(item: Any) -> bool:
    # a float NaN is how pandas spells a missing cell in an object column
    if item is None:
        return True
    if isinstance(item, str):
        return not item.strip()
    return isinstance(item, float) and math.isnan(item)


def stat_signature(st: os.stat_result) -> str:
    """What must be unchanged for a file's remembered content hash to stand: device, inode, size, and the
    modification and change times in nanoseconds (ctime cannot be set back by a user, so a rewrite that restores
    size and mtime still shows)."""
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def _local_path(item: str) -> str | None:
    """The local path an image item names (a path or a ``file:`` URL), else None (a remote URL, a refused one)."""
    if "://" not in item[:16]:
        return item
    if urlsplit(item).scheme.lower() != "file":
        return None
    try:
        return file_url_path(item)
    except SourceRefused:
        return None


def _hash_all(items: list[tuple[int, str]], modality: str, limits: ImageLimits | None = None,
              memo: FeatureCache | None = None) -> tuple[dict[int, str], dict[int, str]]:
    """Row -> content hash for readable items, row -> reason for the rest.

    Each distinct item is hashed once: a catalog that shows one photo on many products reads the file once per
    call (a synthetic 200 k catalog names 7,325 distinct photos on 19,980 rows), not once per row.

    ``memo``: a cache whose :meth:`~prodkg.extractors.cache.FeatureCache.file_digests` remember local image files'
    hashes by stat signature. A file that passes the same checks as a read (allowed folder, regular file, byte
    cap) and whose signature is unchanged keeps its remembered hash without being read; the others are read,
    and remembered for the next call. A nightly re-run of a 1 M catalog spent 18.7 s reading its 8,009 distinct
    photos again (a tenth of its extract stage) only to find them unchanged. Skipped reads spend none of the run's
    image budget."""
    rows_of: dict[str, list[int]] = {}
    for row, item in items:
        rows_of.setdefault(item, []).append(row)
    distinct = list(rows_of)

    local: dict[str, tuple[str, str, int]] = {}  # item -> (real path, stat signature, newer of mtime/ctime) of files that pass the checks
    known: dict[str, tuple[str, str]] = {}
    if memo is not None and modality == "image":
        for item in distinct:
            path = _local_path(item) if isinstance(item, str) else None
            if path is None:
                continue
            try:
                real, st = check_local(path, limits)
            except (SourceRefused, OSError):
                continue  # the read below refuses it with its reason
            local[item] = (real, stat_signature(st), max(st.st_mtime_ns, st.st_ctime_ns))
        known = memo.file_digests(real for real, _, _ in local.values())
    learned: dict[str, tuple[str, str]] = {}

    def one(item: str) -> tuple[str | None, str | None]:
        where = local.get(item)
        if where is not None:
            real, signature, _ = where
            remembered = known.get(real)
            if remembered is not None and remembered[0] == signature:
                return remembered[1], None
        try:
            digest = content_hash(item, modality, limits)
        except ItemError as exc:
            return None, str(exc)
        if where is not None and time.time_ns() - where[2] > _RACY_NS:
            learned[where[0]] = (where[1], digest)  # the signature taken before the read: a file changed since differs
        return digest, None

    if modality == "image" and len(distinct) > 32:
        with ThreadPoolExecutor(max_workers=_HASH_THREADS) as pool:
            results = list(pool.map(one, distinct))
    else:
        results = [one(x) for x in distinct]
    if memo is not None and learned:
        memo.put_file_digests(learned)
    hashes: dict[int, str] = {}
    errors: dict[int, str] = {}
    for item, (digest, error) in zip(distinct, results, strict=True):
        for row in rows_of[item]:
            if digest is not None:
                hashes[row] = digest
            else:
                errors[row] = error or "unreadable"
    return hashes, errors


def extract_features(
    items: Sequence[str | None],
    encoder: Encoder | LazyEncoder,
    *,
    cache: FeatureCache | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = True,
    num_threads: int | None = None,
    limits: ImageLimits | None = None,
    on_progress: Callable[[int], None] | None = None,
    stat_memo: bool = True,
) -> ExtractResult:
    """Encode every item with ``encoder``, reusing and filling ``cache``.

    Items are image paths/URLs for image encoders, texts for text encoders;
    ``None`` or an empty string means "this product has no such modality" and
    gives ``ok=False`` without an error. Identical contents are encoded once;
    one unreadable item never fails its batch. Texts are encoded longest first
    so each batch pads to similar lengths; rows keep the order of ``items``.

    Args:
        items: one entry per product.
        encoder: any registered :class:`Encoder`, or a :class:`LazyEncoder`, whose model is then built only
            if some item is not in ``cache`` (a re-run over an unchanged catalog never builds it).
        cache: where vectors are looked up first and stored after.
        batch_size: items per forward pass.
        num_workers: DataLoader worker processes decoding images (0: in this process).
        progress: show a tqdm bar over the items being encoded.
        num_threads: torch intra-op threads while encoding (restored afterwards); None keeps torch's
            setting. On a CPU shared with other jobs, fewer threads than cores is faster: EfficientNet-Lite0
            on 8 images took 0.35-0.48 s with 1 thread and 1.0-2.0 s with 2 on a loaded 2-core machine.
        limits: where images may be read from and how much (:class:`~prodkg.extractors.sources.ImageLimits`);
            default: the context's (:func:`~prodkg.extractors.sources.using_limits`), else the defaults
            (byte and pixel caps, URL timeouts, no devices or FIFOs, but any local folder).
        on_progress: called with a count of items done: once for those found in the cache or absent, then after
            each batch (so a caller can show progress over one call, whose missing items form whole batches).
        stat_memo: with a ``cache``, trust a local image file's remembered content hash while its stat signature
            (device, inode, size, mtime, ctime) is unchanged, instead of reading the file again; False reads every
            file (``--full-check``).

    Returns:
        An :class:`ExtractResult` aligned with ``items``.
    """
    start = time.perf_counter()
    if not isinstance(encoder, (Encoder, LazyEncoder)):
        raise TypeError(f"encoder must be an extractors.Encoder or LazyEncoder, got {type(encoder).__name__}")
    if isinstance(items, (str, bytes)):
        raise TypeError("items must be a sequence of items, got a single string")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be a non-negative integer, got {num_workers!r}")
    if num_threads is not None and (not isinstance(num_threads, int) or num_threads < 1):
        raise ValueError(f"num_threads must be a positive integer or None, got {num_threads!r}")
    items = list(items)
    n = len(items)
    features = mapped_zeros((n, encoder.dim), np.float32)  # kept until the shards are stacked: never in the heap
    ok = np.zeros(n, dtype=bool)

    present = [(row, item) for row, item in enumerate(items) if not _is_absent(item)]
    if limits is None and encoder.modality == "image":
        limits = current_limits()  # fixed now: the hashing threads and DataLoader workers do not share this context
    hashes, errors = _hash_all(present, encoder.modality, limits, memo=cache if stat_memo else None)

    rows_by_hash: dict[str, list[int]] = {}
    for row, digest in hashes.items():
        rows_by_hash.setdefault(digest, []).append(row)

    n_cached = 0
    if cache is not None and rows_by_hash:
        for found, block in cache.read_blocks(encoder.encoder_id, list(rows_by_hash), encoder.dim):
            # one fancy-indexed copy per block: identical contents (several rows per hash) repeat their vector
            where: list[int] = []
            which: list[int] = []
            for j, digest in enumerate(found):
                rows = rows_by_hash.pop(digest)
                where += rows
                which += [j] * len(rows)
            features[where] = block[which]
            ok[where] = True
            n_cached += len(where)

    if on_progress is not None:
        on_progress(n - sum(len(rows) for rows in rows_by_hash.values()))  # cached, absent or unreadable
    # one representative item per distinct content still missing
    todo_hashes = list(rows_by_hash)
    todo_items = [items[rows_by_hash[h][0]] for h in todo_hashes]
    if encoder.modality == "text" and todo_items:
        order = sorted(range(len(todo_items)), key=lambda i: len(todo_items[i]), reverse=True)
        todo_hashes = [todo_hashes[i] for i in order]
        todo_items = [todo_items[i] for i in order]

    n_computed = 0
    if todo_items:
        if isinstance(encoder, LazyEncoder):
            encoder = encoder.load()
        loader = DataLoader(
            # the bytes were counted against the run's budget when hashed: decoding reads them again, uncounted
            _ItemDataset(encoder, todo_items, None if limits is None else replace(limits, budget_bytes=None, budget_seconds=None)),
            batch_size=batch_size,
            shuffle=False,
            num_workers=num_workers,
            collate_fn=_collate,
            pin_memory=encoder.device.type == "cuda",
            persistent_workers=False,
        )
        with (
            torch_threads(num_threads),
            tqdm(total=len(todo_items), disable=not progress, desc=f"extract {encoder.name}", unit="item") as bar,
        ):
            for indices, loaded, failed in loader:
                for index, reason in failed.items():
                    for row in rows_by_hash[todo_hashes[index]]:
                        errors[row] = reason
                if loaded:
                    vectors = encoder.encode_batch(loaded)
                    if vectors.shape != (len(loaded), encoder.dim):
                        raise RuntimeError(
                            f"{encoder.encoder_id}: encode_batch returned shape {vectors.shape}, "
                            f"expected {(len(loaded), encoder.dim)}"
                        )
                    fresh: dict[str, np.ndarray] = {}
                    for index, vec in zip(indices, vectors, strict=True):
                        rows = rows_by_hash[todo_hashes[index]]
                        if not np.isfinite(vec).all():  # never cache a broken vector
                            for row in rows:
                                errors[row] = "encoder produced non-finite values"
                            continue
                        features[rows] = vec
                        ok[rows] = True
                        fresh[todo_hashes[index]] = vec
                    n_computed += len(loaded)
                    # written per batch so an interrupted run keeps what it already paid for
                    if cache is not None and fresh:
                        cache.put_many(encoder.encoder_id, fresh)
                bar.update(len(indices) + len(failed))
                if on_progress is not None:
                    on_progress(sum(len(rows_by_hash[todo_hashes[i]]) for i in (*indices, *failed)))

    return ExtractResult(
        features=features,
        ok=ok,
        errors=dict(sorted(errors.items())),
        n_computed=n_computed,
        n_cached=n_cached,
        encoder_id=encoder.encoder_id,
        seconds=time.perf_counter() - start,
    )

