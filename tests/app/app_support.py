"""A small published graph for the app's tests: two runs of a synthetic catalog with hostile strings, built in a second."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from prodkg.contracts import PREDICTIONS, PRODUCTS, QUARANTINE, check_table
from prodkg.kb.publish import GraphSettings, graph_stage
from prodkg.kb.triples import RunInfo
from prodkg.layout import RunLayout

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "data" / "sample" / "images"
HOSTILE_TITLE = "<script>alert('x')</script> mug"
HOSTILE_ID = "SUP-\"><img src=x onerror=alert(1)>&id"
HOSTILE_CATEGORY = "<b>bold</b>"
TOKEN = "test-token-0123456789abcdef"

CLASSES = ["mug", "t-shirt", "backpack", HOSTILE_CATEGORY]


def _catalog(n_target: int = 24, seed: int = 0, renamed: dict | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    images = sorted(IMAGES.glob("*.png"))
    rows = []
    for i in range(12):
        cat = CLASSES[i % 3]
        rows.append({"product_id": f"WEB-{i}", "title": f"web {cat} {i}", "description": "from the webshop", "image": str(images[i % len(images)]),
                     "domain": "webshop", "category": cat})
    for i in range(n_target):
        cat = CLASSES[i % 4]
        rows.append({"product_id": f"SUP-{i}", "title": f"supplier {cat} {i}", "description": f"description <i>{i}</i> & more",
                     "image": str(images[(i + 5) % len(images)]), "domain": "supplier", "category": cat})
    rows.append({"product_id": HOSTILE_ID, "title": HOSTILE_TITLE, "description": "<iframe src=//evil>", "image": None,
                 "domain": "supplier", "category": "mug"})
    frame = pd.DataFrame(rows)
    frame["source_row"] = np.arange(1, len(frame) + 1)
    if renamed:
        frame["title"] = [renamed.get(p, t) for p, t in zip(frame["product_id"], frame["title"], strict=True)]
    _ = rng
    return frame


def _predictions(products: pd.DataFrame, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    target = products[products["domain"] == "supplier"]
    values, confs = [], []
    for i, cat in enumerate(target["category"]):
        wrong = i % 5 == 3
        values.append(CLASSES[(CLASSES.index(cat) + 1) % 4] if wrong else cat)
        confs.append(float(rng.uniform(0.2, 0.45) if wrong or i % 7 == 0 else rng.uniform(0.6, 0.99)))
    return pd.DataFrame({"product_id": target["product_id"].tolist(), "task": "category", "value": values, "confidence": confs,
                         "model": "category/dann/0123456789ab", "level": pd.array([pd.NA] * len(values), dtype="Int64"), "kind": "class",
                         "published": [c >= 0.5 for c in confs]})


def publish_run(out: Path, run_id: str, *, seed: int = 0, started: datetime | None = None, renamed: dict | None = None,
                catalog: str = "feed", curation: dict | None = None, base_iri: str | None = None) -> None:
    """Write one run folder (products, predictions, quarantine, embeddings, manifest) and publish its graph."""
    layout = RunLayout(out)
    run_dir = layout.run_dir(run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    products = _catalog(renamed=renamed)
    predictions = _predictions(products, seed)
    check_table(products, PRODUCTS).to_parquet(layout.table(run_id, "products"), index=False)
    check_table(predictions, PREDICTIONS).to_parquet(layout.table(run_id, "predictions"), index=False)
    quarantine = pd.DataFrame({"stage": ["ingest"], "source_row": pd.array([99], dtype="Int64"), "product_id": ["BAD-1"],
                               "reason": ["image: cannot decode <svg onload=alert(1)>"], "raw": ["{}"]})
    check_table(quarantine, QUARANTINE).to_parquet(layout.table(run_id, "quarantine"), index=False)
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(4, 16))
    vectors = [(centres[CLASSES.index(c)] + 0.1 * rng.normal(size=16)).astype(np.float32) for c in products["category"]]
    pd.DataFrame({"product_id": products["product_id"], "vector": vectors}).to_parquet(layout.table(run_id, "embeddings"), index=False)
    started = started or datetime(2026, 1, 1, tzinfo=UTC)
    info = RunInfo(run_id=run_id, started=started, ended=started + timedelta(minutes=1), catalog=catalog, method="dann",
                   source_domains=["webshop"], target_domains=["supplier"])
    from prodkg.catalogs.stage import hide_target_labels

    graph_products = hide_target_labels(products, ["supplier"], ["category"])
    taxonomy = [(c, None) for c in CLASSES]
    graph = graph_stage(graph_products, predictions, taxonomy, [], info, GraphSettings(base_iri=base_iri), catalog, layout=layout, curation=curation)
    manifest = {"run_id": run_id, "catalog": catalog, "source": ["webshop"], "target": ["supplier"], "method": "dann", "threshold": 0.5,
                "counts": {"products": len(products), "target_products": int((products["domain"] == "supplier").sum())},
                "metrics": {"category": {"target_accuracy": 0.8}}, "changes": graph["changes"], "config": {"threshold": 0.5, "base_iri": base_iri}}
    (run_dir / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


def demo_output(out: Path) -> Path:
    """Two runs: the second renames one product and changes predictions (seed)."""
    publish_run(out, "20260101T000000Z-aaaaaa", seed=0, started=datetime(2026, 1, 1, tzinfo=UTC))
    publish_run(out, "20260102T000000Z-bbbbbb", seed=1, started=datetime(2026, 1, 2, tzinfo=UTC), renamed={"SUP-1": "supplier t-shirt, new name"})
    return out


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)
