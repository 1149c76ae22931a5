"""Behavioural events of a week, read from the landing zone, and their per-customer aggregates.

``landing_zone.py`` owns the ``dt=`` layout and opens the files; ``event_parse.py`` parses their
lines in parallel chunks; this module reads the week: redeliveries dropped, malformed lines logged
and capped.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from customer_assets.sources.event_parse import EventScan, parse_file
from customer_assets.sources.event_week import (
    DEFAULT_ALIASES,
    EVENTS_SCHEMA,
    EVENTS_WITH_IDS,
    WeekWindow,
)
from customer_assets.sources.landing_zone import SkippedFile, load_event_file, week_files

log = logging.getLogger(__name__)

# malformed lines (and skipped files) logged one by one per read; the rest are counted
MAX_WARNINGS = 10


class MalformedEventsError(Exception):
    """Too large a share of the week's lines is malformed: the week's aggregates would be wrong, not
    just thin."""

    def __init__(self, message: str, scan: EventScan | None = None):
        super().__init__(message)
        self.scan = scan


_REPEATS_SQL = """
SELECT * EXCLUDE (file, i) FROM (
    SELECT *, min(file) OVER (PARTITION BY event_id, customer_id, event_type, "timestamp", feature, amount_usd)
              AS first_file
    FROM events)
WHERE event_id IS NULL OR file = first_file ORDER BY i
"""


def _any_id_twice(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether an event id of the registered ``ids`` occurs twice, judged on the ids' 64-bit hashes
    sorted in place: 8 bytes an id, where a distinct count over the text held a hash table of every
    id (4.3M ids of a 1M-row week: 91 MB at the peak instead of 389 MB, in the same 0.4 s; pyarrow's
    distinct count took 2.3 s). Equal ids have equal hashes, so no repeat is missed; two ids that
    only share a hash send the week to the exact comparison, which costs time, never an event."""
    hashes = con.execute(
        "SELECT hash(event_id) AS h FROM ids WHERE event_id IS NOT NULL"
    ).fetchnumpy()["h"]
    hashes = np.asarray(hashes)
    hashes.sort()
    return bool((hashes[1:] == hashes[:-1]).any())


def _drop_repeated(events: pa.Table, files: pa.ChunkedArray) -> tuple[pa.Table, int]:
    """The events without redeliveries, as ``EVENTS_SCHEMA``, and how many were dropped.

    A redelivery is an event whose ``event_id`` and content an earlier file of the week already held
    (a sink connector's retried flush, a Kafka landing redone over other offsets): only the first
    file's copy counts. Events without an id are all kept, and so are events that share an id but
    differ (which one is genuine cannot be told) and repeats within one file (a file is one writer's
    sequence of records).
    """
    ids = events["event_id"]
    if ids.null_count == len(ids):  # no ids: nothing to compare
        return events.drop_columns(["event_id"]), 0
    with duckdb.connect() as con:
        con.register("ids", events.select(["event_id"]))
        if not _any_id_twice(con):  # the usual week
            return events.drop_columns(["event_id"]), 0
        numbered = events.append_column("file", files).append_column(
            "i", pa.array(range(len(events)), pa.int64())
        )
        con.register("events", numbered)
        kept = con.sql(_REPEATS_SQL).to_arrow_table()
    kept = kept.drop_columns(["first_file", "event_id"]).cast(EVENTS_SCHEMA)
    return kept, len(events) - kept.num_rows


def _described(example: dict) -> str:
    return f"{example['field']}: {example['error']}" if example.get("field") else example["error"]


def _warn_malformed(scan: EventScan, shown: int, log: logging.Logger) -> int:
    """Log the malformed lines found since the last call, up to ``MAX_WARNINGS`` in all; return how
    many are."""
    for example in scan.malformed[shown:MAX_WARNINGS]:
        log.warning(
            f"skipping malformed event {example['file']}:{example['line']} ({_described(example)})"
        )
    return max(shown, min(len(scan.malformed), MAX_WARNINGS))


def _warn_rest(scan: EventScan, shown: int, log: logging.Logger) -> None:
    """One line for the malformed lines, and one for the skipped files, beyond those logged one by
    one."""
    if scan.malformed_lines > shown:
        log.warning(
            f"{scan.malformed_lines - shown:,} more malformed lines not shown "
            f"({scan.malformed_lines:,} in total); see the asset's metadata `malformed_examples`"
        )
    if len(scan.skipped_files) > MAX_WARNINGS:
        log.warning(
            f"{len(scan.skipped_files) - MAX_WARNINGS:,} more skipped files not shown "
            f"({len(scan.skipped_files):,} in total); see the asset's metadata `skipped_files`"
        )


