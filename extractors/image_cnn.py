"""Shared body of the CNN image encoders: decode + preprocess an image, pool a backbone's features in batches."""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from extractors.base import Encoder, open_image, resolve_device, resolve_precision


class CNNImageEncoder(Encoder):
    """A convolutional backbone whose pooled penultimate activations are the image features.

    Subclasses build the backbone and its preprocessing, then call :meth:`_setup`,
    and implement :meth:`features`.
    """

    modality = "image"
    #: may ``precision="auto"`` choose bf16? Set per subclass from a measurement (see bench/bench_extract.py)
    bf16_ok: bool = False

    model: nn.Module
    transform: Callable[[Any], torch.Tensor]

    def _setup(
        self,
        model: nn.Module,
        transform: Callable[[Any], torch.Tensor],
        *,
        dim: int,
        weights_digest: str,
        preprocessing_tag: str,
        device: str | torch.device,
        precision: str,
    ) -> None:
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device, bf16_ok=self.bf16_ok)
        # channels_last lets oneDNN use its blocked convolution kernels: EfficientNet-Lite0 fp32 on 32 images took
        # 2.72 s instead of 2.97 s (1 thread) and 3.3 s instead of 4.8 s (2 threads) on AVX2; bf16 kernels need it too
        model = model.eval().to(self.device).to(memory_format=torch.channels_last)
        for param in model.parameters():
            param.requires_grad_(False)
        self.model = model
        self.transform = transform
        self.dim = dim
        self.encoder_id = f"{self.name}/{weights_digest[:12]}/{preprocessing_tag}/{self.precision}"

    def load_item(self, item: str) -> torch.Tensor:
        """Path or fsspec URL -> preprocessed ``(3, H, W)`` float tensor; :class:`ItemError` if unreadable."""
        return self.transform(open_image(item))

    @abc.abstractmethod
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone forward to pooled features.

        Shape:
            x: ``(N, 3, H, W)`` preprocessed images; returns ``(N, dim)``.
        """

    def encode_batch(self, items: list[Any]) -> np.ndarray:
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        for i, t in enumerate(items):
            if not isinstance(t, torch.Tensor) or t.ndim != 3 or t.shape[0] != 3:
                got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise TypeError(f"encode_batch expects (3, H, W) tensors from load_item; item {i} is {got}")
        x = torch.stack(items).to(self.device, non_blocking=True)
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), self.autocast():
            out = self.features(x)
        return out.float().cpu().numpy()
