"""Typed events on the log, with their JSON wire form.

Dataset topics carry :class:`RecordPut` events keyed by record key; the control topic
carries the frame of each snapshot: :class:`SnapshotStarted`, then :class:`SnapshotCommitted`
(or :class:`SnapshotAborted`). A snapshot is applied to the read model only after its
commit event and every record it counts have arrived.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
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


#: JSON types of the fields, by annotation: checked on decoding, so that a message with
#: a field of the wrong type is a malformed event (a dead letter), not an error deep in
#: the projection that would stop it at the same message on every restart.
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,), "str": (str,), "list[str]": (list,), "dict[str, Any]": (dict,),
    "dict[str, str]": (dict,), "list[dict[str, Any]]": (list,),
    "dict[str, dict[str, int]]": (dict,),
}


#: Snapshot ids and line numbers are PostgreSQL bigints and integers: an event with one
#: out of range would fail in the database at the same message on every restart.
_INT_RANGES = {"snapshot_id": (1, 2**62), "line": (0, 2**31 - 1)}


def _check_fields(cls: type[Event], body: dict[str, Any]) -> None:
    for spec in fields(cls):
        name = spec.name
        if name not in body:
            continue  # a missing field without a default fails in the constructor
        value = body[name]
        wanted = _JSON_TYPES[str(spec.type)]
        # bool is an int in Python, not in the events.
        if not isinstance(value, wanted) or isinstance(value, bool):
            raise MalformedEvent(f"{cls.name} event: field {name!r} is "
                                 f"{_json_name(value)}, not {wanted[0].__name__}")
        low, high = _INT_RANGES.get(name, (None, None))
        if isinstance(value, int) and low is not None and high is not None \
                and not low <= value <= high:
            raise MalformedEvent(f"{cls.name} event: field {name!r} is {value}, outside "
                                 f"{low} to {high}")
    fetched_at = body.get("fetched_at")
    if isinstance(fetched_at, str):
        try:
            datetime.fromisoformat(fetched_at)
        except ValueError:
            raise MalformedEvent(f"{cls.name} event: fetched_at {fetched_at[:40]!r} is not "
                                 "an ISO 8601 time") from None


def _json_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def decode_event(value: bytes | None) -> Event:
    if not value:
        raise MalformedEvent("an empty message (a tombstone), not an event")
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise MalformedEvent(f"not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise MalformedEvent(f"a JSON {_json_name(body)}, not an event object")
    name = body.pop("event", None)
    cls = _EVENTS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise MalformedEvent(f"not a known event: 'event' is {name!r}")
    _check_fields(cls, body)
    try:
        return cls(**body)
    except TypeError as exc:  # a field missing, or one this version does not know
        raise MalformedEvent(f"{cls.name} event: {exc}") from exc
