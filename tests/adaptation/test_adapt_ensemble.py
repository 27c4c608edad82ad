"""Deep ensembles (``TrainConfig.ensemble``, ``--ensemble N``): heads from different seeds, probabilities averaged.

The ensemble is checked against single heads trained here one by one from the member seeds and averaged by
hand, so the test does not lean on the ensemble's own code for what it should give."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from prodkg.adaptation import AdaptedModel, MultiModal, TrainConfig, train
from prodkg.adaptation.ensemble import MEMBER_SEED_STRIDE, train_ensemble
from prodkg.adaptation.self_training import self_train
from prodkg.errors import ConfigError
from prodkg.flows.config import RunConfig
from prodkg.prediction.heads import fit_task


def _few_shot(seed: int = 0):
    """Four classes, three noisy labelled rows each (the source), 120 unlabelled rows shifted away (the target)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, 12)) * 1.5
    ys = np.repeat(np.arange(4), 3)
    xs = centres[ys] + rng.normal(size=(len(ys), 12))
    yt = rng.integers(0, 4, 120)
    xt = centres[yt] + rng.normal(size=(120, 12)) + 0.4
    as_mm = lambda x: MultiModal.complete(image=x.astype(np.float32))
    return as_mm(xs), ys, as_mm(xt), yt


def test_an_ensemble_averages_the_heads_its_member_seeds_train_alone():
    source, ys, target, _ = _few_shot()
    config = TrainConfig(method="source_only", epochs=8, seed=3)
    ens = train(source, ys, target, 4, dataclasses.replace(config, ensemble=3))
    seeds = [3, 3 + MEMBER_SEED_STRIDE, 3 + 2 * MEMBER_SEED_STRIDE]
    alone = [train(source, ys, target, 4, dataclasses.replace(config, seed=s)).predict_proba(target) for s in seeds]
    np.testing.assert_allclose(ens.predict_proba(target), np.mean(alone, axis=0), atol=1e-5)
    assert [c["seed"] for c in ens.member_configs()] == seeds
    assert ens.config.ensemble == 3 and ens.describe()["config"]["ensemble"] == 3
    # the members do disagree here (else the test would prove nothing about averaging)
    assert len({tuple(p.argmax(1)) for p in alone}) > 1


def test_one_head_is_the_default_and_its_config_reads_as_before():
    config = TrainConfig(method="dann")
    assert config.ensemble == 1 and "ensemble" not in config.to_dict()
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert TrainConfig.from_dict(dataclasses.replace(config, ensemble=4).to_dict()).ensemble == 4
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="TrainConfig.ensemble"):
            TrainConfig(ensemble=bad)


def test_a_saved_ensemble_loads_with_its_members_and_scores_the_same(tmp_path):
    source, ys, target, _ = _few_shot(1)
    ens = train(source, ys, target, 4, TrainConfig(method="dann", epochs=4, seed=0, ensemble=2))
    loaded = AdaptedModel.load(ens.save(tmp_path / "model"))
    np.testing.assert_allclose(loaded.predict_proba(target), ens.predict_proba(target), atol=1e-6)
    assert loaded.config.ensemble == 2 and [c["seed"] for c in loaded.member_configs()] == [0, MEMBER_SEED_STRIDE]


def test_with_auto_the_members_retrain_the_chosen_candidate():
    source, ys, target, _ = _few_shot(2)
    ens = train(source, ys, target, 4, TrainConfig(method="auto", epochs=3, seed=0, ensemble=2))
    chosen = ens.selection["chosen_method"]
    if ens.selection["seed_ensemble"].get("skipped"):  # refinement kept: the single refined head stands, and says why
        assert ens.refined and "no ensemble of 2 heads" in ens.selection["reason"]
        return
    assert {c["method"] for c in ens.member_configs()} == {chosen} and ens.config.method == chosen
    assert ens.selection["seed_ensemble"] == {"members": 2, "seeds": [0, MEMBER_SEED_STRIDE]}
    assert "probabilities averaged over 2 heads" in ens.selection["reason"]


def test_an_average_of_autos_top_candidates_is_left_as_it_is():
    from prodkg.adaptation.model import EnsembleNetwork

    source, ys, target, _ = _few_shot(3)
    a, b = (train(source, ys, target, 4, TrainConfig(method=m, epochs=3, seed=0)) for m in ("dann", "cdan"))
    # what auto returns with ensemble_top=2: its two best candidates averaged, the winner's config and selection
    top = AdaptedModel(EnsembleNetwork([a.network, b.network]), a.config, 4, a.dims, selection={"reason": "dann won"})
    out = train_ensemble(source, ys, target, 4, dataclasses.replace(a.config, ensemble=3), first=top)
    assert out is top and len(out.member_configs()) == 2
    assert out.selection["seed_ensemble"] == {"members": 1, "skipped": "the chosen model is already an average of auto's top candidates"}
    assert out.selection["reason"].endswith("no ensemble of 3 heads: the chosen model is already an average of auto's top candidates")


def test_self_training_retrains_the_whole_ensemble_each_round():
    source, ys, target, _ = _few_shot(4)
    config = TrainConfig(method="source_only", epochs=4, seed=0, ensemble=2)
    first = train(source, ys, target, 4, config)
    model, rounds = self_train(source, ys, target, 4, first.config, shares=[0.2], first=first)
    assert model is not first and len(rounds) == 1
    assert model.config.ensemble == 2 and len(model.member_configs()) == 2


def test_fit_task_records_the_members_and_the_run_config_bounds_them():
    source, ys, target, yt = _few_shot(5)
    feats = MultiModal.concat([source, target])
    labels = [f"c{c}" for c in np.concatenate([ys, yt])]
    is_source = np.arange(len(labels)) < len(ys)
    result = fit_task("category", feats, labels, is_source, ~is_source, [f"p{i}" for i in range(len(labels))],
                      TrainConfig(method="source_only", epochs=3, seed=1, ensemble=3), val_fraction=0.0)
    assert result.metrics["ensemble"] == {"members": 3, "seeds": [1, 1 + MEMBER_SEED_STRIDE, 1 + 2 * MEMBER_SEED_STRIDE]}
    base = dict(dataset="office-caltech-10", source=["amazon"], target=["webcam"])
    assert RunConfig(**base, ensemble=3).predict_settings().train_config().ensemble == 3
    assert RunConfig(**base).fingerprint() == RunConfig(**base, ensemble=1).fingerprint()
    assert RunConfig(**base).fingerprint() != RunConfig(**base, ensemble=2).fingerprint()
    for bad in (0, 11):
        with pytest.raises(ConfigError, match="ensemble"):
            RunConfig(**base, ensemble=bad)
