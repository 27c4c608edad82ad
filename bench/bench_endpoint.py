"""Load test of `prodkg serve` on loopback: normal queries alone, then with hostile ones running beside them.

    .venv/bin/python bench/bench_endpoint.py --seconds 60 --write

Starts `prodkg serve` as its own process (127.0.0.1, default settings: 10 s deadline, 1 GiB
per query, 4 workers) over a self-made 2,000-product graph (or ``--out``'s), then runs two
phases of ``--seconds`` each with 4 client threads:

1. *normal*: all 4 clients send the fixed mix of 4 normal SELECT queries.
2. *hostile*: 2 clients send the same normal mix while 2 others cycle through the hostile
   requests measured against the old endpoint (a 669 KB FILTER, a COUNT and an ORDER BY over
   a cartesian product, a 1 MB VALUES query, SERVICE to a loopback port, invalid UTF-8, a 1 MB
   GET, a cross-origin form, an unsupported content type).

Reports throughput and p50/p99 latency of the normal queries in each phase, the statuses the
hostile requests got, and whether the server stayed up. Every request is bounded (count, time)
and goes to loopback only. ``--write`` records the result in docs/BENCHMARKS.md. Exit status
1 when a normal query failed, a hostile one got an unexpected answer, or the server died.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from _common import machine, today, write_section  # noqa: E402

NORMAL = [
    "SELECT (COUNT(*) AS ?n) WHERE { ?p a schema:Product }",
    "SELECT ?id ?title WHERE { ?p schema:productID ?id . OPTIONAL { ?p schema:name ?title } } ORDER BY ?id LIMIT 50",
    "SELECT ?label (COUNT(?p) AS ?n) WHERE { GRAPH ?g { ?p schema:category ?c } ?c skos:prefLabel ?label } GROUP BY ?label ORDER BY DESC(?n) LIMIT 20",
    "SELECT ?p ?conf WHERE { ?x a pkg:Prediction ; pkg:subject ?p ; pkg:confidence ?conf . FILTER(?conf < 0.5) } LIMIT 100",
]

FORM = "application/x-www-form-urlencoded"
SPARQL = "application/sparql-query"


def _hostile(canary_port: int) -> list[tuple[str, dict, set[int]]]:
    """(name, request, statuses that count as handled) for each hostile request, in the order sent."""
    huge_filter = "SELECT * WHERE { ?s ?p ?o FILTER(" + " || ".join(f"?o = 'v{i:05d}'" for i in range(40_000)) + ") }"
    values = "SELECT ?v WHERE { VALUES ?v { " + " ".join(f'"{i:08d}"' for i in range(100_000)) + " } }"
    big_get = "SELECT * WHERE { ?s ?p ?o FILTER(?o = '" + "a" * 1_000_000 + "') }"
    return [
        ("669 KB FILTER", {"body": huge_filter.encode(), "type": SPARQL}, {413}),
        ("COUNT over a cartesian product", {"body": b"SELECT (COUNT(*) AS ?n) WHERE { ?a ?b ?c . ?d ?e ?f . ?g ?h ?i }",
                                            "type": SPARQL}, {504}),
        ("1 MB VALUES", {"body": values.encode(), "type": SPARQL}, {413}),
        ("SERVICE to a loopback port", {"body": f"SELECT * WHERE {{ SERVICE <http://127.0.0.1:{canary_port}/> {{ ?s ?p ?o }} }}".encode(),
                                        "type": SPARQL}, {403}),
        ("ORDER BY over a cartesian product", {"body": b"SELECT ?a ?d ?g WHERE { ?a ?b ?c . ?d ?e ?f . ?g ?h ?i } ORDER BY ?c ?f ?i",
                                               "type": SPARQL}, {504, 507}),
        ("invalid UTF-8", {"body": b"ASK { ?s ?p '\xff\xfe' }", "type": SPARQL}, {400}),
        ("1 MB GET", {"method": "GET", "path": "/sparql?" + urllib.parse.urlencode({"query": big_get})}, {413}),
        ("cross-origin form", {"body": urllib.parse.urlencode({"query": NORMAL[0]}).encode(), "type": FORM,
                               "headers": {"Origin": "http://evil.example"}}, {403}),
        ("unsupported content type", {"body": NORMAL[0].encode(), "type": "text/plain"}, {415}),
    ]


def _small_graph(root: Path) -> None:
    import pandas as pd

    from prodkg.kb.store import KnowledgeGraph
    from prodkg.kb.triples import RunInfo, catalog_quads, prediction_quads, run_quads, taxonomy_quads

    n = 2000
    labels = [f"c{i}" for i in range(20)]
    products = pd.DataFrame({"product_id": [f"p{i}" for i in range(n)], "title": [f"product {i}" for i in range(n)],
                             "category": [labels[i % 20] for i in range(n)]})
    predictions = pd.DataFrame({"product_id": products["product_id"], "task": "category", "value": products["category"],
                                "confidence": np.linspace(0, 1, n), "model": "m"})
    run = RunInfo("bench", datetime(2024, 1, 1, tzinfo=UTC), None, "bench", "dann")
    quads = (taxonomy_quads("bench", [(c, None) for c in labels]) + catalog_quads(products, catalog="bench", scheme="bench")
             + run_quads(run) + prediction_quads(predictions, run, catalog="bench", scheme="bench"))
    KnowledgeGraph(root).publish(quads, "bench")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def send(port: int, *, body: bytes | None = None, type: str | None = None, method: str = "POST",  # noqa: A002
         path: str = "/sparql", headers: dict | None = None, timeout: float = 60) -> int:
    """One request on a fresh connection; returns the status (0 when the connection failed)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        all_headers = {"Accept": "application/sparql-results+json", **(headers or {})}
        if type:
            all_headers["Content-Type"] = type
        conn.request(method, path, body=body, headers=all_headers)
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError:
        return 0
    finally:
        conn.close()


