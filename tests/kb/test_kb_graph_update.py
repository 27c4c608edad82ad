"""Incremental graph update through the real graph stage: the same content as a full rebuild, the live graph safe on failure."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from rdflib.compare import graph_diff, isomorphic, to_isomorphic

from prodkg.kb.graph_update import INDEX_TABLE, catalog_fingerprints, prediction_fingerprints
from prodkg.kb.incremental import content_graph
from prodkg.kb.publish import GraphSettings, graph_stage
from prodkg.kb.queries import run_query
from prodkg.kb.store import KnowledgeGraph
from prodkg.kb.triples import ModelInfo, RunInfo
from prodkg.layout import RunLayout

TAXONOMY = [("food", None), ("fruit", "food"), ("apple", "fruit"), ("pear", "fruit"), ("dairy", "food"), ("milk", "dairy")]
LABELS = ["apple", "pear", "milk"]
RUN_GRAPHS = "https://example.org/prodkg/graph/run/"


def _catalog(n: int = 60) -> pd.DataFrame:
    return pd.DataFrame({
        "product_id": [f"p{i:03d}" for i in range(n)],
        "title": [f"Product {i}" for i in range(n)],
        "description": [f"about product {i}" if i % 4 else None for i in range(n)],
        "domain": ["shop" if i % 2 else "store" for i in range(n)],
        "category": [LABELS[i % 3] if i % 2 else None for i in range(n)],
        # p005 is the only product made by "Solo Dairy": removing it must take its organisation node with it
        "manufacturer": ["Solo Dairy" if i == 5 else ("ARLA" if i % 3 == 2 else None) for i in range(n)],
        "volume": ["1 l" if i % 3 == 2 else "180 g" for i in range(n)],
    })


def _predictions(products: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    target = products.loc[products["domain"] == "store", "product_id"].tolist()
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"product_id": target, "task": "category", "value": [LABELS[int(p[1:]) % 3] for p in target],
                         "confidence": rng.uniform(0.2, 0.95, len(target)).round(3), "model": "category/dann/abc"})


def _nightly(products: pd.DataFrame, predictions: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Next night's feed: 2 products removed, 2 renamed, one with a new volume, 1 added; 3 predictions changed."""
    products = products[~products["product_id"].isin(["p005", "p010"])].copy()
    products.loc[products["product_id"].isin(["p003", "p020"]), "title"] = "Renamed"
    products.loc[products["product_id"] == "p008", "volume"] = "2 l"
    products = pd.concat([products, _catalog(62).iloc[[60]]], ignore_index=True)  # p060, a store product
    predictions = predictions[predictions["product_id"].isin(products["product_id"])].copy()
    predictions.loc[predictions["product_id"] == "p012", "value"] = "pear"  # another category
    predictions.loc[predictions["product_id"] == "p014", "confidence"] = 0.97  # now above the threshold
    predictions.loc[predictions["product_id"] == "p016", "confidence"] = 0.21  # now below it
    added = pd.DataFrame({"product_id": ["p060"], "task": "category", "value": ["apple"], "confidence": [0.9], "model": "category/dann/abc"})
    return products, pd.concat([predictions, added], ignore_index=True)


def _run(products, predictions, out, run_id, minute, threshold=0.5):
    info = RunInfo(run_id, datetime(2024, 6, 1, 2, minute, tzinfo=UTC), datetime(2024, 6, 1, 2, minute + 1, tzinfo=UTC), "shop", "dann",
                   ["shop"], ["store"], [ModelInfo("category/dann/abc", "category head (dann)", "head")], "config")
    return graph_stage(products, predictions, TAXONOMY, ["manufacturer", "volume"], info, GraphSettings(threshold=threshold), "shop",
                       layout=RunLayout(out))


def _outside_run_graphs(store) -> set:
    return {q for q in store.quads() if not str(q[3]).startswith(RUN_GRAPHS)}


def _predictions_without_run(store) -> set:
    rows = store.query("""SELECT ?product ?object ?confidence WHERE { ?x a pkg:Prediction ; pkg:subject ?product ;
        pkg:object ?object ; pkg:confidence ?confidence }""").rows
    return {tuple(str(v) for v in row) for row in rows}


def _facts(store) -> set:
    rows = store.query(f"""SELECT ?product ?concept WHERE {{ GRAPH ?g {{ ?product schema:category ?concept }}
        FILTER(STRSTARTS(STR(?g), "{RUN_GRAPHS}")) }}""").rows
    return {(str(a), str(b)) for a, b in rows}


def _assert_same_content(a, b) -> None:
    ca, cb = content_graph(a), content_graph(b)
    if not isomorphic(ca, cb):
        _, only_a, only_b = graph_diff(to_isomorphic(ca), to_isomorphic(cb))
        pytest.fail(f"only incremental:\n{only_a.serialize(format='nt')}\nonly full rebuild:\n{only_b.serialize(format='nt')}")


