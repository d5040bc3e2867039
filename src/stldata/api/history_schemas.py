"""Schemas of the history endpoints: snapshots, diffs, record history, the change feed."""

from __future__ import annotations

from apiflask import Schema, fields, validators

from stldata.api.digits import WholeNumber

_LIMIT = {"description": "Items per page (1-1000, default 100)."}

_RECORD_EXAMPLE = {"complaint": "17-000381", "coded_month": "2017-01-01",
                   "date_occur": "2013-01-01T12:00:00-06:00", "count": 1, "district": 6,
                   "description": "STLG BY DECEIT/IDENTITY THEFT REPORT"}


class PageQuery(Schema):
    limit = WholeNumber(load_default=100, validate=validators.Range(min=1, max=1000),
                        metadata=_LIMIT)
    cursor = fields.String(metadata={
        "description": "Opaque position from the `next` link of the previous page."})


class DiffQuery(PageQuery):
    against = WholeNumber(metadata={
        "description": "The older snapshot to compare with (any committed snapshot of the "
                       "dataset); default the snapshot committed just before.",
        "example": 41})
    change = fields.String(
        validate=validators.OneOf(["added", "changed", "removed"]),
        metadata={"description": "Only this kind of change: added, changed or removed."})


class ChangesQuery(Schema):
    after = fields.String(metadata={
        "description": "Opaque cursor from the previous page's `cursor`; omit it to read "
                       "the feed from the first snapshot, or `latest` to start at its end "
                       "(only changes committed from now on).", "example": "latest"})
    limit = WholeNumber(load_default=100, validate=validators.Range(min=1, max=1000),
                        metadata=_LIMIT)


class SnapshotDetail(Schema):
    id = fields.Integer(metadata={"example": 42})
    status = fields.String(metadata={"example": "committed"})
    source = fields.String(metadata={
        "description": "Where the files came from: bundled samples, a folder or a URL.",
        "example": "data/slmpd-crime"})
    files = fields.List(fields.Dict(), metadata={
        "description": "The files published in this snapshot, with their SHA-256."})
    fetched_at = fields.String(allow_none=True, metadata={"example": "2026-12-04T18:30:01+00:00"})
    committed_at = fields.String(allow_none=True,
                                 metadata={"example": "2026-12-04T18:30:04+00:00"})
    sha256 = fields.String(allow_none=True, metadata={
        "description": "SHA-256 over the snapshot's published files."})
    rows_read = fields.Integer(allow_none=True, metadata={"example": 3936})
    record_count = fields.Integer(allow_none=True, metadata={"example": 3936})
    quarantined = fields.Integer(allow_none=True, metadata={"example": 12})
    added = fields.Integer(allow_none=True, metadata={"example": 1})
    changed = fields.Integer(allow_none=True, metadata={"example": 1})
    deleted = fields.Integer(allow_none=True, metadata={"example": 1})
    unchanged = fields.Integer(allow_none=True, metadata={"example": 3934})
    row_count = fields.Integer(allow_none=True, metadata={
        "description": "Records in the dataset once this snapshot was applied."})
    previous = fields.Integer(allow_none=True, metadata={
        "description": "The dataset's snapshot committed before this one."})
    links = fields.Dict(metadata={"example": {
        "self": "/api/v1/datasets/slmpd-crime/snapshots/42",
        "records": "/api/v1/datasets/slmpd-crime/records?as_of=42",
        "diff": "/api/v1/datasets/slmpd-crime/snapshots/42/diff"}})


class SnapshotPage(Schema):
    dataset = fields.String(metadata={"example": "slmpd-crime"})
    count = fields.Integer()
    items = fields.List(fields.Nested(SnapshotDetail), metadata={
        "description": "Committed snapshots, newest first."})
    next = fields.String(allow_none=True)


class SnapshotOne(Schema):
    dataset = fields.String(metadata={"example": "slmpd-crime"})
    snapshot = fields.Nested(SnapshotDetail)


