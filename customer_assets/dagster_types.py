"""The datasets as Dagster types: each pandera model checked where an output is handed over or
written.

The check is pandera's, with a cheaper path for the ``str`` columns (see ``_fast_schema``); anything
the cheap path rejects goes through pandera's full check, which also reports the errors. Batched and
stored weeks (``FrameBatches``, ``StoredFrame``) are checked batch by batch as they are written.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import dagster as dg
import pandas as pd
import pandera.pandas as pa
import pyarrow as arrow
from dagster_pandera import pandera_schema_to_dagster_type

from customer_assets.frames import CarriedWeek, FrameBatches, StoredFrame
from customer_assets.logic.history import typed_history
from customer_assets.schemas import (
    CrmCustomers,
    CustomerEventAggregates,
    CustomerHistory,
    CustomerIdentityMap,
    DataQualityMetrics,
    DimDate,
    ErpCustomers,
    FactTransactions,
    FactTransactionsQuarantine,
    IdentityMerges,
    MartChurnRetention,
    MartCohortRetention,
    MartWeeklySales,
    PipelineErrorLog,
    ProductSnapshots,
    QuarantinedTransactions,
    RawTransactions,
    TransactionAnomalies,
    TransformedTransactions,
    UnifiedCustomerProfiles,
    ValidatedTransactions,
)


def _holds_only_str(frame: object, columns: list[str]) -> bool:
    """True when each column is a pandas string column, or an object column of Python str (or
    missing) only."""
    return isinstance(frame, pd.DataFrame) and all(
        name in frame.columns
        and (
            isinstance(frame[name].dtype, pd.StringDtype)
            or (
                frame[name].dtype == object
                and pd.api.types.infer_dtype(frame[name], skipna=True) in ("string", "empty")
            )
        )
        for name in columns
    )


def _shallow(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy that shares the data (Copy-on-Write): validating it "in place" never touches the
    output, and pandera's own deep copy (the size of the frame again, at every output) is not
    made."""
    return frame.copy(deep=False)


def _fast_schema(model: type[pa.DataFrameModel]):
    """The model's schema without its ``str`` dtype checks, and the names of those columns.

    Pandera checks a ``str`` column element by element in Python (``map(isinstance)``) after
    coercing it with ``astype(str)``: over a week of rows this costs seconds per output. When every
    ``str`` column already holds only str or missing values (what the assets produce), coercion
    changes nothing and the dtype check passes, so the same schema minus those dtype checks
    (nullability, uniqueness, lengths, allowed values, every other column unchanged) decides.

    It also checks the other dtypes as they are, without coercing first (a coercion of a timestamp
    column that already has its dtype still costs a ``to_datetime``): a frame that passes needs no
    coercion, and one whose dtypes only coerce to the model's fails here and is decided by the full
    check, which coerces.
    """
    schema = model.to_schema()
    str_columns = [name for name, column in schema.columns.items() if str(column.dtype) == "str"]
    fast = schema.update_columns({name: {"dtype": None, "coerce": False} for name in str_columns})
    fast.coerce = False
    return fast, str_columns


def _passes_fast_check(model: type[pa.DataFrameModel]):
    """A function telling whether a frame passes the cheap check; False means "ask pandera's full
    check" (which also reports the errors)."""
    fast, str_columns = _fast_schema(model)

    def passes(frame: object) -> bool:
        if not _holds_only_str(frame, str_columns):
            return False
        try:
            fast.validate(_shallow(frame), lazy=True, inplace=True)
            return True
        except (pa.errors.SchemaError, pa.errors.SchemaErrors):
            return False

    return passes


# How many offending ids a model violation names.
NAMED_IDS = 10


class ModelViolation(pa.errors.SchemaErrors):
    """pandera's ``SchemaErrors`` headed by one line a person can act on: the model, the failed
    checks and the first offending transaction ids (``greater_than(0) failure cases: 0.0`` alone
    names no transaction)."""

    def __init__(self, original: pa.errors.SchemaErrors, headline: str):
        self.__dict__.update(original.__dict__)
        Exception.__init__(self, headline)
        self.headline = headline

    def __str__(self) -> str:
        return f"{self.headline}\n{pa.errors.SchemaErrors.__str__(self)}"


def violation(
    model: type[pa.DataFrameModel], frame: pd.DataFrame, exc: pa.errors.SchemaErrors
) -> ModelViolation:
    """``exc`` with a headline naming ``model``, its failed checks and up to ``NAMED_IDS`` offending
    ids."""
    cases = exc.failure_cases
    checks = sorted(
        {
            f"{column}: {check}"
            for column, check in zip(cases["column"], cases["check"], strict=False)
        },
        key=str,
    )
    rows = pd.Index(cases["index"].dropna().unique())
    headline = f"{model.__name__} broken ({'; '.join(checks)})"
    if len(rows) and "transaction_id" in frame.columns:
        ids = frame.loc[frame.index.isin(rows), "transaction_id"]
        named = ", ".join(repr(i) for i in ids.head(NAMED_IDS).tolist())
        more = f" and {len(ids) - NAMED_IDS} more" if len(ids) > NAMED_IDS else ""
        headline += f" in {len(ids)} rows, transaction ids {named}{more}"
    return ModelViolation(exc, headline)


