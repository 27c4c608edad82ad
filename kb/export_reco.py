"""Exports for consuming teams: similar-product edges, product–category–attribute edges, embeddings, search documents."""

from __future__ import annotations

import contextlib
import json
import os
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from prodkg.kb.store import GraphStore
from prodkg.errors import StoreError
from prodkg.registry import Registry

__all__ = [
    "CONSUMER_EXPORTS",
    "edge_list",
    "embeddings_metadata",
    "export_for_consumers",
    "read_embeddings",
    "search_documents",
    "similar_products",
]

_CONCEPTS = """
SELECT ?concept ?label ?broader WHERE {
  ?concept a skos:Concept ; skos:prefLabel ?label .
  OPTIONAL { ?concept skos:broader ?broader }
}"""
_ALT_LABELS = "SELECT ?concept ?alt WHERE { ?concept skos:altLabel ?alt }"
_PRODUCTS = """
SELECT ?product ?product_id ?title ?description WHERE {
  ?product a schema:Product ; schema:productID ?product_id .
  OPTIONAL { ?product schema:name ?title }
  OPTIONAL { ?product schema:description ?description }
}"""
_ASSERTED_CATEGORY = """
SELECT ?product ?concept WHERE {
  GRAPH ?g { ?product schema:category ?concept . }
  FILTER NOT EXISTS { GRAPH ?g { ?run a pkg:Run } }
}"""
_PREDICTIONS = """
SELECT ?product ?task ?object ?confidence ?threshold ?published ?model_id ?run_id WHERE {
  GRAPH ?g {
    ?prediction a pkg:Prediction ; pkg:subject ?product ; pkg:task ?task ; pkg:object ?object ;
        pkg:confidence ?confidence ; prov:wasGeneratedBy ?run .
    # a run with a precision target marks each prediction pkg:published; a fixed-threshold run records its threshold
    OPTIONAL { ?run pkg:threshold ?threshold }
    OPTIONAL { ?prediction pkg:published ?published }
    FILTER NOT EXISTS { ?prediction pkg:kind "unknown" }
    FILTER(BOUND(?threshold) || BOUND(?published))
    OPTIONAL { ?prediction pkg:model/pkg:modelId ?model_id }
    OPTIONAL { ?run pkg:runId ?run_id }
  }
}"""
_IMAGES = "SELECT ?product ?image WHERE { ?product a schema:Product ; schema:image ?image }"
_LIVE_RUN = "SELECT ?run_id WHERE { ?run a pkg:Run ; pkg:runId ?run_id ; prov:startedAtTime ?t } ORDER BY DESC(?t) LIMIT 1"
# asserted attributes: named things (brand, manufacturer, country), quantities, literals, PropertyValues
_ASSERTED_ATTRIBUTES = """
SELECT ?product ?attribute ?value WHERE {
  GRAPH ?g { ?product a schema:Product . }
  FILTER NOT EXISTS { GRAPH ?g { ?run a pkg:Run } }
  {
    GRAPH ?g { ?product ?p ?node . ?node schema:name ?value . }
    VALUES (?p ?attribute) { (schema:brand "brand") (schema:manufacturer "manufacturer")
                             (schema:countryOfOrigin "country_of_origin") }
  } UNION {
    GRAPH ?g { ?product ?p ?node . ?node schema:value ?number ; schema:unitText ?unit . }
    VALUES (?p ?attribute) { (pkg:volume "volume") (schema:weight "weight") }
    BIND(CONCAT(STR(?number), " ", ?unit) AS ?value)
  } UNION {
    GRAPH ?g { ?product ?p ?value . }
    VALUES (?p ?attribute) { (schema:color "color") (schema:material "material") (schema:size "size")
                             (schema:pattern "pattern") (schema:sku "sku") (schema:gtin "gtin") (schema:mpn "mpn") }
  } UNION {
    GRAPH ?g { ?product schema:additionalProperty ?node . ?node schema:propertyID ?attribute ; schema:value ?value . }
  }
}"""


def _label_of(store: GraphStore) -> Callable[[Any], str]:
    names = {str(r[0]): str(r[1]) for r in store.query("SELECT ?x ?name WHERE { ?x schema:name ?name }").rows}
    names.update({str(r[0]): str(r[1]) for r in store.query("SELECT ?x ?l WHERE { ?x skos:prefLabel ?l }").rows})
    return lambda term: names.get(str(term), str(term))


