"""Compile a SoQL AST (:mod:`stldata.api.soql`) into a SQLAlchemy query.

Names resolve only to catalog columns and ``$select`` aliases, functions only to the ones
listed in :data:`FUNCTIONS`, and every literal becomes a bound parameter. Types are checked
here so that a query PostgreSQL would reject is a 400 naming the position instead: a
string compared with a typed column is read as that column's type (``date_occur >
'2017-05-01'``), numbers meet numbers, and aggregates appear only where SQL allows them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from stldata.aggregation import local_time, sa_type
from stldata.api.digits import is_ascii_digits
from stldata.api.problems import BadParameter
from stldata.api.query import MAX_IN_VALUES, parse_value
from stldata.api.soql import (
    Between,
    Binary,
    Call,
    Column,
    Expr,
    InList,
    IsNull,
    Like,
    Literal,
    OrderItem,
    SelectItem,
    SoqlError,
    Unary,
    parse_expression,
    parse_list,
    parse_order,
    parse_select,
)
from stldata.catalog import Dataset

DEFAULT_LIMIT = 1000
MAX_LIMIT = 50_000
MAX_OFFSET = 10_000_000
#: Terms of $select (after * is expanded), $group and $order; PostgreSQL allows 1664.
MAX_TERMS = 200
AGGREGATES = ("count", "sum", "avg", "min", "max")
DATE_TRUNC = {"date_trunc_y": "year", "date_trunc_ym": "month", "date_trunc_ymd": "day"}
DATE_EXTRACT = {"date_extract_y": "year", "date_extract_m": "month", "date_extract_d": "day",
                "date_extract_dow": "dow", "date_extract_hh": "hour"}
FUNCTIONS = (*AGGREGATES, "upper", "lower", *DATE_TRUNC, *DATE_EXTRACT, "starts_with",
             "contains", "within_box")
NUMERIC = ("integer", "number")
TEMPORAL = ("date", "datetime", "month")
#: Types that can be ordered and compared with < and >.
ORDERED = ("text", *NUMERIC, *TEMPORAL)


@dataclass(frozen=True)
class Typed:
    sql: sa.ColumnElement[Any]
    type: str  # a catalog type, or "null"
    aggregate: bool = False


def _family(type_: str) -> str:
    return {"integer": "number", "month": "date", "datetime": "date"}.get(type_, type_)


@dataclass
class Compiler:
    dataset: Dataset
    table: sa.FromClause
    param: str = "$where"
    aliases: dict[str, Expr] = field(default_factory=dict)
    prefer_aliases: bool = False
    allow_aggregates: bool = False
    #: Compiled $group expressions, reused so SELECT and GROUP BY render the same SQL.
    groups: dict[Expr, Typed] = field(default_factory=dict)

    @property
    def types(self) -> dict[str, str]:
        return self.dataset.column_types()

    def error(self, message: str, pos: int) -> SoqlError:
        return SoqlError(message, pos)

    def compile(self, expr: Expr, inside_aggregate: bool = False) -> Typed:
        if expr in self.groups:
            return self.groups[expr]
        if isinstance(expr, Literal):
            return self.literal(expr)
        if isinstance(expr, Column):
            return self.column(expr, inside_aggregate)
        if isinstance(expr, Call):
            return self.call(expr, inside_aggregate)
        if isinstance(expr, Unary):
            operand = self.compile(expr.operand, inside_aggregate)
            if expr.op == "not":
                self.need(operand, ("boolean",), "NOT", expr.pos)
                return Typed(sa.not_(operand.sql), "boolean", operand.aggregate)
            self.need(operand, NUMERIC, f"unary {expr.op}", expr.pos)
            return Typed(-operand.sql if expr.op == "-" else operand.sql, operand.type,
                         operand.aggregate)
        if isinstance(expr, Binary):
            return self.binary(expr, inside_aggregate)
        if isinstance(expr, IsNull):
            operand = self.compile(expr.operand, inside_aggregate)
            test = operand.sql.is_not(None) if expr.negated else operand.sql.is_(None)
            return Typed(test, "boolean", operand.aggregate)
        if isinstance(expr, InList):
            if len(expr.items) > MAX_IN_VALUES:
                raise self.error(f"IN lists at most {MAX_IN_VALUES} values", expr.pos)
            operand = self.compile(expr.operand, inside_aggregate)
            items = [self.coerce(self.compile(i, inside_aggregate), operand, i, expr.pos).sql
                     for i in expr.items]
            test = operand.sql.not_in(items) if expr.negated else operand.sql.in_(items)
            return Typed(test, "boolean", operand.aggregate)
        if isinstance(expr, Between):
            operand = self.compile(expr.operand, inside_aggregate)
            self.need(operand, ORDERED, "BETWEEN", expr.pos)
            low = self.coerce(self.compile(expr.low, inside_aggregate), operand, expr.low,
                              expr.pos)
            high = self.coerce(self.compile(expr.high, inside_aggregate), operand, expr.high,
                               expr.pos)
            test = operand.sql.between(low.sql, high.sql)
            return Typed(sa.not_(test) if expr.negated else test, "boolean",
                         operand.aggregate or low.aggregate or high.aggregate)
        assert isinstance(expr, Like)
        operand = self.compile(expr.operand, inside_aggregate)
        pattern = self.compile(expr.pattern, inside_aggregate)
        self.need(operand, ("text",), "LIKE", expr.pos)
        self.need(pattern, ("text",), "LIKE", expr.pattern.pos)
        test = (operand.sql.not_like(pattern.sql) if expr.negated
                else operand.sql.like(pattern.sql))
        return Typed(test, "boolean", operand.aggregate or pattern.aggregate)

    def need(self, value: Typed, types: Sequence[str], what: str, pos: int) -> None:
        if value.type != "null" and value.type not in types:
            raise self.error(f"{what} needs {' or '.join(types)}, not {value.type}", pos)

    def literal(self, expr: Literal) -> Typed:
        v = expr.value
        if v is None:
            # An untyped NULL PostgreSQL fits to any operator (SQLAlchemy's null() would
            # turn = into IS and refuse LIKE).
            return Typed(sa.literal_column("NULL"), "null")
        if isinstance(v, bool):
            return Typed(sa.literal(v, sa.Boolean), "boolean")
        if isinstance(v, int):
            if -(2**63) <= v < 2**63:
                return Typed(sa.literal(v, sa.BigInteger), "integer")
            return Typed(sa.literal(Decimal(v), sa.Numeric), "number")
        if isinstance(v, Decimal):
            return Typed(sa.literal(v, sa.Numeric), "number")
        return Typed(sa.literal(v, sa.Text), "text")

    def column(self, expr: Column, inside_aggregate: bool) -> Typed:
        name = expr.name
        if self.prefer_aliases and name in self.aliases:
            return self.compile(self.aliases[name], inside_aggregate)
        if name in self.types:
            type_ = self.types[name]
            return Typed(self.table.c[name], type_)
        if name in self.aliases:
            return self.compile(self.aliases[name], inside_aggregate)
        raise self.error(f"unknown column {name!r}; columns are {', '.join(self.types)}",
                         expr.pos)

    def coerce(self, value: Typed, other: Typed, expr: Expr, pos: int) -> Typed:
        """``value`` made comparable with ``other``: a string literal read as other's type."""
        if isinstance(expr, Literal) and isinstance(expr.value, str) and other.type not in (
                "text", "null"):
            parsed = self.parse_literal(expr.value, other.type, expr.pos)
            return Typed(sa.literal(parsed, sa_type(other.type)), other.type)
        if value.type == "null" or other.type == "null":
            return value
        if _family(value.type) != _family(other.type):
            raise self.error(f"cannot compare {other.type} with {value.type}", pos)
        return value

    def parse_literal(self, text: str, type_: str, pos: int) -> Any:
        if type_ in ("date", "month") and "T" in text:
            # Socrata writes dates as floating timestamps: '2017-05-01T00:00:00.000'.
            day, _, time = text.partition("T")
            if time.strip("0:.") == "":
                text = day
        if type_ == "geometry":
            raise self.error("geometry values cannot be compared", pos)
        try:
            return parse_value(self.dataset, "literal", type_, text, self.param)
        except BadParameter as exc:
            reason = exc.reason.replace("for column 'literal' ", "")
            raise self.error(reason, pos) from None

    def binary(self, expr: Binary, inside_aggregate: bool) -> Typed:
        op = expr.op
        left = self.compile(expr.left, inside_aggregate)
        right = self.compile(expr.right, inside_aggregate)
        aggregate = left.aggregate or right.aggregate
        if op in ("and", "or"):
            self.need(left, ("boolean",), op.upper(), expr.left.pos or expr.pos)
            self.need(right, ("boolean",), op.upper(), expr.right.pos or expr.pos)
            joined = sa.and_(left.sql, right.sql) if op == "and" else sa.or_(left.sql,
                                                                             right.sql)
            return Typed(joined, "boolean", aggregate)
        if op in ("=", "!=", "<", "<=", ">", ">="):
            if isinstance(expr.left, Literal) and not isinstance(expr.right, Literal):
                left = self.coerce(left, right, expr.left, expr.pos)
            else:
                right = self.coerce(right, left, expr.right, expr.pos)
            if op not in ("=", "!="):
                self.need(left, ORDERED, op, expr.pos)
            elif "geometry" in (left.type, right.type):
                raise self.error("geometry values cannot be compared", expr.pos)
            sql = {"=": left.sql == right.sql, "!=": left.sql != right.sql,
                   "<": left.sql < right.sql, "<=": left.sql <= right.sql,
                   ">": left.sql > right.sql, ">=": left.sql >= right.sql}[op]
            return Typed(sql, "boolean", aggregate)
        if op == "||":
            if "geometry" in (left.type, right.type):
                raise self.error("|| does not apply to geometry", expr.pos)
            return Typed(sa.func.concat(sa.cast(left.sql, sa.Text),
                                        sa.cast(right.sql, sa.Text)), "text", aggregate)
        self.need(left, NUMERIC, op, expr.pos)
        self.need(right, NUMERIC, op, expr.pos)
        both_integer = left.type == right.type == "integer"
        if op == "/":
            # SoQL numbers are decimals: 5 / 2 is 2.5, not PostgreSQL's integer 2.
            return Typed(sa.cast(left.sql, sa.Numeric) / sa.cast(right.sql, sa.Numeric),
                         "number", aggregate)
        sql = {"+": left.sql + right.sql, "-": left.sql - right.sql,
               "*": left.sql * right.sql, "%": left.sql % right.sql}[op]
        return Typed(sql, "integer" if both_integer else "number", aggregate)

    def call(self, expr: Call, inside_aggregate: bool) -> Typed:
        name = expr.name
        if name not in FUNCTIONS:
            raise self.error(f"unsupported function {name!r}; functions are "
                             f"{', '.join(FUNCTIONS)}", expr.pos)
        if name in AGGREGATES:
            return self.aggregate(expr, inside_aggregate)
        if expr.star:
            raise self.error(f"{name}(*) is not allowed; only count(*)", expr.pos)
        arity = {"starts_with": 2, "contains": 2, "within_box": 5}.get(name, 1)
        if len(expr.args) != arity:
            raise self.error(f"{name}() takes {arity} argument{'s' if arity > 1 else ''}, "
                             f"not {len(expr.args)}", expr.pos)
        if name == "within_box":
            return self.within_box(expr, inside_aggregate)
        args = [self.compile(a, inside_aggregate) for a in expr.args]
        aggregate = any(a.aggregate for a in args)
        first = args[0]
        if name in ("upper", "lower"):
            self.need(first, ("text",), f"{name}()", expr.pos)
            return Typed(getattr(sa.func, name)(first.sql), "text", aggregate)
        if name in ("starts_with", "contains"):
            self.need(first, ("text",), f"{name}()", expr.pos)
            self.need(args[1], ("text",), f"{name}()", expr.args[1].pos)
            needle = expr.args[1]
            if isinstance(needle, Literal) and isinstance(needle.value, str):
                test = (first.sql.startswith(needle.value, autoescape=True)
                        if name == "starts_with"
                        else first.sql.contains(needle.value, autoescape=True))
            else:
                found = sa.func.strpos(first.sql, args[1].sql)
                test = found == 1 if name == "starts_with" else found > 0
            return Typed(test, "boolean", aggregate)
        self.need(first, TEMPORAL, f"{name}()", expr.pos)
        local = local_time(first.sql, self.dataset.timezone) if first.type == "datetime" \
            else first.sql
        if name in DATE_TRUNC:
            unit = DATE_TRUNC[name]
            if first.type == "month" and unit == "day":
                return Typed(first.sql, "date", aggregate)
            truncated = sa.func.date_trunc(sa.literal_column(f"'{unit}'"), local)
            return Typed(sa.cast(truncated, sa.Date), "date", aggregate)
        part = DATE_EXTRACT[name]
        if part == "hour" and first.type != "datetime":
            raise self.error(f"{name}() needs a datetime, not {first.type}", expr.pos)
        return Typed(sa.cast(sa.extract(part, local), sa.Integer), "integer", aggregate)

    def aggregate(self, expr: Call, inside_aggregate: bool) -> Typed:
        if not self.allow_aggregates:
            raise self.error(f"aggregate function {expr.name}() is not allowed in "
                             f"{self.param}; aggregates belong in $select, $having or $order",
                             expr.pos)
        if inside_aggregate:
            raise self.error(f"aggregate function {expr.name}() inside another aggregate",
                             expr.pos)
        if expr.star:
            if expr.name != "count":
                raise self.error(f"{expr.name}(*) is not allowed; only count(*)", expr.pos)
            return Typed(sa.func.count(), "integer", True)
        if len(expr.args) != 1:
            raise self.error(f"{expr.name}() takes 1 argument, not {len(expr.args)}",
                             expr.pos)
        arg = self.compile(expr.args[0], True)
        if expr.name == "count":
            return Typed(sa.func.count(arg.sql), "integer", True)
        if expr.name in ("sum", "avg"):
            self.need(arg, NUMERIC, f"{expr.name}()", expr.pos)
            type_ = arg.type if expr.name == "sum" else "number"
            return Typed(getattr(sa.func, expr.name)(arg.sql), type_, True)
        self.need(arg, ORDERED, f"{expr.name}()", expr.pos)
        return Typed(getattr(sa.func, expr.name)(arg.sql), arg.type, True)

    def within_box(self, expr: Call, inside_aggregate: bool) -> Typed:
        geometry = self.dataset.geometry
        if geometry is None:
            raise self.error(f"dataset {self.dataset.id!r} has no coordinates for "
                             "within_box()", expr.pos)
        location = expr.args[0]
        if not isinstance(location, Column) or location.name not in (
                "location", geometry.latitude, geometry.longitude):
            raise self.error("within_box() takes the location first (location, "
                             "north_lat, west_lon, south_lat, east_lon)", location.pos)
        bounds = []
        for arg in expr.args[1:]:
            value = self.compile(arg, inside_aggregate)
            self.need(value, NUMERIC, "within_box()", arg.pos)
            bounds.append(value.sql)
        lat, lon = self.table.c[geometry.latitude], self.table.c[geometry.longitude]
        north, west, south, east = bounds
        return Typed(sa.and_(lat <= north, lat >= south, lon >= west, lon <= east), "boolean")


