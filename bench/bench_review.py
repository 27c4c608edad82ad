"""Bench of the review loop and of the app's pages.

1. Simulated review: a reviewer who answers from the held-out target labels reviews 10, then 30, then 100
   products (cumulative), chosen by the app's queue (:mod:`prodkg.app.queue`, recomputed from the
   latest model after each re-run, as a reviewer would see it each morning) or at random. After each
   batch the category head is refitted with :func:`prediction.heads.fit_task` on cached frozen features
   (no re-extraction), the reviewed target rows among its labelled data (as ``prodkg run`` does), and
   evaluated on the target products nobody reviewed: accuracy, and precision / coverage of what would
   be published under the predict stage's default rule (:func:`prediction.stage.publish_task`). Several
   seeds (head, random order, the queue's k-means); on grocery also an oracle bound that reads the labels.
2. Page times: the app over a published graph of the instacart catalog, each page requested N times
   in one process (after one warm-up request per page), p50 / p99.

    PRODKG_DATA_HOME=../shared/datasets .venv/bin/python bench/bench_review.py review [--epochs-office 30 --epochs-grocery 3 --seeds 0 1 2]
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
    return feats, d["y"][keep].astype(str), d["domain"][keep] == "amazon", d["domain"][keep] == "webcam", d["id"][keep].astype(str), \
        _unit(x, np.ones(len(x), bool)), []


def _grocery():
    from _features import data_home, grocery

    from prodkg.adaptation import MultiModal
    from prodkg.catalogs import load_dataset

    g = grocery()
    feats = MultiModal(blocks={"image": g["image"], "text": g["text"]}, present={"image": g["image_ok"], "text": g["text_ok"]})
    emb = np.concatenate([_unit(g["image"].astype(np.float32), g["image_ok"]), _unit(g["text"].astype(np.float32), g["text_ok"])], axis=1)
    taxonomy = list(load_dataset("grocery-store-dataset", data_home()).taxonomy)  # fine < intermediate < coarse, as a run reads it
    return feats, g["y"].astype(str), g["domain"] == "iconic", g["domain"] == "instore", g["id"].astype(str), emb, taxonomy


def _fit(feats, labels, is_source, is_target, ids, reviewed: dict[int, str], epochs: int, seed: int, taxonomy, baseline):
    """Refit the category head with ``reviewed`` and score it on the unreviewed target products.

    What would be published is decided by the predict stage's own rule (:func:`prediction.stage.publish_task`
    under the default :class:`PredictSettings`: ``min_precision`` 0.95 by the label-free estimate, agreement with
    the source-only baseline head, back-off along the taxonomy, unknown products withheld).
    """
    from prodkg.adaptation import TrainConfig
    from prodkg.prediction.heads import fit_task
    from prodkg.prediction.stage import PredictSettings, publish_task

    # target labels stay in `labels` for the evaluation only (fit_task never trains on them); reviewed rows are passed apart
    cfg = TrainConfig(method="dann", epochs=epochs, seed=seed)
    t0 = time.perf_counter()
    result = fit_task("category", feats, list(labels), is_source, is_target, list(ids), cfg, reviewed=reviewed)
    seconds = time.perf_counter() - t0
    preds = result.predictions.set_index("product_id")
    tgt = np.flatnonzero(is_target)
    rows = [i for i in tgt if i not in reviewed]
    correct = preds.loc[[ids[i] for i in rows], "value"].to_numpy() == labels[rows]
    eval_labels = [None if i in reviewed else str(lab) for i, lab in enumerate(labels)]  # reviewed rows were trained on
    _, record = publish_task(result, baseline, PredictSettings(), "category", "bench", eval_labels, is_source, is_target, feats, taxonomy)
    ev = record["evaluation"]
    fine = record["publication"]["levels"][0]  # decide() lists the levels deepest first
    return {
        "estimator": fine["estimator"],
        "estimated_accuracy": fine["estimated_accuracy"],
        "n_source_holdout": int(len(result.evidence["source_labels"])),
        "accuracy": float(correct.mean()),
        "precision": None if np.isnan(ev["precision"]) else float(ev["precision"]),
        "coverage": float(ev["coverage"]),
        "fine_coverage": float(ev["levels"][0]["coverage"]),
        "seconds": round(seconds, 1),
        "n_reviewed": len(reviewed),
    }, preds


def _queue_picks(target_ids, emb_target, models: dict, preds, reviewed_ids: set[str], n: int, seed: int) -> list[str]:
    """The app's queue (:meth:`app.data.AppData.queue`): clustered for the current review round, ordered from the latest predictions."""
    from prodkg.app.queue import fit_queue_model, n_clusters_for, review_order

    mask = np.array([pid in reviewed_ids for pid in target_ids])
    k = n_clusters_for(len(target_ids), int(mask.sum()))
    if k not in models:
        models[k] = fit_queue_model(target_ids, emb_target, n_clusters=k, seed=seed)
    conf = preds["confidence"].reindex(target_ids).to_numpy(float)
    order, _ = review_order(models[k], conf, mask, limit=n)
    return [target_ids[i] for i in order]


