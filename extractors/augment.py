"""Shelf-style views of a catalog packshot: seeded augmentations that imitate in-store photos, before the encoder.

A catalog often has one clean photo per product (a packshot on white), while the photos to label are taken on a
shelf: cropped, at an angle, under other light, blurred, among other products. :class:`ShelfAugment` turns one
packshot into ``K`` such views, each made from pixels only (never a target photo):

1. the product is cut from its studio backdrop (the colour of its border, when that is uniform) and pasted, shrunk, onto a *background*: a zoomed-in crop of another source product's photo, or a smooth colour
   noise texture; ``clutter`` more source products are pasted around it, smaller;
2. a random perspective, a random resized crop, colour and lighting jitter and a Gaussian blur
   (torchvision.transforms.v2) are applied to the result.

Every random draw of a view comes from a seed derived from the image's content hash, the augmentation's
:meth:`~ShelfAugment.spec_id`, the run seed and the view index, so a view is the same in any process and any
order; which other products serve as background and clutter is chosen by rendezvous hashing over a fixed pool
of source images, so adding a product to the catalog changes few views (:func:`pick_others`).

The features of the views are computed and cached by :func:`prodkg.extractors.views.extract_views`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

__all__ = ["ShelfAugment", "pick_others", "view_seed"]

#: side of a view in pixels (square); every encoder resizes it to its own input size
VIEW_SIZE = 320


@dataclass(frozen=True)
class ShelfAugment:
    """The augmentation of one packshot into a shelf-like view; every field is part of :meth:`spec_id`.

    Attributes:
        size: side of the (square) view in pixels, before the encoder's own resize.
        crop_scale: area range of the random resized crop (RandomResizedCrop's ``scale``).
        perspective: distortion of the random perspective (0: none).
        perspective_p: probability of applying it.
        brightness, contrast, saturation, hue: ColorJitter ranges.
        blur_p: probability of a Gaussian blur; ``blur_sigma`` its sigma range.
        background_p: share of views whose product is pasted onto a background (the rest keep the packshot's own).
        photo_background_p: of those, the share whose background is a crop of another product's photo (else noise).
        product_scale: side of the pasted product relative to the view.
        clutter: other products pasted around it (smaller, partly hidden behind it).
        background_tolerance: a packshot's backdrop is the median colour of its border when the border is
            nearly uniform; pixels within this distance (per channel, 0-255) of it are not pasted.
    """

    size: int = VIEW_SIZE
    crop_scale: tuple[float, float] = (0.35, 1.0)
    perspective: float = 0.3
    perspective_p: float = 0.5
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.05
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    background_p: float = 0.8
    photo_background_p: float = 0.7
    product_scale: tuple[float, float] = (0.5, 0.9)
    clutter: int = 2
    background_tolerance: int = 28

    def spec_id(self) -> str:
        """A short stable identity of these settings (part of every view's cache key)."""
        body = json.dumps(asdict(self), sort_keys=True).encode()
        return "shelf1-" + hashlib.sha256(body).hexdigest()[:12]

    @property
    def n_others(self) -> int:
        """Other products one view draws on: one background and the clutter."""
        return 1 + self.clutter

    def view(self, pixels: torch.Tensor, seed: int, others: Sequence[torch.Tensor] = ()) -> torch.Tensor:
        """One view of ``pixels``, drawn from ``seed``; ``others`` are other source products' pixels.

        Shape:
            pixels: ``(3, H, W)`` uint8 RGB; others: each ``(3, h, w)`` uint8. Returns ``(3, size, size)`` uint8.
        """
        from torchvision.transforms import v2 as T
        from torchvision.transforms.v2 import functional as F

        # torchvision's random transforms draw from torch's global generator: fork it, so the caller's stream is
        # untouched and the view depends on ``seed`` alone
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            gen = torch.Generator().manual_seed(seed)
            x = _shrink(pixels, self.size)
            if others and _uniform(gen) < self.background_p:
                x = self._composite(x, list(others), gen)
            else:
                x = F.resize(x, [self.size, self.size], antialias=True)
            # the corners a perspective uncovers get the view's mean colour, and the crop after it cuts most of them off
            fill = [int(v) for v in x.float().mean(dim=(1, 2)).round()]
            steps = [
                T.RandomPerspective(self.perspective, p=self.perspective_p, fill=fill),
                T.RandomResizedCrop(self.size, scale=self.crop_scale, ratio=(0.75, 1.333), antialias=True),
                T.ColorJitter(self.brightness, self.contrast, self.saturation, self.hue),
                T.RandomApply([T.GaussianBlur(9, sigma=self.blur_sigma)], p=self.blur_p),
            ]
            for step in steps:
                x = step(x)
        return x.contiguous()

    def _composite(self, x: torch.Tensor, others: list[torch.Tensor], gen: torch.Generator) -> torch.Tensor:
        """The product pasted on a background made from ``others[0]`` (or noise), with ``others[1:]`` as clutter."""
        from torchvision.transforms.v2 import functional as F

        s = self.size
        if _uniform(gen) < self.photo_background_p:
            bg = _shrink(others[0], s)
            h, w = bg.shape[1:]
            # a zoomed-in part of another product: texture and colour of a shelf, not a second whole product
            side = max(8, int(min(h, w) * (0.25 + 0.5 * _uniform(gen))))
            top, left = int(_uniform(gen) * (h - side)), int(_uniform(gen) * (w - side))
            canvas = F.resize(bg[:, top:top + side, left:left + side], [s, s], antialias=True)
        else:
            cells = 2 + int(_uniform(gen) * 6)
            noise = torch.randint(0, 256, (3, cells, cells), generator=gen, dtype=torch.uint8)
            canvas = F.resize(noise, [s, s], interpolation=F.InterpolationMode.BICUBIC, antialias=False)
        canvas = canvas.clone()
        for other in others[1:]:
            _paste(canvas, _shrink(other, s), 0.3 + 0.25 * _uniform(gen), gen, self.background_tolerance)
        lo, hi = self.product_scale
        _paste(canvas, x, lo + (hi - lo) * _uniform(gen), gen, self.background_tolerance)
        return canvas


def _uniform(gen: torch.Generator) -> float:
    return float(torch.rand((), generator=gen))


def _shrink(pixels: torch.Tensor, side: int) -> torch.Tensor:
    """``pixels`` with its longer side at most ``side`` (augmenting a 4000-px photo costs what a small one does)."""
    from torchvision.transforms.v2 import functional as F

    h, w = pixels.shape[1:]
    if max(h, w) <= side:
        return pixels
    scale = side / max(h, w)
    return F.resize(pixels, [max(1, round(h * scale)), max(1, round(w * scale))], antialias=True)


def _backdrop_mask(item: torch.Tensor, tolerance: int) -> torch.Tensor:
    """``(H, W)`` True where ``item`` is product, not its studio backdrop.

    The backdrop is the median colour of the border when the border is nearly uniform (a packshot on white or
    grey); a photo whose border varies has no backdrop to remove and is pasted whole.
    """
    border = torch.cat([item[:, 0], item[:, -1], item[:, :, 0], item[:, :, -1]], dim=1).float()
    median = border.median(dim=1).values
    if (border - median[:, None]).abs().mean() > tolerance / 2:
        return torch.ones(item.shape[1:], dtype=torch.bool)
    return ((item.float() - median[:, None, None]).abs() > tolerance).any(0)


def _paste(canvas: torch.Tensor, item: torch.Tensor, rel: float, gen: torch.Generator, tolerance: int) -> None:
    """Paste ``item``, its longer side ``rel`` of the canvas's, at a random place, without its backdrop."""
    from torchvision.transforms.v2 import functional as F

    s = canvas.shape[1]
    h, w = item.shape[1:]
    scale = rel * s / max(h, w)
    nh, nw = max(1, min(s, round(h * scale))), max(1, min(s, round(w * scale)))
    item = F.resize(item, [nh, nw], antialias=True)
    top, left = int(_uniform(gen) * (s - nh + 1)), int(_uniform(gen) * (s - nw + 1))
    keep = _backdrop_mask(item, tolerance)
    region = canvas[:, top:top + nh, left:left + nw]
    region[:, keep] = item[:, keep]


def view_seed(content_hash: str, spec_id: str, seed: int, view: int) -> int:
    """The seed of view ``view`` of the image whose content hash is ``content_hash`` (63 bits)."""
    digest = hashlib.sha256(f"{content_hash}|{spec_id}|{seed}|{view}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def pick_others(content_hash: str, pool: Sequence[str], seed: int, n: int) -> list[str]:
    """The ``n`` images of ``pool`` (content hashes) a view with seed ``seed`` draws on, never the image itself.

    Rendezvous hashing: each candidate gets a score from (view seed, candidate) and the ``n`` highest win, so
    adding or removing one image of the pool changes only the views that picked it.
    """
    scored = sorted((hashlib.sha256(f"{seed}|{h}".encode()).digest(), h) for h in set(pool) if h != content_hash)
    return [h for _, h in scored[-n:][::-1]] if n > 0 else []
