"""`prodkg predict --catalog`: a catalog scored with a saved run gives what the run itself predicted for the same rows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from prodkg.contracts import PREDICTIONS, QUARANTINE
from prodkg.flows.cli import main

pytestmark = pytest.mark.slow  # two pipeline runs on the sample catalog with the real encoders (~70 s)


@pytest.fixture(scope="module")
def trained(sample_catalog, tmp_path_factory) -> tuple[Path, Path]:
    """A `prodkg run` of the sample catalog (webshop → supplier, 3 epochs); returns (its run folder, the output folder)."""
    out = tmp_path_factory.mktemp("run") / "out"
    assert main(["run", "--catalog", str(sample_catalog), "--source", "webshop", "--target", "supplier", "--epochs", "3",
                 "--out", str(out), "--no-prefect", "--quiet"]) == 0
    (run,) = (out / "runs").iterdir()
    return run, out


@pytest.fixture(scope="module")
def new_catalog(sample_catalog, tmp_path_factory) -> Path:
    """The run's target rows as a new file in another folder (the first without its colour), three bad rows and one row
    of a new domain."""
    folder = tmp_path_factory.mktemp("new")
    shutil.copytree(sample_catalog.parent / "images", folder / "images")
    frame = pd.read_csv(sample_catalog, dtype=str, keep_default_na=False)
    target = frame[frame["domain"] == "supplier"].copy()
    target.iloc[0, target.columns.get_loc("color")] = ""
    extra = frame[frame["domain"] == "webshop"].head(1).assign(product_id="NEW-0", domain="newshop")
    bad = pd.DataFrame([
        {**target.iloc[0].to_dict(), "product_id": "BAD-no-image", "image": "images/missing.png"},
        {**target.iloc[0].to_dict(), "product_id": "", "title": "a row without an id"},
        {**target.iloc[0].to_dict(), "product_id": "BAD-empty", "title": "", "description": "", "image": ""},
    ])
    pd.concat([target, extra, bad], ignore_index=True).to_csv(folder / "new.csv", index=False)
    return folder / "new.csv"


def test_catalog_scores_match_the_runs_own_predictions(trained, new_catalog, tmp_path) -> None:
    run, out = trained
    scored_file = tmp_path / "scored.parquet"
    assert main(["predict", "--model", str(run), "--catalog", str(new_catalog), "--out", str(scored_file), "--quiet"]) == 0
    scored = pd.read_parquet(scored_file)
    assert list(scored.columns) == PREDICTIONS.columns
    # independent reference: the run's own predictions file, written by the pipeline from its own extraction
    reference = pd.read_parquet(run / "predictions.parquet")
    target_ids = set(pd.read_parquet(run / "products.parquet").query("domain == 'supplier'")["product_id"])
    key = ["product_id", "task", "kind", "value"]
    mine = scored[scored["product_id"].isin(target_ids) & (scored["task"] == "category")].sort_values(key).reset_index(drop=True)
    theirs = reference[reference["task"] == "category"].sort_values(key).reset_index(drop=True)
    assert len(theirs) >= len(target_ids)  # one category row per target product, plus any unknown rows
    assert mine[key].astype(str).equals(theirs[key].astype(str))
    np.testing.assert_allclose(mine["confidence"].to_numpy(), theirs["confidence"].to_numpy(), rtol=1e-5, atol=1e-7)
    # the publication decision, replayed from the run's recorded thresholds, baseline head and unknown bar
    assert mine["published"].tolist() == theirs["published"].tolist()
    # asserted beats predicted, as in the run: only the product without a colour gets a colour prediction
    colour_rows = scored[scored["task"] == "color"]
    first = pd.read_csv(new_catalog, dtype=str, keep_default_na=False)["product_id"].iloc[0]
    assert set(colour_rows["product_id"]) == {first} and len(colour_rows) == 1
    assert "NEW-0" in set(scored["product_id"])
    # bad rows are quarantined with their reason; nothing else is
    quarantine = pd.read_parquet(tmp_path / "scored.quarantine.parquet")
    assert list(quarantine.columns) == QUARANTINE.columns and len(quarantine) == 3
    reasons = dict(zip(quarantine["product_id"].fillna(""), quarantine["reason"]))
    assert "missing.png" in reasons["BAD-no-image"] and reasons[""] and reasons["BAD-empty"]
    assert scored["product_id"].nunique() == len(target_ids) + 1


def test_refusals_are_one_line(trained, new_catalog, tmp_path, capsys) -> None:
    run, out = trained
    dest = str(tmp_path / "x.parquet")
    # the output folder stands for its newest run
    assert main(["predict", "--model", str(out), "--catalog", str(new_catalog), "--domain", "newshop", "--out", dest, "--quiet"]) == 0
    assert set(pd.read_parquet(dest)["product_id"]) == {"NEW-0"}
    # a missing catalog is a usage error; a file without the catalog columns is unusable data
    assert main(["predict", "--model", str(run), "--catalog", str(tmp_path / "none.csv"), "--out", dest, "--quiet"]) == 2
    (tmp_path / "columns.csv").write_text("product_id,title\nx,y\n")
    assert main(["predict", "--model", str(run), "--catalog", str(tmp_path / "columns.csv"), "--out", dest, "--quiet"]) == 3
    # a catalog without images for a model that reads images and text
    frame = pd.read_csv(new_catalog, dtype=str, keep_default_na=False).assign(image="")
    frame.to_csv(tmp_path / "no-images.csv", index=False)
    capsys.readouterr()
    assert main(["predict", "--model", str(run), "--catalog", str(tmp_path / "no-images.csv"), "--out", dest, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no row of the catalog has an image" in err and len(err.strip().splitlines()) == 1
    # an encoder other than the run's, or one not available offline: refused before anything is extracted
    for change in ({"features": {"text": "hf_text/other/000000000000/max256/fp32"}}, {"config": {"text_encoder": "hf_text", "text_options": {"model": "no-such-org/no-such-model"}}}):
        copy = tmp_path / f"copy{len(change)}-{list(change)[0]}"
        shutil.copytree(run, copy)
        manifest = json.loads((copy / "manifest.json").read_text())
        if "features" in change:
            manifest["features"]["text"]["encoder_id"] = change["features"]["text"]
        else:
            manifest["config"].update(change["config"])  # a hub model this machine does not have (HF_HUB_OFFLINE)
        (copy / "manifest.json").write_text(json.dumps(manifest))
        assert main(["predict", "--model", str(copy), "--catalog", str(new_catalog), "--out", dest, "--quiet"]) == 3
        err = capsys.readouterr().err
        assert "text" in err and len(err.strip().splitlines()) == 1
    # a model trained on a feature table has no recorded encoders
    (tmp_path / "adapted").mkdir()
    classes = json.loads((run / "manifest.json").read_text())["models"][0]["classes"]
    (tmp_path / "adapted" / "manifest.json").write_text(json.dumps({"command": "adapt", "classes": classes}))
    shutil.copytree(run / "models" / "category", tmp_path / "adapted" / "model")
    assert main(["predict", "--model", str(tmp_path / "adapted"), "--catalog", str(new_catalog), "--out", dest, "--quiet"]) == 2
    assert "--features" in capsys.readouterr().err


def test_a_finetuned_run_scores_with_its_saved_block(sample_catalog, new_catalog, tmp_path) -> None:
    out = tmp_path / "out"
    assert main(["run", "--catalog", str(sample_catalog), "--source", "webshop", "--target", "supplier", "--epochs", "3", "--out", str(out),
                 "--no-prefect", "--quiet", "--finetune-backbone", "--finetune-epochs", "1"]) == 0
    (run,) = (out / "runs").iterdir()
    assert json.loads((run / "manifest.json").read_text())["features"]["image"]["finetuned"]
    # an empty feature cache: every image goes through the frozen trunk and the saved fine-tuned block again
    scored_file = tmp_path / "scored.parquet"
    assert main(["predict", "--model", str(run), "--catalog", str(new_catalog), "--out", str(scored_file),
                 "--cache-dir", str(tmp_path / "empty-cache"), "--quiet"]) == 0
    key = ["product_id", "kind", "value"]
    mine = pd.read_parquet(scored_file).query("task == 'category'")
    theirs = pd.read_parquet(run / "predictions.parquet").query("task == 'category'").sort_values(key).reset_index(drop=True)
    mine = mine[mine["product_id"].isin(set(theirs["product_id"]))].sort_values(key).reset_index(drop=True)
    assert mine[key].astype(str).equals(theirs[key].astype(str))
    np.testing.assert_allclose(mine["confidence"].to_numpy(), theirs["confidence"].to_numpy(), rtol=1e-4, atol=1e-6)
