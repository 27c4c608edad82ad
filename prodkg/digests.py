"""Content digests of the tables and feature blocks that cross stage boundaries (cache keys, input hashes)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd

from prodkg.blocks import block_chunks
from prodkg.errors import StageError

__all__ = ["cell_hashes", "features_digest", "frame_digest"]


def frame_digest(frame: pd.DataFrame) -> str:
    """sha256 of a table's column names, dtypes and every cell (missing cells distinct from any value).

    Vectorised per column (:func:`cell_hashes`, which the graph's per-product fingerprints use too), so 1 and "1",
    0.1 and 0.1000001, -0.0 and 0.0 stay apart. A million-row catalog hashes in about a second.
    """
    if not isinstance(frame, pd.DataFrame):
        raise StageError(f"frame_digest: expected a DataFrame, got {type(frame).__name__}")
    digest = hashlib.sha256(json.dumps([str(c) for c in frame.columns]).encode())
    digest.update(str(len(frame)).encode())
    for column in frame.columns:
        values = frame[column]
        kind, hashes = cell_hashes(values)
        digest.update(str(values.dtype).encode())
        digest.update(np.packbits(values.isna().to_numpy()).tobytes())  # exactly, whatever a cell's text
        digest.update(kind.encode())
        digest.update(hashes.tobytes())
    return digest.hexdigest()


_MISSING = "\x00missing"


def cell_hashes(values: pd.Series, key: str | None = None) -> tuple[str, np.ndarray]:
    """A uint64 per cell that differs when the cells differ, and how the cells were read.

    Numbers and booleans by their bit patterns (-0.0 apart from 0.0), a column of text by the text itself, any
    other column (mixed types, dates, undecodable text) by each cell's type and ``repr``, so 1 and "1" differ;
    every missing cell hashes alike, apart from any value. The kind ("bool", "float", "int", "text", "repr")
    tells a column of the text "1" from an object column of the number 1 where the hashes alone cannot.
    ``key`` is pandas' 16-byte hash key (two keys give two independent hashes).
    """
    keyed = {"hash_key": key} if key is not None else {}

    def hashed(array: np.ndarray) -> np.ndarray:
        return pd.util.hash_array(array, categorize=False, **keyed)

    dtype = values.dtype
    missing = values.isna().to_numpy()
    if pd.api.types.is_bool_dtype(dtype) and not missing.any():
        return "bool", hashed(values.to_numpy(dtype=np.uint8))
    if pd.api.types.is_float_dtype(dtype) or pd.api.types.is_integer_dtype(dtype):
        if pd.api.types.is_float_dtype(dtype):
            kind, bits = "float", np.ascontiguousarray(values.to_numpy(dtype=np.float64, na_value=0.0)).view(np.uint64)
        else:  # exactly, beyond 2**53
            wide = np.uint64 if pd.api.types.is_unsigned_integer_dtype(dtype) else np.int64
            kind, bits = "int", np.ascontiguousarray(values.to_numpy(dtype=wide, na_value=0)).view(np.uint64)
        out = hashed(bits)
        if missing.any():
            out[missing] = hashed(np.asarray([_MISSING], dtype=object))[0]
        return kind, out
    cells = values.to_numpy(dtype=object, na_value=None)
    if pd.api.types.infer_dtype(cells, skipna=True) in ("string", "empty"):
        try:  # all text: a cell's text says what its repr would
            return "text", hashed(np.where(missing, _MISSING, cells).astype(object))
        except UnicodeEncodeError:
            pass  # undecodable bytes kept as surrogates: their repr escapes them
    text = [_MISSING if m else f"{type(v).__name__}\x00{v!r}" for v, m in zip(cells.tolist(), missing, strict=True)]
    return "repr", hashed(np.asarray(text, dtype=object))


def features_digest(features) -> str:
    """Content hash of a MultiModal (or any object with ``blocks`` and ``present`` dicts): every block and presence mask, in row order."""
    h = hashlib.sha256()
    for modality in sorted(features.blocks):
        h.update(modality.encode())
        # the arrays' own buffers, not ``tobytes()`` copies (a million 384-d vectors are 1.46 GiB); a packed block's
        # rows as the dense block's, a chunk at a time (the same bytes, so the same digest)
        for chunk in block_chunks(features.blocks[modality]):
            h.update(chunk.reshape(-1).view(np.uint8))
        h.update(np.ascontiguousarray(features.present[modality]).reshape(-1).view(np.uint8))
    return h.hexdigest()
