"""Request and response schemas; the OpenAPI spec is generated from these."""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from apiflask import Schema, fields, validators
from marshmallow import INCLUDE

from stldata.api.digits import WholeNumber


class RecordsQuery(Schema):
    class Meta:
        # Column filters (col=value, col__gte=value...) depend on the dataset; they pass
        # through here and are checked against the catalog by the query parser.
        unknown = INCLUDE

    limit = WholeNumber(
        load_default=100, validate=validators.Range(min=1, max=1000),
        metadata={"description": "Records per page (1-1000, default 100)."})
    order = fields.String(metadata={
        "description": "Comma-separated columns to sort by; prefix - for descending. "
                       "Nulls come last either way. Ties are broken by the record key, "
                       "in the direction of the last column, or as `_key` / `-_key` "
                       "given last (`q=...&order=_key` lists matches by key, unranked).",
        "example": "-date_occur,district"})
    cursor = fields.String(metadata={
        "description": "Opaque position from the `next` link of the previous page."})


FILTER_HELP = (
    "Filter on any column with `col=value`, or `col__op=value` where op is one of "
    "gt, gte, lt, lte, ne, in (comma-separated list). Values are parsed as the column's "
    "type (integer, number, boolean, date YYYY-MM-DD, month YYYY-MM, datetime ISO-8601 "
    "in the dataset's time zone unless an offset is given). Unknown columns or "
    "operators, and values of the wrong type, are 400 problems naming the parameter."
)


class ColumnOut(Schema):
    name = fields.String()
    type = fields.String()
    description = fields.String()


class SnapshotOut(Schema):
    id = fields.Integer()
    status = fields.String()
    source = fields.String()
    fetched_at = fields.String(allow_none=True)
    committed_at = fields.String(allow_none=True)
    sha256 = fields.String(allow_none=True)
    rows_read = fields.Integer(allow_none=True)
    record_count = fields.Integer(allow_none=True)
    quarantined = fields.Integer(allow_none=True)
    added = fields.Integer(allow_none=True)
    changed = fields.Integer(allow_none=True)
    deleted = fields.Integer(allow_none=True)
    unchanged = fields.Integer(allow_none=True)


class DatasetOut(Schema):
    id = fields.String(metadata={"example": "slmpd-crime"})
    title = fields.String()
    description = fields.String()
    publisher = fields.String()
    license = fields.String()
    mode = fields.String(metadata={"description": "full or increment"})
    key = fields.List(fields.String())
    timezone = fields.String()
    source = fields.Dict()
    columns = fields.List(fields.Nested(ColumnOut))
    row_count = fields.Integer(allow_none=True)
    latest_snapshot = fields.Nested(SnapshotOut, allow_none=True)
    links = fields.Dict()


class DatasetList(Schema):
    datasets = fields.List(fields.Nested(DatasetOut))


class RecordsPage(Schema):
    dataset = fields.String()
    snapshot_id = fields.Integer(allow_none=True)
    count = fields.Integer(metadata={"description": "Records on this page."})
    items = fields.List(fields.Dict(), metadata={
        "description": "Records: _key, _snapshot_id and the dataset's columns."})
    next = fields.String(allow_none=True, metadata={
        "description": "URL of the next page, or null on the last page."})


class RecordOut(Schema):
    dataset = fields.String()
    record = fields.Dict(metadata={
        "description": "The record's columns, with _source: the source row as published."})


class Health(Schema):
    status = fields.String(metadata={"example": "ok"})
    database = fields.String()
    log = fields.String(metadata={
        "description": "`ok` when the log's lag was read, else why it could not be (a "
                       "broker down, say); the read API serves what is stored meanwhile."})
    log_backend = fields.String()
    log_lag = fields.Integer(allow_none=True, metadata={
        "description": "Messages on the log not yet applied to the read model."})
    projector = fields.String(metadata={
        "description": "Only when status is degraded: why the projector of `stldata up` "
                       "stopped."})


