"""Per-product feature blocks of several modalities, with presence masks, as the adaptation stage sees them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from prodkg.blocks import CHUNK_ROWS, PACK_AT_MOST, PackedBlock, block_chunks, take_rows, chunks as _chunks  # noqa: F401 (re-exported)
from prodkg.errors import StageError

def _present_chunks(block: np.ndarray, present: np.ndarray, rows: np.ndarray | None):
    """The present rows of ``block`` (of its rows ``rows``, when given), a chunk at a time."""
    if isinstance(block, PackedBlock) and rows is None:  # its rows are the present ones (MultiModal checks)
        for a, b in _chunks(len(block.values)):
            yield block.values[a:b][np.asarray(present[block.rows[a:b]], bool)]
        return
    n = len(block) if rows is None else len(rows)
    for a, b in _chunks(n):
        take = slice(a, b) if rows is None else rows[a:b]
        yield block[take][np.asarray(present[take], bool)]


def column_moments(parts: list[tuple]) -> tuple[np.ndarray, np.ndarray] | None:
    """Mean and (population) standard deviation per column over the present rows of several blocks, in float64.

    ``parts`` are ``(block (N_i, d), present (N_i,) bool)`` pairs, or ``(block, present, rows)`` to read only the rows
    ``rows`` of them. Two passes over chunks of rows (mean, then squared deviations from it), so memory stays that
    of a chunk rather than of a float64 copy of every row. None when no row is present.
    """
    if not parts:
        return None
    parts = [(*part, None)[:3] for part in parts]
    d = parts[0][0].shape[1]
    total, count = np.zeros(d), 0
    for part in parts:
        for chunk in _present_chunks(*part):
            total += chunk.sum(axis=0, dtype=np.float64)
            count += len(chunk)
    if not count:
        return None
    mean = total / count
    squares = np.zeros(d)
    for part in parts:
        for chunk in _present_chunks(*part):
            dev = chunk.astype(np.float64) - mean
            squares += np.einsum("ij,ij->j", dev, dev)
    return mean, np.sqrt(squares / count)


def _as_block(name: str, value: object) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim != 2:
        raise StageError(f"modality {name!r}: expected a 2-D (N, d) feature array, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise StageError(f"modality {name!r}: expected a real-valued feature array, got dtype {arr.dtype}")
    if arr.shape[1] == 0:
        raise StageError(f"modality {name!r}: expected at least one feature column, got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _packed_for(name: str, block: PackedBlock, mask: np.ndarray) -> PackedBlock:
    """``block`` checked against its presence mask: every present row held and finite; held rows the mask calls
    absent are let go of (as a dense block's absent rows are zeroed)."""
    held = block.present()
    missing = int((mask & ~held).sum())
    if missing:
        raise StageError(f"modality {name!r}: {missing} present row(s) have no vector in its packed block")
    keep = mask[block.rows]
    if not keep.all():
        block = PackedBlock(block.rows[keep], block.values[keep], len(block))
    bad = sum(int((~np.isfinite(block.values[a:b])).any(axis=1).sum()) for a, b in _chunks(len(block.values)))
    if bad:
        raise StageError(f"modality {name!r}: {bad} present row(s) hold NaN or infinite values")
    return block


def _as_mask(name: str, value: object, n: int) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype != np.bool_:
        raise StageError(f"presence mask of {name!r}: expected dtype bool, got {arr.dtype}")
    if arr.shape != (n,):
        raise StageError(f"presence mask of {name!r}: expected shape ({n},), got {arr.shape}")
    return np.ascontiguousarray(arr)


@dataclass(frozen=True, eq=False)
class MultiModal:
    """Per-product features of several modalities, some possibly missing.

    ``blocks`` maps a modality name (``"image"``, ``"text"``, ...) to an ``(N, d_m)``
    float32 array, or to a :class:`~prodkg.blocks.PackedBlock` holding only its present
    rows (extraction packs a modality at most half the products have; read it by rows);
    ``present`` maps the same names to an ``(N,)`` bool mask. Every block has the same
    number of rows ``N``, one per product, in the same order.

    Instances compare by identity (arrays have no single truth value) and print
    a summary rather than their arrays.

    Rows of a missing modality carry no information: on construction they are set
    to zeros (so a caller may fill them with anything, NaN included), while the
    rows that are present must be finite. Integer or float64 blocks are converted
    to float32. Any mismatch raises :class:`~prodkg.errors.StageError`.
    """

    blocks: dict[str, np.ndarray]
    present: dict[str, np.ndarray]

    def __post_init__(self) -> None:
        if not isinstance(self.blocks, Mapping) or not isinstance(self.present, Mapping):
            raise StageError(
                "MultiModal expects two dicts (blocks, present); "
                f"got {type(self.blocks).__name__} and {type(self.present).__name__}"
            )
        if not self.blocks:
            raise StageError("MultiModal needs at least one modality; got none")
        if set(self.blocks) != set(self.present):
            raise StageError(
                f"blocks and present must name the same modalities; blocks has {sorted(self.blocks)}, "
                f"present has {sorted(self.present)}"
            )
        blocks: dict[str, np.ndarray] = {}
        present: dict[str, np.ndarray] = {}
        n_rows: int | None = None
        for name in sorted(self.blocks):
            if not isinstance(name, str) or not name:
                raise StageError(f"modality names must be non-empty strings; got {name!r}")
            given = self.blocks[name]
            block = given if isinstance(given, PackedBlock) else _as_block(name, given)
            if n_rows is None:
                n_rows = block.shape[0]
            elif block.shape[0] != n_rows:
                raise StageError(f"modality {name!r} has {block.shape[0]} rows but earlier modalities have {n_rows}")
            mask = _as_mask(name, self.present[name], n_rows)
            if isinstance(block, PackedBlock):
                block = _packed_for(name, block, mask)
                blocks[name], present[name] = block, mask
                continue
            bad = sum(int((~np.isfinite(block[a:b][mask[a:b]])).any(axis=1).sum()) for a, b in _chunks(n_rows))
            if bad:
                raise StageError(f"modality {name!r}: {bad} present row(s) hold NaN or infinite values")
            # absent rows must be zeros; extraction's already are, and a block that is mostly absent rows (a photo on a
            # tenth of a million products: 5 GB of Lite0 vectors, 90 % zeros on untouched pages) is then neither
            # copied nor touched (copied, it peaked the run at 12.6 GiB)
            if not mask.all() and any(np.any(block[a:b][~mask[a:b]]) for a, b in _chunks(n_rows)):
                if block is given:
                    block = block.copy()  # never write into the caller's array
                block[~mask] = 0.0
            blocks[name] = block
            present[name] = mask
        object.__setattr__(self, "blocks", blocks)
        object.__setattr__(self, "present", present)

    @classmethod
    def complete(cls, **blocks: np.ndarray) -> MultiModal:
        """Build from blocks that are present for every product (``MultiModal.complete(image=x)``)."""
        present = {name: np.ones(np.shape(b)[0] if np.ndim(b) else 0, dtype=bool) for name, b in blocks.items()}
        return cls(blocks=dict(blocks), present=present)

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{m}: {self.blocks[m].shape[1]}-d, {int(self.present[m].sum())} present" for m in self.modalities
        )
        return f"MultiModal(n={len(self)}; {parts})"

    def __len__(self) -> int:
        return next(iter(self.blocks.values())).shape[0]

    @property
    def modalities(self) -> list[str]:
        """Modality names, sorted; fusion concatenates blocks in this order."""
        return sorted(self.blocks)

    @property
    def dims(self) -> dict[str, int]:
        """Feature width of each modality."""
        return {name: int(self.blocks[name].shape[1]) for name in self.modalities}

    def subset(self, idx: np.ndarray) -> MultiModal:
        """Rows selected by an integer index array or a boolean mask of length N."""
        idx = np.asarray(idx)
        if idx.dtype == np.bool_:
            if idx.shape != (len(self),):
                raise StageError(f"boolean subset mask must have shape ({len(self)},); got {idx.shape}")
        elif not np.issubdtype(idx.dtype, np.integer) and idx.size:
            raise StageError(f"subset expects integer indices or a boolean mask; got dtype {idx.dtype}")
        else:
            idx = idx.astype(np.int64, copy=False)
            if idx.ndim != 1:
                raise StageError(f"subset expects a 1-D index array; got shape {idx.shape}")
            if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
                raise StageError(f"subset index out of range for {len(self)} rows")
        return MultiModal(
            blocks={m: take_rows(self.blocks[m], idx) for m in self.modalities},
            present={m: self.present[m][idx] for m in self.modalities},
        )

    @classmethod
    def concat(cls, parts: list[MultiModal]) -> MultiModal:
        """Stack the rows of several sets that have the same modalities and widths."""
        if not parts:
            raise StageError("MultiModal.concat needs at least one part; got an empty list")
        first = parts[0]
        for i, part in enumerate(parts[1:], start=1):
            if part.dims != first.dims:
                raise StageError(f"MultiModal.concat: part {i} has modalities {part.dims}, part 0 has {first.dims}")
        def stacked(m: str):
            if any(isinstance(p.blocks[m], PackedBlock) for p in parts):  # a packed modality stays packed
                return PackedBlock.concat([p.blocks[m] if isinstance(p.blocks[m], PackedBlock) else (p.blocks[m], p.present[m])
                                           for p in parts])
            return np.concatenate([p.blocks[m] for p in parts])

        return cls(
            blocks={m: stacked(m) for m in first.modalities},
            present={m: np.concatenate([p.present[m] for p in parts]) for m in first.modalities},
        )


