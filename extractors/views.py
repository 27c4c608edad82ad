"""Features of shelf-style augmented views of source images (extractors.augment), cached like any other feature.

A view's cache key is a hash of the image's content hash, the augmentation's spec id, the run seed, the view
index and the content hashes of the other products it was composed with, stored under the encoder's own
``encoder_id`` in :class:`~prodkg.extractors.cache.FeatureCache`: a re-run over the same images and settings
encodes nothing, and a view is never mistaken for a plain photo (their keys are hashes of different strings).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from prodkg.extractors.augment import ShelfAugment, pick_others, view_seed
from prodkg.extractors.base import Encoder, ItemError, LazyEncoder, decode_image
from prodkg.extractors.cache import FeatureCache
from prodkg.extractors.extract import _hash_all, _is_absent, torch_threads
from prodkg.extractors.sources import ImageLimits, current_limits

__all__ = ["POOL_SIZE", "ViewResult", "background_pool", "extract_views", "view_key"]

#: at most this many source images serve as backgrounds and clutter (the same ones for every view)
POOL_SIZE = 64


@dataclass
class ViewResult:
    """Features of the views, one row per (item, view), items in order and views in order within an item.

    Attributes:
        features: ``(M, dim)`` float32.
        of: ``(M,)`` the row of ``items`` each view was made from (views of one product share it: its group).
        view: ``(M,)`` the view index, ``0 .. k-1``.
        errors: row of ``items`` -> why it has no views (unreadable image); absent items are not errors.
        n_computed, n_cached: views encoded in this call / served from the cache.
        encoder_id, spec_id: the encoder's identity and the augmentation's.
    """

    features: np.ndarray
    of: np.ndarray
    view: np.ndarray
    errors: dict[int, str] = field(default_factory=dict)
    n_computed: int = 0
    n_cached: int = 0
    encoder_id: str = ""
    spec_id: str = ""
    seconds: float = 0.0


def background_pool(hashes: Iterable[str], size: int = POOL_SIZE) -> list[str]:
    """The images (content hashes) views draw backgrounds and clutter from: the ``size`` of smallest rehash.

    Chosen by a hash of the content, not by position, so a new product enters the pool only if it ranks
    among them and most views keep their backgrounds.
    """
    return sorted(set(hashes), key=lambda h: hashlib.sha256(("pool|" + h).encode()).digest())[:size]


def view_key(content_hash: str, spec_id: str, seed: int, view: int, others: Sequence[str]) -> str:
    """The cache key of one view (see the module docstring)."""
    body = f"view|{content_hash}|{spec_id}|{seed}|{view}|{','.join(others)}"
    return hashlib.sha256(body.encode()).hexdigest()


def _prepare(encoder: Encoder, pixels: torch.Tensor) -> torch.Tensor:
    """``(3, H, W)`` uint8 pixels -> the encoder's input tensor, as :meth:`Encoder.load_item` prepares a file."""
    tensor_transform = getattr(encoder, "tensor_transform", None)
    if tensor_transform is not None and getattr(encoder, "decoder", "pil") != "pil":
        return tensor_transform(pixels)
    from PIL import Image

    return encoder.transform(Image.fromarray(pixels.permute(1, 2, 0).numpy()))


