"""History endpoints: snapshots, diffs between them, a record's versions, the change feed.

Everything is read from ``record_versions`` (every version of every record, with the
snapshots it was valid for, and deletion markers) and ``snapshots``. Diffs and the feed
select in SQL only the versions written between the snapshots concerned, so their cost
follows the size of the change, not of the dataset.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import orjson
import sqlalchemy as sa
from apiflask import APIFlask
from flask import request, url_for

from stldata.api import history_schemas as schemas
from stldata.api.problems import BadParameter, NotFound
from stldata.catalog import Dataset

if TYPE_CHECKING:
    from stldata.api.app import ReadModel

SNAPSHOT_COLUMNS = ("id", "status", "source", "files", "fetched_at", "committed_at", "sha256",
                    "rows_read", "record_count", "quarantined", "added", "changed", "deleted",
                    "unchanged", "row_count")
CHANGES = ("added", "changed", "removed")
#: ``after=latest`` starts the change feed at its end.
LATEST = "latest"

_DIFF = """
    WITH candidates AS (
        -- Every change between the two snapshots wrote a version (or a deletion marker)
        -- after the older one: only those keys can differ.
        SELECT DISTINCT key FROM record_versions
        WHERE dataset_id = :ds AND valid_from > :lo AND valid_from <= :hi AND key > :after
    ), pairs AS (
        SELECT c.key, o.values AS old_values, n.values AS new_values,
               CASE WHEN o.id IS NULL THEN 'added' WHEN n.id IS NULL THEN 'removed'
                    ELSE 'changed' END AS change
        FROM candidates c
        LEFT JOIN record_versions o
            ON o.dataset_id = :ds AND o.key = c.key AND NOT o.deleted
           AND o.valid_from <= :old AND (o.valid_to IS NULL OR o.valid_to > :old)
        LEFT JOIN record_versions n
            ON n.dataset_id = :ds AND n.key = c.key AND NOT n.deleted
           AND n.valid_from <= :new AND (n.valid_to IS NULL OR n.valid_to > :new)
        -- A record changed and changed back has the same hash: not a difference.
        WHERE (o.id IS NULL) <> (n.id IS NULL) OR o.hash IS DISTINCT FROM n.hash
    )
"""

_FEED = """
    SELECT v.valid_from AS snapshot_id, v.key, v.deleted, v.values,
           p.values AS previous, p.id IS NOT NULL AS existed, s.committed_at
    FROM record_versions v
    JOIN snapshots s ON s.id = v.valid_from
    -- The live version this one replaced (none for a new key or one deleted before).
    LEFT JOIN record_versions p
        ON p.dataset_id = v.dataset_id AND p.key = v.key AND p.valid_to = v.valid_from
       AND NOT p.deleted
    WHERE v.dataset_id = :ds AND {after}
    ORDER BY v.valid_from, v.key
    LIMIT :n
"""


def encode_position(kind: str, dataset_id: str, *position: Any) -> str:
    data = orjson.dumps([kind, dataset_id, *position])
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def decode_position(text: str, kind: str, dataset_id: str, param: str,
                    types: tuple[type | tuple[type, ...], ...]) -> list[Any]:
    """Decode a cursor this API issued for this kind of list and dataset, or a 400."""
    try:
        values = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, ValueError):
        raise BadParameter(param, "not a cursor this API issued") from None
    if (not isinstance(values, list) or len(values) != 2 + len(types)
            or values[0] != kind
            or not all(isinstance(v, t) and not isinstance(v, bool)
                       for v, t in zip(values[2:], types, strict=True))):
        raise BadParameter(param, "not a cursor this API issued")
    if values[1] != dataset_id:
        raise BadParameter(param, f"a cursor of dataset {values[1]!r}, not {dataset_id!r}")
    return values[2:]


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _changed_columns(order: list[str], old: Mapping[str, Any], new: Mapping[str, Any]
                     ) -> list[str]:
    """Columns whose value differs, in the catalog's order (then any others, sorted)."""
    names = order + sorted((set(old) | set(new)) - set(order))
    return [n for n in names if (n in old or n in new) and old.get(n) != new.get(n)]


