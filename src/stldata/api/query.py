"""Parse record-list query strings into safe SQLAlchemy queries.

Filters are ``col=value``, ``col__op=value`` or ``col__part__op=value`` on the dataset's
typed columns (``part`` is a date part of a date, month or datetime column); ``or=``
groups alternatives; ``q`` is ranked full-text search; ``bbox``, ``near``/``radius_m``
and ``within`` are geographic (see :mod:`stldata.api.geo`); ``fields`` picks columns;
``order`` lists columns (``-`` for descending); pagination is keyset-based on the order
columns plus the record key, carried in an opaque ``cursor``. Every value is bound as a
parameter; column names come only from the catalog.
"""

from __future__ import annotations

import base64
import binascii
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from stldata.api import geo
from stldata.api.digits import is_ascii_digits, is_whole_number
from stldata.api.problems import BadParameter, NotFound
from stldata.catalog import QUERY_PARAMETERS, Dataset
from stldata.projection.search_index import (
    DOCUMENT_COLUMN,
    TEXT_SEARCH_CONFIG,
    search_document_sql,
)

COMPARISONS: dict[str, Callable[[Any, Any], sa.ColumnElement[bool]]] = {
    "eq": operator.eq, "ne": operator.ne, "gt": operator.gt, "gte": operator.ge,
    "lt": operator.lt, "lte": operator.le,
}
#: Text matching: (prefix wildcard, suffix wildcard, case-insensitive).
TEXT_MATCHES: dict[str, tuple[bool, bool, bool]] = {
    "contains": (True, True, False), "icontains": (True, True, True),
    "startswith": (False, True, False), "istartswith": (False, True, True),
    "endswith": (True, False, False), "iendswith": (True, False, True),
}
OPERATORS = (*COMPARISONS, "in", *TEXT_MATCHES, "isnull")
#: Date parts: PostgreSQL's extract() field and the valid range of values. dow is
#: 0 (Sunday) to 6 (Saturday), hours are 0-23 in the dataset's time zone.
DATE_PARTS: dict[str, tuple[str, int, int]] = {
    "year": ("year", 1, 9999), "month": ("month", 1, 12), "day": ("day", 1, 31),
    "dow": ("dow", 0, 6), "hour": ("hour", 0, 23),
}
#: Which parts make sense for each temporal column type.
PARTS_BY_TYPE = {
    "datetime": ("year", "month", "day", "dow", "hour"),
    "date": ("year", "month", "day", "dow"),
    "month": ("year", "month"),
}
FORMATS = ("json", "ndjson", "csv", "geojson")
RESERVED = QUERY_PARAMETERS
#: Computed columns that ``order`` accepts when their parameter is given.
RANK, DISTANCE = "_rank", "_distance"
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_IN_VALUES = 1000
MAX_OR_TERMS = 50
#: Limits of a full-text search (``q``, ``$q``, ``/search``).
MAX_SEARCH_CHARS = 500
MAX_SEARCH_TERMS = 32

_SA_TYPES: dict[str, Any] = {
    "text": sa.Text, "integer": sa.BigInteger, "number": sa.Float, "boolean": sa.Boolean,
    "date": sa.Date, "datetime": sa.DateTime(timezone=True), "month": sa.Date,
    "geometry": postgresql.JSONB,
}


def dataset_table(dataset: Dataset, metadata: sa.MetaData) -> sa.Table:
    """The SQLAlchemy view of a dataset's table, built from the catalog, not reflected."""
    known = metadata.tables.get(dataset.table_name)
    if known is not None and set(known.c.keys()) >= set(dataset.column_types()):
        return known
    if known is not None:
        metadata.remove(known)  # an auto column has been typed since
    columns = [sa.Column(name, _SA_TYPES[type_]) for name, type_ in
               dataset.column_types().items()]
    return sa.Table(
        dataset.table_name, metadata,
        sa.Column("_key", sa.Text, primary_key=True),
        sa.Column("_snapshot_id", sa.BigInteger),
        sa.Column("_partition", sa.Text),
        sa.Column("_line", sa.Integer),
        sa.Column("_hash", sa.Text),
        sa.Column("_source", sa.JSON),
        *columns,
    )


