"""Giving freed memory back to the operating system between stages."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

__all__ = ["trim_heap"]


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to call
        return None


def trim_heap() -> bool:
    """Return the C heap's free pages to the operating system (glibc's ``malloc_trim``); False where there is none.

    Arrays of a few megabytes (extraction's shards: 4,096 vectors of 384 floats) come from the heap, not from
    their own mappings, once glibc has raised its mapping threshold; freed between longer-lived allocations (the
    encoder's), they stay in the process. At a million products the shards, freed once stacked, held 1.5 GiB that way
    for the rest of the run. Called at the end of a stage that freed a lot.
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
