"""How fast a bad setting is refused: each case of the config issue, through the installed `prodkg` command.

Each case runs in a fresh process (imports included, as a user meets it) and must exit with status 2,
print one line and write nothing. Prints a table and writes its section of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine, today, write_section

PRODKG = str(Path(sys.executable).with_name("prodkg"))
OFFICE = ["--dataset", "office-caltech-10", "--source", "amazon", "--target", "webcam"]
CASES = [
    ("run, unknown method", ["run", *OFFICE, "--method", "dnan"]),
    ("schedule, unknown method", ["schedule", *OFFICE, "--method", "dnan"]),
    ("run, missing catalog", ["run", "--catalog", "/nope.csv", "--source", "a", "--target", "b"]),
    ("run, unknown domain", ["run", "--dataset", "office-caltech-10", "--source", "amazon", "--target", "webcm"]),
    ("run, bad dataset name", ["run", "--dataset", "office-caltech10"]),
    ("run, --epochs -1", ["run", *OFFICE, "--epochs", "-1"]),
    ("schedule, missing catalog", ["schedule", "--catalog", "/nope.csv", "--source", "a", "--target", "b"]),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3, help="runs per case; the table gives the median")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    rows = []
    for name, argv in CASES:
        times, lines, codes = [], [], set()
        for _ in range(args.repeats):
            out = Path(tempfile.mkdtemp()) / "out"
            started = time.perf_counter()
            done = subprocess.run([PRODKG, *argv, "--out", str(out)], capture_output=True, text=True, env=os.environ.copy())
            times.append(time.perf_counter() - started)
            codes.add(done.returncode)
            lines = done.stderr.strip().splitlines()
            assert not out.exists(), f"{name}: wrote {out}"
            shutil.rmtree(out.parent, ignore_errors=True)
        assert codes == {2} and len(lines) == 1, (name, codes, lines)
        rows.append((name, sorted(times)[len(times) // 2], max(times), lines[0]))
    load = os.getloadavg()[0]
    table = ["| case | median s | max s | the one line printed |", "|---|---|---|---|"]
    table += [f"| {n} | {m:.2f} | {x:.2f} | `{line}` |" for n, m, x, line in rows]
    body = "\n".join([
        "## Config refusal: a bad setting is refused before any work",
        "",
        f"Command: `.venv/bin/python bench/bench_config.py --repeats {args.repeats}`. Machine: {machine()}. Date: {today()}. "
        f"Load average at the end: {load:.1f} (other jobs were running on the 2 cores: times on a quiet machine are lower).",
        "",
        "Each case is a fresh `prodkg` process (imports included); every one exited with status 2, printed one line and wrote nothing.",
        "",
        *table,
    ])
    print(body)
    if not args.no_write:
        write_section("config", body)


if __name__ == "__main__":
    main()
