"""Optional backbone fine-tuning: train the image encoder's last block on source labels, adapted to the target.

Frozen features are prodkg's default: they are cached by content hash, cost one
forward pass per image and serve every adaptation method. Fine-tuning the last
block of the backbone (EfficientNet-Lite0: its last MBConv stage and head
convolution; ResNet: ``layer4``) lets the features themselves move towards the
catalog's categories and, with the domain-adversarial loss of DANN (Ganin et al.,
"Domain-Adversarial Training of Neural Networks", JMLR 17(59), 2016), towards
features the two domains share.

Everything before the last block stays frozen, so the trunk runs once per image
(inference mode, one batch at a time) and its output is kept; training then only
runs the last block, a linear classifier and a domain discriminator on those
cached activations. That makes it affordable on a CPU for catalogs of a few
thousand images; above :attr:`FinetuneConfig.max_images_cpu` it is refused on
CPU unless forced.

Two choices keep it exact and reproducible:

* batch normalisation in the last block keeps the pretrained running statistics
  (the block trains in eval mode; its BN scale and shift still train). Batches of
  a few dozen images would give noisy statistics, and frozen statistics make the
  block before its first step compute exactly the frozen encoder's features;
* every random draw (head initialisation, dropout, batch order) comes from
  ``config.seed``; on CPU the same inputs and seed give bit-identical weights.

There is no data augmentation: the activations are computed once from the
encoder's own deterministic preprocessing (resize + centre crop).

Typical use::

    from prodkg.adaptation.finetune import FinetuneConfig, finetune_backbone
    result = finetune_backbone(encoder, image_paths, labels, is_source, is_target, n_classes, FinetuneConfig(epochs=5))
    result.features          # (N, dim) pooled features of every product from the fine-tuned block
    result.encoder.encoder_id  # base id + digest of the fine-tuned weights
"""

from __future__ import annotations

import copy
import dataclasses
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from prodkg.adaptation.dann import DomainAdversarialLoss, DomainDiscriminator, dann_lambda
from prodkg.adaptation.loop import Step, run_loop
from prodkg.extractors.base import ItemError
from prodkg.extractors.extract import torch_threads
from prodkg.extractors.image_cnn import CNNImageEncoder, FineTunedImageEncoder
from prodkg.errors import ConfigError, StageError

FINETUNE_METHODS = ("dann", "source_only")
#: Above this many bytes of trunk activations they are kept in a memory-mapped file instead of RAM.
SPILL_BYTES = 2 << 30


