"""The training loop every network prodkg trains runs on, and one adaptation method trained with it.

:func:`run_loop` is the loop shared by the adaptation heads (:func:`train_method`, behind
:func:`adaptation.train`) and backbone fine-tuning (:func:`adaptation.finetune.finetune_on_activations`):
seeded endless batches of source rows and, when a method uses them, target rows; AdamW under the
DANN learning-rate annealing ``lr / (1 + 10 p) ** 0.75`` over training progress ``p``; a refusal
when the loss stops being finite; per-epoch means of the step metrics. What a step computes is
the caller's closure.

:func:`train_method` trains one named method; :func:`adaptation.train` adds the ``auto``
choice among methods (:mod:`adaptation.selection`), which trains its candidates with it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from prodkg.adaptation.config import AUTO, TrainConfig
from prodkg.adaptation.features import MultiModal, Rows
from prodkg.adaptation.methods import METHODS
from prodkg.adaptation.model import AdaptationNetwork, AdaptedModel, indexed_tensors, resolve_device
from prodkg.errors import ConfigError, StageError

__all__ = ["LoopRun", "MethodRun", "Step", "run_loop", "train_method"]


def _validate(
    source: MultiModal, y_source: np.ndarray, target: MultiModal, n_classes: int, needs_target: bool
) -> np.ndarray:
    if not isinstance(source, (MultiModal, Rows)) or not isinstance(target, (MultiModal, Rows)):
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


@dataclass
class Step:
    """What one training step computed, for :func:`run_loop`.

    Attributes:
        loss: the scalar to minimise.
        metrics: read after the optimiser step; each value is averaged over the epoch.
        diverged: the message of the error raised when ``loss`` is not finite, given the
            1-based epoch and step.
    """

    loss: torch.Tensor
    metrics: Callable[[], Mapping[str, float]]
    diverged: Callable[[int, int], str]


class LoopRun:
    """A run of the training loop that can pause after any step and go on later (:func:`run_loop` runs it through).

    Pausing changes nothing that is trained: the learning-rate annealing and the ``p`` a step is
    given are fractions of the whole run's steps (``epochs`` epochs), and the batch streams keep
    their place, so ``run_to(a)`` then ``run_to(b)`` computes what ``run_to(b)`` alone does.
    Every module is put back in training mode when the run goes on. The arguments are those of
    :func:`run_loop`.
    """

    def __init__(
        self,
        step: Callable[[torch.Tensor, torch.Tensor | None, float], Step],
        optimizer: torch.optim.Optimizer,
        *,
        n_source: int,
        n_target: int | None,
        batch_size: int,
        epochs: int,
        seed: int,
        balanced_labels: np.ndarray | None = None,
        modules: Iterable[nn.Module] = (),
        end_epoch: Callable[[int, dict[str, float]], dict],
        progress: str | None = None,
        postfix: Callable[[dict], Mapping[str, str]] | None = None,
    ) -> None:
        self._step, self._optimizer, self._end_epoch, self._postfix = step, optimizer, end_epoch, postfix
        self._modules = list(modules)
        self._base_lrs = [group.get("base_lr", group["lr"]) for group in optimizer.param_groups]
        order = torch.Generator().manual_seed(seed)
        if balanced_labels is not None:
            self._src_stream = _balanced_batches(balanced_labels, batch_size, order)
        else:
            self._src_stream = _batches(n_source, batch_size, order)
        self._tgt_stream = _batches(n_target, batch_size, order) if n_target is not None else None
        n_rows = max(n_source, n_target) if n_target is not None else n_source
        #: steps of one epoch: the larger domain is seen once per epoch
        self.steps_per_epoch = math.ceil(n_rows / batch_size)
        #: steps of the whole run, what the annealing's progress is measured against
        self.total_steps = self.steps_per_epoch * epochs
        #: steps taken so far
        self.steps_done = 0
        #: one record per finished epoch
        self.history: list[dict] = []
        self._sums: dict[str, float] = defaultdict(float)
        self._bar = None
        self._progress, self._epochs = progress, epochs

    @property
    def done(self) -> bool:
        return self.steps_done >= self.total_steps

    def run_to(self, n_steps: int) -> None:
        """Train until ``min(n_steps, total_steps)`` steps have been taken in all (nothing when already there)."""
        n_steps = min(int(n_steps), self.total_steps)
        if self.steps_done >= n_steps:
            return
        if self._step is None:
            raise StageError(f"this training was closed after {self.steps_done} of {self.total_steps} steps")
        if self._progress and self._bar is None:  # opened on the first step, so a run never started shows none
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self._epochs, initial=len(self.history), desc=self._progress, unit="epoch")
            self._progress = None
        for module in self._modules:
            module.train()
        optimizer = self._optimizer
        while self.steps_done < n_steps:
            p = self.steps_done / self.total_steps
            for group, base in zip(optimizer.param_groups, self._base_lrs, strict=True):
                group["lr"] = base / (1.0 + 10.0 * p) ** 0.75
            idx_s = next(self._src_stream)
            idx_t = next(self._tgt_stream) if self._tgt_stream is not None else None
            out = self._step(idx_s, idx_t, p)
            epoch = self.steps_done // self.steps_per_epoch
            if not torch.isfinite(out.loss):
                raise StageError(out.diverged(epoch + 1, self.steps_done + 1))
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
            self.steps_done += 1
            for key, value in out.metrics().items():
                self._sums[key] += value
            if self.steps_done % self.steps_per_epoch == 0:
                record = self._end_epoch(epoch, {k: v / self.steps_per_epoch for k, v in self._sums.items()})
                self._sums = defaultdict(float)
                self.history.append(record)
                if self._bar is not None:
                    self._bar.update(1)
                    if self._postfix is not None:
                        self._bar.set_postfix(**self._postfix(record))
        if self.done:
            self.close()

    def close(self) -> None:
        """Stop for good: close the progress bar and let go of the step, the optimizer and the batch streams
        (the optimizer's state and whatever data the step holds, on a GPU a copy of both domains); the
        modules keep their weights."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self._step = self._optimizer = self._src_stream = self._tgt_stream = None
        self._modules = []


def run_loop(
    step: Callable[[torch.Tensor, torch.Tensor | None, float], Step],
    optimizer: torch.optim.Optimizer,
    *,
    n_source: int,
    n_target: int | None,
    batch_size: int,
    epochs: int,
    seed: int,
    balanced_labels: np.ndarray | None = None,
    modules: Iterable[nn.Module] = (),
    end_epoch: Callable[[int, dict[str, float]], dict],
    progress: str | None = None,
    postfix: Callable[[dict], Mapping[str, str]] | None = None,
) -> list[dict]:
    """Train with ``step`` for ``epochs`` epochs; return one record per epoch.

    Each step sets every parameter group's learning rate to its base (``base_lr`` when the
    group has one, else its initial ``lr``) annealed as ``base / (1 + 10 p) ** 0.75`` with
    ``p = step / total_steps``, draws the source batch and then (when ``n_target`` is not
    None) the target batch, calls ``step(source_idx, target_idx, p)``, refuses a loss that is
    not finite (:class:`~prodkg.errors.StageError`), then backpropagates and steps
    ``optimizer``. An epoch is ``ceil(max(N_s, N_t) / batch_size)`` steps (``N_s`` alone
    without a target), so the larger domain is seen once per epoch. :class:`LoopRun` is the
    same loop, able to pause.

    Args:
        step: the forward pass and loss of one step, given row indices into the source and the
            target (None without one) and the training progress ``p`` in ``[0, 1)``.
        optimizer: steps every parameter being trained.
        n_source, n_target: rows to draw batches from; ``n_target`` None: no target batches.
        batch_size: rows per batch and per domain (fewer when a domain has fewer rows).
        epochs: passes.
        seed: seeds the batch order (a generator of its own; the global torch random state,
            which dropout draws from, is the caller's to seed).
        balanced_labels: source class indices: draw source batches with replacement so that
            every class is equally likely, instead of shuffled passes.
        modules: put in training mode before the first step.
        end_epoch: ``(epoch index, metric means) -> record`` appended to the returned history.
        progress: show a progress bar over epochs with this description.
        postfix: ``record -> {name: text}`` shown on the progress bar after each epoch.
    """
    run = LoopRun(step, optimizer, n_source=n_source, n_target=n_target, batch_size=batch_size, epochs=epochs,
                  seed=seed, balanced_labels=balanced_labels, modules=modules, end_epoch=end_epoch,
                  progress=progress, postfix=postfix)
    run.run_to(run.total_steps)
    return run.history


def train_method(
    source: MultiModal,
    y_source: np.ndarray,
    target: MultiModal,
    n_classes: int,
    config: TrainConfig,
    *,
    progress: bool = False,
) -> AdaptedModel:
    """Train ``config.method`` (one named method, not ``auto``); see :func:`adaptation.train`."""
    run = MethodRun(source, y_source, target, n_classes, config, progress=progress)
    run.advance(1.0)
    return run.model()


class MethodRun:
    """The training of one named method (not ``auto``), able to pause: :func:`train_method` runs it through.

    ``advance(fraction)`` trains until that share of the run's steps is done; ``model()`` is the
    network as it stands. Nothing depends on where it paused: the loop's annealing and batch
    order run over the whole ``config.epochs`` (:class:`LoopRun`), and the global torch random
    state that dropout draws from is this run's own, seeded from ``config.seed`` and kept between
    pauses, so a run advanced in steps ends with the weights of one trained in one go, whatever
    else trained in between. ``auto``'s successive halving (:func:`adaptation.selection.auto_train`)
    relies on that.

    Args: as for :func:`adaptation.train`.
    """

    def __init__(
        self,
        source: MultiModal,
        y_source: np.ndarray,
        target: MultiModal,
        n_classes: int,
        config: TrainConfig,
        *,
        progress: bool = False,
    ) -> None:
        if not isinstance(config, TrainConfig):
            raise ConfigError(f"config must be a TrainConfig; got {type(config).__name__}")
        # re-validated copy: the dataclass is mutable, and the model keeps a snapshot of what it was trained with
        config = TrainConfig.from_dict(config.to_dict())
        if config.method == AUTO:
            raise ConfigError("train_method trains one named method; adaptation.train chooses among them for 'auto'")
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
        self.config, self.n_classes, self.dims = config, n_classes, source.dims
        self._device = device

        with self._own_rng(seed=config.seed):
            network = AdaptationNetwork(source.dims, n_classes, config)
            network.scaler.fit([source, target])
            method = method_cls(feature_dim=config.hidden, n_classes=n_classes, config=config)
            network.to(device)
            method.to(device)
        self.network = network
        self.n_adaptation_params = sum(p.numel() for p in method.parameters())

        params = [p for p in [*network.parameters(), *method.parameters()] if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)

        # Rows (a head's rows of the whole catalog) are read in place: a batch's indices go through their row index
        src_blocks, src_present, src_rows = indexed_tensors(source, device)
        y_tensor = torch.from_numpy(y).to(device)
        tgt_blocks, tgt_present, tgt_rows = indexed_tensors(target, device) if use_target else ({}, {}, None)

        def step(idx_s: torch.Tensor, idx_t: torch.Tensor | None, p: float) -> Step:
            s_blocks, s_present = _take(src_blocks, src_present, idx_s if src_rows is None else src_rows[idx_s])
            y_batch = y_tensor[idx_s.to(device)]
            n_s = y_batch.shape[0]
            if idx_t is not None:
                t_blocks, t_present = _take(tgt_blocks, tgt_present, idx_t if tgt_rows is None else tgt_rows[idx_t])
                # one joint pass, so a batch-norm bottleneck normalises with statistics of both domains
                blocks = {m: torch.cat([s_blocks[m], t_blocks[m]]) for m in s_blocks}
                present = {m: torch.cat([s_present[m], t_present[m]]) for m in s_present}
            else:
                blocks, present = s_blocks, s_present
            features, logits = network(blocks, present)
            weights = method.source_weights(y_batch)
            adapt_loss = method.adaptation_loss(features[:n_s], features[n_s:], logits[:n_s], logits[n_s:], p)
            if weights is None:
                cls_loss = F.cross_entropy(method.source_logits(logits[:n_s]), y_batch)
            else:
                per_row = F.cross_entropy(method.source_logits(logits[:n_s]), y_batch, reduction="none")
                cls_loss = (weights.detach() * per_row).sum() / weights.detach().sum().clamp(min=1e-12)
            loss = cls_loss + config.tradeoff * adapt_loss

            def metrics() -> dict[str, float]:
                return {
                    "cls_loss": cls_loss.item(),
                    "adaptation_loss": adapt_loss.item(),
                    "total_loss": loss.item(),
                    "source_accuracy": (logits[:n_s].argmax(1) == y_batch).float().mean().item(),
                    **method.step_metrics(),
                }

            def diverged(epoch: int, n_step: int) -> str:
                return (f"training diverged at epoch {epoch}, step {n_step}: loss is {loss.item()} "
                        f"(classification {cls_loss.item()}, adaptation {adapt_loss.item()}); try a lower lr")

            return Step(loss, metrics, diverged)

        def end_epoch(epoch: int, means: dict[str, float]) -> dict[str, Any]:
            record: dict[str, Any] = {"epoch": epoch + 1}
            record.update(means)
            record["lr"] = optimizer.param_groups[0]["lr"]
            return record

        self.loop = LoopRun(
            step, optimizer, n_source=len(source), n_target=len(target) if use_target else None,
            batch_size=config.batch_size, epochs=config.epochs, seed=config.seed,
            balanced_labels=y if config.sampling == "balanced" else None, modules=(network, method),
            end_epoch=end_epoch, progress=f"adapt[{config.method}]" if progress else None,
            postfix=lambda r: {"cls": f"{r['cls_loss']:.3f}", "adapt": f"{r['adaptation_loss']:.3f}"},
        )

    @contextmanager
    def _own_rng(self, seed: int | None = None) -> Iterator[None]:
        """The global torch random state is this run's inside: seeded anew, or the one saved at the last pause;
        saved again on leaving. The caller's own random state is left as it was."""
        fork_devices = [self._device] if self._device.type == "cuda" else []
        with torch.random.fork_rng(devices=fork_devices):
            if seed is not None:
                torch.manual_seed(seed)
            else:
                torch.set_rng_state(self._rng[0])
                if fork_devices:
                    torch.cuda.set_rng_state(self._rng[1], self._device)
            try:
                yield
            finally:
                self._rng = (torch.get_rng_state(), torch.cuda.get_rng_state(self._device) if fork_devices else None)

    @property
    def fraction_done(self) -> float:
        """Share of the run's steps taken so far, in ``[0, 1]``."""
        return self.loop.steps_done / self.loop.total_steps

    @property
    def epochs_done(self) -> float:
        """Epochs trained so far (a fraction when the run paused within an epoch)."""
        return self.loop.steps_done / self.loop.steps_per_epoch

    def steps_at(self, fraction: float) -> int:
        """Steps taken once ``fraction`` of the run is done: ``fraction * total`` rounded up, at least 1."""
        if not 0 < fraction <= 1:
            raise ConfigError(f"a training fraction must lie in (0, 1]; got {fraction!r}")
        return max(1, min(self.loop.total_steps, math.ceil(fraction * self.loop.total_steps - 1e-9)))

    def advance(self, fraction: float) -> None:
        """Train until ``fraction`` (in ``(0, 1]``) of the run's steps are done; nothing when already there."""
        n_steps = self.steps_at(fraction)
        if n_steps <= self.loop.steps_done:
            return
        with self._own_rng():
            self.loop.run_to(n_steps)

    def model(self) -> AdaptedModel:
        """The network as trained so far, in evaluation mode (training it further goes on changing it)."""
        return AdaptedModel(self.network, self.config, self.n_classes, self.dims, history=list(self.loop.history),
                            n_adaptation_params=self.n_adaptation_params)

    def close(self) -> None:
        """Stop for good (:meth:`LoopRun.close`): what training held is let go; the model keeps its weights."""
        self.loop.close()
