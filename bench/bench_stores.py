"""Oxigraph against Virtuoso at catalog scale: load time, store size and the named queries on the same graph.

    PRODKG_DATA_HOME=../shared/datasets nice -n 10 .venv/bin/python bench/bench_stores.py --products 1000000

The graph is the one the pipeline writes for the real Instacart catalog (bench_graph.py's inputs: the
catalog repeated under new ids until there are ``--products`` products, one seeded category prediction
each, the department → aisle taxonomy), built as the graph stage builds it (kb.frame_nquads) and
written once to an N-Quads file. Then, each on its own empty on-disk store:

* **Oxigraph, prodkg's local store** (``OxigraphStore.load_file``: Oxigraph's bulk loader);
* **Virtuoso, as prodkg publishes to it** (``--store-url``: ``RemoteGraph.publish`` of the local store's
  quads, the Graph Store protocol in requests of 50,000 statements, registry and swap included);
* **Virtuoso's own bulk loader** (``ld_dir`` + ``rdf_loader_run`` + ``checkpoint`` through ``isql-vt``), what an
  operator would use for a first load that size.

The named queries (kb/queries/*.rq) then run on the local store and on the server through prodkg's
store classes, with the same bindings; each answer's row count is checked to agree. Virtuoso runs
on loopback with a buffer cache of ``--virtuoso-buffers`` 8 KiB pages. Results go to the
``stores`` section of docs/BENCHMARKS.md (``--no-write``: print only).
"""

from __future__ import annotations

import argparse
import gc
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _common import machine, today, write_section  # noqa: E402
from bench_graph import QUERIES, build_inputs, from_frames  # noqa: E402

from prodkg.kb.nquads import encode_quads  # noqa: E402
from prodkg.kb.publication import RemoteGraph  # noqa: E402
from prodkg.kb.queries import run_query  # noqa: E402
from prodkg.kb.store import OxigraphStore  # noqa: E402
from prodkg.kb.virtuoso import VirtuosoStore  # noqa: E402
from prodkg.kb.virtuoso_server import VirtuosoServer  # noqa: E402

#: The graph every quad of the bulk-loaded copy lands in when a line has none (all of ours name one).
BULK_DEFAULT_GRAPH = "urn:prodkg:bench:bulk"


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def query_times(store, repeat: int, names: list[str]) -> dict[str, tuple[float, int]]:
    """Median seconds and row count of each named query in ``names``."""
    out = {}
    for name in names:
        bindings = QUERIES[name]
        times, rows = [], 0
        for _ in range(repeat):
            t = time.perf_counter()
            rows = len(run_query(store, name, **bindings).to_frame())
            times.append(time.perf_counter() - t)
        out[name] = (statistics.median(times), rows)
        print(f"  {name}: {out[name][0] * 1000:.0f} ms, {rows} rows", flush=True)
    return out


def isql(server: VirtuosoServer, statement: str) -> None:
    done = subprocess.run(["isql-vt", f"127.0.0.1:{server.sql_port}", server.user, server.password, f"exec={statement}"],
                          capture_output=True, text=True, timeout=24 * 3600, check=False)
    if done.returncode != 0 or "Error" in done.stdout or "*** Error" in done.stderr:
        raise SystemExit(f"isql-vt {statement!r} failed: {done.stdout[-2000:]} {done.stderr[-2000:]}")


