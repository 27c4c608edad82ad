"""Publication rule pieces against independent references: analytic accuracies, hand-computed scores, obvious taxonomies."""

from __future__ import annotations

import numpy as np
import pytest

from prodkg.prediction.backoff import TaxonomyLevels
from prodkg.prediction.estimates import (agreement_estimate, atc_bootstrap_se, atc_estimate, atc_threshold, doc_estimate, match_accuracy,
                                         triplet_estimate)
from prodkg.prediction.metrics import confidence_ece, h_score, open_set_scores, risk_coverage, selective_metrics
from prodkg.prediction.publication import decide, evaluate, pick_estimator
from prodkg.prediction.thresholds import NEVER, threshold_for_precision
from prodkg.prediction.unknown import known_probability, otsu_threshold, prototype_similarity, score_unknown, unknown_threshold


def _calibrated_sample(rng, n, c, strength):
    """Logits with a planted class; the label is *drawn* from softmax(logits), so the probabilities are
    calibrated by construction and the expected accuracy is E[max p] exactly."""
    logits = rng.normal(size=(n, c))
    logits[np.arange(n), rng.integers(0, c, n)] += strength
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = (p.cumsum(1) > rng.random((n, 1))).argmax(1)
    return p, labels


def test_doc_recovers_the_accuracy_of_a_calibrated_shift():
    # source and target are calibrated but the target is harder: the true target accuracy is the
    # mean max probability of the target, known without its labels, and DoC is exact for it
    rng = np.random.default_rng(0)
    sp, sl = _calibrated_sample(rng, 20000, 5, 3.0)
    tp, tl = _calibrated_sample(rng, 20000, 5, 1.5)
    truth = tp.max(1).mean()
    assert (tp.argmax(1) == tl).mean() == pytest.approx(truth, abs=0.01)  # the construction is right
    assert doc_estimate(sp, sl, tp) == pytest.approx(truth, abs=0.02)


def _separable(rng, n, accuracy, c=4):
    """Right items score in [0.6, 1], wrong ones in [0.3, 0.5] (P(right | score) is 0 or 1 and the same in
    every domain): the share of right items is ``accuracy`` by construction."""
    right = rng.random(n) < accuracy
    top = np.where(right, rng.uniform(0.6, 1.0, n), rng.uniform(0.3, 0.5, n))
    p = np.column_stack([top] + [(1 - top) / (c - 1)] * (c - 1))
    labels = np.where(right, 0, 1)
    return p, labels


def test_atc_is_exact_when_the_score_separates_right_from_wrong():
    # the shift changes only how many items are right: ATC's threshold falls in the gap and counts them
    rng = np.random.default_rng(0)
    sp, sl = _separable(rng, 5000, 0.8)
    tp, tl = _separable(rng, 5000, 0.55)
    truth = (tp.argmax(1) == tl).mean()
    assert atc_estimate(sp, sl, tp, kind="mc") == pytest.approx(truth, abs=0.005)
    assert atc_estimate(sp, sl, tp, kind="ne") == pytest.approx(truth, abs=0.005)


def test_atc_without_shift_is_the_source_accuracy():
    rng = np.random.default_rng(3)
    sp, sl = _calibrated_sample(rng, 20000, 5, 2.0)
    tp, tl = _calibrated_sample(rng, 20000, 5, 2.0)
    assert atc_estimate(sp, sl, tp) == pytest.approx((tp.argmax(1) == tl).mean(), abs=0.02)


def test_atc_threshold_by_hand():
    # 5 items, 2 wrong: the threshold is the 3rd smallest score, 3 of 5 items at or above it
    assert atc_threshold(np.array([0.9, 0.2, 0.5, 0.7, 0.3]), np.array([1, 0, 1, 1, 0], bool)) == 0.5
    assert atc_threshold(np.array([0.1, 0.2]), np.array([0, 0], bool)) == float("inf")


def test_agreement_and_matched_confidence():
    assert agreement_estimate([0, 1, 2, 2], [0, 1, 1, 2]) == 0.75
    p = np.array([[0.9, 0.1], [0.6, 0.4], [0.8, 0.2]])
    q = match_accuracy(p, 0.7)
    assert q.max(1).mean() == pytest.approx(0.7, abs=1e-6)
    assert (q.argmax(1) == p.argmax(1)).all()


