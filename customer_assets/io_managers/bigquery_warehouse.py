"""The production warehouse: BigQuery tables in a dataset named by the asset key prefix.

One week is replaced atomically: the frame is loaded into a staging table by a load job, then a single
``MERGE ... ON FALSE`` deletes the target's rows of the week and inserts the staging rows in one
statement (partition decorators such as ``table$20260105`` are deliberately not used). Whatever fails,
the week is either as it was or fully replaced; the staging table is always dropped (and expires after a
day should the process die first).

Column types come from the pandas dtypes of the frame (which the pandera models coerce):

=============================  ==========  =====================================================
pandas dtype                   BigQuery    note
=============================  ==========  =====================================================
object / string / category     STRING
float*                         FLOAT64
int* (numpy or nullable Int)   INT64
bool / boolean                 BOOL
datetime64[ns, <tz>]           TIMESTAMP   an instant
datetime64[ns] (naive)         DATETIME    UTC wall time, no zone: the same as DuckDB's naive
                                           TIMESTAMP, and read back naive. It is compared with
                                           ``DATETIME(@start, 'UTC')``, never with a TIMESTAMP.
=============================  ==========  =====================================================

A ``StoredFrame`` (the week in a Parquet file) is never read whole: its week bounds are checked a batch at a
time and the load job's Parquet is written a batch at a time to a temporary file (deleted when closed).

Names are kept exactly as in the frame (lower-case snake_case): nothing here changes their case, which
is why dagster-gcp's ``BigQueryPandasIOManager`` is not used.
"""

from __future__ import annotations

import re
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import IO, Any, Callable, Iterable, Optional, TypeVar

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc
from pydantic import Field

from customer_assets.io_managers.frames import StoredFrame, slices
from customer_assets.io_managers.warehouse import (
    SchemaMismatchError, input_columns, load_report, partition_column, replaces_whole_table, report_metadata, table_address,
    column_descriptions, type_diff, unique_key, unique_window, write_load_report)

T = TypeVar("T")

# Column names preferred for clustering, in order; BigQuery takes at most four.
CLUSTER_CANDIDATES = ("customer_id", "product_id", "transaction_id", "category")
MAX_CLUSTER_FIELDS = 4
STAGING_EXPIRY = timedelta(days=1)

# BigQuery reports legacy names for some types; compare on the standard SQL names.
_STANDARD_TYPE = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL", "NUMERIC": "NUMERIC"}

_TRANSIENT_REASONS = {"backendError", "rateLimitExceeded", "internalError"}
_QUOTA_REASONS = {"quotaExceeded"}
_TRANSIENT_EXCEPTIONS = (gexc.InternalServerError, gexc.ServiceUnavailable, gexc.BadGateway,
                         gexc.TooManyRequests, gexc.GatewayTimeout)


class LoadTimeoutError(TimeoutError):
    """The whole load took longer than ``load_timeout_seconds``."""


def standard_type(field_type: str) -> str:
    return _STANDARD_TYPE.get(field_type.upper(), field_type.upper())


def bigquery_type(dtype) -> str:
    """The BigQuery type of a pandas dtype (see the module docstring)."""
    if pd.api.types.is_bool_dtype(dtype):
        return "BOOL"
    if pd.api.types.is_integer_dtype(dtype):
        return "INT64"
    if pd.api.types.is_float_dtype(dtype):
        return "FLOAT64"
    if isinstance(dtype, pd.DatetimeTZDtype):
        return "TIMESTAMP"
    if pd.api.types.is_datetime64_dtype(dtype):
        return "DATETIME"
    if (pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype)
            or isinstance(dtype, pd.CategoricalDtype)):
        return "STRING"
    raise TypeError(f"no BigQuery type for pandas dtype {dtype}")


def frame_types(frame: pd.DataFrame) -> dict[str, str]:
    types = {}
    for name, dtype in frame.dtypes.items():
        try:
            types[str(name)] = bigquery_type(dtype)
        except TypeError as err:
            raise TypeError(f"column {name!r}: {err}") from None
    return types


