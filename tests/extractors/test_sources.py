"""Image sources with limits: devices, FIFOs, paths and symlinks out of the roots, oversize files, stalled and
endless servers, decompression bombs and the per-run budget are refused with a reason, quickly, without reading."""

from __future__ import annotations

import io
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from prodkg.errors import ConfigError
from prodkg.extractors.base import ItemError, open_image, read_bytes
from prodkg.extractors.sources import ImageLimits, check_local, read_image_bytes, using_limits


def _png(path: Path, size=(32, 32)) -> Path:
    Image.new("RGB", size, (200, 30, 30)).save(path)
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "catalog"
    folder.mkdir()
    _png(folder / "ok.png")
    return folder


@pytest.fixture
def limits(root: Path) -> ImageLimits:
    return ImageLimits(roots=(str(root),), max_bytes=64 * 1024, connect_timeout=1.0, read_timeout=0.5)


def _refused(item: str, limits: ImageLimits, within: float = 5.0) -> str:
    """The reason ``item`` is refused; fails if it is read or takes longer than ``within`` seconds."""
    box: dict = {}

    def work():
        try:
            box["data"] = read_bytes(item, limits)
        except ItemError as exc:
            box["error"] = str(exc)

    thread = threading.Thread(target=work, daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(within)
    assert not thread.is_alive(), f"reading {item!r} still blocked after {within} s"
    assert "error" in box, f"{item!r} was read ({len(box.get('data', b''))} bytes)"
    box["seconds"] = time.monotonic() - started
    return box["error"]


def test_a_regular_file_under_the_root_is_read(root, limits):
    assert read_bytes(str(root / "ok.png"), limits)[:8] == b"\x89PNG\r\n\x1a\n"
    assert read_bytes((root / "ok.png").as_uri(), limits)[:4] == b"\x89PNG"
    assert open_image(str(root / "ok.png"), limits).size == (32, 32)


@pytest.mark.parametrize("item", ["file:///dev/zero", "/dev/zero", "/dev/urandom"])
def test_devices_are_refused_before_reading(item, limits):
    reason = _refused(item, ImageLimits(roots=None))  # even with no root restriction at all
    assert "character device, not a regular file" in reason
    assert "outside the allowed image folders" in _refused(item, limits)


def test_a_fifo_is_refused_without_blocking(root, limits):
    fifo = root / "pipe.jpg"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    assert "FIFO (named pipe), not a regular file" in _refused(str(fifo), limits, within=3)
    assert "FIFO" in _refused(fifo.as_uri(), limits, within=3)


def test_a_symlink_out_of_the_root_is_refused(root, limits, tmp_path):
    secret = tmp_path / "etc" / "passwd"
    secret.parent.mkdir()
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "photo.jpg").symlink_to(secret)
    reason = _refused(str(root / "photo.jpg"), limits)
    assert "outside the allowed image folders" in reason and str(secret) in reason
    # a symlink that stays inside the root is fine
    (root / "alias.png").symlink_to(root / "ok.png")
    assert read_bytes(str(root / "alias.png"), limits)[:4] == b"\x89PNG"


@pytest.mark.parametrize("item", ["{root}/../../../../../../etc/passwd", "{root}/../outside.png", "file://{root}/../outside.png", "/etc/passwd"])
def test_paths_out_of_the_root_are_refused(item, root, limits):
    _png(root.parent / "outside.png")
    assert "outside the allowed image folders" in _refused(item.format(root=root), limits)


def test_other_url_schemes_and_hosts_are_refused(limits):
    assert "URL scheme 'ftp' is not read" in _refused("ftp://127.0.0.1/a.jpg", limits)
    assert "another host" in _refused("file://example.org/etc/passwd", limits)


def test_an_oversize_file_is_refused_from_its_size(root, limits):
    big = root / "big.png"
    big.write_bytes(b"\x89PNG" + b"\0" * (limits.max_bytes + 1))
    assert f"above the {limits.max_bytes}-byte cap per image" in _refused(str(big), limits)


def test_pixels_are_capped_before_decoding(root):
    _png(root / "wide.png", size=(4000, 3000))
    with pytest.raises(ItemError, match=r"4000x3000 = 12000000 pixels, above the cap of 1000000"):
        open_image(str(root / "wide.png"), ImageLimits(max_pixels=1_000_000))
    with using_limits(ImageLimits(max_pixels=1_000_000)), pytest.raises(ItemError, match="pixels, above the cap"):
        open_image(str(root / "wide.png"))  # the context's limits apply when none are passed


