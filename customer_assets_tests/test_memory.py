"""Memory that a finished step freed goes back to the operating system before the next one."""

import gc
import sys

import psutil
import pytest

from customer_assets.io_managers.memory import release_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim is glibc's")
def test_freed_heap_memory_is_returned():
    process = psutil.Process()
    release_freed_memory()
    before = process.memory_info().rss
    # 400 MB in 64 KiB blocks (below glibc's mmap threshold: on the heap), each followed by a small block that
    # stays alive, so that freeing the large ones leaves holes glibc does not give back by itself
    blocks, kept = [], []
    for _ in range(6400):
        blocks.append(bytearray(64 * 1024))
        kept.append(bytearray(200))
    grown = process.memory_info().rss
    del blocks
    gc.collect()
    held = process.memory_info().rss
    release_freed_memory()
    after = process.memory_info().rss
    assert grown - before > 300 * 2**20 and held - before > 300 * 2**20
    assert after - before < 50 * 2**20, f"RSS still {(after - before) / 2**20:.0f} MB above the start"
    assert len(kept) == 6400
