"""IRI minting: the one place where prodkg turns identifiers (product ids, labels, run ids) into IRIs."""

from __future__ import annotations

import re
from functools import lru_cache
from urllib.parse import quote, unquote

from rdflib.term import URIRef

__all__ = ["DEFAULT_BASE", "KINDS", "mint", "unmint"]

DEFAULT_BASE = "https://example.org/prodkg/"

#: kind -> (the parts it takes, in order; how many parts are optional at the end).
KINDS: dict[str, tuple[tuple[str, ...], int]] = {
    "product": (("catalog", "product_id"), 0),
    "concept": (("scheme", "label"), 0),
    "scheme": (("scheme",), 0),
    "run": (("run_id",), 0),
    "model": (("model_id",), 0),
    "prediction": (("run_id", "product_id", "task", "variant"), 1),  # variant: "level-<n>", "unknown" (back-off, unknown products)
    "attribute": (("name",), 0),
    "brand": (("name",), 0),
    "organization": (("name",), 0),
    "country": (("name",), 0),
    # one record per product and run saying whether the run added, changed or removed it; the kind is
    # part of the name, so a product removed from one catalog and added to another never share a record
    "change": (("run_id", "change_type", "catalog", "product_id"), 0),
    # the trailing run_id is present for a value predicted by a run, absent for one asserted
    # by the catalog, so that a run's prediction never merges into the catalog's node
    "property-value": (("catalog", "product_id", "attribute", "run_id"), 1),
    # graph names take one or more parts, e.g. ("catalog", <catalog>) or ("run", <run_id>)
    "graph": (("name",), 0),
}
_VARIADIC = {"graph"}

# Characters RFC 3987 forbids in an IRI, plus the ones N-Triples cannot carry in an IRIREF.
_BAD_IRI_CHARS = re.compile(r'[\x00-\x20<>"{}|^`\\]')
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
_DOTS_ONLY = re.compile(r"^\.+$")


@lru_cache(maxsize=64)
def _check_base(base: str) -> str:
    if not isinstance(base, str):
        raise TypeError(f"IRI base must be a str, got {type(base).__name__}")
    if not _SCHEME.match(base) or _BAD_IRI_CHARS.search(base) or not base.endswith(("/", "#", ":")):
        raise ValueError(
            f"IRI base must be an absolute IRI ending in '/', '#' or ':' without spaces or <>\"{{}}|^`\\, "
            f"got {base!r}"
        )
    return base


def _encode(kind: str, index: int, part: object) -> str:
    if not isinstance(part, str):
        raise TypeError(f"mint({kind!r}): part {index} must be a str, got {type(part).__name__} {part!r}")
    if part == "":
        raise ValueError(f"mint({kind!r}): part {index} is empty; an empty identifier cannot name anything")
    try:
        encoded = quote(part, safe="", encoding="utf-8", errors="strict")
    except UnicodeEncodeError as exc:
        raise ValueError(f"mint({kind!r}): part {index} {part!r} is not encodable as UTF-8: {exc}") from None
    # "." and ".." are path segments that URI normalisation would collapse; encoding them keeps
    # the IRI stable through any HTTP client or resolver (unquote still gives them back).
    if _DOTS_ONLY.match(encoded):
        encoded = "%2E" * len(encoded)
    return encoded


def mint(kind: str, *parts: str, base: str = DEFAULT_BASE) -> URIRef:
    """Return the IRI of a thing of ``kind`` identified by ``parts``.

    Each part is percent-encoded over UTF-8 with no safe characters, so any non-empty string
    (spaces, slashes, quotes, ``>``, ``#``, newlines, any script) gives a valid IRI, distinct
    strings give distinct IRIs, and :func:`unmint` gives the parts back.

    Args:
        kind: one of :data:`KINDS` (``"product"``, ``"concept"``, ``"scheme"``, ``"run"``,
            ``"model"``, ``"prediction"``, ``"graph"``, ``"attribute"``, ``"brand"``,
            ``"property-value"``).
        parts: the identifying strings, in the order :data:`KINDS` lists them.
        base: absolute IRI ending in ``/``, ``#`` or ``:`` that every minted IRI starts with.

    Raises:
        ValueError: unknown kind, wrong number of parts, an empty part or a bad base.
        TypeError: a part that is not a str (for example None or NaN from a DataFrame).
    """
    base = _check_base(base)
    try:
        names, optional = KINDS[kind]
    except (KeyError, TypeError):
        raise ValueError(f"unknown IRI kind {kind!r}; valid kinds: {', '.join(sorted(KINDS))}") from None
    if kind in _VARIADIC:
        if not parts:
            raise ValueError(f"mint({kind!r}) needs at least one part, got none")
    elif not len(names) - optional <= len(parts) <= len(names):
        expected = ", ".join(names) + (f" (last {optional} optional)" if optional else "")
        raise ValueError(f"mint({kind!r}) takes parts ({expected}), got {len(parts)}: {parts!r}")
    encoded = "/".join(_encode(kind, i, part) for i, part in enumerate(parts))
    return URIRef(f"{base}{kind}/{encoded}")


def unmint(iri: str, base: str = DEFAULT_BASE) -> tuple[str, tuple[str, ...]]:
    """Return ``(kind, parts)`` of an IRI made by :func:`mint` with the same ``base``.

    Raises:
        ValueError: the IRI was not minted under ``base`` or does not have a known shape.
    """
    base = _check_base(base)
    text = str(iri)
    if not text.startswith(base):
        raise ValueError(f"IRI {text!r} does not start with base {base!r}")
    kind, sep, rest = text[len(base) :].partition("/")
    if kind not in KINDS or not sep or not rest:
        raise ValueError(f"IRI {text!r} is not a minted IRI (kind {kind!r}, valid: {', '.join(sorted(KINDS))})")
    parts = tuple(unquote(p, encoding="utf-8", errors="strict") for p in rest.split("/"))
    names, optional = KINDS[kind]
    if kind not in _VARIADIC and not len(names) - optional <= len(parts) <= len(names):
        raise ValueError(f"IRI {text!r} has {len(parts)} parts; kind {kind!r} takes {len(names)}")
    if any(p == "" for p in parts):
        raise ValueError(f"IRI {text!r} has an empty part")
    return kind, parts
