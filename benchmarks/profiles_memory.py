"""Time and memory of building one week's profiles, against the customers the week sees:
``python -m benchmarks.profiles_memory --customers 300000,3000000``.

For each size, in a fresh process: the identity holds a CRM record and a shop record of each
customer (keyed email and phone hashes on the CRM's, as the pipeline writes them; read from DuckDB
in Arrow batches, as the warehouse IO manager reads it); the week brings 85% of the CRM's customers
as updates, events of 30% and transactions of 80% of the customers, and the shop's record of each
customer seen. The profile step's logic then runs as ``assets/profiles._week_profiles`` runs it,
the shop's records taken from a frame rather than the source database: ``week_per_person`` (the
identity's lookups, every source's ids to their persons, the shop's records of the persons seen),
then ``build_profiles``. Prints one line per size: seconds of the lookups and of the build, the
process's RSS with the inputs built, its peak and the growth between them (MiB, sampled every 10 ms
by the pipeline benchmark's ``RssSampler``), and the ratio of the growths between the largest and
the smallest size.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from benchmarks.identity_memory import WEEK, random_hashes
from benchmarks.pipeline_run import RssSampler, each_size


def inputs(customers: int) -> dict[str, pd.DataFrame]:
    """The identity (what the step reads of it), the CRM's updates, the events' and transactions'
    aggregates, and the shop's records of the customers seen."""
    import duckdb

    rng = np.random.default_rng(11)
    ids = pd.Series([f"C{i:08d}" for i in range(customers)], dtype="str")
    persons = pd.concat([ids, ids], ignore_index=True)
    identity = pd.DataFrame(
        {
            "customer_id": persons,
            "source": np.repeat(["crm", "database"], customers),
            "source_customer_id": persons,
        }
    ).astype("str")
    with duckdb.connect() as con:  # in Arrow batches, as the warehouse IO manager reads it
        con.register("identity", identity)
        identity = con.sql("SELECT * FROM identity").to_arrow_table().to_pandas()

    def some(share: float) -> pd.Series:
        return ids[rng.random(customers) < share].reset_index(drop=True)

    week = pd.Timestamp(WEEK, tz="UTC")
    updated = some(0.85)
    n = len(updated)
    crm = pd.DataFrame(
        {
            "customer_id": updated,
            "email_hash": random_hashes(rng, n),
            "phone_hash": random_hashes(rng, n),
            "signup_date": week - pd.to_timedelta(rng.integers(1, 1000, n), unit="D"),
            "last_activity_at": week + pd.to_timedelta(rng.integers(0, 6 * 86400, n), unit="s"),
            "subscription_tier": pd.Series(rng.choice(["free", "pro", "team"], n), dtype="str"),
            "lifetime_value": rng.gamma(2.0, 500.0, n),
            "support_ticket_count": rng.integers(0, 5, n).astype(float),
            "updated_at": week + pd.to_timedelta(rng.integers(0, 6 * 86400, n), unit="s"),
            "source": "crm",
        }
    ).astype({"source": "str"})
    active = some(0.30)
    events = pd.DataFrame(
        {
            "customer_id": active,
            **{c: rng.integers(0, 20, len(active)) for c in ("page_views", "unique_features_used")},
            "purchase_count": rng.integers(0, 4, len(active)),
            "purchase_amount": rng.gamma(2.0, 40.0, len(active)),
            "support_interactions": rng.integers(0, 3, len(active)),
            "last_event_at": week + pd.to_timedelta(rng.integers(0, 6 * 86400, len(active)), "s"),
        }
    )
    buying = some(0.80)
    m = len(buying)
    transactions = pd.DataFrame(
        {
            "customer_id": buying,
            "week_transaction_count": rng.integers(1, 6, m),
            "week_spend_usd": rng.gamma(2.0, 60.0, m).round(2),
            "last_transaction_at": week + pd.to_timedelta(rng.integers(0, 6 * 86400, m), "s"),
            "country": pd.Series(rng.choice(["US", "DE", "FR"], m), dtype="str"),
            "segment": pd.Series(rng.choice(["consumer", "smb"], m), dtype="str"),
            "carried_lifetime_value_usd": rng.gamma(2.0, 500.0, m),
        }
    )
    seen = pd.concat([updated, active, buying]).drop_duplicates().sort_values()
    known = pd.DataFrame(
        {
            "customer_id": seen.reset_index(drop=True),
            "signup_date": week - pd.to_timedelta(rng.integers(1, 1000, len(seen)), unit="D"),
            "country": pd.Series(rng.choice(["US", "DE", "FR", None], len(seen)), dtype="str"),
            "segment": pd.Series(rng.choice(["consumer", "smb"], len(seen)), dtype="str"),
        }
    )
    known = known.assign(updated_at=known["signup_date"], source="database")
    return {
        "identity": identity,
        "crm": crm,
        "events": events,
        "transactions": transactions,
        "known": known.astype({"source": "str"}),
    }


def measure(customers: int) -> dict:
    """One size, in this process: the step's sequence of ``_week_profiles`` over ``inputs``."""
    from customer_assets.logic.identity import is_in
    from customer_assets.logic.per_person import week_per_person
    from customer_assets.logic.profile_rules import build_profiles
    from customer_assets.settings import configure_runtime
    from customer_assets.weeks import WeekContext

    configure_runtime()
    week = inputs(customers)
    shop = week["known"]
    no_erp = pd.DataFrame({"customer_id": pd.Series([], dtype="str")})
    sampler = RssSampler()
    sampler.start()
    started = time.monotonic()
    mapped = week_per_person(
        week["identity"],
        week["crm"],
        no_erp,
        week["events"],
        week["transactions"],
        lambda ids: shop[is_in(shop["customer_id"], ids)],
    )
    looked_up = time.monotonic()
    span = WeekContext.of(str(WEEK.date()))
    profile, _ = build_profiles(
        mapped.records, mapped.events, mapped.transactions, mapped.known_ids, span
    )
    built = time.monotonic()
    sampler.stop()
    return {
        "customers": customers,
        "profiles": len(profile),
        "lookup_seconds": round(looked_up - started, 2),
        "build_seconds": round(built - looked_up, 2),
        **sampler.growth(),
    }


def main(argv: list[str] | None = None) -> None:
    each_size(
        "benchmarks.profiles_memory",
        measure,
        argv,
        lambda r: (
            f"{r['customers']:>10,} customers  {r['profiles']:>10,} profiles  lookups "
            f"{r['lookup_seconds']:6.2f} s  build {r['build_seconds']:6.2f} s  RSS "
            f"{r['inputs_rss_mb']:>6,} -> {r['peak_rss_mb']:>6,} MB (+{r['growth_mb']:,})"
        ),
    )


if __name__ == "__main__":
    main()
