"""SHACL validation of a graph before it is published (pyshacl-turbo or pyshacl over the shapes in kb/shapes/)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

from rdflib import Graph
from rdflib.namespace import SH

from prodkg.errors import StageError

__all__ = ["ShaclReport", "load_shapes", "validate_quads"]


@dataclass
class ShaclReport:
    """Outcome of one validation: whether the graph conforms, and each violation in words."""

    conforms: bool
    violations: list[str] = field(default_factory=list)
    text: str = ""

    def summary(self, limit: int = 10) -> str:
        if self.conforms:
            return "the graph conforms to the SHACL shapes"
        shown = "; ".join(self.violations[:limit])
        more = f" (and {len(self.violations) - limit} more)" if len(self.violations) > limit else ""
        return f"{len(self.violations)} SHACL violation(s): {shown}{more}"


@lru_cache(maxsize=1)
def load_shapes() -> Graph:
    """The shipped shapes graph (kb/shapes/prodkg.ttl)."""
    text = resources.files("prodkg.kb").joinpath("shapes", "prodkg.ttl").read_text(encoding="utf-8")
    return Graph().parse(data=text, format="turtle")


def validate_quads(quads: Iterable[tuple], shapes: Graph | None = None) -> ShaclReport:
    """Validate the union of ``quads`` (or triples) against the SHACL shapes.

    The graphs are merged first: shapes check links that cross named graphs (a predicted
    category in a run graph must be a concept of the taxonomy graph).
    """
    try:  # the Rust engine with pySHACL's API: the same verdicts, many times faster on large graphs
        from pyshacl_turbo import validate
    except ImportError:
        from pyshacl import validate

    data = Graph()
    for quad in quads:
        if len(quad) not in (3, 4):
            raise StageError(f"validate_quads: expected (s, p, o[, g]) tuples, got {quad!r}")
        data.add(tuple(quad[:3]))
    conforms, results, text = validate(data, shacl_graph=shapes if shapes is not None else load_shapes(), inference="none")
    violations = []
    for result in results.subjects(predicate=SH.resultSeverity):
        focus = results.value(result, SH.focusNode)
        path = results.value(result, SH.resultPath)
        message = results.value(result, SH.resultMessage)
        violations.append(f"{focus} {path}: {message}")
    return ShaclReport(bool(conforms), sorted(violations), str(text))
