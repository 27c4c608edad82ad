"""The SPARQL endpoint over HTTP with a real client (SPARQLWrapper): queries answered, updates refused unless token-authorised."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from kb_golden import CUP, KETTLE, MUG
from SPARQLWrapper import JSON, POST, SPARQLWrapper
from SPARQLWrapper.SPARQLExceptions import QueryBadFormed

from prodkg.errors import QueryError
from prodkg.kb.sparql_endpoint import EndpointSettings, create_app, uvicorn_config
from prodkg.kb.store import KnowledgeGraph

uvicorn = pytest.importorskip("uvicorn")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def endpoint(tmp_path, golden):
    servers = []

    def start(settings: EndpointSettings) -> str:
        root = tmp_path / f"kg{len(servers)}"
        KnowledgeGraph(root).publish(golden.quads(), "run-1")
        port = _free_port()
        server = uvicorn.Server(uvicorn_config(create_app(root, settings), "127.0.0.1", port, log_level="error"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        servers.append((server, thread))
        return f"http://127.0.0.1:{port}/sparql"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)


def _client(url: str, query: str) -> SPARQLWrapper:
    client = SPARQLWrapper(url)
    client.setReturnFormat(JSON)
    client.setQuery(query)
    return client


def _post_update(url: str, update: str, token: str | None = None) -> int:
    headers = {"Content-Type": "application/sparql-update"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=update.encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_query_over_http_and_update_refused(endpoint):
    url = endpoint(EndpointSettings())
    result = _client(url, "SELECT ?id WHERE { ?p schema:productID ?id } ORDER BY ?id").query().convert()
    assert [b["id"]["value"] for b in result["results"]["bindings"]] == sorted([MUG, KETTLE, CUP])
    ask = _client(url, "ASK { ?c skos:prefLabel 'drinkware' }").query().convert()
    assert ask["boolean"] is True
    update = _client(url, "INSERT DATA { <urn:a> <urn:b> <urn:c> }")
    update.setMethod(POST)
    with pytest.raises(Exception, match="403"):
        update.query()
    assert _post_update(url, "INSERT DATA { <urn:a> <urn:b> <urn:c> }") == 403
    after = _client(url, "ASK { <urn:a> <urn:b> <urn:c> }").query().convert()
    assert after["boolean"] is False


def test_result_size_cap(endpoint):
    url = endpoint(EndpointSettings(max_rows=5))
    assert len(_client(url, "SELECT ?s WHERE { ?s ?p ?o } LIMIT 5").query().convert()["results"]["bindings"]) == 5
    # a valid query whose answer is too large: 422 with the cap in a header, never 400 (which clients read as malformed)
    with pytest.raises(urllib.error.HTTPError) as info:
        _client(url, "SELECT ?s WHERE { ?s ?p ?o }").query()
    assert not isinstance(info.value, QueryBadFormed)
    assert info.value.code == 422 and info.value.headers["Prodkg-Row-Limit"] == "5"
    assert b"more than 5 rows" in info.value.read()


def test_updates_need_the_flag_and_the_token(endpoint):
    with pytest.raises(QueryError, match="need a token"):
        EndpointSettings(allow_updates=True)
    url = endpoint(EndpointSettings(allow_updates=True, token="s3cret"))
    assert _post_update(url, "INSERT DATA { <urn:a> <urn:b> <urn:c> }") == 403
    assert _post_update(url, "INSERT DATA { <urn:a> <urn:b> <urn:c> }", token="wrong") == 403
    assert _post_update(url, "INSERT DATA { <urn:a> <urn:b> <urn:c> }", token="s3cret") == 204
    assert _client(url, "ASK { <urn:a> <urn:b> <urn:c> }").query().convert()["boolean"] is True


def test_a_query_past_its_deadline_is_answered_with_an_error(endpoint):
    url = endpoint(EndpointSettings(timeout_s=0.01))
    # about two million joined rows to count: far more than a hundredth of a second of work
    heavy = "SELECT (COUNT(*) AS ?n) WHERE { ?a ?b ?c . ?d ?e ?f . ?g ?h ?i }"
    # 504: the worker running it was stopped (not a malformed query, which is 400)
    with pytest.raises(urllib.error.HTTPError, match="504") as failure:
        _client(url, heavy).query()
    assert "timed out after 0.01 s" in failure.value.read().decode()


def _get(url: str, accept: str | None = None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def test_query_page_and_landing_are_served_offline(endpoint):
    url = endpoint(EndpointSettings())
    root = url.removesuffix("/sparql")
    status, headers, body = _get(root + "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    page = body.decode()
    assert 'href="/ui"' in page and "/ui?query=" in page and "what_changed" in page
    status, headers, body = _get(root + "/ui")
    assert status == 200 and b'<script src="/ui/query.js">' in body
    assert "default-src 'self'" in headers["content-security-policy"]
    for asset in ("query.js", "style.css"):
        status, _, content = _get(f"{root}/ui/{asset}")
        assert status == 200 and len(content) > 100
    # nothing is loaded from another host: no absolute URL in any src or href of the pages
    for content in (page, body.decode()):
        assert "src=\"http" not in content and "href=\"http" not in content and "//cdn" not in content
    # a browser opening /sparql gets the page; a SPARQL client still gets the service description
    assert b"query.js" in _get(url, "text/html,application/xhtml+xml,*/*;q=0.8")[2]
    assert b"sparql-service-description" in _get(url, "text/turtle")[2]
    assert _get(root + "/ui/other.js")[0] == 404


def test_tsv_is_answered_as_tsv(endpoint):
    url = endpoint(EndpointSettings())
    query = urllib.parse.quote("SELECT ?id ?title WHERE { ?p schema:productID ?id . OPTIONAL { ?p schema:name ?title } } ORDER BY ?id")
    status, headers, body = _get(f"{url}?query={query}", "text/tab-separated-values")
    assert status == 200 and headers["content-type"].startswith("text/tab-separated-values")
    lines = body.decode().splitlines()
    assert lines[0] == "?id\t?title"
    assert all(line.count("\t") == 1 for line in lines[1:]) and any(f'"{MUG}"' in line for line in lines)


def test_construct_results_use_the_graph_prefixes(endpoint):
    url = endpoint(EndpointSettings())
    query = urllib.parse.quote("CONSTRUCT { ?p schema:productID ?id } WHERE { ?p schema:productID ?id }")
    for accept in ("text/turtle", "application/rdf+xml"):
        status, _, body = _get(f"{url}?query={query}", accept)
        assert status == 200 and b"ns1" not in body and b"schema" in body, accept
