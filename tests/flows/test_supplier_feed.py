"""A supplier feed as a new user runs it: its own facts reach the graph, and its identity survives a renamed or dated file."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

import prodkg
from prodkg.flows.config import load_config
from prodkg.flows.pipeline import run_pipeline

pytestmark = pytest.mark.slow  # three pipeline runs on the sample catalog (~40 s)

SUPPLIER_FACTS = {"brand": "Starter", "material": "100% Polyester", "color": "Iron Grey"}
GREY_BAG = "SUP-bac-blue-0"


@pytest.fixture(scope="module")
def feed_dir(sample_catalog, tmp_path_factory) -> Path:
    """The sample catalog as a supplier sends it: brand and material columns, one bag whose colour is Iron Grey."""
    folder = tmp_path_factory.mktemp("feeds")
    shutil.copytree(sample_catalog.parent / "images", folder / "images")
    frame = pd.read_csv(sample_catalog, dtype=str, keep_default_na=False)
    frame["brand"] = ""
    frame["material"] = ""
    row = frame["product_id"] == GREY_BAG
    for col, value in SUPPLIER_FACTS.items():
        frame.loc[row, col] = value
    frame.to_csv(folder / "feed_2026-11-30.csv", index=False)
    return folder


def _run(catalog: Path, out: Path, cache: Path, **extra):
    cfg = load_config(catalog=str(catalog), source=["webshop"], target=["supplier"], epochs=5, out=str(out), cache_dir=str(cache),
                      use_prefect=False, progress=False, **extra)
    return run_pipeline(cfg)


def _facts(out: Path, pid: str) -> pd.DataFrame:
    return prodkg.query(str(out), sparql=f"""
        SELECT ?g ?p ?o WHERE {{ GRAPH ?g {{ ?product schema:productID "{pid}" ; ?p ?o }} }}""")


def test_supplier_facts_are_asserted_and_never_overridden(feed_dir, tmp_path):
    out = tmp_path / "out"
    summary = _run(feed_dir / "feed_2026-11-30.csv", out, tmp_path / "cache")
    assert summary["catalog"] == "feed"  # the dated file's name without its date
    assert summary["hidden_labels"] == ["category"]
    with prodkg.open_graph(str(out)) as graph:
        rows = graph.query(f"""
            SELECT ?g ?brand ?material ?color ?image WHERE {{
              GRAPH ?g {{ ?p schema:productID "{GREY_BAG}" ; schema:color ?color ; schema:material ?material ;
                          schema:image ?image ; schema:brand/schema:name ?brand }} }}""").to_frame()
        assert len(rows) == 1, rows
        row = rows.iloc[0]
        assert row["g"].endswith("/graph/catalog/feed")
        assert (row["brand"], row["material"], row["color"]) == ("Starter", "100% Polyester", "Iron Grey")
        # the catalog's own reference, not a path of this machine
        assert row["image"] == f"images/{GREY_BAG}.png"
        colors = graph.query(f'SELECT ?c WHERE {{ ?p schema:productID "{GREY_BAG}" ; schema:color ?c }}').to_frame()["c"].tolist()
        assert colors == ["Iron Grey"]  # no predicted colour beside the asserted one
        # the evaluation label stays hidden: no target product has an asserted category in the catalog graph
        asserted_target_categories = graph.query("""
            SELECT (COUNT(*) AS ?n) WHERE { GRAPH ?g { ?p schema:productID ?id ; schema:category ?c }
              FILTER(STRSTARTS(STR(?g), "https://example.org/prodkg/graph/catalog/") && STRSTARTS(?id, "SUP-")) }""").to_frame()["n"][0]
        assert int(asserted_target_categories) == 0
    predictions = pd.read_parquet(Path(summary["run_dir"]) / "predictions.parquet")
    # every target row asserts a colour: only categories are predicted
    assert set(predictions["task"]) == {"category"}
    assert summary["counts"]["predicted_products_by_task"] == {"category": 27}
    assert summary["counts"]["predictions_by_task"] == {"category": len(predictions)}
    assert summary["counts"]["predictions_superseded_by_asserted"] == 27


def test_eval_labels_option_hides_an_attribute_too(feed_dir, tmp_path):
    summary = _run(feed_dir / "feed_2026-11-30.csv", tmp_path / "out", tmp_path / "cache", eval_labels="category,color")
    assert summary["hidden_labels"] == ["category", "color"]
    colors = prodkg.query(str(tmp_path / "out"), sparql=f"""
        SELECT ?g ?c WHERE {{ GRAPH ?g {{ ?p schema:productID "{GREY_BAG}" ; schema:color ?c }} }}""")
    # the asserted "Iron Grey" is hidden; what is there is a prediction, in the run graph
    assert "Iron Grey" not in colors["c"].tolist()
    assert all("/graph/run/" in g for g in colors["g"])


def test_renamed_feed_keeps_identity_and_what_changed_is_exact(feed_dir, tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    first = _run(feed_dir / "feed_2026-11-30.csv", out, cache, catalog_name="acme-supplier")
    assert first["changes"]["added"] == 54
    # the next night's feed arrives under another name, with two products changed
    renamed = feed_dir.parent / "supplier_latest.csv"
    frame = pd.read_csv(feed_dir / "feed_2026-11-30.csv", dtype=str, keep_default_na=False)
    changed = ["SUP-mug-red-0", "WEB-mug-blue-0"]
    frame.loc[frame["product_id"].isin(changed), "title"] += " (new pack)"
    shutil.copytree(feed_dir / "images", renamed.parent / "images", dirs_exist_ok=True)
    frame.to_csv(renamed, index=False)
    second = _run(renamed, out, cache, catalog_name="acme-supplier")
    assert second["catalog"] == "acme-supplier"
    assert second["changes"] == {"added": 0, "changed": 2, "removed": 0, "unchanged": 52}
    what = prodkg.query(str(out), name="what_changed")
    assert sorted(zip(what["product_id"], what["change"])) == sorted((pid, "changed") for pid in changed)
    # a rename without a catalog name is another catalog: every product is added there and removed from the
    # old one, and the records of the two never collide (the run publishes)
    third = _run(renamed, out, cache)
    assert third["catalog"] == "supplier_latest"
    assert third["changes"]["added"] == 54 and third["changes"]["removed"] == 54
    what = prodkg.query(str(out), name="what_changed")
    assert len(what) == 108 and set(what["change"]) == {"added", "removed"}
