"""The encoder interface, its registry, and the helpers every encoder shares (options, precision, image decoding)."""

from __future__ import annotations

import abc
import contextlib
import functools
import hashlib
import http.client
import inspect
import io
import os
import struct
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from prodkg.errors import ConfigError, ModelLoadError, ProdkgError
from prodkg.extractors.sources import ImageLimits, SourceRefused, check_pixels, current_limits, read_image_bytes
from prodkg.registry import Registry

MODALITIES = ("image", "text")
PRECISIONS = ("auto", "fp32", "bf16")


class ItemError(ProdkgError):
    """A single item (one image or one text) could not be loaded: missing file, corrupt image, wrong type.

    It never stops an extraction: the row is marked not-ok and the message is kept as its reason.
    """


class Encoder(abc.ABC):
    """A pretrained model plus the preprocessing its weights were trained with.

    Subclasses set ``name`` and ``modality`` as class attributes and, once their
    weights are loaded, ``dim``, ``precision`` and ``encoder_id``. ``encoder_id``
    names the model, the exact weights (a digest), the preprocessing and the
    precision, so it is a safe key for cached features: it changes whenever any
    of those would change the vectors.

    ``load_item`` runs inside DataLoader workers and must only touch picklable,
    model-free state; ``encode_batch`` runs in the main process.
    """

    name: ClassVar[str] = ""
    modality: ClassVar[str] = ""
    dim: int
    encoder_id: str
    precision: str
    device: torch.device

    @abc.abstractmethod
    def load_item(self, item: str) -> Any:
        """Turn one raw item into model input; raise :class:`ItemError` when it cannot be read."""

    @abc.abstractmethod
    def encode_batch(self, items: list[Any]) -> np.ndarray:
        """Encode items returned by :meth:`load_item`; returns a ``(len(items), dim)`` float32 array."""

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """bf16 autocast on the encoder's device when its precision is bf16, a no-op otherwise."""
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @classmethod
    def identify(cls, **options: Any) -> EncoderIdentity | None:
        """The identity ``cls(**options)`` would have, computed from weight-file digests and configs alone.

        It must equal the built encoder's (``encoder_id`` above all: cached vectors are keyed by it), so
        only encoders whose id is a function of local files and options implement it. ``None`` means
        "build the model to know" (weights that live only on a hub, a config this method cannot read);
        an option the encoder would refuse may raise the same error as the constructor or return ``None``.
        """
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(encoder_id={getattr(self, 'encoder_id', '?')!r}, device={self.device})"


@dataclass(frozen=True)
class EncoderIdentity:
    """What extraction and the feature cache need to know about an encoder, without its model."""

    name: str
    modality: str
    encoder_id: str
    dim: int
    precision: str
    device: torch.device

    @classmethod
    def of(cls, encoder: Encoder) -> EncoderIdentity:
        return cls(encoder.name, encoder.modality, encoder.encoder_id, int(encoder.dim), encoder.precision,
                   encoder.device)


class LazyEncoder:
    """An encoder whose identity is known now and whose model is built on the first :meth:`load`.

    A re-run over an unchanged catalog finds every vector in the feature cache; knowing the
    ``encoder_id`` from weight-file digests lets :func:`~extractors.extract.extract_features`
    skip the model (for all-MiniLM-L6-v2: the transformers import and a 90 MB load, ~2.5 s)
    unless an item is left to encode. Encoders without :meth:`Encoder.identify` (hub-only
    weights) are built at once, as :func:`get_encoder` would.

    Args:
        name: a registered encoder name.
        options: its constructor options.
        build: makes the encoder (default: ``cls(**options)``); the flow passes its shared, memoised builder.
    """

    def __init__(self, name: str, options: dict[str, Any] | None = None, *,
                 build: Callable[[], Encoder] | None = None) -> None:
        options = dict(options or {})
        cls = encoder_class(name, options)
        self._build = build if build is not None else (lambda: cls(**options))
        self._lock = threading.Lock()
        self._encoder: Encoder | None = None
        identity = cls.identify(**options)
        if identity is None:
            self._encoder = self._checked(self._build())
            identity = EncoderIdentity.of(self._encoder)
        self.identity = identity

    @staticmethod
    def _checked(encoder: Any) -> Encoder:
        if not isinstance(encoder, Encoder):
            raise TypeError(f"the encoder builder must return an extractors.Encoder, got {type(encoder).__name__}")
        return encoder

    name = property(lambda self: self.identity.name)
    modality = property(lambda self: self.identity.modality)
    encoder_id = property(lambda self: self.identity.encoder_id)
    dim = property(lambda self: self.identity.dim)
    precision = property(lambda self: self.identity.precision)
    device = property(lambda self: self.identity.device)

    @property
    def loaded(self) -> bool:
        return self._encoder is not None

    def load(self) -> Encoder:
        """The built encoder (built once); raises :class:`ModelLoadError` if it is not the one identified."""
        with self._lock:
            if self._encoder is None:
                encoder = self._checked(self._build())
                built = EncoderIdentity.of(encoder)
                if (built.encoder_id, built.dim) != (self.identity.encoder_id, self.identity.dim):
                    # never let vectors of one model be cached under another's id
                    raise ModelLoadError(
                        f"encoder {self.name!r} was identified as {self.encoder_id} (dim {self.dim}) from its files "
                        f"but built as {built.encoder_id} (dim {built.dim})"
                    )
                self._encoder = encoder
            return self._encoder

    def __repr__(self) -> str:
        return f"LazyEncoder({self.encoder_id!r}, loaded={self.loaded})"


