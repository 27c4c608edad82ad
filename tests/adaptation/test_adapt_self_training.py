"""Class-balanced self-training: the pseudo-label rule against a naive reference, and a shifted toy task it helps."""

from __future__ import annotations

import numpy as np
import pytest

from prodkg.adaptation import MultiModal, TrainConfig
from prodkg.adaptation.self_training import balanced_pseudo_labels, self_train
from prodkg.errors import ConfigError


def _naive(probs, share, min_confidence):
    n, k = probs.shape
    quota = max(1, round(share * n / k))
    out = []
    for c in range(k):
        mine = [(-probs[i].max(), i) for i in range(n) if probs[i].argmax() == c and probs[i].max() >= min_confidence]
        out += [i for _, i in sorted(mine)[:quota]]
    return sorted(out)


@pytest.mark.parametrize("share,min_conf", [(0.2, 0.0), (0.5, 0.4), (1.0, 0.9)])
def test_pseudo_labels_match_a_naive_reference(share, min_conf):
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(200, 5)) * 2
    logits[:, 0] += 1.5  # class 0 dominates the predictions: the quota keeps it from taking every slot
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    rows, labels = balanced_pseudo_labels(probs, share, min_conf)
    assert rows.tolist() == _naive(probs, share, min_conf)
    np.testing.assert_array_equal(labels, probs[rows].argmax(1))
    assert np.bincount(labels, minlength=5).max() <= max(1, round(share * 200 / 5))


def test_self_training_carries_a_shifted_target_further():
    rng = np.random.default_rng(0)
    k, d = 4, 8
    centres = rng.normal(size=(k, d)) * 2.5
    ys = np.repeat(np.arange(k), 3)  # few labelled rows per class
    xs = centres[ys] + rng.normal(size=(len(ys), d)) * 0.6
    yt = np.repeat(np.arange(k), 100)
    shift = rng.normal(size=d) * 1.2
    xt = centres[yt] + shift + rng.normal(size=(len(yt), d)) * 0.6
    src, tgt = MultiModal.complete(image=xs.astype(np.float32)), MultiModal.complete(image=xt.astype(np.float32))
    cfg = TrainConfig(method="source_only", epochs=30, hidden=32, seed=0)
    from prodkg.adaptation import train

    base = train(src, ys, tgt, k, cfg)
    model, rounds = self_train(src, ys, tgt, k, cfg, first=base, shares=(0.3, 0.6), min_confidence=0.3)
    before, after = (base.predict(tgt) == yt).mean(), (model.predict(tgt) == yt).mean()
    assert [r["share"] for r in rounds] == [0.3, 0.6]
    assert 0 < rounds[0]["pseudo_labelled"] <= 4 * 30 and rounds[1]["pseudo_labelled"] <= 4 * 60
    assert after > before + 0.03  # 0.58 -> 0.66 when written


def test_self_training_refuses_auto_and_bad_shares():
    src = MultiModal.complete(image=np.zeros((4, 2), np.float32))
    with pytest.raises(ConfigError, match="auto"):
        self_train(src, np.array([0, 1, 0, 1]), src, 2, TrainConfig(method="auto"))
    with pytest.raises(ConfigError, match="shares"):
        self_train(src, np.array([0, 1, 0, 1]), src, 2, TrainConfig(method="dann"), shares=(1.5,))


def test_a_head_with_self_training_records_its_rounds_and_keeps_autos_choice():
    from prodkg.prediction.heads import fit_task

    rng = np.random.default_rng(1)
    centres = rng.normal(size=(3, 6)) * 3
    ys, yt = np.repeat(np.arange(3), 4), np.repeat(np.arange(3), 20)
    x = np.concatenate([centres[ys], centres[yt] + 0.8]) + rng.normal(size=(len(ys) + len(yt), 6)) * 0.5
    feats = MultiModal.complete(image=x.astype(np.float32))
    labels = [f"c{c}" for c in ys] + [None] * len(yt)
    is_source = np.r_[np.ones(len(ys), bool), np.zeros(len(yt), bool)]
    ids = [f"p{i}" for i in range(len(labels))]
    res = fit_task("category", feats, labels, is_source, ~is_source, ids, TrainConfig(method="auto", epochs=2), self_training=2)
    assert [r["share"] for r in res.metrics["self_training"]] == [0.2, 0.4]
    assert all(r["pseudo_labelled"] <= max(1, round(r["share"] * 60 / 3)) * 3 for r in res.metrics["self_training"])
    assert res.model.selection is not None and res.metrics["selection"]["chosen"]  # auto's record survives the rounds
    assert res.model.config.method != "auto" and len(res.predictions) == len(yt)
