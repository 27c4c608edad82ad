"""The bad-input corpus: every bad row is quarantined with its reason, the run goes on, counts reconcile;
whole-file problems stop the run with one clear error before anything is written."""

from __future__ import annotations

import pandas as pd
import pytest

from prodkg.flows.config import load_config
from prodkg.flows.pipeline import run_pipeline
from prodkg.kb.store import KnowledgeGraph
from prodkg.errors import CatalogError, ConfigError
from bad_corpus import COLUMNS, EXPECTED, HOSTILE_ID, N_ROWS, build_corpus


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    catalog = build_corpus(folder)
    cfg = load_config(catalog=str(catalog), source=["shop"], target=["feed"], method="source_only", baseline=None,
                      epochs=3, out=str(folder / "out"), use_prefect=False, progress=False)
    summary = run_pipeline(cfg)
    run_dir = folder / "out" / "runs" / summary["run_id"]
    return summary, run_dir, folder


@pytest.mark.slow
def test_every_bad_row_has_its_expected_outcome(corpus_run):
    summary, run_dir, _ = corpus_run
    kept = set(pd.read_parquet(run_dir / "predictions.parquet")["product_id"]) | {"good-s1", "good-s2", "good-s3", "good-s4", "good-s5", "good-s6"}
    quarantine = pd.read_parquet(run_dir / "quarantine.parquet")
    by_id = quarantine.groupby("product_id")
    for pid, outcome in EXPECTED.items():
        if outcome.kept:
            assert pid in kept, f"{pid!r} should have been kept"
            assert pid not in by_id.groups, f"{pid!r} should not be quarantined"
        else:
            assert pid not in kept, f"{pid!r} should have been quarantined"
            rows = quarantine[quarantine["product_id"] == pid]
            assert len(rows) >= 1, f"{pid!r} missing from the quarantine"
            assert set(rows["stage"]) == {outcome.stage}, (pid, rows["stage"].tolist())
            assert all(outcome.reason in r for r in rows["reason"]), (pid, rows["reason"].tolist())
    c = summary["counts"]
    assert c["rows_in"] == N_ROWS == c["products"] + c["quarantined"]
    assert len(quarantine) == c["quarantined"]


@pytest.mark.slow
def test_cleaned_text_unseen_labels_and_hostile_ids_reach_the_graph(corpus_run):
    summary, run_dir, folder = corpus_run
    products = pd.read_parquet(run_dir / "products.parquet").set_index("product_id")
    assert products.loc["html-and-control", "title"] == "Blue box file with alert(1)"
    assert summary["metrics"]["category"].get("n_target_unseen_label") == 1
    preds = pd.read_parquet(run_dir / "predictions.parquet")
    assert preds.loc[preds.product_id == "unseen-label", "value"].iloc[0] in {"mug", "box"}
    with KnowledgeGraph(folder / "out" / "kg").open(read_only=True) as store:
        rows = store.query(
            "PREFIX schema: <https://schema.org/> SELECT ?id ?title WHERE { ?p schema:productID ?id ; schema:name ?title }",
            bindings={"id": HOSTILE_ID},
        ).to_frame()
    assert rows["title"].tolist() == ["Round mug"]


def _write(path, header, rows):
    frame = pd.DataFrame(rows, columns=header)
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("kind", ["missing-required-column", "empty-catalog", "empty-target-domain", "target-domain-all-invalid"])
def test_whole_file_problems_stop_before_anything_is_written(kind, tmp_path):
    good = ["p1", "Red mug", "", "", "shop", "mug", "red"]
    if kind == "missing-required-column":
        path = _write(tmp_path / "c.csv", [c for c in COLUMNS if c != "description"], [[v for i, v in enumerate(good) if i != 2]])
        match = "lacks required column.*description"
    elif kind == "empty-catalog":
        path = tmp_path / "c.csv"
        path.write_text(",".join(COLUMNS) + "\n", encoding="utf-8")
        match = "no rows"
    elif kind == "empty-target-domain":
        path = _write(tmp_path / "c.csv", COLUMNS, [good])
        match = "target domain.*feed.*not in the catalog"
    else:
        path = _write(tmp_path / "c.csv", COLUMNS, [good, ["p2", "", "", "", "feed", "mug", ""]])
        match = "target domain .feed. has no valid product"
    out = tmp_path / "out"
    # a domain the catalog does not have is a setting to fix (checked with the config); the others are the file's problems
    expected = ConfigError if kind == "empty-target-domain" else CatalogError
    with pytest.raises(expected, match=match):
        run_pipeline(load_config(catalog=str(path), source=["shop"], target=["feed"], out=str(out), use_prefect=False, progress=False))
    assert not (out / "kg").exists()
    if kind == "target-domain-all-invalid":
        # the rows' reasons are the one thing written: quarantine.parquet, named in the error
        assert [p.name for p in (out / "runs").rglob("*") if p.is_file()] == ["quarantine.parquet"]
    else:
        assert not (out / "runs").exists()


@pytest.mark.slow
def test_unknown_extra_column_is_not_mistaken_for_a_label(tmp_path):
    rows = [[f"s{i}", f"{'Red mug' if i % 2 else 'Blue box'} {i}", "", "", "shop", "mug" if i % 2 else "box", f"note {i}"] for i in range(8)]
    rows += [[f"t{i}", "MUG" if i % 2 else "BOX", "", "", "feed", "", f"note t{i}"] for i in range(4)]
    path = _write(tmp_path / "c.csv", [*COLUMNS[:-1], "internal_note"], rows)
    cfg = load_config(catalog=str(path), source=["shop"], target=["feed"], method="source_only", baseline=None, epochs=3,
                      out=str(tmp_path / "out"), use_prefect=False, progress=False)
    summary = run_pipeline(cfg)
    assert "internal_note" in summary["skipped_tasks"] and "free text or an identifier" in summary["skipped_tasks"]["internal_note"]
    assert summary["counts"]["products"] == 12
