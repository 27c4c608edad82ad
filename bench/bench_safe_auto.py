"""Benchmark of ``method="auto"`` against source-only: is it ever worse than not adapting?

Run from the repository root (features come from the cache of bench/_features.py)::

    PRODKG_DATA_HOME=/path/to/datasets python bench/bench_safe_auto.py --suite office --seeds 1 --epochs 20
    python bench/bench_safe_auto.py --suite partial --seeds 1 --epochs 20
    python bench/bench_safe_auto.py --report-only   # rewrite docs/BENCHMARKS.md from bench/results/safe_auto_*.json

For each task and seed, ``adaptation.selection.auto_train`` runs end to end with its defaults
(safety signals, guarded centroid refinement), and hands back every candidate it trained, so one
run measures source-only, every candidate method and ``auto`` on the same source hold-out.
Source-only here is the ``source_only`` candidate: trained on the same 90% of the source as the
others; it is what ``auto`` falls back to.

Suites:
    office: office-caltech-10, all 12 ordered domain pairs, 10 classes.
    partial: office-caltech-10 with every target restricted to the classes in
        :data:`PARTIAL_CLASSES` (the first five class names in alphabetical order); the source
        keeps all 10. The grid is the default one plus ``pada``.
    instacart: the ``instacart-brand-shift`` dataset (catalog -> new-brands, brands never shared),
        frozen MiniLM title features, two tasks: aisle and department. A fixed sample of
        :data:`INSTACART_SOURCE` catalog and :data:`INSTACART_TARGET` new-brand products.
    grocery: grocery-store-dataset, the 81 iconic products (Lite0 image + MiniLM description) ->
        the in-store photos (image only), fine and coarse labels.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from itertools import permutations
from multiprocessing import get_context
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from _common import DOMAINS, SHORT, machine, today, write_section

RESULTS = ROOT / "bench" / "results" / "safe_auto.json"  # safe_auto_<suite>.json, one per suite
PREDS = ROOT / "bench" / "results" / "safe_auto_preds"
#: target classes of the partial suite: fixed, the first five office-caltech-10 class names alphabetically
PARTIAL_CLASSES = ("backpack", "bike", "calculator", "headphones", "keyboard")
#: rows of the instacart brand shift: a fixed random sample of the catalog and of the new brands (CPU budget)
INSTACART_SOURCE, INSTACART_TARGET = 4000, 2000


def _grid(suite: str) -> tuple:
    from prodkg.adaptation import selection

    return selection.PARTIAL_CANDIDATES if suite == "partial" else selection.DEFAULT_CANDIDATES


def _auto_run(source, y_source: np.ndarray, target, yt: np.ndarray, n_classes: int, grid, seed: int, epochs: int) -> tuple[list, dict]:
    """One `auto` run over ``grid``: its candidates' models, and what every suite records of it (its accuracy,
    each candidate's, and why it chose)."""
    from prodkg.adaptation import TrainConfig
    from prodkg.adaptation.selection import auto_train, candidate_label

    models: list = []
    t0 = time.perf_counter()
    # the full schedule: every candidate trains to the end, so the table shows each one as a method of its own
    winner = auto_train(source, y_source, target, n_classes,
                        TrainConfig(method="auto", seed=seed, epochs=epochs, auto_schedule="full"),
                        candidates=grid, candidates_out=models)
    secs = time.perf_counter() - t0
    sel = winner.selection
    accs = {candidate_label(m, o): float((model.predict(target) == yt).mean() * 100) for (m, o), model in zip(grid, models)}
    return models, {"auto": float((winner.predict(target) == yt).mean() * 100), "candidates": accs,
                    "selector_choice": sel["selector_choice"], "chosen": sel["chosen"], "safety": sel["safety"],
                    "refinement": sel["refinement"], "seconds": secs,
                    "scores": {c["candidate"]: {**c["scores"], "consensus": c["consensus"]} for c in sel["candidates"]}}


