"""A SPARQL 1.1 server (Virtuoso, Fuseki, GraphDB, ...) as the graph store, spoken to over HTTP.

:class:`SparqlServerStore` speaks the SPARQL 1.1 Protocol (queries, updates) and the Graph Store
HTTP Protocol (bulk loads), and reads the servers' answers (SPARQL JSON results, N-Triples,
Turtle) into the terms Oxigraph gives. Server specifics live in subclasses
(:class:`kb.virtuoso.VirtuosoStore`).

Queries run over exactly the live publication's graphs (see :mod:`kb.publication`): the
protocol's ``default-graph-uri`` (their union is the default graph, as with Oxigraph's
``use_default_graph_as_union``) and ``named-graph-uri`` (``GRAPH ?g`` ranges over them) name
each one, and graph names in results are mapped back to the names prodkg gave them. A server's
own graphs (Virtuoso keeps its system graphs in the same store) are never seen.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import httpx
import pyoxigraph as ox
from rdflib import Graph
from rdflib.term import BNode, Literal, Node, URIRef

from prodkg.kb.nquads import term_to_nt
from prodkg.kb.publication import DEFAULT_REGISTRY_GRAPH, Publication, PublicationRegistry
from prodkg.kb.results import QueryResult, from_oxigraph, to_python
from prodkg.kb.sparql_text import inject_values, is_update, normalise_bindings
from prodkg.kb.store import STORES, GraphStore, OxigraphStore
from prodkg.kb.vocab import PREFIXES, XSD
from prodkg.errors import ProdkgError, QueryError, StoreError

__all__ = ["PASSWORD_ENV", "USER_ENV", "SparqlServerStore", "check_url"]

log = logging.getLogger(__name__)

#: Environment variables that hold the server credentials (never a config file or a manifest).
USER_ENV = "PRODKG_STORE_USER"
PASSWORD_ENV = "PRODKG_STORE_PASSWORD"

# A graph that is never written: naming it alone gives a query an empty dataset, where naming
# no graph at all would give the server's default dataset (all graphs, on Virtuoso).
_EMPTY_GRAPH = "urn:prodkg:empty"

_N_TRIPLES = "application/n-triples"
_RESULTS_JSON = "application/sparql-results+json"
_XSD_STRING = str(XSD.string)
_XSD_BOOLEAN = str(XSD.boolean)
_XSD_INTEGER = str(XSD.integer)
_RESULT_SET = "http://www.w3.org/2005/sparql-results#"
_RDF_TYPES = {
    "application/n-triples": ox.RdfFormat.N_TRIPLES,
    "text/plain": ox.RdfFormat.N_TRIPLES,
    "text/turtle": ox.RdfFormat.TURTLE,
    "application/x-turtle": ox.RdfFormat.TURTLE,
}

# The prologue grammar of kb.sparql_text.is_update, to find the query form after it.
_SKIP = r"(?:\s+|#[^\n]*(?:\n|$))*"
_PROLOGUE = rf"(?:(?:BASE\s*<[^>]*>|PREFIX\s+[^\s:]*:\s*<[^>]*>){_SKIP})*"
_FORM = re.compile(rf"^{_SKIP}{_PROLOGUE}(SELECT|CONSTRUCT|ASK|DESCRIBE)\b", re.IGNORECASE)

# Only failures that happen before the server saw the request are retried: a request that
# reached it (an update, a load) must not be sent twice.
_RETRYABLE = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def _credentials(user: str | None, password: str | None) -> tuple[str | None, str | None]:
    if user is None:
        user = os.environ.get(USER_ENV) or None
    if password is None:
        password = os.environ.get(PASSWORD_ENV)
    if user is not None and password is None:
        raise StoreError(f"a user name for the SPARQL server was given but no password: set {PASSWORD_ENV}")
    return user, password


def check_url(url: str, what: str = "SPARQL server URL") -> str:
    """``url`` if it is an http(s) URL without credentials in it.

    Raises:
        StoreError: another scheme, no host, or a user name or password inside the URL (put those
            in :data:`USER_ENV` and :data:`PASSWORD_ENV`, so they never reach a config or manifest).
    """
    if not isinstance(url, str) or not url:
        raise StoreError(f"{what} must be a non-empty str, got {url!r}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise StoreError(f"{what} must be an http:// or https:// URL, got {url!r}")
    if parts.username is not None or parts.password is not None:
        raise StoreError(f"{what} must not carry credentials; set {USER_ENV} and {PASSWORD_ENV} instead")
    return url


def _server_message(response: httpx.Response, limit: int = 400) -> str:
    text = response.text or response.reason_phrase or ""
    # Virtuoso echoes the whole query after its message; the message is what helps
    text = text.split("\nSPARQL query:", 1)[0]
    text = re.sub(r"<[^>]+>", " ", text) if "<html" in text[:200].lower() else text
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + " ..."


@STORES.register("sparql", aliases=("sparql11", "sparql-server"))
class SparqlServerStore(PublicationRegistry, GraphStore):
    """A graph held by a SPARQL 1.1 server, reached over HTTP.

    Queries go to ``query_url`` (SPARQL 1.1 Protocol, URL-encoded POST) over the live
    publication's graphs (see the module docstring), with the prefixes of
    :data:`kb.vocab.PREFIXES` predeclared. Bulk loads POST N-Triples per named graph to the
    Graph Store Protocol endpoint, ``chunk_size`` statements a request; without one they are
    ``INSERT DATA`` requests of the same size on ``update_url``.

    Args:
        query_url: the SPARQL query endpoint (named ``path`` so :func:`kb.store.open_store`
            can open it like any store).
        read_only: refuse updates and loads.
        update_url: the SPARQL update endpoint (default: ``query_url``).
        gsp_url: the Graph Store Protocol endpoint (``?graph=`` is appended); None to load
            through ``update_url``.
        user, password: credentials for HTTP authentication (default: the environment
            variables :data:`USER_ENV` and :data:`PASSWORD_ENV`).
        auth: ``"basic"`` or ``"digest"`` (default: the class's, basic here).
        timeout: seconds to wait for a response.
        chunk_size: statements per load request.
        retries: how often a request that could not connect is tried again, waiting
            ``backoff`` seconds, then twice as long each time.
        registry_graph: the graph that records publications; two deployments that share a
            server keep apart by naming different ones.

    Raises:
        StoreError: a malformed URL or incomplete credentials.
    """

    default_auth = "basic"

    def __init__(
        self,
        path: str | None = None,
        read_only: bool = False,
        *,
        update_url: str | None = None,
        gsp_url: str | None = None,
        user: str | None = None,
        password: str | None = None,
        auth: str | None = None,
        timeout: float = 60.0,
        chunk_size: int = 50_000,
        retries: int = 3,
        backoff: float = 0.5,
        registry_graph: str = DEFAULT_REGISTRY_GRAPH,
    ) -> None:
        if path is None:
            raise StoreError(f"{type(self).__name__} needs the URL of a SPARQL query endpoint")
        self.query_url = check_url(str(path), "SPARQL query URL")
        self.read_only = bool(read_only)
        self.user, password = _credentials(user, password)
        self.update_url = check_url(update_url or self._default_update_url(), "SPARQL update URL")
        gsp = gsp_url if gsp_url is not None else self._default_gsp_url()
        self.gsp_url = check_url(gsp, "Graph Store Protocol URL") if gsp else None
        if chunk_size < 1:
            raise StoreError(f"chunk_size must be >= 1, got {chunk_size}")
        if retries < 0 or backoff < 0 or timeout <= 0:
            raise StoreError(f"retries and backoff must be >= 0 and timeout > 0, got {retries}, {backoff}, {timeout}")
        self.timeout = float(timeout)
        self.chunk_size = int(chunk_size)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.registry_graph = URIRef(registry_graph)
        term_to_nt(self.registry_graph)  # refuses a name that is not an absolute IRI
        scheme = (auth or self.default_auth).lower()
        if scheme not in ("basic", "digest"):
            raise StoreError(f"auth must be 'basic' or 'digest', got {auth!r}")
        credentials: httpx.Auth | None = None
        if self.user is not None:
            assert password is not None
            credentials = httpx.DigestAuth(self.user, password) if scheme == "digest" else httpx.BasicAuth(self.user, password)
        self._client: httpx.Client | None = httpx.Client(
            timeout=self.timeout, auth=credentials, headers={"User-Agent": "prodkg"}, follow_redirects=False
        )

    # ------------------------------------------------------------------ endpoints

    def _default_update_url(self) -> str:
        return self.query_url

    def _default_gsp_url(self) -> str | None:
        return None

    def _boolean_variables(self, sparql: str) -> frozenset[str]:
        """Variables a server returns booleans for in another datatype (none for a conforming server)."""
        return frozenset()

    def __repr__(self) -> str:
        state = "closed" if self._client is None else ("read-only" if self.read_only else "read-write")
        return f"{type(self).__name__}({self.query_url!r}, {state})"

    # ------------------------------------------------------------------ HTTP

    def _open(self) -> httpx.Client:
        if self._client is None:
            raise StoreError(f"{self!r} is closed")
        return self._client

    def _writable(self, what: str) -> None:
        self._open()
        if self.read_only:
            raise StoreError(f"{what} refused: {self!r} is read-only")

    def _send(self, method: str, url: str, *, what: str, timeout_error: type[ProdkgError] = StoreError,
              **kwargs: Any) -> httpx.Response:
        client = self._open()
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                return client.request(method, url, **kwargs)
            except _RETRYABLE as exc:
                if attempt == self.retries:
                    tries = f" ({attempt + 1} attempts)" if attempt else ""
                    raise StoreError(f"cannot reach the SPARQL server at {url} for {what}: {exc}{tries}") from exc
                time.sleep(delay)
                delay *= 2
            except httpx.TimeoutException as exc:
                raise timeout_error(f"{what} at {url} got no answer within {self.timeout:g}s") from exc
            except httpx.HTTPError as exc:
                raise StoreError(f"{what} at {url} failed: {type(exc).__name__}: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _check(self, response: httpx.Response, what: str, error: type[ProdkgError] = StoreError) -> httpx.Response:
        if response.status_code < 300:
            return response
        url = str(response.request.url).split("?", 1)[0]
        detail = _server_message(response)
        if response.status_code in (401, 403):
            hint = "" if self.user else f"; no credentials were given: set {USER_ENV} and {PASSWORD_ENV}"
            raise StoreError(f"{what}: the SPARQL server at {url} refused access (HTTP {response.status_code}){hint}: {detail}")
        raise error(f"{what} failed at {url}: HTTP {response.status_code}: {detail}")

    def ping(self) -> str:
        """Ask the server an empty ASK; return its ``Server`` header ("" when it sends none).

        Raises:
            StoreError: the server cannot be reached or does not answer the query.
        """
        response = self._send("POST", self.query_url, what="a test query", data={"query": "ASK {}"},
                              headers={"Accept": _RESULTS_JSON})
        self._check(response, "a test query")
        return response.headers.get("server", "")

    def _select(self, sparql: str, dataset: list[str] | None, what: str) -> list[dict[str, Node]]:
        """Rows of a SELECT as ``{variable: term}`` (raw server names, no mapping)."""
        result = self._run(sparql, dataset, {}, what=what, error=StoreError)
        return list(result)

    def _update(self, sparql: str, what: str) -> None:
        response = self._send("POST", self.update_url, what=what, data={"update": sparql},
                              headers={"Accept": f"{_RESULTS_JSON}, */*;q=0.5"})
        self._check(response, what)

    # ------------------------------------------------------------------ loading

    def _post_graph(self, served: URIRef, lines: list[str]) -> None:
        body = "".join(lines)
        what = f"loading {len(lines)} statements into graph {served}"
        if self.gsp_url is not None:
            response = self._send("POST", self.gsp_url, what=what, params={"graph": str(served)},
                                  content=body.encode("utf-8"), headers={"Content-Type": _N_TRIPLES})
            self._check(response, what)
        else:
            self._update(f"INSERT DATA {{ GRAPH {term_to_nt(served)} {{\n{body}}} }}", what)

    def _load(self, quads: Iterable[tuple], served_name: Callable[[URIRef], URIRef]) -> int:
        """Send ``quads`` to the server, graph by graph, in chunks; return how many were sent.

        ``served_name(logical)`` gives (and registers) the server graph for a prodkg graph.
        Statements with a blank node are held back and sent in one request per graph at the
        end: a blank node label means one node only within one request.
        """
        pending: dict[URIRef, list[str]] = {}
        with_bnodes: dict[URIRef, list[str]] = {}
        served_for: dict[Node, URIRef] = {}
        iris: dict[Node, str] = {}

        def text(term: Node) -> str:
            if isinstance(term, Literal):
                return term_to_nt(term)
            cached = iris.get(term)
            if cached is None:
                cached = term_to_nt(term)
                if len(iris) >= 100_000:
                    iris.clear()
                iris[term] = cached
            return cached

        sent = 0
        for n, quad in enumerate(quads):
            if len(quad) != 4 or quad[3] is None:
                raise StoreError(
                    f"statement {n}: a SPARQL server store keeps named graphs only; expected (s, p, o, graph), got {quad!r}"
                )
            s, p, o, g = quad
            if isinstance(s, Literal) or not isinstance(p, URIRef):
                raise StoreError(f"statement {n}: subject must be an IRI or blank node and predicate an IRI, got {quad!r}")
            if not isinstance(g, URIRef):
                raise StoreError(f"statement {n}: graph name must be an IRI, got {type(g).__name__} {g!r}")
            served = served_for.get(g)
            if served is None:
                served = served_for[g] = served_name(g)
            line = f"{text(s)} {text(p)} {text(o)} .\n"
            if isinstance(s, BNode) or isinstance(o, BNode):
                with_bnodes.setdefault(served, []).append(line)
                continue
            chunk = pending.setdefault(served, [])
            chunk.append(line)
            if len(chunk) >= self.chunk_size:
                self._post_graph(served, chunk)
                sent += len(chunk)
                pending[served] = []
        for buffers in (pending, with_bnodes):
            for served, lines in buffers.items():
                if lines:
                    self._post_graph(served, lines)
                    sent += len(lines)
        return sent

    def _count(self, served: Iterable[URIRef]) -> int:
        names = [str(g) for g in served]
        if not names:
            return 0
        rows = self._select("SELECT (COUNT(*) AS ?n) WHERE { GRAPH ?g { ?s ?p ?o } }", names, "counting quads")
        return int(to_python(rows[0]["n"])) if rows else 0

    def add_quads(self, quads: Iterable[tuple]) -> int:
        """Add ``(s, p, o, g)`` quads to the live publication (which is created when there is none).

        A quad goes into the server graph that holds its graph ``g`` in the live publication,
        or into a server graph named ``g`` that joins it. Not atomic: if ``quads`` raises half
        way (the exception propagates unchanged), the chunks sent before stay.

        Returns:
            the number of statements sent (duplicates included).
        """
        self._writable("adding quads")
        live = self.current()
        if live is None:
            live = Publication(URIRef(f"urn:prodkg:publication:added-{secrets.token_hex(6)}"))
            self._add_record(live.iri, None, datetime.now(timezone.utc))
        by_logical = {logical: served for served, logical in live.graphs.items()}

        def served_name(logical: URIRef) -> URIRef:
            served = by_logical.get(logical)
            if served is None:
                served = by_logical[logical] = logical
                self._add_member(live.iri, served, logical)
            return served

        return self._load(quads, served_name)

    # ------------------------------------------------------------------ queries

    def _dataset(self) -> tuple[list[str], dict[str, URIRef]]:
        live = self.current()
        if live is None or not live.graphs:
            return [_EMPTY_GRAPH], {}
        names = sorted(str(g) for g in live.graphs)
        renamed = {str(served): logical for served, logical in live.graphs.items() if served != logical}
        return names, renamed

    def _run(self, sparql: str, dataset: list[str] | None, renamed: Mapping[str, URIRef], *, what: str,
             error: type[ProdkgError] = QueryError, booleans: frozenset[str] = frozenset(),
             page: int | None = None) -> QueryResult:
        """Send a query; ``page``: the query has ``LIMIT page`` within the server's row limit."""
        match = _FORM.match(sparql)
        form = match.group(1).upper() if match else "SELECT"
        data: dict[str, Any] = {"query": sparql}
        if dataset is not None:
            data["default-graph-uri"] = dataset
            data["named-graph-uri"] = dataset

        def ask(accept: str) -> httpx.Response:
            response = self._send("POST", self.query_url, what=what, timeout_error=error, data=data,
                                  headers={"Accept": accept})
            return self._check(response, what, error)

        if form in ("SELECT", "ASK"):
            result = self._from_json(ask(_RESULTS_JSON), renamed, error, booleans, page)
            if result.kind == "select":
                variables = result.variables
                rows = self._exact_numbers(result.rows, lambda: _turtle_solutions(ask("text/turtle").content, variables))
                result = QueryResult(kind="select", variables=variables, rows=rows)
            return result
        triples = self._from_rdf(ask(f"{_N_TRIPLES}, text/turtle;q=0.5"), renamed, error)
        triples = self._exact_numbers(triples, lambda: _parse_triples(ask("text/turtle").content, ox.RdfFormat.TURTLE))
        graph = Graph()
        for prefix, namespace in PREFIXES.items():
            graph.bind(prefix, namespace)
        for triple in triples:
            graph.add(triple)  # type: ignore[arg-type]
        return QueryResult(kind="graph", graph=graph)

    def _exact_numbers(self, rows: list[tuple[Node | None, ...]],
                       fetch_exact: Callable[[], list[tuple[Node | None, ...]]]) -> list[tuple[Node | None, ...]]:
        """``rows`` with floating-point values as the server stores them (a conforming server already sends them so)."""
        return rows

    def _from_json(self, response: httpx.Response, renamed: Mapping[str, URIRef], error: type[ProdkgError],
                   booleans: frozenset[str] = frozenset(), page: int | None = None) -> QueryResult:
        try:
            doc = response.json()
        except ValueError as exc:
            ctype = response.headers.get("content-type", "?")
            raise error(f"the SPARQL server answered {ctype}, not SPARQL JSON results: {exc}") from None
        if "boolean" in doc:
            return QueryResult(kind="ask", boolean=bool(doc["boolean"]))
        variables = list(doc.get("head", {}).get("vars", []))
        bindings = doc.get("results", {}).get("bindings", [])
        limit = response.headers.get("x-sparql-maxrows")
        if limit is not None and limit.isdigit() and len(bindings) >= int(limit) and not (page and page <= int(limit)):
            cut = error(
                f"the SPARQL server cut the result at {limit} rows (its result row limit; on Virtuoso "
                "ResultSetMaxRows in virtuoso.ini): add LIMIT/OFFSET to the query or raise the limit"
            )
            cut.row_limit = int(limit)  # type: ignore[attr-defined]
            raise cut
        rows = [
            tuple(_json_term(b[v], renamed, v in booleans) if v in b else None for v in variables)
            for b in bindings
        ]
        return QueryResult(kind="select", variables=variables, rows=rows)

    def _from_rdf(self, response: httpx.Response, renamed: Mapping[str, URIRef],
                  error: type[ProdkgError]) -> list[tuple[Node | None, ...]]:
        content_type = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        fmt = _RDF_TYPES.get(content_type)
        if fmt is None:
            raise error(f"the SPARQL server answered a graph query with {content_type or 'no content type'}; "
                        "expected N-Triples or Turtle")
        try:
            return [tuple(_renamed(t, renamed) for t in triple) for triple in _parse_triples(response.content, fmt)]
        except SyntaxError as exc:
            raise error(f"the SPARQL server sent a graph that does not parse: {exc}") from None

    def query(self, sparql: str, bindings: Mapping[str, Any] | None = None) -> QueryResult:
        """Run a SELECT, ASK, CONSTRUCT or DESCRIBE query over the live publication's graphs.

        ``bindings`` maps variable names to values (see :meth:`kb.store.OxigraphStore.query`);
        they become a ``VALUES`` clause of escaped terms opening the top-level WHERE group,
        never raw text. Graph names in the answer are the names prodkg gave the graphs.
        ``FROM`` / ``FROM NAMED`` clauses are overridden by the protocol's dataset.

        Raises:
            QueryError: an update, a syntax error or another refusal by the server, a bad
                binding, a timeout, a result cut at the server's row limit.
            StoreError: the server cannot be reached.
        """
        self._open()
        if not isinstance(sparql, str):
            raise QueryError(f"expected SPARQL text, got {type(sparql).__name__}")
        if is_update(sparql):
            raise QueryError("SPARQL UPDATE refused by query(); use update() on a writable store")
        terms = normalise_bindings(bindings)
        text = inject_values(sparql, terms) if terms else sparql
        dataset, renamed = self._dataset()
        # typed from the text without the bound values, so that a named query is read once
        booleans = self._boolean_variables(_with_prefixes(sparql))
        return self._run(_with_prefixes(text), dataset, renamed, what="the query", booleans=booleans)

    def update(self, sparql: str) -> None:
        """Send a SPARQL 1.1 Update to the server as it is.

        It addresses the server's graphs by their server names (see :meth:`current`), not
        through the publication's dataset; prefer :meth:`add_quads` or :class:`RemoteGraph`.
        """
        self._writable("SPARQL update")
        if not isinstance(sparql, str):
            raise QueryError(f"expected SPARQL text, got {type(sparql).__name__}")
        self._update(_with_prefixes(sparql), "the SPARQL update")

    def __len__(self) -> int:
        dataset, _ = self._dataset()
        rows = self._select("SELECT (COUNT(*) AS ?n) WHERE { GRAPH ?g { ?s ?p ?o } }", dataset, "counting quads")
        return int(to_python(rows[0]["n"])) if rows else 0

    def graphs(self) -> list[URIRef | BNode]:
        dataset, renamed = self._dataset()
        rows = self._select("SELECT DISTINCT ?g WHERE { GRAPH ?g { ?s ?p ?o } }", dataset, "listing graphs")
        names = {renamed.get(str(row["g"]), row["g"]) for row in rows}
        return sorted(names)  # type: ignore[type-var]

    def quads(self, graph: URIRef | BNode | None = None) -> Iterator[tuple[Node, URIRef, Node, Node | None]]:
        """The live publication's quads (or those of one graph), graph names as prodkg gave them.

        Each server graph is read with one SELECT and its size checked against a COUNT; a
        server that cuts results at a row limit is then read in ordered pages of that size.
        """
        live = self.current()
        members = sorted((live.graphs if live is not None else {}).items())
        for served, logical in members:
            if graph is not None and logical != graph:
                continue
            for s, p, o in self._graph_triples(served):
                yield s, p, o, logical  # type: ignore[misc]

    def _graph_triples(self, served: URIRef) -> list[tuple[Node | None, ...]]:
        g = term_to_nt(served)
        expected = self._count([served])
        what = f"reading graph {served}"
        base = f"SELECT ?s ?p ?o WHERE {{ GRAPH {g} {{ ?s ?p ?o }} }}"

        def read(text: str, page: int | None = None) -> list[tuple[Node | None, ...]]:
            return self._run(text, [str(served)], {}, what=what, error=StoreError, page=page).rows

        page = None
        try:
            triples = read(base)
            if 0 < len(triples) < expected:
                page = len(triples)  # a server that cuts results silently
        except StoreError as exc:
            page = getattr(exc, "row_limit", None)
            if page is None:
                raise
        if page is not None:
            triples = []
            while len(triples) < expected:
                chunk = read(f"{base} ORDER BY ?s ?p ?o LIMIT {page} OFFSET {len(triples)}", page)
                if not chunk:
                    break
                triples.extend(chunk)
        if len(triples) != expected:
            raise StoreError(
                f"{what}: the server holds {expected} triples but sent {len(triples)}; it may cap results "
                "(Virtuoso: ResultSetMaxRows, MaxSortedTopRows)"
            )
        return triples

    def dump(self, path: str | os.PathLike[str], fmt: str | None = None, *, graph: URIRef | None = None) -> int:
        """Write the live publication (or one graph) to a file, as :meth:`OxigraphStore.dump` does."""
        with OxigraphStore(None) as copy:
            copy.add_quads(self.quads(graph))
            return copy.dump(path, fmt, graph=graph)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _json_term(value: Mapping[str, str], renamed: Mapping[str, URIRef], boolean: bool = False) -> Node:
    """An rdflib term for a SPARQL JSON results term, in the forms Oxigraph gives.

    ``boolean``: the variable holds a boolean expression's value, which may arrive as the
    integer 1 or 0 (Virtuoso).
    """
    kind = value.get("type")
    text = value.get("value", "")
    if kind == "uri":
        return renamed.get(text) or URIRef(text)
    if kind == "bnode":
        return BNode(text)
    if kind in ("literal", "typed-literal"):  # typed-literal: the SPARQL 1.0 JSON form Virtuoso still sends
        lang = value.get("xml:lang")
        if lang:
            return Literal(text, lang=lang)
        datatype = value.get("datatype")
        if datatype is None or datatype == _XSD_STRING:
            return Literal(text)
        if (datatype == _XSD_BOOLEAN or (boolean and datatype == _XSD_INTEGER)) and text in ("1", "0"):
            return Literal("true" if text == "1" else "false", datatype=XSD.boolean)
        return Literal(text, datatype=URIRef(datatype))
    raise QueryError(f"unsupported term in the server's results: {value!r}")


def _parse_triples(content: bytes, fmt: ox.RdfFormat) -> list[tuple[Node | None, ...]]:
    """Triples of N-Triples or Turtle text as rdflib terms (raises SyntaxError)."""
    return [
        (from_oxigraph(t.subject), from_oxigraph(t.predicate), from_oxigraph(t.object))
        for t in ox.parse(input=content, format=fmt)
    ]


def _turtle_solutions(content: bytes, variables: list[str]) -> list[tuple[Node | None, ...]]:
    """Rows of a SELECT answer written as a DAWG result-set graph in Turtle, in document order."""
    res = _RESULT_SET
    order: list[Any] = []
    bindings: dict[Any, list[Any]] = defaultdict(list)
    names: dict[Any, str] = {}
    values: dict[Any, Any] = {}
    for t in ox.parse(input=content, format=ox.RdfFormat.TURTLE):
        p = t.predicate.value
        if p == res + "solution":
            order.append(t.object)
        elif p == res + "binding":
            bindings[t.subject].append(t.object)
        elif p == res + "variable":
            names[t.subject] = t.object.value
        elif p == res + "value":
            values[t.subject] = t.object
    rows = []
    for solution in order:
        row = {names.get(b): from_oxigraph(values.get(b)) for b in bindings.get(solution, [])}
        rows.append(tuple(row.get(v) for v in variables))
    return rows


def _renamed(term: Node | None, renamed: Mapping[str, URIRef]) -> Node | None:
    if isinstance(term, URIRef):
        return renamed.get(str(term), term)
    return term


def _with_prefixes(sparql: str) -> str:
    """``sparql`` with the prefixes of :data:`PREFIXES` it does not declare itself declared first."""
    missing = [
        f"PREFIX {name}: <{iri}>"
        for name, iri in PREFIXES.items()
        if not re.search(rf"\bPREFIX\s+{re.escape(name)}\s*:", sparql, re.IGNORECASE)
    ]
    return "\n".join([*missing, sparql]) if missing else sparql
