"""Temperature scaling and ECE against hand-checkable cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import log_softmax, softmax

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
    probs_raw = softmax(3 * true_logits, axis=1)
    probs_cal = softmax(3 * true_logits / t, axis=1)
    assert expected_calibration_error(probs_cal, labels) < expected_calibration_error(probs_raw, labels)


def _nll(logits: np.ndarray, labels: np.ndarray, t: float) -> float:
    """Mean negative log-likelihood of softmax(logits / t), from scipy's log-softmax."""
    return float(-log_softmax(logits / t, axis=1)[np.arange(len(labels)), labels].mean())


def test_temperature_is_the_minimiser_found_by_a_brute_force_grid_search():
    rng = np.random.default_rng(5)
    n, c = 300, 3
    labels = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c)) * 2.0
    logits[np.arange(n), labels] += 2.5
    logits[rng.random(n) < 0.2] *= -1.0  # some confidently wrong rows: the fit must soften them
    coarse = np.arange(0.05, 10.0, 0.05)
    centre = coarse[np.argmin([_nll(logits, labels, t) for t in coarse])]
    fine = np.arange(centre - 0.05, centre + 0.05, 0.001)
    nll = np.array([_nll(logits, labels, t) for t in fine])
    best = fine[nll.argmin()]
    t = fit_temperature(logits, labels)
    assert t > 1.0  # the confidently wrong rows make the raw logits over-confident
    assert abs(t - best) <= 0.002, (t, best)
    assert _nll(logits, labels, t) <= nll.min() + 1e-9


def _naive_ece(probs: np.ndarray, labels: np.ndarray, n_bins: int) -> float:
    """ECE by assigning each row to its bin ((k/n, (k+1)/n], right edge included) and summing per bin by hand."""
    count = [0] * n_bins
    hits = [0] * n_bins
    confidence = [0.0] * n_bins
    for row, label in zip(probs, labels):
        top = max(range(len(row)), key=lambda j: row[j])
        conf = row[top]
        k = min(int(np.ceil(conf * n_bins)) - 1, n_bins - 1)
        count[k] += 1
        hits[k] += int(top == label)
        confidence[k] += conf
    return sum(count[k] / len(labels) * abs(hits[k] / count[k] - confidence[k] / count[k]) for k in range(n_bins) if count[k])


def test_ece_matches_a_per_row_binning_loop():
    rng = np.random.default_rng(7)
    probs = rng.dirichlet(np.ones(4) * 0.5, size=500)
    labels = rng.integers(0, 4, 500)
    for n_bins in (1, 5, 15):
        assert expected_calibration_error(probs, labels, n_bins=n_bins) == pytest.approx(
            _naive_ece(probs, labels, n_bins), rel=1e-9, abs=1e-12)


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
