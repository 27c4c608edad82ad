"""The SPARQL server store against a real Virtuoso: loading, named queries as Oxigraph answers them, publishing, errors, a run."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from kb_golden import CUP, KETTLE, MUG, make_golden
from rdflib.term import Literal, URIRef
from test_kb_queries import CHECKS
from virtuoso import VirtuosoServer, start_or_skip

from prodkg.kb.incremental import change_quads, diff_products
from prodkg.kb.iri import mint
from prodkg.kb.queries import list_queries, run_query
from prodkg.kb.remote import (
    PASSWORD_ENV,
    USER_ENV,
    RemoteGraph,
    SparqlServerStore,
    VirtuosoStore,
    open_server_store,
)
from prodkg.kb.store import STORES, KnowledgeGraph, OxigraphStore, open_store
from prodkg.kb.triples import catalog_graph, double_literal
from prodkg.kb.vocab import SDO
from prodkg.errors import ConfigError, QueryError, StageError, StoreError


def _quads_with_changes() -> list[tuple]:
    """The golden graph plus one added, one changed and one removed product, so what_changed has rows."""
    def p(pid: str) -> URIRef:
        return mint("product", "shop", pid)

    previous = {p(MUG): (MUG, "h1"), p(KETTLE): (KETTLE, "h2"), p("gone"): ("gone", "h9")}
    current = {p(MUG): (MUG, "h1-new"), p(KETTLE): (KETTLE, "h2"), p(CUP): (CUP, "h3")}
    return make_golden().quads() + change_quads("run-1", "shop", diff_products(previous, current), previous, current)


def _store(server: VirtuosoServer, registry: str, **options) -> VirtuosoStore:
    """A store of its own on the shared server: each test keeps its publications in its own registry graph."""
    return VirtuosoStore(server.sparql_url, user=server.user, password=server.password,
                         registry_graph=f"urn:prodkg:test:{registry}", **options)


def _server_graphs(server: VirtuosoServer) -> set[str]:
    """Every graph the server holds, asked without prodkg in between."""
    response = httpx.post(server.sparql_url, data={"query": "SELECT DISTINCT ?g WHERE { GRAPH ?g { ?s ?p ?o } }"},
                          headers={"Accept": "application/sparql-results+json"})
    response.raise_for_status()
    return {b["g"]["value"] for b in response.json()["results"]["bindings"]}


def _rows(result) -> set[tuple]:
    return {tuple(row) for row in result.to_frame().itertuples(index=False)}


@pytest.fixture(scope="module")
def golden_quads() -> list[tuple]:
    return _quads_with_changes()


@pytest.fixture(scope="module")
def oxigraph(golden_quads) -> Iterator[OxigraphStore]:
    with OxigraphStore(None) as store:
        store.add_quads(golden_quads)
        yield store


@pytest.fixture(scope="module")
def published(virtuoso, golden_quads) -> Iterator[VirtuosoStore]:
    with _store(virtuoso, "golden", chunk_size=7) as store:  # small chunks: many Graph Store requests per graph
        RemoteGraph(store).publish(golden_quads, "run-1")
        yield store


@pytest.mark.slow  # a real Virtuoso: about 4 s to start, then a server round trip per step
def test_sparql_stores_are_registered(virtuoso):
    assert STORES.get("sparql") is SparqlServerStore and STORES.get("sparql11") is SparqlServerStore
    assert STORES.get("virtuoso") is VirtuosoStore
    with open_store(virtuoso.sparql_url, backend="virtuoso", user="dba", password="dba") as store:
        assert store.update_url == virtuoso.update_url and store.gsp_url == virtuoso.gsp_url
    # without a backend the server is asked what it is
    with open_server_store(virtuoso.sparql_url, read_only=True) as store:
        assert type(store) is VirtuosoStore and store.read_only
        assert store.gsp_url == f"{virtuoso.base_url}/sparql-graph-crud"  # no credentials: the anonymous endpoints


@pytest.mark.slow  # a real Virtuoso: about 4 s to start, then a server round trip per step
def test_publish_loads_the_same_graph_oxigraph_holds(published, oxigraph):
    assert len(published) == len(oxigraph) > 100
    assert published.graphs() == oxigraph.graphs()
    assert set(published.quads()) == set(oxigraph.quads())
    graph = catalog_graph("shop")
    assert set(published.quads(graph)) == set(oxigraph.quads(graph))
    live = published.current()
    assert live is not None and live.run_id == "run-1" and live.completed is not None
    assert sorted(live.graphs.values()) == oxigraph.graphs()
    # the server holds them under publication-specific names, which results never show
    assert all("/publication/" in str(served) for served in live.graphs)


@pytest.mark.slow  # a real Virtuoso: about 4 s to start, then a server round trip per step
@pytest.mark.parametrize("name", sorted(CHECKS))
def test_named_query_checks_pass_on_virtuoso(virtuoso, name):
    """The exact answers (order included) test_kb_queries expects from Oxigraph."""
    with _store(virtuoso, f"check-{name}") as store:
        RemoteGraph(store).publish(make_golden().quads(), "run-1")
        CHECKS[name](store)


CASES = [
    ("products_per_category", {}),
    ("products_per_category", {"run_id": "run-1"}),
    ("product_categories", {}),
    ("product_categories", {"product_id": MUG}),
    ("low_confidence", {"threshold": 0.5}),
    ("low_confidence", {"threshold": 0.95, "task": "category"}),
    ("products_in_category", {"category": "kitchenware"}),
    ("products_in_category", {"category": "drinkware", "run_id": "run-1"}),
    ("brand_in_category", {"brand": "ACME", "category": "kitchenware"}),
    ("what_changed", {}),
    ("what_changed", {"change": "removed"}),
    # a value that would break out of a string if it were spliced into the query
    ("product_categories", {"product_id": 'x" } } ; DROP ALL ; SELECT * { "'}),
]


def test_every_named_query_has_a_case():
    # the golden run flags no unknown product: unknown_products has a test of its own below
    assert {name for name, _ in CASES} | {"unknown_products"} == set(list_queries())


@pytest.mark.slow  # a real Virtuoso: about 4 s to start, then a server round trip per step
def test_unknown_products_gives_the_rows_oxigraph_gives(virtuoso):
    from test_kb_trust import trust_quads

    quads = trust_quads(make_golden())
    with _store(virtuoso, "check-unknown") as store, OxigraphStore(None) as local:
        RemoteGraph(store).publish(quads, "run-1")
        local.add_quads(quads)
        for bindings in ({}, {"run_id": "run-1"}):
            expected = run_query(local, "unknown_products", **bindings)
            got = run_query(store, "unknown_products", **bindings)
            assert got.variables == expected.variables and _rows(got) == _rows(expected)
            assert len(expected) == 1


def _catalog_at_scale(n: int) -> tuple[list[tuple], pd.DataFrame, dict[str, str]]:
    """``n`` products under 40 aisles of 5 departments, each with a seeded category guess, and a brand or a
    colour guess for every other one: the quads, the predictions frame and each aisle's department."""
    from prodkg.kb.frame_nquads import catalog_nquads, prediction_nquads
    from prodkg.kb.triples import run_quads, taxonomy_quads

    rng = np.random.default_rng(7)
    department = {f"aisle {i}": f"department {i % 5}" for i in range(40)}
    concepts = [(d, None) for d in sorted(set(department.values()))] + sorted(department.items())
    ids = [f"p{i:05d}" for i in range(n)]
    products = pd.DataFrame({"product_id": ids, "title": [f"product {i}" for i in range(n)], "domain": "feed", "category": None})
    aisles = sorted(department)
    other = [("brand", f"maker {i % 30}") if i % 4 == 1 else ("color", ["red", "blue", "green"][i % 3]) for i in range(0, n, 2)]
    predictions = pd.DataFrame({
        "product_id": ids + ids[::2],
        "task": ["category"] * n + [task for task, _ in other],
        "value": list(rng.choice(aisles, n)) + [value for _, value in other],
        "confidence": rng.uniform(0.05, 1.0, n + len(other)).round(4),
        "model": "category/dann/scale",
    })
    run = make_golden().run
    chunks = [*catalog_nquads(products, catalog="shop", attributes=[], scheme="aisles"),
              *prediction_nquads(predictions, run, catalog="shop", scheme="aisles", threshold=0.5)]
    with OxigraphStore(None) as store:
        store.add_quads(taxonomy_quads("aisles", concepts) + run_quads(run), nquads=chunks)
        quads = list(store.quads())
    return quads, predictions, department


