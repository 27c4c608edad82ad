"""Measure the extractors: bf16 vs fp32 agreement and speed per encoder, and end-to-end extraction throughput.

Run from the repository root::

    PRODKG_DATA_HOME=/path/to/datasets python bench/bench_extract.py [--images 96] [--texts 200]

Images come from office-caltech-10 (amazon domain, spread over the 10 classes); texts are the 81
grocery-store product descriptions topped up with instacart product names. The precision each encoder
uses for ``precision="auto"`` is hard-coded from this script's output (bf16 only where the cosine
between bf16 and fp32 features is >= 0.999 on every item).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from extractors import FeatureCache, extract_features, get_encoder  # after the sys.path line, on purpose
from _common import machine, today, write_section  # noqa: E402
from extractors.base import native_bf16


def office_images(home: Path, n: int) -> list[str]:
    root = home / "office-caltech-10" / "images" / "amazon"
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    per = max(1, n // len(classes))
    files = [str(f) for c in classes for f in sorted(c.glob("*.jpg"))[:per]]
    return files[:n]


def product_texts(home: Path, n: int) -> list[str]:
    texts = [p.read_text(encoding="utf-8").strip()
             for p in sorted((home / "grocery-store-dataset" / "dataset").rglob("*_Description.txt"))]
    with open(home / "instacart-products" / "products.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if len(texts) >= n:
                break
            texts.append(row["product_name"])
    return texts[:n]


def timed_encode(enc, loaded: list, batch_size: int, repeats: int) -> tuple[np.ndarray, float]:
    enc.encode_batch(loaded[:batch_size])  # warm-up: first call builds oneDNN kernels
    best = float("inf")
    out = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = np.concatenate([enc.encode_batch(loaded[i : i + batch_size]) for i in range(0, len(loaded), batch_size)])
        best = min(best, time.perf_counter() - t0)
    return out, best


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def compare_precisions(name: str, items: list[str], batch_size: int, repeats: int) -> dict:
    results = {}
    for precision in ("fp32", "bf16"):
        enc = get_encoder(name, precision=precision)
        loaded = [enc.load_item(x) for x in items]
        if enc.modality == "text":
            loaded.sort(key=len, reverse=True)
        feats, secs = timed_encode(enc, loaded, batch_size, repeats)
        results[precision] = (feats, secs)
    cos = cosine_rows(results["fp32"][0], results["bf16"][0])
    return {
        "encoder": name,
        "n": len(items),
        "fp32_s": results["fp32"][1],
        "bf16_s": results["bf16"][1],
        "speedup": results["fp32"][1] / results["bf16"][1],
        "cos_mean": float(cos.mean()),
        "cos_min": float(cos.min()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--texts", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    home = os.environ.get("PRODKG_DATA_HOME")
    if not home or not Path(home).is_dir():
        sys.exit("set PRODKG_DATA_HOME to the dataset mirror")
    home_path = Path(home)
    images = office_images(home_path, args.images)
    texts = product_texts(home_path, args.texts)

    lines: list[str] = []

    def out(line: str = "", flush: bool = True) -> None:
        print(line, flush=flush)
        lines.extend(line.splitlines() or [""])

    out(f"# bench_extract  {dt.date.today()}  {platform.processor() or platform.machine()}  "
          f"cpus={os.cpu_count()}  torch={torch.__version__}  threads={torch.get_num_threads()}  "
          f"native bf16={native_bf16(torch.device('cpu'))}  load={os.getloadavg()[0]:.1f}")
    out("\n| encoder | items | fp32 s | bf16 s | bf16 speed-up | cos mean | cos min | auto |")
    out("|---|---|---|---|---|---|---|---|")
    for name, items in (("efficientnet_lite0", images), ("minilm", texts)):
        r = compare_precisions(name, items, args.batch_size, args.repeats)
        auto = "bf16 where native" if r["cos_min"] >= 0.999 else "fp32"
        out(f"| {r['encoder']} | {r['n']} | {r['fp32_s']:.2f} | {r['bf16_s']:.2f} | {r['speedup']:.2f}x | "
              f"{r['cos_mean']:.5f} | {r['cos_min']:.5f} | {auto} |", flush=True)

    out("\nEnd to end (extract_features with auto precision, cold then warm cache):\n")
    out("| encoder | items | cold s | items/s | warm s | n_cached |")
    out("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        cache = FeatureCache(tmp)
        for name, items in (("efficientnet_lite0", images), ("minilm", texts)):
            enc = get_encoder(name)
            cold = extract_features(items, enc, cache=cache, batch_size=args.batch_size, progress=False)
            warm = extract_features(items, enc, cache=cache, batch_size=args.batch_size, progress=False)
            out(f"| {enc.encoder_id} | {len(items)} | {cold.seconds:.2f} | {len(items) / cold.seconds:.1f} | "
                  f"{warm.seconds:.3f} | {warm.n_cached} |", flush=True)

    header = [f"## Extraction: bf16 vs fp32, and cold/warm cache", "",
              f"Command: `PRODKG_DATA_HOME=../shared/datasets python bench/bench_extract.py {' '.join(sys.argv[1:])}`  ",
              f"Machine: {machine()}. Date: {today()}.", ""]
    write_section("extract", "\n".join(header + lines[1:]))

if __name__ == "__main__":
    main()
