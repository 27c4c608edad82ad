"""Reviewers' decisions: an append-only store, and the curation graph that turns them into asserted facts.

A decision says, about one product (by its product id, so it survives a renamed feed and a
rebuilt graph): the prediction is right (``accept``), the product belongs to another category
(``relabel``), or to no category of the taxonomy (``outside``); with who decided and when.

The store is one JSON object a line in ``<out>/curation/decisions.jsonl``; lines are only ever
appended, under an advisory lock. The latest decision per product is the one in force. Every
run writes the decisions in force as the curation graph (``mint("graph", "curation")``): the
asserted ``schema:category`` of the product, and a ``pkg:Decision`` that is
``prov:wasAttributedTo`` the reviewer (a ``prov:Person``). A prediction never overrides it: the
run's own category fact for a decided product is not written.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from rdflib.term import Literal, URIRef

from prodkg.errors import ConfigError
from prodkg.kb.iri import DEFAULT_BASE, mint
from prodkg.kb.vocab import PKG, PROV, RDF, SDO, XSD

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["VERDICTS", "Decision", "DecisionStore", "curation_digest", "curation_graph", "curation_quads", "reviewed_labels"]

VERDICTS = ("accept", "relabel", "outside")
_MAX_TEXT = 500


def curation_graph(*, base: str = DEFAULT_BASE) -> URIRef:
    """Name of the graph holding the reviewers' decisions and the facts they assert."""
    return mint("graph", "curation", base=base)


def _clean(value: object, what: str, *, required: bool = True) -> str | None:
    if value is None or value == "":
        if required:
            raise ConfigError(f"decision: {what} is required")
        return None
    if not isinstance(value, str):
        raise ConfigError(f"decision: {what} must be text, got {type(value).__name__}")
    if len(value) > _MAX_TEXT or any(ord(ch) < 32 for ch in value):
        raise ConfigError(f"decision: {what} must be at most {_MAX_TEXT} printable characters")
    return value


@dataclass(frozen=True)
class Decision:
    """One reviewer's answer about one product."""

    product_id: str
    verdict: str  # one of VERDICTS
    category: str | None  # the category in force (accept: the predicted one; relabel: the chosen one; outside: None)
    reviewer: str
    at: str  # ISO 8601, UTC
    decision_id: str = ""
    predicted: str | None = None  # what the model said when the reviewer answered
    confidence: float | None = None
    run_id: str | None = None
    catalog: str | None = None

    def __post_init__(self) -> None:
        _clean(self.product_id, "product_id")
        _clean(self.reviewer, "reviewer")
        if self.verdict not in VERDICTS:
            raise ConfigError(f"decision: verdict must be one of {', '.join(VERDICTS)}, got {self.verdict!r}")
        _clean(self.category, "category", required=self.verdict != "outside")
        if self.verdict == "outside" and self.category is not None:
            raise ConfigError("decision: an 'outside' decision names no category")
        for name in ("predicted", "run_id", "catalog", "decision_id"):
            _clean(getattr(self, name), name, required=False)
        try:
            when = datetime.fromisoformat(self.at)
        except (TypeError, ValueError):
            raise ConfigError(f"decision: 'at' must be an ISO 8601 time, got {self.at!r}") from None
        if when.tzinfo is None:
            raise ConfigError(f"decision: 'at' must carry a time zone, got {self.at!r}")
        if self.confidence is not None and not (isinstance(self.confidence, (int, float)) and 0.0 <= float(self.confidence) <= 1.0):
            raise ConfigError(f"decision: confidence must be in [0, 1], got {self.confidence!r}")

    @classmethod
    def make(cls, product_id: str, verdict: str, category: str | None, reviewer: str, **more) -> Decision:
        """A new decision, now, with a fresh id."""
        return cls(product_id=product_id, verdict=verdict, category=category if verdict != "outside" else None, reviewer=reviewer,
                   at=datetime.now(UTC).isoformat(), decision_id=uuid.uuid4().hex, **more)

    @classmethod
    def from_dict(cls, data: Mapping) -> Decision:
        if not isinstance(data, Mapping):
            raise ConfigError(f"decision: expected a JSON object, got {type(data).__name__}")
        known = {k: data.get(k) for k in cls.__dataclass_fields__ if k in data}
        known.setdefault("category", None)
        missing = [k for k in ("product_id", "verdict", "reviewer", "at") if k not in known]
        if missing:
            raise ConfigError(f"decision: missing {', '.join(missing)}")
        decision = cls(**known)
        if not decision.decision_id:  # an imported decision without an id gets a stable one from its content
            digest = hashlib.sha256(json.dumps(asdict(decision), sort_keys=True).encode()).hexdigest()[:32]
            decision = cls(**{**asdict(decision), "decision_id": digest})
        return decision

    def to_dict(self) -> dict:
        return asdict(self)


