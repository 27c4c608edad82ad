"""The rule lets go of the target's (N, C) log-probabilities after its first pass, and evaluates without them."""

from __future__ import annotations

import dataclasses
import json
import weakref

import numpy as np

from prodkg.prediction import publication
from prodkg.prediction.publication import decide, evaluate

CLASSES = sorted(f"aisle{i}" for i in range(12))
TAXONOMY = [(c, f"dept{i % 3}") for i, c in enumerate(CLASSES)] + [(f"dept{j}", None) for j in range(3)]


def _logp(rng, n):
    z = rng.normal(size=(n, len(CLASSES))) * 3
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def _problem(seed=0, n=400, m=300):
    rng = np.random.default_rng(seed)
    target, source = _logp(rng, n), _logp(rng, m)
    labels = source.argmax(1)
    flip = rng.random(m) < 0.2
    labels[flip] = rng.integers(0, len(CLASSES), flip.sum())
    truth = [CLASSES[i] if rng.random() < 0.7 else CLASSES[rng.integers(0, len(CLASSES))] for i in target.argmax(1)]
    return target, source, labels, truth


def test_the_target_log_probabilities_are_let_go_of_before_the_allocation(monkeypatch):
    target, source, labels, _ = _problem()
    alive = []
    allocate = publication._allocate_levels

    def spy(*args, **kwargs):
        alive.append(ref() is not None)
        return allocate(*args, **kwargs)

    monkeypatch.setattr(publication, "_allocate_levels", spy)
    evidence = {"target_logp": target}
    ref = weakref.ref(target)
    del target
    decision = decide(evidence.pop("target_logp"), CLASSES, source_probs=source, source_labels=labels, taxonomy=TAXONOMY)
    assert alive == [False] and ref() is None
    assert decision.n_levels == 2 and len(decision.level_conf_log) == 2


def test_evaluation_from_the_rule_equals_evaluation_from_the_log_probabilities():
    target, source, labels, truth = _problem(seed=3)
    decision = decide(target, CLASSES, source_probs=source, source_labels=labels, taxonomy=TAXONOMY, min_precision=0.6)
    from_rule = evaluate(decision, CLASSES, TAXONOMY, truth)
    from_probs = evaluate(dataclasses.replace(decision, level_conf_log=[]), CLASSES, TAXONOMY, truth, target_probs=target)
    assert json.dumps(from_rule, sort_keys=True, default=str) == json.dumps(from_probs, sort_keys=True, default=str)
    assert from_rule["n_published"] > 0 and np.isfinite(from_rule["target_ece"]) and from_rule["risk_coverage"]["coverage"]
