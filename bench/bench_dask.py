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
from _common import ROOT, machine, run_once, today, write_section  # noqa: E402
from synth_catalog import synth_catalog, write  # noqa: E402


def vectors(summary: dict) -> tuple[np.ndarray, np.ndarray]:
    """The run's product ids (sorted) and their vectors as one (N, D) float32 matrix in that order.

    Read through Arrow as one matrix: a pandas column of a million per-row arrays took the bench process past 13 GiB
    (killed for memory after the third 1 M run of 2026-12-02)."""
    import pyarrow.parquet as pq

    source = pq.ParquetFile(Path(summary["run_dir"]) / "embeddings.parquet")
    n = source.metadata.num_rows
    ids, matrix, at = np.empty(n, dtype=object), None, 0
    for batch in source.iter_batches(batch_size=65_536, columns=["product_id", "vector"]):
        values = batch.column(1).flatten().to_numpy().astype(np.float32, copy=False)
        rows = values.reshape(len(batch), -1) if len(batch) else values.reshape(0, 0)
        if matrix is None:
            matrix = np.empty((n, rows.shape[1]), dtype=np.float32)
        matrix[at:at + len(batch)] = rows
        ids[at:at + len(batch)] = batch.column(0).to_pylist()
        at += len(batch)
    if matrix is None:
        return ids, np.zeros((0, 0), np.float32)
    order = np.argsort(ids, kind="stable")
    in_order = bool(len(order) < 2 or (np.diff(order) == 1).all())
    return ids[order], matrix if in_order else matrix[order]  # the runs write products in catalog order: no copy then


def max_diff(a: np.ndarray, b: np.ndarray, chunk: int = 50_000) -> float:
    """The largest |difference| of any component between two (N, D) matrices, a chunk of rows at a time."""
    out = 0.0
    for i in range(0, len(a), chunk):
        out = max(out, float(np.max(np.abs(a[i:i + chunk] - b[i:i + chunk]), initial=0.0)))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--products", type=int, default=20_000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--text-encoder", default="minilm", help="the runs' text encoder (ngrams: what sharding costs at 1 M without "
                   "hours of MiniLM; see `prodkg list encoders`)")
    p.add_argument("--modes", default="direct,prefect,dask",
                   help="which runs, in this order: direct (plain functions), prefect (the flow, thread runner), dask (the flow on a "
                        "local cluster); the first one's vectors are the reference")
    p.add_argument("--section", default="dask", help="the docs/BENCHMARKS.md section to write")
    p.add_argument("--work", default=str(ROOT / "runs" / "dask"))
    p.add_argument("--no-write", action="store_true")
    a = p.parse_args()
    work = Path(a.work)
    frame, taxonomy = synth_catalog(a.products)
    catalog, tax = write(frame, taxonomy, work / f"catalog-{a.products}.parquet")
    base = ["--catalog", str(catalog), "--taxonomy", str(tax), "--source", "catalog", "--target", "new", "--method", "source_only",
            "--baseline", "none", "--epochs", "1", "--text-encoder", a.text_encoder]
    every = {"direct": ("one process, stages as plain functions", ["--no-prefect"]),
             "prefect": ("one process, Prefect flow (thread task runner)", []),
             "dask": (f"Prefect flow + local Dask cluster, {a.workers} workers", ["--workers", str(a.workers)])}
    wanted = [m.strip() for m in a.modes.split(",") if m.strip()]
    if not wanted or any(m not in every for m in wanted):
        raise SystemExit(f"--modes: a comma-separated list of {', '.join(every)}, got {a.modes!r}")
    modes = [every[m] for m in wanted]
    rows, reference = [], None
    for label, extra in modes:
        out = work / "out"
        shutil.rmtree(out, ignore_errors=True)
        summary, wall, rss = run_once([*base, *extra, "--out", str(out)])
        ids, vec = vectors(summary)
        if reference is None:  # kept on disk and mapped: the next run's matrix and this one are not both in memory
            np.save(work / "reference.npy", vec)
            reference = (ids, np.load(work / "reference.npy", mmap_mode="r"))
        if not np.array_equal(ids, reference[0]):
            raise SystemExit(f"{label}: the runs embedded different products")
        diff = max_diff(vec, reference[1])
        del vec
        row = {"mode": label, "extract": summary["durations"]["extract"], "wall": wall, "rss": rss, "max_diff": diff,
               "executor": summary.get("features", {})}
        rows.append(row)
        print(json.dumps(row, default=str), flush=True)
    reference = None
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
