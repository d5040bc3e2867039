"""Typed events on the log, with their JSON wire form.

Dataset topics carry :class:`RecordPut` events keyed by record key; the control topic
carries the frame of each snapshot: :class:`SnapshotStarted`, then :class:`SnapshotCommitted`
(or :class:`SnapshotAborted`). A snapshot is applied to the read model only after its
commit event and every record it counts have arrived.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson

CONTROL_TOPIC = "stldata.control"


@dataclass(frozen=True)
class Event:
    name: ClassVar[str] = ""

    def to_bytes(self) -> bytes:
        # A shallow dict: dataclasses.asdict deep-copies every value and costs 10x more.
        return orjson.dumps({"event": self.name, **self.__dict__})


@dataclass(frozen=True)
class SnapshotStarted(Event):
    name: ClassVar[str] = "snapshot-started"
    snapshot_id: int
    dataset_id: str
    mode: str
    #: Source files in this snapshot; an increment replaces only these partitions.
    partitions: list[str]
    source: str
    fetched_at: str


@dataclass(frozen=True)
class SnapshotCommitted(Event):
    name: ClassVar[str] = "snapshot-committed"
    snapshot_id: int
    dataset_id: str
    record_count: int
    #: Messages on the dataset topic for this snapshot: records plus rejected rows.
    message_count: int
    rows_read: int
    quarantined: int
    source: str
    fetched_at: str
    sha256: str
    files: list[dict[str, Any]] = field(default_factory=list)
    #: Per column, how many cells each normalization changed (value_mapped, trimmed,
    #: null_spelling, spaces_collapsed), for the quality report.
    coercions: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class SnapshotAborted(Event):
    name: ClassVar[str] = "snapshot-aborted"
    snapshot_id: int
    dataset_id: str
    reason: str


#: The entry of a record's ``issues`` that is not an issue but the row's place in words
#: (``{"row_position": "sheet Jan row 7"}``, no reason), sent under the 'last' policy when
#: the line alone does not give it: a row that a later row of its key supersedes is listed
#: in the quarantine at its own position, and the projection finds that text here.
ROW_POSITION = "row_position"


@dataclass(frozen=True)
class RecordPut(Event):
    name: ClassVar[str] = "record-put"
    snapshot_id: int
    dataset_id: str
    key: str
    partition: str
    line: int
    hash: str
    values: dict[str, Any]
    source: dict[str, str]
    issues: list[dict[str, Any]]


@dataclass(frozen=True)
class RowRejected(Event):
    """A source row that could not become a record (too few fields, broken quoting)."""

    name: ClassVar[str] = "row-rejected"
    snapshot_id: int
    dataset_id: str
    partition: str
    line: int
    text: str
    reason: str
    #: The row's place in words: ``line 12``, ``sheet Jan row 7``, ``page 9 row 3``.
    position: str = ""


_EVENTS: dict[str, type[Event]] = {
    cls.name: cls
    for cls in (SnapshotStarted, SnapshotCommitted, SnapshotAborted, RecordPut, RowRejected)
}


class MalformedEvent(ValueError):
    """A message on the log is not an event this version understands."""


def decode_event(value: bytes) -> Event:
    try:
        body = orjson.loads(value)
        cls = _EVENTS[body.pop("event")]
        return cls(**body)
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise MalformedEvent(f"not a known event: {exc!r}") from exc
