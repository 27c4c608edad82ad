"""Scaling of the stages that need no encoder: ingest and the graph stage (build, SHACL, publish) at growing sizes.

    PRODKG_DATA_HOME=../shared/datasets nice -n 10 .venv/bin/python bench/bench_scale_graph.py --sizes 50000,200000

For each size a synthetic catalog (``bench/synth_catalog.py``) is ingested and published by the
pipeline's own stage functions (``ingest_stage``, ``graph_stage``) into an on-disk store, with one
category prediction per product drawn with a fixed seed in place of the encoder and heads. Then
the nightly case: the same catalog with 2 % of the titles edited, ingested and published again
into the same store (the graph stage records the changes and republishes). Each size runs in a
child process of its own, so its peak RSS (``wait4`` ru_maxrss) is its own.
Results go to the ``scale-graph`` section of docs/BENCHMARKS.md (``--no-write``: print only).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from _common import ROOT, machine, run_measured, today, write_section  # noqa: E402


def child(n: int, work: Path, changed_share: float) -> None:
    """Run in the child: ingest + graph, first and nightly; print one JSON line per run."""
    import numpy as np
    import pandas as pd
    from synth_catalog import changed, synth_catalog, write

    from prodkg.catalogs.stage import IngestSettings, hide_target_labels, ingest_stage
    from prodkg.kb.publish import GraphSettings, graph_stage
    from prodkg.kb.triples import ModelInfo, RunInfo
    from prodkg.layout import RunLayout

    frame, taxonomy = synth_catalog(n)
    catalog, tax = write(frame, taxonomy, work / f"graph-catalog-{n}.parquet")
    out = work / f"graph-out-{n}"
    shutil.rmtree(out, ignore_errors=True)
    layout = RunLayout(out)
    rng = np.random.default_rng(0)
    # one prediction per product, the same on both nights (unchanged heads predict unchanged products alike)
    pick, conf = rng.integers(0, 1 << 30, n), rng.uniform(0.05, 1.0, n).round(4)
    for what, share in (("first run", None), (f"re-run, {changed_share:.0%} changed", changed_share)):
        if share is not None:
            edited, _ = changed(frame, share)
            edited.to_parquet(catalog, index=False)
        t0 = time.perf_counter()
        ing = ingest_stage(IngestSettings(catalog=str(catalog), source=("catalog",), target=("new",), taxonomy=str(tax)))
        ingest_s = time.perf_counter() - t0
        aisles = sorted({c for c in ing.products["category"].dropna().astype(str) if c})
        ids = ing.products["product_id"].astype(str)
        row = ids.str[1:].astype(int).to_numpy()  # synthetic ids are p<row>
        preds = pd.DataFrame({"product_id": ids, "task": "category", "value": np.asarray(aisles, dtype=object)[pick[row] % len(aisles)],
                              "confidence": conf[row], "model": "category/dann/bench"})
        run_id = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{'first' if share is None else 'night'}"
        info = RunInfo(run_id=run_id, started=datetime.now(UTC), ended=datetime.now(UTC), catalog=ing.catalog_name, method="dann",
                       source_domains=ing.source, target_domains=ing.target,
                       models=[ModelInfo(model_id="category/dann/bench", name="category head", kind="head", details={})], config_hash="bench")
        products = hide_target_labels(ing.products, ing.target, ["category", *ing.attributes])
        layout.run_dir(run_id).mkdir(parents=True, exist_ok=True)
        t1 = time.perf_counter()
        g = graph_stage(products, preds, ing.taxonomy, ing.attributes, info, GraphSettings(), ing.catalog_name, layout=layout)
        graph_s = time.perf_counter() - t1
        store = sum(f.stat().st_size for f in (out / "kg").rglob("*") if f.is_file())
        print(json.dumps({"size": n, "run": what, "ingest": ingest_s, "graph": graph_s, "quads": g["quads"], "changes": g["changes"], "store": store}), flush=True)
    shutil.rmtree(out, ignore_errors=True)
    catalog.unlink(missing_ok=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="50000,200000")
    p.add_argument("--changed", type=float, default=0.02)
    p.add_argument("--work", default=str(ROOT / "runs" / "scale"))
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    if a.child:
        child(a.child, work, a.changed)
        return
    rows = []
    for n in (int(s) for s in a.sizes.split(",")):
        cmd = [sys.executable, __file__, "--child", str(n), "--changed", str(a.changed), "--work", str(work)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "bench")])}
        stdout, stderr, code, wall, rss = run_measured(cmd, env)
        if code != 0:
            raise SystemExit(f"size {n} failed: {stderr[-3000:]}")
        lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
        for r in lines:
            r["rss"] = rss
            r["wall"] = wall
            rows.append(r)
            print(json.dumps(r), flush=True)
        body = report(rows, a)
        print(body)
        if not a.no_write:
            print("wrote", write_section("scale-graph", body), flush=True)


def report(rows: list[dict], a) -> str:
    lines = ["## Scaling without the encoder: ingest and graph stage", "",
             f"Command: `PRODKG_DATA_HOME=../shared/datasets nice -n 10 .venv/bin/python bench/bench_scale_graph.py {' '.join(sys.argv[1:])}`  ",
             f"Machine: {machine()}, shared with other jobs (load varies). Date: {today()}.  ",
             "The pipeline's `ingest_stage` and `graph_stage` (quads built as rdflib terms, SHACL over the whole graph, published to the "
             "on-disk store) on synthetic catalogs, one seeded category prediction per product in place of the encoder and heads. "
             "Peak RSS is the child process's for both runs of a size.", "",
             "| products | run | ingest | graph | quads | store | peak RSS (both runs) |", "|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['size']:,} | {r['run']} | {r['ingest']:.1f} s ({r['size'] / r['ingest']:,.0f}/s) | "
                     f"{r['graph']:.1f} s ({r['size'] / r['graph']:,.0f}/s) | {r['quads']:,} | {r['store'] / 2**20:.0f} MiB | {r['rss']:.2f} GiB |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
