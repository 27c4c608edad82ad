"""The hashed n-gram text encoder (``ngrams``) and MiniLM beside it (``minilm_ngrams``).

The vectors are checked against a plain re-statement of feature hashing written here from its definition (grams
listed by hand, counted with Counter, CRC-32 buckets and signs), not against the module's own loops."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import zlib
from collections import Counter

import numpy as np
import pytest

from prodkg.errors import ConfigError
from prodkg.extractors import FeatureCache, extract_features, get_encoder, lazy_encoder
from prodkg.extractors.base import ItemError
from prodkg.extractors.text_ngrams import ngram_vector

TITLES = ["Organic Whole Milk, 1 gal", "Whole milk organic 1 GAL", "Chocolate Chip Cookies Family Size",
          "Dark chocolate chip cookie", "Sparkling Water Lime", "Lime sparkling water (12 x 355 ml)"]


def reference(text: str, dim: int, longest_word_gram: int, shortest: int, longest: int) -> np.ndarray:
    words = "".join(ch if ch.isalnum() or ch == "_" else " " for ch in text.lower()).split()
    grams = []
    for n in range(1, longest_word_gram + 1):
        grams += ["w:" + " ".join(words[i:i + n]) for i in range(len(words) - n + 1)]
    for w in words:
        padded = "<" + w + ">"
        for n in range(shortest, longest + 1):
            grams += ["c:" + padded[i:i + n] for i in range(len(padded) - n + 1)] if shortest else []
    v = np.zeros(dim)
    for gram, count in Counter(grams).items():
        h = zlib.crc32(gram.encode("utf-8"))
        v[h % dim] += (1 if h >= 2 ** 31 else -1) * (1 + math.log(count))
    return v / np.linalg.norm(v) if np.linalg.norm(v) else v


@pytest.mark.parametrize("dim,words,chars", [(1024, 2, (3, 5)), (64, 1, (2, 3)), (4096, 3, (0, 0))])
def test_vectors_match_feature_hashing_from_its_definition(dim, words, chars):
    for title in TITLES:
        np.testing.assert_allclose(ngram_vector(title, dim, words, chars), reference(title, dim, words, *chars), atol=1e-6)


def test_one_word_without_character_grams_is_one_signed_bucket():
    v = ngram_vector("milk", 1024, 1, (0, 0))
    h = zlib.crc32(b"w:milk")
    assert np.flatnonzero(v).tolist() == [h % 1024] and v[h % 1024] == (1.0 if h >= 2 ** 31 else -1.0)


def test_case_spacing_and_width_do_not_change_the_vector_and_words_do():
    enc = get_encoder("ngrams")
    a, b, c = (enc.load_item(t) for t in ("Organic Whole Milk", "  organic   WHOLE milk ", "Ｏｒｇａｎｉｃ Ｗｈｏｌｅ Ｍｉｌｋ"))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)  # full-width letters fold under NFKC
    assert abs(float(np.linalg.norm(a)) - 1.0) < 1e-6
    v = enc.encode_batch([enc.load_item(t) for t in TITLES])
    sim = v @ v.T
    for i in (0, 2, 4):  # each pair of rewordings is nearer each other than any other title
        others = [j for j in range(len(TITLES)) if j not in (i, i + 1)]
        assert sim[i, i + 1] > sim[i, others].max()


def test_a_text_with_no_word_is_a_zero_vector_and_a_non_string_an_item_error():
    enc = get_encoder("ngrams")
    assert not enc.load_item("!!! ---").any()
    with pytest.raises(ItemError):
        enc.load_item(3.5)


def test_options_name_the_vectors_and_bad_ones_are_refused():
    ids = {lazy_encoder("ngrams", **o).encoder_id for o in ({}, {"dim": 2048}, {"word_ngrams": 1}, {"char_ngrams": [2, 4]})}
    assert len(ids) == 4
    assert lazy_encoder("ngrams").encoder_id == get_encoder("ngrams").encoder_id
    assert get_encoder("ngrams", precision="bf16").precision == "fp32"  # sums of counts: nothing to gain from bf16
    for bad in ({"dim": 8}, {"dim": True}, {"word_ngrams": 4}, {"char_ngrams": [5, 3]}, {"char_ngrams": "3-5"}, {"precision": "fp16"}):
        with pytest.raises(ConfigError):
            get_encoder("ngrams", **bad)


def test_the_same_vector_in_another_process_whatever_its_hash_seed():
    """Python's own str hash changes per process; the cache would then hold vectors no later run could match."""
    code = "from prodkg.extractors.text_ngrams import ngram_vector; import sys; sys.stdout.write(ngram_vector('Sparkling Water Lime').tobytes().hex())"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": "12345"}, capture_output=True, text=True,
                         check=True).stdout
    np.testing.assert_array_equal(np.frombuffer(bytes.fromhex(out), np.float32), ngram_vector("Sparkling Water Lime"))


