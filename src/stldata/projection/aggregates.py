"""Declared aggregates, maintained incrementally as snapshots are applied.

A catalog file may declare ``[[aggregates]]`` (group terms and metrics). Each one is a
table ``agg_<dataset>__<name>`` with one row per group, kept in the same transaction as
the records, so it is never out of step with them. A snapshot changes it only by the
versions that snapshot wrote or closed in ``record_versions`` (added, changed, removed
records): counts and sums move by the difference, a group that loses its last row is
deleted, and min, max and distinct counts are recomputed for the groups that need it
(min and max only where a row left the group, since additions only extend them).

The table keeps the state a metric needs to be rolled up further: ``_rows`` (rows in the
group), ``m<i>_n`` (non-null values), ``m<i>_sum``, and ``m<i>`` for min, max and
count_distinct. The API answers matching requests from it.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import psycopg as pg_psycopg

from stldata.aggregation import (
    GroupTerm,
    Metric,
    TermError,
    group_expression,
    metric_expression,
    parse_group,
    parse_metric,
    sa_type,
)
from stldata.catalog import Aggregate, Dataset
from stldata.store.database import Conn

log = logging.getLogger(__name__)

_DIALECT = pg_psycopg.dialect()  # type: ignore[no-untyped-call]
#: Bumped when the layout of aggregate tables changes, so old ones are rebuilt.
LAYOUT_VERSION = 1
#: Metrics whose value a removed row can invalidate, and that are recomputed per group.
RECOMPUTED = ("min", "max", "count_distinct")


@dataclass(frozen=True)
class Plan:
    """A declared aggregate resolved against the dataset's (pinned) column types."""

    dataset: Dataset
    aggregate: Aggregate
    groups: tuple[GroupTerm, ...]
    metrics: tuple[Metric, ...]

    @property
    def types(self) -> dict[str, str]:
        return self.dataset.column_types()

    @property
    def table_name(self) -> str:
        name = f"agg_{self.dataset.table_name[3:]}__{self.aggregate.name}"
        if len(name) > 63:  # PostgreSQL's identifier limit; keep the name unique anyway
            digest = hashlib.sha1(self.dataset.id.encode()).hexdigest()[:10]
            name = f"agg_{digest}__{self.aggregate.name}"
        return name

    def definition(self) -> str:
        """What the table was built from; a different one means a rebuild."""
        columns = sorted({t.column for t in self.groups}
                         | {m.column for m in self.metrics if m.column})
        return orjson.dumps({
            "layout": LAYOUT_VERSION, "group_by": [t.text for t in self.groups],
            "metrics": [m.text for m in self.metrics], "timezone": self.dataset.timezone,
            "types": {c: self.types[c] for c in columns}}).decode()

    def stored_columns(self, index: int) -> list[tuple[str, Any]]:
        """The columns that hold metric ``index``'s state, with their types."""
        metric = self.metrics[index]
        if metric.column is None:
            return []  # count: the group's _rows
        value_type = sa_type(self.types[metric.column])
        if metric.function == "count":
            return [(f"m{index}_n", sa.BigInteger)]
        if metric.function in ("sum", "avg"):
            exact = self.types[metric.column] == "integer"
            return [(f"m{index}_sum", sa.Numeric if exact else sa.Float),
                    (f"m{index}_n", sa.BigInteger)]
        if metric.function == "count_distinct":
            return [(f"m{index}", sa.BigInteger)]
        return [(f"m{index}", value_type)]

    def table(self) -> sa.TableClause:
        columns = [sa.column(f"g{i}", sa_type(t.result_type(self.types)))
                   for i, t in enumerate(self.groups)]
        columns.append(sa.column("_rows", sa.BigInteger))
        for i in range(len(self.metrics)):
            columns.extend(sa.column(n, t) for n, t in self.stored_columns(i))
        return sa.table(self.table_name, *columns)

    def source(self) -> sa.TableClause:
        """The dataset's table of current records (only the columns aggregates read)."""
        return sa.table(self.dataset.table_name,
                        *(sa.column(n, sa_type(t)) for n, t in self.types.items()))


