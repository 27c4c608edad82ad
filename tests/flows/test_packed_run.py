"""A photo on a third of the products: the run holds it packed, and publishes exactly what it did when it was dense."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from prodkg.flows.config import load_config
from prodkg.flows.pipeline import run_pipeline

pytestmark = pytest.mark.slow  # two whole runs of the sample catalog: ~30 s


@pytest.fixture(scope="module")
def sparse_sample(sample_catalog, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sparse")
    shutil.copytree(sample_catalog.parent / "images", folder / "images")
    frame = pd.read_csv(sample_catalog)
    frame.loc[np.arange(len(frame)) % 3 != 0, "image"] = ""  # every third product keeps its photo
    path = folder / "catalog.csv"
    frame.to_csv(path, index=False)
    return path


def _run(catalog: Path, out: Path) -> tuple[pd.DataFrame, np.ndarray, dict]:
    summary = run_pipeline(load_config(catalog=str(catalog), source=["webshop"], target=["supplier"], out=str(out), use_prefect=False,
                                       progress=False, epochs=5))
    (run,) = sorted((out / "runs").iterdir())[-1:]
    predictions = pd.read_parquet(run / "predictions.parquet").sort_values(["product_id", "task", "level", "value"]).reset_index(drop=True)
    vectors = np.stack(pq.read_table(run / "embeddings.parquet").column("vector").to_numpy(zero_copy_only=False))
    return predictions, vectors, summary


def test_packed_and_dense_photo_blocks_give_the_same_run(sparse_sample, tmp_path, monkeypatch):
    from prodkg.extractors import stage

    seen = []
    assemble = stage.assemble_features

    def spy(*args, **kwargs):
        out = assemble(*args, **kwargs)
        seen.append(type(out.features.blocks["image"]).__name__)
        return out

    monkeypatch.setattr(stage, "assemble_features", spy)
    packed = _run(sparse_sample, tmp_path / "packed")
    monkeypatch.setattr(stage, "PACK_AT_MOST", 0.0)  # never packed
    dense = _run(sparse_sample, tmp_path / "dense")
    assert seen == ["PackedBlock", "ndarray"]
    pd.testing.assert_frame_equal(packed[0], dense[0])
    np.testing.assert_array_equal(packed[1], dense[1])
    assert packed[2]["features"]["image"]["present"] == dense[2]["features"]["image"]["present"] == 18
