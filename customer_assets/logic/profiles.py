"""Unified customer profiles: CRM records + behavioural events + the week's transactions.

Documented decisions (also returned in the transform log):
- one profile per person (``customer_identity_map``): every source's records, events and transactions are
  keyed by the person their id belongs to, then de-duplicated with the CRM before the ERP before the
  database, then the most recent update;
- engagement score (0-100) = 40 x purchases + 25 x features + 20 x page views + 15 x support, each term
  saturating at 1 (5 purchases, 5 distinct features, 50 page views, 3 support chats in the week);
- status by days since last activity at the week's end: active < 7 <= at-risk <= 30 < churned;
- value tier by lifetime value (USD): Platinum > 10,000 >= Gold > 5,000 >= Silver > 1,000 >= Bronze.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from customer_assets.duck import connect, quoted
from customer_assets.logic.identity import distinct_ids, is_in, standardise_ids
from customer_assets.weeks import WeekContext

SOURCE_PRIORITY = {"crm": 0, "erp": 1, "database": 2}  # seed 004's order
ENGAGEMENT_WEIGHTS = {
    "purchase_count": 40.0,
    "unique_features_used": 25.0,
    "page_views": 20.0,
    "support_interactions": 15.0,
}
ENGAGEMENT_SATURATION = {
    "purchase_count": 5,
    "unique_features_used": 5,
    "page_views": 50,
    "support_interactions": 3,
}
ENGAGEMENT_FORMULA = " + ".join(
    f"{w:g} * min({c} / {ENGAGEMENT_SATURATION[c]}, 1)" for c, w in ENGAGEMENT_WEIGHTS.items()
)
STATUS_BINS = (7, 30)
TIERS = (("Platinum", 10_000.0), ("Gold", 5_000.0), ("Silver", 1_000.0))
IMPUTED_COLUMNS = ("lifetime_value", "support_ticket_count")
CAPPED_COLUMNS = ("lifetime_value", "page_views", "purchase_amount", "week_spend_usd")
FEATURE_COLUMNS = (
    "page_views",
    "unique_features_used",
    "purchase_count",
    "purchase_amount",
    "support_interactions",
    "week_transaction_count",
    "week_spend_usd",
    "lifetime_value",
    "support_ticket_count",
    "days_since_last_activity",
    "engagement_score",
)
ACTIVITY_COUNTS = (
    "page_views",
    "unique_features_used",
    "purchase_count",
    "purchase_amount",
    "support_interactions",
    "week_transaction_count",
    "week_spend_usd",
)


@dataclass
class TransformLog:
    """What the profile build decided and counted; becomes metadata and ``transform_log.json``."""

    decisions: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    removed_values: dict[str, int] = field(default_factory=dict)
    imputed: dict[str, dict] = field(default_factory=dict)
    capped: dict[str, dict] = field(default_factory=dict)
    match_rate: float = 1.0

    def as_dict(self) -> dict:
        return {
            "decisions": self.decisions,
            "counts": self.counts,
            "dropped": self.dropped,
            "removed_values": self.removed_values,
            "imputed": self.imputed,
            "capped": self.capped,
            "match_rate": self.match_rate,
            "engagement_formula": ENGAGEMENT_FORMULA,
            "engagement_weights": ENGAGEMENT_WEIGHTS,
        }


def deduplicate_records(records: pd.DataFrame) -> pd.DataFrame:
    """One record per customer id: each field from CRM before database, then the most recent update.

    A field the preferred record lacks (the CRM knows no country) comes from the next record that has it.
    Records without an id are dropped; the result is ordered by id.
    """
    # Each record's place in its customer's order as one number: CRM first, then the latest update (records
    # without one last), then the order they came in. Sorting these numbers skips sorting the id strings.
    priority = (
        records["source"].map(SOURCE_PRIORITY).fillna(len(SOURCE_PRIORITY)).to_numpy(dtype=np.int64)
    )
    updated = pd.to_datetime(records["updated_at"], utc=True)
    missing = updated.isna().to_numpy()
    newest_first = np.where(missing, 0, -updated.to_numpy(dtype="datetime64[ns]").view(np.int64))
    rank = np.empty(len(records), dtype=np.int64)
    rank[np.lexsort((np.arange(len(records)), newest_first, missing, priority))] = np.arange(
        len(records)
    )
    # DuckDB groups the ids faster than pandas, which hashes Arrow text through Python.
    # Per id and column it picks the row position of the value to take: aggregation states stay integers,
    # and each value keeps its type when Arrow takes it.
    columns = ["customer_id", *(c for c in records.columns if c != "customer_id")]
    picks = ", ".join(
        f"arg_min(_rn, _ord) FILTER (WHERE {quoted(c)} IS NOT NULL) AS {quoted(c)}" for c in columns
    )
    table = pa.Table.from_pandas(records, preserve_index=False)
    with connect() as con:
        con.register(
            "records",
            table.append_column(
                "_rn", pa.array(np.arange(len(records), dtype=np.int64))
            ).append_column("_ord", pa.array(rank)),
        )
        rows = con.sql(
            f"SELECT {picks} FROM records WHERE customer_id IS NOT NULL "
            "GROUP BY records.customer_id ORDER BY records.customer_id"
        ).to_arrow_table()
    return pa.table({c: table.column(c).take(rows.column(c)) for c in columns}).to_pandas()


TRANSACTION_AGGREGATES_SQL = """
SELECT customer_id, count(*) AS week_transaction_count,
       sum(round(amount_usd * 1000000)::BIGINT) AS _spend_micro_usd,
       max("timestamp") AS last_transaction_at,
       arg_max(country, _rn) FILTER (WHERE country IS NOT NULL) AS country,
       max(_rn) FILTER (WHERE country IS NOT NULL) AS _country_rn,
       arg_max(segment, _rn) FILTER (WHERE segment IS NOT NULL) AS segment,
       max(_rn) FILTER (WHERE segment IS NOT NULL) AS _segment_rn,
       {carried} AS carried_lifetime_value_usd