_ARROW_TYPES = {"STRING": pa.string(), "FLOAT64": pa.float64(), "INT64": pa.int64(), "BOOL": pa.bool_(),
                "TIMESTAMP": pa.timestamp("us", tz="UTC"), "DATETIME": pa.timestamp("us")}


def _arrow_schema(types: dict[str, str]) -> pa.Schema:
    return pa.schema([pa.field(name, _ARROW_TYPES[kind]) for name, kind in types.items()])


def to_parquet_file(frames: Iterable[pd.DataFrame], types: dict[str, str]) -> IO[bytes]:
    """The frames as one Parquet file, a row group each, with the Arrow types BigQuery loads into ``types``
    (microsecond timestamps), in a temporary file (gone once closed), rewound.

    A naive timestamp is written without a zone (``isAdjustedToUTC=false``), which BigQuery loads into
    DATETIME; an aware one in UTC, loaded into TIMESTAMP. Sub-microsecond digits are dropped, as BigQuery
    keeps microseconds.
    """
    schema = _arrow_schema(types)
    sink = tempfile.TemporaryFile(prefix="bigquery_load_", suffix=".parquet")
    try:
        with pq.ParquetWriter(sink, schema, compression="snappy") as writer:
            for frame in frames:
                writer.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False, safe=False))
    except BaseException:
        sink.close()
        raise
    sink.seek(0)
    return sink


def _reasons(exc: BaseException) -> set[str]:
    reasons = {e.get("reason") for e in (getattr(exc, "errors", None) or []) if isinstance(e, dict)}
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str):
        reasons.add(reason)
    reasons.discard(None)
    return reasons  # type: ignore[return-value]


def is_quota(exc: BaseException) -> bool:
    return isinstance(exc, gexc.Forbidden) and bool(_reasons(exc) & _QUOTA_REASONS)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, _TRANSIENT_EXCEPTIONS):
        return True
    return isinstance(exc, gexc.GoogleAPICallError) and bool(_reasons(exc) & _TRANSIENT_REASONS)


def is_auth(exc: BaseException) -> bool:
    if isinstance(exc, (gexc.Unauthorized, auth_exc.DefaultCredentialsError, auth_exc.RefreshError)):
        return True
    return isinstance(exc, gexc.Forbidden) and not is_quota(exc) and not is_transient(exc)


def bigquery_client(project: str, location: str, emulator_host: Optional[str] = None):
    """A client of the warehouse project: the emulator's anonymous one in tests, else the default chain of
    credentials (GOOGLE_APPLICATION_CREDENTIALS, workload identity, the metadata server)."""
    from google.cloud import bigquery

    if emulator_host:
        from google.auth.credentials import AnonymousCredentials

        return bigquery.Client(project=project, location=location, credentials=AnonymousCredentials(),
                               client_options={"api_endpoint": emulator_host})
    return bigquery.Client(project=project, location=location)


@dataclass
class _Load:
    """State of one ``handle_output``: the deadline, the jobs run and what the report should say."""

    deadline: float
    job_ids: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    retries: int = 0
    step_seconds: dict[str, float] = field(default_factory=dict)

    def remaining(self, step: str) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise LoadTimeoutError(f"BigQuery load exceeded its time budget before {step}")
        return left


