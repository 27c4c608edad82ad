"""Label-free selectors on constructed cases whose right answer is known, and ``method="auto"`` end to end."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax
from scipy.stats import entropy as scipy_entropy

from prodkg.adaptation import SELECTORS, AdaptedModel, TrainConfig, train
from prodkg.adaptation.selection import (
    DEFAULT_CANDIDATES,
    Evidence,
    auto_train,
    candidate_configs,
    candidate_label,
    deep_embedded_validation,
    information_maximization,
    neg_entropy,
    snd,
    soft_neighborhood_density,
    stratified_holdout,
)
from prodkg.errors import ConfigError


def _evidence(target_logits: np.ndarray, **kw: np.ndarray) -> Evidence:
    n = len(target_logits)
    base = dict(val_logits=np.zeros((2, target_logits.shape[1])), y_val=np.zeros(2, dtype=np.int64),
                val_embed=np.zeros((2, 2)), target_logits=target_logits, target_embed=np.zeros((n, 2)),
                train_embed=np.zeros((2, 2)))
    base.update(kw)
    return Evidence(**base)


def test_entropy_and_im_match_hand_values_and_scipy() -> None:
    # hand values: equal logits are the uniform distribution, entropy log 3; one dominant logit is nearly certain
    uniform = np.zeros((4, 3))
    certain = np.array([[60.0, 0.0, 0.0], [0.0, 60.0, 0.0], [0.0, 0.0, 60.0]])
    assert neg_entropy(_evidence(uniform)) == pytest.approx(-np.log(3), rel=1e-9)
    assert neg_entropy(_evidence(certain)) == pytest.approx(0.0, abs=1e-9)
    # IM = H(mean p) - mean H(p): uniform rows carry no information (log 3 - log 3); confident rows spread over
    # the three classes carry all of it (log 3 - 0); confident rows all on one class carry none (0 - 0)
    assert information_maximization(_evidence(uniform)) == pytest.approx(0.0, abs=1e-9)
    assert information_maximization(_evidence(certain)) == pytest.approx(np.log(3), rel=1e-9)
    assert information_maximization(_evidence(certain[[0, 0, 0]])) == pytest.approx(0.0, abs=1e-9)
    # any logits, against scipy's entropy of the softmax probabilities
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, -1.0, 3.0]])
    p = softmax(logits, axis=1)
    ev = _evidence(logits)
    assert neg_entropy(ev) == pytest.approx(-scipy_entropy(p, axis=1).mean(), rel=1e-9)
    assert information_maximization(ev) == pytest.approx(scipy_entropy(p.mean(0)) - scipy_entropy(p, axis=1).mean(), rel=1e-9)


def test_im_prefers_confident_balanced_predictions_to_a_collapse() -> None:
    confident_balanced = np.eye(3)[np.arange(30) % 3] * 8
    collapsed = np.eye(3)[np.zeros(30, dtype=int)] * 8
    assert information_maximization(_evidence(confident_balanced)) > information_maximization(_evidence(collapsed))
    # entropy alone cannot tell them apart: both are equally confident
    assert neg_entropy(_evidence(confident_balanced)) == pytest.approx(neg_entropy(_evidence(collapsed)))


def test_snd_matches_a_loop_and_prefers_clustered_predictions() -> None:
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(4), size=6)
    f = p / np.linalg.norm(p, axis=1, keepdims=True)
    total = 0.0
    for i in range(6):
        sims = np.array([f[i] @ f[j] / 0.05 for j in range(6) if j != i])
        q = np.exp(sims - sims.max())
        q /= q.sum()
        total += -(q * np.log(q)).sum()
    assert soft_neighborhood_density(p) == pytest.approx(total / 6, rel=1e-9)
    # hand values: with two rows each has a single neighbour (softmax 1, entropy 0); with three identical rows
    # each has two equally close neighbours (entropy log 2); with k identical rows, log(k - 1)
    assert soft_neighborhood_density(np.array([[0.9, 0.1], [0.2, 0.8]])) == pytest.approx(0.0, abs=1e-9)
    assert soft_neighborhood_density(np.tile([0.3, 0.7], (3, 1))) == pytest.approx(np.log(2), rel=1e-9)
    assert soft_neighborhood_density(np.tile([0.3, 0.7], (5, 1))) == pytest.approx(np.log(4), rel=1e-9)
    # products fall in 3 tight clusters vs predictions scattered at random: clusters give denser neighbourhoods
    clustered = np.eye(3)[np.arange(60) % 3] * 6 + rng.normal(scale=0.05, size=(60, 3))
    scattered = rng.normal(scale=3.0, size=(60, 3))
    assert snd(_evidence(clustered)) > snd(_evidence(scattered))


def test_dev_equals_plain_mean_loss_under_uniform_weights_and_follows_weights() -> None:
    losses = np.array([0.1, 0.2, 0.9, 1.5])
    assert deep_embedded_validation(losses, np.ones(4)) == pytest.approx(losses.mean())
    # You et al. 2019, Algorithm 1, by hand: losses l = (0, 1, 0, 1), weights w = (1, 1, 3, 3).
    # L = w * l = (0, 1, 0, 3), mean(L) = 1, mean(w) = 2.
    # Cov(L, w) = [(-1)(-1) + (0)(-1) + (-1)(1) + (2)(1)] / 3 = 2/3; Var(w) = 4/3; eta = -Cov/Var = -1/2.
    # risk = mean(L) + eta * mean(w) - eta = 1 - 1 + 1/2 = 1/2 (the plain weighted mean would say 1).
    assert deep_embedded_validation(np.array([0.0, 1.0, 0.0, 1.0]), np.array([1.0, 1.0, 3.0, 3.0])) == pytest.approx(0.5)
    # weights that average 1 leave only mean(w l): the control variate's term eta (mean(w) - 1) vanishes
    w = np.array([0.5, 0.5, 1.5, 1.5])
    assert deep_embedded_validation(losses, w) == pytest.approx((0.05 + 0.1 + 1.35 + 2.25) / 4)
    # a model whose errors sit where the target density is high gets the higher risk
    errors_on_target_like = deep_embedded_validation(np.array([0.0, 0.0, 2.0, 2.0]), np.array([0.2, 0.2, 3.0, 3.0]))
    errors_off_target = deep_embedded_validation(np.array([2.0, 2.0, 0.0, 0.0]), np.array([0.2, 0.2, 3.0, 3.0]))
    assert errors_on_target_like > errors_off_target


def test_dev_selector_ranks_a_model_wrong_on_target_like_rows_below_one_wrong_elsewhere() -> None:
    rng = np.random.default_rng(1)
    train_embed = rng.normal(size=(200, 2))
    target_embed = rng.normal(loc=(3.0, 0.0), size=(200, 2))
    val_embed = np.concatenate([rng.normal(size=(20, 2)), rng.normal(loc=(3.0, 0.0), size=(20, 2))])
    y_val = np.zeros(40, dtype=np.int64)
    near_target = np.arange(40) >= 20
    good_on_target = np.where(near_target[:, None], [[5.0, 0.0]], [[0.0, 5.0]])
    bad_on_target = np.where(near_target[:, None], [[0.0, 5.0]], [[5.0, 0.0]])
    kw = dict(y_val=y_val, val_embed=val_embed, train_embed=train_embed, target_embed=target_embed)
    dev = SELECTORS.get("dev")
    assert dev(_evidence(np.zeros((200, 2)), val_logits=good_on_target, **kw)) > dev(
        _evidence(np.zeros((200, 2)), val_logits=bad_on_target, **kw)
    )


def test_stratified_holdout_keeps_two_rows_of_every_class_for_training() -> None:
    y = np.array([0] * 20 + [1] * 3 + [2] * 2)
    mask = stratified_holdout(y, 0.1, seed=0)
    assert mask[:20].sum() == 2 and mask[20:23].sum() == 1 and mask[23:].sum() == 0


def test_auto_picks_a_candidate_and_records_why(make_shifted, tmp_path) -> None:
    xs, ys, xt, _ = make_shifted(seed=3, n=150, dim=8)
    # every candidate trained in full, so every score is comparable (halving: tests/adaptation/test_adapt_halving.py)
    config = TrainConfig(method="auto", hidden=16, epochs=3, seed=0, auto_schedule="full")
    model = auto_train(xs, ys, xt, 3, config, safe=False)  # the selector's own choice; the safety check is tested below
    info = model.describe()
    sel = info["selection"]
    assert sel["selector"] == "dev"
    labels = [c["candidate"] for c in sel["candidates"]]
    assert "source_only" in labels and len(labels) == len(DEFAULT_CANDIDATES)
    best = max(sel["candidates"], key=lambda c: c["scores"]["dev"])
    assert sel["chosen"] == best["candidate"]
    # the reason states the winning score, the winner's searched hyper-parameters and the runner-up
    assert f"highest dev score ({best['scores']['dev']:.4f}) of {len(labels)} candidates" in sel["reason"]
    searched = ", ".join(f"{k}={v}" for k, v in best["hyperparameters"].items())
    assert f"with {searched};" in sel["reason"]
    runner_up = sorted(sel["candidates"], key=lambda c: -c["scores"]["dev"])[1]
    assert f"runner-up {runner_up['candidate']} scored {runner_up['scores']['dev']:.4f}" in sel["reason"]
    assert info["method"] == best["method"] != "auto"
    assert sel["chosen_method"] == info["method"]
    assert sel["chosen_hyperparameters"] == {f: info["config"][f] for f in ("lr", "tradeoff")} == best["hyperparameters"]
    assert info["refined"] == sel["refinement"]["kept"]
    again = AdaptedModel.load(model.save(tmp_path / "auto"))
    assert again.describe()["selection"] == sel
    np.testing.assert_array_equal(again.logits(xt), model.logits(xt))


def test_auto_refinement_is_kept_on_clustered_targets_and_survives_save_load(make_shifted, tmp_path) -> None:
    xs, ys, xt, yt = make_shifted(seed=4, n=150, dim=6, separation=6.0, shift=1.0)
    model = auto_train(xs, ys, xt, 3, TrainConfig(hidden=16, epochs=20, lr=5e-3, dropout=0.1, seed=0), candidates=[("source_only", {})])
    assert model.selection["refinement"]["kept"] and model.refined
    assert (model.predict(xt) == yt).mean() > 0.9
    again = AdaptedModel.load(model.save(tmp_path / "refined"))
    assert again.refined
    np.testing.assert_allclose(again.logits(xt), model.logits(xt), rtol=1e-6, atol=1e-5)


def test_auto_refuses_a_grid_without_the_source_only_fallback(make_shifted) -> None:
    xs, ys, xt, _ = make_shifted(seed=3, n=60, dim=4)
    with pytest.raises(ConfigError, match="source_only"):
        auto_train(xs, ys, xt, 3, TrainConfig(epochs=1), candidates=[("dann", {})])


def test_auto_with_one_product_per_class_trains_on_all_and_falls_back_to_a_target_only_selector(make_shifted) -> None:
    xs, ys, xt, _ = make_shifted(seed=6, n=60, dim=4)
    first = np.array([np.flatnonzero(ys == k)[0] for k in range(3)])
    model = auto_train(xs.subset(first), ys[first], xt, 3, TrainConfig(hidden=8, epochs=2, seed=0),
                       candidates=[("source_only", {}), ("dann", {})])
    sel = model.selection
    assert sel["selector"] == "snd" and sel["n_source_train"] == 3 and sel["n_source_val"] == 0
    assert "needs held-out source rows" in sel["reason"]
    assert set(sel["candidates"][0]["scores"]) == {"snd"}
    # DEV cannot be scored without held-out rows, so nothing labelled confirms an adapted candidate: source-only stays
    assert sel["chosen"] == "source_only" and sel["safety"]["missing"] == ["dev"]
    if sel["selector_choice"] != "source_only":
        assert "dev could not be scored" in sel["reason"]


def test_default_grid_searches_trade_off_and_learning_rate_besides_the_method() -> None:
    configs = candidate_configs(TrainConfig(epochs=7), DEFAULT_CANDIDATES)  # every candidate is a valid config
    assert ("source_only", {}) in DEFAULT_CANDIDATES
    by_method: dict[str, set] = {}
    for cfg in configs:
        by_method.setdefault(cfg.method, set()).add((cfg.tradeoff, cfg.lr))
        assert cfg.epochs == 7  # the caller's epochs hold for every candidate
    for method in ("dann", "cdan"):  # the adversarial trade-off is searched
        assert len({t for t, _ in by_method[method]}) >= 2
    assert any(len({lr for _, lr in settings}) >= 2 for settings in by_method.values())
    assert {"source_only", "dann", "cdan", "dan", "coral", "rtn"} <= set(by_method)
    assert len(configs) <= 10  # each candidate is a full training run


def test_candidate_configs_override_the_base_and_refuse_bad_grids() -> None:
    base = TrainConfig(hidden=16, epochs=2, lr=2e-3, seed=4)
    (a, b) = candidate_configs(base, [("source_only", {}), ("dann", {"tradeoff": 0.3, "lr": 5e-3})])
    assert (a.method, a.lr, a.tradeoff, a.seed, a.hidden) == ("source_only", 2e-3, 1.0, 4, 16)
    assert (b.method, b.lr, b.tradeoff, b.seed, b.hidden) == ("dann", 5e-3, 0.3, 4, 16)
    assert candidate_label("dann", {"tradeoff": 0.3, "lr": 5e-3}) == "dann(lr=0.005,tradeoff=0.3)"
    with pytest.raises(ConfigError, match="unknown TrainConfig field.*trade_off"):
        candidate_configs(base, [("dann", {"trade_off": 0.3})])
    with pytest.raises(ConfigError, match="tradeoff"):
        candidate_configs(base, [("dann", {"tradeoff": -1.0})])
    with pytest.raises(ConfigError, match="listed twice"):
        candidate_configs(base, [("dann", {"tradeoff": 0.3}), ("dann", {"tradeoff": 0.3})])
    with pytest.raises(ConfigError, match="auto"):
        candidate_configs(base, [("auto", {})])
    with pytest.raises(ConfigError, match="unknown TrainConfig field"):
        candidate_configs(base, [("dann", {"method": "cdan"})])


def test_auto_trains_candidates_that_differ_only_in_a_hyper_parameter_with_that_value(make_shifted) -> None:
    xs, ys, xt, _ = make_shifted(seed=7, n=120, dim=6)
    grid = [("source_only", {"lr": 3e-2}), ("source_only", {"lr": 1e-5}), ("dann", {"tradeoff": 0.0}),
            ("dann", {"tradeoff": 2.0})]
    base = TrainConfig(hidden=16, epochs=3, dropout=0.1, seed=0)
    model = auto_train(xs, ys, xt, 3, base, candidates=grid, selector="source_val", refine=False)
    sel = model.selection
    assert [c["candidate"] for c in sel["candidates"]] == [
        "source_only(lr=0.03)", "source_only(lr=1e-05)", "dann(tradeoff=0.0)", "dann(tradeoff=2.0)"]
    for rec, (method, overrides) in zip(sel["candidates"], grid):
        expected = {"lr": base.lr, "tradeoff": base.tradeoff, **overrides}
        assert rec["method"] == method and rec["hyperparameters"] == expected
        assert {k: rec["config"][k] for k in expected} == expected and rec["config"]["epochs"] == 3
    assert sel["searched"] == {"methods": ["source_only", "dann"], "lr": [1e-5, 1e-3, 3e-2], "tradeoff": [0.0, 1.0, 2.0]}
    # a learning rate too small to move the weights in 3 epochs loses on held-out source rows
    assert sel["chosen"] != "source_only(lr=1e-05)"
    chosen = next(c for c in sel["candidates"] if c["candidate"] == sel["chosen"])
    assert sel["chosen_method"] == chosen["method"] == model.config.method
    assert sel["chosen_hyperparameters"] == chosen["hyperparameters"] == {"lr": model.config.lr, "tradeoff": model.config.tradeoff}
    # the returned network is the one trained with the chosen value: retraining with it on the same split reproduces it
    held = stratified_holdout(ys, 0.1, base.seed)
    again = train(xs.subset(np.flatnonzero(~held)), ys[~held], xt, 3, TrainConfig.from_dict(chosen["config"]))
    np.testing.assert_allclose(again.logits(xt), model.logits(xt), rtol=1e-5, atol=1e-6)
    scores = [c["scores"]["source_val"] for c in sel["candidates"]]
    assert chosen["scores"]["source_val"] == max(scores)


def test_auto_checks_the_whole_grid_before_training_any_candidate(make_shifted) -> None:
    xs, ys, xt, _ = make_shifted(seed=3, n=60, dim=4)
    with pytest.raises(ConfigError, match="lr"):
        # the bad candidate comes last; the error must come before the first one trains (epochs would take long)
        auto_train(xs, ys, xt, 3, TrainConfig(epochs=10_000), candidates=[("source_only", {}), ("dann", {"lr": 0.0})])


# --- DEV against an independent reference, and the safety of "auto" ---------------------------------------


def _dev_reference(losses: list[float], weights: list[float]) -> float:
    """You et al. 2019, Algorithm 1, written out with plain sums (no NumPy covariance)."""
    n = len(losses)
    big_l = [w * l for w, l in zip(weights, losses)]
    mean_l, mean_w = sum(big_l) / n, sum(weights) / n
    cov = sum((a - mean_l) * (b - mean_w) for a, b in zip(big_l, weights)) / (n - 1)
    var = sum((b - mean_w) ** 2 for b in weights) / (n - 1)
    eta = -cov / var
    return mean_l + eta * mean_w - eta


def test_dev_matches_a_plain_reference_and_its_score_is_not_positive_in_expectation() -> None:
    rng = np.random.default_rng(0)
    scores = []
    for _ in range(400):
        # true density ratios of a target N(1, 1) against a source N(0, 1) at source draws: E_s[w] = 1
        x = rng.normal(size=30)
        w = np.exp(x - 0.5)
        losses = rng.exponential(scale=1.0 + (x > 0), size=30)  # a cross-entropy: never negative
        risk = deep_embedded_validation(losses, w)
        assert risk == pytest.approx(_dev_reference(losses.tolist(), w.tolist()), rel=1e-9, abs=1e-12)
        scores.append(-risk)
    # the score is minus an (almost) unbiased risk estimate of a non-negative loss: <= 0 in expectation
    assert np.mean(scores) <= 0.0


def test_dev_selector_never_scores_above_zero_even_when_estimated_weights_do_not_average_one() -> None:
    rng = np.random.default_rng(2)
    # held-out source rows sit between the training rows and the target: a domain classifier gives them
    # weights far above 1 on average, where the raw DEV formula can go below zero for a cross-entropy
    train_embed = rng.normal(size=(300, 8))
    target_embed = rng.normal(loc=2.0, size=(300, 8))
    val_embed = rng.normal(loc=1.2, size=(60, 8))
    y_val = rng.integers(0, 3, 60)
    val_logits = rng.normal(scale=3.0, size=(60, 3))
    ev = _evidence(np.zeros((300, 3)), val_logits=val_logits, y_val=y_val, val_embed=val_embed,
                   train_embed=train_embed, target_embed=target_embed)
    from prodkg.adaptation.selection import importance_weights, normalised_weights

    raw = importance_weights(train_embed, target_embed, val_embed)
    assert raw.mean() > 2.0  # the estimated ratios do not average 1 here
    w = normalised_weights(raw)
    assert w.mean() == pytest.approx(1.0) and w.max() <= 20.0 * (1 + 1e-6)
    assert SELECTORS.get("dev")(ev) <= 0.0


def test_consensus_agreement_and_majority_vote_by_hand() -> None:
    from prodkg.adaptation.selection import consensus_agreement, majority_vote

    preds = [np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2]), np.array([1, 1, 1, 0])]
    np.testing.assert_array_equal(majority_vote(preds), [0, 1, 1, 2])
    np.testing.assert_allclose(consensus_agreement(preds), [3 / 4, 4 / 4, 2 / 4])
    # a tie goes to the lowest class
    np.testing.assert_array_equal(majority_vote([np.array([2]), np.array([1])]), [1])


def test_safe_choice_adopts_an_adapted_candidate_only_when_every_signal_agrees() -> None:
    from prodkg.adaptation.selection import SAFETY_SIGNALS, safe_choice

    assert SAFETY_SIGNALS == ("dev", "snd", "consensus")
    signals = SAFETY_SIGNALS
    methods = ["source_only", "dann", "cdan"]
    scores = [{"dev": -1.0, "snd": 5.0}, {"dev": -0.5, "snd": 5.5}, {"dev": -0.8, "snd": 5.1}]
    agreement = np.array([0.8, 0.9, 0.85])
    assert safe_choice(methods, scores, agreement, "dev", signals)[0] == 1
    # the selector's best has a lower SND than source-only: source-only stays, unless scanning finds cdan
    scores[1]["snd"] = 4.0
    index, record = safe_choice(methods, scores, agreement, "dev", signals)
    assert index == 0 and record["overruled"] and record["checks"] == {"dev": True, "snd": False, "consensus": True}
    assert safe_choice(methods, scores, agreement, "dev", signals, scan=True)[0] == 2
    # less agreement with the candidates' vote than source-only: overruled, unless consensus is not asked for
    scores[1]["snd"] = 6.0
    assert safe_choice(methods, scores, np.array([0.9, 0.8, 0.85]), "dev", signals)[0] == 0
    assert safe_choice(methods, scores, np.array([0.9, 0.8, 0.85]), "dev", ("dev", "snd"))[0] == 1
    # a signal that could not be scored (no held-out source rows: no DEV) confirms nothing
    no_dev = [{"snd": sc["snd"]} for sc in scores]
    index, record = safe_choice(methods, no_dev, agreement, "snd", signals)
    assert index == 0 and record["checks"] == {"dev": False, "snd": True, "consensus": True}
    assert record["missing"] == ["dev"]
    assert safe_choice(methods, no_dev, agreement, "snd", ("snd", "consensus"))[0] == 1
    # source-only scored best by the selector: adopted, nothing overruled
    scores[0]["dev"] = 0.0
    index, record = safe_choice(methods, scores, agreement, "dev")
    assert index == 0 and not record["overruled"]


def test_refinement_is_discarded_when_it_relabels_too_much_of_the_target() -> None:
    from prodkg.adaptation.selection import MAX_REFINE_CHANGE, refinement_verdict

    before = np.arange(100) % 4
    few, many = before.copy(), before.copy()
    few[:10] = (few[:10] + 1) % 4
    many[:30] = (many[:30] + 1) % 4
    assert MAX_REFINE_CHANGE == 0.15
    assert refinement_verdict(before, few) == {"changed_fraction": 0.1, "kept": True, "why": ""}
    verdict = refinement_verdict(before, many)
    assert not verdict["kept"] and "more than 15%" in verdict["why"]


def test_auto_falls_back_to_source_only_when_the_signals_disagree_and_says_why(make_shifted) -> None:
    xs, ys, xt, _ = make_shifted(seed=3, n=150, dim=8)
    model = auto_train(xs, ys, xt, 3, TrainConfig(hidden=16, epochs=3, seed=0), refine=False)
    sel = model.selection
    assert sel["safety"] is not None and set(sel["candidates"][0]["scores"]) >= {"dev", "snd"}
    assert sel["safety"]["adopted"] == sel["chosen_method"]
    voters = [c for c in sel["candidates"] if c["consensus"] is not None]
    assert all(0.0 <= c["consensus"] <= 1.0 for c in voters)
    assert {c["candidate"] for c in voters} >= set(sel["schedule"]["finalists"])
    if sel["chosen"] != sel["selector_choice"]:
        assert sel["chosen"] == "source_only" and "did not confirm that it beats source-only" in sel["reason"]
    else:
        assert sel["chosen"] == "source_only" or all(sel["safety"]["checks"].values())


def test_dev_gain_is_the_difference_of_the_two_dev_scores_with_a_paired_standard_error() -> None:
    from prodkg.adaptation.selection import dev_gain, dev_terms, importance_weights, normalised_weights

    rng = np.random.default_rng(5)
    shared = dict(y_val=rng.integers(0, 3, 40), val_embed=rng.normal(size=(40, 4)), train_embed=rng.normal(size=(200, 4)),
                  target_embed=rng.normal(loc=0.7, size=(200, 4)))
    base = _evidence(np.zeros((200, 3)), val_logits=rng.normal(size=(40, 3)), **shared)
    better = _evidence(np.zeros((200, 3)), val_logits=base.val_logits + 2.0 * np.eye(3)[shared["y_val"]], **shared)
    gain, se = dev_gain(base, better)
    dev = SELECTORS.get("dev")
    assert gain == pytest.approx(dev(better) - dev(base), rel=1e-9) and gain > 0
    # the row-by-row risks with eta from plain sums (as _dev_reference), and their differences' standard error by hand
    w = normalised_weights(importance_weights(shared["train_embed"], shared["target_embed"], shared["val_embed"])).tolist()

    def rows(ev: Evidence) -> list[float]:
        p = softmax(ev.val_logits, axis=1)
        losses = [-np.log(p[i, y] + 1e-12) for i, y in enumerate(ev.y_val)]
        n, big_l = len(w), [a * b for a, b in zip(w, losses)]
        mean_l, mean_w = sum(big_l) / n, sum(w) / n
        eta = -(sum((a - mean_l) * (b - mean_w) for a, b in zip(big_l, w)) / (n - 1)) / (sum((b - mean_w) ** 2 for b in w) / (n - 1))
        terms = [a + eta * (b - 1) for a, b in zip(big_l, w)]
        assert sum(terms) / n == pytest.approx(_dev_reference(losses, w), rel=1e-9)
        np.testing.assert_allclose(dev_terms(np.array(losses), np.array(w)), terms, rtol=1e-9)
        return terms

    d = [a - b for a, b in zip(rows(base), rows(better))]
    mean = sum(d) / len(d)
    assert se == pytest.approx((sum((x - mean) ** 2 for x in d) / (len(d) - 1)) ** 0.5 / len(d) ** 0.5, rel=1e-6)


def test_a_dev_gain_within_its_noise_does_not_confirm_an_adapted_candidate() -> None:
    from prodkg.adaptation.selection import safe_choice

    methods = ["source_only", "cdan"]
    scores = [{"dev": -0.0193, "snd": 5.0}, {"dev": -0.0011, "snd": 5.5}]  # the grocery coarse head's DEV scores
    agreement = np.array([0.8, 0.9])
    # the scores alone confirm cdan; a gain of 0.018 with a standard error of 0.03 does not, at one standard error
    assert safe_choice(methods, scores, agreement, "dev")[0] == 1
    index, record = safe_choice(methods, scores, agreement, "dev", dev_gains=[None, (0.018, 0.03)], dev_margin=1.0)
    assert index == 0 and record["checks"]["dev"] is False
    assert safe_choice(methods, scores, agreement, "dev", dev_gains=[None, (0.018, 0.01)], dev_margin=1.0)[0] == 1
    assert safe_choice(methods, scores, agreement, "dev", dev_gains=[None, (-0.001, 0.0)], dev_margin=0.0)[0] == 0
