"""Content digests of the tables and feature blocks that cross stage boundaries (cache keys, input hashes)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd

from prodkg.errors import StageError

__all__ = ["features_digest", "frame_digest"]


def frame_digest(frame: pd.DataFrame) -> str:
    """sha256 of a table's column names, dtypes and every cell (missing cells distinct from any value).

    Vectorised per column: numbers and booleans by their bit patterns, a column of text by the text itself, and
    any other column (mixed types, dates, ...) by each cell's ``repr``, so 1 and "1", 0.1 and 0.1000001, -0.0 and
    0.0 stay apart. A million-row catalog hashes in about a second.
    """
    if not isinstance(frame, pd.DataFrame):
        raise StageError(f"frame_digest: expected a DataFrame, got {type(frame).__name__}")
    digest = hashlib.sha256(json.dumps([str(c) for c in frame.columns]).encode())
    digest.update(str(len(frame)).encode())
    for column in frame.columns:
        values = frame[column]
        missing = values.isna().to_numpy()
        digest.update(str(values.dtype).encode())
        digest.update(np.packbits(missing).tobytes())
        kind, hashes = _cell_hashes(values, missing)
        digest.update(kind.encode())
        digest.update(hashes.tobytes())
    return digest.hexdigest()


def _cell_hashes(values: pd.Series, missing: np.ndarray) -> tuple[str, np.ndarray]:
    """How the cells were read (part of the digest: the text "1" and the number 1 in one object column differ), and
    a uint64 per cell (missing cells alike; the caller hashes the missing mask apart)."""
    dtype = values.dtype
    if pd.api.types.is_bool_dtype(dtype) and not missing.any():
        return "bool", pd.util.hash_array(values.to_numpy(dtype=np.uint8), categorize=False)
    if pd.api.types.is_float_dtype(dtype):
        # the bit pattern of each float64: -0.0 apart from 0.0
        bits = np.array(values.to_numpy(dtype=np.float64, na_value=0.0), dtype=np.float64, copy=True)
        bits[missing] = 0.0
        return "float", pd.util.hash_array(bits.view(np.uint64), categorize=False)
    if pd.api.types.is_integer_dtype(dtype):
        wide = np.uint64 if pd.api.types.is_unsigned_integer_dtype(dtype) else np.int64
        return "int", pd.util.hash_array(values.to_numpy(dtype=wide, na_value=0).view(np.uint64), categorize=False)
    cells = values.to_numpy(dtype=object, na_value=None)
    if pd.api.types.infer_dtype(cells, skipna=True) in ("string", "empty"):
        try:  # all text: a cell's text says what its repr would
            return "text", pd.util.hash_array(np.where(missing, "", cells).astype(object), categorize=False)
        except UnicodeEncodeError:
            pass  # undecodable bytes kept as surrogates: their repr escapes them
    text = np.array(["" if m else repr(v) for v, m in zip(cells.tolist(), missing, strict=True)], dtype=object)
    return "repr", pd.util.hash_array(text, categorize=False)


def features_digest(features) -> str:
    """Content hash of a MultiModal (or any object with ``blocks`` and ``present`` dicts): every block and presence mask, in row order."""
    h = hashlib.sha256()
    for modality in sorted(features.blocks):
        h.update(modality.encode())
        h.update(np.ascontiguousarray(features.blocks[modality]).tobytes())
        h.update(np.ascontiguousarray(features.present[modality]).tobytes())
    return h.hexdigest()
