"""Measure the extract stage against the raw model forward and against a plain fp32 loop, and each speed-up's cost in quality.

Run from the repository root::

    PRODKG_DATA_HOME=../shared/datasets .venv/bin/python bench/bench_extract.py

For each encoder (EfficientNet-Lite0 and ResNet-50 on real office-caltech-10 photos, all-MiniLM-L6-v2 and a
12-layer BERT on real instacart product names), three rates are measured in this one process; every
setting runs on each of ``--chunks`` parts of the items in turn, so a neighbour's load hits all settings
alike, and the best of ``--repeats`` per part is kept:

* **raw**: the model forward alone on inputs decoded, resized / tokenised and batched beforehand;
* **stage**: ``extract_features`` with an empty feature cache in a temporary folder: hash, decode, resize or
  tokenise, forward, write to the cache, at several DataLoader-worker / torch-thread settings (default:
  torch's thread count, which the pipeline's extract stage uses);
* **plain**: a per-batch fp32 loop as tutorials write it: PIL open -> torchvision transform -> stack ->
  ``model(x)`` (autograd on, NCHW, torch's default threads); for text the tokenizer per batch in catalog
  order with padding to the batch's longest text, then the model and mean pooling.

Then each speed-up mode (channels_last, threads, length sorting, bf16 autocast, int8 dynamic quantisation of
BERT's Linear layers, with ``--compile`` torch.compile, for images also as the encoders' ``compile=True``)
against the default, with the cosine of its vectors to the default fp32 ones (min / mean over items) and,
for the encoders with real weights, the 5-fold logistic-regression accuracy of the vectors (office-caltech
category, instacart department). No ResNet-50 or BERT-base weights are available offline: those two run
with random initial weights (speed only; their cosines are reported but their accuracy is not).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import os
import random
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch


from _common import ROOT, machine, today, write_section  # noqa: E402
from prodkg.extractors import FeatureCache, extract_features, get_encoder  # noqa: E402
from prodkg.extractors.base import native_bf16  # noqa: E402
from prodkg.extractors.extract import torch_threads  # noqa: E402

COSINE_GUARD = 0.999
AUTO = "bf16 (auto)"  # marks the runs at the precision "auto" resolves to here, when that is not fp32


# --- data --------------------------------------------------------------------------------------------------


def office_images(n: int, seed: int) -> tuple[list[str], list[str]]:
    """``n`` office-caltech-10 photos drawn at random over its four domains (their sizes differ: 300 px to 1000 px)."""
    import prodkg.catalogs as catalogs

    frame = catalogs.load_dataset("office-caltech-10", download=False).frame
    rows = random.Random(seed).sample(range(len(frame)), min(n, len(frame)))
    return frame["image"].iloc[rows].tolist(), frame["category"].iloc[rows].astype(str).tolist()


def instacart_titles(home: Path, n: int, seed: int) -> tuple[list[str], list[str]]:
    """``n`` instacart product names drawn at random, in catalog (product id) order, with their department."""
    with open(home / "instacart-products" / "products.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    picked = sorted(random.Random(seed).sample(range(len(rows)), min(n, len(rows))))
    return [rows[i]["product_name"] for i in picked], [rows[i]["department_id"] for i in picked]


# --- models without offline weights (random init, speed only) ----------------------------------------------


def random_resnet50_checkpoint(folder: Path) -> str:
    import torchvision

    torch.manual_seed(0)
    path = folder / "resnet50-random-init.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    return str(path)


def random_bert_base(folder: Path) -> str:
    """A 12-layer BERT-base (``BertConfig()`` defaults) with random weights, and MiniLM's uncased WordPiece tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from prodkg.extractors.text_hf import bundled_minilm_path

    torch.manual_seed(0)
    path = folder / "bert-base-random-init"
    BertModel(BertConfig()).save_pretrained(path)
    AutoTokenizer.from_pretrained(bundled_minilm_path()).save_pretrained(path)
    return str(path)


# --- measurements ------------------------------------------------------------------------------------------


