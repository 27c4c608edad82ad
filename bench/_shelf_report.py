"""The `shelf-views` section of docs/BENCHMARKS.md, from bench/results/shelf_views_*.json (bench_shelf_views.py)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from _common import write_section

RESULTS = Path(__file__).resolve().parent / "results"
LABELS = ("fine", "coarse")


def _load(mode: str) -> dict:
    path = RESULTS / f"shelf_views_{mode}.json"
    return json.loads(path.read_text()) if path.is_file() else {"records": [], "commands": []}


def _cell(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{np.mean(values):.1f} ± {np.std(values):.1f}"


def _worst(values: list[float]) -> str:
    return f"{min(values):.1f}" if values else "–"


def _curve(records: list[dict]) -> list[str]:
    epochs = sorted({r["epochs"] for r in records})
    rows = sorted({(r["label"], r["views"], r["method"]) for r in records}, key=lambda t: (LABELS.index(t[0]), t[1], t[2]))
    acc = {(r["label"], r["views"], r["method"], r["epochs"]): r["accuracy"] for r in records}
    out = ["| label | views per photo | method | " + " | ".join(f"{e} epochs" for e in epochs) + " |",
           "|---|---|---|" + "---|" * len(epochs)]
    for lab, k, m in rows:
        out.append(f"| {lab} | {k} | {m} | " + " | ".join(f"{acc[(lab, k, m, e)]:.1f}" if (lab, k, m, e) in acc else "–" for e in epochs) + " |")
    return out


def _main_table(table: list[dict], auto: list[dict]) -> tuple[list[str], dict]:
    cells: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in table:
        cells[(r["method"], r["views"])][r["label"]].append(r["accuracy"])
    chosen: dict[tuple, list[str]] = defaultdict(list)
    for r in auto:
        cells[(r["method"], r["views"])][r["label"]].append(r["accuracy"])
        best = max(r["candidates"], key=r["candidates"].get)
        chosen[(r["method"], r["views"])].append(f"{r['label']} seed {r['seed']}: {r['chosen']} (its best candidate by "
                                                 f"in-store labels, for reference only: {best}, {r['candidates'][best]:.1f})")
    names = {"auto": "**auto** (whole products held out)", "auto:rows": "auto, rows held out (a view beside its product)",
             "auto+self-training": "**auto + self-training** (`--method auto --self-training 2`)"}
    order = sorted(cells, key=lambda t: (t[0].startswith("auto"), t[0], t[1]))
    out = ["| method | views per photo | fine: mean ± std | fine: worst seed | coarse: mean ± std | coarse: worst seed | seeds |",
           "|---|---|---|---|---|---|---|"]
    for m, k in order:
        c = cells[(m, k)]
        n = max(len(c.get(lab, [])) for lab in LABELS)
        out.append(f"| {names.get(m, m)} | {k} | {_cell(c.get('fine', []))} | {_worst(c.get('fine', []))} | "
                   f"{_cell(c.get('coarse', []))} | {_worst(c.get('coarse', []))} | {n} |")
    return out, chosen


def _office(records: list[dict]) -> list[str]:
    if not records:
        return []
    tasks = sorted({r["label"] for r in records})
    acc = {(r["label"], r["method"], r["views"]): r["accuracy"] for r in records}
    views = sorted({r["views"] for r in records})
    methods = sorted({r["method"] for r in records})
    short = {t: "->".join(p[0].upper() for p in t.split("->")) for t in tasks}
    out = ["| method | views per photo | " + " | ".join(short[t] for t in tasks) + " | mean | worst change vs no views |",
           "|---|---|" + "---|" * (len(tasks) + 2)]
    for m in methods:
        for k in views:
            vals = [acc.get((t, m, k)) for t in tasks]
            if any(v is None for v in vals):
                continue
            base = [acc.get((t, m, 0)) for t in tasks]
            worst = min(v - b for v, b in zip(vals, base)) if k and None not in base else 0.0
            out.append(f"| {m} | {k} | " + " | ".join(f"{v:.1f}" for v in vals) + f" | {np.mean(vals):.1f} | {worst:+.1f} |")
    return out


#: how to read the tables, written from the run recorded in bench/results (update with the numbers when re-run)
NOTES = """
- **Epochs.** The curve's rule (the fewest epochs whose mean over the three methods with views is within 1 point of
  the best) picked 30. Without views source-only is still climbing there (fine 6.2, 14.3, 23.1 at 3, 10, 30
  epochs), so the 3-epoch grocery figures of the `Safe auto` and `encoders` sections are under-trained; DAN peaks
  earlier (31.3 fine at 10 epochs, 26.7 at 30). With views every method moves less between 3 and 30 epochs.
