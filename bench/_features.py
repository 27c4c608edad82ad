"""Frozen features of the benchmark datasets, extracted once through prodkg's own extractors and cached on disk.

Image features are cached per image encoder (``office_caltech("efficientnet_lite2")``): each encoder has its own
``.npz`` file, named after it and holding its ``encoder_id``, and ``extract_features`` keys its per-item cache by
that id, so vectors of two encoders never mix. ``PRODKG_BENCH_THREADS`` sets the torch threads of an extraction
(default 1).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np


CACHE = Path(os.environ.get("PRODKG_BENCH_CACHE") or Path(__file__).resolve().parent / ".cache")


def data_home() -> Path:
    home = os.environ.get("PRODKG_DATA_HOME")
    if not home or not Path(home).is_dir():
        raise SystemExit("set PRODKG_DATA_HOME to the folder holding the datasets (e.g. ../shared/datasets)")
    return Path(home)


DEFAULT_IMAGE = "efficientnet_lite0"


def short_name(encoder_name: str) -> str:
    """``efficientnet_lite2`` -> ``lite2``: the encoder's part of a cache file name."""
    return encoder_name.removeprefix("efficientnet_")


def image_encoder_id(encoder_name: str) -> str:
    """The fp32 ``encoder_id`` of a registered image encoder, from its weight files (the model is not built)."""
    from prodkg.extractors import lazy_encoder

    return lazy_encoder(encoder_name, precision="fp32").encoder_id


def _extract(items: list[str | None], encoder_name: str) -> tuple[np.ndarray, np.ndarray]:
    from prodkg.extractors import FeatureCache, extract_features, get_encoder

    encoder = get_encoder(encoder_name, precision="fp32")
    result = extract_features(items, encoder, cache=FeatureCache(CACHE / "features"), batch_size=32,
                              progress=True, num_threads=int(os.environ.get("PRODKG_BENCH_THREADS") or 1))
    return result.features, result.ok


