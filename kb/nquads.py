"""N-Quads serialisation of rdflib terms, used for bulk loading and for writing terms into SPARQL safely."""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Iterator

from rdflib.graph import DATASET_DEFAULT_GRAPH_ID, Graph
from rdflib.term import BNode, Literal, Node, URIRef

from prodkg.kb.vocab import XSD
from prodkg.errors import StoreError

__all__ = ["QuadStream", "encode_quads", "term_to_nt"]

_BAD_IRI = re.compile(r'[\x00-\x20<>"{}|^`\\]')
_ABSOLUTE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
_LANG = re.compile(r"^[A-Za-z]+(?:-[A-Za-z0-9]+)*$")
_BNODE_LABEL = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]*$")
# Only '"', '\\', LF and CR must be escaped in N-Triples; the other C0 controls and DEL are
# escaped too so that a dump stays readable and line-oriented tools do not trip on them.
_ESCAPES = {i: f"\\u{i:04X}" for i in (*range(0x20), 0x7F)}
_ESCAPES.update({ord('"'): '\\"', ord("\\"): "\\\\", ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})
_XSD_STRING = str(XSD.string)
_NEEDS_ESCAPE = re.compile(r'[\x00-\x1f\x7f"\\]')


def _iri(value: str) -> str:
    if _BAD_IRI.search(value) or not _ABSOLUTE.match(value):
        raise StoreError(f"not a valid absolute IRI (no spaces, <>\"{{}}|^`\\ or controls allowed): {value!r}")
    return f"<{value}>"


def term_to_nt(term: Node) -> str:
    """The N-Triples form of an rdflib IRI, blank node or literal.

    Raises:
        StoreError: an IRI that N-Triples cannot carry, a bad language tag, another term type.
    """
    if isinstance(term, URIRef):
        return _iri(str(term))
    if isinstance(term, Literal):
        text = '"' + str(term).translate(_ESCAPES) + '"'
        if term.language:
            if not _LANG.match(term.language):
                raise StoreError(f"bad language tag {term.language!r} on literal {str(term)!r}")
            return f"{text}@{term.language}"
        if term.datatype is not None and str(term.datatype) != _XSD_STRING:
            return f"{text}^^{_iri(str(term.datatype))}"
        return text
    if isinstance(term, BNode):
        label = str(term)
        if not _BNODE_LABEL.match(label):
            # keep distinct labels distinct while making them legal
            label = "x" + label.encode("utf-8").hex()
        return f"_:{label}"
    raise StoreError(f"expected an rdflib URIRef, BNode or Literal, got {type(term).__name__} {term!r}")


def _graph_name(g: object) -> str | None:
    if g is None or g == DATASET_DEFAULT_GRAPH_ID:
        return None
    if isinstance(g, Graph):
        return _graph_name(g.identifier)
    if isinstance(g, (URIRef, BNode)):
        return term_to_nt(g)
    raise StoreError(f"graph name must be a URIRef, BNode or None, got {type(g).__name__} {g!r}")


