"""Bring-your-own feature tables (Parquet and .npz) and the ``prodkg adapt`` command that adapts from them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from prodkg.adaptation.byo import load_feature_table
from prodkg.errors import DataLoadError


def _frame(n: int = 6) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "product_id": [f"p{i}" for i in range(n)],
        "label": ["a", "b", None, "a", "", "b"][:n],
        "domain": ["shop", "shop", "shop", "web", "web", "web"][:n],
        "image": [rng.normal(size=3).astype(np.float32) for _ in range(n)],
        "text": [rng.normal(size=2).tolist() if i % 2 == 0 else None for i in range(n)],
    })


def test_parquet_with_one_list_column_per_modality(tmp_path) -> None:
    frame = _frame()
    path = tmp_path / "t.parquet"
    frame.to_parquet(path)
    x, labels, domains, ids = load_feature_table(path)
    assert x.dims == {"image": 3, "text": 2}
    np.testing.assert_allclose(x.blocks["image"][4], frame["image"][4], rtol=1e-6)
    np.testing.assert_array_equal(x.present["text"], [True, False, True, False, True, False])
    assert np.all(x.blocks["text"][1] == 0)
    assert labels == ["a", "b", None, "a", None, "b"]
    assert domains.tolist() == ["shop"] * 3 + ["web"] * 3 and ids.tolist() == [f"p{i}" for i in range(6)]


def test_parquet_with_flat_columns_in_numeric_order(tmp_path) -> None:
    cols = {f"f{i}": np.arange(4, dtype=float) * 10 + i for i in (10, 0, 2, 1, 3, 4, 5, 6, 7, 8, 9)}
    frame = pd.DataFrame({"label": list("abab"), "domain": list("sstt"), **cols})
    frame.to_parquet(tmp_path / "f.parquet")
    x, *_ = load_feature_table(tmp_path / "f.parquet")
    assert x.dims == {"features": 11}
    np.testing.assert_array_equal(x.blocks["features"][2], 20 + np.arange(11))


def test_npz_tables_and_nan_rows_as_missing(tmp_path) -> None:
    img = np.arange(12, dtype=np.float32).reshape(4, 3)
    txt = np.ones((4, 2), dtype=np.float32)
    txt[1] = np.nan
    np.savez(tmp_path / "t.npz", X_image=img, X_text=txt, label=np.array(["a", "b", "", "b"]), domain=np.array(list("sstt")))
    x, labels, domains, ids = load_feature_table(tmp_path / "t.npz")
    assert x.dims == {"image": 3, "text": 2} and x.present["text"].tolist() == [True, False, True, True]
    assert labels == ["a", "b", None, "b"] and ids.tolist() == ["0", "1", "2", "3"]


@pytest.mark.parametrize(
    "frame, match",
    [
        (pd.DataFrame({"domain": ["s"], "f0": [1.0]}), "'label'"),
        (pd.DataFrame({"label": ["a"], "domain": ["s"], "other": ["x"]}), "no feature columns"),
        (pd.DataFrame({"label": ["a", "b"], "domain": ["s", "s"], "v": [[1.0], [1.0, 2.0]]}), "same length"),
    ],
)
def test_bad_tables_raise_data_load_error(tmp_path, frame: pd.DataFrame, match: str) -> None:
    frame.to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(DataLoadError, match=match):
        load_feature_table(tmp_path / "bad.parquet")


def test_unknown_suffix_and_missing_file(tmp_path) -> None:
    (tmp_path / "x.csv").write_text("label,domain\n")
    with pytest.raises(DataLoadError, match="parquet or .npz"):
        load_feature_table(tmp_path / "x.csv")
    with pytest.raises(DataLoadError, match="does not exist"):
        load_feature_table(tmp_path / "nope.parquet")


@pytest.mark.slow
def test_prodkg_adapt_auto_writes_predictions_and_a_manifest_with_the_choice(tmp_path, make_shifted) -> None:
    from prodkg.adaptation.selection import DEFAULT_CANDIDATES
    from prodkg.flows.cli import main

    xs, ys, xt, yt = make_shifted(seed=5, n=120, dim=6)
    names = np.array(["red", "green", "blue"])
    frame = pd.DataFrame({
        "id": [f"s{i}" for i in range(120)] + [f"t{i}" for i in range(120)],
        "label": list(names[ys]) + list(names[yt]),  # target labels only feed the reported accuracy
        "domain": ["catalog"] * 120 + ["store"] * 120,
        "image": list(np.concatenate([xs.blocks["image"], xt.blocks["image"]])),
    })
    frame.to_parquet(tmp_path / "mine.parquet")
    out = tmp_path / "out"
    rc = main(["adapt", "--features", str(tmp_path / "mine.parquet"), "--source", "catalog", "--target", "store",
               "--method", "auto", "--epochs", "2", "--out", str(out), "--quiet"])
    assert rc == 0
    preds = pd.read_parquet(out / "predictions.parquet")
    assert len(preds) == 120 and set(preds["value"]) <= set(names) and preds["product_id"].iloc[0] == "t0"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["requested_method"] == "auto" and manifest["method"] != "auto"
    sel = manifest["model"]["selection"]
    assert sel["chosen"].startswith(manifest["method"]) and len(sel["candidates"]) == len(DEFAULT_CANDIDATES)
    assert sel["chosen_method"] == manifest["method"] and set(sel["chosen_hyperparameters"]) == {"lr", "tradeoff"}
    assert manifest["metrics"]["selection"]["chosen"] == sel["chosen"]
    assert main(["adapt", "--features", str(tmp_path / "mine.parquet"), "--source", "nowhere", "--target", "store",
                 "--out", str(out), "--quiet"]) == 2


def test_prodkg_predict_scores_held_out_rows_with_a_saved_model(tmp_path, make_shifted) -> None:
    from prodkg.flows.cli import main

    xs, ys, xt, _ = make_shifted(seed=5, n=90, dim=6)
    names = np.array(["red", "green", "blue"])
    pd.DataFrame({
        "id": [f"s{i}" for i in range(90)] + [f"t{i}" for i in range(90)],
        "label": list(names[ys]) + [None] * 90,
        "domain": ["catalog"] * 90 + ["store"] * 90,
        "image": list(np.concatenate([xs.blocks["image"], xt.blocks["image"]])),
    }).to_parquet(tmp_path / "train.parquet")
    out = tmp_path / "run"
    assert main(["adapt", "--features", str(tmp_path / "train.parquet"), "--source", "catalog", "--target", "store",
                 "--method", "dann", "--epochs", "2", "--out", str(out), "--quiet"]) == 0
    # held-out rows the model never saw, in the .npz layout, without label or domain arrays
    _, _, xh, _ = make_shifted(seed=9, n=40, dim=6)
    np.savez(tmp_path / "held.npz", X_image=xh.blocks["image"], id=np.array([f"h{i}" for i in range(40)]))
    assert main(["predict", "--model", str(out), "--features", str(tmp_path / "held.npz"),
                 "--out", str(tmp_path / "held.parquet"), "--quiet"]) == 0
    scored = pd.read_parquet(tmp_path / "held.parquet")
    from prodkg.contracts import PREDICTIONS

    assert list(scored.columns) == PREDICTIONS.columns and len(scored) == 40
    assert set(scored["value"]) <= set(names) and scored["confidence"].between(0, 1).all()
    assert set(scored["task"]) == {"category"} and set(scored["kind"]) == {"class"}
    assert not scored["published"].any()  # `adapt` records no publication rule: nothing is published without --threshold
    # the same rows through the saved model directly give the same classes and calibrated confidences
    from prodkg.adaptation import AdaptedModel

    model = AdaptedModel.load(out / "model")
    manifest = json.loads((out / "manifest.json").read_text())
    probs = model.predict_proba(xh, manifest["metrics"]["temperature"])
    assert scored["value"].tolist() == [manifest["classes"][k] for k in model.predict(xh)]
    np.testing.assert_allclose(scored["confidence"].to_numpy(), probs.max(1), rtol=1e-5)
    # a fixed threshold publishes exactly the rows whose confidence reaches it
    bar = float(np.median(probs.max(1)))
    assert main(["predict", "--model", str(out), "--features", str(tmp_path / "held.npz"), "--threshold", str(bar),
                 "--out", str(tmp_path / "bar.parquet"), "--quiet"]) == 0
    assert pd.read_parquet(tmp_path / "bar.parquet")["published"].tolist() == (probs.max(1) >= bar).tolist()
    # --domain filters rows; a width mismatch and a missing run are configuration errors
    assert main(["predict", "--model", str(out), "--features", str(tmp_path / "train.parquet"), "--domain", "store",
                 "--out", str(tmp_path / "store.parquet"), "--quiet"]) == 0
    assert len(pd.read_parquet(tmp_path / "store.parquet")) == 90
    np.savez(tmp_path / "wide.npz", X_image=np.zeros((3, 7), dtype=np.float32))
    assert main(["predict", "--model", str(out), "--features", str(tmp_path / "wide.npz"),
                 "--out", str(tmp_path / "x.parquet"), "--quiet"]) == 2
    assert main(["predict", "--model", str(tmp_path / "none"), "--features", str(tmp_path / "held.npz"),
                 "--out", str(tmp_path / "x.parquet"), "--quiet"]) == 2


def test_the_table_layout_is_in_the_help_and_the_readme(capsys) -> None:
    from pathlib import Path

    from prodkg.flows.cli import FEATURE_TABLE_LAYOUT, main

    for command in ("adapt", "predict"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "f0..fN" in capsys.readouterr().out
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    assert FEATURE_TABLE_LAYOUT.strip() in readme
