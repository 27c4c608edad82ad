"""The run report: PCA against scikit-learn, figures and page from self-made runs, and the demo run rendered in headless Chromium."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from prodkg.flows.report import find_chromium, pca_2d, previous_run_dir, screenshot, write_report, write_report_safely

FIGURES = ["stage_seconds", "counts", "cache", "accuracy", "class_distribution", "confidence", "risk_coverage", "domains"]
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("shape", [(200, 6), (12, 40)], ids=["more rows than dimensions", "fewer rows than dimensions"])
def test_pca_matches_scikit_learn_up_to_sign(shape):
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    x = rng.normal(size=shape) @ rng.normal(size=(shape[1], shape[1])) + 3.0
    coords, explained = pca_2d(x)
    ref = PCA(n_components=2).fit(x)
    expected = ref.transform(x)
    for j in range(2):
        sign = np.sign(coords[:, j] @ expected[:, j])
        np.testing.assert_allclose(coords[:, j], sign * expected[:, j], atol=1e-8)
    np.testing.assert_allclose(explained, ref.explained_variance_ratio_, atol=1e-10)


def test_pca_of_points_on_a_line_is_one_dimensional():
    t = np.linspace(-1, 1, 11)
    coords, explained = pca_2d(np.stack([t, 2 * t, -t], axis=1))
    np.testing.assert_allclose(explained, [1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(np.abs(coords[:, 0]), np.abs(t) * np.sqrt(6), atol=1e-12)
    np.testing.assert_allclose(coords[:, 1], 0.0, atol=1e-12)


def _self_made_run(with_target_labels: bool = True):
    rng = np.random.default_rng(1)
    summary = {
        "run_id": "20260101T000000Z-abcdef", "catalog": "shop", "source": ["web"], "target": ["supplier"], "method": "dann",
        "baseline": "source_only", "threshold": 0.5, "store": "kg/stores/x",
        "counts": {"rows_in": 12, "quarantined": 2, "products": 10, "quads": 99},
        "changes": {"added": 7, "changed": 2, "removed": 1, "unchanged": 0},
        "features": {"image": {"encoder": "efficientnet_lite0", "cached": 4, "computed": 6, "failed": 1, "seconds": 1.5}},
        "durations": {"ingest": 0.1, "extract": 3.0, "adapt_predict": 1.0, "graph": 0.5},
        "min_precision": 0.95,
        "metrics": {"category": {"method": "dann", **({"target_accuracy": 0.8} if with_target_labels else {}),
                                 "publication": {"rule": "min_precision", "levels": [
                                     {"level": 0, "threshold": 0.85, "estimator": "atc", "estimated_accuracy": 0.78,
                                      "estimated_precision": 0.96, "n_published": 3}]},
                                 **({"evaluation": {"coverage": 0.6, "precision": 1.0, "levels": [
                                     {"level": 0, "accuracy_all": 0.8, "precision": 1.0, "coverage": 0.6}],
                                     "risk_coverage": {"coverage": [0.2, 0.4, 0.6, 0.8, 1.0], "risk": [0.0, 0.0, 0.0, 0.25, 0.2]}}}
                                    if with_target_labels else {})}},
        "baseline_metrics": {"target_accuracy": 0.6} if with_target_labels else None,
    }
    predictions = pd.DataFrame({"product_id": [f"p{i}" for i in range(5)] + ["p0", "p9"], "task": "category",
                                "value": ["mug", "mug", "bag", "shirt", "mug", "drinkware", None],
                                "confidence": [0.9, 0.8, 0.4, 0.95, 0.7, 0.97, 0.6], "model": "m",
                                "level": pd.array([1, 1, 1, 1, 1, 0, pd.NA], dtype="Int64"),
                                "kind": ["class"] * 6 + ["unknown"], "published": [True, True, False, True, False, False, False]})
    sample = {"is_target": np.array([False] * 20 + [True] * 20),
              "before": np.concatenate([rng.normal(0, 1, (20, 8)), rng.normal(4, 1, (20, 8))]),
              "after": rng.normal(0, 1, (40, 4))}
    return summary, predictions, sample


@pytest.mark.slow
def test_report_has_every_figure_and_the_numbers(tmp_path):
    summary, predictions, sample = _self_made_run()
    result = write_report(tmp_path, summary, predictions, sample)
    assert result["missing"] == {}
    assert sorted(result["figures"]) == sorted(FIGURES)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    for name in FIGURES:
        png = tmp_path / "figures" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f'src="figures/{name}.png"' in page
        assert Image.open(png).size[0] >= 600
    # the tables carry the numbers the figures show
    for text in ("<td>new</td><td>7</td>", "<td>removed</td><td>1</td>", "<td>quarantined</td><td>2</td>", "80.0 %", "60.0 %",
                 "<td>extract</td><td>3.00</td>", "<td>78.0 %</td><td>80.0 %</td><td>96.0 %</td><td>100.0 %</td>",
                 "Unknown products (1)", "<td>p9</td>"):
        assert text in page, text


@pytest.mark.slow
def test_figures_with_unchanged_inputs_are_copied_from_the_previous_run(tmp_path):
    summary, predictions, sample = _self_made_run()
    first = tmp_path / "runs" / "20260101T000000Z-aaaaaa"
    assert write_report(first, summary, predictions, sample)["reused"] == []
    assert previous_run_dir(tmp_path / "runs" / "20260102T000000Z-bbbbbb") == first

    # the next night: same catalog and models, other timings and cache counts
    again = dict(summary, durations={"ingest": 0.1, "extract": 0.4, "adapt_predict": 0.1, "graph": 0.2},
                 features={"image": {**summary["features"]["image"], "cached": 10, "computed": 0}})
    second = tmp_path / "runs" / "20260102T000000Z-bbbbbb"
    result = write_report(second, again, predictions.copy(), {k: v.copy() for k, v in sample.items()}, reuse_from=first)
    assert sorted(result["reused"]) == ["accuracy", "class_distribution", "confidence", "counts", "domains", "risk_coverage"]
    assert sorted(result["figures"]) == sorted(FIGURES) and result["missing"] == {}
    for name in result["reused"]:
        assert (second / "figures" / f"{name}.png").read_bytes() == (first / "figures" / f"{name}.png").read_bytes()
    # the redrawn ones show this run's numbers: the stage-seconds picture differs
    assert (second / "figures" / "stage_seconds.png").read_bytes() != (first / "figures" / "stage_seconds.png").read_bytes()

    # one changed prediction, one changed embedding: those figures are drawn again
    changed = predictions.copy()
    changed.loc[0, "confidence"] = 0.55
    moved = dict(sample, after=sample["after"] + 1e-3)
    third = tmp_path / "runs" / "20260103T000000Z-cccccc"
    result = write_report(third, again, changed, moved, reuse_from=second)
    # (same timings and cache counts as the second run this time: those are copied)
    assert sorted(result["reused"]) == ["accuracy", "cache", "counts", "risk_coverage", "stage_seconds"]


@pytest.mark.slow
def test_an_unreadable_previous_report_means_drawing_everything(tmp_path):
    summary, predictions, sample = _self_made_run()
    first = tmp_path / "a"
    write_report(first, summary, predictions, sample)
    (first / "figures" / "keys.json").write_text("{not json")
    (first / "figures" / "domains.png").unlink()
    result = write_report(tmp_path / "b", summary, predictions, sample, reuse_from=first)
    assert result["reused"] == [] and sorted(result["figures"]) == sorted(FIGURES)


def test_a_figure_without_its_data_says_why(tmp_path):
    summary, predictions, _ = _self_made_run(with_target_labels=False)
    summary.pop("changes")
    result = write_report(tmp_path, summary, predictions, None)
    assert set(result["missing"]) == {"accuracy", "domains", "risk_coverage"}
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "not available: the target domain has no labels" in page
    assert "<td>new</td><td>n/a</td>" in page


def test_a_report_that_cannot_be_written_does_not_raise(tmp_path):
    summary, predictions, sample = _self_made_run()
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    result = write_report_safely(blocker, summary, predictions, sample)
    assert set(result) == {"error"} and "not-a-directory" in result["error"]


def _pixels_near(image: Image.Image, hex_color: str, tol: int = 8) -> int:
    rgb = np.asarray(image.convert("RGB"), dtype=np.int16)
    target = np.array([int(hex_color[i:i + 2], 16) for i in (1, 3, 5)], dtype=np.int16)
    return int((np.abs(rgb - target).max(axis=2) <= tol).sum())


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, shared_cache):
    """The README's sample run (data/sample, webshop → supplier), without Prefect to keep it quick."""
    from prodkg.flows.cli import main

    out = tmp_path_factory.mktemp("demo")
    rc = main(["run", "--catalog", str(ROOT / "data" / "sample" / "catalog.csv"), "--source", "webshop", "--target", "supplier",
               "--out", str(out), "--cache-dir", str(shared_cache), "--no-prefect", "--epochs", "5", "--quiet"])
    assert rc == 0
    (run_dir,) = (out / "runs").iterdir()
    return run_dir