# --- Response formats -------------------------------------------------------------------
# The records, export and SoQL endpoints answer in several media types, but an
# ``@app.output`` schema documents only one. The others are OpenAPI content objects merged
# into the 200 response with ``@app.doc(responses={200: {...}})``, each with a schema and
# an example: the same two January 2017 crime records in every format, exactly as the API
# answers EXAMPLE_QUERY on the bundled sample data (tests/test_openapi_formats.py checks).

#: The /records and export query the examples answer (plus ``format`` on /records).
EXAMPLE_QUERY: list[tuple[str, str]] = [
    ("limit", "2"),
    ("fields", "complaint,date_occur,crime,description,neighborhood,longitude,latitude"),
    ("coded_month", "2017-01"), ("longitude__isnull", "false"),
    ("complaint__isnull", "false")]
_KEYS = ("2017-01-01|16-032685|91113|2016-07-04T22:30:00-05:00|1450|LASALLE LN",
         "2017-01-01|16-053890|63711|2016-10-23T18:52:00-05:00|2014|S 7TH ST")
_EXAMPLE_RECORDS: list[dict[str, Any]] = [
    {"_key": _KEYS[0], "complaint": "16-032685", "date_occur": "2016-07-04T22:30:00-05:00",
     "crime": "91113", "description": "SIMPLE ASSAULT-ADULT/NO INJURY", "neighborhood": 33,
     "longitude": -90.2066977, "latitude": 38.6186912},
    {"_key": _KEYS[1], "complaint": "16-053890", "date_occur": "2016-10-23T18:52:00-05:00",
     "crime": "63711", "description": "LARCENY-SHOPLIFT UNDER $500 /ATTEMPT",
     "neighborhood": 20, "longitude": -90.2027135, "latitude": 38.6069945},
]
_EXAMPLE_TOTAL = 3816


def _example_next(format_: str | None = None) -> str:
    """The ``next`` link of the example page: the query, and the cursor after its last key."""
    # The order the cursor was issued for ("o:" = by key), then the last record's key.
    last = json.dumps(["o:", _KEYS[1]], separators=(",", ":")).encode()
    cursor = base64.urlsafe_b64encode(last).decode().rstrip("=")
    params = [*EXAMPLE_QUERY, *([("format", format_)] if format_ else []),
              ("cursor", cursor)]
    return "/api/v1/datasets/slmpd-crime/records?" + urlencode(params)


#: The JSON page of /records (``format=json``).
RECORDS_PAGE_EXAMPLE: dict[str, Any] = {
    "dataset": "slmpd-crime", "snapshot_id": 1, "count": 2, "total": _EXAMPLE_TOTAL,
    "total_is_estimate": False, "items": _EXAMPLE_RECORDS, "next": _example_next()}


