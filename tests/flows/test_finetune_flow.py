"""`prodkg run --finetune-backbone` on a small real slice: the manifest's record, reuse on a re-run, the CPU limit."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from prodkg.catalogs import load_dataset
from prodkg.flows.cli import main as cli_main
from prodkg.flows.config import load_config
from prodkg.flows.pipeline import run_pipeline
from prodkg.errors import ConfigError

pytestmark = pytest.mark.dataset

CLASSES = ["backpack", "bike", "mug"]


@pytest.fixture(scope="module")
def small_slice(data_home, office_catalog):
    """3 classes: 4 amazon images each (labelled source), 2 webcam images each (target)."""
    frame = load_dataset("office-caltech-10", data_home).frame
    parts = [frame[(frame.domain == d) & (frame.category == c)].head(n) for d, n in (("amazon", 4), ("webcam", 2)) for c in CLASSES]
    return office_catalog(pd.concat(parts), "slice")


def _manifest(out: Path) -> dict:
    (run,) = sorted((out / "runs").iterdir())[-1:]
    return json.loads((run / "manifest.json").read_text(encoding="utf-8"))


@pytest.mark.slow
def test_finetuned_run_records_itself_and_is_reused(small_slice, tmp_path):
    out = tmp_path / "out"
    argv = ["run", "--catalog", str(small_slice), "--source", "amazon", "--target", "webcam", "--epochs", "5", "--out", str(out),
            "--no-prefect", "--quiet", "--finetune-backbone", "--finetune-epochs", "1"]
    assert cli_main(argv) == 0
    first = _manifest(out)
    ft = first["finetune"]
    assert ft["ran"] and not ft["reused"]
    assert ft["device"] == "cpu" and ft["epochs"] == 1 and ft["seed"] == 0 and ft["method"] == "dann"
    assert ft["images"] == 18 and ft["source_images"] == 12 and ft["target_images"] == 6
    assert len(ft["weights_sha256"]) == 64 and ft["seconds"]["total"] > 0
    assert ft["classes"] == CLASSES
    assert Path(ft["path"]).is_file() and Path(ft["path"]).parent.name == "models"
    # the image features the heads saw are the fine-tuned ones, and provenance names that encoder
    image = first["features"]["image"]
    assert image["finetuned"] and image["encoder_id"] == ft["encoder_id"] != image["frozen_encoder_id"]
    assert ft["encoder_id"] == f"{image['frozen_encoder_id']}/ft-{ft['weights_sha256'][:12]}"
    assert "finetune" in first["durations"]
    assert first["config"]["finetune"] is True

    assert cli_main(argv) == 0
    second = _manifest(out)
    assert second["run_id"] != first["run_id"]
    assert second["finetune"]["reused"] and second["finetune"]["encoder_id"] == ft["encoder_id"]
    assert second["metrics"]["category"]["target_accuracy"] == first["metrics"]["category"]["target_accuracy"]


def test_cpu_limit_stops_the_run_before_extraction(small_slice, tmp_path):
    cfg = load_config(catalog=str(small_slice), source=["amazon"], target=["webcam"], out=str(tmp_path / "out"), use_prefect=False,
                      progress=False, finetune=True, finetune_max_images_cpu=10)
    with pytest.raises(ConfigError, match=r"18 images, above the CPU limit of 10\b"):
        run_pipeline(cfg)
    assert not (tmp_path / "out" / "runs").exists()  # nothing extracted, nothing written


def test_finetune_options_are_validated(small_slice, tmp_path):
    base = {"catalog": str(small_slice), "source": ["amazon"], "target": ["webcam"], "out": str(tmp_path / "o"), "use_prefect": False,
            "progress": False, "finetune": True}
    with pytest.raises(ConfigError, match="finetune_epochs"):
        run_pipeline(load_config(**base, finetune_options={"epochs": 3}))
    with pytest.raises(ConfigError, match="unknown fine-tuning option"):
        run_pipeline(load_config(**base, finetune_options={"lr_block": 3}))
    with pytest.raises(ConfigError, match="finetune_epochs: .*greater than or equal to 1"):
        load_config(**base, finetune_epochs=0)


def test_fingerprint_counts_finetuning_only_when_it_is_on():
    off = load_config(dataset="office-caltech-10")
    assert off.fingerprint() == load_config(dataset="office-caltech-10", finetune_epochs=9, finetune_options={"lr": 1.0}).fingerprint()
    on = load_config(dataset="office-caltech-10", finetune=True)
    assert on.fingerprint() != off.fingerprint()
    assert on.fingerprint() != load_config(dataset="office-caltech-10", finetune=True, finetune_epochs=9).fingerprint()
    # the CPU limit and forcing only allow or refuse a run; they change no result
    assert on.fingerprint() == load_config(dataset="office-caltech-10", finetune=True, finetune_max_images_cpu=10, finetune_force=True).fingerprint()


@pytest.mark.slow
def test_a_photo_on_fewer_than_half_the_products_is_fine_tuned_and_kept_packed(small_slice, tmp_path, monkeypatch):
    """8 of the 18 products keep their photo (two per source class, one per target class of two): the image block is
    packed from extraction on, fine-tuning replaces the vectors of those 8 only, and the run completes."""
    import numpy as np

    import prodkg.adaptation.stage as adaptation_stage
    from prodkg.blocks import PackedBlock

    frame = pd.read_csv(small_slice)
    keep = frame.groupby(["domain", "category"]).cumcount() < np.where(frame["domain"] == "amazon", 2, 1)
    keep &= (frame["domain"] == "amazon") | frame["category"].isin(CLASSES[:2])
    frame.loc[~keep, "image"] = ""
    frame["title"] = frame["category"].map({"backpack": "school bag", "bike": "bicycle", "mug": "coffee cup"})
    catalog = small_slice.with_name("sparse.csv")
    frame.to_csv(catalog, index=False)
    assert int(keep.sum()) == 8
    seen = {}
    original = adaptation_stage.finetune_stage

    def spy(ext, *args, **kwargs):
        seen["before"] = ext.features.blocks["image"]
        new, info = original(ext, *args, **kwargs)
        seen["after"], seen["present"] = new.features.blocks["image"], new.features.present["image"]
        return new, info

    monkeypatch.setattr(adaptation_stage, "finetune_stage", spy)
    cfg = load_config(catalog=str(catalog), source=["amazon"], target=["webcam"], out=str(tmp_path / "out"), use_prefect=False,
                      progress=False, finetune=True, finetune_epochs=1, epochs=3)
    run_pipeline(cfg)
    assert isinstance(seen["before"], PackedBlock) and isinstance(seen["after"], PackedBlock)
    assert seen["after"].rows.tolist() == np.flatnonzero(seen["present"]).tolist() and len(seen["after"].rows) == 8
    assert not np.allclose(seen["after"].values, seen["before"].values)  # the fine-tuned vectors, not the frozen ones
