"""Request and response schemas; the OpenAPI spec is generated from these."""

from __future__ import annotations

from apiflask import Schema, fields, validators
from marshmallow import INCLUDE


class RecordsQuery(Schema):
    class Meta:
        # Column filters (col=value, col__gte=value...) depend on the dataset; they pass
        # through here and are checked against the catalog by the query parser.
        unknown = INCLUDE

    limit = fields.Integer(
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
    log_backend = fields.String()
    log_lag = fields.Integer(allow_none=True, metadata={
        "description": "Messages on the log not yet applied to the read model."})