- **Views alone** (20 per photo, 30 epochs): source-only +4.8 fine / +1.9 coarse, DAN +2.6 / +2.7, with less
  spread over seeds; DANN loses (fine 24.9 -> 17.1, coarse 56.5 -> 53.2). Most of the jump at 3 epochs
  (source-only 6.2 -> 26.0 fine) is views making a short training enough, not accuracy that converged training
  without them lacks.
- **Self-training** (`adaptation/self_training.py`: 2 rounds, a per-class quota of a fifth, then two fifths, of the
  target, no confidence floor) is the largest gain on the fine labels: source-only 26.5 -> 37.9, DAN 29.6 -> 39.1.
  On the coarse labels it helps DAN (53.0 -> 57.4) and hurts source-only (52.7 -> 47.8). A likely cause, not
  measured: the 19 coarse classes are of very unequal size in the store, and an equal quota per class pulls
  predictions towards the small ones.
- **`auto` with views** keeps source-only on the fine labels in all 3 seeds (26.5): each fine class has one product,
  so none can be held out, DEV falls back to SND, and the consensus check vetoed SND's picks (RTN, CORAL) although
  DAN was 2-4 points better. On the coarse labels (12 of 81 products held out with their 252 views) DEV picked
  CDAN (trade-off 0.3) in 2 of 3 seeds, which the safety check let through and which was worse than source-only by
  5-8 points; its candidates train on 90% of the products, so its source-only is not the table's.
- **`auto` + self-training** (what `--method auto --self-training 2` does): 37.9 fine (worst seed 35.9), above the
  issue's 35%; coarse 46.0 (worst seed 42.4), below source-only and far from the issue's 60%. The best coarse figure
  measured here is 57.4 (DAN + views + self-training), chosen by no label-free rule.
- **Holding out views** (`auto:rows`: any row held out, so a view is scored by a model that trained on its photo and
  other views): DEV then has 162 (fine) or 168 (coarse) held-out rows to score, but chooses no better: fine 24.9
  (worst seed 20.3, CDAN let through by the safety check), coarse 51.2. A view held out beside its own photo
  does not show the selectors the shift, so runs hold out whole products (`adaptation/holdout.py`).
- **office-caltech-10** (5 views per photo, 20 epochs, one seed, three tasks): views lower D->A and W->C by up to
  2.0 points (W->C, source-only) and raise D->W by 1.0; the mean changes by -0.2 to -0.7. DSLR and webcam photos are
  already photos of objects in a room, not packshots. Both settings therefore stay off by default.
- Extraction of the 1,620 grocery views: 68 s (24 views/s, augmentation and Lite0 fp32 on 1 thread); re-runs read
  them from the feature cache. Not measured: other view counts, Lite2 with views, `auto` without views at 30
  epochs (stopped for CPU time), and coverage/precision of published facts (on grocery the fine head publishes
  nothing: with one product per class no held-out row backs an estimate, views or not).
