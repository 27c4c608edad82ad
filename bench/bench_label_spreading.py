"""Label spreading of a head's own target predictions (``--label-spreading ALPHA``): does it pay, and where does it hurt?

    PRODKG_DATA_HOME=... PRODKG_BENCH_CACHE=... python bench/bench_label_spreading.py --suite office --seeds 1
    PRODKG_DATA_HOME=... PRODKG_BENCH_CACHE=... python bench/bench_label_spreading.py --suite partial --seeds 1
    PRODKG_DATA_HOME=... PRODKG_BENCH_CACHE=... python bench/bench_label_spreading.py --suite instacart --seeds 1 --epochs 10
    PRODKG_DATA_HOME=... PRODKG_BENCH_CACHE=... python bench/bench_shelf_views.py auto+self-training --labels fine --views 20 --epochs 30 --seeds 3
    python bench/bench_label_spreading.py --write      # section label-spreading of docs/BENCHMARKS.md

Per task and seed: source-only and ``auto`` (the default halving schedule) trained as the predict stage trains them
(``adaptation.train``), then each one's target probabilities spread over the target's 10-NN graph
(``prediction.propagation.spread_predictions``, the function the predict stage calls) at alpha 0.8 and 0.9.
Target labels score the result and nothing else. Grocery comes from bench_shelf_views' fine-label ``auto`` records
(``auto`` + two rounds of self-training, with shelf-style views), which carry the same spread at both alphas.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from _common import DOMAINS, SHORT, machine, today, write_section

RESULTS = ROOT / "bench" / "results"
ALPHAS = (0.8, 0.9)


def spread_scores(target, probs: np.ndarray, yt: np.ndarray) -> dict[str, dict]:
    """Accuracy (%) and changed share of ``probs`` spread at each of :data:`ALPHAS`."""
    from prodkg.prediction.propagation import spread_predictions

    out = {}
    for alpha in ALPHAS:
        spread, rec = spread_predictions(target, np.arange(len(yt)), probs, alpha)
        out[str(alpha)] = {"acc": float((spread.argmax(1) == yt).mean() * 100), "changed_share": rec.get("changed_share"),
                           **({"skipped": rec["skipped"]} if "skipped" in rec else {})}
    return out


def _job(args: tuple) -> dict:
    suite, task, seed, epochs = args
    import torch

    torch.set_num_threads(1)
    from bench_auto_cost import _task

    from prodkg.adaptation import TrainConfig, train

    source, y_s, target, yt, n_classes = _task(suite, task)
    rec: dict = {"suite": suite, "task": task, "seed": seed, "epochs": epochs, "n_target": len(yt)}
    started = time.perf_counter()
    for method in ("source_only", "auto"):
        model = train(source, y_s, target, n_classes, TrainConfig(method=method, seed=seed, epochs=epochs))
        probs = model.predict_proba(target)
        t0 = time.perf_counter()
        rec[method] = {"acc": float((probs.argmax(1) == yt).mean() * 100), "spread": spread_scores(target, probs, yt),
                       "spread_seconds": round((time.perf_counter() - t0) / len(ALPHAS), 2)}
        if method == "auto":
            rec[method]["chosen"] = model.selection["chosen"]
    rec["seconds"] = round(time.perf_counter() - started, 1)
    return rec


def _path(suite: str, epochs: int) -> Path:
    return RESULTS / f"label_spreading_{suite}_e{epochs}.json"


def run(args: argparse.Namespace) -> None:
    from multiprocessing import get_context

    from _features import instacart, office_caltech

    (instacart if args.suite == "instacart" else office_caltech)()  # extract once, before the workers read it
    tasks = (["department", "aisle"] if args.suite == "instacart"
             else [f"{SHORT[a]}->{SHORT[b]}" for a in DOMAINS for b in DOMAINS if a != b])
    path = _path(args.suite, args.epochs)
    data = json.loads(path.read_text()) if path.is_file() else {"records": []}
    have = {(r["task"], r["seed"]) for r in data["records"]}
    jobs = [(args.suite, t, s, args.epochs) for s in range(args.seeds) for t in tasks if (t, s) not in have]
    command = " ".join(["python", "bench/bench_label_spreading.py", *sys.argv[1:]])
    with get_context("spawn").Pool(args.workers) as pool:
        for rec in pool.imap_unordered(_job, jobs):
            data["records"].append(rec)
            data.update(command=command, date=today(), machine=machine())
            RESULTS.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(data, indent=1))
            print(json.dumps({k: rec[k] for k in ("task", "seed", "seconds")}),
                  {m: (round(rec[m]["acc"], 1), {a: round(v["acc"], 1) for a, v in rec[m]["spread"].items()}) for m in ("source_only", "auto")},
                  flush=True)


NOTES = ""


def _suite_table(suite: str, data: dict) -> list[str]:
    recs = data["records"]
    tasks = list(dict.fromkeys(r["task"] for r in sorted(recs, key=lambda r: r["task"])))
    seeds = sorted({r["seed"] for r in recs})
    by = {(r["task"], r["seed"]): r for r in recs}
    cols = [("source-only", lambda r: r["source_only"]["acc"])] + \
           [(f"source-only, spread {a}", lambda r, a=a: r["source_only"]["spread"][a]["acc"]) for a in map(str, ALPHAS)] + \
           [("`auto`", lambda r: r["auto"]["acc"])] + \
           [(f"`auto`, spread {a}", lambda r, a=a: r["auto"]["spread"][a]["acc"]) for a in map(str, ALPHAS)]
    lines = [f"### {suite} ({len(tasks)} tasks, {len(seeds)} seed(s), {recs[0]['epochs']} epochs)", "",
             f"Command: `PRODKG_DATA_HOME=... PRODKG_BENCH_CACHE=... {data['command']}` · date {data['date']} · machine: {data['machine']}.", "",
             "| task | " + " | ".join(c for c, _ in cols) + " | changed at 0.8 (`auto`) |", "|---|" + "---|" * (len(cols) + 1)]
    mean = {c: [] for c, _ in cols}
    for t in tasks:
        rs = [by[(t, s)] for s in seeds if (t, s) in by]
        cells = []
        for c, f in cols:
            v = float(np.mean([f(r) for r in rs]))
            mean[c].append(v)
            cells.append(f"{v:.1f}")
        changed = np.mean([r["auto"]["spread"]["0.8"]["changed_share"] or 0 for r in rs]) * 100
        lines.append(f"| {t} | " + " | ".join(cells) + f" | {changed:.1f}% |")
    lines.append("| **mean** | " + " | ".join(f"**{np.mean(v):.1f}**" for v in mean.values()) + " | |")
    so = np.array(mean["source-only"])
    worst = ["worst task against source-only"]
    for c, _ in cols[1:]:
        d = np.array(mean[c]) - so
        worst.append(f"{d.min():+.1f} ({tasks[int(d.argmin())]})")
    lines.append("| " + " | ".join([worst[0], "–", *worst[1:]]) + " | |")
    secs = [r["auto"]["spread_seconds"] for r in recs]
    lines += ["", f"Spreading took {np.median(secs):.2f} s per run (median; largest target {max(r['n_target'] for r in recs):,} rows)."]
    return lines


def _grocery_lines() -> list[str]:
    path = RESULTS / "shelf_views_auto.json"
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    recs = sorted((r for r in data["records"] if "spread" in r and r.get("encoder", "efficientnet_lite0") == "efficientnet_lite0"),
                  key=lambda r: r["seed"])
    if not recs:
        return []
    cmd = next((c for c in data.get("commands", []) if "--labels fine" in c and "lite2" not in c), "")
    lines = ["### grocery-store-dataset: one iconic photo (+ 20 shelf-style views) per product → in-store photos", "",
             f"Command: `PRODKG_DATA_HOME=... PRODKG_BENCH_CACHE=... {cmd}` · date {data['date']} · machine: {data['machine']}.", "",
             "`auto` + two rounds of self-training (`--method auto --source-views 20 --self-training 2`, 30 epochs), one head on "
             "the 81 fine classes; *coarse* is that head's probabilities summed within each of the 19 coarse classes, as the "
             "predict stage backs off along the taxonomy. Target accuracy in %.", "",
             "| seed | chosen | fine | fine, spread 0.8 | fine, spread 0.9 | coarse | coarse, spread 0.8 | coarse, spread 0.9 | changed at 0.8 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in recs:
        s = r["spread"]
        lines.append(f"| {r['seed']} | {r['chosen']} | {r['accuracy']:.1f} | {s['0.8']['fine']:.1f} | {s['0.9']['fine']:.1f} | "
                     f"{r['coarse_rollup']:.1f} | {s['0.8']['coarse_rollup']:.1f} | {s['0.9']['coarse_rollup']:.1f} | "
                     f"{s['0.8']['changed_share'] * 100:.1f}% |")
    f = lambda key, a=None: [r["spread"][a][key] if a else r[key] for r in recs]
    cells = [f("accuracy"), f("fine", "0.8"), f("fine", "0.9"), f("coarse_rollup"), f("coarse_rollup", "0.8"), f("coarse_rollup", "0.9")]
    lines.append("| **mean (worst)** | | " + " | ".join(f"**{np.mean(v):.1f}** ({min(v):.1f})" for v in cells) + " | |")
    return lines


def write() -> Path:
    lines = ["## Label spreading of the heads' own predictions (`--label-spreading`)", "",
             "Written by `bench/bench_label_spreading.py --write`. Every target product's class probabilities are mixed "
             "with its 10 nearest target neighbours' (cosine on the frozen features) by label spreading (Zhou et al. 2003; "
             "`prediction.propagation.spread_predictions`, what `--label-spreading ALPHA` runs in the predict stage); "
             "*spread a*: at alpha a. Target labels score, nothing else reads them; every target product gets a "
             "prediction, so accuracy is the precision at full coverage. The bench spreads the heads' raw probabilities; "
             "the predict stage spreads them after the source-fitted temperature (1 where no source row is held out, as "
             "on grocery's fine classes).", ""]
    lines += _grocery_lines()
    for suite in ("office", "partial", "instacart"):
        for path in sorted(RESULTS.glob(f"label_spreading_{suite}_e*.json")):
            lines += [""] + _suite_table(suite, json.loads(path.read_text()))
    if NOTES:
        lines += ["", NOTES.strip()]
    return write_section("label-spreading", "\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", choices=["office", "partial", "instacart"], default="office")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    if args.write:
        print(write())
        return
    run(args)


if __name__ == "__main__":
    main()
