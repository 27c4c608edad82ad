"""OpenLink Virtuoso as the SPARQL server store: its endpoint conventions and the care its answers need."""

from __future__ import annotations

import logging
from collections import defaultdict, deque
from collections.abc import Callable
from decimal import Decimal
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from rdflib.plugins.sparql.parserutils import CompValue
from rdflib.term import BNode, Literal, Node, URIRef

from prodkg.kb.results import to_python
from prodkg.kb.sparql_client import SparqlServerStore
from prodkg.kb.store import STORES
from prodkg.kb.triples import double_literal
from prodkg.kb.vocab import XSD
from prodkg.errors import QueryError, StoreError

__all__ = ["VirtuosoStore"]

log = logging.getLogger(__name__)

_XSD_DOUBLE = str(XSD.double)
_XSD_FLOAT = "http://www.w3.org/2001/XMLSchema#float"


@STORES.register("virtuoso")
class VirtuosoStore(SparqlServerStore):
    """OpenLink Virtuoso (Debian: ``virtuoso-opensource``), given its query endpoint ``.../sparql``.

    With credentials, updates go to ``/sparql-auth`` and loads to ``/sparql-graph-crud-auth``
    with HTTP digest authentication (a user with the ``SPARQL_UPDATE`` role, such as ``dba``);
    without, to ``/sparql`` and ``/sparql-graph-crud``, which accept writes only when the
    anonymous ``SPARQL`` account was granted ``SPARQL_UPDATE``. Explicit URLs win. Virtuoso's
    answers need no other care: its ``typed-literal`` JSON terms and ``"1"``/``"0"`` booleans
    are read like any server's, and naming the graphs with ``named-graph-uri`` keeps
    ``GRAPH ?g`` from ranging over its system graphs.
    """

    default_auth = "digest"

    def _boolean_variables(self, sparql: str) -> frozenset[str]:
        # Virtuoso gives the value of a comparison, BOUND(), a logical operator, even the
        # constant true, as xsd:integer 1 or 0; SPARQL says xsd:boolean
        return _boolean_expression_variables(sparql)

    def _exact_numbers(self, rows: list[tuple[Node | None, ...]],
                       fetch_exact: Callable[[], list[tuple[Node | None, ...]]]) -> list[tuple[Node | None, ...]]:
        """Virtuoso 7.2 writes doubles with 6 significant digits in every result format but Turtle.

        Its Turtle has them in full (as bare numbers, so without their datatype). When ``rows``
        hold a double or float, the same query is asked again for Turtle and each of its rows is
        matched to a row of ``rows`` that agrees on every other term and on the doubles to 6
        digits; the matched doubles get their exact value. Rows that cannot all be matched stay
        as they were, with a warning.
        """
        if not any(_floating(term) for row in rows for term in row):
            return rows
        try:
            exact = fetch_exact()
        except (StoreError, QueryError, SyntaxError) as exc:
            log.warning("exact floating-point values not recovered from %s (6 significant digits kept): %s", self.query_url, exc)
            return rows
        waiting: dict[tuple, deque[int]] = defaultdict(deque)
        for i, row in enumerate(rows):
            waiting[_row_key(row)].append(i)
        fixed = list(rows)
        for other in exact:
            queue = waiting.get(_row_key(other))
            if not queue or len(other) != len(rows[queue[0]]):
                log.warning("exact floating-point values not recovered from %s: the Turtle answer does not match "
                            "the JSON one (6 significant digits kept)", self.query_url)
                return rows
            i = queue.popleft()
            fixed[i] = tuple(_exact_term(term, value) for term, value in zip(rows[i], other, strict=True))
        return fixed

    def _root(self) -> str | None:
        path = urlsplit(self.query_url).path.rstrip("/")
        return self.query_url.split("?", 1)[0].rstrip("/")[: -len("/sparql")] if path.endswith("/sparql") else None

    def _default_update_url(self) -> str:
        root = self._root()
        return f"{root}/sparql-auth" if root is not None and self.user else self.query_url

    def _default_gsp_url(self) -> str | None:
        root = self._root()
        if root is None:
            return None
        return f"{root}/sparql-graph-crud-auth" if self.user else f"{root}/sparql-graph-crud"


def _floating(term: Node | None) -> bool:
    return isinstance(term, Literal) and term.datatype is not None and str(term.datatype) in (_XSD_DOUBLE, _XSD_FLOAT)


def _term_key(term: Node | None) -> Any:
    """What two serialisations of one result agree on: numbers to 6 significant digits, bnodes not at all."""
    if term is None or isinstance(term, URIRef):
        return term
    if isinstance(term, BNode):
        return "_:"
    value = to_python(term)
    if isinstance(value, (bool, int, float, Decimal)):  # booleans too: Virtuoso may send them as 1 and 0
        try:
            return ("number", f"{float(value):.5e}")
        except (OverflowError, ValueError):
            return ("number", str(term))
    try:
        hash(value)
    except TypeError:
        return ("literal", str(term))
    return ("literal", value)


def _row_key(row: tuple[Node | None, ...]) -> tuple:
    return tuple(_term_key(term) for term in row)


def _exact_term(term: Node | None, exact: Node | None) -> Node | None:
    """``term``, with the value of ``exact`` when ``term`` is a double or float written short."""
    if not _floating(term) or not isinstance(exact, Literal):
        return term
    try:
        value = float(str(exact))
    except ValueError:
        return term
    if str(term.datatype) == _XSD_DOUBLE:  # type: ignore[union-attr]
        return double_literal(value)
    return Literal(repr(float(np.float32(value))) if np.isfinite(value) else str(term), datatype=URIRef(_XSD_FLOAT))


_BOOLEAN_BUILTINS = frozenset(
    "Builtin_" + name
    for name in (
        "BOUND", "isIRI", "isURI", "isBLANK", "isLITERAL", "isNUMERIC", "REGEX", "sameTerm", "LANGMATCHES",
        "CONTAINS", "STRSTARTS", "STRENDS", "EXISTS", "NOTEXISTS",
    )
)
_BOOLEAN_OPERATORS = frozenset({"RelationalExpression", "ConditionalAndExpression", "ConditionalOrExpression", "UnaryNot"})


def _is_boolean_expression(expr: Any) -> bool:
    """True when SPARQL types ``expr`` (an rdflib algebra expression) as xsd:boolean."""
    if isinstance(expr, Literal):
        return expr.datatype == XSD.boolean
    if not isinstance(expr, CompValue):
        return False
    if expr.name in _BOOLEAN_OPERATORS or expr.name in _BOOLEAN_BUILTINS:
        return True
    if expr.name == "Builtin_IF":
        return _is_boolean_expression(expr.arg2) and _is_boolean_expression(expr.arg3)
    if expr.name == "Builtin_COALESCE":
        return bool(expr.arg) and all(_is_boolean_expression(a) for a in expr.arg)
    return False


@lru_cache(maxsize=256)
def _boolean_expression_variables(sparql: str) -> frozenset[str]:
    """Variables that ``BIND(expr AS ?v)`` or ``SELECT (expr AS ?v)`` give a boolean expression's value."""
    from rdflib.plugins.sparql.algebra import translateQuery, traverse
    from rdflib.plugins.sparql.parser import parseQuery

    try:
        algebra = translateQuery(parseQuery(sparql)).algebra
    except Exception:  # noqa: BLE001 - rdflib raises plain Exception too; a query it cannot read just stays untyped
        return frozenset()
    found: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, CompValue) and node.name == "Extend" and _is_boolean_expression(node.get("expr")):
            found.add(str(node.var))

    traverse(algebra, visit)
    return frozenset(found)