"""


def write(notes: str = NOTES) -> Path:
    curve, table, auto, office, selftrain = (_load(m) for m in ("curve", "table", "auto", "office", "selftrain"))
    everything = (curve, table, auto, office, selftrain)
    meta = next((d for d in everything if d.get("date")), {})
    commands = list(dict.fromkeys(c for d in everything for c in d.get("commands", [])))
    seconds = sum(r.get("seconds", 0) for d in everything for r in d["records"])
    epochs = sorted({r["epochs"] for r in table["records"] + auto["records"]})
    lines = ["## Shelf-style source views: one catalog photo per class", "",
             "Written by `bench/bench_shelf_views.py` (`write` assembles this section from `bench/results/shelf_views_*.json`).",
             "Command: " + "; ".join(f"`PRODKG_DATA_HOME=... PRODKG_BENCH_CACHE=... nice -n 10 {c}`" for c in commands)
             + f" · date {meta.get('date', '?')} · machine: {meta.get('machine', '?')} · {seconds / 60:.0f} min of training and "
             "selection in all (2 processes, 1 torch thread each, on a CPU shared with other jobs).", "",
             ("grocery-store-dataset: the 81 iconic products (EfficientNet-Lite0 image + MiniLM description) → the 5,421 in-store "
             "photos (image only), 81 fine or 19 coarse classes. *Views per photo*: K shelf-style views of each iconic photo "
             "(`extractors/augment.py` defaults: perspective, random resized crop, colour jitter, blur; 80% pasted onto a crop of "
             "another iconic photo or a noise texture with 2 other iconic products as clutter; never an in-store photo), each "
             "a training row with its product's label and description. Target accuracy in %; every in-store photo gets a "
             "prediction, so accuracy is the precision at coverage 100%. No in-store label reaches training or selection."), ""]
    if curve["records"]:
        lines += ["### Epochs (seed 0)", "", *_curve(curve["records"]), ""]
    if table["records"] or auto["records"]:
        main, chosen = _main_table(table["records"] + selftrain["records"], auto["records"])
        lines += [f"### Methods and `auto`, {', '.join(map(str, epochs))} epochs", "", *main, ""]
        for (m, k), picks in sorted(chosen.items()):
            lines.append(f"- `{m}` with {k} views per photo chose: " + "; ".join(picks) + ".")
        lines.append("")
    if office["records"]:
        e = sorted({r["epochs"] for r in office["records"]})
        lines += [f"### office-caltech-10 check (seed 0, {', '.join(map(str, e))} epochs)", "", *_office(office["records"]), ""]
    if notes:
        lines += ["### Reading", "", notes.strip(), ""]
    return write_section("shelf-views", "\n".join(lines))


if __name__ == "__main__":
    write()


NOTES_ROLLUP = """- Fine: 38.5 on average, worst seed 36.5, above the issue's 35%. Coarse, rolled up from the same head: 56.9,
  worst seed 54.8, below the issue's 60% but above every coarse figure `auto` reached with a head of its own
  (section "Shelf-style source views", another machine: 46.0 with self-training, 47.8 without; the best measured, DAN with views and
  self-training, 57.4, is chosen by no label-free rule).
- Seed 1 first ran under the safety rule of the time, which skipped DEV when no source row can be held out: SND and
  the consensus vote then adopted RTN (lr 3e-3), 6.0% fine before self-training and 7.2% after (28.9% coarse). The
  rule now counts an unscored signal against the adapted candidate (`adaptation.selection.safe_choice`), and the
  row shown is seed 1 run again under it. Seeds 0 and 2 ran before that change; both kept source-only, which the
  new rule also does, so their rows stand.
- Self-training's two rounds add 10-13 points fine to source-only (26.4-26.7 before them).
- More rounds do not close the coarse gap ("Self-training rounds" below): after round 2 the fine accuracy creeps
  up by 0.7 points over three more rounds, and the coarse roll-up stays at 56.6-56.9 (worst seed about 54). The
  default of two rounds stands. Not tried: centroid refinement here (it relabels 79-84% of the photos, over the 15%
  guard set on text), Lite2 features with views.
- **Coarse here is the 19 parent concepts, not the dataset's 43 coarse classes** (found 2026-12-01): the bench took a
  fine class's parent as its coarse class, and for the 26 fine classes without a coarse class of their own
  (Banana, Avocado, ...) that parent is the top-level category. Section "Label spreading" gives both; on the 43
  classes the same runs score 8-10 points lower.
