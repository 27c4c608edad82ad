"""Fixtures for the operations tests: a small slice of the sample catalog and a real Prefect server on loopback."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from ops_support import PYTHON, ROOT, SERVER_START_TIMEOUT_S, base_env, free_port, server_healthy, start, stop, wait_for


@pytest.fixture(scope="session")
def small_catalog(tmp_path_factory) -> Path:
    """Every third row of the sample catalog (9 webshop + 9 supplier products, 3 categories, images and text)."""
    src = ROOT / "data" / "sample" / "catalog.csv"
    frame = pd.read_csv(src, dtype=str, keep_default_na=False).iloc[::3]
    folder = tmp_path_factory.mktemp("catalog")
    (folder / "images").mkdir()
    for p in frame["image"]:  # images are read only under the catalog's folder (or image_roots)
        if p:
            shutil.copyfile(src.parent / p, folder / p)
    frame["image"] = [str((folder / p).resolve()) if p else "" for p in frame["image"]]
    path = folder / "small.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """A feature cache the sample-catalog runs share, so only the first of them pays for extraction."""
    return tmp_path_factory.mktemp("feature-cache")


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """`prefect server start` on a free loopback port with its own PREFECT_HOME; yields (api_url, home); stopped by its pid."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    log = home / "server.log"
    proc = start([PYTHON, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)], base_env(home), log)
    try:
        wait_for(lambda: server_healthy(api), SERVER_START_TIMEOUT_S, "prefect server health", proc, log)
        yield api, home
    finally:
        stop(proc)
