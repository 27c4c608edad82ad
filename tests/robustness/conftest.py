"""Fixtures shared by the robustness tests."""

from __future__ import annotations

import pandas as pd
import pytest


@pytest.fixture(scope="module")
def text_catalog(tmp_path_factory, sample_catalog):
    """The sample catalog without images (text only keeps each run quick); one copy per test module."""
    frame = pd.read_csv(sample_catalog, dtype=str, keep_default_na=False)
    frame["image"] = ""
    path = tmp_path_factory.mktemp("text-catalog") / "catalog.csv"
    frame.to_csv(path, index=False)
    return path