class BigQueryWarehouseIOManager(dg.ConfigurableIOManager):
    """Replaces one week of a BigQuery table atomically, then checks the week's row count.

    Like the DuckDB warehouse: columns are matched by name, a new column is added, a column is never
    dropped (one missing from the frame stays NULL) and a changed type stops the load with the
    difference spelled out. Transient errors are retried with exponential backoff; an exhausted quota
    waits ``quota_wait_seconds``; missing credentials or permissions fail the step without retry.
    """

    project: str = Field(description="GCP project of the warehouse (GCP_PROJECT_ID).")
    location: str = Field(default="US", description="Location of the datasets and jobs.")
    dataset_override: Optional[str] = Field(
        default=None, description="Dataset replacing the asset key prefix (BIGQUERY_DATASET).")
    reports_dir: str = Field(description="Where each week's load report JSON is written.")
    emulator_host: Optional[str] = Field(
        default=None, description="Endpoint of a BigQuery emulator (BIGQUERY_EMULATOR_HOST); never production.")
    quota_wait_seconds: float = Field(default=60, description="Wait after a quotaExceeded error before retrying.")
    max_retries: int = Field(default=3, description="Retries of one step after transient or quota errors.")
    retry_base_seconds: float = Field(default=2.0, description="First backoff delay; doubled at every retry.")
    load_timeout_seconds: float = Field(default=600, description="Time budget of a whole week's load.")

    # ----------------------------------------------------------------------------------------------
    # client and error handling

    def _client(self):
        return bigquery_client(self.project, self.location, self.emulator_host)

    def _connect(self, log) -> tuple[Any, list[str]]:
        warnings = []
        if self.emulator_host:
            message = (f"BigQuery EMULATOR in use at {self.emulator_host} (BIGQUERY_EMULATOR_HOST): "
                       "anonymous credentials, this is NOT the production warehouse")
            log.warning(message)
            warnings.append(message)
        try:
            return self._client(), warnings
        except auth_exc.DefaultCredentialsError as err:
            raise dg.Failure(
                description=(f"No Google credentials for BigQuery project {self.project}: set "
                             f"GOOGLE_APPLICATION_CREDENTIALS to a service account key file ({err})"),
                allow_retries=False) from err

    @staticmethod
    def _principal(client) -> str:
        credentials = getattr(client, "_credentials", None)
        email = getattr(credentials, "service_account_email", None)
        if email:
            return f"service account {email}"
        if credentials is not None:
            return f"credentials {type(credentials).__name__} (no service account email)"
        return "unknown credentials"

    def _auth_failure(self, client, err: BaseException, step: str, permissions: tuple[str, ...]) -> dg.Failure:
        named = re.findall(r"(bigquery\.[a-zA-Z]+\.[a-zA-Z]+)", str(err))
        missing = ", ".join(dict.fromkeys(named or permissions))
        return dg.Failure(
            description=(f"BigQuery denied {step} in project {self.project} to {self._principal(client)}: "
                         f"it needs {missing}. Grant the permission (e.g. roles/bigquery.dataEditor on the "
                         f"dataset and roles/bigquery.jobUser on the project); retrying will not help. "
                         f"[{type(err).__name__}: {str(err)[:300]}]"),
            metadata={"missing_permissions": missing, "principal": self._principal(client), "step": step},
            allow_retries=False)

    def _call(self, load: _Load, client, log, step: str, permissions: tuple[str, ...], fn: Callable[[], T]) -> T:
        """Run ``fn`` (one API call or one job, submitted and awaited) with bounded retries."""
        attempt = 0
        began = time.monotonic()
        while True:
            load.remaining(step)
            try:
                result = fn()
                load.step_seconds[step] = round(time.monotonic() - began, 3)
                return result
            except (gexc.GoogleAPICallError, auth_exc.GoogleAuthError) as err:
                if is_auth(err):
                    raise self._auth_failure(client, err, step, permissions) from err
                quota = is_quota(err)
                if not (quota or is_transient(err)):
                    raise
                if attempt >= self.max_retries:
                    raise RuntimeError(f"BigQuery {step} still failing after {self.max_retries} retries: {err}") from err
                attempt += 1
                load.retries += 1
                delay = self.quota_wait_seconds if quota else self.retry_base_seconds * 2 ** (attempt - 1)
                if time.monotonic() + delay >= load.deadline:
                    raise LoadTimeoutError(
                        f"BigQuery {step}: no time left in load_timeout_seconds={self.load_timeout_seconds} "
                        f"to wait {delay:.1f}s before retry {attempt}: {err}") from err
                log.warning(f"BigQuery {step}: {'quota exceeded' if quota else 'transient error'} ({err}); "
                            f"retry {attempt}/{self.max_retries} in {delay:.1f}s")
                time.sleep(delay)

    # ----------------------------------------------------------------------------------------------
    # helpers

    def _dataset(self, context) -> tuple[str, str]:
        dataset, table = table_address(context)
        return self.dataset_override or dataset, table

    @staticmethod
    def _window(context) -> tuple[datetime, datetime]:
        window = context.asset_partitions_time_window
        return window.start.astimezone(timezone.utc), window.end.astimezone(timezone.utc)

    @staticmethod
    def _week_predicate(column: str, column_type: str, alias: str = "", bounds: str = "week") -> str:
        """``column`` within [@<bounds>_start, @<bounds>_end)."""
        ref = f"{alias}.`{column}`" if alias else f"`{column}`"
        lo, hi = f"@{bounds}_start", f"@{bounds}_end"
        if column_type == "DATETIME":
            # Naive columns hold UTC wall time; the partition windows are UTC instants.
            return f"{ref} >= DATETIME({lo}, 'UTC') AND {ref} < DATETIME({hi}, 'UTC')"
        return f"{ref} >= {lo} AND {ref} < {hi}"

    @staticmethod
    def _week_params(start: datetime, end: datetime, bounds: str = "week"):
        from google.cloud import bigquery

        return [bigquery.ScalarQueryParameter(f"{bounds}_start", "TIMESTAMP", start),
                bigquery.ScalarQueryParameter(f"{bounds}_end", "TIMESTAMP", end)]

    @staticmethod
    def _check_frame_in_week(frames: Iterable[pd.DataFrame], column: str, start: datetime, end: datetime,
                             where: str) -> None:
        rows, outside, examples = 0, 0, []
        for frame in frames:
            values = frame[column]
            if isinstance(values.dtype, pd.DatetimeTZDtype):
                values = values.dt.tz_convert("UTC")
                lo, hi = pd.Timestamp(start), pd.Timestamp(end)
            else:
                lo, hi = pd.Timestamp(start).tz_convert(None), pd.Timestamp(end).tz_convert(None)
            bad = values.isna() | (values < lo) | (values >= hi)
            rows += len(frame)
            outside += int(bad.sum())
            examples += values[bad].head(3 - len(examples)).tolist()
        if outside:
            raise ValueError(f"{where}: {outside} of {rows} rows have {column} outside the week "
                             f"[{start.isoformat()}, {end.isoformat()}) or null; nothing was loaded. "
                             f"First: {examples}")

    @staticmethod
    def _table_description(context) -> Optional[str]:
        try:
            return context.asset_spec.description
        except Exception:  # noqa: BLE001 - outputs without an asset spec have no description
            return None

    @staticmethod
    def _cluster_fields(context, types: dict[str, str]) -> list[str]:
        wanted = (context.definition_metadata or {}).get("cluster_by") or CLUSTER_CANDIDATES
        return [c for c in wanted if c in types][:MAX_CLUSTER_FIELDS]

    # ----------------------------------------------------------------------------------------------
    # IO manager

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame | StoredFrame) -> None:
        from google.cloud import bigquery

        started = time.monotonic()
        load = _Load(deadline=started + self.load_timeout_seconds)
        dataset, table = self._dataset(context)
        column = partition_column(context)
        partition = context.asset_partition_key
        target_id = f"{self.project}.{dataset}.{table}"
        stored = obj if isinstance(obj, StoredFrame) else None
        frame = stored.empty() if stored is not None else obj.reset_index(drop=True)  # the dtypes, or all rows
        rows = len(obj)

        # Everything that can be checked without BigQuery is checked before touching it.
        incoming = frame_types(frame)
        if column not in incoming:
            raise ValueError(f"{target_id}: partition column {column!r} is not in the frame")
        if incoming[column] not in ("TIMESTAMP", "DATETIME"):
            raise ValueError(f"{target_id}: partition column {column!r} is {incoming[column]}, not a timestamp")
        start, end = self._window(context)
        whole_table = replaces_whole_table(context)  # write_mode: replace_table, e.g. an SCD2 dimension
        if not whole_table:
            self._check_frame_in_week(stored.batches([column]) if stored is not None else [frame],
                                      column, start, end, target_id)
        # A value Arrow cannot convert fails here, not half-way.
        payload = to_parquet_file(stored.batches() if stored is not None else slices(frame), incoming)
        try:
            client, load.warnings = self._connect(context.log)
            call = lambda step, perms, fn: self._call(load, client, context.log, step, perms, fn)  # noqa: E731
            rpc_timeout = lambda step: min(60.0, load.remaining(step))  # noqa: E731

            # Dataset and table, created if missing.
            def ensure_dataset():
                try:
                    return client.get_dataset(f"{self.project}.{dataset}", timeout=rpc_timeout("get dataset"))
                except gexc.NotFound:
                    ds = bigquery.Dataset(f"{self.project}.{dataset}")
                    ds.location = self.location
                    return client.create_dataset(ds, exists_ok=True, timeout=rpc_timeout("create dataset"))

            call(f"dataset {dataset}", ("bigquery.datasets.get", "bigquery.datasets.create"), ensure_dataset)

            descriptions = column_descriptions(context)

            def schema_field(name: str, kind: str):
                return bigquery.SchemaField(name, kind, mode="NULLABLE", description=descriptions.get(name))

            def ensure_table():
                try:
                    return client.get_table(target_id, timeout=rpc_timeout("get table")), False
                except gexc.NotFound:
                    new = bigquery.Table(target_id, schema=[schema_field(n, k) for n, k in incoming.items()])
                    new.time_partitioning = bigquery.TimePartitioning(
                        type_=bigquery.TimePartitioningType.DAY, field=column)
                    new.clustering_fields = self._cluster_fields(context, incoming) or None
                    new.description = self._table_description(context)
                    return client.create_table(new, exists_ok=True, timeout=rpc_timeout("create table")), True

            target, created = call(f"table {target_id}", ("bigquery.tables.get", "bigquery.tables.create"), ensure_table)
            existing = {f.name: standard_type(f.field_type) for f in target.schema}
            partitioned_on = getattr(target.time_partitioning, "field", None)
            if not created and partitioned_on != column:
                message = f"{target_id} is partitioned on {partitioned_on!r}, not on partition_expr {column!r}"
                context.log.warning(message)
                load.warnings.append(message)
            added, changed = type_diff(existing, incoming)
            if changed:
                raise SchemaMismatchError(f"{target_id}: column types differ, load stopped:\n" + "\n".join(changed))
            if added:
                def add_columns():
                    fresh = client.get_table(target_id, timeout=rpc_timeout("get table"))
                    have = {f.name for f in fresh.schema}
                    fresh.schema = list(fresh.schema) + [schema_field(n, incoming[n]) for n in added if n not in have]
                    return client.update_table(fresh, ["schema"], timeout=rpc_timeout("add columns"))

                call(f"add columns to {target_id}", ("bigquery.tables.update",), add_columns)
                message = f"{target_id}: added column(s) {', '.join(f'{n} {incoming[n]}' for n in added)}"
                context.log.warning(message)
                load.warnings.append(message)
            target_type = existing.get(column, incoming[column])

            staging_id = f"{target_id}__staging_{partition.replace('-', '')}_{uuid.uuid4().hex[:8]}"
            job_prefix = f"customer_assets_{table}_{partition.replace('-', '')}_"
            staging_schema = [schema_field(n, k) for n, k in incoming.items()]
            try:
                def create_staging():
                    staging = bigquery.Table(staging_id, schema=staging_schema)
                    staging.expires = datetime.now(timezone.utc) + STAGING_EXPIRY
                    staging.description = f"Staging of {target_id} week {partition}; dropped after the load."
                    return client.create_table(staging, exists_ok=True, timeout=rpc_timeout("create staging"))

                call("create staging table", ("bigquery.tables.create",), create_staging)

                if rows:
                    def load_staging():
                        payload.seek(0)  # a retried load sends the file again
                        config = bigquery.LoadJobConfig(
                            schema=staging_schema, source_format=bigquery.SourceFormat.PARQUET,
                            write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
                            create_disposition=bigquery.CreateDisposition.CREATE_IF_NEEDED)
                        job = client.load_table_from_file(
                            payload, staging_id, job_config=config, job_id_prefix=job_prefix + "load_",
                            location=self.location, timeout=rpc_timeout("load"))
                        load.job_ids["load"] = job.job_id
                        return job.result(timeout=load.remaining("load"))

                    call("load job into staging", ("bigquery.jobs.create", "bigquery.tables.updateData"), load_staging)
                moved = self._merge(context, load, client, call, target_id, staging_id, list(incoming), column,
                                    target_type, start, end, job_prefix, whole_table, *unique_key(context))
            finally:
                try:
                    client.delete_table(staging_id, not_found_ok=True, timeout=60)
                except Exception as err:  # noqa: BLE001 - never hide the load's own error; the table expires anyway
                    context.log.warning(f"could not drop staging table {staging_id} (it expires in a day): {err}")

            count = self._count(load, client, call, target_id, column, target_type, start, end, job_prefix, whole_table)
            if count != rows:
                scope = "the table" if whole_table else f"week {partition}"
                raise RuntimeError(f"{target_id}: {count} rows in {scope} after the load, expected "
                                   f"{rows} (was another writer loading the same week?)")

            report = load_report(rows, target_id, started, time.monotonic(),
                                 added_columns=added, job_ids=load.job_ids, warnings=load.warnings,
                                 retries=load.retries, replaced="table" if whole_table else "week", step_seconds=load.step_seconds, table_created=created, location=self.location,
                                 emulator=bool(self.emulator_host),
                                 **({"moved_from_other_weeks": moved} if moved is not None else {}))
            path = write_load_report(self.reports_dir, partition, table, report)
            context.add_output_metadata({
                **report_metadata(report, path, frame, descriptions, table_name=target_id,
                                  uri=f"https://console.cloud.google.com/bigquery?p={self.project}&d={dataset}"
                                      f"&t={table}&page=table"),
                "bigquery/job_ids": dg.MetadataValue.json(load.job_ids),
                "warnings": dg.MetadataValue.json(load.warnings),
                "retries": load.retries,
            })
        finally:
            payload.close()  # a temporary file of the week: gone whatever happened

    def _merge(self, context, load: _Load, client, call, target_id: str, staging_id: str, columns: list[str],
               column: str, column_type: str, start: datetime, end: datetime, job_prefix: str,
               whole_table: bool = False, key: str | None = None, key_weeks: int = 0) -> int | None:
        """The swap: one MERGE deleting the target's week (or every row) and inserting the staging rows."""
        from google.cloud import bigquery

        delete_when = "" if whole_table else f" AND {self._week_predicate(column, column_type, 'T')}"
        params = [] if whole_table else self._week_params(start, end)
        names = ", ".join(f"`{c}`" for c in columns)
        values = ", ".join(f"S.`{c}`" for c in columns)
        if key and not whole_table:
            # A row of a nearby week with a key of this week moved here (its timestamp was edited): updated in
            # place to the new row, so the key stays in one week only. The window's filter on the partition
            # column prunes the target's partitions: the cost does not grow with the table's history.
            window = unique_window(start, end, key_weeks)
            params = params + self._week_params(*window, bounds="window")
            on = (f"T.`{key}` = S.`{key}` AND NOT ({self._week_predicate(column, column_type, 'T')}) "
                  f"AND {self._week_predicate(column, column_type, 'T', bounds='window')}")
            moved = "WHEN MATCHED THEN UPDATE SET " + ", ".join(f"`{c}` = S.`{c}`" for c in columns) + "\n"
        else:
            on, moved = "FALSE", ""
        sql = (f"MERGE `{target_id}` T USING `{staging_id}` S ON {on}\n{moved}"
               f"WHEN NOT MATCHED BY SOURCE{delete_when} THEN DELETE\n"
               f"WHEN NOT MATCHED THEN INSERT ({names}) VALUES ({values})")

        def run():
            config = bigquery.QueryJobConfig(query_parameters=params)
            job = client.query(sql, job_config=config, job_id_prefix=job_prefix + "merge_",
                               location=self.location, job_retry=None, timeout=min(60.0, load.remaining("merge")))
            load.job_ids["merge"] = job.job_id
            try:
                job.result(timeout=load.remaining("merge"), job_retry=None)
                return job
            except (TimeoutError, LoadTimeoutError, gexc.RetryError):
                # A MERGE is atomic: cancelled, it changes nothing; finishing, it replaces the whole week.
                try:
                    job.cancel()
                except Exception:  # noqa: BLE001 - the timeout is the error to report
                    pass
                raise

        job = call("merge into target", ("bigquery.jobs.create", "bigquery.tables.getData",
                                         "bigquery.tables.updateData"), run)
        stats = getattr(job, "dml_stats", None) if key else None
        return int(stats.updated_row_count or 0) if stats is not None else None

    def _count(self, load: _Load, client, call, target_id: str, column: str, column_type: str,
               start: datetime, end: datetime, job_prefix: str, whole_table: bool = False) -> int:
        from google.cloud import bigquery

        where = "TRUE" if whole_table else self._week_predicate(column, column_type)
        params = [] if whole_table else self._week_params(start, end)
        sql = f"SELECT COUNT(*) AS n FROM `{target_id}` WHERE {where}"

        def run():
            job = client.query(sql, job_config=bigquery.QueryJobConfig(query_parameters=params),
                               job_id_prefix=job_prefix + "count_", location=self.location, job_retry=None,
                               timeout=min(60.0, load.remaining("count")))
            load.job_ids["count"] = job.job_id
            return int(next(iter(job.result(timeout=load.remaining("count"), job_retry=None)))[0])

        return call("count the week", ("bigquery.jobs.create", "bigquery.tables.getData"), run)

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        from google.cloud import bigquery

        load = _Load(deadline=time.monotonic() + self.load_timeout_seconds)
        dataset, table = self._dataset(context)
        target_id = f"{self.project}.{dataset}.{table}"
        column = partition_column(context)  # for an input: the upstream output's partition_expr
        client, _ = self._connect(context.log)
        call = lambda step, perms, fn: self._call(load, client, context.log, step, perms, fn)  # noqa: E731
        target = call(f"table {target_id}", ("bigquery.tables.get",),
                      lambda: client.get_table(target_id, timeout=min(60.0, load.remaining("get table"))))
        column_type = {f.name: standard_type(f.field_type) for f in target.schema}.get(column, "TIMESTAMP")
        start, end = self._window(context)
        columns = input_columns(context)
        select = ", ".join(f"`{c}`" for c in columns) if columns else "*"
        sql = f"SELECT {select} FROM `{target_id}` WHERE {self._week_predicate(column, column_type)}"

        def run():
            job = client.query(sql, job_config=bigquery.QueryJobConfig(query_parameters=self._week_params(start, end)),
                               location=self.location, job_retry=None, timeout=min(60.0, load.remaining("select")))
            rows = job.result(timeout=load.remaining("select"), job_retry=None)
            # Through Arrow (to_dataframe is deprecated in favour of pandas-gbq): numpy int64/bool like the
            # frame that was written (float/object only where there are NULLs), microsecond timestamps.
            return rows.to_arrow(create_bqstorage_client=False).to_pandas()

        return call("select the week", ("bigquery.jobs.create", "bigquery.tables.getData"), run)
