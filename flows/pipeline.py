"""The nightly flow: ingest → extract → adapt/predict → knowledge graph, with or without Prefect."""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from datetime import UTC, datetime

import pandas as pd

from prodkg.catalogs.stage import catalog_facts, ingest_stage, modalities_present, modality_items, unasserted_predictions
from prodkg.errors import CatalogError, ConfigError
from prodkg.failpoints import failpoint
from prodkg.flows.config import RunConfig
from prodkg.flows.dask_runner import describe as describe_task_runner
from prodkg.flows.dask_runner import extraction_shard_size, task_runner_for
from prodkg.flows.guard import image_limits_for, run_guard
from prodkg.flows.report import previous_run_dir, write_report_safely
from prodkg.flows.rundir import new_run_id, versions, write_json, write_table
from prodkg.layout import RunLayout
from prodkg.progress import stage_line


def configure_prefect(layout: RunLayout) -> None:
    """Prefect settings for an offline machine; values already set by the user win."""
    os.environ.setdefault("PREFECT_HOME", str(layout.prefect_home.resolve()))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def _in_flow_run() -> bool:
    """True inside a Prefect flow run (e.g. a served deployment's), where this pipeline runs as a subflow."""
    if "prefect" not in sys.modules:
        return False
    from prefect.context import FlowRunContext

    return FlowRunContext.get() is not None


def _runs_on_dask() -> bool:
    """True when the current flow run's task runner sends tasks to a Dask cluster (``--workers``, ``--dask-address``)."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    runner = getattr(ctx, "task_runner", None)
    return runner is not None and type(runner).__module__.split(".")[0] == "prefect_dask"


def _retry_transient(task, task_run, state) -> bool:
    """Prefect retries a failed stage only when the failure may pass: never a bad setting or a bad catalog."""
    try:
        state.result(raise_on_failure=True)
    except (ConfigError, CatalogError):
        return False
    except BaseException:  # noqa: BLE001 - anything else (a network read, a busy store) may be transient
        return True
    return True


class _Runner:
    """Calls a stage function directly, or as a Prefect task inside the flow."""

    def __init__(self, use_prefect: bool) -> None:
        self.use_prefect = use_prefect
        self._tasks = {}

    def __call__(self, fn, *args, name: str | None = None, retries: int = 0, **kwargs):
        if not self.use_prefect:
            return fn(*args, **kwargs)
        from prefect import task
        from prefect.cache_policies import NO_CACHE

        key = (fn, name, retries)
        if key not in self._tasks:
            # NO_CACHE: inputs are large frames and arrays, and a stage must really run each night
            self._tasks[key] = task(fn, name=name or fn.__name__, retries=retries, retry_delay_seconds=[1, 5, 20][:retries] or 0, cache_policy=NO_CACHE,
                                    retry_condition_fn=_retry_transient)
        return self._tasks[key](*args, **kwargs)

    def map(self, fn, arg_list: list[tuple], name: str | None = None) -> list:
        if not self.use_prefect:
            return [fn(*a) for a in arg_list]
        from prefect import task
        from prefect.cache_policies import NO_CACHE
        from prefect.futures import wait

        t = task(fn, name=name or fn.__name__, cache_policy=NO_CACHE)
        if not _runs_on_dask():
            # Prefect's default runner gives every submitted task a thread of its own (no bound): a million products'
            # 16 extraction shards ran side by side, each with its own batch of activations and torch's intra-op
            # threads, on the same cores (1 M, n-grams: peak 9.4 GiB against 5.9 as plain functions). A shard's work
            # is parallel inside; in threads the shards run one after another, each still a task run of its own.
            return [t(*a) for a in arg_list]
        futures = [t.submit(*a) for a in arg_list]
        wait(futures)
        return [f.result() for f in futures]


@contextmanager
def _timed(durations: dict, name: str, progress: bool = True):
    started = time.perf_counter()
    stage_line(f"{name} started", enabled=progress)
    try:
        yield
    finally:
        durations[name] = round(time.perf_counter() - started, 3)
        stage_line(f"{name} ended after {durations[name]:.1f} s", enabled=progress)


def _mirror(cfg: RunConfig):
    """The graph stage's server mirror for ``cfg.store_url`` (None: the local graph only)."""
    if not cfg.store_url:
        return None
    from prodkg.kb.remote import mirror_to_server

    return lambda path, run_id: mirror_to_server(path, run_id, cfg.store_url, update_url=cfg.store_update_url, gsp_url=cfg.store_gsp_url)


