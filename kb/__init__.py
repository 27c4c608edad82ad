"""Knowledge-graph layer: vocabulary, IRIs, quads, RDF stores, named SPARQL queries and exports.

Takes plain pandas DataFrames and dataclasses; never imports torch or Prefect.
"""

from __future__ import annotations

if __name__ != "prodkg.kb":  # the folder installs as prodkg.kb; a bare `import kb` would load a second copy
    raise ImportError("import prodkg.kb, not kb")

from prodkg.kb.export import EXPORT_FORMATS, export_graph
from prodkg.kb.export_reco import CONSUMER_EXPORTS, export_for_consumers
from prodkg.kb.incremental import content_graph
from prodkg.kb.iri import DEFAULT_BASE, mint, unmint
from prodkg.kb.nx_view import to_networkx
from prodkg.kb.queries import list_queries, load_query, run_query
from prodkg.kb.remote import RemoteGraph, SparqlServerStore
from prodkg.kb.results import QueryResult
from prodkg.kb.store import STORES, GraphStore, KnowledgeGraph, OxigraphStore, open_store
from prodkg.kb.triples import ModelInfo, RunInfo, catalog_quads, prediction_quads, run_quads, taxonomy_quads
from prodkg.kb.validation import validate_quads
from prodkg.kb.vocab import PKG, PROV, SDO, SKOS

__all__ = [
    "CONSUMER_EXPORTS",
    "DEFAULT_BASE",
    "EXPORT_FORMATS",
    "PKG",
    "PROV",
    "SDO",
    "SKOS",
    "STORES",
    "GraphStore",
    "KnowledgeGraph",
    "ModelInfo",
    "OxigraphStore",
    "QueryResult",
    "RemoteGraph",
    "RunInfo",
    "SparqlServerStore",
    "catalog_quads",
    "content_graph",
    "export_for_consumers",
    "export_graph",
    "list_queries",
    "load_query",
    "mint",
    "open_store",
    "prediction_quads",
    "run_quads",
    "run_query",
    "taxonomy_quads",
    "to_networkx",
    "unmint",
    "validate_quads",
]
