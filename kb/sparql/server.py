"""The HTTP side of ``prodkg serve``: SPARQL 1.1 Protocol over Starlette/uvicorn, queries run in worker processes.

Every request is checked before its query runs: the ``Host`` header must name this server
(DNS rebinding), a browser request from another origin is refused (cross-site forms), the
body and query string are bounded (413) and must be UTF-8 (400), the content type must be
one the protocol defines (415). A query runs in a worker process (:mod:`.pool`), so the
server keeps answering other clients while it runs, and a query past its deadline or memory
cap is stopped without touching the server. The server follows each publication of the
graph (``CURRENT`` swapped by :meth:`KnowledgeGraph.publish`) and says which run it serves.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import logging
import os
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from prodkg.errors import QueryError, StoreError
from prodkg.kb.sparql.formats import ROW_CAP_STATUS, parse_accept
from prodkg.kb.sparql.pool import QueryFailed, WorkerPool
from prodkg.kb.store import KnowledgeGraph

__all__ = ["STATUS_CODES", "EndpointSettings", "create_app", "serve", "uvicorn_config"]

log = logging.getLogger("prodkg.kb.sparql")

#: every status the endpoint answers with, and why (the README's table is this one)
STATUS_CODES = {
    200: "query answered; service description (GET without a query); /status",
    204: "update applied",
    400: "malformed request: SPARQL syntax error, invalid UTF-8 or percent-encoding, no query, both query and "
         "update, an update sent by GET, a result over --max-rows",
    403: "refused: update without the flag or the right token; SERVICE or LOAD to a host not allowed; a Host header "
         "that does not name this server; a cross-origin browser request",
    404: "no such path (the endpoint is /sparql, the status /status)",
    405: "method other than GET or POST",
    413: "query over --max-query-kb, or a request body or query string over its bound",
    415: "content type other than application/sparql-query, application/sparql-update, "
         "application/x-www-form-urlencoded (UTF-8)",
    500: "the query crashed its worker process (the server is unaffected)",
    503: "all query workers busy and the wait queue full, or an update running (Retry-After given)",
    504: "the query ran past --timeout and was stopped",
    507: "the query needed more memory than --max-memory-mb and was stopped",
}

QUERY_TYPES = ("application/sparql-query",)
UPDATE_TYPES = ("application/sparql-update",)
FORM_TYPE = "application/x-www-form-urlencoded"
#: bytes of a body read and thrown away to answer 413 to a client still sending (past it, the connection is closed)
DRAIN_LIMIT = 16 * 2**20
#: bytes of a request line and headers uvicorn buffers (h11's default, 16 KiB, resets a long GET without an answer)
HEAD_LIMIT = 4 * 2**20
#: seconds a killed worker's replacement may take to open the store on a busy machine
WORKER_RESTART_S = 10.0
#: the most connections uvicorn keeps open (past it: 503)
MAX_CONNECTIONS = 128
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
WILDCARDS = ("0.0.0.0", "::", "")


@dataclass
class EndpointSettings:
    """How the endpoint behaves. Updates need ``allow_updates`` and a non-empty ``token``.

    Args:
        timeout_s: a query's deadline; past it its worker is killed (504).
        max_rows: most result rows or triples (400 past it).
        allow_updates, token: accept SPARQL Update with ``Authorization: Bearer <token>``.
        workers: queries that run at once (one worker process each).
        max_query_kb: largest query text, in KiB (413 past it).
        max_memory_mb: memory a query may map in its worker, in MiB (507 past it).
        allowed_hosts: names the ``Host`` header may carry besides loopback and the bound address.
        outbound_hosts: hosts SERVICE and LOAD may reach; none by default.
        max_waiting: queries that may wait for a worker (503 past it); default twice ``workers``.
        queue_wait_s: how long a query waits for a free worker before a 503. The default,
            ``timeout_s`` plus :data:`WORKER_RESTART_S`, covers the worst case in front of it: a
            query that runs to its deadline, and the start of the worker that replaces the one
            killed then.
    """

    timeout_s: float = 10.0
    max_rows: int = 10_000
    allow_updates: bool = False
    token: str | None = field(default=None, repr=False)
    workers: int = 4
    max_query_kb: int = 64
    max_memory_mb: int = 1024
    allowed_hosts: tuple[str, ...] = ()
    outbound_hosts: tuple[str, ...] = ()
    max_waiting: int | None = None
    queue_wait_s: float | None = None

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise QueryError(f"timeout_s must be > 0, got {self.timeout_s!r}")
        if self.max_rows < 1:
            raise QueryError(f"max_rows must be >= 1, got {self.max_rows!r}")
        if self.workers < 1:
            raise QueryError(f"workers must be >= 1, got {self.workers!r}")
        if self.max_query_kb < 1:
            raise QueryError(f"max_query_kb must be >= 1, got {self.max_query_kb!r}")
        if self.max_memory_mb < 64:
            raise QueryError(f"max_memory_mb must be >= 64, got {self.max_memory_mb!r}")
        if self.allow_updates and not self.token:
            raise QueryError("updates need a token (--token-file): an endpoint never accepts anonymous writes")
        self.allowed_hosts = tuple(h.strip().lower() for h in self.allowed_hosts if h.strip())
        self.outbound_hosts = tuple(h.strip().lower() for h in self.outbound_hosts if h.strip())
        if self.max_waiting is None:
            self.max_waiting = 2 * self.workers
        if self.queue_wait_s is None:
            self.queue_wait_s = self.timeout_s + WORKER_RESTART_S
        if not self.queue_wait_s > 0:
            raise QueryError(f"queue_wait_s must be > 0, got {self.queue_wait_s!r}")

    @property
    def max_query_bytes(self) -> int:
        return self.max_query_kb * 1024

    @property
    def max_encoded_bytes(self) -> int:
        """Bound of a form body or query string: a query percent-encoded takes up to three times its size."""
        return 3 * self.max_query_bytes + 4096


class Refused(Exception):
    """A request answered with an error status before any query runs."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def _run_of(store_dir: Path) -> str:
    """The run id a store directory was published for (its name, percent-decoded, without a generation suffix)."""
    return unquote(store_dir.name.split(".", 1)[0])


