"""Shelf-style augmented views of the source photos: do they carry one catalog photo per class further?

    PRODKG_DATA_HOME=... PRODKG_BENCH_CACHE=... python bench/bench_shelf_views.py curve --views 20 --epochs 3,10,30
    PRODKG_DATA_HOME=... PRODKG_BENCH_CACHE=... python bench/bench_shelf_views.py table --views 20 --epochs 10 --seeds 3
    PRODKG_DATA_HOME=... PRODKG_BENCH_CACHE=... python bench/bench_shelf_views.py auto --views 20 --epochs 10 --seeds 3
    PRODKG_DATA_HOME=... PRODKG_BENCH_CACHE=... python bench/bench_shelf_views.py office --views 5 --epochs 20 --tasks D-W,D-A
    python bench/bench_shelf_views.py write        # the docs/BENCHMARKS.md section from the saved results
    PRODKG_DATA_HOME=... PRODKG_BENCH_CACHE=... python bench/bench_shelf_views.py auto+self-training --labels fine --views 20 --epochs 30 --seeds 3
    PRODKG_DATA_HOME=... PRODKG_BENCH_CACHE=... python bench/bench_shelf_views.py rounds --views 20 --epochs 30 --seeds 3 --rounds 5
    ... python bench/bench_shelf_views.py auto+self-training --labels fine --image-encoder efficientnet_lite2 ...
    python bench/bench_shelf_views.py write-rollup # coarse accuracy of the fine head rolled up (section shelf-rollup)

grocery-store-dataset: the 81 iconic products (Lite0 image + MiniLM description) -> the 5,421 in-store photos
(image only), fine (81) and coarse labels. A run with views trains on each iconic row plus its ``K`` views
(extractors.augment defaults; the description travels with every view); ``auto`` holds out whole products
(adaptation.holdout.grouped_holdout). Every target photo gets a prediction (coverage 100%), so accuracy is
the precision at full coverage. Results go to bench/results/shelf_views_<mode>.json (one record per run,
appended, so modes can run one after the other under the lock).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import lru_cache
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from _common import DOMAINS, SHORT, machine, today
from _features import DEFAULT_IMAGE

RESULTS = ROOT / "bench" / "results"
METHODS = ("source_only", "dann", "dan")


def grocery_data(label: str, k: int, encoder: str = DEFAULT_IMAGE):
    """``(source, y_source, groups, target, y_target, n_classes)``; with ``k`` views per iconic photo appended;
    image features of ``encoder``."""
    from _features import grocery, grocery_views

    from prodkg.adaptation import MultiModal

    g = grocery(encoder)
    names = g["y"] if label == "fine" else g["coarse"]
    classes = sorted(set(names[g["domain"] == "iconic"].tolist()))
    y = np.array([classes.index(c) if c in classes else -1 for c in names])
    s_idx = np.flatnonzero(g["domain"] == "iconic")
    t_idx = np.flatnonzero((g["domain"] == "instore") & (y >= 0))
    x = MultiModal(blocks={"image": g["image"], "text": g["text"]}, present={"image": g["image_ok"], "text": g["text_ok"]})
    source, ys, groups = x.subset(s_idx), y[s_idx], s_idx
    if k:
        v = grocery_views(k, encoder)
        of = v["of"]
        views = MultiModal(blocks={"image": v["image"], "text": g["text"][of]},
                           present={"image": np.ones(len(of), bool), "text": g["text_ok"][of]})
        source, ys, groups = MultiModal.concat([source, views]), np.concatenate([ys, y[of]]), np.concatenate([s_idx, of])
    return source, ys, groups, x.subset(t_idx), y[t_idx], len(classes)


def coarse_rollup_accuracy(probs: np.ndarray, encoder: str = DEFAULT_IMAGE, level: str = "coarse") -> float:
    """Accuracy on the in-store photos' ``level`` of a fine head's probabilities summed within each concept of that
    level (``probs``: ``(N, 81)``, the target rows of :func:`grocery_data` ``("fine", k)``, in their order).
    ``coarse``: the dataset's 43 coarse classes, level 1 of the taxonomy the predict stage backs off along (what
    it publishes at that level); ``parent``: the 19 parent concepts the benches called coarse before 2026-12-01
    (``_features.grocery_coarse``)."""
    member, truth = _coarse_rollup(encoder, level)
    assert probs.shape == (len(truth), len(member)), (probs.shape, len(truth), len(member))
    return float(((probs @ member).argmax(1) == truth).mean() * 100)


@lru_cache(maxsize=4)
def _coarse_rollup(encoder: str, level: str = "coarse") -> tuple[np.ndarray, np.ndarray]:
    """``(fine -> concept membership (81, K), concept of each in-store photo (N,))`` for ``level`` (``coarse``
    or ``parent`` of ``_features.grocery_coarse``), read once per process."""
    from _features import grocery

    g = grocery(encoder)  # the labels are every encoder's; the arrays already read for the run are reused
    iconic = g["domain"] == "iconic"
    fine = sorted(set(g["y"][iconic].tolist()))
    concept = dict(zip(g["y"][iconic].tolist(), g[level][iconic].tolist()))
    names = sorted(set(concept.values()))
    member = np.zeros((len(fine), len(names)))
    member[np.arange(len(fine)), [names.index(concept[c]) for c in fine]] = 1.0
    t_idx = np.flatnonzero((g["domain"] == "instore") & np.isin(g["y"], fine))
    truth = np.array([names.index(c) if c in names else -1 for c in g[level][t_idx]])
    return member, truth


def office_data(src: str, tgt: str, k: int):
    from _features import office_caltech, office_views

    from prodkg.adaptation import MultiModal

    d = office_caltech()
    classes = sorted(set(d["y"].tolist()))
    y = np.array([classes.index(c) for c in d["y"]])
    s_idx, t_idx = np.flatnonzero(d["domain"] == src), np.flatnonzero(d["domain"] == tgt)
    blocks, ys, groups = [d["X"][s_idx]], [y[s_idx]], [s_idx]
    if k:
        v = office_views(src, k)
        blocks.append(v["image"])
        ys.append(y[v["of"]])
        groups.append(v["of"])
    source = MultiModal.complete(image=np.concatenate(blocks))
    return source, np.concatenate(ys), np.concatenate(groups), MultiModal.complete(image=d["X"][t_idx]), y[t_idx], len(classes)


def _train_one(job: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    from prodkg.adaptation import TrainConfig, train

    data = grocery_data(job["label"], job["views"], job.get("encoder", DEFAULT_IMAGE)) if job["suite"] == "grocery" else office_data(*job["label"].split("->"), job["views"])
    source, ys, groups, target, yt, n = data
    t0 = time.perf_counter()
    model = train(source, ys, target, n, TrainConfig(method=job["method"], epochs=job["epochs"], seed=job["seed"]), groups=groups)
    acc = float((model.predict(target) == yt).mean() * 100)
    return {**job, "accuracy": acc, "seconds": round(time.perf_counter() - t0, 1), "n_source": len(ys)}


def _auto_one(job: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    from prodkg.adaptation import TrainConfig
    from prodkg.adaptation.selection import DEFAULT_CANDIDATES, auto_train, candidate_label

    source, ys, groups, target, yt, n = grocery_data(job["label"], job["views"], job.get("encoder", DEFAULT_IMAGE))
    models: list = []
    t0 = time.perf_counter()
    # "auto": whole products held out (a class with one product holds none out); "auto:rows": any row,
    # so views are held out beside their product's photo and other views (what a run without groups does)
    winner = auto_train(source, ys, target, n, TrainConfig(method="auto", epochs=job["epochs"], seed=job["seed"]),
                        candidates_out=models, groups=None if job["method"] == "auto:rows" else groups)
    extra = {}
    if job.get("ensemble", 1) > 1:  # --ensemble N: N heads of auto's choice from their own seeds, averaged
        import dataclasses

        from prodkg.adaptation.ensemble import train_ensemble

        extra["single_head"] = float((winner.predict(target) == yt).mean() * 100)
        winner = train_ensemble(source, ys, target, n, dataclasses.replace(winner.config, ensemble=job["ensemble"]), first=winner)
    sel = winner.selection
    if job["method"] == "auto+self-training":  # auto as a run with --self-training 2 does it: the choice, then two rounds
        from prodkg.adaptation.self_training import self_train

        before = float((winner.predict(target) == yt).mean() * 100)
        winner, rounds = self_train(source, ys, target, n, winner.config, first=winner)
        extra.update(before=before, rounds=rounds)
    accs = {candidate_label(m, o): float((model.predict(target) == yt).mean() * 100) for (m, o), model in zip(DEFAULT_CANDIDATES, models)}
    if job["label"] == "fine":  # the fine head's coarse facts, as back-off along the taxonomy publishes them
        encoder = job.get("encoder", DEFAULT_IMAGE)
        probs = winner.predict_proba(target)
        extra["coarse_rollup"] = coarse_rollup_accuracy(probs, encoder)
        extra["parent_rollup"] = coarse_rollup_accuracy(probs, encoder, "parent")
        extra["spread"] = _spread(target, probs, yt, encoder)
    else:  # a head of the coarse classes' own: its accuracy after spreading too
        from bench_label_spreading import spread_scores

        extra["spread"] = spread_scores(target, winner.predict_proba(target), yt)
    return {**job, "accuracy": float((winner.predict(target) == yt).mean() * 100), "candidates": accs,
            "chosen": sel["chosen"], "selector": sel["selector"], "selector_choice": sel["selector_choice"], "safety": sel["safety"],
            "refinement": sel["refinement"], "n_source_val": sel["n_source_val"], "reason": sel["reason"],
            "seconds": round(time.perf_counter() - t0, 1), **extra}


def _spread(target, probs: np.ndarray, yt: np.ndarray, encoder: str) -> dict[str, dict]:
    """Fine accuracy, coarse and parent roll-ups and changed share after ``--label-spreading`` at each of its
    benched alphas (bench_label_spreading.ALPHAS), through the predict stage's own function."""
    from bench_label_spreading import spreads

    return {a: {"fine": float((spread.argmax(1) == yt).mean() * 100), "coarse_rollup": coarse_rollup_accuracy(spread, encoder),
                "parent_rollup": coarse_rollup_accuracy(spread, encoder, "parent"), "changed_share": rec.get("changed_share")}
            for a, (spread, rec) in spreads(target, probs).items()}