def test_matched_confidence_agrees_with_a_plain_bisection_and_stops_at_the_range_ends():
    # the reference: softmax(log p / tau) written out, tau found by 200 halvings of [e^-8, e^8] in log space
    def reference(p, accuracy):
        logp = np.log(p)

        def mean_top(log_tau):
            z = logp / np.exp(log_tau)
            e = np.exp(z - z.max(1, keepdims=True))
            return (e / e.sum(1, keepdims=True)).max(1).mean(), e / e.sum(1, keepdims=True)

        lo, hi = -8.0, 8.0
        for _ in range(200):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if mean_top(mid)[0] > accuracy else (lo, mid)
        return mean_top((lo + hi) / 2)[1]

    rng = np.random.default_rng(3)
    p = rng.dirichlet(np.full(7, 0.3), size=500)
    for accuracy in (0.3, 0.55, 0.8, 0.97):
        assert np.abs(match_accuracy(p, accuracy) - reference(p, accuracy)).max() < 1e-8
        assert match_accuracy(p, accuracy).max(1).mean() == pytest.approx(accuracy, abs=1e-9)
    # a target no temperature in the range reaches: the nearer end (nearly uniform, or each row's top class near 1)
    flat = match_accuracy(p, 1.0 / 7 + 1e-6)
    assert np.abs(flat - reference(p, 1.0 / 7 + 1e-6)).max() < 1e-8 and flat.max(1).mean() < 0.15
    sharp = match_accuracy(p, 0.999999)
    assert (sharp.argmax(1) == p.argmax(1)).all() and sharp.max(1).mean() > 0.99


def test_three_heads_with_independent_errors_give_each_ones_accuracy():
    """Simulated heads, wrong independently of each other and at random among 20 classes: the triplet recovers
    the strong head's accuracy, where its agreement with the weaker baseline alone reads that head's errors as its own."""
    rng = np.random.default_rng(3)
    n, k = 20_000, 20
    truth = rng.integers(k, size=n)

    def head(accuracy):
        pred = truth.copy()
        wrong = rng.random(n) > accuracy
        pred[wrong] = (truth[wrong] + rng.integers(1, k, wrong.sum())) % k
        return pred

    strong, baseline, third = head(0.99), head(0.90), head(0.75)
    true = float((strong == truth).mean())
    assert triplet_estimate(strong, baseline, third) == pytest.approx(true, abs=0.01)
    assert agreement_estimate(strong, baseline) < true - 0.07
    assert triplet_estimate(baseline, strong, third) == pytest.approx(float((baseline == truth).mean()), abs=0.01)
    assert np.isnan(triplet_estimate([0, 1], [1, 0], [0, 1]))  # the other two never agree: no estimate
    with pytest.raises(ValueError, match="differ in shape"):
        triplet_estimate([0, 1], [0, 1], [0])


def test_decide_reports_the_triplet_estimate_at_every_level():
    """A third classifier's class names reach the estimate through the taxonomy: at the parent level two classes of
    one parent are the same answer."""
    classes = ["a1", "a2", "b1"]
    taxonomy = [("A", None), ("B", None), ("a1", "A"), ("a2", "A"), ("b1", "B")]
    head = np.log(np.array([[0.9, 0.05, 0.05]] * 6 + [[0.05, 0.05, 0.9]] * 4))
    other = np.log(np.array([[0.9, 0.05, 0.05]] * 5 + [[0.05, 0.9, 0.05]] + [[0.05, 0.05, 0.9]] * 4))
    third = ["a1"] * 4 + ["a2"] * 2 + ["b1"] * 3 + [None]
    source = np.log(np.array([[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9]] * 10))
    d = decide(head, classes, source_probs=source, source_labels=np.array([0, 1, 2] * 10), taxonomy=taxonomy, other_probs=other,
               third=third, estimator="triplet", require_third=False)  # the estimate over every item, not those the third supports
    est = {lv["level"]: lv["estimates"]["triplet"] for lv in d.levels}
    h, o, t = head.argmax(1), other.argmax(1), np.array([{"a1": 0, "a2": 1, "b1": 2}.get(x, -1) for x in third])
    want = np.sqrt((h == o).mean() * (h == t).mean() / (o == t).mean())
    assert est[max(est)] == pytest.approx(want)
    parent = np.array([0, 0, 1])
    hp, op, tp = parent[h], parent[o], np.where(t >= 0, parent[np.maximum(t, 0)], -1)
    assert est[min(est)] == pytest.approx(np.sqrt((hp == op).mean() * (hp == tp).mean() / (op == tp).mean()))
    with pytest.raises(ValueError, match="third"):
        decide(head, classes, source_probs=source, source_labels=np.array([0, 1, 2] * 10), other_probs=other, estimator="triplet")


def test_threshold_for_precision_by_hand():
    conf = np.array([0.99, 0.95, 0.9, 0.8, 0.7])
    corr = np.array([1.0, 1.0, 0.7, 0.9, 0.2])
    # precision of the top-k: 1, 1, 0.9, 0.9, 0.76 -> the smallest threshold with >= 0.9 is 0.8
    assert threshold_for_precision(conf, corr, 0.9) == 0.8
    assert threshold_for_precision(conf, corr, 1.0) == 0.95
    assert threshold_for_precision(conf, corr, 0.9, min_items=5) == NEVER