def plan(dataset: Dataset, aggregate: Aggregate) -> Plan:
    """Resolve a declaration; TermError when a column is not (yet) typed to fit."""
    types = dataset.column_types()
    return Plan(dataset, aggregate,
                tuple(parse_group(g, types) for g in aggregate.group_by),
                tuple(parse_metric(m, types) for m in aggregate.metrics))


def _run(conn: Conn, statement: sa.ClauseElement, prefix: str = "") -> None:
    compiled = statement.compile(dialect=_DIALECT,
                                 compile_kwargs={"render_postcompile": True})
    conn.execute(prefix + compiled.string, compiled.params)


def _quote(name: str) -> str:
    return str(_DIALECT.identifier_preparer.quote(name))


def _same_group(left: sa.TableClause | sa.Subquery, right: sa.TableClause | sa.Subquery,
                width: int) -> sa.ColumnElement[bool]:
    return sa.and_(*(left.c[f"g{i}"].is_not_distinct_from(right.c[f"g{i}"])
                     for i in range(width)))


def _grouped_state(p: Plan, rows: sa.TableClause | sa.Subquery,
                   sign: sa.ColumnElement[Any] | None) -> sa.Select[Any]:
    """Per group: rows, and each metric's state, over ``rows``; with ``sign`` (+1 for an
    added version, -1 for a removed one) the result is the change to apply."""
    types, tz = p.types, p.dataset.timezone
    groups = [group_expression(t, rows.c[t.column], types[t.column], tz)
              for t in p.groups]
    one: sa.ColumnElement[Any] = sa.literal(1) if sign is None else sign
    columns: list[sa.ColumnElement[Any]] = [g.label(f"g{i}") for i, g in enumerate(groups)]
    columns.append(sa.func.sum(one).label("_rows"))
    if sign is not None:
        columns.append(sa.func.sum(sa.case((sign < 0, 1), else_=0)).label("_removed"))
    for i, metric in enumerate(p.metrics):
        if metric.column is None:
            continue
        x = rows.c[metric.column]
        for name, type_ in p.stored_columns(i):
            if name.endswith("_n"):
                columns.append(sa.func.sum(sa.case((x.is_not(None), one), else_=0))
                               .label(name))
            elif name.endswith("_sum"):
                columns.append(sa.func.coalesce(sa.func.sum(one * x), 0).label(name))
            elif sign is None:
                columns.append(metric_expression(metric, x).label(name))
            elif metric.function in ("min", "max"):
                # Additions fold in; a removed value as extreme as the current one makes
                # the group stale, to be recomputed.
                columns.append(metric_expression(metric, x).filter(sign > 0).label(name))
                columns.append(metric_expression(metric, x).filter(sign < 0)
                               .label(name + "_gone"))
            else:
                # Distinct counts cannot move by differences: recomputed afterwards.
                columns.append(sa.cast(sa.null(), type_).label(name))
    return sa.select(*columns).select_from(rows).group_by(*groups)


def rebuild(conn: Conn, p: Plan) -> None:
    """Build the table from scratch from the current records (first sight, or redefined)."""
    table = _quote(p.table_name)
    conn.execute(f"DROP TABLE IF EXISTS {table}")
    t = p.table()
    ddl = ", ".join(f"{_quote(c.name)} {c.type.compile(dialect=_DIALECT)}" for c in t.c)
    conn.execute(f"CREATE TABLE {table} ({ddl})")
    _run(conn, sa.insert(t).from_select([c.name for c in t.c],
                                        _grouped_state(p, p.source(), None)))
    groups = ", ".join(_quote(f"g{i}") for i in range(len(p.groups)))
    conn.execute(f"CREATE INDEX ON {table} ({groups})")
    conn.execute(f"ANALYZE {table}")