def test_run_budget_in_bytes(root):
    limits = ImageLimits(roots=(str(root),), budget_bytes=1000, budget_key="budget-test-bytes")
    for i in range(3):
        (root / f"{i}.bin").write_bytes(b"x" * 400)
    assert len(read_bytes(str(root / "0.bin"), limits)) == 400
    assert len(read_bytes(str(root / "1.bin"), limits)) == 400
    assert "image budget of 1000 bytes is spent" in _refused(str(root / "2.bin"), limits)
    assert "image budget of 1000 bytes is spent" in _refused(str(root / "0.bin"), limits)


def test_bad_settings_are_config_errors():
    for bad in ({"max_bytes": 0}, {"read_timeout": -1}, {"budget_seconds": 0}, {"roots": "/tmp"}, {"fsspec_schemes": ("http",)}):
        with pytest.raises(ConfigError):
            ImageLimits(**bad)


# --- http on 127.0.0.1 ---------------------------------------------------------------------------


@contextmanager
def silent_server() -> Iterator[str]:
    """Accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    accepted, stop = [], threading.Event()

    def loop():
        sock.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(sock.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        sock.close()


class _Handler(BaseHTTPRequestHandler):
    png = b""

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/ok.png":
            self.send_response(200)
            self.send_header("Content-Length", str(len(self.png)))
            self.end_headers()
            self.wfile.write(self.png)
        elif self.path == "/endless":  # no Content-Length, bytes forever
            self.send_response(200)
            self.end_headers()
            try:
                while True:
                    self.wfile.write(b"\0" * 65536)
            except OSError:
                pass
        elif self.path == "/announced":
            self.send_response(200)
            self.send_header("Content-Length", str(10**10))
            self.end_headers()
        elif self.path == "/to-file":
            self.send_response(302)
            self.send_header("Location", "file:///etc/passwd")
            self.end_headers()
        elif self.path == "/trickle":
            self.send_response(200)
            self.end_headers()
            try:
                for _ in range(100):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                pass
        else:
            self.send_error(404)


@pytest.fixture
def http_server() -> Iterator[str]:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (0, 0, 255)).save(buf, format="PNG")
    _Handler.png = buf.getvalue()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_server_that_never_answers_times_out(limits):
    with silent_server() as base:
        started = time.monotonic()
        reason = _refused(f"{base}/photo.jpg", limits, within=5)
        assert "no answer within 0.5 s (image_read_timeout)" in reason
        assert time.monotonic() - started < 3


def test_http_limits(http_server, limits):
    assert read_bytes(f"{http_server}/ok.png", limits)[:4] == b"\x89PNG"
    assert "more than the 65536-byte cap per image" in _refused(f"{http_server}/endless", limits)
    assert "announced, above the 65536-byte cap" in _refused(f"{http_server}/announced", limits)
    assert "redirected to a file URL" in _refused(f"{http_server}/to-file", limits)
    assert "HTTP 404" in _refused(f"{http_server}/missing.png", limits)
    trickle = ImageLimits(connect_timeout=0.2, read_timeout=0.3)  # a URL gets 0.2 + 4 x 0.3 = 1.4 s in all
    assert "took longer than 1.4 s" in _refused(f"{http_server}/trickle", trickle, within=5)


def test_check_local_reads_nothing(root, limits):
    real, st = check_local(root / "ok.png", limits)
    assert real == str((root / "ok.png").resolve()) and st.st_size > 0
    assert read_image_bytes(str(root / "ok.png"), limits)[:4] == b"\x89PNG"


class _SizeEncoder:
    """A model-free image encoder: the vector is the decoded image's size (enough to see what was read)."""

    @staticmethod
    def make():
        import numpy as np
        import torch

        from prodkg.extractors.base import Encoder

        class SizeEncoder(Encoder):
            name, modality = "size-test", "image"

            def __init__(self):
                self.dim, self.encoder_id, self.precision, self.device = 2, "size-test/v1", "fp32", torch.device("cpu")

            def load_item(self, item):
                return open_image(item).size

            def encode_batch(self, items):
                return np.asarray(items, dtype=np.float32).reshape(len(items), 2)

        return SizeEncoder()


def test_extraction_counts_each_image_once_against_the_budget(root):
    from prodkg.extractors import extract_features

    paths = [str(_png(root / f"{i}.png", size=(8 + i, 8))) for i in range(4)]
    sizes = [os.path.getsize(p) for p in paths]
    limits = ImageLimits(roots=(str(root),), budget_bytes=sum(sizes[:3]), budget_key="budget-test-extract")
    result = extract_features(paths, _SizeEncoder.make(), progress=False, limits=limits)
    # hashing reads every image once; decoding the three that fit reads them again without spending the budget twice
    assert result.ok.tolist() == [True, True, True, False]
    assert "image budget" in result.errors[3]
    assert result.features[:3, 0].tolist() == [8, 9, 10]