def office_task(src: str, tgt: str, partial: bool = False):
    """office-caltech-10 ``src`` -> ``tgt`` (the target restricted to :data:`PARTIAL_CLASSES` when ``partial``):
    source, source labels, target, target labels, number of classes."""
    from _features import office_caltech

    from prodkg.adaptation import MultiModal

    d = office_caltech()
    classes = sorted(set(d["y"].tolist()))
    y = np.array([classes.index(c) for c in d["y"]])
    s_idx = np.flatnonzero(d["domain"] == src)
    t_mask = d["domain"] == tgt
    if partial:
        assert set(PARTIAL_CLASSES) <= set(classes), f"{PARTIAL_CLASSES} are not all office-caltech-10 classes"
        t_mask &= np.isin(d["y"], PARTIAL_CLASSES)
    t_idx = np.flatnonzero(t_mask)
    source, target = MultiModal.complete(image=d["X"][s_idx]), MultiModal.complete(image=d["X"][t_idx])
    return source, y[s_idx], target, y[t_idx], len(classes)


def _office_job(args: tuple) -> dict:
    suite, src, tgt, seed, epochs = args
    import torch

    torch.set_num_threads(1)
    from prodkg.adaptation import MultiModal
    from prodkg.adaptation.selection import candidate_label

    source, y_s, target, yt, n_classes = office_task(src, tgt, partial=suite == "partial")
    grid = _grid(suite)
    models, outcome = _auto_run(source, y_s, target, yt, n_classes, grid, seed, epochs)
    # every candidate's target labels, unrefined and centroid-refined, to study other rules without retraining
    from prodkg.adaptation.refine import centred_inputs, centroid_refine

    both = MultiModal.concat([source, target])
    means = {m: both.blocks[m].astype(np.float64).mean(0) for m in both.modalities}
    z = centred_inputs(target, means)
    prior = np.bincount(y_s, minlength=n_classes) / len(y_s)
    preds = {}
    for (m, o), model in zip(grid, models):
        p = model.predict_proba(target)
        preds[candidate_label(m, o)] = p.argmax(1)
        preds["refined:" + candidate_label(m, o)] = centroid_refine(z, p, source_prior=prior)[1]
    PREDS.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(PREDS / f"{suite}_{SHORT[src]}{SHORT[tgt]}_{seed}.npz", y=yt, **preds)
    return {"suite": suite, "task": f"{SHORT[src]}->{SHORT[tgt]}", "seed": seed, "epochs": epochs,
            **outcome}


def instacart_task(label: str):
    """The brand shift of instacart-products, ``label`` aisle or department: source, source labels, target,
    target labels, number of classes (a fixed sample, the same for every seed and method)."""
    from _features import data_home, instacart

    from prodkg.adaptation import MultiModal
    from prodkg.catalogs import load_dataset

    d = instacart()
    src = load_dataset("instacart-brand-shift", data_home())
    frame = src.frame.set_index("product_id").loc[d["id"]]
    parent = {child: par for child, par, _ in src.taxonomy if par}
    names = frame["category"].to_numpy(str)
    if label == "department":
        names = np.array([parent.get(a, "").removeprefix("department:") if a else "" for a in names])
    ok = d["ok"] & (names != "")
    domain = frame["domain"].to_numpy(str)
    rng = np.random.default_rng(0)  # fixed subsample, the same for every seed and method
    s_all, t_all = np.flatnonzero(ok & (domain == "catalog")), np.flatnonzero(ok & (domain == "new-brands"))
    s_idx = np.sort(rng.choice(s_all, size=min(INSTACART_SOURCE, len(s_all)), replace=False))
    t_idx = np.sort(rng.choice(t_all, size=min(INSTACART_TARGET, len(t_all)), replace=False))
    classes = sorted(set(names[s_idx].tolist()))
    y = np.array([classes.index(c) if c in classes else -1 for c in names])
    t_idx = t_idx[y[t_idx] >= 0]  # an aisle the sampled catalog never shows cannot be predicted
    source, target = MultiModal.complete(text=d["X"][s_idx]), MultiModal.complete(text=d["X"][t_idx])
    return source, y[s_idx], target, y[t_idx], len(classes)


