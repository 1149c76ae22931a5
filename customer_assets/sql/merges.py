"""Following a merge of persons (``identity_merges``) in the tables keyed by the person, in the run
that found it.

When a week's records show that two persons are one, the retired person's id leaves every table
analysts join on the person, when the week's dimension is built (before its facts):

- ``dim_customers``: the retired person's versions end at the week (``is_current`` false) and name
  the person they merged into (``merged_into``, followed along later merges); versions that would
  start in or after the week are removed. The surviving person has the one current version from the
  week on.
- ``fact_transactions``: every fact of the retired person is counted under the surviving one (its
  ``customer_id``); its ``customer_key`` still names the version valid at its time, which exists.

The weekly snapshots (profiles, identity, history) keep what was known in their week. One SQL text
for DuckDB and BigQuery; nothing is written in a week without merges, and a re-run of the week
changes nothing more. In BigQuery the facts' relabelling reads the fact table's customer_id column
(every week) in a week with merges.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd

from customer_assets import tables
from customer_assets.resources.warehouse_sql import WarehouseSQL

ADD_MERGED_INTO_SQL = "ALTER TABLE {dim} ADD COLUMN IF NOT EXISTS merged_into {STR}"

WEEK_MERGES = "SELECT retired_id, surviving_id FROM {merges} WHERE week_start = @merge_week"

# The retired person's versions: those from the merge's week on removed, the others closed at that
# week.
CLOSE_VERSIONS_SQL = f"""
MERGE INTO {{dim}} T
USING ({WEEK_MERGES}) S
ON T.customer_id = S.retired_id
WHEN MATCHED AND T.effective_from >= @merge_week THEN DELETE
WHEN MATCHED THEN UPDATE SET merged_into = S.surviving_id, is_current = FALSE,
  effective_to = CASE WHEN T.effective_to > @merge_week THEN @merge_week ELSE T.effective_to END
"""

# Versions merged into the retired person earlier follow it to the survivor.
FOLLOW_CHAINS_SQL = f"""
MERGE INTO {{dim}} T
USING ({WEEK_MERGES}) S
ON T.merged_into = S.retired_id
WHEN MATCHED THEN UPDATE SET merged_into = S.surviving_id
"""

RELABEL_FACTS_SQL = f"""
MERGE INTO {{fact}} T
USING ({WEEK_MERGES}) S
ON T.customer_id = S.retired_id
WHEN MATCHED THEN UPDATE SET customer_id = S.surviving_id
"""

MERGE_WEEKS_SQL = (
    "SELECT DISTINCT week_start FROM {merges} WHERE week_start >= @week_start ORDER BY week_start"
)
RETIRED = "SELECT retired_id FROM {merges} WHERE week_start = @merge_week"


def follow_merges(warehouse: WarehouseSQL, schema: str, week_start: datetime) -> dict[str, int]:
    """Apply the merges of the week and of every later loaded week, in week order, to
    ``dim_customers`` and ``fact_transactions`` (those that exist): on a normal Monday the week's
    merges; a re-run or backfill of an older week, which rebuilds versions from the snapshots,
    applies the later merges again so that no retired person comes back. Run after the week's
    versions are applied. Returns the counts."""
    names = {
        "dim": warehouse.table(schema, tables.DIM_CUSTOMERS),
        "fact": warehouse.table(schema, tables.FACT_TRANSACTIONS),
        "merges": warehouse.table(schema, tables.IDENTITY_MERGES),
    }
    counts = {"merges": 0, "versions_closed": 0, "facts_relabelled": 0}
    if not warehouse.exists(schema, tables.IDENTITY_MERGES):
        return counts
    weeks = warehouse.query(
        MERGE_WEEKS_SQL, {"week_start": week_start.replace(tzinfo=None)}, **names
    )["week_start"]
    has_dim = warehouse.exists(schema, tables.DIM_CUSTOMERS)
    has_fact = warehouse.exists(schema, tables.FACT_TRANSACTIONS)
    if has_dim:
        warehouse.execute(ADD_MERGED_INTO_SQL, **names)
    for week in weeks:
        params = {"merge_week": pd.Timestamp(week).to_pydatetime().replace(tzinfo=None)}
        merges = int(
            warehouse.query(f"SELECT COUNT(*) AS n FROM ({RETIRED}) m", params, **names)["n"].iloc[
                0
            ]
        )
        if not merges:
            continue
        counts["merges"] += merges
        if has_dim:
            counts["versions_closed"] += int(
                warehouse.query(
                    f"SELECT COUNT(*) AS n FROM {{dim}} WHERE is_current AND customer_id IN ({RETIRED})",
                    params,
                    **names,
                )["n"].iloc[0]
            )
            warehouse.execute(CLOSE_VERSIONS_SQL, params, **names)
            warehouse.execute(FOLLOW_CHAINS_SQL, params, **names)
        if has_fact:
            relabel = int(
                warehouse.query(
                    f"SELECT COUNT(*) AS n FROM {{fact}} WHERE customer_id IN ({RETIRED})",
                    params,
                    **names,
                )["n"].iloc[0]
            )
            if relabel:
                warehouse.execute(RELABEL_FACTS_SQL, params, **names)
            counts["facts_relabelled"] += relabel
    return counts