def _eval_labels(cfg: RunConfig, attributes: list[str]) -> list[str]:
    """The evaluation-label columns of this catalog; one that is neither category nor an attribute is a config error."""
    known = ["category", *attributes]
    unknown = [c for c in cfg.eval_labels if c not in known]
    if unknown:
        raise ConfigError(f"eval_labels: {', '.join(unknown)} not a label column of the catalog; it has: {', '.join(known)}")
    return list(cfg.eval_labels)


#: From this many products a run drops its encoders once its vectors are made (about 0.8 GiB at a million products);
#: below it they stay loaded for the next run in the same process (tests, a scheduler), which would reload them.
#: From this many too, the process serves arrays of a MiB or more from mappings of their own (prodkg.memory).
RELEASE_ENCODERS_AT = 100_000


def run_stages(cfg: RunConfig, run_id: str, runner: _Runner) -> dict:
    """Run every stage in order; write the run directory; return the summary."""
    from prodkg.flows.fastpath import try_fast_rerun

    # catalog, taxonomy, images, code and config unchanged since the last run (digest, sizes, mtimes): skip reading them again
    fast = try_fast_rerun(cfg, run_id, runner.use_prefect)
    if fast is not None:
        return fast
    from prodkg.extractors.cache import FeatureCache
    from prodkg.extractors.stage import assemble_features, extract_shard, shards
    from prodkg.kb.publish import FeatureHandoff, flat_taxonomy, graph_stage
    from prodkg.memory import map_large_blocks, trim_heap
    from prodkg.kb.triples import RunInfo, model_infos
    from prodkg.prediction.stage import predict_stage, publication_summary

    started_at = datetime.now(UTC)
    layout = cfg.layout
    run_dir = layout.run_dir(run_id)
    durations: dict[str, float] = {}
    tables: dict[str, dict] = {}

    limits = image_limits_for(cfg)  # which image files and URLs may be read, and how much (flows/guard.py)
    with _timed(durations, "ingest", cfg.progress):
        try:
            ing = runner(ingest_stage, cfg.ingest_settings(limits), name="ingest", retries=2)
        except CatalogError as exc:
            quarantined = getattr(exc, "quarantine", None)
            if quarantined is None or not len(quarantined):
                raise
            # nothing usable is left, but every row's reason is: write them where a kept run would
            run_dir.mkdir(parents=True, exist_ok=True)
            path = layout.table(run_id, "quarantine")
            write_table(quarantined.astype({"source_row": "Int64"}), path)
            raise CatalogError(f"{exc}; every reason is in {path}") from None
    hidden = _eval_labels(cfg, ing.attributes)
    if cfg.finetune:  # a refused fine-tuning stops the run before anything is extracted
        from prodkg.adaptation.stage import check_finetune

        check_finetune(cfg.finetune_settings(), ing.products)
    # Whole-catalog errors have been raised by now: only from here on is anything written.
    run_dir.mkdir(parents=True, exist_ok=True)
    tables["products_ingested"] = write_table(ing.products, layout.table(run_id, "products"))
    from prodkg.flows.fastpath import stat_signature

    signature = stat_signature(cfg, ing.products["image"].tolist())  # taken after the read: what this run's results come from
    failpoint("after-ingest")

    with _timed(durations, "extract", cfg.progress):
        settings, cache = cfg.extract_settings(limits), FeatureCache(layout.cache)
        spans = shards(len(ing.products), extraction_shard_size(cfg, len(ing.products)))
        results = {}
        for modality in modalities_present(ing.products):
            items = modality_items(ing.products, modality)
            results[modality] = runner.map(extract_shard, [(items[a:b], settings, modality, cache) for a, b in spans], name=f"extract-{modality}")
        ext = assemble_features(ing.products, results)  # moves the shards' vectors into one array, giving the heap back
    # concat of empty frames would reset column dtypes; skip them
    parts = [q for q in (ing.quarantine, ext.quarantine) if len(q)]
    quarantine = pd.concat(parts, ignore_index=True) if parts else ing.quarantine
    tables["quarantine"] = write_table(quarantine.astype({"source_row": "Int64"}), layout.table(run_id, "quarantine"))
    failpoint("after-extract")

    finetune = None
    if cfg.finetune:  # the image features become those of the fine-tuned last block; text features stay
        from prodkg.adaptation.stage import finetune_stage

        with _timed(durations, "finetune", cfg.progress):
            ext, finetune = runner(finetune_stage, ext, cfg.finetune_settings(), ing.source, layout.models(run_id),
                                   layout.finetune_cache if cfg.reuse_heads else None, name="finetune")

    views = None
    if cfg.source_views:  # shelf-style views of the source photos: more labelled rows for the heads, not products
        from prodkg.extractors.stage import extract_source_views

        with _timed(durations, "source_views", cfg.progress):
            views = runner(extract_source_views, ext, settings, ing.source, cache, cfg.source_views, cfg.seed, name="source-views")

    if len(ext.products) >= RELEASE_ENCODERS_AT:  # every vector of the run is made: the encoders' memory is the heads'
        from prodkg.extractors.stage import release_encoders

        release_encoders()
        # From here on, arrays of a MiB or more get mappings of their own, so what the heads and the graph stage free
        # goes back to the system. Not before: the encoders' activations, freed and made again every batch, would each
        # be faulted in again (MiniLM 25-40 % slower); the shards' vectors have mappings of their own (mapped_zeros).
        map_large_blocks()
    # Reviewers' decisions (kb/curation.py): reviewed target products are labelled data for the category head
    from prodkg.kb.curation import DecisionStore, reviewed_labels

    decisions = DecisionStore(layout.decisions).latest()
    target_ids = ext.products.loc[ext.products["domain"].isin(ing.target), "product_id"].astype(str)
    reviewed = reviewed_labels(decisions, target_ids)
    with _timed(durations, "adapt_predict", cfg.progress):
        # what the heads are fitted from, recorded by every run, so a later run can keep them (flows/keep_heads.py)
        from prodkg.flows.keep_heads import PRODUCT_DIGESTS, KeepPlan, heads_basis, keep_stage, plan_keep, product_digests
        from prodkg.kb.curation import curation_digest

        digests = product_digests(ext.products, ext.features, ing.source, ing.target, ing.attributes)
        basis = heads_basis(digests, settings=cfg.heads_fingerprint(), taxonomy=ing.taxonomy, curation=curation_digest(decisions) if decisions else None,
                            attributes=ing.attributes, fitted_by=run_id)
        plan = plan_keep(layout.runs, run_id, digests, basis, cfg.keep_heads_max_drift) if cfg.keep_heads else None
        # written now and let go of: a million products' digests are 0.1-0.2 GiB of Python objects the heads do not read
        tables[PRODUCT_DIGESTS] = write_table(digests, layout.table(run_id, PRODUCT_DIGESTS))
        del digests
        kept = None
        if isinstance(plan, KeepPlan):
            pred, kept = runner(keep_stage, plan, ext.products, ext.features, layout.models(run_id), name="adapt-predict")
            basis["fitted_by"] = plan.fitted_by
        else:
            if plan is not None:
                kept = {"kept": False, "reason": plan}
            pred = runner(predict_stage, ext.products, ext.features, cfg.predict_settings(), ing.source, ing.target, ing.attributes,
                          layout.models(run_id), layout.heads_cache if cfg.reuse_heads else None, ing.taxonomy, reviewed, views=views, name="adapt-predict")
        trim_heap()  # what fitting and scoring freed
    # Asserted beats predicted: target rows keep every asserted value except their evaluation labels, and a
    # prediction is kept only where the catalog asserts no value for its task.
    graph_products = catalog_facts(ext.products, ing.target, hidden, base_dir=ing.base_dir)
    pred.predictions, n_superseded = unasserted_predictions(pred.predictions, graph_products)
    tables["predictions"] = write_table(pred.predictions, layout.table(run_id, "predictions"))
    failpoint("after-predict")

    with _timed(durations, "graph", cfg.progress):
        models = model_infos(ext.stats, pred.models)
        info = RunInfo(run_id=run_id, started=started_at, ended=datetime.now(UTC), catalog=ing.catalog_name, method=cfg.method,
                       source_domains=ing.source, target_domains=ing.target, models=models, config_hash=cfg.fingerprint())
        taxonomy = ing.taxonomy or flat_taxonomy(ext.products, pred.predictions)
        # the graph stage is the features' last reader: handed over, they are freed before the store's bulk load
        handoff, ext.features = FeatureHandoff(ext.features), None
        graph = runner(graph_stage, graph_products, pred.predictions, taxonomy, ing.attributes, info, cfg.graph_settings(), ing.catalog_name,
                       layout=layout, mirror=_mirror(cfg), features=handoff, curation=decisions, name="graph", retries=2)

    failpoint("after-graph")
    n_quarantined = len(quarantine)
    counts = {
        "rows_in": ing.n_in,
        "rows_out_of_scope": ing.n_out_of_scope,
        "kept_after_ingest": len(ing.products),
        "quarantined_ingest": len(ing.quarantine),
        "quarantined_extract": len(ext.quarantine),
        "quarantined": n_quarantined,
        "products": len(ext.products),
        "source_products": int(ext.products["domain"].isin(ing.source).sum()),
        "target_products": int(ext.products["domain"].isin(ing.target).sum()),
        "predictions": len(pred.predictions),
        "predictions_by_task": {str(k): int(v) for k, v in pred.predictions["task"].value_counts().sort_index().items()},
        # a product may have several rows per task (one per taxonomy level, and one of kind "unknown" when it is flagged)
        "predicted_products_by_task": {str(k): int(v) for k, v in pred.predictions.groupby("task")["product_id"].nunique().sort_index().items()},
        "predictions_superseded_by_asserted": n_superseded,
        "quads": graph["quads"],
    }
    assert counts["rows_in"] == counts["products"] + n_quarantined, "row counts must reconcile"
    summary = {
        "run_id": run_id,
        "run_dir": str(run_dir),
        "store": graph["store"],
        "catalog": ing.catalog_name,
        "source": ing.source,
        "target": ing.target,
        "method": cfg.method,
        "baseline": cfg.baseline,
        "threshold": cfg.threshold,
        "min_precision": cfg.min_precision if cfg.threshold is None else None,
        # per task: what was published (by level), the label-free accuracy estimates and, with target labels,
        # the measured precision, coverage, ECE and risk-coverage curve (metrics[task]["publication" / "evaluation"])
        "published": publication_summary(pred.metrics),
        "counts": counts,
        "features": ext.stats,
        "finetune": finetune,
        "source_views": None if views is None else views.stats,
        "metrics": pred.metrics,
        "baseline_metrics": pred.baseline,
        "skipped_tasks": pred.skipped,
        "hidden_labels": hidden,  # target columns used only to measure accuracy, never shown to a model or the graph
        "durations": durations,
        "stage_seconds": round(sum(durations.values()), 3),  # the report's total; total_seconds adds start-up, tables and report
        "changes": graph.get("changes"),
        # an unchanged re-run republishes this run's graph content instead of rebuilding it
        "graph_reused_from": graph.get("reused_graph_of"),
        # how the graph was published: "unchanged" (reused), "incremental" (only changed products rewritten) or
        # "full" (rebuilt), with the reason a full rebuild was needed
        "graph_update": graph.get("update"),
        # with keep_heads: whose heads scored which products, and what was carried over; or why they were fitted again
        "keep_heads": kept,
        "server": graph.get("server"),
        "warnings": ing.warnings,
        # decisions in force, and the reviewed target products the category head learned from (not evaluated)
        "curation": curation_summary(decisions, pred.metrics.get("category", {})),
    }
    manifest = {
        **summary,
        "started": started_at.isoformat(),
        "ended": datetime.now(UTC).isoformat(),
        "config": cfg.to_dict(),
        "config_hash": cfg.fingerprint(),
        "seed": cfg.seed,
        "input_hash": ing.input_hash,
        "versions": versions(),
        "models": pred.models,
        "tables": tables,
        "orchestrator": "prefect" if runner.use_prefect else "direct",
        "extraction_ran_on": describe_task_runner(cfg),
        "heads_basis": basis,  # what the heads were fitted from, and by which run (flows/keep_heads.py)
        "stat_signature": signature,  # the next run with the same signature republishes without reading (flows/fastpath.py)
    }
    # a run whose graph is published is a good run: a failing figure only leaves a note in the manifest
    # figures drawn from the same data as the previous run's are copied from it, not drawn again
    report_started = time.perf_counter()
    manifest["report"] = write_report_safely(run_dir, summary, pred.predictions, pred.embedding_sample, reuse_from=previous_run_dir(run_dir))
    manifest["report"]["seconds"] = round(time.perf_counter() - report_started, 3)
    summary["report"] = manifest["report"].get("html")
    write_json(manifest, layout.manifest(run_id))
    return summary


