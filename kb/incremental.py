"""Incremental publishing: compare a run's products with the live graph, record what changed, compare graph content."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from rdflib import Graph
from rdflib.term import Literal, Node, URIRef

from prodkg.digests import frame_digest  # noqa: F401  (re-exported: incremental publication hashes with it)
from prodkg.errors import StageError
from prodkg.kb.iri import DEFAULT_BASE, mint, unmint
from prodkg.kb.store import GraphStore
from prodkg.kb.triples import Quad, run_graph
from prodkg.kb.vocab import PKG, PROV, RDF, SDO

__all__ = [
    "ChangeSet",
    "change_quads",
    "content_graph",
    "diff_index",
    "diff_products",
    "digest_quads",
    "graph_input_digest",
    "live_input_digest",
    "product_hashes",
    "stored_hashes",
]

#: product IRI -> (product id, content hash)
Hashes = Mapping[URIRef, tuple[str, str]]

_STORED_HASHES = """
SELECT ?product ?product_id ?hash WHERE {
  GRAPH ?g { ?product pkg:contentHash ?hash ; schema:productID ?product_id . }
}
"""


@dataclass
class ChangeSet:
    """Products a run added, changed (content hash differs) or removed, against the graph before it."""

    added: list[URIRef] = field(default_factory=list)
    changed: list[URIRef] = field(default_factory=list)
    removed: list[URIRef] = field(default_factory=list)
    unchanged: int = 0

    def counts(self) -> dict[str, int]:
        return {"added": len(self.added), "changed": len(self.changed), "removed": len(self.removed), "unchanged": self.unchanged}


def product_hashes(quads: Iterable[Quad]) -> dict[URIRef, tuple[str, str]]:
    """Product IRI -> (product id, content hash) from quads built by ``catalog_quads(content_hash=True)``."""
    ids: dict[URIRef, str] = {}
    hashes: dict[URIRef, str] = {}
    for s, p, o, _ in quads:
        if p == PKG.contentHash:
            hashes[s] = str(o)
        elif p == SDO.productID:
            ids[s] = str(o)
    return {s: (ids[s], h) for s, h in hashes.items() if s in ids}


def stored_hashes(store: GraphStore) -> dict[URIRef, tuple[str, str]]:
    """Product IRI -> (product id, content hash) of the products a published graph holds."""
    rows = store.query(_STORED_HASHES)
    return {URIRef(str(r[0])): (str(r[1]), str(r[2])) for r in rows.rows}


def diff_products(previous: Hashes | None, current: Hashes) -> ChangeSet:
    """What changed between the previous graph's products and this run's (None: nothing before)."""
    previous = previous or {}
    changes = ChangeSet()
    for product, (_, digest) in sorted(current.items()):
        if product not in previous:
            changes.added.append(product)
        elif previous[product][1] != digest:
            changes.changed.append(product)
        else:
            changes.unchanged += 1
    changes.removed = sorted(p for p in previous if p not in current)
    return changes


def diff_index(previous: pd.DataFrame | None, current: pd.DataFrame, *, catalog: str,
               base: str = DEFAULT_BASE) -> tuple[dict[str, int], pd.DataFrame]:
    """:func:`diff_products` over per-product tables (columns ``product``, ``product_id``, ``content_hash``).

    Returns the counts (as :meth:`ChangeSet.counts`) and one row per change, in the order
    :func:`change_quads` writes them (added, changed, removed; each by product IRI), with columns
    ``kind``, ``product``, ``product_id`` and ``catalog`` (the catalog the product IRI names).
    A catalog of a million products is compared without a Python object per product.
    """
    columns = ["product", "product_id", "content_hash"]
    if previous is None:
        previous = pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    merged = current[columns].merge(previous[columns], on="product", how="outer", suffixes=("", "_before"), indicator=True)
    added = merged["_merge"] == "left_only"
    removed = merged["_merge"] == "right_only"
    changed = (merged["_merge"] == "both") & (merged["content_hash"] != merged["content_hash_before"])
    counts = {"added": int(added.sum()), "changed": int(changed.sum()), "removed": int(removed.sum()),
              "unchanged": int(((merged["_merge"] == "both") & ~changed).sum())}
    parts = []
    for kind, mask in (("added", added), ("changed", changed), ("removed", removed)):
        rows = merged.loc[mask, ["product", "product_id" if kind != "removed" else "product_id_before"]]
        rows.columns = ["product", "product_id"]
        rows = rows.sort_values("product", kind="stable")
        rows.insert(0, "kind", kind)
        if kind == "removed":  # a removed product may belong to a catalog this run does not publish
            rows["catalog"] = [_catalog_of(URIRef(p), catalog, base) for p in rows["product"]]
        else:
            rows["catalog"] = catalog
        parts.append(rows)
    return counts, pd.concat(parts, ignore_index=True)


def change_quads(
    run_id: str, catalog: str, changes: ChangeSet, previous: Hashes | None, current: Hashes, *, base: str = DEFAULT_BASE
) -> list[Quad]:
    """One ``pkg:Change`` per added, changed or removed product, in the run's graph.

    A change names the product IRI (``pkg:changedProduct``) and its id (``pkg:productId``, so a
    removed product, which the new graph no longer describes, stays nameable), the kind
    (``pkg:changeType``) and the run (``prov:wasGeneratedBy``).
    """
    g = run_graph(run_id, base=base)
    r = mint("run", run_id, base=base)
    ids = {**(previous or {}), **current}
    quads: list[Quad] = []
    for kind, products in (("added", changes.added), ("changed", changes.changed), ("removed", changes.removed)):
        for product in products:
            pid = ids[product][0]
            node = mint("change", run_id, kind, _catalog_of(product, catalog, base), pid, base=base)
            quads += [
                (node, RDF.type, PKG.Change, g),
                (node, PKG.changeType, Literal(kind), g),
                (node, PKG.changedProduct, product, g),
                (node, PKG.productId, Literal(pid), g),
                (node, PROV.wasGeneratedBy, r, g),
            ]
    return quads


def _catalog_of(product: URIRef, default: str, base: str) -> str:
    """The catalog a product IRI names (a removed product may belong to a catalog this run does not publish)."""
    try:
        kind, parts = unmint(product, base=base)
    except ValueError:
        return default
    return parts[0] if kind == "product" and parts else default


# ----------------------------------------------------------------------------- unchanged re-runs

# The modules whose code decides which quads a table becomes: a new version of any of them changes
# the digest, so an upgrade always rebuilds the graph rather than reusing one built by older code.
_BUILDER_SOURCES = ("triples.py", "vocab.py", "iri.py", "incremental.py", "validation.py", "shapes")

_LIVE_DIGESTS = """
SELECT DISTINCT ?digest ?run_id ?informed WHERE {
  GRAPH ?g { ?run pkg:inputDigest ?digest ; pkg:runId ?run_id . OPTIONAL { ?run prov:wasInformedBy ?informed } }
}
"""


def _builder_digest() -> str:
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parent
    for name in _BUILDER_SOURCES:
        path = root / name
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        for f in files:
            if f.is_file():
                digest.update(f.relative_to(root).as_posix().encode())
                digest.update(f.read_bytes())
    return digest.hexdigest()




def graph_input_digest(*, products: pd.DataFrame, predictions: pd.DataFrame, taxonomy: Iterable[tuple], **settings: Any) -> str:
    """One sha256 over everything a run's graph content is built from.

    Products, predictions (with their confidences and model ids), the taxonomy, the ``settings``
    (catalog name, attributes, base IRI, threshold, ...) and the code of the quad builders and
    SHACL shapes. Two runs with the same digest publish the same content graph (see
    :func:`content_graph`), so the second may reuse the first's store instead of rebuilding it.
    """
    digest = hashlib.sha256(b"prodkg-graph-input-v1")
    digest.update(_builder_digest().encode())
    digest.update(frame_digest(products).encode())
    digest.update(frame_digest(predictions).encode())
    digest.update(json.dumps([list(t) for t in taxonomy], default=str).encode())
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def digest_quads(run_id: str, digest: str, *, informed_by: str | None = None, base: str = DEFAULT_BASE) -> list[Quad]:
    """The run's ``pkg:inputDigest``, and ``prov:wasInformedBy`` the run whose content it reuses, if any."""
    g = run_graph(run_id, base=base)
    r = mint("run", run_id, base=base)
    quads: list[Quad] = [(r, PKG.inputDigest, Literal(digest), g)]
    if informed_by is not None:
        quads.append((r, PROV.wasInformedBy, mint("run", informed_by, base=base), g))
    return quads


