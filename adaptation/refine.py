"""Label-free refinement of target predictions by class centroids in the input feature space, and the head it yields."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from prodkg.adaptation.features import MultiModal
from prodkg.errors import StageError

#: softmax temperature of the cosine logits of a :class:`CentroidHead`
TEMPERATURE = 0.05


def centred_inputs(x: MultiModal, means: Mapping[str, np.ndarray]) -> np.ndarray:
    """Concatenated, centred, row-L2-normalised feature blocks (missing blocks are zeros). Shape: ``(N, sum d_m)``."""
    parts = [np.where(x.present[m][:, None], x.blocks[m].astype(np.float64) - means[m], 0.0) for m in x.modalities]
    z = np.concatenate(parts, axis=1)
    return z / np.linalg.norm(z, axis=1, keepdims=True).clip(min=1e-12)


def centroid_refine(z: np.ndarray, probs: np.ndarray, iterations: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Spherical k-means on the target seeded by a classifier's soft predictions.

    Centroids start as the probability-weighted means of the L2-normalised target
    features (the self-labelling step of SHOT, Liang et al., ICML 2020, eq. 5-6),
    then alternate hard nearest-centroid (cosine) labels and centroid means. It uses
    the cluster structure of the target itself, which a classifier fitted on the
    source cannot see; class identities come from the seeding predictions.

    Args:
        z: ``(N, d)`` row-normalised target features; probs: ``(N, C)`` class probabilities.
        iterations: label/centroid updates.

    Returns:
        ``(centroids (C, d) unit rows, labels (N,))``. A class that loses every product keeps its seeded centroid.
    """
    if z.ndim != 2 or probs.ndim != 2 or z.shape[0] != probs.shape[0] or z.shape[0] == 0:
        raise StageError(f"centroid_refine expects (N, d) features and (N, C) probabilities; got {z.shape} and {probs.shape}")
    weights = probs.astype(np.float64)
    centroids = None
    labels = weights.argmax(1)
    for _ in range(max(1, iterations)):
        new = weights.T @ z
        mass = weights.sum(0)
        if centroids is not None:
            new[mass == 0] = centroids[mass == 0]
        new /= np.linalg.norm(new, axis=1, keepdims=True).clip(min=1e-12)
        centroids = new
        labels = (z @ centroids.T).argmax(1)
        weights = np.eye(probs.shape[1])[labels]
    return centroids, labels


class CentroidHead(nn.Module):
    """Wraps a trained network: features pass through, logits become cosine similarities to target class centroids.

    Logits are ``cos(z, c_k) / TEMPERATURE`` with ``z`` the centred, L2-normalised
    concatenation of the input blocks (:func:`centred_inputs`) and ``c_k`` the
    centroids from :func:`centroid_refine`.

    Args:
        base: the network whose features are kept.
        dims: modality widths; n_classes: ``C``.

    Shape:
        as the base network: features unchanged, logits ``(N, C)``.
    """

    def __init__(self, base: nn.Module, dims: Mapping[str, int], n_classes: int) -> None:
        super().__init__()
        self.base = base
        self.modalities = sorted(dims)
        for i, m in enumerate(self.modalities):
            self.register_buffer(f"mean_{i}", torch.zeros(dims[m]))
        self.register_buffer("centroids", torch.zeros(n_classes, sum(dims.values())))

    def set_state(self, means: Mapping[str, np.ndarray], centroids: np.ndarray) -> None:
        for i, m in enumerate(self.modalities):
            getattr(self, f"mean_{i}").copy_(torch.from_numpy(np.asarray(means[m], dtype=np.float32)))
        self.centroids.copy_(torch.from_numpy(centroids.astype(np.float32)))

    def forward(
        self, blocks: Mapping[str, torch.Tensor], present: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        features, _ = self.base(blocks, present)
        parts = []
        for i, m in enumerate(self.modalities):
            mask = present[m].to(dtype=torch.bool, device=blocks[m].device)
            centred = blocks[m] - getattr(self, f"mean_{i}")
            parts.append(torch.where(mask[:, None], centred, torch.zeros_like(centred)))
        z = torch.nn.functional.normalize(torch.cat(parts, dim=1), dim=1)
        return features, z @ self.centroids.T / TEMPERATURE
