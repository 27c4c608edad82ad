"""Crash safety: a run killed with SIGKILL at any stage boundary, or inside the graph write, leaves the
last good graph intact and queryable, and the next run completes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from prodkg.kb.store import KnowledgeGraph
from prodkg.failpoints import ENV

# every case runs the pipeline in a child process and kills it: ~95 s together
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
POINTS = ["after-ingest", "after-extract", "after-predict", "graph-midload", "graph-before-swap", "after-graph"]
COUNT = "SELECT (COUNT(*) AS ?n) WHERE { GRAPH ?g { ?s ?p ?o } }"
PRODUCTS = "PREFIX schema: <https://schema.org/> SELECT (COUNT(DISTINCT ?p) AS ?n) WHERE { ?p a schema:Product }"


def _run(catalog: Path, out: Path, failpoint: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(ENV, None)
    if failpoint:
        env[ENV] = failpoint
    cmd = [sys.executable, "-m", "prodkg.flows.cli", "run", "--catalog", str(catalog), "--source", "webshop", "--target", "supplier",
           "--method", "source_only", "--baseline", "none", "--epochs", "3", "--no-prefect", "--full-check", "--quiet", "--out", str(out)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)


@pytest.fixture(scope="module")
def good_graph(text_catalog, tmp_path_factory):
    out = tmp_path_factory.mktemp("kill-out")
    done = _run(text_catalog, out)
    assert done.returncode == 0, done.stderr
    kg = KnowledgeGraph(out / "kg")
    with kg.open() as store:
        n = int(store.query(COUNT).to_frame()["n"][0])
    return out, kg.current_path(), n


@pytest.mark.parametrize("point", POINTS)
def test_sigkill_leaves_last_good_graph_and_next_run_completes(point, good_graph, text_catalog):
    out, _, _ = good_graph
    good_path = KnowledgeGraph(out / "kg").current_path()
    with KnowledgeGraph(out / "kg").open() as store:
        good_n = int(store.query(COUNT).to_frame()["n"][0])
    killed = _run(text_catalog, out, point)
    assert killed.returncode == -signal.SIGKILL, (point, killed.returncode, killed.stderr[-2000:])
    kg = KnowledgeGraph(out / "kg")
    if point != "after-graph":  # after the swap, the killed run's graph is the good one
        assert kg.current_path() == good_path
        with kg.open() as store:
            assert int(store.query(COUNT).to_frame()["n"][0]) == good_n
    with kg.open() as store:
        assert int(store.query(PRODUCTS).to_frame()["n"][0]) == 54
    again = _run(text_catalog, out)
    assert again.returncode == 0, again.stderr[-2000:]
    assert kg.current_path() != good_path
    with kg.open() as store:
        assert int(store.query(PRODUCTS).to_frame()["n"][0]) == 54