def records_from(conn: sa.Connection, dataset: Dataset, metadata: sa.MetaData,
                 args: Mapping[str, list[str]]) -> sa.FromClause:
    """The table the records and export endpoints read: the current records, or with
    ``as_of`` the records as they were at a snapshot or moment (time travel)."""
    if "as_of" in args:
        value = _single(args, "as_of")
        try:
            from stldata.api import timetravel  # type: ignore[attr-defined,unused-ignore]
        except ImportError:
            raise BadParameter("as_of", "time travel is not available on this server"
                               ) from None
        snapshot_id = timetravel.resolve_as_of(conn, dataset, value)
        from_clause: sa.FromClause = timetravel.table_as_of(dataset, snapshot_id, metadata)
        return from_clause
    # A dataset added to the catalog is served once the projector has created its table;
    # before that, a clear 404 rather than a failed query. Tables are never dropped, so
    # one that exists is remembered.
    known: set[str] = metadata.info.setdefault("stldata.existing_tables", set())
    if dataset.table_name not in known:
        exists = conn.execute(sa.text("SELECT to_regclass(:t) IS NOT NULL"),
                              {"t": dataset.table_name}).scalar()
        if not exists:
            raise NotFound(f"dataset {dataset.id!r} has no records yet: the projection has "
                           "not created its table")
        known.add(dataset.table_name)
    return dataset_table(dataset, metadata)


#: The form a query-string value of each column type takes, for error messages.
VALUE_FORMS = {
    "integer": "a whole number such as 42",
    "number": "a number such as 3.5",
    "boolean": "true or false",
    "date": "an ISO-8601 date such as 2017-01-31",
    "month": "an ISO-8601 month such as 2017-01",
    "datetime": "an ISO-8601 date or date-time such as 2017-01-31T14:30",
}


class _OutOfForm(ValueError):
    """Our own reason a value is refused (Python's parsers' messages are not shown)."""


def parse_value(dataset: Dataset, column: str, type_: str, text: str, param: str) -> Any:
    """Turn a query-string value into a value of the column's type, or a 400."""
    if "\x00" in text:
        raise BadParameter(param, "contains a NUL character, which no stored value has")
    try:
        if type_ == "integer":
            if not is_whole_number(text):  # int() also reads "１０" and "1_0"
                raise ValueError(text)
            value = int(text)
            if not -(2**63) <= value < 2**63:
                raise _OutOfForm("out of range for a 64-bit integer")
            return value
        if type_ == "number":
            if not text.isascii() or "_" in text:  # float() also reads "１.5" and "1_0"
                raise ValueError(text)
            number = float(text)
            if number != number or number in (float("inf"), float("-inf")):
                raise _OutOfForm("not a finite number")
            return number
        if type_ == "boolean":
            return _boolean(text)
        if type_ == "date":
            return date.fromisoformat(text)
        if type_ == "month":
            return date.fromisoformat(text + "-01" if len(text) == 7 else text)
        if type_ == "datetime":
            moment = (datetime.fromisoformat(text) if "T" in text or " " in text
                      else datetime.combine(date.fromisoformat(text), datetime.min.time()))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=ZoneInfo(dataset.timezone))
            return moment
        if type_ == "geometry":
            raise _OutOfForm("geometry columns accept only __isnull")
    except ValueError as exc:
        why = str(exc) if isinstance(exc, _OutOfForm) else f"expected {VALUE_FORMS[type_]}"
        raise BadParameter(param, f"{text!r} is not a valid {type_} for column "
                                  f"{column!r} ({why})") from None
    return text


def _boolean(text: str) -> bool:
    folded = text.casefold()
    if folded in ("true", "1", "yes", "y"):
        return True
    if folded in ("false", "0", "no", "n"):
        return False
    raise _OutOfForm("expected true or false")