FROM transactions WHERE customer_id IS NOT NULL GROUP BY customer_id
"""
TRANSACTION_AGGREGATE_COLUMNS = [
    "customer_id",
    "week_transaction_count",
    "week_spend_usd",
    "last_transaction_at",
    "country",
    "segment",
    "carried_lifetime_value_usd",
]


def transaction_aggregates_sql(columns: list[str]) -> str:
    """``TRANSACTION_AGGREGATES_SQL`` for the week's transformed transactions with ``columns``
    (DuckDB, over the relation ``transactions`` and ``_rn``, each row's place in the file): the
    carried lifetime value where the rows carry it (transformed transactions do)."""
    carried = (
        "max(customer_lifetime_value)"
        if "customer_lifetime_value" in columns
        else "CAST(NULL AS DOUBLE)"
    )
    return TRANSACTION_AGGREGATES_SQL.format(carried=carried)


def transaction_aggregates(per_raw_id: pd.DataFrame) -> pd.DataFrame:
    """Per customer id (trimmed): the week's transaction count, USD spend, last purchase, and the
    last known country and segment (in row order). Rows without an id are left out.

    ``per_raw_id`` holds the rows of ``transaction_aggregates_sql``, which DuckDB runs over the
    week's Parquet file itself (``frames.query_stored``), so the week's rows never become a
    DataFrame. Raw ids that standardise to the same id (`` c1`` and ``c1``) are combined here. USD
    amounts carry six decimals (``with_usd`` in validation), so they are summed exactly as whole
    micro-dollars: the same total in any order, on every rerun.
    """
    per_raw_id = per_raw_id.copy(deep=False)  # Copy-on-Write: columns are replaced, not written
    per_raw_id["last_transaction_at"] = per_raw_id["last_transaction_at"].astype(
        "datetime64[ns, UTC]"
    )
    per_raw_id["_spend_micro_usd"] = per_raw_id["_spend_micro_usd"].astype("int64")
    per_raw_id["customer_id"] = standardise_ids(per_raw_id["customer_id"])
    per_raw_id = per_raw_id.dropna(subset=["customer_id"])
    merged = per_raw_id["customer_id"].duplicated(keep=False).to_numpy()
    if merged.any():
        per_raw_id = pd.concat(
            [per_raw_id[~merged], _combine(per_raw_id[merged])], ignore_index=True
        )
    per_raw_id["week_spend_usd"] = per_raw_id.pop("_spend_micro_usd") / 1_000_000
    return per_raw_id[TRANSACTION_AGGREGATE_COLUMNS].sort_values("customer_id", ignore_index=True)


def _combine(parts: pd.DataFrame) -> pd.DataFrame:
    """Aggregates of raw ids that are one customer once standardised, combined into one row each."""
    grouped = parts.groupby("customer_id", sort=False)
    out = grouped.agg(
        week_transaction_count=("week_transaction_count", "sum"),
        _spend_micro_usd=("_spend_micro_usd", "sum"),
        last_transaction_at=("last_transaction_at", "max"),
        carried_lifetime_value_usd=("carried_lifetime_value_usd", lambda v: v.sum(min_count=1)),
    )
    for column in ("country", "segment"):
        known = parts.dropna(subset=[f"_{column}_rn"]).sort_values(f"_{column}_rn")
        out[column] = known.drop_duplicates("customer_id", keep="last").set_index("customer_id")[
            column
        ]
    return out.reset_index()


EVENT_SUMS = (
    "page_views",
    "unique_features_used",
    "purchase_count",
    "purchase_amount",
    "support_interactions",
)


def to_persons(
    frame: pd.DataFrame, identity: pd.DataFrame, sources: tuple[str, ...]
) -> pd.DataFrame:
    """``frame`` with each ``customer_id`` (a source id) replaced by its person's id: looked up among the
    identity's records of ``sources``, in that order; an id no record holds stays as it is (a customer of its
    own, counted unmatched if nothing else knows it)."""
    ids = frame["customer_id"].astype("str")
    person = pd.Series(None, index=frame.index, dtype=object)
    records = identity.loc[identity["source"].isin(sources)]
    for source in sources:
        lookup = (
            records.loc[records["source"] == source]
            .drop_duplicates("source_customer_id")
            .set_index("source_customer_id")["customer_id"]
        )
        person = person.where(person.notna(), ids.map(lookup))
    # Then without case, where that names one person only (``C1`` and ``c1`` of one source are two).
    loose = records.assign(key=records["source_customer_id"].str.upper()).drop_duplicates(
        ["key", "customer_id"]
    )
    loose = loose.loc[~loose["key"].duplicated(keep=False)].set_index("key")["customer_id"]
    person = person.fillna(ids.str.upper().map(loose))
    return frame.assign(customer_id=person.fillna(ids).astype("str"))


def events_per_person(events: pd.DataFrame, identity: pd.DataFrame) -> pd.DataFrame:
    """The week's event aggregates per person: the counts of a person's ids summed (distinct features too: a
    feature used under two ids counts twice), the last event the latest."""
    mapped = to_persons(events, identity, ("database", "crm"))
    if not mapped["customer_id"].duplicated().any():
        return mapped
    out = (
        mapped.groupby("customer_id", sort=True)
        .agg(**{c: (c, "sum") for c in EVENT_SUMS}, last_event_at=("last_event_at", "max"))
        .reset_index()
    )
    return out[events.columns]


def transactions_per_person(transactions: pd.DataFrame, identity: pd.DataFrame) -> pd.DataFrame:
    """The week's ``transaction_aggregates`` per person (its database ids' rows combined)."""
    mapped = to_persons(transactions, identity, ("database",))
    merged = mapped["customer_id"].duplicated(keep=False).to_numpy()
    if not merged.any():
        return mapped
    parts = mapped[merged].assign(
        _spend_micro_usd=np.round(mapped.loc[merged, "week_spend_usd"] * 1_000_000)
    )
    combined = _combine(
        parts.assign(
            _country_rn=parts["country"].notna().cumsum().where(parts["country"].notna()),
            _segment_rn=parts["segment"].notna().cumsum().where(parts["segment"].notna()),
        )
    )
    combined["week_spend_usd"] = combined.pop("_spend_micro_usd") / 1_000_000
    out = pd.concat([mapped[~merged], combined], ignore_index=True)
    return out[TRANSACTION_AGGREGATE_COLUMNS].sort_values("customer_id", ignore_index=True)


def join_sources(
    records: pd.DataFrame,
    events: pd.DataFrame,
    transactions: pd.DataFrame,
    known_ids: pd.Series | set[str],
    log: TransformLog,
) -> pd.DataFrame:
    """Everyone seen this week (CRM update, events or transactions) with whatever each source knows.

    ``transactions`` are the week's per-customer ``transaction_aggregates``. Activity whose id matches no
    known customer is dropped, and counted, with reason ``UNMATCHED_ID``.
    """
    active = distinct_ids(events["customer_id"], transactions["customer_id"])
    known = distinct_ids(known_ids, records["customer_id"])
    matched = active.filter(pc.is_in(active, value_set=known))
    log.match_rate = 1.0 if not len(active) else len(matched) / len(active)
    log.dropped["UNMATCHED_ID"] = len(active) - len(matched)
    ids = distinct_ids(records["customer_id"], matched, sort=True)
    base = pd.DataFrame({"customer_id": pd.Series(ids.to_pandas(), dtype="str")})
    profile = (
        base.merge(records, on="customer_id", how="left")
        .merge(events, on="customer_id", how="left")
        .merge(transactions, on="customer_id", how="left", suffixes=("", "_tx"))
    )
    for column in ("country", "segment"):
        if f"{column}_tx" in profile:
            profile[column] = profile[column].fillna(profile.pop(f"{column}_tx"))
    profile["in_crm"] = profile["source"].eq("crm")
    profile["in_events"] = is_in(profile["customer_id"], events["customer_id"])
    profile["in_transactions"] = is_in(profile["customer_id"], transactions["customer_id"])
    for column in ACTIVITY_COUNTS:
        profile[column] = pd.to_numeric(profile[column]).fillna(0).astype(float)
    log.counts.update(
        {
            "crm_records": int((records["source"] == "crm").sum()),
            "erp_records": int((records["source"] == "erp").sum()),
            "database_records": int((records["source"] == "database").sum()),
            "event_customers": len(events),
            "transaction_customers": len(transactions),
            "profiles": len(profile),
        }
    )
    return profile


def remove_impossible_values(
    profile: pd.DataFrame, ctx: WeekContext, log: TransformLog
) -> pd.DataFrame:
    """Negative lifetime values and dates after the week's end are removed (set null), with a count."""
    out = profile.copy(deep=False)  # Copy-on-Write: columns are replaced, never written in place
    week_end = pd.Timestamp(ctx.week_end)
    rules = {
        "lifetime_value": out["lifetime_value"] < 0,
        "support_ticket_count": out["support_ticket_count"] < 0,
        "signup_date": out["signup_date"] >= week_end,
        "last_activity_at": out["last_activity_at"] >= week_end,
    }
    for column, bad in rules.items():
        bad = bad.fillna(False).astype(bool)
        log.removed_values[column] = int(bad.sum())
        out[column] = out[column].mask(bad)
    return out