def test_metrics_by_hand():
    m = selective_metrics(np.array([1, 1, 0, 0], bool), np.array([1, 0, 1, 0], bool))
    assert (m["accuracy"], m["precision"], m["coverage"]) == (0.5, 0.5, 0.5)
    # bins: 0.9 (acc 0.5) and 0.6 (acc 1): |0.5-0.9|/2 + |1-0.6|/2
    assert confidence_ece(np.array([0.9, 0.9, 0.6, 0.6]), np.array([1, 0, 1, 1], bool)) == pytest.approx(0.4)
    rc = risk_coverage(np.array([0.9, 0.8, 0.8, 0.1]), np.array([1, 0, 1, 0], bool))
    assert rc["coverage"].tolist() == [0.25, 0.75, 1.0]  # the tie at 0.8 is one step
    assert rc["risk"].tolist() == pytest.approx([0.0, 1 / 3, 0.5])
    assert h_score(0.8, 0.6) == pytest.approx(2 * 0.8 * 0.6 / 1.4)


def test_open_set_scores_by_hand():
    truth = ["a", "a", "b", "b", "x", "x", "y"]  # x and y are not in the source
    pred = ["a", None, "b", "b", None, "a", None]
    s = open_set_scores(truth, pred, ["a", "b"])
    # known: class a 1/2, class b 2/2 -> 0.75; unknown recall 2/3; H = 2*0.75*(2/3)/(0.75+2/3)
    assert s["known_accuracy"] == 0.75
    assert s["unknown_recall"] == pytest.approx(2 / 3)
    assert s["h_score"] == pytest.approx(2 * 0.75 * (2 / 3) / (0.75 + 2 / 3))


TAXONOMY = [("food", None), ("fruit", "food"), ("apple", "fruit"), ("pear", "fruit"), ("vegetable", "food"),
            ("leek", "vegetable"), ("milk", None)]  # milk: a root class without a finer level
CLASSES = ["apple", "leek", "milk", "pear"]


def test_taxonomy_levels_aggregate():
    tax = TaxonomyLevels(CLASSES, TAXONOMY)
    assert tax.n_levels == 3
    p, names = tax.aggregate(np.array([[0.4, 0.1, 0.1, 0.4]]), 1)
    assert dict(zip(names, p[0])) == pytest.approx({"fruit": 0.8, "milk": 0.1, "vegetable": 0.1})
    p, names = tax.aggregate(np.array([[0.4, 0.1, 0.1, 0.4]]), 0)
    assert dict(zip(names, p[0])) == pytest.approx({"food": 0.9, "milk": 0.1})
    assert TaxonomyLevels(CLASSES, []).n_levels == 1


def test_backoff_publishes_the_deepest_level_that_clears_the_bar():
    # apple vs pear is a coin toss but both are fruit: the fruit is published, not the apple
    probs = np.array([[0.48, 0.01, 0.01, 0.50],   # -> fruit (0.98) at level 1
                      [0.97, 0.01, 0.01, 0.01],   # -> apple at level 2
                      [0.30, 0.30, 0.10, 0.30],   # -> food (0.9) at level 0, nothing finer clears 0.85
                      [0.30, 0.30, 0.30, 0.10]])  # -> nothing clears
    d = decide(probs, CLASSES, source_probs=np.zeros((0, 4)), source_labels=np.zeros(0, int), taxonomy=TAXONOMY, threshold=0.85)
    assert d.published == ["fruit", "apple", "food", None]
    assert d.published_level.tolist() == [1, 2, 0, -1]
    ev = evaluate(d, CLASSES, TAXONOMY, ["pear", "apple", "leek", "milk"])
    assert ev["precision"] == 1.0 and ev["coverage"] == 0.75
    # a flat taxonomy abstains instead
    flat = decide(probs, CLASSES, source_probs=np.zeros((0, 4)), source_labels=np.zeros(0, int), threshold=0.85)
    assert flat.published == [None, "apple", None, None]
    # one row per item and distinct concept, every level a prediction with its confidence
    rows = d.predictions[d.predictions["item"] == 0]
    assert rows[["level", "value", "published"]].values.tolist() == [[2, "pear", False], [1, "fruit", True], [0, "food", False]]


def test_unknown_items_get_no_category_and_the_precision_rule_uses_the_estimate():
    rng = np.random.default_rng(1)
    sp, sl = _calibrated_sample(rng, 2000, 4, 4.0)
    tp, tl = _calibrated_sample(rng, 2000, 4, 2.5)
    unknown = np.zeros(len(tp), bool)
    unknown[:100] = True
    # DoC is exact on this calibrated construction (see above), so the rule gets the right estimate
    d = decide(tp, ["a", "b", "c", "d"], source_probs=sp, source_labels=sl, min_precision=0.95, unknown=unknown, estimator="doc")
    assert all(v is None for v in d.published[:100])
    ev = evaluate(d, ["a", "b", "c", "d"], [], ["abcd"[k] for k in tl])
    assert ev["precision"] >= 0.93  # the calibrated construction: the estimate is right, so is the rule
    assert 0.05 < ev["coverage"] < 0.95


def test_pick_estimator():
    assert pick_estimator(100, True, 5) == "atc"
    assert pick_estimator(100, False, 5) == "atc"
    assert pick_estimator(100, True, 0) == "agreement"
    assert pick_estimator(5, False, 0) == "none"
    # ATC's threshold moves more between hold-outs than the bias allowance: agreement, where there is a second head
    assert pick_estimator(100, True, 5, atc_se=0.05, max_atc_se=0.02) == "agreement"
    assert pick_estimator(100, True, 5, atc_se=0.01, max_atc_se=0.02) == "atc"
    assert pick_estimator(100, False, 5, atc_se=0.05, max_atc_se=0.02) == "atc"  # nothing better to turn to