class _Follower:
    """Follows ``CURRENT`` of a KnowledgeGraph root and moves the pool to each newly published store."""

    def __init__(self, root: Path | None, current: Path, pool: WorkerPool) -> None:
        self.kg = KnowledgeGraph(root) if root is not None else None
        self.pool = pool
        self.current = current
        self.serving_since = datetime.now(UTC)
        self.publications_followed = 0
        self.warning: str | None = None
        self._signature = self._stat()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _stat(self) -> tuple[int, int, int] | None:
        if self.kg is None:
            return None
        try:
            st = os.stat(self.kg.root / KnowledgeGraph.CURRENT)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def check(self) -> None:
        """Switch to the store ``CURRENT`` names if it changed (cheap when it did not: one stat)."""
        if self.kg is None:
            return
        signature = self._stat()
        if signature == self._signature:
            return
        with self._lock:
            if signature == self._signature:
                return
            try:
                path = self.kg.current_path()
            except StoreError as exc:
                self.warning = f"still serving {self.current.name}: {exc}"
                log.warning("%s", self.warning)
                return
            self._signature = signature
            if path is None or path == self.current:
                return
            self.pool.switch(str(path))
            self.current = path
            self.serving_since = datetime.now(UTC)
            self.publications_followed += 1
            self.warning = None
            log.info("now serving %s", path)

    def start(self, interval_s: float = 1.0) -> None:
        if self.kg is None or self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.check()
                except Exception as exc:  # noqa: BLE001 - the watcher logs and keeps watching
                    log.warning("following %s failed: %s", self.kg.root if self.kg else "?", exc)

        self._thread = threading.Thread(target=loop, name="sparql-follow", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def describe(self) -> dict[str, Any]:
        published = None
        with contextlib.suppress(OSError):
            published = datetime.fromtimestamp(self.current.stat().st_mtime, UTC).isoformat(timespec="seconds")
        return {
            "run": _run_of(self.current), "store": f"stores/{self.current.name}", "published_at": published,
            "serving_since": self.serving_since.isoformat(timespec="seconds"),
            "follows": str(self.kg.root) if self.kg is not None else None,
            "publications_followed": self.publications_followed, "warning": self.warning,
        }


def _host_name(host_header: str) -> str:
    host = host_header.strip().lower()
    if host.startswith("["):  # [::1]:7878
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class _Guard:
    """ASGI middleware: Host and Origin checks before anything else reads the request."""

    def __init__(self, app: Any, *, allowed: set[str], any_ip: bool) -> None:
        self.app, self.allowed, self.any_ip = app, allowed, any_ip

    def _why(self, headers: dict[bytes, bytes]) -> str | None:
        host = headers.get(b"host", b"").decode("latin-1")
        if host:
            name = _host_name(host)
            if name not in self.allowed and not (self.any_ip and _is_ip(name)):
                return (f"Host {host!r} is not a name of this server; start it with --allow-host {name} "
                        "if it should answer to that name")
        fetch_site = headers.get(b"sec-fetch-site", b"").decode("latin-1").lower()
        if fetch_site in ("cross-site", "same-site"):
            return "cross-origin browser requests are refused (Sec-Fetch-Site: " + fetch_site + ")"
        origin = headers.get(b"origin")
        if origin is not None:
            text = origin.decode("latin-1").strip()
            netloc = urlsplit(text).netloc.lower() if text != "null" else ""
            if not host or netloc != host.strip().lower():
                return f"cross-origin browser requests are refused (Origin {text!r})"
        return None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            why = self._why(dict(scope.get("headers") or []))
            if why is not None:
                from starlette.responses import JSONResponse

                await JSONResponse({"message": why}, status_code=403, headers=_COMMON_HEADERS)(scope, receive, send)
                return
        await self.app(scope, receive, send)


_COMMON_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}
# The query page loads nothing but this server's own files, and no other site may frame it
_PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
                                            "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
                 "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"}
