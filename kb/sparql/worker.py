"""The process a query runs in: parses, checks, evaluates and serialises one request at a time.

A worker opens the published store itself (read-only, or read-write for one update) and
caps its own address space (``RLIMIT_AS``) so a query that needs too much memory fails
inside the worker, never in the server. The server kills a worker whose query passes its
deadline; an alarm set for each job kills it too if the server is gone.
"""

from __future__ import annotations

import os
import resource
import signal
from typing import Any

import pyoxigraph as ox
import rdflib.plugins.sparql.processor  # noqa: F401 - imported here, once, in the fork server: not per worker
import rdflib.plugins.sparql.results.csvresults  # noqa: F401
import rdflib.plugins.sparql.results.jsonresults  # noqa: F401
import rdflib.plugins.sparql.results.xmlresults  # noqa: F401
from rdflib import Graph
from rdflib.plugins.sparql import prepareQuery

from prodkg.kb.iri import mint
from prodkg.kb.results import from_oxigraph
from prodkg.kb.sparql.formats import ROW_CAP_STATUS, negotiate, tsv_results
from prodkg.kb.sparql.policy import refusal
from prodkg.kb.vocab import PREFIXES

__all__ = ["worker_main"]

#: seconds past a job's deadline after which the worker's own alarm ends it (the server kills it first)
ALARM_GRACE_S = 2.0
#: exit status of a worker that could not open its store
EXIT_NO_STORE = 3


def _vm_bytes() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _cap_memory(memory_mb: int) -> None:
    """Let this process map at most ``memory_mb`` MiB beyond what it has mapped now."""
    if memory_mb <= 0:
        return
    limit = _vm_bytes() + memory_mb * 2**20
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _error(status: int, message: str) -> dict[str, Any]:
    return {"status": status, "message": message}


def _parse_query(text: str) -> Any:
    return prepareQuery(text, initNs=PREFIXES)


def _serialise_solutions(result: Any, cap: int, fmt: str) -> bytes | None:
    from rdflib.plugins.sparql.processor import SPARQLResult
    from rdflib.term import Variable

    names = [v.value for v in result.variables]
    rows = []
    for solution in result:
        if len(rows) >= cap:
            return None
        rows.append({Variable(n): from_oxigraph(solution[n]) for n in names if solution[n] is not None})
    if fmt == "tsv":
        return tsv_results(names, rows)
    out = SPARQLResult({"type_": "SELECT", "vars_": [Variable(n) for n in names], "bindings": rows})
    return out.serialize(format=fmt)


def _serialise_triples(result: Any, cap: int, fmt: str) -> bytes | None:
    graph = Graph()
    for prefix, namespace in PREFIXES.items():
        graph.bind(prefix, namespace, override=True)
    for triple in result:
        if len(graph) >= cap:
            return None
        graph.add((from_oxigraph(triple.subject), from_oxigraph(triple.predicate), from_oxigraph(triple.object)))
    return graph.serialize(format=fmt, encoding="utf-8")


def run_query(store: ox.Store, job: dict[str, Any]) -> dict[str, Any]:
    """Answer one query job: ``text``, ``accept``, ``max_rows``, ``outbound`` (allowed hosts)."""
    text = job["text"]
    try:
        parsed = _parse_query(text)
    except Exception as exc:  # noqa: BLE001 - rdflib's parser raises several types for bad text
        return _error(400, f"SPARQL syntax error: {exc}")
    why = refusal(parsed.algebra, job.get("outbound", ()))
    if why:
        return _error(403, why)
    graph_form = parsed.algebra.name in ("ConstructQuery", "DescribeQuery")
    media, fmt = negotiate(job.get("accept"), graph_form)
    cap = job["max_rows"]
    try:
        result = store.query(text, use_default_graph_as_union=True, prefixes=PREFIXES)
        if isinstance(result, ox.QueryBoolean):
            from rdflib.plugins.sparql.processor import SPARQLResult

            if fmt == "tsv":  # TSV has no boolean form: answer in JSON, as its Content-Type says
                media, fmt = "application/sparql-results+json", "json"
            body = SPARQLResult({"type_": "ASK", "askAnswer": bool(result)}).serialize(format=fmt)
        elif isinstance(result, ox.QuerySolutions):
            body = _serialise_solutions(result, cap, fmt)
        else:
            body = _serialise_triples(result, cap, fmt)
    except SyntaxError as exc:
        return _error(400, f"SPARQL syntax error: {exc}")
    except (OSError, RuntimeError, ValueError) as exc:
        return _error(400, f"query failed: {exc}")
    if body is None:
        return _error(ROW_CAP_STATUS, f"the result has more than {cap} rows (the server's --max-rows); add a LIMIT or narrow the query")
    if isinstance(body, str):
        body = body.encode("utf-8")
    return {"status": 200, "body": body, "media_type": media}


