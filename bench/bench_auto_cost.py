"""What ``method="auto"`` costs against one adaptation method, under each budget schedule, and what it gives.

Run from the repository root (features come from the cache of bench/_features.py)::

    PRODKG_DATA_HOME=/path/to/datasets python bench/bench_auto_cost.py --suite office --seeds 3 --epochs 10
    python bench/bench_auto_cost.py --suite instacart --seeds 1 --epochs 10   # also: --suite grocery
    python bench/bench_auto_cost.py --suite office --seeds 1 --epochs 100 --tasks A-W,C-A,D-W   # the demo's epochs
    python bench/bench_auto_cost.py --suite office --seeds 3 --epochs 100 --schedules halving   # the default alone
    python bench/bench_auto_cost.py --suite partial --seeds 3 --epochs 100 --schedules halving  # partial catalogs
    python bench/bench_auto_cost.py --report-only   # rewrite docs/BENCHMARKS.md from bench/results/auto_cost_*.json

For each task and seed, one process trains, one after the other and each timed on its own:
``dann`` alone on the whole source (what ``--method dann`` trains), then ``auto`` with the
``halving`` schedule and ``auto`` with the ``full`` schedule (``adaptation.selection.auto_train``
end to end: hold-out, candidates, scoring, safety check, refinement). Cost is wall time, as a
multiple of that task's DANN run. Source-only is the ``source_only`` candidate (the same
network under both schedules: it always trains in full). Target labels are used only to score.

``--schedules halving`` leaves out the ``full`` schedule (about 3.5 times the cost of ``halving`` at
100 epochs); such a run is kept in its own results file and written to its own section
(``auto-cost-halving``), so it never replaces the table that compares the two schedules.

The halving runs also save every candidate's target predictions as far as it trained and the
refined predictions of the finalists (``bench/results/auto_cost_preds/``), so other consensus
rules can be checked on the same networks without training again.
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

RESULTS = ROOT / "bench" / "results"
PREDS = RESULTS / "auto_cost_preds"
SCHEDULES = ("halving", "full")


def _task(suite: str, task: str):
    if suite in ("office", "partial"):  # partial: each target restricted to bench_safe_auto.PARTIAL_CLASSES
        from bench_safe_auto import office_task

        src, tgt = (next(d for d in DOMAINS if SHORT[d] == c) for c in task.split("->"))
        return office_task(src, tgt, partial=suite == "partial")
    if suite == "instacart":
        from bench_safe_auto import instacart_task

        return instacart_task(task)
    from bench_adaptation import grocery_task

    x, y, s_idx, t_idx, n_classes = grocery_task(task)
    return x.subset(s_idx), y[s_idx], x.subset(t_idx), y[t_idx], n_classes


_WARM = False


def _warm_up(source, y_s, target, n_classes: int) -> None:
    """One tiny ``auto`` run per worker process before anything is timed, so that no timed run pays for the
    first import of scikit-learn and scipy or for torch's first kernels."""
    global _WARM
    from prodkg.adaptation import TrainConfig
    from prodkg.adaptation.selection import auto_train

    if not _WARM:
        rows = np.arange(min(200, len(y_s)))
        auto_train(source.subset(rows), y_s[rows], target.subset(np.arange(min(200, len(target)))), n_classes,
                   TrainConfig(method="auto", epochs=1))
        _WARM = True


