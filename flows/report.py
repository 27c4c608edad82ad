"""The run report: report.html with PNG figures (stage times, counts, cache hits, predictions, domains, accuracy)."""

from __future__ import annotations

import functools
import hashlib
import html
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from prodkg.progress import warn
from prodkg.errors import StageError

FIGURES_DIR = "figures"
FIGURE_KEYS = "keys.json"  # figure name -> digest of what it was drawn from, for reuse by the next run
# Bump when a figure's drawing code changes, so that no run reuses a picture drawn the old way.
FIGURE_STYLE = 2  # 2: one prediction per product and task (the finest level) in the histograms; risk-coverage
SOURCE_COLOR, TARGET_COLOR = "#1f77b4", "#ff7f0e"



def pca_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project rows onto their first two principal components.

    Only two components are needed, so they come from the eigendecomposition of the smaller of the
    ``d × d`` covariance and the ``N × N`` Gram matrix rather than a full SVD of the data (2,000 × 384:
    25 ms against 0.5 s). Returns the ``(N, 2)`` coordinates and the fraction of variance each component
    explains. Fewer than two informative directions give zero columns rather than an error.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise StageError(f"pca_2d expects a non-empty 2-D array, got shape {x.shape}")
    centred = x - x.mean(axis=0)
    n, d = centred.shape
    k = min(2, n, d)
    coords = np.zeros((n, 2))
    explained = np.zeros(2)
    values, vectors = np.linalg.eigh(centred.T @ centred if d <= n else centred @ centred.T)  # ascending
    values, vectors = np.clip(values[::-1][:k], 0.0, None), vectors[:, ::-1][:, :k]
    # covariance: eigenvectors are the directions; Gram: they are the coordinates up to the singular values
    coords[:, :k] = centred @ vectors if d <= n else vectors * np.sqrt(values)
    total = float(np.einsum("ij,ij->", centred, centred))  # the trace: the total variance times N
    if total > 0:
        explained[:k] = values / total
    # the sign of an eigenvector is arbitrary: fix it so reruns draw the same picture
    for j in range(k):
        if coords[np.argmax(np.abs(coords[:, j])), j] < 0:
            coords[:, j] *= -1
    return coords, explained


def _figure(width: float = 6.4, height: float = 3.6):
    # Figure without pyplot: no GUI backend, no global state, safe in worker threads
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def _bar_labels(ax, bars) -> None:
    ax.bar_label(bars, fmt="%g", padding=2, fontsize=8)


def fig_stage_seconds(summary: dict, path: Path) -> Path:
    durations = summary.get("durations") or {}
    if not durations:
        raise StageError("no stage durations recorded")
    fig = _figure(6.4, 2.8)
    ax = fig.add_subplot()
    names = list(durations)[::-1]
    bars = ax.barh(names, [durations[n] for n in names], color="#4c72b0")
    _bar_labels(ax, bars)
    ax.set_xlabel("seconds")
    ax.set_title(f"Seconds per stage (total {sum(durations.values()):.1f} s)")
    return _save(fig, path)


def count_rows(summary: dict) -> dict[str, int | None]:
    """Products in / quarantined / kept, and new / changed / removed against the previous graph (None: not known)."""
    c = summary.get("counts") or {}
    changes = summary.get("changes") or {}
    return {
        "products in": c.get("rows_in"),
        "quarantined": c.get("quarantined"),
        "kept": c.get("products"),
        "new": changes.get("added"),
        "changed": changes.get("changed"),
        "removed": changes.get("removed"),
    }


def fig_counts(summary: dict, path: Path) -> Path:
    rows = count_rows(summary)
    fig = _figure(6.4, 3.0)
    ax = fig.add_subplot()
    names = list(rows)
    colors = ["#4c72b0", "#c44e52", "#55a868", "#8172b2", "#ccb974", "#64b5cd"]
    bars = ax.bar(names, [rows[n] or 0 for n in names], color=colors)
    ax.bar_label(bars, labels=["n/a" if rows[n] is None else str(rows[n]) for n in names], padding=2, fontsize=8)
    ax.set_ylabel("products")
    ax.set_title("new / changed / removed: against the previous graph", fontsize=10)
    ax.margins(y=0.15)
    return _save(fig, path)