# --- The whole query ------------------------------------------------------------------

@dataclass
class OutputColumn:
    name: str
    type: str


@dataclass
class SoqlQuery:
    statement: sa.Select[Any]
    columns: list[OutputColumn]
    grouped: bool = False


def _contains_aggregate(expr: Expr) -> bool:
    if isinstance(expr, Call) and expr.name in AGGREGATES:
        return True
    return any(_contains_aggregate(child) for child in _children(expr))


def _children(expr: Expr) -> list[Expr]:
    if isinstance(expr, Call):
        return list(expr.args)
    if isinstance(expr, Unary):
        return [expr.operand]
    if isinstance(expr, Binary):
        return [expr.left, expr.right]
    if isinstance(expr, (IsNull,)):
        return [expr.operand]
    if isinstance(expr, InList):
        return [expr.operand, *expr.items]
    if isinstance(expr, Between):
        return [expr.operand, expr.low, expr.high]
    if isinstance(expr, Like):
        return [expr.operand, expr.pattern]
    return []


def _check_grouped(expr: Expr, groups: list[Expr], param: str) -> None:
    """Outside aggregates, a grouped query may only use the $group expressions."""
    if expr in groups or isinstance(expr, Literal):
        return
    if isinstance(expr, Call) and expr.name in AGGREGATES:
        return
    if isinstance(expr, Column):
        raise SoqlError(f"column {expr.name!r} in {param} must be in $group or inside an "
                        "aggregate such as count() or max()", expr.pos)
    for child in _children(expr):
        _check_grouped(child, groups, param)


