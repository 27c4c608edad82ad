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
    #: True when the network must build one bottleneck and head per modality (late fusion).
    per_modality_heads: bool = False

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


def masked_mean(stacked: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Mean over the modalities present in each row; zeros for a row with none.

    Shape:
        stacked ``(M, N, k)`` and present ``(M, N)`` bool in; ``(N, k)`` out.
    """
    weights = present.to(stacked.dtype).unsqueeze(2)
    total = (stacked * weights).sum(dim=0)
    count = weights.sum(dim=0).clamp(min=1.0)
    return total / count


@FUSIONS.register("late")
class LateFusion(Fusion):
    """Late fusion: one bottleneck and one classifier head per modality, predictions combined.

    When a fusion has ``per_modality_heads``, :class:`~adaptation.model.AdaptationNetwork`
    gives each modality its own bottleneck and head. This module's :meth:`forward`
    only masks the blocks (missing rows become zeros, as in early fusion) and
    concatenates them for :meth:`split`; :meth:`combine` then averages the
    per-modality logits (and bottleneck features, which the adaptation losses
    align) over the modalities *present* for each product. Averaging logits
    multiplies the heads' probabilities (a product of experts), and a product with
    one modality is classified by that modality's head alone. A product with no
    modality gets zeros.

    Shape:
        forward: output ``(N, sum(d_m))``; combine: ``(M, N, k)`` and ``(M, N)`` masks in, ``(N, k)`` out.
    """

    per_modality_heads = True

    def __init__(self, dims: Mapping[str, int], hidden: int = 256) -> None:
        super().__init__(dims, hidden)
        self.out_dim = sum(self.dims.values())

    def forward(self, blocks: Mapping[str, torch.Tensor], present: Mapping[str, torch.Tensor]) -> torch.Tensor:
        self.check_inputs(blocks, present)
        parts = []
        for name in self.modalities:
            mask = present[name].to(dtype=torch.bool, device=blocks[name].device)
            parts.append(torch.where(mask[:, None], blocks[name], torch.zeros_like(blocks[name])))
        return torch.cat(parts, dim=1)

    def split(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The per-modality blocks of :meth:`forward`'s output, in modality order."""
        return list(torch.split(x, list(self.dims.values()), dim=1))

    def mask(self, present: Mapping[str, torch.Tensor], device: torch.device) -> torch.Tensor:
        """``(M, N)`` bool presence of each modality, in modality order."""
        return torch.stack([present[m].to(device=device, dtype=torch.bool) for m in self.modalities])

    def combine(self, stacked: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if stacked.ndim != 3 or stacked.shape[0] != len(self.dims) or mask.shape != stacked.shape[:2]:
            raise StageError(
                f"late fusion expects ({len(self.dims)}, N, k) outputs and ({len(self.dims)}, N) masks; "
                f"got {tuple(stacked.shape)} and {tuple(mask.shape)}"
            )
        return masked_mean(stacked, mask)


@FUSIONS.register("attention", aliases=("attn",))
class AttentionFusion(Fusion):
    """Attention fusion: each modality is projected to ``hidden`` and the projections are mixed with per-product
    weights (after Arevalo et al., "Gated multimodal units", ICLR-W 2017, and attention pooling).

    ``z_m = tanh(W_m x_m + b_m)``; score ``s_m = v^T z_m`` (one shared ``v``); weights
    ``a = softmax(s)`` over the modalities present for the product (a missing one
    gets weight exactly 0); output ``sum_m a_m z_m``. A product with no modality
    gets zeros. ``last_weights`` keeps the ``(N, M)`` weights of the last call, for inspection.

    Shape:
        output: ``(N, hidden)``.
    """

    def __init__(self, dims: Mapping[str, int], hidden: int = 256) -> None:
        super().__init__(dims, hidden)
        self.out_dim = hidden
        # ModuleList by position: modality names may hold characters a module name may not
        self.projections = nn.ModuleList([nn.Linear(d, hidden) for d in self.dims.values()])
        self.score = nn.Linear(hidden, 1, bias=False)
        self.last_weights: torch.Tensor | None = None

    def forward(self, blocks: Mapping[str, torch.Tensor], present: Mapping[str, torch.Tensor]) -> torch.Tensor:
        self.check_inputs(blocks, present)
        zs, masks = [], []
        for proj, name in zip(self.projections, self.modalities):
            mask = present[name].to(dtype=torch.bool, device=blocks[name].device)
            x = torch.where(mask[:, None], blocks[name], torch.zeros_like(blocks[name]))
            zs.append(torch.tanh(proj(x)))
            masks.append(mask)
        z = torch.stack(zs, dim=1)  # (N, M, hidden)
        mask = torch.stack(masks, dim=1)  # (N, M)
        scores = self.score(z).squeeze(2).masked_fill(~mask, float("-inf"))
        # rows with no modality would be all -inf: give them finite scores, then zero their weights
        scores = torch.where(mask.any(dim=1, keepdim=True), scores, torch.zeros_like(scores))
        weights = torch.softmax(scores, dim=1) * mask.to(z.dtype)
        self.last_weights = weights.detach()
        return (weights.unsqueeze(2) * z).sum(dim=1)