ENCODERS: Registry[type[Encoder]] = Registry("encoder")


def encoder_class(name: str, options: dict[str, Any]) -> type[Encoder]:
    """The registered encoder class ``name``, after checking that it accepts every key of ``options``."""
    cls = ENCODERS.get(name)
    params = inspect.signature(cls.__init__).parameters
    accepted = [p for p in params if p != "self" and params[p].kind is not inspect.Parameter.VAR_KEYWORD]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(
            f"encoder {name!r} does not accept option(s) {', '.join(unknown)}; accepted: {', '.join(accepted)}"
        )
    return cls


def get_encoder(name: str, **options: Any) -> Encoder:
    """Build the registered encoder ``name`` with ``options`` (e.g. ``checkpoint=``, ``model=``, ``precision=``).

    Raises:
        UnknownComponentError: ``name`` is not registered (the message lists valid names).
        ConfigError: an option is not accepted by that encoder (the message lists the accepted ones).
        ModelLoadError: the weights could not be found or loaded.
    """
    return encoder_class(name, options)(**options)


def lazy_encoder(name: str, **options: Any) -> LazyEncoder:
    """Like :func:`get_encoder`, but the model is built only when :meth:`LazyEncoder.load` is first called."""
    return LazyEncoder(name, options)


def list_encoders() -> list[str]:
    """Registered encoder names (aliases not included)."""
    return ENCODERS.names()


def resolve_device(device: str | torch.device) -> torch.device:
    """Validate a device option; asking for CUDA on a machine without it is a configuration error."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device must be 'cpu', 'cuda' or 'cuda:<n>', got {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} was asked for but CUDA is not available on this machine")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device must be 'cpu' or 'cuda', got {device!r}")
    return dev


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bf16 natively (CUDA Ampere+, CPUs with AVX512-BF16 or AMX).

    Without it, oneDNN emulates bf16 and autocast is much slower than fp32: on a 2-core
    AVX2 AMD EPYC (bench/bench_extract.py --threads 1) bf16 took 50.2 s against 8.3 s
    for 90 images with EfficientNet-Lite0, and 23.7 s against 3.8 s for 200 texts with MiniLM.
    """
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    try:
        caps = torch._C._cpu._get_cpu_capability()
    except AttributeError:  # private API; older or newer torch may lack it
        return False
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


def resolve_precision(precision: str, device: torch.device, *, bf16_ok: bool) -> str:
    """Map the ``precision`` option to ``fp32``/``bf16``.

    ``auto`` picks bf16 only where both hold: the encoder's bf16 features were
    measured to agree with fp32 ones (``bf16_ok``: cosine >= 0.999 on every item
    of bench/bench_extract.py) and the device runs bf16 natively, so it is faster.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if bf16_ok and native_bf16(device) else "fp32"
    return precision


_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a local weights file.

    Read in chunks so large files never sit twice in memory, and remembered per
    (path, size, mtime) because building the same encoder twice should not
    re-hash hundreds of megabytes.
    """
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            while block := fh.read(chunk):
                digest.update(block)
        _FILE_DIGESTS[key] = digest.hexdigest()
    return _FILE_DIGESTS[key]


