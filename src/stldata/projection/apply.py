"""Apply one committed snapshot from its staging table to the read model.

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
from stldata.projection.tables import stage_table_name
from stldata.store.database import Conn

log = logging.getLogger(__name__)


@dataclass
class ApplyCounts:
    added: int = 0
    changed: int = 0
    unchanged: int = 0
    deleted: int = 0


def _count(conn: Conn, query: str) -> int:
    row = conn.execute(query).fetchone()
    return int(row[0]) if row else 0


def discard_staged(conn: Conn, dataset: Dataset, snapshot_id: int) -> None:
    conn.execute(sql.SQL("DELETE FROM {} WHERE _snapshot_id = %s").format(
        sql.Identifier(stage_table_name(dataset))), (snapshot_id,))
    conn.execute("DELETE FROM staged_counts WHERE snapshot_id = %s", (snapshot_id,))


def apply_snapshot(conn: Conn, dataset: Dataset, event: SnapshotCommitted) -> ApplyCounts:
    table = sql.Identifier(dataset.table_name)
    stage = sql.Identifier(stage_table_name(dataset))
    params: dict[str, object] = {"sid": event.snapshot_id, "ds": dataset.id}
    counts = ApplyCounts()

    # A key staged from several files of the snapshot: the newest message wins.
    conn.execute(sql.SQL("""
        CREATE TEMP TABLE apply_stage ON COMMIT DROP AS
        SELECT DISTINCT ON (_key) * FROM {stage}
        WHERE _snapshot_id = %(sid)s ORDER BY _key, _position DESC""").format(stage=stage),
        params)
    conn.execute("ALTER TABLE apply_stage ADD PRIMARY KEY (_key)")
    increment = _mode(conn, event.snapshot_id) == "increment"
    if increment:
        _replace_record_sources(conn, stage, params)

    # Compare each staged record with the current version of its key.
    conn.execute(sql.SQL("""
        CREATE TEMP TABLE apply_batch ON COMMIT DROP AS
        SELECT s._key AS key, c._key IS NOT NULL AS existed,
               c._hash IS DISTINCT FROM s._hash AS differs
        FROM apply_stage s LEFT JOIN {table} c ON c._key = s._key""").format(table=table),
        params)
    conn.execute("CREATE TEMP TABLE apply_written ON COMMIT DROP AS "
                 "SELECT key, existed FROM apply_batch WHERE differs")
    conn.execute("ALTER TABLE apply_written ADD PRIMARY KEY (key)")
    conn.execute("ANALYZE apply_written")
    counts.added = _count(conn, "SELECT count(*) FROM apply_written WHERE NOT existed")
    counts.changed = _count(conn, "SELECT count(*) FROM apply_written WHERE existed")
    counts.unchanged = _count(conn, "SELECT count(*) FROM apply_batch WHERE NOT differs")

    # History: close the open version (a live one, or a deletion marker) of each written key.
    conn.execute("""
        UPDATE record_versions v SET valid_to = %(sid)s
        FROM apply_written w
        WHERE v.dataset_id = %(ds)s AND v.key = w.key AND v.valid_to IS NULL""", params)
    conn.execute(sql.SQL("""
        INSERT INTO record_versions
            (dataset_id, key, hash, values, source, partition, line, valid_from)
        SELECT %(ds)s, s._key, s._hash, s._values, s._source, s._partition, s._line, %(sid)s
        FROM apply_stage s JOIN apply_written w ON w.key = s._key"""), params)

    # New keys take a plain INSERT and changed ones an UPDATE: cheaper than ON CONFLICT's
    # speculative insertion when a first load brings hundreds of thousands of rows.
    names = [sql.Identifier(n) for n in dataset.column_types()]
    conn.execute(sql.SQL("""
        INSERT INTO {table} (_key, _snapshot_id, _partition, _line, _hash, _source, {cols})
        SELECT s._key, %(sid)s, s._partition, s._line, s._hash, s._source, {staged}
        FROM apply_stage s JOIN apply_written w ON w.key = s._key AND NOT w.existed""").format(
        table=table, cols=sql.SQL(", ").join(names),
        staged=sql.SQL(", ").join(sql.SQL("s.{}").format(n) for n in names)), params)
    conn.execute(sql.SQL("""
        UPDATE {table} c SET
            _snapshot_id = %(sid)s, _partition = s._partition, _line = s._line,
            _hash = s._hash, _source = s._source, {updates}
        FROM apply_stage s JOIN apply_written w ON w.key = s._key AND w.existed
        WHERE c._key = s._key""").format(
        table=table,
        updates=sql.SQL(", ").join(sql.SQL("{} = s.{}").format(n, n) for n in names)), params)

    # Deletions: a full snapshot replaces everything. An increment replaces only its own
    # files, and a record that another current file still holds moves to that file.
    scope = sql.SQL("")
    if increment:
        scope = sql.SQL("AND c._partition IN (SELECT jsonb_array_elements_text(partitions) "
                        "FROM snapshots WHERE id = %(sid)s)")
        conn.execute(sql.SQL("""
            UPDATE {table} c SET _partition = (
                SELECT min(r.partition) FROM record_sources r
                WHERE r.dataset_id = %(ds)s AND r.key = c._key)
            WHERE NOT EXISTS (SELECT 1 FROM apply_batch b WHERE b.key = c._key) {scope}
              AND EXISTS (SELECT 1 FROM record_sources r
                          WHERE r.dataset_id = %(ds)s AND r.key = c._key)""").format(
            table=table, scope=scope), params)
    conn.execute(sql.SQL("""
        CREATE TEMP TABLE apply_deleted ON COMMIT DROP AS
        WITH gone AS (
            DELETE FROM {table} c
            WHERE NOT EXISTS (SELECT 1 FROM apply_batch b WHERE b.key = c._key) {scope}
            RETURNING c._key)
        SELECT _key AS key FROM gone""").format(table=table, scope=scope), params)
    counts.deleted = _count(conn, "SELECT count(*) FROM apply_deleted")
    conn.execute("""
        UPDATE record_versions v SET valid_to = %(sid)s
        FROM apply_deleted d
        WHERE v.dataset_id = %(ds)s AND v.key = d.key AND v.valid_to IS NULL""", params)
    conn.execute("""
        INSERT INTO record_versions (dataset_id, key, deleted, valid_from)
        SELECT %(ds)s, key, true, %(sid)s FROM apply_deleted""", params)

    # Cells that failed their type: kept with file, line, column, raw value and reason.
    conn.execute(sql.SQL("""
        INSERT INTO quarantine
            (dataset_id, snapshot_id, source_file, line, record_key, column_name, raw_value,
             reason)
        SELECT %(ds)s, %(sid)s, s._partition, s._line, s._key,
               i ->> 'column', i ->> 'raw', i ->> 'reason'
        FROM apply_stage s, jsonb_array_elements(s._issues) i
        WHERE s._issues IS NOT NULL"""), params)

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
    discard_staged(conn, dataset, event.snapshot_id)
    return counts


def _replace_record_sources(conn: Conn, stage: sql.Identifier,
                            params: dict[str, object]) -> None:
    """The files of this snapshot now hold exactly the keys staged from them."""
    conn.execute("""
        DELETE FROM record_sources
        WHERE dataset_id = %(ds)s AND partition IN (
            SELECT jsonb_array_elements_text(partitions) FROM snapshots WHERE id = %(sid)s)""",
                 params)
    conn.execute(sql.SQL("""
        INSERT INTO record_sources (dataset_id, partition, key)
        SELECT %(ds)s, _partition, _key FROM {stage} WHERE _snapshot_id = %(sid)s""").format(
        stage=stage), params)


def _mode(conn: Conn, snapshot_id: int) -> str:
    row = conn.execute("SELECT mode FROM snapshots WHERE id = %s", (snapshot_id,)).fetchone()
    return str(row[0]) if row else "full"
