"""Aggregation terms shared by the catalog, the projection and the API.

A *group term* is a column (``neighborhood``) or a date bucket of one (``month(date_occur)``);
a *metric* is ``count`` or ``function(column)``. Both are parsed from short texts the catalog
and the query string use, checked against the dataset's column types, and turned into
SQLAlchemy expressions. Buckets of a datetime are taken in the dataset's time zone, so
``month(date_occur)`` is the month on a St. Louis calendar, not in UTC.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

#: Buckets and the column types each one makes sense for.
BUCKETS: dict[str, tuple[str, ...]] = {
    "year": ("date", "datetime", "month"),
    "month": ("date", "datetime", "month"),
    "day": ("date", "datetime"),
    "dow": ("date", "datetime"),
    "hour": ("datetime",),
}
#: Result type of each bucket, in the catalog's type names.
BUCKET_TYPES = {"year": "integer", "month": "month", "day": "date", "dow": "integer",
                "hour": "integer"}

NUMERIC = ("integer", "number")
ORDERED = ("text", "integer", "number", "date", "datetime", "month")
#: Metric functions and the column types each applies to (``None``: any type).
FUNCTIONS: dict[str, tuple[str, ...] | None] = {
    "count": None, "count_distinct": None, "sum": NUMERIC, "avg": NUMERIC,
    "min": ORDERED, "max": ORDERED,
}
#: Types a plain column can be grouped by (JSON geometries cannot).
GROUPABLE = ("text", "integer", "number", "boolean", "date", "datetime", "month")

_TERM = re.compile(r"^\s*([a-z_][a-z0-9_]*)\s*(?:\(\s*([a-z_][a-z0-9_]*|\*)?\s*\))?\s*$")


class TermError(ValueError):
    """A term that does not parse or does not fit the dataset; the message names it."""


@dataclass(frozen=True)
class GroupTerm:
    column: str
    bucket: str | None = None

    @property
    def name(self) -> str:
        """The output field: the column, or ``bucket_column`` like ``month_date_occur``."""
        return self.column if self.bucket is None else f"{self.bucket}_{self.column}"

    @property
    def text(self) -> str:
        return self.column if self.bucket is None else f"{self.bucket}({self.column})"

    def result_type(self, types: dict[str, str]) -> str:
        return types[self.column] if self.bucket is None else BUCKET_TYPES[self.bucket]


@dataclass(frozen=True)
class Metric:
    function: str
    column: str | None = None

    @property
    def name(self) -> str:
        """The output field: ``count``, or ``function_column`` like ``sum_count``."""
        return self.function if self.column is None else f"{self.function}_{self.column}"

    @property
    def text(self) -> str:
        return self.function if self.column is None else f"{self.function}({self.column})"

    def result_type(self, types: dict[str, str]) -> str:
        if self.function in ("count", "count_distinct"):
            return "integer"
        if self.function == "avg":
            return "number"
        assert self.column is not None
        return types[self.column]


def _column(name: str, types: dict[str, str], text: str) -> str:
    if name not in types:
        raise TermError(f"{text!r}: unknown column {name!r}; columns are {', '.join(types)}")
    return name


def parse_group(text: str, types: dict[str, str]) -> GroupTerm:
    """``column`` or ``bucket(column)``; an ``auto`` type is accepted for any bucket."""
    match = _TERM.match(text)
    if not match:
        raise TermError(f"{text!r} is not a column or bucket(column)")
    head, arg = match.groups()
    if arg is None and "(" not in text:
        column = _column(head, types, text)
        if types[column] not in (*GROUPABLE, "auto"):
            raise TermError(f"{text!r}: a {types[column]} column cannot be grouped by")
        return GroupTerm(column)
    if head not in BUCKETS:
        raise TermError(f"{text!r}: unknown bucket {head!r}; buckets are "
                        f"{', '.join(BUCKETS)}")
    if arg is None or arg == "*":
        raise TermError(f"{text!r}: {head}() needs a column")
    column = _column(arg, types, text)
    if types[column] not in (*BUCKETS[head], "auto"):
        raise TermError(f"{text!r}: {head}() applies to {' or '.join(BUCKETS[head])} columns, "
                        f"and {column!r} is {types[column]}")
    return GroupTerm(column, head)


def parse_metric(text: str, types: dict[str, str]) -> Metric:
    """``count``, ``count(*)`` or ``function(column)``."""
    match = _TERM.match(text)
    if not match:
        raise TermError(f"{text!r} is not count or function(column)")
    head, arg = match.groups()
    if head not in FUNCTIONS:
        raise TermError(f"{text!r}: unknown function {head!r}; functions are "
                        f"{', '.join(FUNCTIONS)}")
    if head == "count" and (arg is None or arg == "*"):
        return Metric("count")
    if arg is None or arg == "*":
        raise TermError(f"{text!r}: {head}() needs a column")
    column = _column(arg, types, text)
    allowed = FUNCTIONS[head]
    if allowed is not None and types[column] not in (*allowed, "auto"):
        raise TermError(f"{text!r}: {head}() applies to {' or '.join(allowed)} columns, "
                        f"and {column!r} is {types[column]}")
    return Metric(head, column)


def local_time(column: sa.ColumnElement[Any], timezone: str) -> sa.ColumnElement[Any]:
    """A timestamptz as wall-clock time in ``timezone`` (a catalog setting, not user input).

    The zone is written into the SQL rather than bound, so the same expression in SELECT
    and GROUP BY is the same text and PostgreSQL sees that they match."""
    zone = sa.literal_column("'" + timezone.replace("'", "''") + "'", sa.Text)
    return sa.func.timezone(zone, column)


def group_expression(term: GroupTerm, column: sa.ColumnElement[Any], type_: str,
                     timezone: str) -> sa.ColumnElement[Any]:
    """The SQL value of a group term over ``column`` (unlabelled)."""
    if term.bucket is None:
        return column
    local: sa.ColumnElement[Any] = column
    if type_ == "datetime":
        # The wall-clock time in the dataset's zone: buckets follow the local calendar.
        local = local_time(column, timezone)
    if term.bucket == "year":
        return sa.cast(sa.extract("year", local), sa.Integer)
    if term.bucket == "dow":
        return sa.cast(sa.extract("dow", local), sa.Integer)
    if term.bucket == "hour":
        return sa.cast(sa.extract("hour", local), sa.Integer)
    if term.bucket == "month":
        return sa.cast(sa.func.date_trunc(sa.literal_column("'month'"), local), sa.Date)
    return sa.cast(local, sa.Date)  # day


def metric_expression(metric: Metric, column: sa.ColumnElement[Any] | None
                      ) -> sa.ColumnElement[Any]:
    """The SQL aggregate of a metric over ``column`` (unlabelled)."""
    if metric.function == "count":
        return sa.func.count() if column is None else sa.func.count(column)
    assert column is not None
    if metric.function == "count_distinct":
        return sa.func.count(sa.distinct(column))
    return getattr(sa.func, metric.function)(column)  # type: ignore[no-any-return]


_SA_TYPES: dict[str, Any] = {
    "text": sa.Text, "integer": sa.BigInteger, "number": sa.Float, "boolean": sa.Boolean,
    "date": sa.Date, "datetime": sa.DateTime(timezone=True), "month": sa.Date,
}


def sa_type(type_: str) -> Any:
    """The SQLAlchemy type of a catalog type (JSON for geometries and unknown types)."""
    return _SA_TYPES.get(type_, sa.JSON)
