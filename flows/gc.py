"""Leftovers of failed and killed runs, and their removal: by the next run, or by ``prodkg gc --out DIR``.

What counts as a leftover (nothing else is ever touched; the live graph ``<out>/kg`` above all):

* ``<out>/runs/<id>/`` without ``manifest.json``: a run that failed or was killed before it finished,
  unless a published graph store belongs to it (a run killed after its graph went live keeps the folder
  its embeddings live in) or it is the run holding the lock;
* ``*.tmp`` files inside finished run folders (an interrupted atomic write);
* ``<out>/kg/stores/*.partial``: a graph store whose build was killed (a failed build removes its own);
* ``<out>/kg/.CURRENT.<pid>.tmp``, ``<out>/kg/.spool.<pid>.nq`` (a graph stage's statements before the load) and, in the cache folder, ``<entry>.tmp<pid>`` folders and files
  (``cache/heads/*.tmpPID``, ``cache/finetune/*.tmpPID``) whose process is no longer alive.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from prodkg.flows.runlock import pid_alive
from prodkg.layout import RunLayout

_TMP_PID = re.compile(r"\.tmp(\d+)$")
_CURRENT_TMP = re.compile(r"^\.CURRENT\.(\d+)\.tmp$")
_SPOOL = re.compile(r"^\.spool\.(\d+)\.nq$")


@dataclass(frozen=True)
class Leftover:
    path: Path
    reason: str
    bytes: int


def _size(path: Path) -> int:
    try:
        if path.is_symlink() or not path.is_dir():
            return path.lstat().st_size
        return sum(p.lstat().st_size for p in path.rglob("*") if not p.is_symlink())
    except OSError:
        return 0


def _published_store_names(out: Path) -> set[str]:
    stores = RunLayout(out).kg / "stores"
    try:
        return {p.name.split(".", 1)[0] for p in stores.iterdir() if p.is_dir() and not p.name.endswith(".partial")}
    except OSError:
        return set()


def _store_name(run_id: str) -> str:
    from prodkg.kb.store import _store_dir_name

    return _store_dir_name(run_id).split(".", 1)[0]


def _dead(pid: int, reclaim: set[int]) -> bool:
    return pid in reclaim or not pid_alive(pid)


def find_leftovers(out: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None, *,
                   keep_runs: Iterable[str] = (), reclaim_pids: Iterable[int] = ()) -> list[Leftover]:
    """The leftovers under ``out`` (and ``cache_dir``, default ``<out>/cache``); nothing is removed.

    Args:
        keep_runs: run ids whose folders stay whatever their state (the run holding the lock).
        reclaim_pids: pids whose temporary entries count as dead although the process lives (the
            caller's own, after its run failed).
    """
    layout = RunLayout(Path(out), Path(cache_dir) if cache_dir else None)
    out, cache = layout.out, layout.cache
    keep = set(keep_runs)
    reclaim = set(reclaim_pids)
    found: list[Leftover] = []

    def add(path: Path, reason: str) -> None:
        found.append(Leftover(path, reason, _size(path)))

    runs = layout.runs
    kept_stores = {_store_name(r) for r in keep}
    if runs.is_dir():
        published = _published_store_names(out)
        for run_dir in sorted(p for p in runs.iterdir() if p.is_dir() and not p.is_symlink()):
            if run_dir.name in keep:
                continue
            if layout.manifest(run_dir.name).is_file():
                for tmp in sorted(run_dir.glob("*.tmp")):
                    add(tmp, "interrupted write in a finished run")
                continue
            if _store_name(run_dir.name) in published:
                continue  # its graph went live before the run was killed: the graph's run folder stays
            add(run_dir, "unfinished run (no manifest.json)")
    kg = layout.kg
    stores = kg / "stores"
    if stores.is_dir():
        for partial in sorted(stores.glob("*.partial")):
            if partial.name.split(".", 1)[0] not in kept_stores:
                add(partial, "partial graph store of an interrupted publish")
    if kg.is_dir():
        for tmp in sorted(kg.iterdir()):
            m = _CURRENT_TMP.match(tmp.name)
            if m and _dead(int(m.group(1)), reclaim):
                add(tmp, f"temporary pointer of process {m.group(1)}, no longer running")
            m = _SPOOL.match(tmp.name)
            if m and _dead(int(m.group(1)), reclaim):
                add(tmp, f"N-Quads spool of process {m.group(1)}, no longer running")
    if cache.is_dir():
        for folder in [cache, *sorted(p for p in cache.iterdir() if p.is_dir() and not p.is_symlink())]:
            for entry in sorted(folder.iterdir()):
                m = _TMP_PID.search(entry.name)
                if m and _dead(int(m.group(1)), reclaim):
                    add(entry, f"temporary cache entry of process {m.group(1)}, no longer running")
    return found


def remove(leftovers: Iterable[Leftover]) -> list[Leftover]:
    """Remove leftovers; returns those removed (one that vanished meanwhile counts as removed)."""
    done = []
    for item in leftovers:
        try:
            if item.path.is_dir() and not item.path.is_symlink():
                shutil.rmtree(item.path)
            else:
                item.path.unlink()
        except FileNotFoundError:
            pass
        except OSError:
            continue
        done.append(item)
    return done


def collect(out: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None, *, dry_run: bool = False,
            keep_runs: Iterable[str] = (), reclaim_pids: Iterable[int] = ()) -> list[Leftover]:
    """Find and (unless ``dry_run``) remove the leftovers; returns what was (or would be) removed."""
    found = find_leftovers(out, cache_dir, keep_runs=keep_runs, reclaim_pids=reclaim_pids)
    return found if dry_run else remove(found)
