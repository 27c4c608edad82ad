"""The unchanged re-run fast path: when nothing a run reads has changed, republish without reading it again.

As make and rsync decide from file metadata, a nightly run first computes a *stat signature*:
the configuration fingerprint, the sha256 of the catalog file (or the size and mtime of every
file of a registered dataset), of the taxonomy file, the size and mtime of every local image the
previous run read, and the size and mtime of prodkg's own source files. When it equals the one
the previous run recorded in its manifest, and the live graph is still the one that run
published, the run skips ingest validation, feature reads, prediction and the graph build: it
links the previous run's tables, publishes the live graph plus this run's provenance (exactly
what the content-digest path of the graph stage publishes for unchanged content), and reuses
the report's figures. ``--full-check`` (``RunConfig.full_check``) always takes the full path.

No fast path (the full path decides, as before) for: catalogs read through fsspec URLs, image
URLs, ``--retrain``, backbone fine-tuning, a SPARQL server mirror, a previous run without a
signature, or any error while checking.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["stat_signature", "try_fast_rerun"]

_PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # the installed prodkg package (its source files)
_SKIP_DIRS = {"__pycache__", ".venv", "runs", "tests", "docs", "bench", ".git"}


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _stat_tree(root: Path, digest, *, code_only: bool = False, skip: Path | None = None) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and (skip is None or Path(dirpath, d).resolve() != skip))
        for name in sorted(filenames):
            if not code_only or name.endswith((".py", ".ttl", ".rq")):
                st = os.stat(os.path.join(dirpath, name))
                digest.update(f"{os.path.relpath(os.path.join(dirpath, name), root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())


def _image_paths(images) -> list[str] | None:
    """Local image paths to stat, or None when an image is a URL (no cheap way to tell it is unchanged)."""
    paths = []
    for v in images:
        if not isinstance(v, str) or not v:
            continue
        if "://" in v and not v.startswith("file://"):
            return None
        paths.append(v[len("file://"):] if v.startswith("file://") else v)
    return paths


def stat_signature(cfg, images) -> str | None:
    """The run's stat signature (see the module docstring), or None where no fast path applies.

    ``images``: the image references of the products the run read (the products table's column).
    """
    try:
        return _stat_signature(cfg, images)
    except Exception:  # noqa: BLE001 - the signature is a by-product: without one the next run takes the full path
        return None  # no signature: the next run takes the full path


def _stat_signature(cfg, images) -> str | None:
    if cfg.finetune or not cfg.reuse_heads or cfg.store_url:
        return None
    digest = hashlib.sha256(b"prodkg-stat-v1\0")
    digest.update(cfg.fingerprint().encode())
    if cfg.catalog:
        if "://" in str(cfg.catalog) and not str(cfg.catalog).startswith("file://"):
            return None
        path = Path(str(cfg.catalog).removeprefix("file://"))
        if not path.is_file():
            return None
        digest.update(b"catalog\0" + _file_sha256(path).encode())
    elif cfg.dataset:
        from prodkg.catalogs.loaders import DATASETS, data_home

        home = data_home(cfg.data_home)
        if home is None:
            return None
        folder = home / DATASETS.get(cfg.dataset).folder
        if not folder.is_dir():
            return None
        digest.update(b"dataset\0")
        _stat_tree(folder, digest)
    else:
        return None
    if cfg.taxonomy:
        path = Path(cfg.taxonomy)
        if not path.is_file():
            return None
        digest.update(b"taxonomy\0" + _file_sha256(path).encode())
    paths = _image_paths(images)
    if paths is None:
        return None
    digest.update(b"images\0")
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            return None
        digest.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    digest.update(b"code\0")
    _stat_tree(_PACKAGE_ROOT, digest, code_only=True, skip=Path(cfg.out).resolve())
    return digest.hexdigest()


# manifest fields that describe the run itself rather than its results: not part of the summary a run returns
_MANIFEST_ONLY = {"started", "ended", "config", "config_hash", "seed", "input_hash", "versions", "models", "tables", "orchestrator",
                  "extraction_ran_on", "stat_signature", "heads_basis", "report", "total_seconds", "fast_path"}


def _previous_manifest(layout, run_id: str) -> tuple[Path, dict] | None:
    try:
        runs = sorted((p for p in layout.runs.iterdir() if p.name != run_id and (p / "manifest.json").is_file()), key=lambda p: p.name)
    except OSError:
        return None
    if not runs:
        return None
    try:
        return runs[-1], json.loads((runs[-1] / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    _link_copy(src, dst)


def try_fast_rerun(cfg, run_id: str, use_prefect: bool) -> dict | None:
    """Run the fast path when it applies; return the run's summary, or None to take the full path."""
    if cfg.full_check:
        return None
    started_at = datetime.now(UTC)
    t0 = time.perf_counter()
    layout = cfg.layout
    found = _previous_manifest(layout, run_id)
    if found is None:
        return None
    prev_dir, prev = found
    recorded = prev.get("stat_signature")
    if not recorded or prev.get("config_hash") != cfg.fingerprint():
        return None
    try:
        import pandas as pd

        images = pd.read_parquet(prev_dir / "products.parquet", columns=["image"])["image"].tolist()
    except Exception:  # noqa: BLE001 - a missing or unreadable table: the full path decides
        return None
    signature = stat_signature(cfg, images)
    if signature is None or signature != recorded:
        return None

    from prodkg.kb.incremental import live_input_digest
    from prodkg.kb.iri import DEFAULT_BASE
    from prodkg.kb.publish import publish_unchanged
    from prodkg.kb.store import KnowledgeGraph
    from prodkg.kb.triples import RunInfo, model_infos

    kg = KnowledgeGraph(layout.kg)
    try:
        current = kg.current_path()
        if current is None or str(current) != str(prev.get("store")):
            return None  # the live graph is not the previous run's any more
        with kg.open(read_only=True) as live:
            digest, content_run = live_input_digest(live)
    except Exception:  # noqa: BLE001 - a broken store: the full path repairs it
        return None
    if digest is None or content_run is None:
        return None
    check_s = time.perf_counter() - t0

    run_dir = layout.run_dir(run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    tables = {}
    for name, info in (prev.get("tables") or {}).items():
        src = Path(info.get("path", ""))
        if src.is_file():
            dst = layout.table(run_id, src.stem)
            _link(src, dst)
            tables[name] = {**info, "path": str(dst)}
    emb = layout.table(content_run, "embeddings")
    if not emb.is_file():
        emb = layout.table(prev["run_id"], "embeddings")
    if emb.is_file():
        _link(emb, layout.table(run_id, "embeddings"))

    g0 = time.perf_counter()
    base = cfg.base_iri or DEFAULT_BASE
    models = model_infos(prev.get("features") or {}, prev.get("models") or [])
    info = RunInfo(run_id=run_id, started=started_at, ended=datetime.now(UTC), catalog=prev["catalog"], method=cfg.method,
                   source_domains=prev["source"], target_domains=prev["target"], models=models, config_hash=cfg.fingerprint())
    path, total, _ = publish_unchanged(kg, info, digest, content_run, base=base, run_dir=run_dir)
    graph_s = time.perf_counter() - g0

    counts = dict(prev["counts"])
    counts["quads"] = total
    features = {m: {**s, "computed": 0, "cached": 0, "seconds": 0.0, "skipped": "inputs unchanged (stat signature)"}
                for m, s in (prev.get("features") or {}).items()}
    # every summary field of the previous run (metrics, counts, publication figures, ...): same inputs, same results
    summary = {k: v for k, v in prev.items() if k not in _MANIFEST_ONLY}
    summary.update({
        "run_id": run_id,
        "run_dir": str(run_dir),
        "store": str(path),
        "counts": counts,
        "features": features,
        "durations": {"fast_path_check": round(check_s, 3), "graph": round(graph_s, 3)},
        "changes": {"added": 0, "changed": 0, "removed": 0, "unchanged": int(counts.get("products", 0))},
        "graph_reused_from": content_run,
        "fast_path": {"reused_run": prev["run_id"], "reason": "catalog, taxonomy, images, code and config unchanged (stat signature)"},
        "server": None,
    })
    manifest = {
        **prev,
        **summary,
        "started": started_at.isoformat(),
        "ended": datetime.now(UTC).isoformat(),
        "tables": tables,
        "orchestrator": "prefect" if use_prefect else "direct",
        "stat_signature": signature,
    }
    # the figures are the previous run's (same inputs): copy its report folder's files rather than drawing again
    report = {}
    r0 = time.perf_counter()
    for item in ("report.html", "figures"):
        src = prev_dir / item
        try:
            if src.is_dir():
                shutil.copytree(src, run_dir / item, copy_function=_link_copy, dirs_exist_ok=True)
            elif src.is_file():
                shutil.copyfile(src, run_dir / item)
                report["html"] = str(run_dir / item)
        except OSError as exc:
            report["error"] = f"{type(exc).__name__}: {exc}"
    report["reused_from"] = prev["run_id"]
    report["seconds"] = round(time.perf_counter() - r0, 3)
    manifest["report"] = report
    summary["report"] = report.get("html")
    from prodkg.flows.rundir import write_json

    write_json(manifest, run_dir / "manifest.json")
    return summary


def _link_copy(src: str | Path, dst: str | Path) -> None:
    """Hard-link ``src`` to ``dst`` (the previous run's files are never rewritten); copy across file systems."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
