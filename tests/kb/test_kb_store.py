"""The Oxigraph store: bulk adds, counts, safe bindings, refused updates, persistence, dumps."""

from __future__ import annotations

import pytest
from rdflib import BNode, Literal, URIRef

from prodkg.kb.iri import mint
from prodkg.kb.store import STORES, OxigraphStore, open_store
from prodkg.kb.vocab import PKG, SDO
from prodkg.errors import QueryError, StoreError, UnknownComponentError

G = mint("graph", "catalog", "t")
HOSTILE_ID = 'He said "hi" } ; DROP ALL # \n\t<x> \\ \' end'
BY_ID = "SELECT ?p ?id WHERE { ?p schema:productID ?id }"


def _products(*ids: str):
    for pid in ids:
        p = mint("product", "t", pid)
        yield (p, SDO.productID, Literal(pid), G)
        yield (p, SDO.name, Literal(f"name of {pid}"), G)


def test_add_count_and_graphs(golden, golden_store):
    # golden.trig holds 26 catalog + 27 taxonomy + 71 run-graph triples = 124. The builders give
    # 131 statements: run_quads and prediction_quads both describe the run (3) and model (4) nodes.
    assert len(golden.quads()) == 131
    assert len(golden_store) == 124
    assert [str(g) for g in golden_store.graphs()] == [
        "https://example.org/prodkg/graph/catalog/shop",
        "https://example.org/prodkg/graph/run/run-1",
        "https://example.org/prodkg/graph/taxonomy/kitchen",
    ]


def test_add_quads_returns_statements_given_and_accepts_triples():
    store = OxigraphStore(None)
    assert store.add_quads([*list(_products("a", "b")), (URIRef("urn:x:s"), SDO.name, Literal("default"))]) == 5
    assert len(store) == 5
    assert store.query("ASK { GRAPH ?g { ?s schema:name 'default' } }").boolean is False
    assert store.query("ASK { ?s schema:name 'default' }").boolean is True


@pytest.mark.parametrize("use_substitutions", [True, False], ids=["substitution", "values-clause"])
def test_hostile_binding_returns_the_right_row_and_breaks_nothing(use_substitutions):
    store = OxigraphStore(None)
    store.use_substitutions = use_substitutions
    store.add_quads(_products(HOSTILE_ID, "plain", "He said"))
    before = len(store)
    result = store.query(BY_ID, {"id": HOSTILE_ID})
    assert result.to_frame().to_dict("records") == [{"p": str(mint("product", "t", HOSTILE_ID)), "id": HOSTILE_ID}]
    assert store.query(BY_ID, {"?id": "no such id"}).rows == []
    assert len(store) == before
    iri = store.query(BY_ID, {"p": mint("product", "t", "plain")})
    assert iri.column("id") == ["plain"]


def test_bindings_are_typed():
    store = OxigraphStore(None)
    s = mint("run", "r")
    store.add_quads([(s, PKG.confidence, Literal(0.25), G), (s, PKG.runId, Literal("r"), G)])
    q = "SELECT ?s ?t WHERE { ?s pkg:confidence ?c FILTER(?c < ?t) }"
    assert len(store.query(q, {"t": 0.3})) == 1
    assert len(store.query(q, {"t": 0.2})) == 0
    assert len(store.query(q, {"t": 1})) == 1  # xsd:integer compares with xsd:double
    with pytest.raises(QueryError, match="cannot bind a list"):
        store.query(q, {"t": [1]})
    with pytest.raises(QueryError, match="not a SPARQL variable name"):
        store.query(q, {"t }": 1})
    with pytest.raises(QueryError, match="projected"):
        store.query("SELECT ?s WHERE { ?s pkg:confidence ?c FILTER(?c < ?t) }", {"t": 0.3})


@pytest.mark.parametrize(
    "update",
    [
        "INSERT DATA { <urn:a> <urn:b> <urn:c> }",
        "# comment first\nPREFIX ex: <http://example.org/>\n  delete where { ?s ?p ?o }",
        "DROP ALL",
        "WITH <urn:g> DELETE { ?s ?p ?o } WHERE { ?s ?p ?o }",
    ],
)
def test_update_through_query_is_refused(golden_store, update):
    before = len(golden_store)
    with pytest.raises(QueryError, match="UPDATE refused"):
        golden_store.query(update)
    assert len(golden_store) == before


