"""The scaling bench's synthetic catalogs: distinct, seeded, valid catalogs; a nightly edit changes exactly its share."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from synth_catalog import changed, synth_catalog  # noqa: E402

pytestmark = pytest.mark.dataset


def test_synthetic_catalog_is_distinct_seeded_and_labelled(data_home):
    frame, taxonomy = synth_catalog(3000, seed=0, home=data_home)
    again, _ = synth_catalog(3000, seed=0, home=data_home)
    assert frame.equals(again)
    assert len(frame) == 3000 and frame["title"].is_unique and frame["product_id"].is_unique
    assert set(frame["domain"]) == {"catalog", "new"} and 0.1 < (frame["domain"] == "new").mean() < 0.3
    concepts = {c for c, _ in taxonomy}
    assert set(frame["category"]) <= concepts  # every label is an aisle of the department → aisle taxonomy
    edited, k = changed(frame, 0.02)
    assert k == 60 and (edited["title"] != frame["title"]).sum() == 60 and edited["product_id"].equals(frame["product_id"])
    with_images, _ = synth_catalog(3000, seed=0, images=0.1, home=data_home)
    share = (with_images["image"] != "").mean()
    assert 0.07 < share < 0.13 and with_images.loc[with_images["image"] != "", "image"].map(lambda p: p.startswith("/")).all()
