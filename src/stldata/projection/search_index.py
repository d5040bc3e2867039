"""The stored search document and the indexes that serve the read API's full-text and
geographic queries.

Full-text search (``q=``) matches one document per record: the dataset's text columns
joined with spaces, as an English ``tsvector``. The document is a stored generated column,
``_document``, so that it is parsed once when a record is written rather than on every
query that filters or ranks by it (parsing ten columns with English stemming costs about
60 microseconds a record; ranking 65,000 matches by recomputing it took seconds). A GIN
index on the column serves the matches. The column's comment holds a digest of its
expression: when a dataset gains a text column (a catalog edit, or an ``auto`` column
pinned as text), the column is computed again and the index rebuilt.

Ranking a search needs every match's document, and GIN returns only row addresses: on the
dataset table, ranking 65,000 matches of a million crime records visits 51,000 pages of
wide rows (a record is about 1 KB, a document 200 bytes). So each dataset with text
columns also has a *ranking table*, ``(_key, _document)`` with its own GIN index, kept
equal to the dataset table by statement-level triggers (revision 0010) in the same
transaction as every write. A ranked search with no other filter reads its best page from
there (30,000 narrow pages) and joins back only the records on the page. A dataset may
name text columns whose order the ranking table keeps (``search_order``, the crime
description for the crime data): the rows of each write are inserted in that order, so
the matches of a word of those columns lie on adjacent pages (2,700 instead of 30,000 for
"burglary").

Point datasets (those with WGS84 longitude/latitude columns) get a GiST index on the
point in micro-degrees, :func:`point_sql`: bounding boxes and point-in-polygon tests
(``<@``) use it. Micro-degrees because PostgreSQL's geometric operators treat values
within 1e-6 of each other as equal; in degrees that tolerance, applied to the cross
products of the point-in-polygon test, would put points several metres outside a long
edge "on" it, while in micro-degrees it is far below a millimetre.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from psycopg import sql

from stldata.catalog import Dataset
from stldata.store.database import Conn

log = logging.getLogger(__name__)

#: Text search configuration; stemming English matches "burglary" with "burglaries".
TEXT_SEARCH_CONFIG = "english"


def text_columns(dataset: Dataset) -> list[str]:
    """The columns searched by ``q=``: every text column, in catalog order."""
    return [name for name, type_ in dataset.column_types().items() if type_ == "text"]


def _quote(name: str) -> str:
    # Catalog column names are [a-z][a-z0-9_]* (checked by the catalog loader), so
    # double-quoting them is exact; the assert guards against a future loosening.
    assert name.replace("_", "").isalnum() and name.islower(), name
    return f'"{name}"'


def search_document_sql(dataset: Dataset) -> str | None:
    """The SQL expression of a record's search document, or None without text columns."""
    columns = text_columns(dataset)
    if not columns:
        return None
    joined = " || ' ' || ".join(f"coalesce({_quote(c)}, '')" for c in columns)
    return f"to_tsvector('{TEXT_SEARCH_CONFIG}'::regconfig, {joined})"


#: The stored generated column holding each record's search document.
DOCUMENT_COLUMN = "_document"


def _document_digest(document: str) -> str:
    return hashlib.sha256(document.encode()).hexdigest()[:10]


def search_index_name(dataset: Dataset) -> str | None:
    document = search_document_sql(dataset)
    if document is None:
        return None
    # "ftsd": the index of the stored column (older "fts_" indexes were on the expression).
    return f"{dataset.table_name[:44]}__ftsd_{_document_digest(document)}"


#: Degrees to the unit of indexed points; written as SQL text in both the index and the
#: queries, so that the planner sees the same expression.
POINT_SCALE_SQL = "1000000.0"
POINT_SCALE = 1_000_000.0


def point_sql(longitude: str, latitude: str) -> str:
    """The indexed point expression over two (quoted) column references."""
    return f"point({longitude} * {POINT_SCALE_SQL}, {latitude} * {POINT_SCALE_SQL})"


def point_index_name(dataset: Dataset) -> str:
    return f"{dataset.table_name[:50]}__point_udeg"