def test_update_goes_through_update_and_syntax_errors_are_query_errors(golden_store):
    golden_store.update("INSERT DATA { GRAPH <urn:g> { <urn:a> <urn:b> 'c' } }")
    assert golden_store.query("ASK { <urn:a> <urn:b> 'c' }").boolean is True
    with pytest.raises(QueryError, match="syntax"):
        golden_store.query("SELECT WHERE {")
    with pytest.raises(QueryError, match="syntax"):
        golden_store.update("INSERT NONSENSE")


def test_results_convert_to_python_csv_and_sparql_json(golden_store):
    result = golden_store.query(
        "SELECT ?id ?c WHERE { ?pred pkg:subject ?p ; pkg:task 'category' ; pkg:confidence ?c . "
        "?p schema:productID ?id } ORDER BY ?c"
    )
    frame = result.to_frame()
    assert frame["c"].tolist() == [0.4, 0.75, 0.9]
    assert all(isinstance(v, float) for v in frame["c"])
    assert result.to_csv().splitlines()[0] == "id,c"
    data = __import__("json").loads(result.to_json())
    assert data["head"]["vars"] == ["id", "c"]
    assert data["results"]["bindings"][0]["c"] == {
        "type": "literal",
        "value": "0.4",
        "datatype": "http://www.w3.org/2001/XMLSchema#double",
    }
    construct = golden_store.query("CONSTRUCT { ?p a schema:Product } WHERE { ?p a schema:Product }")
    assert construct.kind == "graph" and len(construct) == 3


def test_persistence_across_reopen(tmp_path):
    path = tmp_path / "store"
    with OxigraphStore(path) as store:
        store.add_quads(_products("a", "b", "c"))
    with OxigraphStore(path, read_only=True) as store:
        assert len(store) == 6
        assert store.query(BY_ID, {"id": "b"}).column("p") == [str(mint("product", "t", "b"))]
        with pytest.raises(StoreError, match="read-only"):
            store.add_quads(_products("d"))
        with pytest.raises(StoreError, match="read-only"):
            store.update("DROP ALL")
    with pytest.raises(StoreError, match="closed"):
        len(store)
    with open_store(path) as again:
        again.add_quads(_products("d"))
        assert len(again) == 8


def test_read_only_needs_an_existing_store(tmp_path):
    with pytest.raises(StoreError, match="no store"):
        OxigraphStore(tmp_path / "missing", read_only=True)
    with pytest.raises(StoreError, match="in-memory"):
        OxigraphStore(None, read_only=True)


def test_a_failing_quad_iterator_raises_its_own_error():
    class Boom(RuntimeError):
        pass

    def quads():
        yield from _products(*[f"p{i}" for i in range(6000)])
        raise Boom("half way")

    store = OxigraphStore(None)
    with pytest.raises(Boom, match="half way"):
        store.add_quads(quads())
    with pytest.raises(Boom):
        store.add_quads(quads(), atomic=True)
    with pytest.raises(StoreError, match="not a valid absolute IRI"):
        store.add_quads([(URIRef("no scheme"), SDO.name, Literal("x"), G)])


def test_blank_nodes_keep_their_identity_across_chunks():
    b = BNode()
    store = OxigraphStore(None)
    store.add_quads((b, SDO.name, Literal(f"v{i}"), G) for i in range(10_000))
    assert store.query("SELECT (COUNT(DISTINCT ?s) AS ?n) WHERE { ?s schema:name ?v }").column("n") == [1]


def test_store_registry():
    assert STORES.get("pyoxigraph") is OxigraphStore
    with pytest.raises(UnknownComponentError, match="valid names: oxigraph"):
        open_store(None, backend="no-such-store")


def test_load_file_bulk_loads_a_dump_and_reports_bad_files(tmp_path):
    from rdflib import URIRef

    from prodkg.kb.store import OxigraphStore
    from prodkg.errors import StoreError

    g = URIRef("http://example.org/g")
    quads = [(URIRef(f"http://example.org/s{i}"), URIRef("http://example.org/p"), URIRef("http://example.org/o"), g) for i in range(5)]
    with OxigraphStore(None) as source:
        source.add_quads(quads)
        source.dump(tmp_path / "dump.nq")
    with OxigraphStore(tmp_path / "copy") as copy:
        copy.load_file(tmp_path / "dump.nq")
        assert len(copy) == 5 and copy.graphs() == [g]
        (tmp_path / "bad.nt").write_text("<http://example.org/a> <http://example.org/b> .\n", encoding="utf-8")
        with pytest.raises(StoreError, match="bad.nt is not valid nt"):
            copy.load_file(tmp_path / "bad.nt")
        with pytest.raises(StoreError, match="cannot load"):
            copy.load_file(tmp_path / "missing.nq")
