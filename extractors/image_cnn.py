"""Shared body of the CNN image encoders: decode + preprocess an image, pool a backbone's features in batches."""

from __future__ import annotations

import abc
import copy
import os
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from prodkg.extractors.base import Encoder, open_image, resolve_device, resolve_precision, sha256_state_dict
from prodkg.errors import ConfigError, ModelLoadError


class CNNImageEncoder(Encoder):
    """A convolutional backbone whose pooled penultimate activations are the image features.

    Subclasses build the backbone and its preprocessing, then call :meth:`_setup`,
    and implement :meth:`features`.
    """

    modality = "image"
    #: may ``precision="auto"`` choose bf16? Set per subclass from a measurement (see bench/bench_extract.py)
    bf16_ok: bool = False
    #: images per forward pass on a CPU, whatever the extraction's batch size. glibc serves allocations above
    #: its mmap threshold (32 MiB at most) with fresh pages, so a pass over 32 images page-faults through every
    #: layer's activations; passes of 4 stay below it. On a 2-core AVX2 EPYC, 2 threads, fresh process,
    #: EfficientNet-Lite0 ran 80 images/s in passes of 4 against 45 in 16, 31 in 32 and 25 in 64 (1 and 2 were
    #: slower than 4), ResNet-50 15.3 against 12.0 in 32; with MALLOC_MMAP_THRESHOLD_ raised, 32 ran as fast
    #: as 4 (bench/bench_extract.py; cosine to one pass per batch 1.00000). 0 or None: one pass per batch.
    #: A GPU always gets whole batches.
    cpu_forward_batch: int | None = 4

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
        compile: bool = False,
    ) -> None:
        if not isinstance(compile, bool):
            raise ConfigError(f"compile must be true or false, got {compile!r}")
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
        self.encoder_id = self.make_encoder_id(weights_digest, preprocessing_tag, self.precision)
        # Not part of encoder_id: compiled kernels agree with eager ones to float rounding (cosine 1.00000 on
        # office-caltech in bench/bench_extract.py), as results under different thread counts do.
        self.compile = compile
        self._compiled: Callable[[torch.Tensor], torch.Tensor] | None = None

    @classmethod
    def make_encoder_id(cls, weights_digest: str, preprocessing_tag: str, precision: str) -> str:
        """The cache identity: model name, weights digest, preprocessing and resolved precision."""
        return f"{cls.name}/{weights_digest[:12]}/{preprocessing_tag}/{precision}"

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
        x = self.stack_items(items)
        with torch.inference_mode(), self.autocast():
            out = self.forward_features(x)
        return out.float().cpu().numpy()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`features` as extraction runs it: in passes of :attr:`cpu_forward_batch` images on a CPU.

        Shape:
            x: ``(N, 3, H, W)`` preprocessed images on the encoder's device; returns ``(N, dim)``.
        """
        step = self.cpu_forward_batch if self.device.type == "cpu" else None
        if not step or len(x) <= step:
            return self._forward(x)
        return torch.cat([self._forward(x[i : i + step]) for i in range(0, len(x), step)])

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`features`, through torch.compile when the encoder was built with ``compile=True``.

        Compiling costs a fixed ~40 s on a 2-core CPU the first time (a few seconds once torch's on-disk
        cache holds the kernels) and then runs EfficientNet-Lite0 1.7x and ResNet-50 1.2-1.3x faster
        (bench/bench_extract.py), so it pays off from a few thousand images. Where it cannot compile
        (no C++ compiler, an unsupported op), the encoder warns once and stays eager.
        """
        if not self.compile:
            return self.features(x)
        if self._compiled is None:
            self._compiled = torch.compile(self.features)
        try:
            return self._compiled(x)
        except Exception as exc:  # noqa: BLE001  dynamo/inductor raise many types; eager is always a valid answer
            warnings.warn(f"{self.name}: torch.compile failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                          "encoding without it", RuntimeWarning, stacklevel=3)
            self.compile = False
            return self.features(x)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_compiled"] = None  # DataLoader workers started with "spawn" pickle the encoder; they recompile
        return state

    def stack_items(self, items: list[Any]) -> torch.Tensor:
        """Items from :meth:`load_item` -> one ``(N, 3, H, W)`` channels-last batch on the encoder's device."""
        for i, t in enumerate(items):
            if not isinstance(t, torch.Tensor) or t.ndim != 3 or t.shape[0] != 3:
                got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise TypeError(f"encode_batch expects (3, H, W) tensors from load_item; item {i} is {got}")
        x = torch.stack(items).to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last)

    # --- fine-tuning hooks (adaptation/finetune.py) ------------------------------------------
    # The backbone splits into a frozen *trunk* and its *last block*, with features(x) == last_block()(trunk(x)).
    # Fine-tuning trains a copy of the last block on the trunk's activations, computed once per image.

    #: what :meth:`last_block` holds, in words, for manifests and error messages
    last_block_description: str = ""

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen layers before the last block.

        Shape:
            x: ``(N, 3, H, W)`` preprocessed images; returns the ``(N, C, h, w)`` activations entering the last block.
        """
        raise ConfigError(f"image encoder {self.name!r} does not support backbone fine-tuning (no trunk/last block split)")

    def last_block(self) -> nn.Module:
        """The module that maps :meth:`trunk` activations to the pooled ``(N, dim)`` features.

        It shares its parameters with ``self.model``: copy it before training it.
        """
        raise ConfigError(f"image encoder {self.name!r} does not support backbone fine-tuning (no trunk/last block split)")


class FineTunedImageEncoder(Encoder):
    """A CNN image encoder whose last block was fine-tuned (see :mod:`adaptation.finetune`).

    Images go through the base encoder's frozen trunk, then through the
    fine-tuned copy of its last block. The base encoder is not modified.
    ``encoder_id`` is the base's id plus a digest of the fine-tuned block's
    weights, so its cached features are never mixed with frozen ones, nor with
    those of another fine-tuning.

    The last block runs in fp32 even when the base trunk runs under bf16
    autocast: it was trained in fp32.

    Args:
        base: the frozen encoder the block was fine-tuned from.
        block_state: state dict of ``base.last_block()`` after fine-tuning.

    Shape:
        output: ``(N, base.dim)`` float32.
    """

    modality = "image"

    def __init__(self, base: CNNImageEncoder, block_state: dict[str, torch.Tensor]) -> None:
        if not isinstance(base, CNNImageEncoder):
            raise ConfigError(f"fine-tuning needs a CNN image encoder; got {type(base).__name__}")
        block = copy.deepcopy(base.last_block())
        try:
            block.load_state_dict(block_state, strict=True)
        except RuntimeError as exc:
            raise ModelLoadError(f"fine-tuned block does not fit {base.encoder_id}: {exc}") from exc
        self.base = base
        self.block = block.eval().requires_grad_(False).to(base.device).to(memory_format=torch.channels_last)
        self.name = f"{base.name}+finetuned"
        self.dim = base.dim
        self.device = base.device
        self.precision = base.precision
        self.weights_hash = sha256_state_dict(block_state)
        self.encoder_id = f"{base.encoder_id}/ft-{self.weights_hash[:12]}"

    def load_item(self, item: str) -> torch.Tensor:
        return self.base.load_item(item)

    def encode_activations(self, activations: torch.Tensor) -> torch.Tensor:
        """Pooled features from trunk activations (the cached-activation path of fine-tuning)."""
        with torch.inference_mode():
            x = activations.to(self.device, torch.float32).contiguous(memory_format=torch.channels_last)
            return self.block(x).float()

    def encode_batch(self, items: list[Any]) -> np.ndarray:
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        x = self.base.stack_items(items)
        with torch.inference_mode(), self.base.autocast():
            activations = self.base.trunk(x)
        return self.encode_activations(activations).cpu().numpy()

    def save(self, path: str | os.PathLike[str], **meta: Any) -> None:
        """Write the fine-tuned block's state dict with the base encoder's id (and ``meta``) to ``path``."""
        state = {k: v.detach().cpu() for k, v in self.block.state_dict().items()}
        torch.save({"block_state": state, "base_encoder_id": self.base.encoder_id, "encoder_id": self.encoder_id,
                    "weights_hash": self.weights_hash, "meta": meta}, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], base: CNNImageEncoder) -> FineTunedImageEncoder:
        """Inverse of :meth:`save`; refuses a block fine-tuned from other base weights."""
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, ValueError, EOFError) as exc:
            raise ModelLoadError(f"could not read fine-tuned block {path}: {exc}") from exc
        if not isinstance(obj, dict) or "block_state" not in obj:
            raise ModelLoadError(f"{path} is not a fine-tuned block saved by FineTunedImageEncoder.save")
        if obj.get("base_encoder_id") != base.encoder_id:
            raise ModelLoadError(
                f"{path} was fine-tuned from {obj.get('base_encoder_id')!r}, not from {base.encoder_id!r}"
            )
        return cls(base, obj["block_state"])
