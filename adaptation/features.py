"""Per-product feature blocks of several modalities, with presence masks, as the adaptation stage sees them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from prodkg.errors import StageError


def _as_block(name: str, value: object) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim != 2:
        raise StageError(f"modality {name!r}: expected a 2-D (N, d) feature array, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise StageError(f"modality {name!r}: expected a real-valued feature array, got dtype {arr.dtype}")
    if arr.shape[1] == 0:
        raise StageError(f"modality {name!r}: expected at least one feature column, got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float32)


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
    float32 array; ``present`` maps the same names to an ``(N,)`` bool mask. Every
    block has the same number of rows ``N``, one per product, in the same order.

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
            block = _as_block(name, self.blocks[name])
            if n_rows is None:
                n_rows = block.shape[0]
            elif block.shape[0] != n_rows:
                raise StageError(f"modality {name!r} has {block.shape[0]} rows but earlier modalities have {n_rows}")
            mask = _as_mask(name, self.present[name], n_rows)
            if not np.isfinite(block[mask]).all():
                bad = int((~np.isfinite(block[mask])).any(axis=1).sum())
                raise StageError(f"modality {name!r}: {bad} present row(s) hold NaN or infinite values")
            if not mask.all():
                if block is self.blocks[name]:
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
            blocks={m: self.blocks[m][idx] for m in self.modalities},
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
        return cls(
            blocks={m: np.concatenate([p.blocks[m] for p in parts]) for m in first.modalities},
            present={m: np.concatenate([p.present[m] for p in parts]) for m in first.modalities},
        )


def fused_input(features) -> np.ndarray:
    """The early-fusion input of a MultiModal: its blocks side by side, an absent modality as zeros. Shape ``(N, sum d_m)``."""
    blocks = [np.asarray(features.blocks[m], np.float32) * np.asarray(features.present[m], bool)[:, None] for m in features.modalities]
    if not blocks:
        raise StageError("fused_input: the features have no modality")
    return np.concatenate(blocks, axis=1)
