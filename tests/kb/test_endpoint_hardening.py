"""Hostile requests against a running `prodkg serve`: each reproduces a failure measured on the old endpoint.

The server runs as a real process (the CLI) on 127.0.0.1; a few tests start it in a thread to
reach settings the CLI would need a file for. No test asserts a duration: only statuses,
answers, and that the server and other clients carry on.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
from kb_golden import KETTLE, MUG
from rdflib import Literal, URIRef

from prodkg.kb.iri import mint
from prodkg.kb.sparql_endpoint import STATUS_CODES, EndpointSettings, create_app, uvicorn_config
from prodkg.kb.store import KnowledgeGraph

uvicorn = pytest.importorskip("uvicorn")

pytestmark = pytest.mark.slow

TRIVIAL = "ASK { ?s ?p ?o }"
#: a join of four copies of the graph: billions of rows to count, no memory
ENDLESS_COUNT = "SELECT (COUNT(*) AS ?n) WHERE { ?a ?b ?c . ?d ?e ?f . ?g ?h ?i . ?j ?k ?l }"
#: sorting a cartesian product materialises it: past any memory cap quickly
CARTESIAN_SORT = "SELECT ?a ?d ?g WHERE { ?a ?b ?c . ?d ?e ?f . ?g ?h ?i } ORDER BY ?c ?f ?i"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _quads(golden, run: str = "run-1") -> list[tuple]:
    filler = mint("graph", "filler")
    extra = [(URIRef(f"urn:x:{i}"), URIRef("urn:x:n"), Literal(i), filler) for i in range(200)]
    extra.append((URIRef("urn:x:run"), URIRef("urn:x:is"), Literal(run), filler))
    return golden.quads() + extra


def request(port: int, method: str, path: str = "/sparql", body: bytes | None = None, headers: dict | None = None,
            host: str | None = None, timeout: float = 60) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host or f"127.0.0.1:{port}")
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def query(port: int, text: str, accept: str = "application/sparql-results+json", **kw) -> tuple[int, dict, bytes]:
    return request(port, "POST", body=text.encode(), headers={"Content-Type": "application/sparql-query", "Accept": accept}, **kw)


def ask(port: int, text: str) -> bool:
    status, _, body = query(port, text)
    assert status == 200, body
    return json.loads(body)["boolean"]


def status_of(port: int) -> dict:
    code, _, body = request(port, "GET", "/status")
    assert code == 200, body
    return json.loads(body)


def _wait_until_up(port: int, proc: subprocess.Popen | None = None, limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            if request(port, "GET", "/status", timeout=5)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("server did not come up")


def _start_cli(out: Path, *extra: str) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    cmd = [sys.executable, "-m", "prodkg.flows.cli", "serve", "--out", str(out), "--port", str(port), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _wait_until_up(port, proc)
    return proc, port


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def served(tmp_path_factory, golden_module):
    """A read-only `prodkg serve` process with a short deadline and a small memory cap."""
    out = tmp_path_factory.mktemp("served")
    KnowledgeGraph(out / "kg").publish(_quads(golden_module), "run-1")
    proc, port = _start_cli(out, "--timeout", "3", "--max-memory-mb", "256")
    yield port, proc, out
    _stop(proc)


@pytest.fixture(scope="module")
def golden_module():
    from kb_golden import make_golden

    return make_golden()


@pytest.fixture
def threaded(tmp_path, golden):
    """Start the app in a uvicorn thread with given settings; yields a starter returning the port."""
    servers = []

    def start(settings: EndpointSettings, root: Path | None = None) -> int:
        if root is None:
            root = tmp_path / f"kg{len(servers)}"
            KnowledgeGraph(root).publish(_quads(golden), "run-1")
        port = _free_port()
        server = uvicorn.Server(uvicorn_config(create_app(root, settings), "127.0.0.1", port, log_level="error"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        _wait_until_up(port)
        servers.append((server, thread))
        return port

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=15)


class Listener:
    """A loopback TCP listener that records every connection made to it (the SSRF canary)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def listener():
    canary = Listener()
    yield canary
    canary.close()