@dataclass
class FinetuneConfig:
    """Settings of :func:`finetune_backbone`; checked on construction.

    Attributes:
        method: ``dann`` (source cross-entropy + domain-adversarial loss on the pooled
            features, through gradient reversal on the :func:`~adaptation.dann.dann_lambda`
            schedule) or ``source_only`` (source cross-entropy alone).
        epochs: passes over the larger of the two domains.
        batch_size: images per batch and per domain.
        lr: peak AdamW learning rate of the new classifier and discriminator.
        block_lr: peak learning rate of the pretrained last block (smaller: it starts from good weights).
            Both anneal as ``lr / (1 + 10 p) ** 0.75`` over training progress ``p``.
        weight_decay: decoupled weight decay of AdamW.
        tradeoff: weight of the domain-adversarial loss.
        hidden: width of the discriminator's hidden layers.
        dropout: dropout in the discriminator.
        seed: seeds the new layers, dropout and batch order.
        max_images_cpu: on CPU, refuse catalogs with more images than this (a ``ConfigError``
            names both numbers) unless ``force``.
        force: fine-tune on CPU whatever the number of images.
        trunk_batch_size: images per forward pass of the frozen trunk.
        num_threads: torch intra-op threads while fine-tuning (None: leave torch's setting).
    """

    method: str = "dann"
    epochs: int = 5
    batch_size: int = 32
    lr: float = 1e-3
    block_lr: float = 1e-4
    weight_decay: float = 1e-2
    tradeoff: float = 1.0
    hidden: int = 256
    dropout: float = 0.5
    seed: int = 0
    max_images_cpu: int = 5000
    force: bool = False
    trunk_batch_size: int = 32
    num_threads: int | None = None

    def __post_init__(self) -> None:
        if self.method not in FINETUNE_METHODS:
            raise ConfigError(f"FinetuneConfig.method: expected one of {', '.join(FINETUNE_METHODS)}, got {self.method!r}")
        for name in ("epochs", "batch_size", "hidden", "max_images_cpu", "trunk_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"FinetuneConfig.{name}: expected a positive integer, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"FinetuneConfig.seed: expected a non-negative integer, got {self.seed!r}")
        for name, positive in (("lr", True), ("block_lr", True), ("weight_decay", False), ("tradeoff", False)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 \
                    or (positive and value == 0):
                bound = "> 0" if positive else ">= 0"
                raise ConfigError(f"FinetuneConfig.{name}: expected a finite number {bound}, got {value!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ConfigError(f"FinetuneConfig.dropout: expected a probability in [0, 1), got {self.dropout!r}")
        if not isinstance(self.force, bool):
            raise ConfigError(f"FinetuneConfig.force: expected true or false, got {self.force!r}")
        if self.num_threads is not None and (isinstance(self.num_threads, bool) or not isinstance(self.num_threads, int)
                                             or self.num_threads < 1):
            raise ConfigError(f"FinetuneConfig.num_threads: expected a positive integer or None, got {self.num_threads!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FinetuneConfig:
        """Build from a dict; unknown keys raise ConfigError listing the valid ones."""
        if not isinstance(data, dict):
            raise ConfigError(f"FinetuneConfig.from_dict expects a dict, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown fine-tuning option(s) {unknown}; valid: {sorted(known)}")
        return cls(**data)


def default_device() -> str:
    """``cuda`` when a GPU is present, else ``cpu``: where fine-tuning runs unless told otherwise."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_image_budget(n_images: int, device: str | torch.device, config: FinetuneConfig) -> None:
    """Refuse to fine-tune ``n_images`` on a CPU above ``config.max_images_cpu`` unless ``config.force``.

    Raises:
        ConfigError: naming the number of images, the limit and how to go ahead anyway.
    """
    if torch.device(device).type == "cpu" and n_images > config.max_images_cpu and not config.force:
        raise ConfigError(
            f"backbone fine-tuning on CPU refused: the catalog has {n_images} images, above the CPU limit of "
            f"{config.max_images_cpu} (each image costs a trunk pass plus training steps). Run it where a GPU is "
            "present, raise the limit (finetune_max_images_cpu), force it (--finetune-force), or keep frozen features"
        )


# --- the frozen trunk, run once ------------------------------------------------------------


@dataclass
class Activations:
    """Trunk outputs of the images that loaded, row-aligned with a subset of the items given.

    Attributes:
        values: ``(n_ok, C, h, w)`` float32 (an in-memory array, or a memory map for very large catalogs).
        ok: ``(N,)`` bool over the items; ``values[i]`` belongs to item ``np.flatnonzero(ok)[i]``.
        errors: item index -> why it could not be loaded; absent items are neither ok nor errors.
        encoder_id: the base encoder that computed them.
        seconds: wall time.
    """

    values: np.ndarray
    ok: np.ndarray
    errors: dict[int, str]
    encoder_id: str
    seconds: float
    _spill: Any = field(default=None, repr=False)  # keeps a memory map's temporary folder alive

    @property
    def rows(self) -> np.ndarray:
        return np.flatnonzero(self.ok)


class _Images(Dataset):
    def __init__(self, encoder: CNNImageEncoder, items: list[str]) -> None:
        self.encoder, self.items = encoder, items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            return i, self.encoder.load_item(self.items[i]), None
        except ItemError as exc:
            return i, None, str(exc)


def _keep_all(batch: list) -> list:
    return batch


def _present(item: Any) -> bool:
    return isinstance(item, str) and bool(item.strip())


def cache_activations(
    encoder: CNNImageEncoder,
    items: Sequence[str | None],
    *,
    batch_size: int = 32,
    num_workers: int = 0,
    num_threads: int | None = None,
    progress: bool = False,
) -> Activations:
    """Run the encoder's frozen trunk once over every image and keep its output.

    ``None`` or an empty string is an absent image; one that cannot be read is
    recorded in ``errors`` and skipped, never failing its batch.

    Args:
        encoder: a CNN image encoder with a trunk/last-block split.
        items: image paths or URLs, one per product.
        batch_size: images per forward pass.
        num_workers: DataLoader workers decoding images.
        num_threads: torch intra-op threads (None: leave torch's setting).
        progress: show a progress bar.
    """
    if not isinstance(encoder, CNNImageEncoder):
        raise ConfigError(f"backbone fine-tuning needs a CNN image encoder; got {type(encoder).__name__}")
    started = time.perf_counter()
    items = list(items)
    todo = [i for i, item in enumerate(items) if _present(item)]
    ok = np.zeros(len(items), bool)
    errors: dict[int, str] = {}
    values: np.ndarray | None = None
    spill = None
    filled = 0
    loader = DataLoader(_Images(encoder, [items[i] for i in todo]), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, collate_fn=_keep_all)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc=f"trunk {encoder.name}", unit="image")
    with torch_threads(num_threads):
        for batch in loader:
            loaded = [(todo[i], x) for i, x, err in batch if err is None]
            for i, _, err in batch:
                if err is not None:
                    errors[todo[i]] = err
            if loaded:
                x = encoder.stack_items([x for _, x in loaded])
                with torch.inference_mode(), encoder.autocast():
                    act = encoder.trunk(x).float().cpu().numpy()
                if values is None:  # the shape is known once the first batch has run
                    shape = (len(todo), *act.shape[1:])
                    values, spill = _allocate(shape)
                values[filled : filled + len(loaded)] = act
                filled += len(loaded)
                ok[[row for row, _ in loaded]] = True
            if bar is not None:
                bar.update(len(batch))
    if bar is not None:
        bar.close()
    if values is None:
        values = np.zeros((0, 0, 0, 0), np.float32)
    return Activations(values[:filled], ok, dict(sorted(errors.items())), encoder.encoder_id,
                       time.perf_counter() - started, spill)


def _allocate(shape: tuple[int, ...]) -> tuple[np.ndarray, Any]:
    n_bytes = int(np.prod(shape)) * 4
    if n_bytes <= SPILL_BYTES:
        return np.empty(shape, np.float32), None
    # ResNet-50's layer3 output is 800 KB per image: 100,000 images would not fit in RAM
    spill = tempfile.TemporaryDirectory(prefix="prodkg-activations-")
    return np.lib.format.open_memmap(f"{spill.name}/activations.npy", mode="w+", dtype=np.float32, shape=shape), spill


# --- training the last block ---------------------------------------------------------------


@dataclass
class FinetuneResult:
    """What fine-tuning produced, row-aligned with the items given.

    Attributes:
        features: ``(N, dim)`` float32 pooled features from the fine-tuned block; zeros where not ``ok``.
        ok: ``(N,)`` bool: the image was present and loaded.
        errors: item index -> why the image could not be loaded.
        encoder: the fine-tuned encoder (base trunk + fine-tuned block); ``encoder.encoder_id`` is
            the base id plus a digest of the fine-tuned weights.
        block_state: the fine-tuned block's state dict (on CPU).
        probabilities: ``(N, n_classes)`` softmax of the classifier trained alongside; zeros where not ``ok``.
        history: one dict per epoch (losses, source accuracy, discriminator accuracy, reversal coefficient).
        frozen_features: the untouched block's features of the same activations (when asked for).
        config: the settings used.
        device: where it ran.
        n_images, n_source, n_target: images with activations, labelled source images trained on, target images.
        seconds: wall time per phase (``activations``, ``train``, ``features``) and ``total``.
    """

    features: np.ndarray
    ok: np.ndarray
    errors: dict[int, str]
    encoder: FineTunedImageEncoder
    block_state: dict[str, torch.Tensor]
    probabilities: np.ndarray
    history: list[dict]
    config: FinetuneConfig
    device: str
    n_images: int
    n_source: int
    n_target: int
    seconds: dict[str, float]
    frozen_features: np.ndarray | None = None

    @property
    def encoder_id(self) -> str:
        return self.encoder.encoder_id

    @property
    def weights_hash(self) -> str:
        return self.encoder.weights_hash

    def manifest(self) -> dict[str, Any]:
        """JSON-ready record of the fine-tuning for the run manifest."""
        return {
            "ran": True,
            "method": self.config.method,
            "block": self.encoder.base.last_block_description,
            "base_encoder_id": self.encoder.base.encoder_id,
            "encoder_id": self.encoder_id,
            "weights_sha256": self.weights_hash,
            "device": self.device,
            "epochs": self.config.epochs,
            "seed": self.config.seed,
            "images": self.n_images,
            "source_images": self.n_source,
            "target_images": self.n_target,
            "failed_images": len(self.errors),
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "config": self.config.to_dict(),
            "final_epoch": self.history[-1] if self.history else {},
        }


def finetune_backbone(
    encoder: CNNImageEncoder,
    items: Sequence[str | None],
    labels: np.ndarray,
    is_source: np.ndarray,
    is_target: np.ndarray,
    n_classes: int,
    config: FinetuneConfig | None = None,
    *,
    num_workers: int = 0,
    progress: bool = False,
    return_frozen: bool = False,
) -> FinetuneResult:
    """Fine-tune the last block of ``encoder`` and return every product's features from it.

    Checks the CPU image limit first (before any image is read), runs the frozen
    trunk once over every image (:func:`cache_activations`), then trains on the
    cached activations (:func:`finetune_on_activations`).

    Args:
        encoder: the frozen CNN image encoder; it is not modified.
        items: image path/URL per product (None: no image).
        labels: ``(N,)`` integer class per product, ``-1`` where unknown; only source rows are read
            (target labels, if any, must be ``-1``: they never reach training).
        is_source, is_target: ``(N,)`` bool domain masks.
        n_classes: number of categories.
        config: settings (default :class:`FinetuneConfig`).
        num_workers: DataLoader workers decoding images.
        progress: show progress bars.
        return_frozen: also return the untouched block's features (``frozen_features``).

    Raises:
        ConfigError: on CPU with more images than ``config.max_images_cpu`` (unless ``config.force``),
            or an encoder without a trunk/last-block split.
        StageError: no labelled source image, or no target image for ``dann``.
    """
    config = config or FinetuneConfig()
    if not isinstance(encoder, CNNImageEncoder):
        raise ConfigError(f"backbone fine-tuning needs a CNN image encoder; got {type(encoder).__name__}")
    items = list(items)
    n_images = sum(_present(item) for item in items)
    check_image_budget(n_images, encoder.device, config)
    acts = cache_activations(encoder, items, batch_size=config.trunk_batch_size, num_workers=num_workers,
                             num_threads=config.num_threads, progress=progress)
    return finetune_on_activations(encoder, acts, labels, is_source, is_target, n_classes, config, progress=progress,
                                   return_frozen=return_frozen)


def _check_inputs(acts: Activations, labels: np.ndarray, is_source: np.ndarray, is_target: np.ndarray,
                  n_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(acts.ok)
    labels = np.asarray(labels)
    is_source, is_target = np.asarray(is_source, bool), np.asarray(is_target, bool)
    for name, arr in (("labels", labels), ("is_source", is_source), ("is_target", is_target)):
        if arr.shape != (n,):
            raise StageError(f"{name} must have shape ({n},) to match the items; got {arr.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise StageError(f"labels must be integer class indices (-1 for unknown); got dtype {labels.dtype}")
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 2:
        raise StageError(f"n_classes must be an integer >= 2; got {n_classes!r}")
    if (is_source & is_target).any():
        raise StageError("a product cannot be both source and target")
    src = is_source & (labels >= 0)
    if src.any() and labels[src].max() >= n_classes:
        raise StageError(f"labels must lie in [0, {n_classes}); got up to {labels[src].max()}")
    if (is_target & (labels >= 0)).any():
        raise StageError("target labels reached fine-tuning; pass -1 for every target product")
    return labels.astype(np.int64), src, is_target


def finetune_on_activations(
    encoder: CNNImageEncoder,
    acts: Activations,
    labels: np.ndarray,
    is_source: np.ndarray,
    is_target: np.ndarray,
    n_classes: int,
    config: FinetuneConfig | None = None,
    *,
    progress: bool = False,
    return_frozen: bool = False,
) -> FinetuneResult:
    """Train a copy of ``encoder.last_block()`` on cached trunk activations.

    Each step draws a batch of labelled source activations and (for ``dann``) a
    batch of target activations, passes both through the block in one go and
    minimises ``CE(classifier(f_s), y_s) + tradeoff * DomainAdversarialLoss(f_s, f_t)``
    with AdamW; the block learns at ``block_lr``, the classifier and discriminator
    at ``lr``. An epoch is ``ceil(max(N_s, N_t) / batch_size)`` steps. The block
    after the last epoch is kept (the target has no labels to select on).

    Args: as :func:`finetune_backbone`, with ``acts`` from :func:`cache_activations` over the same items.
    """
    config = config or FinetuneConfig()
    labels, src_mask, tgt_mask = _check_inputs(acts, labels, is_source, is_target, n_classes)
    if acts.encoder_id != encoder.encoder_id:
        raise StageError(f"activations were computed by {acts.encoder_id}, not by {encoder.encoder_id}")
    device = encoder.device
    check_image_budget(int(acts.ok.sum()), device, config)
    pos_of = np.full(len(acts.ok), -1, np.int64)
    pos_of[acts.ok] = np.arange(int(acts.ok.sum()))
    src_pos = pos_of[src_mask & acts.ok]
    tgt_pos = pos_of[tgt_mask & acts.ok]
    y_src = torch.from_numpy(labels[src_mask & acts.ok]).to(device)
    use_target = config.method == "dann"
    if len(src_pos) == 0:
        raise StageError("backbone fine-tuning needs at least one labelled source image; none has an image that loaded")
    if use_target and len(tgt_pos) == 0:
        raise StageError("backbone fine-tuning with dann needs target images; none has an image that loaded")

    started = time.perf_counter()
    fork_devices = [device] if device.type == "cuda" else []
    with torch_threads(config.num_threads), torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(config.seed)
        block = copy.deepcopy(encoder.last_block()).to(device)
        block.eval()  # frozen BN statistics (see the module docstring); its parameters still train
        block.requires_grad_(True)
        frozen = _pool(block, acts.values, device, config.trunk_batch_size, encoder.dim) if return_frozen else None
        classifier = nn.Linear(encoder.dim, int(n_classes)).to(device)
        domain_loss = DomainAdversarialLoss(DomainDiscriminator(encoder.dim, config.hidden, config.dropout), coeff=0.0)
        domain_loss.to(device)
        heads = [*classifier.parameters(), *domain_loss.parameters()] if use_target else [*classifier.parameters()]
        optimizer = torch.optim.AdamW(
            [{"params": [p for p in block.parameters()], "lr": config.block_lr, "base_lr": config.block_lr},
             {"params": heads, "lr": config.lr, "base_lr": config.lr}],
            weight_decay=config.weight_decay,
        )

        def step(idx_s: torch.Tensor, idx_t: torch.Tensor | None, p: float) -> Step:
            rows = src_pos[idx_s.numpy()]
            if idx_t is not None:
                rows = np.concatenate([rows, tgt_pos[idx_t.numpy()]])
            x = _to_device(acts.values, rows, device)
            features = block(x)
            n_s = len(idx_s)
            y = y_src[idx_s.to(device)]
            logits = classifier(features[:n_s])
            cls_loss = F.cross_entropy(logits, y)
            if use_target:
                domain_loss.grl.coeff = dann_lambda(p)
                adapt = domain_loss(features[:n_s], features[n_s:])
            else:
                adapt = cls_loss.new_zeros(())
            loss = cls_loss + config.tradeoff * adapt

            def metrics() -> dict[str, float]:
                out = {"cls_loss": cls_loss.item(), "domain_loss": adapt.item(),
                       "source_accuracy": (logits.argmax(1) == y).float().mean().item()}
                if use_target and domain_loss.domain_accuracy is not None:
                    out["domain_accuracy"] = float(domain_loss.domain_accuracy)
                return out

            def diverged(epoch: int, n_step: int) -> str:
                return (f"backbone fine-tuning diverged at epoch {epoch}, step {n_step} "
                        f"(loss {loss.item()}); try a lower block_lr")

            return Step(loss, metrics, diverged)

        def end_epoch(epoch: int, means: dict[str, float]) -> dict[str, float]:
            record: dict[str, float] = {"epoch": epoch + 1}
            record.update({k: round(v, 5) for k, v in means.items()})
            if use_target:
                record["grl_coeff"] = round(domain_loss.grl.coeff, 5)
            return record

        history = run_loop(
            step, optimizer, n_source=len(src_pos), n_target=len(tgt_pos) if use_target else None,
            batch_size=config.batch_size, epochs=config.epochs, seed=config.seed, modules=(domain_loss, classifier),
            end_epoch=end_epoch, progress=f"finetune[{config.method}]" if progress else None,
        )
        train_seconds = time.perf_counter() - started

        t0 = time.perf_counter()
        block_state = {k: v.detach().cpu().clone() for k, v in block.state_dict().items()}
        ft_encoder = FineTunedImageEncoder(encoder, block_state)
        pooled = _pool(ft_encoder.block, acts.values, device, config.trunk_batch_size, encoder.dim)
        with torch.inference_mode():
            probs = torch.softmax(classifier.eval()(torch.from_numpy(pooled).to(device)), dim=1).cpu().numpy()
    n = len(acts.ok)
    features = np.zeros((n, encoder.dim), np.float32)
    features[acts.ok] = pooled
    probabilities = np.zeros((n, int(n_classes)), np.float32)
    probabilities[acts.ok] = probs
    frozen_full = None
    if frozen is not None:
        frozen_full = np.zeros_like(features)
        frozen_full[acts.ok] = frozen
    seconds = {"activations": acts.seconds, "train": train_seconds, "features": time.perf_counter() - t0}
    seconds["total"] = sum(seconds.values())
    return FinetuneResult(
        features=features, ok=acts.ok.copy(), errors=dict(acts.errors), encoder=ft_encoder, block_state=block_state,
        probabilities=probabilities, history=history, config=config, device=str(device), n_images=int(acts.ok.sum()),
        n_source=len(src_pos), n_target=len(tgt_pos), seconds=seconds, frozen_features=frozen_full,
    )


def _to_device(values: np.ndarray, rows: np.ndarray, device: torch.device) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(values[rows]))
    return x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)


def _pool(block: nn.Module, values: np.ndarray, device: torch.device, batch_size: int, dim: int) -> np.ndarray:
    """The block's pooled features of every cached activation, in batches, without gradients."""
    out = []
    with torch.inference_mode():
        for a in range(0, len(values), batch_size):
            out.append(block(_to_device(values, np.arange(a, min(a + batch_size, len(values))), device)).float().cpu())
    if not out:
        return np.zeros((0, dim), np.float32)
    return torch.cat(out).numpy()