def _hold_out(rng, m, c=4):
    """Held-out rows whose top probability is uniform on [0.3, 1] and right with probability equal to it."""
    top = rng.uniform(0.3, 1.0, m)
    p = np.column_stack([top] + [(1 - top) / (c - 1)] * (c - 1))
    labels = np.where(rng.random(m) < top, 0, 1)
    return p, labels


def test_atc_bootstrap_se_matches_the_spread_over_independent_hold_outs():
    # the reference is Monte Carlo, not the bootstrap: ATC computed on 400 hold-outs drawn independently from the
    # same population, against one fixed target; the bootstrap sees one hold-out at a time
    rng = np.random.default_rng(0)
    target, _ = _hold_out(rng, 2000)
    for m in (100, 1000):
        spread = np.std([atc_estimate(*_hold_out(rng, m), target) for _ in range(400)])
        boot = np.mean([atc_bootstrap_se(*_hold_out(rng, m), target) for _ in range(20)])
        assert boot == pytest.approx(spread, rel=0.3), m
    # a hundred rows spread ATC by points, a thousand by about a third as much (1 / sqrt(10))
    small = np.mean([atc_bootstrap_se(*_hold_out(rng, 100), target) for _ in range(20)])
    large = np.mean([atc_bootstrap_se(*_hold_out(rng, 1000), target) for _ in range(20)])
    assert small > 0.02 and large < small / 2.5
    # repeatable: the resamples come from a fixed seed
    sp, sl = _hold_out(np.random.default_rng(1), 100)
    assert atc_bootstrap_se(sp, sl, target) == atc_bootstrap_se(sp, sl, target)
    assert np.isnan(atc_bootstrap_se(sp[:1], sl[:1], target))
    keep = np.arange(len(target)) % 3 > 0  # scoring the whole target and keeping rows is keeping rows first
    assert atc_bootstrap_se(sp, sl, target, target_rows=keep) == atc_bootstrap_se(sp, sl, target[keep])


def test_decide_turns_to_agreement_when_atc_rests_on_a_noisy_hold_out():
    rng = np.random.default_rng(2)
    target, _ = _hold_out(rng, 1000)
    other = target[:, [0, 1, 2, 3]].copy()
    small = _hold_out(rng, 60)
    d = decide(target, list("abcd"), source_probs=small[0], source_labels=small[1], other_probs=other)
    assert d.levels[0]["estimator"] == "agreement"
    assert d.rule["atc_bootstrap_se"] > 0.02  # the reason, in the manifest
    large = _hold_out(rng, 20000)
    d = decide(target, list("abcd"), source_probs=large[0], source_labels=large[1], other_probs=other)
    assert d.levels[0]["estimator"] == "atc"
    assert d.rule["atc_bootstrap_se"] < 0.02
    assert d.levels[0]["atc_bootstrap_se"] == pytest.approx(d.rule["atc_bootstrap_se"])  # one level: the same rows


def test_prototype_similarity_and_unknown_flags():
    # two tight source classes on the axes; a target item on a third axis is unlike both
    rng = np.random.default_rng(0)
    e = np.eye(3)

    def around(v, n):
        x = v + 0.05 * rng.normal(size=(n, 3))
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    source = np.vstack([around(e[0], 30), around(e[1], 30)])
    labels = np.array([0] * 30 + [1] * 30)
    target = np.vstack([around(e[0], 3), around(e[2], 2)])
    sim, loo = prototype_similarity(source, labels, target)
    assert (sim[:3] > 0.9).all() and (sim[3:] < 0.3).all()
    assert len(loo) == 60 and loo.min() > 0.9
    flags = score_unknown(source, labels, target)
    assert flags.unknown.tolist() == [False, False, False, True, True]


def test_known_probability_is_the_posterior_of_the_upper_group():
    """Similarities drawn from two known normal groups: the fitted posterior matches Bayes' rule with the true
    parameters, rises with the similarity, and is 1 everywhere when the target shows a single group."""
    rng = np.random.default_rng(7)
    lo, hi = rng.normal(0.35, 0.05, 4000), rng.normal(0.65, 0.08, 6000)
    x = np.concatenate([lo, hi])
    bar, details = unknown_threshold(x, rng.normal(0.7, 0.05, 500))
    assert details["rule"].startswith("two groups")
    got = known_probability(x, bar, details)

    def density(v, mu, sd):
        return np.exp(-0.5 * ((v - mu) / sd) ** 2) / sd

    want = 0.6 * density(x, 0.65, 0.08) / (0.6 * density(x, 0.65, 0.08) + 0.4 * density(x, 0.35, 0.05))
    band = (x > 0.4) & (x < 0.6)  # where the groups overlap and the posterior is neither 0 nor 1
    assert np.abs(got - want)[band].max() < 0.06
    order = np.argsort(x)
    assert (np.diff(got[order]) >= 0).all()
    one = rng.normal(0.65, 0.08, 3000)
    bar1, details1 = unknown_threshold(one, rng.normal(0.7, 0.05, 500))
    assert not details1["rule"].startswith("two groups")
    assert (known_probability(one, bar1, details1) == 1).all()


