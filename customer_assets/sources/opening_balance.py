"""The opening balance: each customer's totals from every source transaction before the pipeline's
first loaded week, computed once, in SQL on the source, so that lifetime figures are right from the
first week on a source whose history starts years before it (issue 23).

It applies validation's hard rules that decide whether a row can ever count: completed (status
compared without case or surrounding blanks), a finite positive amount with no more decimals than
its currency's minor unit, a currency with an ECB rate, a known customer and product, not before the
customer's creation, one row per transaction id (identical copies count once, conflicting copies not
at all), and the ceiling (MAX_AMOUNT_USD, converted at the rate of the week the balance opens).
Anomaly flags do not matter: flagged rows count in the lifetime figures too.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import pyarrow as pa

from customer_assets.sources.copy_stream import copy_query
from customer_assets.sources.source_schema import SourceSchema

OPENING_BALANCE_SCHEMA = pa.schema(
    [
        ("customer_id", pa.string()),
        ("currency", pa.string()),
        ("amount_milli", pa.int64()),
        ("transaction_count", pa.int64()),
        ("first_purchase_at", pa.timestamp("us")),
        ("last_purchase_at", pa.timestamp("us")),
    ]
)


def opening_balance_sql(schema: SourceSchema) -> str:
    """Per customer and currency, the totals of the valid completed transactions before
    ``%(before)s``."""
    ts = schema.utc("t", "transactions", "timestamp")
    return f"""
WITH rules AS (
  SELECT * FROM unnest(%(currencies)s::text[], %(minor_units)s::int[], %(ceilings)s::float8[])
    AS r(currency, minor_units, ceiling)
), candidates AS (
  SELECT trim({schema.text("t", "transaction_id")}) AS transaction_id, trim({schema.text("t", "customer_id")})
         AS customer_id, t.currency::text AS currency, t.amount::numeric AS amount, {ts} AS ts,
         trim({schema.text("t", "product_id")}) AS product_id
  FROM transactions t JOIN rules r ON r.currency = t.currency::text
  WHERE lower(trim(t.status::text)) = 'completed' AND t."timestamp" < %(before)s
    AND t.amount IS NOT NULL AND t.amount::float8 > 0 AND t.amount::float8 < 'Infinity'::float8
    AND t.amount::float8 <> 'NaN'::float8 AND t.amount::float8 <= r.ceiling
    AND round(t.amount::numeric, r.minor_units) = t.amount::numeric
    AND EXISTS (SELECT 1 FROM customers c WHERE trim({schema.text("c", "customer_id")})
                  = trim({schema.text("t", "customer_id")}) AND {schema.utc("c", "customers", "created_at")} <= {ts})
    AND EXISTS (SELECT 1 FROM products p WHERE trim({schema.text("p", "product_id")})
                  = trim({schema.text("t", "product_id")}))
), single AS (
  SELECT min(customer_id) AS customer_id, min(currency) AS currency, min(amount) AS amount, min(ts) AS ts
  FROM candidates WHERE transaction_id <> ''
  GROUP BY transaction_id
  HAVING count(DISTINCT (customer_id, currency, amount, ts, product_id)) = 1
)
SELECT customer_id, currency, sum(round(amount * 1000))::bigint AS amount_milli, count(*) AS transaction_count,
       min(ts) AS first_purchase_at, max(ts) AS last_purchase_at
FROM single GROUP BY customer_id, currency
"""


def opening_balance(conn, schema: SourceSchema, before: datetime, rules: pd.DataFrame) -> pa.Table:
    """The totals (``KEYS`` + ``TOTALS`` of ``logic.history``; timestamps naive UTC) before
    ``before``, as Arrow (never a frame of every customer); ``rules`` has, per currency with a
    rate, its ``minor_units`` and ``ceiling`` in its own units."""
    params = {
        "before": schema.bound("transactions", "timestamp", before),
        "currencies": rules["currency"].tolist(),
        "minor_units": rules["minor_units"].astype(int).tolist(),
        "ceilings": rules["ceiling"].astype(float).tolist(),
    }
    table = copy_query(conn, opening_balance_sql(schema), params, OPENING_BALANCE_SCHEMA)
    return table.select(OPENING_BALANCE_SCHEMA.names)
