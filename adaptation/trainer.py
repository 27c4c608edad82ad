"""Training loop shared by every adaptation method: labelled source and unlabelled target batches, one optimiser."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from prodkg.adaptation.config import AUTO, TrainConfig
from prodkg.adaptation.features import MultiModal
from prodkg.adaptation.methods import METHODS
from prodkg.adaptation.model import AdaptationNetwork, AdaptedModel, resolve_device, to_tensors
from prodkg.errors import ConfigError, StageError


def _validate(
    source: MultiModal, y_source: np.ndarray, target: MultiModal, n_classes: int, needs_target: bool
) -> np.ndarray:
    if not isinstance(source, MultiModal) or not isinstance(target, MultiModal):
        raise StageError(
            f"source and target must be MultiModal; got {type(source).__name__} and {type(target).__name__}"
        )
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 2:
        raise StageError(f"n_classes must be an integer >= 2; got {n_classes!r}")
    if source.dims != target.dims:
        raise StageError(
            f"source and target must have the same modalities and widths; got {source.dims} and {target.dims}"
        )
    if len(source) == 0:
        raise StageError("the source domain has no rows; at least one labelled product is needed")
    if needs_target and len(target) == 0:
        raise StageError("the target domain has no rows; this method needs unlabelled target products")
    y = np.asarray(y_source)
    if y.shape != (len(source),):
        raise StageError(f"y_source must have shape ({len(source)},) to match the source; got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise StageError(f"y_source must hold integer class indices; got dtype {y.dtype}")
    if y.min() < 0 or y.max() >= n_classes:
        raise StageError(f"y_source must lie in [0, {n_classes}); got values from {y.min()} to {y.max()}")
    return y.astype(np.int64)


def _batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless full-size batches from back-to-back random permutations of ``range(n)``.

    A batch may straddle two permutations, so every row is seen equally often and
    no short last batch makes a step noisier than the others.
    """
    size = min(batch_size, n)
    pool = torch.empty(0, dtype=torch.long)
    while True:
        while pool.numel() < size:
            pool = torch.cat([pool, torch.randperm(n, generator=generator)])
        yield pool[:size]
        pool = pool[size:]


