"""Shared fixtures: the dataset mirror (skipped cleanly when absent) and offline settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_home() -> Path:
    value = os.environ.get("PRODKG_DATA_HOME")
    if not value or not Path(value).is_dir():
        pytest.skip("PRODKG_DATA_HOME is not set to the dataset mirror")
    return Path(value)


@pytest.fixture(scope="session")
def sample_catalog() -> Path:
    return ROOT / "data" / "sample" / "catalog.csv"
