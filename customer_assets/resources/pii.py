"""The key of the pipeline's keyed hashes (HMAC-SHA256 of emails, phones and erased customers' ids):
``PII_HASH_KEY`` in production, a key file beside the local warehouse on the embedded default.

One resource owns it, so a step that hashes or reads the erasure suppression list asks for the key,
not for the CRM that used to carry it.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import dagster as dg
from pydantic import Field

KEY_FILE_NAME = ".pii_hash_key"


class PiiKey(dg.ConfigurableResource):
    """The hash key, set from ``PII_HASH_KEY`` (an ``EnvVar``: resolved by Dagster, never
    logged)."""

    hash_key: str = Field(description="PII_HASH_KEY: HMAC-SHA256 key for emails, phones and ids.")

    @property
    def where(self) -> str:
        """Where an operator finds the key, for a failure that needs it restored."""
        return "PII_HASH_KEY"


class LocalPiiKey(PiiKey):
    """Local only, when ``PII_HASH_KEY`` is unset: the key read from a file beside the warehouse
    (``local_hash_key``)."""

    key_file: str = Field(description="The local key file (beside the DuckDB warehouse).")

    @property
    def where(self) -> str:
        return (
            f"PII_HASH_KEY, or the local key file {self.key_file} "
            "(missing or new: was it lost with a disk or machine?)"
        )


def local_key_path(warehouse_database: str) -> Path:
    """Where the local default key lives: beside the warehouse whose suppression list is hashed
    under it."""
    return Path(warehouse_database).parent / KEY_FILE_NAME


def local_hash_key(path: Path, legacy: Path) -> str:
    """The key in ``path``, created at random (stable across weeks from then on) when missing. A
    key of older code at ``legacy`` is carried over; a key that is lost is replaced by a new one,
    and the runs stop on the suppression list's fingerprint until it is restored or the list is
    moved."""
    if not path.exists():
        # read before creating: with the default paths the old place and the new one are the same
        # file
        carried = (
            legacy.read_text().strip()
            if legacy.exists() and legacy.resolve() != path.resolve()
            else ""
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(carried or secrets.token_hex(32))
    key = path.read_text().strip()
    if not key:
        raise ValueError(
            f"the local PII hash key {path} is empty: restore it from a backup, or remove the file "
            "and move the suppression list to the new key with the job rekey_suppression"
        )
    return key
