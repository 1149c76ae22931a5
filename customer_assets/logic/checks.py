"""Outcomes of the asset checks, as plain values that tests can assert on."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from customer_assets.logic.currency import last_publication_day


@dataclass(frozen=True)
class CheckOutcome:
    passed: bool
    severity: str  # "ERROR" or "WARN"
    description: str


def row_conservation(extracted: int, validated: int, quarantined: int) -> CheckOutcome:
    """Every extracted row is either validated or quarantined, exactly once."""
    balance = extracted - validated - quarantined
    return CheckOutcome(
        balance == 0,
        "ERROR",
        f"extracted {extracted} = validated {validated} + quarantined {quarantined}"
        + ("" if balance == 0 else f" (off by {balance})"),
    )


def quarantine_level(rate: float, warn_rate: float, fail_rate: float) -> str:
    """'fail' above ``fail_rate``, 'warn' from ``warn_rate``, else 'pass': the one rule behind the
    check ``quarantine_rate`` and the quality report's status."""
    if rate > fail_rate:
        return "fail"
    return "warn" if rate >= warn_rate else "pass"


def quarantine_rate(
    quarantined: int, total: int, warn_rate: float, fail_rate: float
) -> CheckOutcome:
    """Stop the week above ``fail_rate`` of hard failures; warn from ``warn_rate``."""
    rate = 0.0 if total == 0 else quarantined / total
    text = (
        f"{quarantined} of {total} rows quarantined ({rate:.2%}); "
        f"warn at {warn_rate:.0%}, stop above {fail_rate:.0%}"
    )
    level = quarantine_level(rate, warn_rate, fail_rate)
    if level == "fail":
        return CheckOutcome(
            False, "ERROR", text + ": the source data looks broken, nothing downstream runs"
        )
    if level == "warn":
        return CheckOutcome(False, "WARN", text)
    return CheckOutcome(True, "ERROR", text)


@dataclass(frozen=True)
class Band:
    """Where a weekly figure usually lies: mean ± k·σ of the previous weeks (the week itself
    excluded)."""

    mean: float
    std: float
    low: float
    high: float
    weeks: int


def trailing_band(previous: list[float], k: float = 3.0, min_weeks: int = 3) -> Band | None:
    """The band of ``previous`` (the trailing weeks, oldest first), or None with fewer than
    ``min_weeks``."""
    if len(previous) < min_weeks:
        return None
    n = len(previous)
    mean = sum(previous) / n
    std = (sum((v - mean) ** 2 for v in previous) / n) ** 0.5
    return Band(mean, std, mean - k * std, mean + k * std, n)


def within_band(
    name: str, value: float, previous: list[float], unit: str = "", k: float = 3.0
) -> CheckOutcome:
    """WARN when ``value`` leaves the trailing band, or is zero while the previous weeks were
    not."""
    band = trailing_band(previous, k)
    if band is None:
        return CheckOutcome(
            True, "WARN", f"{name} {value:,.2f}{unit}: fewer than 3 earlier weeks, no band yet"
        )
    text = (
        f"{name} {value:,.2f}{unit}; the previous {band.weeks} weeks: {band.mean:,.2f} ± {k:g}σ "
        f"({band.std:,.2f}) = [{band.low:,.2f}, {band.high:,.2f}]"
    )
    if value == 0 and any(previous):
        return CheckOutcome(False, "WARN", text + ": zero while the previous weeks were not")
    if not band.low <= value <= band.high:
        return CheckOutcome(False, "WARN", text + ": outside the band")
    return CheckOutcome(True, "WARN", text)


def ids_unique(duplicated: int, window_weeks: int) -> CheckOutcome:
    """No transaction id held twice within ``window_weeks`` either side of the week."""
    return CheckOutcome(
        duplicated == 0,
        "ERROR",
        f"{duplicated} transaction ids held more than once within ±{window_weeks} weeks",
    )


