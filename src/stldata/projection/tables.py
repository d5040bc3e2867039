"""Per-dataset tables of current records, derived from the catalog.

Each dataset gets one table with a typed column per catalog column (so filters and
ordering are correct and can use indexes), plus the record key, the snapshot that wrote
the current version, the source file and line, and the source row as JSON.
"""

from __future__ import annotations

import logging

from psycopg import sql

from stldata.catalog import Dataset
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
}

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
    # applying a snapshot is set-based SQL with no JSON parsing. Within one file the newest
    # message of a key wins (position = log offset), as on a compacted topic; across files
    # the apply step picks the newest, and remembers every file that holds the key.
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
            _issues       jsonb,
            PRIMARY KEY (_snapshot_id, _key, _partition)
        )""").format(stage))

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