def frame_check(model: type[pa.DataFrameModel]):
    """A function that raises ``ModelViolation`` (pandera's ``SchemaErrors``, every failure with
    examples, headed by the offending transaction ids) when a frame breaks ``model``; the cheap str
    check first, pandera's full check when that fails."""
    passes, full = _passes_fast_check(model), model.to_schema()

    def check(frame: pd.DataFrame) -> None:
        if not passes(frame):
            try:
                full.validate(frame, lazy=True)
            except pa.errors.SchemaErrors as exc:
                raise violation(model, frame, exc) from None

    return check


def _types_and_nulls_only(model: type[pa.DataFrameModel]) -> bool:
    """True when ``model`` checks only its columns' types and nullability (no value checks, no
    uniqueness)."""
    schema = model.to_schema()
    return (
        not schema.checks
        and not schema.unique
        and not any(column.checks or column.unique for column in schema.columns.values())
    )


def arrow_check(model: type[pa.DataFrameModel]) -> Callable[[arrow.RecordBatch], None]:
    """``frame_check`` for Arrow record batches written as they stream (``ParquetSink``): raises
    ``ModelViolation`` when the batch, as pandas, breaks ``model``, and also when it holds a null
    where the model takes none, which pandera's coercion would otherwise turn into a value (a null
    of a ``bool`` column coerces to False).

    For a model of types and nullability only (the extract's), a clean batch is decided on Arrow:
    its schema once (an empty frame of it through ``frame_check``), then its null counts. A batch
    with such nulls is checked as pandas without coercion, which reports them; every batch of a
    model with value checks goes through ``frame_check`` as pandas."""
    check, schema = frame_check(model), model.to_schema()
    required = [name for name, column in schema.columns.items() if not column.nullable]
    uncoerced = schema.update_columns({name: {"coerce": False} for name in schema.columns})
    uncoerced.coerce = False
    cheap, schemas = _types_and_nulls_only(model), []

    def check_batch(batch: arrow.RecordBatch) -> None:
        if batch.schema not in schemas:
            check(batch.schema.empty_table().to_pandas())
            schemas.append(batch.schema)
        names = set(batch.schema.names)
        if any(batch.column(n).null_count for n in required if n in names):
            frame = batch.to_pandas()
            try:
                uncoerced.validate(frame, lazy=True)
            except pa.errors.SchemaErrors as exc:
                raise violation(model, frame, exc) from None
        if not cheap:
            check(batch.to_pandas())

    return check_batch


def _dagster_pandera_type(model: type[pa.DataFrameModel]) -> dg.DagsterType:
    with warnings.catch_warnings():
        # dagster-pandera is pinned with pandera in pyproject.toml; its beta notice says nothing
        # more here.
        warnings.simplefilter("ignore", dg.BetaWarning)
        return pandera_schema_to_dagster_type(model)


def frame_type(model: type[pa.DataFrameModel]) -> dg.DagsterType:
    """The model as a Dagster type, with the same outcome as dagster-pandera's but a cheaper str
    check (see ``_fast_schema``). Anything the cheap check rejects goes through the full pandera
    check, which also reports the errors."""
    full, passes = _dagster_pandera_type(model), _passes_fast_check(model)

    def type_check(context, value: object) -> dg.TypeCheck:
        if isinstance(value, CarriedWeek):  # the rows given: the carried ones were checked before
            value = value.frame
        return dg.TypeCheck(success=True) if passes(value) else full.type_check(context, value)

    return dg.DagsterType(
        type_check_fn=type_check,
        name=full.unique_name,
        description=full.description,
        metadata=full.metadata,
        typing_type=pd.DataFrame,
    )


