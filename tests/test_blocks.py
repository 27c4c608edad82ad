"""A packed block (a sparse modality's present rows only) reads exactly as the dense block with zeros elsewhere."""

from __future__ import annotations

import numpy as np
import pytest

from prodkg import blocks
from prodkg.blocks import PackedBlock, block_chunks
from prodkg.errors import StageError


def _dense_and_packed(n: int = 53, d: int = 5, share: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray, PackedBlock]:
    rng = np.random.default_rng(seed)
    present = rng.random(n) < share
    present[[0, n - 1]] = [True, False]  # a held first row and an absent last one
    dense = np.where(present[:, None], rng.standard_normal((n, d)), 0.0).astype(np.float32)
    rows = np.flatnonzero(present)
    return dense, present, PackedBlock(rows, dense[rows].copy(), n)


@pytest.mark.parametrize("key", [
    slice(None), slice(0, 10), slice(7, 8), slice(40, 53), slice(50, 200), slice(20, 10), slice(3, 40, 4), slice(None, None, -1),
    [0, 52, 3, 3, 17], [-1, -53], np.array([], np.int64),
])
def test_rows_read_as_the_dense_block(key) -> None:
    dense, _, packed = _dense_and_packed()
    got = packed[key] if not isinstance(key, list) else packed[np.array(key)]
    want = dense[key] if not isinstance(key, list) else dense[np.array(key)]
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_masks_scalars_shape_and_the_dense_array() -> None:
    dense, present, packed = _dense_and_packed(seed=1)
    mask = np.random.default_rng(2).random(len(dense)) < 0.5
    np.testing.assert_array_equal(packed[mask], dense[mask])
    np.testing.assert_array_equal(packed[np.int64(0)], dense[0])
    np.testing.assert_array_equal(packed[-1], dense[-1])
    assert packed.shape == dense.shape and len(packed) == len(dense) and packed.ndim == 2
    np.testing.assert_array_equal(np.asarray(packed), dense)
    np.testing.assert_array_equal(packed.astype(np.float64), dense.astype(np.float64))
    np.testing.assert_array_equal(packed.present(), present)
    assert packed.nbytes < dense.nbytes


def test_take_keeps_a_subset_packed_in_the_order_asked() -> None:
    dense, present, packed = _dense_and_packed(seed=3)
    idx = np.array([52, 0, 5, 5, 30, 11, 2])
    part = packed.take(idx)
    assert isinstance(part, PackedBlock)
    np.testing.assert_array_equal(part[:], dense[idx])
    np.testing.assert_array_equal(part.present(), present[idx])
    mask = present.copy()
    mask[::2] = False
    np.testing.assert_array_equal(packed.take(mask)[:], dense[mask])


def test_pack_and_concat_against_numpy(monkeypatch) -> None:
    monkeypatch.setattr(blocks, "CHUNK_ROWS", 4)  # several chunks
    dense, present, packed = _dense_and_packed(seed=4)
    again = PackedBlock.pack(dense, present)
    np.testing.assert_array_equal(again.rows, packed.rows)
    np.testing.assert_array_equal(again.values, packed.values)
    other, other_present, _ = _dense_and_packed(n=11, seed=5)
    both = PackedBlock.concat([packed, (other, other_present), packed])
    np.testing.assert_array_equal(both[:], np.concatenate([dense, other, dense]))
    chunks = list(block_chunks(both))
    assert len(chunks) == -(-len(both) // 4)
    np.testing.assert_array_equal(np.concatenate(chunks), np.concatenate([dense, other, dense]))


@pytest.mark.parametrize("rows, values, n, match", [
    ([3, 1], np.zeros((2, 2)), 5, "strictly increasing"),
    ([1, 1], np.zeros((2, 2)), 5, "strictly increasing"),
    ([0, 5], np.zeros((2, 2)), 5, "strictly increasing"),
    ([-1], np.zeros((1, 2)), 5, "strictly increasing"),
    ([0, 1], np.zeros((3, 2)), 5, r"need a \(2, d\)"),
    ([0.5], np.zeros((1, 2)), 5, "integers"),
])
def test_bad_packings_raise(rows, values, n, match) -> None:
    with pytest.raises(StageError, match=match):
        PackedBlock(np.array(rows), values, n)


def test_bad_keys_raise_index_errors() -> None:
    _, _, packed = _dense_and_packed()
    for key in (np.array([53]), np.array([-54]), np.ones(3, bool), np.array([[0, 1]]), (slice(None), 0), np.array([0.5])):
        with pytest.raises(IndexError):
            packed[key]
