"""Frozen features of the benchmark datasets, extracted once through prodkg's own extractors and cached on disk."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


CACHE = Path(os.environ.get("PRODKG_BENCH_CACHE") or Path(__file__).resolve().parent / ".cache")


def data_home() -> Path:
    home = os.environ.get("PRODKG_DATA_HOME")
    if not home or not Path(home).is_dir():
        raise SystemExit("set PRODKG_DATA_HOME to the folder holding the datasets (e.g. /work/shared/datasets)")
    return Path(home)


def _extract(items: list[str | None], encoder_name: str) -> tuple[np.ndarray, np.ndarray]:
    from prodkg.extractors import FeatureCache, extract_features, get_encoder

    encoder = get_encoder(encoder_name, precision="fp32")
    result = extract_features(items, encoder, cache=FeatureCache(CACHE / "features"), batch_size=32,
                              progress=True, num_threads=1)
    return result.features, result.ok


def office_caltech() -> dict[str, np.ndarray]:
    """``X`` (N, 1280) EfficientNet-Lite0 features, ``y`` class names, ``domain`` names, ``id`` product ids."""
    out = CACHE / "office_caltech_lite0.npz"
    if not out.is_file():
        from prodkg.catalogs import load_dataset

        frame = load_dataset("office-caltech-10", data_home()).frame
        feats, ok = _extract(frame["image"].tolist(), "efficientnet_lite0")
        if not ok.all():
            raise SystemExit(f"{int((~ok).sum())} office-caltech images failed to encode")
        CACHE.mkdir(parents=True, exist_ok=True)
        np.savez(out, X=feats, y=frame["category"].to_numpy(str), domain=frame["domain"].to_numpy(str),
                 id=frame["product_id"].to_numpy(str))
    return dict(np.load(out))


def grocery() -> dict[str, np.ndarray]:
    """Image features of iconic and in-store photos, MiniLM text features of the iconic descriptions,
    fine and coarse labels, domain and split."""
    out = CACHE / "grocery_lite0_minilm.npz"
    if not out.is_file():
        from prodkg.catalogs import load_dataset

        src = load_dataset("grocery-store-dataset", data_home())
        frame = src.frame
        parent = dict(src.taxonomy)
        img, ok = _extract(frame["image"].tolist(), "efficientnet_lite0")
        texts = [f"{t}. {d}".strip() if dom == "iconic" else None
                 for t, d, dom in zip(frame["title"], frame["description"], frame["domain"])]
        txt, txt_ok = _extract(texts, "minilm")
        coarse = np.array([parent.get(c) or c for c in frame["category"]], dtype=str)
        CACHE.mkdir(parents=True, exist_ok=True)
        np.savez(out, image=img, image_ok=ok, text=txt, text_ok=txt_ok, y=frame["category"].to_numpy(str),
                 coarse=coarse, domain=frame["domain"].to_numpy(str), split=frame["_split"].to_numpy(str),
                 id=frame["product_id"].to_numpy(str))
    return dict(np.load(out))


def instacart() -> dict[str, np.ndarray]:
    """MiniLM features of the product titles (``X``), aisle labels (``y``, "" when unlabelled), ``domain`` and ``id``."""
    out = CACHE / "instacart_minilm.npz"
    if not out.is_file():
        from prodkg.catalogs import load_dataset

        frame = load_dataset("instacart-products", data_home()).frame
        feats, ok = _extract(frame["title"].tolist(), "minilm")
        CACHE.mkdir(parents=True, exist_ok=True)
        np.savez(out, X=feats, ok=ok, y=frame["category"].to_numpy(str), domain=frame["domain"].to_numpy(str),
                 id=frame["product_id"].to_numpy(str))
    return dict(np.load(out))


if __name__ == "__main__":
    o = office_caltech()
    print("office", o["X"].shape)
    g = grocery()
    print("grocery", g["image"].shape, g["text"].shape)
