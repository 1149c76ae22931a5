"""Where the intermediates live: a local directory, or ``gs://bucket/prefix`` when runs do not
share a disk.

One code path for both: every read, listing and removal of an intermediate (and of a run's claim
on a week) goes through a ``pyarrow.fs`` filesystem and a path under the root, so the Parquet IO
manager and the cleanup (``cleanup/``) do not know which one they have, and the week's cleanup
removes bucket objects as it removes files. pyarrow ships the GCS client: no other library.

Writes are staged on the local disk (the data dir) and published whole: renamed on the same disk,
or uploaded (a GCS object appears only once its upload completes, so a reader never sees half a
week). A step that reads a dataset in batches (``StoredFrame``: DuckDB and the Parquet reader take
a local file) gets a copy of the object in the data dir, its name starting with the week, so the
week's cleanup removes it with the rest.
"""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from fnmatch import fnmatch
from functools import cached_property, lru_cache
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd
import pyarrow.fs as pafs

BUCKET_SCHEME = "gs"
# How long one bucket call retries transient errors (network, 5xx, 429) before the step fails.
RETRY_SECONDS = 120


class IntermediatesUnwritable(OSError):
    """The root cannot take a write, for a reason no retry fixes (the message says which)."""


@dataclass(frozen=True)
class IntermediateRoot:
    """A directory, or ``gs://bucket/prefix``; ``emulator_host``: a local GCS emulator (anonymous,
    over http), for tests."""

    location: str
    emulator_host: str | None = None

    @property
    def in_bucket(self) -> bool:
        return urlsplit(self.location).scheme == BUCKET_SCHEME

    @cached_property
    def _split(self) -> tuple[str, str]:
        """(bucket, prefix); any other URL is refused (a typo must not land on the disk)."""
        parsed = urlsplit(self.location)
        if (
            parsed.scheme != BUCKET_SCHEME
            or not parsed.netloc
            or parsed.query
            or "@" in parsed.netloc
        ):
            raise ValueError(
                f"intermediates location {self.shown()!r}: expected gs://bucket/prefix"
            )
        return parsed.netloc, parsed.path.strip("/")

    @cached_property
    def fs(self) -> pafs.FileSystem:
        if not self.in_bucket:
            if "://" in self.location:
                raise ValueError(
                    f"intermediates location {self.shown()!r}: expected a directory "
                    "or gs://bucket/prefix"
                )
            return pafs.LocalFileSystem()
        self._split  # noqa: B018 - checks the URL before any call
        return _gcs(self.emulator_host, os.getpid())

    @property
    def bucket(self) -> str | None:
        return self._split[0] if self.in_bucket else None

    def path(self, *parts: str) -> str:
        """The filesystem path of ``parts`` under the root (``bucket/prefix/...`` for a bucket)."""
        if not self.in_bucket:
            return str(Path(self.location, *parts))
        return "/".join(p for p in (*self._split, *parts) if p)

    def shown(self, path: str | None = None) -> str:
        """``path`` (or the root) as a person reads it: gs://..., no query or credentials."""
        if path is None:
            if not self.in_bucket:
                return self.location
            parsed = urlsplit(self.location)
            return f"{parsed.scheme}://{parsed.netloc.rpartition('@')[2]}{parsed.path}"
        return f"{BUCKET_SCHEME}://{path}" if self.in_bucket else path

    def exists(self, path: str) -> bool:
        return self.fs.get_file_info(path).type == pafs.FileType.File

    def files(self, *parts: str, pattern: str = "*", recursive: bool = False) -> list[str]:
        """Paths of the files under ``parts`` whose name matches ``pattern`` (none if absent)."""
        selector = pafs.FileSelector(self.path(*parts), recursive=recursive, allow_not_found=True)
        try:
            infos = self.fs.get_file_info(selector)
        except FileNotFoundError:  # a bucket that does not exist holds nothing
            return []
        return sorted(
            i.path for i in infos if i.type == pafs.FileType.File and fnmatch(i.base_name, pattern)
        )

    def delete(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.delete_file(path)

    def read_text(self, path: str) -> str:
        with self.fs.open_input_stream(path) as stream:
            return stream.read().decode()

    def write_text(self, path: str, text: str) -> None:
        """A small file written whole (a claim): an object appears when its upload completes."""
        if not self.in_bucket:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            with self.fs.open_output_stream(path) as stream:
                stream.write(text.encode())
        except OSError as exc:
            raise self._why_unwritable(exc) from exc

    def read_parquet(self, path: str, columns: list[str] | None = None) -> pd.DataFrame:
        return pd.read_parquet(path, columns=columns, filesystem=self.fs)

    def publish(self, staged: Path, path: str) -> None:
        """Put a finished local file in place at ``path``, whole: a rename, or an upload (then the
        local file goes). Nothing is left on the local disk when the upload fails."""
        if not self.in_bucket:
            os.replace(staged, path)
            return
        try:
            pafs.copy_files(
                str(staged),
                path,
                source_filesystem=pafs.LocalFileSystem(),
                destination_filesystem=self.fs,
            )
        except OSError as exc:
            raise self._why_unwritable(exc) from exc
        finally:
            staged.unlink(missing_ok=True)

    def local_copy(self, path: str, folder: Path, week: str) -> Path:
        """A copy of the object at ``path`` in ``folder``: its name starts with the week (the
        week's cleanup removes it) and is its own (two steps never share a copy)."""
        folder.mkdir(parents=True, exist_ok=True)
        copy = folder / f"{week}.read-{uuid.uuid4().hex[:12]}{Path(path).suffix}"
        try:
            pafs.copy_files(
                path,
                str(copy),
                source_filesystem=self.fs,
                destination_filesystem=pafs.LocalFileSystem(),
            )
        except BaseException:
            copy.unlink(missing_ok=True)
            raise
        return copy

    def _why_unwritable(self, exc: OSError) -> OSError:
        """A missing bucket or a denied write as an error that says so; other errors (network,
        and the local disk's: the IO manager names those) unchanged."""
        if not self.in_bucket:
            return exc
        if exc.errno in (errno.EACCES, errno.EPERM) or "PERMISSION_DENIED" in str(exc):
            return IntermediatesUnwritable(
                errno.EACCES,
                f"writing to bucket {self.bucket} is denied: the pod's service "
                "account needs roles/storage.objectAdmin on it",
            )
        missing = isinstance(exc, FileNotFoundError) or exc.errno == errno.ENOENT
        if missing and self.fs.get_file_info(self.bucket).type == pafs.FileType.NotFound:
            return IntermediatesUnwritable(errno.ENOENT, f"bucket {self.bucket} does not exist")
        return exc


@lru_cache(maxsize=8)
def _gcs(emulator_host: str | None, pid: int) -> pafs.GcsFileSystem:
    """One GCS client per process (and emulator): a step's cleanup makes many calls, and a new
    client would fetch a new token for them. ``pid``: a forked process never shares its parent's."""
    options: dict = {"retry_time_limit": timedelta(seconds=RETRY_SECONDS)}
    if emulator_host:
        host = emulator_host.split("://", 1)[-1].rstrip("/")
        options.update(anonymous=True, scheme="http", endpoint_override=host)
    # Credentials: Google's defaults (Workload Identity on GKE); none pass through here.
    return pafs.GcsFileSystem(**options)


def intermediate_roots(settings) -> list[IntermediateRoot]:
    """Where a week's intermediates can be (``PipelineSettings``): the data dir (all of them; with
    a bucket, the writes in progress and the copies read in batches) and the bucket, if set."""
    local = IntermediateRoot(settings.data_dir)
    if not settings.intermediates_url:
        return [local]
    return [local, IntermediateRoot(settings.intermediates_url, settings.storage_emulator_host)]


def home_root(settings) -> IntermediateRoot:
    """Where intermediates are published and runs claim weeks: the bucket if set, else the data
    dir."""
    return intermediate_roots(settings)[-1]


@dataclass(frozen=True, order=True)
class IntermediateFile:
    """An intermediate file or object, with the little of ``pathlib.Path`` the cleanup uses."""

    path: str
    root: IntermediateRoot = field(compare=False)

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    def exists(self) -> bool:
        return self.root.exists(self.path)

    def unlink(self, missing_ok: bool = False) -> None:
        self.root.delete(self.path)

    def __str__(self) -> str:
        return self.root.shown(self.path)
