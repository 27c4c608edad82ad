"""Make a reviewer's decision part of the live graph at once: rewrite the curation graph in a new published store.

The next run writes the curation graph too (kb/publish.py), from the same decisions store, so a
decision the app could not publish (another publish held the graph) is not lost: it is in the
store, shown as pending, and published by the next decision, the app's next start, or the next run.
"""

from __future__ import annotations

import logging

import pyoxigraph as ox

from prodkg.errors import StoreError
from prodkg.kb.curation import curation_graph, curation_quads
from prodkg.kb.vocab import SDO

__all__ = ["curation_in_sync", "publish_curation"]

log = logging.getLogger(__name__)


def _expected(data, snap) -> list[tuple]:
    """The curation quads of the decisions in force, under the live graph's IRI base (the run's ``--base-iri``)."""
    return curation_quads(data.decisions_in_force(), catalog=snap.catalog, scheme=snap.catalog, product_ids=snap.products.keys(),
                          concepts=snap.taxonomy["by_key"].keys(), base=snap.base)


def curation_in_sync(data) -> bool:
    """True when the live graph's curation graph holds exactly the decisions in force."""
    snap = data.snapshot()
    if snap.catalog is None:
        return True
    g = str(curation_graph(base=snap.base))
    have = {r["d"] for r in snap.records(f"SELECT ?d WHERE {{ GRAPH <{g}> {{ ?d a pkg:Decision }} }}")}
    want = {str(q[0]) for q in _expected(data, snap) if str(q[2]).endswith("#Decision")}
    return have == want


def publish_curation(data) -> bool:
    """Publish the live graph with its curation graph rebuilt from the decisions in force. False when the graph is busy."""
    snap = data.snapshot()
    if snap.catalog is None or snap.run_id is None:
        return False
    quads = _expected(data, snap)
    decided = [snap.products[pid]["iri"] for pid in data.decisions_in_force() if pid in snap.products]
    g = curation_graph(base=snap.base)
    run_prefix = str(g).rsplit("/", 1)[0] + "/run/"

    def edit(store) -> None:
        raw = store._open()
        if ox.NamedNode(str(g)) in set(raw.named_graphs()):
            raw.remove_graph(ox.NamedNode(str(g)))
        category = ox.NamedNode(str(SDO.category))
        for iri in decided:  # a prediction never overrides a reviewer: the run's category fact goes
            for quad in list(raw.quads_for_pattern(ox.NamedNode(iri), category, None, None)):
                if isinstance(quad.graph_name, ox.NamedNode) and quad.graph_name.value.startswith(run_prefix):
                    raw.remove(quad)
        store.add_quads(quads, atomic=True)

    try:
        data.kg.publish_edit(edit, snap.run_id)
    except StoreError as exc:
        log.warning("decision kept in the decisions store; the graph will get it later: %s", exc)
        return False
    data.carry_over(snap)
    return True
