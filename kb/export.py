"""Export the knowledge graph to files: RDF serialisations and GraphML for graph tools."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

import networkx as nx

from prodkg.kb.nx_view import to_networkx
from prodkg.kb.store import GraphStore, rdf_format
from prodkg.errors import StoreError
from prodkg.registry import Registry

__all__ = ["EXPORT_FORMATS", "export_graph"]

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
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        nx.write_graphml(G, tmp)
        os.replace(tmp, path)
    except (OSError, nx.NetworkXError) as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StoreError(f"writing GraphML to {path} failed: {exc}") from exc
    return int(G.graph["triples"])


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
