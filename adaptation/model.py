"""The adapted network (standardise -> fuse -> bottleneck -> classifier) and the trained-model object that wraps it."""

from __future__ import annotations

import json
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from prodkg.adaptation.config import TrainConfig
from prodkg.adaptation.features import MultiModal, PackedBlock, Rows, column_moments
from prodkg.adaptation.fusion import FUSIONS
from prodkg.errors import ConfigError, ModelLoadError, StageError

FORMAT = "prodkg.adaptation.AdaptedModel/1"
CONFIG_FILE = "model.json"
WEIGHTS_FILE = "weights.pt"
_INFERENCE_BATCH = 4096


class Standardizer(nn.Module):
    """Per-modality z-scoring with statistics fitted once and stored as buffers.

    Statistics come from the *present* rows only, of source and target together
    (transductive, as the target features are known at training time). Constant
    columns keep a scale of 1 so they map to 0 instead of dividing by zero.

    Shape:
        each block ``(N, d_m)`` in and out.
    """

    def __init__(self, dims: Mapping[str, int]) -> None:
        super().__init__()
        self.modalities = sorted(dims)
        # Buffers are named by position: modality names may hold characters a buffer name may not.
        for i, name in enumerate(self.modalities):
            self.register_buffer(f"mean_{i}", torch.zeros(dims[name]))
            self.register_buffer(f"scale_{i}", torch.ones(dims[name]))

    def fit(self, data: list[MultiModal]) -> Standardizer:
        for i, name in enumerate(self.modalities):
            moments = column_moments([d.parts(name) if isinstance(d, Rows) else (d.blocks[name], d.present[name]) for d in data])
            if moments is None:
                continue  # modality never observed: identity transform, its rows are all masked anyway
            mean, scale = moments
            scale[scale < 1e-8] = 1.0
            getattr(self, f"mean_{i}").copy_(torch.from_numpy(mean))
            getattr(self, f"scale_{i}").copy_(torch.from_numpy(scale))
        return self

    def forward(self, blocks: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {
            name: (blocks[name] - getattr(self, f"mean_{i}")) / getattr(self, f"scale_{i}")
            for i, name in enumerate(self.modalities)
        }


def _norm_layer(kind: str, width: int) -> nn.Module:
    if kind == "layer":
        return nn.LayerNorm(width)
    if kind == "batch":
        return nn.BatchNorm1d(width)
    return nn.Identity()


class AdaptationNetwork(nn.Module):
    """Standardise, fuse, then ``Linear -> Norm -> ReLU -> Dropout`` bottleneck and a linear classifier.

    Args:
        dims: feature width of each modality.
        n_classes: number of categories.
        config: supplies ``fusion``, ``hidden``, ``norm`` and ``dropout``.

    Shape:
        blocks ``(N, d_m)`` and masks ``(N,)`` in; features ``(N, hidden)`` and logits ``(N, n_classes)`` out.
    """

    def __init__(self, dims: Mapping[str, int], n_classes: int, config: TrainConfig) -> None:
        super().__init__()
        self.config = config
        self.scaler = Standardizer(dims)
        self.fusion = FUSIONS.get(config.fusion)(dims, hidden=config.hidden)
        if self.fusion.per_modality_heads:
            # late fusion: a bottleneck and a classifier per modality (by position, like the scaler's buffers)
            widths = list(self.fusion.dims.values())
            self.branches = nn.ModuleList([_bottleneck(d, config) for d in widths])
            self.heads = nn.ModuleList([nn.Linear(config.hidden, n_classes) for _ in widths])
        else:
            self.bottleneck = _bottleneck(self.fusion.out_dim, config)
            self.classifier = nn.Linear(config.hidden, n_classes)

    def _late(
        self, blocks: Mapping[str, torch.Tensor], present: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        parts = self.fusion.split(self.fusion(self.scaler(blocks), present))
        mask = self.fusion.mask(present, parts[0].device)
        feats = [branch(part) for branch, part in zip(self.branches, parts)]
        logits = [head(f) for head, f in zip(self.heads, feats)]
        return self.fusion.combine(torch.stack(feats), mask), self.fusion.combine(torch.stack(logits), mask)

    def features(self, blocks: Mapping[str, torch.Tensor], present: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if self.fusion.per_modality_heads:
            return self._late(blocks, present)[0]
        return self.bottleneck(self.fusion(self.scaler(blocks), present))

    def forward(
        self, blocks: Mapping[str, torch.Tensor], present: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.fusion.per_modality_heads:
            return self._late(blocks, present)
        features = self.features(blocks, present)
        return features, self.classifier(features)


def _bottleneck(width: int, config: TrainConfig) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(width, config.hidden),
        _norm_layer(config.norm, config.hidden),
        nn.ReLU(),
        nn.Dropout(config.dropout),
    )


class EnsembleNetwork(nn.Module):
    """Several trained :class:`AdaptationNetwork` s whose class probabilities are averaged.

    Output logits are ``log(mean_m softmax(logits_m))``, so a softmax of them gives
    the averaged probabilities; features are those of the first member (the
    selection's winner), the space where it aligned the domains.

    Shape:
        as :class:`AdaptationNetwork`: features ``(N, hidden of member 0)``, logits ``(N, n_classes)``.
    """

    def __init__(self, members: list[AdaptationNetwork]) -> None:
        super().__init__()
        if not members:
            raise StageError("an ensemble needs at least one member network; got none")
        self.members = nn.ModuleList(members)

    def forward(
        self, blocks: Mapping[str, torch.Tensor], present: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        features, probs = None, None
        for member in self.members:
            f, logits = member(blocks, present)
            p = torch.softmax(logits, dim=1)
            features = f if features is None else features
            probs = p if probs is None else probs + p
        return features, torch.log(probs / len(self.members)).clamp(min=-80.0)


class PackedRows:
    """A :class:`~prodkg.adaptation.features.PackedBlock` on the torch side: ``rows[take]`` (a slice or an index
    tensor) is the dense ``(len(take), d)`` batch, zeros where a row is not held. Only the held vectors and one
    position per row live on the device."""

    def __init__(self, block: PackedBlock, device: torch.device) -> None:
        position = np.full(len(block), -1, np.int64)
        position[block.rows] = np.arange(len(block.rows))
        self.values = torch.from_numpy(block.values).to(device)
        self.position = torch.from_numpy(position).to(device)

    @property
    def device(self) -> torch.device:
        return self.values.device

    def __len__(self) -> int:
        return len(self.position)

    def __getitem__(self, take) -> torch.Tensor:
        position = self.position[take]
        held = position >= 0
        out = torch.zeros((len(position), self.values.shape[1]), dtype=self.values.dtype, device=self.values.device)
        out[held] = self.values[position[held]]
        return out


def to_tensors(x: MultiModal, device: torch.device) -> tuple[dict[str, torch.Tensor | PackedRows], dict[str, torch.Tensor]]:
    """The blocks and masks of ``x`` as tensors on ``device`` (a packed block as :class:`PackedRows`: read it by rows)."""
    blocks = {m: PackedRows(x.blocks[m], device) if isinstance(x.blocks[m], PackedBlock) else torch.from_numpy(x.blocks[m]).to(device)
              for m in x.modalities}
    present = {m: torch.from_numpy(x.present[m]).to(device) for m in x.modalities}
    return blocks, present


def indexed_tensors(x: MultiModal | Rows, device: torch.device) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor | None]:
    """Like :func:`to_tensors`, plus the row index batches are read through: for :class:`Rows` on the CPU, the whole
    blocks without a copy and the rows (None: the tensors' rows are ``x``'s)."""
    if isinstance(x, Rows) and device.type == "cpu":
        blocks, present = to_tensors(x.base, device)
        return blocks, present, torch.from_numpy(x.rows)
    blocks, present = to_tensors(x.gathered() if isinstance(x, Rows) else x, device)
    return blocks, present, None


def resolve_device(requested: str) -> torch.device:
    """The torch device named by ``requested``; ConfigError if it is a GPU that is not available."""
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {requested!r} was asked for but CUDA is not available here")
    return device


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``softmax(logits / temperature)`` in float64, returned as float32 (what :meth:`AdaptedModel.predict_proba` gives).

    Shape: ``(N, C)`` -> ``(N, C)``, rows summing to 1.
    """
    if not isinstance(temperature, (int, float)) or not temperature > 0 or not np.isfinite(temperature):
        raise ConfigError(f"temperature must be a finite number > 0; got {temperature!r}")
    z = np.asarray(logits).astype(np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    return p.astype(np.float32)


class AdaptedModel:
    """A trained adaptation model: predicts categories and embeds products of either domain.

    Built by :func:`adaptation.train` or :meth:`load`; ``history`` holds one dict of
    losses and diagnostics per epoch. All outputs are float32 NumPy arrays, and
    every call runs in eval mode (no dropout), so it is deterministic.
    """

    def __init__(
        self,
        network: AdaptationNetwork,
        config: TrainConfig,
        n_classes: int,
        dims: Mapping[str, int],
        history: list[dict[str, Any]] | None = None,
        n_adaptation_params: int = 0,
        selection: dict[str, Any] | None = None,
    ) -> None:
        self.network = network.eval()
        self.config = config
        self.n_classes = n_classes
        self.dims = {m: int(dims[m]) for m in sorted(dims)}
        self.history: list[dict[str, Any]] = list(history or [])
        self.n_adaptation_params = n_adaptation_params
        #: how ``method="auto"`` chose this model (candidates, scores, reason); None for a named method
        self.selection: dict[str, Any] | None = selection

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def _check(self, x: MultiModal) -> None:
        if not isinstance(x, (MultiModal, Rows)):
            raise StageError(f"expected a MultiModal, got {type(x).__name__}")
        if x.dims != self.dims:
            raise StageError(f"model was trained on modalities {self.dims}; got {x.dims}")

    @torch.no_grad()
    def _run(self, x: MultiModal, what: str) -> np.ndarray:
        self._check(x)
        self.network.eval()
        width = self.config.hidden if what == "features" else self.n_classes
        out = np.empty((len(x), width), dtype=np.float32)
        blocks, present, rows = indexed_tensors(x, torch.device("cpu"))  # zero-copy views; batches move to the device
        for start in range(0, len(x), _INFERENCE_BATCH):
            stop = min(start + _INFERENCE_BATCH, len(x))
            take = slice(start, stop) if rows is None else rows[start:stop]
            features, logits = self.network(
                {m: b[take].to(self.device) for m, b in blocks.items()},
                {m: p[take].to(self.device) for m, p in present.items()},
            )
            result = features if what == "features" else logits
            out[start:stop] = result.float().cpu().numpy()
        return out

    def logits(self, x: MultiModal) -> np.ndarray:
        """Classifier logits. Shape: ``(N, n_classes)``."""
        return self._run(x, "logits")

    def predict_proba(self, x: MultiModal, temperature: float = 1.0) -> np.ndarray:
        """``softmax(logits / temperature)``; a temperature fitted elsewhere calibrates it.

        Shape: ``(N, n_classes)``, rows summing to 1.
        """
        return softmax(self.logits(x), temperature)

    def predict(self, x: MultiModal) -> np.ndarray:
        """Most likely class index per product. Shape: ``(N,)`` int64."""
        return self.logits(x).argmax(axis=1).astype(np.int64)

    def embed(self, x: MultiModal) -> np.ndarray:
        """Bottleneck features, the space where the domains were aligned. Shape: ``(N, hidden)``."""
        return self._run(x, "features")

    def core_network(self) -> AdaptationNetwork:
        """The (first) trained :class:`AdaptationNetwork` inside any ensemble or centroid head."""
        net = self.network.base if self.refined else self.network
        return net.members[0] if isinstance(net, EnsembleNetwork) else net

    def member_configs(self) -> list[dict[str, Any]] | None:
        """Configs of the ensemble's members (winner first), or None for a single network."""
        base = self.network.base if self.refined else self.network
        if isinstance(base, EnsembleNetwork):
            return [m.config.to_dict() for m in base.members]
        return None

    @property
    def refined(self) -> bool:
        """True when the logits come from target class centroids (:class:`~adaptation.refine.CentroidHead`)."""
        from prodkg.adaptation.refine import CentroidHead

        return isinstance(self.network, CentroidHead)

    def describe(self) -> dict[str, Any]:
        """Method, fusion, hyper-parameters, sizes and last-epoch numbers, for the run manifest."""
        n_params = sum(p.numel() for p in self.network.parameters())
        return {
            "method": self.config.method,
            "fusion": self.config.fusion,
            "config": self.config.to_dict(),
            "n_classes": self.n_classes,
            "modalities": dict(self.dims),
            "input_dim": self.core_network().fusion.out_dim,
            "n_params": int(n_params),
            "n_adaptation_params": int(self.n_adaptation_params),
            "epochs_run": len(self.history),
            "final_epoch": dict(self.history[-1]) if self.history else None,
            "torch_version": torch.__version__,
            "selection": self.selection,
            "ensemble": self.member_configs(),
            "refined": self.refined,
        }

    def save(self, path: str | Path) -> Path:
        """Write the model to the directory ``path`` (created if needed): weights and a JSON description.

        ``weights.pt`` holds the network's ``state_dict`` (loadable with
        ``weights_only=True``); ``model.json`` holds the config, input widths, class
        count and history needed to rebuild it. Returns the directory.
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in self.network.state_dict().items()}
        torch.save(state, path / WEIGHTS_FILE)
        meta = {
            "format": FORMAT,
            "config": self.config.to_dict(),
            "n_classes": self.n_classes,
            "dims": self.dims,
            "history": self.history,
            "n_adaptation_params": self.n_adaptation_params,
            "selection": self.selection,
            "ensemble": self.member_configs(),
            "refined": self.refined,
            "versions": {"torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()},
        }
        (path / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path, *, device: str | None = None) -> AdaptedModel:
        """Rebuild a model written by :meth:`save`.

        Args:
            path: the directory given to :meth:`save`.
            device: where to put it; defaults to the training device, or CPU when
                that was a GPU and none is available here.
        """
        path = Path(path)
        meta_file, weights_file = path / CONFIG_FILE, path / WEIGHTS_FILE
        if not meta_file.is_file() or not weights_file.is_file():
            raise ModelLoadError(f"expected {CONFIG_FILE} and {WEIGHTS_FILE} in {path}; one or both are missing")
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ModelLoadError(f"{meta_file} is not valid JSON: {exc}") from exc
        if meta.get("format") != FORMAT:
            raise ModelLoadError(f"{meta_file}: expected format {FORMAT!r}, got {meta.get('format')!r}")
        config = TrainConfig.from_dict(meta["config"])
        if device is None:
            wanted = torch.device(config.device)
            device = config.device if wanted.type != "cuda" or torch.cuda.is_available() else "cpu"
        dims = {m: int(d) for m, d in meta["dims"].items()}
        members = meta.get("ensemble")
        if members:
            network = EnsembleNetwork(
                [AdaptationNetwork(dims, int(meta["n_classes"]), TrainConfig.from_dict(c)) for c in members]
            )
        else:
            network = AdaptationNetwork(dims, int(meta["n_classes"]), config)
        if meta.get("refined"):
            from prodkg.adaptation.refine import CentroidHead

            network = CentroidHead(network, dims, int(meta["n_classes"]))
        try:
            state = torch.load(weights_file, map_location="cpu", weights_only=True)
            network.load_state_dict(state, strict=True)
        except (RuntimeError, OSError, EOFError) as exc:
            raise ModelLoadError(f"could not load weights from {weights_file}: {exc}") from exc
        network.to(resolve_device(device))
        return cls(
            network,
            config,
            int(meta["n_classes"]),
            dims,
            history=meta.get("history", []),
            n_adaptation_params=int(meta.get("n_adaptation_params", 0)),
            selection=meta.get("selection"),
        )