def test_items_likely_of_an_unknown_class_are_held_back_by_their_known_probability():
    """Two heads that agree on every item with the same high confidence: by agreement all 100 are publishable. Weighed
    by a known-class probability of 0.3, the 20 items that look like a group of unknown products drop below the
    bar, and the 80 others stay published."""
    rng = np.random.default_rng(11)
    k, n = 5, 100
    z = rng.normal(size=(n, k))
    z[np.arange(n), rng.integers(k, size=n)] += 8.0
    lp = z - np.log(np.exp(z).sum(1, keepdims=True))
    source_z = rng.normal(size=(40, k))
    source_labels = rng.integers(k, size=40)
    source_z[np.arange(40), source_labels] += 8.0
    kp = np.ones(n)
    kp[80:] = 0.3
    common = dict(source_probs=source_z - np.log(np.exp(source_z).sum(1, keepdims=True)), source_labels=source_labels, other_probs=lp,
                  estimator="agreement")
    plain = decide(lp, [f"c{i}" for i in range(k)], **common)
    weighed = decide(lp, [f"c{i}" for i in range(k)], known_probability=kp, **common)
    assert (plain.published_level >= 0).all()
    assert (weighed.published_level[:80] >= 0).all() and (weighed.published_level[80:] >= 0).sum() <= 3
    assert not weighed.unknown.any()  # held back, not flagged


def test_requiring_the_third_classifier_holds_back_what_it_disputes():
    classes = ["a", "b"]
    lp = np.log(np.array([[0.99, 0.01]] * 60 + [[0.01, 0.99]] * 40))
    third = ["a"] * 50 + ["b"] * 10 + ["b"] * 40
    source = np.log(np.array([[0.99, 0.01], [0.01, 0.99]] * 20))
    d = decide(lp, classes, source_probs=source, source_labels=np.array([0, 1] * 20), other_probs=lp, third=third, require_third=True,
               estimator="agreement")
    assert (d.published_level[50:60] < 0).all() and not d.unknown.any()  # the ten the prototype disputes
    assert (d.published_level[:50] >= 0).all() and (d.published_level[60:] >= 0).all()


def test_otsu_splits_two_modes():
    v = np.r_[np.full(50, 0.2), np.full(50, 0.8)]
    assert 0.2 < otsu_threshold(v) <= 0.8


def test_items_the_two_heads_disagree_on_back_off_or_abstain():
    probs = np.array([[0.97, 0.01, 0.01, 0.01],   # both say apple
                      [0.97, 0.01, 0.01, 0.01],   # the other head says pear: fruit is still agreed on
                      [0.97, 0.01, 0.01, 0.01]])  # the other head says leek: no level agrees below food
    other = np.array([[0.9, 0.0, 0.05, 0.05], [0.1, 0.0, 0.0, 0.9], [0.1, 0.9, 0.0, 0.0]])
    kw = dict(source_probs=np.zeros((0, 4)), source_labels=np.zeros(0, int), taxonomy=TAXONOMY, other_probs=other,
              estimator="none", min_items=1)
    d = decide(probs, CLASSES, min_precision=0.9, z=0.0, **kw)  # three items: no margin, the estimate as it is
    assert d.published == ["apple", "fruit", "food"]
    # a fixed threshold is the old rule: no agreement asked
    assert decide(probs, CLASSES, threshold=0.9, **kw).published == ["apple", "apple", "apple"]


def test_a_hold_out_too_small_for_atc_and_no_second_head_publishes_nothing():
    """Grocery's manufacturer head: 4 held-out catalog rows, all right, and no baseline head. Nothing estimates target
    accuracy, and the source-calibrated confidence under shift is what the rule replaced (that head called 66
    cucumbers and zucchini "ARLA KO" at 0.97), so the default rule abstains and says why."""
    probs = np.array([[0.97, 0.01, 0.01, 0.01]] * 40)
    held_p, held_l = probs[:4], np.zeros(4, int)
    d = decide(probs, CLASSES, source_probs=held_p, source_labels=held_l, min_precision=0.95)
    assert d.published == [None] * 40 and d.levels[0]["estimator"] == "none"
    assert "4 labelled source row(s) held out" in d.rule["abstained"]
    # what lifts it: a hold-out large enough for ATC, a second head, a fixed threshold, or the estimator named
    big = decide(probs, CLASSES, source_probs=np.repeat(held_p, 5, 0), source_labels=np.zeros(20, int), min_precision=0.95)
    assert "abstained" not in big.rule and big.levels[0]["estimator"] == "atc"
    assert "abstained" not in decide(probs, CLASSES, source_probs=held_p, source_labels=held_l, other_probs=probs).rule
    assert decide(probs, CLASSES, source_probs=held_p, source_labels=held_l, threshold=0.9).published == ["apple"] * 40
    named = decide(probs, CLASSES, source_probs=held_p, source_labels=held_l, estimator="none", min_precision=0.9, z=0.0)
    assert "abstained" not in named.rule and named.published.count("apple") > 0


