"""Extraction on a local Dask cluster of N workers against one process, on the same synthetic catalog.

    PRODKG_DATA_HOME=../shared/datasets nice -n 10 .venv/bin/python bench/bench_dask.py --products 20000 --workers 2

One synthetic text catalog (``bench/synth_catalog.py``, seed 0) goes through ``prodkg run`` three times,
each a separate process into a fresh output folder (empty feature cache, empty store):

1. stages as plain functions (``--no-prefect``), extraction in the run's own process;
2. the Prefect flow with its default task runner (threads in the run's process);
3. the Prefect flow with ``--workers N``: extraction sharded over a local Dask cluster of N single-threaded
   worker processes (prefect-dask), as ``--dask-address`` would shard it over a real cluster.

Recorded: the extract stage's wall time and products/s, the whole run's wall and peak RSS (the run's own
process: Dask workers are separate processes and not counted), and the largest difference between the
text vectors of each run and those of the first (same features, whichever way they were computed).
Results go to the ``dask`` section of docs/BENCHMARKS.md (``--no-write``: print only).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from _common import ROOT, machine, run_once, today, write_section  # noqa: E402
from synth_catalog import synth_catalog, write  # noqa: E402


def vectors(summary: dict) -> pd.Series:
    frame = pd.read_parquet(Path(summary["run_dir"]) / "embeddings.parquet")
    return frame.set_index("product_id")["vector"].sort_index()


def max_diff(a: np.ndarray, b: np.ndarray, chunk: int = 50_000) -> float:
    """The largest |difference| of any component between two columns of vectors, a chunk of rows at a time."""
    out = 0.0
    for i in range(0, len(a), chunk):
        out = max(out, float(np.max(np.abs(np.stack(a[i:i + chunk]) - np.stack(b[i:i + chunk])), initial=0.0)))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--products", type=int, default=20_000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--text-encoder", default="minilm", help="the runs' text encoder (ngrams: what sharding costs at 1 M without "
                   "hours of MiniLM; see `prodkg list encoders`)")
    p.add_argument("--section", default="dask", help="the docs/BENCHMARKS.md section to write")
    p.add_argument("--work", default=str(ROOT / "runs" / "dask"))
    p.add_argument("--no-write", action="store_true")
    a = p.parse_args()
    work = Path(a.work)
    frame, taxonomy = synth_catalog(a.products)
    catalog, tax = write(frame, taxonomy, work / f"catalog-{a.products}.parquet")
    base = ["--catalog", str(catalog), "--taxonomy", str(tax), "--source", "catalog", "--target", "new", "--method", "source_only",
            "--baseline", "none", "--epochs", "1", "--text-encoder", a.text_encoder]
    modes = [("one process, stages as plain functions", ["--no-prefect"]),
             ("one process, Prefect flow (thread task runner)", []),
             (f"Prefect flow + local Dask cluster, {a.workers} workers", ["--workers", str(a.workers)])]
    rows, reference = [], None
    for label, extra in modes:
        out = work / "out"
        shutil.rmtree(out, ignore_errors=True)
        summary, wall, rss = run_once([*base, *extra, "--out", str(out)])
        vec = vectors(summary)
        if reference is None:
            reference = vec
        if not vec.index.equals(reference.index):
            raise SystemExit(f"{label}: the runs embedded different products")
        diff = max_diff(vec.to_numpy(), reference.to_numpy())
        row = {"mode": label, "extract": summary["durations"]["extract"], "wall": wall, "rss": rss, "max_diff": diff,
               "executor": summary.get("features", {})}
        rows.append(row)
        print(json.dumps(row, default=str), flush=True)
    shutil.rmtree(work, ignore_errors=True)
    body = report(rows, a)
    print(body)
    if not a.no_write:
        print("wrote", write_section(a.section, body), flush=True)


def report(rows: list[dict], a) -> str:
    lines = [f"## Extraction: local Dask cluster of {a.workers} workers against one process", "",
             f"Command: `PRODKG_DATA_HOME=../shared/datasets nice -n 10 .venv/bin/python bench/bench_dask.py {' '.join(sys.argv[1:])}`  ",
             f"Machine: {machine()}, shared with other jobs (load varies). Date: {today()}.  ",
             f"{a.products:,} synthetic products (text only, `{a.text_encoder}` text features), each run a fresh `prodkg run` with an empty feature cache; "
             "source-only head, 1 epoch (the heads are not what is measured). *Max |Δ|* is the largest difference of any vector "
             "component from the first run's vectors.", "",
             "| extraction | extract stage | products/s | run wall | peak RSS (run process) | max \\|Δ\\| vs first |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['extract']:.1f} s | {a.products / r['extract']:,.0f} | {r['wall']:.1f} s | {r['rss']:.2f} GiB | "
                     f"{r['max_diff']:.2g} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
