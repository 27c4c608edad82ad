"""write_embeddings: the per-product vectors recommendation and search teams read, written a batch at a time."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from prodkg.kb.publish import write_embeddings


def _features(n: int):
    rng = np.random.default_rng(3)
    image, text = rng.standard_normal((n, 4)).astype(np.float32), rng.standard_normal((n, 3)).astype(np.float32)
    image_ok = np.arange(n) % 3 != 1  # every third product has no photo
    text[5] = 0.0  # a zero vector stays zero rather than dividing by its norm
    return SimpleNamespace(blocks={"image": image, "text": text}, present={"image": image_ok, "text": np.ones(n, bool)})


@pytest.mark.parametrize("batch, packed", [(3, False), (7, False), (1000, False), (None, False), (3, True)])
def test_vectors_are_each_modality_unit_length_and_zeros_where_absent_whatever_the_batch(tmp_path, monkeypatch, batch, packed):
    from prodkg.blocks import PackedBlock
    from prodkg.kb import publish

    n = 7
    feats = _features(n)
    if batch is None:  # the default: as many products as make the batch's bytes, here 2 products of 7 float32
        monkeypatch.setattr(publish, "EMBEDDINGS_BATCH_BYTES", 2 * 7 * 4 + 3)
    if packed:  # the photos' block holds the rows that have one
        feats = SimpleNamespace(blocks={**feats.blocks, "image": PackedBlock.pack(feats.blocks["image"], feats.present["image"])},
                                present=feats.present, dense=feats.blocks)
    products = pd.DataFrame({"product_id": [f"p{i}" for i in range(n)]})
    path = tmp_path / "embeddings.parquet"
    assert write_embeddings(products, feats, path, {"prodkg.encoders": "test"}, batch=batch) == n

    table = pq.read_table(path)
    assert table.column("product_id").to_pylist() == [f"p{i}" for i in range(n)]
    got = np.array(table.column("vector").to_pylist(), dtype=np.float32)
    blocks = getattr(feats, "dense", feats.blocks)
    for i in range(n):  # the reference, row by row: image block (if present) then text block, each divided by its norm
        img = blocks["image"][i] / np.linalg.norm(blocks["image"][i]) if feats.present["image"][i] else np.zeros(4)
        txt_norm = np.linalg.norm(feats.blocks["text"][i])
        txt = feats.blocks["text"][i] / txt_norm if txt_norm > 0 else np.zeros(3)
        np.testing.assert_allclose(got[i], np.concatenate([img, txt]), rtol=1e-6, atol=1e-7)
    assert table.schema.metadata[b"prodkg.encoders"] == b"test"
    assert pq.ParquetFile(path).num_row_groups == -(-n // (batch or 2))


def test_a_length_mismatch_is_a_clear_error(tmp_path):
    from prodkg.errors import StageError

    with pytest.raises(StageError, match="6 products but features for 7"):
        write_embeddings(pd.DataFrame({"product_id": [f"p{i}" for i in range(6)]}), _features(7), tmp_path / "e.parquet")


def test_the_file_reads_back_as_the_contracts_table_and_an_empty_catalog_writes_one_too(tmp_path):
    from prodkg.contracts import EMBEDDINGS, check_table

    feats = _features(7)
    path = tmp_path / "embeddings.parquet"
    write_embeddings(pd.DataFrame({"product_id": [f"p{i}" for i in range(7)]}), feats, path, batch=2)
    frame = check_table(pd.read_parquet(path), EMBEDDINGS)  # raises if a column's type strayed from the contract
    assert list(frame.columns) == ["product_id", "vector"] and [len(v) for v in frame["vector"]] == [7] * 7

    empty = SimpleNamespace(blocks={"text": np.zeros((0, 3), np.float32)}, present={"text": np.zeros(0, bool)})
    assert write_embeddings(pd.DataFrame({"product_id": pd.Series([], dtype=str)}), empty, tmp_path / "none.parquet") == 0
    assert pd.read_parquet(tmp_path / "none.parquet").columns.tolist() == ["product_id", "vector"]