def run_pipeline(cfg: RunConfig, run_id: str | None = None) -> dict:
    """Run the whole pipeline once; as a Prefect flow unless ``cfg.use_prefect`` is false.

    The configuration's inputs (catalog file, domains) are checked first, so a bad setting is
    refused before Prefect starts and before anything is read in full, extracted or written. One run
    at a time per output folder (OutputBusyError names the holder); I/O faults raise ResourceError.
    """
    cfg.check_inputs()
    run_id = run_id or new_run_id()
    with run_guard(cfg, run_id):  # one run at a time per output folder, taken before any work; I/O faults → ResourceError
        return _run_pipeline(cfg, run_id)


def _run_pipeline(cfg: RunConfig, run_id: str) -> dict:
    total_started = time.perf_counter()
    if not cfg.use_prefect:
        summary = run_stages(cfg, run_id, _Runner(False))
    else:
        if not _in_flow_run():
            # inside a served deployment's run the server's settings are already in force: keep them
            configure_prefect(cfg.layout)
        from prefect import flow

        # One flow run; the Dask task runner, when asked for, only gets the extraction shards (the one stage
        # submitted, not called). A scheduled deployment runs flows.schedule.nightly, the same stages.
        @flow(name="prodkg-nightly", flow_run_name=f"prodkg-{run_id}", validate_parameters=False, task_runner=task_runner_for(cfg))
        def nightly(cfg: RunConfig, run_id: str) -> dict:
            from prodkg.flows.artifacts import publish_artifacts

            result = run_stages(cfg, run_id, _Runner(True))
            publish_artifacts(result)
            return result

        summary = nightly(cfg, run_id)
    summary["total_seconds"] = round(time.perf_counter() - total_started, 3)
    _record_total(summary)
    return summary


