"""`--source-views K`: the run setting, and a run on the sample catalog that trains on the views and caches them."""

from __future__ import annotations

import pytest

import prodkg
from prodkg.errors import ConfigError
from prodkg.flows.config import RunConfig


def _cfg(**kw) -> RunConfig:
    return RunConfig(catalog="data/sample/catalog.csv", source=["webshop"], target=["supplier"], **kw)


def test_source_views_setting_is_checked_and_off_by_default():
    assert _cfg().source_views == 0
    # off, the setting leaves the config hash as it was before it existed; on, it changes it
    assert _cfg(source_views=0).fingerprint() == _cfg().fingerprint() != _cfg(source_views=4).fingerprint()
    with pytest.raises(ConfigError, match="source_views"):
        _cfg(source_views=-1)
    with pytest.raises(ConfigError, match="source_views and finetune_backbone"):
        _cfg(source_views=4, finetune=True)


@pytest.mark.slow
def test_a_run_with_source_views_trains_on_them_and_reuses_them(sample_catalog, tmp_path):
    out = tmp_path / "out"
    first = prodkg.run(catalog=str(sample_catalog), source="webshop", target="supplier", out=str(out), source_views=2, epochs=5,
                       use_prefect=False, progress=False)
    views = first["source_views"]
    n_source = first["counts"]["source_products"]
    assert views["views_per_image"] == 2 and views["images"] == n_source and views["views"] == 2 * n_source
    assert views["cached"] == 0 and 0 < views["computed"] <= views["views"]  # identical photos share their views
    category = first["metrics"]["category"]
    # views are training rows of the heads (the sample has 2-4 products per class: some are held out with their views)
    assert category["n_source_train_views"] == 2 * (category["n_source_train"] - category["n_source_train_views"])
    assert category["n_source_train"] + category["n_source_val"] * 3 == 3 * n_source
    # they are never products: the graph and the predictions hold the catalog's products only
    assert first["counts"]["products"] == 54
    import pandas as pd

    preds = pd.read_parquet(tmp_path / "out" / "runs" / first["run_id"] / "predictions.parquet")
    assert not preds["product_id"].str.contains("#view").any()
    again = prodkg.run(catalog=str(sample_catalog), source="webshop", target="supplier", out=str(out), source_views=2, epochs=5,
                       use_prefect=False, progress=False, full_check=True, reuse_heads=False)
    assert again["source_views"]["computed"] == 0 and again["source_views"]["cached"] == views["views"]
    assert again["metrics"]["category"]["target_accuracy"] == category["target_accuracy"]


def test_self_training_setting_is_checked_and_off_by_default():
    assert _cfg().self_training == 0 and _cfg().predict_settings().self_training == 0
    assert _cfg(self_training=0).fingerprint() == _cfg().fingerprint() != _cfg(self_training=2).fingerprint()
    assert _cfg(self_training=2).predict_settings().self_training == 2
    with pytest.raises(ConfigError, match="self_training"):
        _cfg(self_training=9)
