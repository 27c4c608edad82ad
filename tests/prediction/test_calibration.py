"""Temperature scaling and ECE against hand-checkable cases."""

from __future__ import annotations

import numpy as np

from prodkg.prediction import LabelSpace, expected_calibration_error, fit_temperature


def test_overconfident_logits_get_a_temperature_above_one():
    rng = np.random.default_rng(0)
    n, c = 2000, 4
    y = rng.integers(0, c, n)
    true_logits = rng.normal(size=(n, c))
    true_logits[np.arange(n), y] += 1.0
    # sample labels from softmax(true_logits) so the true temperature is exactly 1 for true_logits
    p = np.exp(true_logits) / np.exp(true_logits).sum(1, keepdims=True)
    labels = np.array([rng.choice(c, p=row) for row in p])
    t = fit_temperature(3.0 * true_logits, labels)
    assert 2.4 < t < 3.6
    probs_raw = np.exp(3 * true_logits) / np.exp(3 * true_logits).sum(1, keepdims=True)
    z = 3 * true_logits / t
    probs_cal = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    assert expected_calibration_error(probs_cal, labels) < expected_calibration_error(probs_raw, labels)


def test_ece_hand_computed():
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    labels = np.array([0, 1, 0, 0])
    # bin(0.9): acc 0.5 conf 0.9 -> 0.4 ; bin(0.6): acc 1.0 conf 0.6 -> 0.4 ; weights 0.5 each
    assert abs(expected_calibration_error(probs, labels) - 0.4) < 1e-9


def test_label_space_encodes_unknown_as_minus_one():
    space = LabelSpace.from_labels(["mug", "bag", None, "mug"])
    assert space.classes == ["bag", "mug"]
    assert space.encode(["mug", "hat", None]).tolist() == [1, -1, -1]
    assert space.decode([0, 1]) == ["bag", "mug"]
