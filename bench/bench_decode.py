"""Where the image stage's time goes: decoding + preprocessing against the forward pass, and what JPEG draft decoding would buy.

Run from the repository root::

    PRODKG_DATA_HOME=../shared/datasets .venv/bin/python bench/bench_decode.py

On a 2-core CPU the forward pass already uses both cores, so decoding cannot overlap with it (DataLoader
workers only compete for the same cores: see the extraction section). A stage that decodes and then
forwards in turn is bounded by ``1 / (1/decode_rate + 1/forward_rate)``; this script measures both rates
on real office-caltech-10 photos (300 to 1000 px) and prints that ceiling as a share of the raw forward rate.

It also measures the one decode speed-up that changes pixels: libjpeg's DCT-domain downscaling
(``PIL.Image.draft``), decoding a large JPEG at 1/2, 1/4 or 1/8 of its size while keeping the short side
above the resize target. Its vectors are compared with full decoding (cosine, and the 5-fold
logistic-regression accuracy on the office-caltech category), the guard a default must pass.
"""

from __future__ import annotations

import argparse
import io
import random
import sys
import time

import numpy as np
import torch
from _common import machine, today, write_section  # noqa: E402

import prodkg.catalogs as catalogs
from prodkg.extractors import get_encoder  # noqa: E402
from prodkg.extractors.base import open_image, read_bytes  # noqa: E402


def open_draft(path: str, size: int):
    """Decode with libjpeg scaling so that both sides stay at least ``size`` (non-JPEG files decode in full)."""
    from PIL import Image

    with Image.open(io.BytesIO(read_bytes(path))) as img:
        img.draft("RGB", (size, size))
        img.load()
        return img.convert("RGB")


def best_rate(fn, n: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return n / best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--images", type=int, default=400)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", default="auto", help="the encoder's precision (default: auto, as the pipeline runs it)")
    p.add_argument("--no-write", action="store_true")
    a = p.parse_args()

    frame = catalogs.load_dataset("office-caltech-10", download=False).frame
    rows = random.Random(a.seed).sample(range(len(frame)), min(a.images, len(frame)))
    paths = [frame["image"].iloc[i] for i in rows]
    labels = [frame["category"].iloc[i] for i in rows]
    enc = get_encoder("efficientnet_lite0", precision=a.precision)
    resize = 256  # the encoder's resize target (short side)

    def decode_full():
        return [enc.transform(open_image(q)) for q in paths]

    def decode_draft():
        return [enc.transform(open_draft(q, resize)) for q in paths]

    full, draft = decode_full(), decode_draft()  # warm the page cache and the allocator

    def forward(xs):
        out = []
        with torch.inference_mode(), enc.autocast():
            for i in range(0, len(xs), 32):
                out.append(enc.forward_features(enc.stack_items(xs[i : i + 32])).float().numpy())
        return np.concatenate(out)

    rates = {}
    for _ in range(a.repeats):  # interleaved, best kept
        rates["decode + preprocess, full decode"] = max(rates.get("decode + preprocess, full decode", 0),
                                                         best_rate(decode_full, len(paths), 1))
        rates["decode + preprocess, JPEG draft"] = max(rates.get("decode + preprocess, JPEG draft", 0),
                                                        best_rate(decode_draft, len(paths), 1))
        rates["forward (raw)"] = max(rates.get("forward (raw)", 0), best_rate(lambda: forward(full), len(paths), 1))
    f_full, f_draft = forward(full), forward(draft)
    cos = (f_full * f_draft).sum(1) / np.linalg.norm(f_full, axis=1) / np.linalg.norm(f_draft, axis=1)

    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    acc = {name: cross_val_score(LogisticRegression(max_iter=2000), x, labels, cv=5).mean()
           for name, x in (("full", f_full), ("draft", f_draft))}
    fwd = rates["forward (raw)"]
    ceiling = {k: 1 / (1 / v + 1 / fwd) for k, v in rates.items() if k.startswith("decode")}

    lines = [
        "## Image stage ceiling: decoding vs forward, and JPEG draft decoding",
        "",
        "Command: `" + " ".join(["PRODKG_DATA_HOME=../shared/datasets .venv/bin/python bench/bench_decode.py",
                                 *sys.argv[1:]]) + "`  ",
        f"Machine: {machine()}. Date: {today()}. torch threads: {torch.get_num_threads()}.  ",
        f"{len(paths)} office-caltech-10 photos drawn at random over the four domains; EfficientNet-Lite0, {enc.precision}"
        + (" (`auto` on this CPU)" if a.precision == "auto" else "") + ", "
        "best of interleaved repeats.",
        "",
        "| step | images/s | decode-then-forward ceiling | ceiling / raw forward |",
        "|---|---:|---:|---:|",
    ]
    for k, v in rates.items():
        if k in ceiling:
            lines.append(f"| {k} | {v:.1f} | {ceiling[k]:.1f} | {100 * ceiling[k] / fwd:.0f}% |")
        else:
            lines.append(f"| {k} | {v:.1f} | | |")
    lines += [
        "",
        f"JPEG draft against full decoding: cosine of the vectors min {cos.min():.5f}, mean {cos.mean():.5f}, "
        f"1st percentile {np.percentile(cos, 1):.5f}; 5-fold logistic-regression accuracy {100 * acc['full']:.1f} % "
        f"(full) vs {100 * acc['draft']:.1f} % (draft). "
        + ("It stays within cosine 0.999 and could become a default."
           if cos.min() >= 0.999 and acc["draft"] >= acc["full"]
           else "It fails the 0.999 cosine guard, so the stage keeps full decoding."),
    ]
    body = "\n".join(lines)
    print(body)
    if not a.no_write:
        print("wrote", write_section("decode", body))


if __name__ == "__main__":
    main()
