"""Named SPARQL queries: the .rq files shipped in kb/queries/, listed, loaded and run by name.

Each file opens with comment lines: a description, then one ``# @param NAME required|optional
TYPE text`` line per variable a caller may bind (TYPE: string, double, integer, boolean, iri,
datetime). :func:`run_query` refuses unknown names and missing required ones before the store
sees the query, and reads text values (from a command line, say) as the declared type.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from importlib import resources
from typing import Any

from rdflib.term import URIRef

from prodkg.kb.results import QueryResult
from prodkg.kb.store import GraphStore
from prodkg.errors import QueryError
from prodkg.registry import Registry

__all__ = ["QuerySpec", "list_queries", "load_query", "query_spec", "run_query"]

PARAM_TYPES = ("string", "double", "integer", "boolean", "iri", "datetime", "concept", "brand")
# Label parameters: a value is matched against the graph's labels ignoring case; one that matches no label is
# refused with the closest ones, instead of returning nothing.
_LABEL_LOOKUPS = {
    "concept": "SELECT DISTINCT ?label WHERE { ?c a skos:Concept ; skos:prefLabel ?label }",
    "brand": "SELECT DISTINCT ?label WHERE { ?p schema:brand|schema:manufacturer ?b . ?b schema:name ?label }",
}
_PARAM = re.compile(
    r"^#\s*@param\s+\??([A-Za-z_][A-Za-z0-9_]*)\s+(required|optional)\s+(" + "|".join(PARAM_TYPES) + r")\b\s*(.*)$"
)


@dataclass(frozen=True)
class QuerySpec:
    """A named query: its text, what it is for, and the variables a caller may bind."""

    name: str
    text: str
    description: str
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    param_types: dict[str, str] = field(default_factory=dict, compare=False)
    param_docs: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def params(self) -> tuple[str, ...]:
        return self.required + self.optional


def _parse(name: str, text: str) -> QuerySpec:
    description: list[str] = []
    required: list[str] = []
    optional: list[str] = []
    docs: dict[str, str] = {}
    types: dict[str, str] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped.startswith("#"):
            break
        match = _PARAM.match(stripped)
        if match:
            param, kind, type_, doc = match.groups()
            (required if kind == "required" else optional).append(param)
            types[param] = type_
            docs[param] = doc.strip()
        elif "@param" in stripped:
            raise QueryError(
                f"query {name!r}: malformed line {stripped!r}; "
                f"expected '# @param NAME required|optional TYPE text' with TYPE one of {PARAM_TYPES}"
            )
        else:
            description.append(stripped.lstrip("#").strip())
    return QuerySpec(name, text, " ".join(d for d in description if d), tuple(required), tuple(optional), types, docs)


@lru_cache(maxsize=1)
def _registry() -> Registry[QuerySpec]:
    registry: Registry[QuerySpec] = Registry("query")
    folder = resources.files("prodkg.kb").joinpath("queries")
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".rq"):
            name = entry.name[: -len(".rq")]
            registry.register(name)(_parse(name, entry.read_text(encoding="utf-8")))
    return registry


def _key(name: str) -> str:
    if not isinstance(name, str):
        raise QueryError(f"query name must be a str, got {type(name).__name__}")
    return name[: -len(".rq")] if name.endswith(".rq") else name


def list_queries() -> list[str]:
    """Names of the shipped queries (file names without ``.rq``)."""
    return _registry().names()


def query_spec(name: str) -> QuerySpec:
    """The parsed query ``name`` (with or without ``.rq``); unknown names list the valid ones."""
    return _registry().get(_key(name))


def load_query(name: str) -> str:
    """The SPARQL text of query ``name``."""
    return query_spec(name).text


def run_query(store: GraphStore, name: str, /, **bindings: Any) -> QueryResult:
    """Run the named query on ``store`` with ``bindings`` for its declared parameters.

    Raises:
        QueryError: a binding the query does not declare, or a required one missing.
        UnknownComponentError: no query of that name.
    """
    spec = query_spec(name)
    # None means "not given", so callers (a CLI, a flow) can pass optional filters through as they are
    bindings = {k: v for k, v in bindings.items() if v is not None}
    unknown = sorted(set(bindings) - set(spec.params))
    if unknown:
        raise QueryError(f"query {spec.name!r} has no parameter(s) {unknown}; it takes {list(spec.params) or 'none'}")
    missing = [p for p in spec.required if p not in bindings]
    if missing:
        raise QueryError(f"query {spec.name!r} needs parameter(s) {missing}")
    values = {k: _coerce(spec, k, v) for k, v in bindings.items()}
    for key, value in values.items():
        kind = spec.param_types.get(key)
        if kind in _LABEL_LOOKUPS and isinstance(value, str):
            values[key] = _resolve_label(store, spec, key, kind, value)
    return store.query(spec.text, values)


def _resolve_label(store: GraphStore, spec: QuerySpec, name: str, kind: str, value: str) -> str:
    """The graph's own spelling of label ``value`` (matched ignoring case and outer spaces), or QueryError with suggestions."""
    import difflib

    labels = [str(row[0]) for row in store.query(_LABEL_LOOKUPS[kind]).rows]
    if value in labels:
        return value
    wanted = value.strip().casefold()
    matches = sorted(label for label in labels if label.strip().casefold() == wanted)
    if matches:
        return matches[0]
    what = "category" if kind == "concept" else "brand or manufacturer"
    close = difflib.get_close_matches(value, labels, n=3, cutoff=0.6) or difflib.get_close_matches(wanted, [lb.casefold() for lb in labels], n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else (
        f"; the graph has {len(labels)}: {', '.join(repr(lb) for lb in sorted(labels)[:10])}{' ...' if len(labels) > 10 else ''}" if labels else
        "; the graph has none")
    raise QueryError(f"query {spec.name!r} parameter {name!r}: no {what} labelled {value!r}{hint}")


def _coerce(spec: QuerySpec, name: str, value: Any) -> Any:
    """A text value read as the parameter's declared type; other values pass unchanged."""
    if not isinstance(value, str) or isinstance(value, URIRef):
        return value
    kind = spec.param_types.get(name, "string")
    try:
        if kind == "double":
            return float(value)
        if kind == "integer":
            return int(value)
        if kind == "boolean":
            lowered = value.strip().lower()
            if lowered not in ("true", "false", "1", "0"):
                raise ValueError("expected true, false, 1 or 0")
            return lowered in ("true", "1")
        if kind == "iri":
            return URIRef(value)
        if kind == "datetime":
            return datetime.fromisoformat(value)
    except ValueError as exc:
        raise QueryError(f"query {spec.name!r} parameter {name!r} must be {kind}, got {value!r}: {exc}") from None
    return value
