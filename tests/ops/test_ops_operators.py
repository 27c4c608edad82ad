"""What an operator meets: progress lines off a terminal, a closed pipe, the quarantine of a run that stops,
counts that reconcile, label bindings in any case, and `prodkg list` that says what each thing is."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from ops_support import ROOT

from prodkg import progress
from prodkg.errors import CatalogError, QueryError
from prodkg.flows.cli import list_lines
from prodkg.flows.config import load_config
from prodkg.flows.pipeline import run_pipeline
from prodkg.progress import Progress

PRODKG = [sys.executable, "-m", "prodkg.flows.cli"]


def test_progress_writes_timed_lines_when_stderr_is_not_a_terminal(monkeypatch, capsys):
    monkeypatch.setattr(progress, "on_terminal", lambda: False)
    monkeypatch.setattr(progress, "LINE_SECONDS", 0.0)
    with Progress(3, "extract text") as bar:
        for _ in range(3):
            bar.update(1)
    err = capsys.readouterr().err
    assert "extract text: 1/3 items" in err and "extract text: 3/3 items (100 %" in err
    progress.stage_line("graph started")
    assert "prodkg:" in capsys.readouterr().err


def test_quiet_progress_writes_nothing_off_a_terminal(monkeypatch, capsys):
    monkeypatch.setattr(progress, "on_terminal", lambda: False)
    monkeypatch.setattr(progress, "LINE_SECONDS", 0.0)
    with Progress(3, "extract text", enabled=False) as bar:
        bar.update(3)
    progress.stage_line("graph started", enabled=False)
    assert capsys.readouterr().err == ""


def test_list_says_what_each_component_is():
    datasets = "\n".join(list_lines("datasets"))
    assert "office-caltech-10" in datasets and "domains: amazon, caltech10, dslr, webcam" in datasets
    queries = "\n".join(list_lines("queries"))
    assert "--bind category=...  (required concept)" in queries and "What the last run changed" in queries
    methods = list_lines("methods")
    assert any(line.startswith("dann") and "Ganin" in line for line in methods)
    assert all("  " in line for line in list_lines("fusions"))  # a description beside every name


def test_every_target_row_quarantined_still_writes_the_quarantine(sample_catalog, tmp_path):
    frame = pd.read_csv(sample_catalog, dtype=str, keep_default_na=False)
    target = frame["domain"] == "supplier"
    frame.loc[target, "image"] = "missing/" + frame.loc[target, "product_id"] + ".png"
    frame.loc[target, "title"] = ""
    catalog = tmp_path / "catalog.csv"
    frame.to_csv(catalog, index=False)
    for name in ("images",):
        shutil.copytree(sample_catalog.parent / name, tmp_path / name)  # images are read only under the catalog folder
    cfg = load_config(catalog=str(catalog), source=["webshop"], target=["supplier"], out=str(tmp_path / "out"), use_prefect=False, progress=False)
    with pytest.raises(CatalogError, match="every reason is in") as info:
        run_pipeline(cfg)
    written = list((tmp_path / "out" / "runs").glob("*/quarantine.parquet"))
    assert len(written) == 1 and str(written[0]) in str(info.value)
    quarantine = pd.read_parquet(written[0])
    assert len(quarantine) == int(target.sum())
    assert quarantine["reason"].str.startswith("image file not found: ").all()


@pytest.fixture(scope="module")
def sample_run(sample_catalog, tmp_path_factory):
    """One run of the sample catalog, text only (quick), without Prefect."""
    folder = tmp_path_factory.mktemp("sample")
    frame = pd.read_csv(sample_catalog, dtype=str, keep_default_na=False)
    frame["image"] = ""
    catalog = folder / "catalog.csv"
    frame.to_csv(catalog, index=False)
    cfg = load_config(catalog=str(catalog), source=["webshop"], target=["supplier"], epochs=5, out=str(folder / "out"), use_prefect=False,
                      progress=False)
    return run_pipeline(cfg), folder / "out"


@pytest.mark.slow
def test_counts_reconcile_in_summary_manifest_report_and_store(sample_run):
    from prodkg.kb.store import KnowledgeGraph

    summary, out = sample_run
    c = summary["counts"]
    assert c["rows_in"] == c["products"] + c["quarantined"] + c["rows_out_of_scope"]
    for stats in summary["features"].values():
        assert stats["computed_products"] + stats["cached"] + stats["absent"] + stats["failed"] == stats["products"] == c["kept_after_ingest"]
    assert c["predictions"] == sum(c["predictions_by_task"].values())
    run_dir = Path(summary["run_dir"])
    assert len(pd.read_parquet(run_dir / "predictions.parquet")) == c["predictions"]
    with KnowledgeGraph(out / "kg").open(read_only=True) as store:
        assert len(store) == c["quads"]
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["counts"] == c
    assert manifest["total_seconds"] == summary["total_seconds"]
    assert manifest["stage_seconds"] == pytest.approx(sum(summary["durations"].values()), abs=1e-3)
    report = (run_dir / "report.html").read_text(encoding="utf-8")
    assert f"<td>stages total</td><td>{summary['stage_seconds']:.2f}</td>" in report.replace("\n", "")
    from prodkg.flows.cli import format_summary

    text = format_summary(summary, out=str(out))
    assert f"stages {summary['stage_seconds']:.1f}, as in the report" in text
    rows, products = c["predictions_by_task"]["category"], c["predicted_products_by_task"]["category"]
    assert products == 27  # every supplier product of the sample has a category prediction (one row per level or unknown flag)
    assert f"predictions          {c['predictions']}  (category {rows}" + (f" for {products} products" if rows != products else "") in text


@pytest.mark.slow
def test_labels_bind_in_any_case_and_unknown_ones_are_named(sample_run):
    import prodkg

    _, out = sample_run
    exact = prodkg.query(str(out), name="products_in_category", category="mug")
    assert len(exact) > 0
    upper = prodkg.query(str(out), name="products_in_category", category="Mug")
    assert upper.equals(exact)
    with pytest.raises(QueryError, match=r"no category labelled 'mugs'; did you mean 'mug'"):
        prodkg.query(str(out), name="products_in_category", category="mugs")


@pytest.mark.slow
def test_a_closed_pipe_ends_quietly(sample_run):
    _, out = sample_run
    query = "SELECT ?s ?p ?o WHERE { ?s ?p ?o }"
    proc = subprocess.run(f"{' '.join(PRODKG)} query --out {out} '{query}' --format csv | head -n 2", shell=True, cwd=ROOT,
                          capture_output=True, text=True, timeout=120, executable="/bin/bash", check=False)
    assert len(proc.stdout.splitlines()) == 2
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr


@pytest.mark.slow
def test_a_run_off_a_terminal_prints_stage_lines(sample_catalog, tmp_path):
    frame = pd.read_csv(sample_catalog, dtype=str, keep_default_na=False).iloc[::3]
    frame["image"] = ""
    frame.to_csv(tmp_path / "c.csv", index=False)
    proc = subprocess.run([*PRODKG, "run", "--catalog", str(tmp_path / "c.csv"), "--source", "webshop", "--target", "supplier", "--no-prefect",
                           "--epochs", "2", "--baseline", "none", "--out", str(tmp_path / "out")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    for stage in ("ingest", "extract", "adapt_predict", "graph"):
        assert f"{stage} started" in proc.stderr and f"{stage} ended after" in proc.stderr
