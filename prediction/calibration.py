"""Confidence calibration: temperature scaling fitted on held-out labelled rows, and its measure (ECE)."""

from __future__ import annotations

import numpy as np
import torch


def fit_temperature(logits: np.ndarray, labels: np.ndarray, *, max_iter: int = 200) -> float:
    """Temperature T > 0 that minimises the NLL of ``softmax(logits / T)`` (Guo et al., ICML 2017).

    Args:
        logits: (N, C) held-out logits.
        labels: (N,) int class indices.

    Returns 1.0 when there are too few rows to fit anything meaningful.
    """
    if len(labels) < 2:
        return 1.0
    z = torch.as_tensor(logits, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.long)
    # optimise log T so T stays positive
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.exp().item())
    return float(np.clip(t, 0.05, 20.0)) if np.isfinite(t) else 1.0


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """ECE: mean |accuracy − confidence| over equal-width confidence bins, weighted by bin size."""
    if len(labels) == 0:
        return float("nan")
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    return float(ece)