def lifetime_from_history(profile: pd.DataFrame, log: TransformLog) -> pd.DataFrame:
    """A customer without a CRM figure takes the lifetime value the carried history holds (USD, every valid
    transaction up to the week's end): the value tier then follows the transactions, not an imputed median.
    ``value_tier_source`` says where each tier comes from: crm, transactions, or imputed (neither knew)."""
    out = profile.copy(deep=False)
    from_crm = out["lifetime_value"].notna()
    carried = (
        pd.to_numeric(out.get("carried_lifetime_value_usd"), errors="coerce")
        if ("carried_lifetime_value_usd" in out)
        else pd.Series(np.nan, index=out.index)
    )
    from_history = ~from_crm & carried.notna()
    out["lifetime_value"] = out["lifetime_value"].where(from_crm, carried)
    out["value_tier_source"] = np.select(
        [from_crm, from_history], ["crm", "transactions"], "imputed"
    )
    log.counts["value_tier_source"] = {
        k: int(v) for k, v in out["value_tier_source"].value_counts().items()
    }
    log.decisions.append(
        "lifetime value (and tier) from the CRM, else the carried history of transactions (USD), "
        "else imputed"
    )
    return out.drop(columns=[c for c in ("carried_lifetime_value_usd",) if c in out])


def status_source(profile: pd.DataFrame) -> pd.Series:
    """Which source's date the status reads: the latest of the CRM's last activity, the last event and the last
    purchase; the signup date when none is known."""
    dates = {
        name: pd.to_datetime(profile[column], utc=True)
        if column in profile
        else pd.Series(pd.NaT, index=profile.index, dtype="datetime64[ns, UTC]")
        for name, column in (
            ("crm", "last_activity_at"),
            ("events", "last_event_at"),
            ("transactions", "last_transaction_at"),
        )
    }
    latest = pd.concat(list(dates.values()), axis=1).max(axis=1)
    picked = np.select(
        [dates[n].notna() & (dates[n] == latest) for n in ("transactions", "events", "crm")],
        ["transactions", "events", "crm"],
        "signup",
    )
    return pd.Series(picked, index=profile.index, dtype="str")