_ASSETS = {"query.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}

#: example queries of the landing page: (title, SPARQL)
EXAMPLES = (
    ("Statements per named graph (catalog: asserted; run: predicted and provenance)",
     "SELECT ?g (COUNT(*) AS ?statements) WHERE { GRAPH ?g { ?s ?p ?o } } GROUP BY ?g ORDER BY DESC(?statements)"),
    ("Asserted and predicted categories, with the confidence of each prediction",
     ("SELECT ?product_id ?category ?origin ?confidence WHERE {\n"
      "  GRAPH ?g { ?product schema:category ?concept }\n  ?product schema:productID ?product_id . ?concept skos:prefLabel ?category .\n"
      "  OPTIONAL { ?p a pkg:Prediction ; pkg:subject ?product ; pkg:object ?concept ; pkg:confidence ?confidence }\n"
      "  BIND(IF(CONTAINS(STR(?g), \"/graph/run/\"), \"predicted\", \"asserted\") AS ?origin)\n} ORDER BY ?product_id LIMIT 100")),
    ("Brands and how many products each has",
     "SELECT ?brand (COUNT(?product) AS ?products) WHERE { ?product schema:brand/schema:name ?brand } GROUP BY ?brand ORDER BY DESC(?products)"),
)


def _wants_html(accept: str) -> bool:
    """True for a browser's navigation: text/html ranked before any SPARQL or RDF type."""


    for media in parse_accept(accept or ""):
        if media in ("text/html", "application/xhtml+xml"):
            return True
        if media != "*/*":
            return False
    return False


def _static(name: str) -> str:
    from importlib import resources

    return resources.files("prodkg.kb.sparql").joinpath("static", name).read_text(encoding="utf-8")


def landing_page(where: dict[str, Any]) -> str:
    """The page at ``/``: what this server serves, a link to the query page, and example queries (named ones included)."""
    import html
    from urllib.parse import quote as q

    from prodkg.kb.queries import list_queries, query_spec

    items = [(title, text) for title, text in EXAMPLES]
    for name in list_queries():
        spec = query_spec(name)
        if not spec.required:  # a query that needs a binding is run with `prodkg query --bind`
            items.append((f"{name}: {spec.description}", spec.text))
    links = "".join(f'<li><a href="/ui?query={q(text, safe="")}">{html.escape(title)}</a></li>' for title, text in items)
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>prodkg SPARQL endpoint</title>"
            "<link rel=\"stylesheet\" href=\"/ui/style.css\"></head><body>"
            f"<header>prodkg knowledge graph · run {html.escape(str(where.get('run')))}</header>"
            "<p><a href=\"/ui\">Query page</a> · the SPARQL 1.1 endpoint is <code>/sparql</code> (GET or POST) · "
            "<a href=\"/status\">status</a></p><h2>Example queries</h2>"
            f"<ul class=\"examples\">{links}</ul></body></html>")