def test_extraction_caches_by_content_and_encoder(tmp_path):
    enc = lazy_encoder("ngrams")
    cache = FeatureCache(tmp_path / "cache")
    first = extract_features(TITLES, enc, cache=cache, progress=False)
    again = extract_features(list(reversed(TITLES)), enc, cache=cache, progress=False)
    assert first.ok.all() and first.n_computed == len(TITLES) and again.n_computed == 0
    np.testing.assert_array_equal(again.features[::-1], first.features)
    wider = extract_features(TITLES, lazy_encoder("ngrams", dim=2048), cache=cache, progress=False)
    assert wider.n_computed == len(TITLES) and wider.features.shape == (len(TITLES), 2048)


def test_minilm_beside_ngrams_is_each_encoder_alone(minilm, tmp_path):
    both = get_encoder("minilm_ngrams", precision="fp32")  # the fixture's MiniLM is fp32
    assert both.dim == 384 + 1024 and both.modality == "text"
    assert lazy_encoder("minilm_ngrams", precision="fp32").encoder_id == both.encoder_id
    assert both.encoder_id.startswith("minilm_ngrams[") and minilm.encoder_id in both.encoder_id
    got = extract_features(TITLES, both, cache=FeatureCache(tmp_path / "c"), progress=False).features
    alone = extract_features(TITLES, minilm, progress=False).features
    np.testing.assert_array_equal(got[:, :384], alone)
    np.testing.assert_array_equal(got[:, 384:], np.stack([ngram_vector(t) for t in TITLES]))
    # the recorded precision builds the same encoder again (what `prodkg predict` pins)
    assert get_encoder("minilm_ngrams", precision=both.precision).encoder_id == both.encoder_id


@pytest.mark.slow
def test_a_run_with_both_text_encoders_is_scored_again_by_predict(sample_catalog, tmp_path):
    """`prodkg run --text-encoder minilm_ngrams`, then `prodkg predict` on the same rows: the recorded precision (MiniLM's
    and the n-grams' may differ) rebuilds the same encoder, so the scores are the run's own."""
    import pandas as pd

    from prodkg.flows.cli import main

    out = tmp_path / "out"
    assert main(["run", "--catalog", str(sample_catalog), "--source", "webshop", "--target", "supplier", "--epochs", "2",
                 "--text-encoder", "minilm_ngrams", "--out", str(out), "--no-prefect", "--quiet"]) == 0
    (run,) = (out / "runs").iterdir()
    manifest = json.loads((run / "manifest.json").read_text())
    text = manifest["features"]["text"]
    assert text["encoder"] == "minilm_ngrams" and text["dim"] == 1408 and text["encoder_id"].startswith("minilm_ngrams[")
    scored = tmp_path / "scored.parquet"
    assert main(["predict", "--model", str(run), "--catalog", str(sample_catalog), "--domain", "supplier", "--out", str(scored),
                 "--quiet"]) == 0
    mine = pd.read_parquet(scored).query("task == 'category' and kind == 'class'").sort_values(["product_id", "level", "value"])
    theirs = pd.read_parquet(run / "predictions.parquet").query("task == 'category' and kind == 'class'").sort_values(["product_id", "level", "value"])
    assert mine["product_id"].tolist() == theirs["product_id"].tolist() and mine["value"].tolist() == theirs["value"].tolist()
    np.testing.assert_allclose(mine["confidence"].to_numpy(), theirs["confidence"].to_numpy(), rtol=1e-5, atol=1e-7)