@dataclass
class RecordQuery:
    filters: list[sa.ColumnElement[bool]] = field(default_factory=list)
    order: list[tuple[str, bool]] = field(default_factory=list)  # (column, descending)
    limit: int = DEFAULT_LIMIT
    cursor: list[Any] | None = None
    #: Columns to return besides ``_key`` (None: all of them).
    fields: list[str] | None = None
    #: The direction of the record key that ends every order; None: that of the last
    #: order column (so a one-column order is its index read forwards or backwards).
    key_descending: bool | None = None
    #: Computed columns, by name: ``_rank`` with ``q``, ``_distance`` (metres) with ``near``.
    computed: dict[str, sa.ColumnElement[Any]] = field(default_factory=dict)
    format: str = "json"
    #: The ``q`` text, whose match is among the filters (a ranked page may read it from
    #: the ranking table instead: :mod:`stldata.api.ranking`).
    search: str | None = None
    #: ``search`` parsed by PostgreSQL, when the query was parsed with a connection.
    tsquery: str | None = None

    def column(self, table: sa.FromClause, name: str) -> sa.ColumnElement[Any]:
        if name in self.computed:
            return self.computed[name]
        return table.c[name]


def _single(args: Mapping[str, list[str]], param: str) -> str:
    values = args[param]
    if len(values) > 1:
        raise BadParameter(param, "given more than once")
    return values[0]


def _like_pattern(text: str, prefix: bool, suffix: bool) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return ("%" if prefix else "") + escaped + ("%" if suffix else "")


@dataclass(frozen=True)
class _Spec:
    column: str
    part: str | None
    op: str


def _parse_spec(spec: str, types: Mapping[str, str], param: str) -> _Spec:
    pieces = spec.split("__")
    column, rest = pieces[0], pieces[1:]
    if any(not p for p in rest):
        raise BadParameter(param, "has an empty '__' segment; write col, col__op or "
                                  "col__part__op")
    if column not in types:
        raise BadParameter(param, f"unknown column {column!r}; columns are "
                                  f"{', '.join(types)}")
    part = None
    if rest and rest[0] in DATE_PARTS:
        part, rest = rest[0], rest[1:]
        allowed = PARTS_BY_TYPE.get(types[column], ())
        if part not in allowed:
            raise BadParameter(param, f"date part {part!r} does not apply to the "
                                      f"{types[column]} column {column!r}"
                               + (f"; parts are {', '.join(allowed)}" if allowed else ""))
    if len(rest) > 1:
        raise BadParameter(param, f"too many '__' segments in {spec!r}")
    op = rest[0] if rest else "eq"
    if op not in OPERATORS:
        raise BadParameter(param, f"unknown operator {op!r}; operators are "
                                  f"{', '.join(OPERATORS)}; date parts are "
                                  f"{', '.join(DATE_PARTS)}")
    return _Spec(column, part, op)


def _part_value(spec: _Spec, text: str, param: str) -> int:
    assert spec.part is not None
    _, low, high = DATE_PARTS[spec.part]
    if not re.fullmatch(r"[+-]?[0-9]{1,5}", text.strip()) or not low <= int(text) <= high:
        raise BadParameter(param, f"{text!r} is not a valid {spec.part} ({low}-{high})")
    return int(text)


def _year_start(dataset: Dataset, type_: str, year: int) -> date | None:
    """First instant of a year in the column's terms, or None past year 9999."""
    if year > 9999:
        return None
    if type_ == "datetime":
        return datetime(year, 1, 1, tzinfo=ZoneInfo(dataset.timezone))
    return date(year, 1, 1)


def _year_filter(dataset: Dataset, col: sa.ColumnElement[Any], type_: str, op: str,
                 year: int) -> sa.ColumnElement[bool]:
    """A year comparison as a range on the column itself, so its index serves it."""
    start, end = _year_start(dataset, type_, year), _year_start(dataset, type_, year + 1)
    after_start = col >= start
    before_end = col < end if end is not None else col.is_not(None)
    if op == "eq":
        return sa.and_(after_start, before_end)
    if op == "ne":
        return sa.not_(sa.and_(after_start, before_end))
    if op == "gte":
        return after_start
    if op == "gt":
        return col >= end if end is not None else sa.false()
    if op == "lt":
        return col < start
    return before_end  # lte


def _part_expression(dataset: Dataset, col: sa.ColumnElement[Any], type_: str,
                     part: str) -> sa.ColumnElement[Any]:
    local = sa.func.timezone(dataset.timezone, col) if type_ == "datetime" else col
    return sa.extract(DATE_PARTS[part][0], local)


