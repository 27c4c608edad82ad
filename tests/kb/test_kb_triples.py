"""Quad building: the golden graph by isomorphism, the acceptance threshold, input validation, literal forms."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
from kb_golden import CUP, KETTLE, MUG
from rdflib import Dataset, Graph, Literal
from rdflib.compare import graph_diff, isomorphic, to_isomorphic

from prodkg.kb.iri import mint
from prodkg.kb.store import OxigraphStore
from prodkg.kb.triples import (
    ModelInfo,
    RunInfo,
    catalog_quads,
    datetime_literal,
    double_literal,
    prediction_quads,
    run_graph,
    run_quads,
    taxonomy_quads,
)
from prodkg.kb.vocab import PKG, SDO, SKOS, XSD
from prodkg.errors import StageError


def _graphs(quads) -> dict[str, Graph]:
    out: dict[str, Graph] = {}
    for s, p, o, g in quads:
        out.setdefault(str(g), Graph()).add((s, p, o))
    return out


def _expected_graphs(ds: Dataset) -> dict[str, Graph]:
    out: dict[str, Graph] = {}
    for s, p, o, g in ds.quads((None, None, None, None)):
        out.setdefault(str(g), Graph()).add((s, p, o))
    return out


def test_golden_graph_is_isomorphic_to_the_hand_written_trig(golden, expected_dataset):
    actual = _graphs(golden.quads())
    expected = _expected_graphs(expected_dataset)
    assert sorted(actual) == sorted(expected)
    for name in expected:
        if not isomorphic(actual[name], expected[name]):
            _, only_actual, only_expected = graph_diff(to_isomorphic(actual[name]), to_isomorphic(expected[name]))
            pytest.fail(
                f"graph {name} differs\nonly built:\n{only_actual.serialize(format='nt')}"
                f"\nonly expected:\n{only_expected.serialize(format='nt')}"
            )


def test_below_threshold_a_prediction_is_only_a_candidate(golden):
    g = _graphs(golden.quads())[str(run_graph("run-1"))]
    kettle, cup = mint("product", "shop", KETTLE), mint("product", "shop", CUP)
    kettle_pred = mint("prediction", "run-1", KETTLE, "category")
    assert (kettle_pred, PKG.subject, kettle) in g
    assert (kettle_pred, PKG.confidence, Literal("0.4", datatype=XSD.double)) in g
    assert list(g.objects(kettle, SDO.category)) == []
    assert list(g.objects(cup, SDO.category)) == [mint("concept", "kitchen", "cup")]


@pytest.mark.parametrize(
    ("threshold", "accepted"),
    [(0.0, {MUG, KETTLE, CUP}), (0.4, {MUG, KETTLE, CUP}), (0.75, {MUG, CUP}), (0.76, {MUG}), (1.0, set())],
)
def test_threshold_is_inclusive_and_moves_the_facts(golden, threshold, accepted):
    quads = prediction_quads(golden.predictions, golden.run, catalog="shop", scheme="kitchen", threshold=threshold)
    facts = {str(s) for s, p, o, g in quads if p == SDO.category}
    assert facts == {str(mint("product", "shop", pid)) for pid in accepted}
    predictions = {s for s, p, o, g in quads if p == PKG.subject}
    assert len(predictions) == 5  # candidates or not, every prediction is recorded


def test_catalog_validation_names_the_problem(golden):
    with pytest.raises(StageError, match=r"missing column\(s\) \['title'\]"):
        catalog_quads(golden.products.drop(columns=["title"]), catalog="shop", scheme="kitchen")
    with pytest.raises(StageError, match="missing column"):
        catalog_quads(golden.products, catalog="shop", attributes=["weight"], scheme="kitchen")
    dup = pd.concat([golden.products, golden.products.iloc[[0]]], ignore_index=True)
    with pytest.raises(StageError, match="duplicate product_id 'mug #1 / blue'"):
        catalog_quads(dup, catalog="shop", scheme="kitchen")
    bad = golden.products.assign(product_id=[MUG, None, CUP])
    with pytest.raises(StageError, match="row 1 product_id"):
        catalog_quads(bad, catalog="shop", scheme="kitchen")
    with pytest.raises(StageError, match="product columns"):
        catalog_quads(golden.products, catalog="shop", attributes=["category"], scheme="kitchen")


def test_integer_ids_and_numeric_attributes_are_written_as_text():
    products = pd.DataFrame({"product_id": [7, 8], "title": ["a", "b"], "weight": [1.5, float("nan")]})
    quads = catalog_quads(products, catalog="c", attributes=["weight"], scheme="s")
    assert (mint("product", "c", "7"), SDO.productID, Literal("7"), mint("graph", "catalog", "c")) in quads
    values = [o for s, p, o, g in quads if p == SDO.value]
    assert values == [Literal("1.5")]


def test_prediction_validation_names_the_problem(golden):
    def call(frame):
        return prediction_quads(frame, golden.run, catalog="shop", scheme="kitchen")

    with pytest.raises(StageError, match=r"row 0 confidence.*1\.5"):
        call(golden.predictions.assign(confidence=[1.5, 0.4, 0.75, 0.3, 0.8]))
    with pytest.raises(StageError, match="row 2 confidence"):
        call(golden.predictions.assign(confidence=[0.9, 0.4, float("nan"), 0.3, 0.8]))
    with pytest.raises(StageError, match="second prediction for product 'mug #1 / blue' and task 'category'"):
        call(pd.concat([golden.predictions, golden.predictions.iloc[[0]]], ignore_index=True))
    with pytest.raises(StageError, match=r"missing column\(s\) \['model'\]"):
        call(golden.predictions.drop(columns=["model"]))
    with pytest.raises(StageError, match="threshold"):
        prediction_quads(golden.predictions, "run-1", catalog="shop", scheme="kitchen", threshold=2)


def test_taxonomy_validation_and_polyhierarchy():
    with pytest.raises(StageError, match="cycle of broader links: a -> b -> a|cycle of broader links: b -> a -> b"):
        taxonomy_quads("s", [("root", None), ("a", "b"), ("b", "a")])
    with pytest.raises(StageError, match=r"parent\(s\) \['ghost'\]"):
        taxonomy_quads("s", [("a", "ghost")])
    with pytest.raises(StageError, match="both as a top concept"):
        taxonomy_quads("s", [("a", None), ("b", None), ("a", "b")])
    quads = taxonomy_quads("s", [("x", None), ("y", None), ("z", "x"), ("z", "y"), ("z", "x")])
    broader = {o for s, p, o, g in quads if s == mint("concept", "s", "z") and p == SKOS.broader}
    assert broader == {mint("concept", "s", "x"), mint("concept", "s", "y")}


def test_taxonomy_keys_separate_identity_from_label():
    # Best Buy style: the same label at two places in the tree
    quads = taxonomy_quads("s", [("music", None, "Music"), ("latin", "music", "Latin"), ("latin-2", "latin", "Latin")])
    labels = {(str(s), str(o)) for s, p, o, g in quads if p == SKOS.prefLabel}
    assert (str(mint("concept", "s", "latin")), "Latin") in labels
    assert (str(mint("concept", "s", "latin-2")), "Latin") in labels
    with pytest.raises(StageError, match="two labels"):
        taxonomy_quads("s", [("k", None, "A"), ("k", None, "B")])


def test_run_info_is_validated():
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    with pytest.raises(StageError, match="naive"):
        RunInfo("r", datetime(2024, 1, 1), None, "c", "dann")
    with pytest.raises(StageError, match="before started"):
        RunInfo("r", start, start - timedelta(seconds=1), "c", "dann")
    head = ModelInfo("m", "head", "head")
    with pytest.raises(StageError, match="two different models"):
        RunInfo("r", start, None, "c", "dann", models=[head, ModelInfo("m", "other", "head")])
    run = RunInfo("r", start, None, "c", "dann", models=[head, ModelInfo("m", "head", "head")])
    assert len([q for q in run_quads(run) if q[1] == SDO.name]) == 1
    assert RunInfo.from_dict(run.to_dict()) == run


@pytest.mark.parametrize("value", [0.0, 1.0, 0.9, 0.1 + 0.2, 1e-7, 123456.789, 1e300, 0.123456789012345678])
def test_doubles_keep_their_lexical_form_through_the_store(value):
    lit = double_literal(value)
    assert float(lit) == value
    store = OxigraphStore(None)
    s, p = mint("run", "x"), PKG.confidence
    store.add_quads([(s, p, lit, mint("graph", "g"))])
    ((_, _, stored, _),) = list(store.quads())
    assert stored == lit


@pytest.mark.parametrize(
    "value",
    [
        datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc),
        datetime(2024, 5, 1, 14, 0, 0, 120000, tzinfo=timezone(timedelta(hours=2))),
    ],
)
def test_datetimes_are_utc_and_keep_their_lexical_form_through_the_store(value):
    lit = datetime_literal(value)
    assert lit.toPython() == value and lit.toPython().utcoffset() == timedelta(0)
    store = OxigraphStore(None)
    store.add_quads([(mint("run", "x"), PKG.runId, lit, mint("graph", "g"))])
    ((_, _, stored, _),) = list(store.quads())
    assert stored == lit
