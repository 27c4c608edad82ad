"""Exports that describe themselves: one id name, provenance in every format that can carry it, checked extensions,
and the README's loaders, run on every format."""

from __future__ import annotations

import json
import re
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from kb_golden import CUP, KETTLE, MUG

from prodkg.errors import ConfigError
from prodkg.kb.export import check_output, export_graph
from prodkg.kb.export_reco import export_for_consumers

README = Path(__file__).resolve().parents[2] / "README.md"


def test_search_documents_use_product_id_and_carry_image_model_and_run(golden_store, tmp_path):
    export_for_consumers(golden_store, "search-jsonl", tmp_path / "s.jsonl")
    docs = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text(encoding="utf-8").splitlines()]
    assert all("product_id" in d and "id" not in d for d in docs)
    by_id = {d["product_id"]: d for d in docs}
    assert by_id[MUG]["image"] == "img/mug 1.jpg"
    assert by_id[MUG]["run_id"] == "run-1"
    assert by_id[KETTLE]["attribute_models"] == {"capacity": "head-v1"}
    predicted = [d for d in docs if d["category_source"] == "predicted"]
    assert all(d["category_model"] == "head-v1" for d in predicted)
    assert all(d["category_model"] is None for d in docs if d["category_source"] == "catalog")


def test_edges_carry_model_and_run_of_predictions(golden_store, tmp_path):
    export_for_consumers(golden_store, "edges", tmp_path / "e.parquet")
    edges = pd.read_parquet(tmp_path / "e.parquet")
    predicted = edges[edges["origin"] == "predicted"]
    assert len(predicted) and set(predicted["model"]) == {"head-v1"} and set(predicted["run_id"]) == {"run-1"}
    assert edges.loc[edges["origin"] == "catalog", "model"].isna().all()


def test_graphml_edges_say_asserted_or_predicted(golden_store, tmp_path):
    export_graph(golden_store, tmp_path / "kg.graphml")
    G = nx.read_graphml(tmp_path / "kg.graphml")
    edges = [d for _, _, d in G.edges(data=True)]
    assert all("origin" in d and "graph" in d for d in edges)
    categories = [d for d in edges if d["predicate"] == "https://schema.org/category"]
    asserted = [d for d in categories if d["origin"] == "asserted"]
    predicted = [d for d in categories if d["origin"] == "predicted"]
    assert asserted and all("/graph/catalog/" in d["graph"] and "confidence" not in d for d in asserted)
    assert predicted and all(d["confidence"] == 0.75 and d["model"] == "head-v1" and d["run_id"] == "run-1" for d in predicted)


def test_embeddings_export_keeps_encoder_layout_metadata(golden_store, tmp_path):
    from types import SimpleNamespace

    from prodkg.kb.publish import embeddings_metadata, write_embeddings

    features = SimpleNamespace(blocks={"image": np.ones((3, 4), np.float32), "text": np.ones((3, 2), np.float32)},
                               present={"image": np.ones(3, bool), "text": np.array([True, False, True])})
    products = pd.DataFrame({"product_id": [MUG, CUP, KETTLE]})
    meta = embeddings_metadata(features, "run-1", {"image": "efficientnet_lite0/abc", "text": "minilm/def"})
    write_embeddings(products, features, tmp_path / "run.parquet", meta)
    export_for_consumers(golden_store, "embeddings", tmp_path / "emb.parquet", embeddings=tmp_path / "run.parquet")
    got = {k.decode(): v.decode() for k, v in pq.read_schema(tmp_path / "emb.parquet").metadata.items()}
    assert got["prodkg.run_id"] == "run-1"
    assert json.loads(got["prodkg.layout"]) == [
        {"modality": "image", "start": 0, "dim": 4, "encoder_id": "efficientnet_lite0/abc"},
        {"modality": "text", "start": 4, "dim": 2, "encoder_id": "minilm/def"},
    ]


@pytest.mark.parametrize(("fmt", "name"), [("embeddings", "emb.csv"), ("ttl", "x.nt"), ("nq", "x.trig"), ("search-jsonl", "s.json"),
                                           ("graphml", "g.ttl")])
def test_output_extension_must_match_the_format(fmt, name):
    with pytest.raises(ConfigError, match="does not end in"):
        check_output(fmt, name, flatten=True)


@pytest.mark.parametrize("fmt", ["nt", "ttl", "jsonld"])
def test_flattening_formats_need_the_flag(fmt):
    with pytest.raises(ConfigError, match="--flatten"):
        check_output(fmt, f"x.{fmt}")
    check_output(fmt, f"x.{fmt}", flatten=True)
    check_output("trig", "x.trig")


def test_cli_refuses_a_mismatched_extension_with_exit_2(tmp_path, capsys):
    from prodkg.flows.cli import main

    assert main(["export", "--out", str(tmp_path), "--format", "embeddings", "--output", str(tmp_path / "emb.csv")]) == 2
    assert "does not end in .parquet" in capsys.readouterr().err
    assert not (tmp_path / "emb.csv").exists()


def _readme_loaders() -> dict:
    text = README.read_text(encoding="utf-8")
    block = re.search(r"<!-- export-loaders -->\s*```python\n(.*?)```", text, re.DOTALL)
    assert block, "README lost its export-loaders block"
    namespace: dict = {}
    exec(block.group(1), namespace)  # noqa: S102 - the README's own code, run as a user would
    return namespace["loaders"]


def test_readme_loaders_read_every_export(golden_store, tmp_path):
    loaders = _readme_loaders()
    files = {"nq": "kg.nq", "trig": "kg.trig", "nt": "kg.nt", "ttl": "kg.ttl", "jsonld": "kg.jsonld", "graphml": "kg.graphml"}
    for fmt, name in files.items():
        n = export_graph(golden_store, tmp_path / name, fmt)
        loaded = loaders[fmt](tmp_path / name)
        if fmt in ("nq", "trig"):
            assert sum(1 for _ in loaded.quads()) == n > 0, fmt
        elif fmt == "graphml":
            assert loaded.number_of_edges() > 0
        else:
            assert len(loaded) == n > 0, fmt
    pd.DataFrame({"product_id": [MUG, CUP, KETTLE], "vector": [np.eye(3, dtype=np.float32)[i] for i in range(3)]}).to_parquet(tmp_path / "r.parquet")
    for fmt, name in {"similar": "sim.parquet", "edges": "edges.parquet", "embeddings": "emb.parquet", "search-jsonl": "s.jsonl"}.items():
        n = export_for_consumers(golden_store, fmt, tmp_path / name, embeddings=tmp_path / "r.parquet", k=1)
        loaded = loaders[fmt](tmp_path / name)
        frame = loaded[0] if isinstance(loaded, tuple) else loaded
        assert len(frame) == n > 0, fmt
        assert "product_id" in frame.columns, fmt
    assert set(loaders) == set(files) | {"similar", "edges", "embeddings", "search-jsonl"}