# -- crash: huge and pathological queries ------------------------------------------------------------------------
def test_a_669_kb_filter_is_refused_with_413_and_the_server_lives_on(served):
    port, proc, _ = served
    huge = "SELECT * WHERE { ?s ?p ?o FILTER(" + " || ".join(f"?o = 'v{i:05d}'" for i in range(40_000)) + ") }"
    assert len(huge) > 600_000
    status, _, body = query(port, huge)
    assert status == 413 and b"max-query-kb" in body
    form = urllib.parse.urlencode({"query": huge}).encode()
    status, _, _ = request(port, "POST", body=form, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 413
    assert proc.poll() is None and ask(port, TRIVIAL)


def test_a_huge_query_let_through_by_the_size_cap_is_parsed_in_a_worker_and_stopped(threaded):
    port = threaded(EndpointSettings(timeout_s=2, max_query_kb=1024))
    huge = "SELECT * WHERE { ?s ?p ?o FILTER(" + " || ".join(f"?o = 'v{i:05d}'" for i in range(40_000)) + ") }"
    status, _, body = query(port, huge)
    assert status in (504, 500), body  # the parser outlives the deadline (or crashes): its worker goes, not the server
    assert ask(port, TRIVIAL)


def test_sorting_a_cartesian_product_hits_the_memory_cap_not_the_server(threaded):
    port = threaded(EndpointSettings(timeout_s=120, max_memory_mb=128))
    status, _, body = query(port, CARTESIAN_SORT)
    assert status == 507, body
    assert b"memory cap" in body
    assert ask(port, TRIVIAL)


# -- one query no longer blocks everyone -------------------------------------------------------------------------
def test_a_timed_out_query_is_stopped_while_other_clients_are_answered(served):
    port, proc, _ = served
    before = set(status_of(port)["pool"]["pids"])
    heavy: list[tuple[int, bytes]] = []
    thread = threading.Thread(target=lambda: heavy.append(query(port, ENDLESS_COUNT)[::2]))
    thread.start()
    answered = 0
    while thread.is_alive():  # another client, answered while the heavy query runs
        assert ask(port, f"ASK {{ ?p schema:productID '{MUG}' }}")
        answered += 1
        time.sleep(0.05)
    thread.join()
    status, body = heavy[0]
    assert status == 504 and b"timed out after 3 s" in body
    assert answered >= 1
    # the worker that ran it was killed: its process is gone, not still counting
    gone = before - set(status_of(port)["pool"]["pids"])
    assert gone
    for pid in gone:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    assert proc.poll() is None


def test_four_timed_out_queries_leave_trivial_queries_answered(served):
    port, _, _ = served
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(query(port, ENDLESS_COUNT)[0])) for _ in range(4)]
    for t in threads:
        t.start()
    while status_of(port)["pool"]["busy"] < 4:  # every worker taken: the trivial query must wait out a
        time.sleep(0.02)                         # deadline and the start of a replacement worker
    trivial = query(port, TRIVIAL)  # waits for a free worker, never fails with their timeout
    for t in threads:
        t.join()
    assert sorted(results) == [504] * 4
    assert trivial[0] == 200
    assert all(ask(port, TRIVIAL) for _ in range(3))


def test_a_1_mb_values_query_is_refused_and_blocks_no_one(served):
    port, _, _ = served
    values = "SELECT ?v WHERE { VALUES ?v { " + " ".join(f'"{i:08d}"' for i in range(100_000)) + " } }"
    assert len(values) >= 1_000_000
    status, _, body = query(port, values)
    assert status == 413, body
    assert ask(port, TRIVIAL)