def test_log_probabilities_keep_the_order_of_predictions_that_round_to_one():
    # margins of 40-80 nats: every probability is 1.0 in float64, the log-probabilities still differ
    margins = np.linspace(40.0, 80.0, 20)
    from prodkg.prediction.estimates import log_softmax

    logp = log_softmax(np.column_stack([margins, np.zeros(20), np.zeros(20)]))
    assert (np.exp(logp).max(1) == 1.0).all()
    np.testing.assert_allclose(logp[:, 0], -2 * np.exp(-margins), rtol=1e-12)  # log(1 - 2e^-m) to first order
    # summed over a concept of the top class and another one, the order survives too
    tax = TaxonomyLevels(["a", "b", "c"], [("ab", None), ("a", "ab"), ("b", "ab"), ("c", None)])
    agg, names = tax.aggregate_log(logp, 0)
    np.testing.assert_allclose(agg[:, names.index("ab")], -np.exp(-margins), rtol=1e-12)
    # with a correctness estimate of 0.5 for the 10 least and 1.0 for the 10 most confident, only the top half
    # reaches 0.99: the rule can tell them apart only by their log-probabilities
    from prodkg.prediction.estimates import score

    s = score(logp, "mc")
    assert (np.diff(s) > 0).all()
    t = threshold_for_precision(s, np.r_[np.full(10, 0.5), np.ones(10)], 0.99)
    assert t == s[10]


def test_a_target_with_two_groups_splits_them_and_a_unimodal_one_keeps_the_source_bar():
    from prodkg.prediction.unknown import separability, target_bar

    rng = np.random.default_rng(0)
    one = rng.normal(0.7, 0.05, 4000)
    # a normal distribution split at its mean: between-group variance over total is 2/pi
    assert separability(one, 0.7) == pytest.approx(2 / np.pi, abs=0.02)
    bar, details = target_bar(one, 0.5)
    assert bar == 0.5 and details["separability"] < 0.72
    two = np.r_[rng.normal(0.8, 0.03, 300), rng.normal(0.3, 0.03, 100)]
    bar, details = target_bar(two, 0.1)
    assert 0.4 < bar < 0.7 and (two < bar).sum() == 100


def test_the_source_reliability_curve_keeps_a_ceiling_a_temperature_would_miss():
    # held-out source rows: above 0.95 confidence only 90 % are right (ambiguous labels), below it 60 %
    from prodkg.prediction.estimates import match_accuracy_reliable, source_reliability

    rng = np.random.default_rng(0)
    n = 4000
    top = np.where(rng.random(n) < 0.5, 0.99, 0.7)
    right = rng.random(n) < np.where(top > 0.95, 0.9, 0.6)
    probs = np.column_stack([top, 1 - top])
    labels = np.where(right, 0, 1)
    rel = source_reliability(probs, labels)
    assert rel(np.log([0.99]))[0] == pytest.approx(0.9, abs=0.02)
    assert rel(np.log([0.7]))[0] == pytest.approx(0.6, abs=0.03)
    # the same target at the same accuracy: the estimates follow the curve, never above its ceiling
    c = match_accuracy_reliable(probs, 0.75, rel)
    assert c.mean() == pytest.approx(0.75, abs=0.01) and c.max() <= 0.92
    assert source_reliability(probs[:10], labels[:10]) is None  # too few rows


def test_precision_lower_bound_by_hand():
    from prodkg.prediction.thresholds import precision_lower_bound

    # items right with probability 1.0, 0.9, 0.8 (in confidence order): the top two have mean 0.95 and
    # Poisson-binomial variance 0 + 0.09, so the standard error of their precision is sqrt(0.09) / 2 = 0.15
    conf = np.array([0.9, 0.8, 0.7])
    corr = np.array([1.0, 0.9, 0.8])
    assert precision_lower_bound(0.95, 0.09, 2, z=1.0) == pytest.approx(0.80)
    # all three: mean 0.9, variance 0.09 + 0.16 = 0.25 -> se sqrt(0.25) / 3
    assert precision_lower_bound(0.9, 0.25, 3, z=2.0) == pytest.approx(0.9 - 2 * 0.5 / 3)
    assert threshold_for_precision(conf, corr, 0.85, z=1.0) == 0.9  # only the sure item's bound (1.0) reaches 0.85
    assert threshold_for_precision(conf, corr, 0.85) == 0.7  # without the bound, all three (0.9)


