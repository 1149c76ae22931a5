"""Unified customer profiles: CRM records + behavioural events + the week's transactions.

Documented decisions (also returned in the transform log):
- one profile per person (``customer_identity_map``): every source's records, events and
  transactions are keyed by the person their id belongs to, then de-duplicated with the CRM before
  the ERP before the database, then the most recent update (per_person.py);
- engagement score (0-100) = 40 x purchases + 25 x features + 20 x page views + 15 x support, each
  term saturating at 1 (5 purchases, 5 distinct features, 50 page views, 3 support chats in the
  week);
- status by days since last activity at the week's end: active < 7 <= at-risk <= 30 < churned;
- value tier by lifetime value (USD): Platinum > 10,000 >= Gold > 5,000 >= Silver > 1,000 >= Bronze.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from customer_assets.logic.identity import distinct_ids, is_in
from customer_assets.logic.per_person import deduplicate_records
from customer_assets.weeks import WeekContext

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
STATUSES = ("active", "at-risk", "churned")  # by STATUS_BINS; the model allows exactly these
TIERS = (("Platinum", 10_000.0), ("Gold", 5_000.0), ("Silver", 1_000.0))
LOWEST_TIER = "Bronze"
TIER_NAMES = (*(name for name, _ in TIERS), LOWEST_TIER)
IMPUTED_COLUMNS = ("lifetime_value", "support_ticket_count")
CAPPED_COLUMNS = ("lifetime_value", "page_views", "purchase_amount", "week_spend_usd")
ACTIVITY_COUNTS = (
    "page_views",
    "unique_features_used",
    "purchase_count",
    "purchase_amount",
    "support_interactions",
    "week_transaction_count",
    "week_spend_usd",
)
FEATURE_COLUMNS = (
    *ACTIVITY_COUNTS,
    "lifetime_value",
    "support_ticket_count",
    "days_since_last_activity",
    "engagement_score",
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


def join_sources(
    records: pd.DataFrame,
    events: pd.DataFrame,
    transactions: pd.DataFrame,
    known_ids: pd.Series | set[str],
    log: TransformLog,
) -> pd.DataFrame:
    """Everyone seen this week (CRM update, events or transactions) with whatever each source knows.

    ``transactions`` are the week's per-customer ``transaction_aggregates``. Activity whose id
    matches no known customer is dropped, and counted, with reason ``UNMATCHED_ID``.
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
    profile: pd.DataFrame, span: WeekContext, log: TransformLog
) -> pd.DataFrame:
    """Negative lifetime values and dates after the week's end are removed (set null), with a
    count."""
    out = profile.copy(deep=False)  # Copy-on-Write: columns are replaced, never written in place
    week_end = pd.Timestamp(span.week_end)
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
    """A customer without a CRM figure takes the lifetime value the carried history holds (USD,
    every valid transaction up to the week's end): the value tier then follows the transactions, not
    an imputed median. ``value_tier_source`` says where each tier comes from: crm, transactions, or
    imputed (neither knew)."""
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
    """Which source's date the status reads: the latest of the CRM's last activity, the last event
    and the last purchase; the signup date when none is known."""
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
    """Values above the 99th percentile are flagged, never changed: a customer's spend and lifetime
    value stay true (a bot's 140k USD was shown as a capped 1,448 and tier Bronze).
    ``outlier_fields`` lists a profile's flagged columns (';'-separated, '' if none); the caps are
    returned for the ML features only (``feature_*``, min-max scaled: one extreme value would squash
    everyone else's), and recorded with their counts."""
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
        np.select([days < STATUS_BINS[0], days <= STATUS_BINS[1]], list(STATUSES[:2]), STATUSES[2]),
        index=days.index,
    )


def value_tier(lifetime_value: pd.Series) -> pd.Series:
    return pd.Series(
        np.select([lifetime_value > t for _, t in TIERS], [n for n, _ in TIERS], LOWEST_TIER),
        index=lifetime_value.index,
    )