def _balanced_batches(y: np.ndarray, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless batches drawn with replacement so that every source class is equally likely."""
    counts = np.bincount(y)
    weights = torch.from_numpy(1.0 / counts[y])
    size = min(batch_size, len(y))
    while True:
        yield torch.multinomial(weights, size, replacement=True, generator=generator)


def _take(
    blocks: dict[str, torch.Tensor], present: dict[str, torch.Tensor], idx: torch.Tensor
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    idx = idx.to(next(iter(blocks.values())).device)
    return {m: b[idx] for m, b in blocks.items()}, {m: p[idx] for m, p in present.items()}


def train(
    source: MultiModal,
    y_source: np.ndarray,
    target: MultiModal,
    n_classes: int,
    config: TrainConfig,
    *,
    progress: bool = False,
) -> AdaptedModel:
    """Train a classifier on labelled source products, adapted to unlabelled target products.

    Each step draws one source batch and (for methods that use it) one target
    batch, runs both through the network in one pass, and minimises
    ``cross_entropy(source) + config.tradeoff * method.adaptation_loss(...)`` with
    AdamW under the DANN learning-rate annealing. An epoch is
    ``ceil(max(N_s, N_t) / batch_size)`` steps, so the larger domain is seen once
    per epoch and a large unlabelled catalog is not undersampled. The model after
    the last epoch is returned: there are no target labels to select on.

    ``config.method == "auto"`` trains a grid of candidate methods and keeps the
    one a label-free selector scores best (:func:`adaptation.selection.auto_train`).

    The result depends only on the inputs and ``config`` (weights, dropout and
    batch order are all seeded from ``config.seed``); the caller's global torch
    random state is left untouched.

    Args:
        source: labelled products.
        y_source: ``(N_s,)`` integer class indices in ``[0, n_classes)``.
        target: unlabelled products with the same modalities and widths as ``source``.
        n_classes: number of categories.
        config: method, fusion and hyper-parameters.
        progress: show a progress bar over epochs.
    """
    if not isinstance(config, TrainConfig):
        raise ConfigError(f"config must be a TrainConfig; got {type(config).__name__}")
    # re-validated copy: the dataclass is mutable, and the model keeps a snapshot of what it was trained with
    config = TrainConfig.from_dict(config.to_dict())
    if config.method == AUTO:
        from prodkg.adaptation.selection import auto_train

        return auto_train(source, y_source, target, n_classes, config, progress=progress)
    method_cls = METHODS.get(config.method)
    y = _validate(source, y_source, target, n_classes, method_cls.needs_target)
    n_classes = int(n_classes)
    joint_batch = min(config.batch_size, len(source))
    if method_cls.needs_target:
        joint_batch += min(config.batch_size, len(target))
    if config.norm == "batch" and joint_batch < 2:
        raise StageError("norm='batch' needs at least 2 rows per step; use norm='layer' for so few products")
    device = resolve_device(config.device)
    use_target = method_cls.needs_target

    fork_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(config.seed)
        network = AdaptationNetwork(source.dims, n_classes, config)
        network.scaler.fit([source, target])
        method = method_cls(feature_dim=config.hidden, n_classes=n_classes, config=config)
        network.to(device)
        method.to(device)

        params = [p for p in [*network.parameters(), *method.parameters()] if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)

        src_blocks, src_present = to_tensors(source, device)
        y_tensor = torch.from_numpy(y).to(device)
        tgt_blocks, tgt_present = to_tensors(target, device) if use_target else ({}, {})

        order = torch.Generator().manual_seed(config.seed)
        if config.sampling == "balanced":
            src_stream = _balanced_batches(y, config.batch_size, order)
        else:
            src_stream = _batches(len(source), config.batch_size, order)
        tgt_stream = _batches(len(target), config.batch_size, order) if use_target else None

        n_rows = max(len(source), len(target)) if use_target else len(source)
        steps_per_epoch = math.ceil(n_rows / config.batch_size)
        total_steps = steps_per_epoch * config.epochs
        history: list[dict] = []
        epochs = range(config.epochs)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(epochs, desc=f"adapt[{config.method}]", unit="epoch")
            epochs = bar

        step = 0
        network.train()
        method.train()
        for epoch in epochs:
            sums: dict[str, float] = defaultdict(float)
            for _ in range(steps_per_epoch):
                p = step / total_steps
                for group in optimizer.param_groups:
                    group["lr"] = config.lr / (1.0 + 10.0 * p) ** 0.75
                idx_s = next(src_stream)
                s_blocks, s_present = _take(src_blocks, src_present, idx_s)
                y_batch = y_tensor[idx_s.to(device)]
                n_s = y_batch.shape[0]
                if use_target:
                    t_blocks, t_present = _take(tgt_blocks, tgt_present, next(tgt_stream))
                    # one joint pass, so a batch-norm bottleneck normalises with statistics of both domains
                    blocks = {m: torch.cat([s_blocks[m], t_blocks[m]]) for m in s_blocks}
                    present = {m: torch.cat([s_present[m], t_present[m]]) for m in s_present}
                else:
                    blocks, present = s_blocks, s_present
                features, logits = network(blocks, present)
                cls_loss = F.cross_entropy(method.source_logits(logits[:n_s]), y_batch)
                adapt_loss = method.adaptation_loss(features[:n_s], features[n_s:], logits[:n_s], logits[n_s:], p)
                loss = cls_loss + config.tradeoff * adapt_loss
                if not torch.isfinite(loss):
                    raise StageError(
                        f"training diverged at epoch {epoch + 1}, step {step + 1}: loss is {loss.item()} "
                        f"(classification {cls_loss.item()}, adaptation {adapt_loss.item()}); try a lower lr"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1

                sums["cls_loss"] += cls_loss.item()
                sums["adaptation_loss"] += adapt_loss.item()
                sums["total_loss"] += loss.item()
                sums["source_accuracy"] += (logits[:n_s].argmax(1) == y_batch).float().mean().item()
                for key, value in method.step_metrics().items():
                    sums[key] += value
            record = {"epoch": epoch + 1}
            record.update({k: v / steps_per_epoch for k, v in sums.items()})
            record["lr"] = optimizer.param_groups[0]["lr"]
            history.append(record)
            if bar is not None:
                bar.set_postfix(cls=f"{record['cls_loss']:.3f}", adapt=f"{record['adaptation_loss']:.3f}")

        network.eval()
        n_adaptation_params = sum(p.numel() for p in method.parameters())
    return AdaptedModel(
        network, config, n_classes, source.dims, history=history, n_adaptation_params=n_adaptation_params
    )
