"""Per-dataset tables of current records, derived from the catalog.

Each dataset gets one table with a typed column per catalog column (so filters and
ordering are correct and can use indexes), plus the record key, the snapshot that wrote
the current version, the source file and line, and the source row as JSON.
"""

from __future__ import annotations

import logging

import psycopg
from psycopg import sql
from psycopg.types.json import JsonbBinaryDumper, JsonbDumper

from stldata.catalog import Dataset
from stldata.projection.search_index import ensure_query_indexes
from stldata.store.database import Conn

log = logging.getLogger(__name__)

SQL_TYPES = {
    "text": "text",
    "integer": "bigint",
    "number": "double precision",
    "boolean": "boolean",
    "date": "date",
    "datetime": "timestamptz",
    "month": "date",
    "geometry": "jsonb",
}

# A geometry value is a GeoJSON object (a dict) in the records; psycopg has no default
# adaptation for dicts, so COPY and parameters send them as jsonb.
psycopg.adapters.register_dumper(dict, JsonbDumper)
psycopg.adapters.register_dumper(dict, JsonbBinaryDumper)

#: Bookkeeping columns of every dataset table; catalog names cannot start with "_".
SYSTEM_COLUMNS = ("_key", "_snapshot_id", "_partition", "_line", "_hash", "_source")


def stage_table_name(dataset: Dataset) -> str:
    return "stage_" + dataset.table_name


def ensure_table(conn: Conn, dataset: Dataset) -> None:
    """Create the dataset's table and its staging table, or add columns the catalog
    gained since."""
    table = sql.Identifier(dataset.table_name)
    stage = sql.Identifier(stage_table_name(dataset))
    conn.execute(sql.SQL("""
        CREATE TABLE IF NOT EXISTS {} (
            _key          text PRIMARY KEY,
            _snapshot_id  bigint NOT NULL,
            _partition    text,
            _line         integer,
            _hash         text NOT NULL,
            _source       json NOT NULL
        )""").format(table))

    # Records of snapshots whose commit has not been applied yet, already typed, so that
    # applying a snapshot is set-based SQL with no JSON parsing. Every message is kept as
    # published (position = its place in the log); the apply step numbers a key's repeats
    # and picks its newest row. No index: rows arrive by COPY and leave with their
    # snapshot, and exactly-once comes from the offsets stored with them.
    conn.execute(sql.SQL("""
        CREATE TABLE IF NOT EXISTS {} (
            _snapshot_id  bigint NOT NULL,
            _key          text NOT NULL,
            _position     bigint NOT NULL,
            _partition    text NOT NULL,
            _line         integer,
            _hash         text NOT NULL,
            _source       json NOT NULL,
            _values       jsonb NOT NULL,
            _issues       jsonb
        )""").format(stage))
    # Staging tables made before revision 0010 had a key per (snapshot, key, file), which
    # repeats of a key now staged as they came would violate.
    old_key = conn.execute(
        "SELECT conname FROM pg_constraint WHERE conrelid = to_regclass(%s) AND contype = 'p'",
        (stage_table_name(dataset),)).fetchone()
    if old_key:
        conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
            stage, sql.Identifier(str(old_key[0]))))

    for target in (table, stage):
        for name, type_ in dataset.column_types().items():
            conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                target, sql.Identifier(name), sql.SQL(SQL_TYPES[type_])))

    indexed = [c.name for c in dataset.columns if c.index]
    for name in indexed:
        # (column, key) serves both filters and keyset pagination ordered by the column.
        conn.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({}, _key)").format(
            sql.Identifier(f"{dataset.table_name}__{name}"), table, sql.Identifier(name)))
    conn.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (_partition)").format(
        sql.Identifier(f"{dataset.table_name}___partition"), table))
    ensure_query_indexes(conn, dataset)  # full-text (q=) and point (bbox, within) indexes
