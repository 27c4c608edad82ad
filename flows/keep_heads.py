"""Kept heads: a nightly run that scores with the previous good run's heads instead of training them again.

When a few target products change overnight, training the heads again changes every model id and
so every prediction, and the graph stage has to rebuild the whole graph. With ``keep_heads`` a run
whose previous complete run *qualifies* trains nothing: it loads that run's saved heads, carries
over verbatim the prediction rows of target products whose catalog row and features are unchanged,
and scores only the added and changed target products with the saved heads under the recorded
publication rule (as ``prodkg predict`` does: :func:`prediction.scoring.score_features`). Removed
products drop out. Unchanged model ids and prediction rows then let the graph stage update the live
graph incrementally (:mod:`kb.graph_update`).

The previous run qualifies when it is complete (it wrote its manifest; a failed or killed run never
does) and its *heads basis* (recorded by every run) matches this run's: the same source-domain rows
(ids, catalog rows with their labels, feature digests), the same settings that shape the heads
(:meth:`flows.config.RunConfig.heads_fingerprint`), the same taxonomy and the same curation
decisions; and the target has not drifted too far since the heads were *fitted*: the target products
added, changed or removed since the run that fitted them (not only since last night, so drift adds
up over kept nights) are at most ``keep_heads_max_drift`` of that run's target. Otherwise the run
trains as usual and its manifest's ``keep_heads`` says why in one line.

Every run writes ``runs/<run_id>/product_digests.parquet`` (per product: its role, two 64-bit
fingerprints of its catalog row and two of its feature vectors) and the manifest's ``heads_basis``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from prodkg.frames import members

__all__ = ["PRODUCT_DIGESTS", "KeepPlan", "heads_basis", "keep_stage", "plan_keep", "product_digests", "summary_line"]

#: the stage table (``runs/<id>/product_digests.parquet``) of per-product fingerprints the next run compares with
PRODUCT_DIGESTS = "product_digests"

_FP = ("row_fp", "row_fp2", "feat_fp", "feat_fp2")
_FP_ROWS = 16384  # rows hashed per byte matrix (25 MiB of 384 floats)


def feature_fingerprints(features) -> np.ndarray:
    """Two uint64 per row (shape ``(n, 2)``) over every modality's vector and presence (a MultiModal's rows).

    Each row's blake2b-128 of, modality by modality (sorted by name), a presence byte and the vector's bytes. Made
    a chunk of rows at a time as one byte matrix, hashed a row per call (40,000 rows of 384 floats: 0.13 s against
    0.19 s feeding the hash piece by piece, the same digests)."""
    names = sorted(features.blocks)
    n = len(features.present[names[0]]) if names else 0
    out = np.empty((n, 2), dtype=np.uint64)
    for start in range(0, n, _FP_ROWS):
        stop = min(n, start + _FP_ROWS)
        parts = []
        for m in names:
            block = np.ascontiguousarray(features.blocks[m][start:stop])
            parts.append(np.asarray(features.present[m][start:stop], bool).astype(np.uint8)[:, None])
            parts.append(block.reshape(stop - start, -1).view(np.uint8))
        rows = np.concatenate(parts, axis=1)
        digests = b"".join([hashlib.blake2b(row, digest_size=16).digest() for row in rows])
        out[start:stop] = np.frombuffer(digests, dtype=np.uint64).reshape(-1, 2)
    return out


def product_digests(products: pd.DataFrame, features, source: list[str], target: list[str], attributes: list[str]) -> pd.DataFrame:
    """Per product, in the products' order: ``product_id``, ``role`` (source, target or other) and the fingerprints of
    its catalog row (the cells the graph is built from, labels included: :func:`kb.graph_update.catalog_fingerprints`)
    and of its feature vectors."""
    from prodkg.kb.graph_update import catalog_fingerprints

    rows = catalog_fingerprints(products, attributes)
    feats = feature_fingerprints(features)
    domain = products["domain"]
    role = np.where(domain.isin(source), "source", np.where(domain.isin(target), "target", "other"))
    return pd.DataFrame({"product_id": rows["product_id"].to_numpy(dtype=object), "role": role,
                         "row_fp": rows["row_fp"].to_numpy(np.uint64), "row_fp2": rows["row_fp2"].to_numpy(np.uint64),
                         "feat_fp": feats[:, 0], "feat_fp2": feats[:, 1]})


def heads_basis(digests: pd.DataFrame, *, settings: str, taxonomy: list[tuple] | None, curation: str | None,
                attributes: list[str], fitted_by: str) -> dict:
    """What the heads were fitted from, as the manifest's ``heads_basis``: digests of the source rows, the settings,
    the taxonomy and the curation decisions, the target's size and the run that fitted the heads."""
    src = digests[digests["role"] == "source"].sort_values("product_id", kind="stable")
    h = hashlib.sha256(json.dumps({"attributes": list(attributes)}).encode())
    h.update("\x1f".join(src["product_id"].astype(str)).encode("utf-8", "surrogateescape"))
    for c in _FP:
        h.update(np.ascontiguousarray(src[c].to_numpy(np.uint64)).tobytes())
    tax = hashlib.sha256(json.dumps([list(t) for t in taxonomy or []]).encode()).hexdigest()[:16]
    return {"fitted_by": fitted_by, "source": h.hexdigest()[:32], "settings": settings, "taxonomy": tax, "curation": curation,
            "n_source": len(src), "n_target": int((digests["role"] == "target").sum())}