@dataclass
class Bench:
    """One encoder's items and every timed run on them (best seconds over the repeats, vectors of the first)."""

    name: str
    modality: str
    encoder: object
    items: list[str]
    labels: list[str]
    real_weights: bool
    seconds: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    encoder_key: str = ""  # the registry name get_encoder builds it by

    def rate(self, run: str) -> float:
        return self.counts[run] / self.seconds[run]


def thr(n: int) -> str:
    return f"{n} thread" if n == 1 else f"{n} threads"


def wrk(n: int) -> str:
    return f"{n} worker" if n == 1 else f"{n} workers"


def batches(seq: list, size: int) -> Iterator[list]:
    for i in range(0, len(seq), size):
        yield seq[i : i + size]


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(torch.float32)
    pooled = (hidden.float() * m).sum(1) / m.sum(1).clamp_min(1e-9)
    return torch.nn.functional.normalize(pooled, p=2.0, dim=1)


def stage_order(items: list[str]) -> list[int]:
    """The order extract_features encodes texts in (longest first), so raw and stage pad alike."""
    return sorted(range(len(items)), key=lambda i: len(items[i]), reverse=True)


_PREPARED: dict[tuple[int, tuple[str, ...], int], list[torch.Tensor]] = {}


def image_raw(enc, items: list[str], batch_size: int, *, contiguous: bool = False, bf16: bool = False,
              whole_batch: bool = False) -> Callable[[], np.ndarray]:
    """The encoder's forward alone (``forward_features``: passes of ``cpu_forward_batch`` images) on batches
    decoded, resized and stacked beforehand; ``whole_batch``: one ``features`` pass per batch instead."""
    key = (id(enc), tuple(items), batch_size)
    if key not in _PREPARED:
        _PREPARED[key] = [enc.stack_items([enc.load_item(p) for p in chunk]) for chunk in batches(items, batch_size)]
    xs = _PREPARED[key]
    if contiguous:
        xs = [x.contiguous() for x in xs]
        enc = copy.copy(enc)
        enc.model = copy.deepcopy(enc.model).to(memory_format=torch.contiguous_format)
    forward = enc.features if whole_batch else enc.forward_features

    def run() -> np.ndarray:
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            return np.concatenate([forward(x).float().numpy() for x in xs])

    return run


def text_raw(enc, items: list[str], batch_size: int, *, sort: bool = True, bf16: bool = False,
             compiled: Callable | None = None) -> Callable[[], np.ndarray]:
    """Forward (and mean pooling) only, on batches tokenised beforehand; rows come back in ``items`` order.

    ``compiled``: a replacement for ``enc.model`` (torch.compile'd, quantised).
    """
    order = stage_order(items) if sort else list(range(len(items)))
    texts = [enc.load_item(items[i]) for i in order]
    toks = [enc.tokenizer(chunk, padding=True, truncation=True, max_length=enc.max_length, return_tensors="pt")
            for chunk in batches(texts, batch_size)]
    model = compiled if compiled is not None else enc.model

    def run() -> np.ndarray:
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            out = np.concatenate([mean_pool(model(**t).last_hidden_state, t["attention_mask"]).numpy() for t in toks])
        back = np.empty_like(out)
        back[order] = out
        return back

    return run


def stage(enc, items: list[str], batch_size: int, workers: int, threads: int, tmp: Path) -> Callable[[], np.ndarray]:
    """extract_features into an empty feature cache in a temporary folder (a new one per call)."""
    def run() -> np.ndarray:
        cache = FeatureCache(tempfile.mkdtemp(dir=tmp))
        result = extract_features(items, enc, cache=cache, batch_size=batch_size, num_workers=workers,
                                  num_threads=threads, progress=False)
        if not result.ok.all() or result.n_cached:
            raise RuntimeError(f"stage run did not encode every item: {result.errors or result.n_cached}")
        cache.close()
        return result.features

    return run


def plain_images(name: str, options: dict, items: list[str], batch_size: int) -> Callable[[], np.ndarray]:
    """PIL open -> the weights' torchvision transform -> stack -> model(x), autograd on, NCHW, default threads."""
    from PIL import Image

    enc = get_encoder(name, precision="fp32", **options)  # its own model copy, put back as a fresh load has it
    enc.model = enc.model.to(memory_format=torch.contiguous_format).requires_grad_(True)

    def run() -> np.ndarray:
        out = []
        for chunk in batches(items, batch_size):
            x = torch.stack([enc.transform(Image.open(p).convert("RGB")) for p in chunk])
            out.append(enc.features(x).detach().numpy())
        return np.concatenate(out)

    return run


