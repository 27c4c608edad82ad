"""Decisions feed the next run: kept as facts (a prediction never overrides them), learned from, not evaluated."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from prodkg.flows.config import build_config
from prodkg.flows.pipeline import run_pipeline
from prodkg.kb.curation import Decision, DecisionStore
from prodkg.kb.store import KnowledgeGraph
from prodkg.layout import RunLayout

pytestmark = [pytest.mark.slow]


def _run(catalog, out):
    cfg = build_config({"catalog": str(catalog), "source": ["webshop"], "target": ["supplier"], "out": str(out), "use_prefect": False,
                        "progress": False, "epochs": 5})
    return run_pipeline(cfg)


def test_the_next_run_keeps_and_learns_from_decisions_of_a_renamed_feed(sample_catalog, tmp_path):
    out = tmp_path / "out"
    first = _run(sample_catalog, out)
    layout = RunLayout(out)
    preds = pd.read_parquet(layout.table(first["run_id"], "predictions"))
    cats = preds[(preds["task"] == "category") & (preds["kind"] == "class")].drop_duplicates("product_id").set_index("product_id")["value"]
    relabelled, accepted = cats.index[0], cats.index[1]
    other = next(c for c in sorted(set(cats)) if c != cats[relabelled])
    DecisionStore(layout.decisions).append([Decision.make(relabelled, "relabel", other, "Ada"), Decision.make(accepted, "accept", cats[accepted], "Bob")])

    # the feed is renamed (another file name: another catalog name and product IRIs) and the graph rebuilt from
    # nothing; decisions live outside kg/ and follow the product ids
    renamed = tmp_path / "feed-v2" / "renamed.csv"
    shutil.copytree(sample_catalog.parent, renamed.parent)
    (renamed.parent / sample_catalog.name).rename(renamed)
    shutil.rmtree(layout.kg)
    second = _run(renamed, out)
    manifest = json.loads(layout.manifest(second["run_id"]).read_text())
    # two reviews are too few to calibrate the publication rule: both train the head
    curation = manifest["curation"]
    assert {k: curation[k] for k in ("decisions", "reviewed_target_rows_used", "reviewed_target_rows_calibration")} == {
        "decisions": 2, "reviewed_target_rows_used": 2, "reviewed_target_rows_calibration": 0}
    assert "they train the head and calibrate nothing" in curation["calibration_note"]
    metrics = manifest["metrics"]["category"]
    assert metrics["n_target_reviewed"] == 2
    first_metrics = json.loads(layout.manifest(first["run_id"]).read_text())["metrics"]["category"]
    assert metrics["n_target_labelled"] == first_metrics["n_target_labelled"] - 2  # reviewed products are not evaluated

    with KnowledgeGraph(layout.kg).open() as store:
        def labels(pid):
            return sorted(store.query("SELECT ?id ?l WHERE { ?p schema:productID ?id ; schema:category ?c . ?c skos:prefLabel ?l }", {"id": pid}).column("l"))

        assert labels(relabelled) == [other]  # the reviewer's category, and no predicted one beside it
        assert labels(accepted) == [cats[accepted]]
        who = store.query("SELECT ?id ?name WHERE { ?d a pkg:Decision ; pkg:subject ?p ; prov:wasAttributedTo ?w . ?w schema:name ?name . "
                          "?p schema:productID ?id }", {"id": relabelled}).column("name")
        assert who == ["Ada"]
        # the prediction is still recorded, as history
        assert len(store.query("SELECT ?id ?x WHERE { ?x a pkg:Prediction ; pkg:subject ?p . ?p schema:productID ?id }", {"id": relabelled}))
