"""The run summary and metrics as Prefect artifacts of the flow run, so they show in the Prefect UI."""

from __future__ import annotations

__all__ = ["metrics_table", "publish_artifacts", "summary_markdown"]


def summary_markdown(summary: dict) -> str:
    """The run summary in Markdown: what was read, kept, predicted, published and changed."""
    c = summary.get("counts") or {}
    lines = [
        f"# prodkg run {summary.get('run_id')}",
        "",
        (f"catalog **{summary.get('catalog')}**: {', '.join(summary.get('source') or [])} → {', '.join(summary.get('target') or [])}, "
         f"method **{summary.get('method')}**"),
        "",
        "| | |",
        "|---|---|",
        f"| products in | {c.get('rows_in')} |",
        f"| quarantined | {c.get('quarantined')} (ingest {c.get('quarantined_ingest')}, extract {c.get('quarantined_extract')}) |",
        f"| kept | {c.get('products')} (source {c.get('source_products')}, target {c.get('target_products')}) |",
        f"| hidden on target (evaluation labels) | {', '.join(summary.get('hidden_labels') or []) or 'none'} |",
        f"| predictions | {c.get('predictions')} ({', '.join(f'{k} {v}' for k, v in (c.get('predictions_by_task') or {}).items())}) |",
        f"| triples in the graph | {c.get('quads')} |",
    ]
    if summary.get("graph_reused_from"):
        lines.append(f"| graph | republished unchanged: the content of run {summary['graph_reused_from']} |")
    changes = summary.get("changes") or {}
    if changes:
        lines.append("| changes | " + ", ".join(f"{k} {v}" for k, v in changes.items()) + " |")
    lines.append(f"| seconds | stages {summary.get('stage_seconds')} |")
    lines.append(f"| run directory | `{summary.get('run_dir')}` |")
    return "\n".join(lines) + "\n"


def metrics_table(summary: dict) -> list[dict]:
    """One row per count, accuracy, change and stage time of the run: name, value."""
    counts = summary.get("counts") or {}
    rows = [{"name": f"count: {k}", "value": v} for k, v in counts.items() if not isinstance(v, dict)]
    rows += [{"name": f"predictions: {task}", "value": n} for task, n in (counts.get("predictions_by_task") or {}).items()]
    for task, m in (summary.get("metrics") or {}).items():
        if isinstance(m, dict) and m.get("target_accuracy") is not None:
            rows.append({"name": f"target accuracy: {task}", "value": round(float(m["target_accuracy"]), 4)})
    base = summary.get("baseline_metrics") or {}
    if base.get("target_accuracy") is not None:
        rows.append({"name": f"target accuracy: category ({summary.get('baseline')})", "value": round(float(base["target_accuracy"]), 4)})
    rows += [{"name": f"changes: {k}", "value": v} for k, v in (summary.get("changes") or {}).items()]
    rows += [{"name": f"seconds: {k}", "value": v} for k, v in (summary.get("durations") or {}).items()]
    return rows


def publish_artifacts(summary: dict) -> None:
    """The summary (Markdown) and its metrics (a table) as artifacts of the current Prefect flow run."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    run = summary.get("run_id")
    create_markdown_artifact(markdown=summary_markdown(summary), key="prodkg-summary", description=f"prodkg run {run}")
    create_table_artifact(table=metrics_table(summary), key="prodkg-metrics", description=f"counts, accuracy, changes and seconds of run {run}")