def column_schema(model: type[pa.DataFrameModel]) -> dg.TableSchema:
    """The model's columns, types and descriptions as Dagster's table schema (for an asset's
    definition)."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(name=name, type=str(column.dtype), description=column.description)
            for name, column in model.to_schema().columns.items()
        ]
    )


def stored_frame_type(
    name: str, check: Callable[[pd.DataFrame], None], metadata: dict | None = None
) -> dg.DagsterType:
    """A Dagster type for StoredFrame values: ``check`` runs on the file's schema (no rows are
    read)."""

    def type_check(_context, value: object) -> dg.TypeCheck:
        if not isinstance(value, StoredFrame):
            return dg.TypeCheck(
                success=False, description=f"expected a StoredFrame, got {type(value).__name__}"
            )
        try:
            check(value.empty())
        except Exception as err:
            return dg.TypeCheck(success=False, description=f"{value.path}: {err}")
        return dg.TypeCheck(success=True, metadata={"dagster/row_count": value.num_rows})

    return dg.DagsterType(
        type_check_fn=type_check,
        name=name,
        typing_type=StoredFrame,
        metadata=metadata,
        description=f"{name}: a Parquet file read in batches; its columns and types are checked.",
    )


def frame_batches_type(name: str, metadata: dict | None = None) -> dg.DagsterType:
    """A Dagster type for FrameBatches outputs: every batch is checked as it is written."""

    def type_check(_context, value: object) -> dg.TypeCheck:
        if isinstance(value, FrameBatches):
            return dg.TypeCheck(success=True)
        return dg.TypeCheck(
            success=False, description=f"expected FrameBatches, got {type(value).__name__}"
        )

    return dg.DagsterType(
        type_check_fn=type_check,
        name=name,
        typing_type=FrameBatches,
        metadata=metadata,
        description=f"{name}, written batch by batch; each batch is validated as it is written.",
    )


# The extract writes the week as it streams: each block checked on Arrow as it is written, the
# file's columns and types when it is handed over.
check_raw_batch = arrow_check(RawTransactions)
RawTransactionsFileType = stored_frame_type(
    "RawTransactionsFile",
    frame_check(RawTransactions),
    _dagster_pandera_type(RawTransactions).metadata,
)
QuarantinedTransactionsType = frame_type(QuarantinedTransactions)
TransactionAnomaliesType = frame_type(TransactionAnomalies)
# The validated and transformed weeks are written batch by batch: each batch is checked against its
# model as it is written (the checks below), and the stored transformed file's columns and types
# before the warehouse load.
check_validated_transactions = frame_check(ValidatedTransactions)
check_transformed_transactions = frame_check(TransformedTransactions)
_TRANSFORMED_METADATA = _dagster_pandera_type(TransformedTransactions).metadata
TransformedTransactionsBatchesType = frame_batches_type(
    "TransformedTransactionsBatches", _TRANSFORMED_METADATA
)
ValidatedTransactionsBatchesType = frame_batches_type(
    "ValidatedTransactionsBatches", _dagster_pandera_type(ValidatedTransactions).metadata
)
_check_history = frame_check(CustomerHistory)


def check_customer_history(rows: pd.DataFrame) -> None:
    """History rows as the carry wrote them (DuckDB: microsecond timestamps, Arrow text) checked
    against the CustomerHistory model in its types."""
    _check_history(
        typed_history(rows).assign(week_start=rows["week_start"].astype("datetime64[ns]"))
    )


# The file the carry wrote: its rows are checked by the step, a batch at a time (check_carried)
CustomerHistoryFileType = stored_frame_type(
    "CustomerHistoryFile", check_customer_history, _dagster_pandera_type(CustomerHistory).metadata
)
TransformedTransactionsFileType = stored_frame_type(
    "TransformedTransactionsFile", check_transformed_transactions, _TRANSFORMED_METADATA
)


def stored_check(model: type[pa.DataFrameModel]) -> Callable[[pd.DataFrame], None]:
    """``frame_check(model)`` for rows as a warehouse query wrote them (microsecond timestamps):
    their timestamps in the model's nanoseconds first, so the cheap check can pass."""
    check = frame_check(model)

    def check_stored(rows: pd.DataFrame) -> None:
        rows = rows.copy(deep=False)
        for column, dtype in rows.dtypes.items():
            if pd.api.types.is_datetime64_any_dtype(dtype):
                tz = getattr(dtype, "tz", None)
                rows[column] = rows[column].astype(
                    f"datetime64[ns, {tz}]" if tz is not None else "datetime64[ns]"
                )
        check(rows)

    return check_stored


# The week's facts and their quarantine, resolved in the warehouse (``sql/star.py``): files whose
# rows the step checks a batch at a time.
check_fact_transactions = stored_check(FactTransactions)
check_fact_transactions_quarantine = stored_check(FactTransactionsQuarantine)
FactTransactionsFileType = stored_frame_type(
    "FactTransactionsFile",
    check_fact_transactions,
    _dagster_pandera_type(FactTransactions).metadata,
)
FactTransactionsQuarantineFileType = stored_frame_type(
    "FactTransactionsQuarantineFile",
    check_fact_transactions_quarantine,
    _dagster_pandera_type(FactTransactionsQuarantine).metadata,
)
DataQualityMetricsType = frame_type(DataQualityMetrics)
CrmCustomersType = frame_type(CrmCustomers)
CustomerEventAggregatesType = frame_type(CustomerEventAggregates)
UnifiedCustomerProfilesType = frame_type(UnifiedCustomerProfiles)
ProductSnapshotsType = frame_type(ProductSnapshots)
DimDateType = frame_type(DimDate)
MartWeeklySalesType = frame_type(MartWeeklySales)
MartChurnRetentionType = frame_type(MartChurnRetention)
MartCohortRetentionType = frame_type(MartCohortRetention)
ErpCustomersType = frame_type(ErpCustomers)
CustomerIdentityMapType = frame_type(CustomerIdentityMap)
IdentityMergesType = frame_type(IdentityMerges)
PipelineErrorLogType = frame_type(PipelineErrorLog)