# -- no outbound requests ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pattern", [
    "SERVICE <http://127.0.0.1:{port}/> {{ ?s ?p ?o }}",
    "service silent <http://127.0.0.1:{port}/sparql> {{ ?s ?p ?o }}",
    "\\u0053ERVICE <http://127.0.0.1:{port}/> {{ ?s ?p ?o }}",
    "VALUES ?e {{ <http://127.0.0.1:{port}/> }} SERVICE ?e {{ ?s ?p ?o }}",
    "?s ?p ?o FILTER EXISTS {{ SERVICE <http://127.0.0.1:{port}/> {{ ?s ?p ?o }} }}",
    "{{ SELECT ?s WHERE {{ SERVICE <http://localhost:{port}/> {{ ?s ?p ?o }} }} }}",
])
def test_service_is_refused_and_nothing_leaves_the_server(served, listener, pattern):
    port, _, _ = served
    text = "SELECT * WHERE { " + pattern.format(port=listener.port) + " }"
    status, _, body = query(port, text)
    assert status == 403, body
    assert b"SERVICE" in body and b"--allow-outbound" in body
    assert listener.connections == 0


def test_from_and_from_named_fetch_nothing(served, listener):
    port, _, _ = served
    status, _, body = query(port, f"SELECT * FROM <http://127.0.0.1:{listener.port}/g> FROM NAMED <file:///etc/passwd> "
                                  "WHERE { ?s ?p ?o }")
    assert status == 200, body
    assert listener.connections == 0


def test_the_word_service_in_a_literal_is_not_a_service_call(served):
    port, _, _ = served
    status, _, body = query(port, "SELECT ?s WHERE { ?s ?p ?o FILTER(CONTAINS(STR(?o), 'SERVICE <http://x/>')) } LIMIT 1")
    assert status == 200, body


def test_an_allowed_outbound_host_is_reached(threaded, listener):
    port = threaded(EndpointSettings(timeout_s=10, outbound_hosts=("127.0.0.1",)))
    status, _, _ = query(port, f"SELECT * WHERE {{ SERVICE SILENT <http://127.0.0.1:{listener.port}/> {{ ?s ?p ?o }} }}")
    assert status in (200, 400)  # the canary answers nothing useful; what matters is that it was asked
    assert listener.connections >= 1


@pytest.fixture(scope="module")
def writable(tmp_path_factory, golden_module):
    """A `prodkg serve --allow-updates` process whose token comes from a file."""
    out = tmp_path_factory.mktemp("writable")
    KnowledgeGraph(out / "kg").publish(_quads(golden_module), "run-1")
    token_file = out / "token"
    token_file.write_text("t0ken-from-a-file\n")
    proc, port = _start_cli(out, "--allow-updates", "--token-file", str(token_file), "--timeout", "10")
    yield port, proc
    _stop(proc)