class DecisionStore:
    """The append-only file of decisions. Readers see whole lines only; writers take an advisory lock."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._cache: tuple[tuple[int, int], list[Decision]] | None = None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a+") as handle:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            yield

    def append(self, decisions: Decision | Iterable[Decision]) -> int:
        """Append decisions (durably: flushed and fsynced before returning). Returns how many."""
        batch = [decisions] if isinstance(decisions, Decision) else list(decisions)
        if not batch:
            return 0
        lines = "".join(json.dumps(d.to_dict(), ensure_ascii=False, sort_keys=True) + "\n" for d in batch)
        with self._locked(), open(self.path, "a", encoding="utf-8") as handle:
            handle.write(lines)
            handle.flush()
            os.fsync(handle.fileno())
        return len(batch)

    def all(self) -> list[Decision]:
        """Every decision, oldest first. A torn last line (a writer killed mid-write) is ignored."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return []
        key = (stat.st_mtime_ns, stat.st_size)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        out: list[Decision] = []
        with open(self.path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.endswith("\n"):
                    break  # torn write
                if line.strip():
                    try:
                        out.append(Decision.from_dict(json.loads(line)))
                    except (ValueError, ConfigError) as exc:
                        raise ConfigError(f"{self.path} line {number}: {exc}") from None
        self._cache = (key, out)
        return out

    def latest(self) -> dict[str, Decision]:
        """The decision in force per product id: the last one given."""
        return {d.product_id: d for d in self.all()}

    def export(self, dest: str | os.PathLike[str]) -> int:
        """Write every decision to ``dest`` (JSON Lines). Returns how many."""
        decisions = self.all()
        Path(dest).write_text("".join(json.dumps(d.to_dict(), ensure_ascii=False, sort_keys=True) + "\n" for d in decisions), encoding="utf-8")
        return len(decisions)

    def import_file(self, src: str | os.PathLike[str]) -> tuple[int, int]:
        """Append the decisions of a JSON Lines file that this store does not hold yet (by decision id).

        Every line is checked before anything is written. Returns (imported, already present).
        """
        incoming: list[Decision] = []
        try:
            text = Path(src).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read {src}: {exc}") from exc
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    incoming.append(Decision.from_dict(json.loads(line)))
                except (ValueError, ConfigError) as exc:
                    raise ConfigError(f"{src} line {number}: {exc}") from None
        with_ids = {d.decision_id for d in self.all()}
        new = []
        for d in incoming:
            if d.decision_id not in with_ids:
                with_ids.add(d.decision_id)
                new.append(d)
        # the decision in force is the latest given: keep the imported ones in time order
        new.sort(key=lambda d: datetime.fromisoformat(d.at))
        self.append(new)
        return len(new), len(incoming) - len(new)


def reviewed_labels(latest: Mapping[str, Decision], product_ids: Iterable[str]) -> dict[str, str]:
    """product id -> reviewed category, for the given products with an accept or relabel decision in force."""
    return {pid: latest[pid].category for pid in product_ids if pid in latest and latest[pid].category is not None}


def curation_digest(latest: Mapping[str, Decision]) -> str:
    """What the curation graph of these decisions depends on (a changed decision changes the graph)."""
    h = hashlib.sha256()
    for pid in sorted(latest):
        h.update(json.dumps(latest[pid].to_dict(), sort_keys=True).encode("utf-8"))
    return h.hexdigest()


def curation_quads(latest: Mapping[str, Decision], *, catalog: str, scheme: str, product_ids: Iterable[str], concepts: Iterable[str],
                   base: str = DEFAULT_BASE) -> list[tuple]:
    """The curation graph: per decided product present in the catalog, its decision and the fact it asserts.

    A decision whose category is no longer a concept of the taxonomy keeps its ``pkg:Decision``
    but asserts no category.
    """
    g = curation_graph(base=base)
    present = set(product_ids)
    known = set(concepts)
    quads: list[tuple] = []
    people: set[str] = set()
    for pid in sorted(latest):
        d = latest[pid]
        if pid not in present:
            continue
        product = mint("product", catalog, pid, base=base)
        node = mint("decision", d.decision_id, base=base)
        person = mint("person", d.reviewer, base=base)
        quads += [
            (node, RDF.type, PKG.Decision, g),
            (node, RDF.type, PROV.Entity, g),
            (node, PKG.subject, product, g),
            (node, PKG.verdict, Literal(d.verdict), g),
            (node, PROV.wasAttributedTo, person, g),
            (node, PROV.generatedAtTime, Literal(datetime.fromisoformat(d.at).astimezone(UTC).isoformat(), datatype=XSD.dateTime), g),
        ]
        if d.reviewer not in people:
            people.add(d.reviewer)
            quads += [(person, RDF.type, PROV.Person, g), (person, RDF.type, PROV.Agent, g), (person, SDO.name, Literal(d.reviewer), g)]
        if d.verdict == "outside":
            quads.append((product, PKG.outsideTaxonomy, Literal(True), g))
        elif d.category in known:
            concept = mint("concept", scheme, d.category, base=base)
            quads += [(node, PKG.object, concept, g), (product, SDO.category, concept, g)]
    return quads


def without_predicted_categories(quads: list[tuple], latest: Mapping[str, Decision], *, catalog: str, base: str = DEFAULT_BASE) -> list[tuple]:
    """``quads`` less the category facts a run's predictions assert about decided products.

    The ``pkg:Prediction`` records stay (what the model said is history); only the plain fact goes,
    so the reviewer's category is the one asserted.
    """
    decided = {mint("product", catalog, pid, base=base) for pid in latest}
    run_prefix = str(mint("graph", "run", "x", base=base))[:-1]
    category = SDO.category
    return [q for q in quads if not (q[1] == category and q[0] in decided and str(q[3]).startswith(run_prefix))]