@pytest.mark.slow  # 20,000 products published to a real Virtuoso: about 30 s
def test_reviewer_queries_give_the_frames_rows_on_both_stores_at_20k_products(tmp_path):
    """low_confidence and products_in_category against what the input frames say, on Oxigraph and on Virtuoso.

    Both queries join sub-selects, which keeps them linear on Oxigraph at a million products. One earlier
    form of low_confidence (the labels as a plain sub-select group) dropped 20 of 5,276 rows on Virtuoso at
    this size while the golden graph's few rows all came back: so this test publishes a catalog that large,
    to a server of its own (the session's server stays small for the tests that time its requests).
    """
    quads, predictions, department = _catalog_at_scale(20_000)
    low = predictions[predictions["confidence"] < 0.3]
    expected_low = sorted(zip(low["product_id"], low["task"], low["value"], low["confidence"], strict=True))
    published = predictions[(predictions["task"] == "category") & (predictions["confidence"] >= 0.5)]
    in_department = published[published["value"].map(department) == "department 3"]
    expected_in = sorted(zip(in_department["product_id"], in_department["value"], strict=True))
    assert len(expected_low) > 4_000 and len(expected_in) > 1_500
    server = start_or_skip(tmp_path / "virtuoso")
    try:
        _check_reviewer_queries(server, quads, expected_low, expected_in)
    finally:
        server.stop()


