"""RDF stores behind one interface (embedded Oxigraph by default) and the atomically published graph."""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import os
import re
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import pyoxigraph as ox
from rdflib.term import BNode, Literal, Node, URIRef

from prodkg.kb.nquads import QuadStream, encode_quads
from prodkg.kb.results import QueryResult, from_oxigraph, oxigraph_to_python, to_oxigraph, to_python
from prodkg.kb.sparql_text import inject_values, is_update, normalise_bindings
from prodkg.kb.vocab import PREFIXES
from prodkg.errors import QueryError, StoreError
from prodkg.failpoints import failpoint
from prodkg.registry import Registry

try:  # advisory locks are POSIX-only; elsewhere a second concurrent publisher is not detected
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "RDF_FORMATS",
    "STORES",
    "GraphStore",
    "KnowledgeGraph",
    "OxigraphStore",
    "QueryResult",
    "open_store",
    "rdf_format",
]

STORES: Registry[type[GraphStore]] = Registry("store")

#: short name -> (pyoxigraph format, whether it carries named graphs)
RDF_FORMATS: dict[str, tuple[ox.RdfFormat, bool]] = {
    "nt": (ox.RdfFormat.N_TRIPLES, False),
    "nq": (ox.RdfFormat.N_QUADS, True),
    "ttl": (ox.RdfFormat.TURTLE, False),
    "trig": (ox.RdfFormat.TRIG, True),
    "jsonld": (ox.RdfFormat.JSON_LD, False),
}
_FORMAT_ALIASES = {
    "ntriples": "nt",
    "n-triples": "nt",
    "nquads": "nq",
    "n-quads": "nq",
    "turtle": "ttl",
    "json-ld": "jsonld",
}
_PRETTY = {"ttl", "trig", "jsonld"}

_UNION_TRIPLES = "CONSTRUCT { ?s ?p ?o } WHERE { SELECT DISTINCT ?s ?p ?o WHERE { ?s ?p ?o } }"
_DISTINCT_UNION_TRIPLES = "SELECT DISTINCT ?s ?p ?o WHERE { ?s ?p ?o }"
_COUNT_UNION_TRIPLES = "SELECT (COUNT(*) AS ?n) WHERE { SELECT DISTINCT ?s ?p ?o WHERE { ?s ?p ?o } }"


def rdf_format(fmt: str | None, path: str | os.PathLike[str] | None = None) -> str:
    """The short name of an RDF format (``nt``, ``nq``, ``ttl``, ``trig``, ``jsonld``).

    ``fmt`` may be an alias (``turtle``, ``json-ld``, ...); when None it is taken from the
    file extension of ``path``.
    """
    if fmt is None:
        if path is None:
            raise StoreError("no format given and no path to guess it from")
        fmt = Path(path).suffix.lstrip(".")
    key = fmt.strip().lower()
    key = _FORMAT_ALIASES.get(key, key)
    if key not in RDF_FORMATS:
        valid = ", ".join(sorted(RDF_FORMATS))
        raise StoreError(f"unknown RDF format {fmt!r}; valid formats: {valid}")
    return key


def _key(term: Node) -> str:
    return f"_:{term}" if isinstance(term, BNode) else str(term)


def _ox_key(term: Any) -> str:
    return f"_:{term.value}" if type(term) is ox.BlankNode else term.value


def _supports_substitutions() -> bool:
    signature = getattr(ox.Store.query, "__text_signature__", None) or ""
    return "substitutions" in signature


