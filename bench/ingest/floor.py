"""The read-model floor: what PostgreSQL alone needs to build ours' read model from rows
that are already clean, typed and keyed.

COPY of raw text is the floor of any loader, but ours serves more than raw text: a typed
table with a stored English search document, its primary key and nine secondary indexes
(B-trees, a full-text GIN, a GiST on the point), a ranking table in description order with
its own GIN, the history of every version (``record_versions`` and its indexes) and the
files that hold each key (``record_sources``). This step loads exactly those rows, taken
from the read model ours has just built, into empty copies of those tables in a schema
``floor`` of the same server, in one transaction, the way ours' bulk path does it (secondary
indexes after the rows), with no event log, no staging, no Python and no cleaning.

It is a lower bound for any implementation of this read model on this server, so
``floor/COPY`` bounds what ``ours/COPY`` can reach, whatever the ingester and the
projection do. The rows are exported untimed, as CSV, and loaded with ``\\copy`` from the
client, as the COPY baseline loads its file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

#: Memory for the index builds: the projection's own setting (APPLY_WORK_MEM).
MAINTENANCE_WORK_MEM = "64MB"


class Server(Protocol):
    """The run's embedded server (run.py's EmbeddedServer)."""

    psql: str
    database: Any

    def scalar(self, query: str) -> Any: ...

    def execute(self, query: str) -> None: ...


@dataclass
class FloorScript:
    """The timed script and what the load must leave behind."""

    path: Path
    rows: int
    history_rows: int


def _rows(server: Server, query: str) -> list[tuple[Any, ...]]:
    with server.database.connect(autocommit=True) as conn:
        return [tuple(row) for row in conn.execute(query).fetchall()]


def _quoted(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def prepare(server: Server, *, table: str, ranking: str, search_order: tuple[str, ...],
            dataset_id: str, workdir: Path) -> FloorScript:
    """Export ours' rows and write the floor's timed script (all untimed)."""
    folder = workdir / "floor"
    folder.mkdir(exist_ok=True)
    # The table's own columns, less the generated search document, which the load
    # computes again as ours does.
    columns = [str(name) for (name,) in _rows(server, f"""
        SELECT attname FROM pg_attribute
        WHERE attrelid = 'public.{table}'::regclass AND attnum > 0 AND NOT attisdropped
          AND attgenerated = '' ORDER BY attnum""")]
    listed = ", ".join(f'"{c}"' for c in columns)
    history = "dataset_id, key, hash, values, source, partition, line, valid_from"
    exports = {
        "typed.csv": f"SELECT {listed} FROM public.{table}",
        "history.csv": f"SELECT {history} FROM public.record_versions "
                       f"WHERE dataset_id = '{dataset_id}'",
        "sources.csv": f"SELECT dataset_id, partition, key FROM public.record_sources "
                       f"WHERE dataset_id = '{dataset_id}'",
    }
    for name, query in exports.items():
        with server.database.connect(autocommit=True) as conn:
            with (folder / name).open("wb") as out, \
                    conn.cursor().copy(f"COPY ({query}) TO STDOUT (FORMAT csv)") as copy:
                for chunk in copy:
                    out.write(chunk)

    # Empty copies of the tables, with the same columns, generated column, defaults and
    # constraints; indexes are created as ours creates them (unique ones before the rows,
    # the others after), from the definitions of the originals.
    indexes = _rows(server, f"""
        SELECT indisunique, pg_get_indexdef(indexrelid) FROM pg_index
        WHERE indrelid = 'public.{table}'::regclass
           OR indrelid = to_regclass('public."{ranking}"')""")
    after = [str(definition).replace(" ON public.", " ON floor.")
             for unique, definition in indexes if not unique]
    server.execute("DROP SCHEMA IF EXISTS floor CASCADE")
    server.execute("CREATE SCHEMA floor")
    for name in (table, f'"{ranking}"'):
        server.execute(f"CREATE TABLE floor.{name} (LIKE public.{name} INCLUDING ALL "
                       "EXCLUDING INDEXES)")
        server.execute(f"ALTER TABLE floor.{name} ADD PRIMARY KEY (_key)")
    for name in ("record_versions", "record_sources"):
        # Shared by every dataset, so never empty in use: their indexes stay in place.
        server.execute(f"CREATE TABLE floor.{name} (LIKE public.{name} INCLUDING ALL)")
    server.execute("CHECKPOINT")

    order = ", ".join(f'"{c}"' for c in search_order)
    lines = [
        "\\timing on",  # each statement's time, in the step's log
        f"SET maintenance_work_mem = '{MAINTENANCE_WORK_MEM}';",
        f"\\copy floor.{table} ({listed}) FROM {_quoted(folder / 'typed.csv')} "
        "WITH (FORMAT csv)",
        f'INSERT INTO floor."{ranking}" (_key, _document) SELECT _key, _document '
        f"FROM floor.{table}" + (f" ORDER BY {order};" if order else ";"),
        *(f"{definition};" for definition in after),
        f"\\copy floor.record_versions ({history}) FROM "
        f"{_quoted(folder / 'history.csv')} WITH (FORMAT csv)",
        f"\\copy floor.record_sources (dataset_id, partition, key) FROM "
        f"{_quoted(folder / 'sources.csv')} WITH (FORMAT csv)",
    ]
    script = folder / "floor.sql"
    script.write_text("\n".join(lines) + "\n")
    rows = int(server.scalar(f"SELECT count(*) FROM public.{table}"))
    history_rows = int(server.scalar(f"SELECT count(*) FROM public.record_versions "
                                     f"WHERE dataset_id = '{dataset_id}'"))
    return FloorScript(script, rows, history_rows)


def verify(server: Server, script: FloorScript, *, table: str, ranking: str) -> int:
    """Rows the floor's typed table holds, after checking that every other table got all
    of its rows; fails loudly when the load left anything out."""
    counts = {
        "ranking": int(server.scalar(f'SELECT count(*) FROM floor."{ranking}"')),
        "history": int(server.scalar("SELECT count(*) FROM floor.record_versions")),
        "indexes": int(server.scalar(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = 'floor'")),
        "ours' indexes": int(server.scalar(
            f"SELECT count(*) FROM pg_indexes WHERE schemaname = 'public' AND tablename IN "
            f"('{table}', '{ranking}', 'record_versions', 'record_sources')")),
    }
    typed = int(server.scalar(f"SELECT count(*) FROM floor.{table}"))
    if counts["ranking"] != typed or counts["history"] != script.history_rows \
            or counts["indexes"] != counts["ours' indexes"]:
        raise SystemExit(f"the floor's load is incomplete: {typed} typed rows, {counts}")
    return typed