def _oracle_picks(labels_target: np.ndarray, emb_target: np.ndarray, n: int) -> list[int]:
    """A bound, not a strategy (it reads the target labels): the most typical product of each true class
    (TypiClust's typicality within the class), then the next most typical of the largest classes in turn."""
    from prodkg.app.queue import typicality

    classes, cls = np.unique(labels_target, return_inverse=True)
    typ = typicality(emb_target, cls)
    queues = [sorted(np.flatnonzero(cls == c), key=lambda i: -typ[i]) for c in range(len(classes))]
    sizes = np.array([len(q) for q in queues], float)
    taken = np.zeros(len(queues), int)
    picks: list[int] = []
    while len(picks) < n:
        c = int(np.argmax(np.where(taken < sizes, sizes / (1 + taken) ** 2, -1)))
        picks.append(int(queues[c][taken[c]]))
        taken[c] += 1
    return picks


def simulate(name: str, data, *, epochs: int, seeds: list[int], oracle: bool = False) -> list[dict]:
    from prodkg.adaptation import TrainConfig
    from prodkg.prediction.heads import fit_task

    feats, labels, is_source, is_target, ids, emb, taxonomy = data
    index = {pid: i for i, pid in enumerate(ids)}
    tgt = np.flatnonzero(is_target)
    target_ids = [ids[i] for i in tgt]
    rows = []
    for seed in seeds:
        # the predict stage's baseline head (source-only) never sees the reviews: fitted once per seed
        baseline = fit_task("category", feats, list(labels), is_source, is_target, list(ids), TrainConfig(method="source_only", epochs=epochs, seed=seed))
        base, preds0 = _fit(feats, labels, is_source, is_target, ids, {}, epochs, seed, taxonomy, baseline)
        rows.append({"dataset": name, "strategy": "no review", "seed": seed, **base})
        print(name, rows[-1], flush=True)
        rng = np.random.default_rng(seed)
        random_order = [target_ids[i] for i in rng.permutation(len(target_ids))]
        models: dict = {}
        strategies = ("queue", "random", "oracle (reads labels)") if oracle else ("queue", "random")
        for strategy in strategies:
            chosen: list[str] = []
            preds = preds0
            for budget in BUDGETS:
                if strategy == "queue":
                    chosen += _queue_picks(target_ids, emb[tgt], models, preds, set(chosen), budget - len(chosen), seed)
                elif strategy == "random":
                    chosen = random_order[:budget]
                elif budget == BUDGETS[-1]:
                    chosen = [target_ids[i] for i in _oracle_picks(labels[tgt], emb[tgt], budget)]
                else:
                    continue
                reviewed = {index[pid]: labels[index[pid]] for pid in chosen}  # the simulated reviewer's answers
                res, preds = _fit(feats, labels, is_source, is_target, ids, reviewed, epochs, seed, taxonomy, baseline)
                rows.append({"dataset": name, "strategy": strategy, "seed": seed, **res})
                print(name, rows[-1], flush=True)
    return rows


def _fmt(x, pct=True):
    return "–" if x is None else (f"{100 * x:.1f}" if pct else str(x))


