"""ResNet-18/50 image encoders from torchvision, with torchvision's ImageNet weights or a local checkpoint."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from prodkg.extractors.base import ENCODERS, EncoderIdentity, resolve_device, resolve_precision, sha256_file
from prodkg.extractors.image_cnn import CNNImageEncoder
from prodkg.errors import ConfigError, ModelLoadError

# torchvision's ImageNet preprocessing for these weights is resize 256 (bilinear), centre crop 224, ImageNet
# mean/std; it is read from the weights enum, so nothing here restates it.
_PREPROCESSING_FROM = "IMAGENET1K_V1"

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum


def _tv_models() -> Any:
    # imported on first use: torchvision pulls in torch._dynamo (~2 s), which a re-run served from the cache never needs
    from torchvision import models

    return models


def _unwrap_checkpoint(obj: Any, path: str) -> dict[str, torch.Tensor]:
    """Accept a bare state dict or the usual training wrappers ({'state_dict': ...}, {'model': ...}, DataParallel)."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelLoadError(f"{path} does not hold a state dict (a dict of tensor names to tensors)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


class _ResNetEncoder(CNNImageEncoder):
    """ResNet (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, arXiv:1512.03385).

    The classifier ``fc`` is replaced by the identity, so features are the
    global-average-pooled output of the last residual stage.

    Args:
        weights: a torchvision weights name (``"IMAGENET1K_V1"``, ``"IMAGENET1K_V2"``
            for ResNet-50, or ``"DEFAULT"``); downloaded on first use into the
            torch hub cache. Ignored when ``checkpoint`` is given.
        checkpoint: path to a local state dict (``.pth``) of the same architecture,
            loaded with ``torch.load(weights_only=True)``; an ``fc`` of any size in
            it is ignored. Preprocessing is then torchvision's IMAGENET1K_V1 one.
        device: ``"cpu"`` or ``"cuda"``.
        precision: ``"fp32"``, ``"bf16"`` (autocast) or ``"auto"``.
        compile: run the forward through ``torch.compile`` (off by default; see ``CNNImageEncoder._forward``).

    Shape:
        output: ``(N, 512)`` for ResNet-18, ``(N, 2048)`` for ResNet-50, float32.
    """

    # No ImageNet ResNet weights are reachable offline to measure bf16 against fp32 on, so "auto" keeps fp32.
    bf16_ok = False
    #: torchvision's builder and weights enum for this depth, looked up in ``torchvision.models`` on first use
    _arch: str
    _weights_enum_name: str
    #: width of the pooled features (``fc.in_features``), known from the architecture alone
    feature_dim: int

    @classmethod
    def _weights_enum(cls) -> type[WeightsEnum]:
        return getattr(_tv_models(), cls._weights_enum_name)

    @classmethod
    def identify(cls, weights: str | WeightsEnum | None = "DEFAULT", checkpoint: str | os.PathLike[str] | None = None,
                 *, device: str = "cpu", precision: str = "auto", compile: bool = False) -> EncoderIdentity | None:
        if checkpoint is not None:
            path = os.fspath(checkpoint)
            if not os.path.isfile(path):
                return None  # the constructor reports it
            digest, tag = sha256_file(path), f"tv-{_PREPROCESSING_FROM}"
        elif weights is not None:
            preprocessing = cls._resolve_weights(weights)
            cached = _hub_file(preprocessing.url)
            if not os.path.isfile(cached):
                return None  # not downloaded yet: the constructor downloads it and hashes the file
            digest, tag = sha256_file(cached), f"tv-{preprocessing.name}"
        else:
            return None
        dev = resolve_device(device)
        prec = resolve_precision(precision, dev, bf16_ok=cls.bf16_ok)
        return EncoderIdentity(cls.name, cls.modality, cls.make_encoder_id(digest, tag, prec), cls.feature_dim, prec, dev)

    def __init__(
        self,
        weights: str | WeightsEnum | None = "DEFAULT",
        checkpoint: str | os.PathLike[str] | None = None,
        *,
        device: str = "cpu",
        precision: str = "auto",
        compile: bool = False,
    ) -> None:
        model = getattr(_tv_models(), self._arch)(weights=None)
        if checkpoint is not None:
            path = os.fspath(checkpoint)
            state_dict, digest = self._load_checkpoint(path)
            preprocessing = self._weights_enum()[_PREPROCESSING_FROM]
        elif weights is not None:
            preprocessing = self._resolve_weights(weights)
            state_dict, digest = self._download(preprocessing)
        else:
            raise ConfigError(
                f"{self.name}: give weights= (e.g. 'IMAGENET1K_V1') or checkpoint=<path to a state_dict .pth>; "
                "random weights give meaningless features"
            )
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
        try:
            missing, unexpected = model.load_state_dict(state_dict, strict=False)
        except RuntimeError as exc:  # shape mismatches raise even when strict=False
            shapes = [line.strip() for line in str(exc).splitlines() if "size mismatch" in line]
            raise ModelLoadError(
                f"{self.name}: checkpoint does not match the architecture; {len(shapes)} shape mismatch(es), "
                f"first: {shapes[0] if shapes else exc}"
            ) from exc
        missing = [k for k in missing if not k.startswith("fc.")]
        if missing or unexpected:
            raise ModelLoadError(
                f"{self.name}: checkpoint does not match the architecture; "
                f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
            )
        dim = model.fc.in_features
        model.fc = nn.Identity()
        self._setup(
            model,
            preprocessing.transforms(),
            dim=dim,
            weights_digest=digest,
            preprocessing_tag=f"tv-{preprocessing.name}",
            device=device,
            precision=precision,
            compile=compile,
        )

    @classmethod
    def _resolve_weights(cls, weights: str | WeightsEnum) -> WeightsEnum:
        enum = cls._weights_enum()
        if isinstance(weights, enum):
            return weights
        try:
            return enum[weights] if weights != "DEFAULT" else enum.DEFAULT
        except KeyError:
            valid = ", ".join(["DEFAULT", *(w.name for w in enum)])
            raise ConfigError(f"{cls.name}: unknown weights {weights!r}; valid: {valid}") from None

    def _download(self, weights: WeightsEnum) -> tuple[dict[str, torch.Tensor], str]:
        try:
            state_dict = weights.get_state_dict(progress=False, check_hash=True)
        except (OSError, RuntimeError, ValueError) as exc:  # URLError is an OSError; a bad hash is a RuntimeError
            raise ModelLoadError(
                f"{self.name}: could not download torchvision weights {weights} from {weights.url} ({exc}). "
                f"Without network access, pass checkpoint=<path to a {self.name} state_dict .pth> instead"
            ) from exc
        cached = _hub_file(weights.url)
        digest = sha256_file(cached) if os.path.isfile(cached) else _digest_from_url(weights.url)
        return state_dict, digest

    def _load_checkpoint(self, path: str) -> tuple[dict[str, torch.Tensor], str]:
        if not os.path.isfile(path):
            raise ModelLoadError(f"{self.name}: checkpoint file not found: {path}")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except (RuntimeError, OSError, ValueError, EOFError) as exc:
            raise ModelLoadError(f"{self.name}: could not read checkpoint {path}: {exc}") from exc
        return _unwrap_checkpoint(obj, path), sha256_file(path)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    last_block_description = "layer4 (the last residual stage)"

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and layer1-3, as ``ResNet.forward`` runs them.

        Shape:
            x: ``(N, 3, 224, 224)``; returns ``(N, 256, 14, 14)`` for ResNet-18, ``(N, 1024, 14, 14)`` for ResNet-50.
        """
        m = self.model
        x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        return m.layer3(m.layer2(m.layer1(x)))

    def last_block(self) -> nn.Module:
        """``layer4``, global average pooling and flatten (shares ``self.model``'s parameters)."""
        return nn.Sequential(self.model.layer4, self.model.avgpool, nn.Flatten(1))


def _hub_file(url: str) -> str:
    """Where torch hub keeps a downloaded torchvision weights file."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))


def _digest_from_url(url: str) -> str:
    # torchvision file names end in the first hex digits of the file's sha256 (e.g. resnet50-0676ba61.pth)
    stem = os.path.basename(url).rsplit(".", 1)[0]
    return stem.rsplit("-", 1)[-1]


@ENCODERS.register("resnet18")
class ResNet18Encoder(_ResNetEncoder):
    __doc__ = _ResNetEncoder.__doc__
    name = "resnet18"
    _arch, _weights_enum_name, feature_dim = "resnet18", "ResNet18_Weights", 512


@ENCODERS.register("resnet50")
class ResNet50Encoder(_ResNetEncoder):
    __doc__ = _ResNetEncoder.__doc__
    name = "resnet50"
    _arch, _weights_enum_name, feature_dim = "resnet50", "ResNet50_Weights", 2048
