"""Run configuration: precedence, validation and the fingerprint that provenance records."""

from __future__ import annotations

import pytest

from prodkg.flows.config import load_config
from prodkg.errors import ConfigError


def test_toml_then_overrides(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[run]\ndataset = "office-caltech-10"\nsource = "amazon"\ntarget = ["webcam"]\nepochs = 5\n', encoding="utf-8")
    cfg = load_config(path, epochs=7, seed=None)
    assert cfg.source == ["amazon"] and cfg.target == ["webcam"] and cfg.epochs == 7 and cfg.seed == 0


def test_invalid_configs_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="exactly one of catalog"):
        load_config(catalog="a.csv", dataset="office-caltech-10")
    with pytest.raises(ConfigError, match="both source and target"):
        load_config(dataset="x", source=["a"], target=["a"])
    with pytest.raises(ConfigError, match="unknown config key.*epoch"):
        load_config(dataset="x", epoch=3)
    with pytest.raises(ConfigError, match="threshold"):
        load_config(dataset="x", threshold=2)


def test_fingerprint_ignores_where_output_goes():
    a = load_config(dataset="x", out="a", progress=False)
    b = load_config(dataset="x", out="b")
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != load_config(dataset="x", seed=1).fingerprint()


def test_min_precision_is_the_default_rule_and_threshold_a_fixed_override():
    cfg = load_config(dataset="x")
    assert cfg.min_precision == 0.95 and cfg.threshold is None
    assert load_config(dataset="x", threshold=0.5).threshold == 0.5
    assert load_config(dataset="x", min_precision=0.9).fingerprint() != cfg.fingerprint()
    for bad in (0, 1.5, True):
        with pytest.raises(ConfigError, match="min_precision"):
            load_config(dataset="x", min_precision=bad)
