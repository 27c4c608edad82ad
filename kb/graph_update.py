"""Incremental graph update: delete and insert only the statements of the products (and predictions) a run changed.

A full publish rebuilds every statement of the catalog and its predictions. When the live graph
was built from the same taxonomy, settings, models and builder code as this run (its *shape*,
:func:`shape_key`), only the products added, changed or removed and the products whose
predictions changed need new statements. Each publish leaves, in its run directory, the
per-product index of the content it published (``graph_index.parquet``: product IRI, id,
content hash, and fingerprints of the product's catalog row and of its prediction rows), tagged
with the graph's input digest and shape. The next run compares its frames with that index by
fingerprint (no statement is built for an unchanged product), and :func:`apply_update` edits a
checkpoint of the live store, which is then checked and swapped in as any publish is.

The result's content graph (:func:`prodkg.kb.incremental.content_graph`) is that of a full
rebuild: changed products' catalog statements are replaced, their predictions are replaced by this
run's (under this run's IRIs), and the predictions of unchanged products stay those of the run that
made them. Change records of earlier runs stay as they are (the ``what_changed`` query reads the
latest run's); the input digest of earlier runs is removed, so the live graph names one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pyoxigraph as ox

from prodkg.digests import cell_hashes
from prodkg.frames import members
from prodkg.kb.iri import DEFAULT_BASE, mint
from prodkg.kb.triples import catalog_graph
from prodkg.kb.vocab import PKG, SDO

__all__ = [
    "INCREMENTAL_MAX_SHARE",
    "INDEX_TABLE",
    "Update",
    "apply_update",
    "catalog_fingerprints",
    "plan_update",
    "prediction_fingerprints",
    "read_index",
    "shape_key",
    "write_index",
]

#: the stage table (``runs/<id>/graph_index.parquet``) holding the per-product index of a published graph
INDEX_TABLE = "graph_index"

#: above this share of products to rewrite (added, changed or with changed predictions, plus removed),
#: a full rebuild is cheaper than deleting and inserting statements one product at a time
INCREMENTAL_MAX_SHARE = 0.25

#: the catalog columns and prediction columns the quad builders read
PRODUCT_COLUMNS = ("product_id", "title", "description", "domain", "image", "category")
PREDICTION_COLUMNS = ("task", "value", "confidence", "model", "kind", "level", "published")

_KEYS = ("prodkg-finger-01", "prodkg-finger-02")  # pandas' hash_array takes a 16-byte key; two keys: 128 bits per row


# ----------------------------------------------------------------------------- fingerprints


def _column_hashes(col: pd.Series, key: str) -> np.ndarray:
    """A uint64 per cell that differs when the cell would give different statements (missing cells are alike)."""
    return cell_hashes(col, key)[1]


def _row_hashes(frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """Two uint64 per row (shape ``(n, 2)``) over ``columns`` present in ``frame``."""
    out = np.zeros((len(frame), 2), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for c in columns:
            if c not in frame.columns:
                continue
            for k, key in enumerate(_KEYS):
                out[:, k] = out[:, k] * np.uint64(1_000_003) ^ _column_hashes(frame[c], key)
    return out


def catalog_fingerprints(products: pd.DataFrame, attributes: Sequence[str]) -> pd.DataFrame:
    """Per product (column ``product_id`` as str): two uint64 over the catalog cells its statements are built from."""
    h = _row_hashes(products, [*PRODUCT_COLUMNS, *attributes])
    return pd.DataFrame({"product_id": products["product_id"].astype(str).to_numpy(dtype=object),
                         "row_fp": h[:, 0], "row_fp2": h[:, 1]})


def prediction_fingerprints(predictions: pd.DataFrame) -> pd.DataFrame:
    """Per product with predictions: two uint64 over its prediction rows, whatever their order."""
    h = _row_hashes(predictions, PREDICTION_COLUMNS)
    codes, ids = pd.factorize(predictions["product_id"].astype(str), sort=False)
    sums = np.zeros((len(ids), 2), dtype=np.uint64)
    with np.errstate(over="ignore"):
        np.add.at(sums, codes, h)  # a sum of well-mixed hashes: the rows' order does not count
    return pd.DataFrame({"product_id": np.asarray(ids, dtype=object), "pred_fp": sums[:, 0], "pred_fp2": sums[:, 1]})


def shape_key(*, products: pd.DataFrame, predictions: pd.DataFrame, taxonomy: Iterable[tuple], catalog: str,
              attributes: Sequence[str], base: str, threshold, min_precision, curation: str | None, run_info) -> str:
    """One sha256 over what every product's statements depend on besides its own rows.

    Two runs of one shape build the same statements from the same product and prediction rows, so
    the second may rewrite only the products whose rows changed. It covers the builders' code, the
    taxonomy, the settings, the curation decisions, the run's model descriptions, the models and
    tasks the predictions name and which columns the frames have.
    """
    from prodkg.kb.incremental import _builder_digest

    digest = hashlib.sha256(b"prodkg-graph-shape-v1")
    digest.update(_builder_digest().encode())
    here = Path(__file__).resolve().parent
    for name in ("frame_nquads.py", "spool.py", "graph_update.py", "publish.py"):
        digest.update((here / name).read_bytes())
    models = sorted([m.model_id, m.name, m.kind, m.details] for m in getattr(run_info, "models", []))
    shape = {
        "taxonomy": [list(t) for t in taxonomy], "catalog": catalog, "attributes": list(attributes), "base": base,
        "threshold": threshold, "min_precision": min_precision, "curation": curation, "models": models,
        "predicted_by": sorted(predictions["model"].astype(str).unique()) if "model" in predictions.columns else None,
        "tasks": sorted(predictions["task"].astype(str).unique()) if "task" in predictions.columns else None,
        "product_columns": sorted(c for c in products.columns if c in (*PRODUCT_COLUMNS, *attributes)),
        "prediction_columns": sorted(c for c in predictions.columns if c in ("product_id", *PREDICTION_COLUMNS)),
    }
    digest.update(json.dumps(shape, sort_keys=True, default=str).encode())
    return digest.hexdigest()


# ----------------------------------------------------------------------------- the index of a published graph


def write_index(path: Path, index: pd.DataFrame, *, digest: str, shape: str) -> None:
    """Write a published graph's per-product index, tagged with its input digest and shape."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(index.reset_index(drop=True), preserve_index=False)
    meta = {**(table.schema.metadata or {}), b"prodkg.graph_digest": digest.encode(), b"prodkg.graph_shape": shape.encode()}
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table.replace_schema_metadata(meta), tmp)
    tmp.replace(path)


