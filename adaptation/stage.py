"""The optional fine-tuning stage: train the image encoder's last block and swap in its image features."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from prodkg.blocks import PackedBlock, block_chunks
from prodkg.catalogs.stage import modality_items
from prodkg.errors import ConfigError, StageError
from prodkg.extractors.stage import ExtractOutput, shared_encoder
from prodkg.progress import on_terminal

__all__ = ["FINETUNE_FILE", "FinetuneSettings", "check_finetune", "finetune_stage"]

FINETUNE_FILE = "image_backbone_finetuned.pt"
_RESERVED = {"epochs": "finetune_epochs", "seed": "seed", "max_images_cpu": "finetune_max_images_cpu", "force": "finetune_force"}


@dataclass(frozen=True)
class FinetuneSettings:
    """The slice of the run configuration backbone fine-tuning needs."""

    image_encoder: str = "efficientnet_lite0"
    image_options: dict[str, Any] = field(default_factory=dict)
    epochs: int = 5
    max_images_cpu: int = 5000
    force: bool = False
    options: dict[str, Any] = field(default_factory=dict)  # other FinetuneConfig keys: method, lr, block_lr, ...
    seed: int = 0
    num_workers: int = 0
    progress: bool = True
    reuse: bool = True  # reuse a block trained on the same images, labels and settings

    def config(self):
        """The :class:`adaptation.finetune.FinetuneConfig` of these settings."""
        from prodkg.adaptation.finetune import FinetuneConfig

        clash = sorted(set(self.options) & set(_RESERVED))
        if clash:
            raise ConfigError(f"finetune_options may not set {', '.join(clash)}; use {', '.join(_RESERVED[k] for k in clash)} instead")
        return FinetuneConfig.from_dict({**self.options, "epochs": self.epochs, "seed": self.seed, "max_images_cpu": self.max_images_cpu,
                                         "force": self.force})

    def device(self) -> str:
        """The image encoder's ``device`` option when given, else CUDA when present, else CPU."""
        from prodkg.adaptation.finetune import default_device

        return str(self.image_options.get("device") or default_device())


def check_finetune(settings: FinetuneSettings, products: pd.DataFrame) -> None:
    """Before anything is extracted: refuse fine-tuning on CPU above the image limit (ConfigError)."""
    from prodkg.adaptation.finetune import check_image_budget

    n_images = sum(v is not None for v in modality_items(products, "image")) if len(products) else 0
    check_image_budget(n_images, settings.device(), settings.config())


