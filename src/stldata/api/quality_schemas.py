"""Schemas of the quality report and the quarantine listing."""

from __future__ import annotations

from apiflask import Schema, fields, validators

from stldata.api.digits import WholeNumber


class QuarantineQuery(Schema):
    limit = WholeNumber(load_default=100, validate=validators.Range(min=1, max=1000),
                        metadata={"description": "Entries per page (1-1000, default 100)."})
    cursor = WholeNumber(validate=validators.Range(min=0), metadata={
        "description": "Position from the `next` link of the previous page."})
    column = fields.String(metadata={
        "description": "Only entries about this column; `-` for whole rows and keys.",
        "example": "opened_at"})
    reason = fields.String(metadata={
        "description": "Only entries whose reason starts with this text (case-insensitive).",
        "example": "duplicate key"})


class RowCounts(Schema):
    read = fields.Integer(metadata={"description": "Data rows read from the source files."})
    accepted = fields.Integer(metadata={
        "description": "Rows that became records (read minus rejected)."})
    rejected = fields.Integer(metadata={
        "description": "Rows that could not become a record at all (quarantined whole)."})
    quarantined = fields.Integer(metadata={
        "description": "Rows with at least one quarantine entry (rejected rows, rows with "
                       "a bad cell, rows whose key repeats)."})
    superseded = fields.Integer(metadata={
        "description": "Rows replaced by a later row with the same key."})
    records = fields.Integer(metadata={
        "description": "Records in the dataset as of this snapshot."})


class ReasonCount(Schema):
    column = fields.String(allow_none=True)
    reason = fields.String(metadata={
        "description": "The reason with its values replaced by …, so alike entries group.",
        "example": "… is not a whole number"})
    count = fields.Integer()


class ColumnStats(Schema):
    name = fields.String()
    type = fields.String()
    values = fields.Integer(metadata={"description": "Records with a value."})
    nulls = fields.Integer(metadata={"description": "Records without a value."})
    null_rate = fields.Float(allow_none=True, metadata={"description": "nulls / records."})
    distinct = fields.Integer(metadata={"description": "Distinct values."})
    min = fields.Raw(allow_none=True, metadata={
        "description": "Smallest value (numbers, dates, months, date-times)."})
    max = fields.Raw(allow_none=True, metadata={"description": "Largest value."})


class CoercionCount(Schema):
    column = fields.String()
    kind = fields.String(metadata={
        "description": "value_mapped (a spelling mapped to its canonical value), "
                       "null_spelling (a non-empty cell read as no value: NULL, NA, a "
                       "blank), trimmed (spaces around a value removed), spaces_collapsed "
                       "(runs of spaces inside a text made one)."})
    cells = fields.Integer()


class QualityReport(Schema):
    dataset = fields.String()
    snapshot_id = fields.Integer()
    status = fields.String()
    committed_at = fields.String(allow_none=True)
    rows = fields.Nested(RowCounts)
    quarantine_entries = fields.Integer()
    quarantined_by_reason = fields.List(fields.Nested(ReasonCount))
    columns = fields.List(fields.Nested(ColumnStats))
    coercions = fields.List(fields.Nested(CoercionCount))
    links = fields.Dict()


class QuarantineEntry(Schema):
    id = fields.Integer()
    source_file = fields.String()
    position = fields.String(allow_none=True, metadata={
        "description": "Where the row is: line 12, sheet Jan 2015 row 7, page 9 row 3.",
        "example": "line 1187"})
    line = fields.Integer(allow_none=True, metadata={
        "description": "The parser's row number (a line, a sheet row, page*1000+row)."})
    record_key = fields.String(allow_none=True)
    column = fields.String(allow_none=True)
    raw_value = fields.String(allow_none=True)
    reason = fields.String()


class QuarantinePage(Schema):
    dataset = fields.String()
    snapshot_id = fields.Integer()
    count = fields.Integer()
    items = fields.List(fields.Nested(QuarantineEntry))
    next = fields.String(allow_none=True)