def test_a_broader_level_pools_its_target_with_the_facts_published_before():
    # 10 facts published at a finer level, right with 0.99 each; the broader level's candidates 0.9, 0.9, 0.8, 0.7:
    # pooled means (9.9 + 0.9) / 11 = 0.982, (9.9 + 1.8) / 12 = 0.975, (9.9 + 2.6) / 13 = 0.962, (9.9 + 3.3) / 14 = 0.943
    conf = np.array([0.95, 0.94, 0.8, 0.7])
    corr = np.array([0.9, 0.9, 0.8, 0.7])
    assert threshold_for_precision(conf, corr, 0.95, already=(9.9, 10 * 0.99 * 0.01, 10)) == 0.8
    assert threshold_for_precision(conf, corr, 0.95) == NEVER  # on their own not one reaches 0.95
    # with one standard error the first alone is 0.982 - sqrt(0.099 + 0.09) / 11 = 0.942: none; with 40 facts
    # before (39.6 right, variance 0.396) the first two are 41.4 / 42 - sqrt(0.576) / 42 = 0.9676, the third
    # 42.2 / 43 - sqrt(0.736) / 43 = 0.9614, the fourth 42.9 / 44 - sqrt(0.946) / 44 = 0.9529: all four
    assert threshold_for_precision(conf, corr, 0.95, z=1.0, already=(9.9, 0.099, 10)) == NEVER
    assert threshold_for_precision(conf, corr, 0.95, z=1.0, already=(39.6, 0.396, 40)) == 0.7


def test_a_small_published_set_needs_a_wider_margin():
    # every item right with probability 0.96: the bound is 0.96 - sqrt(0.96 * 0.04 / n), >= 0.95 from n = 384 on
    for n, expected in ((300, NEVER), (400, 1.0 / 400)):
        conf = np.arange(n, 0, -1) / n
        corr = np.full(n, 0.96)
        assert threshold_for_precision(conf, corr, 0.95, z=1.0) == expected
        assert threshold_for_precision(conf, corr, 0.95) == 1.0 / n  # the estimate alone publishes all of them


def test_estimate_standard_error_by_hand():
    from prodkg.prediction.publication import estimate_standard_error

    src = np.array([True] * 40 + [False] * 10)
    # ATC: 0.9 of 100 target items (0.09 / 100) and a source hold-out 40 of 50 right (0.16 / 50)
    assert estimate_standard_error("atc", 0.9, n_target=100, source_correct=src) == pytest.approx(np.sqrt(0.0009 + 0.0032))
    # agreement counts target items only
    assert estimate_standard_error("agreement", 0.9, n_target=100, source_correct=src) == pytest.approx(0.03)
    assert estimate_standard_error("none", 0.9, n_target=100, source_correct=src) == 0.0
    # ATC with its bootstrap error from the hold-out: that replaces the hold-out's binomial term
    assert estimate_standard_error("atc", 0.9, n_target=100, source_correct=src, atc_se=0.04) == pytest.approx(np.sqrt(0.0009 + 0.0016))


def test_the_reliability_curve_never_reads_certainty_from_a_clean_step():
    from prodkg.prediction.estimates import source_reliability

    # five rows at 0.6 (two right), five at 0.9 (all right): the isotonic steps are 2/5 and 5/5; Laplace's rule
    # reads them as 3/7 and 6/7
    conf = np.array([0.6] * 5 + [0.9] * 5)
    probs = np.column_stack([conf, 1 - conf])
    labels = np.array([0, 0, 1, 1, 1] + [0] * 5)
    rel = source_reliability(probs, labels, min_rows=10, min_errors=3)
    assert rel(np.log([0.6, 0.9])) == pytest.approx([3 / 7, 6 / 7])
    raw = source_reliability(probs, labels, min_rows=10, min_errors=3, shrink=False)
    assert raw(np.log([0.6, 0.9])) == pytest.approx([0.4, 1.0])


def test_class_error_ratios_by_hand():
    from prodkg.prediction.estimates import apply_class_ratios, class_error_ratios

    predicted = np.array([0, 0, 0, 1, 1])
    # class 0: 2 wrong where 0.6 were expected; class 1: none where 1.0 was; prior 1 expected error
    r = class_error_ratios(predicted, np.array([1, 1, 0, 0, 0]), np.array([0.2, 0.2, 0.2, 0.5, 0.5]), 3, prior=1.0)
    assert r == pytest.approx([3 / 1.6, 1 / 2, 1.0])  # a class nothing was predicted as keeps ratio 1
    # chances of being wrong 0.2 and 0.5 scaled by 1.875 and 0.5 (0.375, 0.25: 1.625 in all), then back to 1.6
    c = apply_class_ratios(np.array([0.8, 0.8, 0.8, 0.5, 0.5]), predicted, r)
    assert c == pytest.approx(1 - np.array([0.375] * 3 + [0.25] * 2) * 1.6 / 1.625)
    assert c.mean() == pytest.approx(0.68)


