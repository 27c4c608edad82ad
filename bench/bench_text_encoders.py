"""Text encoders compared on product titles: MiniLM, hashed n-grams, and both side by side.

Run from the repository root (features are extracted once per encoder through prodkg's extractors and cached, see
bench/_features.py)::

    PRODKG_DATA_HOME=/path/to/datasets python bench/bench_text_encoders.py [--seeds 3] [--no-write]

Cost: titles/s of the extraction (``extract_features`` without a cache, one process, ``PRODKG_BENCH_THREADS``
torch threads) on the first ``--speed-titles`` instacart titles, and the vector's bytes per product.

Accuracy: a linear probe (softmax regression, Adam, 30 epochs, the same for every encoder) fitted on the labelled
catalog rows and scored on target rows it never saw, on two instacart-products splits: ``catalog -> new`` (the
hashed 80/20 split: no shift) and ``catalog -> new-brands`` (every product of a brand is on one side: new brands'
names are words the catalog never showed). Per split and taxonomy level (aisle; department, the sum of its aisles'
probabilities): accuracy, and the most coverage any confidence bar reaches at >= 95 % precision with the labels
(an oracle: what a publication rule at 95 % could at best publish with this ranking). Means over seeds, worst seed
beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from _common import machine, today, write_section

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "text_encoders.json"
ENCODERS = ("minilm", "ngrams", "minilm_ngrams")


def speed(encoders: list[str], n_titles: int) -> dict:
    """Titles/s of each encoder's extraction, no cache, on the same titles."""
    import torch

    from _features import data_home
    from prodkg.catalogs import load_dataset
    from prodkg.extractors import extract_features, get_encoder

    torch.set_num_threads(int(os.environ.get("PRODKG_BENCH_THREADS") or 1))
    titles = load_dataset("instacart-products", data_home()).frame["title"].astype(str).tolist()[:n_titles]
    out = {}
    for name in encoders:
        enc = get_encoder(name)  # the run's default precision on this machine
        extract_features(titles[:64], enc, progress=False)  # warm-up
        start = time.perf_counter()
        res = extract_features(titles, enc, progress=False, batch_size=64)
        seconds = time.perf_counter() - start
        out[name] = {"titles": len(titles), "seconds": round(seconds, 2), "per_second": round(len(titles) / seconds, 1),
                     "dim": int(enc.dim), "bytes_per_product": int(enc.dim) * 4, "precision": enc.precision, "ok": int(res.ok.sum())}
        print(name, out[name], flush=True)
    return out


def splits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Row masks (source, target) of the two splits over the instacart frame's rows."""
    from _features import data_home, instacart
    from prodkg.catalogs import load_dataset

    d = instacart()
    brand = load_dataset("instacart-brand-shift", data_home()).frame.set_index("product_id").loc[d["id"]]["domain"].to_numpy(str)
    labelled = d["y"] != ""
    return {"catalog -> new": (labelled & (d["domain"] == "catalog"), labelled & (d["domain"] == "new")),
            "catalog -> new-brands": (labelled & (brand == "catalog"), labelled & (brand == "new-brands"))}


def oracle_coverage(probs: np.ndarray, right: np.ndarray, target: float = 0.95) -> float:
    order = np.argsort(-probs.max(1), kind="stable")
    precision = np.cumsum(right[order]) / np.arange(1, len(order) + 1)
    ok = np.flatnonzero(precision >= target)
    return float((ok[-1] + 1) / len(order)) if len(ok) else 0.0


def probe(x_s: np.ndarray, y_s: np.ndarray, x_t: np.ndarray, n_classes: int, seed: int, epochs: int = 30) -> np.ndarray:
    import torch

    torch.manual_seed(seed)
    xs, ys = torch.tensor(x_s), torch.tensor(y_s)
    model = torch.nn.Linear(x_s.shape[1], n_classes)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-6)
    for _ in range(epochs):
        perm = torch.randperm(len(ys))
        for i in range(0, len(ys), 512):
            b = perm[i:i + 512]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xs[b]), ys[b]).backward()
            opt.step()
    with torch.no_grad():
        return torch.softmax(model(torch.tensor(x_t)), 1).numpy()


