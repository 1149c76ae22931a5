"""A type-2 customer dimension maintained in the warehouse by SQL, one week at a time.

Applying a week recomputes, for the customers that week touches (those in its snapshot, and those whose
version started in it), the versions from the one in effect before the week on, from that version and the
snapshots from the week on, inside the warehouse, and swaps them in with one MERGE: no snapshot becomes a
DataFrame, and the newest week costs the same after years of weeks. Versions depend only on the set of
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
_TRACKED = ", ".join(TRACKED)

# For each customer the week touches, the versions from the one in effect before the week (its anchor) on
# are recomputed from the anchor's state and the customer's snapshots from the week on; earlier versions are
# not touched. Running the newest week reads that week's snapshot and one version per customer, whatever the
# number of weeks behind; re-running an older week reads the snapshots after it. The marker rows (remove)
# delete each touched customer's versions from the anchor on; the others are inserted.
APPLY_WEEK_SQL = f"""
MERGE INTO {{dim}} T
USING (
  WITH affected AS (
    SELECT customer_id FROM {{profiles}} WHERE week_start = @week_start
    UNION DISTINCT
    SELECT customer_id FROM {{dim}} WHERE effective_from = @week_start
  ),
  anchors AS (
    SELECT d.customer_id, {", ".join("d." + c for c in TRACKED)}, d.effective_from, d.version
    FROM {{dim}} d JOIN affected a ON d.customer_id = a.customer_id
    WHERE d.effective_from < @week_start AND d.effective_to >= @week_start
  ),
  sequence AS (
    SELECT customer_id, effective_from AS week_start, {_TRACKED}, version - 1 AS base FROM anchors
    UNION ALL
    SELECT p.customer_id, p.week_start, {", ".join("p." + c for c in TRACKED)}, CAST(NULL AS {{INT}}) AS base
    FROM {{profiles}} p JOIN affected a ON p.customer_id = a.customer_id
    WHERE p.week_start >= @week_start
  ),
  marked AS (
    SELECT *, ROW_NUMBER() OVER w AS n, ({_CHANGED}) AS changed,
           COALESCE(MAX(base) OVER (PARTITION BY customer_id), 0) AS offset_version
    FROM sequence WINDOW w AS (PARTITION BY customer_id ORDER BY week_start)
  ),
  versions AS (
    SELECT customer_id, {_TRACKED}, week_start AS effective_from, LEAD(week_start) OVER v AS next_from,
           offset_version + ROW_NUMBER() OVER v AS version
    FROM marked WHERE n = 1 OR changed
    WINDOW v AS (PARTITION BY customer_id ORDER BY week_start)
  )
  SELECT customer_id, {_TRACKED}, effective_from, COALESCE(next_from, @open_end) AS effective_to,
         next_from IS NULL AS is_current, version, FALSE AS remove
  FROM versions
  UNION ALL
  SELECT a.customer_id, {", ".join("NULL" for _ in TRACKED)}, COALESCE(n.effective_from, @week_start), NULL, NULL,
         NULL, TRUE
  FROM affected a LEFT JOIN anchors n ON n.customer_id = a.customer_id
) S
ON T.customer_id = S.customer_id AND S.remove AND T.effective_from >= S.effective_from
WHEN MATCHED THEN DELETE
WHEN NOT MATCHED AND NOT S.remove THEN INSERT ({_COLUMNS}) VALUES ({", ".join("S." + c for c in DIMENSION_COLUMNS)})
"""

# Every customer has exactly one current version, so the current versions count the customers.
WEEK_SUMMARY_SQL = """
SELECT COUNT(*) AS versions, COUNTIF(effective_from = @week_start) AS versions_starting_this_week,
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
    counts = {name: int(summary[name]) for name in summary.index}
    return {**counts, "customers": counts["current_versions"]}