def _selftrain_one(job: dict) -> dict:
    """``job["method"]`` is "<method>+self-training": the method, then two rounds of class-balanced self-training."""
    import torch

    torch.set_num_threads(1)
    from prodkg.adaptation import TrainConfig, train
    from prodkg.adaptation.self_training import self_train

    source, ys, _, target, yt, n = grocery_data(job["label"], job["views"], job.get("encoder", DEFAULT_IMAGE))
    cfg = TrainConfig(method=job["method"].split("+")[0], epochs=job["epochs"], seed=job["seed"])
    t0 = time.perf_counter()
    first = train(source, ys, target, n, cfg)
    model, rounds = self_train(source, ys, target, n, cfg, first=first)
    return {**job, "accuracy": float((model.predict(target) == yt).mean() * 100), "before": float((first.predict(target) == yt).mean() * 100),
            "rounds": rounds, "seconds": round(time.perf_counter() - t0, 1)}


def _rounds_one(job: dict) -> dict:
    """What `auto` keeps on grocery fine labels (source-only: no product can be held out, so DEV cannot confirm
    an adapted candidate), then ``job["rounds"]`` rounds of self-training at shares 0.2, 0.4, ...; fine accuracy
    and the coarse roll-up after each round (round 0: before any)."""
    import torch

    torch.set_num_threads(1)
    from prodkg.adaptation import TrainConfig, train
    from prodkg.adaptation.self_training import self_train

    source, ys, _, target, yt, n = grocery_data("fine", job["views"], job.get("encoder", DEFAULT_IMAGE))
    cfg = TrainConfig(method="source_only", epochs=job["epochs"], seed=job["seed"])
    t0 = time.perf_counter()
    model = train(source, ys, target, n, cfg)
    curve = []
    for k in range(job["rounds"] + 1):
        if k:  # one more round on the last model's pseudo-labels: the same as self_train with shares 0.2 .. 0.2 k
            model, _ = self_train(source, ys, target, n, cfg, shares=(round(0.2 * k, 1),), first=model)
        curve.append({"round": k, "fine": float((model.predict(target) == yt).mean() * 100),
                      "coarse_rollup": coarse_rollup_accuracy(model.predict_proba(target), job.get("encoder", DEFAULT_IMAGE))})
    return {**job, "accuracy": curve[-1]["fine"], "curve": curve, "seconds": round(time.perf_counter() - t0, 1)}


