"""``GET /api/v1/datasets/{id}/aggregate``: grouped counts, sums, averages, extremes.

``group_by`` lists columns and date buckets (``year()``, ``month()``, ``day()``, ``dow()``,
``hour()``), ``metrics`` lists ``count``, ``count(x)``, ``sum(x)``, ``avg(x)``, ``min(x)``,
``max(x)`` and ``count_distinct(x)``; the records endpoint's filters narrow the rows;
``having`` filters groups, ``order`` sorts them and ``limit`` caps them. Every name is
checked against the catalog and every value is bound.

A request that a declared aggregate (``[[aggregates]]`` in the catalog) can answer, with
filters only on its plain group columns, is read from the maintained table
(:mod:`stldata.projection.aggregates`) instead of grouping the records.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, cast
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from apiflask import APIFlask
from flask import request

from stldata.aggregation import (
    GroupTerm,
    Metric,
    TermError,
    group_expression,
    metric_expression,
    parse_group,
    parse_metric,
)
from stldata.api import analytics_schemas as schemas
from stldata.api.digits import is_ascii_digits
from stldata.api.problems import BadParameter, NotFound
from stldata.api.query import dataset_table, parse_query, parse_value
from stldata.catalog import Dataset
from stldata.projection.aggregates import Plan, in_step, plan

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
MAX_TERMS = 20
#: Parameters of this endpoint; every other one is a records filter.
OWN = ("group_by", "metrics", "having", "order", "limit", "as_of")
#: Records parameters that make no sense for groups.
REFUSED = {"cursor": "groups are not paginated; raise limit or narrow the filters",
           "fields": "the fields are the group_by terms and metrics",
           "format": "aggregates are served as JSON"}
HAVING_OPS: dict[str, Callable[[Any, Any], sa.ColumnElement[bool]]] = {
    "eq": operator.eq, "ne": operator.ne, "gt": operator.gt, "gte": operator.ge,
    "lt": operator.lt, "lte": operator.le,
}


@dataclass
class AggregateRequest:
    groups: list[GroupTerm]
    metrics: list[Metric]
    having: list[tuple[str, str, Any]] = field(default_factory=list)
    order: list[tuple[str, bool]] = field(default_factory=list)
    limit: int = DEFAULT_LIMIT
    as_of: str | None = None
    filters: dict[str, list[str]] = field(default_factory=dict)

    def result_types(self, types: dict[str, str]) -> dict[str, str]:
        out = {t.name: t.result_type(types) for t in self.groups}
        out.update({m.name: m.result_type(types) for m in self.metrics})
        return out


def _single(args: Mapping[str, list[str]], param: str) -> str:
    values = args[param]
    if len(values) > 1:
        raise BadParameter(param, "given more than once")
    return values[0]


def _terms(text: str, param: str) -> list[str]:
    terms = [t.strip() for t in text.split(",") if t.strip()]
    if len(terms) > MAX_TERMS:
        raise BadParameter(param, f"more than {MAX_TERMS} terms")
    return terms


def _name(text: str, req: AggregateRequest, param: str) -> str:
    """An output field by its name (``sum_count``) or its term (``sum(count)``)."""
    compact = text.replace(" ", "")
    terms: list[GroupTerm | Metric] = [*req.groups, *req.metrics]
    for term in terms:
        if compact in (term.name, term.text) or (compact == "count(*)" and term.text == "count"):
            return term.name
    names = [t.name for t in terms]
    raise BadParameter(param, f"{text!r} is not a group or metric of this request; "
                              f"they are {', '.join(names)}")


def parse_request(dataset: Dataset, args: Mapping[str, list[str]]) -> AggregateRequest:
    types = dataset.column_types()
    for param, reason in REFUSED.items():
        if param in args:
            raise BadParameter(param, reason)
    try:
        groups = [parse_group(t, types) for t in
                  _terms(_single(args, "group_by"), "group_by")] if "group_by" in args else []
    except TermError as exc:
        raise BadParameter("group_by", str(exc)) from None
    if "group_by" in args and not groups and _single(args, "group_by").strip():
        # Only commas: a typo, not a request for the grand total (which omits group_by).
        raise BadParameter("group_by", "names no column; give column names or date "
                                       "buckets separated by commas, or leave it out")
    try:
        metrics = [parse_metric(t, types) for t in
                   _terms(_single(args, "metrics") if "metrics" in args else "count",
                          "metrics")]
    except TermError as exc:
        raise BadParameter("metrics", str(exc)) from None
    if not metrics:
        raise BadParameter("metrics", "names no metric; try count")
    names = [t.name for t in groups] + [m.name for m in metrics]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise BadParameter("group_by" if len({t.name for t in groups}) < len(groups)
                           else "metrics", f"{', '.join(repeated)} given twice or both as "
                                           "a group and a metric")
    req = AggregateRequest(groups, metrics)
    result_types = req.result_types(types)

    if "having" in args:
        for part in _terms(_single(args, "having"), "having"):
            spec, sep, text = part.partition(":")
            field_text, _, op = spec.rpartition("__")
            if not sep or not field_text:
                raise BadParameter("having", f"{part!r} is not name__op:value, like "
                                             "count__gt:10")
            if op not in HAVING_OPS:
                raise BadParameter("having", f"{part!r}: unknown operator {op!r}; operators "
                                             f"are {', '.join(HAVING_OPS)}")
            name = _name(field_text, req, "having")
            value = parse_value(dataset, name, result_types[name], text.strip(), "having")
            req.having.append((name, op, value))

    if "order" in args:
        for part in _terms(_single(args, "order"), "order"):
            descending = part.startswith("-")
            name = _name(part[1:] if descending else part, req, "order")
            if any(name == n for n, _ in req.order):
                raise BadParameter("order", f"{name!r} given twice")
            req.order.append((name, descending))

    if "limit" in args:
        text = _single(args, "limit").strip()
        if not is_ascii_digits(text) or not 1 <= int(text) <= MAX_LIMIT:
            raise BadParameter("limit", f"must be a whole number from 1 to {MAX_LIMIT}")
        req.limit = int(text)
    if "as_of" in args:
        req.as_of = _single(args, "as_of")
    req.filters = {k: v for k, v in args.items() if k not in OWN}
    return req


def _records_source(dataset: Dataset, table: sa.FromClause, req: AggregateRequest
                    ) -> sa.Select[Any]:
    """Group the records themselves."""
    types, tz = dataset.column_types(), dataset.timezone
    filters = parse_query(dataset, table, req.filters).filters
    groups = [group_expression(t, table.c[t.column], types[t.column], tz) for t in req.groups]
    metrics = [metric_expression(m, table.c[m.column] if m.column else None).label(m.name)
               for m in req.metrics]
    return (sa.select(*(g.label(t.name) for g, t in zip(groups, req.groups, strict=True)),
                      *metrics)
            .select_from(table).where(*filters).group_by(*groups))


def _provider(p: Plan, metric: Metric, exact: bool, stored: sa.Subquery
              ) -> sa.ColumnElement[Any] | None:
    """The metric rolled up from the maintained table's state, or None if it holds none."""
    def state(i: int, suffix: str) -> sa.ColumnElement[Any]:
        return stored.c[f"_m{i}{suffix}"]

    if metric.column is None:
        return sa.func.coalesce(sa.func.sum(stored.c._rows), 0)
    for i, declared in enumerate(p.metrics):
        if declared.column != metric.column:
            continue
        f, d = metric.function, declared.function
        if f == "count" and d in ("count", "sum", "avg"):
            return sa.func.coalesce(sa.func.sum(state(i, "_n")), 0)
        if f in ("sum", "avg") and d in ("sum", "avg"):
            total, n = sa.func.sum(state(i, "_sum")), sa.func.sum(state(i, "_n"))
            if f == "sum":
                return sa.case((n > 0, total))
            return total / sa.func.nullif(n, 0)
        if f == d and f in ("min", "max"):
            return getattr(sa.func, f)(state(i, ""))  # type: ignore[no-any-return]
        if f == d == "count_distinct" and exact:
            return sa.func.coalesce(sa.func.max(state(i, "")), 0)
    return None