def _job(args: tuple) -> dict:
    suite, task, seed, epochs, schedules = args
    import torch

    torch.set_num_threads(1)
    from prodkg.adaptation import TrainConfig
    from prodkg.adaptation.loop import train_method
    from prodkg.adaptation.selection import _refine, auto_train, candidate_label, stratified_holdout

    source, y_s, target, yt, n_classes = _task(suite, task)
    _warm_up(source, y_s, target, n_classes)
    rec: dict = {"suite": suite, "task": task, "seed": seed, "epochs": epochs, "n_source": len(y_s), "n_target": len(yt)}
    started = time.perf_counter()
    dann = train_method(source, y_s, target, n_classes, TrainConfig(method="dann", seed=seed, epochs=epochs))
    rec["dann"] = {"seconds": time.perf_counter() - started, "acc": float((dann.predict(target) == yt).mean() * 100)}
    preds: dict[str, np.ndarray] = {"y": yt}
    for schedule in schedules:
        models: list = []
        started = time.perf_counter()
        winner = auto_train(source, y_s, target, n_classes,
                            TrainConfig(method="auto", seed=seed, epochs=epochs, auto_schedule=schedule),
                            candidates_out=models)
        seconds = time.perf_counter() - started
        sel = winner.selection
        cands = sel["candidates"]
        rec[schedule] = {
            "seconds": seconds, "acc": float((winner.predict(target) == yt).mean() * 100),
            "train_seconds": sum(c["train_seconds"] for c in cands),
            "pruning_seconds": sel["schedule"]["pruning_seconds"],
            "chosen": sel["chosen"], "selector_choice": sel["selector_choice"], "safety": sel["safety"],
            "refinement": sel["refinement"], "finalists": sel["schedule"]["finalists"],
            "candidates": {c["candidate"]: {"acc": float((m.predict(target) == yt).mean() * 100),
                                            "epochs_trained": c["epochs_trained"], "trained_share": c["trained_share"],
                                            "scores": c["scores"],
                                            "consensus": c["consensus"], "stopped_at_rung": c["stopped_at_rung"]}
                           for c, m in zip(cands, models)},
        }
        if schedule == "halving":
            held = stratified_holdout(y_s, 0.1, seed)
            tr = np.flatnonzero(~held)
            for c, m in zip(cands, models):
                preds[c["candidate"]] = m.predict(target)
                if c["candidate"] in sel["schedule"]["finalists"]:
                    refined, info = _refine(m, source.subset(tr), target, n_classes, y_s[tr])
                    preds["refined:" + c["candidate"]] = refined.predict(target) if info["kept"] else m.predict(target)
        assert candidate_label("source_only", {}) in rec[schedule]["candidates"]
    PREDS.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(PREDS / f"{suite}_e{epochs}_{task.replace('->', '')}_{seed}.npz", **preds)
    return rec


def run(args: argparse.Namespace) -> None:
    from _features import grocery, instacart, office_caltech

    {"instacart": instacart, "grocery": grocery}.get(args.suite, office_caltech)()
    pairs = [f"{SHORT[s]}->{SHORT[t]}" for s, t in permutations(DOMAINS, 2)]
    tasks = {"office": pairs, "partial": pairs,
             "instacart": ["department", "aisle"], "grocery": ["fine", "coarse"]}[args.suite]
    if args.tasks:
        tasks = [t for t in tasks if t.replace("->", "-") in set(args.tasks.split(","))]
    schedules = _schedules(args.schedules)
    jobs = [(args.suite, t, seed, args.epochs, schedules) for seed in range(args.seeds) for t in tasks]
    path = _results_path(args.suite, args.epochs, schedules)
    result = {"command": " ".join(["python", "bench/bench_auto_cost.py", *sys.argv[1:]]), "date": today(),
              "machine": machine(), "workers": args.workers, "schedules": list(schedules), "records": []}
    started = time.perf_counter()
    with get_context("spawn").Pool(args.workers) as pool:
        for rec in pool.imap_unordered(_job, jobs):
            line = f"{rec['task']} seed {rec['seed']}: dann {rec['dann']['seconds']:.1f} s {rec['dann']['acc']:.1f}"
            for k in schedules:
                line += f"; {k} {rec[k]['seconds']:.1f} s {rec[k]['acc']:.1f} ({rec[k]['chosen']})"
            print(line, flush=True)
            result["records"].append(rec)
            RESULTS.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result, indent=1))
    result["wall_seconds"] = round(time.perf_counter() - started)
    path.write_text(json.dumps(result, indent=1))


def _schedules(text: str) -> tuple[str, ...]:
    """``"halving,full"`` -> the schedules to run, in the order of SCHEDULES; a set without a section of
    docs/BENCHMARKS.md (:data:`SECTIONS`) raises, naming those that have one."""
    asked = {s.strip() for s in text.split(",") if s.strip()}
    chosen = tuple(s for s in SCHEDULES if s in asked)
    if asked - set(SCHEDULES) or chosen not in SECTIONS:
        valid = " or ".join(repr(",".join(k)) for k in SECTIONS)
        raise SystemExit(f"--schedules: expected {valid}; got {text!r}")
    return chosen