def _taxonomy(store: GraphStore) -> tuple[dict[str, str], dict[str, list[str]], dict[str, list[str]]]:
    labels: dict[str, str] = {}
    broader: dict[str, list[str]] = defaultdict(list)
    for concept, label, parent in store.query(_CONCEPTS).rows:
        labels[str(concept)] = str(label)
        if parent is not None and str(parent) not in broader[str(concept)]:
            broader[str(concept)].append(str(parent))
    alt: dict[str, list[str]] = defaultdict(list)
    for concept, label in store.query(_ALT_LABELS).rows:
        alt[str(concept)].append(str(label))
    return labels, broader, alt


def _path(concept: str, labels: dict[str, str], broader: dict[str, list[str]]) -> list[str]:
    """Labels from the root down to ``concept``, following the first broader link (cycles stop it)."""
    out, seen = [], set()
    while concept and concept not in seen:
        seen.add(concept)
        out.append(labels.get(concept, concept))
        parents = sorted(broader.get(concept, []))
        concept = parents[0] if parents else ""
    return out[::-1]


def _predictions(store: GraphStore) -> list[tuple[str, str, Any, float, bool, str | None, str | None]]:
    """(product, task, object, confidence, accepted, model id, run id) of every prediction."""
    out = []
    for product, task, obj, confidence, threshold, published, model_id, run_id in store.query(_PREDICTIONS).rows:
        conf = float(confidence.toPython())
        accepted = bool(published.toPython()) if published is not None else conf >= float(threshold.toPython())
        out.append((str(product), str(task), obj, conf, accepted,
                    str(model_id) if model_id is not None else None, str(run_id) if run_id is not None else None))
    return out


def _live_run(store: GraphStore) -> str | None:
    rows = store.query(_LIVE_RUN).rows
    return str(rows[0][0]) if rows else None


def edge_list(store: GraphStore) -> pd.DataFrame:
    """Product–category and product–attribute edges, asserted and predicted, one row each.

    Columns: ``product`` (IRI), ``product_id``, ``relation`` ("category" or the attribute
    name), ``target`` (concept IRI, or the value as text), ``target_label``, ``weight`` (1.0
    for asserted facts, the confidence for predictions), ``origin`` ("catalog" or
    "predicted"), ``accepted`` (whether the fact is in the graph as a plain fact), ``model``
    and ``run_id`` (of a prediction; empty for an asserted fact).
    """
    label = _label_of(store)
    ids = {str(r[0]): str(r[1]) for r in store.query("SELECT ?p ?id WHERE { ?p a schema:Product ; schema:productID ?id }").rows}
    rows = []
    for product, concept in store.query(_ASSERTED_CATEGORY).rows:
        rows.append((str(product), "category", str(concept), label(concept), 1.0, "catalog", True, None, None))
    for product, attribute, value in store.query(_ASSERTED_ATTRIBUTES).rows:
        rows.append((str(product), str(attribute), str(value), str(value), 1.0, "catalog", True, None, None))
    for product, task, obj, conf, accepted, model_id, run_id in _predictions(store):
        rows.append((product, task, str(obj), label(obj), conf, "predicted", accepted, model_id, run_id))
    frame = pd.DataFrame(rows, columns=["product", "relation", "target", "target_label", "weight", "origin", "accepted", "model", "run_id"])
    frame.insert(1, "product_id", [ids.get(p) for p in frame["product"]])
    return frame.sort_values(["product_id", "origin", "relation", "target"], kind="stable").reset_index(drop=True)