def _page_url(endpoint: str, cursor_param: str, cursor: str, **values: Any) -> str:
    params = [(k, v) for k, vs in request.args.to_dict(flat=False).items()
              if k != cursor_param for v in vs]
    return url_for(endpoint, **values) + "?" + urlencode([*params, (cursor_param, cursor)])


class History:
    """Queries behind the history endpoints, over one read model's engine."""

    def __init__(self, model: ReadModel) -> None:
        self.model = model

    def snapshot(self, conn: sa.Connection, dataset: Dataset, sid: int) -> dict[str, Any]:
        """A committed snapshot of the dataset, or 404 naming it."""
        rows = self.snapshots(conn, dataset, sid=sid)
        if not rows:
            raise NotFound(f"dataset {dataset.id!r} has no committed snapshot {sid}; "
                           f"see /api/v1/datasets/{dataset.id}/snapshots")
        return rows[0]

    def snapshots(self, conn: sa.Connection, dataset: Dataset, *, sid: int | None = None,
                  before: int | None = None, limit: int = 1) -> list[dict[str, Any]]:
        where = "id = :sid" if sid is not None else (
            "id < :before" if before is not None else "true")
        rows = conn.execute(sa.text(
            f"SELECT * FROM (SELECT {', '.join(SNAPSHOT_COLUMNS)}, "  # noqa: S608 - fixed text
            "lag(id) OVER (ORDER BY id) AS previous FROM snapshots "
            "WHERE dataset_id = :ds AND status = 'committed') s "
            f"WHERE {where} ORDER BY id DESC LIMIT :n"),
            {"ds": dataset.id, "sid": sid, "before": before, "n": limit}).mappings().all()
        base = f"/api/v1/datasets/{dataset.id}"
        out = []
        for row in rows:
            snap = {k: _iso(v) for k, v in row.items()}
            snap["links"] = {"self": f"{base}/snapshots/{row['id']}",
                             "records": f"{base}/records?as_of={row['id']}",
                             "diff": f"{base}/snapshots/{row['id']}/diff"}
            out.append(snap)
        return out

    def diff(self, dataset: Dataset, sid: int, query: dict[str, Any]) -> dict[str, Any]:
        with self.model.connect() as conn:
            snap = self.snapshot(conn, dataset, sid)
            against: int | None = query.get("against")
            if against is None:
                against = snap["previous"]
            elif not self.snapshots(conn, dataset, sid=against):
                raise BadParameter("against", f"dataset {dataset.id!r} has no committed "
                                              f"snapshot {against}; see "
                                              f"/api/v1/datasets/{dataset.id}/snapshots")
            old = against if against is not None else 0
            params: dict[str, Any] = {"ds": dataset.id, "lo": min(old, sid),
                                      "hi": max(old, sid), "old": old, "new": sid, "after": ""}
            change = query.get("change")
            only = " WHERE change = :change" if change else ""
            params["change"] = change
            summary = {c: 0 for c in CHANGES}
            for kind, count in conn.execute(sa.text(
                    _DIFF + "SELECT change, count(*) FROM pairs GROUP BY change"), params):
                summary[str(kind)] = int(count)
            if "cursor" in query:
                params["after"] = decode_position(query["cursor"], f"diff:{old}:{sid}",
                                                  dataset.id, "cursor", (str,))[0]
            limit = int(query["limit"])
            rows = conn.execute(sa.text(
                _DIFF + f"SELECT * FROM pairs{only} ORDER BY key LIMIT :n"),
                {**params, "n": limit + 1}).mappings().all()

        order = list(dataset.column_types())
        items = []
        for row in rows[:limit]:
            item: dict[str, Any] = {"change": row["change"], "key": row["key"],
                                    "changed_columns": None, "old": row["old_values"],
                                    "new": row["new_values"]}
            if row["change"] == "changed":
                columns = _changed_columns(order, row["old_values"], row["new_values"])
                item["changed_columns"] = columns
                item["old"] = {c: row["old_values"].get(c) for c in columns}
                item["new"] = {c: row["new_values"].get(c) for c in columns}
            items.append(item)
        next_url = None
        if len(rows) > limit:
            next_url = _page_url("snapshot_diff", "cursor",
                                 encode_position(f"diff:{old}:{sid}", dataset.id,
                                                 items[-1]["key"]),
                                 dataset_id=dataset.id, sid=sid)
        return {"dataset": dataset.id, "snapshot_id": sid, "against": against,
                "summary": summary, "count": len(items), "items": items, "next": next_url}

    def record_history(self, dataset: Dataset, key: str) -> dict[str, Any]:
        if "\x00" in key:
            raise NotFound(f"dataset {dataset.id!r} has no record with that key")
        with self.model.connect() as conn:
            rows = conn.execute(sa.text("""
                SELECT v.valid_from, v.valid_to, s.committed_at, v.deleted, v.partition,
                       v.line, v.values AS record, v.source
                FROM record_versions v JOIN snapshots s ON s.id = v.valid_from
                WHERE v.dataset_id = :ds AND v.key = :key ORDER BY v.valid_from"""),
                {"ds": dataset.id, "key": key}).mappings().all()
        if not rows:
            raise NotFound(f"dataset {dataset.id!r} never had a record with key {key!r}")
        versions = [{k: _iso(v) for k, v in row.items()} for row in rows]
        current = versions[-1]["valid_to"] is None and not versions[-1]["deleted"]
        return {"dataset": dataset.id, "key": key, "current": current, "versions": versions}

    def changes(self, dataset: Dataset, after: str | None, limit: int) -> dict[str, Any]:
        sid, key = 0, ""
        with self.model.connect() as conn:
            if after == LATEST:
                # The end of the feed: the client wants only what is committed from now on.
                sid = int(conn.execute(sa.text(
                    "SELECT coalesce(max(id), 0) FROM snapshots WHERE dataset_id = :ds "
                    "AND status = 'committed'"), {"ds": dataset.id}).scalar_one())
                after = encode_position("changes", dataset.id, sid, None)
            if after:
                sid, key = decode_position(after, "changes", dataset.id, "after",
                                           (int, (str, type(None))))
            # A position with no key is the end of its snapshot.
            where = ("(v.valid_from, v.key) > (:sid, :key)" if key is not None
                     else "v.valid_from > :sid")
            rows = conn.execute(sa.text(_FEED.format(after=where)), {
                "ds": dataset.id, "sid": sid, "key": key, "n": limit + 1}).mappings().all()
        order = list(dataset.column_types())
        items = []
        for row in rows[:limit]:
            if row["deleted"]:
                change, record, columns = "removed", row["previous"], None
            elif row["existed"]:
                change, record = "changed", row["values"]
                columns = _changed_columns(order, row["previous"], row["values"])
            else:
                change, record, columns = "added", row["values"], None
            items.append({"snapshot_id": row["snapshot_id"],
                          "committed_at": _iso(row["committed_at"]), "change": change,
                          "key": row["key"], "changed_columns": columns, "record": record})
        cursor = after or encode_position("changes", dataset.id, 0, "")
        if items:
            cursor = encode_position("changes", dataset.id, items[-1]["snapshot_id"],
                                     items[-1]["key"])
        next_url = url_for("dataset_changes", dataset_id=dataset.id) + "?" + urlencode(
            [("after", cursor), ("limit", limit)])
        return {"dataset": dataset.id, "count": len(items), "items": items, "cursor": cursor,
                "more": len(rows) > limit, "next": next_url}