def _csv_text(rows: list[list[Any]]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(
        ["" if v is None else v for v in row] for row in rows)
    return out.getvalue()


def _records_csv(records: list[dict[str, Any]]) -> str:
    names = list(records[0])
    return _csv_text([names, *([r[n] for n in names] for r in records)])


def _ndjson(records: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records)


def _feature(record: dict[str, Any], with_id: bool = True) -> dict[str, Any]:
    properties = {k: v for k, v in record.items() if k != "_key"}
    geometry = {"type": "Point", "coordinates": [record["longitude"], record["latitude"]]}
    return {"type": "Feature", **({"id": record["_key"]} if with_id else {}),
            "geometry": geometry, "properties": properties}


_GEOMETRY_SCHEMA: dict[str, Any] = {
    "type": ["object", "null"], "required": ["type"],
    "description": "A GeoJSON geometry: a Point from the dataset's longitude/latitude, or "
                   "the shape of its geometry column; null when the record has none.",
    "properties": {"type": {"type": "string"}}}


def _feature_collection_schema(with_id: bool, members: dict[str, Any]) -> dict[str, Any]:
    feature: dict[str, Any] = {
        "type": "object", "required": ["type", "geometry", "properties"],
        "properties": {
            "type": {"const": "Feature"},
            "geometry": _GEOMETRY_SCHEMA,
            "properties": {"type": "object", "description": "The record's other columns."},
        }}
    if with_id:
        feature["properties"]["id"] = {"type": "string", "description": "The record key."}
    return {"type": "object", "required": ["type", "features"],
            "description": "A GeoJSON FeatureCollection (RFC 7946), one Feature per row.",
            "properties": {"type": {"const": "FeatureCollection"}, **members,
                           "features": {"type": "array", "items": feature}}}


_TEXT_SCHEMAS = {
    "ndjson": {"type": "string", "description": "JSON lines: one record (as in `items` of "
                                                "the JSON page) per line, each ending in \\n."},
    "csv": {"type": "string", "description": "CSV (RFC 4180, CRLF line ends, UTF-8): a header "
                                             "row of column names, then one row per record; "
                                             "an empty cell is no value."},
}

_PAGE_MEMBERS: dict[str, Any] = {
    "dataset": {"type": "string"},
    "count": {"type": "integer", "description": "Records on this page."},
    "total": {"type": "integer", "description": "Records matching the filters."},
    "total_is_estimate": {"type": "boolean"},
    "next": {"type": ["string", "null"], "description": "URL of the next page, or null."},
}


def _header(description: str, example: Any, *, required: bool = False,
            schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "required": required,
            "schema": schema or {"type": "string"}, "example": example}


#: Headers of every 200 under /api/v1/datasets/{id} (see stldata.api.caching).
CACHE_HEADERS: dict[str, Any] = {
    "ETag": _header("Weak validator of the response: send it back in If-None-Match for a "
                    "304 until a snapshot is committed.",
                    'W/"80e00b0454f7f01fb5f732bc05f7fe71"', required=True),
    "Last-Modified": _header("When the newest snapshot the response depends on was "
                             "committed.", "Fri, 04 Dec 2026 21:34:40 GMT"),
    "Cache-Control": _header("`public, max-age=60`; a response pinned to a snapshot "
                             "(`as_of=<snapshot id>`) is `immutable` for a year.",
                             "public, max-age=60", required=True),
}

#: Headers of a /records page in a format other than json (which has them in the body).
PAGE_HEADERS: dict[str, Any] = {
    "Link": _header('The next page, `<url>; rel="next"`; absent on the last page '
                    "(format=ndjson, csv, geojson).", f'<{_example_next("csv")}>; rel="next"'),
    "X-Total-Count": _header("Records matching the filters (format=ndjson, csv, geojson).",
                             _EXAMPLE_TOTAL, schema={"type": "integer", "minimum": 0}),
    "X-Total-Is-Estimate": _header("`true` when X-Total-Count is the planner's estimate "
                                   "(format=ndjson, csv, geojson).", "false",
                                   schema={"type": "string", "enum": ["true", "false"]}),
}


def _bare(media_type: str) -> str:
    """The media type without parameters: ``text/csv; charset=utf-8`` is ``text/csv``."""
    return media_type.split(";")[0].strip()


def records_response(media_types: Mapping[str, str]) -> dict[str, Any]:
    """The 200 response of /records: the formats besides the JSON page, and headers."""
    geojson = {"type": "FeatureCollection", "dataset": "slmpd-crime", "count": 2,
               "total": _EXAMPLE_TOTAL, "total_is_estimate": False,
               "next": _example_next("geojson"),
               "features": [_feature(r) for r in _EXAMPLE_RECORDS]}
    return {
        "description": "A page of records in the `format` asked for.",
        "content": {
            _bare(media_types["ndjson"]): {"schema": _TEXT_SCHEMAS["ndjson"],
                                           "example": _ndjson(_EXAMPLE_RECORDS)},
            _bare(media_types["csv"]): {"schema": _TEXT_SCHEMAS["csv"],
                                        "example": _records_csv(_EXAMPLE_RECORDS)},
            _bare(media_types["geojson"]): {
                "schema": _feature_collection_schema(True, _PAGE_MEMBERS), "example": geojson},
        },
        "headers": {**PAGE_HEADERS, **CACHE_HEADERS},
    }


def export_response(format_: str, media_type: str) -> dict[str, Any]:
    """The 200 response of ``export.<format_>``: the one media type, and headers."""
    content: dict[str, Any]
    if format_ == "geojson":
        example = {"type": "FeatureCollection", "dataset": "slmpd-crime",
                   "features": [_feature(r) for r in _EXAMPLE_RECORDS]}
        content = {"schema": _feature_collection_schema(
            True, {"dataset": _PAGE_MEMBERS["dataset"]}), "example": example}
    elif format_ == "csv":
        content = {"schema": _TEXT_SCHEMAS["csv"], "example": _records_csv(_EXAMPLE_RECORDS)}
    else:
        content = {"schema": _TEXT_SCHEMAS["ndjson"], "example": _ndjson(_EXAMPLE_RECORDS)}
    disposition = f'attachment; filename="slmpd-crime.{format_}"'
    return {
        "description": f"Every matching record as {format_}, streamed.",
        "content": {_bare(media_type): content},
        "headers": {
            "Content-Disposition": _header("An attachment named after the dataset.",
                                           disposition, required=True),
            **CACHE_HEADERS,
        },
    }


#: The SoQL queries the examples answer: crimes per neighborhood (.json and .csv), and
#: the two records of the /records examples (.json and .geojson).
SOQL_EXAMPLE_QUERIES: dict[str, dict[str, str]] = {
    "grouped": {"$select": "neighborhood, count(*) AS crimes", "$group": "neighborhood",
                "$order": "crimes DESC", "$where": "coded_month = '2017-01'", "$limit": "2"},
    "rows": {"$select": EXAMPLE_QUERY[1][1],
             "$where": "coded_month = '2017-01' AND longitude IS NOT NULL AND complaint IS "
                       "NOT NULL", "$limit": "2"},
}
_SOQL_ROWS: list[dict[str, Any]] = [{"neighborhood": 35, "crimes": 249},
                                    {"neighborhood": 36, "crimes": 208}]


def _soql_query_text(name: str) -> str:
    return "`" + "&".join(f"{k}={v}" for k, v in SOQL_EXAMPLE_QUERIES[name].items()) + "`"


def soql_response(media_types: Mapping[str, str]) -> dict[str, Any]:
    """The 200 response of /resource/{id}.{fmt}: the three media types, and headers."""
    names = list(_SOQL_ROWS[0])
    rows_example = [{k: v for k, v in r.items() if k != "_key"} for r in _EXAMPLE_RECORDS]
    geojson = {"type": "FeatureCollection",
               "features": [_feature(r, with_id=False) for r in _EXAMPLE_RECORDS]}
    return {
        "description": "The rows: a JSON array of objects (`.json`), CSV with a header row "
                       "(`.csv`), or a GeoJSON FeatureCollection (`.geojson`).",
        "content": {
            _bare(media_types["json"]): {
                "schema": {"type": "array", "items": {"type": "object"},
                           "description": "One object per row, keyed by the selected "
                                          "names; values keep their types."},
                "examples": {
                    "grouped": {"summary": "Crimes per neighborhood, January 2017",
                                "description": _soql_query_text("grouped"),
                                "value": _SOQL_ROWS},
                    "rows": {"summary": "Two records",
                             "description": _soql_query_text("rows"),
                             "value": rows_example}}},
            _bare(media_types["csv"]): {
                "schema": _TEXT_SCHEMAS["csv"],
                "example": _csv_text([names, *([r[n] for n in names] for r in _SOQL_ROWS)])},
            _bare(media_types["geojson"]): {
                "schema": _feature_collection_schema(False, {}), "example": geojson},
        },
        "headers": {
            "X-SODA2-Fields": _header("The selected names, as a JSON array (as on Socrata).",
                                      '["neighborhood","crimes"]', required=True),
            "X-SODA2-Types": _header("Their types, as a JSON array.",
                                     '["integer","integer"]', required=True),
        },
    }


def responses(ok: dict[str, Any], errors: Mapping[int | str, str]) -> dict[int | str, Any]:
    """``@app.doc(responses=...)``: a complete 200 response, and the error statuses by
    description (APIFlask gives those its error schema)."""
    out: dict[int | str, Any] = {200: ok}
    out.update(errors)
    return out
