"""Intermediate datasets, one per asset and week: Parquet for frames, JSON for reports; on the
local disk, or in a bucket when runs do not share a disk (``intermediate_root.py``: the same code
for both)."""

from __future__ import annotations

import errno
import json
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow as pa
from pydantic import Field

from customer_assets.cleanup.claims import claim_week
from customer_assets.frames import (
    FAST_PARQUET,
    FrameBatches,
    StoredFrame,
    duplicated_values,
    slices,
    write_parquet_batches,
)
from customer_assets.io_managers.intermediate_root import (
    IntermediateRoot,
    IntermediatesUnwritable,
    home_root,
)
from customer_assets.io_managers.memory import release_freed_memory
from customer_assets.io_managers.warehouse import input_columns
from customer_assets.partitions import latest_materialization
from customer_assets.settings import PipelineSettings

# Errors of the local disk that no retry fixes: permissions, a read-only file system, a full disk, a
# quota.
_UNWRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}


def _partition(context: dg.OutputContext | dg.InputContext) -> str:
    return context.asset_partition_key if context.has_asset_partitions else "all"


def staged_path(settings: PipelineSettings, key: dg.AssetKey, week: str) -> Path:
    """Where the week's intermediate of ``key`` is written before it is put in place whole (in the
    data dir, bucket or not: the cleanup finds it there by its week)."""
    return Path(settings.data_dir, *key.path, f"{week}.parquet.tmp")


def stage_intermediate(settings: PipelineSettings, context: dg.AssetExecutionContext) -> Path:
    """For a step that writes its week-sized output itself, a batch at a time as it reads it, and
    returns the file as a ``StoredFrame``: the week claimed (a run killed while writing is known by
    its claim), and the file to write, which the IO manager then puts in place."""
    claim_week(home_root(settings), context.partition_key, context.run_id)
    return staged_path(settings, context.asset_key, context.partition_key)


def _wants_stored_frame(context: dg.InputContext) -> bool:
    """True for an input annotated ``StoredFrame`` (contexts built by hand may carry no type at
    all)."""
    try:
        return context.dagster_type.typing_type is StoredFrame
    except dg.DagsterInvariantViolationError:
        return False


@dataclass(frozen=True)
class FinishedWeek:
    """Handed out instead of an intermediate that its week's successful run removed: the week is
    done and the warehouse holds it, so a step re-run alone has nothing to work on (and must not
    fail for it)."""

    asset: str
    week: str
    finished_by_run: str


def _finished_week(context: dg.InputContext, finished_by: dg.AssetKey) -> FinishedWeek | None:
    """A FinishedWeek when the week's finishing asset was materialized after this intermediate
    was."""
    if not context.has_asset_partitions:
        return None
    try:
        instance = context.instance
    except dg.DagsterInvariantViolationError:  # a context built by hand, without an instance
        return None
    week = context.asset_partition_key
    produced = latest_materialization(instance, context.asset_key, week)
    finished = latest_materialization(instance, finished_by, week)
    if produced is None or finished is None or finished.timestamp < produced.timestamp:
        return None
    return FinishedWeek(context.asset_key.to_user_string(), week, finished.run_id)