def _instacart_job(args: tuple) -> dict:
    """The brand shift of instacart-products: frozen MiniLM title features, aisle or department labels."""
    suite, label, seed, epochs = args
    import torch

    torch.set_num_threads(1)
    source, y_s, target, yt, n_classes = instacart_task(label)
    _, outcome = _auto_run(source, y_s, target, yt, n_classes, _grid(suite), seed, epochs)
    return {"suite": suite, "task": label, "seed": seed, "epochs": epochs, "n_source": len(y_s),
            "n_target": len(yt), "n_classes": n_classes,
            **outcome}


def _grocery_job(args: tuple) -> dict:
    """grocery-store-dataset: one iconic photo + description per product -> in-store photos (image only)."""
    suite, label, seed, epochs = args
    import torch

    torch.set_num_threads(1)
    from bench_adaptation import grocery_task

    x, y, s_idx, t_idx, n_classes = grocery_task(label)  # the adaptation bench's split: image + MiniLM text
    source, target = x.subset(s_idx), x.subset(t_idx)
    models, outcome = _auto_run(source, y[s_idx], target, y[t_idx], n_classes, _grid(suite), seed, epochs)
    return {"suite": suite, "task": label, "seed": seed, "epochs": epochs, "n_source": len(s_idx),
            "n_target": len(t_idx), "n_classes": n_classes,
            **outcome}


def _job(args: tuple) -> dict:
    return {"instacart": _instacart_job, "grocery": _grocery_job}.get(args[0], _office_job)(args)


def run(args: argparse.Namespace) -> None:
    from _features import grocery, instacart, office_caltech

    {"instacart": instacart, "grocery": grocery}.get(args.suite, office_caltech)()
    jobs = [(args.suite, s, t, seed, args.epochs) for seed in range(args.seeds) for s, t in permutations(DOMAINS, 2)]
    if args.suite == "instacart":
        jobs = [(args.suite, label, seed, args.epochs) for seed in range(args.seeds) for label in ("department", "aisle")]
    elif args.suite == "grocery":
        jobs = [(args.suite, label, seed, args.epochs) for seed in range(args.seeds) for label in ("fine", "coarse")]
    elif args.tasks:
        wanted = set(args.tasks.split(","))
        jobs = [j for j in jobs if f"{SHORT[j[1]]}-{SHORT[j[2]]}" in wanted]
    results = RESULTS.with_name(f"safe_auto_{args.suite}.json")  # one file per suite: suites may run at once
    result = {"runs": {}}
    key = args.suite
    result["runs"][key] = {"command": " ".join(["python", "bench/bench_safe_auto.py", *sys.argv[1:]]),
                           "date": today(), "machine": machine(), "records": []}
    started = time.perf_counter()
    with get_context("spawn").Pool(args.workers) as pool:
        for rec in pool.imap_unordered(_job, jobs):
            so = rec["candidates"]["source_only"]
            print(f"{rec['suite']} {rec['task']} seed {rec['seed']}: auto {rec['auto']:.1f} (chose {rec['chosen']}, "
                  f"selector {rec['selector_choice']}) source-only {so:.1f}; {rec['seconds']:.0f} s", flush=True)
            result["runs"][key]["records"].append(rec)
            results.parent.mkdir(parents=True, exist_ok=True)
            results.write_text(json.dumps(result, indent=1))
    result["runs"][key]["wall_seconds"] = round(time.perf_counter() - started)
    results.write_text(json.dumps(result, indent=1))


def _recompute(rec: dict, key: str) -> tuple[float, float, str]:
    """``auto`` under the current library's rules, from a record's saved scores and target predictions:
    (accuracy with refinement, accuracy of the adopted candidate alone, adopted candidate)."""
    from prodkg.adaptation.selection import DEFAULT_SELECTOR, refinement_verdict, safe_choice

    cands = list(rec["candidates"])
    methods = [c.split("(")[0] for c in cands]
    scores = [rec["scores"][c] for c in cands]
    agreement = np.array([rec["scores"][c]["consensus"] for c in cands])
    selector = DEFAULT_SELECTOR if DEFAULT_SELECTOR in scores[0] else "snd"
    index, _ = safe_choice(methods, scores, agreement, selector)
    chosen = cands[index]
    task = rec["task"].replace("->", "")
    preds = np.load(PREDS / f"{key}_{task}_{rec['seed']}.npz")
    y = preds["y"]
    before, after = preds[chosen], preds["refined:" + chosen]
    final = after if refinement_verdict(before, after)["kept"] else before
    return float((final == y).mean() * 100), float((before == y).mean() * 100), chosen


