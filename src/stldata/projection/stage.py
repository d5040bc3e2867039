"""Stage the records of a batch of log messages into the datasets' staging tables.

Values arrive already coerced by the ingester, so they are copied straight into typed
columns with one COPY per batch; PostgreSQL parses each text field by its column's type.
Every message is staged as it came, with its place in the log: choosing the newest row
of a key and numbering a key's repeats happen once, set-based, when the snapshot is
applied (:mod:`stldata.projection.apply`), so neither the ingester nor this step has to
remember the keys already seen.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import orjson
from psycopg import sql

from stldata.catalog import Dataset
from stldata.log.events import RecordPut
from stldata.projection.tables import stage_table_name
from stldata.store.database import Conn

SYSTEM = ("_snapshot_id", "_key", "_position", "_partition", "_line", "_hash", "_source",
          "_values", "_issues")

#: Offsets of one log partition stay below this; see :func:`log_position`.
_OFFSETS_PER_PARTITION = 1 << 40


def log_position(partition: int, offset: int) -> int:
    """A message's place in the log as one number: its partition and its offset.

    Unique per message of a topic, and ordered like the offsets within a partition. All
    messages of one record key are on one partition, so comparing the positions of a
    key's messages compares the order in which they were published.
    """
    return partition * _OFFSETS_PER_PARTITION + offset


def stage_records(conn: Conn, dataset: Dataset,
                  records: Iterable[tuple[int, RecordPut]]) -> int:
    """Copy (log position, record) pairs into the dataset's staging table; returns how
    many were staged. Records of a snapshot already committed or aborted (read again
    after a takeover) are left out."""
    batch = list(records)
    settled = _settled(conn, {r.snapshot_id for _, r in batch})
    names = list(dataset.column_types())
    columns = sql.SQL(", ").join(sql.Identifier(n) for n in (*SYSTEM, *names))
    stage = sql.Identifier(stage_table_name(dataset))
    dumps = orjson.dumps
    staged = 0
    with conn.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN").format(stage, columns)
                            ) as copy:
        for position, r in batch:
            if r.snapshot_id in settled:
                continue
            values = r.values
            copy.write_row((
                r.snapshot_id, r.key, position, r.partition, r.line, r.hash,
                dumps(r.source).decode(), dumps(values).decode(),
                dumps(r.issues).decode() if r.issues else None,
                *[values.get(n) for n in names],
            ))
            staged += 1
    return staged


def _settled(conn: Conn, snapshot_ids: set[int]) -> set[int]:
    if not snapshot_ids:
        return set()
    rows = conn.execute("SELECT id FROM snapshots WHERE id = ANY(%s) AND status <> 'pending'",
                        (list(snapshot_ids),)).fetchall()
    return {int(r[0]) for r in rows}


def group_by_dataset(records: Iterable[tuple[int, RecordPut]]
                     ) -> dict[str, list[tuple[int, RecordPut]]]:
    grouped: dict[str, list[tuple[int, RecordPut]]] = defaultdict(list)
    for position, record in records:
        grouped[record.dataset_id].append((position, record))
    return grouped
