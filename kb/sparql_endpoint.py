"""SPARQL 1.1 Protocol endpoint over the published graph (rdflib-endpoint / FastAPI, queries run by Oxigraph)."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyoxigraph as ox
from rdflib import Graph
from rdflib.plugins.sparql.sparql import Query
from rdflib.query import Processor

from prodkg.kb.iri import mint
from prodkg.kb.results import from_oxigraph
from prodkg.kb.store import KnowledgeGraph
from prodkg.kb.vocab import PREFIXES
from prodkg.errors import QueryError, StoreError

__all__ = ["EndpointSettings", "create_app", "serve"]

TOKEN_ENV = "RDFLIB_APIKEY"  # the variable rdflib-endpoint checks Bearer tokens of updates against


@dataclass
class EndpointSettings:
    """How the endpoint behaves. Updates need ``allow_updates`` and a non-empty ``token``."""

    timeout_s: float = 10.0
    max_rows: int = 10_000
    allow_updates: bool = False
    token: str | None = None
    workers: int = 4

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise QueryError(f"timeout_s must be > 0, got {self.timeout_s!r}")
        if self.max_rows < 1:
            raise QueryError(f"max_rows must be >= 1, got {self.max_rows!r}")
        if self.allow_updates and not self.token:
            raise QueryError("updates need a token (--token-file): an endpoint never accepts anonymous writes")


class _TextQuery(Query):
    """A query rdflib parsed (for its kind and for syntax errors) that keeps its text for Oxigraph."""

    def __init__(self, parsed: Query, text: str) -> None:
        super().__init__(parsed.prologue, parsed.algebra)
        self.text = text


class OxigraphProcessor(Processor):
    """Runs query text on pyoxigraph with a deadline and a cap on result rows.

    A query past its deadline is answered with an error at once; Oxigraph cannot stop a
    running query, so its worker thread finishes it and discards the result. The pool is
    bounded, so at most ``workers`` such queries run at a time.
    """

    def __init__(self, store: ox.Store, settings: EndpointSettings) -> None:
        self.store = store
        self.settings = settings
        self.pool = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="sparql")

    def _run(self, text: str) -> dict[str, Any]:
        from rdflib.term import Variable

        result = self.store.query(text, use_default_graph_as_union=True, prefixes=PREFIXES)
        cap, over = self.settings.max_rows, False
        if isinstance(result, ox.QueryBoolean):
            return {"type_": "ASK", "askAnswer": bool(result)}
        if isinstance(result, ox.QuerySolutions):
            names = [v.value for v in result.variables]
            rows = []
            for solution in result:
                if len(rows) >= cap:
                    over = True
                    break
                rows.append({Variable(n): from_oxigraph(solution[n]) for n in names if solution[n] is not None})
            out: dict[str, Any] = {"type_": "SELECT", "vars_": [Variable(n) for n in names], "bindings": rows}
        else:
            graph = Graph()
            for triple in result:
                if len(graph) >= cap:
                    over = True
                    break
                graph.add((from_oxigraph(triple.subject), from_oxigraph(triple.predicate), from_oxigraph(triple.object)))
            out = {"type_": "CONSTRUCT", "graph": graph}
        # pyoxigraph results belong to this thread: drop them here, not with an exception's frame elsewhere
        del result
        if over:
            raise QueryError(f"the result has more than {cap} rows; add a LIMIT or narrow the query")
        return out

    def query(self, strOrQuery: Any, initBindings: Any = None, initNs: Any = None, base: Any = None, DEBUG: bool = False) -> Any:  # noqa: N803
        text = getattr(strOrQuery, "text", strOrQuery)
        if not isinstance(text, str):
            raise QueryError("the endpoint runs SPARQL text only")
        future = self.pool.submit(self._run, text)
        try:
            return future.result(timeout=self.settings.timeout_s)
        except FutureTimeout:
            raise QueryError(f"query timed out after {self.settings.timeout_s:g} s") from None
        except SyntaxError as exc:
            raise QueryError(f"SPARQL syntax error: {exc}") from None


def _router_class():
    from rdflib_endpoint.sparql_router import SparqlRouter

    class ProdkgRouter(SparqlRouter):
        """rdflib-endpoint's router, handing the query text (not rdflib's algebra) to Oxigraph."""

        def _prepare_query_cached(self, query: str, graph_ns: dict[str, Any]) -> Any:
            return _TextQuery(super()._prepare_query_cached(query, graph_ns), query)

    return ProdkgRouter


def create_app(kg_root: str | os.PathLike[str], settings: EndpointSettings | None = None):
    """A FastAPI app serving the live graph of ``kg_root`` at ``/sparql`` (SPARQL 1.1 Protocol).

    Read-only by default: the store is opened read-only and updates get HTTP 403. With
    ``settings.allow_updates`` the store is opened for writing and an update must carry
    ``Authorization: Bearer <token>``. Queries see the union of all named graphs; GET, POST
    form and POST ``application/sparql-query`` are accepted, results negotiated by Accept.
    Authorised updates write into the graph ``mint("graph", "updates")``; the next publish
    replaces the store, so they last until the next run.
    """
    from fastapi import FastAPI
    from oxrdflib import OxigraphStore as RdflibOxigraphStore

    settings = settings or EndpointSettings()
    root = Path(kg_root)
    current = KnowledgeGraph(root).current_path() if KnowledgeGraph.is_root(root) else (root if root.is_dir() else None)
    if current is None:
        raise StoreError(f"no published graph at {root}")
    try:
        store = ox.Store(str(current)) if settings.allow_updates else ox.Store.read_only(str(current))
    except OSError as exc:
        raise StoreError(f"cannot open the graph at {current}: {exc}") from exc
    if settings.allow_updates:
        os.environ[TOKEN_ENV] = settings.token or ""
    # rdflib-endpoint applies authorised updates through this graph: they land in one named graph
    # of their own, apart from the graphs prodkg publishes (queries still see every graph)
    dataset = Graph(store=RdflibOxigraphStore(store=store), identifier=mint("graph", "updates"))
    for prefix, namespace in PREFIXES.items():
        dataset.bind(prefix, namespace, override=True)
    app = FastAPI(title="prodkg SPARQL endpoint")
    app.include_router(
        _router_class()(
            path="/sparql",
            title="prodkg knowledge graph",
            description="The product knowledge graph published by prodkg (read-only unless started with --allow-updates).",
            graph=dataset,
            processor=OxigraphProcessor(store, settings),
            enable_update=settings.allow_updates,
        )
    )
    app.state.settings = settings
    app.state.store_path = str(current)
    return app


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

    app = create_app(kg_root, settings)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    if ready is not None:
        ready.set()
    server.run()
