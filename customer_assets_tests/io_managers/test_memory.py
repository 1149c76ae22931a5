"""Memory that a finished step freed goes back to the operating system before the next one."""

import json
import subprocess
import sys

import pytest

# In a fresh interpreter, so that the heap's state is not whatever earlier tests left: 400 MB in 64
# KiB blocks (below glibc's mmap threshold: on the heap), each followed by a small block that stays
# alive, so that freeing the large ones leaves holes glibc does not give back by itself.
SCENARIO = """
import gc, json, psutil
from customer_assets.io_managers.memory import release_freed_memory
process = psutil.Process()
release_freed_memory()
before = process.memory_info().rss
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
print(json.dumps({"grown": grown - before, "held": held - before, "after": after - before, "kept": len(kept)}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim is glibc's")
def test_freed_heap_memory_is_returned():
    out = subprocess.run(
        [sys.executable, "-c", SCENARIO], capture_output=True, text=True, check=True
    )
    mb = {
        k: v / 2**20
        for k, v in json.loads(out.stdout.strip().splitlines()[-1]).items()
        if k != "kept"
    }
    assert mb["grown"] > 300 and mb["held"] > 100, mb  # the situation: freed, much of it still held
    assert mb["after"] < 50, mb  # given back