def _update(port: int, text: str, token: str | None = "t0ken-from-a-file") -> tuple[int, bytes]:
    headers = {"Content-Type": "application/sparql-update"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    status, _, body = request(port, "POST", body=text.encode(), headers=headers)
    return status, body


def test_load_of_files_and_urls_is_refused_even_with_the_token(writable, listener, tmp_path):
    port, _ = writable
    secret = tmp_path / "secret.nt"
    secret.write_text("<urn:secret> <urn:is> <urn:leaked> .\n")
    for target in (secret.as_uri(), f"http://127.0.0.1:{listener.port}/data.ttl"):
        status, body = _update(port, f"LOAD <{target}>")
        assert status == 403, body
        assert b"LOAD" in body
        status, body = _update(port, f"LOAD SILENT <{target}> INTO GRAPH <urn:g>")
        assert status == 403, body
    assert listener.connections == 0
    assert not ask(port, "ASK { <urn:secret> ?p ?o }")


def test_the_token_is_read_from_a_file_and_never_in_an_environment(writable):
    port, proc = writable
    assert _update(port, "INSERT DATA { <urn:a> <urn:b> <urn:c> }", token=None)[0] == 403
    assert _update(port, "INSERT DATA { <urn:a> <urn:b> <urn:c> }", token="t0ken-from-a-fil")[0] == 403
    assert _update(port, "INSERT DATA { <urn:a> <urn:b> <urn:c> }")[0] == 204
    assert ask(port, "ASK { GRAPH ?g { <urn:a> <urn:b> <urn:c> } }")
    pids = [proc.pid, *status_of(port)["pool"]["pids"]]
    for pid in pids:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        assert b"t0ken-from-a-file" not in environ
        assert b"RDFLIB_APIKEY" not in environ


# -- browsers ------------------------------------------------------------------------------------------------------
def test_cross_origin_form_posts_and_foreign_host_names_are_refused(served):
    port, _, _ = served
    form = urllib.parse.urlencode({"query": TRIVIAL}).encode()
    simple = {"Content-Type": "application/x-www-form-urlencoded"}
    assert request(port, "POST", body=form, headers={**simple, "Origin": "http://evil.example"})[0] == 403
    assert request(port, "POST", body=form, headers={**simple, "Origin": "null"})[0] == 403
    assert request(port, "POST", body=form, headers={**simple, "Sec-Fetch-Site": "cross-site"})[0] == 403
    assert request(port, "GET", "/sparql?" + urllib.parse.urlencode({"query": TRIVIAL}),
                   headers={"Sec-Fetch-Site": "same-site"})[0] == 403
    # DNS rebinding: a page of evil.example whose name now resolves to 127.0.0.1
    assert request(port, "POST", body=form, headers=simple, host=f"evil.example:{port}")[0] == 403
    # the same origin, and clients that are no browser, are served
    assert request(port, "POST", body=form, headers={**simple, "Origin": f"http://127.0.0.1:{port}"})[0] == 200
    assert request(port, "POST", body=form, headers=simple, host=f"localhost:{port}")[0] == 200
    assert request(port, "POST", body=form, headers=simple)[0] == 200


def test_an_allowed_host_name_is_served(threaded):
    port = threaded(EndpointSettings(allowed_hosts=("kg.internal",)))
    form = urllib.parse.urlencode({"query": TRIVIAL}).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    assert request(port, "POST", body=form, headers=headers, host=f"kg.internal:{port}")[0] == 200
    assert request(port, "POST", body=form, headers=headers, host=f"other.internal:{port}")[0] == 403


# -- malformed requests --------------------------------------------------------------------------------------------
def test_invalid_utf8_is_a_400(served):
    port, _, _ = served
    status, _, body = request(port, "POST", body=b"ASK { ?s ?p '\xff\xfe' }",
                              headers={"Content-Type": "application/sparql-query"})
    assert status == 400 and b"UTF-8" in body
    status, _, body = request(port, "POST", body=b"query=ASK%20%7B%20%3Fs%20%3Fp%20%27%FF%27%20%7D",
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 400 and b"UTF-8" in body
    assert request(port, "GET", "/sparql?query=%FF")[0] == 400


@pytest.mark.parametrize("content_type", ["text/plain", "application/json", "multipart/form-data; boundary=x", None,
                                          "application/sparql-query; charset=latin-1"])
def test_unsupported_content_types_are_a_415(served, content_type):
    port, _, _ = served
    headers = {"Content-Type": content_type} if content_type else {}
    status, _, body = request(port, "POST", body=TRIVIAL.encode(), headers=headers)
    assert status == 415, body
    assert b"application/sparql-query" in body or b"charset" in body


def test_oversized_get_and_post_are_answered_413_not_reset(served):
    port, proc, _ = served
    big = "SELECT * WHERE { ?s ?p ?o FILTER(?o = '" + "a" * 1_000_000 + "') }"
    status, _, body = request(port, "GET", "/sparql?" + urllib.parse.urlencode({"query": big}))
    assert status == 413 and b"POST long queries" in body
    status, _, _ = request(port, "POST", body=big.encode(), headers={"Content-Type": "application/sparql-query"})
    assert status == 413
    assert proc.poll() is None and ask(port, TRIVIAL)


def test_other_protocol_errors_have_their_documented_status(served):
    port, _, _ = served
    both = urllib.parse.urlencode({"query": TRIVIAL, "update": "CLEAR ALL"}).encode()
    cases = [
        (request(port, "POST", body=both, headers={"Content-Type": "application/x-www-form-urlencoded"}), 400),
        (request(port, "GET", "/sparql?" + urllib.parse.urlencode({"update": "CLEAR ALL"})), 400),
        (query(port, "SELEC ?s WHERE { ?s ?p ?o }"), 400),
        (request(port, "POST", body=b"CLEAR ALL", headers={"Content-Type": "application/sparql-update"}), 403),
        (request(port, "PUT", body=b"x", headers={"Content-Type": "application/sparql-query"}), 405),
        (request(port, "GET", "/nowhere"), 404),
    ]
    for (status, headers, body), expected in cases:
        assert status == expected, body
        assert status in STATUS_CODES
        assert json.loads(body)["status"] == status
    # a service description for a GET without a query
    status, headers, body = request(port, "GET", headers={"Accept": "text/turtle"})
    assert status == 200 and headers["content-type"].startswith("text/turtle") and b"sd:Service" in body


def test_content_negotiation_holds(served):
    port, _, _ = served
    status, headers, body = query(port, "SELECT ?o WHERE { <urn:x:run> <urn:x:is> ?o }", accept="text/csv")
    assert status == 200 and headers["content-type"].startswith("text/csv") and b"run-1" in body
    status, headers, body = query(port, "CONSTRUCT { ?s ?p ?o } WHERE { ?s ?p ?o } LIMIT 3", accept="text/turtle")
    assert status == 200 and headers["content-type"].startswith("text/turtle")
    status, headers, body = query(port, TRIVIAL, accept="text/html")  # nothing acceptable: the default
    assert status == 200 and headers["content-type"].startswith("application/sparql-results+xml")


# -- the live graph ------------------------------------------------------------------------------------------------
def _open_deleted(pids: list[int], root: Path) -> list[str]:
    found = []
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        if not fd_dir.exists():
            continue
        for fd in fd_dir.iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith(str(root)) and target.endswith("(deleted)"):
                found.append(f"{pid}: {target}")
    return found


def _served_run(port: int) -> str:
    status, _, body = query(port, "SELECT ?o WHERE { <urn:x:run> <urn:x:is> ?o }")
    assert status == 200, body
    return json.loads(body)["results"]["bindings"][0]["o"]["value"]


def test_the_server_follows_each_publication(tmp_path, golden):
    out = tmp_path / "out"
    kg = KnowledgeGraph(out / "kg")
    kg.publish(_quads(golden, "run-1"), "run-1")
    proc, port = _start_cli(out)
    try:
        status, headers, _ = query(port, TRIVIAL)
        assert headers["prodkg-run"] == "run-1" and _served_run(port) == "run-1"
        kg.publish(_quads(golden, "run-2"), "run-2")
        status, headers, _ = query(port, TRIVIAL)
        assert status == 200 and headers["prodkg-run"] == "run-2"
        assert _served_run(port) == "run-2"
        kg.publish([q for q in _quads(golden, "run-3") if KETTLE not in str(q[0])], "run-3")  # run-1 is deleted now
        assert _served_run(port) == "run-3"
        report = status_of(port)
        assert report["run"] == "run-3" and report["store"] == "stores/run-3" and report["publications_followed"] == 2
        _, _, description = request(port, "GET", headers={"Accept": "text/turtle"})
        assert b"serving run run-3" in description
        assert _open_deleted([proc.pid, *report["pool"]["pids"]], out / "kg") == []
    finally:
        _stop(proc)
