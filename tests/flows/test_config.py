"""Run configuration: precedence, validation before any work, and the fingerprint that provenance records."""

from __future__ import annotations

import pytest

from prodkg.errors import ConfigError
from prodkg.flows.cli import main
from prodkg.flows.config import RunConfig, load_config

OFFICE = {"dataset": "office-caltech-10", "source": "amazon", "target": "webcam"}


def test_toml_then_overrides(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[run]\ndataset = "office-caltech-10"\nsource = "amazon"\ntarget = ["webcam"]\nepochs = 5\n', encoding="utf-8")
    cfg = load_config(path, epochs=7, seed=None)
    assert cfg.source == ["amazon"] and cfg.target == ["webcam"] and cfg.epochs == 7 and cfg.seed == 0


def test_invalid_configs_name_the_problem(sample_catalog):
    with pytest.raises(ConfigError, match="exactly one of catalog"):
        load_config(catalog=str(sample_catalog), dataset="office-caltech-10")
    with pytest.raises(ConfigError, match="both source and target"):
        load_config(dataset="office-caltech-10", source=["amazon"], target=["amazon"])
    with pytest.raises(ConfigError, match="epoch: unknown config key.*valid keys: .*epochs"):
        load_config(**OFFICE, epoch=3)
    with pytest.raises(ConfigError, match="threshold"):
        load_config(**OFFICE, threshold=2)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"method": "dnan"}, r"unknown method 'dnan'; valid: cdan, coral, dan, dann, pada, rtn, source_only, auto"),
        ({"baseline": "dnan"}, r"unknown baseline method 'dnan'"),
        ({"fusion": "late-ish"}, r"unknown fusion 'late-ish'; valid: .*attention.*early.*late"),
        ({"image_encoder": "resnet51"}, r"unknown encoder 'resnet51'; valid: .*efficientnet_lite0"),
        ({"dataset": "office-caltech10"}, r"unknown dataset 'office-caltech10'; valid: .*office-caltech-10"),
        ({"auto_schedule": "quarter"}, r"unknown auto schedule 'quarter'; valid: halving, full"),
        ({"epochs": -1}, r"epochs: .*greater than or equal to 1"),
        ({"batch_size": 0}, r"batch_size: .*greater than or equal to 1"),
        ({"target": "nope"}, r"target domain\(s\) nope not in the catalog; it has: amazon, caltech10, dslr, webcam"),
    ],
)
def test_every_bad_setting_is_refused_with_one_line(override, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config(**{**OFFICE, **override})
    assert "\n" not in str(info.value)


def test_catalog_paths_and_domains_are_checked_reading_the_domain_column(sample_catalog, tmp_path):
    with pytest.raises(ConfigError, match="catalog '/nope.csv' not found"):
        load_config(catalog="/nope.csv", source="a", target="b")
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(catalog=str(tmp_path), source="a", target="b")
    with pytest.raises(ConfigError, match="source domain\\(s\\) webshp not in the catalog; it has: supplier, webshop"):
        load_config(catalog=str(sample_catalog), source="webshp", target="supplier")
    cfg = load_config(catalog=str(sample_catalog), source="webshop", target="supplier")
    assert cfg.layout.kg == cfg.out_path / "kg" and cfg.layout.run_dir("r1") == cfg.out_path / "runs" / "r1"


@pytest.mark.parametrize("command", ["run", "schedule"])
def test_cli_refuses_before_any_work_with_exit_code_2(command, tmp_path, capsys):
    out = tmp_path / "out"
    code = main([command, "--dataset", "office-caltech-10", "--source", "amazon", "--target", "webcam", "--method", "dnan", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == ["prodkg: error: method: unknown method 'dnan'; valid: cdan, coral, dan, dann, pada, rtn, source_only, auto"]
    assert not out.exists()  # nothing written, nothing registered (schedule fails before it looks for a Prefect server)


def test_every_run_option_is_written_once_in_the_model():
    """The CLI's run options are generated from RunConfig: each field with a cli entry has exactly one option."""
    from prodkg.flows.cli import build_parser

    parser = build_parser()
    run = next(a for a in parser._subparsers._group_actions[0].choices.items() if a[0] == "run")[1]
    dests = [a.dest for a in run._actions if a.dest in RunConfig.model_fields]
    assert len(dests) == len(set(dests))
    with_cli = {n for n, f in RunConfig.model_fields.items() if isinstance(f.json_schema_extra, dict) and "cli" in f.json_schema_extra}
    assert set(dests) == with_cli
    # the historical option names keep working
    flags = {s for a in run._actions for s in a.option_strings}
    assert {"--no-prefect", "--quiet", "--finetune-backbone", "--finetune-force", "--finetune-epochs", "--store-url", "--workers"} <= flags


def test_fingerprint_ignores_where_output_goes():
    a = load_config(**OFFICE, out="a", progress=False)
    b = load_config(**OFFICE, out="b")
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != load_config(**OFFICE, seed=1).fingerprint()


def test_min_precision_is_the_default_rule_and_threshold_a_fixed_override():
    cfg = load_config(**OFFICE)
    assert cfg.min_precision == 0.95 and cfg.threshold is None
    assert load_config(**OFFICE, threshold=0.5).threshold == 0.5
    assert load_config(**OFFICE, min_precision=0.9).fingerprint() != cfg.fingerprint()
    for bad in (0, 1.5):
        with pytest.raises(ConfigError, match="min_precision"):
            load_config(**OFFICE, min_precision=bad)


def test_default_catalog_name_is_the_file_name_without_a_date():
    from prodkg.catalogs.stage import default_catalog_name

    assert default_catalog_name("feeds/feed_2026-11-30.csv") == "feed"
    assert default_catalog_name("feeds/feed-20261201T0200Z.csv.gz") == "feed"
    assert default_catalog_name("data/sample/catalog.csv") == "catalog"
    assert default_catalog_name("s3://bucket/supplier.v2.parquet") == "supplier.v2"


def test_catalog_name_and_eval_labels_are_run_options():
    from prodkg.flows.cli import build_parser
    from prodkg.flows.config import RunConfig

    cfg = RunConfig(catalog="data/sample/catalog.csv", catalog_name=" acme ", eval_labels="category,attr_color")
    assert cfg.catalog_name == "acme" and cfg.eval_labels == ["category", "color"]
    assert RunConfig(catalog="data/sample/catalog.csv", eval_labels="").eval_labels == []
    assert RunConfig(catalog="data/sample/catalog.csv").eval_labels == ["category"]
    args = build_parser().parse_args(["run", "--catalog", "x.csv", "--catalog-name", "acme", "--eval-labels", "category,color"])
    assert args.catalog_name == "acme" and args.eval_labels == "category,color"


def test_auto_schedule_reaches_the_training_config_of_auto_only():
    from prodkg.flows.cli import build_parser

    settings = load_config(**OFFICE, method="auto", auto_schedule="full").predict_settings()
    assert settings.train_config().auto_schedule == "full"
    # a named method (the baseline here) keeps the default, so its cached head does not depend on auto's setting
    assert settings.train_config("source_only").to_dict() == load_config(**OFFICE).predict_settings().train_config("source_only").to_dict()
    assert load_config(**OFFICE, method="auto").predict_settings().train_config().auto_schedule == "halving"
    assert build_parser().parse_args(["run", "--dataset", "x", "--auto-schedule", "full"]).auto_schedule == "full"
    assert build_parser().parse_args(["adapt", "--features", "f", "--source", "a", "--target", "b", "--out", "o",
                                      "--auto-schedule", "full"]).auto_schedule == "full"


def test_summary_says_when_the_graph_was_republished_unchanged():
    from prodkg.flows.cli import format_summary

    summary = {"run_id": "r2", "catalog": "c", "source": ["a"], "target": ["b"], "method": "dann", "features": {}, "metrics": {},
               "counts": {"rows_in": 2, "rows_out_of_scope": 0, "quarantined": 0, "quarantined_ingest": 0, "quarantined_extract": 0,
                          "products": 2, "source_products": 1, "target_products": 1, "predictions": 1, "quads": 10,
                          "predictions_by_task": {"category": 1}},
               "store": "kg/stores/r2", "durations": {"ingest": 0.1}, "run_dir": "runs/r2", "graph_reused_from": "r1"}
    text = format_summary(summary, out="x")
    assert "republished unchanged: the content of run r1" in text
    assert "predictions          1  (category 1)" in text
