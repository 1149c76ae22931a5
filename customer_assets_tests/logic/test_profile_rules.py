"""Profile building and the SCD2 dimension, with hand-made sources."""

import hashlib
import hmac

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from customer_assets.frames import query_stored
from customer_assets.logic.identity import (
    distinct_ids,
    is_in,
    keyed_hash,
    phone_digits,
    standardise_ids,
    valid_emails,
)
from customer_assets.logic.per_person import (
    deduplicate_records,
    transaction_aggregates,
    transaction_aggregates_sql,
)
from customer_assets.logic.profile_rules import (
    build_profiles,
    engagement_score,
    status_for,
    value_tier,
)
from customer_assets.schemas import UnifiedCustomerProfiles
from customer_assets_tests.support.frames import WEEK

TS = "datetime64[ns, UTC]"


def test_identity_standardisation():
    def values(series: pd.Series) -> list:
        assert series.dtype == "str"  # Arrow-backed text; missing is NaN
        return [None if pd.isna(v) else v for v in series]

    # trimmed, case kept: c001 and C001 are two customers of a source (issue 21)
    assert values(standardise_ids(pd.Series([" c001 ", "C002", "", None]))) == [
        "c001",
        "C002",
        None,
        None,
    ]
    assert values(standardise_ids(pd.Series([7, " c8"], dtype=object))) == ["7", "c8"]
    assert values(valid_emails(pd.Series([" A@B.com ", "nope", "a@b", None]))) == [
        "a@b.com",
        None,
        None,
        None,
    ]
    assert values(phone_digits(pd.Series(["+1 (555) 010-1234", "n/a"]))) == ["15550101234", None]
    hashed = values(keyed_hash(pd.Series(["a@b.com", None]), "k"))
    assert hashed[0] == hmac.new(b"k", b"a@b.com", hashlib.sha256).hexdigest() and hashed[1] is None
    assert hashed[0] != keyed_hash(pd.Series(["a@b.com"]), "j")[0]
    with pytest.raises(ValueError):
        keyed_hash(pd.Series(["x"]), "")


def records(*rows):
    frame = pd.DataFrame(rows)
    for column in ("signup_date", "last_activity_at", "updated_at"):
        if column in frame:
            frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def test_dedup_prefers_crm_then_recency_field_by_field():
    merged = deduplicate_records(
        records(
            {
                "customer_id": "C1",
                "source": "database",
                "country": "DE",
                "lifetime_value": None,
                "updated_at": "2026-01-01",
            },
            {
                "customer_id": "C1",
                "source": "crm",
                "country": None,
                "lifetime_value": 10.0,
                "updated_at": "2026-11-01",
            },
            {
                "customer_id": "C1",
                "source": "crm",
                "country": None,
                "lifetime_value": 20.0,
                "updated_at": "2026-11-10",
            },
        )
    )
    assert len(merged) == 1
    assert merged.loc[0, ["source", "country", "lifetime_value"]].tolist() == ["crm", "DE", 20.0]


@pytest.mark.parametrize(
    "days,status", [(0, "active"), (6, "active"), (7, "at-risk"), (30, "at-risk"), (31, "churned")]
)
def test_status_bins(days, status):
    assert status_for(pd.Series([days]))[0] == status


def test_value_tiers_and_engagement_bounds():
    assert value_tier(pd.Series([10_000.01, 10_000, 5_000.5, 1_000, 0])).tolist() == [
        "Platinum",
        "Gold",
        "Gold",
        "Bronze",
        "Bronze",
    ]
    frame = pd.DataFrame(
        {
            "purchase_count": [0, 100, 1],
            "unique_features_used": [0, 100, 1],
            "page_views": [0, 1000, 10],
            "support_interactions": [0, 100, 0],
        }
    )
    assert engagement_score(frame).tolist() == [0.0, 100.0, pytest.approx(8 + 5 + 4)]