def _changes(p: Plan, snapshot_id: int) -> sa.Subquery:
    """The versions a snapshot wrote (+1) or closed (-1), typed like the records table."""
    names = sorted({t.column for t in p.groups} | {m.column for m in p.metrics if m.column})
    picked = ", ".join(f"r.{_quote(n)}" for n in names)
    text = sa.text(
        f"SELECT CASE WHEN v.valid_from = :sid THEN 1 ELSE -1 END AS _sign, {picked} "
        "FROM record_versions v, "
        f"jsonb_populate_record(NULL::{_quote(p.dataset.table_name)}, v.values) r "
        "WHERE v.dataset_id = :ds AND NOT v.deleted "
        "AND (v.valid_from = :sid OR v.valid_to = :sid)"
    ).bindparams(sid=snapshot_id, ds=p.dataset.id)
    return text.columns(sa.column("_sign", sa.Integer),
                        *(sa.column(n, sa_type(p.types[n])) for n in names)
                        ).subquery("changes")


def apply_changes(conn: Conn, p: Plan, snapshot_id: int) -> None:
    """Move the table by what one snapshot changed."""
    changes = _changes(p, snapshot_id)
    conn.execute("DROP TABLE IF EXISTS agg_delta")
    state = _grouped_state(p, changes, changes.c._sign)
    _run(conn, state, "CREATE TEMP TABLE agg_delta ON COMMIT DROP AS ")
    conn.execute("ANALYZE agg_delta")
    t = p.table()
    width = len(p.groups)
    delta = sa.table("agg_delta", *(sa.column(str(c.key), c.type)
                                    for c in state.selected_columns))
    match = _same_group(t, delta, width)
    recomputed = [i for i, m in enumerate(p.metrics) if m.function in RECOMPUTED and m.column]
    if recomputed:
        _find_stale(conn, p, t, delta, recomputed)

    values: dict[str, sa.ColumnElement[Any]] = {"_rows": t.c._rows + delta.c._rows}
    for i, metric in enumerate(p.metrics):
        for name, _ in p.stored_columns(i):
            if name.endswith(("_n", "_sum")):
                values[name] = t.c[name] + delta.c[name]
            elif metric.function in ("min", "max"):
                fold = sa.func.least if metric.function == "min" else sa.func.greatest
                values[name] = fold(t.c[name], delta.c[name])  # NULLs ignored
    _run(conn, sa.update(t).values(values).where(match))
    names = [c.name for c in t.c]
    _run(conn, sa.insert(t).from_select(names, sa.select(*(delta.c[n] for n in names)).where(
        ~sa.exists(sa.select(sa.literal(1)).select_from(t).where(match)))))
    _run(conn, sa.delete(t).where(t.c._rows <= 0))

    if recomputed:
        _recompute(conn, p, t, recomputed)
        conn.execute("DROP TABLE agg_stale")
    conn.execute("DROP TABLE agg_delta")


def _find_stale(conn: Conn, p: Plan, t: sa.TableClause, delta: sa.TableClause,
                indexes: list[int]) -> None:
    """Groups whose min, max or distinct count the change may have invalidated: every
    changed group for distinct counts; for min (max) a group that lost a value at or below
    (above) its current one. Found before the table moves, against its old values."""
    groups = sa.select(*(delta.c[f"g{i}"] for i in range(len(p.groups))))
    if any(p.metrics[i].function == "count_distinct" for i in indexes):
        stale = groups  # new groups included: the delta holds no distinct count
    else:
        moved: list[sa.ColumnElement[bool]] = []
        for i in indexes:
            if p.metrics[i].function == "min":
                moved.append(delta.c[f"m{i}_gone"] <= t.c[f"m{i}"])
            else:
                moved.append(delta.c[f"m{i}_gone"] >= t.c[f"m{i}"])
        stale = groups.where(_same_group(t, delta, len(p.groups)), sa.or_(*moved))
    conn.execute("DROP TABLE IF EXISTS agg_stale")
    _run(conn, stale, "CREATE TEMP TABLE agg_stale ON COMMIT DROP AS ")
    conn.execute("ANALYZE agg_stale")  # temp tables have no statistics until analyzed


