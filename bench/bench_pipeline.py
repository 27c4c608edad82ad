"""End-to-end benchmark: a first run and an immediate re-run of `prodkg run`, wall time per stage and peak RSS.

    PRODKG_DATA_HOME=../shared/datasets python bench/bench_pipeline.py --dataset office-caltech-10 --source amazon --target webcam
    PRODKG_DATA_HOME=../shared/datasets python bench/bench_pipeline.py --dataset instacart-products --epochs 10

Each run is a separate `prodkg run` process (as a user would start it), so peak RSS is that
process's own high-water mark. The first run starts from an empty output folder and feature
cache; the re-run reuses both. Results go to the matching section of docs/BENCHMARKS.md.

Orchestration: by default each run starts Prefect's ephemeral API in-process (what an ad-hoc
`prodkg run` does; about 15-20 s on 2 cores). `--prefect-server` starts one `prefect server`
on loopback first and points both runs at it, as the nightly deployment runs
(`prodkg schedule`); `--no-prefect` runs the stages as plain functions.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from _common import machine, run_once, today, write_section  # noqa: E402


@contextlib.contextmanager
def prefect_server(home: Path):
    """`prefect server start` on a free loopback port; yields the env that points a run at it; stopped by pid."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
           "PREFECT_API_URL": "", "PREFECT_UI_ENABLED": "false"}
    log = open(home / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{api}/health", timeout=2) as reply:
                    if json.load(reply) is True:
                        break
            except (OSError, ValueError):
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"prefect server did not start; see {home / 'server.log'}")
            time.sleep(0.5)
        yield {"PREFECT_HOME": str(home), "PREFECT_API_URL": api}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="office-caltech-10")
    p.add_argument("--catalog")
    p.add_argument("--source")
    p.add_argument("--target")
    p.add_argument("--method", default="dann")
    p.add_argument("--epochs", type=int)
    how = p.add_mutually_exclusive_group()
    how.add_argument("--no-prefect", action="store_true", help="run the stages as plain functions")
    how.add_argument("--prefect-server", action="store_true", help="run both against one local `prefect server` (as nightly runs do)")
    p.add_argument("--out", help="output folder (default: a fresh temporary folder)")
    p.add_argument("--no-write", action="store_true", help="print only; do not update docs/BENCHMARKS.md")
    a = p.parse_args()
    out = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="prodkg-bench-"))
    if out.exists():
        shutil.rmtree(out)
    args = ["--catalog", a.catalog] if a.catalog else ["--dataset", a.dataset]
    for flag, value in (("--source", a.source), ("--target", a.target), ("--method", a.method), ("--epochs", a.epochs)):
        if value is not None:
            args += [flag, str(value)]
    if a.no_prefect:
        args.append("--no-prefect")
    args += ["--out", str(out)]

    results = []
    with contextlib.ExitStack() as stack:
        extra_env = stack.enter_context(prefect_server(Path(tempfile.mkdtemp(prefix="prodkg-prefect-")))) if a.prefect_server else None
        for label in ("first run", "immediate re-run"):
            summary, wall, rss = run_once(args, extra_env)
            results.append((label, summary, wall, rss))
            print(f"{label}: {wall:.1f} s wall, peak RSS {rss:.2f} GiB, stages {summary['durations']}")

    first, rerun = results[0], results[1]
    orchestrator = ("direct (stages as plain functions)" if a.no_prefect
                    else "Prefect 3, against a running local `prefect server`" if a.prefect_server
                    else "Prefect 3, ephemeral API started by each run")
    stages = list(first[1]["durations"])
    name = a.catalog or a.dataset
    s0 = first[1]
    c = s0["counts"]
    lines = [
        f"## End to end: {name}" + (" (direct)" if a.no_prefect else " (local Prefect server)" if a.prefect_server else ""),
        "",
        f"Command: `PRODKG_DATA_HOME=../shared/datasets python bench/bench_pipeline.py {' '.join(sys.argv[1:])}`  ",
        f"Machine: {machine()}. Date: {today()}. Orchestrator: {orchestrator}.  ",
        f"Catalog: {c['rows_in']} products in ({', '.join(s0['source'])} → {', '.join(s0['target'])}), {c['quarantined']} quarantined, "
        f"{c['quads']} quads written; method {s0['method']}.",
        "",
        "| | " + " | ".join(stages) + " | total wall | peak RSS |",
        "|---|" + "---:|" * (len(stages) + 2),
    ]
    for label, summary, wall, rss in results:
        lines.append(f"| {label} | " + " | ".join(f"{summary['durations'].get(st, 0):.1f} s" for st in stages) + f" | {wall:.1f} s | {rss:.2f} GiB |")
    lines.append("")
    lines.append(f"Re-run speed-up (wall): {first[2] / rerun[2]:.1f}×.")
    if rerun[1].get("graph_reused_from"):
        lines.append(f"Re-run graph: content unchanged, so the live graph of run {rerun[1]['graph_reused_from']} was republished "
                     "with the re-run's provenance instead of being rebuilt.")
    feats = {m: f"{f['computed']} computed / {f['cached']} cached" for m, f in rerun[1]["features"].items()}
    lines.append(f"Re-run features: {feats}.")
    cat = s0["metrics"].get("category", {})
    base = s0.get("baseline_metrics") or {}
    if "target_accuracy" in cat:
        acc = f"Target accuracy (labels used only for evaluation): {s0['method']} {100 * cat['target_accuracy']:.1f} %"
        if base.get("target_accuracy") is not None:
            acc += f", {s0['baseline']} {100 * base['target_accuracy']:.1f} %"
        lines.append(acc + ".")
    body = "\n".join(lines)
    print(body)
    if not a.no_write:
        suffix = "-direct" if a.no_prefect else "-prefect-server" if a.prefect_server else ""
        print("wrote", write_section(f"pipeline-{name}{suffix}", body))


if __name__ == "__main__":
    main()
