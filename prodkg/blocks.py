"""Feature blocks held as their present rows only, and row chunks for work that would otherwise copy a whole block.

Numpy only: extraction, the stages and the digests use these without loading torch.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from prodkg.errors import StageError

# Rows per chunk where a whole block would otherwise be copied (a mask, a float64 cast): 16,384 rows of 384
# float64 columns are 48 MiB, where a million rows at once were several GiB.
CHUNK_ROWS = 16_384


def chunks(n: int):
    """``(start, stop)`` of consecutive row chunks of :data:`CHUNK_ROWS` covering ``n`` rows."""
    return ((a, min(n, a + CHUNK_ROWS)) for a in range(0, n, CHUNK_ROWS))


#: a modality present on at most this share of the products is held packed (:class:`PackedBlock`) from extraction on
PACK_AT_MOST = 0.5


class PackedBlock:
    """An ``(N, d)`` float32 feature block of a modality few products have, holding only its present rows.

    ``rows``: the present rows' indices, strictly increasing; ``values``: their ``(len(rows), d)`` vectors. It reads
    like the dense block whose other rows are zeros: ``block[a:b]``, ``block[indices]`` and ``block[mask]`` return
    dense float32 arrays of the rows asked for, and :meth:`take` keeps a subset packed. A photo on a tenth of a
    million products is 0.48 GiB packed; as a dense block of one row per product, with its rows scattered among the
    zeros, each present row kept two or three 4 KiB pages resident (about 0.9 GiB). ``np.asarray(block)`` makes the
    dense array: the stages index it by rows instead.
    """

    __slots__ = ("rows", "values", "_n")
    ndim = 2
    dtype = np.dtype(np.float32)

    def __init__(self, rows: np.ndarray, values: np.ndarray, n: int) -> None:
        rows = np.asarray(rows)
        if rows.size and not np.issubdtype(rows.dtype, np.integer):
            raise StageError(f"PackedBlock rows must be integers; got dtype {rows.dtype}")
        rows = rows.astype(np.int64, copy=False).reshape(-1)
        values = np.asarray(values)
        if values.ndim != 2 or len(values) != len(rows):
            raise StageError(f"PackedBlock: {len(rows)} rows need a ({len(rows)}, d) array of values; got shape {values.shape}")
        n = int(n)
        if rows.size and (rows[0] < 0 or rows[-1] >= n or np.any(np.diff(rows) <= 0)):
            raise StageError(f"PackedBlock rows must be strictly increasing indices in [0, {n})")
        self.rows = rows
        self.values = np.ascontiguousarray(values, dtype=np.float32)
        self._n = n

    @classmethod
    def pack(cls, block: np.ndarray, present: np.ndarray) -> PackedBlock:
        """The present rows of a dense block (read a chunk at a time)."""
        rows = np.flatnonzero(np.asarray(present, bool))
        values = np.empty((len(rows), np.shape(block)[1]), np.float32)
        for a, b in chunks(len(rows)):
            values[a:b] = block[rows[a:b]]
        return cls(rows, values, len(present))

    @property
    def shape(self) -> tuple[int, int]:
        return (self._n, int(self.values.shape[1]))

    @property
    def nbytes(self) -> int:
        return int(self.values.nbytes + self.rows.nbytes)

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return f"PackedBlock({len(self.rows)} of {self._n} rows, {self.shape[1]}-d)"

    def present(self) -> np.ndarray:
        """``(N,)`` bool: the rows held."""
        mask = np.zeros(self._n, bool)
        mask[self.rows] = True
        return mask

    def _lookup(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For row indices ``idx``: their positions in :attr:`values` and whether each is held."""
        pos = np.searchsorted(self.rows, idx)
        held = pos < len(self.rows)
        held[held] = self.rows[pos[held]] == idx[held]
        return pos, held

    def _index(self, key) -> np.ndarray:
        idx = np.asarray(key)
        if idx.dtype == np.bool_:
            if idx.shape != (self._n,):
                raise IndexError(f"boolean index of shape {idx.shape} for a block of {self._n} rows")
            return np.flatnonzero(idx)
        if idx.size and not np.issubdtype(idx.dtype, np.integer):
            raise IndexError(f"a PackedBlock is indexed by rows (a slice, integers or a mask); got dtype {idx.dtype}")
        idx = idx.astype(np.int64, copy=False)
        if idx.ndim != 1:
            raise IndexError(f"a PackedBlock is indexed by a 1-D array of rows; got shape {idx.shape}")
        if idx.size and (idx.min() < -self._n or idx.max() >= self._n):
            raise IndexError(f"row index out of range for {self._n} rows")
        return np.where(idx < 0, idx + self._n, idx)

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, tuple):
            raise IndexError("a PackedBlock is indexed by rows only (block[rows], not block[rows, cols])")
        if isinstance(key, (int, np.integer)):
            return self[np.array([key])][0]
        if isinstance(key, slice):
            start, stop, step = key.indices(self._n)
            if step == 1:
                stop = max(start, stop)
                lo, hi = np.searchsorted(self.rows, [start, stop])
                out = np.zeros((stop - start, self.shape[1]), np.float32)
                out[self.rows[lo:hi] - start] = self.values[lo:hi]
                return out
            key = np.arange(start, stop, step)
        idx = self._index(key)
        pos, held = self._lookup(idx)
        out = np.zeros((len(idx), self.shape[1]), np.float32)
        out[held] = self.values[pos[held]]
        return out

    def take(self, key) -> PackedBlock:
        """The rows ``key`` (indices or a mask), in that order, still packed."""
        idx = self._index(key)
        pos, held = self._lookup(idx)
        return PackedBlock(np.flatnonzero(held), self.values[pos[held]], len(idx))

    @classmethod
    def concat(cls, parts: list) -> PackedBlock:
        """Rows of several blocks (packed or dense with their masks given as ``(block, present)``) stacked, packed."""
        rows, values, offset = [], [], 0
        for part in parts:
            if not isinstance(part, PackedBlock):
                part = PackedBlock.pack(*part)
            rows.append(part.rows + offset)
            values.append(part.values)
            offset += len(part)
        width = values[0].shape[1] if values else 0
        return cls(np.concatenate(rows) if rows else np.zeros(0, np.int64),
                   np.concatenate(values) if values else np.zeros((0, width), np.float32), offset)

    def astype(self, dtype, copy: bool = True) -> np.ndarray:
        """The dense array in ``dtype`` (as ``ndarray.astype``)."""
        return self[:].astype(dtype, copy=False)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        dense = self[:]
        return dense if dtype is None else dense.astype(dtype, copy=False)


def take_rows(block, idx: np.ndarray):
    """Rows ``idx`` (indices or a mask) of a dense block or a :class:`PackedBlock`, a packed one kept packed."""
    return block.take(idx) if isinstance(block, PackedBlock) else block[idx]


def block_chunks(block) -> Iterator[np.ndarray]:
    """A block's rows as C-contiguous dense arrays in row order: a dense block whole (its own buffer, no copy), a
    :class:`PackedBlock` :data:`CHUNK_ROWS` rows at a time (absent rows zeros)."""
    if isinstance(block, PackedBlock):
        for a, b in chunks(len(block)):
            yield block[a:b]
    else:
        yield np.ascontiguousarray(block)