def fig_cache(summary: dict, path: Path) -> Path:
    feats = summary.get("features") or {}
    if not feats:
        raise StageError("no feature statistics recorded")
    fig = _figure(6.4, 2.8)
    ax = fig.add_subplot()
    names = list(feats)
    cached = np.array([feats[m].get("cached", 0) for m in names])
    computed = np.array([feats[m].get("computed", 0) for m in names])
    b1 = ax.barh(names, cached, color="#55a868", label="cache hits")
    b2 = ax.barh(names, computed, left=cached, color="#c44e52", label="computed")
    ax.bar_label(b1, labels=[str(v) if v else "" for v in cached], label_type="center", fontsize=8)
    ax.bar_label(b2, labels=[str(v) if v else "" for v in computed], label_type="center", fontsize=8)
    ax.set_xlabel("items")
    ax.legend(loc="lower right", fontsize=8)
    total = int(cached.sum() + computed.sum())
    ax.set_title(f"Feature cache: {int(cached.sum())} of {total} hits" if total else "Feature cache")
    return _save(fig, path)


def primary_predictions(predictions: pd.DataFrame) -> pd.DataFrame:
    """One row per product and task: the finest-level class prediction (back-off levels and unknown rows left out)."""
    rows = predictions
    if "kind" in rows.columns:
        rows = rows[rows["kind"].fillna("class") != "unknown"]
    if "level" in rows.columns and rows["level"].notna().any():
        deepest = rows.groupby("task")["level"].transform("max")
        rows = rows[rows["level"].isna() | (rows["level"] == deepest)]
    return rows


def fig_class_distribution(predictions: pd.DataFrame, path: Path) -> Path:
    predictions = primary_predictions(predictions)
    cat = predictions[predictions["task"] == "category"]
    if cat.empty:
        raise StageError("no category predictions")
    counts = cat["value"].astype(str).value_counts().sort_index()
    top = counts.sort_values(ascending=False).head(30).sort_index()
    fig = _figure(6.4, 3.4)
    ax = fig.add_subplot()
    bars = ax.bar(top.index.tolist(), top.to_numpy(), color="#da8bc3")
    _bar_labels(ax, bars)
    ax.set_ylabel("target products")
    shown = "" if len(top) == len(counts) else f" (30 most frequent of {len(counts)})"
    ax.set_title(f"Predicted categories{shown}")
    ax.tick_params(axis="x", labelrotation=45 if len(top) > 6 else 0, labelsize=8)
    ax.margins(y=0.15)
    return _save(fig, path)


def fig_confidence(predictions: pd.DataFrame, summary: dict, path: Path) -> Path:
    predictions = primary_predictions(predictions)
    if predictions.empty:
        raise StageError("no predictions")
    fig = _figure(6.4, 3.0)
    ax = fig.add_subplot()
    bins = np.linspace(0, 1, 21)
    for task, group in predictions.groupby("task", sort=False):
        conf = group["confidence"].astype(float).to_numpy()
        kind = "bar" if task == "category" else "step"
        ax.hist(conf, bins=bins, histtype=kind, alpha=0.8 if kind == "bar" else 1.0, label=f"{task} (n={len(conf)})", linewidth=1.5)
    threshold = summary.get("threshold")
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
    ax.set_xlabel("calibrated confidence")
    ax.set_ylabel("predictions")
    ax.set_xlim(0, 1)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title("Confidence of the predictions")
    return _save(fig, path)