def _results_path(suite: str, epochs: int, schedules: tuple[str, ...]) -> Path:
    """One file per suite, epochs and set of schedules; runs of both schedules keep the name they always had."""
    tail = "" if tuple(schedules) == SCHEDULES else "_" + "-".join(schedules)
    return RESULTS / f"auto_cost_{suite}_e{epochs}{tail}.json"


def _preds_path(rec: dict) -> Path:
    return PREDS / f"{rec['suite']}_e{rec['epochs']}_{rec['task'].replace('->', '')}_{rec['seed']}.npz"


def _per_task(recs: list[dict], tasks: list[str], fn) -> dict[str, float]:
    return {t: float(np.mean([fn(r) for r in recs if r["task"] == t])) for t in tasks}


#: Targets the project states for ``auto`` (docs/BENCHMARKS.md), judged on every task of the suite and 3 seeds:
#: a mean target accuracy of at least ``mean`` (or at least ``over`` points above source-only's mean), and no task
#: more than ``-gap`` points below source-only.
TARGETS = {"office": {"mean": 97.0, "gap": -0.5}, "partial": {"over": 2.0, "gap": 0.0}}


def _run_schedules(run: dict) -> tuple[str, ...]:
    return tuple(run.get("schedules", SCHEDULES))  # files written before --schedules existed ran both


def _verdict(suite: str, run: dict, schedule: str, vals: dict[str, float], so: dict[str, float]) -> str:
    from prodkg.adaptation import TrainConfig

    if suite not in TARGETS:
        return ""
    target = TARGETS[suite]
    floor_gap = target["gap"]
    mean, worst = float(np.mean(list(vals.values()))), min(vals[t] - so[t] for t in vals)
    so_mean = float(np.mean(list(so.values())))
    if "mean" in target:
        floor_mean, wanted = target["mean"], f"mean >= {target['mean']:.1f}"
    else:
        floor_mean = round(so_mean, 1) + target["over"]
        wanted = f"mean at least {target['over']:.1f} above source-only's ({so_mean:.1f})"
    missed = [f"mean {mean:.1f} < {floor_mean:.1f}"] * (round(mean, 1) < floor_mean)
    missed += [f"worst task {worst:+.1f}"] * (round(worst, 1) < floor_gap)
    n_tasks, n_seeds = len(vals), len({r["seed"] for r in run["records"]})
    epochs = run["records"][0]["epochs"]
    judged = n_tasks == 12 and n_seeds >= 3 and epochs == TrainConfig().epochs
    scope = "" if judged else (f" (here {n_tasks} task(s) x {n_seeds} seed(s) at {epochs} epochs; the target is judged "
                               f"on 12 tasks x 3 seeds at the default {TrainConfig().epochs})")
    below = f"more than {-floor_gap:.1f} below source-only" if floor_gap else "below source-only"
    return (f"Target for `auto` (`{schedule}`): {wanted} and no task {below}{scope}: "
            f"**{'met' if not missed else 'not met'}** (mean {mean:.1f}, worst task {worst:+.1f}"
            + (f"; missed: {', '.join(missed)}" if missed else "") + ").")


def _key(rec: dict) -> tuple[str, int]:
    return rec["task"], rec["seed"]


def _finalist_choice(recs: list[dict]) -> dict[tuple[str, int], dict[str, float]] | None:
    """Target accuracy of each `halving` run's two finalists after refinement, from the saved predictions;
    None when the predictions of some run are not here (``--report-only`` on another machine)."""
    out = {}
    for r in recs:
        path = _preds_path(r)
        if not path.exists():
            return None
        with np.load(path) as p:
            adapted = [c for c in r["halving"]["finalists"] if c != "source_only"]
            if "refined:source_only" not in p or not adapted or "refined:" + adapted[0] not in p:
                return None
            y = p["y"]
            out[_key(r)] = {"source_only": float((p["refined:source_only"] == y).mean() * 100),
                            "adapted": float((p["refined:" + adapted[0]] == y).mean() * 100)}
    return out