def _save(mode: str, rec: dict, command: str) -> None:
    path = RESULTS / f"shelf_views_{mode}.json"
    data = json.loads(path.read_text()) if path.is_file() else {"records": []}
    data.setdefault("commands", [])
    if command not in data["commands"]:
        data["commands"].append(command)
    data["date"], data["machine"] = today(), machine()
    data["records"].append(rec)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


def _jobs(mode: str, args: argparse.Namespace, epochs: list[int], seeds) -> tuple[list[dict], object]:
    jobs, fn = _jobs_lite0(mode, args, epochs, seeds)
    if args.image_encoder != DEFAULT_IMAGE:  # Lite0's records carry no encoder key (they came first)
        jobs = [{**j, "encoder": args.image_encoder} for j in jobs]
    if args.ensemble > 1:  # nor do single heads an ensemble key
        jobs = [{**j, "ensemble": args.ensemble} for j in jobs]
    return jobs, fn


def _jobs_lite0(mode: str, args: argparse.Namespace, epochs: list[int], seeds) -> tuple[list[dict], object]:
    views = sorted({0, args.views}) if args.with_baseline else [args.views]
    labels, methods = args.labels.split(","), args.methods.split(",")
    if mode in ("curve", "table"):
        return ([{"suite": "grocery", "label": lab, "views": k, "method": m, "epochs": e, "seed": s}
                 for s in seeds for e in epochs for lab in labels for k in views for m in methods], _train_one)
    if mode == "selftrain":
        return ([{"suite": "grocery", "label": lab, "views": k, "method": f"{m}+self-training", "epochs": e, "seed": s}
                 for s in seeds for e in epochs for lab in labels for k in views for m in methods], _selftrain_one)
    if mode in ("auto", "auto:rows", "auto+self-training"):
        return ([{"suite": "grocery", "label": lab, "views": k, "method": mode, "epochs": e, "seed": s}
                 for s in seeds for e in epochs for lab in labels for k in views], _auto_one)
    if mode == "rounds":
        return ([{"suite": "grocery", "label": "fine", "views": args.views, "method": "source_only+rounds", "epochs": e,
                  "seed": s, "rounds": args.rounds} for s in seeds for e in epochs], _rounds_one)
    if mode == "office":
        full = {f"{SHORT[a]}->{SHORT[b]}": f"{a}->{b}" for a in DOMAINS for b in DOMAINS if a != b}
        tasks = [t.replace("-", "->") for t in args.tasks.split(",")]
        return ([{"suite": "office", "label": full[t], "views": k, "method": m, "epochs": e, "seed": s}
                 for s in seeds for e in epochs for t in tasks for k in views for m in methods], _train_one)
    raise SystemExit(f"unknown mode {mode}")


