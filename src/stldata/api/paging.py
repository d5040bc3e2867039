"""Keyset pages of records and their totals, shaped so PostgreSQL can use its indexes.

A page is ordered by the query's order columns and then by the record key, in the
direction of the last order column: ``order=-date_occur`` is ``date_occur DESC, _key
DESC``, which is exactly the dataset's ``(date_occur, _key)`` index read backwards, so
the first page of a million records is read from the index, not sorted. Nulls always sort
last. PostgreSQL reads an index backwards with nulls *first*, so a descending page is
asked in two parts: the records with a value, in index order, then those without.

``total`` is exact up to :data:`EXACT_COUNT_LIMIT` matches and the planner's estimate
beyond (flagged), so no page pays for a full COUNT. When the planner expects a small
result, the matches are gathered once (at most ``EXACT_COUNT_LIMIT + 1`` of them) and both
the count and the page come from them; when it expects somewhat more than the limit, the
page is read in index order with a count that stops after the limit in the same
statement; when it expects far more, the count is skipped and the page alone is read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa

if TYPE_CHECKING:
    from stldata.api.query import RecordQuery

#: Up to this many matches ``total`` is exact; above it, the planner's estimate.
EXACT_COUNT_LIMIT = 10_000
#: A query the planner expects to match more than this many times the exact limit is
#: not counted at all. Planner estimates for a few filters are rarely off by a factor of
#: five; when one is, the total is still flagged as an estimate.
TRUSTED_ESTIMATE_FACTOR = 5

OrderKey = tuple[sa.ColumnElement[Any], bool]  # (column, descending)


def filtered_select(table: sa.FromClause, query: RecordQuery,
                    columns: Sequence[sa.ColumnElement[Any]]) -> sa.Select[Any]:
    return sa.select(*columns).select_from(table).where(*query.filters)


def order_keys(query: RecordQuery, column: Callable[[str], sa.ColumnElement[Any]]
               ) -> list[OrderKey]:
    """The page order: the order columns, then the record key in the direction of the
    last of them, so that a one-column order is its ``(column, _key)`` index."""
    keys = [(column(name), descending) for name, descending in query.order]
    key_descending = query.key_descending
    if key_descending is None:
        key_descending = query.order[-1][1] if query.order else False
    keys.append((column("_key"), key_descending))
    return keys


def build_select(table: sa.FromClause, query: RecordQuery,
                 columns: Sequence[sa.ColumnElement[Any]], *, paged: bool = True
                 ) -> sa.Select[Any]:
    """One statement for the page (``limit + 1`` rows, to know if there is a next one), or,
    with ``paged=False``, for every match in page order (exports)."""
    keys = order_keys(query, lambda name: query.column(table, name))
    statement = filtered_select(table, query, columns)
    if query.cursor is not None and paged:
        statement = statement.where(_after_cursor(keys, query.cursor))
    statement = statement.order_by(*_ordering(keys))
    return statement.limit(query.limit + 1) if paged else statement


def page_selects(table: sa.FromClause, query: RecordQuery,
                 columns: Sequence[sa.ColumnElement[Any]]) -> list[sa.Select[Any]]:
    """Statements whose rows, read in turn until ``limit + 1`` are found, are the page.

    One statement, except when the first order column is a table column in descending
    order: then the records with a value come first, read as the index is read backwards,
    and the records without one after them.
    """
    return list(_page_statements(table, query, columns))


def _page_statements(table: sa.FromClause, query: RecordQuery,
                     columns: Sequence[sa.ColumnElement[Any]]) -> Iterator[sa.Select[Any]]:
    """:func:`page_selects`, each built only when the page needs it: the records without
    a value are seldom read, and building a statement costs more than running this one."""
    keys = order_keys(query, lambda name: query.column(table, name))
    first, descending = keys[0]
    if len(keys) == 1 or not descending or query.order[0][0] in query.computed:
        yield build_select(table, query, columns)
        return

    cursor = query.cursor
    if cursor is None or cursor[0] is not None:
        valued = filtered_select(table, query, columns).where(first.is_not(None))
        if cursor is not None:
            valued = valued.where(_after_cursor(keys, cursor, valued_first=True))
        # Plain DESC (nulls first by default) is the backward index order; no nulls here.
        ordering = [first.desc(), *_ordering(keys[1:])]
        yield valued.order_by(*ordering).limit(query.limit + 1)
    rest = keys[1:]
    unvalued = filtered_select(table, query, columns).where(first.is_(None))
    if cursor is not None and cursor[0] is None:
        unvalued = unvalued.where(_after_cursor(rest, cursor[1:]))
    yield unvalued.order_by(*_ordering(rest)).limit(query.limit + 1)


def read_page(conn: sa.Connection, table: sa.FromClause, query: RecordQuery,
              columns: Sequence[sa.ColumnElement[Any]],
              *, exact_limit: int = EXACT_COUNT_LIMIT, table_rows: float | None = None
              ) -> tuple[list[str], list[Any], int, bool]:
    """(column names, up to ``limit + 1`` rows, total, total is an estimate).

    ``table_rows``: the table's ``pg_class.reltuples`` when already read (with the
    request's validators), so the estimate of an unfiltered page costs no round trip.
    """
    estimate = planner_estimate(conn, table, query, table_rows=table_rows)
    if estimate <= exact_limit:
        found = _page_from_matches(conn, table, query, columns, exact_limit)
        if found is not None:
            return found
    # Expected to be over the exact limit, though not far over: the matches are counted
    # (at most ``exact_limit + 1`` of them) within the page's own statement, read in
    # index order, rather than gathered and sorted only to find there are too many.
    counting = exact_limit < estimate <= TRUSTED_ESTIMATE_FACTOR * exact_limit
    total = _bounded_count(table, query, exact_limit).label(_TOTAL) if counting else None

    # Imported here: the ranking module builds its statements with this one's.
    from stldata.api.ranking import ranked_page_select

    ranked = ranked_page_select(conn, table, query, columns)
    names: list[str] = []
    rows: list[Any] = []
    statements = [ranked] if ranked is not None else _page_statements(table, query, columns)
    for statement in statements:
        # Rows keep the trailing _total column; records are read by the names' positions.
        result = conn.execute(statement if total is None else statement.add_columns(total))
        names = [n for n in result.keys() if n != _TOTAL]
        rows += result.fetchmany(query.limit + 1 - len(rows))
        if len(rows) > query.limit:
            break
    if counting:
        counted = int(rows[0]._mapping[_TOTAL]) if rows else int(
            conn.execute(sa.select(_bounded_count(table, query, exact_limit))).scalar_one())
        if counted <= exact_limit:
            return names, rows, counted, False
    if query.cursor is None and len(rows) <= query.limit:
        return names, rows, len(rows), False  # the whole result fits on the first page
    return names, rows, max(estimate, exact_limit + 1), True


#: The label of the count of matches read along with a page.
_TOTAL = "_total"


def _bounded_count(table: sa.FromClause, query: RecordQuery, exact_limit: int
                   ) -> sa.ScalarSelect[int]:
    """The number of matches, counting stops after ``exact_limit + 1``."""
    bounded = filtered_select(table, query, [sa.literal(1)]).limit(exact_limit + 1)
    return sa.select(sa.func.count()).select_from(bounded.subquery()).scalar_subquery()


def _page_from_matches(conn: sa.Connection, table: sa.FromClause, query: RecordQuery,
                       columns: Sequence[sa.ColumnElement[Any]], exact_limit: int
                       ) -> tuple[list[str], list[Any], int, bool] | None:
    """The page and an exact total from the matches gathered once, or None when there
    are more than ``exact_limit`` of them (their order then needs the whole result)."""
    matches = filtered_select(table, query, columns).limit(exact_limit + 1).cte(
        "matches").prefix_with("MATERIALIZED", dialect="postgresql")
    total = sa.select(sa.func.count()).select_from(matches).scalar_subquery()
    keys = order_keys(query, lambda name: matches.c[name])
    page = sa.select(*matches.c, total.label("_total"))
    if query.cursor is not None:
        page = page.where(_after_cursor(keys, query.cursor))
    result = conn.execute(page.order_by(*_ordering(keys)).limit(query.limit + 1))
    # Rows keep the trailing _total column; records are read by the names' positions.
    names = [n for n in result.keys() if n != "_total"]
    rows: list[Any] = []
    rows += result.all()
    if rows:
        counted = int(rows[0]._mapping["_total"])
    else:  # a cursor past the last match: count on its own
        counted = count_matches(conn, table, query, exact_limit=exact_limit)[0]
    if counted > exact_limit:
        return None
    return names, rows, counted, False


def count_matches(conn: sa.Connection, table: sa.FromClause, query: RecordQuery,
                  *, exact_limit: int = EXACT_COUNT_LIMIT) -> tuple[int, bool]:
    """(total, is_estimate): exact when at most ``exact_limit`` records match (counting
    stops there), else the planner's row estimate, never below ``exact_limit + 1``. A
    query the planner expects to match far more is not counted."""
    estimate = planner_estimate(conn, table, query)
    if estimate > TRUSTED_ESTIMATE_FACTOR * exact_limit:
        return estimate, True
    counted = int(conn.execute(sa.select(_bounded_count(table, query, exact_limit)))
                  .scalar_one())
    if counted <= exact_limit:
        return counted, False
    return max(estimate, exact_limit + 1), True


def planner_estimate(conn: sa.Connection, table: sa.FromClause, query: RecordQuery,
                     *, table_rows: float | None = None) -> int:
    """How many records PostgreSQL expects the filters to match (no rows are read);
    ``table_rows`` is the table's ``reltuples`` when the caller has already read it."""
    if not query.filters and isinstance(table, sa.Table):
        estimate = table_rows if table_rows is not None else conn.execute(sa.text(
            "SELECT reltuples FROM pg_class WHERE oid = to_regclass(:t)"),
            {"t": table.name}).scalar()
        # -1 (never analyzed) or 0 (analyzed while empty): ask the planner instead.
        if estimate is not None and estimate > 0:
            return int(estimate)
    statement = filtered_select(table, query, [sa.literal(1)])
    compiled = statement.compile(dialect=conn.dialect,
                                 compile_kwargs={"render_postcompile": True})
    plan = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + str(compiled),
                                compiled.params).scalar()
    if isinstance(plan, str):
        plan = orjson.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"]) if plan else 0