def _stored_name(p: Plan, name: str) -> str:
    """A maintained table's column as the API reads it: a plain group column under the
    catalog column's name, so the records filters apply to it as is; the rest under names
    no catalog column can have (catalog names never start with _)."""
    if name.startswith("g") and p.groups[int(name[1:])].bucket is None:
        return p.groups[int(name[1:])].column
    return "_" + name.lstrip("_")


def _declared_source(conn: sa.Connection, dataset: Dataset, req: AggregateRequest
                     ) -> tuple[str, sa.Select[Any]] | None:
    """Read the request from a declared aggregate that covers it, if one does."""
    if req.as_of is not None:
        return None
    for aggregate in dataset.aggregates:
        try:
            p = plan(dataset, aggregate)
        except (TermError, KeyError):
            continue
        if not set(req.groups) <= set(p.groups):
            continue
        plain = {t.column for t in p.groups if t.bucket is None}
        if any(param.partition("__")[0] not in plain or param.count("__") > 1
               for param in req.filters):
            continue
        stored = sa.select(*(c.label(_stored_name(p, c.name)) for c in p.table().c)
                           ).subquery("stored")
        exact = set(req.groups) == set(p.groups)
        metrics = [_provider(p, m, exact, stored) for m in req.metrics]
        if any(m is None for m in metrics) or not in_step(conn, p):
            continue
        groups = [stored.c[_stored_name(p, f"g{p.groups.index(t)}")] for t in req.groups]
        filters = parse_query(dataset, stored, req.filters).filters
        return aggregate.name, (
            sa.select(*(g.label(t.name) for g, t in zip(groups, req.groups, strict=True)),
                      *(cast(sa.ColumnElement[Any], m).label(n.name)
                        for m, n in zip(metrics, req.metrics, strict=True)))
            .where(*filters).group_by(*groups))
    return None