def _run_jobs(mode: str, jobs: list[dict], fn, workers: int, command: str) -> list[dict]:
    """Run ``jobs`` (skipping those already in the results file); return every record of them."""
    from multiprocessing import get_context

    path = RESULTS / f"shelf_views_{mode}.json"
    old = json.loads(path.read_text())["records"] if path.is_file() else []
    key = lambda r: json.dumps({**{k: r[k] for k in ("suite", "label", "views", "method", "epochs", "seed")},
                                "encoder": r.get("encoder", DEFAULT_IMAGE), "ensemble": r.get("ensemble", 1)}, sort_keys=True)
    have = {key(r): r for r in old}
    todo = [j for j in jobs if key(j) not in have]
    out = [have[key(j)] for j in jobs if key(j) in have]
    if todo:
        with get_context("spawn").Pool(min(workers, len(todo))) as pool:
            for rec in pool.imap_unordered(fn, todo):
                print(mode, json.dumps({k: rec[k] for k in (*todo[0], "accuracy", "seconds", "chosen") if k in rec}), flush=True)
                _save(mode, rec, command)
                out.append(rec)
    return out


def converged_epochs(records: list[dict], views: int, tolerance: float = 1.0) -> int:
    """The fewest epochs of the curve whose mean accuracy (over labels and methods, with views) is within
    ``tolerance`` points of the best epoch count's."""
    by: dict[int, list[float]] = {}
    for r in records:
        if r["views"] == views:
            by.setdefault(r["epochs"], []).append(r["accuracy"])
    means = {e: float(np.mean(v)) for e, v in by.items()}
    best = max(means.values())
    return min(e for e, m in means.items() if m >= best - tolerance)


