"""Shared fixtures for the extractor tests: small self-made images and loaded encoders (the dataset mirror's
``data_home`` is in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from prodkg.extractors import get_encoder


def _pattern(kind: str, size: int = 96) -> Image.Image:
    yy, xx = np.mgrid[0:size, 0:size]
    if kind == "red":
        arr = np.zeros((size, size, 3), np.uint8)
        arr[..., 0] = 220
    elif kind == "gradient":
        arr = np.stack([xx * 255 // size, yy * 255 // size, np.full_like(xx, 128)], -1).astype(np.uint8)
    elif kind == "checker":
        tile = ((xx // 8 + yy // 8) % 2 * 255).astype(np.uint8)
        arr = np.stack([tile, tile, tile], -1)
    elif kind == "rings":
        r = np.hypot(xx - size / 2, yy - size / 2)
        val = (np.sin(r / 3) * 127 + 128).astype(np.uint8)
        arr = np.stack([val, 255 - val, val // 2], -1)
    else:
        raise ValueError(kind)
    return Image.fromarray(arr, "RGB")


@pytest.fixture
def make_image(tmp_path: Path):
    """Write a small synthetic image; returns its path as a string."""

    def make(name: str, kind: str = "gradient", size: int = 96) -> str:
        path = tmp_path / name
        _pattern(kind, size).save(path)
        return str(path)

    return make


@pytest.fixture
def image_set(make_image) -> list[str]:
    return [make_image("red.png", "red"), make_image("gradient.jpg", "gradient"),
            make_image("checker.png", "checker", 120), make_image("rings.jpg", "rings", 80)]


@pytest.fixture(scope="session")
def lite0():
    return get_encoder("efficientnet_lite0", precision="fp32")


@pytest.fixture(scope="session")
def minilm():
    return get_encoder("minilm", precision="fp32")


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread: on a CPU shared with other jobs, OpenMP threads waiting on each other cost more
    than they bring, and results do not depend on the count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
