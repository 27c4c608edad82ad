"""Scaling of the stages that need no encoder: ingest and the graph stage (build, SHACL, publish) at growing sizes.

    PRODKG_DATA_HOME=../shared/datasets nice -n 10 .venv/bin/python bench/bench_scale_graph.py --sizes 50000,200000

For each size a synthetic catalog (``bench/synth_catalog.py``) is ingested and published by the
pipeline's own stage functions (``ingest_stage``, ``graph_stage``) into an on-disk store, with one
category prediction per product drawn with a fixed seed in place of the encoder and heads. Then
the nightly case: the same catalog with 2 % of the titles edited (and new predictions for those
products, as re-encoded products get), ingested and published again into the same store; the graph
stage updates the live graph incrementally when it can (the table says which path it took).
The catalog is made in a child process of its own, and each run (first, nightly) is measured in
another, so each run's peak RSS (``wait4`` ru_maxrss) is its own.
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

from _common import ROOT, machine, run_measured, today, write_section


def make(n: int, work: Path, changed_share: float) -> None:
    """Write the first night's catalog and the nightly one (``changed_share`` of the titles edited)."""
    from synth_catalog import changed, synth_catalog, write

    frame, taxonomy = synth_catalog(n)
    write(frame, taxonomy, work / f"graph-catalog-{n}-first.parquet")
    edited, _ = changed(frame, changed_share)
    write(edited, taxonomy, work / f"graph-catalog-{n}-night.parquet")


def child(n: int, work: Path, night: bool) -> None:
    """Run in the child: ingest + graph of one night; print one JSON line."""
    import numpy as np
    import pandas as pd

    from prodkg.catalogs.stage import IngestSettings, hide_target_labels, ingest_stage
    from prodkg.kb.publish import GraphSettings, graph_stage
    from prodkg.kb.triples import ModelInfo, RunInfo
    from prodkg.layout import RunLayout

    what = "night" if night else "first"
    catalog = work / f"graph-catalog-{n}-{what}.parquet"
    tax = catalog.with_name(catalog.stem + ".taxonomy.csv")
    out = work / f"graph-out-{n}"
    if not night:
        shutil.rmtree(out, ignore_errors=True)
    layout = RunLayout(out)
    rng = np.random.default_rng(0)
    # one prediction per product; on the nightly run the edited products (re-encoded) get new ones
    pick, conf = rng.integers(0, 1 << 30, n), rng.uniform(0.05, 1.0, n).round(4)
    t0 = time.perf_counter()
    ing = ingest_stage(IngestSettings(catalog=str(catalog), source=("catalog",), target=("new",), taxonomy=str(tax),
                                      catalog_name=f"graph-catalog-{n}"))
    ingest_s = time.perf_counter() - t0
    aisles = sorted({c for c in ing.products["category"].dropna().astype(str) if c})
    ids = ing.products["product_id"].astype(str)
    row = ids.str[1:].astype(int).to_numpy()  # synthetic ids are p<row>
    if night:
        edited = ing.products["title"].astype(str).str.endswith(" (new recipe)").to_numpy()
        redrawn = np.random.default_rng(1).uniform(0.05, 1.0, n).round(4)
        conf = conf.copy()
        conf[row[edited]] = redrawn[row[edited]]
    preds = pd.DataFrame({"product_id": ids, "task": "category", "value": np.asarray(aisles, dtype=object)[pick[row] % len(aisles)],
                          "confidence": conf[row], "model": "category/dann/bench"})
    run_id = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{what}"
    info = RunInfo(run_id=run_id, started=datetime.now(UTC), ended=datetime.now(UTC), catalog=ing.catalog_name, method="dann",
                   source_domains=ing.source, target_domains=ing.target,
                   models=[ModelInfo(model_id="category/dann/bench", name="category head", kind="head", details={})], config_hash="bench")
    products = hide_target_labels(ing.products, ing.target, ["category", *ing.attributes])
    taxonomy, attributes, name = ing.taxonomy, ing.attributes, ing.catalog_name
    del ing
    layout.run_dir(run_id).mkdir(parents=True, exist_ok=True)
    t1 = time.perf_counter()
    g = graph_stage(products, preds, taxonomy, attributes, info, GraphSettings(), name, layout=layout)
    graph_s = time.perf_counter() - t1
    store = sum(f.stat().st_size for f in Path(g["store"]).rglob("*") if f.is_file())
    update = g.get("update") or {}
    print(json.dumps({"size": n, "run": "first run" if not night else "re-run", "ingest": ingest_s, "graph": graph_s, "quads": g["quads"],
                      "changes": g["changes"], "store": store, "path": update.get("path"), "reason": update.get("reason"),
                      "rewritten": update.get("rewritten")}), flush=True)
    if night:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="50000,200000")
    p.add_argument("--changed", type=float, default=0.02)
    p.add_argument("--work", default=str(ROOT / "runs" / "scale"))
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--rows", help="write the section from the JSON lines of an earlier run's output instead of measuring")
    p.add_argument("--command", help="with --rows: the options that run was given (for the section's command line)")
    p.add_argument("--notes", help="a Markdown file appended to the section (what a profile of the runs showed)")
    p.add_argument("--load-note", default="shared with other jobs (load varies)", help="what else the machine ran")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    p.add_argument("--phase", choices=["make", "first", "night"], help=argparse.SUPPRESS)
    a = p.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    if a.child:
        if a.phase == "make":
            make(a.child, work, a.changed)
        else:
            child(a.child, work, a.phase == "night")
        return
    rows = []

    def publish() -> None:
        body = report(rows, a)
        print(body)
        if not a.no_write:
            print("wrote", write_section("scale-graph", body), flush=True)

    if a.rows:  # the printed rows of an earlier run (its command line is in --command)
        rows = [json.loads(line) for line in Path(a.rows).read_text().splitlines() if line.startswith('{"size"')]
        publish()
        return
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "bench")])}
    for n in (int(s) for s in a.sizes.split(",")):
        for phase in ("make", "first", "night"):
            load_before = os.getloadavg()[0]
            cmd = [sys.executable, __file__, "--child", str(n), "--phase", phase, "--changed", str(a.changed), "--work", str(work)]
            stdout, stderr, code, wall, rss = run_measured(cmd, env)
            if code != 0:
                raise SystemExit(f"size {n} ({phase}) failed: {stderr[-3000:]}")
            for r in (json.loads(line) for line in stdout.splitlines() if line.startswith("{")):
                r["rss"], r["wall"] = rss, wall
                r["load"] = (round(load_before, 1), round(os.getloadavg()[0], 1))
                rows.append(r)
                print(json.dumps(r), flush=True)
        for f in work.glob(f"graph-catalog-{n}-*"):
            f.unlink()
        publish()


