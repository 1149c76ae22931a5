"""The week's events as the reader returns them, and a parsed chunk of lines reduced to them.

A chunk parsed into ``event_parse.RAW_SCHEMA`` becomes a ``Piece``: rows missing a required field
set aside with their line, rows outside the week counted, known aliases of the event types applied
and unknown types counted, the rest in ``EVENTS_WITH_IDS`` (event types as 1-byte codes). Kept apart
from the parsing (``event_parse.py``, how lines become rows) because this is what the rows mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc

EVENT_TYPES = ("page_view", "feature_used", "purchase_completed", "support_chat_started")
DEFAULT_ALIASES = {
    "pageview": "page_view",
    "page_viewed": "page_view",
    "feature_use": "feature_used",
    "order_completed": "purchase_completed",
    "purchase": "purchase_completed",
    "chat_started": "support_chat_started",
    "support_chat": "support_chat_started",
}

# event_type as codes into EVENT_TYPES: 1 byte an event instead of ~15 (14M events in a 3M-row week)
EVENT_TYPE = pa.dictionary(pa.int8(), pa.string())
EVENTS_SCHEMA = pa.schema(
    [
        ("customer_id", pa.string()),
        ("event_type", EVENT_TYPE),
        ("timestamp", pa.timestamp("ns", tz="UTC")),
        ("feature", pa.string()),
        ("amount_usd", pa.float64()),
    ]
)
_KNOWN = pa.array(EVENT_TYPES)
# What a worker's events carry until repeated ids are dropped (``events.read_week``).
EVENTS_WITH_IDS = EVENTS_SCHEMA.append(pa.field("event_id", pa.string()))


@dataclass(frozen=True)
class WeekWindow:
    """What a worker thread needs to reduce a chunk to the week's events."""

    start: pa.Scalar
    end: pa.Scalar
    alias_from: pa.Array
    alias_to: pa.Array

    @classmethod
    def of(cls, start: datetime, end: datetime, aliases: dict[str, str]) -> WeekWindow:
        utc = pa.timestamp("us", tz="UTC")
        return cls(
            pa.scalar(start, utc),
            pa.scalar(end, utc),
            pa.array(list(aliases), pa.string()),
            pa.array(list(aliases.values()), pa.string()),
        )


@dataclass
class Piece:
    """A chunk's events of the week and what was set aside on the way."""

    lines: int
    events: pa.Table
    incomplete_lines: list[tuple[int, str]]  # line, the first required field missing
    outside_week: int
    aliased: int
    unknown_types: dict[str, int]


def tidy(table: pa.Table, numbers: Sequence[int], week: WeekWindow) -> Piece:
    """Incomplete rows set aside (with their lines), the week kept, aliases applied, unknown types
    counted."""
    lines = table.num_rows
    incomplete = _incomplete(table)
    bad = []
    if pc.any(incomplete).as_py():
        missing = {name: mask.to_pylist() for name, mask in _missing(table).items()}
        bad = [
            (numbers[i], next(name for name, mask in missing.items() if mask[i]))
            for i in pc.indices_nonzero(incomplete).to_pylist()
        ]
    table = table.filter(pc.invert(incomplete))
    inside = pc.and_(
        pc.greater_equal(table["timestamp"], week.start), pc.less(table["timestamp"], week.end)
    )
    outside = table.num_rows - (pc.sum(inside).as_py() or 0)
    table = table.filter(inside)
    kinds = table["event_type"]
    alias_index = pc.index_in(kinds, value_set=week.alias_from)
    aliased = pc.and_(pc.invert(pc.is_in(kinds, value_set=_KNOWN)), pc.is_valid(alias_index))
    n_aliased = pc.sum(aliased).as_py() or 0
    if n_aliased:
        kinds = pc.if_else(aliased, pc.take(week.alias_to, alias_index), kinds)
    codes = pc.index_in(kinds, value_set=_KNOWN)
    keep = pc.is_valid(codes)
    unknown = {
        str(v["values"]): int(v["counts"])
        for v in pc.value_counts(pc.filter(kinds, pc.invert(keep))).to_pylist()
    }
    kind_codes = pa.chunked_array(
        [pa.DictionaryArray.from_arrays(chunk.cast(pa.int8()), _KNOWN) for chunk in codes.chunks],
        type=EVENT_TYPE,
    )
    events = pa.table(
        [
            pc.utf8_upper(pc.utf8_trim_whitespace(table["customer_id"])),
            kind_codes,
            table["timestamp"].cast(pa.timestamp("ns", tz="UTC")),
            pc.struct_field(table["properties"], "feature"),
            pc.struct_field(table["properties"], "amount_usd"),
            table["event_id"],
        ],
        schema=EVENTS_WITH_IDS,
    )
    return Piece(lines, events.filter(keep), bad, outside, int(n_aliased), unknown)


def _missing(table: pa.Table) -> dict[str, pa.ChunkedArray]:
    """Per required field, where it is missing (or a blank id)."""
    blank_id = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(table["customer_id"]), ""), True)
    return {
        "event_type": pc.is_null(table["event_type"]),
        "customer_id": blank_id,
        "timestamp": pc.is_null(table["timestamp"]),
    }


def _incomplete(table: pa.Table) -> pa.ChunkedArray:
    missing = list(_missing(table).values())
    return pc.or_(pc.or_(missing[0], missing[1]), missing[2])
