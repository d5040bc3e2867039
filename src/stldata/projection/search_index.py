"""Indexes that serve the read API's full-text and geographic queries.

Full-text search (``q=``) matches one document per record: the dataset's text columns
joined with spaces, as an English ``tsvector``. The GIN index is built on exactly the SQL
expression that :func:`search_document_sql` returns, and the API queries with the same
text, so PostgreSQL can match the expression to the index. The index name carries a
digest of the column list: when a dataset gains a text column (a catalog edit, or an
``auto`` column pinned as text), a new index replaces the old one.

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


def search_index_name(dataset: Dataset) -> str | None:
    document = search_document_sql(dataset)
    if document is None:
        return None
    digest = hashlib.sha256(document.encode()).hexdigest()[:10]
    return f"{dataset.table_name[:45]}__fts_{digest}"


#: Degrees to the unit of indexed points; written as SQL text in both the index and the
#: queries, so that the planner sees the same expression.
POINT_SCALE_SQL = "1000000.0"
POINT_SCALE = 1_000_000.0


def point_sql(longitude: str, latitude: str) -> str:
    """The indexed point expression over two (quoted) column references."""
    return f"point({longitude} * {POINT_SCALE_SQL}, {latitude} * {POINT_SCALE_SQL})"


def point_index_name(dataset: Dataset) -> str:
    return f"{dataset.table_name[:50]}__point_udeg"


def ensure_query_indexes(conn: Conn, dataset: Dataset) -> None:
    """Create the search and point indexes of a dataset table, dropping a stale search
    index; cheap when they exist. Runs in the caller's transaction."""
    table = sql.Identifier(dataset.table_name)
    wanted = search_index_name(dataset)
    stale = conn.execute(
        "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() "
        "AND tablename = %s AND indexname LIKE %s",
        (dataset.table_name, dataset.table_name[:45].replace("_", r"\_") + r"\_\_fts\_%"),
    ).fetchall()
    for (name,) in stale:
        if name != wanted:
            log.info("dropping search index %s: the text columns of %s changed",
                     name, dataset.id)
            conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(name)))
    document = search_document_sql(dataset)
    if wanted and document:
        conn.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING gin (({}))").format(
            sql.Identifier(wanted), table, sql.SQL(document)))
    if dataset.geometry is not None:
        point = point_sql(_quote(dataset.geometry.longitude), _quote(dataset.geometry.latitude))
        conn.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING gist (({}))").format(
            sql.Identifier(point_index_name(dataset)), table, sql.SQL(point)))
