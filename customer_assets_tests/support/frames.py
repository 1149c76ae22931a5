"""Small hand-made frames for the pure-function tests."""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd

from customer_assets.logic.validation import (
    ValidationSplit,
    WeekValidation,
    validate_week,
    validated_columns,
)
from customer_assets.weeks import WeekContext

WEEK = WeekContext(
    week_start=datetime(2026, 11, 16, tzinfo=timezone.utc),
    week_end=datetime(2026, 11, 23, tzinfo=timezone.utc),
    now=datetime(2026, 11, 24, 3, tzinfo=timezone.utc),
)


def raw_row(**overrides) -> dict:
    row = {
        "transaction_id": "T1",
        "customer_id": "C1",
        "country": "US",
        "segment": "consumer",
        "amount": 19.99,
        "currency": "USD",
        "timestamp": pd.Timestamp("2026-11-17 10:00", tz="UTC"),
        "product_id": "P1",
        "product_name": "Stapler",
        "category": "Office",
        "customer_created_at": pd.Timestamp("2025-01-01", tz="UTC"),
        "customer_exists": True,
        "product_exists": True,
        "invalid_encoding": None,
    }
    row.update(overrides)
    return row


def raw_frame(*rows: dict) -> pd.DataFrame:
    df = pd.DataFrame(list(rows))
    for column in ("timestamp", "customer_created_at"):
        df[column] = pd.to_datetime(df[column], utc=True)
    df["amount"] = df["amount"].astype(float)
    df["invalid_encoding"] = df["invalid_encoding"].astype(object)
    return df


def validated_rows(split: ValidationSplit) -> pd.DataFrame:
    """The raw rows that passed every hard rule, under their raw labels."""
    return split.raw.loc[~split.bad, validated_columns(split.raw)]


def validate(raw: pd.DataFrame, week: WeekContext = WEEK) -> tuple[pd.DataFrame, WeekValidation]:
    """A small week validated as the asset validates it: its validated rows (its batches,
    concatenated) and the week's validation (split, anomaly outcome, anomaly table)."""
    result = validate_week(raw, week)
    return pd.concat(list(result.batches()), ignore_index=True), result