def _table(run: dict, key: str = "") -> str:
    recs = run["records"]
    ordered = {"instacart": ["department", "aisle"], "grocery": ["fine", "coarse"]}
    tasks = [t for t in ordered[key] if any(r["task"] == t for r in recs)] if key in ordered else sorted({r["task"] for r in recs})
    seeds = sorted({r["seed"] for r in recs})
    cands = list(recs[0]["candidates"])

    def per_task(fn) -> dict[str, float]:
        return {t: float(np.mean([fn(r) for r in recs if r["task"] == t])) for t in tasks}

    rows = [(c, per_task(lambda r, c=c: r["candidates"][c])) for c in cands]
    rows.append(("selector's pick alone (no safety check, no refinement)",
                 per_task(lambda r: r["candidates"][r["selector_choice"]])))
    rows.append(("auto as run (the code at the time of the run, see below)", per_task(lambda r: r["auto"])))
    recomputable = all((PREDS / f"{key}_{r['task'].replace('->', '')}_{r['seed']}.npz").is_file() for r in recs)
    if recomputable:
        rows.append(("auto, adopted candidate alone (current safety rule, no refinement)",
                     per_task(lambda r: _recompute(r, key)[1])))
        rows.append(("**auto** (current rules: DEV + SND + consensus safety check, refinement kept up to 15% relabelled)",
                     per_task(lambda r: _recompute(r, key)[0])))
    so = rows[0][1]
    lines = ["| | " + " | ".join(tasks) + " | mean | worst task vs source-only |",
             "|---" * (len(tasks) + 3) + "|"]
    for name, vals in rows:
        mean = np.mean(list(vals.values()))
        worst = min(vals[t] - so[t] for t in tasks)
        lines.append(f"| {name} | " + " | ".join(f"{vals[t]:.1f}" for t in tasks) + f" | {mean:.1f} | {worst:+.1f} |")
    chosen = {}
    for r in recs:
        chosen[r["chosen"]] = chosen.get(r["chosen"], 0) + 1
    overruled = sum(1 for r in recs if r["safety"] and r["safety"]["overruled"])
    kept = sum(1 for r in recs if r["refinement"] and r["refinement"]["kept"])
    secs = [r["seconds"] for r in recs]
    lines.append("")
    lines.append(f"Seeds: {len(seeds)}; {run['records'][0]['epochs']} epochs. `auto` adopted: "
                 + ", ".join(f"{k} ×{v}" for k, v in sorted(chosen.items(), key=lambda kv: -kv[1]))
                 + f". The safety signals overruled the selector in {overruled} of {len(recs)} runs; centroid "
                   f"refinement was kept in {kept} of {len(recs)}. One `auto` run: {np.mean(secs):.0f} s on average, "
                   f"{max(secs):.0f} s at most (all candidates, 1 torch thread).")
    return "\n".join(lines)


