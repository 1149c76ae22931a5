"""What one landing of the Kafka topic did: per partition, where the group's offset was, the offsets
read and whether its end was reached; in all, the messages read, written and undecodable, the day
files written and replaced, and whether the offsets were committed.

Kept apart from the consumer (``kafka.py``) because the asset reads it too: its summary is the
step's metadata, and its lag at the week's end decides whether the week is complete.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime


@dataclass
class PartitionProgress:
    # the group's offset when the run started (None: none committed)
    committed_before: int | None = None
    first: int | None = None
    last: int | None = None
    last_timestamp_ms: int | None = None
    reached_end: bool = False
    lost_to_retention: int = 0  # offsets between the committed one and the first still in the log

    def as_dict(self) -> dict:
        return {
            "committed_before": self.committed_before,
            "first": self.first,
            "last": self.last,
            "reached_end": self.reached_end,
            "lost_to_retention": self.lost_to_retention,
        }


@dataclass
class Landing:
    """What one run of the consumer read, wrote and committed."""

    topic: str
    topic_exists: bool = True
    messages: int = 0
    written: int = 0
    undecodable: int = 0
    examples: list[dict] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    days: dict[str, int] = field(default_factory=dict)
    partitions: dict[int, PartitionProgress] = field(default_factory=dict)
    committed: bool = False
    seconds: float = 0.0

    @property
    def lost_to_retention(self) -> int:
        return sum(p.lost_to_retention for p in self.partitions.values())

    def lag_days(self, week_end: datetime) -> float:
        """How far behind the week's end the consumer still is, in days: 0 when every partition was
        read to its end (or past the week's end); from the last record read in a partition that was
        not; infinite for a partition of which nothing could be read in time."""
        end_ms = week_end.timestamp() * 1000
        lag = 0.0
        for progress in self.partitions.values():
            if progress.reached_end:
                continue
            if progress.last_timestamp_ms is None:
                return math.inf
            lag = max(lag, (end_ms - progress.last_timestamp_ms) / 86_400_000)
        return max(lag, 0.0)

    def summary(self) -> dict:
        return {
            "topic": self.topic,
            "topic_exists": self.topic_exists,
            "messages": self.messages,
            "written": self.written,
            "undecodable": self.undecodable,
            "undecodable_examples": self.examples,
            "files": len(self.files),
            "replaced_files": len(self.replaced),
            "days": self.days,
            "partitions": {str(p): v.as_dict() for p, v in sorted(self.partitions.items())},
            "lost_to_retention": self.lost_to_retention,
            "committed": self.committed,
            "seconds": round(self.seconds, 2),
        }
