"""Apply one committed snapshot from its staging table to the read model.

Everything here runs in the caller's transaction, together with the consumer offset of
the commit event: readers see the whole snapshot or none of it, and a replay after a
crash finds the work either fully done or not done at all.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass

import orjson
from psycopg import sql

from stldata.catalog import Dataset
from stldata.log.events import ROW_POSITION, SnapshotCommitted
from stldata.projection.aggregates import maintain_aggregates
from stldata.projection.quality import store_coercions, with_repeats
from stldata.projection.search_index import ranking_filled_after, ranking_table_name
from stldata.projection.stage import SYSTEM
from stldata.projection.tables import stage_table_name
from stldata.store.database import Conn

log = logging.getLogger(__name__)

#: Memory for the sorts, hashes and index builds of one apply (per operation).
APPLY_WORK_MEM = "64MB"
#: From this many new rows into an empty table, its indexes are built after the insert.
BULK_LOAD_ROWS = 10_000


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
    stage = sql.Identifier(stage_table_name(dataset))
    others = conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE _snapshot_id <> %s)")
                          .format(stage), (snapshot_id,)).fetchone()
    if others and not others[0]:
        # Nothing else staged: TRUNCATE leaves no dead rows behind for vacuum (a DELETE of
        # a million-row snapshot left gigabytes of them). It is transactional like DELETE.
        conn.execute(sql.SQL("TRUNCATE {}").format(stage))
    else:
        conn.execute(sql.SQL("DELETE FROM {} WHERE _snapshot_id = %s").format(stage),
                     (snapshot_id,))
    conn.execute("DELETE FROM staged_counts WHERE snapshot_id = %s", (snapshot_id,))


def apply_snapshot(conn: Conn, dataset: Dataset, event: SnapshotCommitted) -> ApplyCounts:
    table = sql.Identifier(dataset.table_name)
    stage = sql.Identifier(stage_table_name(dataset))
    params: dict[str, object] = {"sid": event.snapshot_id, "ds": dataset.id}
    counts = ApplyCounts()

    # Sorting a snapshot's keys in memory rather than in many small files on disk.
    conn.execute(f"SET LOCAL work_mem = '{APPLY_WORK_MEM}'")
    was_empty = _is_empty(conn, table)

    keyed = _keyed_rows(conn, dataset, stage, params)
    # Per file, the rows quarantined as repeats of a key that had no issue of their own.
    repeats: dict[str, int] = {}
    single_file = len(event.files) == 1
    if single_file and dataset.duplicate_keys == "number":
        # Numbered keys are unique within a file: every row is its key's only row.
        conn.execute(sql.SQL("CREATE TEMP TABLE apply_stage ON COMMIT DROP AS {}").format(
            keyed), params)
    else:
        # A key staged several times (from several files, or repeated under the 'last'
        # policy): the newest message wins.
        keys = conn.execute(sql.SQL("""
            CREATE TEMP TABLE apply_stage ON COMMIT DROP AS
            SELECT DISTINCT ON (_key) * FROM ({keyed}) k
            ORDER BY _key, _position DESC""").format(keyed=keyed), params).rowcount
        if dataset.duplicate_keys == "last" and keys < event.record_count:
            # Fewer keys than records: some rows were superseded.
            repeats = _quarantine_superseded(conn, stage, params)
    conn.execute("ALTER TABLE apply_stage ADD PRIMARY KEY (_key)")
    increment = _mode(conn, event.snapshot_id) == "increment"
    if increment:
        # From one file, the keys written are exactly the file's keys: read them from the
        # small keyed table rather than numbering the staged rows a second time.
        held = sql.SQL("SELECT _partition, _key FROM apply_stage") if single_file else keyed
        _replace_record_sources(conn, held, params)

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
    # A first load of many rows builds the secondary indexes once, after the rows are in,
    # instead of updating each of them row by row (about 3x faster at 200,000 rows).
    # The ranking table likewise, filled once from the table after the insert.
    ranking = ranking_table_name(dataset.table_name)
    rebuild = (_drop_secondary_indexes(conn, dataset.table_name)
               + _drop_secondary_indexes(conn, ranking)
               if was_empty and counts.added >= BULK_LOAD_ROWS else [])
    with ranking_filled_after(conn, dataset) if rebuild else nullcontext():
        conn.execute(sql.SQL("""
            INSERT INTO {table} (_key, _snapshot_id, _partition, _line, _hash, _source, {cols})
            SELECT s._key, %(sid)s, s._partition, s._line, s._hash, s._source, {staged}
            FROM apply_stage s JOIN apply_written w ON w.key = s._key AND NOT w.existed""")
            .format(table=table, cols=sql.SQL(", ").join(names),
                    staged=sql.SQL(", ").join(sql.SQL("s.{}").format(n) for n in names)),
            params)
    conn.execute(sql.SQL("""
        UPDATE {table} c SET
            _snapshot_id = %(sid)s, _partition = s._partition, _line = s._line,
            _hash = s._hash, _source = s._source, {updates}
        FROM apply_stage s JOIN apply_written w ON w.key = s._key AND w.existed
        WHERE c._key = s._key""").format(
        table=table,
        updates=sql.SQL(", ").join(sql.SQL("{} = s.{}").format(n, n) for n in names)), params)
    if rebuild:
        conn.execute(f"SET LOCAL maintenance_work_mem = '{APPLY_WORK_MEM}'")
        for definition in rebuild:
            conn.execute(definition)

    # Deletions: a full snapshot replaces everything. An increment replaces only its own
    # files, and a record that another current file still holds goes back to that file's
    # row (or is deleted when that row is not known).
    scope = sql.SQL("")
    if increment and not was_empty:
        scope = sql.SQL("AND c._partition IN (SELECT jsonb_array_elements_text(partitions) "
                        "FROM snapshots WHERE id = %(sid)s)")
        counts.changed += _fall_back(conn, dataset, table, scope, params)
    # A table that was empty has nothing to delete: the WHERE would find no row, but only
    # after checking every row just inserted.
    conn.execute(sql.SQL("""
        CREATE TEMP TABLE apply_deleted ON COMMIT DROP AS
        WITH gone AS (
            DELETE FROM {table} c
            WHERE NOT EXISTS (SELECT 1 FROM apply_batch b WHERE b.key = c._key) {scope}
            RETURNING c._key)
        SELECT _key AS key FROM gone""").format(
        table=table, scope=sql.SQL("AND false") if was_empty else scope), params)
    counts.deleted = _count(conn, "SELECT count(*) FROM apply_deleted")
    conn.execute("""
        UPDATE record_versions v SET valid_to = %(sid)s
        FROM apply_deleted d
        WHERE v.dataset_id = %(ds)s AND v.key = d.key AND v.valid_to IS NULL""", params)
    conn.execute("""
        INSERT INTO record_versions (dataset_id, key, deleted, valid_from)
        SELECT %(ds)s, key, true, %(sid)s FROM apply_deleted""", params)

    # Cells that failed their type: kept with file, line, column, raw value and reason.
    # Entries without a reason are not issues (a row's position, for the notes above), and
    # notes on superseded rows that an older ingester attached to the winning row (with
    # their 'file') are left out: the notes are written from the staged rows instead.
    conn.execute(sql.SQL("""
        INSERT INTO quarantine
            (dataset_id, snapshot_id, source_file, line, record_key, column_name, raw_value,
             reason, position)
        SELECT %(ds)s, %(sid)s, s._partition, s._line, s._key,
               i ->> 'column', i ->> 'raw', i ->> 'reason', i ->> 'position'
        FROM apply_stage s, jsonb_array_elements(s._issues) i
        WHERE s._issues IS NOT NULL AND i ? 'reason' AND NOT i ? 'file'"""), params)
    store_coercions(conn, event)  # quality report (stldata.projection.quality)
    quarantined, files = with_repeats(event, repeats)

    conn.execute(sql.SQL("""
        UPDATE snapshots SET status = 'committed', committed_at = now(),
            record_count = %(records)s, rows_read = %(rows)s, quarantined = %(quarantined)s,
            sha256 = %(sha)s, files = %(files)s, added = %(added)s, changed = %(changed)s,
            deleted = %(deleted)s, unchanged = %(unchanged)s,
            row_count = (SELECT count(*) FROM {table})
        WHERE id = %(sid)s""").format(table=table), {
        **params, "records": event.record_count, "rows": event.rows_read,
        "quarantined": quarantined, "sha": event.sha256,
        "files": orjson.dumps(files).decode(), "added": counts.added,
        "changed": counts.changed, "deleted": counts.deleted, "unchanged": counts.unchanged})
    discard_staged(conn, dataset, event.snapshot_id)
    maintain_aggregates(conn, dataset, event.snapshot_id)  # stldata.projection.aggregates
    for name in (dataset.table_name, ranking):
        _refresh_statistics(conn, name, counts.added + counts.deleted)
    return counts


def _refresh_statistics(conn: Conn, table_name: str, moved: int) -> None:
    """Analyze the table when this snapshot added or removed more than a tenth of it.

    The API's totals for large results, and its choice between counting and estimating,
    come from the planner's statistics; autovacuum refreshes them minutes later, and until
    then a whole-table total would still show the size before the snapshot."""
    if not moved:
        return
    row = conn.execute("SELECT reltuples FROM pg_class WHERE oid = to_regclass(%s)",
                       (table_name,)).fetchone()
    if row is None:
        return  # no such table (a dataset without text columns has no ranking table)
    known = float(row[0])
    if known < 0 or moved > 0.1 * max(known, 1.0):
        conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table_name)))


def _is_empty(conn: Conn, table: sql.Identifier) -> bool:
    row = conn.execute(sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {})").format(table)).fetchone()
    return bool(row and row[0])


def _keyed_rows(conn: Conn, dataset: Dataset, stage: sql.Identifier,
                params: dict[str, object]) -> sql.Composed:
    """A query of the snapshot's staged rows under their record keys.

    Under the 'number' policy a key's repeats within one file (one row per victim) are
    numbered ``#2``, ``#3`` in the order they were published, i.e. in file order: every
    message of a key is on one log partition, so its positions are in publishing order.
    Only the repeats are kept aside (``apply_repeats``, small), so no wide row is sorted.
    """
    names = [*(c for c in SYSTEM if c != "_key"), *dataset.column_types()]
    rest = sql.SQL(", ").join(sql.SQL("s.{}").format(sql.Identifier(n)) for n in names)
    if dataset.duplicate_keys != "number":
        return sql.SQL("SELECT s._key, {rest} FROM {stage} s "
                       "WHERE s._snapshot_id = %(sid)s").format(rest=rest, stage=stage)
    conn.execute(sql.SQL("""
        CREATE TEMP TABLE apply_repeats ON COMMIT DROP AS
        SELECT _position, _key || '#' || n AS key FROM (
            SELECT _position, _key,
                   row_number() OVER (PARTITION BY _partition, _key ORDER BY _position) AS n
            FROM {stage} WHERE _snapshot_id = %(sid)s) r
        WHERE n > 1""").format(stage=stage), params)
    conn.execute("ANALYZE apply_repeats")
    return sql.SQL("""
        SELECT coalesce(r.key, s._key) AS _key, {rest}
        FROM {stage} s LEFT JOIN apply_repeats r ON r._position = s._position
        WHERE s._snapshot_id = %(sid)s""").format(rest=rest, stage=stage)


def _quarantine_superseded(conn: Conn, stage: sql.Identifier,
                           params: dict[str, object]) -> dict[str, int]:
    """Under the 'last' policy, quarantine every staged row that a newer row of its key
    supersedes, at its own file, line and position, naming the row that won.

    Set-based over the snapshot's staged rows, with the ingester's order: every message
    of a key is on one log partition, so the newest position is the row published last
    (the last row of the key in the last file that has it). One aggregate over the
    snapshot's keys finds the repeated ones; only their rows are then sorted.

    Returns, per file, how many rows repeat a key published before them in the snapshot
    and have no issue of their own: the ingester counted those among the quarantined
    rows when it tracked the keys, and the snapshot's figures stay the same.
    """
    conn.execute(sql.SQL("""
        CREATE TEMP TABLE apply_repeated ON COMMIT DROP AS
        SELECT _key FROM {stage} WHERE _snapshot_id = %(sid)s
        GROUP BY _key HAVING count(*) > 1""").format(stage=stage), params)
    conn.execute("ANALYZE apply_repeated")
    conn.execute(sql.SQL("""
        CREATE TEMP TABLE apply_superseded ON COMMIT DROP AS
        SELECT s._key, s._position, s._partition, s._line,
               row_number() OVER newest AS from_newest,
               count(*) OVER (PARTITION BY s._key) AS rows_of_key,
               first_value(s._partition) OVER newest AS by_partition,
               first_value(s._line) OVER newest AS by_line,
               -- A cell's issue has a reason; a row's position has none.
               EXISTS (SELECT 1 FROM jsonb_array_elements(s._issues) i
                       WHERE i ? 'reason' AND NOT i ? 'file') AS has_issues,
               (SELECT i ->> {row_position} FROM jsonb_array_elements(s._issues) i
                WHERE i ? {row_position} LIMIT 1) AS position
        FROM {stage} s JOIN apply_repeated r ON r._key = s._key
        WHERE s._snapshot_id = %(sid)s
        WINDOW newest AS (PARTITION BY s._key ORDER BY s._position DESC)""").format(
        stage=stage, row_position=sql.Literal(ROW_POSITION)), params)
    conn.execute("""
        INSERT INTO quarantine
            (dataset_id, snapshot_id, source_file, line, record_key, column_name, raw_value,
             reason, position)
        SELECT %(ds)s, %(sid)s, _partition, _line, _key, NULL, _key,
               'duplicate key: the row at ' || _partition || ' line ' || _line
               || ' is superseded by the row at ' || by_partition || ' line ' || by_line,
               coalesce(position, 'line ' || _line)
        FROM apply_superseded WHERE from_newest > 1
        ORDER BY _key, _position""", params)
    rows = conn.execute("""
        SELECT _partition, count(*) FROM apply_superseded
        WHERE from_newest < rows_of_key AND NOT has_issues GROUP BY _partition""").fetchall()
    return {str(partition): int(n) for partition, n in rows}


def _drop_secondary_indexes(conn: Conn, table_name: str) -> list[str]:
    """Drop the table's non-unique indexes (in this transaction); returns the statements
    that create them again. The table is empty, so readers lose nothing meanwhile."""
    rows = conn.execute("""
        SELECT c.relname, pg_get_indexdef(i.indexrelid)
        FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        WHERE i.indrelid = to_regclass(%s) AND NOT i.indisunique""",
                        (table_name,)).fetchall()
    for name, _ in rows:
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(str(name))))
    return [str(definition) for _, definition in rows]


def _replace_record_sources(conn: Conn, keyed: sql.Composable,
                            params: dict[str, object]) -> None:
    """The files of this snapshot now hold exactly the keys staged from them (``keyed``:
    a query of the staged rows' ``_partition`` and ``_key``)."""
    conn.execute("""
        DELETE FROM record_sources
        WHERE dataset_id = %(ds)s AND partition IN (
            SELECT jsonb_array_elements_text(partitions) FROM snapshots WHERE id = %(sid)s)""",
                 params)
    conn.execute(sql.SQL("""
        INSERT INTO record_sources (dataset_id, partition, key)
        SELECT %(ds)s, _partition, _key FROM ({keyed}) k
        ON CONFLICT DO NOTHING""").format(keyed=keyed), params)
    # (A key staged twice from one file, under the 'last' policy, is one row; the
    # conflict check is cheaper than sorting every staged row for a DISTINCT.)


def _fall_back(conn: Conn, dataset: Dataset, table: sql.Identifier, scope: sql.Composable,
               params: dict[str, object]) -> int:
    """Records that this snapshot's files dropped but another current file still holds
    go back to that file's row; returns how many.

    The other file's row is its key's latest version from that file, valid only if it was
    written by the last snapshot that brought the file: a row that lost to another file in
    the same snapshot, or matched the record already served, was never written, and an
    older version may no longer be what the file holds. Such a record is left to the
    deletion that follows rather than served with values its files no longer hold.
    """
    conn.execute(sql.SQL("""
        CREATE TEMP TABLE apply_fallback ON COMMIT DROP AS
        SELECT DISTINCT ON (c._key) c._key AS key, v.id AS version_id
        FROM {table} c
        JOIN record_sources r ON r.dataset_id = %(ds)s AND r.key = c._key
        JOIN LATERAL (
            SELECT v.id, v.valid_from FROM record_versions v
            WHERE v.dataset_id = %(ds)s AND v.key = c._key AND v.partition = r.partition
              AND NOT v.deleted
            ORDER BY v.valid_from DESC, v.id DESC LIMIT 1) v ON true
        WHERE NOT EXISTS (SELECT 1 FROM apply_batch b WHERE b.key = c._key) {scope}
          AND v.valid_from >= (
            SELECT max(s.id) FROM snapshots s
            WHERE s.dataset_id = %(ds)s AND s.status = 'committed'
              AND s.partitions @> jsonb_build_array(r.partition))
        -- Of several files still holding the key, the one brought most recently wins.
        ORDER BY c._key, v.valid_from DESC, v.id DESC""").format(
        table=table, scope=scope), params)
    restored = _count(conn, "SELECT count(*) FROM apply_fallback")
    if not restored:
        return 0
    names = [sql.Identifier(n) for n in dataset.column_types()]
    conn.execute(sql.SQL("""
        UPDATE {table} c SET
            _snapshot_id = %(sid)s, _partition = v.partition, _line = v.line,
            _hash = v.hash, _source = v.source, {updates}
        FROM apply_fallback f JOIN record_versions v ON v.id = f.version_id,
             jsonb_populate_record(NULL::{table}, v.values) p
        WHERE c._key = f.key""").format(
        table=table,
        updates=sql.SQL(", ").join(sql.SQL("{} = p.{}").format(n, n) for n in names)), params)
    conn.execute("""
        UPDATE record_versions v SET valid_to = %(sid)s
        FROM apply_fallback f
        WHERE v.dataset_id = %(ds)s AND v.key = f.key AND v.valid_to IS NULL""", params)
    conn.execute("""
        INSERT INTO record_versions
            (dataset_id, key, hash, values, source, partition, line, valid_from)
        SELECT %(ds)s, f.key, v.hash, v.values, v.source, v.partition, v.line, %(sid)s
        FROM apply_fallback f JOIN record_versions v ON v.id = f.version_id""", params)
    return restored


def _mode(conn: Conn, snapshot_id: int) -> str:
    row = conn.execute("SELECT mode FROM snapshots WHERE id = %s", (snapshot_id,)).fetchone()
    return str(row[0]) if row else "full"