def test_the_rule_sets_the_items_from_the_lower_bound_of_the_estimate():
    # 100 target items, the second head agrees on 90: agreement 0.9 with sampling error sqrt(0.09 / 100) = 0.03;
    # with 0.04 more for the estimate's bias the bound is 0.9 - hypot(0.03, 0.04) = 0.85
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4) * 0.3, size=100)
    other = probs.copy()
    other[:10] = np.roll(probs[:10], 1, axis=1)  # a different top class for the first ten (ties aside)
    assert (other.argmax(1) == probs.argmax(1)).sum() == 90
    kw = dict(source_probs=np.zeros((0, 4)), source_labels=np.zeros(0, int), other_probs=other, estimator="agreement")
    d = decide(probs, ["a", "b", "c", "d"], z=1.0, estimate_error=0.04, class_evidence="none", **kw)
    lv = d.levels[0]
    assert lv["estimated_accuracy"] == pytest.approx(0.9) and lv["estimate_se"] == pytest.approx(0.03)
    assert lv["accuracy_bound"] == pytest.approx(0.85)
    corr = d.predictions["correctness"].to_numpy()
    assert corr.mean() == pytest.approx(0.85, abs=1e-3)
    # the estimate at its word sets the mean at 0.9 and publishes at least as much
    plain = decide(probs, ["a", "b", "c", "d"], z=0.0, class_evidence="none", **kw)
    assert plain.predictions["correctness"].mean() == pytest.approx(0.9, abs=1e-3)
    assert (plain.published_level >= 0).sum() >= (d.published_level >= 0).sum()


def test_a_class_the_source_finds_wrong_more_often_gets_a_higher_bar():
    # held-out source rows: both classes predicted at the same confidences, class a wrong on a quarter, b never
    rng = np.random.default_rng(3)
    m = 400
    conf = rng.uniform(0.7, 0.999, m)
    pred = np.repeat([0, 1], m // 2)
    probs = np.where(pred[:, None] == np.arange(2), conf[:, None], 1 - conf[:, None])
    labels = pred.copy()
    labels[np.flatnonzero(pred == 0)[::4]] = 1
    # the target: the same mixture
    t_conf = rng.uniform(0.7, 0.999, 600)
    t_pred = np.repeat([0, 1], 300)
    t_probs = np.where(t_pred[:, None] == np.arange(2), t_conf[:, None], 1 - t_conf[:, None])
    kw = dict(source_probs=probs, source_labels=labels, estimator="atc", min_precision=0.9, z=0.0)
    # one shared estimate: 87.5 % right at every confidence, nothing reaches 90 %
    shared = decide(t_probs, ["a", "b"], class_evidence="none", **kw)
    assert (shared.published_level < 0).all()
    # per class (prior 5): a's ratio (50 + 5) / (25 + 5), b's 5 / 30 -> wrong 22.9 % and 2.1 %: all of b is
    # published first, then as much of a as keeps the mean at 0.9 -- 300 * 0.979 + x * 0.771 >= 0.9 (300 + x),
    # x <= 184 of a's 300
    per_class = decide(t_probs, ["a", "b"], class_evidence="source", **kw)
    share = lambda d, k: (d.published_level[t_pred == k] >= 0).mean()
    assert share(per_class, 1) == 1.0
    assert 0.45 < share(per_class, 0) < 0.75
    bars = per_class.levels[0]["class_thresholds"]
    assert bars["a"] > bars["b"]
    assert per_class.levels[0]["estimated_precision"] >= 0.9


def test_with_no_labelled_hold_out_the_default_rule_publishes_nothing():
    """One labelled product per class leaves no source row to check any estimate against: two heads trained on the
    same few rows agree on their mistakes too (grocery), so the default rule abstains and says why."""
    probs = np.array([[0.97, 0.01, 0.01, 0.01]] * 40)
    other = probs.copy()  # the baseline head agrees everywhere: an agreement estimate of 100 %
    d = decide(probs, CLASSES, source_probs=np.zeros((0, 4)), source_labels=np.zeros(0, int), taxonomy=TAXONOMY,
               other_probs=other, min_precision=0.95)
    assert d.published == [None] * 40
    assert "held out" in d.rule["abstained"]
    # one labelled hold-out row is enough to take the estimate (it is then held to its margins as usual)
    held = decide(probs, CLASSES, source_probs=probs[:1], source_labels=np.array([0]), taxonomy=TAXONOMY, other_probs=other,
                  min_precision=0.95)
    assert "abstained" not in held.rule and held.published.count("apple") == 40
    # a fixed threshold is the user's call
    assert decide(probs, CLASSES, source_probs=np.zeros((0, 4)), source_labels=np.zeros(0, int), threshold=0.9).published == ["apple"] * 40


def test_run_summary_says_why_atc_was_set_aside():
    from prodkg.flows.cli import publication_lines

    row = {"n_published": 80, "coverage": 0.8, "estimated_precision": 0.97, "estimated_accuracy": 0.93, "estimator": "agreement",
           "atc_bootstrap_se": 0.047, "estimate_error": 0.02}
    text = "\n".join(publication_lines({"min_precision": 0.95, "published": {"category": row}}))
    assert "(agreement; ATC set aside, it moved 4.7 points between resamples of the source hold-out)" in text
    row.update(estimator="atc", atc_bootstrap_se=0.009)  # ATC kept: nothing to explain
    text = "\n".join(publication_lines({"min_precision": 0.95, "published": {"category": row}}))
    assert "(atc)" in text and "set aside" not in text