def run_update(store: ox.Store, job: dict[str, Any]) -> dict[str, Any]:
    """Apply one update job into the graph ``mint("graph", "updates")`` (rdflib's evaluation over the store)."""
    import rdflib.plugins.sparql as rdflib_sparql
    from oxrdflib import OxigraphStore as RdflibOxigraphStore
    from rdflib.plugins.sparql import prepareUpdate

    outbound = list(job.get("outbound", ()))
    # rdflib fetches the graphs LOAD and USING name; refused below unless allowed, and never fetched otherwise
    rdflib_sparql.SPARQL_LOAD_GRAPHS = bool(outbound)
    try:
        parsed = prepareUpdate(job["text"], initNs=PREFIXES)
    except Exception as exc:  # noqa: BLE001 - rdflib's parser raises several types for bad text
        return _error(400, f"SPARQL update syntax error: {exc}")
    why = refusal(parsed.algebra, outbound)
    if why:
        return _error(403, why)
    graph = Graph(store=RdflibOxigraphStore(store=store), identifier=mint("graph", "updates"))
    try:
        graph.update(parsed)
        store.flush()
    except (OSError, RuntimeError, ValueError, TypeError) as exc:
        return _error(400, f"update failed: {exc}")
    return {"status": 204}


def _handle(store: ox.Store, job: dict[str, Any]) -> dict[str, Any]:
    op = job.get("op")
    if op == "query":
        return run_query(store, job)
    if op == "update":
        return run_update(store, job)
    if op == "graphs":
        return {"status": 200, "graphs": sorted(g.value for g in store.named_graphs() if isinstance(g, ox.NamedNode))}
    return _error(500, f"unknown job {op!r}")


def worker_main(conn: Any, store_path: str, writable: bool, memory_mb: int) -> None:
    """Serve jobs from ``conn`` until it closes. Runs in a child process of the server."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's: it stops its workers
    signal.signal(signal.SIGALRM, signal.SIG_DFL)  # the alarm ends this process, whatever it is running
    try:
        store = ox.Store(store_path) if writable else ox.Store.read_only(store_path)
    except OSError as exc:
        conn.send(_error(500, f"cannot open the graph at {store_path}: {exc}"))
        raise SystemExit(EXIT_NO_STORE) from None
    _cap_memory(memory_mb)
    conn.send({"status": 0, "pid": os.getpid()})
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            break
        signal.setitimer(signal.ITIMER_REAL, float(job.get("timeout_s", 60.0)) + ALARM_GRACE_S)
        try:
            reply = _handle(store, job)
        except MemoryError:
            reply = _error(507, f"the query needed more than the memory cap ({memory_mb} MiB)")
        except Exception as exc:  # noqa: BLE001 - any failure is the request's answer, never the worker's end
            reply = _error(500, f"the query failed in the engine: {type(exc).__name__}: {exc}")
        signal.setitimer(signal.ITIMER_REAL, 0)
        try:
            conn.send(reply)
        except MemoryError:
            conn.send(_error(507, f"the result needed more than the memory cap ({memory_mb} MiB)"))
        except (BrokenPipeError, OSError):
            break
    if writable:
        store.flush()
