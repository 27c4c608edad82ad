"""Bounded load test of the SPARQL endpoint on loopback: fixed request count and duration, reports requests/s and p99 latency.

    PYTHONPATH=. python bench/bench_endpoint.py --out prodkg-output --requests 400 --clients 4 --max-seconds 60

Starts the endpoint in this process (127.0.0.1, read-only), sends the same mix of named queries
from ``--clients`` threads until ``--requests`` are done or ``--max-seconds`` pass, then stops
the server. Without ``--out`` it publishes a small self-made graph first. Exit status 1 when any
request failed.
"""

from __future__ import annotations

import argparse
import json
import platform
import socket
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

QUERIES = [
    "SELECT (COUNT(*) AS ?n) WHERE { ?p a schema:Product }",
    "SELECT ?id ?title WHERE { ?p schema:productID ?id . OPTIONAL { ?p schema:name ?title } } ORDER BY ?id LIMIT 50",
    "SELECT ?label (COUNT(?p) AS ?n) WHERE { GRAPH ?g { ?p schema:category ?c } ?c skos:prefLabel ?label } GROUP BY ?label ORDER BY DESC(?n) LIMIT 20",
    "SELECT ?p ?conf WHERE { ?x a pkg:Prediction ; pkg:subject ?p ; pkg:confidence ?conf . FILTER(?conf < 0.5) } LIMIT 100",
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="prodkg output folder whose kg/ to serve (default: a self-made 2,000-product graph)")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    import uvicorn

    from prodkg.kb.sparql_endpoint import EndpointSettings, create_app

    tmp = tempfile.TemporaryDirectory()
    root = Path(args.out) / "kg" if args.out else Path(tmp.name) / "kg"
    if not args.out:
        _small_graph(root)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(root, EndpointSettings(timeout_s=10)), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    url = f"http://127.0.0.1:{port}/sparql"
    deadline = time.monotonic() + args.max_seconds
    latencies: list[float] = []
    errors: list[str] = []

    def one(i: int) -> None:
        if time.monotonic() > deadline:
            return
        body = urllib.parse.urlencode({"query": QUERIES[i % len(QUERIES)]}).encode()
        request = urllib.request.Request(url, data=body, headers={"Accept": "application/sparql-results+json",
                                                                 "Content-Type": "application/x-www-form-urlencoded"})
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                json.loads(response.read())
            latencies.append(time.perf_counter() - started)
        except Exception as exc:  # noqa: BLE001 - every failure is counted and reported, whatever it is
            errors.append(f"{type(exc).__name__}: {exc}")

    started = time.perf_counter()
    with ThreadPoolExecutor(args.clients) as pool:
        list(pool.map(one, range(args.requests)))
    elapsed = time.perf_counter() - started
    server.should_exit = True
    thread.join(timeout=10)
    tmp.cleanup()
    lat = np.array(latencies) * 1000
    report = {
        "requests": len(latencies) + len(errors), "errors": len(errors), "clients": args.clients,
        "seconds": round(elapsed, 2), "requests_per_s": round(len(latencies) / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 1) if len(lat) else None,
        "graph": str(root) if args.out else "self-made, 2,000 products", "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "date": datetime.now(UTC).date().isoformat(),
    }
    print(json.dumps(report, indent=1) if args.json else " ".join(f"{k}={v}" for k, v in report.items()))
    for e in errors[:5]:
        print("error:", e, file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