def finetune_stage(ext: ExtractOutput, settings: FinetuneSettings, source: list[str], models_dir: Path,
                   cache_dir: Path | None) -> tuple[ExtractOutput, dict]:
    """Fine-tune the image encoder's last block on the source categories and swap in its image features.

    Text features are untouched. The fine-tuned block goes to ``models_dir``; with ``settings.reuse``
    a run over the same images, labels and settings reuses the block stored under ``cache_dir``
    instead of training again. Returns the new extract output and the record for the manifest.
    """
    if "image" not in ext.features.blocks or not ext.features.present["image"].any():
        return ext, {"ran": False, "reason": "no product has an image"}
    is_source = ext.products["domain"].isin(source).to_numpy(bool)
    present = np.asarray(ext.features.present["image"], bool)
    cats = ext.products["category"].astype(object).where(ext.products["category"].notna(), None).tolist()
    classes = sorted({c for c, s, p in zip(cats, is_source, present) if s and p and isinstance(c, str) and c})
    if len(classes) < 2:
        return ext, {"ran": False, "reason": f"the source domain has {len(classes)} category label(s) on products with images; fine-tuning needs at least 2"}
    # target labels (kept for evaluation) never reach fine-tuning: only source rows get a class
    labels = np.array([classes.index(c) if s and p and c in classes else -1 for c, s, p in zip(cats, is_source, present)], np.int64)
    is_target = ~is_source
    items = [item if p else None for item, p in zip(modality_items(ext.products, "image"), present)]
    fcfg = settings.config()
    device = settings.device()
    if "num_threads" not in settings.options and device == "cpu":
        # as for the heads: on a small shared CPU one thread beats two (0.56 s against 1.3 s per 64-image step)
        fcfg.num_threads = 1
    options = dict(settings.image_options)
    if device != "cpu":
        options["device"] = device  # on CPU the options stay as they are, so the extract stage's encoder is reused
    base = shared_encoder(settings.image_encoder, json.dumps(options, sort_keys=True))
    key = _finetune_key(base.encoder_id, fcfg, device, ext.features.blocks["image"], present, labels, is_target)
    entry = cache_dir / key if cache_dir is not None and settings.reuse else None
    models_dir.mkdir(parents=True, exist_ok=True)
    path = models_dir / FINETUNE_FILE
    info, features = _reuse_finetune(entry, base, path) if entry is not None else (None, None)
    if info is None:
        from prodkg.adaptation.finetune import finetune_backbone

        result = finetune_backbone(base, items, labels, is_source, is_target, len(classes), fcfg, num_workers=settings.num_workers,
                                   progress=settings.progress and on_terminal())
        lost = sorted(set(np.flatnonzero(present)) - set(np.flatnonzero(result.ok)))
        if lost:
            raise StageError(f"fine-tuning could not read {len(lost)} image(s) that extraction read; first: {result.errors.get(lost[0])}")
        info = {**result.manifest(), "classes": classes, "reused": False}
        features = result.features
        result.encoder.save(path, **{k: info[k] for k in ("method", "epochs", "seed", "device", "images", "classes")})
        if entry is not None:
            _store_finetune(entry, path, features, info)
    info["path"] = str(path)
    blocks = dict(ext.features.blocks)
    if isinstance(ext.features.blocks["image"], PackedBlock):  # a modality few products have stays packed
        blocks["image"] = PackedBlock(np.flatnonzero(present), np.asarray(features, np.float32)[present], len(present))
    else:
        blocks["image"] = np.where(present[:, None], features, 0.0).astype(np.float32)
    from prodkg.adaptation import MultiModal

    stats = dict(ext.stats)
    stats["image"] = {**stats["image"], "encoder": f"{base.name}+finetuned", "encoder_id": info["encoder_id"],
                      "frozen_encoder_id": info["base_encoder_id"], "finetuned": True}
    new = ExtractOutput(products=ext.products, features=MultiModal(blocks=blocks, present=dict(ext.features.present)),
                        quarantine=ext.quarantine, stats=stats)
    return new, info


def _finetune_key(encoder_id: str, fcfg, device: str, frozen: np.ndarray, present: np.ndarray, labels: np.ndarray,
                  is_target: np.ndarray) -> str:
    """Content hash of what fine-tuning depends on; the frozen features stand for the images' contents."""
    import torch

    import prodkg

    h = hashlib.sha256(json.dumps({"encoder": encoder_id, "config": {k: v for k, v in fcfg.to_dict().items() if k not in {"force", "max_images_cpu", "num_threads"}},
                                   "device": str(device).split(":")[0], "torch": torch.__version__, "prodkg": prodkg.__version__}, sort_keys=True).encode())
    for chunk in block_chunks(frozen):  # a packed block as its dense rows: the same bytes
        h.update(chunk.astype(np.float32, copy=False).tobytes())
    for arr in (present.astype(bool), labels.astype(np.int64), is_target.astype(bool)):
        h.update(arr.tobytes())
    return h.hexdigest()[:32]


def _reuse_finetune(entry: Path, base, path: Path) -> tuple[dict | None, np.ndarray | None]:
    if not (entry / "meta.json").is_file():
        return None, None
    from prodkg.extractors.image_cnn import FineTunedImageEncoder

    encoder = FineTunedImageEncoder.load(entry / FINETUNE_FILE, base)  # refuses a block of other base weights
    info = {**json.loads((entry / "meta.json").read_text(encoding="utf-8")), "reused": True}
    if info.get("encoder_id") != encoder.encoder_id:
        return None, None
    encoder.save(path, **{k: info.get(k) for k in ("method", "epochs", "seed", "device", "images", "classes")})
    return info, np.load(entry / "features.npy")


def _store_finetune(entry: Path, block_path: Path, features: np.ndarray, info: dict) -> None:
    """Written to a temporary folder and renamed into place, so a killed run never leaves half an entry."""
    tmp = entry.with_name(entry.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copyfile(block_path, tmp / FINETUNE_FILE)
    np.save(tmp / "features.npy", features)
    (tmp / "meta.json").write_text(json.dumps(info, default=str), encoding="utf-8")
    try:
        os.replace(tmp, entry)
    except OSError:  # another process stored the same key first: theirs is equally good
        shutil.rmtree(tmp, ignore_errors=True)