@pytest.mark.slow
def test_demo_run_writes_the_report_and_records_it(demo_run):
    manifest = json.loads((demo_run / "manifest.json").read_text())
    assert manifest["report"]["html"] == str(demo_run / "report.html")
    assert manifest["report"]["missing"] == {}
    assert sorted(manifest["report"]["figures"]) == sorted(FIGURES)
    assert manifest["changes"]["added"] == 54  # a first run: every product is new
    page = (demo_run / "report.html").read_text(encoding="utf-8")
    assert "<td>new</td><td>54</td>" in page and "<td>products in</td><td>54</td>" in page


@pytest.mark.slow
def test_demo_report_renders_in_headless_chromium(demo_run):
    if find_chromium() is None:
        pytest.skip("no chromium binary on PATH (Debian: apt-get install chromium; .ci/run installs it)")
    png = screenshot(demo_run / "report.html", demo_run / "report.png")
    shot = Image.open(png)
    assert shot.size == (1400, 2000)
    # each figure's own colour shows on the page, so the browser really loaded and drew the PNGs
    for name, color in (("stage_seconds", "#4c72b0"), ("counts", "#55a868"), ("accuracy", "#937860"), ("class_distribution", "#da8bc3")):
        assert _pixels_near(shot, color) > 500, name
    assert _pixels_near(shot, "#ff7f0e", tol=40) > 30  # target points of the domain plot (small, antialiased markers)