def search_documents(store: GraphStore) -> list[dict[str, Any]]:
    """One search document per product: product_id, title, description, image, category path, attributes, synonyms.

    ``category`` is the asserted category when the catalog gives one, else the predicted one
    (``category_source`` says which, ``category_confidence`` is 1.0 or the confidence);
    ``category_path`` runs from the taxonomy root down. ``attributes`` map names to values,
    asserted first, then predictions that reached the threshold; ``attribute_confidences`` the
    confidence of each predicted value, ``category_model`` / ``attribute_models`` the model that
    predicted it. ``synonyms`` are the skos:altLabels along the path; ``run_id`` is the run whose
    graph the document comes from; ``image`` the catalog's image reference.
    """
    labels, broader, alt = _taxonomy(store)
    label = _label_of(store)
    asserted_category = {str(p): str(c) for p, c in store.query(_ASSERTED_CATEGORY).rows}
    attributes: dict[str, dict[str, str]] = defaultdict(dict)
    for product, attribute, value in store.query(_ASSERTED_ATTRIBUTES).rows:
        attributes[str(product)].setdefault(str(attribute), str(value))
    predicted_category: dict[str, tuple[str, float, str | None]] = {}
    confidences: dict[str, dict[str, float]] = defaultdict(dict)
    models: dict[str, dict[str, str | None]] = defaultdict(dict)
    for product, task, obj, conf, accepted, model_id, _run in _predictions(store):
        if task == "category":
            predicted_category[product] = (str(obj), conf, model_id)
        elif accepted and task not in attributes[product]:
            attributes[product][task] = label(obj)
            confidences[product][task] = conf
            models[product][task] = model_id
    images = {str(p): str(i) for p, i in store.query(_IMAGES).rows}
    run_id = _live_run(store)
    docs = []
    for product, pid, title, description in store.query(_PRODUCTS).rows:
        key = str(product)
        model = None
        if key in asserted_category:
            concept, confidence, source = asserted_category[key], 1.0, "catalog"
        elif key in predicted_category:
            (concept, confidence, model), source = predicted_category[key], "predicted"
        else:
            concept, confidence, source = None, None, None
        path = _path(concept, labels, broader) if concept else []
        synonyms: list[str] = []
        node = concept
        for _ in range(len(path)):
            synonyms += [s for s in alt.get(node or "", []) if s not in synonyms]
            parents = sorted(broader.get(node or "", []))
            node = parents[0] if parents else None
        docs.append(
            {
                "product_id": str(pid),
                "iri": key,
                "title": str(title) if title is not None else None,
                "description": str(description) if description is not None else None,
                "image": images.get(key),
                "category": path[-1] if path else None,
                "category_path": path,
                "category_source": source,
                "category_confidence": confidence,
                "category_model": model,
                "attributes": dict(sorted(attributes.get(key, {}).items())),
                "attribute_confidences": dict(sorted(confidences.get(key, {}).items())),
                "attribute_models": dict(sorted(models.get(key, {}).items())),
                "synonyms": synonyms,
                "run_id": run_id,
            }
        )
    return sorted(docs, key=lambda d: d["product_id"])


def read_embeddings(path: str | os.PathLike[str]) -> tuple[list[str], np.ndarray]:
    """Product ids and an (n, d) float32 matrix from a Parquet file of ``product_id`` + ``vector``."""
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot read embeddings from {path}: {exc}") from exc
    if not {"product_id", "vector"} <= set(frame.columns):
        raise StoreError(f"{path}: expected columns product_id, vector; got {list(frame.columns)}")
    if len(frame) == 0:
        return [], np.zeros((0, 0), np.float32)
    matrix = np.stack([np.asarray(v, dtype=np.float32) for v in frame["vector"]])
    return [str(p) for p in frame["product_id"]], matrix