class ParquetIOManager(dg.ConfigurableIOManager):
    """Stores ``<DATA_DIR>/<asset key path>/<week>.parquet`` (or ``.json`` for dict outputs); with
    a bucket (``gs://bucket/prefix``) the same layout under the bucket's prefix instead.

    Writes go to a temporary file in DATA_DIR, renamed (or uploaded) into place whole, so a crash
    never leaves half a week behind. The files live for one run (the week's summary deletes them),
    so they are written for speed: plain encoding and no compression write about twice as fast as
    dictionary + snappy, at a few times the size.

    Week-sized data need not pass through memory whole: an input annotated ``StoredFrame`` is handed
    out unread (the step reads it in batches), and a ``FrameBatches`` output is written a row group
    per batch. A step may also write the file itself where ``stage_intermediate`` says and return it
    as a ``StoredFrame``: it is put in place as written. An intermediate removed because its week
    succeeded loads as ``FinishedWeek`` (see ``week_finished_by``).
    """

    settings: PipelineSettings = Field(
        description="The pipeline's settings, the one place the intermediates' home is configured: "
        "DATA_DIR (the writes in progress and the copies read in batches), and the bucket "
        "(CUSTOMER_ASSETS_INTERMEDIATES_URL, STORAGE_EMULATOR_HOST) when runs do not share a disk."
    )
    compression: str = Field(
        default=FAST_PARQUET["compression"],
        description="Parquet codec of the intermediates (none, snappy, zstd, ...). The extract "
        "writes its week as it streams, always as FAST_PARQUET says.",
    )
    use_dictionary: bool = Field(
        default=FAST_PARQUET["use_dictionary"],
        description="Dictionary-encode columns (smaller, slower to write).",
    )
    week_finished_by: str = Field(
        default="etl/pipeline_summary",
        description="The asset whose materialization finishes a week and removes its intermediates: a missing "
        "intermediate older than it loads as FinishedWeek instead of failing.",
    )

    @property
    def base_dir(self) -> str:
        return self.settings.data_dir

    def _root(self) -> IntermediateRoot:
        """Where intermediates are published: the bucket if set, else the data dir (as the cleanup
        sees it: ``home_root``)."""
        return home_root(self.settings)

    def _path(self, context: dg.OutputContext | dg.InputContext, suffix: str) -> Path:
        """The local file (with a bucket: where the write is staged)."""
        key = context.asset_key.path
        return Path(self.base_dir, *key, f"{_partition(context)}{suffix}")

    def _target(self, context: dg.OutputContext | dg.InputContext, suffix: str) -> str:
        """Where the intermediate lives: the local file, or the object in the bucket."""
        return self._root().path(*context.asset_key.path, f"{_partition(context)}{suffix}")

    def handle_output(self, context: dg.OutputContext, obj: object) -> None:
        if obj is None:
            return
        try:
            self._store(context, obj)
        except IntermediatesUnwritable as exc:
            raise dg.Failure(
                description=f"Cannot write {context.asset_key.to_user_string()} to "
                f"CUSTOMER_ASSETS_INTERMEDIATES_URL={self._root().shown()}: {exc.strerror}. Fix the "
                "bucket (or its permissions), or point the variable at one that takes writes; not "
                "retried.",
                allow_retries=False,
            ) from exc
        except OSError as exc:
            if exc.errno in _UNWRITABLE:
                raise dg.Failure(
                    description=f"Cannot write {context.asset_key.to_user_string()} under DATA_DIR={self.base_dir}: "
                    f"{exc.strerror} ({exc.filename}). Make the directory writable (or free space), or point "
                    "DATA_DIR at one that is; not retried.",
                    allow_retries=False,
                ) from exc
            raise

    def _store(self, context: dg.OutputContext, obj: object) -> None:
        # the step's computing is done: what it freed goes back before writing
        release_freed_memory(full=False)
        suffix = ".json" if isinstance(obj, dict) else ".parquet"
        path, root = self._path(context, suffix), self._root()
        # before the first byte: a run killed now is known by its claim
        if context.has_asset_partitions:
            claim_week(root, context.asset_partition_key, context.run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        if isinstance(obj, StoredFrame):  # written by the step, where stage_intermediate said
            if obj.path.resolve() != tmp.resolve():
                raise ValueError(
                    f"{context.asset_key.to_user_string()}: a StoredFrame output must be the file "
                    f"stage_intermediate gave ({tmp}), not {obj.path}"
                )
            obj.check_unchanged()
            context.add_output_metadata({"dagster/row_count": len(obj)})
        elif isinstance(obj, pd.DataFrame):
            # A row group per slice: the Arrow copy made for writing is one slice, not the whole
            # frame.
            self._write(
                context, slices(obj), tmp, schema=pa.Schema.from_pandas(obj, preserve_index=False)
            )
            context.add_output_metadata({"dagster/row_count": len(obj)})
        elif isinstance(obj, FrameBatches):
            rows, groups = self._write(context, obj, tmp, unique=obj.unique)
            context.add_output_metadata(
                {"dagster/row_count": rows, "row_groups": groups, **obj.summary()}
            )
        elif isinstance(obj, dict):
            tmp.write_text(json.dumps(obj, default=str))  # compact: the C encoder
        else:
            raise TypeError(
                f"{type(self).__name__} stores DataFrames, FrameBatches, StoredFrames and dicts, "
                f"not {type(obj).__name__}"
            )
        target = self._target(context, suffix)
        root.publish(tmp, target)
        where = root.shown(target) if root.in_bucket else path.resolve()
        # An intermediate lives for its run at most (cleanup/), and the metadata says so.
        context.add_output_metadata(
            {
                "intermediate": dg.MetadataValue.text(
                    f"{where} (removed once no step of the run can read it, at the latest when the run "
                    "ends)"
                )
            }
        )

    def _write(
        self,
        context: dg.OutputContext,
        batches,
        tmp: Path,
        schema: pa.Schema | None = None,
        unique: list[str] = (),
    ) -> tuple[int, int]:
        """The batches as row groups of ``tmp``, ``unique`` columns checked over the file; nothing
        left on error."""
        try:
            rows, groups = write_parquet_batches(
                batches,
                tmp,
                schema=schema,
                compression=self.compression,
                use_dictionary=self.use_dictionary,
            )
            repeated = (
                {c: n for c, n in duplicated_values(tmp, unique).items() if n} if unique else {}
            )
            if repeated:
                raise ValueError(
                    f"{context.asset_key.to_user_string()}: values repeat across batches in "
                    f"columns that must be unique: {repeated}"
                )
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return rows, groups

    def load_input(self, context: dg.InputContext) -> object:
        # a new step starts: what the previous ones freed goes back to the OS first
        release_freed_memory()
        root = self._root()
        for suffix in (".parquet", ".json"):
            target = self._target(context, suffix)
            if root.exists(target):
                if suffix == ".json":
                    return json.loads(root.read_text(target))
                if _wants_stored_frame(context):  # read by DuckDB and in batches: a local file
                    return StoredFrame(
                        self._local_copy(context, target) if root.in_bucket else target
                    )
                # An input may ask for some columns only (AssetIn metadata "columns"): less to read
                # and hold.
                return root.read_parquet(target, columns=input_columns(context))
        finished = _finished_week(context, dg.AssetKey.from_user_string(self.week_finished_by))
        if finished is not None:
            return finished
        raise FileNotFoundError(
            f"No stored value for {context.asset_key.to_user_string()} at "
            f"{root.shown(self._target(context, '.*'))}: "
            "an intermediate lives no longer than the run that wrote it; materialize the upstream assets again "
            "(in the same run as this one)."
        )

    def _local_copy(self, context: dg.InputContext, target: str) -> Path:
        """The object as a local file in base_dir, named after the week (its cleanup removes it)."""
        folder = self._path(context, ".parquet").parent
        return self._root().local_copy(target, folder, _partition(context))