def _mean(values):
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def review_section(rows: list[dict], args, seconds: float) -> str:
    seeds = sorted({r["seed"] for r in rows})
    seed_text = " ".join(str(s) for s in args.seeds)
    lines = [
        "## Review loop: queue-chosen vs random reviews",
        "",
        f"Command: `PRODKG_DATA_HOME=... PRODKG_BENCH_CACHE=... .venv/bin/python bench/bench_review.py review --epochs-office {args.epochs_office} "
        f"--epochs-grocery {args.epochs_grocery} --seeds {seed_text}"
        + (f" --office-seeds {' '.join(str(s) for s in args.office_seeds)}" if args.office_seeds else "") + "`  ",
        f"Machine: {machine()}, shared with other jobs. Date: {today()}. Wall time {seconds / 60:.1f} min.",
        "",
        "A simulated reviewer answers from the held-out target labels. Reviews are cumulative (10, then 30, then 100), "
        "chosen by the app's review queue (`app/queue.py`, clustered for the review round and ordered from the latest model's "
        "predictions after each re-run, as `AppData.queue` does) or at random. After each batch the "
        "category head (DANN, frozen cached features: EfficientNet-Lite0 images, MiniLM text on grocery) is refitted with the reviewed "
        "target rows among its labelled data, as `prodkg run` does, and evaluated on the target products nobody reviewed. "
        f"Seeds {', '.join(map(str, seeds))} (the seed of the head, of the random order and of the queue's k-means); "
        f"{args.epochs_office} epochs on office-caltech-10, {args.epochs_grocery} on grocery (CPU-bound: the grid is kept small). "
        "Published precision and coverage are those of the facts a run would publish under the predict stage's default rule "
        "(`prediction.stage.publish_task`: `min_precision` 0.95 by the label-free estimate, agreement with the source-only "
        "baseline head, back-off along the taxonomy — on grocery a fact may be published at the intermediate or coarse level —, "
        "unknown products withheld), over unreviewed target products; fine coverage counts the facts published at the fine level. "
        "Accuracy is the fine-class prediction's; the label-free estimate is the rule's own estimate of it (fine level), "
        "by the estimator it picked (see below). The oracle row reads the target labels (the most typical product of each true "
        "class first): a rough ceiling for any queue, not a strategy. Figures in %, means over the seeds; accuracy per seed in brackets.",
        "",
        "| dataset | strategy | reviewed | target accuracy (per seed) | label-free estimate | published precision | coverage | fine coverage | fit seconds |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["strategy"], r["n_reviewed"]), []).append(r)
    for (ds, strategy, n), rs in groups.items():
        per_seed = " / ".join(_fmt(r["accuracy"]) for r in rs)
        lines.append(f"| {ds} | {strategy} | {n} | {_fmt(_mean([r['accuracy'] for r in rs]))} ({per_seed}) | "
                     f"{_fmt(_mean([r.get('estimated_accuracy') for r in rs]))} | "
                     f"{_fmt(_mean([r['precision'] for r in rs]))} | {_fmt(_mean([r['coverage'] for r in rs]))} | "
                     f"{_fmt(_mean([r['fine_coverage'] for r in rs]))} | {_mean([r['seconds'] for r in rs]):.1f} |")
    lines.append("")
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        none = {r["seed"]: r["accuracy"] for r in rows if r["dataset"] == ds and r["strategy"] == "no review"}
        for budget in BUDGETS:
            for other in ("random", "oracle (reads labels)"):
                gq = {r["seed"]: 100 * (r["accuracy"] - none[r["seed"]]) for r in rows
                      if r["dataset"] == ds and r["strategy"] == "queue" and r["n_reviewed"] == budget}
                go = {r["seed"]: 100 * (r["accuracy"] - none[r["seed"]]) for r in rows
                      if r["dataset"] == ds and r["strategy"] == other and r["n_reviewed"] == budget}
                if not gq or not go:
                    continue
                mq, mo = np.mean(list(gq.values())), np.mean(list(go.values()))
                ratios = [gq[s] / go[s] for s in gq if s in go and go[s] > 0]
                ratio = f"{mq / mo:.2f}x the mean" if mo > 0 else "n/a"
                worst = f", worst seed {min(ratios):.2f}x" if ratios else ""
                per = ", ".join(f"seed {s}: {gq[s]:+.1f} vs {go.get(s, float('nan')):+.1f}" for s in gq)
                lines.append(f"- {ds}, {budget} reviews: queue {mq:+.1f} points over no review, {other} {mo:+.1f} ({ratio}{worst}; {per}).")
    lines += ["", *_estimators(rows), "", *_against_targets(rows)]
    return "\n".join(lines)


def _estimators(rows: list[dict]) -> list[str]:
    """Which label-free estimate drove the publication rule, and why coverage moves with the reviews."""
    out = []
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        rs = [r for r in rows if r["dataset"] == ds]
        used = sorted({r.get("estimator") for r in rs if r.get("estimator")})
        holdout = sorted({r.get("n_source_holdout") for r in rs if r.get("n_source_holdout") is not None})
        line = f"- {ds}: the rule's estimator was {', '.join(used) or 'unknown'} (source hold-out of {', '.join(map(str, holdout))} rows)."
        if used == ["agreement"]:
            line += (" With no source hold-out (one labelled product per class) no estimate has a labelled row behind it, and "
                     "the default rule publishes nothing (`prediction.publication.decide`: it abstains and says why). Before "
                     "that guard the rule trusted the agreement with the source-only baseline head and published, with no "
                     "review, coarse facts 59 % right (3 epochs); a baseline that also learns from the reviews was tried "
                     "(3 seeds, 100 queue reviews): coverage about 54 % at 83 % precision, the estimate reading 80 % for a "
                     "60 % head, because both heads share what the reviews taught them. A held-out share of the reviews as "
                     "a target calibration set is the way to try next.")
        out.append(line)
    return out


def _against_targets(rows: list[dict]) -> list[str]:
    """The done criteria: grocery, 100 queue reviews gain >= 10 points and >= 2x what 100 random ones gain;
    office-caltech-10, 30 queue reviews reach >= 99 % target accuracy."""
    out = ["Against the targets:"]

    def pick(ds_prefix, strategy, n):
        return {r["seed"]: r["accuracy"] for r in rows if r["dataset"].startswith(ds_prefix) and r["strategy"] == strategy and r["n_reviewed"] == n}

    none, q, rd, orc = (pick("grocery", "no review", 0), pick("grocery", "queue", 100), pick("grocery", "random", 100),
                        pick("grocery", "oracle (reads labels)", 100))
    if none and q and rd:
        gq = np.mean([100 * (q[s] - none[s]) for s in q])
        gr = np.mean([100 * (rd[s] - none[s]) for s in rd])
        met = "met" if gq >= 10 else "**not met**"
        twice = "met" if gq >= 2 * gr else "**not met**"
        out.append(f"- grocery in-store, 100 reviews: the queue gains {gq:.1f} points over no review (>= 10: {met}) against "
                   f"{gr:.1f} for random reviews, {gq / gr:.2f}x (2x: {twice}), means over seeds {', '.join(map(str, sorted(q)))}.")
        if orc:
            go = np.mean([100 * (orc[s] - none[s]) for s in orc])
            out.append(f"- The oracle bound, which picks with the target labels, gains {go:.1f} points ({go / gr:.2f}x random): "
                       "a rough ceiling (not a proof) for what choosing the products can give with these features, this head and this label propagation.")
    oq = pick("office", "queue", 30)
    if oq:
        worst = min(oq.values())
        met = "met" if worst >= 0.99 else "**not met**"
        out.append(f"- office-caltech-10 amazon→webcam, 30 queue reviews: target accuracy {100 * np.mean(list(oq.values())):.1f} % "
                   f"on average, {100 * worst:.1f} % on the worst seed (>= 99 %: {met}).")
    return out


def cmd_review(args) -> None:
    started = time.perf_counter()
    rows = []
    if not args.skip_office:
        rows += simulate("office-caltech-10 amazon→webcam", _office(), epochs=args.epochs_office, seeds=args.office_seeds or args.seeds)
    if not args.skip_grocery:
        rows += simulate("grocery-store iconic→in-store (fine)", _grocery(), epochs=args.epochs_grocery, seeds=args.seeds,
                         oracle=not args.no_oracle)
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
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    r.add_argument("--office-seeds", type=int, nargs="+", default=None, help="seeds of office-caltech-10 (default: --seeds)")
    r.add_argument("--no-oracle", action="store_true", help="skip the oracle bound on grocery")
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
