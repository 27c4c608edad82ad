"""The graph stage: build a run's quads, record what changed since the live graph, validate, publish atomically."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from prodkg.contracts import EMBEDDINGS, check_table
from prodkg.errors import GraphRefusedError, StageError
from prodkg.kb.store import KnowledgeGraph
from prodkg.layout import RunLayout
from prodkg.memory import trim_heap

__all__ = ["GraphSettings", "embeddings_metadata", "flat_taxonomy", "graph_stage", "write_embeddings"]

Mirror = Callable[[Path, str], dict]  # (published store folder, run id) -> what the server mirror did


@dataclass(frozen=True)
class GraphSettings:
    """The slice of the run configuration the graph stage needs."""

    base_iri: str | None = None
    # a fixed confidence at which a prediction becomes a plain fact; None: the predictions' own ``published`` column
    # decides (the precision-targeted rule of prediction.publication, recorded as ``min_precision``)
    threshold: float | None = 0.5
    min_precision: float | None = None


def flat_taxonomy(products: pd.DataFrame, predictions: pd.DataFrame) -> list[tuple[str, str | None]]:
    labels = set(products["category"].dropna().astype(str))
    rows = predictions["task"] == "category"
    if "kind" in predictions.columns:  # an unknown prediction names no concept
        rows &= predictions["kind"].fillna("class") != "unknown"
    labels |= set(predictions.loc[rows, "value"].astype(str))
    return [(c, None) for c in sorted(labels)]


class FeatureHandoff:
    """The features, handed to the graph stage for it to let go of once the embeddings file is written.

    At a million products the vectors are 1.46 GiB, and the store's bulk load that follows the embeddings
    needs about as much again: a caller that passes this (and keeps no other reference to the features) has
    them freed before that load. Their digest is taken once and kept, so a retried stage that finds them
    released still builds the same graph (the first attempt wrote the embeddings).
    """

    def __init__(self, features) -> None:
        from prodkg.digests import features_digest

        self.features = features
        self.digest = features_digest(features)

    def release(self) -> None:
        self.features = None


def graph_stage(products: pd.DataFrame, predictions: pd.DataFrame, taxonomy: list[tuple[str, str | None]], attributes: list[str],
                run_info, settings: GraphSettings, catalog_name: str, *, layout: RunLayout, mirror: Mirror | None = None, features=None,
                curation: dict | None = None) -> dict:
    """Build the run's quads, record what changed since the live graph, validate, publish atomically.

    A graph that violates the SHACL shapes is not published: the last good graph stays live,
    ``shacl_report.txt`` in the run directory says why, and StageError is raised. The shapes see
    the taxonomy, provenance, change and curation quads whole and the catalog and predictions of
    up to :data:`SHACL_SAMPLE` products (all of a catalog that size or smaller; see :func:`_shacl_sample`).
    With ``features`` (the extract stage's MultiModal, or a :class:`FeatureHandoff` of it, released once written) it
    also writes ``embeddings.parquet``; with
    ``mirror`` it copies the published graph to a SPARQL server (see :func:`kb.remote.mirror_to_server`).
    ``curation`` (product id -> :class:`kb.curation.Decision` in force) becomes the curation graph; a decided
    product gets no category fact from this run's predictions (a prediction never overrides a reviewer).
    """
    from prodkg.errors import StoreError
    from prodkg.kb.incremental import (
        diff_index,
        digest_quads,
        graph_input_digest,
        live_input_digest,
        stored_hashes,
    )
    from prodkg.kb.iri import DEFAULT_BASE
    from prodkg.kb.triples import alt_label_quads, run_quads, taxonomy_quads

    base = settings.base_iri or DEFAULT_BASE
    scheme = catalog_name
    run_dir = layout.run_dir(run_info.run_id)
    concepts = {t[0] for t in taxonomy}
    missing = sorted(set(flat_taxonomy(products, predictions)) - {(c, None) for c in concepts})
    taxonomy = list(taxonomy) + [m for m in missing if m[0] not in concepts]
    started = time.perf_counter()
    # the features decide the embeddings file the run publishes beside the graph
    handoff = features if isinstance(features, FeatureHandoff) else FeatureHandoff(features) if features is not None else None
    features = None  # read through the handoff from here on, so that releasing it frees them
    features_hash = handoff.digest if handoff is not None else None
    from prodkg.kb.curation import curation_digest

    extra = {"curation": curation_digest(curation)} if curation else {}  # no decisions: the digest of earlier runs stays valid
    digest = graph_input_digest(products=products, predictions=predictions, taxonomy=taxonomy, catalog=catalog_name,
                                attributes=list(attributes), base=base, threshold=settings.threshold, features=features_hash,
                                **({"min_precision": settings.min_precision} if settings.threshold is None else {}), **extra)
    kg = KnowledgeGraph(layout.kg)
    live_digest = content_run = None
    try:
        if kg.current_path() is not None:
            with kg.open(read_only=True) as live:
                if live.query("ASK { ?run pkg:runId ?id }", {"id": run_info.run_id}).boolean:
                    # a retry of this stage after the local publish succeeded (the server mirror failed):
                    # publishing again would count this run's own graph as the one before it
                    path = kg.current_path()
                    return {"quads": len(live), "store": str(path), "seconds": round(time.perf_counter() - started, 3),
                            "changes": _recorded_changes(live, run_info.run_id), "shacl": "conforms (published by an earlier attempt of this run)",
                            "server": mirror(path, run_info.run_id) if mirror else None}
                live_digest, content_run = live_input_digest(live)
    except StoreError:
        pass  # a broken CURRENT pointer: the full build below repairs it

    if digest == live_digest and content_run is not None:
        # Nothing the graph is built from changed: the live graph already holds this run's content.
        # Publish it again plus this run's provenance (which names the run whose content it reuses),
        # instead of rebuilding, re-validating and re-loading every quad.
        if handoff is not None:
            _reuse_embeddings(layout.table(content_run, "embeddings"), layout.table(run_info.run_id, "embeddings"), products, handoff,
                              content_run, _encoders(run_info))
        path, total, quads = publish_unchanged(kg, run_info, digest, content_run, base=base, run_dir=run_dir)
        server = mirror(path, run_info.run_id) if mirror else None
        unchanged = {"added": 0, "changed": 0, "removed": 0, "unchanged": int(products["product_id"].nunique())}
        return {"quads": total, "quads_written": len(quads), "store": str(path), "seconds": round(time.perf_counter() - started, 3),
                "changes": unchanged, "shacl": "conforms (unchanged content; this run's provenance validated)",
                "reused_graph_of": content_run, "server": server, "update": {"path": "unchanged"}}

    # Something changed, so this run writes an embeddings file of its own: written now, the handed features (1.5 GB at
    # a million products of 384 dimensions) are let go of before the fingerprints, the live graph's index and the update
    # plan are made, and before either publish path builds, checks and loads statements.
    _write_handed_embeddings(handoff, products, layout.table(run_info.run_id, "embeddings"), run_info.run_id, _encoders(run_info))

    # When the live graph has this run's shape (taxonomy, settings, models, builders) and its per-product index, only
    # the products (and predictions) that changed are deleted and inserted.
    from prodkg.kb.graph_update import INDEX_TABLE, Update, shape_key, write_index

    shape = shape_key(products=products, predictions=predictions, taxonomy=taxonomy, catalog=catalog_name, attributes=attributes,
                      base=base, threshold=settings.threshold, min_precision=settings.min_precision if settings.threshold is None else None,
                      curation=extra.get("curation"), run_info=run_info)
    fingerprints = _fingerprints(products, predictions, attributes)
    # the per-product index the live graph's publish left beside it, when it describes the live content
    from prodkg.kb.graph_update import read_index

    live_index, index_digest, index_shape = read_index(layout.table(content_run, INDEX_TABLE)) if content_run else (None, None, None)
    if index_digest is None or index_digest != live_digest:
        live_index = None
    plan = _plan_update(live_index, index_shape, live_digest, content_run, shape, products, predictions, fingerprints, curation,
                        catalog_name, base)
    if isinstance(plan, Update):
        result = _publish_update(plan, kg, layout, products, predictions, taxonomy, attributes, run_info, settings, catalog_name,
                                 base, digest, shape)
        if result is not None:
            result["server"] = mirror(Path(result["store"]), run_info.run_id) if mirror else None
            result["seconds"] = round(time.perf_counter() - started, 3)
            return result
        plan = "the rewritten products' IRIs differ from the live index's"
    why = plan

    # The catalog's and the predictions' statements (nearly all of them) go to the store as N-Quads built
    # column-wise from the frames, a batch of products at a time into a spool file beside the store, never
    # as a list of rdflib terms nor all in memory; the rest (taxonomy, provenance, curation) are few and
    # stay rdflib terms. The change records (one per product on a first run) are written column-wise too.
    from prodkg.kb.spool import build_spool, change_nquads

    decided = sorted(curation) if curation else []
    quads = []
    quads += taxonomy_quads(scheme, taxonomy, base=base)
    quads += alt_label_quads(scheme, taxonomy, base=base)
    quads += run_quads(run_info, base=base)
    quads += digest_quads(run_info.run_id, digest, base=base)
    if curation:
        from prodkg.kb.curation import curation_quads

        quads += curation_quads(curation, catalog=catalog_name, scheme=scheme, product_ids=products["product_id"].astype(str),
                                concepts=[t[0] for t in taxonomy], base=base)
    layout.kg.mkdir(parents=True, exist_ok=True)
    spool = build_spool(layout.kg / f".spool.{os.getpid()}.nq", products, predictions, run_info, catalog=catalog_name,
                        attributes=attributes, scheme=scheme, base=base, threshold=settings.threshold,
                        min_precision=settings.min_precision if settings.threshold is None else None, no_category_fact=decided)
    try:
        previous = None
        try:
            if live_index is not None:  # what the live graph holds, without reading a million products back from it
                from prodkg.kb.spool import INDEX_COLUMNS

                previous = live_index[INDEX_COLUMNS]
            elif kg.current_path() is not None:
                with kg.open(read_only=True) as live:
                    previous = _hash_table(stored_hashes(live))
        except StoreError:
            previous = None  # a broken CURRENT pointer: this publish repairs it, and every product counts as added
        counts, records = diff_index(previous, spool.index, catalog=catalog_name, base=base)
        del previous
        chunks, n = change_nquads(run_info.run_id, records, base=base)
        spool.write(chunks, n)
        del chunks
        sample = _shacl_sample(products, predictions, run_info, settings, catalog_name, attributes, scheme, base, decided)
        sample += _change_sample(run_info.run_id, records, base)
        del records
        _validate_or_refuse(quads + sample, run_dir)
        del sample
        path = kg.publish(quads, run_info.run_id, nquads=spool.chunks())
        index = spool.index.merge(fingerprints, on="product_id", how="left", validate="one_to_one")
    finally:
        spool.remove()
    del quads
    write_index(layout.table(run_info.run_id, INDEX_TABLE), index, digest=digest, shape=shape)
    del index
    server = mirror(path, run_info.run_id) if mirror else None
    # distinct statements, as the store counts them (a fact asserted by two builders is one statement); counted
    # by the store rather than by a Python set of every quad, which at a million products costs gigabytes
    with kg.open(read_only=True) as published:
        total = len(published)
    return {"quads": total, "store": str(path), "seconds": round(time.perf_counter() - started, 3),
            "changes": counts, "shacl": "conforms", "server": server, "update": {"path": "full", "reason": why}}


def _fingerprints(products: pd.DataFrame, predictions: pd.DataFrame, attributes) -> pd.DataFrame:
    """Per product, in the products' order: fingerprints of its catalog row and of its prediction rows (0: none)."""
    from prodkg.kb.graph_update import catalog_fingerprints, prediction_fingerprints

    out = catalog_fingerprints(products, attributes)
    if "product_id" not in predictions.columns or predictions.empty:  # no head could be trained: nothing predicted
        out["pred_fp"] = out["pred_fp2"] = np.zeros(len(out), dtype=np.uint64)
        return out
    predicted = prediction_fingerprints(predictions)
    at = pd.Index(predicted["product_id"]).get_indexer(out["product_id"])
    for c in ("pred_fp", "pred_fp2"):
        out[c] = np.where(at >= 0, predicted[c].to_numpy()[np.maximum(at, 0)], np.uint64(0)).astype(np.uint64)
    return out


def _plan_update(live_index, index_shape, live_digest, content_run, shape, products, predictions, fingerprints, curation,
                 catalog_name, base):
    """An :class:`kb.graph_update.Update` from the live graph to this run, or why the graph is rebuilt in full."""
    from prodkg.kb.graph_update import plan_update

    if live_digest is None or content_run is None:
        return "no live graph built with an input digest"
    if curation:
        return "curation decisions in force (the curation graph is rebuilt with the graph)"
    if pd.api.types.infer_dtype(products["product_id"], skipna=False) != "string":
        return "product ids that are not all text"
    if live_index is None:
        return f"no index of the live graph's products (run {content_run})"
    if index_shape != shape:
        return "taxonomy, settings, models or graph code differ from the live graph's"
    if set(predictions["task"].astype(str)) - {"category"}:
        return "predictions of attribute tasks"
    return plan_update(live_index, products, predictions, fingerprints, catalog=catalog_name, base=base)


def _publish_update(plan, kg: KnowledgeGraph, layout: RunLayout, products, predictions, taxonomy, attributes, run_info,
                    settings: GraphSettings, catalog_name: str, base: str, digest: str, shape: str) -> dict | None:
    """Delete and insert the statements of the products ``plan`` rewrites, in a checkpoint of the live store, and publish it.

    Returns None (nothing published) when the rebuilt products' IRIs are not those of the live index."""
    from prodkg.kb.frame_nquads import catalog_nquads, prediction_nquads
    from prodkg.kb.graph_update import INDEX_TABLE, apply_update, write_index
    from prodkg.kb.incremental import diff_index, digest_quads
    from prodkg.kb.iri import mint
    from prodkg.kb.spool import change_nquads
    from prodkg.kb.triples import alt_label_quads, run_quads, taxonomy_quads

    scheme, run_dir = catalog_name, layout.run_dir(run_info.run_id)
    rows = products.iloc[plan.catalog_rows]
    built = catalog_nquads(rows, catalog=catalog_name, attributes=attributes, scheme=scheme, base=base, content_hash=True)
    index = plan.index
    rebuilt = index.iloc[plan.catalog_rows]
    hashes = {str(p): h for p, (_, h) in built.hashes.items()}
    if set(hashes) != set(rebuilt["product"]):
        return None
    index.loc[index.index[plan.catalog_rows], "content_hash"] = [hashes[p] for p in rebuilt["product"]]
    preds = predictions.iloc[plan.prediction_rows]
    predicted = prediction_nquads(preds, run_info, catalog=catalog_name, scheme=scheme, threshold=settings.threshold, base=base,
                                  min_precision=settings.min_precision if settings.threshold is None else None)
    counts, records = diff_index(plan.previous, index.iloc[plan.catalog_rows], catalog=catalog_name, base=base)
    counts["unchanged"] = len(products) - counts["added"] - counts["changed"]
    changes, _ = change_nquads(run_info.run_id, records, base=base)
    quads = run_quads(run_info, base=base) + digest_quads(run_info.run_id, digest, base=base)

    # the shapes see the taxonomy (already live), this run's provenance, and a sample of what it rewrites
    from prodkg.frames import members

    touched = np.union1d(plan.catalog_rows, np.flatnonzero(members(products["product_id"].astype(str), preds["product_id"].astype(str).unique())))
    sample = _shacl_sample(products.iloc[touched], preds, run_info, settings, catalog_name, attributes, scheme, base, [])
    sample += _change_sample(run_info.run_id, records, base)
    _validate_or_refuse(taxonomy_quads(scheme, taxonomy, base=base) + alt_label_quads(scheme, taxonomy, base=base) + quads + sample, run_dir)
    del sample
    run_prefix = str(mint("graph", "run", "x", base=base))[: -len("x")]
    removed = [0]

    def edit(store) -> None:
        removed[0] = apply_update(store, plan, catalog=catalog_name, run_graph_prefix=run_prefix, base=base)
        # the bulk loader, not one transaction: the checkpoint is this publish's own until it is swapped in, and a
        # failure removes it whole (a transaction on the on-disk checkpoint costs about 25 µs a statement)
        store.add_quads(quads, nquads=[*built.chunks, *predicted.chunks, *changes])

    path = kg.publish_edit(edit, run_info.run_id)
    write_index(layout.table(run_info.run_id, INDEX_TABLE), index, digest=digest, shape=shape)
    with kg.open(read_only=True) as published:
        total = len(published)
    rewritten = {"catalog": len(plan.catalog_rows), "predictions": int(preds["product_id"].nunique()), "removed": len(plan.removed),
                 "statements_deleted": removed[0], "statements_inserted": built.count + predicted.count + 5 * len(records) + len(quads)}
    return {"quads": total, "store": str(path), "changes": counts, "update": {"path": "incremental", "rewritten": rewritten},
            "shacl": f"conforms (the taxonomy, this run's provenance and {len(touched):,} rewritten products' statements)"}


def _hash_table(hashes) -> pd.DataFrame:
    """product IRI -> (id, content hash) as the per-product table :func:`kb.incremental.diff_index` compares."""
    from prodkg.kb.spool import INDEX_COLUMNS

    return pd.DataFrame([(str(p), i, h) for p, (i, h) in hashes.items()], columns=INDEX_COLUMNS)


def _change_sample(run_id: str, records: pd.DataFrame, base: str) -> list[tuple]:
    """The change records of at most :data:`SHACL_SAMPLE` changes, as rdflib terms for the SHACL gate."""
    from rdflib.term import URIRef

    from prodkg.kb.incremental import ChangeSet, change_quads

    if len(records) > SHACL_SAMPLE:
        records = records.iloc[np.linspace(0, len(records) - 1, SHACL_SAMPLE).round().astype(int)]
    changes = ChangeSet(**{kind: [URIRef(p) for p in records.loc[records["kind"] == kind, "product"]]
                           for kind in ("added", "changed", "removed")})
    ids = {URIRef(p): (i, "") for p, i in zip(records["product"], records["product_id"], strict=True)}
    quads = []
    for catalog, rows in records.groupby("catalog", sort=False):  # change_quads names removed products' own catalogs
        keep = set(rows["product"])
        part = ChangeSet(**{k: [p for p in getattr(changes, k) if str(p) in keep] for k in ("added", "changed", "removed")})
        quads += change_quads(run_id, str(catalog), part, None, ids, base=base)
    return quads


def _encoders(run_info) -> dict[str, str]:
    """modality -> encoder id, from the run's models (kind ``<modality>-encoder``)."""
    return {m.kind.removesuffix("-encoder"): m.model_id for m in getattr(run_info, "models", []) if str(m.kind).endswith("-encoder")}


#: products whose catalog and prediction statements the SHACL gate checks as rdflib terms; a catalog up to
#: this size is checked whole, a larger one through this many products spread evenly over it
SHACL_SAMPLE = 5000


def _shacl_sample(products: pd.DataFrame, predictions: pd.DataFrame, run_info, settings: GraphSettings, catalog_name: str,
                  attributes: list[str], scheme: str, base: str, decided: list[str]) -> list[tuple]:
    """The catalog and prediction quads of at most :data:`SHACL_SAMPLE` products, as rdflib terms for the SHACL gate.

    The column-wise builder writes every product with the same statements from the same column
    rules, so what the shapes check per product (one id, datatypes, categories that are concepts,
    predictions with one subject, confidence, model and run each) holds for the unsampled ones as
    it holds for these; the taxonomy, provenance, change and curation quads are always checked whole.
    """
    from prodkg.frames import members
    from prodkg.kb.curation import without_predicted_categories
    from prodkg.kb.triples import catalog_quads, prediction_quads

    rows = products
    if len(products) > SHACL_SAMPLE:
        rows = products.iloc[np.linspace(0, len(products) - 1, SHACL_SAMPLE).round().astype(int)]
    sampled = predictions[members(predictions["product_id"].astype(str), rows["product_id"].astype(str))] if len(rows) < len(products) else predictions
    quads = catalog_quads(rows, catalog=catalog_name, attributes=attributes, scheme=scheme, base=base, content_hash=True)
    quads += prediction_quads(sampled, run_info, catalog=catalog_name, scheme=scheme, threshold=settings.threshold, base=base,
                              min_precision=settings.min_precision if settings.threshold is None else None)
    if decided:
        quads = without_predicted_categories(quads, dict.fromkeys(decided), catalog=catalog_name, base=base)
    return quads


def publish_unchanged(kg: KnowledgeGraph, run_info, digest: str, content_run: str, *, base: str, run_dir: Path) -> tuple[Path, int, list]:
    """Publish the live graph again with ``run_info``'s provenance only (its content is ``content_run``'s, whose
    input digest this run matched): validated, then published as an extension of the live store.

    Returns the new store's path, its quad count and the quads this run wrote."""
    from prodkg.kb.incremental import digest_quads
    from prodkg.kb.triples import run_quads

    quads = run_quads(run_info, base=base) + digest_quads(run_info.run_id, digest, informed_by=content_run, base=base)
    _validate_or_refuse(quads, run_dir)
    path = kg.publish_extension(quads, run_info.run_id)
    with kg.open(read_only=True) as published:
        return path, len(published), quads


def _validate_or_refuse(quads: list[tuple], run_dir: Path) -> None:
    """SHACL-validate what is about to be published; on a violation write ``shacl_report.txt`` and raise StageError."""
    from prodkg.kb.validation import validate_quads

    report = validate_quads(quads)
    if not report.conforms:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "shacl_report.txt").write_text(report.text, encoding="utf-8")
        raise GraphRefusedError(f"graph not published, the last good graph stays live: {report.summary()} (full report: {run_dir / 'shacl_report.txt'})")