def _ordering(keys: Sequence[OrderKey]) -> list[sa.UnaryExpression[Any]]:
    ordering = []
    for column, descending in keys:
        term = column.desc() if descending else column.asc()
        # The record key is never null; a NULLS clause on it would hide the index order.
        ordering.append(term if column.key == "_key" else term.nulls_last())
    return ordering


def _after_cursor(keys: Sequence[OrderKey], cursor: Sequence[Any],
                  *, valued_first: bool = False) -> sa.ColumnElement[bool]:
    """Rows strictly after the cursor in page order (nulls last in every column).

    ``valued_first``: the first column is known not to be null, and when the order is
    one column and the key, the condition is a row comparison, which PostgreSQL turns
    into an index range.
    """
    if valued_first and len(keys) == 2 and keys[0][1] == keys[1][1]:
        (first, descending), (key, _) = keys
        bound = sa.tuple_(sa.literal(cursor[0], first.type), sa.literal(cursor[1], key.type))
        pair = sa.tuple_(first, key)
        return pair < bound if descending else pair > bound
    alternatives = []
    for i, (column, descending) in enumerate(keys):
        prefix = [_equal(c, cursor[j]) for j, (c, _) in enumerate(keys[:i])]
        alternatives.append(sa.and_(*prefix, _after(column, cursor[i], descending)))
    return sa.or_(*alternatives)


def _after(column: sa.ColumnElement[Any], value: Any, descending: bool
           ) -> sa.ColumnElement[bool]:
    """Rows strictly after ``value`` in this column's order, nulls sorting last."""
    if value is None:
        return sa.false()
    strictly = column < value if descending else column > value
    return sa.or_(strictly, column.is_(None))


def _equal(column: sa.ColumnElement[Any], value: Any) -> sa.ColumnElement[bool]:
    return column.is_(None) if value is None else column == value
