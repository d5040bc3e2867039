"""Records as JSON lines, CSV and GeoJSON, a page at a time or the whole dataset streamed.

An export reads through a server-side cursor (``stream_results``) a chunk of rows at a
time and yields each chunk encoded, so memory stays constant however many records match;
there is no row cap. A CSV may start with a byte order mark (``bom=true``) so that Excel
reads it as UTF-8.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import orjson
import sqlalchemy as sa
from apiflask import APIFlask, Schema, fields
from apiflask.schemas import FileSchema
from flask import Response, request
from marshmallow import INCLUDE

from stldata.api import schemas
from stldata.api.geo import neighborhood_lookup
from stldata.api.paging import build_select
from stldata.api.problems import BadParameter
from stldata.api.query import (
    RecordQuery,
    output_columns,
    parse_query,
    records_from,
    visible_names,
)
from stldata.catalog import Dataset

if TYPE_CHECKING:
    from stldata.api.app import ReadModel

#: Rows fetched from the server-side cursor and encoded per response chunk.
CHUNK_ROWS = 2000
MEDIA_TYPES = {
    "json": "application/json",
    "ndjson": "application/x-ndjson",
    "csv": "text/csv; charset=utf-8",
    "geojson": "application/geo+json",
}
EXPORT_FORMATS = ("csv", "ndjson", "geojson")


def plain(value: Any, tz: ZoneInfo) -> Any:
    """A JSON-ready value: datetimes in the dataset's time zone, dates as ISO text."""
    if isinstance(value, datetime):
        return value.astimezone(tz).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


def record_of(row: Mapping[Any, Any], names: Sequence[str], tz: ZoneInfo) -> dict[str, Any]:
    return {n: plain(row[n], tz) for n in names}


Convert = Callable[[Any], Any]


class Layout:
    """How the selected columns of a result become records: which positions, in which
    order, and the conversion each column needs (decided once per column from its type,
    not per cell, since exports convert millions of cells)."""

    def __init__(self, dataset: Dataset, names: Sequence[str], keys: Sequence[str]) -> None:
        tz = ZoneInfo(dataset.timezone)
        types = dataset.column_types()
        self.names = list(names)
        self._positions = [list(keys).index(n) for n in names]

        def local(value: datetime) -> str:
            return value.astimezone(tz).isoformat()

        def day(value: date) -> str:
            return value.isoformat()

        def yes_no(value: bool) -> str:
            return "true" if value else "false"

        def geojson(value: Any) -> str:
            return value if isinstance(value, str) else orjson.dumps(value).decode()

        # ISO text for every JSON writer (Flask's would write dates as HTTP dates).
        json_by_type: dict[str, Convert] = {"datetime": local, "date": day, "month": day}
        csv_by_type: dict[str, Convert] = {"datetime": local, "date": day, "month": day,
                                           "boolean": yes_no, "geometry": geojson}
        self._json = self._pairs([json_by_type.get(types.get(n, "")) for n in names])
        self._csv = self._pairs([csv_by_type.get(types.get(n, "")) for n in names])

    @staticmethod
    def _pairs(converters: list[Convert | None]) -> list[tuple[int, Convert]]:
        return [(i, c) for i, c in enumerate(converters) if c is not None]

    def values(self, row: Sequence[Any]) -> list[Any]:
        """The row's values in the order of ``names``, unconverted."""
        return [row[i] for i in self._positions]

    @staticmethod
    def _convert(values: list[Any], pairs: list[tuple[int, Convert]]) -> list[Any]:
        for i, convert in pairs:
            if values[i] is not None:
                values[i] = convert(values[i])
        return values

    def record(self, values: list[Any]) -> dict[str, Any]:
        """A JSON-ready record (``values`` is converted in place)."""
        return dict(zip(self.names, self._convert(values, self._json), strict=True))

    def csv_row(self, values: list[Any]) -> list[Any]:
        return self._convert(values, self._csv)


def csv_chunks(layout: Layout, rows: Iterable[Sequence[list[Any]]],
               *, bom: bool = False) -> Iterator[bytes]:
    """The header, then one chunk of CSV lines per chunk of rows, UTF-8; an empty cell is
    no value."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(layout.names)
    yield (("\ufeff" if bom else "") + buffer.getvalue()).encode()
    for chunk in rows:
        buffer.seek(0)
        buffer.truncate()
        writer.writerows(layout.csv_row(values) for values in chunk)
        yield buffer.getvalue().encode()


def ndjson_chunks(layout: Layout, rows: Iterable[Sequence[list[Any]]]) -> Iterator[bytes]:
    for chunk in rows:
        yield b"".join(orjson.dumps(layout.record(values)) + b"\n" for values in chunk)


def geometry_column(dataset: Dataset) -> str | None:
    return next((n for n, t in dataset.column_types().items() if t == "geometry"), None)


def as_geometry(value: Any) -> Any:
    """A geometry column's value as a GeoJSON geometry object (stored as JSON text)."""
    if isinstance(value, (str, bytes)):
        return orjson.loads(value)
    return value


def feature(dataset: Dataset, record: dict[str, Any]) -> dict[str, Any]:
    """A GeoJSON Feature: a Point from longitude/latitude, or the geometry column."""
    geometry: Any = None
    properties = {k: v for k, v in record.items() if k != "_key"}
    shape = geometry_column(dataset)
    if dataset.geometry is not None:
        lon = record.get(dataset.geometry.longitude)
        lat = record.get(dataset.geometry.latitude)
        if lon is not None and lat is not None:
            geometry = {"type": "Point", "coordinates": [lon, lat]}
    elif shape is not None:
        geometry = as_geometry(properties.pop(shape, None))
    return {"type": "Feature", "id": record["_key"], "geometry": geometry,
            "properties": properties}