def plain_texts(model_path: str, items: list[str], batch_size: int, max_length: int) -> Callable[[], np.ndarray]:
    """AutoTokenizer per batch in catalog order, padding to the batch's longest text, AutoModel, mean pooling."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModel.from_pretrained(model_path).eval()

    def run() -> np.ndarray:
        out = []
        for chunk in batches(items, batch_size):
            t = tokenizer(chunk, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            out.append(mean_pool(model(**t).last_hidden_state, t["attention_mask"]).detach().numpy())
        return np.concatenate(out)

    return run


Maker = Callable[[list[str]], Callable[[], np.ndarray]]


def split(items: list[str], parts: int) -> list[list[str]]:
    size = -(-len(items) // max(1, parts))
    return [items[i : i + size] for i in range(0, len(items), size)]


def interleaved(bench: Bench, runs: dict[str, tuple[Maker, list[str], int]], chunks: int, repeats: int) -> None:
    """Time every run on every chunk of its items, chunk after chunk and run after run, ``repeats`` times.

    A neighbour's load comes and goes within seconds; interleaving runs at the grain of a few seconds of
    work makes it fall on all of them alike. A run's time is the sum over its chunks of the best of the
    repeats. ``runs``: name -> (maker of a callable for one chunk, its items, torch threads to use).
    Raw and mode runs get one untimed pass on their first chunk first (oneDNN builds its kernels on first use),
    compiled runs one on every chunk (a batch of a new size, e.g. after deduplication, compiles again).
    """
    fns = {name: [make(chunk) for chunk in split(items, chunks)] for name, (make, items, _) in runs.items()}
    for name, (_, _, threads) in runs.items():
        if name.startswith(("raw", "mode")) or "compile" in name:
            with torch_threads(threads):
                for fn in fns[name] if "compile" in name else fns[name][:1]:
                    fn()
    best: dict[tuple[str, int], float] = {}
    parts: dict[str, list[np.ndarray]] = {name: [] for name in runs}
    for rep in range(repeats):
        for c in range(max(len(f) for f in fns.values())):
            for name, (_, _, threads) in runs.items():
                if c >= len(fns[name]):
                    continue
                with torch_threads(threads):
                    t0 = time.perf_counter()
                    vec = fns[name][c]()
                    secs = time.perf_counter() - t0
                best[name, c] = min(secs, best.get((name, c), float("inf")))
                if rep == 0:
                    parts[name].append(vec)
        print(f"  [{bench.name} rep {rep + 1}/{repeats}] "
              + ", ".join(f"{name}: {len(runs[name][1]) / sum(best[name, c] for c in range(len(fns[name]))):.1f}/s"
                          for name in runs), flush=True)
    for name, (_, items, _) in runs.items():
        bench.seconds[name] = sum(best[name, c] for c in range(len(fns[name])))
        bench.counts[name] = len(items)
        bench.vectors[name] = np.concatenate(parts[name])


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def cv_accuracy(x: np.ndarray, labels: list[str], seed: int = 0) -> float:
    """5-fold cross-validated accuracy of a logistic regression on ``x`` (standardised)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(labels)
    classes, counts = np.unique(y, return_counts=True)
    keep = np.isin(y, classes[counts >= 5])  # classes with fewer items than folds are left out
    if len(np.unique(y[keep])) < 2:
        return float("nan")
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.5))
    cv = StratifiedKFold(5, shuffle=True, random_state=seed)
    return float(cross_val_score(clf, x[keep], y[keep], cv=cv).mean())


def maybe_compile(fn: Callable, dynamic: bool) -> tuple[Callable | None, str]:
    """torch.compile(fn), called once to build it; (None, why) when it cannot build here."""
    try:
        compiled = torch.compile(fn, dynamic=dynamic)
    except Exception as exc:  # noqa: BLE001  any failure only means the mode is not measured
        return None, f"torch.compile failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    return compiled, ""


