"""Scoring new rows with a saved model: the recorded publication rule and the saved unknown prototypes, replayed on
the rows the run decided, give the run's own decisions (prediction.publication.decide, prediction.unknown are the reference)."""

from __future__ import annotations

import numpy as np
import pytest

from prodkg.prediction.publication import decide
from prodkg.prediction.scoring import SavedHead, recorded_decision
from prodkg.prediction.unknown import class_prototypes, fused_unit_features, nearest_prototype_similarity, prototype_similarity, subset

CLASSES = ["gala", "fuji", "cheddar", "brie"]
TAXONOMY = [("apple", "fruit"), ("gala", "apple"), ("fuji", "apple"), ("fruit", None), ("cheese", None),
            ("cheddar", "cheese"), ("brie", "cheese")]


def _logp(rng, n, strength):
    logits = rng.normal(size=(n, len(CLASSES)))
    logits[np.arange(n), rng.integers(0, len(CLASSES), n)] += strength
    return logits - np.log(np.exp(logits).sum(1, keepdims=True))


def _source_and_target(rng, n_target):
    """Held-out source log-probabilities with 15 % of their labels redrawn (so ATC drives the estimate), and a target."""
    source, target = _logp(rng, 300, 4.0), _logp(rng, n_target, 3.0)
    labels = source.argmax(1)
    flip = rng.random(len(labels)) < 0.15
    labels[flip] = rng.integers(0, len(CLASSES), flip.sum())
    return source, labels, target


@pytest.mark.parametrize("with_other", [True, False])
def test_the_recorded_min_precision_rule_replays_the_runs_decision(with_other):
    """One shared estimate per level, the levels in turn (``specificity=None``): the run's bar is a confidence
    threshold, replayed exactly."""
    rng = np.random.default_rng(4)
    source, target = _logp(rng, 300, 4.0), _logp(rng, 200, 3.0)
    labels = source.argmax(1)
    flip = rng.random(len(labels)) < 0.15  # some held-out errors, so ATC drives the estimate
    labels[flip] = rng.integers(0, len(CLASSES), flip.sum())
    other = target + rng.normal(scale=1.0, size=target.shape) if with_other else None
    unknown = rng.random(len(target)) < 0.05
    run = decide(target, CLASSES, source_probs=source, source_labels=labels, taxonomy=TAXONOMY, other_probs=other, unknown=unknown,
                 min_precision=0.8, class_evidence="none", specificity=None)
    published = run.summary()["levels"]
    assert run.n_levels == 3 and sum(lv["n_published"] > 0 for lv in published) >= 2  # fine and broader levels both publish
    head = SavedHead(task="category", model=None, classes=CLASSES, temperature=1.0, model_id="m", publication=run.summary(),
                     taxonomy=TAXONOMY)
    replay = recorded_decision(head, target, other_logp=other, unknown=unknown)
    assert replay.published == run.published
    assert replay.published_level.tolist() == run.published_level.tolist()
    cols = ["item", "level", "value", "published"]
    assert replay.predictions[cols].equals(run.predictions[cols])
    np.testing.assert_allclose(replay.predictions["confidence"], run.predictions["confidence"])
    if with_other:  # the agreement rule without the baseline head publishes nothing rather than more
        assert (recorded_decision(head, target, unknown=unknown).published_level < 0).all()


def test_per_class_bars_replay_conservatively():
    """With per-class error ratios the run ranks items by estimated correctness, which reads the whole distribution:
    new rows are held to one confidence bar per concept, above which the run published every item of that concept.
    On the run's own rows the replay then publishes the run's fact, a broader concept above it, or nothing; never
    a fact the run did not vouch for."""
    source, labels, target = _source_and_target(np.random.default_rng(4), 400)
    run = decide(target, CLASSES, source_probs=source, source_labels=labels, taxonomy=TAXONOMY, min_precision=0.8, class_evidence="source",
                 specificity=None)
    bars = [lv["class_thresholds"] for lv in run.summary()["levels"]]
    assert any(bars)  # the per-class rule was in force
    head = SavedHead(task="category", model=None, classes=CLASSES, temperature=1.0, model_id="m", publication=run.summary(),
                     taxonomy=TAXONOMY)
    replay = recorded_decision(head, target)
    parent = dict(TAXONOMY)

    def ancestors(concept):
        out = []
        while concept is not None:
            out.append(concept)
            concept = parent.get(concept)
        return out

    for mine, theirs in zip(replay.published, run.published, strict=True):
        assert mine is None or (theirs is not None and mine in ancestors(theirs)), (mine, theirs)
    same = sum(m == t for m, t in zip(replay.published, run.published, strict=True) if t is not None)
    assert same >= 0.8 * sum(t is not None for t in run.published)  # conservative, not empty
    # the bar per concept, checked by hand at the level that published (nothing reached the bar at the finest):
    # level-1 probabilities summed from the fine ones, items of each predicted concept by falling confidence,
    # the bar is the lowest confidence above the first item the run left out
    level1 = run.summary()["levels"][1]
    assert level1["level"] == 1 and level1["class_thresholds"]
    probs = np.exp(target)
    agg = {"apple": probs[:, 0] + probs[:, 1], "cheddar": probs[:, 2], "brie": probs[:, 3]}
    names = list(agg)
    stacked = np.stack([agg[c] for c in names], axis=1)
    pred, conf = stacked.argmax(1), stacked.max(1)
    published = run.published_level == 1
    expected = {}
    for k, cls in enumerate(names):
        idx = np.flatnonzero(pred == k)
        idx = idx[np.argsort(-conf[idx], kind="stable")]
        kept = []
        for i in idx:
            if not published[i]:
                break
            kept.append(i)
        if kept:
            expected[cls] = conf[kept].min()
    assert level1["class_thresholds"].keys() == expected.keys()
    for cls, bar in level1["class_thresholds"].items():
        assert bar == pytest.approx(expected[cls], rel=1e-9)