def _default_name(expr: Expr, index: int) -> str:
    if isinstance(expr, Column):
        return expr.name
    if isinstance(expr, Call):
        if expr.star or not expr.args:
            return expr.name
        if all(isinstance(a, Column) for a in expr.args):
            return "_".join([expr.name, *(a.name for a in expr.args
                                          if isinstance(a, Column))])
    return f"_expr{index}"


def _param(name: str, text: str, parse: Any) -> Any:
    with naming(name):
        return parse(text)


@contextmanager
def naming(param: str) -> Iterator[None]:
    """Turn a SoqlError raised inside into a 400 naming ``param``."""
    try:
        yield
    except SoqlError as exc:
        raise SoqlProblem(param, exc) from None


class SoqlProblem(BadParameter):
    """A 400 naming the SoQL parameter, with the position of the problem in it."""

    def __init__(self, param: str, error: SoqlError) -> None:
        super().__init__(param, str(error))
        if error.position:
            self.extra["position"] = error.position


def build_query(dataset: Dataset, table: sa.FromClause, args: Mapping[str, list[str]],
                extra_filters: Sequence[sa.ColumnElement[bool]] = ()) -> SoqlQuery:
    """The SELECT for a /resource request's $-parameters (already split from filters)."""
    def single(name: str) -> str | None:
        values = args.get(name)
        if not values:
            return None
        if len(values) > 1:
            raise BadParameter(name, "given more than once")
        return values[0]

    select_text = single("$select")
    select_items = (_param("$select", select_text, parse_select)
                    if select_text and select_text.strip() else [SelectItem(None, None)])
    where_text, having_text = single("$where"), single("$having")
    group_text, order_text = single("$group"), single("$order")
    where = _param("$where", where_text, parse_expression) if where_text else None
    having = _param("$having", having_text, parse_expression) if having_text else None
    group_exprs = _param("$group", group_text, parse_list) if group_text else []
    order_items: list[OrderItem] = (_param("$order", order_text, parse_order)
                                    if order_text else [])

    for param, count in (("$select", len(select_items)), ("$group", len(group_exprs)),
                         ("$order", len(order_items))):
        if count > MAX_TERMS:
            raise BadParameter(param, f"more than {MAX_TERMS} terms")
    aliases: dict[str, Expr] = {}
    names: list[str] = []
    outputs: list[tuple[str, Expr | None]] = []
    for index, item in enumerate(select_items, 1):
        if item.expr is None:
            for name in dataset.column_types():
                outputs.append((name, Column(name)))
            continue
        name = item.alias or _default_name(item.expr, index)
        if item.alias:
            if item.alias in aliases:
                raise SoqlProblem("$select", SoqlError(f"alias {item.alias!r} is used twice",
                                                       item.pos))
            aliases[item.alias] = item.expr
        outputs.append((name, item.expr))
    if len(outputs) > MAX_TERMS:
        raise BadParameter("$select", f"more than {MAX_TERMS} output columns")
    for name, _ in outputs:
        if names.count(name):
            raise BadParameter("$select", f"two output columns are named {name!r}; name "
                                          "one with AS")
        names.append(name)

    # Aliases may name $group terms: $select=date_trunc_ym(date_occur) AS m&$group=m
    def unalias(expr: Expr) -> Expr:
        if isinstance(expr, Column) and expr.name in aliases and \
                expr.name not in dataset.column_types():
            return aliases[expr.name]
        return expr

    group_exprs = [unalias(g) for g in group_exprs]
    order_exprs = [replace(o, expr=aliases[o.expr.name])
                   if isinstance(o.expr, Column) and o.expr.name in aliases else o
                   for o in order_items]
    if having is not None:
        having = _substitute(having, aliases)

    grouped = bool(group_exprs) or having is not None or any(
        e is not None and _contains_aggregate(e) for _, e in outputs) or any(
        _contains_aggregate(o.expr) for o in order_exprs)
    if grouped:
        if any(e is None for _, e in outputs) or (select_text is None or
                                                  not select_text.strip()):
            raise BadParameter("$select", "a grouped query needs $select to list its "
                                          "$group terms and aggregates, not *")
        with naming("$select"):
            for _, e in outputs:
                assert e is not None
                _check_grouped(e, group_exprs, "$select")
        if having is not None:
            with naming("$having"):
                _check_grouped(having, group_exprs, "$having")
        with naming("$order"):
            for o in order_exprs:
                _check_grouped(o.expr, group_exprs, "$order")

    def compiler(param: str, *, aggregates: bool, prefer_aliases: bool = False) -> Compiler:
        return Compiler(dataset, table, param, aliases, prefer_aliases, aggregates, groups)

    groups: dict[Expr, Typed] = {}
    compiled_groups = []
    for g in group_exprs:
        with naming("$group"):
            typed = compiler("$group", aggregates=False).compile(g)
        if typed.type == "geometry":
            raise BadParameter("$group", "cannot group by a geometry column")
        compiled_groups.append(typed)
    groups.update(zip(group_exprs, compiled_groups, strict=True))

    columns: list[sa.ColumnElement[Any]] = []
    out: list[OutputColumn] = []
    for name, e in outputs:
        assert e is not None
        with naming("$select"):
            typed = compiler("$select", aggregates=True).compile(e)
        columns.append(typed.sql.label(name))
        out.append(OutputColumn(name, typed.type))

    statement = sa.select(*columns).select_from(table).where(*extra_filters)
    if where is not None:
        with naming("$where"):
            condition = compiler("$where", aggregates=False).compile(where)
        if condition.type not in ("boolean", "null"):
            raise SoqlProblem("$where", SoqlError(f"$where must be true or false, not "
                                                  f"{condition.type}", where.pos))
        statement = statement.where(condition.sql)
    if grouped:
        statement = statement.group_by(*(g.sql for g in compiled_groups))
        if having is not None:
            with naming("$having"):
                condition = compiler("$having", aggregates=True,
                                     prefer_aliases=True).compile(having)
            if condition.type not in ("boolean", "null"):
                raise SoqlProblem("$having", SoqlError("$having must be true or false",
                                                       having.pos))
            statement = statement.having(condition.sql)
    ordering = []
    for o in order_exprs:
        with naming("$order"):
            typed = compiler("$order", aggregates=grouped, prefer_aliases=True).compile(o.expr)
        if typed.type == "geometry":
            raise SoqlProblem("$order", SoqlError("cannot sort by a geometry", o.pos))
        item = typed.sql.desc() if o.descending else typed.sql.asc()
        nulls_first = o.nulls_first if o.nulls_first is not None else False
        ordering.append(item.nulls_first() if nulls_first else item.nulls_last())
    # A stable order, so $offset pages neither repeat nor skip rows.
    if grouped:
        ordering += [g.sql.asc().nulls_last() for g in compiled_groups]
    else:
        ordering.append(table.c._key.asc())
    statement = statement.order_by(*ordering)

    limit = _bounded(single("$limit"), "$limit", DEFAULT_LIMIT, 0, MAX_LIMIT)
    offset = _bounded(single("$offset"), "$offset", 0, 0, MAX_OFFSET)
    return SoqlQuery(statement.limit(limit).offset(offset), out, grouped)