def warm_rerun_seconds(image_items: list[str], text_items: list[str], cache_dir: Path, lazy: bool) -> tuple[float, str]:
    """A fresh process re-extracting items that are all in ``cache_dir``: wall seconds (Python start included)."""
    make = "lazy_encoder" if lazy else "get_encoder"
    script = textwrap.dedent(f"""
        import sys, time
        t0 = time.perf_counter()
        from prodkg.extractors import FeatureCache, extract_features, {make} as make
        cache = FeatureCache({str(cache_dir)!r})
        for name, items in (("efficientnet_lite0", {image_items!r}), ("minilm", {text_items!r})):
            r = extract_features(items, make(name, precision="fp32"), cache=cache, progress=False)
            assert r.n_computed == 0, r
        print(time.perf_counter() - t0)
        print(",".join(m for m in ("transformers", "torchvision") if m in sys.modules) or "none")
    """)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, check=True).stdout.split()
    return time.perf_counter() - t0, out[1]


def fresh_pass_rates(name: str, options: dict, items: list[str], batch_size: int, threads: int,
                     env: dict[str, str]) -> tuple[float, float]:
    """Images/s of ``forward_features`` (passes of ``cpu_forward_batch``) and of one pass per batch, in a fresh
    process: how fast large passes run depends on the C allocator's state, which a long benchmark changes."""
    script = textwrap.dedent(f"""
        import sys, time, torch
        sys.path.insert(0, {str(ROOT / "bench")!r})  # bench_extract is a script, not part of the package
        import bench_extract as be
        from prodkg.extractors import get_encoder
        torch.set_num_threads({threads})
        enc = get_encoder({name!r}, precision="fp32", **{options!r})
        runs = [be.image_raw(enc, {items!r}, {batch_size}), be.image_raw(enc, {items!r}, {batch_size}, whole_batch=True)]
        best = [float("inf")] * 2
        for f in runs:
            f()
        for _ in range(3):
            for i, f in enumerate(runs):
                t0 = time.perf_counter(); f(); best[i] = min(best[i], time.perf_counter() - t0)
        print({len(items)} / best[0], {len(items)} / best[1])
    """)
    out = subprocess.run([sys.executable, "-c", script], env={**os.environ, **env}, capture_output=True, text=True,
                         check=True).stdout.split()
    return float(out[-2]), float(out[-1])


# --- one encoder -------------------------------------------------------------------------------------------