def sha256_state_dict(state_dict: dict[str, torch.Tensor]) -> str:
    """Hex sha256 over the names and bytes of a state dict (for weights that arrive without a file)."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().to("cpu").contiguous()
        digest.update(key.encode("utf-8"))
        digest.update(str(tensor.dtype).encode("ascii"))
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def read_bytes(item: str, limits: ImageLimits | None = None) -> bytes:
    """Bytes of a local image file or an http(s)/file URL, within ``limits`` (default: the context's, see
    :mod:`prodkg.extractors.sources`); a refused, missing or unreadable source raises :class:`ItemError`."""
    if not isinstance(item, str) or not item:
        raise ItemError(f"image item must be a non-empty path or URL string, got {item!r}")
    try:
        return read_image_bytes(item, limits)
    except SourceRefused as exc:
        raise ItemError(f"image refused: {item}: {exc}") from None
    except FileNotFoundError:
        raise ItemError(f"image not found: {item}") from None
    except IsADirectoryError:
        raise ItemError(f"image unreadable: {item}: is a directory") from None
    except (OSError, http.client.HTTPException) as exc:
        raise ItemError(f"image unreadable: {item}: {getattr(exc, 'strerror', None) or exc or type(exc).__name__}") from None


# Decoders raise all of these for corrupt or hostile input; one bad product photo must not stop a catalog.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, Image.DecompressionBombError)


def open_image(item: str, limits: ImageLimits | None = None) -> Image.Image:
    """Decode an image path/URL into an upright RGB PIL image.

    Transparent backgrounds are composited onto white, the usual catalog
    background, rather than onto whatever colour the hidden pixels hold.
    An image whose header announces more than ``limits.max_pixels`` is refused before decoding.
    """
    limits = limits or current_limits()
    return _open_image_bytes(read_bytes(item, limits), item, limits)


def _open_image_bytes(data: bytes, item: str, limits: ImageLimits) -> Image.Image:
    """:func:`open_image` on bytes already read (``item`` names them in reasons)."""
    if not data:
        raise ItemError(f"image unreadable: {item}: empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as img:
            check_pixels(img.size, limits)
            img.load()  # decode now so truncated files fail here, not later inside a transform
            img = ImageOps.exif_transpose(img)
            if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                return Image.alpha_composite(canvas, rgba).convert("RGB")
            return img.convert("RGB")
    except SourceRefused as exc:
        raise ItemError(f"image refused: {item}: {exc}") from None
    except UnidentifiedImageError:
        raise ItemError(f"image unreadable: {item}: cannot identify image file") from None
    except _DECODE_ERRORS as exc:
        raise ItemError(f"image unreadable: {item}: {exc}") from None


#: The decoders :func:`decode_image` can use; the name is part of an encoder's ``encoder_id`` (the two give
#: slightly different pixels, so their vectors must never share cache entries).
DECODERS = ("turbo", "pil")


def decode_image(item: str, limits: ImageLimits | None = None, *, decoder: str = "turbo") -> torch.Tensor:
    """Decode an image path/URL into an upright RGB ``(3, H, W)`` uint8 tensor.

    ``decoder="turbo"`` decodes plain JPEGs (baseline or progressive, RGB or greyscale) with torchvision's
    libjpeg-turbo binding, straight into a tensor: 0.55 ms against 1.2 ms for PIL's decode, EXIF rotation and
    RGB copy on office-caltech-10 photos (bench/bench_decode.py). Everything else goes through
    :func:`open_image`, whose protections hold for both paths: the bytes are read within ``limits``, the
    header's dimensions are checked against ``limits.max_pixels`` before any pixel is decoded, and a file the
    fast decoder refuses (truncated, corrupt, CMYK, a format it does not read) is decoded by PIL or
    quarantined with PIL's reason. ``decoder="pil"`` always uses :func:`open_image`.

    Shape:
        returns ``(3, H, W)`` uint8, contiguous.
    """
    if decoder not in DECODERS:
        raise ConfigError(f"decoder must be one of {', '.join(DECODERS)}, got {decoder!r}")
    limits = limits or current_limits()
    if decoder == "turbo":
        data = read_bytes(item, limits)
        pixels = _decode_jpeg_turbo(data, limits, item)
        if pixels is not None:
            return pixels
        return _pil_to_tensor(_open_image_bytes(data, item, limits))
    return _pil_to_tensor(open_image(item, limits))


# torchvision 0.29 announces once per process that its image codecs will move to TorchCodec; decode_jpeg is
# pinned with torchvision in pyproject.toml, and the test suite would otherwise show the notice on every run
_TV_CODEC_NOTICE = "The image decoding and encoding capabilities of TorchVision are deprecated"


@functools.cache
def _jpeg_decoder():
    """torchvision's ``decode_jpeg`` and its RGB mode, imported once per process with the codec notice silenced once."""
    from torchvision.io import ImageReadMode, decode_jpeg

    warnings.filterwarnings("ignore", message=_TV_CODEC_NOTICE, category=DeprecationWarning)
    return decode_jpeg, ImageReadMode.RGB


def _decode_jpeg_turbo(data: bytes, limits: ImageLimits, item: str) -> torch.Tensor | None:
    """libjpeg-turbo pixels of a plain JPEG, or ``None`` when PIL should decode ``data`` instead.

    Raises ItemError when the header announces more than ``limits.max_pixels`` (nothing is decoded then).
    """
    if not data.startswith(b"\xff\xd8\xff"):
        return None
    try:
        with Image.open(io.BytesIO(data)) as img:  # reads the header only
            size, mode, fmt = img.size, img.mode, img.format
    except (UnidentifiedImageError, *_DECODE_ERRORS):
        return None  # PIL decodes it again and names the reason
    if fmt != "JPEG" or mode not in ("RGB", "L"):
        return None  # MPO, CMYK/YCCK: PIL's own conversions keep their colours
    try:
        check_pixels(size, limits)
    except SourceRefused as exc:
        raise ItemError(f"image refused: {item}: {exc}") from None
    decode_jpeg, rgb = _jpeg_decoder()
    try:
        pixels = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=rgb, apply_exif_orientation=True)
    except RuntimeError:  # truncated or corrupt: PIL decides, and its reason is the one quarantined
        return None
    expected = {size, size[::-1]}  # EXIF orientations 5-8 swap the sides
    if pixels.ndim != 3 or pixels.shape[0] != 3 or (pixels.shape[2], pixels.shape[1]) not in expected:
        return None
    return pixels.contiguous()


def _pil_to_tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()
