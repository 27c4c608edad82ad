"""What a query may make the server do: outbound requests (SERVICE, LOAD) are refused unless their host is allowed.

The check walks the algebra rdflib parses the text into, so any spelling of SERVICE or LOAD
(lower case, codepoint escapes, a variable service IRI, nested in EXISTS or a subquery) is
found, while the same words inside a string literal or an IRI are not.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

from rdflib.plugins.sparql.parserutils import CompValue
from rdflib.term import URIRef

__all__ = ["outbound_targets", "refusal"]

#: algebra nodes that make the engine fetch from somewhere: name -> attribute holding the address
_OUTBOUND = {"ServiceGraphPattern": "term", "Load": "iri"}


def _nodes(root: Any) -> Iterator[Any]:
    stack = [root]
    while stack:  # iterative: a FILTER of thousands of || terms nests deeper than Python's recursion limit
        node = stack.pop()
        if isinstance(node, CompValue):
            yield node
            stack.extend(dict.values(node))
        elif isinstance(node, (list, tuple)):
            stack.extend(node)


def outbound_targets(algebra: Any) -> list[tuple[str, str]]:
    """``(operation, address)`` of each SERVICE and LOAD in a parsed query or update."""
    found = []
    for node in _nodes(algebra):
        name = getattr(node, "name", None)
        if name in _OUTBOUND:
            target = dict.get(node, _OUTBOUND[name])
            address = str(target) if isinstance(target, URIRef) else ""  # a variable: known only while evaluating
            found.append(("SERVICE" if name == "ServiceGraphPattern" else "LOAD", address))
    return found


def _host_allowed(address: str, allowed: Iterable[str]) -> bool:
    try:
        parts = urlsplit(address)
        host = (parts.hostname or "").lower()
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(host) and host in {h.lower() for h in allowed}


def refusal(algebra: Any, allowed_hosts: Iterable[str]) -> str | None:
    """Why the query may not run (an outbound request to a host not allowed), or None."""
    allowed = list(allowed_hosts)
    for operation, address in outbound_targets(algebra):
        if not _host_allowed(address, allowed):
            hint = "no outbound hosts are allowed" if not allowed else f"allowed hosts: {', '.join(allowed)}"
            where = f"<{address}>" if address else "with a variable address"
            return (f"{operation} {where} refused: the endpoint makes no outbound requests except to hosts "
                    f"named by --allow-outbound ({hint})")
    return None
