"""extract_features end to end: caching, deduplication, bad and absent items, the registry's errors."""

from __future__ import annotations

import numpy as np
import pytest

from prodkg.extractors import ENCODERS, FeatureCache, ItemError, content_hash, extract_features, get_encoder, list_encoders
from prodkg.extractors.sources import ImageLimits
from prodkg.errors import ConfigError, UnknownComponentError


def test_second_run_is_served_from_cache(lite0, image_set, tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    first = extract_features(image_set, lite0, cache=cache, progress=False)
    second = extract_features(image_set, lite0, cache=cache, progress=False)
    assert (first.n_computed, first.n_cached) == (4, 0)
    assert (second.n_computed, second.n_cached) == (4 - 4, 4)
    np.testing.assert_array_equal(first.features, second.features)
    assert second.ok.all() and second.encoder_id == lite0.encoder_id
    assert cache.count(lite0.encoder_id) == 4


def test_changed_file_is_recomputed(lite0, make_image, tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    path = make_image("product.png", "checker")
    before = extract_features([path], lite0, cache=cache, progress=False)
    make_image("product.png", "rings")  # same path, new picture
    after = extract_features([path], lite0, cache=cache, progress=False)
    assert (after.n_computed, after.n_cached) == (1, 0)
    assert not np.allclose(before.features, after.features)


def test_identical_content_is_encoded_once(lite0, make_image, tmp_path):
    a = make_image("a.png", "rings")
    b = make_image("b.png", "rings")  # same bytes, other name
    c = make_image("c.png", "red")
    result = extract_features([a, c, b, a], lite0, progress=False)
    assert result.n_computed == 2
    np.testing.assert_array_equal(result.features[0], result.features[2])
    np.testing.assert_array_equal(result.features[0], result.features[3])


def test_other_encoder_id_does_not_reuse_vectors(lite0, image_set, tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    extract_features(image_set, lite0, cache=cache, progress=False)
    bf16 = get_encoder("efficientnet_lite0", precision="bf16")
    assert bf16.encoder_id != lite0.encoder_id
    other = extract_features(image_set[:1], bf16, cache=cache, progress=False)
    assert (other.n_computed, other.n_cached) == (1, 0)


def test_bad_images_are_reported_and_do_not_spoil_the_batch(lite0, image_set, tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    full = (tmp_path / "full.jpg")
    import PIL.Image

    PIL.Image.open(image_set[1]).resize((256, 256)).save(full, quality=95)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("this is a text file, not a JPEG")
    missing = tmp_path / "missing.jpg"

    items = [image_set[0], str(empty), str(truncated), None, str(not_an_image), str(missing), "", image_set[2]]
    cache = FeatureCache(tmp_path / "cache")
    result = extract_features(items, lite0, cache=cache, batch_size=3, progress=False)

    assert result.ok.tolist() == [True, False, False, False, False, False, False, True]
    assert set(result.errors) == {1, 2, 4, 5}  # absent items (None, "") are not errors
    assert "empty" in result.errors[1] and "empty.jpg" in result.errors[1]
    assert "truncated" in result.errors[2].lower()
    assert "cannot identify image file" in result.errors[4]
    assert "not found" in result.errors[5]
    assert (result.features[~result.ok] == 0).all()
    good = extract_features([image_set[0], image_set[2]], lite0, progress=False).features
    np.testing.assert_allclose(result.features[[0, 7]], good, rtol=1e-4, atol=1e-5)
    assert cache.count(lite0.encoder_id) == 2  # failures are never cached


def test_text_absent_items_and_dedup(minilm):
    result = extract_features(["red apple", None, "   ", "red apple", float("nan")], minilm, progress=False)
    assert result.ok.tolist() == [True, False, False, True, False]
    assert result.errors == {} and result.n_computed == 1


def test_all_absent_gives_empty_result(lite0):
    result = extract_features([None, None], lite0, progress=False)
    assert result.features.shape == (2, 1280) and not result.ok.any() and result.n_computed == 0


def test_content_hash():
    assert content_hash("abc", "text") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    with pytest.raises(ItemError, match="not found"):
        content_hash("/no/such/file.jpg", "image")
    with pytest.raises(ValueError, match="modality"):
        content_hash("abc", "audio")


def test_unknown_encoder_lists_valid_names():
    with pytest.raises(UnknownComponentError) as info:
        get_encoder("vgg16")
    for name in ("efficientnet_lite0", "resnet18", "resnet50", "hf_text", "minilm"):
        assert name in str(info.value)
    assert set(list_encoders()) >= {"efficientnet_lite0", "resnet18", "resnet50", "hf_text", "minilm"}
    assert "text" in ENCODERS  # alias of hf_text


def test_unknown_option_and_bad_precision_are_config_errors():
    with pytest.raises(ConfigError, match="checkpoint"):
        get_encoder("efficientnet_lite0", weigths="x")
    with pytest.raises(ConfigError, match="fp16"):
        get_encoder("efficientnet_lite0", precision="fp16")


def test_auto_precision_is_bf16_only_where_measured_safe_and_native(lite0, monkeypatch):
    import torch

    import prodkg.extractors.base as base

    cpu = torch.device("cpu")
    for native in (False, True):
        monkeypatch.setattr(base, "native_bf16", lambda device, native=native: native)
        assert base.resolve_precision("auto", cpu, bf16_ok=False) == "fp32"
        assert base.resolve_precision("auto", cpu, bf16_ok=True) == ("bf16" if native else "fp32")
        assert base.resolve_precision("fp32", cpu, bf16_ok=True) == "fp32"
        assert base.resolve_precision("bf16", cpu, bf16_ok=False) == "bf16"  # asked for explicitly
    # ResNet has no offline ImageNet weights to measure bf16 on, so "auto" keeps it in fp32 everywhere
    assert not ENCODERS.get("resnet50").bf16_ok
    monkeypatch.undo()
    assert get_encoder("efficientnet_lite0").precision == ("bf16" if base.native_bf16(cpu) else "fp32")


def test_bad_arguments(lite0):
    with pytest.raises(TypeError, match="single string"):
        extract_features("a.jpg", lite0)
    with pytest.raises(ValueError, match="batch_size"):
        extract_features([], lite0, batch_size=0)


def test_worker_processes_give_the_same_result(lite0, image_set, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    items = [*image_set, str(broken)]
    in_process = extract_features(items, lite0, batch_size=2, progress=False)
    workers = extract_features(items, lite0, batch_size=2, num_workers=2, progress=False)
    np.testing.assert_array_equal(in_process.ok, workers.ok)
    assert workers.errors.keys() == {4}
    np.testing.assert_allclose(in_process.features, workers.features, rtol=1e-5, atol=1e-6)


def test_fsspec_urls_are_read_like_paths(lite0, image_set):
    fsspec = pytest.importorskip("fsspec")
    with open(image_set[3], "rb") as src, fsspec.open("memory://catalog/rings.jpg", "wb") as dst:
        dst.write(src.read())
    try:
        # schemes other than http(s) are read only when listed (extractors/sources.py)
        refused = extract_features(["memory://catalog/rings.jpg"], lite0, progress=False)
        result = extract_features(["memory://catalog/rings.jpg", "memory://catalog/absent.jpg", image_set[3]],
                                  lite0, progress=False, limits=ImageLimits(fsspec_schemes=("memory",)))
    finally:
        fsspec.filesystem("memory").rm("memory://catalog", recursive=True)
    assert "URL scheme 'memory' is not read" in refused.errors[0]
    assert result.ok.tolist() == [True, False, True]
    assert "not found" in result.errors[1]
    np.testing.assert_array_equal(result.features[0], result.features[2])
    assert result.n_computed == 1  # same bytes as the local file


# Every registered encoder must be covered by a test in this folder; add yours here with its tests.
# efficientnet_lite0_lite2: tests/extractors/test_image_concat.py; ngrams, minilm_ngrams: tests/extractors/test_text_ngrams.py
TESTED_ENCODERS = {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "efficientnet_lite0_lite2", "resnet18", "resnet50", "hf_text", "minilm",
                   "ngrams", "minilm_ngrams"}


def test_every_registered_encoder_is_tested():
    assert set(list_encoders()) <= TESTED_ENCODERS, set(list_encoders()) - TESTED_ENCODERS


def test_package_never_imports_orchestration_or_rdf():
    import ast
    from pathlib import Path

    import prodkg.extractors as extractors

    banned = ("prefect", "rdflib", "pyoxigraph", "prodkg.flows", "prodkg.kb")
    for source in Path(extractors.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules = {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                modules = {node.module or ""}
            else:
                continue
            bad = {m for m in modules if any(m == b or m.startswith(b + ".") for b in banned)}
            assert not bad, f"{source.name} imports {bad}"


def test_a_shard_encodes_its_few_missing_items_in_whole_batches(minilm, tmp_path, monkeypatch):
    """A nightly re-run finds most of a shard in the cache: the rest is encoded in full batches, not a few per step."""
    from prodkg.extractors.stage import ExtractSettings, extract_shard

    items = [f"product number {i} with a title" for i in range(200)]
    cache = FeatureCache(tmp_path / "cache")
    changed = set(range(5, 200, 20))  # 10 items, spread over the shard
    extract_features([t for i, t in enumerate(items) if i not in changed], minilm, cache=cache, progress=False)
    sizes = []
    encode = minilm.encode_batch
    monkeypatch.setattr(minilm, "encode_batch", lambda batch: sizes.append(len(batch)) or encode(batch))
    out = extract_shard(items, ExtractSettings(batch_size=8, progress=False), "text", cache, minilm)
    assert sorted(sizes, reverse=True) == [8, 2] and out["n_computed"] == 10 and out["n_cached"] == 190
    monkeypatch.undo()
    reference = extract_features(items, minilm, progress=False).features  # every item encoded afresh, no cache
    np.testing.assert_allclose(out["features"], reference, atol=1e-5)
    done = []
    extract_features(items + [None], minilm, cache=cache, batch_size=8, progress=False, on_progress=done.append)
    assert sum(done) == 201


def test_a_shard_holds_the_items_it_has_and_a_sparse_modality_is_assembled_packed(tmp_path):
    """Absent items (None, blank, NaN) take no row of a shard's array; stacked, a modality few products have is packed,
    a modality most have is dense, and both read exactly as every item encoded in place with zeros elsewhere."""
    import pandas as pd

    from prodkg.blocks import PackedBlock
    from prodkg.extractors import get_encoder
    from prodkg.extractors.stage import ExtractSettings, assemble_features, extract_shard
    from prodkg.extractors.text_ngrams import ngram_vector

    ngrams = get_encoder("ngrams")
    n = 30
    sparse = [f"green tea number {i}" if i % 5 == 0 else (None, "  ", float("nan"))[i % 3] for i in range(n)]
    dense = [None if i in (3, 17) else f"oat milk {i}" for i in range(n)]
    settings = ExtractSettings(text_encoder="ngrams", progress=False)
    parts = {m: [extract_shard(items[a:b], settings, "text", FeatureCache(tmp_path / m), ngrams) for a, b in ((0, 12), (12, 30))]
             for m, items in (("sparse", sparse), ("dense", dense))}
    first = parts["sparse"][0]
    assert len(first["features"]) == 3 and first["rows"].tolist() == [0, 5, 10] and first["n_absent"] == 9
    assert parts["dense"][1]["rows"].tolist() == [i for i in range(18) if i != 5]
    products = pd.DataFrame({"source_row": range(n), "product_id": [f"p{i}" for i in range(n)], "image": None, "title": "t"})
    out = assemble_features(products, parts)
    for m, items in (("sparse", sparse), ("dense", dense)):
        has = np.array([isinstance(t, str) and bool(t.strip()) for t in items])
        reference = np.zeros((n, ngrams.dim), np.float32)
        reference[has] = np.stack([ngram_vector(t) for t in np.asarray(items, object)[has]])
        np.testing.assert_allclose(np.asarray(out.features.blocks[m]), reference, atol=1e-6)
        np.testing.assert_array_equal(out.features.present[m], has)
        assert out.stats[m]["absent"] == n - has.sum() and out.stats[m]["present"] == has.sum()
    assert isinstance(out.features.blocks["sparse"], PackedBlock) and isinstance(out.features.blocks["dense"], np.ndarray)