def test_a_fixed_threshold_is_the_same_rule_as_the_runs():
    rng = np.random.default_rng(1)
    target = _logp(rng, 150, 1.5)
    run = decide(target, CLASSES, source_probs=np.zeros((0, 4)), source_labels=np.zeros(0, int), taxonomy=TAXONOMY, threshold=0.8)
    for recorded, given in ((run.summary(), None), (None, 0.8)):
        head = SavedHead(task="category", model=None, classes=CLASSES, temperature=1.0, model_id="m", publication=recorded,
                         taxonomy=TAXONOMY)
        assert recorded_decision(head, target, threshold=given).published == run.published
    head = SavedHead(task="category", model=None, classes=CLASSES, temperature=1.0, model_id="m")
    assert all(p is None for p in recorded_decision(head, target).published)  # no rule recorded: nothing published


def test_saved_prototypes_give_the_runs_similarities():
    rng = np.random.default_rng(2)
    n = 120
    blocks = {"image": rng.normal(size=(n, 16)), "text": rng.normal(size=(n, 8))}
    present = {"image": rng.random(n) > 0.2, "text": rng.random(n) > 0.1}
    unit = fused_unit_features(blocks, present)
    src, tgt = np.arange(80), np.arange(80, n)
    labels = np.array(["a", "b", "c", "d"])[rng.integers(0, 4, 80)]
    expected, _ = prototype_similarity(subset(unit, src), labels, subset(unit, tgt))
    got = nearest_prototype_similarity(class_prototypes(subset(unit, src), labels), subset(unit, tgt))
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    # and the same nearest class as the run's scores, by name through the sorted classes the file keeps
    from prodkg.prediction.unknown import nearest_prototype, score_unknown

    which = nearest_prototype(class_prototypes(subset(unit, src), labels), subset(unit, tgt))[1]
    assert np.array(sorted(set(labels)))[which].tolist() == score_unknown(subset(unit, src), labels, subset(unit, tgt)).nearest.tolist()


def test_the_publish_floor_survives_the_prototypes_file_and_holds_new_rows_back(tmp_path):
    """A run whose rule weighed known-class probabilities saves the least similarity it published at; the replay for
    new rows publishes nothing below it (nor flags it unknown), and a file without a floor blocks nothing."""
    from prodkg.prediction.stage import load_prototypes, save_prototypes

    protos = {"image": (np.eye(3), np.ones(3, bool))}
    save_prototypes(tmp_path / "p.npz", protos, 0.2, publish_floor=0.55, classes=["a", "b", "c"])
    save_prototypes(tmp_path / "q.npz", protos, 0.2)
    assert load_prototypes(tmp_path / "p.npz")[1:] == (0.2, 0.55, ["a", "b", "c"])
    assert load_prototypes(tmp_path / "q.npz")[2:] == (float("-inf"), None)
    source, labels, target = _source_and_target(np.random.default_rng(4), 200)
    run = decide(target, CLASSES, source_probs=source, source_labels=labels, taxonomy=TAXONOMY, min_precision=0.8, class_evidence="none",
                 specificity=None)
    head = SavedHead(task="category", model=None, classes=CLASSES, temperature=1.0, model_id="m", publication=run.summary(),
                     taxonomy=TAXONOMY)
    blocked = np.arange(200) % 5 == 0
    replay = recorded_decision(head, target, blocked=blocked)
    free = recorded_decision(head, target)
    assert (free.published_level >= 0).sum() > 10
    assert (replay.published_level[blocked] < 0).all() and not replay.unknown.any()
    assert replay.published_level[~blocked].tolist() == free.published_level[~blocked].tolist()