def register_history(app: APIFlask, model: ReadModel) -> None:
    history = History(model)
    tags = ["History"]

    @app.get("/api/v1/datasets/<dataset_id>/snapshots")
    @app.input(schemas.PageQuery, location="query")
    @app.output(schemas.SnapshotPage)
    @app.doc(summary="Snapshots of a dataset", tags=tags,
             description="Committed snapshots, newest first, with their counts, source, "
                         "SHA-256 and fetch and commit times.",
             responses={400: "Bad parameter", 404: "Unknown dataset"})
    def list_snapshots(dataset_id: str, query_data: dict[str, Any]) -> Any:
        dataset = model.dataset(dataset_id)
        limit = int(query_data["limit"])
        before = None
        if "cursor" in query_data:
            before = decode_position(query_data["cursor"], "snapshots", dataset.id, "cursor",
                                     (int,))[0]
        with model.connect() as conn:
            rows = history.snapshots(conn, dataset, before=before, limit=limit + 1)
        page = rows[:limit]
        next_url = None
        if len(rows) > limit:
            next_url = _page_url("list_snapshots", "cursor",
                                 encode_position("snapshots", dataset.id, page[-1]["id"]),
                                 dataset_id=dataset.id)
        return {"dataset": dataset.id, "count": len(page), "items": page, "next": next_url}

    @app.get("/api/v1/datasets/<dataset_id>/snapshots/<int:sid>")
    @app.output(schemas.SnapshotOne)
    @app.doc(summary="One snapshot", tags=tags,
             responses={404: "Unknown dataset or snapshot"})
    def get_snapshot(dataset_id: str, sid: int) -> Any:
        dataset = model.dataset(dataset_id)
        with model.connect() as conn:
            snap = history.snapshot(conn, dataset, sid)
        return {"dataset": dataset.id, "snapshot": snap}

    @app.get("/api/v1/datasets/<dataset_id>/snapshots/<int:sid>/diff")
    @app.input(schemas.DiffQuery, location="query")
    @app.output(schemas.DiffPage)
    @app.doc(summary="Differences between two snapshots", tags=tags,
             description="Records added, changed (with the changed columns' old and new "
                         "values) and removed from snapshot `against` (default: the one "
                         "before) to snapshot `sid`, ordered by key and paginated. "
                         "`against` may also be newer than `sid`: the diff then goes "
                         "backwards.",
             responses={400: "Bad parameter", 404: "Unknown dataset or snapshot"})
    def snapshot_diff(dataset_id: str, sid: int, query_data: dict[str, Any]) -> Any:
        body = history.diff(model.dataset(dataset_id), sid, query_data)
        return body

    @app.get("/api/v1/datasets/<dataset_id>/records/<path:key>/history")
    @app.output(schemas.RecordHistory)
    @app.doc(summary="Every version of a record", tags=tags,
             description="Each version with the snapshots it was valid for "
                         "(`valid_from` <= snapshot < `valid_to`), and deletion markers.",
             responses={404: "Unknown dataset, or a key the dataset never had"})
    def record_history(dataset_id: str, key: str) -> Any:
        return history.record_history(model.dataset(dataset_id), key)

    @app.get("/api/v1/datasets/<dataset_id>/changes")
    @app.input(schemas.ChangesQuery, location="query")
    @app.output(schemas.ChangesPage)
    @app.doc(summary="Change feed", tags=tags,
             description="Added, changed and removed records in snapshot order (then key). "
                         "Pass the returned `cursor` as `after` to resume; a page with no "
                         "events keeps the cursor, so poll again with it. Responses carry an "
                         "ETag: polling with If-None-Match costs a 304 until a snapshot is "
                         "committed.",
             responses={400: "Bad parameter", 404: "Unknown dataset"})
    def dataset_changes(dataset_id: str, query_data: dict[str, Any]) -> Any:
        return history.changes(model.dataset(dataset_id), query_data.get("after"),
                               int(query_data["limit"]))
