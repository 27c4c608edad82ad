"""The run page's content: what changed since the previous run, per-category quality, what to look at."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["category_quality", "run_report"]

_COMPARED = ("title", "description", "image", "category")


def category_quality(truth: pd.Series, predicted: pd.Series) -> dict:
    """Precision, recall and support per class, accuracy, and the confusion matrix (rows: true, columns: predicted)."""
    classes = sorted(set(truth) | set(predicted))
    index = {c: i for i, c in enumerate(classes)}
    matrix = np.zeros((len(classes), len(classes)), dtype=int)
    for t, p in zip(truth, predicted, strict=True):
        matrix[index[t], index[p]] += 1
    rows = []
    for c, i in index.items():
        tp = int(matrix[i, i])
        predicted_n, support = int(matrix[:, i].sum()), int(matrix[i, :].sum())
        rows.append({"category": c, "precision": tp / predicted_n if predicted_n else None, "recall": tp / support if support else None,
                     "support": support, "predicted": predicted_n})
    total = int(matrix.sum())
    confusions = sorted(((int(matrix[i, j]), classes[i], classes[j]) for i in range(len(classes)) for j in range(len(classes))
                         if i != j and matrix[i, j]), reverse=True)
    return {"classes": classes, "matrix": matrix.tolist(), "per_class": rows, "accuracy": float(np.trace(matrix) / total) if total else None,
            "n": total, "top_confusions": confusions[:20]}


def run_report(data, run_id: str) -> dict:
    return _report(data, run_id, _version(data))


def _version(data) -> tuple:
    # a new decision changes which target products are evaluated; a new run folder changes "previous"
    return (len(data.decisions.all()), tuple(data.run_ids()[-2:]))


def _report(data, run_id: str, version: tuple) -> dict:
    cache = data.__dict__.setdefault("_reports", {})
    key = (run_id, version)
    if key not in cache:
        if len(cache) > 16:
            cache.clear()
        cache[key] = _build(data, run_id)
    return cache[key]


def _build(data, run_id: str) -> dict:
    tables = data.run(run_id)
    manifest = tables.manifest
    previous_id = data.previous_run(run_id)
    report: dict = {"run_id": run_id, "previous": previous_id, "manifest": manifest, "threshold": tables.threshold,
                    "metrics": manifest.get("metrics", {}).get("category", {}), "counts": manifest.get("counts", {}),
                    "curation": manifest.get("curation", {})}

    # --- what changed since the previous run ---------------------------------------------------------
    cur = tables.products.set_index(tables.products["product_id"].astype(str))
    changes = {"added": [], "removed": [], "changed": [], "prediction_changed": []}
    if previous_id is not None:
        prev_tables = data.run(previous_id)
        prev = prev_tables.products.set_index(prev_tables.products["product_id"].astype(str))
        changes["added"] = sorted(set(cur.index) - set(prev.index))
        changes["removed"] = sorted(set(prev.index) - set(cur.index))
        both = sorted(set(cur.index) & set(prev.index))
        cols = [c for c in _COMPARED if c in cur.columns and c in prev.columns]
        if both and cols:
            a = cur.loc[both, cols].astype(object).fillna("").astype(str)  # NaN != NaN: a missing image is no change
            b = prev.loc[both, cols].astype(object).fillna("").astype(str)
            changes["changed"] = list(a.index[(a != b).any(axis=1)])
        pc, pp = tables.categories, prev_tables.categories
        common = pc.index.intersection(pp.index)
        moved = common[pc.loc[common, "value"].to_numpy() != pp.loc[common, "value"].to_numpy()]
        changes["prediction_changed"] = [{"product_id": pid, "before": pp.loc[pid, "value"], "after": pc.loc[pid, "value"],
                                          "confidence": float(pc.loc[pid, "confidence"])} for pid in moved[:200]]
        changes["n_prediction_changed"] = int(len(moved))
    report["changes"] = changes

    # --- per-category quality on the target labels (evaluation only; reviewed products left out) ----
    decided = data.decisions_in_force()
    target = tables.products[tables.products["domain"].isin(tables.target)] if "domain" in tables.products else tables.products.iloc[:0]
    labelled = target[target["category"].notna() & (target["category"].astype(str) != "")] if "category" in target else target.iloc[:0]
    labelled = labelled[~labelled["product_id"].astype(str).isin(decided)]
    ids = labelled["product_id"].astype(str)
    have = ids[ids.isin(tables.categories.index)]
    report["quality"] = None
    if len(have):
        truth = labelled.set_index(labelled["product_id"].astype(str)).loc[have, "category"].astype(str)
        predicted = tables.categories.loc[have, "value"].astype(str)
        report["quality"] = category_quality(truth, predicted)
        report["quality"]["show_matrix"] = len(report["quality"]["classes"]) <= 25

    # --- what to look at: low-confidence and unknown, and the quarantine ------------------------------
    cats = tables.categories
    target_ids = set(tables.target_ids)
    # not published: below the run's threshold, or outside what its precision target let through
    low = cats[~cats["published"].astype(bool) & cats.index.isin(target_ids)].sort_values("confidence")
    unknown = tables.unknown.sort_values("confidence", ascending=False)
    report["low_confidence"] = [{"product_id": pid, "value": r["value"], "confidence": float(r["confidence"])} for pid, r in low.head(60).iterrows()]
    report["n_low_confidence"] = int(len(low))
    report["unknown"] = [{"product_id": pid, "confidence": float(r["confidence"])} for pid, r in unknown.head(60).iterrows()]
    report["n_unknown"] = int(len(unknown))
    q = tables.quarantine
    report["quarantine"] = q.head(200).to_dict("records")
    report["n_quarantine"] = int(len(q))
    report["quarantine_reasons"] = q["reason"].astype(str).str.split(":").str[0].value_counts().head(10).to_dict() if len(q) else {}
    return report
