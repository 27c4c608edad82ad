"""How prodkg's graph is held on a SPARQL 1.1 server: publications, their registry, and the swap.

A *publication* is one complete load: each of its named graphs is stored on the server under a
name of its own (``<graph>/publication/<token>``), so a new publication loads beside the live
one. A small *registry graph* (default ``urn:prodkg:registry``) records, in PROV-O terms, every
publication (``prov:Collection``, ``pkg:runId``), the server graphs it holds
(``prov:hadMember``), the graph each of them stands for (``prov:specializationOf``), and, on the
live one only, when it was completed (``prov:generatedAtTime``). One SPARQL update moves that
mark from the previous publication to the new one: that is the swap.

:class:`PublicationRegistry` reads and writes the registry graph; it is a base of
:class:`kb.sparql_client.SparqlServerStore`, which supplies the requests
(``_select``, ``_update``) and the loading (``_load``, ``_count``, ``_writable``).
:class:`RemoteGraph` publishes a run's quads with the contract of
:meth:`kb.store.KnowledgeGraph.publish`.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from rdflib.term import Literal, Node, URIRef

from prodkg.kb.nquads import term_to_nt
from prodkg.kb.results import to_python
from prodkg.kb.triples import datetime_literal
from prodkg.kb.vocab import PKG, PROV, RDF
from prodkg.errors import StoreError

if TYPE_CHECKING:  # the store is built on this module's registry
    from prodkg.kb.sparql_client import SparqlServerStore

__all__ = ["DEFAULT_REGISTRY_GRAPH", "Publication", "PublicationRegistry", "RemoteGraph"]

log = logging.getLogger(__name__)

#: The graph in which the server records prodkg's publications.
DEFAULT_REGISTRY_GRAPH = "urn:prodkg:registry"


@dataclass(frozen=True)
class Publication:
    """One load of the graph on a server, as its registry records it.

    Attributes:
        iri: the publication's name in the registry graph.
        run_id: the run that published it (None for graphs added with ``add_quads``).
        completed: when it became live; None for a load in progress or one that failed.
        graphs: server graph name -> the graph name prodkg gave it.
    """

    iri: URIRef
    run_id: str | None = None
    completed: datetime | None = None
    graphs: Mapping[URIRef, URIRef] = field(default_factory=dict)


def _slug(run_id: str) -> str:
    if not isinstance(run_id, str) or not run_id:
        raise StoreError(f"run_id must be a non-empty str, got {run_id!r}")
    text = quote(run_id, safe="")
    return text if len(text) <= 80 else text[:80]


class PublicationRegistry:
    """The registry graph of a SPARQL server store: which publications exist and which one is live.

    A base class of :class:`kb.sparql_client.SparqlServerStore`, which provides what it uses:
    ``registry_graph`` (a URIRef), ``_select(sparql, dataset, what)`` (rows as
    ``{variable: term}``) and ``_update(sparql, what)``.
    """

    registry_graph: URIRef

    def _select(self, sparql: str, dataset: list[str] | None, what: str) -> list[dict[str, Node]]:
        raise NotImplementedError

    def _update(self, sparql: str, what: str) -> None:
        raise NotImplementedError

    # the loading a publish needs (kb.sparql_client.SparqlServerStore)

    def _writable(self, what: str) -> None:
        raise NotImplementedError

    def _load(self, quads: Iterable[tuple], served_name: Callable[[URIRef], URIRef]) -> int:
        raise NotImplementedError

    def _count(self, served: Iterable[URIRef]) -> int:
        raise NotImplementedError

    # ------------------------------------------------------------------ registry

    def _publications(self) -> list[Publication]:
        """Every publication the registry graph records."""
        g = term_to_nt(self.registry_graph)
        rows = self._select(
            f"""SELECT ?pub ?run_id ?at ?served ?logical WHERE {{ GRAPH {g} {{
                  ?pub a <{PROV.Collection}> .
                  OPTIONAL {{ ?pub <{PKG.runId}> ?run_id }}
                  OPTIONAL {{ ?pub <{PROV.generatedAtTime}> ?at }}
                  OPTIONAL {{ ?pub <{PROV.hadMember}> ?served . ?served <{PROV.specializationOf}> ?logical }}
                }} }}""",
            [str(self.registry_graph)],
            "reading the publication registry",
        )
        found: dict[URIRef, dict[str, Any]] = {}
        for row in rows:
            entry = found.setdefault(row["pub"], {"run_id": None, "completed": None, "graphs": {}})  # type: ignore[index]
            if "run_id" in row:
                entry["run_id"] = str(row["run_id"])
            if "at" in row:
                at = to_python(row["at"])
                entry["completed"] = at if isinstance(at, datetime) else None
            if "served" in row and "logical" in row:
                entry["graphs"][row["served"]] = row["logical"]
        return [Publication(iri, e["run_id"], e["completed"], dict(e["graphs"])) for iri, e in found.items()]  # type: ignore[arg-type]

    @staticmethod
    def _live_of(publications: Iterable[Publication]) -> Publication | None:
        done = [p for p in publications if p.completed is not None]
        if not done:
            return None
        # one at most unless two publishers raced; then the newest wins
        return max(done, key=lambda p: (p.completed, str(p.iri)))  # type: ignore[arg-type, return-value]

    def current(self) -> Publication | None:
        """The live publication, or None when nothing has been published to this registry."""
        return self._live_of(self._publications())

    def _add_record(self, pub: URIRef, run_id: str | None, completed: datetime | None = None) -> None:
        g, p = term_to_nt(self.registry_graph), term_to_nt(pub)
        facts = [f"{p} {term_to_nt(RDF.type)} {term_to_nt(PROV.Collection)} ."]
        if run_id is not None:
            facts.append(f"{p} {term_to_nt(PKG.runId)} {term_to_nt(Literal(run_id))} .")
        if completed is not None:
            facts.append(f"{p} {term_to_nt(PROV.generatedAtTime)} {term_to_nt(datetime_literal(completed))} .")
        self._update(f"INSERT DATA {{ GRAPH {g} {{ {' '.join(facts)} }} }}", "recording a publication")

    def _add_member(self, pub: URIRef, served: URIRef, logical: URIRef) -> None:
        g, s = term_to_nt(self.registry_graph), term_to_nt(served)
        self._update(
            f"INSERT DATA {{ GRAPH {g} {{ {term_to_nt(pub)} {term_to_nt(PROV.hadMember)} {s} . "
            f"{s} {term_to_nt(PROV.specializationOf)} {term_to_nt(logical)} . }} }}",
            f"recording graph {served}",
        )

    def _make_live(self, pub: URIRef) -> datetime:
        """The swap: in one update, retire every publication and mark ``pub`` as the live one."""
        now = datetime.now(timezone.utc)
        g, at = term_to_nt(self.registry_graph), term_to_nt(PROV.generatedAtTime)
        self._update(
            f"DELETE {{ GRAPH {g} {{ ?pub {at} ?t }} }} WHERE {{ GRAPH {g} {{ ?pub {at} ?t }} }} ;\n"
            f"INSERT DATA {{ GRAPH {g} {{ {term_to_nt(pub)} {at} {term_to_nt(datetime_literal(now))} . }} }}",
            "switching to the new publication",
        )
        return now

    def _forget(self, pub: Publication) -> None:
        """Drop a publication's graphs and its registry record (one update)."""
        g = term_to_nt(self.registry_graph)
        ops = [f"DROP SILENT GRAPH {term_to_nt(served)}" for served in pub.graphs]
        for subject in (pub.iri, *pub.graphs):
            s = term_to_nt(subject)
            ops.append(f"DELETE {{ GRAPH {g} {{ {s} ?p ?o }} }} WHERE {{ GRAPH {g} {{ {s} ?p ?o }} }}")
        self._update(" ;\n".join(ops), f"removing publication {pub.iri}")