def parse_filter(dataset: Dataset, table: sa.FromClause, spec_text: str, values: list[str],
                 param: str) -> list[sa.ColumnElement[bool]]:
    """Predicates of one filter parameter (each of its values), or a 400 naming it."""
    types = dataset.column_types()
    spec = _parse_spec(spec_text, types, param)
    type_ = types[spec.column]
    col: sa.ColumnElement[Any] = table.c[spec.column]
    predicates: list[sa.ColumnElement[bool]] = []
    for text in values:
        if spec.op == "isnull":
            if spec.part:
                raise BadParameter(param, "isnull applies to the column, not a date part")
            try:
                predicates.append(col.is_(None) if _boolean(text) else col.is_not(None))
            except ValueError:
                raise BadParameter(param, f"{text!r}: isnull takes true or false") from None
            continue
        if type_ == "geometry":
            raise BadParameter(param, f"geometry column {spec.column!r} accepts only "
                                      "__isnull; use bbox, near or within to filter by place")
        if spec.op in TEXT_MATCHES:
            if type_ != "text" or spec.part:
                raise BadParameter(param, f"operator {spec.op!r} applies to text columns; "
                                          f"{spec.column!r} is {type_}")
            if "\x00" in text:
                raise BadParameter(param, "contains a NUL character, which no stored "
                                          "value has")
            prefix, suffix, insensitive = TEXT_MATCHES[spec.op]
            pattern = _like_pattern(text, prefix, suffix)
            predicates.append(col.ilike(pattern, escape="\\") if insensitive
                              else col.like(pattern, escape="\\"))
            continue
        if spec.part is not None:
            predicates.append(_part_filter(dataset, col, type_, spec, text, param))
            continue
        if spec.op == "in":
            items = text.split(",")
            if len(items) > MAX_IN_VALUES:
                raise BadParameter(param, f"more than {MAX_IN_VALUES} values")
            predicates.append(col.in_(
                [parse_value(dataset, spec.column, type_, t, param) for t in items]))
            continue
        if type_ == "boolean" and spec.op not in ("eq", "ne"):
            raise BadParameter(param, f"operator {spec.op!r} does not apply to the yes/no "
                                      f"column {spec.column!r}; use eq or ne")
        value = parse_value(dataset, spec.column, type_, text, param)
        predicates.append(COMPARISONS[spec.op](col, value))
    return predicates


def _part_filter(dataset: Dataset, col: sa.ColumnElement[Any], type_: str, spec: _Spec,
                 text: str, param: str) -> sa.ColumnElement[bool]:
    assert spec.part is not None
    if spec.op == "in":
        items = text.split(",")
        if len(items) > MAX_IN_VALUES:
            raise BadParameter(param, f"more than {MAX_IN_VALUES} values")
        numbers = [_part_value(spec, t, param) for t in items]
        if spec.part == "year":
            return sa.or_(*(_year_filter(dataset, col, type_, "eq", n) for n in numbers))
        return _part_expression(dataset, col, type_, spec.part).in_(numbers)
    if spec.op not in COMPARISONS:
        raise BadParameter(param, f"operator {spec.op!r} does not apply to a date part")
    number = _part_value(spec, text, param)
    if spec.part == "year":
        return _year_filter(dataset, col, type_, spec.op, number)
    return COMPARISONS[spec.op](_part_expression(dataset, col, type_, spec.part), number)


def _split_or(text: str) -> list[str]:
    """Terms of an ``or`` value: separated by ``|``; ``\\|`` and ``\\\\`` escape."""
    terms, current, chars = [], [], iter(text)
    for ch in chars:
        if ch == "\\":
            current.append(next(chars, "\\"))
        elif ch == "|":
            terms.append("".join(current))
            current = []
        else:
            current.append(ch)
    terms.append("".join(current))
    return terms


def parse_or(dataset: Dataset, table: sa.FromClause, text: str) -> sa.ColumnElement[bool]:
    terms = _split_or(text)
    if len(terms) > MAX_OR_TERMS:
        raise BadParameter("or", f"more than {MAX_OR_TERMS} alternatives")
    alternatives = []
    for term in terms:
        spec, sep, value = term.partition(":")
        if not sep or not spec:
            raise BadParameter("or", f"term {term!r} is not col[__op]:value; terms are "
                                     "separated by |")
        if spec.split("__")[0] in RESERVED:
            raise BadParameter("or", f"term {term!r}: only column filters can be OR'ed")
        try:
            alternatives.extend(parse_filter(dataset, table, spec, [value], "or"))
        except BadParameter as exc:
            raise BadParameter("or", f"term {term!r}: {exc.reason}") from None
    return sa.or_(*alternatives)