def fig_domains(sample: dict | None, path: Path) -> Path:
    if not sample:
        raise StageError("no embedding sample (no category head was fitted)")
    is_target = np.asarray(sample["is_target"], bool)
    fig = _figure(9.6, 3.8)
    axes = fig.subplots(1, 2)
    for ax, key, title in ((axes[0], "before", "before adaptation (fused input features)"), (axes[1], "after", "after adaptation (model embedding)")):
        coords, explained = pca_2d(sample[key])
        ax.scatter(*coords[~is_target].T, s=10, alpha=0.7, color=SOURCE_COLOR, label=f"source (n={int((~is_target).sum())})")
        ax.scatter(*coords[is_target].T, s=10, alpha=0.7, color=TARGET_COLOR, marker="^", label=f"target (n={int(is_target.sum())})")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(f"PC1 ({100 * explained[0]:.0f} % of variance)", fontsize=8)
        ax.set_ylabel(f"PC2 ({100 * explained[1]:.0f} % of variance)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=8)
    fig.suptitle("Source vs target products, first two principal components")
    return _save(fig, path)


def risk_coverage_curves(summary: dict) -> dict[str, dict]:
    """task -> {coverage, risk, point: (coverage, precision) of the published facts} for every task evaluated on target labels."""
    out = {}
    for task, m in (summary.get("metrics") or {}).items():
        ev = m.get("evaluation") or {}
        curve = ev.get("risk_coverage")
        if curve and curve.get("coverage"):
            out[task] = {"coverage": curve["coverage"], "risk": curve["risk"], "point": (ev.get("coverage"), ev.get("precision"))}
    return out


def fig_risk_coverage(summary: dict, path: Path) -> Path:
    curves = risk_coverage_curves(summary)
    if not curves:
        raise StageError("the target domain has no labels: precision and coverage cannot be measured")
    fig = _figure(6.4, 3.4)
    ax = fig.add_subplot()
    for task, c in curves.items():
        line = ax.plot(np.asarray(c["coverage"]) * 100, np.asarray(c["risk"]) * 100, label=f"{task}: finest level, by confidence")[0]
        cov, prec = c["point"]
        if cov is not None and prec is not None and np.isfinite(prec):
            ax.scatter([100 * cov], [100 * (1 - prec)], color=line.get_color(), marker="o", zorder=3,
                       label=f"{task}: published ({100 * cov:.0f} % coverage, {100 * prec:.1f} % precision)")
    if summary.get("min_precision"):
        ax.axhline(100 * (1 - summary["min_precision"]), color="black", linestyle="--", linewidth=1,
                   label=f"target: {100 * summary['min_precision']:g} % precision")
    ax.set_xlabel("coverage (% of target products published)")
    ax.set_ylabel("risk (% of published facts wrong)")
    ax.set_xlim(0, 100)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title("Risk-coverage (target labels used for this evaluation only)", fontsize=10)
    return _save(fig, path)


def publication_rows(summary: dict) -> list[list]:
    """Per task and taxonomy level: threshold, estimated vs measured accuracy, precision and coverage."""
    rows = []

    def pct(x):
        return None if x is None or not np.isfinite(x) else f"{100 * x:.1f} %"

    for task, m in (summary.get("metrics") or {}).items():
        pub = m.get("publication")
        if not pub:
            continue
        measured = {lv["level"]: lv for lv in (m.get("evaluation") or {}).get("levels", [])}
        for lv in pub.get("levels", []):
            ev = measured.get(lv["level"], {})
            rows.append([task, lv["level"], lv["threshold"], lv["estimator"], pct(lv["estimated_accuracy"]), pct(ev.get("accuracy_all")),
                         pct(lv["estimated_precision"]), pct(ev.get("precision")), lv["n_published"], pct(ev.get("coverage"))])
    return rows


def accuracy_rows(summary: dict) -> list[tuple[str, str, float]]:
    """(task, method, target accuracy) for every head evaluated on target labels, the baseline included."""
    rows = []
    metrics = summary.get("metrics") or {}
    base = summary.get("baseline_metrics") or {}
    if base.get("target_accuracy") is not None:
        rows.append(("category", str(summary.get("baseline")), float(base["target_accuracy"])))
    for task, m in metrics.items():
        if m.get("target_accuracy") is not None:
            rows.append((task, str(m.get("method", summary.get("method"))), float(m["target_accuracy"])))
    return rows


def fig_accuracy(summary: dict, path: Path) -> Path:
    rows = accuracy_rows(summary)
    if not rows:
        raise StageError("the target domain has no labels: accuracy cannot be measured")
    fig = _figure(6.4, 3.0)
    ax = fig.add_subplot()
    names = [f"{task}\n{method}" for task, method, _ in rows]
    bars = ax.bar(names, [100 * a for _, _, a in rows], color=["#937860" if i == 0 and summary.get("baseline_metrics") else "#4c72b0" for i in range(len(rows))])
    ax.bar_label(bars, fmt="%.1f", padding=2, fontsize=8)
    ax.set_ylim(0, 110)
    ax.set_ylabel("target accuracy (%)")
    ax.set_title("target labels used for this evaluation only", fontsize=10)
    ax.tick_params(axis="x", labelsize=8)
    return _save(fig, path)


_CSS = """
body { font-family: sans-serif; margin: 24px; color: #222; max-width: 1400px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 16px; margin: 18px 0 6px; }
.meta { color: #555; font-size: 13px; }
.grid { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 16px; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 10px; }
.wide { grid-column: 1 / -1; }
img { max-width: 100%; height: auto; }
table { border-collapse: collapse; font-size: 13px; } td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
.missing { color: #a33; font-size: 13px; }
"""


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape('n/a' if v is None else str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _card(title: str, figure: str | None, error: str | None, extra: str = "", wide: bool = False) -> str:
    inner = f'<img src="{html.escape(figure)}" alt="{html.escape(title)}">' if figure else f'<p class="missing">not available: {html.escape(error or "")}</p>'
    return f'<div class="card{" wide" if wide else ""}"><h2>{html.escape(title)}</h2>{inner}{extra}</div>'


def figure_key(name: str, *inputs) -> str:
    """Digest of what a figure is drawn from: arrays by content, the rest as JSON (frames: pass their digest)."""
    h = hashlib.sha256(f"{name}|style {FIGURE_STYLE}|matplotlib {_matplotlib_version()}".encode())
    for item in inputs:
        _digest_into(h, item)
    return h.hexdigest()[:32]


def _digest_into(h, item) -> None:
    if isinstance(item, np.ndarray):
        h.update(f"{item.dtype}{item.shape}".encode())
        h.update(np.ascontiguousarray(item).tobytes())
    elif isinstance(item, dict):
        h.update(b"{")
        for k in sorted(item, key=str):
            h.update(f"{k}:".encode())
            _digest_into(h, item[k])
        h.update(b"}")
    else:
        h.update(json.dumps(item, sort_keys=True, default=str).encode())


@functools.cache
def _matplotlib_version() -> str:
    from importlib.metadata import version

    return version("matplotlib")


def _previous_keys(run_dir: Path | None) -> dict[str, str]:
    if run_dir is None:
        return {}
    try:
        keys = json.loads((Path(run_dir) / FIGURES_DIR / FIGURE_KEYS).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # no report there, or an unreadable one: draw everything
        return {}
    return keys if isinstance(keys, dict) else {}


def _copy_figure(src: Path, dst: Path) -> bool:
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        return True
    except OSError:
        return False


def previous_run_dir(run_dir: Path) -> Path | None:
    """The latest other run in the same output folder that wrote figures (run ids sort by start time)."""
    run_dir = Path(run_dir)
    try:
        others = [p for p in run_dir.parent.iterdir() if p.name != run_dir.name and (p / FIGURES_DIR / FIGURE_KEYS).is_file()]
    except OSError:
        return None
    return max(others, key=lambda p: p.name, default=None)


def write_report(run_dir: Path, summary: dict, predictions: pd.DataFrame, embedding_sample: dict | None = None,
                 reuse_from: Path | None = None) -> dict:
    """Write ``run_dir/report.html`` and its figures under ``run_dir/figures/``.

    A figure that cannot be drawn (e.g. accuracy when the target has no labels) is replaced by a line
    saying why, and its reason is returned under ``"missing"``; only a failure to write the page raises.
    A figure whose inputs are the same as those of the one in ``reuse_from`` (an earlier run directory)
    is copied from there instead of drawn again: an unchanged nightly re-run redraws only the figures
    of its own timings and cache counts.

    Returns:
        ``{"html": path, "figures": {name: path}, "missing": {name: reason}, "reused": [name, ...]}``.
    """
    from prodkg.kb.incremental import frame_digest

    run_dir = Path(run_dir)
    fig_dir = run_dir / FIGURES_DIR
    predictions_digest = frame_digest(predictions)  # once: two figures are drawn from the predictions
    # name -> (title, what the figure is drawn from, how to draw it)
    makers: dict[str, tuple[str, tuple, Callable[[Path], Path]]] = {
        "stage_seconds": ("Seconds per stage", (summary.get("durations"),), lambda p: fig_stage_seconds(summary, p)),
        "counts": ("Products in / quarantined / new / changed / removed", (count_rows(summary),), lambda p: fig_counts(summary, p)),
        "cache": ("Feature cache hits", (summary.get("features"),), lambda p: fig_cache(summary, p)),
        "accuracy": ("Target accuracy", (accuracy_rows(summary), summary.get("baseline_metrics") is not None), lambda p: fig_accuracy(summary, p)),
        "class_distribution": ("Class distribution of the predictions", (predictions_digest,), lambda p: fig_class_distribution(predictions, p)),
        "confidence": ("Confidence histogram", (predictions_digest, summary.get("threshold")), lambda p: fig_confidence(predictions, summary, p)),
        "risk_coverage": ("Published facts: precision and coverage", (risk_coverage_curves(summary), summary.get("min_precision")),
                          lambda p: fig_risk_coverage(summary, p)),
        "domains": ("Source vs target features before and after adaptation", (embedding_sample,), lambda p: fig_domains(embedding_sample, p)),
    }
    previous = _previous_keys(reuse_from)
    figures: dict[str, str] = {}
    missing: dict[str, str] = {}
    keys: dict[str, str] = {}
    reused: list[str] = []
    for name, (_, inputs, make) in makers.items():
        target = fig_dir / f"{name}.png"
        try:
            keys[name] = key = figure_key(name, *inputs)
            if previous.get(name) == key and _copy_figure(reuse_from / FIGURES_DIR / f"{name}.png", target):
                figures[name] = str(target)
                reused.append(name)
                continue
            figures[name] = str(make(target))
        except StageError as exc:  # the data for this figure is not there: say so on the page
            missing[name] = str(exc)
        except Exception as exc:  # a plotting bug must not cost the other figures  # noqa: BLE001
            missing[name] = f"figure failed: {type(exc).__name__}: {exc}"
            warn(f"run report: figure {name} failed: {type(exc).__name__}: {exc}")
    if figures:  # the keys of the figures this run has, for the next run to compare with
        (fig_dir / FIGURE_KEYS).write_text(json.dumps({k: keys[k] for k in figures}, sort_keys=True), encoding="utf-8")

    def rel(name: str) -> str | None:
        return f"{FIGURES_DIR}/{name}.png" if name in figures else None

    durations = summary.get("durations") or {}
    counts = count_rows(summary)
    feats = summary.get("features") or {}
    acc = accuracy_rows(summary)
    tables = {
        # the stages' total is the summary's and the manifest's stage_seconds (the run's wall clock adds start-up and this report)
        "stage_seconds": _table(["stage", "seconds"], [[k, f"{v:.2f}"] for k, v in durations.items()] + [["stages total", f"{summary.get('stage_seconds', sum(durations.values())):.2f}"]]),
        "counts": _table(["", "products"], [[k, v] for k, v in counts.items()]),
        "cache": _table(["modality", "encoder", "cached", "computed", "failed", "seconds"],
                        [[m, f.get("encoder"), f.get("cached"), f.get("computed"), f.get("failed"), f.get("seconds")] for m, f in feats.items()]),
        "accuracy": _table(["task", "method", "target accuracy"], [[t, m, f"{100 * a:.1f} %"] for t, m, a in acc]) if acc else "",
        "risk_coverage": _publication_tables(summary, predictions),
    }
    cards = [_card(title, rel(name), missing.get(name), tables.get(name, ""), wide=name == "domains") for name, (title, _, _) in makers.items()]
    title = f"prodkg run {summary.get('run_id', '')}"
    meta = (f"catalog <b>{html.escape(str(summary.get('catalog')))}</b>: {html.escape(', '.join(summary.get('source') or []))} → "
            f"{html.escape(', '.join(summary.get('target') or []))}, method <b>{html.escape(str(summary.get('method')))}</b>; "
            f"{html.escape(str((summary.get('counts') or {}).get('quads', 'n/a')))} triples → {html.escape(str(summary.get('store')))}")
    page = (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title><style>{_CSS}</style></head>"
            f"<body><h1>{html.escape(title)}</h1><p class=\"meta\">{meta}</p><div class=\"grid\">{''.join(cards)}</div></body></html>\n")
    path = run_dir / "report.html"
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return {"html": str(path), "figures": figures, "missing": missing, "reused": reused}


def _publication_tables(summary: dict, predictions: pd.DataFrame) -> str:
    rule = (f"published: precision target {100 * summary['min_precision']:g} % by the label-free estimate" if summary.get("min_precision")
            else f"published: fixed threshold {summary.get('threshold')}")
    out = f"<p>{html.escape(rule)}; level 0 is the taxonomy's top</p>"
    rows = publication_rows(summary)
    if rows:
        out += _table(["task", "level", "threshold", "estimator", "est. accuracy", "accuracy", "est. precision", "precision", "published",
                       "coverage"], rows)
    unknown = predictions[predictions["kind"] == "unknown"] if "kind" in predictions.columns else predictions.iloc[:0]
    out += f"<h2>Unknown products ({len(unknown)})</h2>"
    if len(unknown):
        top = unknown.sort_values("confidence", ascending=False).head(20)
        out += _table(["product", "unknown score"], [[pid, f"{c:.3f}"] for pid, c in zip(top["product_id"], top["confidence"])])
        if len(unknown) > 20:
            out += f"<p>the 20 most unlike the source of {len(unknown)}; the named query unknown_products lists them all</p>"
    return out


def write_report_safely(run_dir: Path, summary: dict, predictions: pd.DataFrame, embedding_sample: dict | None = None,
                        reuse_from: Path | None = None) -> dict:
    """:func:`write_report`, but a failure is logged as a warning and returned as ``{"error": ...}`` instead of raised."""
    try:
        return write_report(run_dir, summary, predictions, embedding_sample, reuse_from)
    except Exception as exc:  # the report is a by-product: the run it describes has already succeeded  # noqa: BLE001
        message = f"{type(exc).__name__}: {exc}"
        warn(f"run report not written: {message}")
        return {"error": message}


def find_chromium() -> str | None:
    """Path of a Chromium (or Chrome) binary, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def screenshot(html_path: str | os.PathLike, png_path: str | os.PathLike, *, chromium: str | None = None,
               width: int = 1400, height: int = 2000, timeout: float = 90.0) -> Path:
    """Render ``html_path`` in headless Chromium and save a PNG screenshot of it.

    Raises:
        StageError: no Chromium, it did not finish within ``timeout`` seconds, or it wrote no image.
    """
    binary = chromium or find_chromium()
    if not binary:
        raise StageError("no chromium binary found (Debian: apt-get install chromium)")
    html_path, png_path = Path(html_path).resolve(), Path(png_path).resolve()
    if not html_path.is_file():
        raise StageError(f"no such report: {html_path}")
    png_path.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="prodkg-chromium-") as profile:
        cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--hide-scrollbars", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
               f"--window-size={width},{height}", f"--screenshot={png_path}", html_path.as_uri()]
        # its own process group, so a hung browser and all its helper processes can be stopped together
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise StageError(f"chromium did not render {html_path} within {timeout:.0f} s") from None
    if not png_path.is_file() or png_path.stat().st_size == 0:
        raise StageError(f"chromium wrote no screenshot (exit {proc.returncode}): {output.decode(errors='replace')[-2000:]}")
    return png_path
