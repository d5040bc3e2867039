"""Stage the records of a batch of log messages into the datasets' staging tables.

Values arrive already coerced by the ingester, so they are copied straight into typed
columns with COPY; PostgreSQL parses each text field by its column's type.
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


def stage_records(conn: Conn, dataset: Dataset,
                  records: Iterable[tuple[int, RecordPut]]) -> None:
    """Upsert (offset, record) pairs into the dataset's staging table."""
    names = list(dataset.column_types())
    columns = sql.SQL(", ").join(sql.Identifier(n) for n in (*SYSTEM, *names))
    stage = sql.Identifier(stage_table_name(dataset))
    incoming = sql.Identifier("incoming_" + dataset.table_name)

    conn.execute(sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {}) "
                         "ON COMMIT DELETE ROWS").format(incoming, stage))
    with conn.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN").format(incoming, columns)
                            ) as copy:
        for offset, r in records:
            copy.write_row((
                r.snapshot_id, r.key, offset, r.partition, r.line, r.hash,
                orjson.dumps(r.source).decode(), orjson.dumps(r.values).decode(),
                orjson.dumps(r.issues).decode() if r.issues else None,
                *(r.values.get(n) for n in names),
            ))

    updates = sql.SQL(", ").join(
        sql.SQL("{} = excluded.{}").format(sql.Identifier(n), sql.Identifier(n))
        for n in (*SYSTEM[2:], *names) if n != "_partition")
    conn.execute(sql.SQL("""
        INSERT INTO {stage} ({columns})
        SELECT DISTINCT ON (_snapshot_id, _key, _partition) {columns} FROM {incoming} i
        WHERE NOT EXISTS (SELECT 1 FROM snapshots s
                          WHERE s.id = i._snapshot_id AND s.status <> 'pending')
        ORDER BY _snapshot_id, _key, _partition, _position DESC
        ON CONFLICT (_snapshot_id, _key, _partition) DO UPDATE SET {updates}
        WHERE excluded._position > {stage}._position""").format(
        stage=stage, columns=columns, incoming=incoming, updates=updates))


def group_by_dataset(records: Iterable[tuple[int, RecordPut]]
                     ) -> dict[str, list[tuple[int, RecordPut]]]:
    grouped: dict[str, list[tuple[int, RecordPut]]] = defaultdict(list)
    for offset, record in records:
        grouped[record.dataset_id].append((offset, record))
    return grouped
