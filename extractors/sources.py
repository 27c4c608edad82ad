"""Where image bytes may come from, and how much of them: the limits every image read goes through.

A catalog row names its image by a path or a URL, and a catalog is input we do not control. So:

* local files are read only when they are regular files whose real path (symlinks resolved) lies under
  an allowed root (the catalog's folder plus the run's ``image_roots``); ``../`` paths and symlinks that
  leave the roots, devices (``/dev/zero``), FIFOs and sockets are refused from ``stat`` alone, before
  anything is opened for reading;
* ``file:`` URLs are local paths under the same rule; ``http``/``https`` URLs are fetched with a connect
  timeout, a read timeout per socket operation and a total deadline per URL; every other scheme is refused
  unless listed in ``fsspec_schemes`` (then read through fsspec, with the byte cap but only fsspec's timeouts);
* every read streams with a byte cap (a file that grows, or a server that sends more than its
  Content-Length, is cut at the cap and refused), so an unbounded source never fills memory;
* a per-run budget (bytes and/or seconds) stops reading once spent: the remaining images are refused;
* decoding refuses images above a pixel count before decoding them (decompression bombs).

Each refusal raises :class:`~prodkg.extractors.base.ItemError` with its reason, which becomes the
product's quarantine reason; a refusal never stops a run.
"""

from __future__ import annotations

import contextlib
import contextvars
import http.client
import os
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

from prodkg.errors import ConfigError, ProdkgError

MiB = 1 << 20
DEFAULT_MAX_BYTES = 32 * MiB  # a product photo is rarely above 10 MB; a 4 GB "image" is an attack or a mistake
DEFAULT_MAX_PIXELS = 50_000_000  # 8000 x 6250; decoding it takes ~150 MB of RGB
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 15.0
URL_SCHEMES = ("http", "https")
_MAX_REDIRECTS = 5
_CHUNK = 1 << 16


class SourceRefused(ProdkgError):
    """An image source broke a limit. Readers turn it into an ItemError (the product is quarantined)."""