"""


def write_rollup(notes: str = NOTES_ROLLUP) -> Path:
    """Section `shelf-rollup`: the coarse accuracy of `auto`'s fine head rolled up along the taxonomy, per seed,
    from the fine-label records of ``shelf_views_auto.json`` that carry it (``coarse_rollup``)."""
    data = _load("auto")
    recs = sorted((r for r in data["records"] if "coarse_rollup" in r and "encoder" not in r),  # Lite0 features
                  key=lambda r: (r["method"], r["views"], r["seed"]))
    if not recs:
        raise SystemExit("no fine-label `auto` records with a coarse roll-up in bench/results/shelf_views_auto.json")
    commands = [c for c in data.get("commands", []) if "--labels fine" in c] or data.get("commands", [])
    lines = ["## Grocery coarse facts from the fine head: back-off instead of a second head", "",
             "Written by `bench/bench_shelf_views.py` (`write-rollup` assembles it from `bench/results/shelf_views_auto.json`). "
             "Command: " + "; ".join(f"`PRODKG_DATA_HOME=... PRODKG_BENCH_CACHE=... {c}`" for c in commands)
             + f" · date {data.get('date', '?')} · machine: {data.get('machine', '?')}.", "",
             ("grocery-store-dataset, 81 iconic products (+ shelf-style views) → 5,421 in-store photos, as in \"Shelf-style "
              "source views\". `auto` (and `auto` followed by two rounds of self-training, what `--method auto "
              "--self-training 2` does) trains one head on the 81 fine classes; *coarse, rolled up* is the accuracy on the "
              "dataset's 43 coarse classes (records before 2026-12-01: the 19 parent concepts) of that head's probabilities summed within each coarse class, as the predict stage "
              "aggregates them when it backs off along top → coarse → fine (`prediction.backoff.TaxonomyLevels`; there "
              "after its temperature, which can move a few of the coarse choices). No in-store label "
              "reaches training or selection. Target accuracy in %."), "",
             "| run | views per photo | epochs | seed | chosen | fine | coarse, rolled up |", "|---|---|---|---|---|---|---|"]
    for r in recs:
        lines.append(f"| `{r['method']}` | {r['views']} | {r['epochs']} | {r['seed']} | {r['chosen']} | "
                     f"{r['accuracy']:.1f} | {r['coarse_rollup']:.1f} |")
    by = defaultdict(list)
    for r in recs:
        by[(r["method"], r["views"], r["epochs"])].append(r)
    lines.append("")
    for (m, k, e), rs in by.items():
        f, c = [r["accuracy"] for r in rs], [r["coarse_rollup"] for r in rs]
        lines.append(f"- `{m}`, {k} views, {e} epochs, {len(rs)} seed(s): fine {np.mean(f):.1f} (worst seed {min(f):.1f}), "
                     f"coarse rolled up {np.mean(c):.1f} (worst seed {min(c):.1f}).")
    rounds = _load("rounds")
    if rounds["records"]:
        recs = sorted(rounds["records"], key=lambda r: r["seed"])
        n = max(len(r["curve"]) for r in recs)
        lines += ["", "### Self-training rounds", "",
                  "Command: " + "; ".join(f"`PRODKG_DATA_HOME=... PRODKG_BENCH_CACHE=... {c}`" for c in rounds.get("commands", []))
                  + f" · date {rounds.get('date', '?')} · machine: {rounds.get('machine', '?')}.", "",
                  ("Source-only (what `auto` keeps on these labels), then round after round of class-balanced "
                   "self-training, round *k* pseudo-labelling a share of 0.2 *k* of the in-store photos from the "
                   "model of round *k* - 1 (`--self-training 2` stops after round 2). Mean over seeds, worst seed in "
                   "brackets."), "",
                  "| after round | " + " | ".join(str(k) for k in range(n)) + " |", "|---|" + "---|" * n]
        for key, name in (("fine", "fine"), ("coarse_rollup", "coarse, rolled up")):
            cells = []
            for k in range(n):
                v = [r["curve"][k][key] for r in recs if len(r["curve"]) > k]
                cells.append(f"{np.mean(v):.1f} ({min(v):.1f})")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if notes:
        lines += ["", notes.strip()]
    return write_section("shelf-rollup", "\n".join(lines))
