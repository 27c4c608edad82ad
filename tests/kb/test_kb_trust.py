"""Back-off levels, explicit publication flags and unknown products in the graph."""

from __future__ import annotations

import pandas as pd
import pytest
from kb_golden import ATTRIBUTES, CONCEPTS, CUP, KETTLE, MUG

from prodkg.errors import StageError
from prodkg.kb.queries import run_query
from prodkg.kb.store import OxigraphStore
from prodkg.kb.triples import catalog_quads, prediction_quads, run_quads, taxonomy_quads
from prodkg.kb.validation import validate_quads


def trust_predictions() -> pd.DataFrame:
    """The mug: fine "mug" uncertain, published one level up as "drinkware". The cup: published as "cup".
    The kettle: unknown (with its class guess kept as an unpublished candidate)."""
    return pd.DataFrame({
        "product_id": [MUG, MUG, CUP, KETTLE, KETTLE],
        "task": ["category"] * 5,
        "value": ["mug", "drinkware", "cup", "kettle", None],
        "confidence": [0.55, 0.97, 0.99, 0.91, 0.8],
        "model": ["head-v1"] * 5,
        "level": [2, 1, 2, 2, None],
        "kind": ["class", "class", "class", "class", "unknown"],
        "published": [False, True, True, False, False],
    })


def trust_quads(golden, predictions=None):
    return (catalog_quads(golden.products, catalog="shop", attributes=ATTRIBUTES, scheme="kitchen")
            + taxonomy_quads("kitchen", CONCEPTS) + run_quads(golden.run)
            + prediction_quads(trust_predictions() if predictions is None else predictions, golden.run, catalog="shop",
                               scheme="kitchen", threshold=None, min_precision=0.95))


@pytest.fixture()
def trust_store(golden):
    store = OxigraphStore(None)
    store.add_quads(trust_quads(golden))
    yield store
    store.close()


def test_backoff_publishes_the_broader_concept_and_rollups_still_work(trust_store):
    def ids(label):
        return run_query(trust_store, "products_in_category", category=label).column("product_id")

    assert ids("drinkware") == [MUG, CUP]  # the mug by its back-off fact, the cup through skos:broader
    assert ids("kitchenware") == [MUG, CUP]
    assert ids("mug") == []  # the fine guess stayed a candidate
    assert ids("kettle") == []  # unknown: no category fact at all


def test_every_level_stays_a_prediction_with_its_confidence(trust_store):
    rows = trust_store.query(
        "SELECT ?level ?published ?c ?id WHERE { ?p a pkg:Prediction ; pkg:subject ?s ; pkg:level ?level ; pkg:published ?published ; "
        "pkg:confidence ?c . ?s schema:productID ?id } ORDER BY ?level", {"id": MUG}).rows
    assert [(int(r[0]), bool(r[1]), float(r[2])) for r in rows] == [(1, True, 0.97), (2, False, 0.55)]
    assert trust_store.query("ASK { ?r pkg:minPrecision 0.95e0 }").boolean
    assert not trust_store.query("ASK { ?r pkg:threshold ?t }").boolean  # no fixed threshold in this run


def test_the_graph_conforms_to_the_shapes(golden):
    report = validate_quads(trust_quads(golden))
    assert report.conforms, report.text


def test_an_unknown_prediction_is_never_published(golden):
    frame = trust_predictions()
    frame.loc[4, "published"] = True
    with pytest.raises(StageError, match="unknown prediction cannot be published"):
        trust_quads(golden, frame)


def test_repeated_level_and_bad_cells_are_refused(golden):
    frame = trust_predictions()
    frame.loc[1, "level"] = 2
    with pytest.raises(StageError, match="second prediction .* at level 2"):
        trust_quads(golden, frame)
    frame = trust_predictions()
    frame.loc[0, "kind"] = "maybe"
    with pytest.raises(StageError, match="kind: expected"):
        trust_quads(golden, frame)
    with pytest.raises(StageError, match="give a threshold or a 'published' column"):
        prediction_quads(trust_predictions().drop(columns="published"), "run-1", catalog="shop", scheme="kitchen", threshold=None)


def test_shapes_refuse_a_published_unknown_prediction(golden):
    from rdflib import Literal

    from prodkg.kb.iri import mint
    from prodkg.kb.triples import run_graph
    from prodkg.kb.vocab import PKG

    quads = [q for q in trust_quads(golden) if not (q[1] == PKG.published and q[0] == mint("prediction", "run-1", KETTLE, "category", "unknown"))]
    quads.append((mint("prediction", "run-1", KETTLE, "category", "unknown"), PKG.published, Literal(True), run_graph("run-1")))
    report = validate_quads(quads)
    assert not report.conforms
