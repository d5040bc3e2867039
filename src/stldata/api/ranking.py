"""The best page of a full-text search, read from the dataset's ranking table.

Ranking needs each match's document, which a GIN index does not hold, so ranking on the
dataset table reads every matching row, about 1 KB each. The ranking table beside it holds
only ``(_key, _document)`` (see :mod:`stldata.projection.search_index`): a search with no
other filter ranks its matches there, keeps the best ``limit + 1`` (after the cursor),
and joins only those back to their records. The page, its order and its cursors are the
same as on the dataset table.

The search is turned into a ``tsquery`` once, in its own statement, and the page's
statement takes it as a ``tsquery`` parameter (see
:func:`stldata.api.query.search_filter`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from stldata.api.paging import build_select, order_keys
from stldata.api.query import RANK, RecordQuery, parsed_search
from stldata.projection.search_index import ranking_table_name


def ranked_page_select(conn: sa.Connection, table: sa.FromClause, query: RecordQuery,
                       columns: Sequence[sa.ColumnElement[Any]]) -> sa.Select[Any] | None:
    """The statement of a ranked search page read through the ranking table, or None when
    the query is not one (another filter, another order, a past snapshot) or the table
    has no ranking table yet."""
    if (query.search is None or not isinstance(table, sa.Table) or len(query.filters) != 1
            or [name for name, _ in query.order] != [RANK]):
        return None
    ranking_name = ranking_table_name(table.name)
    exists = conn.execute(sa.text("SELECT to_regclass(:ranking) IS NOT NULL"),
                          {"ranking": ranking_name}).scalar()
    if not exists:
        return None

    ranking = sa.table(ranking_name, sa.column("_key", sa.Text),
                       sa.column("_document", postgresql.TSVECTOR))
    tsquery = query.tsquery if query.tsquery is not None else parsed_search(conn, query.search)
    search = sa.cast(sa.bindparam("ranked_search", tsquery, type_=postgresql.TSQUERY),
                     postgresql.TSQUERY)
    rank = sa.cast(sa.func.ts_rank(ranking.c._document, search), postgresql.DOUBLE_PRECISION)
    # The same order and cursor as the page on the dataset table, over the narrow rows.
    narrow = _with(query, filters=[ranking.c._document.op("@@", is_comparison=True)(search)],
                   rank=rank)
    best = build_select(ranking, narrow, [ranking.c._key, rank.label(RANK)]).subquery("best")

    page = _with(query, filters=[], rank=best.c[RANK])
    chosen = [best.c[RANK].label(RANK) if getattr(c, "name", None) == RANK else c
              for c in columns]
    ordering = [column.desc() if descending else column.asc()
                for column, descending in order_keys(page, lambda n: page.column(table, n))]
    return (sa.select(*chosen).select_from(table.join(best, table.c._key == best.c._key))
            .order_by(*ordering))


def _with(query: RecordQuery, *, filters: list[sa.ColumnElement[bool]],
          rank: sa.ColumnElement[Any]) -> RecordQuery:
    return replace(query, filters=filters, computed={**query.computed, RANK: rank})