@dataclass
class KeepPlan:
    """A qualified previous run and what this run does with its heads."""

    previous: str  #: the run whose heads, rule and prediction rows are taken
    previous_dir: Path
    manifest: dict  #: its manifest
    fitted_by: str  #: the run that fitted the heads (the previous run, or the one it kept them from)
    carried: list[str]  #: target product ids whose prediction rows are carried over
    scored: np.ndarray  #: positions in the products frame of the target products to score
    drift: dict  #: added, changed, removed target products since the fitting run, its target size, the share, the bound
    previous_predictions: pd.DataFrame  #: the previous run's prediction rows (read once, here, so a bad file refits)
    removed: int = 0  #: target products of the previous run that this run lacks (they drop out)


def _latest_complete_run(runs: Path, run_id: str) -> tuple[Path, dict] | None:
    """The newest run folder besides ``run_id`` with a readable manifest: the last run that completed (a failed or
    killed run writes none)."""
    try:
        candidates = sorted((p for p in runs.iterdir() if p.is_dir() and p.name != run_id and (p / "manifest.json").is_file()),
                            key=lambda p: p.name, reverse=True)
    except OSError:
        return None
    for folder in candidates:
        try:
            return folder, json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # the newest complete run is unreadable: never reach past it to an older one
    return None


def _read_digests(path: Path) -> pd.DataFrame | None:
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError, ImportError):
        return None
    return frame if {"product_id", "role", *_FP} <= set(frame.columns) else None


def _compare(current: pd.DataFrame, before: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, int]:
    """Target rows of ``current`` against the target rows of ``before``: (new, changed) masks over ``current``'s
    target rows, and how many of ``before``'s target products are gone."""
    now = current[current["role"] == "target"]
    then = before[before["role"] == "target"]
    at = pd.Index(then["product_id"].astype(str)).get_indexer(now["product_id"].astype(str))
    new = at < 0
    matched = then.iloc[np.where(new, 0, at)]
    same = np.ones(len(now), bool)
    for c in _FP:
        same &= now[c].to_numpy(np.uint64) == matched[c].to_numpy(np.uint64)
    changed = ~new & ~same
    gone = int((~members(then["product_id"].astype(str), now["product_id"].astype(str))).sum())
    return new, changed, gone


def plan_keep(runs: Path, run_id: str, digests: pd.DataFrame, basis: dict, max_drift: float) -> KeepPlan | str:
    """The previous complete run's heads to keep, or in one line why this run trains them again.

    ``runs`` is the output folder's ``runs/``; ``digests`` and ``basis`` are this run's (:func:`product_digests`,
    :func:`heads_basis`); ``max_drift`` bounds the share of the fitting run's target added, changed or removed since.
    """
    found = _latest_complete_run(runs, run_id)
    if found is None:
        return "no earlier complete run in this output folder"
    prev_dir, prev = found
    name = prev_dir.name
    recorded = prev.get("heads_basis")
    if not recorded:
        return f"run {name} recorded no heads basis (made before kept heads)"
    if not prev.get("models"):
        return f"run {name} saved no head"
    for key, what in (("settings", "the settings that shape the heads"), ("source", "the source rows (ids, labels or features)"),
                      ("taxonomy", "the taxonomy"), ("curation", "the curation decisions")):
        if recorded.get(key) != basis[key]:
            return f"{what} differ from run {name}'s"
    before = _read_digests(prev_dir / f"{PRODUCT_DIGESTS}.parquet")
    if before is None:
        return f"run {name} left no readable {PRODUCT_DIGESTS}.parquet"
    fitted_by = recorded.get("fitted_by") or name
    fitted = before if fitted_by == name else _read_digests(runs / fitted_by / f"{PRODUCT_DIGESTS}.parquet")
    if fitted is None:
        return f"the run that fitted the heads ({fitted_by}) left no readable {PRODUCT_DIGESTS}.parquet"
    since_fit = _compare(digests, fitted)
    new, changed, gone = since_fit
    n_fitted = int((fitted["role"] == "target").sum())
    moved = int(new.sum() + changed.sum()) + gone
    share = moved / max(n_fitted, 1)
    drift = {"added": int(new.sum()), "changed": int(changed.sum()), "removed": gone, "of": n_fitted, "share": round(share, 6),
             "bound": max_drift, "since": fitted_by}
    if share > max_drift:
        return (f"{moved:,} of {n_fitted:,} target products added, changed or removed since run {fitted_by} fitted the heads "
                f"({share:.1%}, more than the bound of {max_drift:.0%})")
    try:
        previous_predictions = pd.read_parquet(prev_dir / "predictions.parquet")
    except (OSError, ValueError, ImportError) as exc:
        return f"run {name}'s predictions.parquet cannot be read ({type(exc).__name__})"
    # carried over: target products whose catalog row and features are those of the previous run (it predicted them)
    new_prev, changed_prev, removed = since_fit if fitted is before else _compare(digests, before)
    target_rows = np.flatnonzero((digests["role"] == "target").to_numpy())
    keep = ~(new_prev | changed_prev)
    return KeepPlan(previous=name, previous_dir=prev_dir, manifest=prev, fitted_by=fitted_by,
                    carried=digests["product_id"].iloc[target_rows[keep]].astype(str).tolist(), scored=target_rows[~keep], drift=drift,
                    previous_predictions=previous_predictions, removed=removed)


