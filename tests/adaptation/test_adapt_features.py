"""Tests of MultiModal: validation at the edge, missing rows, subset and concat."""

from __future__ import annotations

import numpy as np
import pytest

from prodkg.adaptation import MultiModal
from prodkg.errors import StageError


def _mm() -> MultiModal:
    image = np.arange(12, dtype=np.float32).reshape(4, 3)
    text = np.full((4, 2), 7.0)
    text[1] = np.nan  # missing row: its content must not matter
    return MultiModal(
        blocks={"text": text, "image": image},
        present={"text": np.array([True, False, True, True]), "image": np.ones(4, dtype=bool)},
    )


def test_missing_rows_are_zeroed_and_dtypes_normalised() -> None:
    text_in = np.full((4, 2), 7.0)
    text_in[1] = np.nan
    mm = MultiModal(
        blocks={"text": text_in, "image": np.zeros((4, 3), dtype=np.float32)},
        present={"text": np.array([True, False, True, True]), "image": np.ones(4, dtype=bool)},
    )
    assert mm.modalities == ["image", "text"]
    assert mm.dims == {"image": 3, "text": 2}
    assert len(mm) == 4
    assert mm.blocks["text"].dtype == np.float32
    assert np.array_equal(mm.blocks["text"][1], [0.0, 0.0])
    assert np.array_equal(mm.blocks["text"][0], [7.0, 7.0])
    assert np.isnan(text_in[1]).all(), "the caller's array must not be modified"


def test_float32_input_with_missing_rows_is_copied_not_overwritten() -> None:
    block = np.ones((3, 2), dtype=np.float32)
    MultiModal(blocks={"image": block}, present={"image": np.array([True, False, True])})
    assert np.array_equal(block, np.ones((3, 2), dtype=np.float32))


@pytest.mark.parametrize(
    ("blocks", "present", "match"),
    [
        ({}, {}, "at least one modality"),
        ({"image": np.zeros((3, 2))}, {"text": np.ones(3, bool)}, "same modalities"),
        ({"image": np.zeros(3)}, {"image": np.ones(3, bool)}, r"2-D \(N, d\)"),
        ({"image": np.zeros((3, 2))}, {"image": np.ones(3)}, "dtype bool"),
        ({"image": np.zeros((3, 2))}, {"image": np.ones(4, bool)}, r"shape \(3,\)"),
        (
            {"image": np.zeros((3, 2)), "text": np.zeros((4, 2))},
            {"image": np.ones(3, bool), "text": np.ones(4, bool)},
            "rows",
        ),
        ({"image": np.array([["a", "b"]])}, {"image": np.ones(1, bool)}, "real-valued"),
        ({"image": np.array([[1.0, np.inf]])}, {"image": np.ones(1, bool)}, "NaN or infinite"),
    ],
)
def test_invalid_inputs_raise_stage_error(blocks: dict, present: dict, match: str) -> None:
    with pytest.raises(StageError, match=match):
        MultiModal(blocks=blocks, present=present)


def test_subset_by_index_and_mask() -> None:
    mm = _mm()
    sub = mm.subset(np.array([3, 1]))
    assert len(sub) == 2
    assert np.array_equal(sub.blocks["image"], mm.blocks["image"][[3, 1]])
    assert sub.present["text"].tolist() == [True, False]
    by_mask = mm.subset(np.array([False, True, False, True]))
    assert np.array_equal(by_mask.blocks["image"], mm.blocks["image"][[1, 3]])
    assert len(mm.subset(np.array([], dtype=np.int64))) == 0
    with pytest.raises(StageError, match="out of range"):
        mm.subset(np.array([4]))
    with pytest.raises(StageError, match="boolean subset mask"):
        mm.subset(np.array([True, False]))


def test_concat_stacks_rows_and_checks_widths() -> None:
    mm = _mm()
    both = MultiModal.concat([mm, mm.subset(np.array([0]))])
    assert len(both) == 5
    assert np.array_equal(both.blocks["image"][4], mm.blocks["image"][0])
    assert both.present["text"].tolist() == [True, False, True, True, True]
    other = MultiModal.complete(image=np.zeros((2, 5), dtype=np.float32))
    with pytest.raises(StageError, match="part 1"):
        MultiModal.concat([mm, other])
    with pytest.raises(StageError, match="at least one part"):
        MultiModal.concat([])


def test_complete_marks_every_row_present() -> None:
    mm = MultiModal.complete(image=np.ones((3, 4)), text=np.zeros((3, 2)))
    assert all(mask.all() for mask in mm.present.values())
    assert mm.dims == {"image": 4, "text": 2}


def test_repr_summarises_instead_of_printing_arrays() -> None:
    assert repr(_mm()) == "MultiModal(n=4; image: 3-d, 4 present, text: 2-d, 3 present)"


