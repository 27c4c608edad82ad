"""Shared bits of the bench scripts: machine description and writing a section of docs/BENCHMARKS.md."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "docs" / "BENCHMARKS.md"
#: office-caltech-10's domains and the letters task names use (A->W)
DOMAINS = ("amazon", "caltech10", "dslr", "webcam")
SHORT = {"amazon": "A", "caltech10": "C", "dslr": "D", "webcam": "W"}
HEADER = "# Benchmarks\n\nEvery table here is written by a script in `bench/`; each section names its command, machine and date.\n"


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{os.cpu_count()} cores ({cpu}){mem}, no GPU, Python {platform.python_version()}"


def today() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")


def write_section(name: str, body: str) -> Path:
    """Replace (or append) the section delimited by ``<!-- bench:name -->`` markers in docs/BENCHMARKS.md."""
    BENCHMARKS.parent.mkdir(parents=True, exist_ok=True)
    text = BENCHMARKS.read_text(encoding="utf-8") if BENCHMARKS.exists() else HEADER
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + block + "\n"
    BENCHMARKS.write_text(text, encoding="utf-8")
    return BENCHMARKS

def run_measured(cmd: list[str], env: dict[str, str]) -> tuple[str, str, int, float, float]:
    """Run ``cmd`` from the repository root; return its stdout, stderr, exit code, wall seconds and peak RSS in GiB.

    Output goes to temporary files, not pipes, so a child writing more than a pipe holds never blocks."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=err, text=True)
        # wait4 reaps the child and returns its own resource usage (ru_maxrss in KiB on Linux)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    return stdout, stderr, os.waitstatus_to_exitcode(status), wall, usage.ru_maxrss / 2**20


def run_once(args: list[str], extra_env: dict[str, str] | None = None) -> tuple[dict, float, float]:
    """Run `prodkg run ... --json --quiet`; return the summary, wall seconds and peak RSS in GiB."""
    cmd = [sys.executable, "-m", "prodkg.flows.cli", "run", *args, "--json", "--quiet"]
    stdout, stderr, code, wall, rss = run_measured(cmd, {**os.environ, **(extra_env or {})})
    if code != 0:
        raise SystemExit(f"prodkg run failed ({code}):\n{stderr[-4000:]}")
    return json.loads(stdout[stdout.index("{"):]), wall, rss
