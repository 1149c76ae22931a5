"""The warehouse's BigQuery tables: the dataset, the target table (created day-partitioned and
clustered with the declared types, a new column added, a changed type stopping the load) and the
week's staging table, loaded by one load job. Every call goes through the ``Caller`` (retries,
permissions, the load's time budget)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from google.api_core import exceptions as gexc

from customer_assets.io_managers.bigquery_calls import Caller
from customer_assets.io_managers.bigquery_types import standard_type
from customer_assets.io_managers.warehouse import SchemaMismatchError, type_diff

# Column names preferred for clustering, in order; BigQuery takes at most four.
CLUSTER_CANDIDATES = ("customer_id", "product_id", "transaction_id", "category")
MAX_CLUSTER_FIELDS = 4
STAGING_EXPIRY = timedelta(days=1)


def table_description(context) -> str | None:
    """The asset's description (its docstring), shown on the table in the console."""
    try:
        return context.asset_spec.description
    except Exception:
        return None


def cluster_fields(context, types: dict[str, str]) -> list[str]:
    """The asset's ``cluster_by`` metadata, or the preferred columns it has (at most four)."""
    wanted = (context.definition_metadata or {}).get("cluster_by") or CLUSTER_CANDIDATES
    return [c for c in wanted if c in types][:MAX_CLUSTER_FIELDS]


def ensure_dataset(client, call: Caller, project: str, location: str, dataset: str) -> None:
    """The dataset, created in ``location`` if missing."""
    from google.cloud import bigquery

    def ensure():
        try:
            return client.get_dataset(
                f"{project}.{dataset}", timeout=rpc_timeout(call, "get dataset")
            )
        except gexc.NotFound:
            ds = bigquery.Dataset(f"{project}.{dataset}")
            ds.location = location
            return client.create_dataset(
                ds, exists_ok=True, timeout=rpc_timeout(call, "create dataset")
            )

    call(f"dataset {dataset}", ("bigquery.datasets.get", "bigquery.datasets.create"), ensure)


def ensure_table(
    context,
    client,
    call: Caller,
    target_id: str,
    incoming: dict[str, str],
    column: str,
    descriptions: dict[str, str],
    declared: dict[str, str],
) -> tuple[Any, bool, list[str]]:
    """The target table (created day-partitioned and clustered if missing, with the ``declared``
    types, and any new column added): returns it, whether it was created, and the added columns. A
    changed type stops the load."""
    from google.cloud import bigquery

    def ensure():
        try:
            return client.get_table(target_id, timeout=rpc_timeout(call, "get table")), False
        except gexc.NotFound:
            new = bigquery.Table(target_id, schema=schema_fields(declared, descriptions))
            new.time_partitioning = bigquery.TimePartitioning(
                type_=bigquery.TimePartitioningType.DAY, field=column
            )
            new.clustering_fields = cluster_fields(context, incoming) or None
            new.description = table_description(context)
            return client.create_table(
                new, exists_ok=True, timeout=rpc_timeout(call, "create table")
            ), True

    target, created = call(
        f"table {target_id}", ("bigquery.tables.get", "bigquery.tables.create"), ensure
    )
    existing = {f.name: standard_type(f.field_type) for f in target.schema}
    partitioned_on = getattr(target.time_partitioning, "field", None)
    if not created and partitioned_on != column:
        warn(
            context,
            call,
            f"{target_id} is partitioned on {partitioned_on!r}, not on partition_expr {column!r}",
        )
    added, changed = type_diff(existing, incoming)
    if changed:
        raise SchemaMismatchError(
            f"{target_id}: column types differ, load stopped:\n" + "\n".join(changed)
        )
    if added:
        add_columns(context, client, call, target_id, {n: incoming[n] for n in added}, descriptions)
    return target, created, added


def add_columns(
    context,
    client,
    call: Caller,
    target_id: str,
    added: dict[str, str],
    descriptions: dict[str, str],
) -> None:
    """The ``added`` columns (name: type) appended to the table's schema (NULL in its rows), with a
    warning; one another load added meanwhile is not added twice."""

    def update():
        fresh = client.get_table(target_id, timeout=rpc_timeout(call, "get table"))
        have = {f.name for f in fresh.schema}
        fresh.schema = list(fresh.schema) + schema_fields(
            {n: t for n, t in added.items() if n not in have}, descriptions
        )
        return client.update_table(fresh, ["schema"], timeout=rpc_timeout(call, "add columns"))

    call(f"add columns to {target_id}", ("bigquery.tables.update",), update)
    warn(
        context,
        call,
        f"{target_id}: added column(s) {', '.join(f'{n} {t}' for n, t in added.items())}",
    )


def stage(
    client,
    call: Caller,
    location: str,
    staging_id: str,
    target_id: str,
    partition: str,
    schema: list,
    payload,
    rows: int,
    job_prefix: str,
) -> None:
    """A staging table holding the week's rows, loaded from ``payload`` by one load job."""
    from google.cloud import bigquery

    def create_staging():
        staging = bigquery.Table(staging_id, schema=schema)
        staging.expires = datetime.now(timezone.utc) + STAGING_EXPIRY
        staging.description = f"Staging of {target_id} week {partition}; dropped after the load."
        return client.create_table(
            staging, exists_ok=True, timeout=rpc_timeout(call, "create staging")
        )

    call("create staging table", ("bigquery.tables.create",), create_staging)
    if not rows:
        return

    def load_staging():
        payload.seek(0)  # a retried load sends the file again
        config = bigquery.LoadJobConfig(
            schema=schema,
            source_format=bigquery.SourceFormat.PARQUET,
            write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
            create_disposition=bigquery.CreateDisposition.CREATE_IF_NEEDED,
        )
        job = client.load_table_from_file(
            payload,
            staging_id,
            job_config=config,
            job_id_prefix=job_prefix + "load_",
            location=location,
            timeout=rpc_timeout(call, "load"),
        )
        call.budget.job_ids["load"] = job.job_id
        return job.result(timeout=call.budget.remaining("load"))

    call(
        "load job into staging",
        ("bigquery.jobs.create", "bigquery.tables.updateData"),
        load_staging,
    )


def rpc_timeout(call: Caller, step: str) -> float:
    """The timeout of one API call: a minute at most, and never past the load's budget."""
    return min(60.0, call.budget.remaining(step))


def schema_fields(types: dict[str, str], descriptions: dict[str, str]) -> list:
    from google.cloud import bigquery

    return [
        bigquery.SchemaField(n, k, mode="NULLABLE", description=descriptions.get(n))
        for n, k in types.items()
    ]


def warn(context, call: Caller, message: str) -> None:
    context.log.warning(message)
    call.budget.warnings.append(message)
