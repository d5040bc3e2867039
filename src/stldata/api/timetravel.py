"""Time travel: a dataset's records as they were at one committed snapshot.

``record_versions`` keeps every version of every record with the snapshots it was valid
for (``valid_from`` <= sid < ``valid_to``) and deletion markers. :func:`table_as_of` turns
that history into a subquery shaped exactly like the dataset's current table
(:func:`stldata.api.query.dataset_table`), typed from the JSON values, so filters, ordering,
cursors and aggregations written against the current table work on the past unchanged.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from stldata.api.problems import BadParameter
from stldata.api.query import dataset_table
from stldata.catalog import Dataset

PARAM = "as_of"

_SNAPSHOT_ID = re.compile(r"^[0-9]{1,18}$")  # not \d, which matches "１"

#: The history table as SQLAlchemy sees it (not reflected: its shape is fixed by 0001).
_versions_metadata = sa.MetaData()
record_versions = sa.Table(
    "record_versions", _versions_metadata,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("dataset_id", sa.Text),
    sa.Column("key", sa.Text),
    sa.Column("hash", sa.Text),
    sa.Column("deleted", sa.Boolean),
    sa.Column("values", JSONB),
    sa.Column("source", sa.JSON),
    sa.Column("partition", sa.Text),
    sa.Column("line", sa.Integer),
    sa.Column("valid_from", sa.BigInteger),
    sa.Column("valid_to", sa.BigInteger),
)

#: System columns of the dataset table and the history column each one comes from.
_SYSTEM = {"_key": "key", "_snapshot_id": "valid_from", "_partition": "partition",
           "_line": "line", "_hash": "hash", "_source": "source"}


def parse_moment(value: str, timezone: str) -> datetime | None:
    """An ISO-8601 date or date-time (local to the dataset without an offset), or None."""
    text = value.strip()
    try:
        if "T" in text or " " in text:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        else:
            moment = datetime.combine(date.fromisoformat(text), time.min)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(timezone))
    return moment


def resolve_as_of(conn: sa.Connection, dataset: Dataset, value: str,
                  param: str = PARAM) -> int:
    """The committed snapshot of ``dataset`` that ``value`` names.

    ``value`` is a snapshot id of this dataset, or an ISO-8601 time: the last snapshot
    committed at or before it. Anything else is a 400 problem naming the parameter.
    """
    text = value.strip()
    if not text or "\x00" in text:
        raise BadParameter(param, "expected a snapshot id or an ISO-8601 date or time")
    if _SNAPSHOT_ID.match(text):
        row = conn.execute(sa.text(
            "SELECT dataset_id, status FROM snapshots WHERE id = :sid"),
            {"sid": int(text)}).first()
        if row is None or row.dataset_id != dataset.id:
            raise BadParameter(param, f"{text} is not a snapshot of dataset {dataset.id!r}; "
                                      f"see /api/v1/datasets/{dataset.id}/snapshots")
        if row.status != "committed":
            raise BadParameter(param, f"snapshot {text} of dataset {dataset.id!r} is "
                                      f"{row.status}, not committed")
        return int(text)

    moment = parse_moment(text, dataset.timezone)
    if moment is None:
        raise BadParameter(param, f"{value!r} is neither a snapshot id nor an ISO-8601 "
                                  "date or time")
    sid = conn.execute(sa.text(
        "SELECT max(id) FROM snapshots WHERE dataset_id = :d AND status = 'committed' "
        "AND committed_at <= :t"), {"d": dataset.id, "t": moment}).scalar()
    if sid is None:
        # The value is echoed as written: the moment made of it can carry an offset the
        # client never wrote, such as Chicago's local mean time -05:50:36 before 1883.
        first = conn.execute(sa.text(
            "SELECT min(committed_at) FROM snapshots WHERE dataset_id = :d "
            "AND status = 'committed'"), {"d": dataset.id}).scalar()
        when = ("it has no committed snapshot yet" if first is None else
                "that is before its first snapshot (committed "
                f"{first.astimezone(UTC).isoformat(timespec='seconds')})")
        raise BadParameter(param, f"dataset {dataset.id!r} had no committed snapshot at or "
                                  f"before {text}; {when}")
    return int(sid)


def _typed(name: str, type_: sa.types.TypeEngine[object]) -> sa.ColumnElement[object]:
    values = record_versions.c["values"]
    if isinstance(type_, (sa.JSON, JSONB)) or type_.__class__.__name__.lower().startswith(
            ("json", "geometry")):
        # JSON-valued columns (geometry) keep their structure.
        return sa.cast(values[name], type_)
    # ->> gives the ISO text the ingester wrote; PostgreSQL parses it by the column's type.
    return sa.cast(values[name].astext, type_)


def table_as_of(dataset: Dataset, snapshot_id: int, metadata: sa.MetaData) -> sa.FromClause:
    """The records of ``dataset`` valid at ``snapshot_id``, with the current table's columns.

    ``_snapshot_id`` is the snapshot that wrote the version, as in the current table.
    """
    current = dataset_table(dataset, metadata)
    v = record_versions.c
    columns: list[sa.ColumnElement[object]] = []
    for column in current.columns:
        if column.name in _SYSTEM:
            columns.append(sa.cast(v[_SYSTEM[column.name]], column.type).label(column.name)
                           if column.name != "_source" else v.source.label("_source"))
        else:
            columns.append(_typed(column.name, column.type).label(column.name))
    return (sa.select(*columns)
            .where(v.dataset_id == dataset.id, v.valid_from <= snapshot_id,
                   sa.or_(v.valid_to.is_(None), v.valid_to > snapshot_id),
                   v.deleted.is_(False))
            .subquery(f"{dataset.table_name}_as_of"))
