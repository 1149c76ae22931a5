"""Following a merge of persons (``identity_merges``) in the tables keyed by the person, in the run that found it.

When a week's records show that two persons are one, the retired person's id leaves every table analysts join
on the person, before the week's dimension and facts are built:

- ``dim_customers``: the retired person's versions end at the week (``is_current`` false) and name the person
  they merged into (``merged_into``, followed along later merges); versions that would start in or after the
  week are removed. The surviving person has the one current version from the week on.
- ``fact_transactions``: every fact of the retired person is counted under the surviving one (its
  ``customer_id``); its ``customer_key`` still names the version valid at its time, which exists.

The weekly snapshots (profiles, identity, history) keep what was known in their week. One SQL text for DuckDB
and BigQuery; nothing runs in a week without merges, and a re-run of the week changes nothing more.
"""

from __future__ import annotations

from datetime import datetime

ADD_MERGED_INTO_SQL = "ALTER TABLE {dim} ADD COLUMN IF NOT EXISTS merged_into {STR}"

WEEK_MERGES = "SELECT retired_id, surviving_id FROM {merges} WHERE week_start = @week_start"

# The retired person's versions: those from the week on removed, the others closed at the week.
CLOSE_VERSIONS_SQL = f"""
MERGE INTO {{dim}} T
USING ({WEEK_MERGES}) S
ON T.customer_id = S.retired_id
WHEN MATCHED AND T.effective_from >= @week_start THEN DELETE
WHEN MATCHED THEN UPDATE SET merged_into = S.surviving_id, is_current = FALSE,
  effective_to = CASE WHEN T.effective_to > @week_start THEN @week_start ELSE T.effective_to END
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

COUNT_SQL = "SELECT COUNT(*) AS n FROM {merges} WHERE week_start = @week_start"


def follow_merges(warehouse, schema: str, week_start: datetime) -> dict[str, int]:
    """Apply the week's merges to ``dim_customers`` and ``fact_transactions`` (those that exist); returns the
    number of merges and of versions and facts that followed them."""
    names = {"dim": warehouse.table(schema, "dim_customers"), "fact": warehouse.table(schema, "fact_transactions"),
             "merges": warehouse.table(schema, "identity_merges")}
    params = {"week_start": week_start.replace(tzinfo=None)}
    counts = {"merges": 0, "versions_closed": 0, "facts_relabelled": 0}
    if not warehouse.exists(schema, "identity_merges"):
        return counts
    counts["merges"] = int(warehouse.query(COUNT_SQL, params, **names)["n"].iloc[0])
    if not counts["merges"]:
        return counts
    retired = f"SELECT retired_id FROM {names['merges']} WHERE week_start = @week_start"
    if warehouse.exists(schema, "dim_customers"):
        warehouse.execute(ADD_MERGED_INTO_SQL, **names)
        counts["versions_closed"] = int(warehouse.query(
            f"SELECT COUNT(*) AS n FROM {{dim}} WHERE is_current AND customer_id IN ({retired})", params,
            **names)["n"].iloc[0])
        warehouse.execute(CLOSE_VERSIONS_SQL, params, **names)
        warehouse.execute(FOLLOW_CHAINS_SQL, params, **names)
    if warehouse.exists(schema, "fact_transactions"):
        counts["facts_relabelled"] = int(warehouse.query(
            f"SELECT COUNT(*) AS n FROM {{fact}} WHERE customer_id IN ({retired})", params, **names)["n"].iloc[0])
        if counts["facts_relabelled"]:
            warehouse.execute(RELABEL_FACTS_SQL, params, **names)
    return counts