def bench_encoder(b: Bench, options: dict, args, tmp: Path, t: int, other: int, default_threads: int) -> None:
    enc, items, bs = b.encoder, b.items, args.batch_size
    sub = items[: args.bf16_items]
    # what the pipeline runs: precision "auto", bf16 where the encoder's bf16 vectors passed the guard and the CPU
    # runs bf16 natively; measured beside the fp32 runs when it is not fp32 here
    auto = get_encoder(b.encoder_key, precision="auto", **options)
    bf16_enc = auto if auto.precision == "bf16" else get_encoder(b.encoder_key, precision="bf16", **options)
    auto_runs = auto.precision != "fp32"
    plain_threads = sorted({default_threads, 1}, reverse=True)
    runs: dict[str, tuple[Maker, list[str], int]]
    if b.modality == "image":
        runs = {
            f"raw, {thr(t)}": (lambda c: image_raw(enc, c, bs), items, t),
            f"raw, {thr(other)}": (lambda c: image_raw(enc, c, bs), items, other),
        }
        for n in plain_threads:
            runs[f"plain fp32 loop, {thr(n)}"] = (lambda c: plain_images(b.name, options, c, bs), items, n)
        for workers in args.workers:
            runs[f"stage, {wrk(workers)}, {thr(t)}"] = (lambda c, w=workers: stage(enc, c, bs, w, t, tmp), items, t)
        runs[f"stage, {wrk(0)}, {thr(other)}"] = (lambda c: stage(enc, c, bs, 0, other, tmp), items, other)
        runs[f"stage, {wrk(1)}, {thr(other)}"] = (lambda c: stage(enc, c, bs, 1, other, tmp), items, other)
        if auto_runs:
            runs[f"raw, {AUTO}, {thr(t)}"] = (lambda c: image_raw(auto, c, bs, bf16=True), items, t)
            for workers in (0, 1):
                runs[f"stage, {AUTO}, {wrk(workers)}, {thr(t)}"] = (
                    lambda c, w=workers: stage(auto, c, bs, w, t, tmp), items, t)
        if args.compile:
            compiled_enc = get_encoder(b.name, precision="fp32", compile=True, **options)
            runs[f"stage, compile=True, {wrk(0)}, {thr(t)}"] = (
                lambda c: stage(compiled_enc, c, bs, 0, t, tmp), items, t)
        runs[f"mode: one forward pass per batch of {bs} (no {enc.cpu_forward_batch}-image passes)"] = (
            lambda c: image_raw(enc, c, bs, whole_batch=True), items, t)
        runs["mode: NCHW (no channels_last)"] = (lambda c: image_raw(enc, c, bs, contiguous=True), items, t)
        if sub:
            runs["mode: fp32 (bf16 subset)"] = (lambda c: image_raw(enc, c, bs), sub, t)
            runs["mode: bf16 autocast of the whole network (bf16 subset)"] = (
                lambda c: image_raw(enc, c, bs, bf16=True), sub, t)
            leading = getattr(bf16_enc, "fp32_leading_blocks", 0)
            if leading:
                runs[f"mode: bf16 autocast, stem and first {leading} blocks in fp32: the encoder's bf16 (bf16 subset)"] = (
                    lambda c: image_raw(bf16_enc, c, bs, bf16=True), sub, t)
    else:
        runs = {
            f"raw, {thr(t)}": (lambda c: text_raw(enc, c, bs), items, t),
            f"raw, {thr(other)}": (lambda c: text_raw(enc, c, bs), items, other),
        }
        for n in plain_threads:
            runs[f"plain fp32 loop, {thr(n)}"] = (lambda c: plain_texts(enc.model_source, c, bs, enc.max_length),
                                                   items, n)
        runs[f"stage, {wrk(0)}, {thr(t)}"] = (lambda c: stage(enc, c, bs, 0, t, tmp), items, t)
        runs[f"stage, {wrk(0)}, {thr(other)}"] = (lambda c: stage(enc, c, bs, 0, other, tmp), items, other)
        if auto_runs:
            runs[f"raw, {AUTO}, {thr(t)}"] = (lambda c: text_raw(auto, c, bs, bf16=True), items, t)
            runs[f"stage, {AUTO}, {wrk(0)}, {thr(t)}"] = (lambda c: stage(auto, c, bs, 0, t, tmp), items, t)
        runs["mode: catalog order (no length sorting)"] = (lambda c: text_raw(enc, c, bs, sort=False), items, t)
        int8 = torch.ao.quantization.quantize_dynamic(copy.deepcopy(enc.model), {torch.nn.Linear}, dtype=torch.qint8)
        runs["mode: int8 dynamic quantisation of the Linear layers"] = (
            lambda c: text_raw(enc, c, bs, compiled=int8), items, t)
        if sub:
            runs["mode: fp32 (bf16 subset)"] = (lambda c: text_raw(enc, c, bs), sub, t)
            runs["mode: bf16 autocast (bf16 subset)"] = (lambda c: text_raw(enc, c, bs, bf16=True), sub, t)
    if args.compile:
        if b.modality == "image":
            # the encoder's own compile=True path; a second torch.compile of the same method in this process
            # would make dynamo recompile at every switch between the two ("BACKEND_MATCH" guard)
            compiled, why, maker = compiled_enc, "", (lambda e, c, n, compiled: image_raw(compiled, c, n))
        else:
            (compiled, why), maker = maybe_compile(enc.model, dynamic=True), text_raw
        if compiled is not None:
            t0 = time.perf_counter()
            try:
                with torch_threads(t):
                    for chunk in split(items, args.chunks):
                        maker(enc, chunk, bs, compiled=compiled)()  # compiles a graph per input shape; not timed
                runs["mode: torch.compile"] = (lambda c: maker(enc, c, bs, compiled=compiled), items, t)
                b.notes["mode: torch.compile"] = f"compiling took {time.perf_counter() - t0:.0f} s"
            except Exception as exc:  # noqa: BLE001  a failure only means the mode is not measured
                b.notes["mode: torch.compile"] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
        else:
            b.notes["mode: torch.compile"] = why
    interleaved(b, runs, args.chunks, args.repeats)