def _media_type(header: str | None) -> tuple[str, dict[str, str]]:
    if not header:
        return "", {}
    parts = header.split(";")
    params = {}
    for part in parts[1:]:
        if "=" in part:
            key, value = part.split("=", 1)
            params[key.strip().lower()] = value.strip().strip('"').lower()
    return parts[0].strip().lower(), params


async def _read_body(request: Any, cap: int) -> bytes:
    """The body, refused with 413 past ``cap`` bytes (never buffered past it)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise Refused(400, "Content-Length is not a number") from None
        if length > cap:
            await _drain(request, length)
            raise Refused(413, f"the request body is {length} bytes; this endpoint accepts at most {cap} "
                               "(see --max-query-kb)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            await _drain(request, None)
            raise Refused(413, f"the request body is over {cap} bytes, the most this endpoint accepts (see --max-query-kb)")
        chunks.append(chunk)
    return b"".join(chunks)


async def _drain(request: Any, length: int | None) -> None:
    """Read and drop the rest of a refused body (bounded), so the client gets the answer, not a reset."""
    if length is not None and length > DRAIN_LIMIT:
        raise Refused(413, f"the request body is {length} bytes; this endpoint accepts far less (see --max-query-kb)",
                      {"Connection": "close"})
    seen = 0
    with contextlib.suppress(Exception):
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > DRAIN_LIMIT:
                break


def _decode(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Refused(400, f"the {what} is not valid UTF-8 (byte {exc.start}); SPARQL text must be UTF-8") from None


def _form(text: str, what: str) -> dict[str, list[str]]:
    try:
        pairs = parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise Refused(400, f"the {what} percent-encodes bytes that are not valid UTF-8") from None
    except ValueError as exc:
        raise Refused(400, f"the {what} is malformed: {exc}") from None
    out: dict[str, list[str]] = {}
    for key, value in pairs:
        out.setdefault(key, []).append(value)
    return out


def _one(params: dict[str, list[str]], key: str) -> str | None:
    values = params.get(key)
    if not values:
        return None
    if len(values) > 1:
        raise Refused(400, f"more than one '{key}' parameter")
    return values[0]


class Endpoint:
    """The state behind the app: settings, worker pool, follower, service description."""

    def __init__(self, kg_root: Path, settings: EndpointSettings) -> None:
        self.settings = settings
        is_root = KnowledgeGraph.is_root(kg_root)
        current = KnowledgeGraph(kg_root).current_path() if is_root else (kg_root if kg_root.is_dir() else None)
        if current is None:
            raise StoreError(f"no published graph at {kg_root}")
        self.pool = WorkerPool(str(current), size=settings.workers, max_waiting=int(settings.max_waiting or 0),
                               queue_wait_s=float(settings.queue_wait_s), memory_mb=settings.max_memory_mb)
        self.pool.start()
        self.follower = _Follower(kg_root if is_root else None, current, self.pool)
        import anyio

        self.limiter = anyio.CapacityLimiter(settings.workers + int(settings.max_waiting or 0) + 2)

    def close(self) -> None:
        self.follower.stop()
        self.pool.close()

    # -- responses ---------------------------------------------------------------------------------------------
    def headers(self, store: str | Path | None = None) -> dict[str, str]:
        path = Path(store) if store is not None else self.follower.current
        run = _run_of(path)
        if not all(32 <= ord(c) < 127 for c in run):  # a header carries printable ASCII only
            run = quote(run, safe="")
        return {**_COMMON_HEADERS, "Prodkg-Run": run, "Prodkg-Store": f"stores/{path.name}"}

    def page(self, html_text: str | bytes) -> Any:
        from starlette.responses import HTMLResponse

        return HTMLResponse(html_text, headers={**self.headers(), **_PAGE_HEADERS})

    def error(self, status: int, message: str, extra: dict[str, str] | None = None) -> Any:
        from starlette.responses import JSONResponse

        return JSONResponse({"message": message, "status": status}, status_code=status,
                            headers={**self.headers(), **(extra or {})})

    def status(self) -> dict[str, Any]:
        s = self.settings
        return {
            **self.follower.describe(), "pool": self.pool.stats(),
            "limits": {"timeout_s": s.timeout_s, "max_rows": s.max_rows, "max_query_kb": s.max_query_kb,
                       "max_memory_mb": s.max_memory_mb, "workers": s.workers, "max_waiting": s.max_waiting,
                       "queue_wait_s": s.queue_wait_s},
            "updates": s.allow_updates, "outbound_hosts": list(s.outbound_hosts),
        }

    def service_description(self, endpoint_url: str, accept: str) -> Any:
        from rdflib import BNode, Graph, Literal, Namespace, URIRef
        from rdflib.namespace import DC, RDF, RDFS
        from starlette.responses import Response

        sd = Namespace("http://www.w3.org/ns/sparql-service-description#")
        formats = Namespace("http://www.w3.org/ns/formats/")
        graph = Graph()
        graph.bind("sd", sd)
        graph.bind("formats", formats)
        service = BNode()
        where = self.follower.describe()
        graph.add((service, RDF.type, sd.Service))
        graph.add((service, sd.endpoint, URIRef(endpoint_url)))
        graph.add((service, RDFS.label, Literal("prodkg knowledge graph")))
        graph.add((service, DC.description, Literal(
            f"The product knowledge graph published by prodkg; serving run {where['run']} ({where['store']}, "
            f"published {where['published_at']}). Read-only unless started with --allow-updates.")))
        graph.add((service, sd.supportedLanguage, sd.SPARQL11Query))
        if self.settings.allow_updates:
            graph.add((service, sd.supportedLanguage, sd.SPARQL11Update))
        graph.add((service, sd.feature, sd.UnionDefaultGraph))
        if self.settings.outbound_hosts:
            graph.add((service, sd.feature, sd.BasicFederatedQuery))
        for fmt in ("SPARQL_Results_JSON", "SPARQL_Results_XML", "SPARQL_Results_CSV", "Turtle", "RDF_XML",
                    "N-Triples", "JSON-LD"):
            graph.add((service, sd.resultFormat, formats[fmt]))
        if "text/turtle" in (accept or ""):
            return Response(graph.serialize(format="turtle"), media_type="text/turtle", headers=self.headers())
        return Response(graph.serialize(format="xml"), media_type="application/xml", headers=self.headers())

    # -- requests ----------------------------------------------------------------------------------------------
    async def handle(self, request: Any) -> Any:
        try:
            self.follower.check()
            if request.method == "GET":
                query, update = self._from_query_string(request)
                if update is not None:
                    raise Refused(400, "updates must be sent by POST (SPARQL 1.1 Protocol)")
            else:
                query, update = await self._from_body(request)
            if query is None and update is None:
                if request.method == "GET":
                    if _wants_html(request.headers.get("accept", "")):  # a browser: the query page
                        return self.page(_static("query.html"))
                    return self.service_description(str(request.url.replace(query="")), request.headers.get("accept", ""))
                raise Refused(400, "no 'query' or 'update' in the request")
            if query is not None and update is not None:
                raise Refused(400, "a request holds a query or an update, not both")
            text = query if query is not None else update
            assert text is not None
            size = len(text.encode("utf-8"))
            if size > self.settings.max_query_bytes:
                raise Refused(413, f"the query is {size} bytes; this endpoint accepts at most "
                                   f"{self.settings.max_query_bytes} (--max-query-kb {self.settings.max_query_kb})")
            if update is not None:
                return await self._update(request, update)
            return await self._query(request, text)
        except Refused as exc:
            return self.error(exc.status, exc.message, exc.headers)
        except QueryFailed as exc:
            return self.error(exc.status, str(exc), exc.headers)

    def _from_query_string(self, request: Any) -> tuple[str | None, str | None]:
        raw = request.scope.get("query_string", b"")
        if len(raw) > self.settings.max_encoded_bytes:
            raise Refused(413, f"the query string is {len(raw)} bytes; this endpoint accepts at most "
                               f"{self.settings.max_encoded_bytes} (--max-query-kb {self.settings.max_query_kb}); "
                               "POST long queries")
        params = _form(_decode(raw, "query string"), "query string")
        return _one(params, "query"), _one(params, "update")

    async def _from_body(self, request: Any) -> tuple[str | None, str | None]:
        media, params = _media_type(request.headers.get("content-type"))
        charset = params.get("charset", "utf-8")
        if media not in (*QUERY_TYPES, *UPDATE_TYPES, FORM_TYPE):
            shown = media or "none"
            raise Refused(415, f"unsupported content type {shown!r}; send application/sparql-query, "
                               f"application/sparql-update or {FORM_TYPE}")
        if charset not in ("utf-8", "utf8"):
            raise Refused(415, f"unsupported charset {charset!r}; SPARQL text must be UTF-8")
        if media in UPDATE_TYPES and not self.settings.allow_updates:
            await _drain(request, None)
            raise Refused(403, "SPARQL Update is not allowed: this endpoint is read-only")
        cap = self.settings.max_query_bytes if media != FORM_TYPE else self.settings.max_encoded_bytes
        body = await _read_body(request, cap)
        if media in QUERY_TYPES:
            return _decode(body, "request body"), None
        if media in UPDATE_TYPES:
            return None, _decode(body, "request body")
        form = _form(_decode(body, "request body"), "form body")
        return _one(form, "query"), _one(form, "update")

    async def _query(self, request: Any, text: str) -> Any:
        import anyio
        from starlette.responses import Response

        job = {"op": "query", "text": text, "accept": request.headers.get("accept", ""),
               "max_rows": self.settings.max_rows, "outbound": list(self.settings.outbound_hosts)}
        reply, store = await anyio.to_thread.run_sync(self.pool.run, job, self.settings.timeout_s, limiter=self.limiter)
        if reply.get("status") != 200:
            status = int(reply.get("status", 500))
            extra = {"Prodkg-Row-Limit": str(self.settings.max_rows)} if status == ROW_CAP_STATUS else None
            return self.error(status, str(reply.get("message", "query failed")), extra)
        return Response(reply["body"], media_type=reply["media_type"], headers=self.headers(store))

    async def _update(self, request: Any, text: str) -> Any:
        import anyio
        from starlette.responses import Response

        if not self.settings.allow_updates:
            raise Refused(403, "SPARQL Update is not allowed: this endpoint is read-only")
        auth = request.headers.get("authorization", "")
        scheme, _, given = auth.partition(" ")
        token = (self.settings.token or "").encode("utf-8")
        if scheme.lower() != "bearer" or not token or not hmac.compare_digest(given.strip().encode("utf-8"), token):
            raise Refused(403, "SPARQL Update needs 'Authorization: Bearer <token>' with the server's token")
        job = {"op": "update", "text": text, "outbound": list(self.settings.outbound_hosts)}
        reply = await anyio.to_thread.run_sync(self.pool.run_exclusive, job, self.settings.timeout_s, limiter=self.limiter)
        if reply.get("status") != 204:
            return self.error(int(reply.get("status", 500)), str(reply.get("message", "update failed")))
        return Response(status_code=204, headers=self.headers())


def create_app(kg_root: str | os.PathLike[str], settings: EndpointSettings | None = None, *,
               bind_host: str = "127.0.0.1") -> Any:
    """An ASGI app serving the live graph of ``kg_root`` at ``/sparql`` (SPARQL 1.1 Protocol) and ``/status``.

    Read-only by default: updates get HTTP 403. With ``settings.allow_updates`` an update must
    carry ``Authorization: Bearer <token>``; it runs while no query holds the store and writes
    into the graph ``mint("graph", "updates")`` (until the next publish replaces the store).
    Queries see the union of all named graphs; GET, POST form and POST
    ``application/sparql-query`` are accepted, results negotiated by Accept. ``bind_host`` is
    the address the server listens on: with the loopback names, the names the ``Host`` header
    may carry (any IP literal too when it is a wildcard address).

    Raises:
        StoreError: nothing published at ``kg_root``, or its store cannot be opened.
    """
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    settings = settings or EndpointSettings()
    endpoint = Endpoint(Path(kg_root), settings)

    async def sparql(request: Any) -> Any:
        return await endpoint.handle(request)

    async def status(request: Any) -> Any:
        endpoint.follower.check()
        return JSONResponse(endpoint.status(), headers=endpoint.headers())

    @contextlib.asynccontextmanager
    async def lifespan(app: Any):  # noqa: ANN202
        endpoint.follower.start()
        try:
            yield
        finally:
            endpoint.close()

    async def http_error(request: Any, exc: Any) -> Any:
        headers = dict(getattr(exc, "headers", None) or {})  # 405 keeps its Allow header
        return endpoint.error(exc.status_code, {404: "no such path: the endpoint is /sparql, its status /status, the query page /ui",
                                                405: "only GET and POST are accepted"}.get(exc.status_code, str(exc.detail)),
                              headers)

    async def landing(request: Any) -> Any:
        return endpoint.page(landing_page(endpoint.follower.describe()))

    async def ui(request: Any) -> Any:
        return endpoint.page(_static("query.html"))

    async def asset(request: Any) -> Any:
        from starlette.responses import Response

        name = request.path_params["name"]
        if name not in _ASSETS:
            return endpoint.error(404, "no such path: the query page is /ui, the endpoint /sparql, its status /status")
        return Response(_static(name), media_type=_ASSETS[name], headers={**endpoint.headers(), **_PAGE_HEADERS})

    routes = [Route(path, sparql, methods=["GET", "POST"]) for path in ("/sparql", "/sparql/")]
    routes.append(Route("/status", status, methods=["GET"]))
    routes.append(Route("/", landing, methods=["GET"]))
    routes.append(Route("/ui", ui, methods=["GET"]))
    routes.append(Route("/ui/{name}", asset, methods=["GET"]))
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: http_error, 405: http_error})
    app.state.settings = settings
    app.state.endpoint = endpoint
    allowed = {*LOOPBACK_NAMES, *settings.allowed_hosts}
    bind = bind_host.strip().lower().strip("[]")
    if bind not in WILDCARDS:
        allowed.add(bind)
    guarded = _Guard(app, allowed=allowed, any_ip=bind in WILDCARDS)
    guarded.state = app.state  # type: ignore[attr-defined]
    guarded.endpoint = endpoint  # type: ignore[attr-defined]
    return guarded


def uvicorn_config(app: Any, host: str = "127.0.0.1", port: int = 7878, **options: Any) -> Any:
    """uvicorn settings for the endpoint: request heads up to :data:`HEAD_LIMIT` (a long GET gets 413, not a reset)."""
    import uvicorn

    options.setdefault("log_level", "warning")
    return uvicorn.Config(app, host=host, port=port, access_log=False, h11_max_incomplete_event_size=HEAD_LIMIT,
                          limit_concurrency=MAX_CONNECTIONS, http="h11", **options)


def serve(
    kg_root: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 7878,
    settings: EndpointSettings | None = None,
    ready: threading.Event | None = None,
) -> None:
    """Run the endpoint with uvicorn until interrupted (binds loopback unless ``host`` says otherwise)."""
    import uvicorn

    app = create_app(kg_root, settings, bind_host=host)
    server = uvicorn.Server(uvicorn_config(app, host, port))
    if ready is not None:
        ready.set()
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: uvicorn has shut down cleanly, then re-raises it
        server.run()
