"""The manifest's curation entry: reviews that trained the head, reviews that calibrated the rule, what they support."""

from __future__ import annotations

from prodkg.flows.pipeline import curation_summary


def test_the_entry_counts_training_and_calibration_reviews_and_what_they_support():
    metrics = {"n_target_reviewed": 58,
               "review_split": {"n_reviewed": 100, "n_train": 58, "n_calibration": 42, "calibration_ids": ["p1"], "share": 0.4},
               "publication": {"calibration": {"n_rows": 42, "n_published": 37, "n_published_right": 37, "precision_bound": 0.951,
                                               "confidence": 0.841345}}}
    assert curation_summary({"p1": object(), "p2": object()}, metrics) == {
        "decisions": 2, "reviewed_target_rows_used": 58, "reviewed_target_rows_calibration": 42,
        "calibration_precision": {"published": 37, "right": 37, "lower_bound": 0.951, "confidence": 0.841345}}


def test_without_a_split_the_entry_says_why():
    metrics = {"n_target_reviewed": 3, "review_split": {"n_calibration": 0, "reason": "1 of 3 reviews would be held out"}}
    out = curation_summary({}, metrics)
    assert out["reviewed_target_rows_calibration"] == 0 and out["calibration_note"].startswith("1 of 3")
    assert curation_summary({}, {}) == {"decisions": 0, "reviewed_target_rows_used": 0}


def test_cross_fitted_reviews_all_train_and_all_calibrate():
    metrics = {"n_target_reviewed": 100,
               "review_split": {"mode": "cross-fit", "folds": 3, "n_reviewed": 100, "n_train": 100, "n_calibration": 100},
               "publication": {"calibration": {"n_rows": 100, "n_published": 40, "n_published_right": 40, "precision_bound": 0.955,
                                               "confidence": 0.841345}}}
    out = curation_summary({}, metrics)
    assert out["reviewed_target_rows_used"] == out["reviewed_target_rows_calibration"] == 100 and out["calibration_folds"] == 3
