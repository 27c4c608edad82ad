"""Knowledge-graph layer: vocabulary, IRIs, quads, RDF stores, named SPARQL queries and exports.

Takes plain pandas DataFrames and dataclasses; never imports torch or Prefect.
"""

from __future__ import annotations

from kb.export import EXPORT_FORMATS, export_graph
from kb.export_reco import CONSUMER_EXPORTS, export_for_consumers
from kb.incremental import content_graph
from kb.iri import DEFAULT_BASE, mint, unmint
from kb.nx_view import to_networkx
from kb.queries import list_queries, load_query, run_query
from kb.remote import RemoteGraph, SparqlServerStore
from kb.results import QueryResult
from kb.store import STORES, GraphStore, KnowledgeGraph, OxigraphStore, open_store
from kb.triples import ModelInfo, RunInfo, catalog_quads, prediction_quads, run_quads, taxonomy_quads
from kb.validation import validate_quads
from kb.vocab import PKG, PROV, SDO, SKOS

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