def similar_products(ids: list[str], vectors: np.ndarray, k: int = 10, *, block: int = 1024) -> pd.DataFrame:
    """Top-``k`` most similar products of each product by cosine similarity (itself excluded).

    Args:
        ids: product ids, one per row of ``vectors``.
        vectors: (n, d) embeddings; rows of zeros have no neighbours.
        k: neighbours per product (fewer when the catalog is smaller).

    Returns:
        columns ``product_id``, ``similar_id``, ``score`` (cosine in [-1, 1]), ``rank`` (1 = closest).
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(ids) != len(vectors):
        raise StoreError(f"similar_products: expected {len(ids)} rows of vectors, got shape {vectors.shape}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise StoreError(f"similar_products: k must be a positive int, got {k!r}")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    valid = norms[:, 0] > 0
    unit = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    n, kk = len(ids), min(k, max(int(valid.sum()) - 1, 0))
    rows: list[tuple[str, str, float, int]] = []
    if kk == 0:
        return pd.DataFrame(rows, columns=["product_id", "similar_id", "score", "rank"])
    for start in range(0, n, block):
        scores = unit[start : start + block] @ unit.T
        scores[:, ~valid] = -np.inf
        for r in range(scores.shape[0]):
            scores[r, start + r] = -np.inf
        top = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        for r, cand in enumerate(top):
            i = start + r
            if not valid[i]:
                continue
            order = cand[np.lexsort((cand, -scores[r, cand]))]
            rows += [(ids[i], ids[j], float(scores[r, j]), rank) for rank, j in enumerate(order, 1)]
    return pd.DataFrame(rows, columns=["product_id", "similar_id", "score", "rank"])


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except (OSError, ValueError) as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StoreError(f"writing {path} failed: {exc}") from exc


def _table_writer(frame: pd.DataFrame, path: Path) -> Callable[[Path], None]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return lambda tmp: frame.to_csv(tmp, index=False)
    if suffix in (".parquet", ".pq"):
        return lambda tmp: frame.to_parquet(tmp, index=False)
    raise StoreError(f"{path}: write tables as .parquet or .csv, got {suffix or 'no extension'}")


ConsumerExport = Callable[..., int]
#: format name -> writer(store, path, embeddings=..., k=...) returning the rows written
CONSUMER_EXPORTS: Registry[ConsumerExport] = Registry("consumer export")


def _need_embeddings(embeddings: str | os.PathLike[str] | None, what: str) -> Path:
    if embeddings is None or not Path(embeddings).is_file():
        raise StoreError(f"{what} needs the run's embeddings.parquet; not found at {embeddings}")
    return Path(embeddings)


@CONSUMER_EXPORTS.register("similar")
def _export_similar(store: GraphStore, path: Path, *, embeddings=None, k: int = 10) -> int:
    ids, vectors = read_embeddings(_need_embeddings(embeddings, "the similar export"))
    frame = similar_products(ids, vectors, k)
    _atomic(path, _table_writer(frame, path))
    return len(frame)


@CONSUMER_EXPORTS.register("edges")
def _export_edges(store: GraphStore, path: Path, *, embeddings=None, k: int = 10) -> int:
    frame = edge_list(store)
    _atomic(path, _table_writer(frame, path))
    return len(frame)


@CONSUMER_EXPORTS.register("embeddings")
def _export_embeddings(store: GraphStore, path: Path, *, embeddings=None, k: int = 10) -> int:
    source = _need_embeddings(embeddings, "the embeddings export")
    ids, vectors = read_embeddings(source)
    frame = pd.DataFrame({"product_id": ids, "vector": list(vectors)})
    metadata = embeddings_metadata(source)

    def write(tmp: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(frame, preserve_index=False)
        existing = table.schema.metadata or {}
        pq.write_table(table.replace_schema_metadata({**existing, **{k.encode(): v.encode() for k, v in metadata.items()}}), tmp)

    _atomic(path, write)
    return len(frame)


def embeddings_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``prodkg.*`` key-value metadata of an embeddings Parquet file (encoders, modality layout, run)."""
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot read embeddings from {path}: {exc}") from exc
    return {k.decode(): v.decode() for k, v in meta.items() if k.startswith(b"prodkg.")}


@CONSUMER_EXPORTS.register("search-jsonl", aliases=("search", "jsonl"))
def _export_search(store: GraphStore, path: Path, *, embeddings=None, k: int = 10) -> int:
    docs = search_documents(store)

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            for doc in docs:
                fh.write(json.dumps(doc, ensure_ascii=False, sort_keys=True) + "\n")

    _atomic(path, write)
    return len(docs)


def export_for_consumers(
    store: GraphStore, fmt: str, path: str | os.PathLike[str], *, embeddings: str | os.PathLike[str] | None = None, k: int = 10
) -> int:
    """Write one consumer export (``similar``, ``edges``, ``embeddings``, ``search-jsonl``); return its rows."""
    if not isinstance(store, GraphStore):
        raise StoreError(f"export_for_consumers: expected a GraphStore, got {type(store).__name__}")
    return CONSUMER_EXPORTS.get(fmt)(store, Path(path), embeddings=embeddings, k=k)
