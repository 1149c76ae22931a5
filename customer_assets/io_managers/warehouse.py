"""Shared behaviour of warehouse IO managers: one week replaced atomically, verified, and
reported."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pandas as pd

from customer_assets.frames import CarriedWeek


class SchemaMismatchError(Exception):
    """An existing warehouse column would change type: stop rather than guess."""


def table_address(context: dg.OutputContext | dg.InputContext) -> tuple[str, str]:
    """``(schema/dataset, table)`` from the asset key, e.g.
    ``customer_analytics/weekly_transactions``."""
    path = context.asset_key.path
    if len(path) < 2:
        raise ValueError(f"warehouse asset {path} needs a key prefix naming its schema/dataset")
    return path[-2], path[-1]


def partition_column(context: dg.OutputContext | dg.InputContext) -> str:
    if isinstance(context, dg.InputContext) and context.upstream_output is not None:
        context = context.upstream_output
    metadata = context.definition_metadata or {}
    column = metadata.get("partition_expr")
    if not column:
        raise ValueError(
            f"{context.asset_key.to_user_string()} needs metadata partition_expr naming its week column"
        )
    return str(column)


def input_columns(context: dg.InputContext) -> list[str] | None:
    """The columns an input asks for (``AssetIn(metadata={"columns": [...]})``), or None for all."""
    columns = (context.definition_metadata or {}).get("columns")
    return [str(c) for c in columns] if columns else None


def unique_key(context: dg.OutputContext) -> tuple[str | None, int]:
    """The column unique across weeks (``unique_key`` metadata, e.g. ``transaction_id``) and how
    many weeks either side of the loaded one it is kept unique over (``unique_within_weeks``).

    A row of the loaded week whose key a week within that window holds has moved there (its
    timestamp was edited): the load removes it from that week, so a transaction is never in two
    weeks. The window bounds the cost: the load reads those weeks' keys, never the whole history.
    """
    metadata = context.definition_metadata or {}
    key = metadata.get("unique_key")
    return (str(key) if key else None), int(metadata.get("unique_within_weeks", 0))


def unique_window(start: datetime, end: datetime, weeks: int) -> tuple[datetime, datetime]:
    return start - timedelta(weeks=weeks), end + timedelta(weeks=weeks)


def carried_from(carry: CarriedWeek | None, start) -> object | None:
    """The start of the partition a ``CarriedWeek`` carries rows from, as the table's partition
    column holds it (naive UTC when ``start``, the week's, is naive); None: nothing carried."""
    if carry is None or carry.carried_from is None:
        return None
    origin = pd.Timestamp(carry.carried_from)
    if start.tzinfo is None:
        origin = origin.tz_convert(None) if origin.tzinfo else origin
    else:
        origin = origin if origin.tzinfo else origin.tz_localize("UTC")
    return origin.to_pydatetime()


def same_key(key: tuple[str, ...], left: str, right: str, quote) -> str:
    """SQL true when rows ``left`` and ``right`` hold the same ``key`` (missing values equal), the
    columns quoted by ``quote``: how a ``CarriedWeek``'s copy leaves out the rows it was given."""
    return " AND ".join(
        f"({left}.{quote(k)} = {right}.{quote(k)} OR "
        f"({left}.{quote(k)} IS NULL AND {right}.{quote(k)} IS NULL))"
        for k in key
    )


def type_diff(existing: dict[str, str], incoming: dict[str, str]) -> tuple[list[str], list[str]]:
    """Columns to add, and readable lines for columns whose type would change."""
    added = [c for c in incoming if c not in existing]
    changed = [
        f"  {c}: warehouse {existing[c]} != incoming {incoming[c]}"
        for c in incoming
        if c in existing and existing[c] != incoming[c]
    ]
    return added, changed


def write_load_report(reports_dir: str, partition_key: str, table: str, report: dict) -> Path:
    path = Path(reports_dir, partition_key, f"load_report_{table.replace('.', '_')}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str))
    return path


def load_report(rows: int, destination: str, started: float, finished: float, **extra) -> dict:
    return {
        "rows_loaded": rows,
        "load_timestamp": datetime.now(timezone.utc).isoformat(),
        "destination_table": destination,
        "execution_time_seconds": round(finished - started, 3),
        **extra,
    }


def schema_columns(context: dg.OutputContext) -> list[dg.TableColumn]:
    """The columns an output declares, first source first: its pandera model (the Dagster type's
    table schema, set by dagster-pandera), then the asset's own ``dagster/column_schema``. Empty
    when neither."""
    sources = []
    try:
        dagster_type = context.dagster_type
    # an OutputContext built without a type (tests, direct calls)
    except dg.DagsterInvariantViolationError:
        dagster_type = None
    if dagster_type is not None:
        sources.append((dagster_type.metadata or {}).get("schema"))
    sources.append((context.definition_metadata or {}).get("dagster/column_schema"))
    columns = []
    for source in sources:
        schema = getattr(source, "schema", source)
        columns += list(getattr(schema, "columns", None) or [])
    return columns


def column_descriptions(context: dg.OutputContext) -> dict[str, str]:
    """Column descriptions of an output: from its pandera model (the Dagster type's table schema),
    or the asset's own ``dagster/column_schema``."""
    found: dict[str, str] = {}
    for column in schema_columns(context):
        if column.description:
            found.setdefault(column.name, column.description)
    return found


def report_metadata(
    report: dict,
    path: Path,
    frame: pd.DataFrame,
    descriptions: dict[str, str] | None = None,
    table_name: str | None = None,
    uri: str | None = None,
) -> dict:
    return {
        **({"dagster/table_name": table_name} if table_name else {}),
        **({"dagster/uri": dg.MetadataValue.url(uri)} if uri else {}),
        **(
            {"moved_from_other_weeks": report["moved_from_other_weeks"]}
            if "moved_from_other_weeks" in report
            else {}
        ),
        **{k: report[k] for k in ("carried_rows", "given_rows") if k in report},
        "rows_loaded": report["rows_loaded"],
        "dagster/row_count": report["rows_loaded"],
        "destination_table": report["destination_table"],
        "load_timestamp": report["load_timestamp"],
        "execution_time_seconds": report["execution_time_seconds"],
        "load_report": dg.MetadataValue.path(str(Path(path).resolve())),
        "dagster/column_schema": dg.TableSchema(
            columns=[
                dg.TableColumn(name=c, type=str(t), description=(descriptions or {}).get(c))
                for c, t in frame.dtypes.items()
            ]
        ),
    }