def rows_match(in_week: int, loaded: int | None) -> CheckOutcome:
    """The warehouse holds exactly the rows the load wrote for the week."""
    if loaded is None:
        return CheckOutcome(
            False, "ERROR", f"{in_week} rows in the week, but no load recorded for it"
        )
    return CheckOutcome(in_week == loaded, "ERROR", f"{in_week} rows in the week, {loaded} loaded")


MATCH_RATE_WARN, MATCH_RATE_FAIL = 0.8, 0.5


def match_rate(rate: float) -> CheckOutcome:
    """Active customer ids that match a known customer: warn below 80%, stop below 50% (with a
    hint)."""
    text = f"{rate:.1%} of active customer ids matched a known customer."
    if rate < MATCH_RATE_FAIL:
        return CheckOutcome(
            False,
            "ERROR",
            text + " Ids rarely match: compare id formats across sources (prefix, "
            "case, padding, numeric vs. string) before suspecting the data.",
        )
    return CheckOutcome(rate >= MATCH_RATE_WARN, "WARN", text)


def required_not_null(nulls: dict[str, int]) -> CheckOutcome:
    """No profile has a null in a required column (after imputation)."""
    found = {column: n for column, n in nulls.items() if n}
    return CheckOutcome(
        not found,
        "ERROR",
        f"nulls in required columns: {found}" if found else "no null in a required column",
    )


def within_range(
    name: str, low: float, high: float, minimum: float | None, maximum: float | None
) -> CheckOutcome:
    """Every value of ``name`` lies in [low, high] (an empty week passes)."""
    if minimum is None or maximum is None:
        return CheckOutcome(True, "ERROR", f"no {name} this week")
    inside = low <= minimum and maximum <= high
    return CheckOutcome(
        inside, "ERROR", f"{name} from {minimum:g} to {maximum:g}; allowed [{low:g}, {high:g}]"
    )


def several_statuses(counts: dict[str, int]) -> CheckOutcome:
    """Warns when every customer has the same status (a stuck clock or a broken activity feed)."""
    text = ", ".join(f"{status}: {n}" for status, n in sorted(counts.items())) or "no customers"
    return CheckOutcome(
        len(counts) > 1, "WARN", text + ("" if len(counts) > 1 else "; fewer than two statuses")
    )


def fx_rates_cover_week(last_day: date, newest_rate: date, rates: str) -> CheckOutcome:
    """WARN when the rates in use end before the last ECB publication day of the week (the week's
    last day is a Sunday: its rate is Friday's, or the day before a TARGET holiday), so later days
    take an older rate."""
    due = last_publication_day(last_day)
    text = (
        f"ECB rates in use ({rates}) end on {newest_rate}; the week's last ECB publication day is {due} "
        f"(its last day: {last_day})"
    )
    if newest_rate >= due:
        return CheckOutcome(True, "WARN", text)
    return CheckOutcome(
        False,
        "WARN",
        text + f": the week's days after {newest_rate} are converted at the rate "
        "of that day (see fx_rate_date). Check why the refresh from ECB_RATES_URL failed (the "
        "metadata `fx_rates_refresh`), or point ECB_RATES_FILE at a fresh eurofxref-hist.zip.",
    )


def events_cover_week(
    days: list[date], days_with_files: set[date], events: int, landing_zone: str | None
) -> CheckOutcome:
    """WARN when a configured landing zone has no event file for a day of the week, or no event at
    all."""
    if landing_zone is None:
        return CheckOutcome(
            True, "WARN", "no event landing zone configured (EVENTS_PATH unset): no events expected"
        )
    silent = [day for day in days if day not in days_with_files]
    named = ", ".join(f"{day:%a} {day.isoformat()}" for day in silent)
    if events == 0:
        return CheckOutcome(
            False,
            "WARN",
            f"no events in the week in {landing_zone}"
            + (f" (no file for {named})" if silent else "")
            + ": check the topic and its retention, and that the sink connector still writes "
            "to the landing zone.",
        )
    if silent:
        return CheckOutcome(
            False,
            "WARN",
            f"{events:,} events, but no event file in {landing_zone} for "
            f"{len(silent)} day(s) of the week: {named}. Check the topic and its retention, "
            "and the sink connector.",
        )
    return CheckOutcome(True, "WARN", f"{events:,} events; every day of the week has an event file")