class DiffItem(Schema):
    change = fields.String(metadata={"description": "added, changed or removed",
                                     "example": "changed"})
    key = fields.String(metadata={"example": "2017-01|17-000381|115400|..."})
    changed_columns = fields.List(fields.String(), allow_none=True, metadata={
        "description": "Columns whose value differs (changed records only).",
        "example": ["description"]})
    old = fields.Dict(allow_none=True, metadata={
        "description": "The record at `against` (removed: all columns; changed: the "
                       "changed columns); null when added.",
        "example": {"description": "STLG BY DECEIT/IDENTITY THEFT REPORT"}})
    new = fields.Dict(allow_none=True, metadata={
        "description": "The record at the snapshot (added: all columns; changed: the "
                       "changed columns); null when removed.",
        "example": {"description": "CORRECTED STLG BY DECEIT/IDENTITY THEFT REPORT"}})


class DiffPage(Schema):
    dataset = fields.String(metadata={"example": "slmpd-crime"})
    snapshot_id = fields.Integer(metadata={"example": 42})
    against = fields.Integer(allow_none=True, metadata={
        "description": "The snapshot compared with; null when the snapshot is the "
                       "dataset's first (everything is added).", "example": 41})
    summary = fields.Dict(metadata={
        "description": "Counts over the whole diff, not just this page.",
        "example": {"added": 1, "changed": 1, "removed": 1}})
    count = fields.Integer()
    items = fields.List(fields.Nested(DiffItem), metadata={"description": "Ordered by key."})
    next = fields.String(allow_none=True)


class VersionOut(Schema):
    valid_from = fields.Integer(metadata={
        "description": "Snapshot that wrote this version.", "example": 41})
    valid_to = fields.Integer(allow_none=True, metadata={
        "description": "Snapshot that replaced or deleted it; null while current.",
        "example": 42})
    committed_at = fields.String(allow_none=True, metadata={
        "description": "When valid_from was committed."})
    deleted = fields.Boolean(metadata={
        "description": "A deletion marker: the record is absent from valid_from on."})
    partition = fields.String(allow_none=True, metadata={"example": "january2017.csv"})
    line = fields.Integer(allow_none=True, metadata={"example": 10})
    record = fields.Dict(allow_none=True, metadata={
        "description": "The record's columns in this version; null for a deletion marker.",
        "example": _RECORD_EXAMPLE})
    source = fields.Dict(allow_none=True, metadata={
        "description": "The source row as published."})


class RecordHistory(Schema):
    dataset = fields.String(metadata={"example": "slmpd-crime"})
    key = fields.String()
    current = fields.Boolean(metadata={"description": "Whether the record exists now."})
    versions = fields.List(fields.Nested(VersionOut), metadata={
        "description": "Every version, oldest first."})


class ChangeEvent(Schema):
    snapshot_id = fields.Integer(metadata={"example": 42})
    committed_at = fields.String(allow_none=True)
    change = fields.String(metadata={"description": "added, changed or removed",
                                     "example": "changed"})
    key = fields.String()
    changed_columns = fields.List(fields.String(), allow_none=True, metadata={
        "example": ["description"]})
    record = fields.Dict(allow_none=True, metadata={
        "description": "The record after the change; for removed, as it was last.",
        "example": _RECORD_EXAMPLE})


class ChangesPage(Schema):
    dataset = fields.String(metadata={"example": "slmpd-crime"})
    count = fields.Integer()
    items = fields.List(fields.Nested(ChangeEvent), metadata={
        "description": "Events ordered by snapshot, then key."})
    cursor = fields.String(metadata={
        "description": "Pass as `after` to get the events after this page; unchanged "
                       "when the page is empty, so a client polls with it again."})
    more = fields.Boolean(metadata={
        "description": "Whether more events are waiting already (fetch `next` now)."})
    next = fields.String(metadata={"description": "URL of the next page (poll it later "
                                                  "when `more` is false)."})
