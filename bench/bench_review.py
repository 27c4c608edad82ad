"""Bench of the review loop and of the app's pages.

1. Simulated review: a reviewer who answers from the held-out target labels reviews 10, then 30, then 100
   products (cumulative), chosen by the app's queue (:mod:`prodkg.app.queue`, recomputed from the
   latest model after each re-run, as a reviewer would see it each morning) or at random. After each
   batch the category head is refitted with :func:`prediction.heads.fit_task` on cached frozen features
   (no re-extraction), the reviewed target rows among its labelled data (as ``prodkg run`` does), and
   evaluated on the target products nobody reviewed: accuracy, and precision / coverage of what would
   be published (confidence >= threshold).
2. Page times: the app over a published graph of the instacart catalog, each page requested N times
   in one process (after one warm-up request per page), p50 / p99.

    PRODKG_DATA_HOME=/work/shared/datasets .venv/bin/python bench/bench_review.py review [--epochs-office 30 --epochs-grocery 3]
    .venv/bin/python bench/bench_review.py pages --out runs/instacart
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, today, write_section  # noqa: E402

BUDGETS = (10, 30, 100)


def _unit(block: np.ndarray, present: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(block, axis=1, keepdims=True)
    out = np.divide(block, norms, out=np.zeros_like(block), where=norms > 0)
    return out * present[:, None]


def _office():
    from _features import office_caltech

    from prodkg.adaptation import MultiModal

    d = office_caltech()
    keep = np.isin(d["domain"], ["amazon", "webcam"])
    x = d["X"][keep].astype(np.float32)
    feats = MultiModal(blocks={"image": x}, present={"image": np.ones(len(x), bool)})
    return feats, d["y"][keep].astype(str), d["domain"][keep] == "amazon", d["domain"][keep] == "webcam", d["id"][keep].astype(str), _unit(x, np.ones(len(x), bool))


def _grocery():
    from _features import grocery

    from prodkg.adaptation import MultiModal

    g = grocery()
    feats = MultiModal(blocks={"image": g["image"], "text": g["text"]}, present={"image": g["image_ok"], "text": g["text_ok"]})
    emb = np.concatenate([_unit(g["image"].astype(np.float32), g["image_ok"]), _unit(g["text"].astype(np.float32), g["text_ok"])], axis=1)
    return feats, g["y"].astype(str), g["domain"] == "iconic", g["domain"] == "instore", g["id"].astype(str), emb


def _fit(feats, labels, is_source, is_target, ids, reviewed: dict[int, str], epochs: int, seed: int, threshold: float):
    from prodkg.adaptation import TrainConfig
    from prodkg.prediction.heads import fit_task

    # target labels stay in `labels` for the evaluation only (fit_task never trains on them); reviewed rows are passed apart
    cfg = TrainConfig(method="dann", epochs=epochs, seed=seed)
    t0 = time.perf_counter()
    result = fit_task("category", feats, list(labels), is_source, is_target, list(ids), cfg, reviewed=reviewed)
    seconds = time.perf_counter() - t0
    preds = result.predictions.set_index("product_id")
    tgt = np.flatnonzero(is_target)
    rows = [i for i in tgt if i not in reviewed]
    pred = preds.loc[[ids[i] for i in rows]]
    truth = labels[rows]
    correct = pred["value"].to_numpy() == truth
    published = pred["confidence"].to_numpy() >= threshold
    return {
        "accuracy": float(correct.mean()),
        "metric_accuracy": result.metrics.get("target_accuracy"),
        "precision": float(correct[published].mean()) if published.any() else None,
        "coverage": float(published.mean()),
        "seconds": round(seconds, 1),
        "n_reviewed": len(reviewed),
    }, preds


def _queue_picks(model, preds, target_ids, reviewed_ids: set[str], n: int) -> list[str]:
    from prodkg.app.queue import review_order

    conf = preds["confidence"].reindex(target_ids).to_numpy(float)
    mask = np.array([pid in reviewed_ids for pid in target_ids])
    order, _ = review_order(model, conf, mask, limit=n)
    return [target_ids[i] for i in order]


def simulate(name: str, data, *, epochs: int, seed: int = 0, threshold: float = 0.5) -> list[dict]:
    from prodkg.app.queue import fit_queue_model

    feats, labels, is_source, is_target, ids, emb = data
    index = {pid: i for i, pid in enumerate(ids)}
    tgt = np.flatnonzero(is_target)
    target_ids = [ids[i] for i in tgt]
    qmodel = fit_queue_model(target_ids, emb[tgt], seed=seed)
    rows = []
    base, preds0 = _fit(feats, labels, is_source, is_target, ids, {}, epochs, seed, threshold)
    rows.append({"dataset": name, "strategy": "no review", **base})
    print(name, rows[-1], flush=True)
    rng = np.random.default_rng(seed)
    random_order = [target_ids[i] for i in rng.permutation(len(target_ids))]
    for strategy in ("queue", "random"):
        chosen: list[str] = []
        preds = preds0
        for budget in BUDGETS:
            if strategy == "queue":
                chosen += _queue_picks(qmodel, preds, target_ids, set(chosen), budget - len(chosen))
            else:
                chosen = random_order[:budget]
            reviewed = {index[pid]: labels[index[pid]] for pid in chosen}  # the simulated reviewer's answers
            res, preds = _fit(feats, labels, is_source, is_target, ids, reviewed, epochs, seed, threshold)
            rows.append({"dataset": name, "strategy": strategy, **res})
            print(name, rows[-1], flush=True)
    return rows


def _fmt(x, pct=True):
    return "–" if x is None else (f"{100 * x:.1f}" if pct else str(x))


def review_section(rows: list[dict], args, seconds: float) -> str:
    lines = [
        "## Review loop: queue-chosen vs random reviews",
        "",
        f"Command: `PRODKG_DATA_HOME=... .venv/bin/python bench/bench_review.py review --epochs-office {args.epochs_office} "
        f"--epochs-grocery {args.epochs_grocery} --seed {args.seed}`  ",
        f"Machine: {machine()}, shared with other jobs. Date: {today()}. Wall time {seconds / 60:.1f} min.",
        "",
        "A simulated reviewer answers from the held-out target labels. Reviews are cumulative (10, then 30, then 100), "
        "chosen by the app's review queue (recomputed from the latest model after each re-run) or at random. After each batch the "
        "category head (DANN, frozen cached features: EfficientNet-Lite0 images, MiniLM text on grocery) is refitted with the reviewed "
        "target rows among its labelled data, as `prodkg run` does, and evaluated on the target products nobody reviewed. "
        f"One seed ({args.seed}); {args.epochs_office} epochs on office-caltech-10, {args.epochs_grocery} on grocery "
        "(CPU-bound: the grid is kept small). Precision and coverage are those of the facts a run would publish "
        "(confidence >= 0.5), over unreviewed target products. Figures in %.",
        "",
        "| dataset | strategy | reviewed | target accuracy | published precision | coverage | fit seconds |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['strategy']} | {r['n_reviewed']} | {_fmt(r['accuracy'])} | {_fmt(r['precision'])} | "
                     f"{_fmt(r['coverage'])} | {r['seconds']} |")
    lines.append("")
    for ds in sorted({r["dataset"] for r in rows}):
        none = next(r for r in rows if r["dataset"] == ds and r["strategy"] == "no review")["accuracy"]
        for budget in BUDGETS:
            q = next((r for r in rows if r["dataset"] == ds and r["strategy"] == "queue" and r["n_reviewed"] == budget), None)
            rd = next((r for r in rows if r["dataset"] == ds and r["strategy"] == "random" and r["n_reviewed"] == budget), None)
            if q and rd:
                gq, gr = 100 * (q["accuracy"] - none), 100 * (rd["accuracy"] - none)
                ratio = f"{gq / gr:.1f}x" if gr > 0 else "n/a (random gained nothing)"
                lines.append(f"- {ds}, {budget} reviews: queue {gq:+.1f} points, random {gr:+.1f} points over no review ({ratio}).")
    return "\n".join(lines)


def cmd_review(args) -> None:
    started = time.perf_counter()
    rows = []
    if not args.skip_office:
        rows += simulate("office-caltech-10 amazon→webcam", _office(), epochs=args.epochs_office, seed=args.seed)
    if not args.skip_grocery:
        rows += simulate("grocery-store iconic→in-store (fine)", _grocery(), epochs=args.epochs_grocery, seed=args.seed)
    seconds = time.perf_counter() - started
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(rows, indent=1))
    if args.write:
        write_section("review-loop", review_section(rows, args, seconds))


def cmd_pages(args) -> None:
    from urllib.parse import quote

    from starlette.testclient import TestClient

    from prodkg.app.security import Auth
    from prodkg.app.server import create_app
    from prodkg.kb.store import KnowledgeGraph
    from prodkg.layout import RunLayout

    out = Path(args.out)
    with KnowledgeGraph(RunLayout(out).kg).open() as store:
        n_quads = len(store)
    app = create_app(out, auth=Auth(tokens={"x" * 32: None}), warm=False, allowed_hosts=("testserver",))
    t0 = time.perf_counter()
    app.state.data.warm()
    warm_s = time.perf_counter() - t0
    data = app.state.data
    snap = data.snapshot()
    queue = data.queue(limit=5)
    pid = queue[0]["product_id"] if queue else next(iter(snap.products))
    tax = snap.taxonomy
    big = max(tax["nodes"].values(), key=lambda n: n["asserted"] + n["predicted"])
    pages = {
        "home": "/", "browse": "/browse", "search": "/search?q=chocolate", "product": f"/product?id={quote(pid, safe='')}",
        "category": f"/category?c={quote(big['key'], safe='')}", "run": "/run", "review": "/review", "thumbnail miss": f"/thumb?id={quote(pid, safe='')}",
    }
    c = TestClient(app)
    rows = []
    for name, path in pages.items():
        r = c.get(path)
        assert r.status_code in (200, 404), (path, r.status_code)
        times = []
        for _ in range(args.n):
            t = time.perf_counter()
            c.get(path)
            times.append(1000 * (time.perf_counter() - t))
        times.sort()
        rows.append({"page": name, "p50": float(np.percentile(times, 50)), "p99": float(np.percentile(times, 99)), "max": times[-1]})
        print(rows[-1], flush=True)
    if args.write:
        lines = [
            "## App pages on the instacart graph",
            "",
            f"Command: `.venv/bin/python bench/bench_review.py pages --out {args.out} --n {args.n}`  ",
            f"Machine: {machine()}, shared with other jobs. Date: {today()}.",
            "",
            f"Graph: {n_quads} quads, {len(snap.products)} products, {len(tax['nodes'])} concepts. One process, requests in sequence "
            f"through Starlette's test client (no network), {args.n} requests per page after one warm-up request; the per-store caches "
            f"(product index, taxonomy with counts, category members, review-queue clustering) were built first, in {warm_s:.1f} s "
            "(the app builds them in a background thread at start, and for a newly published run while it keeps answering from the previous store).",
            "",
            "| page | p50 ms | p99 ms | max ms |",
            "|---|---:|---:|---:|",
        ]
        lines += [f"| {r['page']} | {r['p50']:.1f} | {r['p99']:.1f} | {r['max']:.1f} |" for r in rows]
        write_section("app-pages", "\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("review")
    r.add_argument("--epochs-office", type=int, default=30)
    r.add_argument("--epochs-grocery", type=int, default=3)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--skip-office", action="store_true")
    r.add_argument("--skip-grocery", action="store_true")
    r.add_argument("--json", default="runs/bench-review.json")
    r.add_argument("--no-write", dest="write", action="store_false")
    r.set_defaults(func=cmd_review)
    g = sub.add_parser("pages")
    g.add_argument("--out", required=True)
    g.add_argument("--n", type=int, default=200)
    g.add_argument("--no-write", dest="write", action="store_false")
    g.set_defaults(func=cmd_pages)
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    args.func(args)


if __name__ == "__main__":
    main()
