"""Tests of training end to end: adaptation helps under shift, runs are reproducible, models round-trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.special import softmax

from prodkg.adaptation import METHODS, AdaptedModel, MultiModal, TrainConfig, list_methods, train
from prodkg.errors import ConfigError, ModelLoadError, StageError, UnknownComponentError

SMALL = dict(hidden=64, batch_size=32, epochs=30)


def _accuracy(model: AdaptedModel, x: MultiModal, y: np.ndarray) -> float:
    return float((model.predict(x) == y).mean())


def test_dann_beats_source_only_under_shift(shifted_problem) -> None:
    source, ys, target, yt = shifted_problem
    source_only = train(source, ys, target, 3, TrainConfig(method="source_only", **SMALL))
    dann = train(source, ys, target, 3, TrainConfig(method="dann", **SMALL))
    acc_so, acc_dann = _accuracy(source_only, target, yt), _accuracy(dann, target, yt)
    # both fit the source; only DANN carries that over to the shifted target
    assert _accuracy(source_only, source, ys) > 0.9
    assert acc_dann > 0.85, acc_dann
    assert acc_dann - acc_so > 0.10, (acc_so, acc_dann)
    last = dann.history[-1]
    assert len(dann.history) == SMALL["epochs"]
    assert {"cls_loss", "adaptation_loss", "total_loss", "domain_accuracy", "lr"} <= set(last)
    # by the end the discriminator should be close to chance on the aligned features
    assert last["domain_accuracy"] < 0.7
    assert all(h["adaptation_loss"] == 0.0 for h in source_only.history)


def test_same_seed_same_model_and_global_rng_untouched(shifted_problem, tmp_path: Path) -> None:
    source, ys, target, _ = shifted_problem
    cfg = TrainConfig(method="dann", hidden=32, batch_size=32, epochs=2, seed=7)
    state = torch.get_rng_state()
    a = train(source, ys, target, 3, cfg)
    assert torch.equal(torch.get_rng_state(), state)
    b = train(source, ys, target, 3, cfg)
    assert np.array_equal(a.logits(target), b.logits(target))
    assert a.history == b.history
    # byte-identical weight files, so a model identity taken from their hash is stable across re-runs
    weights_a = (a.save(tmp_path / "a") / "weights.pt").read_bytes()
    assert weights_a == (b.save(tmp_path / "b") / "weights.pt").read_bytes()
    c = train(source, ys, target, 3, TrainConfig(method="dann", hidden=32, batch_size=32, epochs=2, seed=8))
    assert not np.array_equal(a.logits(target), c.logits(target))


def test_save_load_round_trip(shifted_problem, tmp_path: Path) -> None:
    source, ys, target, _ = shifted_problem
    model = train(source, ys, target, 3, TrainConfig(method="dann", hidden=32, batch_size=32, epochs=2))
    where = model.save(tmp_path / "model")
    assert {p.name for p in where.iterdir()} == {"model.json", "weights.pt"}
    loaded = AdaptedModel.load(where)
    assert np.array_equal(loaded.logits(target), model.logits(target))
    assert np.array_equal(loaded.embed(source), model.embed(source))
    assert loaded.config == model.config
    assert loaded.history == model.history
    assert loaded.describe() == model.describe()
    with pytest.raises(ModelLoadError, match=r"model\.json"):
        AdaptedModel.load(tmp_path / "nowhere")


def test_outputs_shapes_and_probabilities(shifted_problem) -> None:
    source, ys, target, _ = shifted_problem
    model = train(source, ys, target, 3, TrainConfig(method="source_only", hidden=16, batch_size=64, epochs=1))
    logits = model.logits(target)
    assert logits.shape == (len(target), 3) and logits.dtype == np.float32
    assert model.embed(target).shape == (len(target), 16)
    for temperature in (1.0, 2.5):
        proba = model.predict_proba(target, temperature=temperature)
        assert np.allclose(proba, softmax(logits.astype(np.float64) / temperature, axis=1), atol=1e-6)
    # a higher temperature flattens every distribution
    assert (model.predict_proba(target, 3.0).max(1) <= model.predict_proba(target).max(1) + 1e-7).all()
    with pytest.raises(ConfigError, match="temperature"):
        model.predict_proba(target, temperature=0.0)
    with pytest.raises(StageError, match="trained on modalities"):
        model.logits(MultiModal.complete(image=np.zeros((2, 5), dtype=np.float32)))
    described = model.describe()
    assert described["method"] == "source_only" and described["fusion"] == "early"
    assert described["n_params"] == sum(p.numel() for p in model.network.parameters())
    assert described["input_dim"] == 32 + 1


def test_missing_text_modality_in_both_domains(make_shifted) -> None:
    source, ys, target, yt = make_shifted(seed=3, n=120)
    rng = np.random.default_rng(0)

    def with_text(mm: MultiModal, y: np.ndarray) -> MultiModal:
        # the text block also tells the class, but a third of the products have no text
        text = np.eye(3, dtype=np.float32)[y] * 2 + rng.normal(size=(len(y), 3)).astype(np.float32)
        present = rng.random(len(y)) > 1 / 3
        text[~present] = np.nan
        return MultiModal(
            blocks={"image": mm.blocks["image"], "text": text},
            present={"image": mm.present["image"], "text": present},
        )

    source2, target2 = with_text(source, ys), with_text(target, yt)
    model = train(source2, ys, target2, 3, TrainConfig(method="dann", hidden=32, batch_size=32, epochs=5))
    proba = model.predict_proba(target2)
    assert np.isfinite(proba).all()
    assert np.allclose(proba.sum(1), 1.0, atol=1e-5)
    missing = ~target2.present["text"]
    assert missing.any()
    # a product without text gets the same prediction whatever garbage its text row held
    garbage = MultiModal(
        blocks={"image": target2.blocks["image"], "text": np.where(missing[:, None], 123.0, target2.blocks["text"])},
        present=target2.present,
    )
    assert np.array_equal(model.logits(garbage), model.logits(target2))
    # and the text is used when present: dropping it changes some predictions' scores
    no_text = MultiModal(
        blocks=target2.blocks, present={"image": target2.present["image"], "text": np.zeros(len(yt), bool)}
    )
    assert not np.allclose(model.logits(no_text), model.logits(target2))


@pytest.mark.parametrize("method", list_methods())
def test_every_registered_method_trains_and_round_trips(method: str, tmp_path: Path, make_shifted) -> None:
    source, ys, target, _ = make_shifted(seed=1, n=40, dim=6)
    for sampling in ("plain", "balanced"):
        cfg = TrainConfig(method=method, hidden=8, batch_size=16, epochs=2, sampling=sampling, norm="batch")
        model = train(source, ys, target, 3, cfg)
        assert np.isfinite(model.logits(target)).all()
        assert len(model.history) == 2
    loaded = AdaptedModel.load(model.save(tmp_path / method))
    assert np.array_equal(loaded.logits(target), model.logits(target))
    assert METHODS.get(method).__doc__, f"method {method!r} needs a docstring citing its paper"


def test_source_only_trains_without_target_rows(make_shifted) -> None:
    source, ys, _, _ = make_shifted(seed=2, n=30, dim=4)
    empty = source.subset(np.array([], dtype=np.int64))
    model = train(source, ys, empty, 3, TrainConfig(method="source_only", hidden=8, epochs=1))
    assert model.logits(source).shape == (30, 3)
    with pytest.raises(StageError, match="target domain has no rows"):
        train(source, ys, empty, 3, TrainConfig(method="dann", hidden=8, epochs=1))


def test_unknown_names_raise_listing_valid_ones() -> None:
    with pytest.raises(UnknownComponentError, match=r"dann.*source_only"):
        TrainConfig(method="dan-typo")
    with pytest.raises(UnknownComponentError, match="early"):
        TrainConfig(fusion="latte")
    assert TrainConfig(method="DANN").method == "DANN"  # registry lookups ignore case


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"hidden": 0}, "hidden"),
        ({"epochs": 2.5}, "epochs"),
        ({"lr": 0.0}, "lr"),
        ({"dropout": 1.0}, "dropout"),
        ({"norm": "group"}, "norm"),
        ({"sampling": "stratified"}, "sampling"),
        ({"tradeoff": float("nan")}, "tradeoff"),
    ],
)
def test_bad_config_values_raise_config_error(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**kwargs)


def test_config_round_trips_through_a_dict() -> None:
    cfg = TrainConfig(method="source_only", hidden=12, seed=3)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown TrainConfig key"):
        TrainConfig.from_dict({**cfg.to_dict(), "momentum": 0.9})


def test_bad_labels_and_mismatched_domains_raise_stage_error(make_shifted) -> None:
    source, ys, target, _ = make_shifted(seed=4, n=20, dim=4)
    cfg = TrainConfig(hidden=8, epochs=1)
    with pytest.raises(StageError, match=r"lie in \[0, 3\)"):
        train(source, ys + 1, target, 3, cfg)
    with pytest.raises(StageError, match="shape"):
        train(source, ys[:-1], target, 3, cfg)
    with pytest.raises(StageError, match="integer class indices"):
        train(source, ys.astype(float), target, 3, cfg)
    with pytest.raises(StageError, match="same modalities"):
        train(source, ys, MultiModal.complete(text=np.zeros((5, 4))), 3, cfg)
    with pytest.raises(StageError, match="n_classes"):
        train(source, ys, target, 1, cfg)


def test_pada_weights_fade_the_classes_the_target_lacks(make_shifted) -> None:
    import torch

    from prodkg.adaptation.dann import DomainAdversarialLoss
    from prodkg.adaptation.loop import train_method

    xs, ys, xt, yt = make_shifted(seed=2, n=240, dim=8, separation=5.0, shift=1.0)
    partial = np.flatnonzero(yt != 2)  # a partial catalog: the target holds classes 0 and 1 only
    config = TrainConfig(method="pada", hidden=16, epochs=15, seed=0)
    model = train_method(xs, ys, xt.subset(partial), 3, config)
    assert model.history[-1]["min_class_weight"] < 0.75 and model.history[0]["min_class_weight"] > 0.9
    # the weighted discriminator loss: source side a weighted mean of per-row BCE, target side a plain mean
    torch.manual_seed(0)
    loss = DomainAdversarialLoss(torch.nn.Linear(4, 1))
    f_s, f_t, w = torch.randn(5, 4), torch.randn(3, 4), torch.tensor([1.0, 0.0, 0.5, 1.0, 0.2])
    d_s, d_t = loss.discriminator(f_s).squeeze(1), loss.discriminator(f_t).squeeze(1)
    ref_s = (w * torch.nn.functional.softplus(-d_s)).sum() / w.sum()
    ref_t = torch.nn.functional.softplus(d_t).mean()
    assert loss(f_s, f_t, w).item() == pytest.approx((0.5 * (ref_s + ref_t)).item(), rel=1e-5)
    assert loss(f_s, f_t, torch.ones(5)).item() == pytest.approx(loss(f_s, f_t).item(), rel=1e-6)