def _check_reviewer_queries(server: VirtuosoServer, quads: list[tuple], expected_low: list[tuple], expected_in: list[tuple]) -> None:
    with _store(server, "scale", chunk_size=50_000) as remote, OxigraphStore(None) as local:
        local.add_quads(quads)
        RemoteGraph(remote).publish(quads, "run-1")
        for store in (local, remote):
            rows = run_query(store, "low_confidence", threshold=0.3).to_frame()
            assert sorted(zip(rows["product_id"], rows["task"], rows["value"], rows["confidence"], strict=True)) == expected_low
            assert list(rows["confidence"]) == sorted(rows["confidence"])  # least confident first
            assert set(rows["run_id"]) == {"run-1"} and set(rows["model_id"]) == {"category/dann/scale"}
            rows = run_query(store, "products_in_category", category="department 3").to_frame()
            assert sorted(zip(rows["product_id"], rows["predicted_category"], strict=True)) == expected_in
            assert set(rows["category"]) == {"department 3"}


@pytest.mark.slow  # a real Virtuoso: about 4 s to start, then a server round trip per step
@pytest.mark.parametrize(("name", "bindings"), CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_named_queries_give_the_rows_oxigraph_gives(published, oxigraph, name, bindings):
    expected = run_query(oxigraph, name, **bindings)
    got = run_query(published, name, **bindings)
    assert got.variables == expected.variables
    assert _rows(got) == _rows(expected)
    if "DROP" not in str(bindings):
        assert len(expected) > 0  # a case that returns nothing would prove little
    assert len(published) == len(oxigraph)  # and nothing was dropped


@pytest.mark.slow  # a real Virtuoso: about 4 s to start, then a server round trip per step
def test_queries_see_only_the_published_graphs(published, oxigraph):
    # Virtuoso's own system graphs and other registries' graphs share the server
    query = "SELECT ?g (COUNT(*) AS ?n) WHERE { GRAPH ?g { ?s ?p ?o } } GROUP BY ?g"
    assert _rows(published.query(query)) == _rows(oxigraph.query(query))
    union = "SELECT (COUNT(*) AS ?n) WHERE { ?s ?p ?o }"  # the default graph is the union of the graphs
    assert published.query(union).column("n") == oxigraph.query(union).column("n")
    ask = "ASK { ?p a schema:Product ; schema:productID ?id }"
    assert published.query(ask, bindings={"id": KETTLE}).boolean is True
    assert published.query(ask, bindings={"id": "no such product"}).boolean is False
    construct = "CONSTRUCT { ?c skos:prefLabel ?l } WHERE { ?c a skos:Concept ; skos:prefLabel ?l }"
    assert set(published.query(construct).graph) == set(oxigraph.query(construct).graph)
    # Virtuoso answers a comparison or BOUND() with the integers 1 and 0; they come back as booleans
    answer = published.query("SELECT ((1 > 0) AS ?yes) (BOUND(?x) AS ?no) (2 AS ?two) WHERE {}").first()
    assert answer == {"yes": True, "no": False, "two": 2} and type(answer["yes"]) is bool and type(answer["two"]) is int
    assert {type(v) for v in run_query(published, "product_categories").column("accepted")} == {bool}


@pytest.mark.slow  # a real Virtuoso: about 4 s to start, then a server round trip per step
def test_dump_writes_what_oxigraph_writes(published, oxigraph, tmp_path):
    n = published.dump(tmp_path / "server.nq")
    assert n == oxigraph.dump(tmp_path / "local.nq") == len(oxigraph)
    lines = [set((tmp_path / f).read_text(encoding="utf-8").splitlines()) for f in ("server.nq", "local.nq")]
    assert lines[0] == lines[1]
    assert published.dump(tmp_path / "catalog.ttl", graph=catalog_graph("shop")) == len(list(oxigraph.quads(catalog_graph("shop"))))


@pytest.mark.slow  # a real Virtuoso: about 4 s to start, then a server round trip per step
def test_publish_replaces_the_previous_publication(virtuoso):
    golden = make_golden()
    with _store(virtuoso, "replace") as store:
        graph = RemoteGraph(store)
        first = graph.publish(golden.quads(threshold=0.5), "run-1")
        assert run_query(store, "products_per_category").column("products") == [1, 1]
        second = graph.publish(golden.quads(threshold=0.8), "run-2")  # only the mug's 0.9 is accepted now
        assert graph.current() == second and second.run_id == "run-2"
        assert run_query(store, "products_per_category").column("category") == ["mug"]
        assert len(store) == len(set(golden.quads(threshold=0.8)))  # the quads repeat a few statements
        on_server = _server_graphs(virtuoso)
        assert not {str(g) for g in first.graphs} & on_server  # the previous graphs are gone
        assert {str(g) for g in second.graphs} <= on_server
        assert len(store._publications()) == 1


@pytest.mark.slow  # a real Virtuoso: about 4 s to start, then a server round trip per step
def test_a_failed_publish_leaves_the_previous_graph_live(virtuoso):
    golden = make_golden()

    def breaks_midway():
        for i, quad in enumerate(golden.quads(threshold=0.8)):
            if i == 60:
                raise RuntimeError("the catalog feed broke")
            yield quad

    with _store(virtuoso, "failed", chunk_size=5) as store:  # several chunks are on the server when it breaks
        graph = RemoteGraph(store)
        before = graph.publish(golden.quads(), "run-1")
        answer = run_query(store, "product_categories").to_frame()
        with pytest.raises(RuntimeError, match="the catalog feed broke"):
            graph.publish(breaks_midway(), "run-broken")
        assert graph.current() == before
        assert run_query(store, "product_categories").to_frame().equals(answer)
        left = {g for g in _server_graphs(virtuoso) if "/publication/run-broken-" in g}
        assert left == set()  # what the failed load wrote is removed
        assert len(store._publications()) == 1
        with pytest.raises(StoreError, match="produced no quads"):
            graph.publish([], "run-3")
        assert graph.current() == before


@pytest.mark.slow  # a real Virtuoso: about 4 s to start, then a server round trip per step
def test_add_quads_creates_or_extends_the_live_graph(virtuoso):
    with _store(virtuoso, "add") as store:
        assert len(store) == 0 and store.graphs() == [] and store.current() is None
        assert store.query("SELECT * WHERE { ?s ?p ?o }").rows == []  # an empty dataset, not the server's graphs
        graph = catalog_graph("adhoc")
        product = mint("product", "adhoc", "p1")
        assert store.add_quads([(product, SDO.productID, Literal("p1"), graph)]) == 1
        store.add_quads([(product, SDO.name, Literal("Thing"), graph)])
        assert store.graphs() == [graph] and len(store) == 2
        assert store.query("SELECT ?name WHERE { ?p schema:name ?name }").column("name") == ["Thing"]
        with pytest.raises(StoreError, match="named graphs only"):
            store.add_quads([(product, SDO.name, Literal("no graph"))])


@pytest.mark.slow  # a real Virtuoso: about 4 s to start, then a server round trip per step
def test_doubles_come_back_to_the_last_digit(virtuoso):
    # Virtuoso 7.2 writes doubles with 6 significant digits in JSON and N-Triples answers
    values = [0.9999998807907104, 1.2345678901234567, 1e-300, 0.5, 3.0]
    graph = catalog_graph("numbers")
    quads = [(mint("product", "numbers", str(i)), SDO.value, double_literal(v), graph) for i, v in enumerate(values)]
    quads.append((mint("product", "numbers", "same"), SDO.value, double_literal(0.12345671), graph))
    quads.append((mint("product", "numbers", "same"), SDO.value, double_literal(0.12345672), graph))  # equal to 6 digits
    with _store(virtuoso, "numbers") as store, OxigraphStore(None) as local:
        store.add_quads(quads)
        local.add_quads(quads)
        query = "SELECT ?p ?v WHERE { ?p schema:value ?v } ORDER BY ?v"
        assert store.query(query).rows == local.query(query).rows
        assert sorted(store.query(query).column("v")) == sorted([*values, 0.12345671, 0.12345672])
        construct = "CONSTRUCT { ?p schema:value ?v } WHERE { ?p schema:value ?v }"
        assert set(store.query(construct).graph) == set(local.query(construct).graph)
        assert set(store.quads()) == set(local.quads())


@pytest.mark.slow  # a real Virtuoso: about 4 s to start, then a server round trip per step
def test_refusals(virtuoso, published):
    with open_server_store(virtuoso.sparql_url, read_only=True) as reader:
        with pytest.raises(StoreError, match="read-only"):
            reader.add_quads([])
        with pytest.raises(QueryError, match="UPDATE refused"):
            reader.query("DELETE WHERE { ?s ?p ?o }")
        with pytest.raises(QueryError, match="HTTP 400.*syntax error"):
            reader.query("SELECT * WHERE { ?s ?p }")
    with VirtuosoStore(virtuoso.sparql_url, user="dba", password="wrong") as writer:
        with pytest.raises(StoreError, match="refused access .HTTP 401"):
            writer.update("INSERT DATA { GRAPH <urn:x> { <urn:a> <urn:b> <urn:c> } }")
    with pytest.raises(StoreError, match="closed"):
        len(writer)


def test_a_server_that_is_down_gives_store_error_naming_its_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once the socket is closed
    url = f"http://127.0.0.1:{port}/sparql"
    with pytest.raises(StoreError, match=rf"cannot reach the SPARQL server at {url}.*2 attempts"):
        open_server_store(url, retries=1, backoff=0.01)
    with SparqlServerStore(url, retries=0) as store, pytest.raises(StoreError, match=url):
        store.query("ASK {}")


def test_urls_with_credentials_are_refused(monkeypatch):
    with pytest.raises(StoreError, match=PASSWORD_ENV):
        SparqlServerStore("http://dba:secret@127.0.0.1:8890/sparql")
    with pytest.raises(StoreError, match="http"):
        SparqlServerStore("ftp://127.0.0.1/sparql")
    monkeypatch.setenv(USER_ENV, "someone")
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    with pytest.raises(StoreError, match="no password"):
        SparqlServerStore("http://127.0.0.1:8890/sparql")


@pytest.mark.slow
def test_results_cut_at_the_server_row_limit_are_refused_and_graphs_are_read_in_pages(tmp_path_factory, golden_quads):
    server = start_or_skip(tmp_path_factory.mktemp("virtuoso-small"), max_rows=10)
    try:
        with _store(server, "small", chunk_size=1000) as store:
            RemoteGraph(store).publish(golden_quads, "run-1")
            with pytest.raises(QueryError, match="cut the result at 10 rows"):
                store.query("SELECT * WHERE { ?s ?p ?o }")
            with OxigraphStore(None) as local:
                local.add_quads(golden_quads)
                assert set(store.quads()) == set(local.quads())  # graphs of 27 to 80 triples, in pages of 10
    finally:
        server.stop()


def test_run_config_keeps_the_server_out_of_the_fingerprint():
    from prodkg.flows.config import load_config

    plain = load_config(dataset="office-caltech-10")
    mirrored = load_config(dataset="office-caltech-10", store_url="http://127.0.0.1:8890/sparql",
                           store_gsp_url="http://127.0.0.1:8890/sparql-graph-crud-auth")
    assert plain.fingerprint() == mirrored.fingerprint()
    with pytest.raises(ConfigError, match="credentials"):
        load_config(dataset="office-caltech-10", store_url="http://dba:dba@127.0.0.1:8890/sparql")
    with pytest.raises(ConfigError, match="need store_url"):
        load_config(dataset="office-caltech-10", store_update_url="http://127.0.0.1:8890/sparql-auth")


@pytest.mark.slow
def test_a_run_mirrors_its_graph_and_prodkg_query_reads_it(virtuoso, sample_catalog, tmp_path, monkeypatch, capsys):
    from prodkg.flows.cli import main as cli_main
    from prodkg.flows.config import load_config
    from prodkg.flows.pipeline import run_pipeline

    monkeypatch.setenv(USER_ENV, virtuoso.user)
    monkeypatch.setenv(PASSWORD_ENV, virtuoso.password)
    out = tmp_path / "out"
    cfg = load_config(catalog=str(sample_catalog), source=["webshop"], target=["supplier"], out=str(out), epochs=5,
                      baseline=None, use_prefect=False, progress=False, store_url=virtuoso.sparql_url)
    summary = run_pipeline(cfg)
    manifest = json.loads((Path(summary["run_dir"]) / "manifest.json").read_text())
    assert PASSWORD_ENV not in json.dumps(manifest) and manifest["config"]["store_url"] == virtuoso.sparql_url

    with KnowledgeGraph(out / "kg").open() as local, open_server_store(virtuoso.sparql_url, read_only=True) as server:
        assert len(server) == len(local) > 1000
        assert set(server.quads()) == set(local.quads())  # doubles included, to the last digit
        assert server.current().run_id == summary["run_id"]
        # the golden fixture's categories (kitchenware, drinkware) are not in the sample catalog: a label the graph lacks is refused
        for name, bindings in [(n, b) for n, b in CASES if n != "brand_in_category" and "category" not in b] + [
            ("products_in_category", {"category": "mug"}),
            ("low_confidence", {"threshold": 1.0}),
        ]:
            assert _rows(run_query(server, name, **bindings)) == _rows(run_query(local, name, **bindings)), name
        assert len(run_query(server, "what_changed")) == summary["counts"]["products"]  # all added
        expected = run_query(local, "what_changed", change="added").to_frame()

    capsys.readouterr()
    assert cli_main(["query", "--store-url", virtuoso.sparql_url, "--name", "what_changed", "--bind", "change=added",
                     "--format", "json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert records == expected.to_dict("records") and len(records) == summary["counts"]["products"]

    # a server that is down: the local graph is published, the run fails saying the server was not updated
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/sparql"
    before = KnowledgeGraph(out / "kg").current_path()
    cfg.store_url = dead
    with pytest.raises(StageError, match=rf"the local graph was published.*{dead} was NOT updated"):
        run_pipeline(cfg)
    assert KnowledgeGraph(out / "kg").current_path() != before
    with open_server_store(virtuoso.sparql_url, read_only=True) as server:
        assert server.current().run_id == summary["run_id"]  # still the first run's graph