def _section(suite: str, run: dict) -> str:
    recs = run["records"]
    scheds = _run_schedules(run)
    both = scheds == SCHEDULES
    order = {"instacart": ["department", "aisle"], "grocery": ["fine", "coarse"]}
    tasks = order.get(suite) or sorted({r["task"] for r in recs})
    tasks = [t for t in tasks if any(r["task"] == t for r in recs)]
    seeds = sorted({r["seed"] for r in recs})
    label = {"halving": "auto, `halving` schedule", "full": "auto, `full` schedule"}
    so_name = ("source_only (the fallback; the same network under both schedules)" if both
               else "source_only (the fallback)")
    so = _per_task(recs, tasks, lambda r: r[scheds[-1]]["candidates"]["source_only"]["acc"])
    rows = [(so_name, so), ("dann alone (whole source)", _per_task(recs, tasks, lambda r: r["dann"]["acc"]))]
    rows += [((f"**{label[k]}**" if k == "halving" else label[k]), _per_task(recs, tasks, lambda r, k=k: r[k]["acc"]))
             for k in scheds]
    finalists = _finalist_choice(recs) if "halving" in scheds else None
    extra = []
    if finalists:
        extra = [("`halving`: refined source-only, always (the fallback alone)",
                  _per_task(recs, tasks, lambda r: finalists[_key(r)]["source_only"])),
                 ("`halving`: refined adapted finalist, always",
                  _per_task(recs, tasks, lambda r: finalists[_key(r)]["adapted"])),
                 ("`halving`: bound, the better of those two per run (chosen with target labels)",
                  _per_task(recs, tasks, lambda r: max(finalists[_key(r)]["source_only"], finalists[_key(r)]["adapted"])))]
    lines = ["| target accuracy (%) | " + " | ".join(tasks) + " | mean | worst task vs source-only |",
             "|---" * (len(tasks) + 3) + "|"]
    for name, vals in rows + extra:
        lines.append(f"| {name} | " + " | ".join(f"{vals[t]:.1f}" for t in tasks)
                     + f" | {np.mean(list(vals.values())):.1f} | {min(vals[t] - so[t] for t in tasks):+.1f} |")
    secs = {k: _per_task(recs, tasks, lambda r, k=k: r[k]["seconds"]) for k in ("dann", *scheds)}
    ratio = {k: _per_task(recs, tasks, lambda r, k=k: r[k]["seconds"] / r["dann"]["seconds"]) for k in scheds}
    lines += ["", "| wall seconds | " + " | ".join(tasks) + " | mean | max |", "|---" * (len(tasks) + 3) + "|"]
    for name, k in (("dann alone", "dann"), *((f"auto, `{k}`", k) for k in scheds)):
        vals = secs[k]
        lines.append(f"| {name} | " + " | ".join(f"{vals[t]:.1f}" for t in tasks)
                     + f" | {np.mean(list(vals.values())):.1f} | {max(vals.values()):.1f} |")
    for k in scheds:
        vals = ratio[k]
        lines.append(f"| auto `{k}` / dann | " + " | ".join(f"{vals[t]:.2f}" for t in tasks)
                     + f" | **{np.mean(list(vals.values())):.2f}** | {max(vals.values()):.2f} |")
    if len(seeds) > 1:  # the spread over seeds: each seed's own mean and worst task
        lines += ["", "| per seed | source_only mean | dann mean | "
                  + " | ".join(f"`{k}` mean | `{k}` worst task vs source-only" for k in scheds) + " |",
                  "|---" * (3 + 2 * len(scheds)) + "|"]
        for seed in seeds:
            sr = [r for r in recs if r["seed"] == seed]
            so_s = {r["task"]: r[scheds[-1]]["candidates"]["source_only"]["acc"] for r in sr}
            cells = [f"{np.mean(list(so_s.values())):.1f}", f"{np.mean([r['dann']['acc'] for r in sr]):.1f}"]
            for k in scheds:
                cells += [f"{np.mean([r[k]['acc'] for r in sr]):.1f}",
                          f"{min(r[k]['acc'] - so_s[r['task']] for r in sr):+.1f}"]
            lines.append(f"| seed {seed} ({len(sr)} tasks) | " + " | ".join(cells) + " |")
    n = len(recs)
    adopted = {k: sum(r[k]["chosen"] != "source_only" for r in recs) for k in scheds}
    train_share = np.mean([r["halving"]["train_seconds"] / r["halving"]["seconds"] for r in recs]) if "halving" in scheds else None
    prune_share = np.mean([r["halving"]["pruning_seconds"] / r["halving"]["seconds"] for r in recs]) if "halving" in scheds else None
    summary = f"Seeds: {len(seeds)}; {recs[0]['epochs']} epochs; {n} runs of each; schedules run: " + \
        ", ".join(f"`{k}`" for k in scheds) + ("" if both else " (`full` left out)") + ". "
    summary += "An adapted candidate was adopted in " + " and ".join(f"{adopted[k]} (`{k}`)" for k in scheds) + f" of {n}. "
    if both:
        same = sum(r["halving"]["chosen"] == r["full"]["chosen"] for r in recs)
        finalist_is_top = sum(
            r["halving"]["finalists"][-1] == max((c for c in r["full"]["candidates"] if c != "source_only"),
                                                 key=lambda c: r["full"]["candidates"][c]["scores"]["dev"])
            for r in recs if len(r["halving"]["finalists"]) > 1)
        summary += (f"The two schedules adopted the same candidate in {same} of {n} runs. The adapted finalist of "
                    f"`halving` is the candidate the `full` schedule scores best by DEV in {finalist_is_top} of {n} runs. ")
    if train_share is not None:
        worst_ratio = max(r["halving"]["seconds"] / r["dann"]["seconds"] for r in recs)
        summary += (f"Of the `halving` run's time, {train_share:.0%} went to training the candidates and "
                    f"{prune_share:.0%} to scoring them at the rungs (the rest: hold-out, final scores, vote, "
                    f"refinement). Slowest single `halving` run against its own DANN run: {worst_ratio:.2f}x.")
    if finalists:
        missed = [(r, finalists[_key(r)]) for r in recs]
        missed = [(r, f) for r, f in missed if max(f["source_only"], f["adapted"]) > r["halving"]["acc"] + 1e-9]
        cost = sum(max(f["source_only"], f["adapted"]) - r["halving"]["acc"] for r, f in missed) / n
        summary += (f" Under `halving` the safety rule chooses between two finalists, source-only and one adapted "
                    f"candidate, both refined by class centroids afterwards; it kept the one that is worse on the "
                    f"target in {len(missed)} of {n} runs (" + ", ".join(
                        f"{r['task']} seed {r['seed']}: {max(f['source_only'], f['adapted']) - r['halving']['acc']:.1f}"
                        for r, f in missed) + f"), {cost:.2f} points of the mean.")
    lines += ["", summary.strip()]
    verdicts = [v for i, k in enumerate(scheds) if (v := _verdict(suite, run, k, rows[2 + i][1], so))]
    if verdicts:
        lines += ["", *verdicts]
    return "\n".join(lines)