def accuracy(encoders: list[str], seeds: int) -> list[dict]:
    import torch

    from _features import data_home, instacart
    from prodkg.catalogs import load_dataset

    torch.set_num_threads(int(os.environ.get("PRODKG_BENCH_THREADS") or 1))
    parent = {c: p for c, p, *_ in load_dataset("instacart-products", data_home()).taxonomy if p}
    masks = splits()
    rows = []
    for name in encoders:
        d = instacart(name)
        y = d["y"]
        for split, (src, tgt) in masks.items():
            classes = sorted(set(y[src].tolist()))
            index = {c: i for i, c in enumerate(classes)}
            tgt = tgt & np.isin(y, classes)  # an aisle the catalog never shows cannot be predicted
            depts = sorted({parent.get(c, c) for c in classes})
            member = np.zeros((len(classes), len(depts)), np.float32)
            for i, c in enumerate(classes):
                member[i, depts.index(parent.get(c, c))] = 1
            truth_a = np.array([index[c] for c in y[tgt]])
            truth_d = np.array([depts.index(parent.get(c, c)) for c in y[tgt]])
            for seed in range(seeds):
                started = time.perf_counter()
                p = probe(d["X"][src], np.array([index[c] for c in y[src]]), d["X"][tgt], len(classes), seed)
                pd_ = p @ member
                right_a, right_d = p.argmax(1) == truth_a, pd_.argmax(1) == truth_d
                row = {"encoder": name, "split": split, "seed": seed, "n_source": int(src.sum()), "n_target": int(tgt.sum()),
                       "aisle": float(right_a.mean()), "aisle_oracle95": oracle_coverage(p, right_a),
                       "department": float(right_d.mean()), "department_oracle95": oracle_coverage(pd_, right_d),
                       "seconds": round(time.perf_counter() - started, 1)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def report(result: dict) -> str:
    speed_rows = result["speed"]
    lines = [f"## Text encoders: MiniLM, hashed n-grams, both side by side",
             "",
             f"Command: `PRODKG_DATA_HOME=... python bench/bench_text_encoders.py {result['args']}`  ",
             f"Machine: {result['machine']}. Date: {result['date']}.  ",
             "Extraction without a cache, one process, the first titles of instacart-products; the default precision on "
             "this machine. Accuracy: a linear probe (softmax regression, Adam, 30 epochs) fitted on the labelled catalog "
             "rows and scored on target rows it never saw: `catalog -> new` is the hashed 80/20 split (no shift), "
             "`catalog -> new-brands` puts every product of a brand on one side (new brands' names are words the "
             "catalog never showed). *Oracle at 95 %*: with the labels, the most of the target any confidence bar "
             "publishes at >= 95 % precision (department: the sum of its aisles' probabilities), the ceiling a "
             "publication rule at 95 % has with this ranking. Means over seeds, worst seed in brackets.",
             "",
             "| encoder | dim | bytes / product | titles/s | precision |",
             "|---|---:|---:|---:|---|"]
    for name, s in speed_rows.items():
        lines.append(f"| `{name}` | {s['dim']:,} | {s['bytes_per_product']:,} | {s['per_second']:,.0f} | {s['precision']} |")
    lines += ["", "| encoder | split | aisle | aisle, oracle at 95 % | department | department, oracle at 95 % |", "|---|---|---:|---:|---:|---:|"]
    rows = result["rows"]
    for name in dict.fromkeys(r["encoder"] for r in rows):
        for split in dict.fromkeys(r["split"] for r in rows):
            rs = [r for r in rows if r["encoder"] == name and r["split"] == split]
            if not rs:
                continue
            cell = lambda k: f"{100 * np.mean([r[k] for r in rs]):.1f} ({100 * min(r[k] for r in rs):.1f})"
            lines.append(f"| `{name}` | {split} | {cell('aisle')} | {cell('aisle_oracle95')} | {cell('department')} | "
                         f"{cell('department_oracle95')} |")
    if result.get("notes"):
        lines += ["", result["notes"].strip()]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--encoders", default=",".join(ENCODERS))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--speed-titles", type=int, default=4000)
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--notes", type=Path, help="a Markdown file appended to the section")
    p.add_argument("--no-write", action="store_true")
    a = p.parse_args()
    if a.report_only:
        result = json.loads(RESULTS.read_text())
    else:
        encoders = [e for e in a.encoders.split(",") if e]
        result = {"machine": machine(), "date": today(), "args": f"--seeds {a.seeds} --speed-titles {a.speed_titles}",
                  "speed": speed(encoders, a.speed_titles), "rows": accuracy(encoders, a.seeds)}
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=1))
    if a.notes:
        result["notes"] = a.notes.read_text()
    text = report(result)
    print(text if a.no_write else f"wrote {write_section('text-encoders', text)}")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