def _substitute(expr: Expr, aliases: dict[str, Expr]) -> Expr:
    """$having may name $select aliases (count(*) AS n ... $having=n > 10)."""
    if isinstance(expr, Column):
        return aliases.get(expr.name, expr)
    if isinstance(expr, Unary):
        return replace(expr, operand=_substitute(expr.operand, aliases))
    if isinstance(expr, Binary):
        return replace(expr, left=_substitute(expr.left, aliases),
                       right=_substitute(expr.right, aliases))
    if isinstance(expr, IsNull):
        return replace(expr, operand=_substitute(expr.operand, aliases))
    if isinstance(expr, InList):
        return replace(expr, operand=_substitute(expr.operand, aliases),
                       items=tuple(_substitute(i, aliases) for i in expr.items))
    if isinstance(expr, Between):
        return replace(expr, operand=_substitute(expr.operand, aliases),
                       low=_substitute(expr.low, aliases), high=_substitute(expr.high, aliases))
    if isinstance(expr, Like):
        return replace(expr, operand=_substitute(expr.operand, aliases),
                       pattern=_substitute(expr.pattern, aliases))
    if isinstance(expr, Call) and expr.name not in AGGREGATES:
        return replace(expr, args=tuple(_substitute(a, aliases) for a in expr.args))
    return expr


def _bounded(text: str | None, param: str, default: int, low: int, high: int) -> int:
    if text is None:
        return default
    text = text.strip()
    if not is_ascii_digits(text) or not low <= int(text) <= high:
        raise BadParameter(param, f"must be a whole number from {low} to {high}")
    return int(text)


def format_value(value: Any, type_: str, tz: Any) -> Any:
    """A result value as JSON: ISO dates and times, integers exact, decimals as floats."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(tz).isoformat() if value.tzinfo else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        if type_ == "integer" and value == value.to_integral_value():
            whole = int(value)
            # Beyond 64 bits (a sum of large counts times 1000, say) JSON encoders and
            # most clients lose the number: the exact digits go out as a string, as
            # Socrata sends every number.
            return whole if -(2**63) <= whole < 2**63 else str(whole)
        return float(value)
    return value
