"""Give memory that finished steps freed back to the operating system."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys
import time
from functools import lru_cache

import pyarrow as pa


@lru_cache(maxsize=1)
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim  # glibc
    except (OSError, AttributeError):
        return None


_FULL_COLLECT_EVERY = 1.0  # seconds: the inputs of one step load within milliseconds of each other
_last_full_collect = [float("-inf")]  # -inf: no full collection yet in this process


def release_freed_memory(full: bool = True) -> None:
    """Return freed heap pages to the OS before a step loads its inputs or writes its outputs.

    Steps run in one process (locally two at a time, on threads: ``step_threads.py``). glibc and
    Arrow's allocator keep what a step freed for reuse, so without this the process carries the
    largest earlier step's footprint into every later one. A full garbage collection is slow with
    Dagster loaded, so it runs at most once a second and only when ``full``; data frames are freed
    by reference counting anyway, the collection only catches cycles.
    """
    now = time.monotonic()
    if full and now - _last_full_collect[0] >= _FULL_COLLECT_EVERY:
        gc.collect()
        if _last_full_collect[0] == float("-inf"):
            # What is still alive after the first collection (Dagster, the definitions, modules, the
            # run, and what a step running beside this one holds then) is left out of later ones,
            # which are then much cheaper. Reference counting still frees it; what of it later
            # becomes cyclic garbage stays: a one-time cost of the first run in a process.
            gc.freeze()
        _last_full_collect[0] = time.monotonic()
    else:
        gc.collect(1)
    pa.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