def served_quads(server: VirtuosoServer, graphs: set[str]) -> int:
    """Quads the server holds in ``graphs``, asked without prodkg in between."""
    response = httpx.post(server.sparql_url, timeout=3600, headers={"Accept": "application/sparql-results+json"},
                          data={"query": "SELECT ?g (COUNT(*) AS ?n) WHERE { GRAPH ?g { ?s ?p ?o } } GROUP BY ?g"})
    response.raise_for_status()
    return sum(int(b["n"]["value"]) for b in response.json()["results"]["bindings"] if b["g"]["value"] in graphs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--products", type=int, default=200_000)
    p.add_argument("--virtuoso-buffers", type=int, default=340_000, help="NumberOfBuffers (8 KiB pages); 340,000 is about 2.6 GiB")
    p.add_argument("--repeat", type=int, default=3, help="runs of each named query (the median is reported)")
    p.add_argument("--work", default=None, help="folder for the stores (default: a temporary one)")
    p.add_argument("--skip-publish", action="store_true", help="leave out prodkg's publish to Virtuoso: only its bulk loader is timed there (the queries read the live graph a publish names, which a bulk-loaded copy lacks)")
    p.add_argument("--queries", default=",".join(QUERIES),
                   help="the named queries to time, comma-separated (product_categories returns the whole catalog: at 1 M "
                        "products that is an export's work, not an endpoint's)")
    p.add_argument("--section", default="stores", help="the docs/BENCHMARKS.md section to write")
    p.add_argument("--heading", default="Stores at catalog scale: Oxigraph (local) against Virtuoso")
    p.add_argument("--notes", default=None, help="a Markdown file appended to the section")
    p.add_argument("--no-write", action="store_true")
    a = p.parse_args()
    a.query_names = [q.strip() for q in a.queries.split(",") if q.strip()]
    unknown = sorted(set(a.query_names) - set(QUERIES))
    if unknown:
        p.error(f"--queries: unknown {unknown}; the bench's queries are {list(QUERIES)}")

    work = Path(a.work or tempfile.mkdtemp(prefix="prodkg-stores-"))
    work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    inputs = build_inputs(a.products)
    terms, chunks = from_frames(inputs)
    dump = work / "graph.nq"
    with dump.open("wb") as fh:
        fh.writelines(encode_quads(terms))
        fh.writelines(chunks)
    del inputs, terms, chunks
    gc.collect()
    print(f"{a.products:,} products -> {dump} ({dump.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t:.1f} s", flush=True)

    rows: dict[str, dict] = {}
    local_dir = work / "oxigraph"
    shutil.rmtree(local_dir, ignore_errors=True)
    t = time.perf_counter()
    with OxigraphStore(local_dir) as local:
        local.load_file(dump)
        n_quads = len(local)
        graphs = {str(g) for g in local.graphs()}
    rows["oxigraph"] = {"load": time.perf_counter() - t, "size": du(local_dir)}
    print(f"oxigraph: {n_quads:,} quads in {rows['oxigraph']['load']:.1f} s, {rows['oxigraph']['size'] / 2**20:.0f} MiB", flush=True)
    with OxigraphStore(local_dir, read_only=True) as local:
        rows["oxigraph"]["queries"] = query_times(local, a.repeat, a.query_names)

    vdir = work / "virtuoso"
    shutil.rmtree(vdir, ignore_errors=True)
    server = VirtuosoServer(vdir, buffers=a.virtuoso_buffers, max_rows=max(1_000_000, 2 * a.products)).start(timeout=300)
    try:
        remote = VirtuosoStore(server.sparql_url, user=server.user, password=server.password, timeout=3600)
        if not a.skip_publish:
            t = time.perf_counter()
            with OxigraphStore(local_dir, read_only=True) as local:
                RemoteGraph(remote).publish(local.quads(), "bench-run")
            load_s = time.perf_counter() - t
            isql(server, "checkpoint;")  # the database file then holds what the transaction log held
            rows["virtuoso (prodkg publish)"] = {"load": load_s, "size": du(vdir)}
            print(f"virtuoso publish: {rows['virtuoso (prodkg publish)']['load']:.1f} s", flush=True)
            rows["virtuoso (prodkg publish)"]["queries"] = query_times(remote, a.repeat, a.query_names)
        bulk = vdir / "bulk"
        bulk.mkdir()
        shutil.copyfile(dump, bulk / "graph.nq")
        before = du(vdir)
        t = time.perf_counter()
        isql(server, f"ld_dir('{bulk}', 'graph.nq', '{BULK_DEFAULT_GRAPH}');")
        isql(server, "rdf_loader_run();")
        isql(server, "checkpoint;")
        rows["virtuoso (own bulk loader)"] = {"load": time.perf_counter() - t, "size": du(vdir) - before}
        loaded = served_quads(server, graphs)
        if loaded != n_quads:
            raise SystemExit(f"Virtuoso's bulk loader holds {loaded:,} of the {n_quads:,} quads")
        print(f"virtuoso bulk loader: {rows['virtuoso (own bulk loader)']['load']:.1f} s", flush=True)

    finally:
        server.stop()

    body = report(rows, n_quads, a)
    if a.notes:
        body += "\n\n" + Path(a.notes).read_text().strip()
    print(body)
    if not a.no_write:
        print("wrote", write_section(a.section, body), flush=True)
    if not a.work:
        shutil.rmtree(work, ignore_errors=True)


def report(rows: dict[str, dict], n_quads: int, a) -> str:
    names = a.query_names
    lines = [f"## {a.heading}", "",
             f"Command: `PRODKG_DATA_HOME=../shared/datasets nice -n 10 .venv/bin/python bench/bench_stores.py {' '.join(sys.argv[1:])}`  ",
             f"Machine: {machine()}; Virtuoso 7.2 (Debian's virtuoso-opensource) on loopback, {a.virtuoso_buffers:,} buffers "
             f"({a.virtuoso_buffers * 8 / 2**20:.1f} GiB). Date: {today()}.  ",
             f"{a.products:,} products (the Instacart catalog repeated under new ids, one seeded prediction each): {n_quads:,} quads, "
             "built as the graph stage builds them and written to one N-Quads file. Each store starts empty on disk. Load: seconds "
             "until the store holds every quad (Virtuoso's bulk loader: `ld_dir`, `rdf_loader_run`, `checkpoint`). Queries: median of "
             f"{a.repeat} runs through prodkg's store classes, in ms (rows); the row counts agree between stores.", "",
             "| store | load | quads/s | on disk | " + " | ".join(f"`{n}`" for n in names) + " |",
             "|---|---:|---:|---:|" + "---:|" * len(names)]
    for store, r in rows.items():
        q = r.get("queries", {})
        cells = [f"{q[n][0] * 1000:,.0f} ({q[n][1]:,})" if n in q else "–" for n in names]
        lines.append(f"| {store} | {r['load']:.1f} s | {n_quads / r['load']:,.0f} | {r['size'] / 2**20:,.0f} MiB | " + " | ".join(cells) + " |")
    counts = {store: {n: r["queries"][n][1] for n in names} for store, r in rows.items() if "queries" in r}
    if len({tuple(c.values()) for c in counts.values()}) > 1:
        lines += ["", f"**Row counts differ between stores**: {counts}"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
