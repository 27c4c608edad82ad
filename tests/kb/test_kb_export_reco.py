"""Consumer exports load back in one line: pandas (edges, similar, embeddings, search JSONL), networkx (GraphML), rdflib (RDF)."""

from __future__ import annotations

import json

import networkx as nx
import numpy as np
import pandas as pd
import pytest
from kb_golden import CUP, KETTLE, MUG
from rdflib import Graph

from prodkg.kb.export import export_graph
from prodkg.kb.export_reco import export_for_consumers, similar_products
from prodkg.errors import StoreError


def _naive_top_k(ids, vectors, k):
    out = []
    for i, a in enumerate(vectors):
        if not np.linalg.norm(a):
            continue
        scores = [(float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)), ids[j]) for j, b in enumerate(vectors) if j != i and np.linalg.norm(b)]
        scores.sort(key=lambda s: (-s[0], s[1]))
        out += [(ids[i], sid, s, r) for r, (s, sid) in enumerate(scores[:k], 1)]
    return out


def test_similar_products_matches_a_naive_reference():
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(23, 5)).astype(np.float32)
    vectors[4] = 0  # no embedding: neither a query nor a neighbour
    ids = [f"p{i}" for i in range(23)]
    got = similar_products(ids, vectors, k=3, block=7)
    expected = _naive_top_k(ids, vectors, 3)
    assert [(a, b, r) for a, b, _, r in got.itertuples(index=False)] == [(a, b, r) for a, b, _, r in expected]
    np.testing.assert_allclose(got["score"], [s for _, _, s, _ in expected], rtol=1e-5)
    with pytest.raises(StoreError, match="k must be a positive int"):
        similar_products(ids, vectors, k=0)


def test_edges_export_loads_with_pandas(golden_store, tmp_path):
    n = export_for_consumers(golden_store, "edges", tmp_path / "edges.csv")
    edges = pd.read_csv(tmp_path / "edges.csv")
    assert len(edges) == n
    kettle = edges[edges["product_id"] == KETTLE]
    assert set(zip(kettle["relation"], kettle["target_label"], kettle["origin"], kettle["weight"], kettle["accepted"])) == {
        ("category", "kettle", "catalog", 1.0, True),
        ("brand", "Acme", "catalog", 1.0, True),
        ("category", "kettle", "predicted", 0.4, False),
        ("capacity", "1.7 l", "predicted", 0.8, True),
    }


def test_search_jsonl_has_paths_attributes_and_confidences(golden_store, tmp_path):
    export_for_consumers(golden_store, "search-jsonl", tmp_path / "search.jsonl")
    docs = pd.read_json(tmp_path / "search.jsonl", lines=True).set_index("product_id")
    assert docs.loc[MUG, "category_path"] == ["kitchenware", "drinkware", "mug"]
    assert docs.loc[MUG, "attributes"] == {"capacity": "350 ml", "color": "blue"}
    assert docs.loc[KETTLE, "attributes"] == {"brand": "Acme", "capacity": "1.7 l"}
    assert docs.loc[KETTLE, "attribute_confidences"] == {"capacity": 0.8}
    assert docs.loc[CUP, "category_source"] == "catalog"


def test_similar_and_embeddings_exports_read_the_run_embeddings(golden_store, tmp_path):
    vectors = [np.array([1, 0, 0], np.float32), np.array([0.9, 0.1, 0], np.float32), np.array([0, 0, 1], np.float32)]
    pd.DataFrame({"product_id": [MUG, CUP, KETTLE], "vector": vectors}).to_parquet(tmp_path / "emb.parquet")
    export_for_consumers(golden_store, "similar", tmp_path / "similar.parquet", embeddings=tmp_path / "emb.parquet", k=1)
    similar = pd.read_parquet(tmp_path / "similar.parquet")
    assert dict(zip(similar["product_id"], similar["similar_id"])) == {MUG: CUP, CUP: MUG, KETTLE: MUG}
    export_for_consumers(golden_store, "embeddings", tmp_path / "out.parquet", embeddings=tmp_path / "emb.parquet")
    back = pd.read_parquet(tmp_path / "out.parquet")
    np.testing.assert_allclose(np.stack(back["vector"]), np.stack(vectors))
    with pytest.raises(StoreError, match="needs the run's embeddings.parquet"):
        export_for_consumers(golden_store, "similar", tmp_path / "x.parquet", embeddings=tmp_path / "missing.parquet")


@pytest.mark.parametrize(("fmt", "rdflib_format"), [("nt", "nt"), ("ttl", "turtle"), ("jsonld", "json-ld")])
def test_rdf_exports_load_with_rdflib(golden_store, tmp_path, fmt, rdflib_format):
    n = export_graph(golden_store, tmp_path / f"kg.{fmt}")
    assert len(Graph().parse(tmp_path / f"kg.{fmt}", format=rdflib_format)) == n


def test_graphml_export_loads_with_networkx(golden_store, tmp_path):
    export_graph(golden_store, tmp_path / "kg.graphml")
    G = nx.read_graphml(tmp_path / "kg.graphml")
    assert G.number_of_nodes() > 10 and any("mug" in json.dumps(d) for _, d in G.nodes(data=True))
