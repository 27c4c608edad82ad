"""Reviewed target products: labelled data for the head, spread to similar products, never evaluated."""

from __future__ import annotations

import numpy as np

from prodkg.adaptation import MultiModal, TrainConfig
from prodkg.prediction.heads import fit_task, reviewed_repeat
from prodkg.prediction.propagation import blend_with_reviews


def _two_clusters(n=20, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=8)
    b = -a
    x = np.concatenate([a + 0.05 * rng.normal(size=(n, 8)), b + 0.05 * rng.normal(size=(n, 8))]).astype(np.float32)
    return MultiModal(blocks={"image": x}, present={"image": np.ones(len(x), bool)})


def test_a_review_spreads_to_its_cluster_and_the_head_keeps_the_rest():
    feats = _two_clusters()
    tgt = np.arange(40)
    probs = np.tile([0.55, 0.45], (40, 1))  # the head leans to class 0 everywhere, unsure
    out = blend_with_reviews(feats, tgt, np.array([25]), np.array([1]), probs)
    assert (out[20:].argmax(1) == 1).all()  # the reviewed product's cluster follows the reviewer
    assert (out[:20].argmax(1) == 0).all()  # the other cluster keeps the head's answer
    np.testing.assert_allclose(out.sum(1), 1.0)


def test_reviewed_rows_repeat_by_source_rows_per_class():
    assert reviewed_repeat(81, 81) == 1  # one iconic photo per class: a review counts once
    assert reviewed_repeat(958, 10) == 10  # office-caltech amazon: capped
    assert reviewed_repeat(200, 10) == 2


def test_fit_task_learns_from_reviewed_rows_and_does_not_evaluate_them():
    feats = _two_clusters(30)
    n = 60
    is_source = np.zeros(n, bool)
    is_source[[0, 1, 2, 3, 30, 31, 32, 33]] = True
    is_target = ~is_source
    labels = ["a"] * 30 + ["b"] * 30  # target labels: evaluation only
    ids = [f"p{i}" for i in range(n)]
    cfg = TrainConfig(method="source_only", epochs=2, seed=0)
    plain = fit_task("category", feats, labels, is_source, is_target, ids, cfg)
    result = fit_task("category", feats, labels, is_source, is_target, ids, cfg, reviewed={40: "b", 10: "a", 2: "a"})  # row 2 is source: ignored
    assert result.metrics["n_target_reviewed"] == 2
    assert result.metrics["n_target_labelled"] == plain.metrics["n_target_labelled"] - 2
    assert set(result.predictions["product_id"]) == {ids[i] for i in np.flatnonzero(is_target)}
