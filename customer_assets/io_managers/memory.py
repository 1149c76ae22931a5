"""Give memory that finished steps freed back to the operating system."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys
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


def release_freed_memory() -> None:
    """Return freed heap pages to the OS before a step loads its inputs.

    Steps run one after another in one process. glibc and Arrow's allocator keep what a step freed for reuse,
    so without this the process carries the largest earlier step's footprint into every later one (measured
    at the default benchmark scale: the week's peak RSS 1.38 GB -> 1.19 GB). Costs a few milliseconds.
    """
    gc.collect()
    pa.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
