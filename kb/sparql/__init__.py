"""The SPARQL 1.1 Protocol endpoint (``prodkg serve``): an HTTP server and the worker processes its queries run in.

- :mod:`.server`: the Starlette app: request checks (Host, Origin, sizes, encodings), content
  negotiation, the service description and ``/status``; it follows each publication.
- :mod:`.pool`: the bounded query workers (deadline, memory cap, concurrency).
- :mod:`.worker`: what runs in a worker: parse, refuse outbound requests, evaluate, serialise.
"""

from __future__ import annotations

from typing import Any

__all__ = ["EndpointSettings", "create_app", "serve"]


def __getattr__(name: str) -> Any:  # the workers import this package without the HTTP stack
    if name in __all__:
        from prodkg.kb.sparql import server

        return getattr(server, name)
    raise AttributeError(name)
