"""Parse record-list query strings into safe SQLAlchemy queries.

Filters are ``col=value`` or ``col__op=value`` on the dataset's typed columns; ``order``
lists columns (``-`` for descending); pagination is keyset-based on the order columns
plus the record key, carried in an opaque ``cursor``. Every value is bound as a
parameter; column names come only from the catalog.
"""

from __future__ import annotations

import base64
import binascii
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import sqlalchemy as sa

from stldata.api.problems import BadParameter
from stldata.catalog import Dataset

OPERATORS = ("eq", "gt", "gte", "lt", "lte", "ne", "in")
COMPARISONS: dict[str, Callable[[Any, Any], sa.ColumnElement[bool]]] = {
    "eq": operator.eq, "ne": operator.ne, "gt": operator.gt, "gte": operator.ge,
    "lt": operator.lt, "lte": operator.le,
}
RESERVED = {"limit", "order", "cursor"}
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_IN_VALUES = 1000

_SA_TYPES: dict[str, Any] = {
    "text": sa.Text, "integer": sa.BigInteger, "number": sa.Float, "boolean": sa.Boolean,
    "date": sa.Date, "datetime": sa.DateTime(timezone=True), "month": sa.Date,
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


def parse_value(dataset: Dataset, column: str, type_: str, text: str, param: str) -> Any:
    """Turn a query-string value into a value of the column's type, or a 400."""
    if "\x00" in text:
        raise BadParameter(param, "contains a NUL character, which no stored value has")
    try:
        if type_ == "integer":
            value = int(text)
            if not -(2**63) <= value < 2**63:
                raise ValueError("out of range for a 64-bit integer")
            return value
        if type_ == "number":
            number = float(text)
            if number != number or number in (float("inf"), float("-inf")):
                raise ValueError("not a finite number")
            return number
        if type_ == "boolean":
            folded = text.casefold()
            if folded in ("true", "1", "yes", "y"):
                return True
            if folded in ("false", "0", "no", "n"):
                return False
            raise ValueError("expected true or false")
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
    except ValueError as exc:
        raise BadParameter(param, f"{text!r} is not a valid {type_} for column "
                                  f"{column!r} ({exc})") from None
    return text


@dataclass
class RecordQuery:
    filters: list[sa.ColumnElement[bool]] = field(default_factory=list)
    order: list[tuple[str, bool]] = field(default_factory=list)  # (column, descending)
    limit: int = DEFAULT_LIMIT
    cursor: list[Any] | None = None


def parse_query(dataset: Dataset, table: sa.Table, args: Mapping[str, list[str]]
                ) -> RecordQuery:
    types = dataset.column_types()
    query = RecordQuery()

    for param, values in args.items():
        if param in RESERVED:
            if len(values) > 1:
                raise BadParameter(param, "given more than once")
            continue
        column, sep, op = param.partition("__")
        if sep and not op:
            raise BadParameter(param, "ends with '__' but names no operator")
        op = op or "eq"
        if column not in types:
            raise BadParameter(param, f"unknown column {column!r}; columns are "
                                      f"{', '.join(types)}")
        if op not in OPERATORS:
            raise BadParameter(param, f"unknown operator {op!r}; operators are "
                                      f"{', '.join(OPERATORS)}")
        col = table.c[column]
        for text in values:
            if op == "in":
                items = text.split(",")
                if len(items) > MAX_IN_VALUES:
                    raise BadParameter(param, f"more than {MAX_IN_VALUES} values")
                query.filters.append(col.in_(
                    [parse_value(dataset, column, types[column], t, param) for t in items]))
                continue
            if types[column] == "boolean" and op not in ("eq", "ne"):
                raise BadParameter(param, f"operator {op!r} does not apply to the yes/no "
                                          f"column {column!r}; use eq or ne")
            value = parse_value(dataset, column, types[column], text, param)
            query.filters.append(COMPARISONS[op](col, value))

    if "order" in args and args["order"][0].strip():
        for part in args["order"][0].split(","):
            name = part.strip()
            descending = name.startswith("-")
            name = name[1:] if descending else name
            if name not in types:
                raise BadParameter("order", f"unknown column {name!r}")
            if any(name == n for n, _ in query.order):
                raise BadParameter("order", f"column {name!r} given twice")
            query.order.append((name, descending))

    if "limit" in args:
        text = args["limit"][0]
        if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
            raise BadParameter("limit", f"must be a whole number from 1 to {MAX_LIMIT}")
        query.limit = int(text)

    if "cursor" in args:
        query.cursor = decode_cursor(args["cursor"][0], len(query.order) + 1)
        for i, (name, _) in enumerate(query.order):
            raw = query.cursor[i]
            if raw is not None:
                query.cursor[i] = parse_value(dataset, name, types[name], str(raw), "cursor")
    return query


def encode_cursor(values: list[Any]) -> str:
    def plain(v: Any) -> Any:
        return v.isoformat() if isinstance(v, (date, datetime)) else v
    data = orjson.dumps([plain(v) for v in values])
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def decode_cursor(text: str, width: int) -> list[Any]:
    try:
        values = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, ValueError):
        raise BadParameter("cursor", "not a cursor this API issued") from None
    if not isinstance(values, list) or len(values) != width:
        raise BadParameter("cursor", "does not match the order of this query")
    if not isinstance(values[-1], str):
        raise BadParameter("cursor", "not a cursor this API issued")
    return values


def _after(col: sa.ColumnElement[Any], value: Any, descending: bool) -> sa.ColumnElement[bool]:
    """Rows strictly after ``value`` in this column's order, nulls sorting last."""
    if value is None:
        return sa.false()
    strictly = col < value if descending else col > value
    return sa.or_(strictly, col.is_(None))


def _equal(col: sa.ColumnElement[Any], value: Any) -> sa.ColumnElement[bool]:
    return col.is_(None) if value is None else col == value


def build_select(table: sa.Table, query: RecordQuery,
                 columns: Sequence[sa.ColumnElement[Any]]) -> sa.Select[Any]:
    stmt = sa.select(*columns).where(*query.filters)

    keys = [(table.c[name], desc) for name, desc in query.order] + [(table.c._key, False)]
    if query.cursor is not None:
        alternatives = []
        for i, (col, desc) in enumerate(keys):
            prefix = [_equal(c, query.cursor[j]) for j, (c, _) in enumerate(keys[:i])]
            alternatives.append(sa.and_(*prefix, _after(col, query.cursor[i], desc)))
        stmt = stmt.where(sa.or_(*alternatives))

    ordering = [(col.desc() if desc else col.asc()).nulls_last() for col, desc in keys]
    return stmt.order_by(*ordering).limit(query.limit + 1)
