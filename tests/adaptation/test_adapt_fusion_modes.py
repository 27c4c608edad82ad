"""Late and attention fusion against manual computations, with a modality missing, alone and inside a trained network."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from prodkg.adaptation import FUSIONS, MultiModal, TrainConfig, train
from prodkg.adaptation.fusion import AttentionFusion, LateFusion, masked_mean
from prodkg.adaptation.model import AdaptationNetwork


def test_masked_mean_averages_present_modalities_only() -> None:
    stacked = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], [[10.0, 20.0], [30.0, 40.0], [50.0, 60.0]]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    expected = torch.tensor([[5.5, 11.0], [3.0, 4.0], [0.0, 0.0]])
    assert torch.equal(masked_mean(stacked, mask), expected)


def test_attention_fusion_matches_hand_computed_weights_and_zeroes_missing_modalities() -> None:
    # Weights set by hand: identity projections (so z = tanh(x)) and a score vector v = (1, 0) (so s = z[0]).
    fusion = AttentionFusion({"image": 2, "text": 2}, hidden=2)
    with torch.no_grad():
        for proj in fusion.projections:
            proj.weight.copy_(torch.eye(2))
            proj.bias.zero_()
        fusion.score.weight.copy_(torch.tensor([[1.0, 0.0]]))
    half, quarter = math.atanh(0.5), math.atanh(-0.25)
    image = torch.tensor([[half, 0.0], [half, quarter], [1.0, 1.0]])
    text = torch.tensor([[0.0, half], [float("nan"), 5.0], [2.0, 2.0]])
    present = {"image": torch.tensor([True, True, False]), "text": torch.tensor([True, False, False])}
    out = fusion({"image": image, "text": text}, present)
    # row 0: z_image = (0.5, 0), z_text = (0, 0.5); scores 0.5 and 0; weights sigmoid(0.5) and 1 - sigmoid(0.5)
    a = 1.0 / (1.0 + math.exp(-0.5))  # 0.6225
    assert torch.allclose(out[0], torch.tensor([0.5 * a, 0.5 * (1.0 - a)]), atol=1e-6)
    # row 1: text missing (its NaN content ignored): the image gets all the weight, out = tanh(x) = (0.5, -0.25)
    assert torch.allclose(out[1], torch.tensor([0.5, -0.25]), atol=1e-6)
    assert torch.equal(out[2], torch.zeros(2))  # nothing present
    assert torch.allclose(fusion.last_weights, torch.tensor([[a, 1.0 - a], [1.0, 0.0], [0.0, 0.0]]), atol=1e-6)


def _two_modalities(n: int, seed: int, text_present: np.ndarray) -> tuple[MultiModal, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    image = rng.normal(size=(n, 6)) + 6 * np.eye(6)[y]
    text = rng.normal(size=(n, 4)) + 6 * np.eye(4)[y]
    return MultiModal(blocks={"image": image, "text": text}, present={"image": np.ones(n, bool), "text": text_present}), y


def test_late_network_combines_per_modality_heads_and_uses_one_head_when_the_other_is_missing() -> None:
    torch.manual_seed(0)
    net = AdaptationNetwork({"image": 6, "text": 4}, 3, TrainConfig(method="source_only", fusion="late", hidden=8)).eval()
    x, _ = _two_modalities(5, 0, np.array([True, True, False, True, False]))
    blocks = {m: torch.from_numpy(x.blocks[m]) for m in x.modalities}
    present = {m: torch.from_numpy(x.present[m]) for m in x.modalities}
    _, logits = net(blocks, present)
    scaled = net.scaler(blocks)
    img = net.heads[0](net.branches[0](scaled["image"]))
    txt = net.heads[1](net.branches[1](scaled["text"]))
    assert torch.allclose(logits[0], (img[0] + txt[0]) / 2, atol=1e-6)
    assert torch.allclose(logits[2], img[2], atol=1e-6)
    assert isinstance(net.fusion, LateFusion)


@pytest.mark.parametrize("fusion", ["early", "late", "attention"])
def test_every_fusion_trains_when_target_products_lack_the_text(fusion: str, tmp_path) -> None:
    source, ys = _two_modalities(240, 1, np.ones(240, bool))
    target, yt = _two_modalities(200, 2, np.zeros(200, bool))
    config = TrainConfig(method="dann", fusion=fusion, hidden=16, epochs=15, lr=5e-3, dropout=0.1, seed=0)
    model = train(source, ys, target, 3, config)
    acc = (model.predict(target) == yt).mean()
    assert acc > 0.8  # the image alone separates the classes
    again = type(model).load(model.save(tmp_path / fusion))
    np.testing.assert_array_equal(again.logits(target), model.logits(target))


def test_all_three_fusion_modes_are_registered() -> None:
    assert {"early", "late", "attention"} <= set(FUSIONS.names())