NOTES = """Notes:

- `halving` (the default, `TrainConfig.auto_schedule`, `--auto-schedule`): source-only trains in full; the nine
  adapted candidates train for 1/9 of their steps, DEV keeps the best three, they go on to 1/3, DEV keeps the best
  one, and it trains to the end (`adaptation.config.AUTO_SCHEDULES`, `adaptation.selection.rung_keep`). A paused
  candidate resumes where it stopped, with its own random state (`adaptation.loop.MethodRun`), so both finalists
  are bit for bit the networks the `full` schedule trains for them; the schedules differ only in which candidates
  reach the end, and in who votes in the consensus check: under `halving` the candidates that trained at least to
  1/3 (source-only, the finalist and the two stopped at 1/3; `adaptation.selection.consensus_voters`).
- The safety rule (DEV, SND and consensus against source-only) and the refinement are unchanged; under `halving`
  they compare the one adapted finalist with source-only.
- The voters were chosen on a first run of the office-caltech-10 command at 10 epochs, with every candidate voting
  as far as it trained: 96.5 (worst task -0.6), an adapted candidate adopted in only 7 of 36 runs (`full`: 97.0,
  -0.4, 26 of 36): candidates stopped after 1/9 of their steps have barely left their start, and their vote echoes
  source-only. The table is a second run of the same command under the final rule, so the office figures flatter
  that rule: it was chosen on these tasks and seeds.
- Not measured: the instacart and grocery suites (CPU time).
- Cost is wall time of a whole `auto_train` call against a `--method dann` training (`train_method` on the whole
  source), in the same process one after the other, 1 torch thread, on a CPU shared with other jobs. Training
  time grows with the epochs and the scoring does not: at the default 100 epochs (three tasks, one seed) `halving`
  costs 2.5 times a DANN run, at 10 epochs 3.3 times.
"""


