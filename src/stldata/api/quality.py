"""The quality report of a snapshot, and its quarantine page by page.

Row counts come from the snapshot's bookkeeping and its quarantine entries. Per-column
figures (values, nulls, distinct values, min and max) describe the dataset's records as of
that snapshot, read from ``record_versions`` (the versions valid at it), so an old snapshot
reports its own state, not today's. A committed snapshot never changes, so its figures are
computed once and kept in ``snapshot_column_stats``.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from apiflask import APIFlask
from flask import url_for

from stldata.api import quality_schemas as schemas
from stldata.api.problems import BadParameter, NotFound
from stldata.catalog import Dataset

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from stldata.api.app import ReadModel

#: How a typed value of each column type is compared for min and max.
_ORDERED = {"integer": "bigint", "number": "double precision", "date": "date",
            "month": "date", "datetime": "timestamptz"}

#: Reasons carry the offending value; replacing quoted values and numbers groups alike
#: entries ("'x' is not a whole number", "row has 3 fields but the header has 5"). Numbers
#: that are the reason's own wording stay: those inside a word ("64-bit", "WGS84") and the
#: bounds of a type ("is out of range for a 64-bit integer (-9223372036854775808..
#: 9223372036854775807)"), where only the value before "is out of range" varies.
_REASON_KIND = r"""
    CASE WHEN reason LIKE 'duplicate key%' THEN 'duplicate key'
         WHEN reason LIKE '% is out of range for a %'
              THEN regexp_replace(reason, '^.*? is out of range for a ',
                                  '… is out of range for a ')
         ELSE regexp_replace(regexp_replace(reason, '''[^'']*''', '…', 'g'),
                             '(?<![[:alnum:]])[0-9]+(?![[:alnum:]]|-bit)', 'N', 'g') END"""


def _snapshot(conn: Connection, dataset: Dataset, sid: int) -> dict[str, Any]:
    row = conn.execute(sa.text(
        "SELECT id, status, committed_at, rows_read, record_count, quarantined "
        "FROM snapshots WHERE id = :sid AND dataset_id = :ds"),
        {"sid": sid, "ds": dataset.id}).mappings().first()
    if row is None:
        raise NotFound(f"dataset {dataset.id!r} has no snapshot {sid}; see "
                       f"/api/v1/datasets/{dataset.id}/snapshots")
    if row["status"] != "committed":
        raise NotFound(f"snapshot {sid} of dataset {dataset.id!r} is {row['status']}, not "
                       "committed; only committed snapshots have a quality report")
    return dict(row)


def _iso(value: Any, tz: ZoneInfo) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(tz).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


def _typed(text: str | None, type_: str) -> Any:
    """A cached min or max back to its JSON type."""
    if text is None:
        return None
    if type_ == "integer":
        return int(text)
    if type_ == "number":
        return float(text)
    return text


def column_stats(conn: Connection, dataset: Dataset, sid: int) -> list[dict[str, Any]]:
    """Values, nulls, distinct values, min and max of each column as of snapshot ``sid``."""
    types = dataset.column_types()
    cached = conn.execute(sa.text(
        "SELECT column_name, type, records, nulls, distinct_count, min_value, max_value "
        "FROM snapshot_column_stats WHERE snapshot_id = :sid"), {"sid": sid}).mappings().all()
    by_name = {str(r["column_name"]): r for r in cached}
    if not all(by_name.get(n) is not None and by_name[n]["type"] == t
               for n, t in types.items()):
        by_name = _compute_stats(conn, dataset, sid, types)
    out = []
    for name, type_ in types.items():
        r = by_name[name]
        records, nulls = int(r["records"]), int(r["nulls"])
        out.append({"name": name, "type": type_, "values": records - nulls, "nulls": nulls,
                    "null_rate": round(nulls / records, 6) if records else None,
                    "distinct": int(r["distinct_count"]),
                    "min": _typed(r["min_value"], type_), "max": _typed(r["max_value"], type_)})
    return out


def _compute_stats(conn: Connection, dataset: Dataset, sid: int, types: dict[str, str]
                   ) -> dict[str, Any]:
    """One scan of the versions valid at ``sid``; the result is kept for next time."""
    params: dict[str, Any] = {"ds": dataset.id, "sid": sid}
    parts = ["count(*)"]
    for i, (name, type_) in enumerate(types.items()):
        params[f"c{i}"] = name
        value = f"(values -> :c{i})"
        parts += [f"count(nullif({value}, 'null'::jsonb))",
                  f"count(DISTINCT nullif({value}, 'null'::jsonb))"]
        if type_ in _ORDERED:
            typed = f"(values ->> :c{i})::{_ORDERED[type_]}"
            parts += [f"min({typed})", f"max({typed})"]
    row = conn.execute(sa.text(
        f"SELECT {', '.join(parts)} FROM record_versions "  # noqa: S608 (names are bound)
        "WHERE dataset_id = :ds AND NOT deleted AND valid_from <= :sid "
        "AND (valid_to IS NULL OR valid_to > :sid)"), params).one()
    tz = ZoneInfo(dataset.timezone)
    records = int(row[0])
    at = 1
    stats: dict[str, Any] = {}
    for name, type_ in types.items():
        values, distinct = int(row[at]), int(row[at + 1])
        at += 2
        low = high = None
        if type_ in _ORDERED:
            low, high = _iso(row[at], tz), _iso(row[at + 1], tz)
            at += 2
        stats[name] = {"column_name": name, "type": type_, "records": records,
                       "nulls": records - values, "distinct_count": distinct,
                       "min_value": None if low is None else str(low),
                       "max_value": None if high is None else str(high)}
    conn.execute(sa.text("DELETE FROM snapshot_column_stats WHERE snapshot_id = :sid"),
                 {"sid": sid})
    conn.execute(sa.text(
        "INSERT INTO snapshot_column_stats (snapshot_id, dataset_id, column_name, type, "
        "records, nulls, distinct_count, min_value, max_value) VALUES (:sid, :ds, "
        ":column_name, :type, :records, :nulls, :distinct_count, :min_value, :max_value) "
        "ON CONFLICT DO NOTHING"), [{**s, "sid": sid, "ds": dataset.id}
                                    for s in stats.values()])
    return stats


def quality_report(conn: Connection, dataset: Dataset, sid: int) -> dict[str, Any]:
    snap = _snapshot(conn, dataset, sid)
    params = {"sid": sid}
    counts = conn.execute(sa.text(
        "SELECT count(*), count(*) FILTER (WHERE record_key IS NULL AND column_name IS NULL "
        "AND reason NOT LIKE 'duplicate key%'), "
        "count(*) FILTER (WHERE reason LIKE 'duplicate key%') "
        "FROM quarantine WHERE snapshot_id = :sid"), params).one()
    entries, rejected, superseded = (int(v) for v in counts)
    reasons = conn.execute(sa.text(
        f"SELECT column_name, {_REASON_KIND} AS kind, count(*) FROM quarantine "
        "WHERE snapshot_id = :sid GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2"), params).all()
    coercions = conn.execute(sa.text(
        "SELECT column_name, kind, cells FROM snapshot_coercions WHERE snapshot_id = :sid "
        "ORDER BY column_name, kind"), params).all()
    columns = column_stats(conn, dataset, sid)
    records = columns[0]["values"] + columns[0]["nulls"] if columns else 0
    read = int(snap["rows_read"] or 0)
    committed = snap["committed_at"]
    base = f"/api/v1/datasets/{dataset.id}/snapshots/{sid}"
    return {
        "dataset": dataset.id, "snapshot_id": sid, "status": snap["status"],
        "committed_at": committed.isoformat() if committed else None,
        "rows": {"read": read, "accepted": read - rejected, "rejected": rejected,
                 "quarantined": int(snap["quarantined"] or 0), "superseded": superseded,
                 "records": records},
        "quarantine_entries": entries,
        "quarantined_by_reason": [{"column": c, "reason": k, "count": int(n)}
                                  for c, k, n in reasons],
        "columns": columns,
        "coercions": [{"column": c, "kind": k, "cells": int(n)} for c, k, n in coercions],
        "links": {"self": base + "/quality", "quarantine": base + "/quarantine",
                  "snapshot": base},
    }


def quarantine_page(conn: Connection, dataset: Dataset, sid: int,
                    query: dict[str, Any]) -> dict[str, Any]:
    for name in ("column", "reason"):
        if "\x00" in str(query.get(name, "")):
            raise BadParameter(name, "contains a NUL character, which no stored value has")
    _snapshot(conn, dataset, sid)
    limit = int(query["limit"])
    where = ["snapshot_id = :sid", "id > :after"]
    params: dict[str, Any] = {"sid": sid, "after": int(query.get("cursor", 0)),
                              "limit": limit + 1}
    if "column" in query:
        if query["column"] == "-":
            where.append("column_name IS NULL")
        else:
            _known_column(conn, dataset, sid, query["column"])
            where.append("column_name = :column")
            params["column"] = query["column"]
    if query.get("reason"):
        where.append("reason ILIKE :reason")
        params["reason"] = query["reason"].replace("\\", "\\\\").replace("%", "\\%").replace(
            "_", "\\_") + "%"
    rows = conn.execute(sa.text(
        "SELECT id, source_file, position, line, record_key, column_name AS column, "
        f"raw_value, reason FROM quarantine WHERE {' AND '.join(where)} "
        "ORDER BY id LIMIT :limit"), params).mappings().all()
    items = [dict(r) for r in rows[:limit]]
    next_url = None
    if len(rows) > limit:
        args = [(k, str(v)) for k, v in query.items() if k != "cursor"]
        next_url = url_for("snapshot_quarantine", dataset_id=dataset.id, sid=sid) + "?" + \
            urlencode([*args, ("cursor", str(items[-1]["id"]))])
    return {"dataset": dataset.id, "snapshot_id": sid, "count": len(items), "items": items,
            "next": next_url}


def _known_column(conn: Connection, dataset: Dataset, sid: int, column: str) -> None:
    """A 400 for a ``column`` filter that can match nothing: neither a catalog column nor
    one the snapshot's quarantine entries name (they may name raw source headers)."""
    if column in dataset.column_types():
        return
    used = {str(c) for c in conn.execute(sa.text(
        "SELECT DISTINCT column_name FROM quarantine WHERE snapshot_id = :sid "
        "AND column_name IS NOT NULL"), {"sid": sid}).scalars()}
    if column not in used:
        known = sorted(set(dataset.column_types()) | used)
        raise BadParameter("column", f"unknown column {column!r}; known columns: "
                                     f"{', '.join(known)} (or '-' for whole-row entries)")


