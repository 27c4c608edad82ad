"""SPARQL results as one backend-neutral object (rows of rdflib terms, a boolean or a graph)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any
from typing import Literal as TypingLiteral

import pandas as pd
import pyoxigraph as ox
from rdflib import Graph
from rdflib.term import BNode, Literal, Node, URIRef

from prodkg.kb.vocab import PREFIXES, XSD
from prodkg.errors import QueryError

__all__ = ["QueryResult", "from_oxigraph", "oxigraph_to_python", "to_oxigraph", "to_python"]

_XSD_STRING = str(XSD.string)


def from_oxigraph(term: Any) -> Node | None:
    """An rdflib term for a pyoxigraph term; None for an unbound value or the default graph."""
    if term is None or isinstance(term, ox.DefaultGraph):
        return None
    if isinstance(term, ox.NamedNode):
        return URIRef(term.value)
    if isinstance(term, ox.BlankNode):
        return BNode(term.value)
    if isinstance(term, ox.Literal):
        if term.language:
            return Literal(term.value, lang=term.language)
        datatype = term.datatype.value
        if datatype == _XSD_STRING:
            return Literal(term.value)
        return Literal(term.value, datatype=URIRef(datatype))
    raise QueryError(f"unsupported term in a result: {type(term).__name__} {term!r}")


def to_oxigraph(term: Node) -> Any:
    """A pyoxigraph term for an rdflib IRI, blank node or literal."""
    try:
        if isinstance(term, URIRef):
            return ox.NamedNode(str(term))
        if isinstance(term, BNode):
            return ox.BlankNode(str(term))
        if isinstance(term, Literal):
            if term.language:
                return ox.Literal(str(term), language=term.language)
            if term.datatype is not None:
                return ox.Literal(str(term), datatype=ox.NamedNode(str(term.datatype)))
            return ox.Literal(str(term))
    except ValueError as exc:
        raise QueryError(f"cannot use {term!r} as an RDF term: {exc}") from None
    raise QueryError(f"expected an rdflib URIRef, BNode or Literal, got {type(term).__name__} {term!r}")


def to_python(term: Node | None) -> Any:
    """IRIs as str, blank nodes as '_:id', literals as Python values (str when ill-typed)."""
    if term is None:
        return None
    if isinstance(term, Literal):
        value = term.toPython()
        return str(term) if isinstance(value, Literal) else value
    if isinstance(term, BNode):
        return f"_:{term}"
    return str(term)


def _integer(text: str) -> int:
    return int(text)


def _boolean(text: str) -> bool:
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise ValueError(text)


_XSD = "http://www.w3.org/2001/XMLSchema#"
# the datatypes query results mostly hold, converted without building rdflib terms
_FAST: dict[str, Any] = {
    _XSD + "double": float,
    _XSD + "float": float,
    _XSD + "decimal": Decimal,
    _XSD + "boolean": _boolean,
    **{
        _XSD + name: _integer
        for name in (
            "integer", "int", "long", "short", "byte", "nonNegativeInteger", "positiveInteger",
            "nonPositiveInteger", "negativeInteger", "unsignedLong", "unsignedInt", "unsignedShort",
            "unsignedByte",
        )
    },
}


def oxigraph_to_python(term: Any) -> Any:
    """:func:`to_python` of a pyoxigraph term, with a fast path for strings and numbers."""
    if term is None:
        return None
    kind = type(term)
    if kind is ox.NamedNode:
        return term.value
    if kind is ox.Literal:
        datatype = term.datatype.value
        if datatype == _XSD_STRING:
            return term.value
        convert = _FAST.get(datatype)
        if convert is not None:
            try:
                return convert(term.value)
            except (ValueError, ArithmeticError):
                pass  # ill-typed: rdflib's rules below decide
    return to_python(from_oxigraph(term))


def _json_term(term: Node) -> dict[str, str]:
    if isinstance(term, URIRef):
        return {"type": "uri", "value": str(term)}
    if isinstance(term, BNode):
        return {"type": "bnode", "value": str(term)}
    out = {"type": "literal", "value": str(term)}
    if isinstance(term, Literal) and term.language:
        out["xml:lang"] = term.language
    elif isinstance(term, Literal) and term.datatype is not None:
        out["datatype"] = str(term.datatype)
    return out


class QueryResult:
    """The answer to one SPARQL query.

    ``kind`` is ``"select"`` (``variables`` and ``rows`` of rdflib terms, None where unbound),
    ``"ask"`` (``boolean``) or ``"graph"`` (``graph``, an rdflib Graph, for CONSTRUCT and
    DESCRIBE). ``len()`` is the number of rows or triples (1 for ASK). Rows read from a store
    are turned into rdflib terms only when ``rows`` is read; :meth:`to_frame` converts the
    common datatypes straight to Python values.
    """

    def __init__(
        self,
        kind: TypingLiteral["select", "ask", "graph"],
        variables: list[str] | None = None,
        rows: list[tuple[Node | None, ...]] | None = None,
        boolean: bool | None = None,
        graph: Graph | None = None,
        *,
        raw_rows: list[tuple[Any, ...]] | None = None,
    ) -> None:
        if kind not in ("select", "ask", "graph"):
            raise QueryError(f"result kind must be select, ask or graph, got {kind!r}")
        self.kind = kind
        self.variables = list(variables or [])
        self.boolean = boolean
        self.graph = graph
        self._rows = rows
        self._raw = raw_rows if rows is None else None
        if self._rows is None and self._raw is None:
            self._rows = []

    def __repr__(self) -> str:
        if self.kind == "ask":
            return f"QueryResult(ask: {self.boolean})"
        return f"QueryResult({self.kind}: {len(self)} {'rows' if self.kind == 'select' else 'triples'})"

    @property
    def rows(self) -> list[tuple[Node | None, ...]]:
        if self._rows is None:
            self._rows = [tuple(from_oxigraph(t) for t in row) for row in self._raw or []]
            self._raw = None
        return self._rows

    @classmethod
    def from_oxigraph(cls, result: Any) -> QueryResult:
        if isinstance(result, ox.QueryBoolean):
            return cls(kind="ask", boolean=bool(result))
        if isinstance(result, ox.QuerySolutions):
            variables = [v.value for v in result.variables]
            return cls(kind="select", variables=variables, raw_rows=[tuple(solution) for solution in result])
        if isinstance(result, ox.QueryTriples):
            graph = Graph()
            for prefix, namespace in PREFIXES.items():
                graph.bind(prefix, namespace)
            for triple in result:
                s, p, o = triple.subject, triple.predicate, triple.object
                graph.add((from_oxigraph(s), from_oxigraph(p), from_oxigraph(o)))
            return cls(kind="graph", graph=graph)
        raise QueryError(f"unexpected query result type {type(result).__name__}")

    def _python_rows(self) -> list[list[Any]]:
        if self._raw is not None:
            return [[oxigraph_to_python(t) for t in row] for row in self._raw]
        return [[to_python(t) for t in row] for row in self.rows]

    def __len__(self) -> int:
        if self.kind == "select":
            return len(self._raw) if self._raw is not None else len(self.rows)
        if self.kind == "graph":
            return len(self.graph) if self.graph is not None else 0
        return 1

    def __iter__(self) -> Iterator[Any]:
        """Rows as ``{variable: term}`` dicts (unbound variables left out), or graph triples."""
        if self.kind == "select":
            for row in self.rows:
                yield {v: t for v, t in zip(self.variables, row, strict=False) if t is not None}
        elif self.kind == "graph" and self.graph is not None:
            yield from self.graph
        else:
            raise QueryError("an ASK result has no rows; read .boolean")

    def to_frame(self) -> pd.DataFrame:
        """Rows as a DataFrame: IRIs as str, literals as Python values, unbound as None.

        A graph result gives columns subject, predicate, object; an ASK result one column
        ``boolean``.
        """
        if self.kind == "select":
            return pd.DataFrame(self._python_rows(), columns=self.variables, dtype=object)
        if self.kind == "ask":
            return pd.DataFrame({"boolean": [self.boolean]})
        triples = sorted(self.graph) if self.graph is not None else []
        data = [[to_python(s), to_python(p), to_python(o)] for s, p, o in triples]
        return pd.DataFrame(data, columns=["subject", "predicate", "object"], dtype=object)

    def to_csv(self, path: str | os.PathLike[str] | None = None) -> str | None:
        """CSV of :meth:`to_frame` (lexical forms, header row); the text when ``path`` is None."""
        frame = self.to_frame()
        if path is None:
            return frame.to_csv(index=False)
        frame.to_csv(Path(path), index=False)
        return None

    def to_json(self) -> str:
        """SPARQL 1.1 Query Results JSON for SELECT and ASK; JSON-LD for a graph result."""
        if self.kind == "graph":
            graph = self.graph if self.graph is not None else Graph()
            return graph.serialize(format="json-ld")
        if self.kind == "ask":
            return json.dumps({"head": {}, "boolean": bool(self.boolean)})
        bindings = [
            {v: _json_term(t) for v, t in zip(self.variables, row, strict=False) if t is not None} for row in self.rows
        ]
        return json.dumps({"head": {"vars": self.variables}, "results": {"bindings": bindings}}, ensure_ascii=False)

    def column(self, name: str) -> list[Any]:
        """One variable's values as Python values (see :meth:`to_frame`)."""
        if self.kind != "select" or name not in self.variables:
            has = self.variables if self.kind == "select" else f"no columns ({self.kind})"
            raise QueryError(f"no column {name!r}; the result has {has}")
        i = self.variables.index(name)
        return [row[i] for row in self._python_rows()]

    def first(self) -> Mapping[str, Any] | None:
        """The first row as ``{variable: Python value}``, or None when there are no rows."""
        if self.kind != "select":
            raise QueryError(f"first() needs a SELECT result, this is {self.kind}")
        if len(self) == 0:
            return None
        return {v: to_python(t) for v, t in zip(self.variables, self.rows[0], strict=False)}