@pytest.mark.slow
def test_an_incremental_update_holds_the_content_of_a_full_rebuild(tmp_path):
    products, predictions = _catalog(), _predictions(_catalog())
    first = _run(products, predictions, tmp_path / "inc", "run-1", 0)
    assert first["update"] == {"path": "full", "reason": "no live graph built with an input digest"}
    assert (tmp_path / "inc" / "runs" / "run-1" / f"{INDEX_TABLE}.parquet").is_file()
    night_products, night_predictions = _nightly(products, predictions)
    second = _run(night_products, night_predictions, tmp_path / "inc", "run-2", 10)
    assert second["update"]["path"] == "incremental", second["update"]
    # p003, p020 renamed and p008's volume: catalog rows; p060 added; p012, p014, p016: predictions only
    assert second["update"]["rewritten"]["catalog"] == 4 and second["update"]["rewritten"]["removed"] == 2
    assert second["update"]["rewritten"]["predictions"] == 4  # p012, p014, p016 and the added p060
    assert second["changes"] == {"added": 1, "changed": 3, "removed": 2, "unchanged": 55}
    full = _run(night_products, night_predictions, tmp_path / "full", "run-2", 10)
    assert full["changes"] == {"added": 59, "changed": 0, "removed": 0, "unchanged": 0}  # a first run there

    with KnowledgeGraph(tmp_path / "inc" / "kg").open() as inc, KnowledgeGraph(tmp_path / "full" / "kg").open() as rebuilt:
        _assert_same_content(inc, rebuilt)
        # without content_graph: catalog and taxonomy graphs equal quad for quad; predictions and facts equal without their run
        assert _outside_run_graphs(inc) == _outside_run_graphs(rebuilt) and len(_outside_run_graphs(inc)) > 400
        assert _predictions_without_run(inc) == _predictions_without_run(rebuilt) and len(_predictions_without_run(inc)) == 30
        assert _facts(inc) == _facts(rebuilt)
        assert ("https://example.org/prodkg/product/shop/p014", "https://example.org/prodkg/concept/shop/milk") in _facts(inc)
        assert not any(p.endswith("/p016") for p, _ in _facts(inc))
        # the organisation only the removed p005 named is gone; ARLA, named by others, stays
        assert inc.query("ASK { ?o schema:name 'Solo Dairy' }").boolean is False
        assert inc.query("ASK { ?o schema:name 'ARLA' }").boolean is True
        # unchanged products keep the predictions of the run that made them; the rewritten ones are this run's
        made_by = dict(inc.query("""SELECT ?id ?run WHERE { ?x a pkg:Prediction ; pkg:subject ?p ; prov:wasGeneratedBy ?r .
            ?p schema:productID ?id . ?r pkg:runId ?run }""").rows)
        assert {str(k) for k, v in made_by.items() if str(v) == "run-2"} == {"p012", "p014", "p016", "p060"}
        assert sum(str(v) == "run-1" for v in made_by.values()) == 26
        changes = [tuple(r.values()) for r in run_query(inc, "what_changed").to_frame().to_dict("records")]
        assert changes == [("p060", "added", "run-2"), ("p003", "changed", "run-2"), ("p008", "changed", "run-2"),
                           ("p020", "changed", "run-2"), ("p005", "removed", "run-2"), ("p010", "removed", "run-2")]
        assert {str(r[0]) for r in inc.query("SELECT ?d WHERE { ?r pkg:inputDigest ?d }").rows} == {
            str(r[0]) for r in rebuilt.query("SELECT ?d WHERE { ?r pkg:inputDigest ?d }").rows}
    # the comparison is not vacuous: the first night's content differs from the rebuild's
    _run(products, predictions, tmp_path / "first", "run-1", 0)
    with KnowledgeGraph(tmp_path / "first" / "kg").open() as before, KnowledgeGraph(tmp_path / "full" / "kg").open() as rebuilt:
        assert not isomorphic(content_graph(before), content_graph(rebuilt))

    # an unchanged night after an incremental one reuses its content; the next change is incremental again
    third = _run(night_products, night_predictions, tmp_path / "inc", "run-3", 20)
    assert third["reused_graph_of"] == "run-2" and third["update"] == {"path": "unchanged"}
    again = night_predictions.copy()
    again.loc[again["product_id"] == "p012", "value"] = "milk"
    fourth = _run(night_products, again, tmp_path / "inc", "run-4", 30)
    assert fourth["update"]["path"] == "incremental" and fourth["changes"]["changed"] == 0
    _run(night_products, again, tmp_path / "full4", "run-4", 30)
    with KnowledgeGraph(tmp_path / "inc" / "kg").open() as inc, KnowledgeGraph(tmp_path / "full4" / "kg").open() as rebuilt:
        _assert_same_content(inc, rebuilt)