def search_document(dataset: Dataset, source: sa.FromClause | None = None
                    ) -> sa.ColumnElement[Any]:
    """The record's full-text document: the indexed column stored by the projection when
    reading the dataset's table, else (records as of a past snapshot) the expression that
    computes it."""
    document = search_document_sql(dataset)
    if document is None:
        raise BadParameter("q", f"dataset {dataset.id!r} has no text columns to search")
    if isinstance(source, sa.Table):
        return sa.literal_column(f'"{DOCUMENT_COLUMN}"', postgresql.TSVECTOR)
    return sa.literal_column(document, postgresql.TSVECTOR)


def _check_search(text: str) -> None:
    if not text.strip():
        raise BadParameter("q", "is empty")
    if "\x00" in text:
        raise BadParameter("q", "contains a NUL character")
    # PostgreSQL's work grows with the terms (a thousand `-x` took seconds): a search is
    # a few words, so a longer one is refused rather than left to tie up the server.
    if len(text) > MAX_SEARCH_CHARS:
        raise BadParameter("q", f"is {len(text)} characters long; the limit is "
                                f"{MAX_SEARCH_CHARS}")
    if len(text.split()) > MAX_SEARCH_TERMS:
        raise BadParameter("q", f"has {len(text.split())} terms; the limit is "
                                f"{MAX_SEARCH_TERMS}")


def parsed_search(conn: sa.Connection, text: str) -> str:
    """The ``tsquery`` of a web search, in PostgreSQL's text form (which reads back as the
    same query); a search PostgreSQL should not be given is a 400 first."""
    _check_search(text)
    return str(conn.execute(
        sa.text("SELECT websearch_to_tsquery(CAST(:config AS regconfig), :q)::text"),
        {"config": TEXT_SEARCH_CONFIG, "q": text}).scalar_one())


def search_filter(dataset: Dataset, text: str, source: sa.FromClause | None = None,
                  *, tsquery: str | None = None
                  ) -> tuple[sa.ColumnElement[bool], sa.ColumnElement[float]]:
    """``q``: (match predicate, rank) in web-search syntax: words, "a phrase", or, -not.
    ``source`` is what the query reads (see :func:`search_document`).

    With ``tsquery`` (the text already parsed, :func:`parsed_search`), the statement takes
    it as a parameter: given the text instead, a prepared statement's generic plan parses
    it again for every row it ranks or rechecks (a ranked page of 10,840 matches took
    94 ms instead of 60)."""
    _check_search(text)
    document = search_document(dataset, source)
    query: sa.ColumnElement[Any] = sa.func.websearch_to_tsquery(
        sa.literal_column(f"'{TEXT_SEARCH_CONFIG}'::regconfig"), text)
    if tsquery is not None:
        query = sa.cast(sa.literal(tsquery, postgresql.TSQUERY), postgresql.TSQUERY)
    # ts_rank is a real; as double precision it survives the JSON cursor exactly, so the
    # keyset comparison finds ties again.
    rank = sa.cast(sa.func.ts_rank(document, query), postgresql.DOUBLE_PRECISION)
    return document.op("@@", is_comparison=True)(query), rank


