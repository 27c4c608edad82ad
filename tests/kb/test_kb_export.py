"""The NetworkX view and the exports: counts on the golden graph, and every file reads back equal."""

from __future__ import annotations

import json
import warnings

import networkx as nx
import pytest
from kb_golden import KETTLE, MUG
from rdflib import Dataset, Graph
from rdflib.compare import isomorphic

from prodkg.kb.export import EXPORT_FORMATS, export_graph
from prodkg.kb.iri import mint
from prodkg.kb.nx_view import to_networkx
from prodkg.kb.vocab import SDO
from prodkg.errors import UnknownComponentError

# 19 subjects (3 products, 2 property values, 1 brand, 1 scheme, 5 concepts, 1 run, 1 model,
# 5 predictions) + 3 IRIs used only as objects (schema:category, schema:color and the capacity
# attribute, as pkg:predicate of predictions) = 22 nodes. Edges: catalog 5 (2 categories of the
# mug and kettle, the cup's category, additionalProperty, brand), taxonomy 15 (hasTopConcept 1,
# inScheme 5, topConceptOf 1, broader 4, narrower 4), run graph 27 (used and wasAssociatedWith 2,
# prediction links 23, the cup's accepted category and the kettle's accepted property value 2;
# the mug's accepted category repeats the catalog's edge) = 47.
NODES, EDGES, UNION_TRIPLES = 22, 47, 123


def _union(store) -> Graph:
    g = Graph()
    for s, p, o, _ in store.quads():
        g.add((s, p, o))
    return g


def test_networkx_view_of_the_golden_graph(golden_store):
    G = to_networkx(golden_store)
    assert (G.number_of_nodes(), G.number_of_edges()) == (NODES, EDGES)
    assert G.graph["triples"] == UNION_TRIPLES
    mug = str(mint("product", "shop", MUG))
    assert G.nodes[mug]["schema:name"] == "Blue mug"
    assert G.nodes[mug]["label"] == "Blue mug"
    assert G.nodes[mug]["rdf:type"] == "schema:Product"
    assert G.nodes[mug]["schema:description"] == 'A "big" mug\nfor tea'
    model = G.nodes[str(mint("model", "head-v1"))]
    assert model["rdf:type"] == "pkg:Model | prov:Entity | prov:SoftwareAgent"
    kettle_pred = str(mint("prediction", "run-1", KETTLE, "category"))
    assert G.nodes[kettle_pred]["pkg:confidence"] == 0.4
    assert G.has_edge(kettle_pred, str(mint("concept", "kitchen", "kettle")), key="https://example.org/prodkg/vocab#object")
    edge_predicates = {d["predicate"] for _, _, d in G.edges(data=True)}
    assert str(SDO.category) in edge_predicates and str(SDO.name) not in edge_predicates


def test_networkx_view_of_one_graph_and_of_rdflib(golden_store):
    taxonomy = mint("graph", "taxonomy", "kitchen")
    G = to_networkx(golden_store, graph=taxonomy)
    assert (G.number_of_nodes(), G.number_of_edges()) == (6, 15)
    assert nx.is_directed_acyclic_graph(nx.DiGraph((u, v) for u, v, k in G.edges(keys=True) if k.endswith("#broader")))
    same = to_networkx(_union(golden_store))
    assert (same.number_of_nodes(), same.number_of_edges()) == (NODES, EDGES)


def test_graphml_export_reads_back(golden_store, tmp_path):
    path = tmp_path / "kg.graphml"
    assert export_graph(golden_store, path) == UNION_TRIPLES
    back = nx.read_graphml(path, force_multigraph=True)
    assert (back.number_of_nodes(), back.number_of_edges()) == (NODES, EDGES)
    assert back.nodes[str(mint("product", "shop", MUG))]["schema:name"] == "Blue mug"
    details = back.nodes[str(mint("model", "head-v1"))]["pkg:details"]
    assert json.loads(details) == {"dim": 384}


@pytest.mark.parametrize(("fmt", "rdflib_format"), [("nt", "nt"), ("ttl", "turtle"), ("jsonld", "json-ld")])
def test_triple_exports_read_back_isomorphic(golden_store, tmp_path, fmt, rdflib_format):
    path = tmp_path / f"kg.{fmt}"
    assert export_graph(golden_store, path, fmt) == UNION_TRIPLES
    back = Graph()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # raised inside rdflib's JSON-LD parser
        back.parse(path, format=rdflib_format)
    assert len(back) == UNION_TRIPLES
    assert isomorphic(back, _union(golden_store))


@pytest.mark.parametrize(("fmt", "rdflib_format"), [("nq", "nquads"), ("trig", "trig")])
def test_dataset_exports_keep_the_named_graphs(golden_store, tmp_path, expected_dataset, fmt, rdflib_format):
    path = tmp_path / f"kg.{fmt}"
    assert export_graph(golden_store, path) == 124
    back = Dataset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        back.parse(path, format=rdflib_format)
    for g in golden_store.graphs():
        assert isomorphic(back.graph(g), expected_dataset.graph(g)), g


def test_export_formats_registry(golden_store, tmp_path):
    assert set(EXPORT_FORMATS.names()) == {"nt", "nq", "ttl", "trig", "jsonld", "graphml"}
    assert export_graph(golden_store, tmp_path / "kg.data", "turtle") == UNION_TRIPLES
    with pytest.raises(UnknownComponentError, match="valid names"):
        export_graph(golden_store, tmp_path / "kg.x", "rdfxml")
    one = tmp_path / "catalog.nt"
    assert golden_store.dump(one, graph=mint("graph", "catalog", "shop")) == 26