@dataclass(frozen=True)
class ImageLimits:
    """Limits for reading and decoding images. Picklable: it travels with DataLoader and Dask work.

    Attributes:
        roots: folders local images must lie in (real paths, symlinks resolved). ``None``: any local
            regular file (a library call with no catalog folder); the pipeline always sets roots.
        max_bytes: most bytes read for one image.
        max_pixels: most pixels (width x height) an image may decode to.
        connect_timeout: seconds to connect to an image URL's server.
        read_timeout: seconds one read from that server may wait; a URL as a whole gets
            ``connect_timeout + 4 * read_timeout`` seconds (a server trickling bytes cannot stall a run).
        budget_bytes: most bytes read for images in one run (``None``: no budget).
        budget_seconds: most seconds spent reading images in one run, counted from the first read
            (``None``: no budget).
        budget_key: which run's budget the reads count against (the run id; empty: no shared budget).
        fsspec_schemes: other URL schemes read through fsspec (e.g. ``s3``, ``gs``), an explicit opt-in.
    """

    roots: tuple[str, ...] | None = None
    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT
    budget_bytes: int | None = None
    budget_seconds: float | None = None
    budget_key: str = ""
    fsspec_schemes: tuple[str, ...] = ()
    _real_roots: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_pixels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"image {name} must be an integer >= 1, got {value!r}")
        for name in ("connect_timeout", "read_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"image {name} must be a number of seconds > 0, got {value!r}")
        if self.budget_bytes is not None and (isinstance(self.budget_bytes, bool) or not isinstance(self.budget_bytes, int) or self.budget_bytes < 1):
            raise ConfigError(f"image budget_bytes must be an integer >= 1 or unset, got {self.budget_bytes!r}")
        if self.budget_seconds is not None and (isinstance(self.budget_seconds, bool) or not isinstance(self.budget_seconds, (int, float))
                                                or not self.budget_seconds > 0):
            raise ConfigError(f"image budget_seconds must be a number > 0 or unset, got {self.budget_seconds!r}")
        if isinstance(self.fsspec_schemes, str):
            raise ConfigError(f"image fsspec_schemes must be a list of URL schemes, got {self.fsspec_schemes!r}")
        schemes = tuple(str(s).lower() for s in self.fsspec_schemes)
        if any(s in ("file", *URL_SCHEMES) for s in schemes):
            raise ConfigError(f"image fsspec_schemes may not list file, http or https (they are read with limits of their own), got {schemes}")
        object.__setattr__(self, "fsspec_schemes", schemes)
        if self.roots is not None:
            if isinstance(self.roots, (str, os.PathLike)):
                raise ConfigError(f"image roots must be a list of folders, got {self.roots!r}")
            roots = tuple(str(r) for r in self.roots)
            object.__setattr__(self, "roots", roots)
            object.__setattr__(self, "_real_roots", tuple(os.path.realpath(os.path.expanduser(r)) for r in roots))

    @property
    def url_deadline(self) -> float:
        return self.connect_timeout + 4 * self.read_timeout


DEFAULT_LIMITS = ImageLimits()
_CURRENT: contextvars.ContextVar[ImageLimits | None] = contextvars.ContextVar("prodkg_image_limits", default=None)


def current_limits() -> ImageLimits:
    """The limits set by :func:`using_limits` in this context, else :data:`DEFAULT_LIMITS`."""
    return _CURRENT.get() or DEFAULT_LIMITS


@contextlib.contextmanager
def using_limits(limits: ImageLimits | None) -> Iterator[None]:
    """Make ``limits`` the ones :func:`read_image_bytes` (and so ``open_image``) apply in this context."""
    token = _CURRENT.set(limits)
    try:
        yield
    finally:
        _CURRENT.reset(token)


# --- the per-run budget ------------------------------------------------------------------


class _Budget:
    def __init__(self, limits: ImageLimits) -> None:
        self.max_bytes = limits.budget_bytes
        self.max_seconds = limits.budget_seconds
        self.used = 0
        self.started: float | None = None
        self.lock = threading.Lock()

    def check(self) -> None:
        with self.lock:
            if self.started is None:
                self.started = time.monotonic()
            if self.max_bytes is not None and self.used >= self.max_bytes:
                raise SourceRefused(f"the run's image budget of {self.max_bytes} bytes is spent")
            if self.max_seconds is not None and time.monotonic() - self.started > self.max_seconds:
                raise SourceRefused(f"the run's image budget of {self.max_seconds:g} s is spent")

    def remaining(self) -> int | None:
        with self.lock:
            return None if self.max_bytes is None else max(0, self.max_bytes - self.used)

    def add(self, n: int) -> None:
        with self.lock:
            self.used += n


_BUDGETS: OrderedDict[str, _Budget] = OrderedDict()
_BUDGETS_LOCK = threading.Lock()


def _budget(limits: ImageLimits) -> _Budget | None:
    """The budget of ``limits.budget_key`` in this process (per worker process under Dask)."""
    if limits.budget_bytes is None and limits.budget_seconds is None:
        return None
    with _BUDGETS_LOCK:
        key = limits.budget_key
        if key not in _BUDGETS:
            _BUDGETS[key] = _Budget(limits)
            while len(_BUDGETS) > 8:  # runs are sequential per output folder; keep a few, not all
                _BUDGETS.popitem(last=False)
        return _BUDGETS[key]


# --- local files ---------------------------------------------------------------------------

_KINDS = {stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device", stat.S_IFIFO: "a FIFO (named pipe)",
          stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a directory", stat.S_IFLNK: "a symlink"}


def _kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def file_url_path(url: str) -> str:
    """The local path of a ``file:`` URL (``file:///a/b``, ``file://localhost/a/b``); refused for other hosts."""
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise SourceRefused(f"file URL names another host ({parts.netloc!r}); only local file URLs are read")
    return unquote(parts.path)


def check_local(path: str | os.PathLike[str], limits: ImageLimits | None = None) -> tuple[str, os.stat_result]:
    """Check a local image path without reading it; return its real path and ``stat``.

    Raises SourceRefused: outside the allowed roots (``../`` or a symlink leaving them), not a regular
    file (device, FIFO, socket, directory), larger than the byte cap; FileNotFoundError when missing.
    """
    limits = limits or current_limits()
    try:
        real = os.path.realpath(os.fspath(path))
    except (OSError, ValueError) as exc:
        raise SourceRefused(f"not a usable file path: {exc}") from None
    if limits.roots is not None and not any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in limits._real_roots):
        where = ", ".join(limits.roots) or "no folder"
        via = f" (it resolves to {real})" if real != os.path.abspath(os.fspath(path)) else ""
        raise SourceRefused(f"outside the allowed image folders ({where}){via}; add its folder to image_roots to allow it")
    try:
        st = os.stat(real)
    except ValueError as exc:  # embedded NUL
        raise SourceRefused(f"not a usable file path: {exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise SourceRefused(f"{_kind(st.st_mode)}, not a regular file")
    if st.st_size > limits.max_bytes:
        raise SourceRefused(f"{st.st_size} bytes, above the {limits.max_bytes}-byte cap per image (image_max_bytes)")
    return real, st


def _read_local(path: str, limits: ImageLimits, cap: int) -> bytes:
    real, st = check_local(path, limits)
    # O_NONBLOCK: should the file have become a FIFO since the check, opening it must not wait for a writer
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(real, flags)
    try:
        now = os.fstat(fd)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISREG(now.st_mode):
            raise SourceRefused("the file changed between its check and its opening")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return _capped(fh.read, cap, limits)
    finally:
        os.close(fd)


def _capped(read, cap: int, limits: ImageLimits, deadline: float | None = None) -> bytes:
    """Read chunks until EOF; refuse as soon as more than ``cap`` bytes (or the deadline) would be passed."""
    parts, n = [], 0
    while True:
        chunk = read(min(_CHUNK, cap + 1 - n))
        if not chunk:
            return b"".join(parts)
        n += len(chunk)
        if n > cap:
            if cap < limits.max_bytes:
                raise SourceRefused(f"the run's image budget of {limits.budget_bytes} bytes is spent")
            raise SourceRefused(f"more than the {limits.max_bytes}-byte cap per image (image_max_bytes)")
        parts.append(chunk)
        if deadline is not None and time.monotonic() > deadline:
            raise SourceRefused(f"took longer than {limits.url_deadline:g} s")


# --- http(s) -------------------------------------------------------------------------------


def _read_url(url: str, limits: ImageLimits, cap: int) -> bytes:
    deadline = time.monotonic() + limits.url_deadline
    for _ in range(_MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        if parts.scheme.lower() not in URL_SCHEMES:
            raise SourceRefused(f"redirected to a {parts.scheme or 'schemeless'} URL; only http and https are followed")
        if not parts.hostname:
            raise SourceRefused("URL has no host")
        cls = http.client.HTTPSConnection if parts.scheme.lower() == "https" else http.client.HTTPConnection
        conn = cls(parts.hostname, parts.port, timeout=limits.connect_timeout)
        try:
            try:
                conn.connect()
            except TimeoutError:
                raise SourceRefused(f"no connection within {limits.connect_timeout:g} s (image_connect_timeout)") from None
            conn.sock.settimeout(limits.read_timeout)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            try:
                conn.request("GET", target, headers={"User-Agent": "prodkg", "Accept": "image/*", "Accept-Encoding": "identity"})
                resp = conn.getresponse()
                if resp.status in (301, 302, 303, 307, 308) and resp.getheader("Location"):
                    url = urljoin(url, resp.getheader("Location"))
                    continue
                if resp.status != 200:
                    raise SourceRefused(f"HTTP {resp.status} {resp.reason}")
                length = resp.getheader("Content-Length")
                if length and length.isdigit() and int(length) > cap:
                    if cap < limits.max_bytes:
                        raise SourceRefused(f"the run's image budget of {limits.budget_bytes} bytes is spent")
                    raise SourceRefused(f"{length} bytes announced, above the {limits.max_bytes}-byte cap per image (image_max_bytes)")
                return _capped(resp.read1, cap, limits, deadline)  # read1: whatever arrived, so the deadline is checked
            except TimeoutError:
                raise SourceRefused(f"no answer within {limits.read_timeout:g} s (image_read_timeout)") from None
        finally:
            conn.close()
    raise SourceRefused(f"more than {_MAX_REDIRECTS} redirects")


# --- the one entry point -----------------------------------------------------------------


def read_image_bytes(item: str, limits: ImageLimits | None = None) -> bytes:
    """The bytes of one image path or URL, within ``limits`` (default: :func:`current_limits`).

    Raises SourceRefused with the reason when a limit refuses the source, FileNotFoundError /
    IsADirectoryError / OSError from the file system, and http.client / socket errors from a server.
    """
    limits = limits or current_limits()
    budget = _budget(limits)
    cap = limits.max_bytes
    if budget is not None:
        budget.check()
        remaining = budget.remaining()
        if remaining is not None:
            cap = min(cap, remaining)
    scheme = urlsplit(item).scheme.lower() if "://" in item[:16] else ""
    if scheme == "file":
        data = _read_local(file_url_path(item), limits, cap)
    elif scheme in URL_SCHEMES:
        data = _read_url(item, limits, cap)
    elif scheme and scheme in limits.fsspec_schemes:
        import fsspec

        with fsspec.open(item, "rb") as fh:
            data = _capped(fh.read, cap, limits)
    elif scheme:
        raise SourceRefused(f"URL scheme {scheme!r} is not read; images are local files or http(s) URLs (or list it in image_fsspec_schemes)")
    else:
        data = _read_local(item, limits, cap)
    if budget is not None:
        budget.add(len(data))
    return data


def check_pixels(size: tuple[int, int], limits: ImageLimits | None = None) -> None:
    """Refuse an image whose header announces more pixels than ``max_pixels``, before it is decoded."""
    limits = limits or current_limits()
    width, height = size
    if width * height > limits.max_pixels:
        raise SourceRefused(f"{width}x{height} = {width * height} pixels, above the cap of {limits.max_pixels} "
                            "(image_max_pixels; a decompression bomb or a poster-sized scan)")


def limits_for(roots: Sequence[str | os.PathLike[str]] | None, **settings) -> ImageLimits:
    """ImageLimits from run settings; ``None`` values fall back to the defaults."""
    given = {k: v for k, v in settings.items() if v is not None}
    return ImageLimits(roots=None if roots is None else tuple(str(Path(r).expanduser()) for r in roots), **given)