def extract_views(
    items: Sequence[str | None],
    encoder: Encoder | LazyEncoder,
    k: int,
    *,
    seed: int = 0,
    spec: ShelfAugment | None = None,
    cache: FeatureCache | None = None,
    batch_size: int = 32,
    pool_size: int = POOL_SIZE,
    num_threads: int | None = None,
    limits: ImageLimits | None = None,
    progress: bool = False,
    stat_memo: bool = True,
) -> ViewResult:
    """Encode ``k`` shelf-style views of every image in ``items`` with ``encoder``, reusing and filling ``cache``.

    Backgrounds and clutter come from ``items`` themselves (a pool of at most ``pool_size`` of them): pass
    source images only, never target ones. Absent items (None, empty) get no views; unreadable ones neither,
    with their reason in ``errors``.

    Args:
        items: image paths or URLs, one per product.
        encoder: an image encoder (a :class:`LazyEncoder` is built only if some view is not cached).
        k: views per image (>= 1).
        seed: the run seed; views differ between seeds and are the same for one.
        spec: the augmentation (default :class:`ShelfAugment`'s defaults).
        cache: where views' vectors are looked up first and stored after.
        stat_memo: trust a local image's remembered content hash while its stat signature is unchanged
            (see :func:`~prodkg.extractors.extract.extract_features`).
    """
    start = time.perf_counter()
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if encoder.modality != "image":
        raise ValueError(f"views are made of images; {encoder.name} is a {encoder.modality} encoder")
    spec = spec or ShelfAugment()
    spec_id = spec.spec_id()
    items = list(items)
    limits = limits or current_limits()
    present = [(row, item) for row, item in enumerate(items) if not _is_absent(item)]
    hashes, errors = _hash_all(present, "image", limits, memo=cache if stat_memo else None)
    item_of_hash = {h: items[row] for row, h in sorted(hashes.items(), reverse=True)}  # first row wins
    pool = background_pool(hashes.values(), pool_size)

    rows = sorted(hashes)
    plan: list[tuple[int, int, str, int, list[str]]] = []  # row, view, key, view seed, others
    for row in rows:
        h = hashes[row]
        for v in range(k):
            vs = view_seed(h, spec_id, seed, v)
            others = pick_others(h, pool, vs, spec.n_others)
            plan.append((row, v, view_key(h, spec_id, seed, v, others), vs, others))
    keys = list(dict.fromkeys(p[2] for p in plan))
    found = cache.get_many(encoder.encoder_id, keys) if cache is not None and keys else {}
    found = {key: vec for key, vec in found.items() if vec.shape == (encoder.dim,)}
    n_cached = sum(1 for p in plan if p[2] in found)

    todo: dict[str, tuple[int, int, list[str]]] = {}
    for row, _v, key, vs, others in plan:
        if key not in found and key not in todo:
            todo[key] = (row, vs, others)
    n_computed = 0
    if todo:
        if isinstance(encoder, LazyEncoder):
            encoder = encoder.load()
        decoder = getattr(encoder, "decoder", "pil")
        pixels: dict[str, torch.Tensor | None] = {}

        def load(h: str) -> torch.Tensor | None:
            if h not in pixels:
                try:
                    pixels[h] = decode_image(item_of_hash[h], limits, decoder=decoder)
                except ItemError as exc:
                    pixels[h] = None
                    for r, hh in hashes.items():
                        if hh == h:
                            errors.setdefault(r, str(exc))
            return pixels[h]

        batch: list[tuple[str, torch.Tensor]] = []

        def flush() -> None:
            nonlocal n_computed
            if not batch:
                return
            vectors = encoder.encode_batch([t for _, t in batch])
            fresh = {key: vec for (key, _), vec in zip(batch, vectors, strict=True) if np.isfinite(vec).all()}
            found.update(fresh)
            if cache is not None and fresh:
                cache.put_many(encoder.encoder_id, fresh)
            n_computed += len(batch)
            batch.clear()

        with torch_threads(num_threads), tqdm(total=len(todo), disable=not progress, desc="shelf views", unit="view") as bar:
            for key, (row, vs, others) in todo.items():
                own = load(hashes[row])
                if own is not None:
                    extra = [p for p in (load(o) for o in others) if p is not None]
                    batch.append((key, _prepare(encoder, spec.view(own, vs, extra))))
                    if len(batch) >= batch_size:
                        flush()
                bar.update(1)
            flush()

    kept = [p for p in plan if p[2] in found and p[0] not in errors]
    dim = encoder.dim
    return ViewResult(
        features=np.stack([found[p[2]] for p in kept]).astype(np.float32) if kept else np.zeros((0, dim), np.float32),
        of=np.array([p[0] for p in kept], dtype=np.int64),
        view=np.array([p[1] for p in kept], dtype=np.int64),
        errors=dict(sorted(errors.items())),
        n_computed=n_computed,
        n_cached=n_cached,
        encoder_id=encoder.encoder_id,
        spec_id=spec_id,
        seconds=time.perf_counter() - start,
    )
