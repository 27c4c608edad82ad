"""Backbone fine-tuning on a small real slice of office-caltech-10, for EfficientNet-Lite0 and a ResNet-18 checkpoint.

The reference computation is the encoder's own full forward (``EfficientNet.extract_features`` /
``ResNet.forward``) with the fine-tuned block loaded into it: the cached-activation path must agree.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision

from prodkg.adaptation.finetune import (
    FinetuneConfig,
    cache_activations,
    finetune_backbone,
    finetune_on_activations,
)
from prodkg.catalogs import load_dataset
from prodkg.extractors import FeatureCache, extract_features, get_encoder
from prodkg.extractors.image_cnn import FineTunedImageEncoder
from prodkg.errors import ConfigError, ModelLoadError, StageError

# fine-tunes two real encoders' last block on real photos: ~20 s together, mostly in the module fixtures
pytestmark = [pytest.mark.dataset, pytest.mark.slow]

CLASSES = ["backpack", "bike", "mug"]
CONFIG = FinetuneConfig(epochs=2, batch_size=8, seed=0)


@pytest.fixture(scope="module")
def office_items(data_home):
    """4 amazon (source, labelled) and 3 webcam (target) images per class, then one product without an image
    and one whose image file is missing."""
    frame = load_dataset("office-caltech-10", data_home).frame
    parts = [frame[(frame.domain == d) & (frame.category == c)].head(n) for d, n in (("amazon", 4), ("webcam", 3)) for c in CLASSES]
    rows = pd.concat(parts)
    items = [*rows["image"].tolist(), None, str(data_home / "office-caltech-10" / "no-such-image.jpg")]
    is_source = np.array([*(rows["domain"] == "amazon").tolist(), True, False])
    is_target = ~is_source
    labels = np.array([CLASSES.index(c) if s else -1 for c, s in zip(rows["category"], is_source)] + [0, -1], np.int64)
    return {"items": items, "labels": labels, "is_source": is_source, "is_target": is_target}


def _resnet18(path_dir) -> str:
    torch.manual_seed(0)  # random init: no ImageNet ResNet weights are reachable offline
    path = path_dir / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return str(path)


@pytest.fixture(scope="module", params=["efficientnet_lite0", "resnet18"])
def setup(request, office_items, tmp_path_factory):
    """The encoder, its trunk activations, a snapshot of its weights, and one fine-tuning result."""
    torch.set_num_threads(1)
    if request.param == "resnet18":
        encoder = get_encoder("resnet18", checkpoint=_resnet18(tmp_path_factory.mktemp("ckpt")), precision="fp32")
    else:
        encoder = get_encoder("efficientnet_lite0", precision="fp32")
    before = {k: v.clone() for k, v in encoder.model.state_dict().items()}
    acts = cache_activations(encoder, office_items["items"])
    result = finetune_on_activations(encoder, acts, office_items["labels"], office_items["is_source"],
                                     office_items["is_target"], len(CLASSES), CONFIG, return_frozen=True)
    return {"name": request.param, "encoder": encoder, "acts": acts, "result": result, "before": before}


def fresh_encoder(setup, tmp_path):
    """A second, independent instance of the same encoder (same weights file)."""
    if setup["name"] == "resnet18":
        return get_encoder("resnet18", checkpoint=_resnet18(tmp_path), precision="fp32")
    return get_encoder("efficientnet_lite0", precision="fp32")


def test_absent_and_unreadable_images(setup, office_items):
    acts, result = setup["acts"], setup["result"]
    n = len(office_items["items"])
    assert acts.ok.tolist() == [True] * (n - 2) + [False, False]
    assert list(acts.errors) == [n - 1] and "not found" in acts.errors[n - 1]  # the absent one is no error
    assert result.n_images == n - 2 and result.n_source == 12 and result.n_target == 9
    assert result.features.shape == (n, setup["encoder"].dim)
    assert not result.features[~result.ok].any()


def test_large_activations_spill_to_a_memory_map(setup, office_items, monkeypatch):
    import prodkg.adaptation.finetune as finetune

    monkeypatch.setattr(finetune, "SPILL_BYTES", 0)
    items = office_items["items"][:3]
    spilled = cache_activations(setup["encoder"], items)
    assert isinstance(spilled.values, np.memmap)
    want = setup["acts"].values[:3]
    np.testing.assert_allclose(np.asarray(spilled.values), want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))


def test_only_the_last_block_changes(setup):
    encoder, result, before = setup["encoder"], setup["result"], setup["before"]
    # the base encoder is untouched: every weight and buffer bit-identical, and still frozen
    after = encoder.model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert not any(p.requires_grad for p in encoder.model.parameters())
    # the fine-tuned encoder runs the very same trunk modules
    assert result.encoder.base is encoder
    # what was trained is exactly the last block; its parameters moved, its BN statistics did not
    block = encoder.last_block().state_dict()
    assert result.block_state.keys() == block.keys()
    moved = [k for k in block if not torch.equal(result.block_state[k], block[k])]
    assert moved, "training changed nothing"
    assert all("running_" not in k and "num_batches" not in k for k in moved), moved
    assert not any(p.requires_grad for p in result.encoder.block.parameters())


def test_cached_activation_path_matches_the_full_encoder(setup, office_items, tmp_path):
    result = setup["result"]
    ok = result.ok
    items = [i for i, k in zip(office_items["items"], ok) if k]
    # reference: an independent encoder with the fine-tuned block loaded into its model, run by its own forward
    ref = fresh_encoder(setup, tmp_path)
    ref.last_block().load_state_dict(result.block_state)
    want = ref.encode_batch([ref.load_item(i) for i in items])
    np.testing.assert_allclose(result.features[ok], want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))
    # and the fine-tuned encoder itself, from image files
    got = result.encoder.encode_batch([result.encoder.load_item(i) for i in items])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def test_before_training_the_block_gives_the_frozen_features(setup, office_items):
    result = setup["result"]
    frozen = extract_features(office_items["items"], setup["encoder"], progress=False)
    np.testing.assert_array_equal(frozen.ok, result.ok)
    want = frozen.features[result.ok]
    np.testing.assert_allclose(result.frozen_features[result.ok], want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))
    assert not np.allclose(result.features[result.ok], want, rtol=1e-3, atol=1e-3)


def test_same_seed_gives_identical_weights(setup, office_items):
    args = (setup["encoder"], setup["acts"], office_items["labels"], office_items["is_source"], office_items["is_target"], len(CLASSES))
    again = finetune_on_activations(*args, CONFIG)
    first = setup["result"]
    assert all(torch.equal(again.block_state[k], first.block_state[k]) for k in first.block_state)
    assert again.weights_hash == first.weights_hash and again.encoder_id == first.encoder_id
    np.testing.assert_array_equal(again.features, first.features)
    assert again.history == first.history
    other = finetune_on_activations(*args, FinetuneConfig(epochs=2, batch_size=8, seed=1))
    assert other.weights_hash != first.weights_hash


def test_fine_tuned_encoder_id_is_distinct_and_keeps_caches_apart(setup, office_items, tmp_path):
    encoder, result = setup["encoder"], setup["result"]
    assert result.encoder_id != encoder.encoder_id
    assert result.encoder_id == f"{encoder.encoder_id}/ft-{result.weights_hash[:12]}"
    items = office_items["items"][:3]
    cache = FeatureCache(tmp_path / "cache")
    tuned = extract_features(items, result.encoder, cache=cache, progress=False)
    frozen = extract_features(items, encoder, cache=cache, progress=False)
    assert tuned.n_computed == 3 and frozen.n_computed == 3 and frozen.n_cached == 0
    assert not np.allclose(tuned.features, frozen.features)


def test_save_and_load_round_trip(setup, tmp_path):
    result = setup["result"]
    path = tmp_path / "block.pt"
    result.encoder.save(path, epochs=2)
    loaded = FineTunedImageEncoder.load(path, setup["encoder"])
    assert loaded.encoder_id == result.encoder_id
    other = get_encoder("efficientnet_lite0" if setup["name"] == "resnet18" else "resnet18",
                        **({"checkpoint": _resnet18(tmp_path)} if setup["name"] != "resnet18" else {}))
    with pytest.raises(ModelLoadError, match="fine-tuned from"):
        FineTunedImageEncoder.load(path, other)


def test_cpu_image_limit_refuses_with_the_numbers(setup, office_items):
    encoder = setup["encoder"]
    n = sum(i is not None for i in office_items["items"])
    args = (office_items["items"], office_items["labels"], office_items["is_source"], office_items["is_target"], len(CLASSES))
    with pytest.raises(ConfigError, match=rf"{n} images, above the CPU limit of 5\b.*force"):
        finetune_backbone(encoder, *args, FinetuneConfig(epochs=1, max_images_cpu=5))
    # forced, a few images go through
    keep = np.zeros(len(office_items["items"]), bool)
    keep[[0, 4, 8, 12, 13]] = True  # one image of each source class, two target images
    few = ([i if k else None for i, k in zip(office_items["items"], keep)], *args[1:])
    result = finetune_backbone(encoder, *few, FinetuneConfig(epochs=1, batch_size=4, max_images_cpu=2, force=True))
    assert result.n_images == 5 and result.device == "cpu"
    assert result.manifest()["images"] == 5


def test_inputs_are_checked(setup, office_items):
    encoder, acts = setup["encoder"], setup["acts"]
    labels = office_items["labels"].copy()
    leaked = labels.copy()
    leaked[office_items["is_target"]] = 0
    with pytest.raises(StageError, match="target labels"):
        finetune_on_activations(encoder, acts, leaked, office_items["is_source"], office_items["is_target"], 3, CONFIG)
    with pytest.raises(StageError, match="needs target images"):
        finetune_on_activations(encoder, acts, labels, office_items["is_source"], np.zeros_like(office_items["is_target"]), 3, CONFIG)
    # supervised-only fine-tuning needs no target
    alone = finetune_on_activations(encoder, acts, labels, office_items["is_source"], np.zeros_like(office_items["is_target"]), 3,
                                    FinetuneConfig(method="source_only", epochs=1, batch_size=8))
    assert alone.n_target == 0 and "domain_accuracy" not in alone.history[-1]
    with pytest.raises(ConfigError, match="method"):
        FinetuneConfig(method="mmd")
    with pytest.raises(ConfigError, match="unknown fine-tuning option"):
        FinetuneConfig.from_dict({"epoch": 3})


def test_manifest_record(setup):
    record = setup["result"].manifest()
    assert record["ran"] and record["device"] == "cpu" and record["epochs"] == 2 and record["seed"] == 0
    assert record["images"] == setup["result"].n_images
    assert len(record["weights_sha256"]) == 64 and record["encoder_id"].endswith(record["weights_sha256"][:12])
    assert set(record["seconds"]) == {"activations", "train", "features", "total"}
    json.dumps(record)  # JSON-ready