def _record_total(summary: dict) -> None:
    """Add the run's wall-clock seconds to its manifest (known only once the flow has returned)."""
    import json
    from pathlib import Path

    path = Path(summary["run_dir"]) / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    manifest["total_seconds"] = summary["total_seconds"]
    write_json(manifest, path)


def curation_summary(decisions, category_metrics: dict) -> dict:
    """The manifest's ``curation`` entry: decisions in force, the reviewed target products the category head learned
    from (not evaluated), and those that calibrated the publication rule (out of fold, or held out) with what they showed."""
    out = {"decisions": len(decisions), "reviewed_target_rows_used": int(category_metrics.get("n_target_reviewed", 0))}
    split = category_metrics.get("review_split")
    if split:
        out["reviewed_target_rows_calibration"] = int(split["n_calibration"])
        if split.get("mode") == "cross-fit" and split["n_calibration"]:  # every review trained; each calibrated through its fold's head
            out["calibration_folds"] = int(split["folds"])
        calibration = (category_metrics.get("publication") or {}).get("calibration")
        if calibration:
            out["calibration_precision"] = {"published": calibration["n_published"], "right": calibration["n_published_right"],
                                            "lower_bound": calibration["precision_bound"], "confidence": calibration["confidence"]}
        elif split.get("reason"):
            out["calibration_note"] = split["reason"]
    return out
