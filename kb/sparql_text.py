"""SPARQL text helpers: tell updates from queries, turn user values into terms, bind them safely."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

import pyoxigraph as ox
from rdflib.term import BNode, Literal, Node, URIRef

from prodkg.kb.nquads import term_to_nt
from prodkg.kb.results import from_oxigraph
from prodkg.kb.triples import datetime_literal, double_literal
from prodkg.kb.vocab import XSD
from prodkg.errors import ProdkgError, QueryError

__all__ = ["as_term", "inject_values", "is_update", "normalise_bindings"]

_SKIP = r"(?:\s+|#[^\n]*(?:\n|$))*"
_PROLOGUE = rf"(?:(?:BASE\s*<[^>]*>|PREFIX\s+[^\s:]*:\s*<[^>]*>){_SKIP})*"
_UPDATE = re.compile(
    rf"^{_SKIP}{_PROLOGUE}(INSERT|DELETE|LOAD|CLEAR|CREATE|DROP|COPY|MOVE|ADD|WITH)\b", re.IGNORECASE
)
_VARNAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_IRIREF = re.compile(r'<[^<>"{}|^`\\\x00-\x20]*>')
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TOKEN = re.compile(r"[?$]?[\w\-.:]+")


def is_update(sparql: str) -> bool:
    """True when the text is a SPARQL 1.1 Update (INSERT, DELETE, LOAD, CLEAR, DROP, ...)."""
    return bool(_UPDATE.match(sparql))


def as_term(value: object) -> Node:
    """An RDF term for a binding value.

    str -> xsd:string literal (never an IRI: pass ``rdflib.URIRef`` for that), bool ->
    xsd:boolean, int -> xsd:integer, float -> xsd:double, Decimal -> xsd:decimal, aware
    datetime -> xsd:dateTime; rdflib and pyoxigraph terms are taken as they are.
    """
    if isinstance(value, (URIRef, BNode, Literal)):
        return value
    if isinstance(value, (ox.NamedNode, ox.BlankNode, ox.Literal)):
        term = from_oxigraph(value)
        assert term is not None
        return term
    if isinstance(value, str):
        return Literal(value)
    if isinstance(value, bool):
        return Literal("true" if value else "false", datatype=XSD.boolean)
    if isinstance(value, int):
        return Literal(str(value), datatype=XSD.integer)
    if isinstance(value, float):
        return double_literal(value)
    if isinstance(value, Decimal):
        return Literal(format(value, "f"), datatype=XSD.decimal)
    if isinstance(value, datetime):
        try:
            return datetime_literal(value)
        except ProdkgError as exc:
            raise QueryError(f"cannot bind {value!r}: {exc}") from None
    raise QueryError(
        f"cannot bind a {type(value).__name__} ({value!r}); expected str, int, float, bool, Decimal, "
        "datetime or an rdflib/pyoxigraph term"
    )


def normalise_bindings(bindings: Mapping[str, Any] | None) -> dict[str, Node]:
    """``{name: term}`` with a leading ``?`` or ``$`` dropped from names and values made terms."""
    if not bindings:
        return {}
    if not isinstance(bindings, Mapping):
        raise QueryError(f"bindings must be a dict of variable name -> value, got {type(bindings).__name__}")
    out: dict[str, Node] = {}
    for name, value in bindings.items():
        if not isinstance(name, str):
            raise QueryError(f"binding names must be str, got {type(name).__name__} {name!r}")
        bare = name[1:] if name[:1] in "?$" else name
        if not _VARNAME.match(bare):
            raise QueryError(f"binding name {name!r} is not a SPARQL variable name (letters, digits, '_')")
        if bare in out:
            raise QueryError(f"variable ?{bare} is bound twice")
        out[bare] = as_term(value)
    return out


def _structure(sparql: str) -> list[tuple[int, str]]:
    """Positions of braces and bare words outside comments, strings and IRIs."""
    tokens: list[tuple[int, str]] = []
    i, n = 0, len(sparql)
    while i < n:
        c = sparql[i]
        if c == "#":
            end = sparql.find("\n", i)
            i = n if end < 0 else end + 1
        elif c in "\"'":
            quote = c * 3 if sparql.startswith(c * 3, i) else c
            j = i + len(quote)
            while j < n and not sparql.startswith(quote, j):
                j += 2 if sparql[j] == "\\" else 1
            i = j + len(quote)
        elif c == "<" and (m := _IRIREF.match(sparql, i)):
            i = m.end()
        elif c in "{}":
            tokens.append((i, c))
            i += 1
        elif c in "?$:" or c.isalnum() or c == "_":
            # variables (?where) and prefixed names (ex:where) are not keywords
            m = _TOKEN.match(sparql, i)
            assert m is not None
            word = m.group()
            if c not in "?$" and _WORD.fullmatch(word):
                tokens.append((i, word.upper()))
            i = m.end()
        else:
            i += 1
    return tokens


def inject_values(sparql: str, bindings: Mapping[str, Node]) -> str:
    """The query with ``VALUES (?a ?b) { (x y) }`` opening its top-level WHERE group.

    The fallback for pyoxigraph versions without query substitutions. Values are written as
    escaped N-Triples terms, never pasted as raw text. Like substitution, the bound values are
    seen by every pattern and FILTER of the top-level group (nested groups see them through
    the join).
    """
    if not bindings:
        return sparql
    depth = 0
    after_where = False
    form = None
    target = None
    for pos, tok in _structure(sparql):
        if tok == "{":
            if depth == 0 and (after_where or form in ("SELECT", "ASK", "DESCRIBE")):
                target = pos
                break
            depth += 1
        elif tok == "}":
            depth -= 1
        elif depth == 0 and form is None and tok in ("SELECT", "CONSTRUCT", "ASK", "DESCRIBE"):
            form = tok
        elif depth == 0 and tok == "WHERE":
            after_where = True
    if target is None:
        raise QueryError("cannot bind values: the query has no top-level WHERE group")
    names = list(bindings)
    try:
        values = " ".join(term_to_nt(bindings[name]) for name in names)
    except ProdkgError as exc:
        raise QueryError(f"cannot bind values: {exc}") from None
    clause = f" VALUES ({' '.join('?' + name for name in names)}) {{ ({values}) }} "
    return sparql[: target + 1] + clause + sparql[target + 1 :]
