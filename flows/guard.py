"""What wraps every pipeline run: the output folder's run lock, cleanup of earlier runs' leftovers,
the run's image limits, and I/O faults (disk full above all) turned into one clear error.

``run_pipeline`` enters :func:`run_guard` before anything else (before ingest, before Prefect starts),
so a refused second run writes nothing. On an I/O fault the run removes its own partial files at once
(freeing the space a full disk needs) and raises :class:`~prodkg.errors.ResourceError`; whatever a
killed run leaves is removed by the next run or ``prodkg gc``. The live graph is never touched.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prodkg.errors import ResourceError
from prodkg.flows import gc
from prodkg.flows.runlock import RunLock, read_holder

# torch.save reports a failed write as RuntimeError, not OSError ("PytorchStreamWriter failed writing file ...")
_WRITE_FAILED = ("file write failed", "No space left on device", "failed writing file")


def image_roots(cfg) -> list[str]:
    """Folders the run's local images may lie in: the catalog's folder (a dataset's: the mirror), plus ``image_roots``."""
    roots = [str(Path(r).expanduser().resolve()) for r in (cfg.image_roots or [])]
    if cfg.catalog and "://" not in str(cfg.catalog):
        roots.insert(0, str(Path(str(cfg.catalog)).expanduser().resolve().parent))
    elif cfg.dataset:
        from prodkg.catalogs.loaders import data_home

        home = data_home(cfg.data_home)
        if home is not None:
            roots.insert(0, str(home))
    return roots


def image_limits_for(cfg):
    """The run's :class:`~prodkg.extractors.sources.ImageLimits` (ConfigError for a bad setting).

    The per-run budget is keyed by the run holding ``<out>/.lock``, so every shard of one run (in this
    process) draws on one budget; under Dask each worker process keeps its own.
    """
    from prodkg.extractors.sources import limits_for

    holder = read_holder(cfg.out_path)
    return limits_for(image_roots(cfg), max_bytes=cfg.image_max_bytes, max_pixels=cfg.image_max_pixels,
                      connect_timeout=cfg.image_connect_timeout, read_timeout=cfg.image_read_timeout,
                      budget_bytes=cfg.image_budget_bytes, budget_seconds=cfg.image_budget_seconds,
                      budget_key=holder.run_id if holder else str(cfg.out_path.resolve()),
                      fsspec_schemes=tuple(cfg.image_fsspec_schemes or ()))


# errors that are the machine's, not the input's, when a prodkg error reports them as its cause
_MACHINE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS}


def resource_fault(exc: BaseException) -> BaseException | None:
    """The I/O fault behind ``exc`` (the machine failing the run, not a bug or bad input), or None.

    Any OSError counts, and torch's failed write; so does a prodkg error (a StoreError, say) whose
    cause is a full disk, a quota, a read-only file system or an I/O error.
    """
    if isinstance(exc, OSError) or (isinstance(exc, RuntimeError) and any(s in str(exc) for s in _WRITE_FAILED)):
        return exc
    seen, cause = 0, exc.__cause__ or exc.__context__
    while cause is not None and seen < 8:
        if isinstance(cause, OSError) and cause.errno in _MACHINE_ERRNOS:
            return cause
        seen, cause = seen + 1, cause.__cause__ or cause.__context__
    return None


def describe_fault(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        code = errno.errorcode.get(exc.errno or 0, "")
        what = exc.strerror or str(exc) or type(exc).__name__
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        return f"{what}{where}" + (f" [{code}]" if code else "")
    return " ".join(str(exc).split())[:300]


def _note(message: str) -> None:
    print(f"prodkg: {message}", file=sys.stderr)


@contextmanager
def run_guard(cfg, run_id: str) -> Iterator[RunLock]:
    """Hold ``<out>/.lock`` for the run; clean earlier leftovers; turn I/O faults into ResourceError."""
    out = cfg.out_path
    image_limits_for(cfg)  # a bad image setting is a ConfigError now, before anything is locked or written
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ResourceError(f"cannot create output folder {out}: {describe_fault(exc)}") from None
    lock = RunLock(out, run_id).acquire()
    try:
        if lock.stale is not None:
            _note(f"recovered the lock of {lock.stale.describe()}, which is no longer running; removing its leftovers")
        try:
            removed = gc.collect(out, cfg.cache_path, keep_runs={run_id})
            if removed:
                _note(f"removed {len(removed)} leftover(s) of earlier runs ({sum(r.bytes for r in removed)} bytes)")
        except OSError:
            pass  # cleaning is best effort: `prodkg gc` reports what it cannot remove
        try:
            yield lock
        except BaseException as exc:
            fault = resource_fault(exc)
            if fault is None:
                raise
            # free what this run wrote (a full disk needs the space); the live graph is not among it
            gc.remove(gc.find_leftovers(out, cfg.cache_path, reclaim_pids={os.getpid()}))
            raise ResourceError(f"run {run_id} stopped: {describe_fault(fault)}; the last good graph stays live in {out / 'kg'} "
                                f"and this run's partial files were removed") from exc
    finally:
        lock.release()