def report(rows: list[dict], a) -> str:
    lines = ["## Scaling without the encoder: ingest and graph stage", "",
             (f"Command: `PRODKG_DATA_HOME=../shared/datasets nice -n 10 .venv/bin/python bench/bench_scale_graph.py "
              f"{a.command if a.rows and a.command else ' '.join(sys.argv[1:])}`  "),
             f"Machine: {machine()}, {a.load_note}. Date: {today()}.  ",
             ("The pipeline's `ingest_stage` and `graph_stage` (catalog and predictions spooled to disk as column-wise N-Quads "
             f"{'50,000'} products at a time and bulk-loaded, SHACL on the taxonomy, provenance and a 5,000-product sample, on-disk "
             "store published atomically) on synthetic catalogs, one seeded category prediction per product in place of the encoder "
             f"and heads. The re-run edits {a.changed:.0%} of the titles and redraws those products' predictions. Each run is its own "
             "process: peak RSS is that run's (ingest and graph stage; the catalog is made in another process)."), "",
             "| products | run | path | ingest | graph | quads | store | peak RSS |", "|---:|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        path = r.get("path") or ""
        if r.get("reason") and path == "full" and r["run"] != "first run":
            path += f" ({r['reason']})"
        lines.append(f"| {r['size']:,} | {r['run']} | {path} | {r['ingest']:.1f} s ({r['size'] / r['ingest']:,.0f}/s) | "
                     f"{r['graph']:.1f} s ({r['size'] / r['graph']:,.0f}/s) | {r['quads']:,} | {r['store'] / 2**20:.0f} MiB | {r['rss']:.2f} GiB |")
    firsts = {r["size"]: r for r in rows if r["run"] == "first run"}
    ratios = [f"{r['size']:,}: {r['graph'] / firsts[r['size']]['graph']:.1%}" for r in rows if r["run"] == "re-run" and r["size"] in firsts]
    if ratios:
        lines += ["", "Graph stage of the re-run against the first run's: " + ", ".join(ratios) + "."]
    smallest, largest = min(firsts, default=None), max(firsts, default=None)
    if smallest is not None and largest != smallest:
        rate = {k: {s: firsts[s]["size"] / firsts[s][k] for s in (smallest, largest)} for k in ("ingest", "graph")}
        lines += ["", f"First-run throughput at {largest:,} products against {smallest:,}: "
                  + ", ".join(f"{k} {rate[k][largest] / rate[k][smallest]:.0%}" for k in ("ingest", "graph")) + "."]
    loads = [f"{r['size']:,} {r['run']}: {r['load'][0]} → {r['load'][1]}" for r in rows if r.get("load")]
    if loads:
        lines += ["", "Load average (1 min) before → after each run: " + "; ".join(loads) + "."]
    if a.notes:
        lines += ["", Path(a.notes).read_text().strip()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
