"""A NetworkX view of the knowledge graph, for graph algorithms and GraphML export."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import date, datetime, time
from typing import Any

import networkx as nx
from rdflib import Dataset, Graph
from rdflib.term import BNode, Literal, Node, URIRef

from prodkg.errors import StoreError
from prodkg.kb.results import to_python
from prodkg.kb.store import GraphStore
from prodkg.kb.vocab import RDF, RDFS, SDO, SKOS, compact

__all__ = ["MULTI_VALUE_SEPARATOR", "compact", "node_id", "to_networkx"]

MULTI_VALUE_SEPARATOR = " | "
_LABELS = (SDO.name, SKOS.prefLabel, RDFS.label)
_GRAPHML_LONG = (-(2**63), 2**63 - 1)
_RDF_TYPE = str(RDF.type)


def node_id(term: Node) -> str:
    """The node key of an IRI (the IRI itself) or blank node (``_:id``)."""
    return f"_:{term}" if isinstance(term, BNode) else str(term)


def _scalar(value: Any) -> Any:
    """A value GraphML can hold: bool, int (64-bit), float or str."""
    if isinstance(value, (bool, float, str)):
        return str(value) if isinstance(value, Literal) else value
    if isinstance(value, int):
        return value if _GRAPHML_LONG[0] <= value <= _GRAPHML_LONG[1] else str(value)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    return str(value)


def _rdflib_triples(source: Graph, graph: URIRef | None) -> Iterator[tuple[str, str, Any, bool]]:
    if isinstance(source, Dataset):
        if graph is not None:
            triples = iter(source.graph(graph))
        else:
            triples = iter({(s, p, o) for s, p, o, _ in source.quads((None, None, None, None))})
    else:
        triples = iter(source)
    for s, p, o in triples:
        if isinstance(o, Literal):
            yield node_id(s), str(p), to_python(o), True
        else:
            yield node_id(s), str(p), node_id(o), False


def to_networkx(source: GraphStore | Graph, *, graph: URIRef | None = None) -> nx.MultiDiGraph:
    """A MultiDiGraph of the triples of a store (all graphs merged) or of an rdflib graph.

    IRIs and blank nodes (``_:id``) become nodes. A triple whose object is an IRI or blank
    node becomes an edge with key and attribute ``predicate`` (the full predicate IRI), except
    ``rdf:type``, which is kept as the node attribute ``rdf:type`` so that class IRIs do not
    turn into hubs. A literal-valued triple becomes a node attribute named by the compact
    predicate (``schema:name``) holding a GraphML-safe scalar; several values of one predicate
    are joined with ``" | "`` in sorted order. Each node also gets ``label`` (its
    schema:name, skos:prefLabel or rdfs:label) when it has one. ``G.graph["triples"]`` is the
    number of distinct triples the view represents.

    Args:
        source: a :class:`~kb.store.GraphStore`, rdflib ``Graph`` or ``Dataset``.
        graph: restrict to one named graph.
    """
    if isinstance(source, GraphStore):
        triples = source.plain_triples(graph)
    elif isinstance(source, Graph):
        triples = _rdflib_triples(source, graph)
    else:
        raise StoreError(f"to_networkx: expected a GraphStore or an rdflib Graph/Dataset, got {type(source).__name__}")

    G = nx.MultiDiGraph()
    # values keyed with their type: True, 1 and 1.0 are equal in Python but distinct literals
    attributes: dict[str, dict[str, dict[tuple[str, Any], Any]]] = defaultdict(lambda: defaultdict(dict))
    names: dict[str, str] = {}
    count = 0
    for s, p, o, literal in triples:
        count += 1
        if s not in G:
            G.add_node(s)
        if literal:
            name = names.get(p) or names.setdefault(p, compact(p))
            value = _scalar(o)
            attributes[s][name][(type(value).__name__, value)] = value
        elif p == _RDF_TYPE:
            attributes[s]["rdf:type"][("str", o)] = compact(o)
        else:
            G.add_edge(s, o, key=p, predicate=p)
    label_names = [compact(str(p)) for p in _LABELS]
    for subject, values in attributes.items():
        data = G.nodes[subject]
        for name, found in values.items():
            if len(found) == 1:
                data[name] = next(iter(found.values()))
            else:
                data[name] = MULTI_VALUE_SEPARATOR.join(sorted(str(v) for v in found.values()))
        for name in label_names:
            if name in data:
                data["label"] = str(data[name])
                break
    G.graph["triples"] = count
    return G
