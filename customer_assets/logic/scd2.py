"""A type-2 customer dimension maintained in the warehouse by SQL, one week at a time.

Applying a week recomputes the versions of the customers that week touches (those in its snapshot, and
those whose version started in it) from their weekly snapshots, inside the warehouse, and swaps them in with
one MERGE: nothing else is read, and no snapshot becomes a DataFrame. Versions depend only on the set of
snapshots, never on the order weeks were loaded in, so re-running a week adds nothing and backfilling an
older week gives the history of running the weeks in order. The same statement runs on DuckDB and BigQuery.
"""

from __future__ import annotations

from datetime import datetime

TRACKED = ["segment", "value_tier", "status", "country"]
OPEN_END = datetime(9999, 12, 31)
DIMENSION_COLUMNS = ["customer_id", *TRACKED, "effective_from", "effective_to", "is_current", "version"]

CREATE_SQL = """
CREATE TABLE IF NOT EXISTS {dim} (
  customer_id {STR}, segment {STR}, value_tier {STR}, status {STR}, country {STR},
  effective_from {DATETIME}, effective_to {DATETIME}, is_current {BOOL}, version {INT})
"""

_CHANGED = " OR ".join(f"{c} IS DISTINCT FROM LAG({c}) OVER w" for c in TRACKED)
_COLUMNS = ", ".join(DIMENSION_COLUMNS)

APPLY_WEEK_SQL = f"""
MERGE INTO {{dim}} T
USING (
  WITH affected AS (
    SELECT customer_id FROM {{profiles}} WHERE week_start = @week_start
    UNION DISTINCT
    SELECT customer_id FROM {{dim}} WHERE effective_from = @week_start
  ),
  snapshots AS (
    SELECT p.customer_id, p.week_start, {", ".join("p." + c for c in TRACKED)}
    FROM {{profiles}} p JOIN affected a ON p.customer_id = a.customer_id
  ),
  marked AS (
    SELECT *, ROW_NUMBER() OVER w AS n, ({_CHANGED}) AS changed
    FROM snapshots WINDOW w AS (PARTITION BY customer_id ORDER BY week_start)
  ),
  versions AS (
    SELECT customer_id, {", ".join(TRACKED)}, week_start AS effective_from,
           LEAD(week_start) OVER v AS next_from, ROW_NUMBER() OVER v AS version
    FROM marked WHERE n = 1 OR changed
    WINDOW v AS (PARTITION BY customer_id ORDER BY week_start)
  )
  SELECT customer_id, {", ".join(TRACKED)}, effective_from, COALESCE(next_from, @open_end) AS effective_to,
         next_from IS NULL AS is_current, version, FALSE AS remove
  FROM versions
  UNION ALL
  SELECT customer_id, {", ".join("NULL" for _ in TRACKED)}, NULL, NULL, NULL, NULL, TRUE FROM affected
) S
ON T.customer_id = S.customer_id AND S.remove
WHEN MATCHED THEN DELETE
WHEN NOT MATCHED AND NOT S.remove THEN INSERT ({_COLUMNS}) VALUES ({", ".join("S." + c for c in DIMENSION_COLUMNS)})
"""

WEEK_SUMMARY_SQL = """
SELECT COUNT(*) AS versions, COUNT(DISTINCT customer_id) AS customers,
       COUNTIF(effective_from = @week_start) AS versions_starting_this_week,
       COUNTIF(is_current) AS current_versions
FROM {dim}
"""


def apply_week(warehouse, schema: str, week_start: datetime) -> dict[str, int]:
    """Bring ``schema.dim_customers`` up to date with the week's snapshot in ``schema.weekly_customer_profiles``
    (``warehouse``: a ``WarehouseSQL``); returns the dimension's counts after it."""
    names = {"dim": warehouse.table(schema, "dim_customers"),
             "profiles": warehouse.table(schema, "weekly_customer_profiles")}
    params = {"week_start": week_start.replace(tzinfo=None), "open_end": OPEN_END}
    warehouse.execute(CREATE_SQL, **names)
    warehouse.execute(APPLY_WEEK_SQL, params, **names)
    summary = warehouse.query(WEEK_SUMMARY_SQL, params, **names).iloc[0]
    return {name: int(summary[name]) for name in summary.index}