def parse_query(dataset: Dataset, table: sa.FromClause, args: Mapping[str, list[str]],
                *, neighborhoods: Callable[[str], list[geo.Polygon]] | None = None,
                formats: Sequence[str] = FORMATS, conn: sa.Connection | None = None
                ) -> RecordQuery:
    """Every parameter of a records request; ``neighborhoods`` looks up the polygons of a
    ``within=neighborhood:`` name; ``conn`` parses ``q`` (see :func:`search_filter`)."""
    types = dataset.column_types()
    query = RecordQuery()

    for param, values in args.items():
        if param in RESERVED:
            if param != "or":  # several or-groups all apply
                _single(args, param)
            continue
        query.filters.extend(parse_filter(dataset, table, param, values, param))

    for text in args.get("or", []):
        query.filters.append(parse_or(dataset, table, text))

    if "q" in args:
        query.search = _single(args, "q")
        if conn is not None:
            query.tsquery = parsed_search(conn, query.search)
        match, rank = search_filter(dataset, query.search, table, tsquery=query.tsquery)
        query.filters.append(match)
        query.computed[RANK] = rank
    _parse_geography(dataset, table, args, query, neighborhoods)

    if "format" in args:
        query.format = _single(args, "format").strip().lower()
        if query.format not in formats:
            raise BadParameter("format", f"unknown format {query.format!r}; formats are "
                                         f"{', '.join(formats)}")

    if "fields" in args and _single(args, "fields").strip():
        query.fields = []
        for part in args["fields"][0].split(","):
            name = part.strip()
            if name not in types and name not in ("_key", "_snapshot_id"):
                raise BadParameter("fields", f"unknown column {name!r}; columns are "
                                             f"{', '.join(types)}")
            if name != "_key" and name not in query.fields:
                query.fields.append(name)

    if "order" in args and _single(args, "order").strip():
        parts = args["order"][0].split(",")
        for i, part in enumerate(parts):
            name = part.strip()
            descending = name.startswith("-")
            name = name[1:] if descending else name
            if name == "_key":
                # Every order ends with the key; naming it sets its direction.
                if i != len(parts) - 1:
                    raise BadParameter("order", "_key can only be the last order column")
                query.key_descending = descending
                break
            if name not in types and name not in query.computed:
                hint = {RANK: " (_rank needs q)", DISTANCE: " (_distance needs near)"}
                raise BadParameter("order", f"unknown column {name!r}{hint.get(name, '')}")
            if types.get(name) == "geometry":
                raise BadParameter("order", f"cannot sort by the geometry column {name!r}")
            if any(name == n for n, _ in query.order):
                raise BadParameter("order", f"column {name!r} given twice")
            query.order.append((name, descending))
    elif RANK in query.computed:
        query.order = [(RANK, True)]  # best matches first
    elif DISTANCE in query.computed:
        query.order = [(DISTANCE, False)]  # nearest first

    if "limit" in args:
        text = _single(args, "limit")
        if not is_ascii_digits(text) or not 1 <= int(text) <= MAX_LIMIT:
            raise BadParameter("limit", f"must be a whole number from 1 to {MAX_LIMIT}")
        query.limit = int(text)

    if "cursor" in args:
        query.cursor = decode_cursor(_single(args, "cursor"), query)
        for i, (name, _) in enumerate(query.order):
            raw = query.cursor[i]
            if raw is None and name in query.computed:  # a rank or distance is never null
                raise BadParameter("cursor", "does not match the order of this query")
            if raw is None:
                continue
            if name in query.computed:
                if not isinstance(raw, (int, float)) or isinstance(raw, bool):
                    raise BadParameter("cursor", "does not match the order of this query")
                query.cursor[i] = float(raw)
            else:
                if not _json_fits(types[name], raw):
                    raise BadParameter("cursor", "does not match the order of this query "
                                                 f"(a {types[name]} value for {name!r})")
                query.cursor[i] = parse_value(dataset, name, types[name], str(raw), "cursor")
        _check_cursor_key(dataset, types, query.cursor[-1])
    return query


def _json_fits(type_: str, raw: Any) -> bool:
    """Whether a cursor value has the JSON type :func:`encode_cursor` writes for a column
    of ``type_`` (numbers as numbers, booleans as booleans, the rest as strings)."""
    if type_ == "integer":
        return isinstance(raw, int) and not isinstance(raw, bool)
    if type_ == "number":
        return isinstance(raw, (int, float)) and not isinstance(raw, bool)
    if type_ == "boolean":
        return isinstance(raw, bool)
    return isinstance(raw, str)


def _check_cursor_key(dataset: Dataset, types: Mapping[str, str], key: str) -> None:
    """A record key of a dataset keyed by one integer column is a whole number; a cursor
    ending in anything else was not issued for this dataset (and would match nothing)."""
    if "\x00" in key:  # PostgreSQL text cannot hold NUL, and no key has one
        raise BadParameter("cursor", "not a cursor this API issued")
    if len(dataset.key) == 1 and types.get(dataset.key[0]) == "integer" and key:
        if not re.fullmatch(r"-?[0-9]+", key):
            raise BadParameter("cursor", f"not a cursor of dataset {dataset.id!r}: its "
                                         "record keys are whole numbers")


