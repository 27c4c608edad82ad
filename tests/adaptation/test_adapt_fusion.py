"""Tests of the fusion registry and of early fusion with missing modalities."""

from __future__ import annotations

import pytest
import torch

from prodkg.adaptation import FUSIONS, EarlyFusion, list_fusions
from prodkg.errors import StageError, UnknownComponentError


def test_early_fusion_concatenates_sorted_blocks_then_flags() -> None:
    fusion = EarlyFusion({"text": 3, "image": 2})
    assert fusion.out_dim == 2 + 3 + 2
    image = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    text = torch.tensor([[7.0, 8.0, 9.0], [float("nan")] * 3, [10.0, 11.0, 12.0]])
    present = {"image": torch.tensor([True, True, False]), "text": torch.tensor([True, False, True])}
    out = fusion({"text": text, "image": image}, present)
    expected = torch.tensor(
        [
            [1.0, 2.0, 7.0, 8.0, 9.0, 1.0, 1.0],
            [3.0, 4.0, 0.0, 0.0, 0.0, 1.0, 0.0],  # text missing: zeros (even from NaN input), flag 0
            [0.0, 0.0, 10.0, 11.0, 12.0, 0.0, 1.0],  # image missing
        ]
    )
    assert out.shape == (3, 7)
    assert torch.equal(out, expected)


def test_early_fusion_passes_gradients_only_to_present_rows() -> None:
    fusion = EarlyFusion({"image": 2})
    x = torch.ones(2, 2, requires_grad=True)
    fusion({"image": x}, {"image": torch.tensor([True, False])}).sum().backward()
    assert torch.equal(x.grad, torch.tensor([[1.0, 1.0], [0.0, 0.0]]))


def test_early_fusion_rejects_inputs_that_do_not_match_construction() -> None:
    fusion = EarlyFusion({"image": 2, "text": 3})
    ok_present = {"image": torch.ones(2, dtype=torch.bool), "text": torch.ones(2, dtype=torch.bool)}
    with pytest.raises(StageError, match="modalities"):
        fusion({"image": torch.zeros(2, 2)}, {"image": torch.ones(2, dtype=torch.bool)})
    with pytest.raises(StageError, match=r"\(N, 3\)"):
        fusion({"image": torch.zeros(2, 2), "text": torch.zeros(2, 4)}, ok_present)
    with pytest.raises(StageError, match="rows"):
        fusion({"image": torch.zeros(2, 2), "text": torch.zeros(3, 3)}, ok_present)
    with pytest.raises(StageError, match="positive integer width"):
        EarlyFusion({"image": 0})


def test_fusion_registry() -> None:
    assert "early" in list_fusions()
    assert FUSIONS.get("concat") is EarlyFusion
    with pytest.raises(UnknownComponentError, match="early"):
        FUSIONS.get("late-typo")


@pytest.mark.parametrize("name", list_fusions())
def test_every_registered_fusion_ignores_the_content_of_missing_rows(name: str) -> None:
    fusion = FUSIONS.get(name)({"image": 3, "text": 2}, hidden=8)
    torch.manual_seed(0)
    image, text = torch.randn(4, 3), torch.randn(4, 2)
    present = {"image": torch.tensor([True, True, False, True]), "text": torch.tensor([True, False, True, False])}
    out = fusion({"image": image, "text": text}, present)
    assert out.shape == (4, fusion.out_dim)
    spoilt_text = text.clone()
    spoilt_text[~present["text"]] = float("nan")
    spoilt_image = image.clone()
    spoilt_image[~present["image"]] = 1e6
    assert torch.equal(fusion({"image": spoilt_image, "text": spoilt_text}, present), out)