def _sources():
    crm = records(
        {
            "customer_id": "C1",
            "source": "crm",
            "email_hash": "h1",
            "signup_date": "2025-01-01",
            "last_activity_at": "2026-11-20",
            "subscription_tier": "pro",
            "lifetime_value": 12_000.0,
            "support_ticket_count": 1.0,
            "updated_at": "2026-11-18",
        },
        {
            "customer_id": "C2",
            "source": "crm",
            "email_hash": None,
            "signup_date": "2027-01-01",  # future signup
            "last_activity_at": "2026-10-01",
            "subscription_tier": "free",
            "lifetime_value": -5.0,  # impossible LTV
            "support_ticket_count": None,
            "updated_at": "2026-11-17",
        },
    )
    database = records(
        {
            "customer_id": "C1",
            "source": "database",
            "signup_date": "2024-12-31",
            "country": "US",
            "segment": "smb",
            "updated_at": "2024-12-31",
        },
        {
            "customer_id": "C3",
            "source": "database",
            "signup_date": "2026-11-01",
            "country": "JP",
            "segment": "consumer",
            "updated_at": "2026-11-01",
        },
    )
    events = pd.DataFrame(
        {
            "customer_id": ["C1", "C3", "GUEST-1"],
            "page_views": [10, 2, 5],
            "unique_features_used": [3, 0, 0],
            "purchase_count": [1, 0, 0],
            "purchase_amount": [50.0, 0.0, 0.0],
            "support_interactions": [0, 1, 0],
            "last_event_at": pd.to_datetime(["2026-11-21", "2026-11-17", "2026-11-18"], utc=True),
        }
    )
    transactions = pd.DataFrame(
        {
            "customer_id": ["C1", "C3"],
            "transaction_id": ["T1", "T2"],
            "amount_usd": [50.0, 20.0],
            "country": ["US", "JP"],
            "segment": ["smb", "consumer"],
            "timestamp": pd.to_datetime(["2026-11-21 10:00", "2026-11-16 09:00"], utc=True),
        }
    )
    return pd.concat([crm, database], ignore_index=True), events, transactions


def _stored(rows: pd.DataFrame, path, row_group_size: int = 2):
    """The rows as the transform stores them (a Parquet file of several row groups), aggregated per
    raw id by DuckDB reading the file, as the profiles asset reads them."""
    pq.write_table(
        pa.Table.from_pandas(rows, preserve_index=False), path, row_group_size=row_group_size
    )
    return query_stored(
        path, "transactions", transaction_aggregates_sql(pq.read_schema(path).names)
    )


def test_profiles_join_clean_impute_and_log(tmp_path):
    recs, events, transactions = _sources()
    aggregates = transaction_aggregates(_stored(transactions, tmp_path / "week.parquet"))
    profile, log = build_profiles(recs, events, aggregates, {"C1", "C3"}, WEEK)
    UnifiedCustomerProfiles.validate(profile)
    p = profile.set_index("customer_id")
    assert list(p.index) == ["C1", "C2", "C3"]  # the guest is dropped, with its reason
    assert log.dropped == {"UNMATCHED_ID": 1} and log.match_rate == pytest.approx(2 / 3)
    assert p.loc[
        "C1", ["country", "value_tier", "status", "in_crm", "in_events", "in_transactions"]
    ].tolist() == ["US", "Platinum", "active", True, True, True]
    # Issue 21, item 9: no source knows C2's country, and the profile says so (the marts impute, not
    # the profiles).
    assert p.loc["C2", "status"] == "churned" and pd.isna(p.loc["C2", "country"])
    assert log.removed_values["lifetime_value"] == 1 and log.removed_values["signup_date"] == 1
    assert (
        "lifetime_value" in p.loc["C2", "imputed_fields"]
        and "support_ticket_count" in p.loc["C2", "imputed_fields"]
    )
    assert p.loc["C3", "in_crm"] == False and p.loc["C3", "support_interactions"] == 1  # noqa: E712
    # last seen 2026-11-17, week ends 2026-11-23
    assert p.loc["C3", "days_since_last_activity"] == 6
    features = profile.filter(like="feature_")
    assert ((features >= 0) & (features <= 1)).all().all()
    assert log.as_dict()["engagement_formula"].startswith("40 * min(purchase_count / 5, 1)")


def test_distinct_ids_and_is_in_match_python_sets():
    a = pd.Series(["C2", None, "C1", "C2", "É9"], dtype="str")
    b = pd.Series(["C3", "C1"], dtype=object)
    assert distinct_ids(a, b, sort=True).to_pylist() == sorted({"C1", "C2", "C3", "É9"})
    assert set(distinct_ids(a, {"C7"}).to_pylist()) == {"C1", "C2", "C7", "É9"}
    assert is_in(a, b).tolist() == [False, False, True, False, False]
    # Text read from Parquet row groups is a chunked Arrow array inside pandas: taken as is, not
    # value by value.
    chunked = pa.Table.from_batches(
        pa.table({"id": ["C5", "C1", None, "C5"]}).to_batches(max_chunksize=1)
    ).to_pandas()["id"]
    assert distinct_ids(chunked, sort=True).to_pylist() == ["C1", "C5"] and is_in(
        chunked, a
    ).tolist() == [False, True, False, False]


def _week_rows():
    return pd.DataFrame(
        {
            "transaction_id": ["1", "2", "3", "4", "5", "6"],
            "customer_id": ["C1", "C1", "C1", None, " C2", "C2"],
            "amount_usd": [10.0, 20.5, 30.25, 99.0, 1.0, 2.0],
            "timestamp": pd.to_datetime(
                [
                    "2026-11-17",
                    "2026-11-19",
                    "2026-11-18",
                    "2026-11-18",
                    "2026-11-20",
                    "2026-11-16",
                ],
                utc=True,
            ),
            "country": ["DE", "FR", None, "US", "JP", None],
            "segment": [None, None, None, "x", None, "smb"],
        }
    ).astype(dict.fromkeys(("transaction_id", "customer_id", "country", "segment"), "str"))


