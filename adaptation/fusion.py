"""Fusion modules that turn per-modality feature blocks into one vector per product, and their registry."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from prodkg.errors import StageError
from prodkg.registry import Registry

#: Fusion modules by name; each entry is a :class:`Fusion` subclass built as ``cls(dims, hidden=...)``.
FUSIONS: Registry[type[Fusion]] = Registry("fusion")


class Fusion(nn.Module):
    """Base of every fusion: maps ``(blocks, present)`` to one ``(N, out_dim)`` tensor.

    Args:
        dims: feature width of each modality, fixed at construction.
        hidden: width of any learned projection the fusion uses (early fusion has none).

    Inputs:
        blocks: modality name -> ``(N, d_m)`` float tensor.
        present: modality name -> ``(N,)`` bool tensor.
    """

    out_dim: int

    def __init__(self, dims: Mapping[str, int], hidden: int = 256) -> None:
        super().__init__()
        if not dims:
            raise StageError("a fusion needs at least one modality; got none")
        for name, d in dims.items():
            if not isinstance(d, int) or d < 1:
                raise StageError(f"modality {name!r}: expected a positive integer width, got {d!r}")
        self.dims = {name: int(dims[name]) for name in sorted(dims)}
        self.hidden = hidden

    @property
    def modalities(self) -> list[str]:
        return list(self.dims)

    def check_inputs(self, blocks: Mapping[str, torch.Tensor], present: Mapping[str, torch.Tensor]) -> None:
        """Raise StageError unless the inputs hold exactly the modalities and widths fixed at construction."""
        if set(blocks) != set(self.dims) or set(present) != set(self.dims):
            raise StageError(
                f"fusion was built for modalities {self.modalities}; got blocks {sorted(blocks)} "
                f"and presence masks {sorted(present)}"
            )
        n_rows = None
        for name, d in self.dims.items():
            block, mask = blocks[name], present[name]
            if block.ndim != 2 or block.shape[1] != d:
                raise StageError(f"modality {name!r}: expected shape (N, {d}), got {tuple(block.shape)}")
            if n_rows is None:
                n_rows = block.shape[0]
            if block.shape[0] != n_rows or mask.shape != (n_rows,):
                raise StageError(
                    f"modality {name!r}: expected {n_rows} rows and a ({n_rows},) mask; "
                    f"got {block.shape[0]} rows and a mask of shape {tuple(mask.shape)}"
                )


@FUSIONS.register("early", aliases=("concat",))
class EarlyFusion(Fusion):
    """Concatenate the modality blocks (sorted by name), then one presence flag per modality.

    Defined behaviour for missing modalities: the block of a product whose modality
    is missing is replaced by zeros (whatever the input held there) and its flag is
    0; present blocks pass through unchanged with flag 1. Since features are
    standardised upstream, zero is the mean of the observed values, so a product
    with a missing modality sits at the "average" of that modality, and the flag
    lets the next layer learn an offset for its absence.

    Shape:
        output: ``(N, sum(d_m) + M)`` where ``M`` is the number of modalities.
    """

    def __init__(self, dims: Mapping[str, int], hidden: int = 256) -> None:
        super().__init__(dims, hidden)
        self.out_dim = sum(self.dims.values()) + len(self.dims)

    def forward(self, blocks: Mapping[str, torch.Tensor], present: Mapping[str, torch.Tensor]) -> torch.Tensor:
        self.check_inputs(blocks, present)
        parts = []
        flags = []
        for name in self.modalities:
            mask = present[name].to(dtype=torch.bool, device=blocks[name].device)
            # where() rather than a multiply, so NaN or inf in a missing row cannot leak through
            parts.append(torch.where(mask[:, None], blocks[name], torch.zeros_like(blocks[name])))
            flags.append(mask.to(blocks[name].dtype))
        return torch.cat([*parts, torch.stack(flags, dim=1)], dim=1)
