"""The records endpoint: filtered, searched, located, paginated, in four formats.

``GET /api/v1/datasets/{id}/records`` answers a page (``limit``, keyset ``cursor``) as
JSON, JSON lines, CSV or GeoJSON, with ``total``: exact up to
:data:`~stldata.api.paging.EXACT_COUNT_LIMIT` matches, the planner's estimate beyond
(``total_is_estimate``), so no page pays for a full COUNT. :func:`register` also adds
the export and cross-dataset search endpoints.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import orjson
import sqlalchemy as sa
from apiflask import APIFlask, fields
from flask import Response, request, url_for

from stldata.api import caching, exports, schemas, search
from stldata.api.geo import neighborhood_lookup
from stldata.api.paging import read_page
from stldata.api.query import (
    FORMATS,
    encode_cursor,
    output_columns,
    parse_query,
    records_from,
    visible_names,
)

if TYPE_CHECKING:
    from stldata.api.app import ReadModel
    from stldata.catalog import Dataset


class RecordListQuery(schemas.RecordsQuery):
    format = fields.String(load_default="json", metadata={
        "description": "json (a page object), ndjson (one record per line), csv, or "
                       "geojson (a FeatureCollection of Points from longitude/latitude, "
                       "or of the geometry column). Other formats carry the next page "
                       "in a `Link: <...>; rel=\"next\"` header.",
        "enum": list(FORMATS), "example": "json"})
    fields_ = fields.String(data_key="fields", metadata={
        "description": "Columns to return, comma-separated; `_key` is always returned.",
        "example": "date_occur,crime,description"})
    q = fields.String(metadata={
        "description": "Full-text search over the dataset's text columns (English "
                       "stemming, web-search syntax: words, \"a phrase\", or, -word). "
                       "Results come best first with `_rank` unless `order` is given.",
        "example": "stolen auto"})
    or_ = fields.String(data_key="or", metadata={
        "description": "Alternatives: `col[__part][__op]:value` terms separated by `|` "
                       "(`\\|` is a literal bar). Several `or` parameters all apply.",
        "example": "crime__startswith:6|district:3"})
    bbox = fields.String(metadata={
        "description": "Records inside a box, WGS84: minLon,minLat,maxLon,maxLat.",
        "example": "-90.30,38.60,-90.25,38.65"})
    near = fields.String(metadata={
        "description": "Records within `radius_m` metres (great-circle) of lat,lon; "
                       "nearest first with `_distance` (metres) unless `order` is given.",
        "example": "38.6270,-90.1994"})
    radius_m = fields.String(metadata={
        "description": "Radius for `near`, in metres (up to 500000).", "example": "500"})
    within = fields.String(metadata={
        "description": "Records inside a neighborhood of the stl-neighborhoods dataset, by "
                       "name (case-insensitive) or number.",
        "example": "neighborhood:Downtown West"})
    as_of = fields.String(metadata={
        "description": "Time travel: the records as of a snapshot id or a moment "
                       "(ISO-8601).", "example": "2024-01-01T00:00:00"})


class RecordsPageOut(schemas.RecordsPage):
    total = fields.Integer(metadata={
        "description": "Records matching the filters: exact up to 10000, else the "
                       "query planner's estimate.", "example": 4282})
    total_is_estimate = fields.Boolean(metadata={
        "description": "True when `total` is an estimate.", "example": False})


FILTER_HELP = schemas.FILTER_HELP + (
    "\n\nMore operators: `contains`, `icontains`, `startswith`, `istartswith`, `endswith`, "
    "`iendswith` on text (wildcards in the value are literal), `isnull=true|false` on any "
    "column. Date parts `year`, `month`, `day`, `dow` (0 = Sunday), `hour` (local time) of "
    "date, month and datetime columns take the comparison operators too: "
    "`date_occur__year__gte=2015`, `date_occur__hour__in=22,23`. "
    "Example: `/api/v1/datasets/slmpd-crime/records?description__icontains=auto"
    "&date_occur__dow=6&or=district:3|district:4&fields=date_occur,description`."
)


def register(app: APIFlask, model: ReadModel) -> None:
    """The records, export and search endpoints."""
    _register_records(app, model)
    exports.register(app, model)
    search.register(app, model)


def _register_records(app: APIFlask, model: ReadModel) -> None:
    @app.get("/api/v1/datasets/<dataset_id>/records")
    @app.input(RecordListQuery, location="query")
    @app.output(RecordsPageOut, example=schemas.RECORDS_PAGE_EXAMPLE)
    @app.doc(summary="List records", tags=["Records"], description=FILTER_HELP,
             responses=schemas.responses(schemas.records_response(exports.MEDIA_TYPES),
                                         {400: "Bad parameter", 404: "Unknown dataset"}))
    def list_records(dataset_id: str, query_data: dict[str, Any]) -> Any:
        dataset = model.dataset(dataset_id)
        args = request.args.to_dict(flat=False)
        if "bom" in args and args.get("format", ["json"])[0] != "csv":
            args.pop("bom")  # harmless outside CSV
        bom = exports.parse_bom(args)
        with model.connect() as conn:
            table = records_from(conn, dataset, model.metadata, args)
            query = parse_query(dataset, table, args, neighborhoods=neighborhood_lookup(
                conn, model.dataset, model.metadata), conn=conn)
            columns = output_columns(dataset, table, query)
            keys, rows, total, estimated = read_page(
                conn, table, query, columns,
                table_rows=caching.table_rows_read(dataset.id) if "as_of" not in args
                else None)
            snapshot = _page_snapshot(conn, dataset, args)

        page = rows[: query.limit]
        names = visible_names(dataset, query)
        next_url = None
        if len(rows) > query.limit:
            last = page[-1]._mapping
            cursor = encode_cursor([last[n] for n, _ in query.order] + [last["_key"]],
                                   query)
            params = [(k, v) for k, vs in args.items() if k != "cursor" for v in vs]
            next_url = url_for("list_records", dataset_id=dataset.id) + "?" + urlencode(
                [*params, ("cursor", cursor)])
        if query.format == "json":
            page_object = {"dataset": dataset.id, "snapshot_id": snapshot, "count": len(page),
                           "total": total, "total_is_estimate": estimated,
                           "items": json_records(dataset, names, keys, page), "next": next_url}
            # Already in its documented shape (RecordsPageOut), with values orjson writes
            # as documented: encoded directly, a page of 1,000 records skips a schema pass
            # over each one.
            return Response(orjson.dumps(page_object), mimetype="application/json")

        layout = exports.Layout(dataset, names, keys)
        values = [layout.values(row) for row in page]
        members = {"dataset": dataset.id, "count": len(page), "total": total,
                   "total_is_estimate": estimated, "next": next_url}
        body = b"".join(exports.encode(dataset, query.format, layout, [values], bom=bom,
                                       members=members))
        headers = {"X-Total-Count": str(total),
                   "X-Total-Is-Estimate": "true" if estimated else "false"}
        if next_url:
            headers["Link"] = f'<{next_url}>; rel="next"'
        return Response(body, mimetype=exports.MEDIA_TYPES[query.format].split(";")[0],
                        headers=headers)


def json_records(dataset: Dataset, names: Sequence[str], keys: Sequence[str],
                 rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    """The page's records for :func:`orjson.dumps`, which writes them as
    :meth:`exports.Layout.record` does: datetimes as ISO text in the dataset's time zone,
    dates and months as ISO dates. orjson writes dates, and datetimes whose UTC offset is
    whole minutes, exactly as ``isoformat()`` does, and faster; other datetimes (local
    mean time before time zones, -05:50:36 in Chicago) are written here, since orjson
    would round their offset. Converted a column at a time, not a row at a time."""
    positions = [keys.index(n) for n in names]
    # All columns in order: rows may carry more after them (the count of matches).
    if positions == list(range(len(names))):
        records = [dict(zip(names, row, strict=False)) for row in rows]
    else:
        records = [{n: row[i] for n, i in zip(names, positions, strict=True)} for row in rows]
    types = dataset.column_types()
    tz = ZoneInfo(dataset.timezone)
    for name in names:
        if types.get(name) != "datetime":
            continue
        for record in records:
            moment = record[name]
            if moment is not None:
                local = moment.astimezone(tz)
                offset = local.utcoffset()
                record[name] = local if offset is None or not offset.seconds % 60 \
                    else local.isoformat()
    return records


def _page_snapshot(conn: sa.Connection, dataset: Dataset,
                   args: dict[str, list[str]]) -> int | None:
    """The snapshot a page shows: the one ``as_of`` resolved to (already validated by
    ``records_from``), else the dataset's latest committed snapshot — not the newest one
    among the page's rows, which depends on which rows the filters happen to keep."""
    if "as_of" in args:
        from stldata.api import timetravel

        return timetravel.resolve_as_of(conn, dataset, args["as_of"][0])
    already = caching.latest_snapshot_read(dataset.id)
    if already is not None:
        return already
    sid = conn.execute(sa.text(
        "SELECT max(id) FROM snapshots WHERE dataset_id = :d AND status = 'committed'"),
        {"d": dataset.id}).scalar()
    return None if sid is None else int(sid)