def _check_share(scan: EventScan, max_malformed_share: float) -> None:
    """Stop a week whose lines are mostly broken (a binary file, a wrong format): its aggregates
    would be wrong rather than incomplete. Lines of skipped files are not lines."""
    if not scan.lines or scan.malformed_lines / scan.lines <= max_malformed_share:
        return
    examples = "; ".join(f"{m['file']}:{m['line']}: {_described(m)}" for m in scan.malformed[:3])
    raise MalformedEventsError(
        f"{scan.malformed_lines / scan.lines:.1%} of the week's event lines are malformed "
        f"({scan.malformed_lines:,} of {scan.lines:,}), above the limit of "
        f"{max_malformed_share:.1%}. "
        f"First: {examples}. Fix or move the files, or raise EVENTS_MAX_MALFORMED_SHARE.",
        scan,
    )


def read_week(
    root: Path,
    start: datetime,
    end: datetime,
    aliases: dict[str, str] | None = None,
    *,
    log: logging.Logger = log,
    max_malformed_share: float = 0.05,
) -> tuple[pa.Table, EventScan]:
    """The week's well-formed events of known types (Arrow, ``EVENTS_SCHEMA``); malformed lines
    counted, logged (the first ``MAX_WARNINGS``, then one line with the rest's count) and skipped.

    ``log`` is where warnings go (an asset passes ``context.log``, so they reach the run's event
    log). Files that are not events (another suffix, a compression other than gzip) are listed in
    ``skipped_files``. More than ``max_malformed_share`` of the lines malformed raises
    ``MalformedEventsError``.

    Files are parsed by pyarrow in ~2 MiB chunks on a thread pool, each chunk reduced to the week's
    events in its worker; a chunk with bad lines is halved until they stand in small parts, and only
    those take the line-level path, so a few broken lines do not cost a Python loop over the landing
    zone.
    """
    week = WeekWindow.of(start, end, {**DEFAULT_ALIASES, **(aliases or {})})
    paths = week_files(root, start, end)
    scan, tables, shown, files, paths_read = EventScan(), [], 0, [], []
    with ThreadPoolExecutor(max_workers=len(os.sched_getaffinity(0)) or 2) as pool:
        for path in paths:  # one file in memory at a time: a connector's file can be hundreds of MB
            try:
                read = parse_file(path, load_event_file(path), scan, pool, week)
                tables += read
                # which file: repeats across files are redeliveries
                number = pa.scalar(len(paths_read), pa.int32())
                files += [pa.chunked_array([pa.repeat(number, t.num_rows)]) for t in read]
                paths_read.append(path)
            except SkippedFile as skipped:
                scan.skipped_files.append({"file": str(path), "reason": str(skipped)})
                if len(scan.skipped_files) <= MAX_WARNINGS:
                    log.warning(f"skipping file {path}: {skipped}")
                continue
            scan.files += 1
            shown = _warn_malformed(scan, shown, log)
    _warn_rest(scan, shown, log)
    _check_share(scan, max_malformed_share)
    events, scan.repeated_events = _drop_repeated(
        pa.concat_tables(tables) if tables else EVENTS_WITH_IDS.empty_table(),
        pa.chunked_array([c for f in files for c in f.chunks], pa.int32()),
    )
    if scan.repeated_events:
        log.info(
            f"{scan.repeated_events:,} events repeated an event (event_id and content) of an "
            "earlier file (a redelivery) and were dropped"
        )
    return events, scan


AGGREGATE_SQL = """
SELECT customer_id,
       count(*) FILTER (WHERE event_type = 'page_view') AS page_views,
       count(DISTINCT feature) FILTER (WHERE event_type = 'feature_used') AS unique_features_used,
       count(*) FILTER (WHERE event_type = 'purchase_completed') AS purchase_count,
       -- to the cent: a parallel sum adds in no fixed order, and a rerun must give the same value
       round(coalesce(sum(amount_usd) FILTER (WHERE event_type = 'purchase_completed'), 0), 2)::DOUBLE
           AS purchase_amount,
       count(*) FILTER (WHERE event_type = 'support_chat_started') AS support_interactions,
       max("timestamp") AS last_event_at
FROM events GROUP BY customer_id ORDER BY customer_id
"""


def aggregate(events: pa.Table) -> pd.DataFrame:
    """Per customer: page views, distinct features used, purchases and their amount, support chats.

    Grouped by DuckDB over the Arrow data (parallel, and faster than pandas on Arrow text): a week
    holds millions of events.
    """
    with duckdb.connect() as con:  # an empty week gives the same typed columns, no rows
        con.register("events", events)
        out = con.sql(AGGREGATE_SQL).to_arrow_table()
    last = out.schema.get_field_index("last_event_at")
    return out.set_column(
        last, "last_event_at", out["last_event_at"].cast(pa.timestamp("ns", tz="UTC"))
    ).to_pandas()
