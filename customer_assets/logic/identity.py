"""Standardising identifiers before joining sources, and keyed hashing of contact details."""

from __future__ import annotations

import hashlib
import hmac
import re

import pandas as pd

EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def standardise_ids(ids: pd.Series) -> pd.Series:
    """Trimmed, upper-cased customer ids; blanks become null."""
    out = ids.astype("string").str.strip().str.upper()
    return out.where(out.str.len() > 0).astype(object).where(lambda s: s.notna(), None)


def valid_emails(emails: pd.Series) -> pd.Series:
    """Lower-cased, trimmed emails that look like an address; others become null."""
    cleaned = emails.astype("string").str.strip().str.lower()
    ok = cleaned.str.match(EMAIL_PATTERN.pattern).fillna(False).astype(bool)
    return cleaned.where(ok).astype(object).where(lambda s: s.notna(), None)


def phone_digits(phones: pd.Series) -> pd.Series:
    """Phone numbers reduced to their digits; empty results become null."""
    digits = phones.astype("string").str.replace(r"\D", "", regex=True)
    return digits.where(digits.str.len() > 0).astype(object).where(lambda s: s.notna(), None)


def keyed_hash(values: pd.Series, key: str) -> pd.Series:
    """HMAC-SHA256 of each value under ``key``: stable across weeks, useless without the key."""
    if not key:
        raise ValueError("a non-empty hashing key is required (PII_HASH_KEY)")
    secret = key.encode()
    return values.map(lambda v: None if v is None or pd.isna(v)
                      else hmac.new(secret, str(v).encode(), hashlib.sha256).hexdigest())
