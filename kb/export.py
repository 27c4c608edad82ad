"""Export the knowledge graph to files: RDF serialisations and GraphML for graph tools."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote

import networkx as nx

from prodkg.kb.nx_view import MULTI_VALUE_SEPARATOR, node_id, to_networkx
from prodkg.kb.store import GraphStore, rdf_format
from prodkg.errors import StoreError
from prodkg.registry import Registry

__all__ = ["EXPORT_FORMATS", "FLATTENING_FORMATS", "OUTPUT_EXTENSIONS", "check_output", "edge_provenance", "export_graph"]

#: format -> the file extensions its output may have (the first is the usual one)
OUTPUT_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "nt": (".nt",), "nq": (".nq",), "ttl": (".ttl",), "trig": (".trig",), "jsonld": (".jsonld", ".json"), "graphml": (".graphml", ".xml"),
    "similar": (".parquet", ".pq", ".csv"), "edges": (".parquet", ".pq", ".csv"), "embeddings": (".parquet", ".pq"),
    "search-jsonl": (".jsonl", ".ndjson"),
}
#: formats that hold triples only: the named graphs (asserted vs predicted vs provenance) are merged away
FLATTENING_FORMATS = ("nt", "ttl", "jsonld")


def check_output(fmt: str, path: str | os.PathLike[str], *, flatten: bool = False) -> None:
    """Refuse an output file whose extension is not the format's, and a triples-only format without ``flatten``.

    nt, ttl and jsonld merge the named graphs, so a predicted ``schema:category`` would read exactly like an
    asserted one; nq and trig keep them. Raises ConfigError (a usage error) naming what to do instead.
    """
    from prodkg.errors import ConfigError

    allowed = OUTPUT_EXTENSIONS.get(fmt)
    name = Path(path).name.lower()
    for suffix in (".gz", ".bz2", ".xz", ".zst"):
        if name.endswith(suffix):
            raise ConfigError(f"{path}: exports are written uncompressed; drop {suffix}")
    if allowed is not None and not name.endswith(allowed):
        raise ConfigError(f"--output {path} does not end in {' or '.join(allowed)}, the extension of format {fmt}; "
                          f"name the file for its format (or choose the format of its extension)")
    if fmt in FLATTENING_FORMATS and not flatten:
        raise ConfigError(f"format {fmt} holds triples only: it merges the named graphs, so predicted facts would read like the catalog's "
                          f"asserted ones; export nq or trig to keep them apart, or pass --flatten to merge them anyway")

Exporter = Callable[[GraphStore, Path], int]

#: format name -> writer(store, path) returning the number of statements written
EXPORT_FORMATS: Registry[Exporter] = Registry("export format")


def _rdf_exporter(fmt: str) -> Exporter:
    def export(store: GraphStore, path: Path) -> int:
        return store.dump(path, fmt)

    export.__doc__ = f"Write the store as {fmt} (see GraphStore.dump)."
    return export


EXPORT_FORMATS.register("nt", aliases=("ntriples", "n-triples"))(_rdf_exporter("nt"))
EXPORT_FORMATS.register("nq", aliases=("nquads", "n-quads"))(_rdf_exporter("nq"))
EXPORT_FORMATS.register("ttl", aliases=("turtle",))(_rdf_exporter("ttl"))
EXPORT_FORMATS.register("trig")(_rdf_exporter("trig"))
EXPORT_FORMATS.register("jsonld", aliases=("json-ld",))(_rdf_exporter("jsonld"))


@EXPORT_FORMATS.register("graphml")
def export_graphml(store: GraphStore, path: Path) -> int:
    """Write the NetworkX view (:func:`kb.nx_view.to_networkx`) as GraphML; return its triple count."""
    G = to_networkx(store)
    edge_provenance(store, G)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        nx.write_graphml(G, tmp)
        os.replace(tmp, path)
    except (OSError, nx.NetworkXError) as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StoreError(f"writing GraphML to {path} failed: {exc}") from exc
    return int(G.graph["triples"])


_EDGE_PREDICTIONS = """
SELECT ?product ?task ?predicate ?object ?confidence ?model_id ?run_id WHERE {
  ?prediction a pkg:Prediction ; pkg:subject ?product ; pkg:task ?task ; pkg:predicate ?predicate ; pkg:object ?object ;
      pkg:confidence ?confidence ; pkg:model ?model ; prov:wasGeneratedBy ?run .
  ?model pkg:modelId ?model_id . ?run pkg:runId ?run_id .
}"""


def _graph_origin(graph: str) -> str:
    for marker, origin in (("/graph/catalog/", "asserted"), ("/graph/taxonomy/", "taxonomy"), ("/graph/run/", "run")):
        if marker in graph:
            return origin
    return "other"


def edge_provenance(store: GraphStore, G: nx.MultiDiGraph) -> None:
    """Give every edge of the NetworkX view where it comes from, as GraphML edge attributes.

    ``graph``: the named graph(s) holding the statement; ``origin``: ``asserted`` (a catalog graph),
    ``predicted`` (a prediction that reached the threshold), ``taxonomy`` or ``provenance`` (run records);
    a predicted edge also has ``confidence``, ``model`` and ``run_id``.
    """
    from rdflib.term import Literal

    from prodkg.kb.vocab import RDF

    graphs: dict[tuple[str, str, str], set[str]] = {}
    for s, p, o, g in store.quads():
        if isinstance(o, Literal) or p == RDF.type:
            continue
        graphs.setdefault((node_id(s), str(p), node_id(o)), set()).add(str(g) if g is not None else "")
    predicted, by_task = {}, {}
    for product, task, predicate, obj, confidence, model_id, run_id in store.query(_EDGE_PREDICTIONS).rows:
        found = (float(confidence.toPython()), str(model_id), str(run_id))
        by_task[(node_id(product), str(task))] = found
        if not isinstance(obj, Literal):
            predicted[(node_id(product), str(predicate), node_id(obj))] = found
    for u, v, key, data in G.edges(keys=True, data=True):
        held = graphs.get((u, key, v), set())
        data["graph"] = MULTI_VALUE_SEPARATOR.join(sorted(held))
        origins = {_graph_origin(g) for g in held}
        found = predicted.get((u, key, v))
        if found is None and "/property-value/" in v:  # a predicted attribute kept as a schema:PropertyValue node
            parts = v.rsplit("/property-value/", 1)[1].split("/")
            found = by_task.get((u, unquote(parts[2]))) if len(parts) == 4 else None
        if "asserted" in origins:
            data["origin"] = "asserted"
        elif found is not None and "run" in origins:
            data["origin"] = "predicted"
            data["confidence"], data["model"], data["run_id"] = found
        elif "taxonomy" in origins:
            data["origin"] = "taxonomy"
        else:
            data["origin"] = "provenance"


def export_graph(store: GraphStore, path: str | os.PathLike[str], fmt: str | None = None) -> int:
    """Write ``store`` to ``path`` in ``fmt`` and return the number of statements written.

    Formats: ``nq`` and ``trig`` keep the named graphs (count = quads); ``nt``, ``ttl`` and
    ``jsonld`` hold the distinct triples of the union of all graphs; ``graphml`` holds the
    NetworkX view (count = triples it represents). ``fmt`` None takes it from the extension.
    The file is written next to ``path`` and moved into place, so a reader never sees half
    of it.
    """
    if not isinstance(store, GraphStore):
        raise StoreError(f"export_graph: expected a GraphStore, got {type(store).__name__}")
    target = Path(path)
    if fmt is None:
        suffix = target.suffix.lstrip(".").lower()
        fmt = suffix if suffix in EXPORT_FORMATS else rdf_format(None, target)
    writer = EXPORT_FORMATS.get(fmt)
    target.parent.mkdir(parents=True, exist_ok=True)
    return writer(store, target)
