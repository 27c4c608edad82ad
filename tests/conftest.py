"""Shared fixtures: the dataset mirror (skipped cleanly when absent) and offline settings.

``data_home`` is defined here only. A test that uses it is marked ``dataset`` even when its module forgot to,
so ``-m "not dataset"`` leaves out exactly the tests that need the mirror.
"""

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
def office_catalog(data_home, tmp_path_factory):
    """A function: the office-caltech-10 rows ``frame`` written as a CSV catalog whose images are copied beside it.

    A catalog's local images are read only under its own folder (or ``image_roots``), as a real feed's are.
    """
    import shutil

    def write(frame, name: str) -> Path:
        folder = tmp_path_factory.mktemp("catalog")
        (folder / "images").mkdir()
        images = []
        for i, image in enumerate(frame["image"]):
            images.append(str(folder / "images" / f"{i:03d}-{Path(image).name}"))
            shutil.copyfile(image, images[-1])
        path = folder / f"{name}.csv"
        frame.assign(image=images).to_csv(path, index=False)
        return path

    return write


@pytest.fixture(scope="session")
def sample_catalog() -> Path:
    return ROOT / "data" / "sample" / "catalog.csv"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "data_home" in getattr(item, "fixturenames", ()) and item.get_closest_marker("dataset") is None:
            item.add_marker(pytest.mark.dataset)
