"""Label spreading of a head's own target predictions (``--label-spreading``): the fixed point of Zhou et al.,
checked against its closed form on a graph built here, and what it does to a head that splits clusters."""

from __future__ import annotations

import numpy as np
import pytest

from prodkg.adaptation import MultiModal, TrainConfig
from prodkg.errors import ConfigError
from prodkg.flows.config import RunConfig
from prodkg.prediction.heads import fit_task
from prodkg.prediction.propagation import spread_predictions


def _clusters(per: int, k: int, dim: int = 16, noise: float = 0.15, seed: int = 0):
    """``k`` tight clusters of ``per`` rows each around random directions; ``(features, cluster of each row)``."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim))
    y = np.repeat(np.arange(k), per)
    x = (centres[y] + noise * rng.normal(size=(len(y), dim))).astype(np.float32)
    return MultiModal(blocks={"image": x}, present={"image": np.ones(len(y), bool)}), y


def _reference_affinity(x: np.ndarray, k: int) -> np.ndarray:
    """The normalised symmetric k-NN affinity, written out densely and row by row (independent of prodkg.knn)."""
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    n = len(u)
    w = np.zeros((n, n))
    for i in range(n):
        sims = u @ u[i]
        sims[i] = -np.inf
        for j in np.argsort(-sims, kind="stable")[:k]:
            w[i, j] = max(sims[j], 0.0)
    w = np.maximum(w, w.T)
    d = w.sum(1)
    return w / np.sqrt(np.outer(d, d))


def test_spread_is_the_closed_form_fixed_point_of_label_spreading():
    feats, y = _clusters(per=12, k=3)
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(3), size=len(y)).astype(np.float32)
    alpha = 0.8
    spread, record = spread_predictions(feats, np.arange(len(y)), probs, alpha, k=5)
    s = _reference_affinity(feats.blocks["image"].astype(np.float64), 5)
    # F* = (1 - alpha)(I - alpha S)^-1 Y, rows normalised (Zhou et al. 2003, eq. 2 solved in closed form)
    ref = np.linalg.solve(np.eye(len(y)) - alpha * s, (1 - alpha) * probs.astype(np.float64))
    ref /= ref.sum(1, keepdims=True)
    np.testing.assert_allclose(spread, ref, atol=2e-3)  # 30 iterations: alpha^30 ~ 1e-3 of the start remains
    assert record["changed"] == int((ref.argmax(1) != probs.argmax(1)).sum())
    assert record["alpha"] == alpha and record["k"] == 5


def test_a_head_that_splits_clusters_is_mended_and_an_agreeing_one_is_left_alone():
    feats, y = _clusters(per=30, k=4)
    rng = np.random.default_rng(2)
    # a weak head: right on 65% of the rows, a random other class elsewhere, never very sure
    pred = np.where(rng.random(len(y)) < 0.65, y, (y + rng.integers(1, 4, len(y))) % 4)
    probs = np.full((len(y), 4), 0.1, np.float32)
    probs[np.arange(len(y)), pred] = 0.7
    spread, record = spread_predictions(feats, np.arange(len(y)), probs, 0.8)
    assert (pred == y).mean() < 0.75
    assert (spread.argmax(1) == y).mean() == 1.0  # every cluster votes for its majority
    assert record["changed"] == int((pred != y).sum())
    right = np.full((len(y), 4), 0.1, np.float32)
    right[np.arange(len(y)), y] = 0.7
    kept, record = spread_predictions(feats, np.arange(len(y)), right, 0.8)
    assert record["changed"] == 0 and (kept.argmax(1) == y).all()


def test_spreading_is_skipped_with_its_reason_on_a_target_too_large_or_too_small():
    feats, y = _clusters(per=10, k=2)
    probs = np.full((len(y), 2), 0.5, np.float32)
    out, record = spread_predictions(feats, np.arange(len(y)), probs, 0.8, max_rows=5)
    assert out is probs and "over the limit of 5" in record["skipped"]
    out, record = spread_predictions(feats, np.arange(2), probs[:2], 0.8)
    assert "no neighbourhood" in record["skipped"]
    with pytest.raises(ValueError, match="alpha"):
        spread_predictions(feats, np.arange(len(y)), probs, 1.0)


def test_fit_task_publishes_the_spread_predictions_and_records_them():
    feats, y = _clusters(per=25, k=3, noise=0.6, seed=3)
    # one labelled source row per class, the rest is the target: the head alone gets some rows of each cluster wrong
    is_source = np.zeros(len(y), bool)
    is_source[[0, 25, 50]] = True
    labels = [f"c{c}" for c in y]
    ids = [f"p{i}" for i in range(len(y))]
    cfg = TrainConfig(method="source_only", epochs=5, seed=0)
    plain = fit_task("category", feats, labels, is_source, ~is_source, ids, cfg)
    spread = fit_task("category", feats, labels, is_source, ~is_source, ids, cfg, label_spreading=0.8)
    assert "label_spreading" not in plain.metrics
    rec = spread.metrics["label_spreading"]
    assert rec["alpha"] == 0.8 and rec["changed"] > 0
    truth = np.array(labels)[~is_source]
    assert (spread.predictions["value"].to_numpy() == truth).mean() > (plain.predictions["value"].to_numpy() == truth).mean()
    assert spread.metrics["target_accuracy"] == pytest.approx((spread.predictions["value"].to_numpy() == truth).mean())
    # the publication rule reads the spread confidences too
    np.testing.assert_allclose(np.exp(spread.evidence["target_logp"]).max(1), spread.predictions["confidence"], rtol=1e-5)


def test_label_spreading_is_refused_with_kept_heads():
    with pytest.raises(ConfigError, match="^keep_heads and label_spreading cannot be combined"):
        RunConfig(dataset="office-caltech-10", source=["amazon"], target=["webcam"], keep_heads=True, label_spreading=0.8)
    assert RunConfig(dataset="office-caltech-10", source=["amazon"], target=["webcam"], label_spreading=0.8).label_spreading == 0.8
