"""Reviewed target products as the publication rule's calibration set (prediction/target_calibration.py, decide)."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest

from prodkg.prediction.publication import decide
from prodkg.prediction.target_calibration import (
    bound_confidence,
    calibration_rank,
    min_calibration_rows,
    precision_lower_bound,
    split_reviewed,
)


def _reference_bound(k: int, n: int, confidence: float) -> float:
    """Clopper-Pearson by its definition: bisect for p with P(X >= k | n, p) = 1 - confidence, the tail summed by hand."""
    def tail(p):
        return sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(k, n + 1))

    lo, hi = 0.0, 1.0
    for _ in range(80):
        mid = (lo + hi) / 2
        if tail(mid) < 1 - confidence:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


@pytest.mark.parametrize("k,n,confidence", [(40, 40, 0.841), (39, 40, 0.841), (30, 40, 0.95), (5, 9, 0.9), (1, 1, 0.5), (97, 100, 0.975)])
def test_the_lower_bound_is_clopper_pearsons(k, n, confidence):
    assert precision_lower_bound(k, n, confidence) == pytest.approx(_reference_bound(k, n, confidence), abs=1e-9)


def test_no_right_row_or_no_row_supports_nothing():
    assert precision_lower_bound(0, 10, 0.9) == 0.0
    assert precision_lower_bound(0, 0, 0.9) == 0.0


def test_bound_confidence_is_the_normal_tail_of_z():
    assert bound_confidence(1.0) == pytest.approx(0.841345, abs=1e-6)
    assert bound_confidence(0.0) == pytest.approx(0.5)


def test_the_fewest_rows_that_can_support_a_precision_target():
    confidence = bound_confidence(1.0)
    need = min_calibration_rows(0.95, confidence)
    assert need == 36
    # n rows all right reach the target, one row fewer does not (the reference bound, not the function under test)
    assert _reference_bound(need, need, confidence) >= 0.95 > _reference_bound(need - 1, need - 1, confidence)
    assert min_calibration_rows(0.8, confidence) == 9


def test_the_split_is_fixed_per_product_and_about_the_share():
    ids = [f"instore-{i}" for i in range(2000)]
    reviewed = {pid: "Apple" for pid in ids}
    train, cal, record = split_reviewed(reviewed, {pid: pid for pid in ids}, share=0.4)
    # reference: the rank computed here from hashlib, independently of the module
    want = {pid for pid in ids if int(hashlib.sha256(pid.encode()).hexdigest()[:16], 16) / 2**64 < 0.4}
    assert set(cal) == want and set(train) == set(ids) - want
    assert abs(len(cal) / len(ids) - 0.4) < 0.04
    assert record["n_calibration"] == len(cal) and record["n_train"] == len(train) and record["calibration_ids"] == sorted(want)
    # more reviews later: every product keeps its side
    _, cal_small, _ = split_reviewed({pid: "Apple" for pid in ids[:300]}, {pid: pid for pid in ids[:300]}, share=0.4)
    assert set(cal_small) == want & set(ids[:300])
    assert calibration_rank("x") == calibration_rank("x") and 0 <= calibration_rank("x") < 1


def test_too_few_to_support_the_target_all_train():
    ids = [f"p{i}" for i in range(30)]
    train, cal, record = split_reviewed({i: "A" for i in ids}, {i: i for i in ids}, share=0.4, min_rows=36)
    assert cal == {} and len(train) == 30 and record["n_calibration"] == 0 and "all train the head" in record["reason"]


def _synthetic(n=1500, seed=0):
    """Two classes; item i is predicted with confidence c_i and is right with probability c_i (a calibrated head)."""
    rng = np.random.default_rng(seed)
    conf = 1.0 - 0.5 * rng.uniform(0.0, 1.0, n) ** 3  # mostly confident, as a useful head is
    pred = rng.integers(0, 2, n)
    right = rng.random(n) < conf
    truth = np.where(right, pred, 1 - pred)
    probs = np.zeros((n, 2))
    probs[np.arange(n), pred] = conf
    probs[np.arange(n), 1 - pred] = 1 - conf
    return probs, truth, conf, right


def _no_source():
    return np.zeros((0, 2)), np.zeros(0, np.int64)


def test_without_a_hold_out_the_rule_abstains_and_with_calibration_rows_it_publishes_what_they_support():
    probs, truth, conf, right = _synthetic()
    classes = ["A", "B"]
    sp, sl = _no_source()
    assert "abstained" in decide(probs, classes, source_probs=sp, source_labels=sl).rule
    cal_items = np.arange(0, len(probs), 5)  # 300 calibration rows
    calibration = {int(i): classes[truth[i]] for i in cal_items}
    # one shared estimate (no per-class ratios): items are ranked by confidence alone, so the bar is a confidence
    d = decide(probs, classes, source_probs=sp, source_labels=sl, calibration=calibration, min_precision=0.95, class_evidence="none")
    assert "abstained" not in d.rule and d.levels[0]["estimator"] == "calibration"
    pub = d.published_level >= 0
    assert pub.any()
    # the level's accuracy on the calibration rows, counted here
    rec = d.levels[0]["calibration"]
    assert rec["n_rows"] == len(cal_items) and rec["accuracy"] == pytest.approx(right[cal_items].mean(), abs=1e-6)
    # what the calibration rows that were published support, by the reference bound: at least the target
    cal_pub = pub[cal_items]
    k, m = int(right[cal_items][cal_pub].sum()), int(cal_pub.sum())
    assert (k, m) == (d.rule["calibration"]["n_published_right"], d.rule["calibration"]["n_published"])
    assert _reference_bound(k, m, bound_confidence(1.0)) >= 0.95
    # nothing is published below the least confident calibration row that supports it
    assert conf[pub].min() >= conf[cal_items][cal_pub].min() - 1e-12
    # and the next calibration row below the bar would not have kept the bound
    below = cal_items[~cal_pub]
    j = below[np.argmax(conf[below])]
    assert _reference_bound(k + int(right[j]), m + 1, bound_confidence(1.0)) < 0.95 or conf[j] < conf[pub].min()
    # the published facts are right about as often as the target (the head is calibrated by construction)
    rest = pub.copy()
    rest[cal_items] = False
    assert right[rest].mean() >= 0.93


def test_wrong_calibration_rows_withhold_publication():
    probs, truth, conf, _ = _synthetic(seed=1)
    classes = ["A", "B"]
    sp, sl = _no_source()
    cal_items = np.arange(0, len(probs), 5)
    honest = decide(probs, classes, source_probs=sp, source_labels=sl, calibration={int(i): classes[truth[i]] for i in cal_items})
    # reviewers say the head's most confident calibration rows are wrong: the rule must publish less
    liar = {int(i): classes[truth[i]] for i in cal_items}
    top = cal_items[np.argsort(-conf[cal_items])[:6]]
    for i in top:
        liar[int(i)] = classes[1 - int(probs[i].argmax())]
    doubted = decide(probs, classes, source_probs=sp, source_labels=sl, calibration=liar)
    assert (doubted.published_level >= 0).sum() < (honest.published_level >= 0).sum()


def test_a_calibration_set_too_small_for_the_target_publishes_nothing():
    probs, _, conf, _ = _synthetic(seed=2)
    classes = ["A", "B"]
    sp, sl = _no_source()
    best = np.argsort(-conf)[:20]  # 20 rows, all the most confident, all right where the head is: still below 36
    calibration = {int(i): classes[probs[i].argmax()] for i in best}
    d = decide(probs, classes, source_probs=sp, source_labels=sl, calibration=calibration, min_precision=0.95)
    assert (d.published_level < 0).all()
    assert d.rule["calibration"]["n_published"] == 0


def test_calibration_rows_are_read_at_every_taxonomy_level():
    rng = np.random.default_rng(3)
    classes = ["a1", "a2", "b1", "b2"]
    taxonomy = [("a1", "A"), ("a2", "A"), ("b1", "B"), ("b2", "B")]
    n = 400
    truth = rng.integers(0, 4, n)
    # the head confuses siblings (a1/a2) half the time but never the parents
    pred = np.where(rng.random(n) < 0.5, truth, truth ^ 1)
    probs = np.full((n, 4), 0.02)
    probs[np.arange(n), pred] = 0.5
    probs[np.arange(n), pred ^ 1] = 0.46
    cal_items = np.arange(0, n, 4)
    sp, sl = np.zeros((0, 4)), np.zeros(0, np.int64)
    d = decide(probs, classes, source_probs=sp, source_labels=sl, taxonomy=taxonomy, require_agreement=False,
               calibration={int(i): classes[truth[i]] for i in cal_items})
    fine, coarse = d.levels[0], d.levels[1]
    assert fine["calibration"]["accuracy"] == pytest.approx((pred[cal_items] == truth[cal_items]).mean())
    assert coarse["calibration"]["accuracy"] == 1.0
    # 100 rows all right at the parent level support 95 %; the half-right fine level supports nothing
    assert fine["n_published"] == 0 and coarse["n_published"] > 0
    assert all(d.published[i] in ("A", "B") for i in np.flatnonzero(d.published_level >= 0))


def test_the_predict_stage_with_review_folds_0_holds_out_a_share_of_the_reviews_and_calibrates_on_them(tmp_path):
    import pandas as pd

    from prodkg.adaptation import MultiModal
    from prodkg.prediction.stage import PredictSettings, predict_stage

    rng = np.random.default_rng(0)
    centre = rng.normal(size=8)
    n_src, n_tgt = 20, 200
    y = np.array(["a", "b"] * ((n_src + n_tgt) // 2))
    x = np.where((y == "a")[:, None], centre, -centre) + 0.1 * rng.normal(size=(len(y), 8))
    domain = np.array(["shop"] * n_src + ["feed"] * n_tgt)
    ids = [f"p{i}" for i in range(len(y))]
    products = pd.DataFrame({"product_id": ids, "domain": domain, "category": y})
    feats = MultiModal(blocks={"image": x.astype(np.float32)}, present={"image": np.ones(len(y), bool)})
    reviewed = {ids[i]: str(y[i]) for i in range(n_src, n_src + 100)}
    settings = PredictSettings(method="source_only", baseline=None, epochs=5, progress=False, review_folds=0)
    out = predict_stage(products, feats, settings, ["shop"], ["feed"], [], tmp_path / "models", None, reviewed=reviewed)
    m = out.metrics["category"]
    # the reference draw: hashlib here, not the module
    held = sorted(p for p in reviewed if int(hashlib.sha256(p.encode()).hexdigest()[:16], 16) / 2**64 < 0.4)
    assert len(held) >= 36  # enough for the test to mean anything
    assert m["review_split"]["calibration_ids"] == held
    assert m["review_split"]["n_train"] == m["n_target_reviewed"] == 100 - len(held)
    cal = m["publication"]["calibration"]
    assert cal["n_rows"] == len(held) and "abstained" not in m["publication"]
    # neither the trained nor the calibration rows are evaluated
    assert m["evaluation"]["n_labelled"] == n_tgt - 100
    # the two blobs are easy: every calibration row right, and the rule publishes on their strength
    assert m["publication"]["levels"][0]["calibration"]["accuracy"] == 1.0
    assert cal["n_published"] >= 36 and m["publication"]["n_published"] > 0
    # fewer reviews than can support 95 %: all train, nothing held out, and the manifest says why
    few = {p: reviewed[p] for p in list(reviewed)[:30]}
    out = predict_stage(products, feats, settings, ["shop"], ["feed"], [], tmp_path / "models2", None, reviewed=few)
    split = out.metrics["category"]["review_split"]
    assert split["n_calibration"] == 0 and out.metrics["category"]["n_target_reviewed"] == 30 and "reason" in split


def _blobs(n_src=20, n_tgt=200, seed=0):
    import pandas as pd

    from prodkg.adaptation import MultiModal

    rng = np.random.default_rng(seed)
    centre = rng.normal(size=8)
    y = np.array(["a", "b"] * ((n_src + n_tgt) // 2))
    x = np.where((y == "a")[:, None], centre, -centre) + 0.1 * rng.normal(size=(len(y), 8))
    ids = [f"p{i}" for i in range(len(y))]
    products = pd.DataFrame({"product_id": ids, "domain": ["shop"] * n_src + ["feed"] * n_tgt, "category": y})
    return products, MultiModal(blocks={"image": x.astype(np.float32)}, present={"image": np.ones(len(y), bool)}), y, ids


@pytest.mark.slow
def test_cross_fitting_trains_on_every_review_and_calibrates_on_out_of_fold_predictions(tmp_path):
    from prodkg.prediction.stage import PredictSettings, predict_stage

    products, feats, y, ids = _blobs()
    # 100 reviews, every fifth one wrong (the other blob's label): a head that never saw an answer predicts the
    # blob, so out of fold exactly the 80 right answers agree with it
    reviewed = {ids[i]: str(y[i]) if (i - 20) % 5 else ("b" if y[i] == "a" else "a") for i in range(20, 120)}
    n_right = sum(reviewed[p] == y[int(p[1:])] for p in reviewed)
    assert n_right == 80
    settings = PredictSettings(method="source_only", baseline=None, epochs=5, progress=False)  # review_folds: the default
    k = settings.review_folds
    out = predict_stage(products, feats, settings, ["shop"], ["feed"], [], tmp_path / "models", None, reviewed=reviewed)
    m = out.metrics["category"]
    split = m["review_split"]
    assert split["mode"] == "cross-fit" and split["n_train"] == m["n_target_reviewed"] == 100 and split["n_calibration"] == 100
    # the folds, drawn here with hashlib: floor(k * first 8 bytes of sha256 / 2**64)
    folds = [int(k * int(hashlib.sha256(p.encode()).hexdigest()[:16], 16) / 2**64) for p in reviewed]
    assert split["fold_sizes"] == [folds.count(f) for f in range(k)]
    assert [r["n_rows"] for r in split["folds_right"]] == [folds.count(f) for f in range(k) if folds.count(f)]
    assert sum(r["n_right"] for r in split["folds_right"]) == n_right
    fine = m["publication"]["levels"][0]["calibration"]
    assert fine["n_rows"] == 100 and fine["n_right"] == n_right
    # 80 % right supports no bar at 95 %: nothing is published on these reviews' strength
    assert m["publication"]["n_published"] == 0
    assert m["evaluation"]["n_labelled"] == 200 - 100
    # each reviewed product's prediction is that of a head fitted here on the other folds' reviews only
    from prodkg.adaptation import TrainConfig
    from prodkg.prediction.heads import fit_task

    is_source = (products["domain"] == "shop").to_numpy()
    labels = [lab if src else None for lab, src in zip(products["category"], is_source)]
    rows = {p: int(p[1:]) for p in reviewed}
    fine = out.predictions[out.predictions["kind"] == "class"].set_index("product_id")  # a flat taxonomy: one level
    probs, raw = [], []  # each reference fold head's target probabilities over ("a", "b"); raw: before the reviews' spread
    for f in range(k):
        others = {rows[p]: lab for (p, lab), g in zip(reviewed.items(), folds) if g != f}
        head = fit_task("category", feats, labels, is_source, ~is_source, ids, TrainConfig(method="source_only", epochs=5), reviewed=others)
        ref = head.predictions.set_index("product_id")
        mine = [p for p, g in zip(reviewed, folds) if g == f]
        assert (fine.loc[mine, "value"] == ref.loc[mine, "value"]).all()
        np.testing.assert_allclose(fine.loc[mine, "confidence"], ref.loc[mine, "confidence"], rtol=1e-6)
        assert head.labels.classes == ["a", "b"]
        probs.append(np.exp(head.evidence["target_logp"]))
        logits = head.model.logits(feats.subset(np.arange(20, 220))) / head.temperature
        raw.append(np.exp(logits - logits.max(1, keepdims=True)) / np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True))
    # every product nobody reviewed is predicted by the fold heads together: their probabilities averaged
    mean = np.mean(probs, axis=0)
    target_ids = ids[20:]
    rest = [j for j, p in enumerate(target_ids) if p not in reviewed]
    assert len(rest) == 100
    assert list(fine.loc[[target_ids[j] for j in rest], "value"]) == [["a", "b"][k] for k in mean[rest].argmax(1)]
    np.testing.assert_allclose(fine.loc[[target_ids[j] for j in rest], "confidence"], mean[rest].max(1), rtol=1e-6)
    # the run saves the fold heads beside its head, for `prodkg predict`
    entry = out.models[0]
    assert [f["fold"] for f in entry["folds"]] == [f for f in range(k) if folds.count(f)]
    assert all(Path(f["path"]).is_dir() for f in entry["folds"])
    # and `prodkg predict` scores rows with their average too (rows it scores get no spread from the reviews)
    import json

    from prodkg.prediction.scoring import load_saved_model, score_features

    (tmp_path / "manifest.json").write_text(json.dumps({"models": out.models, "metrics": out.metrics}, default=str))
    saved = load_saved_model(tmp_path)
    scored, _ = score_features(saved, feats.subset(np.arange(20, 220)), target_ids)
    scored = scored[scored["kind"] == "class"].set_index("product_id").loc[target_ids]
    np.testing.assert_allclose(scored["confidence"], np.mean(raw, axis=0).max(1), rtol=1e-5)


def test_cross_fitting_publishes_on_right_reviews(tmp_path):
    from prodkg.prediction.stage import PredictSettings, predict_stage

    products, feats, y, ids = _blobs(seed=1)
    reviewed = {ids[i]: str(y[i]) for i in range(20, 120)}
    settings = PredictSettings(method="source_only", baseline=None, epochs=5, progress=False)
    out = predict_stage(products, feats, settings, ["shop"], ["feed"], [], tmp_path / "models", None, reviewed=reviewed)
    m = out.metrics["category"]
    assert m["publication"]["calibration"]["n_rows"] == 100 and m["publication"]["calibration"]["n_published_right"] >= 36
    assert m["publication"]["n_published"] > 0 and m["evaluation"]["precision"] == 1.0


def test_one_review_fold_is_refused():
    from prodkg.errors import ConfigError
    from prodkg.flows.config import RunConfig
    from prodkg.prediction.stage import PredictSettings

    with pytest.raises(ConfigError, match="review_folds: one fold cannot predict"):
        RunConfig(review_folds=1)
    with pytest.raises(ValueError, match="review_folds"):
        PredictSettings(review_folds=1).split_reviewed({0: "a"}, {0: "p0"})


def test_beside_a_source_hold_out_the_reviews_all_train():
    from prodkg.prediction.stage import PredictSettings, source_holdout_size

    # the stratified tenth fit_task holds out: classes of 10 give 1 each, a class of 2 gives none (counted by hand)
    labels = ["a"] * 10 + ["b"] * 10 + ["c"] * 2 + [None] * 5
    assert source_holdout_size(labels, np.array([True] * 22 + [False] * 5), seed=0) == 2
    ids = [f"p{i}" for i in range(200)]
    reviewed = {p: "a" for p in ids}
    train, cal, record = PredictSettings().split_reviewed(reviewed, {p: p for p in ids}, n_source_holdout=25)
    assert cal == {} and len(train) == 200 and "anchor the rule" in record["reason"]
    _, cal, _ = PredictSettings().split_reviewed(reviewed, {p: p for p in ids}, n_source_holdout=2)
    assert len(cal) > 36


def test_the_calibration_bar_stops_at_the_first_bar_that_fails():
    from scipy.stats import beta

    # 101 calibration rows by falling confidence: 40 right, 1 wrong, 60 right. The bound of the top 40 reaches 95 %
    # (40 of 40 right), the top 41 does not; the whole 101 would again (100 of 101), but a bar tested after a failure
    # is not a bar the bound holds for.
    n = 101
    classes = ["a", "b"]
    conf = np.linspace(0.99, 0.6, n)
    probs = np.stack([conf, 1 - conf], axis=1)
    truth = ["a"] * 40 + ["b"] + ["a"] * 60
    sp, sl = np.zeros((0, 2)), np.zeros(0, np.int64)
    confidence = 0.5 * (1 + math.erf(1 / math.sqrt(2)))

    def lower(k, m):  # one-sided Clopper-Pearson, straight from the beta quantile
        return beta.ppf(1 - confidence, k, m - k + 1)

    assert lower(40, 40) >= 0.95 > lower(40, 41) and lower(100, 101) >= 0.95
    d = decide(probs, classes, source_probs=sp, source_labels=sl, require_agreement=False, calibration=dict(enumerate(truth)))
    assert d.rule["calibration"]["n_published"] == 40 and d.rule["calibration"]["n_published_right"] == 40
    assert (d.published_level >= 0).sum() == 40
