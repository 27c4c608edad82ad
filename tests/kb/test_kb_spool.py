"""The batched spool build: the same statements and errors as one call of the builders on the whole frames."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pyoxigraph as ox
import pytest
from rdflib import Dataset
from rdflib.compare import isomorphic

from prodkg.errors import StageError
from prodkg.kb.frame_nquads import catalog_nquads, prediction_nquads
from prodkg.kb.incremental import change_quads, diff_index, diff_products, product_hashes
from prodkg.kb.iri import mint
from prodkg.kb.nquads import encode_quads
from prodkg.kb.spool import build_spool, change_nquads
from prodkg.kb.triples import ModelInfo, RunInfo, catalog_quads

RUN = RunInfo(run_id="run 7", started=datetime(2024, 5, 1, 12, tzinfo=UTC), ended=datetime(2024, 5, 1, 13, tzinfo=UTC),
              catalog="shop", method="dann", models=[ModelInfo("head v1", "head", "head")])
ODD = ['a"b', "line\nbreak", "日本語", "..", "x/y#z", "emoji 🍵", "tab\there"]


def _frames(n: int = 23) -> tuple[pd.DataFrame, pd.DataFrame]:
    ids = [f"p {i}" if i % 5 else f"p/{ODD[i % len(ODD)]}" for i in range(n)]
    products = pd.DataFrame({
        "product_id": ids,
        "title": [f"Title {ODD[i % len(ODD)]} {i}" for i in range(n)],
        "description": [ODD[i % len(ODD)] if i % 3 else None for i in range(n)],
        "domain": ["shop" if i % 2 else "feed" for i in range(n)],
        "category": [["mug", "cup", "jar"][i % 3] if i % 4 else None for i in range(n)],
        "brand": ["Acme" if i % 2 else None for i in range(n)],  # a node shared by products of several batches
        "volume": ["2 l" if i % 3 == 0 else "tall" for i in range(n)],
    })
    rng = np.random.default_rng(5)
    rows = [{"product_id": pid, "task": "category", "value": ["mug", "cup", "jar"][i % 3], "confidence": float(rng.uniform()),
             "model": "head v1" if i % 2 else "head v2"} for i, pid in enumerate(ids)]
    rows += [{"product_id": "not in the catalog", "task": "category", "value": "jar", "confidence": 0.9, "model": "head v3"}]
    # the predictions come in an order unrelated to the catalog's
    predictions = pd.DataFrame(rows).sample(frac=1.0, random_state=1).reset_index(drop=True)
    return products, predictions


def _store(data: bytes) -> set:
    store = ox.Store()
    store.load(input=data, format=ox.RdfFormat.N_QUADS)
    return set(store)


def _one_shot(products, predictions) -> bytes:
    catalog = catalog_nquads(products, catalog="shop", attributes=["brand", "volume"], scheme="kitchen", content_hash=True)
    predicted = prediction_nquads(predictions, RUN, catalog="shop", scheme="kitchen", threshold=0.5)
    return b"".join([*catalog.chunks, *predicted.chunks])


def _spool(tmp_path, products, predictions, batch):
    return build_spool(tmp_path / "spool.nq", products, predictions, RUN, catalog="shop", attributes=["brand", "volume"],
                       scheme="kitchen", threshold=0.5, batch=batch)


@pytest.mark.parametrize("batch", [1, 4, 10, 1000])
def test_batched_spool_holds_the_statements_of_the_one_shot_build(tmp_path, batch):
    products, predictions = _frames()
    spool = _spool(tmp_path, products, predictions, batch)
    assert spool.batches == -(-len(products) // batch) + (1 if batch < len(products) else 0)  # + the orphan prediction's batch
    expected = _store(_one_shot(products, predictions))
    assert len(expected) > 300
    assert _store(spool.path.read_bytes()) == expected
    # the loader's pieces end at line ends and add up to the file
    pieces = list(spool.chunks(size=97))
    assert all(p.endswith(b"\n") for p in pieces) and b"".join(pieces) == spool.path.read_bytes()
    # the index is what product_hashes reads from the rdflib builder's quads
    rdflib_quads = catalog_quads(products, catalog="shop", attributes=["brand", "volume"], scheme="kitchen", content_hash=True)
    assert spool.hashes() == product_hashes(rdflib_quads)
    spool.remove()
    assert not spool.path.exists()


def test_a_batch_the_builders_refuse_raises_their_error_about_the_whole_frame(tmp_path):
    products, predictions = _frames()
    products["product_id"] = products["product_id"].astype(object)
    products.loc[17, "product_id"] = 1.5  # an id of the wrong type, in the fourth batch of five
    with pytest.raises(StageError) as one_shot:
        catalog_quads(products, catalog="shop", attributes=["brand", "volume"], scheme="kitchen", content_hash=True)
    assert "row 17" in str(one_shot.value)
    with pytest.raises(StageError) as batched:
        _spool(tmp_path, products, predictions, 5)
    assert str(batched.value) == str(one_shot.value)
    assert not (tmp_path / "spool.nq").exists()


def test_repeated_ids_across_batches_are_refused_as_the_one_shot_build_refuses_them(tmp_path):
    products, predictions = _frames()
    products.loc[20, "product_id"] = products.loc[2, "product_id"]
    with pytest.raises(StageError, match=r"duplicate product_id .*\(row 20\)"):
        _spool(tmp_path, products, predictions, 5)


def test_change_records_written_column_wise_are_change_quads(tmp_path):
    before = {mint("product", "shop", f"p {i}"): (f"p {i}", f"h{i}") for i in range(6)}
    before[mint("product", "old feed", "x/1")] = ("x/1", "h")  # removed from another catalog
    now = {mint("product", "shop", f"p {i}"): (f"p {i}", f"h{i}" if i != 2 else "new") for i in range(1, 8)}
    table = lambda h: pd.DataFrame([(str(p), i, d) for p, (i, d) in h.items()], columns=["product", "product_id", "content_hash"])
    counts, records = diff_index(table(before), table(now), catalog="shop")
    changes = diff_products(before, now)
    assert counts == changes.counts() == {"added": 2, "changed": 1, "removed": 2, "unchanged": 4}
    assert list(records["product"]) == [str(p) for p in [*changes.added, *changes.changed, *changes.removed]]
    chunks, n = change_nquads("run 7", records)
    expected = change_quads("run 7", "shop", changes, before, now)
    assert n == len(expected) == 25
    # no blank nodes: the same graph is the same set of quads (read by rdflib's parser, independent of the store's)
    built, reference = Dataset(), Dataset()
    built.parse(data=b"".join(chunks).decode(), format="nquads")
    reference.parse(data=b"".join(encode_quads(expected)).decode(), format="nquads")
    assert set(built.quads()) == set(reference.quads()) and len(set(built.quads())) == 25
    assert diff_index(None, table(now), catalog="shop")[0] == diff_products(None, now).counts() == {
        "added": 7, "changed": 0, "removed": 0, "unchanged": 0}


def test_graph_stage_in_small_batches_publishes_the_graph_of_one_batch(tmp_path, monkeypatch):
    from prodkg.kb import spool as spool_module
    from prodkg.kb.incremental import content_graph
    from prodkg.kb.publish import GraphSettings, graph_stage
    from prodkg.kb.store import KnowledgeGraph
    from prodkg.layout import RunLayout

    products, predictions = _frames()
    predictions = predictions[predictions["product_id"] != "not in the catalog"]  # the shapes refuse it, rightly
    taxonomy = [("mug", None), ("cup", None), ("jar", None)]

    def run(out, batch):
        monkeypatch.setattr(spool_module, "BATCH_PRODUCTS", batch)
        result = graph_stage(products, predictions, taxonomy, ["brand", "volume"], RUN, GraphSettings(threshold=0.5), "shop",
                             layout=RunLayout(out))
        assert not list((out / "kg").glob(".spool*"))  # the spool file is gone once the store holds its statements
        return result

    small, whole = run(tmp_path / "small", 4), run(tmp_path / "whole", 10_000)
    assert small["quads"] == whole["quads"] > 300
    assert small["changes"] == whole["changes"] == {"added": 23, "changed": 0, "removed": 0, "unchanged": 0}
    with KnowledgeGraph(tmp_path / "small" / "kg").open() as a, KnowledgeGraph(tmp_path / "whole" / "kg").open() as b:
        assert set(a._open()) == set(b._open())
        assert isomorphic(content_graph(a), content_graph(b))