def test_column_moments_match_numpy_over_present_rows_across_chunks(monkeypatch) -> None:
    from prodkg import blocks
    from prodkg.adaptation import features as feats

    monkeypatch.setattr(blocks, "CHUNK_ROWS", 7)  # several chunks, the last one partial, in each part
    rng = np.random.default_rng(3)
    a = (rng.standard_normal((40, 5)) * [1, 10, 100, 1e-3, 0] + [0, 5, -3e3, 1, 2]).astype(np.float32)
    b = rng.standard_normal((23, 5)).astype(np.float32) + 50
    b[:, 4] = 2.0
    pa, pb = rng.random(40) < 0.7, rng.random(23) < 0.5
    mean, std = feats.column_moments([(a, pa), (b, pb)])
    rows = np.concatenate([a[pa], b[pb]]).astype(np.float64)
    np.testing.assert_allclose(mean, rows.mean(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(std, rows.std(axis=0), rtol=1e-9, atol=1e-12)
    assert std[4] == 0.0  # a constant column
    assert feats.column_moments([(a, np.zeros(40, bool))]) is None


def test_non_finite_rows_are_counted_across_chunks(monkeypatch) -> None:
    from prodkg import blocks

    monkeypatch.setattr(blocks, "CHUNK_ROWS", 4)
    block = np.zeros((10, 3), np.float32)
    block[[1, 6, 9], 0] = np.nan
    block[6, 2] = np.inf  # the same row twice: one bad row
    present = np.ones(10, bool)
    present[9] = False  # an absent row may hold anything
    with pytest.raises(StageError, match="2 present row"):
        MultiModal(blocks={"text": block}, present={"text": present})


def test_rows_train_and_predict_as_the_copied_rows_do() -> None:
    # a head reads its rows in place (Rows); the model must be the one trained on a copy of those rows
    from prodkg.adaptation import Rows, TrainConfig, train

    rng = np.random.default_rng(7)
    n = 300
    image = rng.normal(size=(n, 6)).astype(np.float32)
    text = rng.normal(size=(n, 4)).astype(np.float32)
    y_all = (image[:, 0] > 0).astype(np.int64) + (text[:, 1] > 0.5)
    image[:, 0] += 2 * y_all  # learnable
    features = MultiModal(blocks={"image": image, "text": text}, present={"image": rng.random(n) > 0.1, "text": rng.random(n) > 0.2})
    src = rng.permutation(200)[:150]  # gathered out of order
    tgt = np.arange(200, n)
    cfg = TrainConfig(method="dann", epochs=3, batch_size=32, seed=1)
    copied = train(features.subset(src), y_all[src], features.subset(tgt), 3, cfg)
    in_place = train(Rows(features, src), y_all[src], Rows(features, tgt), 3, cfg)
    np.testing.assert_allclose(in_place.logits(Rows(features, tgt)), copied.logits(features.subset(tgt)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(in_place.logits(features.subset(tgt)), copied.logits(features.subset(tgt)), rtol=1e-5, atol=1e-6)
    # rows of rows compose, and whole arrays are there for code that needs them
    part = Rows(features, src).subset(np.arange(10, 20))
    np.testing.assert_array_equal(part.blocks["image"], features.blocks["image"][src[10:20]])
    assert len(part) == 10 and part.dims == features.dims
    with pytest.raises(StageError, match="out of range"):
        Rows(features, np.array([n]))


def _sparse_image_features(n: int = 240, seed: int = 11) -> tuple[MultiModal, MultiModal, np.ndarray]:
    """The same features twice, the image modality (on about a fifth of the products) dense and packed; labels."""
    from prodkg.blocks import PackedBlock

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    has = rng.random(n) < 0.2
    image = np.where(has[:, None], rng.normal(size=(n, 6)) + 2 * np.eye(3)[y].repeat(2, axis=1), 0.0).astype(np.float32)
    text = (rng.normal(size=(n, 4)) + np.eye(3, 4)[y]).astype(np.float32)
    present = {"image": has, "text": np.ones(n, bool)}
    dense = MultiModal(blocks={"image": image, "text": text}, present=present)
    packed = MultiModal(blocks={"image": PackedBlock.pack(image, has), "text": text}, present=present)
    return dense, packed, y


def test_a_packed_block_trains_and_predicts_as_the_dense_one() -> None:
    from prodkg.adaptation import Rows, TrainConfig, train
    from prodkg.blocks import PackedBlock

    dense, packed, y = _sparse_image_features()
    assert isinstance(packed.blocks["image"], PackedBlock)
    src, tgt = np.arange(0, 160), np.arange(160, 240)
    cfg = TrainConfig(method="dann", epochs=3, batch_size=32, seed=2)
    want = train(Rows(dense, src), y[src], Rows(dense, tgt), 3, cfg)
    got = train(Rows(packed, src), y[src], Rows(packed, tgt), 3, cfg)
    np.testing.assert_array_equal(got.logits(Rows(packed, tgt)), want.logits(Rows(dense, tgt)))
    # copies of rows stay packed and give the same answers
    part = packed.subset(tgt)
    assert isinstance(part.blocks["image"], PackedBlock)
    np.testing.assert_array_equal(got.logits(part), want.logits(dense.subset(tgt)))
    again = MultiModal.concat([packed.subset(src), dense.subset(tgt)])
    assert isinstance(again.blocks["image"], PackedBlock)
    np.testing.assert_array_equal(again.blocks["image"][:], dense.blocks["image"])


def test_a_packed_block_keeps_the_digest_and_the_checks_of_the_dense_one() -> None:
    from prodkg.blocks import PackedBlock
    from prodkg.digests import features_digest

    dense, packed, _ = _sparse_image_features()
    assert features_digest(packed) == features_digest(dense)
    has = dense.present["image"]
    block = packed.blocks["image"]
    # a mask narrower than the packing lets the rows it calls absent go, as a dense block's are zeroed
    fewer = has.copy()
    fewer[np.flatnonzero(has)[:3]] = False
    narrowed = MultiModal(blocks={"image": block}, present={"image": fewer})
    assert len(narrowed.blocks["image"].rows) == int(fewer.sum())
    np.testing.assert_array_equal(narrowed.blocks["image"][:], np.where(fewer[:, None], dense.blocks["image"], 0.0))
    more = has.copy()
    more[np.flatnonzero(~has)[0]] = True
    with pytest.raises(StageError, match="1 present row"):
        MultiModal(blocks={"image": block}, present={"image": more})
    bad = block.values.copy()
    bad[1, 2] = np.nan
    with pytest.raises(StageError, match="1 present row"):
        MultiModal(blocks={"image": PackedBlock(block.rows, bad, len(block))}, present={"image": has})
