"""The production warehouse: BigQuery tables in a dataset named by the asset key prefix.

One week is replaced atomically: the frame is loaded into a staging table by a load job, then a
single ``MERGE ... ON FALSE`` deletes the target's rows of the week and inserts the staging rows in
one statement (partition decorators such as ``table$20260105`` are deliberately not used). Whatever
fails, the week is either as it was or fully replaced; the staging table is always dropped (and
expires after a day should the process die first).

A ``StoredFrame`` (the week in a Parquet file) is never read whole: its week bounds are checked a
batch at a time and the load job's Parquet is written a batch at a time to a temporary file
(deleted when closed).

Which warehouse: the ``warehouse`` resource (``BigQueryWarehouse``: project, location, dataset,
emulator), nested here, so the loads and the SQL run in the warehouse never name two warehouses;
its client is ``resources.bigquery_client``. By concern: column types and the load file in
``bigquery_types``; retries and the time budget in ``bigquery_calls``; the tables (dataset, table,
added columns, staging) in ``bigquery_tables``; the checks before BigQuery is touched in
``bigquery_payload``; the week's SQL (predicate, MERGE, count, read back) in ``bigquery_week``; here
the load's steps in order: checks, tables, the swap, the count, the report.

Why not dagster-gcp's ``BigQueryPandasIOManager`` (with a custom type handler): its ``DbIOManager``
deletes the week's rows and inserts the new ones as two statements, so a failure in between leaves
the week empty, where one MERGE here is atomic; it has no way to hand a week over as a file written
batch by batch, to move a transaction that changed weeks (the ``unique_key`` window), to verify the
week's count, or to reach an emulator (its ``BigQueryResource`` takes no endpoint and no anonymous
credentials), and it changes the case of column names. Everything this manager guarantees is tested
against the emulator.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone
from typing import Any

import dagster as dg
import pandas as pd
from google.auth import exceptions as auth_exc
from pydantic import Field

from customer_assets.frames import CarriedWeek, StoredFrame
from customer_assets.io_managers.bigquery_calls import Caller, LoadBudget
from customer_assets.io_managers.bigquery_payload import week_payload
from customer_assets.io_managers.bigquery_tables import (
    ensure_dataset,
    ensure_table,
    schema_fields,
    stage,
)
from customer_assets.io_managers.bigquery_week import (
    Staged,
    Week,
    carry_into_staging,
    column_type,
    count_week,
    merge_week,
    read_week,
)
from customer_assets.io_managers.warehouse import (
    column_descriptions,
    input_columns,
    load_report,
    partition_column,
    report_metadata,
    table_address,
    unique_key,
    write_load_report,
)
from customer_assets.resources.bigquery_client import bigquery_client
from customer_assets.resources.bigquery_warehouse import BigQueryWarehouse


class BigQueryWarehouseIOManager(dg.ConfigurableIOManager):
    """Replaces one week of a BigQuery table atomically, then checks the week's row count.

    Like the DuckDB warehouse: columns are matched by name, a new column is added, a column is
    never dropped (one missing from the frame stays NULL) and a changed type stops the load with
    the difference spelled out. Transient errors are retried with exponential backoff; an
    exhausted quota waits ``quota_wait_seconds``; missing credentials or permissions fail the step
    without retry.
    """

    warehouse: BigQueryWarehouse = Field(
        description="The ``warehouse`` resource: its project, location, dataset (BIGQUERY_DATASET) "
        "and emulator (BIGQUERY_EMULATOR_HOST; never production)."
    )
    reports_dir: str = Field(description="Where each week's load report JSON is written.")
    quota_wait_seconds: float = Field(
        default=60, description="Wait after a quotaExceeded error before retrying."
    )
    max_retries: int = Field(
        default=3, description="Retries of one step after transient or quota errors."
    )
    retry_base_seconds: float = Field(
        default=2.0, description="First backoff delay; doubled at every retry."
    )
    load_timeout_seconds: float = Field(
        default=600, description="Time budget of a whole week's load."
    )

    # ----------------------------------------------------------------------------------------------
    # client and calls

    def _client(self):
        warehouse = self.warehouse
        return bigquery_client(warehouse.project, warehouse.location, warehouse.emulator_host)

    def _connect(self, log) -> tuple[Any, list[str]]:
        warnings = []
        if emulator := self.warehouse.emulator_host:
            message = (
                f"BigQuery EMULATOR in use at {emulator} (BIGQUERY_EMULATOR_HOST): "
                "anonymous credentials, this is NOT the production warehouse"
            )
            log.warning(message)
            warnings.append(message)
        try:
            return self._client(), warnings
        except auth_exc.DefaultCredentialsError as err:
            raise dg.Failure(
                description=(
                    f"No Google credentials for BigQuery project {self.warehouse.project}: set "
                    f"GOOGLE_APPLICATION_CREDENTIALS to a service account key file ({err})"
                ),
                allow_retries=False,
            ) from err

    def _caller(self, client, log, load: LoadBudget) -> Caller:
        return Caller(
            self.warehouse.project,
            client,
            log,
            load,
            self.max_retries,
            self.retry_base_seconds,
            self.quota_wait_seconds,
            self.load_timeout_seconds,
        )

    # ----------------------------------------------------------------------------------------------
    # helpers

    def _dataset(self, context) -> tuple[str, str]:
        dataset, table = table_address(context)
        return self.warehouse.dataset_override or dataset, table

    @staticmethod
    def _window(context) -> tuple[datetime, datetime]:
        window = context.asset_partitions_time_window
        return window.start.astimezone(timezone.utc), window.end.astimezone(timezone.utc)

    # ----------------------------------------------------------------------------------------------
    # IO manager

    def handle_output(
        self, context: dg.OutputContext, obj: pd.DataFrame | StoredFrame | CarriedWeek
    ) -> None:
        carry, obj = (obj, obj.frame) if isinstance(obj, CarriedWeek) else (None, obj)
        started = time.monotonic()
        load = LoadBudget(deadline=started + self.load_timeout_seconds)
        dataset, table = self._dataset(context)
        column, partition = partition_column(context), context.asset_partition_key
        target_id = f"{self.warehouse.project}.{dataset}.{table}"
        stored = obj if isinstance(obj, StoredFrame) else None
        # the dtypes, or all rows
        frame = stored.empty() if stored is not None else obj.reset_index(drop=True)
        rows = len(obj)

        start, end = self._window(context)
        incoming, declared, payload = week_payload(
            context, obj, frame, target_id, column, (start, end)
        )
        try:
            client, load.warnings = self._connect(context.log)
            call = self._caller(client, context.log, load)
            descriptions = column_descriptions(context)
            ensure_dataset(client, call, self.warehouse.project, self.warehouse.location, dataset)
            target, created, added = ensure_table(
                context, client, call, target_id, incoming, column, descriptions, declared
            )
            week = Week(
                target_id,
                partition,
                column,
                column_type(target, column, incoming[column]),
                start,
                end,
                job_prefix=f"customer_assets_{table}_{partition.replace('-', '')}_",
            )
            moved, carried = self._swap(
                context, load, client, call, week, incoming, descriptions, payload, rows, carry
            )
            count = count_week(self.warehouse.location, load, client, call, week)
            if count != rows + carried:
                given = f" ({rows} given, {carried} carried)" if carry is not None else ""
                raise RuntimeError(
                    f"{target_id}: {count} rows in week {partition} after the load, expected "
                    f"{rows + carried}{given} (was another writer loading the same week?)"
                )
            self._record_load(
                context,
                load,
                started,
                (rows, carried if carry is not None else None),
                (dataset, table),
                frame,
                descriptions,
                added,
                created,
                moved,
            )
        finally:
            payload.close()  # a temporary file of the week: gone whatever happened

    def _swap(
        self,
        context,
        load: LoadBudget,
        client,
        call: Caller,
        week: Week,
        incoming: dict[str, str],
        descriptions: dict[str, str],
        payload,
        rows: int,
        carry: CarriedWeek | None = None,
    ) -> tuple[int | None, int]:
        """Stage the week (with the carried rows of a ``CarriedWeek``), then swap it in with one
        MERGE; the staging table is dropped whatever happened. Returns the rows moved from other
        weeks (keyed tables) and the rows carried."""
        staging_id = (
            f"{week.target_id}__staging_{week.partition.replace('-', '')}_{uuid.uuid4().hex[:8]}"
        )
        try:
            stage(
                client,
                call,
                self.warehouse.location,
                staging_id,
                week.target_id,
                week.partition,
                schema_fields(incoming, descriptions),
                payload,
                rows,
                week.job_prefix,
            )
            staged = Staged(
                self.warehouse.location, load, client, call, week, staging_id, list(incoming)
            )
            carried = carry_into_staging(staged, carry)
            moved = merge_week(staged, *unique_key(context))
            return moved, carried
        finally:
            try:
                client.delete_table(staging_id, not_found_ok=True, timeout=60)
            except Exception as err:
                context.log.warning(
                    f"could not drop staging table {staging_id} (it expires in a day): {err}"
                )

    def _record_load(
        self,
        context,
        load: LoadBudget,
        started: float,
        rows: tuple[int, int | None],
        address: tuple[str, str],
        frame: pd.DataFrame,
        descriptions: dict[str, str],
        added: list[str],
        created: bool,
        moved: int | None,
    ) -> None:
        """The week's load report (a JSON file) and the output's metadata."""
        dataset, table = address
        target_id = f"{self.warehouse.project}.{dataset}.{table}"
        given, carried = rows
        report = load_report(
            given + (carried or 0),
            target_id,
            started,
            time.monotonic(),
            added_columns=added,
            job_ids=load.job_ids,
            warnings=load.warnings,
            retries=load.retries,
            replaced="week",
            step_seconds=load.step_seconds,
            table_created=created,
            location=self.warehouse.location,
            emulator=bool(self.warehouse.emulator_host),
            **({"moved_from_other_weeks": moved} if moved is not None else {}),
            **({"carried_rows": carried, "given_rows": given} if carried is not None else {}),
        )
        path = write_load_report(self.reports_dir, context.asset_partition_key, table, report)
        context.add_output_metadata(
            {
                **report_metadata(
                    report,
                    path,
                    frame,
                    descriptions,
                    table_name=target_id,
                    uri="https://console.cloud.google.com/bigquery"
                    f"?p={self.warehouse.project}&d={dataset}&t={table}&page=table",
                ),
                "bigquery/job_ids": dg.MetadataValue.json(load.job_ids),
                "warnings": dg.MetadataValue.json(load.warnings),
                "retries": load.retries,
            }
        )

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        load = LoadBudget(deadline=time.monotonic() + self.load_timeout_seconds)
        dataset, table = self._dataset(context)
        target_id = f"{self.warehouse.project}.{dataset}.{table}"
        column = partition_column(context)  # for an input: the upstream output's partition_expr
        client, _ = self._connect(context.log)
        call = self._caller(client, context.log, load)
        target = call(
            f"table {target_id}",
            ("bigquery.tables.get",),
            lambda: client.get_table(target_id, timeout=min(60.0, load.remaining("get table"))),
        )
        return read_week(
            self.warehouse.location,
            load,
            client,
            call,
            target_id,
            column,
            column_type(target, column, "TIMESTAMP"),
            input_columns(context),
            self._window(context),
        )
