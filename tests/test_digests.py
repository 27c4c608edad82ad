"""frame_digest: the content hash that cache keys, ingest's input hash and the graph's input digest rest on.

Two tables that would give different statements must get different digests, and the same table the same
digest however it was built; each case below is one way cells can look alike and differ.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from prodkg.digests import frame_digest


def _same(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    return frame_digest(a) == frame_digest(b)


def test_equal_tables_built_apart_have_one_digest():
    a = pd.DataFrame({"product_id": ["p1", "p2", None], "price": [1.5, np.nan, 3.0], "stock": [1, 2, 3], "ok": [True, False, True]})
    b = pd.DataFrame({"product_id": ["p1", "p2", None], "price": [1.5, np.nan, 3.0], "stock": [1, 2, 3], "ok": [True, False, True]})
    assert _same(a, b)
    assert _same(a, a.copy(deep=True))
    assert _same(a, a.iloc[::-1].iloc[::-1])  # same rows in the same order, through other arrays


@pytest.mark.parametrize(
    ("left", "right"),
    [
        (["1", "x"], [1, "x"]),  # the text "1" and the number 1 in one object column
        (["1"], [1]),  # a column of text and an object column of numbers
        (["a", None], ["a", ""]),  # missing is not the empty text
        (["a", "b"], ["b", "a"]),  # row order
        (["a"], ["a "]),
        (["\udcff"], ["\udcfe"]),  # undecodable bytes kept as surrogates
        ([0.1], [0.1000001]),
        ([0.0], [-0.0]),
        ([np.nan], [0.0]),
        ([2**64 - 1], [2**64 - 2]),
        ([True], [1]),
        ([pd.Timestamp("2026-01-01")], [pd.Timestamp("2026-01-02")]),
    ],
)
def test_tables_that_differ_in_one_cell_have_different_digests(left, right):
    a = pd.DataFrame({"c": pd.Series(left, dtype=object if any(isinstance(v, str) for v in left + right) else None)})
    b = pd.DataFrame({"c": pd.Series(right, dtype=object if any(isinstance(v, str) for v in left + right) else None)})
    assert not _same(a, b)


def test_nullable_integers_keep_missing_apart_from_zero_and_big_values_exact():
    assert not _same(pd.DataFrame({"n": pd.array([0, None], dtype="Int64")}), pd.DataFrame({"n": pd.array([0, 0], dtype="Int64")}))
    big = 2**53
    assert not _same(pd.DataFrame({"n": pd.array([big, None], dtype="Int64")}), pd.DataFrame({"n": pd.array([big + 1, None], dtype="Int64")}))


def test_names_dtypes_and_lengths_count():
    base = pd.DataFrame({"a": [1, 2]})
    assert not _same(base, pd.DataFrame({"b": [1, 2]}))
    assert not _same(base, pd.DataFrame({"a": [1.0, 2.0]}))
    assert not _same(base, pd.DataFrame({"a": [1, 2, 3]}))
    assert not _same(pd.DataFrame({"a": ["x"], "b": ["y"]}), pd.DataFrame({"b": ["y"], "a": ["x"]}))


def test_text_columns_of_any_string_dtype_hash_their_text():
    # a cell's text is what is hashed, so the same text in a column of another dtype differs only by the dtype
    words = ["brie", "café", None, "x" * 500]
    a = pd.DataFrame({"t": pd.Series(words, dtype=object)})
    b = pd.DataFrame({"t": pd.Series(list(words), dtype=object)})
    assert _same(a, b)
    assert not _same(a, pd.DataFrame({"t": pd.Series(words, dtype="string")}))


def test_not_a_table_is_a_clear_error():
    from prodkg.errors import StageError

    with pytest.raises(StageError, match="expected a DataFrame"):
        frame_digest([1, 2])


def test_features_digest_is_the_sha256_of_the_arrays_bytes():
    # the heads cache and the graph's input digest key on it: reading the buffers in place must not change it
    import hashlib

    from prodkg.adaptation import MultiModal
    from prodkg.digests import features_digest

    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 7)).astype(np.float32)
    mask = rng.random(50) > 0.3
    mm = MultiModal(blocks={"text": x, "image": np.asfortranarray(x[:, :3])}, present={"text": mask, "image": ~mask})
    want = hashlib.sha256()
    for m in ("image", "text"):
        want.update(m.encode())
        want.update(mm.blocks[m].tobytes())
        want.update(mm.present[m].tobytes())
    assert features_digest(mm) == want.hexdigest()
