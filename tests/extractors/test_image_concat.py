"""The side-by-side image encoder (``efficientnet_lite0_lite2``): each half of its vector is exactly what its encoder
gives alone, through extraction, the feature cache and the shelf-style views alike."""

from __future__ import annotations

import numpy as np
import pytest

from prodkg.extractors import FeatureCache, extract_features, get_encoder, lazy_encoder
from prodkg.errors import ConfigError
from prodkg.extractors.views import extract_views


@pytest.fixture(scope="module")
def both():
    return get_encoder("efficientnet_lite0_lite2", precision="fp32")


@pytest.fixture(scope="module")
def lite2():
    return get_encoder("efficientnet_lite2", precision="fp32")


def test_each_half_is_its_encoder_alone(both, lite0, lite2, image_set, tmp_path):
    assert both.dim == lite0.dim + lite2.dim == 2560 and both.precision == "fp32"
    cache = FeatureCache(tmp_path / "cache")
    got = extract_features(image_set, both, cache=cache, progress=False)
    alone = [extract_features(image_set, e, progress=False).features for e in (lite0, lite2)]
    assert got.ok.all() and got.features.shape == (len(image_set), 2560)
    np.testing.assert_allclose(got.features[:, :1280], alone[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.features[:, 1280:], alone[1], rtol=1e-5, atol=1e-5)
    # cached under an identity naming both encoders, never under either one's
    assert both.encoder_id == f"efficientnet_lite0_lite2[{lite0.encoder_id}|{lite2.encoder_id}]"
    assert cache.count(both.encoder_id) == len(image_set) and cache.count(lite0.encoder_id) == 0
    again = extract_features(image_set, both, cache=cache, progress=False)
    assert again.n_cached == len(image_set) and np.array_equal(again.features, got.features)


def test_identity_from_the_weight_files_is_the_built_one(both, lite0):
    lazy = lazy_encoder("efficientnet_lite0_lite2", precision="fp32")
    assert (lazy.encoder_id, lazy.dim, lazy.precision) == (both.encoder_id, both.dim, both.precision)
    assert not lazy.loaded
    # parts that resolve a precision differently say so, and that recorded precision builds the same encoder again
    mixed = lazy_encoder("efficientnet_lite0_lite2", precision="mixed:bf16,fp32")
    assert mixed.precision == "mixed:bf16,fp32" and mixed.encoder_id.endswith("/bf16-fp32first2|" + both.encoder_id.split("|")[1])
    with pytest.raises(ConfigError, match="names 3 precisions for 2 encoders"):
        lazy_encoder("efficientnet_lite0_lite2", precision="mixed:fp32,fp32,fp32")


def test_views_are_the_parts_views_side_by_side(both, lite2, image_set):
    # a view is decoded once, by PIL, and each part preprocesses it its own way: Lite0's half is what Lite0 gives
    # with its PIL decoder (its default turbo decoder gives vectors within cosine 0.999 of those)
    lite0_pil = get_encoder("efficientnet_lite0", precision="fp32", decoder="pil")
    got = extract_views(image_set[:2], both, 2, seed=0)
    alone = [extract_views(image_set[:2], e, 2, seed=0) for e in (lite0_pil, lite2)]
    assert np.array_equal(got.of, alone[0].of) and got.features.shape == (4, 2560)
    np.testing.assert_allclose(got.features, np.hstack([a.features for a in alone]), rtol=1e-5, atol=1e-5)


def test_fine_tuning_is_refused_with_it():
    from prodkg.flows.config import RunConfig

    with pytest.raises(ConfigError, match="^finetune_backbone needs an image encoder with one backbone"):
        RunConfig(dataset="office-caltech-10", source=["amazon"], target=["webcam"], finetune=True, image_encoder="efficientnet_lite0_lite2")
