"""Response schemas of the command API; its OpenAPI document is generated from them."""

from __future__ import annotations

from apiflask import Schema, fields

from stldata.command.jobs import STATES


class FileOut(Schema):
    file = fields.String()
    sha256 = fields.String()
    rows_read = fields.Integer()
    published = fields.Integer()
    rejected = fields.Integer()
    with_issues = fields.Integer()
    unmapped_columns = fields.List(fields.String())


class IngestRunOut(Schema):
    id = fields.String(metadata={"description": "Run id; poll /api/v1/ingests/{id}."})
    dataset_id = fields.String(metadata={"example": "slmpd-crime"})
    state = fields.String(metadata={
        "enum": list(STATES),
        "description": "queued, running, then committed (a snapshot was published), "
                       "unchanged (same bytes as the last snapshot: none made), aborted (a "
                       "snapshot was started and discarded) or failed (the source was "
                       "unusable; nothing published)."})
    source = fields.String(metadata={"description": "What was ingested."})
    snapshot_id = fields.Integer(allow_none=True)
    rows_so_far = fields.Integer(metadata={
        "description": "Rows published to the log so far (records and rejected rows)."})
    bytes_read = fields.Integer()
    bytes_total = fields.Integer(allow_none=True)
    rows_read = fields.Integer(allow_none=True)
    published = fields.Integer(allow_none=True)
    quarantined = fields.Integer(allow_none=True)
    files = fields.List(fields.Nested(FileOut), allow_none=True)
    error = fields.String(allow_none=True, metadata={
        "description": "Why the run failed or was aborted."})
    projection = fields.String(allow_none=True, metadata={
        "description": "State of the snapshot in the read model: pending (the projector "
                       "has not applied it yet), committed (served by the read API), aborted."})
    created_at = fields.DateTime()
    started_at = fields.DateTime(allow_none=True)
    ended_at = fields.DateTime(allow_none=True)
    links = fields.Dict(keys=fields.String(), values=fields.String())


class CommandHealth(Schema):
    status = fields.String()
    database = fields.String()
    workers = fields.Integer()
    queued = fields.Integer(allow_none=True)
