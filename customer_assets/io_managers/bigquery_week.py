"""One week of a BigQuery table in SQL: which rows are the week (the predicate on the partition
column and its parameters), the carried rows of a ``CarriedWeek`` added to the staged week, the
MERGE that swaps the staged week in, the week's count after the swap, and the week read back as an
input.

The statements run as query jobs within the load's time budget, without the client's own job
retries: the ``Caller`` retries the whole step.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
from google.api_core import exceptions as gexc

from customer_assets.frames import CarriedWeek
from customer_assets.io_managers.bigquery_calls import Caller, LoadBudget, LoadTimeoutError
from customer_assets.io_managers.bigquery_types import standard_type
from customer_assets.io_managers.warehouse import carried_from, same_key, unique_window


@dataclass(frozen=True)
class Week:
    """One week of one table as the statements of its load name it: the table, the partition key
    (the week's Monday), the partition column and its type in the table, the week's bounds in
    UTC, and the prefix of the ids of the week's jobs."""

    target_id: str
    partition: str
    column: str
    column_type: str
    start: datetime
    end: datetime
    job_prefix: str


@dataclass(frozen=True)
class Staged:
    """What the statements on a staged week act with: the job location, the load's budget, the
    client and its retrying caller, the week, the staging table and its columns."""

    location: str
    load: LoadBudget
    client: Any
    call: Caller
    week: Week
    staging_id: str
    columns: list[str]

    def query(self, sql: str, params: list, step: str):
        """A statement on the staged week submitted within the load's budget (``start_query``)."""
        return start_query(
            self.location,
            self.load,
            self.client,
            sql,
            params,
            step,
            self.week.job_prefix + step + "_",
        )


def column_type(table, column: str, default: str) -> str:
    """The standard SQL type of ``column`` in ``table`` (a ``bigquery.Table``), or ``default``."""
    return {f.name: standard_type(f.field_type) for f in table.schema}.get(column, default)


def week_predicate(column: str, column_type: str, alias: str = "", bounds: str = "week") -> str:
    """``column`` within [@<bounds>_start, @<bounds>_end)."""
    ref = f"{alias}.`{column}`" if alias else f"`{column}`"
    lo, hi = f"@{bounds}_start", f"@{bounds}_end"
    if column_type == "DATETIME":
        # Naive columns hold UTC wall time; the partition windows are UTC instants.
        return f"{ref} >= DATETIME({lo}, 'UTC') AND {ref} < DATETIME({hi}, 'UTC')"
    return f"{ref} >= {lo} AND {ref} < {hi}"


def week_params(start: datetime, end: datetime, bounds: str = "week"):
    from google.cloud import bigquery

    return [
        bigquery.ScalarQueryParameter(f"{bounds}_start", "TIMESTAMP", start),
        bigquery.ScalarQueryParameter(f"{bounds}_end", "TIMESTAMP", end),
    ]


def merge_sql(
    target_id: str,
    staging_id: str,
    columns: list[str],
    column: str,
    column_type: str,
    start: datetime,
    end: datetime,
    key: str | None = None,
    key_weeks: int = 0,
) -> tuple[str, list]:
    """The swap's one MERGE, deleting the target's week and inserting the staging rows, and its
    parameters."""
    delete_when = f" AND {week_predicate(column, column_type, 'T')}"
    params = week_params(start, end)
    names = ", ".join(f"`{c}`" for c in columns)
    values = ", ".join(f"S.`{c}`" for c in columns)
    if key:
        # A row of a nearby week with a key of this week moved here (its timestamp was edited):
        # updated in place to the new row, so the key stays in one week only. The window's filter
        # on the partition column prunes the target's partitions: the cost does not grow with the
        # table's history.
        window = unique_window(start, end, key_weeks)
        params = params + week_params(*window, bounds="window")
        on = (
            f"T.`{key}` = S.`{key}` AND NOT ({week_predicate(column, column_type, 'T')}) "
            f"AND {week_predicate(column, column_type, 'T', bounds='window')}"
        )
        moved = (
            "WHEN MATCHED THEN UPDATE SET " + ", ".join(f"`{c}` = S.`{c}`" for c in columns) + "\n"
        )
    else:
        on, moved = "FALSE", ""
    sql = (
        f"MERGE `{target_id}` T USING `{staging_id}` S ON {on}\n{moved}"
        f"WHEN NOT MATCHED BY SOURCE{delete_when} THEN DELETE\n"
        f"WHEN NOT MATCHED THEN INSERT ({names}) VALUES ({values})"
    )
    return sql, params


def carry_sql(
    target_id: str,
    staging_id: str,
    columns: list[str],
    week: Week,
    origin: datetime,
    key: tuple[str, ...],
) -> tuple[str, list]:
    """The statement adding to the staged week the carried partition's rows (starting ``origin``)
    whose ``key`` no staged row holds, their partition column set to the week's start
    (``CarriedWeek``), and its parameters."""
    from google.cloud import bigquery

    start = "DATETIME(@week_start, 'UTC')" if week.column_type == "DATETIME" else "@week_start"
    values = ", ".join(start if c == week.column else f"C.`{c}`" for c in columns)
    same = same_key(key, "S", "C", lambda name: f"`{name}`")
    sql = (
        f"INSERT INTO `{staging_id}` ({', '.join(f'`{c}`' for c in columns)})\n"
        f"SELECT {values} FROM `{target_id}` C\n"
        f"WHERE {week_predicate(week.column, week.column_type, 'C', bounds='carried')}\n"
        f"AND NOT EXISTS (SELECT 1 FROM `{staging_id}` S WHERE {same})"
    )
    params = [
        bigquery.ScalarQueryParameter("week_start", "TIMESTAMP", week.start),
        *week_params(origin, origin + (week.end - week.start), bounds="carried"),
    ]
    return sql, params


def merge_week(staged: Staged, key: str | None = None, key_weeks: int = 0) -> int | None:
    """The swap: one MERGE deleting the target's week and inserting the staging rows
    (``merge_sql``). Returns the rows moved from other weeks (keyed tables)."""
    week, load = staged.week, staged.load
    sql, params = merge_sql(
        week.target_id,
        staged.staging_id,
        staged.columns,
        week.column,
        week.column_type,
        week.start,
        week.end,
        key,
        key_weeks,
    )

    def run():
        job = staged.query(sql, params, "merge")
        try:
            job.result(timeout=load.remaining("merge"), job_retry=None)
            return job
        except (TimeoutError, LoadTimeoutError, gexc.RetryError):
            # A MERGE is atomic: cancelled, it changes nothing; finishing, it replaces the whole
            # week.
            with contextlib.suppress(Exception):
                job.cancel()
            raise

    job = staged.call(
        "merge into target",
        ("bigquery.jobs.create", "bigquery.tables.getData", "bigquery.tables.updateData"),
        run,
    )
    stats = getattr(job, "dml_stats", None) if key else None
    return int(stats.updated_row_count or 0) if stats is not None else None


def carry_into_staging(staged: Staged, carry: CarriedWeek | None) -> int:
    """Adds to the staging table the carried rows of a ``CarriedWeek`` (``carry_sql``), inside
    BigQuery; how many (the statement's own count: the week's count after the swap checks it)."""
    week = staged.week
    origin = carried_from(carry, week.start)
    if origin is None:
        return 0
    sql, params = carry_sql(
        week.target_id, staged.staging_id, staged.columns, week, origin, carry.key
    )

    def run():
        job = staged.query(sql, params, "carry")
        job.result(timeout=staged.load.remaining("carry"), job_retry=None)
        return int(job.num_dml_affected_rows or 0)

    return staged.call(
        "carry the unchanged rows", ("bigquery.jobs.create", "bigquery.tables.updateData"), run
    )


def start_query(
    location: str,
    load: LoadBudget,
    client,
    sql: str,
    params: list,
    step: str,
    job_prefix: str | None = None,
):
    """A query job submitted within the load's budget (a minute at most), its id recorded under
    ``step``."""
    from google.cloud import bigquery

    job = client.query(
        sql,
        job_config=bigquery.QueryJobConfig(query_parameters=params),
        job_id_prefix=job_prefix,
        location=location,
        job_retry=None,
        timeout=min(60.0, load.remaining(step)),
    )
    load.job_ids[step] = job.job_id
    return job


def count_week(location: str, load: LoadBudget, client, call: Caller, week: Week) -> int:
    """The rows of the week in the table after the swap."""
    sql = (
        f"SELECT COUNT(*) AS n FROM `{week.target_id}` "
        f"WHERE {week_predicate(week.column, week.column_type)}"
    )
    params = week_params(week.start, week.end)

    def run():
        job = start_query(location, load, client, sql, params, "count", week.job_prefix + "count_")
        return int(next(iter(job.result(timeout=load.remaining("count"), job_retry=None)))[0])

    return call("count the week", ("bigquery.jobs.create", "bigquery.tables.getData"), run)


def read_week(
    location: str,
    load: LoadBudget,
    client,
    call: Caller,
    target_id: str,
    column: str,
    column_type: str,
    columns: list[str] | None,
    window: tuple[datetime, datetime],
) -> pd.DataFrame:
    """The week's rows of the table (only ``columns`` when given), as a frame."""
    select = ", ".join(f"`{c}`" for c in columns) if columns else "*"
    sql = f"SELECT {select} FROM `{target_id}` WHERE {week_predicate(column, column_type)}"

    def run():
        job = start_query(location, load, client, sql, week_params(*window), "select")
        rows = job.result(timeout=load.remaining("select"), job_retry=None)
        # Through Arrow (to_dataframe is deprecated in favour of pandas-gbq): numpy int64/bool like
        # the frame that was written (float/object only where there are NULLs), microsecond
        # timestamps.
        return rows.to_arrow(create_bqstorage_client=False).to_pandas()

    return call("select the week", ("bigquery.jobs.create", "bigquery.tables.getData"), run)