class GraphStore(ABC):
    """What every graph store offers: bulk add, SPARQL query/update, counts, dumps.

    Queries see the union of all named graphs as their default graph; ``GRAPH ?g { ... }``
    still addresses single graphs. Stores are context managers.
    """

    read_only: bool

    @abstractmethod
    def add_quads(self, quads: Iterable[tuple]) -> int:
        """Add ``(s, p, o, g)`` quads (or ``(s, p, o)`` triples) of rdflib terms; return how many."""

    @abstractmethod
    def query(self, sparql: str, bindings: Mapping[str, Any] | None = None) -> QueryResult:
        """Run a SELECT, ASK, CONSTRUCT or DESCRIBE query; ``bindings`` bind variables to values."""

    @abstractmethod
    def update(self, sparql: str) -> None:
        """Run a SPARQL 1.1 Update."""

    @abstractmethod
    def __len__(self) -> int:
        """Number of quads in all graphs."""

    @abstractmethod
    def graphs(self) -> list[URIRef | BNode]:
        """Names of the non-empty named graphs."""

    @abstractmethod
    def quads(self, graph: URIRef | BNode | None = None) -> Iterator[tuple[Node, URIRef, Node, Node | None]]:
        """All quads as rdflib terms (graph None for the default graph), or those of one graph."""

    def plain_triples(self, graph: URIRef | BNode | None = None) -> Iterator[tuple[str, str, Any, bool]]:
        """Distinct triples as plain Python values, for views that need no RDF terms.

        Yields ``(subject, predicate, object, object_is_literal)``: IRIs as str, blank nodes
        as ``"_:id"``, literal objects as Python values (see :func:`kb.results.to_python`).
        All graphs merged, or only ``graph``.
        """
        seen: set[tuple[Node, Node, Node]] = set()
        for s, p, o, _ in self.quads(graph):
            if (s, p, o) in seen:
                continue
            seen.add((s, p, o))
            if isinstance(o, Literal):
                yield _key(s), str(p), to_python(o), True
            else:
                yield _key(s), str(p), _key(o), False

    @abstractmethod
    def dump(self, path: str | os.PathLike[str], fmt: str | None = None, *, graph: URIRef | None = None) -> int:
        """Write the store (or one graph) to a file; return the number of statements written."""

    @abstractmethod
    def close(self) -> None:
        """Release the store; further calls raise StoreError."""

    def __enter__(self) -> GraphStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


#: Bytes of N-Quads per call of the on-disk bulk loader. One call over a whole spool buffered far more than the
#: text itself: 3.0 M quads (686 MB of N-Quads, a 200,000-product run) peaked at 1.68 GiB in one call, 0.24 GiB in
#: pieces of 32 MiB, no slower (18.9-23.0 s against 20.3-21.0 s; the named queries as fast), for twice the RocksDB
#: files (68 against 33 there, about 340 at a million products).
BULK_PIECE = 32 << 20