class RemoteGraph:
    """The graph published on a SPARQL server, replaced publication by publication.

    :meth:`publish` keeps the contract of :meth:`kb.store.KnowledgeGraph.publish`: the new
    quads are loaded beside the live graph, the registry switches to them in one update, and
    only then are the previous publication's graphs removed. A load that fails removes what it
    loaded; the previous graph stays live. One publisher at a time per registry graph: a
    publish first removes what earlier failed or interrupted publishes left behind.
    """

    def __init__(self, store: SparqlServerStore) -> None:
        if not isinstance(store, PublicationRegistry):  # only SparqlServerStore and its subclasses are one
            raise StoreError(f"RemoteGraph needs a SparqlServerStore, got {type(store).__name__}")
        self.store = store

    def __repr__(self) -> str:
        return f"RemoteGraph({self.store.query_url!r})"

    def current(self) -> Publication | None:
        """The live publication, or None when nothing has been published."""
        return self.store.current()

    def publish(self, quads: Iterable[tuple], run_id: str) -> Publication:
        """Load ``quads`` as a new publication and make it the live graph.

        Returns:
            the new live publication.

        Raises:
            StoreError: the server refused or could not be reached, or ``quads`` is empty. Any
                exception raised by ``quads`` propagates unchanged. In every failure the new
                graphs are removed (as far as the server can still be reached) and the
                previous publication stays live.
        """
        store = self.store
        store._writable("publishing")
        token = f"{_slug(run_id)}-{secrets.token_hex(4)}"
        pub = URIRef(f"urn:prodkg:publication:{token}")
        records = store._publications()
        previous = store._live_of(records)
        for stale in records:
            if stale is not previous:
                store._forget(stale)
        members: dict[URIRef, URIRef] = {}

        def served_name(logical: URIRef) -> URIRef:
            served = URIRef(f"{logical}/publication/{token}")
            store._add_member(pub, served, logical)  # recorded before it is written, so a crash leaves nothing unnamed
            members[served] = logical
            return served

        try:
            store._add_record(pub, run_id)
            store._load(quads, served_name)
            count = store._count(members)
            if count == 0:
                raise StoreError(f"run {run_id!r} produced no quads; the previous graph stays live")
            try:
                completed = store._make_live(pub)
            except StoreError:
                # the answer may have been lost after the server made the switch: then it stands
                live = store.current()
                if live is None or live.iri != pub or live.completed is None:
                    raise
                completed = live.completed
        except BaseException:
            with contextlib.suppress(StoreError):
                store._forget(Publication(pub, run_id, None, members))
            raise
        if previous is not None:
            try:
                store._forget(previous)
            except StoreError as exc:  # the swap is done; the next publish removes them
                log.warning("publication %s is live, but the previous one's graphs stay until the next publish: %s", pub, exc)
        return Publication(pub, run_id, completed, dict(members))