def ranking_table_name(table_name: str) -> str:
    """The ranking table beside a dataset table (see the module's docstring).

    Dataset tables are named from ids of ``[a-z0-9-]``, so no dataset table has a ``$`` in
    its name and none can take this one. A long table name is cut and given a digest of
    the whole, so that two ids sharing a long prefix get two ranking tables."""
    return _beside(table_name, "ranking")


def _beside(table_name: str, role: str) -> str:
    """``<table>$<role>``, within PostgreSQL's 63 bytes (``$`` needs no quoting)."""
    room = 63 - len(role) - 1
    if len(table_name) <= room:
        return f"{table_name}${role}"
    digest = hashlib.sha256(table_name.encode()).hexdigest()[:8]
    return f"{table_name[:room - 9]}_{digest}${role}"


#: The triggers that copy each write of a dataset table to its ranking table: which rows
#: a statement of each kind brings (``came``) and takes away (``gone``).
_RANKING_TRIGGERS = {
    "INSERT": "REFERENCING NEW TABLE AS came",
    "UPDATE": "REFERENCING OLD TABLE AS gone NEW TABLE AS came",
    "DELETE": "REFERENCING OLD TABLE AS gone",
    "TRUNCATE": "",
}


def _ranking_trigger(event: str) -> str:
    return f"ranking_{event.lower()}"


_RANKING_INSERT = _ranking_trigger("INSERT")


@contextmanager
def ranking_filled_after(conn: Conn, dataset: Dataset) -> Iterator[None]:
    """Around a bulk insert into an *empty* dataset table: the ranking table is filled once
    from the table after the insert, instead of by the insert trigger.

    The statement trigger makes PostgreSQL keep every inserted row, whole, in a transition
    table before copying the two columns it needs (at 200,000 crime records that doubled
    the insert's time, 5 s more, most of it writing the rows to temporary files). Disabling
    the trigger is transactional and the caller already holds the table's exclusive lock
    (it dropped the indexes), so no other writer can slip past the ranking table."""
    table = sql.Identifier(dataset.table_name)
    trigger = sql.Identifier(_RANKING_INSERT)
    armed = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass(%s) "
        "AND tgname = %s AND tgenabled <> 'D')",
        (dataset.table_name, _RANKING_INSERT)).fetchone()
    if not (armed and armed[0]):
        yield  # no text columns, hence no ranking table
        return
    conn.execute(sql.SQL("ALTER TABLE {} DISABLE TRIGGER {}").format(table, trigger))
    yield
    conn.execute(sql.SQL("ALTER TABLE {} ENABLE TRIGGER {}").format(table, trigger))
    _fill_ranking(conn, dataset)


def _fill_ranking(conn: Conn, dataset: Dataset) -> None:
    """Copy every record's document into the (empty) ranking table, in search order."""
    order = ", ".join(_quote(column) for column in dataset.search_order)
    conn.execute(sql.SQL("INSERT INTO {} (_key, _document) SELECT _key, {} FROM {} {}").format(
        sql.Identifier(ranking_table_name(dataset.table_name)),
        sql.Identifier(DOCUMENT_COLUMN), sql.Identifier(dataset.table_name),
        sql.SQL(f"ORDER BY {order}" if order else "")))


def ensure_query_indexes(conn: Conn, dataset: Dataset) -> None:
    """Create the search document, its index, the ranking table and the point index of a
    dataset table, replacing a stale document; cheap when they are current. Runs in the
    caller's transaction."""
    table = sql.Identifier(dataset.table_name)
    _ensure_document(conn, dataset)
    _ensure_ranking_table(conn, dataset)
    wanted = search_index_name(dataset)
    stale = conn.execute(
        "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() "
        "AND tablename = %s AND indexname LIKE %s",
        (dataset.table_name, dataset.table_name[:44].replace("_", r"\_") + r"%\_\_fts%"),
    ).fetchall()
    for (name,) in stale:
        if name != wanted:
            log.info("dropping search index %s: the search document of %s changed",
                     name, dataset.id)
            conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(name)))
    if wanted:
        conn.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING gin ({})").format(
            sql.Identifier(wanted), table, sql.Identifier(DOCUMENT_COLUMN)))
    if dataset.geometry is not None:
        point = point_sql(_quote(dataset.geometry.longitude), _quote(dataset.geometry.latitude))
        conn.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING gist (({}))").format(
            sql.Identifier(point_index_name(dataset)), table, sql.SQL(point)))