def impute_missing(profile: pd.DataFrame, log: TransformLog) -> pd.DataFrame:
    """Median imputation of numeric CRM fields, flagged per row in ``imputed_fields``."""
    out = profile.copy(deep=False)  # Copy-on-Write: columns are replaced, never written in place
    flags = pd.Series("", index=out.index, dtype=object)
    for column in IMPUTED_COLUMNS:
        missing = out[column].isna()
        median = float(out[column].median()) if out[column].notna().any() else 0.0
        out[column] = out[column].fillna(median).astype(float)
        flags[missing] = flags[missing] + column + ";"
        log.imputed[column] = {"rows": int(missing.sum()), "median": median}
    out["imputed_fields"] = flags.str.rstrip(";")
    return out


def flag_outliers(
    profile: pd.DataFrame, log: TransformLog, quantile: float = 0.99
) -> tuple[pd.DataFrame, dict]:
    """Values above the 99th percentile are flagged, never changed: a customer's spend and lifetime value stay
    true (a bot's 140k USD was shown as a capped 1,448 and tier Bronze). ``outlier_fields`` lists a profile's
    flagged columns (';'-separated, '' if none); the caps are returned for the ML features only (``feature_*``,
    min-max scaled: one extreme value would squash everyone else's), and recorded with their counts."""
    out = profile.copy(deep=False)  # Copy-on-Write: columns are replaced, never written in place
    flags = pd.Series("", index=out.index, dtype=object)
    caps = {}
    for column in CAPPED_COLUMNS:
        cap = float(out[column].quantile(quantile)) if len(out) else 0.0
        above = (out[column] > cap).fillna(False).to_numpy(dtype=bool)
        flags[above] = flags[above] + column + ";"
        caps[column] = cap
        log.capped[column] = {
            "cap": cap,
            "rows": int(above.sum()),
            "applies_to": f"feature_{column} only",
        }
    out["outlier_fields"] = flags.str.rstrip(";").astype(str)
    return out, caps