NOTES = """### How to read these runs

- These runs (2026-11-30) refined by two k-means steps; refinement now runs until no label changes, which on
  office-caltech-10 at 100 epochs raised `auto` from 96.9 to 97.1 (section "auto-cost-halving").
- *auto as run* is what the library did while the bench ran; every suite shown ran with the final code. *auto
  (current rules)* re-applies the library's `safe_choice` and `refinement_verdict` to the candidates the run
  saved (`bench/results/safe_auto_preds/`), a check that the record and the rules agree (the refined labels
  there use the feature means of the whole source instead of the 90% `auto` trains on). An earlier office run
  (same command, before the last two rule changes) had refinement vetoed by agreement with the candidates'
  vote on 11 of 12 tasks and reached 94.5; with the same models and the final rules it gave the same 97.1 / -0.6
  as the run shown.
- The safety rule and the refinement threshold were chosen on the office-caltech-10 suite, so its numbers
  flatter them; the partial and instacart suites were not used to choose anything.
- One seed and 10 epochs (the CPU is shared by five people): not 3 seeds. Differences of one or two
  products per task are within seed noise on the small DSLR and webcam targets.
- Instacart brand shift: the suite saves no per-candidate predictions, so only *auto as run* is shown; it ran
  with the final code. The safety check kept source-only on both tasks; on aisle that forwent the selector's
  pick (RTN, lr 3e-3: +2.1), on department it avoided a loss (RTN, trade-off 0.3: -0.4). Refinement would
  have relabelled 47-50% of the products and was discarded. No text-encoder fine-tuning was measured.
- grocery-store-dataset (3 epochs, as in the earlier adaptation bench; not enough to converge, not measured
  further): `auto` kept source-only on both label sets, 6.2% fine and 32.5% coarse, while every adapted
  candidate but RTN beats it (DAN: 30.7% fine, 49.4% coarse). On the fine labels no source product can be
  held out, so SND alone chose and preferred source-only; on the coarse labels DEV preferred DANN (trade-off
  1.0, 38.4%) and SND vetoed it. Here the label-free signals fail the other way: safe, but
  far from the issue's 35% / 60%. Refinement would have relabelled 75-99% of the in-store photos.
- These runs use EfficientNet-Lite0 features. Lite1 and Lite2 are measured in the `encoders` section (Lite0
  stays the default; Lite2 helps grocery coarse labels, +6.8 with DANN) but `auto` was not run on them. Not
  done: shelf-photo augmentation or target self-training for grocery; text-encoder fine-tuning.
- PADA alone (frozen Lite0 features, 10 epochs) does not beat source-only on the partial targets (91.7 against
  92.7). What helps there is refinement that estimates the target's class shares by EM and gives absent
  classes no centroid (`adaptation.refine.centroid_refine(source_prior=...)`); before that change the same
  refinement lowered source-only from 96.4 to 89.3 on C->D.
"""


def report() -> None:
    result = {"runs": {}}
    for path in sorted(RESULTS.parent.glob("safe_auto*.json")):
        for key, run in json.loads(path.read_text())["runs"].items():
            if path.stem == f"safe_auto_{key}" or key not in result["runs"]:
                result["runs"][key] = run
    titles = {"office": "office-caltech-10 (12 tasks)",
              "grocery": "grocery-store-dataset: one iconic photo + description per product → in-store photos",
              "instacart": "instacart brand shift (catalog → new-brands, frozen MiniLM title features)",
              "partial": "partial office-caltech-10 (targets restricted to 5 classes: " + ", ".join(PARTIAL_CLASSES) + ")"}
    parts = ["## Safe `auto`: never worse than not adapting", "",
             ("Written by `bench/bench_safe_auto.py`. Target accuracy in %, mean over seeds. Source-only is the "
              "`source_only` candidate of the same `auto` run (trained on the same 90% of the source as every other "
              "candidate; the fallback). *Worst task vs source-only*: the lowest per-task difference to source-only.")]
    for key, run in result["runs"].items():
        if not run.get("records"):
            continue
        parts += ["", f"### {titles.get(key, key)}", "",
                  (f"Command: `PRODKG_DATA_HOME=... nice -n 10 {run['command']}` · date {run['date']} · machine: "
                   f"{run['machine']} · wall time {run.get('wall_seconds', '?')} s on a CPU shared with other jobs."), "",
                  _table(run, key)]
    parts += ["", NOTES]
    write_section("safe-auto", "\n".join(parts))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", choices=["office", "partial", "instacart", "grocery"], default="office")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--tasks", help="comma-separated tasks such as A-W,D-A (default: all 12)")
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args()
    if not args.report_only:
        run(args)
    report()


if __name__ == "__main__":
    main()