def _ensure_document(conn: Conn, dataset: Dataset) -> None:
    """Add (or compute again) the stored ``_document`` column for the current text
    columns; drop it when the dataset has none."""
    table = sql.Identifier(dataset.table_name)
    column = sql.Identifier(DOCUMENT_COLUMN)
    document = search_document_sql(dataset)
    row = conn.execute(
        "SELECT col_description(attrelid, attnum) FROM pg_attribute "
        "WHERE attrelid = to_regclass(%s) AND attname = %s AND NOT attisdropped",
        (dataset.table_name, DOCUMENT_COLUMN)).fetchone()
    digest = None if document is None else _document_digest(document)
    if row is not None and row[0] == digest:
        return
    if row is not None:
        log.info("recomputing the search document of %s: its text columns changed "
                 "(this rewrites the table once)", dataset.id)
        conn.execute(sql.SQL("ALTER TABLE {} DROP COLUMN {}").format(table, column))
    if document is None or digest is None:
        return
    conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN {} tsvector GENERATED ALWAYS AS ({}) "
                         "STORED").format(table, column, sql.SQL(document)))
    conn.execute(sql.SQL("COMMENT ON COLUMN {}.{} IS {}").format(
        table, column, sql.Literal(digest)))
    # The planner's estimate of how many records a search matches (which decides whether a
    # page's total is counted) needs statistics on the new column.
    conn.execute(sql.SQL("ANALYZE {} ({})").format(table, column))


def _ensure_ranking_table(conn: Conn, dataset: Dataset) -> None:
    """Create (or fill again) the ranking table and its triggers; drop them when the
    dataset has no text columns."""
    table = sql.Identifier(dataset.table_name)
    name = ranking_table_name(dataset.table_name)
    ranking = sql.Identifier(name)
    document = search_document_sql(dataset)
    triggers = [(_ranking_trigger(event), event, transition)
                for event, transition in _RANKING_TRIGGERS.items()]
    if document is None:
        for trigger, _, _ in triggers:
            conn.execute(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
                sql.Identifier(trigger), table))
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ranking))
        return
    order = ", ".join(_quote(column) for column in dataset.search_order)

    conn.execute(sql.SQL("""
        CREATE TABLE IF NOT EXISTS {} (
            _key       text PRIMARY KEY,
            _document  tsvector NOT NULL
        )""").format(ranking))
    index_name = _beside(dataset.table_name, "ranking_document")
    index = sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING gin (_document)").format(
        sql.Identifier(index_name), ranking)

    # The table's comment is the digest of the documents it holds and of their order: a
    # new table, one filled before the dataset's text columns or search order changed, or
    # one whose triggers went missing (writes may have passed it by) is filled again from
    # the dataset table, and its triggers made again.
    digest = _document_digest(f"{document} ORDER BY {order}")
    row = conn.execute("SELECT obj_description(to_regclass(%s), 'pg_class')",
                       (name,)).fetchone()
    present = {str(found[0]) for found in conn.execute(
        "SELECT tgname FROM pg_trigger WHERE tgrelid = to_regclass(%s) AND NOT tgisinternal",
        (dataset.table_name,))}
    current = (row is not None and row[0] == digest
               and all(trigger in present for trigger, _, _ in triggers))
    if current:
        conn.execute(index)
        return
    for trigger, event, transition in triggers:
        conn.execute(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
            sql.Identifier(trigger), table))
        conn.execute(sql.SQL(
            "CREATE TRIGGER {} AFTER {} ON {} {} FOR EACH STATEMENT "
            "EXECUTE FUNCTION stldata_sync_ranking({}, {})").format(
            sql.Identifier(trigger), sql.SQL(event), table, sql.SQL(transition),
            sql.Literal(name), sql.Literal(order)))
    log.info("filling the ranking table of %s from its %s records", dataset.id,
             dataset.table_name)
    # The index is built after the rows are in: filled row by row, a GIN index keeps a
    # pending list that made every search of a million records 60% slower.
    conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(index_name)))
    conn.execute(sql.SQL("TRUNCATE {}").format(ranking))
    _fill_ranking(conn, dataset)
    conn.execute(index)
    conn.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(ranking, sql.Literal(digest)))
    conn.execute(sql.SQL("ANALYZE {}").format(ranking))
