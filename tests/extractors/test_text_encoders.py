"""Text encoders: the bundled all-MiniLM-L6-v2 through the generic Hugging Face path."""

from __future__ import annotations

import numpy as np
import pytest

from prodkg.extractors import ItemError, extract_features, get_encoder
from prodkg.extractors.text_hf import bundled_minilm_path, normalise_text
from prodkg.errors import ConfigError, ModelLoadError

TEXTS = [
    "Stainless steel insulated water bottle, 750 ml, keeps drinks cold for 24 hours",
    "Vacuum-insulated metal drinking flask for hot and cold beverages",
    "Organic bananas, one bunch",
    "Fresh ripe yellow bananas from Ecuador",
    "Wireless optical computer mouse with USB receiver",
]


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_similar_products_are_closer_than_unrelated_ones(minilm):
    result = extract_features(TEXTS, minilm, progress=False)
    assert result.ok.all() and result.features.shape == (5, 384)
    f = result.features
    assert _cos(f[0], f[1]) > max(_cos(f[0], f[2]), _cos(f[0], f[3]), _cos(f[0], f[4]))
    assert _cos(f[2], f[3]) > max(_cos(f[2], f[0]), _cos(f[2], f[1]), _cos(f[2], f[4]))


def test_embeddings_are_unit_norm(minilm):
    f = extract_features(TEXTS, minilm, progress=False).features
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, atol=1e-5)


def test_length_sorting_keeps_row_order(minilm):
    # lengths deliberately out of order, so batches are built in a different order than the rows
    texts = ["mug", TEXTS[0], "red apple", TEXTS[1] + " " + TEXTS[4], "usb", TEXTS[3]]
    together = extract_features(texts, minilm, batch_size=2, progress=False).features
    alone = np.stack([minilm.encode_batch([minilm.load_item(t)])[0] for t in texts])
    np.testing.assert_allclose(together, alone, atol=2e-5)


def test_matches_sentence_transformers_reference(minilm):
    st = pytest.importorskip("sentence_transformers")
    reference = st.SentenceTransformer(bundled_minilm_path(), device="cpu").encode(
        TEXTS, normalize_embeddings=True, convert_to_numpy=True
    )
    ours = extract_features(TEXTS, minilm, progress=False).features
    np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_truncation_at_max_length(minilm):
    long_text = " ".join(["keyboard"] * 600)
    f = extract_features([long_text], minilm, progress=False)
    assert f.ok.all() and np.isfinite(f.features).all()


def test_hf_text_default_is_minilm_and_shares_its_cache_identity(minilm):
    generic = get_encoder("text", precision="fp32")
    assert generic.encoder_id == minilm.encoder_id
    assert generic.encoder_id.startswith("hf_text/all-MiniLM-L6-v2/")
    explicit = get_encoder("hf_text", model=bundled_minilm_path(), precision="fp32")
    assert explicit.encoder_id == minilm.encoder_id
    assert get_encoder("minilm", max_length=64, precision="fp32").encoder_id != minilm.encoder_id


def test_text_normalisation():
    assert normalise_text("  Ｃａｆé\u00a0\tlatte \n ") == "Café latte"


def test_non_string_text_is_an_item_error(minilm):
    with pytest.raises(ItemError, match="string"):
        minilm.load_item(42)


def test_unknown_model_offline_is_a_model_load_error():
    with pytest.raises(ModelLoadError, match="model="):
        get_encoder("hf_text", model="no-such-org/no-such-model", offline=True)


def test_missing_local_model_folder(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        get_encoder("hf_text", model=str(tmp_path / "nothing-here"))


def test_auto_precision_follows_measurement_and_hardware(monkeypatch):
    import prodkg.extractors.base as base_module

    monkeypatch.setattr(base_module, "native_bf16", lambda device: True)
    assert get_encoder("minilm").precision == "bf16"  # measured cosine >= 0.999
    # measured with the stem and first two blocks in fp32: cosine min 0.9996 (whole-network autocast: 0.9968)
    assert get_encoder("efficientnet_lite0").precision == "bf16"
    monkeypatch.setattr(base_module, "native_bf16", lambda device: False)
    assert get_encoder("minilm").precision == "fp32"  # emulated bf16 is slower than fp32
    assert get_encoder("efficientnet_lite0").precision == "fp32"


def test_max_length_beyond_model_positions_is_refused():
    with pytest.raises(ConfigError, match="512"):
        get_encoder("minilm", max_length=4096)
