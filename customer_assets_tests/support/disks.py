"""A real small filesystem (tmpfs) for the tests of a full disk, mounted where the machine allows
it; the test is skipped, saying why, where it does not."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_tmpfs(mount: Path, megabytes: int) -> Iterator[Path]:
    """``mount`` made a tmpfs of ``megabytes`` MiB while the block runs."""
    mount.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        # a failed connection may still hold a file there
        subprocess.run(["umount", "--lazy", str(mount)], check=False)
