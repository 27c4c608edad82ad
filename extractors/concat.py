"""Encoders side by side: one vector made of several encoders' features, each part exactly what it gives alone.

Two encoders that err on different items give a head more to separate classes with: two image backbones of
different sizes (:mod:`extractors.image_concat`), or a sentence encoder beside hashed n-grams of the title
(:mod:`extractors.text_ngrams`). The cache identity names every part's identity.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from prodkg.errors import ConfigError
from prodkg.extractors.base import Encoder, EncoderIdentity, encoder_class, resolve_device

__all__ = ["ConcatEncoder"]


class ConcatEncoder(Encoder):
    """The features of the encoders named in :attr:`parts`, concatenated; every part is of the class's
    :attr:`modality`. ``device`` and ``precision`` apply to every part; a part's own options (a checkpoint, a decoder)
    are its defaults."""

    parts: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def _part_options(cls, device: str, precision: str) -> list[dict[str, Any]]:
        """Each part's options. ``precision`` is one for all parts, or ``mixed:<p1>,<p2>`` (what :attr:`precision`
        reads when the parts resolved ``auto`` differently), one per part, so that a run's recorded precision
        builds the same encoder again (``prodkg predict``)."""
        if not isinstance(precision, str):
            raise ConfigError(f"{cls.name}: precision must be a string, got {precision!r}")
        each = precision.removeprefix("mixed:").split(",") if precision.startswith("mixed:") else [precision] * len(cls.parts)
        if len(each) != len(cls.parts):
            raise ConfigError(f"{cls.name}: precision {precision!r} names {len(each)} precisions for {len(cls.parts)} encoders")
        return [{"device": device, "precision": p} for p in each]

    @classmethod
    def identify(cls, *, device: str = "cpu", precision: str = "auto") -> EncoderIdentity | None:
        ids = [encoder_class(p, o).identify(**o) for p, o in zip(cls.parts, cls._part_options(device, precision), strict=True)]
        if any(i is None for i in ids):
            return None
        return EncoderIdentity(cls.name, cls.modality, cls.make_encoder_id([i.encoder_id for i in ids]), sum(i.dim for i in ids),
                               cls.combined_precision([i.precision for i in ids]), resolve_device(device))

    @classmethod
    def make_encoder_id(cls, part_ids: list[str]) -> str:
        return f"{cls.name}[{'|'.join(part_ids)}]"

    @staticmethod
    def combined_precision(precisions: list[str]) -> str:
        """``fp32`` or ``bf16`` when the parts agree, else ``mixed:<part precisions>``."""
        return precisions[0] if len(set(precisions)) == 1 else "mixed:" + ",".join(precisions)

    def __init__(self, *, device: str = "cpu", precision: str = "auto") -> None:
        if len(self.parts) < 2:
            raise ConfigError(f"{type(self).__name__} needs at least two encoders; got {self.parts!r}")
        self.encoders: list[Encoder] = [encoder_class(p, o)(**o) for p, o in zip(self.parts, self._part_options(device, precision), strict=True)]
        if any(e.modality != self.modality for e in self.encoders):
            raise ConfigError(f"{self.name}: every part must be a {self.modality} encoder")
        self.device = resolve_device(device)
        self.dim = sum(int(e.dim) for e in self.encoders)
        self.precision = self.combined_precision([e.precision for e in self.encoders])
        self.encoder_id = self.make_encoder_id([e.encoder_id for e in self.encoders])

    def load_item(self, item: str) -> tuple[Any, ...]:
        return tuple(e.load_item(item) for e in self.encoders)

    def encode_batch(self, items: list[Any]) -> np.ndarray:
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        for i, t in enumerate(items):
            if not isinstance(t, tuple) or len(t) != len(self.encoders):
                raise TypeError(f"encode_batch expects one tuple of {len(self.encoders)} parts per item from load_item; item {i} is "
                                f"{type(t).__name__}")
        return np.hstack([e.encode_batch([t[k] for t in items]) for k, e in enumerate(self.encoders)]).astype(np.float32, copy=False)