def _link_models(entries: list[dict], prev_dir: Path, models_dir: Path) -> list[dict]:
    """The previous run's head records with their saved files hard-linked into this run's ``models/`` (its own copy:
    ``prodkg predict --model`` on this run works when the fitting run's folder is gone), paths rewritten."""
    from prodkg.flows.fastpath import _link_copy

    models_dir.mkdir(parents=True, exist_ok=True)

    def link(recorded: str | None) -> str | None:
        if not recorded:
            return recorded
        src = prev_dir / "models" / Path(recorded).name
        src = src if src.exists() else Path(recorded)
        dst = models_dir / src.name
        if src.is_dir():
            shutil.copytree(src, dst, copy_function=_link_copy, dirs_exist_ok=True)
        elif src.is_file():
            _link_copy(src, dst)
        return str(dst)

    out = []
    for entry in entries:
        entry = json.loads(json.dumps(entry))  # a copy: the previous manifest stays as read
        entry["path"] = link(entry.get("path"))
        if entry.get("baseline"):
            entry["baseline"]["path"] = link(entry["baseline"].get("path"))
        if entry.get("prototypes"):
            entry["prototypes"] = link(entry["prototypes"])
        for fold in entry.get("folds") or []:  # saved inside the head's folder (prediction.stage), linked with it above
            fold["path"] = str(Path(entry["path"]) / "folds" / str(int(fold["fold"])))
        out.append(entry)
    return out


def keep_stage(plan: KeepPlan, products: pd.DataFrame, features, models_dir: Path):
    """The adapt-predict stage with kept heads: a :class:`prediction.stage.PredictOutput` whose predictions are the
    previous run's rows of the carried-over products and the saved heads' scores of the others, and a record of it.

    Metrics, baseline metrics and skipped tasks are the previous run's (those of the fitted heads and their rule).
    """
    from prodkg.contracts import PREDICTIONS, check_table
    from prodkg.prediction.scoring import load_saved_model, score_features
    from prodkg.prediction.stage import PredictOutput

    saved = load_saved_model(plan.previous_dir)
    previous = plan.previous_predictions
    carried = previous[members(previous["product_id"].astype(str), plan.carried)]
    frames = [carried]
    summary = {}
    if len(plan.scored):
        ids = products["product_id"].astype(str).iloc[plan.scored].tolist()
        scored, summary = score_features(saved, features.subset(plan.scored), ids)
        frames.append(scored)
    predictions = pd.concat(frames, ignore_index=True) if len(frames) > 1 else carried.reset_index(drop=True)
    # rows in the products' order (a product's own rows keep theirs), as a full run writes them
    order = pd.Series(np.arange(len(products)), index=products["product_id"].astype(str).to_numpy())
    position = order.reindex(predictions["product_id"].astype(str).to_numpy()).to_numpy()
    predictions = predictions.iloc[np.argsort(position, kind="stable")].reset_index(drop=True)
    predictions = check_table(predictions[PREDICTIONS.columns], PREDICTIONS)
    prev = plan.manifest
    models = _link_models(prev.get("models") or [], plan.previous_dir, models_dir)
    record = {"kept": True, "from_run": plan.previous, "fitted_by": plan.fitted_by, "products_scored": len(plan.scored),
              "products_carried_over": len(plan.carried),
              "products_removed": plan.removed, "target_drift": plan.drift,
              "published_of_scored": {t: s.get("n_published") for t, s in summary.items()}}
    out = PredictOutput(predictions=predictions, metrics=prev.get("metrics") or {}, baseline=prev.get("baseline_metrics"), models=models,
                        skipped=prev.get("skipped_tasks") or {}, embedding_sample=None)
    return out, record


def summary_line(record: dict | None) -> str | None:
    """The run summary's one line about kept heads (None: the setting is off)."""
    if not record:
        return None
    if not record.get("kept"):
        return f"fitted again: {record['reason']}"
    d = record["target_drift"]
    return (f"kept from run {record['from_run']} (fitted by {record['fitted_by']}): {record['products_scored']:,} target products "
            f"scored, {record['products_carried_over']:,} carried over, {record['products_removed']:,} removed; target drift since the fit {d['share']:.1%} "
            f"(bound {d['bound']:.0%}); accuracy and publication figures are those of the fit")