# --- tables ------------------------------------------------------------------------------------------------


def throughput_rows(b: Bench, default_threads: int) -> list[str]:
    plain = f"plain fp32 loop, {thr(default_threads)}"
    rows = []
    for run in b.seconds:
        if run.startswith("mode"):
            continue
        th = run.rsplit(", ", 1)[-1]
        # a compiled stage against a compiled forward, a bf16 (auto) stage against the bf16 (auto) forward
        raw = "mode: torch.compile" if "compile" in run else f"raw, {AUTO}, {th}" if AUTO in run else f"raw, {th}"
        vs_raw = f"{b.rate(run) / b.rate(raw):.0%}" if run.startswith("stage") and raw in b.seconds else ""
        vs_plain = f"{b.rate(run) / b.rate(plain):.2f}x"
        load = b.notes.get("load", "") if not rows else ""
        rows.append(f"| {b.name} | {b.counts[run]} | {run} | {b.rate(run):.1f} | {vs_raw} | {vs_plain} | {load} |")
    return rows


def mode_rows(b: Bench, threads: int, other: int) -> list[str]:
    base = f"raw, {thr(threads)}"
    ref = b.vectors[base]
    acc_ref = cv_accuracy(ref, b.labels) if b.real_weights else None
    layout = "channels_last" if b.modality == "image" else "length-sorted"
    entries = [(f"default: fp32, {layout}, inference_mode, {thr(threads)}", base, base),
               (f"{thr(other)}", f"raw, {thr(other)}", base)]
    stage_run = f"stage, {wrk(0)}, {thr(threads)}"
    entries.append((f"the stage's vectors ({stage_run})", stage_run, None))
    auto_stage = f"stage, {AUTO}, {wrk(0)}, {thr(threads)}"
    if auto_stage in b.seconds:
        entries.append((f"the pipeline's default here: precision auto = bf16 ({auto_stage}; speed vs the fp32 stage)",
                        auto_stage, stage_run))
    for run in b.seconds:
        if run.startswith("stage, compile"):
            entries.append((f"torch.compile in the stage ({run}; speed vs the stage above)", run, stage_run))
    plain = next(r for r in b.seconds if r.startswith("plain"))
    entries.append(("plain fp32 loop's vectors", plain, None))
    if b.modality == "text":
        b.notes.setdefault(plain, "its texts skip the encoder's NFKC / whitespace normalisation")
    for run in b.seconds:
        if run.startswith("mode") and "fp32 (bf16 subset)" not in run:
            base_run = "mode: fp32 (bf16 subset)" if "bf16" in run else base
            label = run.removeprefix("mode: ")
            if b.counts[run] == len(b.items):  # bf16 ran on every item (native bf16): no subset
                label = label.replace(" (bf16 subset)", "")
            entries.append((label, run, base_run))
    rows = []
    for label, run, speed_base in entries:
        vec = b.vectors[run]
        cos = cosine_rows(vec, ref[: len(vec)])
        speed = f"{b.rate(run) / b.rate(speed_base):.2f}x" if speed_base else ""
        full = len(vec) == len(ref)
        acc = f"{cv_accuracy(vec, b.labels):.3f}" if (b.real_weights and full and run != base) else (
            f"{acc_ref:.3f}" if run == base and acc_ref is not None else ("n/a (random weights)" if not b.real_weights
                                                                         else "n/a (subset)"))
        passes = cos.min() >= COSINE_GUARD
        note = b.notes.get(run, "")
        rows.append(f"| {b.name} | {label} | {len(vec)} | {speed} | {cos.min():.5f} | {cos.mean():.5f} | {acc} | "
                    f"{'yes' if passes else 'no'} | {note} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256, help="office-caltech photos for EfficientNet-Lite0")
    parser.add_argument("--resnet-images", type=int, default=96, help="photos for ResNet-50 (10x the compute)")
    parser.add_argument("--texts", type=int, default=3000, help="instacart names for all-MiniLM-L6-v2")
    parser.add_argument("--bert-texts", type=int, default=400, help="names for the 12-layer BERT")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of the default stage (and raw rate); default: torch's, as the stage uses")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="DataLoader workers to try (images)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each setting, interleaved; best kept")
    parser.add_argument("--chunks", type=int, default=4, help="parts each item set is timed in, interleaved")
    parser.add_argument("--bf16-items", type=int, default=None,
                        help="items for the bf16 modes (default: all where the CPU runs bf16 natively, else 32: emulated "
                             "bf16 is slow; 0 skips)")
    parser.add_argument("--compile", action="store_true", help="also try torch.compile (slow to build on a CPU)")
    parser.add_argument("--encoders", nargs="+", default=["efficientnet_lite0", "resnet50", "minilm", "bert12"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/BENCHMARKS.md alone")
    args = parser.parse_args()
    home = os.environ.get("PRODKG_DATA_HOME")
    if not home or not Path(home).is_dir():
        sys.exit("set PRODKG_DATA_HOME to the dataset mirror")
    started = time.perf_counter()
    if args.bf16_items is None:
        args.bf16_items = max(args.images, args.texts) if native_bf16(torch.device("cpu")) else 32
    default_threads = torch.get_num_threads()
    t = args.threads or default_threads
    other = 1 if t != 1 else 2
    load_before = os.getloadavg()
    images, image_labels = office_images(args.images, args.seed)
    texts, text_labels = instacart_titles(Path(home), args.texts, args.seed)
    benches: list[Bench] = []
    with tempfile.TemporaryDirectory(prefix="bench_extract_") as tmp_name:
        tmp = Path(tmp_name)
        specs: dict[str, tuple[str, dict, list[str], list[str], bool]] = {
            "efficientnet_lite0": ("efficientnet_lite0", {}, images, image_labels, True),
            "minilm": ("minilm", {}, texts, text_labels, True),
        }
        if "resnet50" in args.encoders:
            specs["resnet50"] = ("resnet50", {"checkpoint": random_resnet50_checkpoint(tmp)},
                                 images[: args.resnet_images], image_labels[: args.resnet_images], False)
        if "bert12" in args.encoders:
            specs["bert12"] = ("hf_text", {"model": random_bert_base(tmp)}, texts[: args.bert_texts],
                               text_labels[: args.bert_texts], False)
        for key in args.encoders:
            name, options, items, labels, real = specs[key]
            enc = get_encoder(name, precision="fp32", **options)
            label = "bert-base (12 layers)" if key == "bert12" else key
            b = Bench(label, enc.modality, enc, items, labels, real, encoder_key=name)
            print(f"{label}: {len(items)} items, {enc.encoder_id}", flush=True)
            load0 = os.getloadavg()[0]
            bench_encoder(b, options, args, tmp, t, other, default_threads)
            b.notes["load"] = f"{load0:.1f} -> {os.getloadavg()[0]:.1f}"
            benches.append(b)

        passes = []
        for key in ("efficientnet_lite0", "resnet50"):
            if key in args.encoders:
                name, options, items, _, _ = specs[key]
                for malloc, env in (("glibc default", {}), ("MALLOC_MMAP_THRESHOLD_=4294967296", {
                        "MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TOP_PAD_": "1073741824"})):
                    n_items = min(len(items), 2 * args.batch_size)
                    passes.append((key, malloc, n_items, *fresh_pass_rates(name, options, items[:n_items],
                                                                            args.batch_size, t, env)))

        rerun = []
        if {"efficientnet_lite0", "minilm"} <= set(args.encoders):
            cache_dir = tmp / "rerun-cache"
            with torch_threads(args.threads):
                for name, items in (("efficientnet_lite0", images), ("minilm", texts)):
                    extract_features(items, get_encoder(name, precision="fp32"), cache=FeatureCache(cache_dir),
                                     progress=False)
            for lazy in (False, True, False, True):
                secs, heavy = warm_rerun_seconds(images, texts, cache_dir, lazy)
                rerun.append((lazy, secs, heavy))

    lines: list[str] = []

    def out(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    out(f"Items/s over all items, each setting timed on {args.chunks} chunks of them, chunk after chunk and setting "
        f"after setting, best of {args.repeats} per chunk; *stage* is `extract_features` into an empty feature cache "
        f"(hash, decode + resize or tokenise, forward, cache write), *raw* the same model's forward alone on inputs "
        f"prepared beforehand, *plain* the tutorial loop described in the script's docstring (torch's default "
        f"{default_threads} threads). Batch size {args.batch_size}; fp32, except the runs marked *{AUTO}*: the precision "
        f"the pipeline's default `auto` resolves to on this CPU, where it is not fp32.")
    out()
    out("| encoder | items | run | items/s | stage / raw (same threads) | vs plain loop | load avg |")
    out("|---|---|---|---|---|---|---|")
    for b in benches:
        for row in throughput_rows(b, default_threads):
            out(row)
    out()
    out(f"Modes against the default (same process, interleaved). Speed: the mode's items/s over the default's on "
        f"the same items (bf16 on the first {args.bf16_items}). Cosine of each item's vector to the default fp32 "
        f"one; accuracy: 5-fold logistic regression on the vectors (office-caltech category over "
        f"{len(images)} photos, instacart department over {len(texts)} names). A mode may be a default only "
        f"with cosine min >= {COSINE_GUARD}, no accuracy drop, and a speed-up. This CPU has native bf16: "
        f"{native_bf16(torch.device('cpu'))}.")
    out()
    out("| encoder | mode | items | speed vs default | cos min | cos mean | accuracy | cos >= 0.999 | note |")
    out("|---|---|---|---|---|---|---|---|---|")
    for b in benches:
        for row in mode_rows(b, t, other):
            out(row)
    if passes:
        out()
        out(f"Image forward passes in a fresh process ({thr(t)}): the encoders' passes of "
            f"{benches[0].encoder.cpu_forward_batch if benches[0].modality == 'image' else 4} images against one pass "
            f"per batch of {args.batch_size}. glibc serves allocations above its mmap threshold (32 MiB at most) "
            f"with fresh pages, so a large pass page-faults through every layer's activations; raising the "
            f"threshold removes the difference, which is why the long run above, whose allocator state differs, "
            f"can show less of it.")
        out()
        out("| encoder | allocator | images | small passes /s | one pass per batch /s | ratio |")
        out("|---|---|---|---|---|---|")
        for key, malloc, n_items, small, whole in passes:
            out(f"| {key} | {malloc} | {n_items} | {small:.1f} | {whole:.1f} | {small / whole:.2f}x |")
    if rerun:
        out()
        out(f"Warm re-run in a fresh process (Python start + imports + {len(images)} images and {len(texts)} texts, "
            f"every vector in the cache):")
        out()
        out("| encoders built with | seconds | heavy modules imported |")
        out("|---|---|---|")
        for lazy, secs, heavy in rerun:
            out(f"| {'lazy_encoder (model only on a miss)' if lazy else 'get_encoder (model always built)'} | "
                f"{secs:.2f} | {heavy} |")
    wall = time.perf_counter() - started
    load_after = os.getloadavg()
    out()
    out(f"Wall time {wall / 60:.1f} min. Load average (1 min) {load_before[0]:.1f} at the start and "
        f"{load_after[0]:.1f} at the end (*load avg* above: at the start and end of each encoder). This script "
        f"alone makes 1-2; more means another job shared the {os.cpu_count()} cores, and then rates drop and "
        f"2 threads can fall below 1; the ratios come from runs interleaved in one process.")

    if args.no_write:
        return
    argv = " ".join(sys.argv[1:])
    header = ["## Extraction: stage vs raw forward vs plain loop, and speed-up modes", "",
              f"Command: `PRODKG_DATA_HOME=../shared/datasets .venv/bin/python bench/bench_extract.py{' ' + argv if argv else ''}`  ",
              f"Machine: {machine()}. Date: {today()}.", ""]
    write_section("extract", "\n".join(header + lines))


if __name__ == "__main__":
    main()