class Rows:
    """Some rows of a :class:`MultiModal`, read in place: what a head trains on and predicts.

    Training reads its batches through ``rows`` from the whole feature blocks, so the rows a head trains on are not
    copied out of a catalog first (at a million products of 384 dimensions the source and target copies held
    1.35 GiB beside the features). Anything else that needs whole arrays gets them from :attr:`blocks` and
    :attr:`present`, gathered on first use. ``rows``: integer indices or a boolean mask of ``base``'s rows.
    """

    def __init__(self, base: MultiModal, rows: np.ndarray) -> None:
        if isinstance(base, Rows):
            base, rows = base.base, base.rows[_indices(rows, len(base))]
        if not isinstance(base, MultiModal):
            raise StageError(f"Rows reads a MultiModal; got {type(base).__name__}")
        self.base = base
        self.rows = _indices(rows, len(base))
        self._gathered: MultiModal | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return f"Rows({len(self)} of {self.base!r})"

    @property
    def modalities(self) -> list[str]:
        return self.base.modalities

    @property
    def dims(self) -> dict[str, int]:
        return self.base.dims

    def gathered(self) -> MultiModal:
        """The rows as a MultiModal of their own (copied once, then kept)."""
        if self._gathered is None:
            self._gathered = self.base.subset(self.rows)
        return self._gathered

    @property
    def blocks(self) -> dict[str, np.ndarray]:
        return self.gathered().blocks

    @property
    def present(self) -> dict[str, np.ndarray]:
        return self.gathered().present

    def subset(self, idx: np.ndarray) -> Rows:
        """Rows of these rows, still read in place."""
        return Rows(self, idx)

    def parts(self, modality: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(whole block, whole mask, rows)`` of ``modality``: the input :func:`column_moments` reads in place."""
        return self.base.blocks[modality], self.base.present[modality], self.rows


def _indices(rows: np.ndarray, n: int) -> np.ndarray:
    rows = np.asarray(rows)
    if rows.dtype == np.bool_:
        if rows.shape != (n,):
            raise StageError(f"boolean row mask must have shape ({n},); got {rows.shape}")
        return np.flatnonzero(rows)
    if rows.size and not np.issubdtype(rows.dtype, np.integer):
        raise StageError(f"rows must be integer indices or a boolean mask; got dtype {rows.dtype}")
    rows = rows.astype(np.int64, copy=False).reshape(-1)
    if rows.size and (rows.min() < 0 or rows.max() >= n):
        raise StageError(f"row index out of range for {n} rows")
    return rows


def fused_input(features) -> np.ndarray:
    """The early-fusion input of a MultiModal: its blocks side by side, an absent modality as zeros. Shape ``(N, sum d_m)``."""
    blocks = [np.asarray(features.blocks[m], np.float32) * np.asarray(features.present[m], bool)[:, None] for m in features.modalities]
    if not blocks:
        raise StageError("fused_input: the features have no modality")
    return np.concatenate(blocks, axis=1)