def test_a_photo_shown_on_many_products_is_read_once(root):
    """40 rows naming 3 photos (above the size at which hashing goes to threads) spend 3 reads of the budget."""
    from prodkg.extractors import extract_features

    paths = [str(_png(root / f"{i}.png", size=(8 + i, 8))) for i in range(4)]
    sizes = [os.path.getsize(p) for p in paths]
    limits = ImageLimits(roots=(str(root),), budget_bytes=sum(sizes[:3]), budget_key="budget-test-repeats")
    rows = [paths[i % 3] for i in range(39)] + [paths[3]]
    result = extract_features(rows, _SizeEncoder.make(), progress=False, limits=limits)
    assert result.ok[:39].all() and not result.ok[39]
    assert "image budget" in result.errors[39]
    assert result.features[:39, 0].tolist() == [8 + i % 3 for i in range(39)]


# --- remembered hashes of unchanged files -----------------------------------------------------------


@pytest.fixture
def settled(monkeypatch):
    """Files written by a test are seconds old at most: treat them as settled, so their hashes are remembered."""
    from prodkg.extractors import extract

    monkeypatch.setattr(extract, "_RACY_NS", -1)


def test_an_unchanged_photo_is_not_read_again(root, tmp_path, settled):
    """The second run's budget is spent, so only photos it does not read can pass: all three do with the memo,
    none without it (``--full-check``)."""
    import hashlib

    from prodkg.extractors import FeatureCache, extract_features

    paths = [str(_png(root / f"{i}.png", size=(8 + i, 8))) for i in range(3)]
    cache = FeatureCache(tmp_path / "cache")
    limits = ImageLimits(roots=(str(root),), budget_bytes=sum(os.path.getsize(p) for p in paths), budget_key="memo-test")
    first = extract_features(paths, _SizeEncoder.make(), cache=cache, progress=False, limits=limits)
    assert first.ok.all() and first.n_computed == 3
    remembered = cache.file_digests(os.path.realpath(p) for p in paths)
    assert {p: d for p, (_, d) in remembered.items()} == {os.path.realpath(p): hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}

    again = extract_features(paths, _SizeEncoder.make(), cache=cache, progress=False, limits=limits)
    assert again.ok.all() and again.n_cached == 3 and again.features[:, 0].tolist() == [8, 9, 10]
    full = extract_features(paths, _SizeEncoder.make(), cache=cache, progress=False, limits=limits, stat_memo=False)
    assert not full.ok.any() and all("image budget" in reason for reason in full.errors.values())


def test_a_rewrite_that_keeps_size_and_mtime_is_read_again(root, tmp_path, settled):
    import hashlib

    from prodkg.extractors import FeatureCache
    from prodkg.extractors.extract import _hash_all

    path = root / "blob.png"
    path.write_bytes(b"a" * 100)
    cache = FeatureCache(tmp_path / "cache")
    limits = ImageLimits(roots=(str(root),))
    assert _hash_all([(0, str(path))], "image", limits, memo=cache)[0] == {0: hashlib.sha256(b"a" * 100).hexdigest()}
    before = os.stat(path)
    path.write_bytes(b"b" * 100)  # same size; the mtime is put back, the ctime cannot be
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert _hash_all([(0, str(path))], "image", limits, memo=cache)[0] == {0: hashlib.sha256(b"b" * 100).hexdigest()}


def test_a_file_written_just_now_is_not_remembered(root, tmp_path):
    from prodkg.extractors import FeatureCache
    from prodkg.extractors.extract import _hash_all

    cache = FeatureCache(tmp_path / "cache")
    hashes, errors = _hash_all([(0, str(root / "ok.png"))], "image", ImageLimits(roots=(str(root),)), memo=cache)
    assert len(hashes) == 1 and not errors
    assert cache.file_digests([os.path.realpath(root / "ok.png")]) == {}  # within the timestamp granularity: read next time too


def test_a_remembered_photo_still_obeys_the_folder_rules(root, tmp_path, settled):
    from prodkg.extractors import FeatureCache
    from prodkg.extractors.extract import _hash_all
    from prodkg.flows.config import RunConfig

    cache = FeatureCache(tmp_path / "cache")
    item = [(0, str(root / "ok.png"))]
    assert _hash_all(item, "image", ImageLimits(roots=None), memo=cache)[0]
    other = tmp_path / "elsewhere"
    other.mkdir()
    hashes, errors = _hash_all(item, "image", ImageLimits(roots=(str(other),)), memo=cache)
    assert not hashes and "outside the allowed image folders" in errors[0]
    assert RunConfig(dataset="office-caltech-10", full_check=True).extract_settings().stat_memo is False
    assert RunConfig(dataset="office-caltech-10").extract_settings().stat_memo is True