def register_quality(app: APIFlask, model: ReadModel) -> None:
    tags = ["Quality"]

    @app.get("/api/v1/datasets/<dataset_id>/snapshots/<int:sid>/quality")
    @app.output(schemas.QualityReport)
    @app.doc(summary="Quality report of a snapshot", tags=tags,
             description="Rows read, accepted, rejected and quarantined; quarantine entries "
                         "by reason; per column the null rate, distinct values and the "
                         "range of numbers and dates as of the snapshot; and how many cells "
                         "each normalization changed.",
             responses={404: "Unknown dataset, or no committed snapshot with that id"})
    def snapshot_quality(dataset_id: str, sid: int) -> Any:
        dataset = model.dataset(dataset_id)
        with model.engine.begin() as conn:
            return quality_report(conn, dataset, sid)

    @app.get("/api/v1/datasets/<dataset_id>/snapshots/<int:sid>/quarantine")
    @app.input(schemas.QuarantineQuery, location="query")
    @app.output(schemas.QuarantinePage)
    @app.doc(summary="Quarantined rows and cells of a snapshot", tags=tags,
             description="Each rejected row or cell with its file, position (line, sheet "
                         "and row, page and row), column, raw value and reason; paginated "
                         "in the order they were stored.",
             responses={400: "Bad parameter",
                        404: "Unknown dataset, or no committed snapshot with that id"})
    def snapshot_quarantine(dataset_id: str, sid: int, query_data: dict[str, Any]) -> Any:
        dataset = model.dataset(dataset_id)
        with model.engine.connect() as conn:
            return quarantine_page(conn, dataset, sid, query_data)
