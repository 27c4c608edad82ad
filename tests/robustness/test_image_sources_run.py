"""Hostile image references through the real pipeline: each product is quarantined with its reason, nothing
is read that should not be, and the run finishes (a server that never answers costs its timeout, no more)."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from prodkg.extractors import extract_features, lazy_encoder
from prodkg.extractors.sources import ImageLimits
from prodkg.flows.config import load_config
from prodkg.flows.pipeline import run_pipeline
from prodkg.kb.store import KnowledgeGraph

READ_TIMEOUT = 1.0
PRODUCTS = "PREFIX schema: <https://schema.org/> SELECT (COUNT(DISTINCT ?p) AS ?n) WHERE { ?p a schema:Product }"


class SilentServer:
    """An http server on 127.0.0.1 that accepts every connection and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.1)
        self.conns: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                self.conns.append(self.sock.accept()[0])
            except OSError:
                continue

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        for conn in self.conns:
            conn.close()
        self.sock.close()


HOSTILE = {
    # product id: (image reference, stage, words of the reason)
    "dev-zero": ("file:///dev/zero", "ingest", "outside the allowed image folders"),
    "dev-zero-path": ("/dev/zero", "ingest", "outside the allowed image folders"),
    "fifo": ("img/pipe.jpg", "ingest", "FIFO (named pipe), not a regular file"),
    "symlink-out": ("img/passwd.jpg", "ingest", "outside the allowed image folders"),
    "dotdot": ("../../../../../../../../etc/passwd", "ingest", "outside the allowed image folders"),
    "oversize": ("img/huge.png", "ingest", "above the 200000-byte cap per image"),
    "silent-url": ("{server}/photo.jpg", "extract", f"no answer within {READ_TIMEOUT:g} s (image_read_timeout)"),
    "ftp-url": ("ftp://127.0.0.1/photo.jpg", "ingest", "URL scheme 'ftp' is not read"),
}


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory, sample_catalog):
    folder = tmp_path_factory.mktemp("hostile")
    catalog_dir = folder / "catalog"
    (catalog_dir / "img").mkdir(parents=True)
    frame = pd.read_csv(sample_catalog, dtype=str, keep_default_na=False)
    frame = pd.concat([frame[frame.domain == "webshop"].head(9), frame[frame.domain == "supplier"].head(9)])
    for image in frame["image"]:
        (catalog_dir / "img" / Path(image).name).write_bytes((sample_catalog.parent / image).read_bytes())
    frame["image"] = ["img/" + Path(i).name for i in frame["image"]]
    os.mkfifo(catalog_dir / "img" / "pipe.jpg")
    secret = folder / "elsewhere" / "passwd"
    secret.parent.mkdir()
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    (catalog_dir / "img" / "passwd.jpg").symlink_to(secret)
    (catalog_dir / "img" / "huge.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 300_000)
    server = SilentServer()
    rows = [{"product_id": pid, "title": f"Red mug {pid}", "description": "", "image": image.format(server=server.url),
             "domain": "supplier", "category": "mug", "color": "red"} for pid, (image, _, _) in HOSTILE.items()]
    frame = pd.concat([frame, pd.DataFrame(rows)], ignore_index=True)
    catalog = catalog_dir / "catalog.csv"
    frame.to_csv(catalog, index=False)
    cfg = load_config(catalog=str(catalog), source=["webshop"], target=["supplier"], method="source_only", baseline=None, epochs=3,
                      out=str(folder / "out"), use_prefect=False, progress=False, image_max_bytes=200_000,
                      image_connect_timeout=1.0, image_read_timeout=READ_TIMEOUT)
    started = time.monotonic()
    try:
        summary = run_pipeline(cfg)
    finally:
        connections = len(server.conns)
        server.close()
    seconds = time.monotonic() - started
    return summary, folder, seconds, len(frame), connections


@pytest.mark.slow
def test_each_hostile_image_is_quarantined_with_its_reason(hostile_run):
    summary, folder, _, n_rows, _ = hostile_run
    quarantine = pd.read_parquet(folder / "out" / "runs" / summary["run_id"] / "quarantine.parquet").set_index("product_id")
    for pid, (_, stage, words) in HOSTILE.items():
        assert pid in quarantine.index, f"{pid} was not quarantined"
        assert quarantine.loc[pid, "stage"] == stage, (pid, quarantine.loc[pid].to_dict())
        assert words in quarantine.loc[pid, "reason"], (pid, quarantine.loc[pid, "reason"])
    assert set(quarantine.index) == set(HOSTILE)
    assert summary["counts"]["rows_in"] == n_rows
    assert summary["counts"]["products"] == n_rows - len(HOSTILE)
    with KnowledgeGraph(folder / "out" / "kg").open(read_only=True) as store:
        assert int(store.query(PRODUCTS).to_frame()["n"][0]) == n_rows - len(HOSTILE)


@pytest.mark.slow
def test_a_silent_server_costs_its_timeout_not_the_run(hostile_run):
    # the silent URL is asked once (when its content is hashed) and refused after image_read_timeout;
    # before the limits, this run was still waiting at 360 s
    summary, _, seconds, _, connections = hostile_run
    assert summary["features"]["image"]["failed"] == 1
    assert connections == 1
    assert seconds < 120, seconds


def test_the_extractor_refuses_on_its_own_without_ingest(tmp_path):
    """extract_features on paths that never went through ingest (bring-your-own items): same refusals, nothing read."""
    root = tmp_path / "photos"
    root.mkdir()
    os.mkfifo(root / "pipe.jpg")
    (root / "link.jpg").symlink_to("/etc/passwd")
    encoder = lazy_encoder("efficientnet_lite0")
    items = ["file:///dev/zero", str(root / "pipe.jpg"), str(root / "link.jpg"), str(root / "../../../../etc/passwd")]
    started = time.monotonic()
    result = extract_features(items, encoder, progress=False, limits=ImageLimits(roots=(str(root),)))
    assert time.monotonic() - started < 10
    assert not result.ok.any()
    assert "outside the allowed image folders" in result.errors[0]
    assert "FIFO" in result.errors[1]
    assert "outside the allowed image folders" in result.errors[2] and "/etc/passwd" in result.errors[2]
    assert "outside the allowed image folders" in result.errors[3]
    assert not encoder.loaded  # nothing was left to encode: the model was never even built
    # with no roots at all (a library call), devices and FIFOs are still refused
    result = extract_features(items[:2], encoder, progress=False)
    assert "character device" in result.errors[0] and "FIFO" in result.errors[1]


def test_image_settings_are_run_config_keys_outside_the_fingerprint(tmp_path, sample_catalog):
    from prodkg.errors import ConfigError

    config = tmp_path / "run.toml"
    config.write_text('[run]\nimage_roots = ["/srv/photos"]\nimage_max_bytes = 1000000\nimage_max_pixels = 4000000\n'
                      'image_connect_timeout = 2.0\nimage_read_timeout = 3.0\nimage_budget_bytes = 5000000000\n'
                      'image_budget_seconds = 600.0\nimage_fsspec_schemes = ["s3"]\n')
    base = {"catalog": str(sample_catalog), "source": ["webshop"], "target": ["supplier"]}
    cfg = load_config(config, **base)
    assert (cfg.image_roots, cfg.image_max_bytes, cfg.image_read_timeout) == (["/srv/photos"], 1_000_000, 3.0)
    assert cfg.fingerprint() == load_config(**base).fingerprint()  # earlier runs' hashes stay valid
    with pytest.raises(ConfigError, match="image_read_timeout: Input should be greater than 0"):  # with the config, before any work
        load_config(**base, image_read_timeout=0, out=str(tmp_path / "out"), use_prefect=False, progress=False)
    assert not (tmp_path / "out").exists()