def _recompute(conn: Conn, p: Plan, t: sa.TableClause, indexes: list[int]) -> None:
    """Recompute min, max and distinct counts of the stale groups from the records."""
    row = conn.execute("SELECT count(*) FROM agg_stale").fetchone()
    if not row or not row[0]:
        return
    stale = sa.table("agg_stale", *(sa.column(f"g{i}") for i in range(len(p.groups))))
    source = p.source()
    types, tz = p.types, p.dataset.timezone
    groups = [group_expression(term, source.c[term.column], types[term.column], tz)
              for term in p.groups]
    # A hashed IN finds the rows of groups without NULLs in one pass; only rows with a NULL
    # group value take the slower NULL-safe comparison.
    keys = [stale.c[f"g{i}"] for i in range(len(groups))]
    touched = sa.or_(
        sa.tuple_(*groups).in_(sa.select(*keys)),
        sa.and_(sa.or_(*(g.is_(None) for g in groups)), sa.exists(
            sa.select(sa.literal(1)).select_from(stale).where(
                *(g.is_not_distinct_from(k) for g, k in zip(groups, keys, strict=True))))))
    columns = [g.label(f"g{i}") for i, g in enumerate(groups)]
    for i in indexes:
        metric = p.metrics[i]
        assert metric.column is not None
        columns.append(metric_expression(metric, source.c[metric.column]).label(f"m{i}"))
    conn.execute("DROP TABLE IF EXISTS agg_fresh")
    _run(conn, sa.select(*columns).where(touched).group_by(*groups),
         "CREATE TEMP TABLE agg_fresh ON COMMIT DROP AS ")
    fresh = sa.table("agg_fresh", *(sa.column(str(c.key), c.type) for c in columns))
    _run(conn, sa.update(t).values({f"m{i}": fresh.c[f"m{i}"] for i in indexes})
         .where(_same_group(t, fresh, len(groups))))
    conn.execute("DROP TABLE agg_fresh")


def maintain_aggregates(conn: Conn, dataset: Dataset, snapshot_id: int) -> None:
    """Bring every declared aggregate of ``dataset`` in step with ``snapshot_id``, which
    has just been applied in this transaction; drop aggregates no longer declared."""
    state = {str(name): (str(table), str(definition)) for name, table, definition in
             conn.execute("SELECT name, table_name, definition FROM aggregate_tables "
                          "WHERE dataset_id = %s", (dataset.id,)).fetchall()}
    declared = {a.name: a for a in dataset.aggregates}
    for name, (table, _) in state.items():
        if name not in declared:
            conn.execute(f"DROP TABLE IF EXISTS {_quote(table)}")
            conn.execute("DELETE FROM aggregate_tables WHERE dataset_id = %s AND name = %s",
                         (dataset.id, name))
            log.info("%s: aggregate %s is no longer declared; dropped", dataset.id, name)

    for name, aggregate in declared.items():
        try:
            p = plan(dataset, aggregate)
        except (TermError, KeyError) as exc:
            # An auto column not typed yet, or typed so the term does not apply.
            log.warning("%s: aggregate %s cannot be maintained: %s", dataset.id, name, exc)
            if name in state:
                conn.execute(f"DROP TABLE IF EXISTS {_quote(state[name][0])}")
                conn.execute("DELETE FROM aggregate_tables WHERE dataset_id = %s "
                             "AND name = %s", (dataset.id, name))
            continue
        definition = p.definition()
        if state.get(name) == (p.table_name, definition):
            apply_changes(conn, p, snapshot_id)
        else:
            if name in state and state[name][0] != p.table_name:
                conn.execute(f"DROP TABLE IF EXISTS {_quote(state[name][0])}")
            rebuild(conn, p)
            log.info("%s: aggregate %s built from the current records", dataset.id, name)
        conn.execute(
            "INSERT INTO aggregate_tables (dataset_id, name, table_name, definition, "
            "snapshot_id) VALUES (%s, %s, %s, %s, %s) ON CONFLICT (dataset_id, name) DO "
            "UPDATE SET table_name = excluded.table_name, definition = excluded.definition, "
            "snapshot_id = excluded.snapshot_id, updated_at = now()",
            (dataset.id, name, p.table_name, definition, snapshot_id))


def in_step(conn: sa.Connection, p: Plan) -> bool:
    """Whether the table exists and was built from this very declaration."""
    row = conn.execute(sa.text(
        "SELECT table_name, definition FROM aggregate_tables "
        "WHERE dataset_id = :d AND name = :n"),
        {"d": p.dataset.id, "n": p.aggregate.name}).first()
    return row is not None and (row[0], row[1]) == (p.table_name, p.definition())
