"""Foreign products next to an apparel/mug catalog: no t-shirt fact for an LED bulb, a yoga bag or a vitamin bottle."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image, ImageDraw

from prodkg.flows.config import load_config
from prodkg.flows.pipeline import run_pipeline
from prodkg.kb.queries import run_query
from prodkg.kb.store import KnowledgeGraph

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"

FOREIGN = [
    ("MKT-led-bulb", "LED light bulb E27, 9 W warm white 2700 K, 806 lumen", "bulb"),
    ("MKT-yoga-bag", "Yoga mat carry bag with adjustable shoulder strap, canvas", "bag"),
    ("MKT-vitamin", "Vitamin D3 1000 IU, 90 softgels, dietary supplement bottle", "bottle"),
]


def _draw(kind: str, path: Path) -> None:
    """Tiny self-made product photos: a bulb, a bag, a bottle on white."""
    img = Image.new("RGB", (96, 96), "white")
    d = ImageDraw.Draw(img)
    if kind == "bulb":
        d.ellipse((28, 12, 68, 56), fill=(250, 230, 120), outline="gray")
        d.rectangle((40, 56, 56, 80), fill=(160, 160, 160))
    elif kind == "bag":
        d.rounded_rectangle((14, 30, 82, 66), radius=14, fill=(120, 60, 160))
        d.line((20, 34, 76, 20), fill="black", width=3)
    else:
        d.rectangle((36, 30, 60, 86), fill=(245, 245, 245), outline=(90, 90, 90))
        d.rectangle((38, 14, 58, 30), fill=(200, 60, 40))
        d.rectangle((36, 48, 60, 66), fill=(40, 120, 200))
    img.save(path)


@pytest.fixture
def foreign_catalog(tmp_path) -> Path:
    """The sample's t-shirts and mugs (both its domains) as the labelled source; three foreign listings as the target."""
    frame = pd.read_csv(SAMPLE / "catalog.csv", dtype=str, keep_default_na=False)
    source = frame[frame["category"].isin(["t-shirt", "mug"])].copy()
    (tmp_path / "images").mkdir()
    for p in source["image"]:  # images are read only under the catalog's folder: copy them beside it
        if p:
            shutil.copyfile(SAMPLE / p, tmp_path / p)
    source["domain"] = "catalog"
    rows = []
    for pid, title, kind in FOREIGN:
        _draw(kind, tmp_path / "images" / f"{pid}.png")
        rows.append({"product_id": pid, "title": title, "description": "", "image": f"images/{pid}.png",
                     "domain": "marketplace", "category": "", "color": ""})
    path = tmp_path / "foreign.csv"
    pd.concat([source, pd.DataFrame(rows)], ignore_index=True).to_csv(path, index=False)
    return path


@pytest.mark.slow
def test_foreign_listings_get_no_category_fact(foreign_catalog, tmp_path):
    out = tmp_path / "out"
    cfg = load_config(catalog=str(foreign_catalog), source=["catalog"], target=["marketplace"], attributes=[], epochs=30,
                      out=str(out), use_prefect=False, progress=False)
    summary = run_pipeline(cfg)
    with KnowledgeGraph(out / "kg").open(read_only=True) as store:
        facts = store.query("SELECT ?id WHERE { GRAPH ?g { ?p schema:category ?c } ?p schema:productID ?id }").to_frame()
        assert set(facts["id"]) & {pid for pid, _, _ in FOREIGN} == set(), facts
        unknown = run_query(store, "unknown_products").to_frame()
    # all three are flagged unknown, with their score, and listed by the named query
    assert sorted(unknown["product_id"]) == sorted(pid for pid, _, _ in FOREIGN)
    manifest = json.loads((out / "runs" / summary["run_id"] / "manifest.json").read_text())
    pub = manifest["metrics"]["category"]["publication"]
    assert pub["n_published"] == 0 and pub["n_unknown"] == 3
    assert summary["published"]["category"]["n_unknown"] == 3