def live_input_digest(store: GraphStore) -> tuple[str | None, str | None]:
    """The input digest of the live graph and the id of the run whose content it holds.

    ``(None, None)`` when the graph records no digest (built by an older version) or more than
    one (which a graph built by :func:`graph_input_digest` never holds).
    """
    rows = store.query(_LIVE_DIGESTS).rows
    digests = {str(r[0]) for r in rows}
    builders = [str(r[1]) for r in rows if r[2] is None]  # the run that built the content reused nobody's
    if len(digests) != 1 or len(builders) != 1:
        return None, None
    return digests.pop(), builders[0]


_RUN_PLACEHOLDER = "current"
_RUN_SPECIFIC = {"prediction": 0, "property-value": 3}  # kind -> index of its run_id part


def _canonical(term: Node, base: str) -> Node:
    if not isinstance(term, URIRef) or not str(term).startswith(base):
        return term
    try:
        kind, parts = unmint(term, base=base)
    except ValueError:
        return term
    index = _RUN_SPECIFIC.get(kind)
    if index is None or len(parts) <= index:
        return term
    return mint(kind, *parts[:index], _RUN_PLACEHOLDER, *parts[index + 1 :], base=base)


def content_graph(store: GraphStore, *, base: str = DEFAULT_BASE) -> Graph:
    """The graph's content, without what only says which run made it, as one rdflib Graph.

    Kept: every catalog and taxonomy graph; from run graphs the predictions, accepted facts and
    model descriptions. Dropped: the run node's own statements (times, run id, threshold,
    config hash), change records, ``prov:wasGeneratedBy`` / ``prov:generatedAtTime``. The run
    id inside prediction and predicted-value IRIs is replaced by one placeholder. Two stores
    whose content graphs are isomorphic describe the same products, taxonomy and predictions.
    """
    if not isinstance(store, GraphStore):
        raise StageError(f"content_graph: expected a GraphStore, got {type(store).__name__}")
    run_prefix = str(mint("graph", "run", "x", base=base))[: -len("x")]
    change_prefix = str(mint("change", "x", "x", "x", "x", base=base)).rsplit("x/x/x/x", 1)[0]
    run_node_prefix = str(mint("run", "x", base=base))[: -len("x")]
    skip_predicates = {PROV.wasGeneratedBy, PROV.generatedAtTime}
    out = Graph()
    for s, p, o, g in store.quads():
        if g is not None and str(g).startswith(run_prefix):
            if str(s).startswith((change_prefix, run_node_prefix)) or p in skip_predicates:
                continue
        out.add((_canonical(s, base), p, _canonical(o, base)))
    return out
