"""The unchanged re-run fast path: same inputs by digest, size and mtime → republish without reading them again."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest
from rdflib.compare import isomorphic

from prodkg.flows.config import load_config
from prodkg.flows.pipeline import run_pipeline
from prodkg.kb.incremental import content_graph
from prodkg.kb.store import KnowledgeGraph

# three to four text-only runs of a small catalog
pytestmark = [pytest.mark.slow, pytest.mark.dataset]


@pytest.fixture
def text_catalog(tmp_path, sample_catalog):
    frame = pd.read_csv(sample_catalog, dtype=str, keep_default_na=False)
    frame["image"] = ""
    path = tmp_path / "catalog.csv"
    frame.to_csv(path, index=False)
    return path


def _cfg(catalog, out, **extra):
    return load_config(catalog=str(catalog), source=["webshop"], target=["supplier"], method="source_only", baseline=None, epochs=3,
                       out=str(out), use_prefect=False, progress=False, **extra)


def _content(out):
    with KnowledgeGraph(out / "kg").open(read_only=True) as store:
        return content_graph(store)


def test_unchanged_rerun_takes_the_fast_path_and_publishes_the_same_content(text_catalog, tmp_path):
    out = tmp_path / "out"
    first = run_pipeline(_cfg(text_catalog, out))
    assert "fast_path" not in first
    before = _content(out)

    second = run_pipeline(_cfg(text_catalog, out))
    assert second["fast_path"]["reused_run"] == first["run_id"]
    assert set(first) <= set(second)  # the summary a caller reads is complete (values as the manifest stored them)
    assert second["graph_reused_from"] == first["run_id"]
    assert second["features"]["text"]["computed"] == 0 and second["counts"] == {**first["counts"], "quads": second["counts"]["quads"]}
    assert isomorphic(before, _content(out))
    run_dir = out / "runs" / second["run_id"]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["stat_signature"] and manifest["fast_path"]["reused_run"] == first["run_id"]
    assert pd.read_parquet(run_dir / "predictions.parquet").equals(pd.read_parquet(out / "runs" / first["run_id"] / "predictions.parquet"))
    with KnowledgeGraph(out / "kg").open(read_only=True) as store:  # the re-run's provenance is published
        assert store.query("ASK { ?run pkg:runId ?id }", {"id": second["run_id"]}).boolean

    # --full-check reads everything again (features from the cache) and publishes the same content
    third = run_pipeline(_cfg(text_catalog, out, full_check=True))
    assert "fast_path" not in third and third["features"]["text"]["cached"] == first["counts"]["products"]
    assert isomorphic(before, _content(out))

    # a changed catalog (same size, new mtime and digest) is never taken for unchanged
    frame = pd.read_csv(text_catalog, dtype=str, keep_default_na=False)
    frame.loc[0, "title"] = frame.loc[0, "title"] + " v2"
    frame.to_csv(text_catalog, index=False)
    fourth = run_pipeline(_cfg(text_catalog, out))
    assert "fast_path" not in fourth and fourth["changes"]["changed"] == 1


def test_a_touched_image_or_another_config_is_not_unchanged(tmp_path):
    from prodkg.flows.fastpath import stat_signature

    image = tmp_path / "a.jpg"
    image.write_bytes(b"x" * 10)
    catalog = tmp_path / "c.csv"
    catalog.write_text("product_id,title,description,image,domain\n1,a,,a.jpg,webshop\n2,b,,,supplier\n")
    cfg = _cfg(catalog, tmp_path / "out")
    sig = stat_signature(cfg, [str(image)])
    assert sig and sig == stat_signature(cfg, [str(image)])
    os.utime(image, ns=(1, 1))
    assert stat_signature(cfg, [str(image)]) != sig
    assert stat_signature(_cfg(catalog, tmp_path / "out", seed=3), [str(image)]) != stat_signature(cfg, [str(image)])
    assert stat_signature(cfg, ["https://example.org/a.jpg"]) is None  # a URL: no cheap check, so no fast path
    assert stat_signature(_cfg(catalog, tmp_path / "out", reuse_heads=False), [str(image)]) is None
