"""Graph benchmark: bulk load and named-query latency of prodkg's store vs a plain rdflib in-memory Dataset.

    PRODKG_DATA_HOME=../shared/datasets python bench/bench_graph.py [--min-quads 1000000]

"Load from the pipeline" times what graph_stage does with the stage frames (kb.frame_nquads, then the
store's loader); the rows after it keep the earlier paths for comparison.

The quads are the ones the pipeline writes (kb.triples builders) for the real Instacart
catalog: 49,688 products with titles, the department → aisle SKOS taxonomy, and one category
prediction per product with its provenance. The catalog is repeated under new ids until there
are at least --min-quads quads. Both stores get the same quads; both answer the same named
queries (kb/queries/*.rq) with the same bindings, and the answers are checked to agree.
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyoxigraph
import rdflib
from rdflib import Literal
from rdflib.namespace import XSD

from _common import machine, today, write_section  # noqa: E402

from prodkg.catalogs import load_dataset  # noqa: E402
from prodkg.kb.frame_nquads import catalog_nquads, prediction_nquads  # noqa: E402
from prodkg.kb.nquads import encode_quads  # noqa: E402
from prodkg.kb.queries import load_query, run_query  # noqa: E402
from prodkg.kb.store import OxigraphStore  # noqa: E402
from prodkg.kb.triples import ModelInfo, RunInfo, catalog_quads, prediction_quads, run_quads, taxonomy_quads  # noqa: E402

QUERIES = {
    "products_per_category": {},
    "products_in_category": {"category": "snacks"},  # a department: rolls up over skos:broader*
    "low_confidence": {"threshold": 0.3},
    "product_categories": {},
}


def _bench_run() -> RunInfo:
    return RunInfo(run_id="bench-run", started=datetime(2026, 1, 1, tzinfo=UTC), ended=datetime(2026, 1, 1, 0, 5, tzinfo=UTC),
                   catalog="instacart-products", method="dann", source_domains=["catalog"], target_domains=["new"],
                   models=[ModelInfo(model_id="category/dann/bench", name="category head", kind="head", details={})], config_hash="bench")


def _copies(products: int | None = None):
    """The catalog (or its first ``products`` rows) again and again under new ids, each with one seeded prediction per product."""
    src = load_dataset("instacart-products", os.environ.get("PRODKG_DATA_HOME"))
    base = src.frame if products is None else src.frame.iloc[:products]
    rng = np.random.default_rng(0)
    aisles = sorted({t[0] for t in src.taxonomy if t[1] is not None})
    copy = 0
    while True:
        frame = base.assign(product_id=base["product_id"] + (f"-{copy}" if copy else ""))
        frame["category"] = frame["category"].replace("", None)
        preds = pd.DataFrame({"product_id": frame["product_id"], "task": "category",
                              "value": rng.choice(aisles, len(frame)), "confidence": rng.uniform(0.05, 1.0, len(frame)).round(4),
                              "model": "category/dann/bench"})
        yield src, frame, preds
        copy += 1


def _inputs(src, frames: list[pd.DataFrame], preds_frames: list[pd.DataFrame], run: RunInfo) -> dict:
    return {"products": pd.concat(frames, ignore_index=True), "predictions": pd.concat(preds_frames, ignore_index=True),
            "run": run, "name": src.name, "taxonomy": src.taxonomy}


def build_quads(min_quads: int, products: int | None = None) -> tuple[list[tuple], dict]:
    """The quads as rdflib terms (the old builders) and the frames they come from (what the pipeline holds)."""
    run = _bench_run()
    quads, frames, preds_frames = [], [], []
    for src, frame, preds in _copies(products):
        if not quads:
            quads = taxonomy_quads(src.name, src.taxonomy) + run_quads(run)
        quads += catalog_quads(frame, catalog=src.name, attributes=[], scheme=src.name)
        quads += prediction_quads(preds, run, catalog=src.name, scheme=src.name, threshold=0.5)
        frames.append(frame)
        preds_frames.append(preds)
        if len(quads) >= min_quads:
            return quads, _inputs(src, frames, preds_frames, run)
    raise AssertionError("unreachable")


def build_inputs(n_products: int) -> dict:
    """The frames alone (no rdflib terms) of ``n_products`` products: the catalog repeated under new ids, as build_quads does."""
    frames, preds_frames, have = [], [], 0
    for src, frame, preds in _copies():
        take = min(len(frame), n_products - have)
        frames.append(frame.iloc[:take])
        preds_frames.append(preds.iloc[:take])
        have += take
        if have >= n_products:
            return _inputs(src, frames, preds_frames, _bench_run())
    raise AssertionError("unreachable")


def from_frames(inputs: dict, *, content_hash: bool = False) -> tuple[list[tuple], list[bytes]]:
    """What graph_stage builds: the few quads as rdflib terms, the catalog and predictions as column-wise N-Quads."""
    name, run = inputs["name"], inputs["run"]
    terms = taxonomy_quads(name, inputs["taxonomy"]) + run_quads(run)
    catalog = catalog_nquads(inputs["products"], catalog=name, attributes=[], scheme=name, content_hash=content_hash)
    preds = prediction_nquads(inputs["predictions"], run, catalog=name, scheme=name, threshold=0.5)
    assert not catalog.fallback and not preds.fallback
    return terms, [*catalog.chunks, *preds.chunks]


def rdflib_binding(value):
    if isinstance(value, float):
        return Literal(value, datatype=XSD.double)
    return Literal(value)


def timed(fn, repeat: int = 3) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        gc.collect()
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def timed_in_child(fn, timeout: float) -> tuple[float | None, int | None]:
    """Run ``fn`` (returning a row count) in a forked child that shares the loaded graphs; stop it after ``timeout`` s.

    Returns (seconds, rows), or (None, None) when the child ran out of time.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: answer through the pipe, then leave without running the parent's cleanup
        os.close(read_fd)
        try:
            gc.collect()
            t = time.perf_counter()
            rows = fn()
            os.write(write_fd, f"{time.perf_counter() - t} {rows}".encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.2)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(read_fd)
        return None, None
    with os.fdopen(read_fd) as pipe:
        answer = pipe.read().split()
    return (float(answer[0]), int(answer[1])) if answer else (None, None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--min-quads", type=int, default=1_000_000)
    p.add_argument("--rdflib-timeout", type=float, default=600, help="seconds an rdflib query may run before it is stopped")
    p.add_argument("--products", type=int, default=None, help="use only the first N catalog rows (a quick check of the script)")
    p.add_argument("--no-write", action="store_true")
    a = p.parse_args()

    t = time.perf_counter()
    quads, inputs = build_quads(a.min_quads, a.products)
    build_s = time.perf_counter() - t
    n = len(quads)
    print(f"{n} quads built in {build_s:.1f} s")
    from_frames({**inputs, "products": inputs["products"].iloc[:100], "predictions": inputs["predictions"].iloc[:100]})  # imports

    # 0. what the pipeline does now: frames -> column-wise N-Quads -> Oxigraph's loader (lenient; terms for the few others)
    gc.collect()
    t = time.perf_counter()
    terms, chunks = from_frames(inputs)
    frames_build_s = time.perf_counter() - t
    fast = OxigraphStore(None)
    fast.add_quads(terms, nquads=chunks)
    frames_s = time.perf_counter() - t
    frames_load_s = frames_s - frames_build_s
    print(f"prodkg store load (from the frames): {frames_s:.2f} s = build {frames_build_s:.2f} s + load {frames_load_s:.2f} s")
    raw_fast = b"".join(chunks)
    del chunks, terms
    loaders = {}
    for label, lenient in (("strict", False), ("lenient", True)):
        for how in ("load", "bulk_load"):
            gc.collect()
            t = time.perf_counter()
            probe = pyoxigraph.Store()
            getattr(probe, how)(input=raw_fast, format=pyoxigraph.RdfFormat.N_QUADS, lenient=lenient)
            loaders[f"`{how}`, {label}"] = time.perf_counter() - t
            del probe
    gc.collect()
    t = time.perf_counter()
    parsed = list(pyoxigraph.parse(raw_fast, format=pyoxigraph.RdfFormat.N_QUADS, lenient=True))
    parse_s = time.perf_counter() - t
    probe = pyoxigraph.Store()
    t = time.perf_counter()
    probe.bulk_extend(parsed)
    loaders["`bulk_extend` on pyoxigraph Quads (parse + extend)"] = parse_s + time.perf_counter() - t
    extend_only = time.perf_counter() - t
    del probe, parsed, raw_fast
    gc.collect()
    t = time.perf_counter()
    from_frames(inputs, content_hash=True)
    hashed_build_s = time.perf_counter() - t
    for k, v in loaders.items():
        print(f"  loader {k}: {v:.2f} s")

    # 1. from the pipeline's rdflib terms: prodkg serialises to N-Quads and streams them into
    #    Oxigraph's loader (transactional in memory, bulk on disk); rdflib adds them to its in-memory Dataset (addN per graph)
    ox_load, ox = timed(lambda: _ox_load(quads), repeat=1)
    print(f"prodkg store load (from terms): {ox_load:.2f} s ({n / ox_load:,.0f} quads/s)")
    rd_load, ds = timed(lambda: _rdflib_load(quads), repeat=1)
    print(f"rdflib Dataset load (from terms): {rd_load:.2f} s ({n / rd_load:,.0f} quads/s)")

    # 2. from an N-Quads file (a dump, or another system's export): both parse the same bytes
    with tempfile.TemporaryDirectory() as tmp:
        dump = Path(tmp) / "graph.nq"
        ox.dump(dump)
        raw = dump.read_bytes()
        ser_s, _ = timed(lambda: sum(len(c) for c in encode_quads(quads)), repeat=1)
        bytes_s, _ = timed(lambda: _ox_bytes_load(raw), repeat=1)
        del raw
        file_ox_s, _ = timed(lambda: _ox_file_load(dump), repeat=1)
        print(f"prodkg store load (N-Quads file): {file_ox_s:.2f} s")
        file_rd_s, _ = timed_in_child(lambda: len(rdflib.Dataset().parse(dump, format="nquads")), a.rdflib_timeout)
        print(f"rdflib Dataset parse (N-Quads file): {file_rd_s} s")
        disk_s, _ = timed(lambda: _ox_disk_load(quads, Path(tmp) / "disk"), repeat=1)
        print(f"prodkg on-disk store load (from terms, what publish does): {disk_s:.2f} s")

    same_size = len(fast) == len(ox)
    print(f"same statements: {len(fast):,} from the frames, {len(ox):,} from the terms")
    rows = []
    agree_fast = True
    for name, bindings in QUERIES.items():
        ox_s, ox_res = timed(lambda: run_query(ox, name, **bindings).to_frame(), repeat=3)
        fast_res = run_query(fast, name, **bindings).to_frame()
        key = list(ox_res.columns)
        agree_fast &= ox_res.sort_values(key).reset_index(drop=True).equals(fast_res.sort_values(key).reset_index(drop=True))
        text = load_query(name)
        init = {k: rdflib_binding(v) for k, v in bindings.items()}
        rd_s, rd_rows = timed_in_child(lambda: len(list(ds.query(text, initBindings=init))), a.rdflib_timeout)
        rows.append((name, len(ox_res), ox_s, rd_s, rd_rows))
        shown = f"{rd_s * 1000:.0f} ms ({rd_s / ox_s:.0f}×)" if rd_s is not None else f"stopped after {a.rdflib_timeout:.0f} s"
        print(f"{name}: prodkg {ox_s * 1000:.0f} ms, rdflib {shown}, rows {len(ox_res)} vs {rd_rows}")

    def ratio(slow: float | None, fast: float) -> str:
        return f"{slow / fast:.1f}×" if slow is not None else f"> {a.rdflib_timeout / fast:,.0f}×"

    lines = [
        "## Graph: prodkg store (Oxigraph, streamed N-Quads) vs plain rdflib",
        "",
        f"Command: `PRODKG_DATA_HOME=../shared/datasets python bench/bench_graph.py {' '.join(sys.argv[1:])}`  ",
        f"Machine: {machine()}. Date: {today()}.  ",
        f"Data: {n:,} quads from the real Instacart catalog (products, department → aisle taxonomy, one category prediction "
        "per product with provenance), repeated under new ids to pass the size. Both stores in memory.",
        "",
        "| | prodkg (Oxigraph) | rdflib Dataset | ratio |",
        "|---|---:|---:|---:|",
        f"| **load from the pipeline** (prodkg: stage frames → column-wise N-Quads → store; rdflib: its terms → Dataset) | "
        f"{frames_s:.1f} s ({n / frames_s:,.0f} quads/s) | {rd_load:.1f} s ({n / rd_load:,.0f} quads/s) | **{rd_load / frames_s:.1f}×** |",
        f"| load from rdflib terms (the path before the column-wise one) | {ox_load:.1f} s ({n / ox_load:,.0f} quads/s) | {rd_load:.1f} s ({n / rd_load:,.0f} quads/s) | {rd_load / ox_load:.1f}× |",
        f"| load from an N-Quads file | {file_ox_s:.1f} s ({n / file_ox_s:,.0f} quads/s) | "
        + (f"{file_rd_s:.1f} s ({n / file_rd_s:,.0f} quads/s)" if file_rd_s is not None else f"stopped after {a.rdflib_timeout:.0f} s")
        + f" | {ratio(file_rd_s, file_ox_s)} |",
    ]
    for name, count, ox_s, rd_s, rd_rows in rows:
        agree = "" if rd_rows is None or rd_rows == count else f", rdflib {rd_rows:,} rows!"
        shown = f"{rd_s * 1000:,.0f} ms" if rd_s is not None else f"stopped after {a.rdflib_timeout:.0f} s"
        lines.append(f"| `{name}` ({count:,} rows{agree}) | {ox_s * 1000:,.0f} ms | {shown} | {ratio(rd_s, ox_s)} |")
    lines += [
        "",
        "Query times are the best of 3 runs for prodkg and one run for rdflib (in a forked process holding the same "
        f"loaded Dataset, stopped after {a.rdflib_timeout:.0f} s); the roll-up query is `products_in_category` (skos:broader*). "
        "Row counts agree unless marked.",
        "",
        f"Load from the pipeline, prodkg side: building the N-Quads from the frames {frames_build_s:.1f} s (with the per-product "
        f"content hashes graph_stage also writes: {hashed_build_s:.1f} s), Oxigraph's in-memory loader on them {frames_load_s:.1f} s "
        f"(lenient: the IRIs are minted and the literals escaped by prodkg), so {rd_load / frames_load_s:.1f}× rdflib is the most "
        "any builder could reach with this loader. The rdflib side is timed from terms already built; building them from the frames "
        f"(timed together with reading the catalog file) took {build_s:.1f} s more, so frames → rdflib Dataset is at most "
        f"{build_s + rd_load:.1f} s (at most {(build_s + rd_load) / frames_s:.1f}× the prodkg path). "
        + ("The store built from the frames holds the same number of statements and gives the same answers to every query as the one built from the terms. "
           if same_size and agree_fast else f"**The store built from the frames differs** (statements {len(fast):,} vs {len(ox):,}, answers agree: {agree_fast}). ")
        + "Loaders on the same column-wise bytes, in memory: "
        + "; ".join(f"{k} {v:.1f} s" for k, v in loaders.items())
        + f" (of which `bulk_extend` itself {extend_only:.1f} s).",
        "",
        "Where the load time goes, prodkg side: serialising the rdflib terms to N-Quads in Python "
        f"{ser_s:.1f} s; Oxigraph's in-memory loader on the serialised bytes alone {bytes_s:.1f} s "
        f"({rd_load / bytes_s:.1f}× rdflib's load even with no serialisation at all). "
        f"The on-disk store the pipeline publishes to (RocksDB, bulk loader) took {disk_s:.1f} s for the same terms.",
    ]
    body = "\n".join(lines)
    print(body)
    if not a.no_write:
        print("wrote", write_section("graph", body))


def _ox_load(quads):
    store = OxigraphStore(None)
    store.add_quads(quads)
    return store


def _ox_bytes_load(raw: bytes):
    import pyoxigraph

    store = pyoxigraph.Store()
    store.load(input=raw, format=pyoxigraph.RdfFormat.N_QUADS)  # the loader an in-memory OxigraphStore uses
    return store


def _ox_file_load(path: Path):
    store = OxigraphStore(None)
    store.load_file(path)
    return store


def _ox_disk_load(quads, path: Path):
    with OxigraphStore(path) as store:
        store.add_quads(quads)


def _rdflib_load(quads):
    ds = rdflib.Dataset(default_union=True)
    graphs = {}
    by_graph: dict = {}
    for s, p_, o, g in quads:
        by_graph.setdefault(g, []).append((s, p_, o))
    for g, triples in by_graph.items():
        graph = graphs.setdefault(g, ds.graph(g))
        graph.addN((s, p_, o, graph) for s, p_, o in triples)
    return ds


if __name__ == "__main__":
    main()