def geojson_chunks(dataset: Dataset, layout: Layout, rows: Iterable[Sequence[list[Any]]],
                   members: dict[str, Any] | None = None) -> Iterator[bytes]:
    """A FeatureCollection, written a chunk of features at a time."""
    head = orjson.dumps({"type": "FeatureCollection", **(members or {})})
    yield head[:-1] + b', "features": ['
    first = True
    for chunk in rows:
        parts = [orjson.dumps(feature(dataset, layout.record(values))) for values in chunk]
        if parts:
            yield (b"" if first else b",") + b",".join(parts)
            first = False
    yield b"]}"


def encode(dataset: Dataset, format_: str, layout: Layout,
           rows: Iterable[Sequence[list[Any]]], *, bom: bool = False,
           members: dict[str, Any] | None = None) -> Iterator[bytes]:
    """Chunks of rows (values in ``layout.names`` order) as CSV, JSON lines or GeoJSON."""
    if format_ == "csv":
        return csv_chunks(layout, rows, bom=bom)
    if format_ == "ndjson":
        return ndjson_chunks(layout, rows)
    if format_ == "geojson":
        return geojson_chunks(dataset, layout, rows, members)
    raise ValueError(format_)


def stream_rows(engine: sa.Engine, statement: sa.Select[Any], dataset: Dataset,
                names: Sequence[str], chunk_rows: int = CHUNK_ROWS
                ) -> tuple[Layout, Iterator[list[list[Any]]]]:
    """The layout, and chunks of rows read through a server-side cursor: constant memory.
    The connection is released when the chunks end or are closed early (a client that
    disconnects)."""
    keys = [c.key or "" for c in statement.selected_columns]
    layout = Layout(dataset, names, keys)

    def chunks() -> Iterator[list[list[Any]]]:
        with engine.connect() as conn:
            streaming = conn.execution_options(stream_results=True, yield_per=chunk_rows)
            result = streaming.execute(statement)
            for partition in result.partitions(chunk_rows):
                yield [layout.values(row) for row in partition]
    return layout, chunks()


def parse_bom(args: Mapping[str, list[str]]) -> bool:
    if "bom" not in args:
        return False
    text = args["bom"][0].strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", ""):
        return False
    raise BadParameter("bom", f"{text!r}: expected true or false")


class ExportQuery(Schema):
    class Meta:
        # Column filters depend on the dataset; the query parser checks them.
        unknown = INCLUDE

    bom = fields.Boolean(load_default=False, metadata={
        "description": "CSV only: start with a UTF-8 byte order mark, so Excel reads "
                       "accents and symbols right.", "example": True})
    q = fields.String(metadata={"description": "Full-text search, as on /records.",
                                "example": "burglary"})
    fields_ = fields.String(data_key="fields", metadata={
        "description": "Columns to export (comma-separated).",
        "example": "date_occur,crime,description"})
    order = fields.String(metadata={"description": "Sort, as on /records; default: key.",
                                    "example": "-date_occur"})


EXPORT_HELP = (
    "The whole filtered dataset, streamed with no row cap and in constant memory. "
    "Takes every filter of `/records` (column filters, `or`, `q`, `bbox`, `near`, "
    "`within`, `fields`, `order`, `as_of`), but no `limit` or `cursor`. Example: "
    "`/api/v1/datasets/slmpd-crime/export.csv?coded_month__year=2018&bom=true`."
)


def register(app: APIFlask, model: ReadModel) -> None:
    for format_ in EXPORT_FORMATS:
        _register_export(app, model, format_)


def _register_export(app: APIFlask, model: ReadModel, format_: str) -> None:
    def export(dataset_id: str, query_data: dict[str, Any]) -> Response:
        dataset = model.dataset(dataset_id)
        args = request.args.to_dict(flat=False)
        for param in ("limit", "cursor", "format"):
            if param in args:
                raise BadParameter(param, "an export has every matching record in the "
                                          "format its path names; drop this parameter")
        bom = parse_bom(args)
        with model.engine.connect() as conn:
            table = records_from(conn, dataset, model.metadata, args)
            query: RecordQuery = parse_query(
                dataset, table, {**args, "format": [format_]},
                neighborhoods=neighborhood_lookup(conn, model.dataset, model.metadata))
            columns = output_columns(dataset, table, query, with_order=False)
            statement = build_select(table, query, columns, paged=False)
        layout, rows = stream_rows(model.engine, statement, dataset,
                                   visible_names(dataset, query))
        body = encode(dataset, format_, layout, rows, bom=bom,
                      members={"dataset": dataset.id})
        filename = f"{dataset.id}.{format_}"
        return Response(body, mimetype=MEDIA_TYPES[format_].split(";")[0],
                        headers={"Content-Disposition": f'attachment; filename="{filename}"',
                                 "X-Accel-Buffering": "no"})

    export.__name__ = f"export_{format_}"
    media = MEDIA_TYPES[format_].split(";")[0]
    # FileSchema names the one media type; the 200 below gives it a schema (an object for
    # GeoJSON), an example and the headers.
    decorated = app.doc(
        summary=f"Export records as {format_.upper()}", tags=["Records"],
        description=EXPORT_HELP,
        responses=schemas.responses(schemas.export_response(format_, media),
                                    {400: "Bad parameter", 404: "Unknown dataset"}),
    )(app.output(FileSchema, content_type=media, description=f"Every matching record as "
                 f"{format_}")(app.input(ExportQuery, location="query")(export)))
    app.get(f"/api/v1/datasets/<dataset_id>/export.{format_}")(decorated)