def read_index(path: Path) -> tuple[pd.DataFrame | None, str | None, str | None]:
    """(index, digest, shape) of a published graph; ``(None, None, None)`` when there is none or it is unreadable."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException):
        return None, None, None
    meta = table.schema.metadata or {}
    return table.to_pandas(), (meta.get(b"prodkg.graph_digest") or b"").decode() or None, (meta.get(b"prodkg.graph_shape") or b"").decode() or None


# ----------------------------------------------------------------------------- planning and applying an update


@dataclass
class Update:
    """What an incremental update rewrites, by product id (str)."""

    catalog_rows: np.ndarray  #: positions in the products frame of the products added or with a changed catalog row
    prediction_rows: np.ndarray  #: positions in the predictions frame of the products added or with changed predictions
    removed: pd.DataFrame  #: index rows of the products the live graph has and this run does not
    catalog_stale: list[str]  #: product IRIs whose catalog statements go (changed rows and removed products)
    predictions_stale: list[str]  #: product IRIs whose predictions go (changed predictions and removed products)
    index: pd.DataFrame  #: this run's per-product index, content hashes of rewritten products still to fill in
    previous: pd.DataFrame  #: the live graph's index rows of the products rewritten or removed


def plan_update(previous: pd.DataFrame, products: pd.DataFrame, predictions: pd.DataFrame, current: pd.DataFrame,
                *, catalog: str, base: str = DEFAULT_BASE) -> Update | str:
    """The update from the live graph's index to this run's frames, or why a full rebuild it must be.

    ``current`` is this run's fingerprints (``product_id``, ``row_fp``, ``row_fp2``, ``pred_fp``, ``pred_fp2``),
    one row per product in the products frame's order.
    """
    from prodkg.kb.frame_nquads import _arrow, _join, _part, _parts

    ids = current["product_id"]
    if not ids.is_unique:
        return "repeated product ids"
    if not members(predictions["product_id"].astype(str), ids).all():
        return "predictions of products the catalog lacks"
    live = pd.Index(previous["product_id"])
    if not live.is_unique:
        return "the live graph's index repeats a product id"
    at = live.get_indexer(ids)  # each product's row in the live index, -1 when it is new
    here = at >= 0
    before = previous.iloc[np.where(here, at, 0)].reset_index(drop=True)

    def differs(a: str, b: str) -> np.ndarray:
        return here & ((current[a].to_numpy() != before[a].to_numpy()) | (current[b].to_numpy() != before[b].to_numpy()))

    added, row_changed, pred_changed = ~here, differs("row_fp", "row_fp2"), differs("pred_fp", "pred_fp2")
    removed = ~members(live, ids)
    rewritten = int((added | row_changed | pred_changed).sum() + removed.sum())
    if rewritten > INCREMENTAL_MAX_SHARE * max(len(current), 1):
        return f"{rewritten:,} of {len(current):,} products to rewrite (more than {INCREMENTAL_MAX_SHARE:.0%}: a full rebuild is cheaper)"

    # product IRIs and content hashes: the live index's; added products' IRIs minted as the builders mint them,
    # and the content hashes of products with a new catalog row left to the build of their statements
    product = before["product"].to_numpy(dtype=object).copy()
    content = before["content_hash"].to_numpy(dtype=object).copy()
    if added.any():
        minted = _join(f"{base}product/{_part(catalog)}/", _parts(_arrow(ids[added].tolist())))
        product[added] = np.asarray(minted.to_pylist(), dtype=object)
    content[added | row_changed] = None
    index = pd.DataFrame({"product": product, "product_id": ids.to_numpy(dtype=object), "content_hash": content,
                          **{c: current[c].to_numpy() for c in ("row_fp", "row_fp2", "pred_fp", "pred_fp2")}})
    gone = previous.loc[removed, ["product", "product_id", "content_hash"]].reset_index(drop=True)
    return Update(
        catalog_rows=np.flatnonzero(added | row_changed),
        prediction_rows=np.flatnonzero(members(predictions["product_id"].astype(str), ids[added | pred_changed])),
        removed=gone,
        catalog_stale=[*product[row_changed].tolist(), *gone["product"].tolist()],
        predictions_stale=[*product[pred_changed].tolist(), *gone["product"].tolist()],
        index=index,
        previous=pd.concat([before.loc[row_changed, ["product", "product_id", "content_hash"]], gone], ignore_index=True),
    )


def apply_update(store, update: Update, *, catalog: str, run_graph_prefix: str, base: str = DEFAULT_BASE) -> int:
    """Delete from ``store`` (a writable checkpoint) the statements the update replaces; return how many went.

    Goes: the catalog statements of changed and removed products (and the property-value nodes only
    they own; a brand or organisation node when no product names it any more), the predictions and
    accepted category facts of products whose predictions changed or which were removed, and the
    input digest of every earlier run.
    """
    s = store._open()
    cg = ox.NamedNode(str(catalog_graph(catalog, base=base)))
    owned_prefix = str(mint("property-value", "x", "y", "z", base=base)).rsplit("x/y/z", 1)[0]
    subject_p, category_p, digest_p = ox.NamedNode(str(PKG.subject)), ox.NamedNode(str(SDO.category)), ox.NamedNode(str(PKG.inputDigest))
    gone: list[ox.Quad] = []
    shared: set[ox.NamedNode] = set()
    for iri in update.catalog_stale:
        for q in s.quads_for_pattern(ox.NamedNode(iri), None, None, cg):
            gone.append(q)
            o = q.object
            if type(o) is ox.NamedNode and q.predicate != category_p:
                if o.value.startswith(owned_prefix):
                    gone.extend(s.quads_for_pattern(o, None, None, cg))
                elif o.value.startswith(base):
                    shared.add(o)
    for iri in update.predictions_stale:
        product = ox.NamedNode(iri)
        for q in s.quads_for_pattern(None, subject_p, product, None):
            if type(q.graph_name) is ox.NamedNode and q.graph_name.value.startswith(run_graph_prefix):
                gone.extend(s.quads_for_pattern(q.subject, None, None, q.graph_name))
        for q in s.quads_for_pattern(product, category_p, None, None):
            if type(q.graph_name) is ox.NamedNode and q.graph_name.value.startswith(run_graph_prefix):
                gone.append(q)
    gone.extend(s.quads_for_pattern(None, digest_p, None, None))
    for q in gone:
        s.remove(q)
    # a brand (organisation, country) node goes with the last product that names it, as a rebuild would leave it out
    for node in shared:
        if next(iter(s.quads_for_pattern(None, None, node, cg)), None) is None:
            for q in list(s.quads_for_pattern(node, None, None, cg)):
                s.remove(q)
                gone.append(q)
    return len(gone)