def _jsonable(value: Any, type_: str, tz: ZoneInfo) -> Any:
    if value is None:
        return None
    if type_ == "month" and isinstance(value, date):
        return value.strftime("%Y-%m")
    if isinstance(value, datetime):
        return value.astimezone(tz).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if type_ == "integer" else float(value)
    if type_ == "number" and isinstance(value, int):
        return float(value)
    return value


def ensure_loaded(conn: sa.Connection, dataset: Dataset) -> None:
    """A dataset of the catalog that was never projected has no table yet: a clear 404."""
    if conn.execute(sa.select(sa.func.to_regclass(dataset.table_name))).scalar() is None:
        raise NotFound(f"dataset {dataset.id!r} has no records yet: it has not been "
                       "ingested and projected")


def run_aggregate(conn: sa.Connection, dataset: Dataset, metadata: sa.MetaData,
                  args: Mapping[str, list[str]]) -> dict[str, Any]:
    req = parse_request(dataset, args)
    ensure_loaded(conn, dataset)
    snapshot_id = None
    if req.as_of is not None:
        from stldata.api import timetravel

        snapshot_id = timetravel.resolve_as_of(conn, dataset, req.as_of, "as_of")
        table = timetravel.table_as_of(dataset, snapshot_id, metadata)
    else:
        table = dataset_table(dataset, metadata)

    declared = _declared_source(conn, dataset, req)
    source = "records"
    if declared is not None:
        source, inner = f"aggregate:{declared[0]}", declared[1]
    else:
        inner = _records_source(dataset, table, req)
    result = inner.subquery("result")
    having = [HAVING_OPS[op](result.c[name], value) for name, op, value in req.having]
    order = [(result.c[n].desc() if d else result.c[n].asc()).nulls_last()
             for n, d in req.order]
    order += [result.c[t.name].asc().nulls_last() for t in req.groups
              if all(t.name != n for n, _ in req.order)]
    rows = conn.execute(sa.select(result).where(*having).order_by(*order)
                        .limit(req.limit + 1)).mappings().all()

    tz = ZoneInfo(dataset.timezone)
    types = req.result_types(dataset.column_types())
    items = [{k: _jsonable(v, types[k], tz) for k, v in row.items()}
             for row in rows[: req.limit]]
    return {"dataset": dataset.id, "group_by": [t.name for t in req.groups],
            "metrics": [m.name for m in req.metrics], "source": source,
            "as_of_snapshot": snapshot_id, "count": len(items),
            "truncated": len(rows) > req.limit, "items": items}


def register(app: APIFlask, model: Any) -> None:
    """Add the aggregate endpoint to the app (``model`` is its ReadModel)."""

    @app.get("/api/v1/datasets/<dataset_id>/aggregate")
    @app.input(schemas.AggregateQuery, location="query")
    @app.output(schemas.AggregatePage)
    @app.doc(summary="Aggregate records", tags=["Aggregates"],
             description=schemas.AGGREGATE_HELP,
             responses={400: "Bad parameter", 404: "Unknown dataset"})
    def aggregate(dataset_id: str, query_data: dict[str, Any]) -> Any:
        dataset = model.dataset(dataset_id)
        with model.connect() as conn:
            return run_aggregate(conn, dataset, model.metadata,
                                 request.args.to_dict(flat=False))
