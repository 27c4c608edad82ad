"""Incremental publishing through the real graph stage: change records, retraction, equality with a full rebuild, SHACL gate."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rdflib.compare import isomorphic

from prodkg.kb.publish import GraphSettings, graph_stage
from prodkg.layout import RunLayout
from prodkg.kb.incremental import content_graph
from prodkg.kb.queries import run_query
from prodkg.kb.store import KnowledgeGraph
from prodkg.kb.triples import ModelInfo, RunInfo
from prodkg.errors import StageError

TAXONOMY = [("food", None), ("fruit", "food"), ("apple", "fruit"), ("pear", "fruit"), ("dairy", "food"), ("milk", "dairy")]


def _catalog(n: int = 12) -> pd.DataFrame:
    labels = ["apple", "pear", "milk"]
    return pd.DataFrame(
        {
            "product_id": [f"p{i:02d}" for i in range(n)],
            "title": [f"Product {i}" for i in range(n)],
            "description": [f"about product {i}" for i in range(n)],
            "image": [None] * n,
            "domain": ["shop" if i < n // 2 else "store" for i in range(n)],
            "category": [labels[i % 3] if i < n // 2 else None for i in range(n)],
            "manufacturer": ["ARLA" if i % 3 == 2 else None for i in range(n)],
            "volume": ["1 l" if i % 3 == 2 else "180 g" for i in range(n)],
        }
    )


def _predictions(products: pd.DataFrame) -> pd.DataFrame:
    target = products[products["domain"] == "store"]["product_id"].tolist()
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "product_id": target,
            "task": "category",
            "value": [["apple", "pear", "milk"][int(pid[1:]) % 3] for pid in target],
            "confidence": rng.uniform(0.2, 0.95, len(target)).round(3),
            "model": "category/dann/abc",
        }
    )


def _run(products, out, run_id, minute):
    info = RunInfo(
        run_id, datetime(2024, 6, 1, 2, minute, tzinfo=UTC), datetime(2024, 6, 1, 2, minute + 1, tzinfo=UTC), "shop", "dann",
        ["shop"], ["store"], [ModelInfo("category/dann/abc", "category head (dann)", "head")], "config-0.5",
    )
    return graph_stage(products, _predictions(products), TAXONOMY, ["manufacturer", "volume"], info, GraphSettings(threshold=0.5), "shop",
                       layout=RunLayout(out))


def _changed_catalog():
    products = _catalog()
    products = products[~products["product_id"].isin(["p00", "p07"])].copy()  # removed
    products.loc[products["product_id"].isin(["p01", "p08"]), "title"] = "Renamed"  # changed
    extra = _catalog(14).iloc[[13]]  # added (a target product)
    return pd.concat([products, extra], ignore_index=True)


_RUN_GRAPH_PREFIX = "https://example.org/prodkg/graph/run/"


def _non_run_quads(store) -> set:
    """Every quad outside the run graphs (catalog and taxonomy graphs), as stored."""
    return {(s, p, o, g) for s, p, o, g in store.quads() if not str(g).startswith(_RUN_GRAPH_PREFIX)}


def _predictions_without_run(store) -> set:
    rows = store.query(f"""SELECT ?product ?task ?predicate ?object ?confidence ?model WHERE {{
        GRAPH ?g {{ ?x a pkg:Prediction ; pkg:subject ?product ; pkg:task ?task ; pkg:predicate ?predicate ;
                    pkg:object ?object ; pkg:confidence ?confidence ; pkg:model ?model }}
        FILTER(STRSTARTS(STR(?g), "{_RUN_GRAPH_PREFIX}")) }}""").rows
    return {tuple(str(v) for v in row) for row in rows}


def _accepted_facts(store) -> set:
    rows = store.query(f"""SELECT ?product ?concept WHERE {{ GRAPH ?g {{ ?product schema:category ?concept }}
        FILTER(STRSTARTS(STR(?g), "{_RUN_GRAPH_PREFIX}")) }}""").rows
    return {(str(a), str(b)) for a, b in rows}


def test_incremental_run_equals_a_full_rebuild_and_lists_what_changed(tmp_path):
    first = _run(_catalog(), tmp_path / "inc", "run-1", 0)
    assert first["changes"] == {"added": 12, "changed": 0, "removed": 0, "unchanged": 0}
    second = _run(_changed_catalog(), tmp_path / "inc", "run-2", 10)
    assert second["changes"] == {"added": 1, "changed": 2, "removed": 2, "unchanged": 8}
    _run(_changed_catalog(), tmp_path / "full", "run-9", 30)

    with KnowledgeGraph(tmp_path / "inc" / "kg").open() as inc, KnowledgeGraph(tmp_path / "full" / "kg").open() as full:
        changes = [tuple(r.values()) for r in run_query(inc, "what_changed").to_frame().to_dict("records")]
        assert changes == [("p13", "added", "run-2"), ("p01", "changed", "run-2"), ("p08", "changed", "run-2"),
                           ("p00", "removed", "run-2"), ("p07", "removed", "run-2")]
        # removed products are retracted, not described any more
        assert inc.query("ASK { ?p schema:productID 'p00' }").boolean is False
        inc_content, full_content = content_graph(inc), content_graph(full)
        assert len(inc_content) > 100
        assert isomorphic(inc_content, full_content)
        # The same, without content_graph (the code under test): the catalog and taxonomy graphs carry no run
        # id, so their quads must be equal as they are; predictions and accepted facts, read by a query that
        # leaves out the run that made them, must be equal too.
        assert _non_run_quads(inc) == _non_run_quads(full) and len(_non_run_quads(inc)) > 100
        assert _predictions_without_run(inc) == _predictions_without_run(full)
        assert len(_predictions_without_run(inc)) == 6  # store products p06, p08-p11 (p07 removed) and p13 (added)
        assert _accepted_facts(inc) == _accepted_facts(full) and _accepted_facts(inc)
    # and the comparison is not vacuous: the first run's content differs from the rebuild's
    _run(_catalog(), tmp_path / "first", "run-1", 0)
    with KnowledgeGraph(tmp_path / "first" / "kg").open() as first_kg, KnowledgeGraph(tmp_path / "full" / "kg").open() as full:
        assert _non_run_quads(first_kg) != _non_run_quads(full)
        assert not isomorphic(content_graph(first_kg), content_graph(full))
    with KnowledgeGraph(tmp_path / "inc" / "kg").open() as inc:
        volumes = inc.query(
            "SELECT ?value ?code WHERE { ?p schema:productID 'p02' ; pkg:volume ?q . ?q schema:value ?value ; schema:unitCode ?code }"
        ).rows
        assert [(float(v.toPython()), str(c)) for v, c in volumes] == [(1.0, "LTR")]


def test_content_differs_when_the_catalog_does(tmp_path):
    _run(_catalog(), tmp_path / "a", "run-1", 0)
    _run(_changed_catalog(), tmp_path / "b", "run-1", 0)
    with KnowledgeGraph(tmp_path / "a" / "kg").open() as a, KnowledgeGraph(tmp_path / "b" / "kg").open() as b:
        assert not isomorphic(content_graph(a), content_graph(b))


def test_a_graph_violating_the_shapes_does_not_replace_the_last_good_one(tmp_path, monkeypatch):
    from rdflib import Graph

    import prodkg.kb.validation as validation

    live = _run(_catalog(), tmp_path, "run-1", 0)["store"]
    strict = Graph().parse(
        data="""@prefix sh: <http://www.w3.org/ns/shacl#> . @prefix schema: <https://schema.org/> .
        <urn:shape:gtin> a sh:NodeShape ; sh:targetClass schema:Product ;
            sh:property [ sh:path schema:gtin ; sh:minCount 1 ] .""",
        format="turtle",
    )
    monkeypatch.setattr(validation, "load_shapes", lambda: strict)
    with pytest.raises(StageError, match=r"not published.*11 SHACL violation\(s\).*gtin"):
        _run(_changed_catalog(), tmp_path, "run-2", 10)
    assert str(KnowledgeGraph(tmp_path / "kg").current_path()) == live
    assert "gtin" in (tmp_path / "runs" / "run-2" / "shacl_report.txt").read_text(encoding="utf-8")


def test_cli_exports_from_a_published_run(tmp_path):
    from types import SimpleNamespace

    from prodkg.flows.cli import main

    products = _catalog()
    rng = np.random.default_rng(0)
    features = SimpleNamespace(blocks={"text": rng.normal(size=(len(products), 8))}, present={"text": np.ones(len(products), bool)})
    info = RunInfo("run-1", datetime(2024, 6, 1, tzinfo=UTC), None, "shop", "dann", ["shop"], ["store"])
    graph_stage(products, _predictions(products), TAXONOMY, ["manufacturer", "volume"], info, GraphSettings(threshold=0.5), "shop",
                layout=RunLayout(tmp_path), features=features)
    for fmt, name in [("similar", "similar.csv"), ("edges", "edges.parquet"), ("embeddings", "emb.parquet"), ("search-jsonl", "s.jsonl")]:
        assert main(["export", "--out", str(tmp_path), "--format", fmt, "--output", str(tmp_path / name), "--k", "3"]) == 0
    assert len(pd.read_csv(tmp_path / "similar.csv")) == 3 * len(products)
    assert len(pd.read_parquet(tmp_path / "emb.parquet")) == len(products)
    docs = pd.read_json(tmp_path / "s.jsonl", lines=True).set_index("product_id")
    assert docs.loc["p02", "category_path"] == ["food", "dairy", "milk"]
    assert docs.loc["p02", "attributes"] == {"manufacturer": "ARLA", "volume": "1 l"}
    edges = pd.read_parquet(tmp_path / "edges.parquet")
    assert set(edges.loc[edges["product_id"] == "p08", "origin"]) == {"predicted", "catalog"}


def test_unchanged_rerun_republishes_the_live_content_with_its_own_provenance(tmp_path):
    first = _run(_catalog(), tmp_path / "inc", "run-1", 0)
    first_store = first["store"]
    second = _run(_catalog(), tmp_path / "inc", "run-2", 10)
    assert second["reused_graph_of"] == "run-1"
    assert second["changes"] == {"added": 0, "changed": 0, "removed": 0, "unchanged": 12}
    assert second["store"] != first_store
    kg = KnowledgeGraph(tmp_path / "inc" / "kg")
    assert kg.current_path() == Path(second["store"])
    # a full rebuild from the same inputs under the second run's id: same content
    _run(_catalog(), tmp_path / "full", "run-2", 10)
    with kg.open() as inc, KnowledgeGraph(tmp_path / "full" / "kg").open() as full:
        assert second["quads"] == len(inc)
        assert isomorphic(content_graph(inc), content_graph(full))
        # the last run changed nothing; the predictions stay those of the run that made them
        assert run_query(inc, "what_changed").rows == []
        generated_by = inc.query("SELECT DISTINCT ?id WHERE { ?x a pkg:Prediction ; prov:wasGeneratedBy ?r . ?r pkg:runId ?id }")
        assert generated_by.column("id") == ["run-1"]
        informed = inc.query("SELECT ?id WHERE { ?r prov:wasInformedBy ?by . ?r pkg:runId ?id . ?by pkg:runId 'run-1' }")
        assert informed.column("id") == ["run-2"]
    # a third unchanged run still reuses run-1's content; a changed catalog rebuilds in full
    assert _run(_catalog(), tmp_path / "inc", "run-3", 20)["reused_graph_of"] == "run-1"
    changed = _run(_changed_catalog(), tmp_path / "inc", "run-4", 30)
    assert "reused_graph_of" not in changed
    assert changed["changes"] == {"added": 1, "changed": 2, "removed": 2, "unchanged": 8}
    with kg.open() as inc:
        assert [tuple(r.values()) for r in run_query(inc, "what_changed", change="added").to_frame().to_dict("records")] == [
            ("p13", "added", "run-4")
        ]


def test_a_changed_threshold_is_a_changed_graph(tmp_path):
    _run(_catalog(), tmp_path, "run-1", 0)
    info = RunInfo("run-2", datetime(2024, 6, 1, 3, tzinfo=UTC), None, "shop", "dann", ["shop"], ["store"],
                   [ModelInfo("category/dann/abc", "category head (dann)", "head")], "config-0.9")
    result = graph_stage(_catalog(), _predictions(_catalog()), TAXONOMY, ["manufacturer", "volume"], info, GraphSettings(threshold=0.9), "shop",
                         layout=RunLayout(tmp_path))
    assert "reused_graph_of" not in result


def test_a_retried_graph_stage_does_not_publish_the_same_run_twice(tmp_path):
    first = _run(_catalog(), tmp_path, "run-1", 0)
    again = _run(_catalog(), tmp_path, "run-1", 0)  # what a retry after a failed server mirror does
    assert again["store"] == first["store"]
    assert again["changes"] == {"added": 12, "changed": 0, "removed": 0}


def test_change_records_of_one_product_id_in_two_catalogs_never_collide():
    from prodkg.kb.incremental import ChangeSet, change_quads
    from prodkg.kb.iri import mint
    from prodkg.kb.vocab import PKG

    old, new = mint("product", "feed_2026-11-30", "SUP-1"), mint("product", "feed_2026-12-01", "SUP-1")
    changes = ChangeSet(added=[new], removed=[old])
    quads = change_quads("run-2", "feed_2026-12-01", changes, {old: ("SUP-1", "h")}, {new: ("SUP-1", "h")})
    records = {s for s, p, o, _ in quads if p == PKG.changeType}
    assert len(records) == 2  # one 'added', one 'removed': two nodes, one change type each
    types = {str(o) for s, p, o, _ in quads if p == PKG.changeType}
    assert types == {"added", "removed"}
    # the removed product's record names its own catalog
    assert any("removed/feed_2026-11-30/SUP-1" in str(s) for s in records)


def test_handed_features_are_released_once_the_embeddings_are_written(tmp_path):
    from prodkg.adaptation import MultiModal
    from prodkg.kb.publish import FeatureHandoff

    products = _catalog()
    rng = np.random.default_rng(1)
    features = MultiModal.complete(text=rng.normal(size=(len(products), 8)).astype(np.float32))
    info = RunInfo("run-1", datetime(2024, 6, 1, tzinfo=UTC), None, "shop", "dann", ["shop"], ["store"])

    def stage(out, feats):
        return graph_stage(products, _predictions(products), TAXONOMY, ["manufacturer", "volume"], info, GraphSettings(threshold=0.5), "shop",
                           layout=RunLayout(out), features=feats)

    stage(tmp_path / "plain", features)
    handoff = FeatureHandoff(features)
    stage(tmp_path / "handed", handoff)
    assert handoff.features is None  # let go of before the store's load
    emb = {k: pd.read_parquet(tmp_path / k / "runs" / "run-1" / "embeddings.parquet") for k in ("plain", "handed")}
    assert emb["plain"]["product_id"].tolist() == emb["handed"]["product_id"].tolist()
    np.testing.assert_array_equal(np.stack(emb["plain"]["vector"]), np.stack(emb["handed"]["vector"]))
    with KnowledgeGraph(tmp_path / "plain" / "kg").open() as a, KnowledgeGraph(tmp_path / "handed" / "kg").open() as b:
        assert isomorphic(content_graph(a), content_graph(b))  # the same input digest and content
    # a retry of the stage after its publish finds the features released and the graph published
    assert "earlier attempt" in stage(tmp_path / "handed", handoff)["shacl"]
    # released before any embeddings were written: refused, not published without them
    with pytest.raises(StageError, match="released"):
        stage(tmp_path / "fresh", handoff)
    assert KnowledgeGraph(tmp_path / "fresh" / "kg").current_path() is None
