"""Giving freed memory back to the operating system between stages."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import mmap

import numpy as np

__all__ = ["map_large_blocks", "mapped_zeros", "trim_heap"]


@functools.cache
def _glibc(name: str):
    """glibc's function ``name``, or None where there is none (macOS, musl): nothing to call."""
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None


def trim_heap() -> bool:
    """Return the C heap's free pages to the operating system (glibc's ``malloc_trim``); False where there is none.

    Arrays of a few megabytes (extraction's shards: 4,096 vectors of 384 floats) come from the heap, not from
    their own mappings, once glibc has raised its mapping threshold; freed between longer-lived allocations (the
    encoder's), they stay in the process. At a million products the shards, freed once stacked, held 1.5 GiB that way
    for the rest of the run. Called at the end of a stage that freed a lot.
    """
    trim = _glibc("malloc_trim")
    if trim is None:
        return False
    trim(0)
    return True


#: glibc ``mallopt`` parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def map_large_blocks(threshold: int = 1 << 20, arenas: int | None = 2) -> bool:
    """Serve every C allocation of ``threshold`` bytes or more from its own mapping, returned to the system when freed,
    and cap the allocator's arenas at ``arenas`` (None: glibc's default, 8 per core); False where glibc is not there.

    glibc raises its mapping threshold each time a mapped block is freed (up to 32 MiB), so a long run's arrays of a
    few MiB (extraction's shards of 4,096 vectors, the heads' score chunks) come from the heap after the first few, and
    freed between longer-lived allocations they stay in the process, out of :func:`trim_heap`'s reach where a page is
    shared: at a million products the heap held 1.45 GiB resident for its 0.7 GiB in use, through the graph stage.
    A fixed threshold also turns that adjustment off. Threads each got an arena of their own (torch's, the tokenizer's,
    the store's loaders), which kept their freed blocks too. Process-wide, so called once by a large run, once its
    encoders are done: an encoder's activations of a MiB or more, freed and made again every batch, would each come
    from a fresh mapping and be faulted in again (MiniLM encoded titles 25-40 % slower, a quarter of its CPU in the
    kernel); arrays kept across the encoding come from :func:`mapped_zeros` instead.
    """
    fn = _glibc("mallopt")
    if fn is None:
        return False
    fn.argtypes, fn.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = fn(_M_MMAP_THRESHOLD, int(threshold)) == 1
    if arenas is not None:
        ok = fn(_M_ARENA_MAX, int(arenas)) == 1 and ok
    return ok


#: arrays of at least this many bytes get a mapping of their own from :func:`mapped_zeros`
MAPPED_AT = 1 << 20


def mapped_zeros(shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
    """A zero-filled array on an anonymous mapping of its own (from :data:`MAPPED_AT` bytes; smaller: ``np.zeros``).

    Its memory goes back to the operating system when the array is freed, whatever glibc's mapping threshold,
    so an array made once and kept for a while (an extraction shard's vectors, until the shards are stacked)
    never pins heap pages, while the short-lived arrays around it stay on the heap (why not
    :func:`map_large_blocks` there: see it).
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes < MAPPED_AT:
        return np.zeros(shape, dtype)
    # private: a page never written reads as the kernel's one zero page and holds no memory (a shared anonymous
    # mapping, mmap's default, gives every page read its own): a block most of whose rows stay zeros (a photo on a
    # tenth of the products) costs the rows written, however often it is read
    flags = getattr(mmap, "MAP_PRIVATE", 0) | getattr(mmap, "MAP_ANONYMOUS", 0)
    buf = mmap.mmap(-1, nbytes, flags=flags) if flags else mmap.mmap(-1, nbytes)
    return np.frombuffer(buf, dtype=dtype).reshape(shape)  # anonymous pages are zeros