def test_transaction_aggregates_per_standardised_id_with_the_last_known_country(tmp_path):
    out = transaction_aggregates(_stored(_week_rows(), tmp_path / "week.parquet")).set_index(
        "customer_id"
    )
    assert out.index.tolist() == [
        "C1",
        "C2",
    ]  # the row without an id is left out; " C2" is C2 (case is kept)
    assert out.loc["C1", "week_transaction_count"] == 3 and out.loc["C1", "week_spend_usd"] == 60.75
    assert out.loc["C1", "last_transaction_at"] == pd.Timestamp("2026-11-19", tz="UTC")
    # the last known; none known
    assert out.loc["C1", "country"] == "FR" and pd.isna(out.loc["C1", "segment"])
    # Two raw ids of one customer: combined, the last known values by row order across both.
    assert out.loc["C2", "week_transaction_count"] == 2 and out.loc["C2", "week_spend_usd"] == 3.0
    assert out.loc["C2", "country"] == "JP" and out.loc["C2", "segment"] == "smb"
    assert out.loc["C2", "last_transaction_at"] == pd.Timestamp("2026-11-20", tz="UTC")
    assert (
        str(out["last_transaction_at"].dtype) == "datetime64[ns, UTC]"
        and out["country"].dtype == "str"
    )


def test_an_empty_week_has_typed_empty_aggregates(tmp_path):
    out = transaction_aggregates(_stored(_week_rows().iloc[:0], tmp_path / "week.parquet"))
    assert len(out) == 0 and out["week_transaction_count"].dtype == "int64"
    assert str(out["last_transaction_at"].dtype) == "datetime64[ns, UTC]"


def test_an_outlier_keeps_its_true_figures_and_is_flagged():
    """Issue 21, item 6: a bot's week spend (140k USD) was capped at the 99th percentile (1,448) and
    its tier read Bronze. The profile keeps the true value and lists the column in
    ``outlier_fields``; only the ML feature is capped."""
    from customer_assets.logic.profile_rules import CAPPED_COLUMNS, TransformLog, flag_outliers

    n = 200
    profile = pd.DataFrame({column: np.linspace(1.0, 1_000.0, n) for column in CAPPED_COLUMNS})
    profile.loc[n - 1, ["week_spend_usd", "lifetime_value"]] = 140_000.0
    log = TransformLog()
    flagged, caps = flag_outliers(profile, log)
    assert (
        flagged["week_spend_usd"].iloc[-1] == 140_000.0
        and flagged["lifetime_value"].iloc[-1] == 140_000.0
    )
    assert set(flagged["outlier_fields"].iloc[-1].split(";")) == set(CAPPED_COLUMNS)
    assert (flagged["outlier_fields"].iloc[: n - 2] == "").all()
    assert caps["week_spend_usd"] < 1_000.0 and log.capped["week_spend_usd"]["rows"] == 2


def _combine_reference(parts):
    """The combination's definition, one Python call per person (as it was written first)."""
    out = parts.groupby("customer_id", sort=False).agg(
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


@pytest.mark.parametrize("seed", range(6))
def test_persons_parts_combine_as_their_definition(seed):
    """A person's carried lifetime value is the sum of its parts', or none when no part has one."""
    from customer_assets.logic.per_person import _combine

    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    country = pd.Series(pd.array(rng.choice(["US", "DE"], n), dtype="str")).mask(
        rng.random(n) < 0.4
    )
    segment = pd.Series(pd.array(rng.choice(["smb", "ent"], n), dtype="str")).mask(
        rng.random(n) < 0.4
    )
    parts = pd.DataFrame(
        {
            "customer_id": pd.array(rng.choice([f"P{i}" for i in range(40)], n), dtype="str"),
            "week_transaction_count": rng.integers(1, 5, n),
            "_spend_micro_usd": rng.integers(0, 10**9, n),
            "last_transaction_at": pd.Timestamp("2026-11-16", tz="UTC")
            + pd.to_timedelta(rng.integers(0, 7 * 86400, n), unit="s"),
            # most persons' parts all without one: none stays none, not 0
            "carried_lifetime_value_usd": pd.Series(rng.random(n) * 1000).mask(rng.random(n) < 0.7),
            "country": country,
            "segment": segment,
            "_country_rn": country.notna().cumsum().where(country.notna()),
            "_segment_rn": segment.notna().cumsum().where(segment.notna()),
        }
    )
    expected = _combine_reference(parts)
    assert expected["carried_lifetime_value_usd"].isna().any() or n < 40
    pd.testing.assert_frame_equal(_combine(parts), expected)