def _pieces(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """``chunks`` (each ending at a line end) joined into pieces of at least ``size`` bytes, the last one shorter."""
    held: list[bytes] = []
    n = 0
    for chunk in chunks:
        held.append(chunk)
        n += len(chunk)
        if n >= size:
            yield held[0] if len(held) == 1 else b"".join(held)
            held, n = [], 0
    if n:
        yield held[0] if len(held) == 1 else b"".join(held)


@STORES.register("oxigraph", aliases=("pyoxigraph",))
class OxigraphStore(GraphStore):
    """An embedded pyoxigraph (RocksDB) store on disk, or in memory when ``path`` is None.

    Args:
        path: directory of the store (created when missing, unless ``read_only``); None keeps
            the store in memory.
        read_only: open an existing on-disk store for reading only; writes raise. Several
            read-only openers may share a directory that no process is writing.

    Raises:
        StoreError: the store cannot be opened (missing for read-only, locked by a writer, ...).
    """

    #: Bind values with pyoxigraph's SPARQL substitutions when the installed version has them,
    #: else with a VALUES clause (the instance attribute may be switched off to test that path).
    use_substitutions: bool = _supports_substitutions()

    def __init__(self, path: str | os.PathLike[str] | None = None, read_only: bool = False) -> None:
        self.path = Path(path) if path is not None else None
        self.read_only = bool(read_only)
        try:
            if self.path is None:
                if self.read_only:
                    raise StoreError("an in-memory store cannot be read-only: give the path of an existing store")
                self._store: ox.Store | None = ox.Store()
            elif self.read_only:
                if not self.path.is_dir():
                    raise StoreError(f"no store to open read-only at {self.path}")
                self._store = ox.Store.read_only(str(self.path))
            else:
                self._store = ox.Store(str(self.path))
        except OSError as exc:
            raise StoreError(f"cannot open Oxigraph store at {self.path}: {exc}") from exc

    def __repr__(self) -> str:
        where = str(self.path) if self.path is not None else "memory"
        state = "closed" if self._store is None else ("read-only" if self.read_only else "read-write")
        return f"OxigraphStore({where!r}, {state})"

    def _open(self) -> ox.Store:
        if self._store is None:
            raise StoreError(f"{self!r} is closed")
        return self._store

    def _writable(self, what: str) -> ox.Store:
        store = self._open()
        if self.read_only:
            raise StoreError(f"{what} refused: {self!r} is read-only")
        return store

    def add_quads(self, quads: Iterable[tuple], *, atomic: bool = False, nquads: Iterable[bytes] = ()) -> int:
        """Add quads through pyoxigraph's bulk loader, streamed as N-Quads.

        The bulk loader is fast but not transactional: if ``quads`` raises half way (the
        exception propagates unchanged), part of them may already be in the store. Pass
        ``atomic=True`` for small additions to a live store: all or nothing, held in memory.
        An in-memory store always loads transactionally: there its transactional loader is
        the faster one (1.44 M quads: 2.9 s against 3.5 s for the bulk loader on the same lenient
        N-Quads, section ``graph`` of docs/BENCHMARKS.md; the bulk loader's strength is writing
        RocksDB files: 15 s on disk against 76 s).

        ``nquads`` are chunks of N-Quads text already serialised (:mod:`prodkg.kb.frame_nquads` builds
        the catalog's and the predictions' that way), read by the same loader after ``quads``, leniently:
        their IRIs are minted and their literals escaped by that module (whose tests parse them strictly
        with rdflib), so Oxigraph does not validate each IRI again (1.44 M quads: about a quarter less
        time). With ``atomic=True`` both go through one strict load.

        Returns:
            the number of statements given in ``quads`` (duplicates included; ``nquads`` not counted).
        """
        store = self._writable("adding quads")
        counter = [0]
        stream = QuadStream(itertools.chain(encode_quads(quads, counter), nquads) if atomic else encode_quads(quads, counter))
        try:
            if atomic:
                store.load(input=stream.read(), format=ox.RdfFormat.N_QUADS)
            else:
                loader = store.load if self.path is None else store.bulk_load
                loader(input=io.BufferedReader(stream, 1 << 20), format=ox.RdfFormat.N_QUADS)
                if self.path is None:  # in memory: one transaction per chunk, read in place
                    for chunk in nquads:
                        store.load(input=chunk, format=ox.RdfFormat.N_QUADS, lenient=True)
                else:  # on disk: a bulk load per piece of BULK_PIECE bytes (see there)
                    for piece in _pieces(nquads, BULK_PIECE):
                        store.bulk_load(input=piece, format=ox.RdfFormat.N_QUADS, lenient=True)
        except BaseException as exc:
            if stream.error is not None:
                # the quads themselves failed (bad term, caller's generator): report that, unwrapped
                raise stream.error.with_traceback(stream.error.__traceback__) from None
            if isinstance(exc, SyntaxError):
                raise StoreError(f"the store rejected a serialised quad: {exc}") from exc
            if isinstance(exc, OSError):
                raise StoreError(f"writing to {self!r} failed: {exc}") from exc
            raise
        return counter[0]

    def load_file(self, path: str | os.PathLike[str], fmt: str | None = None) -> None:
        """Bulk-load an RDF file (``nq``, ``nt``, ``ttl``, ``trig``, ``jsonld``; default: from its extension).

        Parsed and written by Oxigraph without passing through Python: on disk by its bulk loader,
        which is not transactional (a syntax error half way leaves the statements before it in the
        store); in memory by its transactional loader, faster there (see :meth:`add_quads`).

        Raises:
            StoreError: a missing or unreadable file, a syntax error (with its position).
        """
        store = self._writable("loading a file")
        key = rdf_format(fmt, path)
        try:
            loader = store.load if self.path is None else store.bulk_load
            loader(path=os.fspath(path), format=RDF_FORMATS[key][0])
        except SyntaxError as exc:
            raise StoreError(f"{path} is not valid {key}: {exc}") from None
        except OSError as exc:
            raise StoreError(f"cannot load {path} into {self!r}: {exc}") from exc

    def query(self, sparql: str, bindings: Mapping[str, Any] | None = None) -> QueryResult:
        """Run a read-only query over the union of all graphs.

        ``bindings`` maps variable names (``"threshold"`` or ``"?threshold"``) to values: str
        (an xsd:string literal; pass ``rdflib.URIRef`` for an IRI), int, float, bool, Decimal,
        aware datetime or an rdflib/pyoxigraph term. Values never enter the query text raw:
        they are SPARQL substitutions (SEP-0007), so a bound variable must appear in the
        SELECT projection; on pyoxigraph versions without substitutions they become a VALUES
        clause of escaped terms. The prefixes ``schema``, ``skos``, ``prov``, ``pkg``, ``rdf``,
        ``rdfs`` and ``xsd`` are predeclared.

        Raises:
            QueryError: an update, a syntax error, a bad binding.
        """
        store = self._open()
        if not isinstance(sparql, str):
            raise QueryError(f"expected SPARQL text, got {type(sparql).__name__}")
        if is_update(sparql):
            raise QueryError("SPARQL UPDATE refused by query(); use update() on a writable store")
        terms = normalise_bindings(bindings)
        kwargs: dict[str, Any] = {"use_default_graph_as_union": True, "prefixes": PREFIXES}
        text = sparql
        if terms and self.use_substitutions:
            kwargs["substitutions"] = {ox.Variable(name): to_oxigraph(term) for name, term in terms.items()}
        elif terms:
            text = inject_values(sparql, terms)
        try:
            result = store.query(text, **kwargs)
            return QueryResult.from_oxigraph(result)
        except SyntaxError as exc:
            raise QueryError(f"SPARQL syntax error: {exc}") from None
        except RuntimeError as exc:
            if "projection" in str(exc):
                raise QueryError(
                    f"{exc}: a bound variable must be projected by SELECT (SPARQL substitution, SEP-0007)"
                ) from None
            raise QueryError(f"query failed: {exc}") from exc
        except OSError as exc:
            raise QueryError(f"query failed reading {self!r}: {exc}") from exc

    def update(self, sparql: str) -> None:
        """Run a SPARQL 1.1 Update (transactional: all of it or nothing)."""
        store = self._writable("SPARQL update")
        if not isinstance(sparql, str):
            raise QueryError(f"expected SPARQL text, got {type(sparql).__name__}")
        try:
            store.update(sparql, prefixes=PREFIXES)
        except SyntaxError as exc:
            raise QueryError(f"SPARQL update syntax error: {exc}") from None
        except OSError as exc:
            raise StoreError(f"update failed on {self!r}: {exc}") from exc

    def __len__(self) -> int:
        return len(self._open())

    def graphs(self) -> list[URIRef | BNode]:
        names = [from_oxigraph(g) for g in self._open().named_graphs()]
        return sorted(n for n in names if n is not None)  # type: ignore[type-var]

    def quads(self, graph: URIRef | BNode | None = None) -> Iterator[tuple[Node, URIRef, Node, Node | None]]:
        pattern = to_oxigraph(graph) if graph is not None else None
        for q in self._open().quads_for_pattern(None, None, None, pattern):
            yield (
                from_oxigraph(q.subject),
                from_oxigraph(q.predicate),
                from_oxigraph(q.object),
                from_oxigraph(q.graph_name),
            )  # type: ignore[misc]

    def plain_triples(self, graph: URIRef | BNode | None = None) -> Iterator[tuple[str, str, Any, bool]]:
        store = self._open()
        if graph is None:
            # the engine merges the graphs and drops repeats, without a Python-side set
            rows: Iterable[Any] = store.query(_DISTINCT_UNION_TRIPLES, use_default_graph_as_union=True)
        else:
            quads = store.quads_for_pattern(None, None, None, to_oxigraph(graph))
            rows = ((q.subject, q.predicate, q.object) for q in quads)
        for s, p, o in rows:
            if type(o) is ox.Literal:
                yield _ox_key(s), p.value, oxigraph_to_python(o), True
            else:
                yield _ox_key(s), p.value, _ox_key(o), False

    def dump(self, path: str | os.PathLike[str], fmt: str | None = None, *, graph: URIRef | None = None) -> int:
        """Write the store to ``path`` (replaced atomically) and return the statements written.

        ``nq`` and ``trig`` keep named graphs. ``nt``, ``ttl`` and ``jsonld`` hold triples: the
        distinct triples of the union of all graphs, or those of ``graph`` when given.
        """
        store = self._open()
        key = rdf_format(fmt, path)
        rdf_fmt, dataset = RDF_FORMATS[key]
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        prefixes = {"prefixes": PREFIXES} if key in _PRETTY else {}
        try:
            if graph is not None:
                g = to_oxigraph(graph)
                store.dump(str(tmp), rdf_fmt, from_graph=g, **prefixes)
                count = sum(1 for _ in store.quads_for_pattern(None, None, None, g))
            elif dataset:
                store.dump(str(tmp), rdf_fmt, **prefixes)
                count = len(store)
            elif key == "nt":
                store.query(_UNION_TRIPLES, use_default_graph_as_union=True).serialize(str(tmp), rdf_fmt)
                count = int(next(iter(store.query(_COUNT_UNION_TRIPLES, use_default_graph_as_union=True)))[0].value)
            else:
                # serialisers that group by subject and use prefixes need a graph, not a stream
                union = ox.Store()
                triples = store.query(_UNION_TRIPLES, use_default_graph_as_union=True)
                union.bulk_extend(ox.Quad(t.subject, t.predicate, t.object) for t in triples)
                union.dump(str(tmp), rdf_fmt, from_graph=ox.DefaultGraph(), **prefixes)
                count = len(union)
            os.replace(tmp, target)
        except (OSError, ValueError) as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise StoreError(f"dumping {self!r} to {target} as {key} failed: {exc}") from exc
        return count

    def flush(self) -> None:
        """Make sure every write is on disk."""
        store = self._open()
        if self.path is not None and not self.read_only:
            try:
                store.flush()
            except OSError as exc:
                raise StoreError(f"flushing {self!r} failed: {exc}") from exc

    def close(self) -> None:
        if self._store is None:
            return
        try:
            self.flush()
        finally:
            # dropping the last reference releases RocksDB's lock on the directory
            self._store = None


def open_store(
    path: str | os.PathLike[str] | None = None,
    *,
    backend: str = "oxigraph",
    read_only: bool = False,
    **options: Any,
) -> GraphStore:
    """Open a store of the registered ``backend`` (see :data:`STORES`).

    A ``path`` that is a :class:`KnowledgeGraph` root opens its currently published store.
    """
    if path is not None and KnowledgeGraph.is_root(path):
        return KnowledgeGraph(path).open(read_only=read_only)
    factory = STORES.get(backend)
    return factory(path, read_only=read_only, **options)


_SAFE_NAME = re.compile(r"^[A-Za-z0-9_~%\-]+$")


def _store_dir_name(run_id: str) -> str:
    if not isinstance(run_id, str) or run_id == "":
        raise StoreError(f"run_id must be a non-empty str, got {run_id!r}")
    # percent-encoding with '.' encoded too keeps any run id a single safe path segment,
    # distinct from our '.partial' / '.N' suffixes
    name = quote(run_id, safe="").replace(".", "%2E")
    if len(name) > 120:
        digest = hashlib.sha256(run_id.encode("utf-8")).hexdigest()[:16]
        name = f"{name[:100]}-{digest}"
    return name


class KnowledgeGraph:
    """The persistent graph of one output directory, replaced atomically run after run.

    Layout::

        root/CURRENT              one line: the path (relative to root) of the live store
        root/stores/<run>/        a complete Oxigraph store per published run
        root/stores/<run>.partial a store being built (removed when its publish fails)

    :meth:`publish` builds a new store next to the live one and only then swaps ``CURRENT``
    (``os.replace``), so readers always find a complete graph. The previous store is kept one
    generation (a reader that opened it before the swap keeps working); older ones are
    deleted.
    """

    CURRENT = "CURRENT"

    def __init__(self, root_dir: str | os.PathLike[str]) -> None:
        self.root = Path(root_dir)
        self.stores_dir = self.root / "stores"

    def __repr__(self) -> str:
        return f"KnowledgeGraph({str(self.root)!r})"

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".publish.lock", "a+") as handle:
            if fcntl is not None:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    raise StoreError(f"another process is publishing to {self.root}") from None
            yield

    @classmethod
    def is_root(cls, path: str | os.PathLike[str]) -> bool:
        """True when ``path`` is a KnowledgeGraph root (not a store: RocksDB keeps a CURRENT file too)."""
        root = Path(path)
        pointer = root / cls.CURRENT
        if not (root / "stores").is_dir() or not pointer.is_file():
            return False
        try:
            return pointer.read_text(encoding="utf-8").startswith("stores/")
        except (OSError, UnicodeDecodeError):
            return False

    def _read_current(self) -> Path | None:
        pointer = self.root / self.CURRENT
        try:
            text = pointer.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read {pointer}: {exc}") from exc
        parts = text.split("/")
        if len(parts) != 2 or parts[0] != "stores" or not _SAFE_NAME.match(parts[1].replace(".", "_")):
            raise StoreError(f"{pointer} holds {text!r}; expected 'stores/<name>'")
        return self.root / parts[0] / parts[1]

    def current_path(self) -> Path | None:
        """The live store's directory, or None when nothing has been published."""
        current = self._read_current()
        if current is not None and not current.is_dir():
            raise StoreError(f"{self.root / self.CURRENT} points at {current}, which does not exist")
        return current

    def open(self, read_only: bool = True) -> OxigraphStore:
        """Open the live store (read-only unless asked otherwise)."""
        current = self.current_path()
        if current is None:
            raise StoreError(f"nothing has been published in {self.root} yet")
        return OxigraphStore(current, read_only=read_only)

    def publish(self, quads: Iterable[tuple], run_id: str, *, nquads: Iterable[bytes] = ()) -> Path:
        """Build a new store from ``quads`` (and ``nquads``, N-Quads chunks), check it, and make it the live one.

        Returns:
            the directory of the new live store.

        Raises:
            StoreError: the store is empty or cannot be written, or another publish is running.
            Any exception raised by ``quads`` propagates unchanged. In every failure the
            partial store is removed and ``CURRENT`` still names the previous graph.
        """
        return self._publish(quads, run_id, extend_live=False, nquads=nquads)

    def publish_extension(self, quads: Iterable[tuple], run_id: str) -> Path:
        """Publish the live graph plus ``quads`` (a few, e.g. one run's provenance) as a new store.

        For a re-run whose content is unchanged: the new store starts as a checkpoint of the
        live one (hard links, no copy, no re-load) and gets ``quads`` in one transaction; it
        is then checked and swapped in exactly as :meth:`publish` does, so the live store is
        never written to and a failure leaves it live.

        Raises:
            StoreError: nothing is published yet, or what :meth:`publish` raises.
        """
        return self._publish(quads, run_id, extend_live=True)

    def publish_edit(self, edit: Callable[[OxigraphStore], None], run_id: str) -> Path:
        """Publish the live graph as changed by ``edit`` (called with the new store, writable) as a new store.

        Like :meth:`publish_extension` (a checkpoint of the live store, checked and swapped in; the live
        store is never written to), for small edits that also remove statements, e.g. the curation graph
        rewritten after a reviewer's decision.
        """
        return self._publish((), run_id, extend_live=True, edit=edit)

    def _publish(self, quads: Iterable[tuple], run_id: str, *, extend_live: bool, edit: Callable[[OxigraphStore], None] | None = None,
                 nquads: Iterable[bytes] = ()) -> Path:
        name = _store_dir_name(run_id)
        with self._lock():
            try:
                self.stores_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create {self.stores_dir}: {exc}") from exc
            final = self.stores_dir / name
            generation = 0
            while final.exists():
                generation += 1
                final = self.stores_dir / f"{name}.{generation}"
            partial = self.stores_dir / f"{final.name}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            try:
                previous = self._read_current()
            except StoreError:
                if extend_live:
                    raise
                previous = None  # a broken pointer is what this publish repairs
            base = None
            if extend_live:
                if previous is None or not previous.is_dir():
                    raise StoreError(f"nothing published in {self.root} to extend")
                base = previous
            try:
                if base is not None:
                    # a RocksDB checkpoint: hard links to the live store's immutable files, so only
                    # what this publish adds is written, and the live store is never opened for writing
                    with OxigraphStore(base, read_only=True) as live:
                        try:
                            live._open().backup(str(partial))
                        except OSError as exc:
                            raise StoreError(f"cannot checkpoint the live store {base} into {partial}: {exc}") from exc
                    failpoint("graph-midload")
                    with OxigraphStore(partial) as store:
                        if edit is not None:
                            edit(store)
                        store.add_quads(quads, atomic=True, nquads=nquads)
                else:
                    with OxigraphStore(partial) as store:
                        store.add_quads(_failpoint_midway(quads), nquads=nquads)
                with OxigraphStore(partial, read_only=True) as check:
                    # the store opens and answers; ASK rather than len(), which reads every quad (seconds at 10 M)
                    empty = not check.query("ASK { ?s ?p ?o }").boolean
                if empty:
                    raise StoreError(f"run {run_id!r} produced no quads; the previous graph stays live")
                _rename(partial, final)
            except BaseException:
                shutil.rmtree(partial, ignore_errors=True)
                raise
            failpoint("graph-before-swap")
            try:
                self._point_current_at(final)
            except BaseException:
                shutil.rmtree(final, ignore_errors=True)
                raise
            self._prune(keep={final.name} | ({previous.name} if previous is not None else set()))
        return final

    def _point_current_at(self, store_dir: Path) -> None:
        pointer = self.root / self.CURRENT
        tmp = self.root / f".{self.CURRENT}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as handle:
                handle.write(f"stores/{store_dir.name}\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, pointer)
            _fsync_dir(self.root)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise StoreError(f"cannot update {pointer}: {exc}") from exc

    def _prune(self, keep: set[str]) -> None:
        for entry in self.stores_dir.iterdir():
            if entry.name not in keep:
                shutil.rmtree(entry, ignore_errors=True)


def _failpoint_midway(quads: Iterable[tuple]) -> Iterator[tuple]:
    """Pass ``quads`` through, hitting the "graph-midload" failpoint after about half of them."""
    items = quads if isinstance(quads, (list, tuple)) else list(quads)
    half = len(items) // 2
    for i, quad in enumerate(items):
        if i == half:
            failpoint("graph-midload")
        yield quad


def _rename(src: Path, dst: Path) -> None:
    try:
        os.rename(src, dst)
    except OSError as exc:
        raise StoreError(f"cannot move {src} to {dst}: {exc}") from exc


def _fsync_dir(path: Path) -> None:
    # makes the rename durable on POSIX; directories cannot be opened this way everywhere
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
