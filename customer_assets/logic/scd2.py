"""Type-2 dimensions (customers, products) maintained in the warehouse by SQL, one week at a time.

Applying a week recomputes, for the customers that week touches (those in its snapshot, and those whose
version started in it), the versions from the one in effect before the week on, from that version and the
snapshots from the week on, inside the warehouse, and swaps them in with one MERGE: no snapshot becomes a
DataFrame, and the newest week costs the same after years of weeks. Versions depend only on the set of
snapshots, never on the order weeks were loaded in, so re-running a week adds nothing and backfilling an
older week gives the history of running the weeks in order. The same statement runs on DuckDB and BigQuery.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

OPEN_END = datetime(9999, 12, 31)


@dataclass(frozen=True)
class Scd2:
    """A type-2 dimension over weekly snapshots: ``tracked`` columns (name, type token) of ``key``, versioned by
    the week they were first seen in; ``surrogate`` is ``<key>|<yyyymmdd of effective_from>``, stable across
    reruns. Backfilling an older week can start a version earlier, and so re-key it: the facts of the later
    weeks are then re-run (the loaded weeks after a backfill, as for a late change)."""

    dimension: str
    snapshots: str
    key: str
    tracked: tuple[tuple[str, str], ...]
    surrogate: str

    @property
    def tracked_columns(self) -> list[str]:
        return [c for c, _ in self.tracked]

    @property
    def columns(self) -> list[str]:
        return [self.key, *self.tracked_columns, "effective_from", "effective_to", "is_current", "version"]

    def create_sql(self) -> str:
        tracked = ", ".join(f"{c} {{{t}}}" for c, t in self.tracked)
        return (f"CREATE TABLE IF NOT EXISTS {{dim}} ({self.key} {{STR}}, {tracked}, effective_from {{DATETIME}}, "
                f"effective_to {{DATETIME}}, is_current {{BOOL}}, version {{INT}}, {self.surrogate} {{STR}})")

    def apply_sql(self) -> str:
        k, tracked = self.key, self.tracked_columns
        changed = " OR ".join(f"{c} IS DISTINCT FROM LAG({c}) OVER w" for c in tracked)
        listed = ", ".join(tracked)
        inserted = [*self.columns, self.surrogate]
        return f"""
MERGE INTO {{dim}} T
USING (
  WITH affected AS (
    SELECT {k} FROM {{snapshots}} WHERE week_start = @week_start
    UNION DISTINCT
    SELECT {k} FROM {{dim}} WHERE effective_from = @week_start
  ),
  anchors AS (
    SELECT d.{k}, {", ".join("d." + c for c in tracked)}, d.effective_from, d.version
    FROM {{dim}} d JOIN affected a ON d.{k} = a.{k}
    WHERE d.effective_from < @week_start AND d.effective_to >= @week_start
  ),
  sequence AS (
    SELECT {k}, effective_from AS week_start, {listed}, version - 1 AS base FROM anchors
    UNION ALL
    SELECT p.{k}, p.week_start, {", ".join("p." + c for c in tracked)}, CAST(NULL AS {{INT}}) AS base
    FROM {{snapshots}} p JOIN affected a ON p.{k} = a.{k}
    WHERE p.week_start >= @week_start
  ),
  marked AS (
    SELECT *, ROW_NUMBER() OVER w AS n, ({changed}) AS changed,
           COALESCE(MAX(base) OVER (PARTITION BY {k}), 0) AS offset_version
    FROM sequence WINDOW w AS (PARTITION BY {k} ORDER BY week_start)
  ),
  versions AS (
    SELECT {k}, {listed}, week_start AS effective_from, LEAD(week_start) OVER v AS next_from,
           offset_version + ROW_NUMBER() OVER v AS version
    FROM marked WHERE n = 1 OR changed
    WINDOW v AS (PARTITION BY {k} ORDER BY week_start)
  )
  SELECT {k}, {listed}, effective_from, COALESCE(next_from, @open_end) AS effective_to,
         next_from IS NULL AS is_current, version,
         {k} || '|' || CAST(EXTRACT(YEAR FROM effective_from) * 10000 + EXTRACT(MONTH FROM effective_from) * 100
                            + EXTRACT(DAY FROM effective_from) AS {{STR}}) AS {self.surrogate},
         FALSE AS remove
  FROM versions
  UNION ALL
  SELECT a.{k}, {", ".join("NULL" for _ in tracked)}, COALESCE(n.effective_from, @week_start), NULL, NULL,
         NULL, NULL, TRUE
  FROM affected a LEFT JOIN anchors n ON n.{k} = a.{k}
) S
ON T.{k} = S.{k} AND S.remove AND T.effective_from >= S.effective_from
WHEN MATCHED THEN DELETE
WHEN NOT MATCHED AND NOT S.remove THEN INSERT ({", ".join(inserted)}) VALUES ({", ".join("S." + c for c in inserted)})
"""


CUSTOMERS = Scd2("dim_customers", "weekly_customer_profiles", "customer_id",
                 (("segment", "STR"), ("value_tier", "STR"), ("status", "STR"), ("country", "STR")), "customer_key")
PRODUCTS = Scd2("dim_products", "product_snapshots", "product_id",
                (("name", "STR"), ("category", "STR"), ("price", "FLOAT")), "product_key")
DIMENSION_COLUMNS = CUSTOMERS.columns

# A dimension created before surrogate keys existed gets the column, filled for its existing versions.
ADD_KEY_SQL = "ALTER TABLE {dim} ADD COLUMN IF NOT EXISTS {surrogate} {STR}"
FILL_KEY_SQL = """UPDATE {dim} SET {surrogate} = {key} || '|' || CAST(EXTRACT(YEAR FROM effective_from) * 10000
  + EXTRACT(MONTH FROM effective_from) * 100 + EXTRACT(DAY FROM effective_from) AS {STR}) WHERE {surrogate} IS NULL"""

# Every key has exactly one current version, so the current versions count the customers (or products). DuckDB's
# COUNTIF over no rows is NULL (BigQuery's is 0): an empty dimension counts 0.
WEEK_SUMMARY_SQL = """
SELECT COUNT(*) AS versions, COALESCE(COUNTIF(effective_from = @week_start), 0) AS versions_starting_this_week,
       COALESCE(COUNTIF(is_current), 0) AS current_versions
FROM {dim}
"""


def apply_week(warehouse, schema: str, week_start: datetime, spec: Scd2 = CUSTOMERS) -> dict[str, int]:
    """Bring ``schema.<spec.dimension>`` up to date with the week's snapshot in ``schema.<spec.snapshots>``
    (``warehouse``: a ``WarehouseSQL``); returns the dimension's counts after it (``current_versions`` is the
    number of customers, or products: each has exactly one current version)."""
    names = {"dim": warehouse.table(schema, spec.dimension), "snapshots": warehouse.table(schema, spec.snapshots),
             "key": spec.key, "surrogate": spec.surrogate}
    params = {"week_start": week_start.replace(tzinfo=None), "open_end": OPEN_END}
    warehouse.execute(spec.create_sql(), **names)
    warehouse.execute(ADD_KEY_SQL, **names)
    warehouse.execute(FILL_KEY_SQL, **names)
    warehouse.execute(spec.apply_sql(), params, **names)
    summary = warehouse.query(WEEK_SUMMARY_SQL, params, **names).iloc[0]
    return {name: int(summary[name]) for name in summary.index}