NOTES_HALVING = """Notes on the office-caltech-10 run at 100 epochs (2026-12-01):

- The target is met: mean 97.10 (seeds 97.12 / 97.01 / 97.18), worst task W->D 0.4 below source-only, at 2.6
  times one DANN run in wall time.
- What changed since the run of 2026-11-30 (96.83 on the same tasks and seeds, another machine): centroid
  refinement runs its spherical k-means until no label changes (`adaptation.refine.centroid_refine`; it settles
  within 4 steps here) instead of stopping after two. The networks are nearly the same (another CPU: source-only's
  per-task figures differ by at most 0.2). Replayed offline on the saved networks of a run of `auto` with refinement off, two steps gave
  96.91 and convergence 97.10; the gain is A->W (+2.0 in every seed: 96.3 -> 98.3), with smaller ones on A->C,
  C->W and W->C, and one loss of 0.2 (D->A, one seed). Refinement was kept in 36 of 36 runs (at most 9.5% of
  the target relabelled, under the 15% limit).
- The safety rule is unchanged. It kept the worse of its two refined finalists in 5 of 36 runs, 0.04 points of
  the mean; the best refined finalist in every run, picked with the target labels, gives the same 97.1.
- The worst task is refinement's, not selection's: on W->D source-only is at 99.2 and refinement of source-only
  moves one of the 157 target images the wrong way in two of three seeds (in the third `auto` adopted RTN, which
  ends level with source-only).
- Wall times come from a CPU on which nothing else ran; this machine trains about twice as slowly as the one of
  the earlier run (DANN alone 24.8 s per task against 12.2 s), and the ratio is the same 2.6.

Notes on the partial office-caltech-10 run at 100 epochs (2026-12-01):

- Protocol: every ordered pair, the source keeps its 10 classes, the target only backpack, bike, calculator,
  headphones and keyboard (`bench_safe_auto.PARTIAL_CLASSES`, fixed before any run); `auto` is what a user's
  `--method auto` runs, the default 10-candidate grid (PADA is not in it; `--method pada` alone is in section
  "Safe `auto`").
- The target is met: mean 96.8 against 92.2 for source-only (+4.6), and no run of the 36 below its source-only
  (the closest: 0.0, five runs). DANN alone falls to 66.5: aligning a 10-class source with a 5-class target pulls
  the missing classes' features onto the present ones.
- What carries it is refinement, not the choice: `auto` adopted source-only in 28 of 36 runs, and refinement
  estimates the target's class shares by EM and gives the classes it lacks no centroid (`source_prior`); it was
  kept in 34 of 36 runs. The safety rule kept the worse refined finalist in 4 runs (0.30 points of the mean, up to
  5.8 on W->C seed 2); the best refined finalist in every run, picked with the target labels, gives 97.1.

Notes on the instacart brand-shift run at 10 epochs (2026-12-01):

- `auto` kept source-only in all 6 runs, so it is never below it (the issue's rule for this suite). It is not the
  best available: its adapted finalist (an RTN in every run) was better on aisle in every seed (by 0.1-2.5 points), and
  DANN trained alone on the whole source gains 0.9 points on average over `auto`'s source-only, which trains on
  90% of it. Refinement was discarded in every run (it would relabel far more than 15% of the products).
- 10 epochs, as the earlier one-seed run of this suite; the default 100 was not run here (CPU time).

Notes on the instacart brand-shift run at 100 epochs (2026-12-01, this machine, 2 workers side by side):

- At the pipeline's default 100 epochs `auto` again kept source-only in all 6 runs (mean 63.2, worst task +0.0
  against its source-only), as at 10 epochs. More epochs raise source-only by 1.5 points (61.7 -> 63.2) and DANN
  by 0.6 (62.6 -> 63.2), which takes DANN's lead away (department +0.2, aisle -0.1).
- The adapted finalist (refined) would have cost 4.2 points on department; the safety rule never adopted it.
- Time: 1.74 times one DANN run (two runs shared the 2 cores, so the ratio, not the seconds, is the figure).
"""

