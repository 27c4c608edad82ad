"""Benchmark of backbone fine-tuning: frozen vs fine-tuned EfficientNet-Lite0 features on office-caltech-10.

Run from the repository root::

    PRODKG_DATA_HOME=/path/to/datasets python bench/bench_finetune.py [--tasks A-W,A-D,W-A,D-A] [--seeds 1]
        [--epochs 5] [--adapt-epochs 100] [--finetune-methods dann,source_only] [--workers 2]
    python bench/bench_finetune.py --report-only   # rewrite docs/BENCHMARKS.md from bench/results/finetune.json

The frozen trunk of EfficientNet-Lite0 (everything before its last MBConv stage) runs once over
every image of the domains involved; its activations are kept in bench/.cache. For each task and
seed, :func:`adaptation.finetune.finetune_on_activations` fine-tunes the last block on the source
labels (DANN towards the target by default), and the same downstream heads (``source_only`` and
``dann`` through :func:`adaptation.train`, the defaults of ``prodkg run``) are trained on the frozen
features and on the fine-tuned ones. The frozen features come from the untouched block on the same
activations, which equals the frozen encoder's output (tests/adaptation/test_finetune.py).
Target labels are used only to score.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from _common import machine, today, write_section  # noqa: E402

CACHE = ROOT / "bench" / ".cache"
RESULTS = ROOT / "bench" / "results" / "finetune.json"
DOMAIN = {"A": "amazon", "W": "webcam", "D": "dslr", "C": "caltech10"}
DOWNSTREAM = ("source_only", "dann")


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _encoder():
    from prodkg.extractors import get_encoder

    return get_encoder("efficientnet_lite0", precision="fp32")


def _trunk_part(items: list[str]) -> tuple[np.ndarray, np.ndarray, float, float]:
    import torch

    torch.set_num_threads(1)
    from prodkg.adaptation.finetune import cache_activations

    acts = cache_activations(_encoder(), items, batch_size=32, num_threads=1)
    return np.asarray(acts.values), acts.ok, acts.seconds, _rss_mib()


def trunk_activations(frame, workers: int) -> dict:
    """Activations of every image in ``frame`` (cached on disk, keyed by the encoder id)."""
    encoder_id = _encoder().encoder_id
    key = f"office_lite0_trunk_{len(frame)}"
    values_path, meta_path = CACHE / f"{key}.npy", CACHE / f"{key}.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta["encoder_id"] == encoder_id and meta["ids"] == frame["product_id"].tolist():
            return {**meta, "values_path": str(values_path), "cached": True}
    items = frame["image"].tolist()
    chunks = [items[i::workers] for i in range(workers)]
    started = time.perf_counter()
    with get_context("spawn").Pool(workers) as pool:
        parts = pool.map(_trunk_part, chunks)
    wall = time.perf_counter() - started
    if not all(ok.all() for _, ok, _, _ in parts):
        raise SystemExit("some office-caltech images could not be read")
    values = np.empty((len(items), *parts[0][0].shape[1:]), np.float32)
    for i, (v, _, _, _) in enumerate(parts):
        values[i::workers] = v
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(values_path, values)
    meta = {"encoder_id": encoder_id, "ids": frame["product_id"].tolist(), "n_images": len(items), "wall_seconds": wall,
            "process_seconds": sum(p[2] for p in parts), "workers": workers, "peak_rss_mib": max(p[3] for p in parts)}
    meta_path.write_text(json.dumps(meta))
    return {**meta, "values_path": str(values_path), "cached": False}


def _job(args: tuple) -> dict:
    """One (task, seed, features) cell: optionally fine-tune, then train the downstream heads."""
    kind, src, tgt, seed, epochs, adapt_epochs, values_path, domains, labels = args
    import torch

    torch.set_num_threads(1)
    from prodkg.adaptation import MultiModal, TrainConfig, train
    from prodkg.adaptation.finetune import Activations, FinetuneConfig, finetune_on_activations
    from prodkg.extractors.image_cnn import FineTunedImageEncoder

    encoder = _encoder()
    domains, labels = np.asarray(domains), np.asarray(labels)
    rows = np.flatnonzero(np.isin(domains, [src, tgt]))
    values = np.load(values_path, mmap_mode="r")
    acts = Activations(np.ascontiguousarray(values[rows]), np.ones(len(rows), bool), {}, encoder.encoder_id, 0.0)
    is_s, is_t = domains[rows] == src, domains[rows] == tgt
    y = labels[rows]
    record: dict = {"task": f"{_short(src)}->{_short(tgt)}", "seed": seed, "features": kind, "n_source": int(is_s.sum()),
                    "n_target": int(is_t.sum())}
    if kind == "frozen":
        block = FineTunedImageEncoder(encoder, encoder.last_block().state_dict())  # the untouched block
        feats = np.concatenate([block.encode_activations(torch.from_numpy(acts.values[a:a + 64])).numpy()
                                for a in range(0, len(rows), 64)])
    else:
        method = kind.split(":", 1)[1]
        result = finetune_on_activations(encoder, acts, np.where(is_s, y, -1), is_s, is_t, 10,
                                         FinetuneConfig(method=method, epochs=epochs, seed=seed, num_threads=1))
        feats = result.features
        record["finetune_seconds"] = result.seconds["train"] + result.seconds["features"]
        record["finetune_head_acc"] = float((result.probabilities[is_t].argmax(1) == y[is_t]).mean() * 100)
        record["weights_sha256"] = result.weights_hash
        record["history"] = result.history
    source, target = MultiModal.complete(image=feats[is_s]), MultiModal.complete(image=feats[is_t])
    for method in DOWNSTREAM:
        t0 = time.perf_counter()
        model = train(source, y[is_s], target, 10, TrainConfig(method=method, seed=seed, epochs=adapt_epochs))
        record[f"{method}_acc"] = float((model.predict_proba(target).argmax(1) == y[is_t]).mean() * 100)
        record[f"{method}_seconds"] = time.perf_counter() - t0
    record["peak_rss_mib"] = _rss_mib()
    return record


def _short(domain: str) -> str:
    return {v: k for k, v in DOMAIN.items()}[domain]


def report(results: dict) -> str:
    recs = results["records"]
    tasks = list(dict.fromkeys(r["task"] for r in recs))
    kinds = list(dict.fromkeys(r["features"] for r in recs))

    def cell(task: str, kind: str, key: str, fmt: str = "{:.1f}") -> str:
        vals = [r[key] for r in recs if r["task"] == task and r["features"] == kind and key in r]
        if not vals:
            return "–"
        mean = float(np.mean(vals))
        return fmt.format(mean) + (f" ± {np.std(vals):.1f}" if len(vals) > 1 else "")

    def mean_of(kind: str, key: str) -> str:
        vals = [r[key] for r in recs if r["features"] == kind and key in r]
        return f"**{np.mean(vals):.1f}**" if vals else "–"

    a = results["args"]
    t = results["trunk"]
    lines = [
        "## Backbone fine-tuning: frozen vs fine-tuned EfficientNet-Lite0 features",
        "",
        f"Command: `PRODKG_DATA_HOME=... python bench/bench_finetune.py --tasks {a['tasks']} --seeds {a['seeds']} --epochs {a['epochs']} "
        f"--adapt-epochs {a['adapt_epochs']} --finetune-methods {a['finetune_methods']} --workers {a['workers']}` · date {results['date']} · "
        f"machine: {results['machine']}, torch {results['torch']}, 1 torch thread per worker process, fp32 · "
        f"total wall time {results['wall_seconds']:.0f} s on a CPU shared with other jobs.",
        "",
        f"Fine-tuning ({'`' + '`, `'.join(a['finetune_methods'].split(',')) + '`'} in `adaptation.finetune`): the last MBConv stage and the head "
        f"convolution of Lite0 (+ a linear classifier and, for dann, a domain discriminator behind gradient reversal) train for "
        f"{a['epochs']} epochs on the trunk activations of the source (labels) and target (no labels), batch 32 per domain, AdamW "
        "(block lr 1e-4, new layers 1e-3), BN statistics frozen. Downstream: the same heads on the frozen and on the fine-tuned "
        f"1280-d features, `adaptation.train` with its defaults (early fusion, 256-d bottleneck) and {a['adapt_epochs']} epochs, on the whole "
        "source. Target accuracy in %" + (", mean ± std over seeds" if a["seeds"] > 1 else ", one seed") + ".",
        "",
        f"Trunk pass (once, shared by every task): {t['n_images']} images in {t['wall_seconds']:.0f} s wall over {t['workers']} processes "
        f"({1000 * t['process_seconds'] / t['n_images']:.0f} ms of one core per image, decoding included), "
        f"peak RSS {t['peak_rss_mib']:.0f} MiB per process; activations 192×7×7 float32 = 37.6 KB per image.",
        "",
        "| task | features | downstream source_only | downstream dann | fine-tuning's own head | fine-tune wall s | peak RSS (MiB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for task in tasks:
        for kind in kinds:
            lines.append(f"| {task} | {_kind_label(kind)} | {cell(task, kind, 'source_only_acc')} | {cell(task, kind, 'dann_acc')} | "
                         f"{cell(task, kind, 'finetune_head_acc')} | {cell(task, kind, 'finetune_seconds', '{:.0f}')} | "
                         f"{cell(task, kind, 'peak_rss_mib', '{:.0f}')} |")
    for kind in kinds:
        lines.append(f"| **mean** | {_kind_label(kind)} | {mean_of(kind, 'source_only_acc')} | {mean_of(kind, 'dann_acc')} | "
                     f"{mean_of(kind, 'finetune_head_acc')} | – | – |")
    lines += ["", results.get("verdict", "")]
    if a["seeds"] == 1:
        lines += ["", "One seed: differences of a point or two are within seed-to-seed noise (compare the ± of the domain "
                  "adaptation table above). \"fine-tuning's own head\" is the linear classifier trained with the block; the "
                  "downstream heads are what `prodkg run` predicts with."]
    return "\n".join(lines).rstrip() + "\n"


def _kind_label(kind: str) -> str:
    return "frozen" if kind == "frozen" else f"fine-tuned ({kind.split(':', 1)[1]})"


def verdict(records: list[dict]) -> str:
    """One sentence per fine-tuning method, from the numbers: does it help, on average and per task?"""
    out = []
    frozen = {(r["task"], r["seed"]): r for r in records if r["features"] == "frozen"}
    for kind in dict.fromkeys(r["features"] for r in records if r["features"] != "frozen"):
        for method in DOWNSTREAM:
            diffs = [r[f"{method}_acc"] - frozen[(r["task"], r["seed"])][f"{method}_acc"] for r in records
                     if r["features"] == kind and (r["task"], r["seed"]) in frozen]
            if diffs:
                out.append(f"{_kind_label(kind)} vs frozen, downstream {method}: {np.mean(diffs):+.1f} points on average "
                           f"(best task {max(diffs):+.1f}, worst {min(diffs):+.1f}).")
    return " ".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default="A-W,A-D,W-A,D-A")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--epochs", type=int, default=5, help="fine-tuning epochs")
    p.add_argument("--adapt-epochs", type=int, default=100, help="epochs of the downstream heads (prodkg's default)")
    p.add_argument("--finetune-methods", default="dann", help="comma-separated: dann, source_only")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--no-write", action="store_true", help="print the table, leave docs/BENCHMARKS.md alone")
    p.add_argument("--report-only", action="store_true", help="rewrite the section from bench/results/finetune.json")
    args = p.parse_args()
    if args.report_only:
        results = json.loads(RESULTS.read_text())
        print("wrote", write_section("finetune", report(results)))
        return

    from _features import data_home

    from prodkg.catalogs import load_dataset

    started = time.perf_counter()
    tasks = [tuple(DOMAIN[x] for x in t.strip().split("-")) for t in args.tasks.split(",")]
    used = sorted({d for t in tasks for d in t})
    frame = load_dataset("office-caltech-10", data_home()).frame
    frame = frame[frame["domain"].isin(used)].reset_index(drop=True)
    classes = sorted(set(frame["category"]))
    labels = [classes.index(c) for c in frame["category"]]
    trunk = trunk_activations(frame, args.workers)
    print(f"trunk: {trunk['n_images']} images, {trunk['wall_seconds']:.0f} s{' (cached)' if trunk['cached'] else ''}", flush=True)
    kinds = ["frozen", *(f"finetuned:{m.strip()}" for m in args.finetune_methods.split(",") if m.strip())]
    # longest jobs first, so two workers finish together
    jobs = [(k, s, t, seed, args.epochs, args.adapt_epochs, trunk["values_path"], frame["domain"].tolist(), labels)
            for k in reversed(kinds) for (s, t) in tasks for seed in range(args.seeds)]
    records = []
    with get_context("spawn").Pool(args.workers, maxtasksperchild=1) as pool:
        for rec in pool.imap_unordered(_job, jobs):
            records.append(rec)
            print(f"{rec['task']} seed {rec['seed']} {rec['features']}: source_only {rec['source_only_acc']:.1f}  dann {rec['dann_acc']:.1f}"
                  + (f"  head {rec['finetune_head_acc']:.1f}  ft {rec['finetune_seconds']:.0f} s" if "finetune_seconds" in rec else ""),
                  flush=True)
    order = {k: i for i, k in enumerate(kinds)}
    task_order = {f"{_short(s)}->{_short(t)}": i for i, (s, t) in enumerate(tasks)}
    records.sort(key=lambda r: (task_order[r["task"]], order[r["features"]], r["seed"]))
    import torch

    results = {"args": vars(args), "date": today(), "machine": machine(), "torch": torch.__version__,
               "wall_seconds": time.perf_counter() - started, "trunk": {k: v for k, v in trunk.items() if k != "ids"},
               "records": records, "verdict": verdict(records)}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1))
    body = report(results)
    print(body)
    if not args.no_write:
        print("wrote", write_section("finetune", body))


if __name__ == "__main__":
    main()