def min_max(values: pd.Series) -> pd.Series:
    low, high = values.min(), values.max()
    return (values - low) / (high - low) if high > low else values * 0.0


def _activity_dates(profile: pd.DataFrame) -> pd.DataFrame:
    """The source each status reads (``status_source``), then the last activity as the latest of the
    CRM's, the last event and the last purchase; the signup date typed."""
    out = profile.copy(deep=False)  # Copy-on-Write: columns are replaced, never written in place
    seen = [
        pd.to_datetime(out[c], utc=True)
        for c in ("last_activity_at", "last_event_at", "last_transaction_at")
    ]
    # before the CRM's own date becomes the latest of them all
    out["status_source"] = status_source(out)
    out["last_activity_at"] = pd.concat(seen, axis=1).max(axis=1)
    out["signup_date"] = pd.to_datetime(out["signup_date"], utc=True)
    return out


def _classified(profile: pd.DataFrame, span: WeekContext) -> pd.DataFrame:
    """Days since the last activity at the week's end (else since signup, else the week's start),
    the status they give, the value tier and the engagement score."""
    out = profile.copy(deep=False)  # Copy-on-Write: columns are replaced, never written in place
    week_end = pd.Timestamp(span.week_end)
    last = out["last_activity_at"].fillna(out["signup_date"]).fillna(pd.Timestamp(span.week_start))
    out["days_since_last_activity"] = (week_end - last).dt.days.clip(lower=0).astype("int64")
    out["status"] = status_for(out["days_since_last_activity"])
    out["value_tier"] = value_tier(out["lifetime_value"])
    out["engagement_score"] = engagement_score(out)
    # A country or segment that no source knows stays missing, here and in dim_customers: the marts
    # impute it ('unknown'), and say so in their metadata.
    out["subscription_tier"] = out["subscription_tier"].fillna("unknown")
    return out


def _with_features(profile: pd.DataFrame, caps: dict) -> pd.DataFrame:
    """The ML features ``feature_*`` (min-max scaled within the week, capped inputs where ``caps``
    has a cap), then the counts as integers."""
    out = profile.copy(deep=False)  # Copy-on-Write: columns are replaced, never written in place
    for column in FEATURE_COLUMNS:
        values = out[column].astype(float)
        out[f"feature_{column}"] = min_max(
            values.clip(upper=caps[column]) if column in caps else values
        ).round(6)
    for column in (
        "page_views",
        "unique_features_used",
        "purchase_count",
        "support_interactions",
        "week_transaction_count",
    ):
        out[column] = out[column].astype("int64")
    out["support_ticket_count"] = out["support_ticket_count"].round().astype("int64")
    return out


def build_profiles(
    records: pd.DataFrame,
    events: pd.DataFrame,
    transactions: pd.DataFrame,
    known_ids: pd.Series | set[str],
    span: WeekContext,
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
    profile = _activity_dates(join_sources(records, events, transactions, known_ids, log))
    profile = remove_impossible_values(profile, span, log)
    profile = lifetime_from_history(profile, log)
    profile = impute_missing(profile, log)
    profile, caps = flag_outliers(profile, log)
    profile = _classified(profile, span)
    log.decisions.append(
        "values above the 99th percentile are flagged (outlier_fields), never capped; only "
        "their feature_* inputs are capped"
    )
    profile = _with_features(profile, caps)
    profile["week_start"] = pd.Timestamp(span.week_start).tz_convert(None)
    log.decisions.append(f"engagement_score = {ENGAGEMENT_FORMULA}")
    log.decisions.append("status: active < 7 days since last activity <= at-risk <= 30 < churned")
    log.decisions.append("features feature_* are min-max normalised to [0, 1] within the week")
    status = {k: int(v) for k, v in profile["status"].value_counts().items()}
    log.counts["status"] = status  # type: ignore[assignment]
    drop = ["source", "updated_at", "last_event_at", "last_transaction_at"]
    return profile.drop(columns=[c for c in drop if c in profile]).reset_index(drop=True), log
