"""Time and memory of carrying the identity one week, against the customers it holds:
``python -m benchmarks.identity_memory --customers 300000,1000000``.

For each size, in a fresh process: the carried identity holds a CRM record and a shop record of each
customer (keyed email and phone hashes of 64 characters on the CRM's, as the pipeline writes them);
the week touches 90% of those records, brings 1% new customers, and gives 0.1% of the CRM's records
the email of another customer (a merge each). ``logic.resolution.carry_handed_over`` then runs as
the identity step runs it, the frames handed over. Prints one line per size: seconds, the process's
RSS with the inputs built, its peak during the carry and the growth between them (MiB, sampled every
10 ms by the pipeline benchmark's ``RssSampler``), and the ratio of the growths between the largest
and the smallest size: memory that follows the records gives about their ratio, memory bounded by a
batch about 1.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from benchmarks.pipeline_run import RssSampler, each_size

WEEK_BEFORE, WEEK = pd.Timestamp("2026-11-09"), pd.Timestamp("2026-11-16")


def random_hashes(rng: np.random.Generator, n: int) -> pd.Series:
    words = rng.integers(0, 2**63, size=(n, 4), dtype=np.int64).tolist()
    return pd.Series([f"{a:016x}{b:016x}{c:016x}{d:016x}" for a, b, c, d in words], dtype="str")


def inputs(customers: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The carried identity (``IDENTITY_COLUMNS``) and the week's records (``week_records``)."""
    from customer_assets.logic.resolution import IDENTITY_COLUMNS

    rng = np.random.default_rng(7)
    new = customers // 100
    ids = pd.Series([f"C{i:08d}" for i in range(customers + new)], dtype="str")
    email, phone = random_hashes(rng, customers + new), random_hashes(rng, customers + new)
    updated = pd.Timestamp("2026-11-01", tz="UTC") + pd.to_timedelta(
        rng.integers(0, 10**6, customers + new), unit="s"
    )
    crm = pd.DataFrame(
        {
            "source": "crm",
            "source_customer_id": ids,
            "email_hash": email,
            "phone_hash": phone,
            "updated_at": updated,
        }
    )
    shop = crm.assign(source="database", email_hash=None, phone_hash=None, updated_at=pd.NaT)
    shop[["email_hash", "phone_hash"]] = shop[["email_hash", "phone_hash"]].astype("str")
    known = pd.concat([crm[:customers], shop[:customers]], ignore_index=True)
    carried = known.assign(
        customer_id=pd.concat([ids[:customers]] * 2, ignore_index=True),
        matched_on="id",
        is_primary=np.r_[np.ones(customers, bool), np.zeros(customers, bool)],
        first_seen_week=WEEK_BEFORE,
        last_seen_week=WEEK_BEFORE,
    )[IDENTITY_COLUMNS]
    week = pd.concat(
        [known[rng.random(len(known)) < 0.9], crm[customers:], shop[customers:]],
        ignore_index=True,
    )
    crm_rows = np.flatnonzero((week["source"] == "crm").to_numpy())
    moved = rng.choice(crm_rows, max(1, customers // 1000), replace=False)
    week.loc[moved, "email_hash"] = email.iloc[rng.integers(0, customers, len(moved))].to_numpy()
    return carried, week


def measure(customers: int) -> dict:
    """One size, in this process."""
    from customer_assets.logic.resolution import carry_handed_over
    from customer_assets.settings import configure_runtime

    configure_runtime()
    carried, week = inputs(customers)
    week_count, handed = len(week), {"prior": carried, "records": week}
    del carried, week  # handed over, as the identity step hands them
    sampler = RssSampler()
    sampler.start()
    started = time.monotonic()
    resolution = carry_handed_over(handed, WEEK)
    seconds = time.monotonic() - started
    sampler.stop()
    return {
        "customers": customers,
        "records": resolution.counts["records"],
        "week_records": week_count,
        "merged": resolution.counts["merged_persons"],
        "new": resolution.counts["new_persons"],
        "seconds": round(seconds, 2),
        **sampler.growth(),
    }


def main(argv: list[str] | None = None) -> None:
    each_size(
        "benchmarks.identity_memory",
        measure,
        argv,
        lambda r: (
            f"{r['customers']:>10,} customers  {r['records']:>10,} records  week "
            f"{r['week_records']:>10,}  new {r['new']:>7,}  merged {r['merged']:>6,}  "
            f"{r['seconds']:6.2f} s  RSS {r['inputs_rss_mb']:>6,} -> {r['peak_rss_mb']:>6,} MB "
            f"(+{r['growth_mb']:,})"
        ),
    )


if __name__ == "__main__":
    main()