def test_a_run_of_another_shape_or_without_the_index_is_rebuilt_in_full(tmp_path):
    products, predictions = _catalog(), _predictions(_catalog())
    _run(products, predictions, tmp_path, "run-1", 0)
    night_products, night_predictions = _nightly(products, predictions)
    other = _run(night_products, night_predictions, tmp_path, "run-2", 10, threshold=0.6)
    assert other["update"] == {"path": "full", "reason": "taxonomy, settings, models or graph code differ from the live graph's"}
    # the full rebuild takes what the live graph holds from its index; read back from the store, the same changes
    assert other["changes"] == {"added": 1, "changed": 3, "removed": 2, "unchanged": 55}
    (tmp_path / "runs" / "run-2" / f"{INDEX_TABLE}.parquet").unlink()
    again = night_predictions.copy()
    again.loc[again["product_id"] == "p012", "value"] = "milk"
    lost = _run(night_products, again, tmp_path, "run-3", 20, threshold=0.6)
    assert lost["update"] == {"path": "full", "reason": "no index of the live graph's products (run run-2)"}
    assert lost["changes"] == {"added": 0, "changed": 0, "removed": 0, "unchanged": 59}
    many = _catalog().assign(title="Everything renamed")
    broad = _run(many, _predictions(many), tmp_path, "run-4", 30, threshold=0.6)
    # 59 live products renamed or gone (p060), 1 back: more than a quarter to rewrite
    assert broad["update"]["path"] == "full" and "61 of 60 products to rewrite" in broad["update"]["reason"]


def test_a_failed_update_leaves_the_live_graph_as_it_was(tmp_path, monkeypatch):
    from prodkg.kb import graph_update

    products, predictions = _catalog(), _predictions(_catalog())
    live = _run(products, predictions, tmp_path, "run-1", 0)["store"]
    with KnowledgeGraph(tmp_path / "kg").open() as before:
        quads = set(before.quads())
    real = graph_update.apply_update

    def fails_half_way(store, *args, **kwargs):
        real(store, *args, **kwargs)  # the statements are deleted from the checkpoint, then the process fails
        raise OSError("disk full")

    monkeypatch.setattr(graph_update, "apply_update", fails_half_way)
    with pytest.raises(OSError, match="disk full"):
        _run(*_nightly(products, predictions), tmp_path, "run-2", 10)
    kg = KnowledgeGraph(tmp_path / "kg")
    assert str(kg.current_path()) == live
    with kg.open() as after:
        assert set(after.quads()) == quads
    assert not list((tmp_path / "kg" / "stores").glob("*.partial"))


def test_fingerprints_tell_apart_what_the_builders_write_apart():
    frame = pd.DataFrame({"product_id": ["a", "b", "c", "d", "e"], "title": ["1", 1, None, "None", "x"]})
    rows = catalog_fingerprints(frame.astype({"title": object}), [])
    assert rows[["row_fp", "row_fp2"]].drop_duplicates().shape[0] == 5  # "1" and 1, None and "None" differ
    same = catalog_fingerprints(pd.DataFrame({"product_id": ["a"], "title": [np.nan]}), [])
    missing = catalog_fingerprints(pd.DataFrame({"product_id": ["a"], "title": [None]}, dtype=object), [])
    assert same["row_fp"].tolist() == missing["row_fp"].tolist()  # every kind of missing cell is written as nothing
    preds = pd.DataFrame({"product_id": ["a", "a", "b"], "task": "category", "value": ["x", "y", "x"],
                          "confidence": [0.5, 0.25, -0.0], "model": "m"})
    one, other = prediction_fingerprints(preds), prediction_fingerprints(preds.iloc[[1, 0, 2]])
    assert one.set_index("product_id").equals(other.set_index("product_id"))  # the rows' order does not count
    signed = prediction_fingerprints(preds.assign(confidence=[0.5, 0.25, 0.0]))
    assert signed.set_index("product_id").loc["b", "pred_fp"] != one.set_index("product_id").loc["b", "pred_fp"]  # -0.0 is written apart
    assert json.dumps(one["pred_fp"].dtype.name) == '"uint64"'


def test_a_run_that_predicted_nothing_publishes_its_catalog_and_then_updates(tmp_path):
    # no head could be trained (every image refused, say): the predictions table has its columns and no row
    products = _catalog()
    empty = _predictions(products).iloc[:0]
    first = _run(products, empty, tmp_path / "out", "run-1", 0)
    with KnowledgeGraph(tmp_path / "out" / "kg").open() as store:
        ids = set(run_query(store, "product_categories").to_frame()["product_id"]) if len(store) else set()
        assert ids == set()  # no prediction was invented
        assert first["quads"] == len(store) > 0
    night = products[products["product_id"] != "p010"]
    second = _run(night, empty, tmp_path / "out", "run-2", 10)
    assert second["changes"]["removed"] == 1