def _load(out: Path, encoder_name: str) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when there are none; refuses a file written by another image encoder."""
    if not out.is_file():
        return None
    data = dict(np.load(out))
    # files written before the per-encoder caching hold no id; they are Lite0's
    if "image_encoder_id" in data and str(data["image_encoder_id"]) != image_encoder_id(encoder_name):
        raise SystemExit(f"{out} holds features of {data['image_encoder_id']}, not of {image_encoder_id(encoder_name)}; "
                         "delete it to extract again")
    return data


def office_caltech(image_encoder: str = DEFAULT_IMAGE) -> dict[str, np.ndarray]:
    """``X`` (N, dim) features of ``image_encoder`` (default EfficientNet-Lite0), ``y`` class names, ``domain``
    names, ``id`` product ids."""
    if concat_parts(image_encoder):  # assembled from the parts' caches rather than extracted a second time
        return _side_by_side([office_caltech(p) for p in concat_parts(image_encoder)], block="X", ok=None)
    out = CACHE / f"office_caltech_{short_name(image_encoder)}.npz"
    data = _load(out, image_encoder)
    if data is None:
        from prodkg.catalogs import load_dataset

        frame = load_dataset("office-caltech-10", data_home()).frame
        feats, ok = _extract(frame["image"].tolist(), image_encoder)
        if not ok.all():
            raise SystemExit(f"{int((~ok).sum())} office-caltech images failed to encode")
        CACHE.mkdir(parents=True, exist_ok=True)
        np.savez(out, X=feats, y=frame["category"].to_numpy(str), domain=frame["domain"].to_numpy(str),
                 id=frame["product_id"].to_numpy(str), image_encoder_id=np.array(image_encoder_id(image_encoder)))
        data = dict(np.load(out))
    return data


def concat_parts(encoder_name: str) -> tuple[str, ...]:
    """The encoders a side-by-side encoder (:mod:`extractors.concat`) concatenates; () for any other."""
    from prodkg.extractors.base import ENCODERS

    return tuple(getattr(ENCODERS.get(encoder_name), "parts", ()))


def _side_by_side(parts: list[dict[str, np.ndarray]], block: str = "image", ok: str | None = "image_ok") -> dict[str, np.ndarray]:
    """The arrays of the first part with every part's ``block`` side by side (``ok``: rows every part encoded; None
    where the parts have no such mask): what the concatenating encoder gives (each of its halves is exactly its
    encoder's vector, tests/extractors/test_image_concat.py and test_text_ngrams.py)."""
    data = dict(parts[0])
    for other in parts[1:]:
        for key in ("of", "id", "y"):
            if key in data and not np.array_equal(data[key], other[key]):
                raise SystemExit(f"the parts' cached features disagree on {key}: extract them again")
    data[block] = np.hstack([d[block] for d in parts]).astype(np.float32)
    if ok is not None and ok in data:
        data[ok] = np.logical_and.reduce([d[ok] for d in parts])
    return data


def grocery(image_encoder: str = DEFAULT_IMAGE) -> dict[str, np.ndarray]:
    """Image features (``image_encoder``, default EfficientNet-Lite0) of iconic and in-store photos, MiniLM text
    features of the iconic descriptions, fine and coarse labels, domain and split."""
    if concat_parts(image_encoder):  # assembled from the parts' caches rather than extracted a second time
        return _side_by_side([grocery(p) for p in concat_parts(image_encoder)])
    out = CACHE / f"grocery_{short_name(image_encoder)}_minilm.npz"
    data = _load(out, image_encoder)
    if data is None:
        from prodkg.catalogs import load_dataset

        src = load_dataset("grocery-store-dataset", data_home())
        frame = src.frame
        img, ok = _extract(frame["image"].tolist(), image_encoder)
        texts = [f"{t}. {d}".strip() if dom == "iconic" else None
                 for t, d, dom in zip(frame["title"], frame["description"], frame["domain"])]
        txt, txt_ok = _extract(texts, "minilm")
        CACHE.mkdir(parents=True, exist_ok=True)
        np.savez(out, image=img, image_ok=ok, text=txt, text_ok=txt_ok, y=frame["category"].to_numpy(str),
                 domain=frame["domain"].to_numpy(str), split=frame["_split"].to_numpy(str),
                 id=frame["product_id"].to_numpy(str), image_encoder_id=np.array(image_encoder_id(image_encoder)))
        data = dict(np.load(out))
    data["coarse"], data["parent"] = grocery_coarse(data["y"])
    return data


def grocery_coarse(fine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(coarse, parent)`` of each fine grocery class. *coarse*: the dataset's own coarse class (43 of them), level 1
    of the taxonomy as the predict stage reads it (:class:`prediction.backoff.TaxonomyLevels`; the class itself
    where the dataset gives it no coarse class of its own, e.g. Avocado). *parent*: the class's parent concept (19
    groups: Avocado's is Fruit, a top-level category), what the benches called "coarse" before 2026-12-01; kept
    so that earlier figures can be compared."""
    from prodkg.prediction.backoff import TaxonomyLevels

    taxonomy = _grocery_taxonomy()
    parent = dict(taxonomy)
    names = sorted(set(fine.tolist()))
    levels = TaxonomyLevels(names, taxonomy)
    coarse = {c: levels.concept_of(i, 1) for i, c in enumerate(names)}
    return np.array([coarse[c] for c in fine], dtype=str), np.array([parent.get(c) or c for c in fine], dtype=str)


@lru_cache(maxsize=1)
def _grocery_taxonomy() -> tuple:
    """The grocery dataset's taxonomy, read once per process."""
    from prodkg.catalogs import load_dataset

    return tuple(load_dataset("grocery-store-dataset", data_home()).taxonomy)


def grocery_views(k: int, image_encoder: str = DEFAULT_IMAGE, seed: int = 0) -> dict[str, np.ndarray]:
    """Features of ``k`` shelf-style views (extractors.augment, default settings) of each iconic photo.

    ``image`` (M, dim); ``of`` the row of :func:`grocery`'s arrays each view was made from; ``view`` its index.
    Backgrounds and clutter come from the iconic photos only, never from in-store ones. Views are cached per
    view in the feature cache, so a larger ``k`` encodes only the new ones.
    """
    return _views("grocery-store-dataset", "iconic", CACHE / f"grocery_views{k}_s{seed}_{short_name(image_encoder)}.npz",
                  k, image_encoder, seed)


def _views(dataset: str, domain: str, out: Path, k: int, image_encoder: str, seed: int) -> dict[str, np.ndarray]:
    """Features of ``k`` views of each photo of ``domain`` in ``dataset``, cached in ``out``."""
    if concat_parts(image_encoder):  # a view's pixels do not depend on the encoder, so the parts' views line up
        return _side_by_side([_views(dataset, domain, out.with_name(out.name.replace(short_name(image_encoder), short_name(p))), k, p, seed)
                              for p in concat_parts(image_encoder)])
    data = _load(out, image_encoder)
    if data is None:
        from prodkg.catalogs import load_dataset
        from prodkg.extractors import FeatureCache, get_encoder
        from prodkg.extractors.views import extract_views

        frame = load_dataset(dataset, data_home()).frame
        rows = np.flatnonzero(frame["domain"].to_numpy(str) == domain)
        encoder = get_encoder(image_encoder, precision="fp32")
        res = extract_views(frame["image"].iloc[rows].tolist(), encoder, k, seed=seed, cache=FeatureCache(CACHE / "features"),
                            num_threads=int(os.environ.get("PRODKG_BENCH_THREADS") or 1), progress=True)
        if res.errors:
            raise SystemExit(f"{len(res.errors)} {domain} images failed: {next(iter(res.errors.values()))}")
        print(f"views: {res.n_computed} encoded, {res.n_cached} cached, {res.seconds:.0f} s", flush=True)
        CACHE.mkdir(parents=True, exist_ok=True)
        np.savez(out, image=res.features, of=rows[res.of], view=res.view, spec_id=np.array(res.spec_id),
                 image_encoder_id=np.array(image_encoder_id(image_encoder)))
        data = dict(np.load(out))
    return data


def office_views(domain: str, k: int, image_encoder: str = DEFAULT_IMAGE, seed: int = 0) -> dict[str, np.ndarray]:
    """Features of ``k`` shelf-style views of each office-caltech-10 photo of ``domain``, as :func:`grocery_views`."""
    return _views("office-caltech-10", domain, CACHE / f"office_views_{domain}{k}_s{seed}_{short_name(image_encoder)}.npz",
                  k, image_encoder, seed)


def instacart(text_encoder: str = "minilm") -> dict[str, np.ndarray]:
    """Features of the product titles by ``text_encoder`` (``X``; default MiniLM), aisle labels (``y``, "" when
    unlabelled), ``domain`` and ``id``; a side-by-side encoder (``minilm_ngrams``) from its parts' files."""
    if concat_parts(text_encoder):
        return _side_by_side([instacart(p) for p in concat_parts(text_encoder)], block="X", ok="ok")
    out = CACHE / ("instacart_minilm.npz" if text_encoder == "minilm" else f"instacart_{text_encoder}.npz")
    if not out.is_file():
        from prodkg.catalogs import load_dataset

        frame = load_dataset("instacart-products", data_home()).frame
        feats, ok = _extract(frame["title"].tolist(), text_encoder)
        CACHE.mkdir(parents=True, exist_ok=True)
        np.savez(out, X=feats, ok=ok, y=frame["category"].to_numpy(str), domain=frame["domain"].to_numpy(str),
                 id=frame["product_id"].to_numpy(str))
    return dict(np.load(out))


if __name__ == "__main__":
    import sys

    for name in sys.argv[1:] or [DEFAULT_IMAGE]:
        o = office_caltech(name)
        print(name, "office", o["X"].shape, flush=True)
        g = grocery(name)
        print(name, "grocery", g["image"].shape, g["text"].shape, flush=True)
