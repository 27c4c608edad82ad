"""Memory of a whole `prodkg run` per stage at scale, with the text encoder's work done beforehand.

    PRODKG_DATA_HOME=../shared/datasets nice -n 10 .venv/bin/python bench/bench_scale_memory.py --products 1000000

A synthetic catalog (``bench/synth_catalog.py``, seed 0) is written under ``runs/scale-memory/`` (gitignored) and
its feature cache is filled with one 384-d vector per product text before the run: a hashed bag-of-words projected
at random, L2-normalised, under the MiniLM encoder's cache identity. The run then reads every product's vector
from the cache (the few titles ingest normalises differently are encoded by MiniLM), fits the heads, scores the
target and builds the graph as a first run does, in a fresh output folder, as one ``prodkg run`` process with stages
as plain functions. What it leaves out is encoding a million titles (65 minutes on 2 cores), which the ``scale``
section measures end to end; the vectors' values change what is learnt, not what is held. With ``--images 0.1``
a tenth of the products carry one of the bundled photos (as ``bench_scale.py --images``); the photos are encoded by
EfficientNet-Lite0 in the run (a few thousand distinct ones), and the section is ``scale-memory-images``.

The process's resident memory is sampled every 0.2 s (``/proc/PID/status`` VmRSS) and each sample is counted in
the stage its progress lines say was running (to the second: a sample in the second one stage ends and the next
starts counts in both); the peak of the whole process comes from ``wait4`` (ru_maxrss).
The table goes to the ``scale-memory`` section of docs/BENCHMARKS.md (``--no-write``: print only).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from _common import ROOT, machine, today, write_section  # noqa: E402
from synth_catalog import data_home, synth_catalog, write  # noqa: E402

STAGE_LINE = re.compile(r"prodkg: (\d\d:\d\d:\d\d) (\w+) (started|ended)")


def hashed_vectors(texts: list[str], dim: int = 384, seed: int = 0) -> np.ndarray:
    """A cheap stand-in for a text encoder: each word hashed to one of 65,536 random directions, summed, normalised."""
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((1 << 16, dim)).astype(np.float32)
    out = np.empty((len(texts), dim), np.float32)
    for i, text in enumerate(texts):
        words = [int.from_bytes(hashlib.blake2b(w.lower().encode(), digest_size=4).digest(), "little") & 0xFFFF for w in text.split()]
        v = table[words].sum(0) if words else table[0]
        out[i] = v / (np.linalg.norm(v) or 1.0)
    return out


def fill_cache(frame, cache_dir: Path, batch: int = 50_000) -> str:
    """Put a vector for every product text of ``frame`` in the feature cache at ``cache_dir``; return the encoder id."""
    from prodkg.catalogs.stage import product_text
    from prodkg.extractors.cache import FeatureCache
    from prodkg.extractors.extract import content_hash
    from prodkg.extractors.text_hf import MiniLMEncoder

    encoder_id = MiniLMEncoder.identify().encoder_id
    texts = [product_text(t, d) for t, d in zip(frame["title"].tolist(), frame["description"].tolist())]
    with FeatureCache(cache_dir) as cache:
        for a in range(0, len(texts), batch):
            part = [t for t in texts[a:a + batch] if t]
            cache.put_many(encoder_id, dict(zip((content_hash(t, "text") for t in part), hashed_vectors(part))))
    return encoder_id


def sample_rss(pid: int, samples: list, stop: threading.Event, every: float = 0.2) -> None:
    while not stop.is_set():
        try:
            with open(f"/proc/{pid}/status") as status:
                kb = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            break
        samples.append((time.time(), kb / 2**20))
        stop.wait(every)


def per_stage(samples: list, stderr: str, day: str) -> dict[str, float]:
    """The highest sample during each stage (by the stage's started/ended progress lines)."""
    spans, open_ = {}, {}
    for hhmmss, stage, what in STAGE_LINE.findall(stderr):
        t = time.mktime(time.strptime(f"{day} {hhmmss}", "%Y-%m-%d %H:%M:%S"))
        if what == "started":
            open_[stage] = t
        elif stage in open_:
            spans[stage] = (open_.pop(stage), t + 1)
    return {stage: max((r for t, r in samples if a <= t < b), default=float("nan")) for stage, (a, b) in spans.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--products", type=int, default=1_000_000)
    p.add_argument("--images", type=float, default=0.0,
                   help="share of products with a bundled photo (0.1: the images variant); photos are encoded in the run")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--method", default="dann")
    p.add_argument("--work", default=str(ROOT / "runs" / "scale-memory"))
    p.add_argument("--section", help="the docs/BENCHMARKS.md section (default: scale-memory, or scale-memory-images with --images)")
    p.add_argument("--load-note", default="shared with other jobs (load varies)", help="what else the machine ran")
    p.add_argument("--notes", help="a Markdown file appended to the section")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--row", help="write the section from the JSON line an earlier run printed (its output file)")
    p.add_argument("--command", help="with --row: the options that run was given (for the section's command line)")
    a = p.parse_args()
    if a.row:
        row = next(json.loads(line) for line in Path(a.row).read_text().splitlines() if line.startswith('{"products"'))
        publish(row, a)
        return
    work = Path(a.work)
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    frame, taxonomy = synth_catalog(a.products, images=a.images)
    catalog, tax = write(frame, taxonomy, work / "catalog.parquet")
    started = time.perf_counter()
    fill_cache(frame, out / "cache")
    fill_seconds = time.perf_counter() - started
    del frame
    cmd = [sys.executable, "-m", "prodkg.flows.cli", "run", "--catalog", str(catalog), "--taxonomy", str(tax), "--source", "catalog",
           "--target", "new", "--method", a.method, "--baseline", "none", "--epochs", str(a.epochs), "--no-prefect", "--out", str(out), "--json"]
    if a.images:  # the photos are the dataset mirror's: local images are read only from the catalog's folder and these roots
        cmd[-3:-3] = ["--image-roots", str(data_home())]
    samples: list = []
    stop = threading.Event()
    with open(work / "run.out", "w+") as so, open(work / "run.err", "w+") as se:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=so, stderr=se, text=True)
        sampler = threading.Thread(target=sample_rss, args=(proc.pid, samples, stop), daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        stop.set()
        sampler.join()
        so.seek(0)
        se.seek(0)
        stdout, stderr = so.read(), se.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"prodkg run failed:\n{stderr[-4000:]}")
    (work / "samples.json").write_text(json.dumps(samples))  # (unix time, GiB) every 0.2 s, beside run.err's stage lines
    summary = json.loads(stdout[stdout.index("{"):])
    stages = per_stage(samples, stderr, time.strftime("%Y-%m-%d"))
    row = {"products": a.products, "images": a.images, "wall": wall, "peak": usage.ru_maxrss / 2**20, "stages": stages, "durations": summary["durations"],
           "features": summary.get("features"), "fill_seconds": fill_seconds}
    print(json.dumps(row), flush=True)
    publish(row, a)


def publish(row: dict, a) -> None:
    """Print the section for ``row`` and write it to docs/BENCHMARKS.md (unless ``--no-write``)."""
    durations, stages, peak, wall, fill_seconds = row["durations"], row["stages"], row["peak"], row["wall"], row["fill_seconds"]
    command = a.command if a.row and a.command else " ".join(sys.argv[1:])
    images = row.get("images") or 0.0
    title = "## Memory of a first run at scale, encoder work done beforehand" + (f" ({images:.0%} with a photo)" if images else "")
    lines = [title, "",
             f"Command: `PRODKG_DATA_HOME=../shared/datasets nice -n 10 .venv/bin/python bench/bench_scale_memory.py {command}`  ",
             (f"Machine: {machine()}, {a.load_note}. Date: {today()}. One `prodkg run` (`--no-prefect`, method {a.method}, "
              f"{a.epochs} epochs, no baseline) over a synthetic catalog whose feature cache holds a stand-in vector for every product "
              "text (see the script's docstring); the run reads them, fits the heads, scores the target and builds the graph."), "",
             "| products | peak RSS (wait4) | " + " | ".join(f"{s} (peak, time)" for s in durations) + " | wall |",
             "|---:|---:|" + "---:|" * len(durations) + "---:|",
             f"| {row['products']:,} | **{peak:.2f} GiB** | " +
             " | ".join(f"{stages.get(s, float('nan')):.2f} GiB, {sec:.0f} s" for s, sec in durations.items()) + f" | {wall:.0f} s |", ""]
    feats = (row.get("features") or {}).get("text", {})
    lines.append(f"- Text vectors: {feats.get('cached', 0):,} read from the cache, {feats.get('computed', 0):,} encoded by MiniLM "
                 f"(titles ingest normalised). Filling the cache took {fill_seconds:.0f} s, outside the run.")
    if images:
        photos = (row.get("features") or {}).get("image", {})
        lines.append(f"- Photos: {images:.0%} of the products carry one of the bundled photos (drawn with repeats); their vectors are "
                     f"made in the run by EfficientNet-Lite0 ({photos.get('computed', 0):,} computed, {photos.get('cached', 0):,} "
                     "from the cache).")
    if a.notes:
        lines += ["", Path(a.notes).read_text().strip()]
    body = "\n".join(lines)
    print(body)
    if not a.no_write:
        print("wrote", write_section(a.section or ("scale-memory-images" if images else "scale-memory"), body))


if __name__ == "__main__":
    main()