def crm_min_records(records: int, minimum: int, crm: str) -> CheckOutcome:
    """WARN when the CRM extract of the week holds fewer than ``minimum`` records
    (CRM_MIN_RECORDS)."""
    if crm == "none":
        return CheckOutcome(
            True, "WARN", "no CRM configured (CRM_API_URL unset): no CRM records expected"
        )
    text = f"{records:,} CRM records updated in the week; at least {minimum:,} expected (CRM_MIN_RECORDS)"
    if records < minimum:
        return CheckOutcome(
            False,
            "WARN",
            text + ": a thin extract (lost pages, a filter on the CRM's side, "
            "a quiet week?); the week's profiles lean on the database and the events.",
        )
    return CheckOutcome(True, "WARN", text)


def crm_required_fields(
    missing: dict[str, int], records: int, required: tuple[str, ...]
) -> CheckOutcome:
    """WARN when CRM records lack a required field (``missing``: per field, the records without
    it)."""
    found = {name: missing[name] for name in required if missing.get(name)}
    if not found:
        return CheckOutcome(
            True, "WARN", f"every one of {records:,} CRM records has {', '.join(required)}"
        )
    listed = ", ".join(f"{name}: {n:,}" for name, n in found.items())
    return CheckOutcome(
        False,
        "WARN",
        f"CRM records without a required field ({listed}; of {records:,} "
        "records): the profiles impute or leave these empty.",
    )


def keys_resolve(loaded: int, fact_rows: int, reasons: dict[str, int]) -> CheckOutcome:
    """Every loaded transaction became a fact row with one dimension row per key (the rest are
    quarantined)."""
    quarantined = loaded - fact_rows
    text = f"{fact_rows} of {loaded} loaded transactions resolve to one row of each dimension"
    if quarantined:
        listed = ", ".join(f"{code}: {n}" for code, n in sorted(reasons.items()))
        return CheckOutcome(
            False,
            "ERROR",
            f"{text}; {quarantined} quarantined in fact_transactions_quarantine ({listed})",
        )
    return CheckOutcome(True, "ERROR", text)


def fact_keys_resolve(
    facts_scanned: int,
    dangling_customer_facts: int,
    dangling_product_facts: int,
    dangling_customer_keys: int = 0,
    dangling_product_keys: int = 0,
    examples: dict[str, str | None] | None = None,
) -> CheckOutcome:
    """Over the whole fact table, every fact's customer_key is a key of dim_customers and its
    product_key a key of dim_products (a fact of an earlier week too: a dimension's backfill re-keys
    them). ``*_facts``: the facts whose key dangles; ``*_keys``: the distinct dangling keys;
    ``examples``: one dangling key per dimension."""
    text = (
        f"{facts_scanned:,} facts scanned (every week): {dangling_customer_facts:,} with a customer_key and "
        f"{dangling_product_facts:,} with a product_key that no dimension row has"
    )
    if not dangling_customer_facts and not dangling_product_facts:
        return CheckOutcome(True, "ERROR", text)
    found = [
        f"{keys:,} {name} key(s)"
        + (f", e.g. {examples[name]!r}" if (examples or {}).get(name) else "")
        for name, facts, keys in (
            ("customer", dangling_customer_facts, dangling_customer_keys),
            ("product", dangling_product_facts, dangling_product_keys),
        )
        if facts
    ]
    return CheckOutcome(
        False,
        "ERROR",
        f"{text} ({'; '.join(found)}). Re-run the weeks of those facts (their "
        "keys are rebuilt), or the dimension's week whose run did not re-key them; the marts wait.",
    )
