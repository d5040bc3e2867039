"""Apply one committed snapshot from the staging table to the read model.

Everything here runs in the caller's transaction, together with the consumer offset of
the commit event: readers see the whole snapshot or none of it, and a replay after a
crash finds the work either fully done or not done at all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import orjson
from psycopg import sql

from stldata.catalog import Dataset
from stldata.log.events import SnapshotCommitted
from stldata.projection.tables import typed_select
from stldata.store.database import Conn

log = logging.getLogger(__name__)



@dataclass
class ApplyCounts:
    added: int = 0
    changed: int = 0
    unchanged: int = 0
    deleted: int = 0


def _count(conn: Conn, query: sql.SQL | sql.Composed, params: dict[str, object]) -> int:
    row = conn.execute(query, params).fetchone()
    return int(row[0]) if row else 0


def apply_snapshot(conn: Conn, dataset: Dataset, event: SnapshotCommitted) -> ApplyCounts:
    table = sql.Identifier(dataset.table_name)
    params: dict[str, object] = {"sid": event.snapshot_id, "ds": dataset.id}
    counts = ApplyCounts()

    # Compare each staged record with the current version of its key.
    # Parse each staged payload once: as jsonb for values, as json for the source row
    # (json keeps the file's column order; every -> on json text re-parses it).
    conn.execute(sql.SQL("""
        CREATE TEMP TABLE apply_batch ON COMMIT DROP AS
        SELECT s.key, s.payload::jsonb AS payload, s.payload -> 'source' AS source,
               c._hash AS old_hash, c._key IS NOT NULL AS existed
        FROM staged_records s LEFT JOIN {} c ON c._key = s.key
        WHERE s.snapshot_id = %(sid)s""").format(table), params)
    conn.execute("ALTER TABLE apply_batch ADD PRIMARY KEY (key)")
    conn.execute("ANALYZE apply_batch")
    conn.execute("""
        CREATE TEMP TABLE apply_written ON COMMIT DROP AS
        SELECT key, payload, source, existed FROM apply_batch
        WHERE NOT existed OR old_hash IS DISTINCT FROM payload ->> 'hash'""")
    counts.added = _count(conn, sql.SQL("SELECT count(*) FROM apply_written WHERE NOT existed"),
                          params)
    counts.changed = _count(conn, sql.SQL("SELECT count(*) FROM apply_written WHERE existed"),
                            params)
    counts.unchanged = _count(conn, sql.SQL("SELECT count(*) FROM apply_batch"), params) - (
        counts.added + counts.changed)

    # History: close the open version (a live one, or a deletion marker) of each written key.
    conn.execute("""
        UPDATE record_versions v SET valid_to = %(sid)s
        FROM apply_written w
        WHERE v.dataset_id = %(ds)s AND v.key = w.key AND v.valid_to IS NULL""", params)
    conn.execute("""
        INSERT INTO record_versions
            (dataset_id, key, hash, values, source, partition, line, valid_from)
        SELECT %(ds)s, key, payload ->> 'hash', payload -> 'values', source,
               payload ->> 'partition', (payload ->> 'line')::int, %(sid)s
        FROM apply_written""", params)

    columns = [sql.Identifier(n) for n in dataset.column_types()]
    conn.execute(sql.SQL("""
        INSERT INTO {table} (_key, _snapshot_id, _partition, _line, _hash, _source, {cols})
        SELECT key, %(sid)s, payload ->> 'partition', (payload ->> 'line')::int,
               payload ->> 'hash', source, {typed}
        FROM apply_written
        ON CONFLICT (_key) DO UPDATE SET
            _snapshot_id = excluded._snapshot_id, _partition = excluded._partition,
            _line = excluded._line, _hash = excluded._hash, _source = excluded._source,
            {updates}""").format(
        table=table,
        cols=sql.SQL(", ").join(columns),
        typed=typed_select(dataset, sql.Identifier("payload")),
        updates=sql.SQL(", ").join(sql.SQL("{} = excluded.{}").format(c, c) for c in columns),
    ), params)

    # Deletions: a full snapshot replaces everything; an increment only its own files.
    scope = sql.SQL("")
    if event_mode(conn, event.snapshot_id) == "increment":
        scope = sql.SQL("AND c._partition IN (SELECT jsonb_array_elements_text(partitions) "
                        "FROM snapshots WHERE id = %(sid)s)")
    conn.execute(sql.SQL("""
        CREATE TEMP TABLE apply_deleted ON COMMIT DROP AS
        WITH gone AS (
            DELETE FROM {} c
            WHERE NOT EXISTS (SELECT 1 FROM apply_batch b WHERE b.key = c._key) {}
            RETURNING c._key)
        SELECT _key AS key FROM gone""").format(table, scope), params)
    counts.deleted = _count(conn, sql.SQL("SELECT count(*) FROM apply_deleted"), params)
    conn.execute("""
        UPDATE record_versions v SET valid_to = %(sid)s
        FROM apply_deleted d
        WHERE v.dataset_id = %(ds)s AND v.key = d.key AND v.valid_to IS NULL""", params)
    conn.execute("""
        INSERT INTO record_versions (dataset_id, key, deleted, valid_from)
        SELECT %(ds)s, key, true, %(sid)s FROM apply_deleted""", params)

    # Cells that failed their type: kept with file, line, column, raw value and reason.
    conn.execute("""
        INSERT INTO quarantine
            (dataset_id, snapshot_id, source_file, line, record_key, column_name, raw_value,
             reason)
        SELECT %(ds)s, %(sid)s, b.payload ->> 'partition', (b.payload ->> 'line')::int, b.key,
               i ->> 'column', i ->> 'raw', i ->> 'reason'
        FROM apply_batch b, jsonb_array_elements(b.payload -> 'issues') i
        WHERE jsonb_array_length(b.payload -> 'issues') > 0""", params)

    conn.execute(sql.SQL("""
        UPDATE snapshots SET status = 'committed', committed_at = now(),
            record_count = %(records)s, rows_read = %(rows)s, quarantined = %(quarantined)s,
            sha256 = %(sha)s, files = %(files)s, added = %(added)s, changed = %(changed)s,
            deleted = %(deleted)s, unchanged = %(unchanged)s,
            row_count = (SELECT count(*) FROM {table})
        WHERE id = %(sid)s""").format(table=table), {
        **params, "records": event.record_count, "rows": event.rows_read,
        "quarantined": event.quarantined, "sha": event.sha256,
        "files": orjson.dumps(event.files).decode(), "added": counts.added,
        "changed": counts.changed, "deleted": counts.deleted, "unchanged": counts.unchanged})
    conn.execute("DELETE FROM staged_records WHERE snapshot_id = %(sid)s", params)
    conn.execute("DELETE FROM staged_counts WHERE snapshot_id = %(sid)s", params)
    return counts


def event_mode(conn: Conn, snapshot_id: int) -> str:
    row = conn.execute("SELECT mode FROM snapshots WHERE id = %s", (snapshot_id,)).fetchone()
    return str(row[0]) if row else "full"
