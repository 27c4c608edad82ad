"""Opening a SPARQL server store and mirroring a run's graph to it: what the pipeline and the CLI call."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable
from typing import Any

from prodkg.kb.publication import RemoteGraph
from prodkg.kb.sparql_client import SparqlServerStore
from prodkg.kb.store import STORES, OxigraphStore
from prodkg.kb.virtuoso import VirtuosoStore  # noqa: F401 - registers the "virtuoso" store that open_server_store picks
from prodkg.errors import StageError, StoreError

__all__ = ["mirror_to_server", "open_server_store"]


def open_server_store(
    url: str,
    *,
    update_url: str | None = None,
    gsp_url: str | None = None,
    backend: str | None = None,
    read_only: bool = False,
    **options: Any,
) -> SparqlServerStore:
    """Open the SPARQL server whose query endpoint is ``url``.

    ``backend`` is a name of :data:`kb.store.STORES` (``sparql`` or ``virtuoso``); None asks
    the server (its ``Server`` header), so a Virtuoso gets its endpoint conventions. Other
    ``options`` go to :class:`SparqlServerStore` (``user``, ``password``, ``timeout``, ...).

    Raises:
        StoreError: the server cannot be reached (the message names ``url``) or refuses.
    """
    kwargs = {"update_url": update_url, "gsp_url": gsp_url, "read_only": read_only, **options}
    if backend is None:
        probe_options = {k: v for k, v in options.items() if k in ("user", "password", "timeout", "retries", "backoff")}
        with SparqlServerStore(url, read_only=True, **probe_options) as probe:
            software = probe.ping()
        backend = "virtuoso" if software.lower().startswith("virtuoso") else "sparql"
    factory = STORES.get(backend)
    if not (isinstance(factory, type) and issubclass(factory, SparqlServerStore)):
        raise StoreError(f"store {backend!r} is not a SPARQL server store")
    store = factory(url, **kwargs)
    return store


def mirror_to_server(
    source: Iterable[tuple] | str | os.PathLike[str],
    run_id: str,
    url: str,
    *,
    update_url: str | None = None,
    gsp_url: str | None = None,
) -> dict[str, Any]:
    """Publish a run's graph to the SPARQL server at ``url`` too, after the local publish.

    ``source`` is the local store just published (its directory: the server then holds
    exactly what the local record holds, whichever way it was built) or the quads themselves.
    Credentials come from :data:`USER_ENV` and :data:`PASSWORD_ENV`.

    Returns:
        what the graph stage records: url, publication, graphs, quads (on the server), seconds.

    Raises:
        StageError: the server was not updated; it still serves its previous publication.
    """
    started = time.perf_counter()
    local = source if isinstance(source, (str, os.PathLike)) else None
    try:
        with contextlib.ExitStack() as stack:
            if local is not None:
                quads: Iterable[tuple] = stack.enter_context(OxigraphStore(local, read_only=True)).quads()
            else:
                quads = source  # type: ignore[assignment]
            store = stack.enter_context(open_server_store(url, update_url=update_url, gsp_url=gsp_url))
            publication = RemoteGraph(store).publish(quads, run_id)
            count = store._count(publication.graphs)
    except StoreError as exc:
        where = f" ({local})" if local is not None else ""
        raise StageError(
            f"the local graph was published{where}, but the SPARQL server at {url} was NOT updated "
            f"and still serves its previous graph: {exc}"
        ) from exc
    return {
        "url": url,
        "publication": str(publication.iri),
        "graphs": len(publication.graphs),
        "quads": count,
        "seconds": round(time.perf_counter() - started, 3),
    }