def run_phase(port: int, seconds: float, normal_clients: int, hostile: list | None, hostile_clients: int) -> dict:
    deadline = time.monotonic() + seconds
    lock = threading.Lock()
    latencies: list[float] = []
    failures: Counter = Counter()
    hostile_seen: Counter = Counter()
    hostile_bad: Counter = Counter()

    def normal_client(offset: int) -> None:
        i = offset
        while time.monotonic() < deadline:
            started = time.perf_counter()
            status = send(port, body=NORMAL[i % len(NORMAL)].encode(), type=SPARQL)
            elapsed = time.perf_counter() - started
            with lock:
                if status == 200:
                    latencies.append(elapsed)
                else:
                    failures[status] += 1
            i += 1

    def hostile_client(offset: int) -> None:
        i = offset
        while time.monotonic() < deadline:
            name, req, expected = hostile[i % len(hostile)]
            status = send(port, **req)
            with lock:
                hostile_seen[(name, status)] += 1
                if status not in expected:
                    hostile_bad[(name, status)] += 1
            i += 1

    threads = [threading.Thread(target=normal_client, args=(k,)) for k in range(normal_clients)]
    threads += [threading.Thread(target=hostile_client, args=(k * 4,)) for k in range(hostile_clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    lat = np.array(latencies) * 1000
    return {
        "normal_clients": normal_clients, "hostile_clients": hostile_clients, "seconds": round(elapsed, 1),
        "normal_ok": len(latencies), "normal_failed": dict(failures),
        "normal_per_s": round(len(latencies) / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 1) if len(lat) else None,
        "max_ms": round(float(lat.max()), 1) if len(lat) else None,
        "hostile": {f"{name} -> {status}": n for (name, status), n in sorted(hostile_seen.items())},
        "hostile_unexpected": {f"{name} -> {status}": n for (name, status), n in sorted(hostile_bad.items())},
    }


def _status(port: int) -> dict | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/status")
        response = conn.getresponse()
        return json.loads(response.read()) if response.status == 200 else None
    except OSError:
        return None
    finally:
        conn.close()


def _section(report: dict, command: str) -> str:
    normal, hostile = report["normal"], report["hostile"]
    rows = []
    for label, phase in (("normal only", normal), ("with hostile", hostile)):
        failed = sum(phase["normal_failed"].values())
        rows.append(f"| {label} | {phase['normal_clients']} + {phase['hostile_clients']} | {phase['seconds']} s | "
                    f"{phase['normal_ok']} | {failed} | {phase['normal_per_s']} | {phase['normal_per_s'] / phase['normal_clients']:.1f} | "
                    f"{phase['p50_ms']} ms | {phase['p99_ms']} ms | {phase['max_ms']} ms |")
    hostile_lines = "\n".join(f"| {k.rsplit(' -> ', 1)[0]} | {k.rsplit(' -> ', 1)[1]} | {n} |" for k, n in hostile["hostile"].items())
    verdict = "stayed up" if report["server_alive"] else "DIED"
    return f"""## SPARQL endpoint under hostile load

Command: `{command}`
Machine: {machine()} (shared with other jobs while it ran). Date: {today()}.
Server: `prodkg serve` as its own process on 127.0.0.1, default settings (10 s deadline, 1024 MiB per query,
4 query workers, 64 KiB largest query), over {report['graph']}. Clients: 4 threads on fresh connections; each
phase runs {report['seconds_per_phase']:g} s. Normal mix: a count, a 50-row listing, a category aggregate, a
confidence filter (POST `application/sparql-query`, JSON results). In the hostile phase 2 clients send the normal
mix and 2 cycle through the hostile requests below.

| phase | clients (normal + hostile) | time | normal answered | normal failed | normal/s | normal/s per client | p50 | p99 | max |
|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Hostile requests in the second phase and what they got (the server {verdict}; {report['workers_started']} worker
processes started in all, each killed one replaced):

| request | status | count |
|---|---|---|
{hostile_lines}

A query past its deadline is killed with its worker process (504), one past its memory cap dies inside its worker
(507), and a query that has used 0.5 s of CPU gets the lowest CPU priority, so the normal queries keep the
cores while hostile ones run out their deadline. The other hostile requests are refused before any query runs.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="prodkg output folder whose kg/ to serve (default: a self-made 2,000-product graph)")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each phase (default 60)")
    parser.add_argument("--write", action="store_true", help="record the result in docs/BENCHMARKS.md")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    tmp = tempfile.TemporaryDirectory()
    out = Path(args.out) if args.out else Path(tmp.name)
    if not args.out:
        _small_graph(out / "kg")
    port = _free_port()
    canary = socket.socket()  # SERVICE's target: a loopback port that must never see a connection
    canary.bind(("127.0.0.1", 0))
    canary.listen(1)
    canary.setblocking(False)
    server = subprocess.Popen([sys.executable, "-m", "prodkg.flows.cli", "serve", "--out", str(out), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        up_deadline = time.monotonic() + 120
        while _status(port) is None:
            if server.poll() is not None or time.monotonic() > up_deadline:
                print("the server did not start:", server.stderr.read().decode() if server.stderr else "", file=sys.stderr)
                return 1
            time.sleep(0.2)
        hostile = _hostile(canary.getsockname()[1])
        report: dict = {"graph": f"`{args.out}/kg`" if args.out else "a self-made 2,000-product graph (about 20,000 quads)",
                        "seconds_per_phase": args.seconds}
        report["normal"] = run_phase(port, args.seconds, 4, None, 0)
        report["hostile"] = run_phase(port, args.seconds, 2, hostile, 2)
        try:
            canary.accept()
            report["canary_connections"] = 1
        except OSError:
            report["canary_connections"] = 0
        status = _status(port)
        report["server_alive"] = server.poll() is None and status is not None
        report["workers_started"] = status["pool"]["started_workers"] if status else None
        report["date"] = datetime.now(UTC).date().isoformat()
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        canary.close()
        tmp.cleanup()
    print(json.dumps(report, indent=1) if args.json else json.dumps(report))
    if args.write:
        command = ".venv/bin/python bench/bench_endpoint.py" + (f" --seconds {args.seconds:g}" if args.seconds != 60 else "") + " --write"
        print("wrote", write_section("endpoint", _section(report, command)))
    bad = (any(p["normal_failed"] for p in (report["normal"], report["hostile"])) or report["hostile"]["hostile_unexpected"]
           or not report["server_alive"] or report["canary_connections"])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