def engagement_score(profile: pd.DataFrame) -> pd.Series:
    """0-100: weighted, saturating combination of purchases, features, page views and support."""
    score = sum(
        weight * np.minimum(profile[column].astype(float) / ENGAGEMENT_SATURATION[column], 1.0)
        for column, weight in ENGAGEMENT_WEIGHTS.items()
    )
    return pd.Series(score, index=profile.index).round(2)


def status_for(days: pd.Series) -> pd.Series:
    return pd.Series(
        np.select(
            [days < STATUS_BINS[0], days <= STATUS_BINS[1]], ["active", "at-risk"], "churned"
        ),
        index=days.index,
    )


def value_tier(lifetime_value: pd.Series) -> pd.Series:
    return pd.Series(
        np.select([lifetime_value > t for _, t in TIERS], [n for n, _ in TIERS], "Bronze"),
        index=lifetime_value.index,
    )


def min_max(values: pd.Series) -> pd.Series:
    low, high = values.min(), values.max()
    return (values - low) / (high - low) if high > low else values * 0.0


def build_profiles(
    records: pd.DataFrame,
    events: pd.DataFrame,
    transactions: pd.DataFrame,
    known_ids: pd.Series | set[str],
    ctx: WeekContext,
) -> tuple[pd.DataFrame, TransformLog]:
    """The week's unified profiles and the log of every decision taken on the way.

    ``transactions`` are the week's ``transaction_aggregates`` (one row per customer).
    """
    log = TransformLog()
    log.decisions.append(
        "ids trimmed; every source's id replaced by its person's (customer_identity_map)"
    )
    log.decisions.append(
        "duplicates resolved by source priority crm > erp > database, then most recent update"
    )
    records = deduplicate_records(records)
    profile = join_sources(records, events, transactions, known_ids, log)
    seen = [
        pd.to_datetime(profile[c], utc=True)
        for c in ("last_activity_at", "last_event_at", "last_transaction_at")
    ]
    profile["status_source"] = status_source(
        profile
    )  # before the CRM's own date becomes the latest of them all
    profile["last_activity_at"] = pd.concat(seen, axis=1).max(axis=1)
    profile["signup_date"] = pd.to_datetime(profile["signup_date"], utc=True)
    profile = remove_impossible_values(profile, ctx, log)
    profile = lifetime_from_history(profile, log)
    profile = impute_missing(profile, log)
    profile, caps = flag_outliers(profile, log)
    week_end = pd.Timestamp(ctx.week_end)
    last = (
        profile["last_activity_at"]
        .fillna(profile["signup_date"])
        .fillna(pd.Timestamp(ctx.week_start))
    )
    profile["days_since_last_activity"] = (week_end - last).dt.days.clip(lower=0).astype("int64")
    profile["status"] = status_for(profile["days_since_last_activity"])
    profile["value_tier"] = value_tier(profile["lifetime_value"])
    profile["engagement_score"] = engagement_score(profile)
    # A country or segment that no source knows stays missing, here and in dim_customers: the marts impute it
    # ('unknown'), and say so in their metadata.
    profile["subscription_tier"] = profile["subscription_tier"].fillna("unknown")
    log.decisions.append(
        "values above the 99th percentile are flagged (outlier_fields), never capped; only "
        "their feature_* inputs are capped"
    )
    for column in FEATURE_COLUMNS:
        values = profile[column].astype(float)
        profile[f"feature_{column}"] = min_max(
            values.clip(upper=caps[column]) if column in caps else values
        ).round(6)
    for column in (
        "page_views",
        "unique_features_used",
        "purchase_count",
        "support_interactions",
        "week_transaction_count",
    ):
        profile[column] = profile[column].astype("int64")
    profile["support_ticket_count"] = profile["support_ticket_count"].round().astype("int64")
    profile["week_start"] = pd.Timestamp(ctx.week_start).tz_convert(None)
    log.decisions.append(f"engagement_score = {ENGAGEMENT_FORMULA}")
    log.decisions.append("status: active < 7 days since last activity <= at-risk <= 30 < churned")
    log.decisions.append("features feature_* are min-max normalised to [0, 1] within the week")
    log.counts["status"] = {k: int(v) for k, v in profile["status"].value_counts().items()}  # type: ignore[assignment]
    drop = ["source", "updated_at", "last_event_at", "last_transaction_at"]
    return profile.drop(columns=[c for c in drop if c in profile]).reset_index(drop=True), log