TITLES = {"office": "office-caltech-10",
          "partial": "partial office-caltech-10 (targets restricted to backpack, bike, calculator, headphones, keyboard)",
          "instacart": "instacart brand shift (catalog → new-brands, MiniLM titles)",
          "grocery": "grocery-store-dataset (iconic → in-store)"}

#: Sections of docs/BENCHMARKS.md by the schedules a run trained: the comparison of the two, and ``halving`` alone.
SECTIONS = {
    SCHEDULES: ("auto-cost", "## What `auto` costs: successive halving against the full grid",
                ("Written by `bench/bench_auto_cost.py`. Per task and seed: one DANN run, `auto` under the `halving` "
                "schedule and `auto` under the `full` schedule (the 10-candidate grid trained in full, as before), "
                "on the same source hold-out and seeds. Accuracy on the target, never trained on with labels; mean over "
                "seeds per task. *Worst task vs source-only*: the lowest per-task difference to source-only."), NOTES),
    ("halving",): ("auto-cost-halving", "## `auto` under its default `halving` schedule alone",
                   ("Written by `bench/bench_auto_cost.py --schedules halving`. Per task and seed: one DANN run and "
                   "`auto` under the `halving` schedule (the default), on the same seeds; the `full` schedule is not "
                   "trained (see \"What `auto` costs\" for the two side by side). Accuracy on the target, never "
                   "trained on with labels; mean over seeds per task. *Worst task vs source-only*: the lowest per-task "
                   "difference to source-only (the `source_only` candidate of the same `auto` run)."), NOTES_HALVING),
}


def _run_heading(run: dict) -> list[str]:
    suite, epochs = run["records"][0]["suite"], run["records"][0]["epochs"]
    n_tasks = len({r["task"] for r in run["records"]})
    return [f"### {TITLES[suite]} ({n_tasks} task{'s' * (n_tasks > 1)}), {epochs} epochs", "",
            (f"Command: `PRODKG_DATA_HOME=... PRODKG_BENCH_CACHE=... {run['command']}` · date {run['date']} · "
             f"machine: {run['machine']} · {run['workers']} worker processes · wall time "
             f"{run.get('wall_seconds', '?')} s."), "", _section(suite, run)]


def report() -> None:
    """Rewrite each section of docs/BENCHMARKS.md that has results here; one without results is left as it stands."""
    runs = [json.loads(path.read_text()) for path in RESULTS.glob("auto_cost_*_e*.json")]
    runs = sorted((r for r in runs if r.get("records")),
                  key=lambda r: (list(TITLES).index(r["records"][0]["suite"]), r["records"][0]["epochs"]))
    for scheds, (name, title, intro, notes) in SECTIONS.items():
        mine = [r for r in runs if _run_schedules(r) == scheds]
        if not mine:
            continue
        parts = [title, "", intro]
        for run in mine:
            parts += ["", *_run_heading(run)]
        if notes:
            parts += ["", notes]
        write_section(name, "\n".join(parts))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", choices=["office", "partial", "instacart", "grocery"], default="office")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--tasks", help="comma-separated tasks such as A-W,D-A (default: all of the suite)")
    p.add_argument("--schedules", default=",".join(SCHEDULES),
                   help="schedules of auto to train besides DANN: halving,full (the default) or halving")
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args()
    if not args.report_only:
        run(args)
    report()


if __name__ == "__main__":
    main()