def _parse_geography(dataset: Dataset, table: sa.FromClause, args: Mapping[str, list[str]],
                     query: RecordQuery,
                     neighborhoods: Callable[[str], list[geo.Polygon]] | None) -> None:
    if "radius_m" in args and "near" not in args:
        raise BadParameter("radius_m", "needs near=lat,lon")
    if "bbox" in args:
        points = geo.point_columns(dataset, table, "bbox")
        query.filters.append(geo.in_box(points, geo.parse_bbox(_single(args, "bbox"))))
    if "near" in args:
        points = geo.point_columns(dataset, table, "near")
        radius = _single(args, "radius_m") if "radius_m" in args else None
        lat, lon, metres = geo.parse_near(_single(args, "near"), radius)
        distance = geo.distance_m(points, lat, lon)
        query.filters.append(geo.in_box(points, geo.box_around(lat, lon, metres)))
        query.filters.append(distance <= metres)
        query.computed[DISTANCE] = distance
    if "within" in args:
        points = geo.point_columns(dataset, table, "within")
        _, name = geo.parse_within(_single(args, "within"))
        if neighborhoods is None:
            raise BadParameter("within", "neighborhood filters are not available here")
        query.filters.append(geo.in_polygons(points, neighborhoods(name)))


def order_signature(query: RecordQuery) -> str:
    """The order a cursor was issued for, in its first element: a cursor of
    ``order=-date_occur`` given with ``order=date_occur`` would silently skip records."""
    terms = [("-" if descending else "") + name for name, descending in query.order]
    if query.key_descending is not None:
        terms.append("-_key" if query.key_descending else "_key")
    return "o:" + ",".join(terms)


def encode_cursor(values: list[Any], query: RecordQuery) -> str:
    def plain(v: Any) -> Any:
        return v.isoformat() if isinstance(v, (date, datetime)) else v
    data = orjson.dumps([order_signature(query), *(plain(v) for v in values)])
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def decode_cursor(text: str, query: RecordQuery) -> list[Any]:
    """The order values and key a cursor holds, for ``query``'s order."""
    try:
        values = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, ValueError):
        raise BadParameter("cursor", "not a cursor this API issued") from None
    if not isinstance(values, list) or not values or not isinstance(values[0], str) \
            or not values[0].startswith("o:"):
        raise BadParameter("cursor", "not a cursor this API issued")
    if values[0] != order_signature(query) or len(values) != len(query.order) + 2:
        raise BadParameter("cursor", "does not match the order of this query")
    if not isinstance(values[-1], str):
        raise BadParameter("cursor", "not a cursor this API issued")
    return values[1:]


def output_columns(dataset: Dataset, table: sa.FromClause, query: RecordQuery,
                   *, with_order: bool = True) -> list[sa.ColumnElement[Any]]:
    """``_key``, ``_snapshot_id``, the chosen columns and computed ones; order columns
    are selected too (the keyset cursor needs them) and dropped on output."""
    names = list(dataset.column_types()) if query.fields is None else [
        n for n in query.fields if n != "_snapshot_id"]
    wanted = set(names)
    if with_order:
        names += [n for n, _ in query.order if n not in wanted and n not in query.computed]
    geometry = dataset.geometry
    if geometry is not None and query.format == "geojson":
        names += [n for n in (geometry.longitude, geometry.latitude) if n not in names]
    if query.format == "geojson":
        names += [n for n, t in dataset.column_types().items()
                  if t == "geometry" and n not in names]
    columns: list[sa.ColumnElement[Any]] = [table.c._key, table.c._snapshot_id]
    columns += [table.c[n] for n in names]
    columns += [expr.label(name) for name, expr in query.computed.items()]
    return columns


def visible_names(dataset: Dataset, query: RecordQuery) -> list[str]:
    """The keys of each returned record, in order."""
    if query.fields is None:
        names = ["_key", "_snapshot_id", *dataset.column_types()]
    else:
        names = ["_key", *query.fields]
    if query.format == "geojson":
        # A feature's geometry is built from these, whichever fields were asked for.
        geometry = dataset.geometry
        places = [geometry.longitude, geometry.latitude] if geometry is not None else []
        places += [n for n, t in dataset.column_types().items() if t == "geometry"]
        names += [n for n in places if n not in names]
    return names + list(query.computed)