def _recorded_changes(store, run_id: str) -> dict[str, int]:
    """Counts of the change records a run already published (for a retried graph stage)."""
    rows = store.query(
        "SELECT ?type (COUNT(?c) AS ?n) ?id WHERE { ?c a pkg:Change ; pkg:changeType ?type ; prov:wasGeneratedBy ?r . "
        "?r pkg:runId ?id } GROUP BY ?type ?id", {"id": run_id}).rows
    counts = {"added": 0, "changed": 0, "removed": 0}
    counts.update({str(r[0]): int(r[1]) for r in rows})
    return counts


def _reuse_embeddings(previous: Path, path: Path, products: pd.DataFrame, handoff: FeatureHandoff, content_run: str,
                      encoders: dict[str, str]) -> None:
    """Link the content run's embeddings file into this run's directory (same inputs, same vectors), or write it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if not path.exists():
            os.link(previous, path)
    except OSError:
        _write_handed_embeddings(handoff, products, path, content_run, encoders)
    handoff.release()


def _write_handed_embeddings(handoff: FeatureHandoff | None, products: pd.DataFrame, path: Path, run_id: str,
                             encoders: dict[str, str]) -> None:
    """Write the embeddings file from the handed features, then release them. A retried stage finds them released
    and the file its first attempt wrote (the same features: their digest is in the graph's input digest)."""
    if handoff is None:
        return
    if handoff.features is None:
        if not path.exists():
            raise StageError(f"the features were released before {path.name} was written; run the pipeline again")
        return
    write_embeddings(products, handoff.features, path, embeddings_metadata(handoff.features, run_id, encoders))
    handoff.release()
    trim_heap()


def embeddings_metadata(features, run_id: str | None = None, encoders: dict[str, str] | None = None) -> dict[str, str]:
    """Key-value metadata of an embeddings file: which slice of the vector is which modality and encoder, and the run.

    ``prodkg.layout`` is a JSON list of ``{"modality", "start", "dim", "encoder_id"}`` in vector order.
    """
    import json

    layout, start = [], 0
    for modality in sorted(features.blocks):
        dim = int(features.blocks[modality].shape[1])
        layout.append({"modality": modality, "start": start, "dim": dim, "encoder_id": (encoders or {}).get(modality)})
        start += dim
    meta = {"prodkg.layout": json.dumps(layout), "prodkg.dim": str(start), "prodkg.normalised": "each modality L2-normalised; absent: zeros",
            "prodkg.encoders": json.dumps({m["modality"]: m["encoder_id"] for m in layout})}
    if run_id:
        meta["prodkg.run_id"] = run_id
    return meta


#: bytes of one batch of :func:`write_embeddings`'s float32 vectors: 16,384 products at 384 dimensions; wider vectors
#: (a photo's 1,280 beside them) get fewer products per batch, so the batch's copies stay this size
EMBEDDINGS_BATCH_BYTES = 16_384 * 384 * 4


def write_embeddings(products: pd.DataFrame, features, path: Path, metadata: dict[str, str] | None = None, *,
                     batch: int | None = None) -> int:
    """One vector per product for similarity exports: its modalities' features, each L2-normalised, concatenated.

    An absent modality contributes zeros, so products compare on what they have. ``metadata`` (see
    :func:`embeddings_metadata`) goes into the Parquet file's key-value metadata. Written ``batch``
    products at a time (one row group each), each batch's vectors handed to Arrow as one flat float32
    buffer with its offsets rather than as a column of per-row arrays, so memory stays that of a batch:
    at a million products of 384 dimensions, batches of 16,384 took 0.29 GiB above the features and 22 s
    as per-row arrays, 0.06 GiB and 8 s as one buffer (docs/BENCHMARKS.md, "Writing embeddings.parquet").
    ``batch`` (default): as many products as make :data:`EMBEDDINGS_BATCH_BYTES` of vectors, at most 16,384; with
    a photo's 1,280 dimensions beside the text's 384, batches of 16,384 held 0.4 GiB above the features.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    modalities = sorted(features.blocks)
    rows = len(features.blocks[modalities[0]]) if modalities else 0
    if not modalities or len(products) != rows:
        raise StageError(f"write_embeddings: {len(products)} products but features for {rows}")
    dim = sum(int(features.blocks[m].shape[1]) for m in modalities)
    batch = int(batch) if batch is not None else max(1, min(16_384, EMBEDDINGS_BATCH_BYTES // (4 * max(dim, 1))))
    # the file's schema (and pandas metadata) as the contract's frame converts to, from its first row
    product_ids = products["product_id"].astype(str)
    first = check_table(pd.DataFrame({"product_id": product_ids.iloc[:1], "vector": [np.zeros(dim, np.float32)] * min(rows, 1)}), EMBEDDINGS)
    schema = pa.Table.from_pandas(first, preserve_index=False).schema
    schema = schema.with_metadata({**(schema.metadata or {}), **{k.encode(): v.encode() for k, v in (metadata or {}).items()}})
    ids = pa.array(product_ids, type=schema.field("product_id").type)
    path.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, batch):
            stop = min(rows, start + batch)
            matrix = np.empty((stop - start, dim), dtype=np.float32)
            at = 0
            for modality in modalities:
                block = np.asarray(features.blocks[modality][start:stop], dtype=np.float32)
                width = block.shape[1]
                norms = np.linalg.norm(block, axis=1, keepdims=True)
                keep = (norms > 0) & np.asarray(features.present[modality][start:stop], dtype=bool)[:, None]
                scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=keep)  # absent or zero: zeros
                np.multiply(block, scale, out=matrix[:, at:at + width])
                at += width
            offsets = pa.array(np.arange(0, (stop - start + 1) * dim, dim, dtype=np.int32))
            vectors = pa.ListArray.from_arrays(offsets, pa.array(matrix.reshape(-1)), type=schema.field("vector").type)
            writer.write_table(pa.Table.from_arrays([ids.slice(start, stop - start), vectors], schema=schema))
    return rows
