"""``auto``'s budget schedules: a paused training resumes exactly, successive halving prunes as its rungs say,
keeps source-only, and adopts what the full grid adopts when one candidate clearly wins."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prodkg.adaptation import TrainConfig
from prodkg.adaptation.config import AUTO_SCHEDULES
from prodkg.adaptation.loop import MethodRun, train_method
from prodkg.adaptation.selection import (
    DEFAULT_CANDIDATES,
    auto_train,
    candidate_configs,
    candidate_label,
    consensus_voters,
    rung_keep,
    schedule_rungs,
    score_candidates,
    stratified_holdout,
)
from prodkg.errors import ConfigError, StageError


def _state(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in network.state_dict().items()}


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = _state(a), _state(b)
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize("method", ["dann", "cdan", "rtn"])
def test_a_paused_training_ends_with_the_weights_of_one_trained_in_one_go(make_shifted, method) -> None:
    xs, ys, xt, _ = make_shifted(seed=2, n=150, dim=8)
    config = TrainConfig(method=method, hidden=16, epochs=4, seed=5)  # dropout 0.5: the random state matters
    reference = train_method(xs, ys, xt, 3, config)

    paused = MethodRun(xs, ys, xt, 3, config)
    other = MethodRun(xs, ys, xt, 3, TrainConfig(method="dan", hidden=16, epochs=4, seed=9))
    paused.advance(0.2)
    assert 0 < paused.fraction_done < 1
    paused.model().predict(xt)  # an evaluation in between (eval mode, no gradients) changes nothing
    other.advance(0.5)  # nor does another network training in between, on the same global random state
    torch.manual_seed(1234)  # nor what the caller does with it
    np.random.seed(4321)
    paused.advance(0.7)
    paused.advance(0.7)  # already there: nothing more
    paused.advance(1.0)
    assert paused.fraction_done == 1.0 and paused.epochs_done == 4
    _assert_same_weights(paused.network, reference.network)
    assert paused.model().history == reference.history
    with pytest.raises(ConfigError, match="fraction"):
        paused.advance(0.0)
    stopped = MethodRun(xs, ys, xt, 3, config)
    stopped.advance(0.5)
    stopped.close()  # a pruned candidate: what training held is let go, its network stays usable
    assert stopped.model().predict(xt).shape == (len(xt),)
    with pytest.raises(StageError, match="closed"):
        stopped.advance(1.0)


def test_schedules_are_checked_and_rungs_keep_a_third() -> None:
    assert schedule_rungs("halving") == AUTO_SCHEDULES["halving"] == pytest.approx((1 / 9, 1 / 3, 1.0))
    assert schedule_rungs("full") == (1.0,)
    assert schedule_rungs([0.25, 1]) == (0.25, 1.0)
    for bad in ("quarter", [0.5], [0.5, 0.4, 1.0], [0.0, 1.0], [0.5, 1.5], []):
        with pytest.raises(ConfigError):
            schedule_rungs(bad)
    with pytest.raises(ConfigError, match="auto_schedule"):
        TrainConfig(auto_schedule="quarter")
    # the default grid's nine adapted candidates: 9 -> 3 -> 1
    assert rung_keep(9, 1 / 9, 1 / 3) == 3 and rung_keep(3, 1 / 3, 1.0) == 1
    assert rung_keep(10, 0.5, 1.0) == 5 and rung_keep(2, 0.1, 1.0) == 1 and rung_keep(11, 0.25, 1.0) == 3


def test_the_vote_leaves_out_candidates_stopped_before_the_last_pruning_rung() -> None:
    halving = AUTO_SCHEDULES["halving"]
    # source-only and the finalist trained in full, two stopped at 1/3, two at 1/9
    assert consensus_voters([1.0, 1 / 9, 1 / 3, 1 / 9, 1 / 3, 1.0], halving) == [0, 2, 4, 5]
    assert consensus_voters([1.0, 0.25, 1.0], [0.25, 1.0]) == [0, 1, 2]
    assert consensus_voters([1.0, 1.0, 1.0], AUTO_SCHEDULES["full"]) == [0, 1, 2]
    # fewer than three voters: a vote of two decides nothing, so every candidate votes
    assert consensus_voters([1.0, 1 / 9, 1 / 9, 1.0], halving) == [0, 1, 2, 3]


def test_halving_prunes_the_default_grid_as_its_rungs_say_by_dev_and_keeps_source_only(make_shifted) -> None:
    xs, ys, xt, _ = make_shifted(seed=3, n=100, dim=8)
    config = TrainConfig(method="auto", hidden=16, epochs=9, seed=0, auto_schedule="halving")
    model = auto_train(xs, ys, xt, 3, config, refine=False)
    sel = model.selection
    cands = {c["candidate"]: c for c in sel["candidates"]}
    assert list(cands) == [candidate_label(m, o) for m, o in DEFAULT_CANDIDATES]
    # epochs trained: 9 adapted candidates at 1/9, 1/3, 1 of 9 epochs keep 3 then 1; source-only trains in full
    assert cands["source_only"]["epochs_trained"] == 9 and cands["source_only"]["stopped_at_rung"] is None
    adapted = [c for name, c in cands.items() if name != "source_only"]
    assert sorted(c["epochs_trained"] for c in adapted) == [1] * 6 + [3] * 2 + [9]
    assert sorted((c["stopped_at_rung"] or 0) for c in adapted) == [0] + [1] * 6 + [2] * 2
    finalist = next(c["candidate"] for c in adapted if c["epochs_trained"] == 9)
    assert sel["schedule"]["finalists"] == ["source_only", finalist] or sel["schedule"]["finalists"] == [finalist, "source_only"]
    assert sel["chosen"] in ("source_only", finalist)
    assert "successive halving (halving) stopped" in sel["reason"]
    # the two stopped at 1/3 vote with the finalists; the six stopped at 1/9 do not
    voters = {c["candidate"] for c in sel["candidates"] if c["consensus"] is not None}
    assert voters == set(sel["schedule"]["voters"]) == {"source_only"} | {c["candidate"] for c in adapted if c["epochs_trained"] >= 3}

    # an independent replay of the first rung: every adapted candidate trained for 1/9 and scored by DEV;
    # the three that went on are DEV's best three
    held = stratified_holdout(ys, 0.1, config.seed)
    tr, va = np.flatnonzero(~held), np.flatnonzero(held)
    configs = candidate_configs(config, DEFAULT_CANDIDATES)
    names, models = [], []
    for (method, overrides), cfg in zip(DEFAULT_CANDIDATES, configs):
        if method == "source_only":
            continue
        run = MethodRun(xs.subset(tr), ys[tr], xt, 3, cfg)
        run.advance(1 / 9)
        names.append(candidate_label(method, overrides))
        models.append(run.model())
    dev = [s["dev"] for s in score_candidates(models, xs.subset(tr), xs.subset(va), ys[va], xt, ["dev"], seed=0)]
    best_three = {names[i] for i in np.argsort(dev)[::-1][:3]}
    assert best_three == {c["candidate"] for c in adapted if c["epochs_trained"] >= 3}
    for c in adapted:  # a candidate pruned at the first rung carries the DEV score it was pruned with
        if c["stopped_at_rung"] == 1:
            assert c["scores"]["dev"] == pytest.approx(dev[names.index(c["candidate"])], rel=1e-9)


def test_source_only_trains_in_full_even_when_it_scores_worst(make_shifted) -> None:
    xs, ys, xt, _ = make_shifted(seed=4, n=120, dim=6)
    # a learning rate too small to learn anything: source-only has the worst DEV risk of the grid
    grid = [("source_only", {"lr": 1e-7}), ("dann", {}), ("dan", {}), ("coral", {})]
    model = auto_train(xs, ys, xt, 3, TrainConfig(hidden=16, epochs=6, seed=0), candidates=grid, schedule=[0.5, 1.0],
                       refine=False, safe=False)
    sel = model.selection
    so = sel["candidates"][0]
    assert so["candidate"] == "source_only(lr=1e-07)" and so["epochs_trained"] == 6 and so["stopped_at_rung"] is None
    assert so["candidate"] in sel["schedule"]["finalists"]
    assert sorted(c["epochs_trained"] for c in sel["candidates"][1:]) == [3, 6, 6]  # keep ceil(3 * 0.5) = 2
    assert sel["schedule"]["rungs"] == [0.5, 1.0] and sel["schedule"]["name"] == "0.5,1"


def test_halving_adopts_what_the_full_grid_adopts_when_one_candidate_clearly_wins(make_shifted) -> None:
    xs, ys, xt, _ = make_shifted(seed=5, n=150, dim=8)
    # one candidate learns; the others (source-only too) barely move their weights in so few steps
    grid = [("source_only", {"lr": 1e-6}), ("dann", {"lr": 1e-6}), ("dan", {"lr": 1e-6}), ("coral", {"lr": 1e-6}),
            ("cdan", {"lr": 1e-6}), ("rtn", {"lr": 1e-6}), ("dann", {"tradeoff": 0.3})]
    config = TrainConfig(method="auto", hidden=16, epochs=9, dropout=0.1, seed=0)
    kw = {"candidates": grid, "safe": False, "refine": False}
    full = auto_train(xs, ys, xt, 3, config, schedule="full", **kw)
    halving = auto_train(xs, ys, xt, 3, config, schedule="halving", **kw)
    assert full.selection["chosen"] == halving.selection["chosen"] == "dann(tradeoff=0.3)"
    by_name = {c["candidate"]: c for c in halving.selection["candidates"]}
    assert by_name["dann(tradeoff=0.3)"]["epochs_trained"] == 9
    assert sum(c["epochs_trained"] for c in by_name.values()) < 0.5 * 9 * len(grid)  # most of the training skipped
    # the adopted network is bit for bit the one the full grid trained
    _assert_same_weights(halving.network, full.network)
    np.testing.assert_array_equal(halving.logits(xt), full.logits(xt))


def test_halving_is_deterministic_for_a_seed(make_shifted) -> None:
    xs, ys, xt, _ = make_shifted(seed=6, n=120, dim=6)
    config = TrainConfig(method="auto", hidden=16, epochs=3, seed=2)

    def record(model) -> dict:
        sel = dict(model.selection)
        sel["schedule"] = {k: v for k, v in sel["schedule"].items() if k != "pruning_seconds"}
        sel["candidates"] = [{k: v for k, v in c.items() if k != "train_seconds"} for c in sel["candidates"]]
        return sel

    torch.manual_seed(0)
    first = auto_train(xs, ys, xt, 3, config)
    torch.manual_seed(99)  # the caller's random state plays no part
    np.random.seed(99)
    second = auto_train(xs, ys, xt, 3, config)
    assert record(first) == record(second)
    np.testing.assert_array_equal(first.logits(xt), second.logits(xt))
    other = auto_train(xs, ys, xt, 3, TrainConfig(method="auto", hidden=16, epochs=3, seed=3))
    assert not np.array_equal(other.logits(xt), first.logits(xt))