def run(args: argparse.Namespace) -> None:
    command = " ".join(["python", "bench/bench_shelf_views.py", *sys.argv[1:]])
    epochs = [int(e) for e in args.epochs.split(",")]
    if args.mode != "all":
        jobs, fn = _jobs(args.mode, args, epochs, range(1 if args.mode == "curve" else args.seeds))
        _run_jobs("auto" if args.mode.startswith("auto") else args.mode, jobs, fn, args.workers, command)
        return
    # the whole measurement, most important first: the curve picks the epochs, then auto with views (the
    # issue's figure), the methods over 3 seeds with and without views, self-training, the office check, auto with
    # rows held out, auto without views
    from _features import grocery_views, office_views

    grocery_views(args.views, args.image_encoder)
    args.with_baseline = True
    curve = _run_jobs("curve", *_jobs("curve", args, epochs, [0]), args.workers, command)
    e = converged_epochs(curve, args.views)
    print(f"converged at {e} epochs", flush=True)
    with_views = argparse.Namespace(**{**vars(args), "with_baseline": False})
    _run_jobs("auto", *_jobs("auto", with_views, [e], range(args.seeds)), args.workers, command)
    _run_jobs("table", *_jobs("table", args, [e], range(args.seeds)), args.workers, command)
    st = argparse.Namespace(**{**vars(with_views), "methods": "source_only,dan"})
    _run_jobs("selftrain", *_jobs("selftrain", st, [e], range(args.seeds)), args.workers, command)
    if args.tasks:
        for t in args.tasks.split(","):
            office_views(dict(zip(SHORT.values(), SHORT))[t.split("-")[0]], args.office_views)
        office = argparse.Namespace(**{**vars(args), "views": args.office_views})
        _run_jobs("office", *_jobs("office", office, [args.office_epochs], range(1)), args.workers, command)
    _run_jobs("auto", *_jobs("auto:rows", with_views, [e], range(args.seeds)), args.workers, command)
    without = argparse.Namespace(**{**vars(args), "views": 0, "with_baseline": False})
    _run_jobs("auto", *_jobs("auto", without, [e], range(args.seeds)), args.workers, command)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["all", "curve", "table", "selftrain", "auto", "auto:rows", "auto+self-training", "office", "rounds", "write", "write-rollup"])
    ap.add_argument("--views", type=int, default=20)
    ap.add_argument("--epochs", default="10")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--labels", default="fine,coarse")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--tasks", default="D-W,D-A,W-C", help="office-caltech-10 tasks of the check (empty: none)")
    ap.add_argument("--with-baseline", action="store_true", help="also run without views (0)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--office-views", type=int, default=5)
    ap.add_argument("--office-epochs", type=int, default=20)
    ap.add_argument("--image-encoder", default=DEFAULT_IMAGE, help="grocery image features (the encoder registry's name)")
    ap.add_argument("--ensemble", type=int, default=1, help="auto modes: heads of auto's choice from that many seeds, averaged "
                                                            "(--ensemble; each self-trains from its own pseudo-labels)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds mode: self-training rounds (shares 0.2, 0.4, ...)")
    args = ap.parse_args()
    if args.mode in ("write", "write-rollup"):
        from _shelf_report import write, write_rollup

        write() if args.mode == "write" else write_rollup()
        return
    run(args)


if __name__ == "__main__":
    main()