def encode_quads(quads: Iterable[tuple], counter: list[int] | None = None, batch: int = 4096) -> Iterator[bytes]:
    """Yield N-Quads as UTF-8 byte chunks of about ``batch`` lines.

    Accepts ``(s, p, o)`` triples (default graph) and ``(s, p, o, g)`` quads of rdflib terms,
    ``g`` being an IRI, blank node, rdflib Graph or None. ``counter[0]`` is increased by the
    number of statements encoded, so a caller streaming the chunks knows how many went through.
    """
    # This loop runs once per statement of a catalog-sized graph, so it avoids what is slow in
    # Python here: rdflib terms hash and compare in Python code, so the caches of IRI and literal
    # text are keyed by plain str values; exact type checks come before the isinstance fallback;
    # most literal values need no escaping, which one regex search tells.
    iris: dict[str, str] = {}  # IRI -> <IRI>, bounded (subjects of a large catalog are many)
    plain: dict[str, str] = {}  # xsd:string literal value -> its N-Triples text, bounded
    typed: dict[tuple[str, str], str] = {}  # (lexical form, datatype IRI) -> text, bounded
    graphs: dict[object, str | None] = {}
    needs_escape = _NEEDS_ESCAPE.search
    uri, lit = URIRef, Literal

    def iri_text(term: Node) -> str:
        value = str(term)
        text = iris.get(value)
        if text is None:
            text = _iri(value)
            if len(iris) >= 200_000:
                iris.clear()
            iris[value] = text
        return text

    def literal_text(term: Literal) -> str:
        if term.language is not None:
            return term_to_nt(term)
        value = str(term)
        datatype = term.datatype
        if datatype is None:
            text = plain.get(value)
            if text is None:
                text = '"' + (value.translate(_ESCAPES) if needs_escape(value) else value) + '"'
                if len(plain) >= 200_000:
                    plain.clear()
                plain[value] = text
            return text
        key = (value, str(datatype))
        text = typed.get(key)
        if text is None:
            text = term_to_nt(term)
            if len(typed) >= 200_000:
                typed.clear()
            typed[key] = text
        return text

    lines: list[str] = []
    done = 0
    for n, quad in enumerate(quads):
        if len(quad) == 4:
            s, p, o, g = quad
        elif len(quad) == 3:
            (s, p, o), g = quad, None
        else:
            raise StoreError(f"statement {n}: expected (s, p, o) or (s, p, o, g), got {len(quad)} items: {quad!r}")
        if type(s) is uri:
            subject = iri_text(s)
        elif isinstance(s, Literal) or not isinstance(s, (URIRef, BNode)):
            raise StoreError(f"statement {n}: subject must be an IRI or blank node and predicate an IRI, got {quad!r}")
        else:
            subject = iri_text(s) if isinstance(s, URIRef) else term_to_nt(s)
        if type(p) is uri or isinstance(p, URIRef):
            predicate = iri_text(p)
        else:
            raise StoreError(f"statement {n}: subject must be an IRI or blank node and predicate an IRI, got {quad!r}")
        to = type(o)
        if to is lit:
            obj = literal_text(o)
        elif to is uri:
            obj = iri_text(o)
        elif isinstance(o, Literal):
            obj = literal_text(o)
        elif isinstance(o, URIRef):
            obj = iri_text(o)
        else:
            obj = term_to_nt(o)  # a blank node, or the error for anything else
        try:
            graph = graphs[g]
        except KeyError:
            graph = graphs[g] = _graph_name(g)
        except TypeError:  # an unhashable graph object
            graph = _graph_name(g)
        lines.append(f"{subject} {predicate} {obj} .\n" if graph is None else f"{subject} {predicate} {obj} {graph} .\n")
        if len(lines) >= batch:
            done += len(lines)
            if counter is not None:
                counter[0] = done
            yield "".join(lines).encode("utf-8")
            lines = []
    if lines:
        done += len(lines)
        if counter is not None:
            counter[0] = done
        yield "".join(lines).encode("utf-8")


class QuadStream(io.RawIOBase):
    """A read-only binary stream over byte chunks, so a bulk loader can pull quads lazily.

    An exception raised by the chunk iterator propagates out of ``read`` unchanged and is kept
    in ``error``, so a caller can tell it from a failure of the reader's consumer.
    """

    def __init__(self, chunks: Iterable[bytes]) -> None:
        super().__init__()
        self._chunks = iter(chunks)
        self._buffer = b""
        self._offset = 0
        self.error: BaseException | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        while self._offset >= len(self._buffer):
            try:
                self._buffer = next(self._chunks)
            except StopIteration:
                return 0
            except BaseException as exc:
                self.error = exc
                raise
            self._offset = 0
        n = min(len(buffer), len(self._buffer) - self._offset)
        buffer[:n] = self._buffer[self._offset : self._offset + n]
        self._offset += n
        return n
