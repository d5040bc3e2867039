"""Socrata-compatible endpoints: ``GET /resource/{id}.json|.csv|.geojson`` with SoQL.

The ``$``-parameters are parsed by :mod:`stldata.api.soql` and compiled by
:mod:`stldata.api.soql_compile`; any other parameter is a ``column=value`` equality
filter, as on Socrata (``$$``-parameters such as ``$$app_token`` are ignored). Queries run
under a statement timeout, and a query PostgreSQL refuses at run time (a division by zero,
an overflow) is a 400 naming the problem, never a 500.

``as_of`` (a snapshot id or an ISO-8601 time) runs the query over the records as they were
at that snapshot, exactly as on ``/records`` and ``/aggregate``
(:mod:`stldata.api.timetravel`).
"""

from __future__ import annotations

import csv
import io
import logging
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import sqlalchemy as sa
from apiflask import APIFlask, fields
from flask import Response, request

from stldata.api import analytics_schemas as schemas
from stldata.api import exports, timetravel
from stldata.api import schemas as formats
from stldata.api.aggregate import ensure_loaded
from stldata.api.problems import BadParameter
from stldata.api.query import dataset_table, parse_value, search_filter
from stldata.api.soql_compile import SoqlQuery as CompiledQuery
from stldata.api.soql_compile import build_query, format_value
from stldata.catalog import Dataset

log = logging.getLogger(__name__)

SOQL_PARAMS = ("$select", "$where", "$order", "$group", "$having", "$limit", "$offset",
               "$q")
TIMEOUT_SECONDS = 30
MEDIA_TYPES = {"json": "application/json", "csv": "text/csv",
               "geojson": "application/geo+json"}
#: Parameters of ours besides SoQL's: not column filters.
OWN_PARAMS = (timetravel.PARAM,)


class SoqlAsOfQuery(schemas.SoqlQuery):
    as_of = fields.String(metadata={
        "description": "Time travel: run the query over the records as they were at a "
                       "snapshot id of the dataset, or at an ISO-8601 time (the last "
                       "snapshot committed at or before it), as on /records and /aggregate.",
        "example": "2017-06-01T12:00:00"})


def _filters(dataset: Dataset, table: sa.FromClause, args: dict[str, list[str]]
             ) -> list[sa.ColumnElement[bool]]:
    """Socrata's ``column=value`` equality filters, and ``$q``."""
    types = dataset.column_types()
    filters: list[sa.ColumnElement[bool]] = []
    for param, values in args.items():
        if param.startswith("$$") or param in OWN_PARAMS:
            continue  # Socrata's system parameters ($$app_token...), and as_of (the table)
        if param.startswith("$"):
            if param not in SOQL_PARAMS:
                raise BadParameter(param, f"unknown SoQL parameter; they are "
                                          f"{', '.join(SOQL_PARAMS)}")
            continue
        if param not in types:
            raise BadParameter(param, f"unknown column {param!r}; columns are "
                                      f"{', '.join(types)}")
        if types[param] == "geometry":
            raise BadParameter(param, "geometry columns cannot be compared")
        for text in values:
            filters.append(table.c[param] == parse_value(dataset, param, types[param], text,
                                                         param))
    if "$q" in args:
        if len(args["$q"]) > 1:
            raise BadParameter("$q", "given more than once")
        try:
            match, _ = search_filter(dataset, args["$q"][0], table)
        except BadParameter as exc:
            raise BadParameter("$q", exc.reason) from None
        filters.append(match)
    return filters


def _execute(conn: sa.Connection, statement: sa.Select[Any], args: dict[str, list[str]]
             ) -> list[sa.Row[Any]]:
    # PostgreSQL does not say which clause failed: name the likeliest one the request has.
    param = next((p for p in ("$where", "$select", "$having", "$order") if p in args),
                 "$select")
    conn.execute(sa.text(f"SET LOCAL statement_timeout = {TIMEOUT_SECONDS * 1000}"))
    try:
        return list(conn.execute(statement).all())
    except sa.exc.DBAPIError as exc:
        state = str(getattr(exc.orig, "sqlstate", "") or "")
        message = str(exc.orig).splitlines()[0] if exc.orig else "error"
        if state == "57014":
            raise BadParameter(param, f"the query took longer than {TIMEOUT_SECONDS} s; "
                                         "narrow it with $where or $limit") from None
        if state.startswith(("22", "54")):  # data exceptions, limits of the server
            raise BadParameter(param, f"the query failed on the data: {message}"
                               ) from None
        if state.startswith("42"):
            # The compiler should have refused this; say what PostgreSQL said, not 500.
            log.warning("SoQL query refused by PostgreSQL: %s", message)
            raise BadParameter(param, f"the query cannot be run: {message}") from None
        raise


def _records_table(conn: sa.Connection, dataset: Dataset, metadata: sa.MetaData,
                   args: dict[str, list[str]]) -> sa.FromClause:
    """The current records, or with ``as_of`` the records at that snapshot or time."""
    if timetravel.PARAM not in args:
        return dataset_table(dataset, metadata)
    values = args[timetravel.PARAM]
    if len(values) > 1:
        raise BadParameter(timetravel.PARAM, "given more than once")
    snapshot_id = timetravel.resolve_as_of(conn, dataset, values[0])
    return timetravel.table_as_of(dataset, snapshot_id, metadata)


def _run(conn: sa.Connection, dataset: Dataset, table: sa.FromClause, fmt: str,
         shape: str | None, args: dict[str, list[str]]
         ) -> tuple[list[sa.Row[Any]], CompiledQuery, tuple[str, str] | None, str | None]:
    """Compile and run the query; for GeoJSON, with the columns that locate each row.

    Returns the rows, the compiled query, the (longitude, latitude) names of a Point and
    the name of the geometry column in the rows, when they are there.
    """
    query = build_query(dataset, table, {k: v for k, v in args.items()
                                         if k in SOQL_PARAMS and k != "$q"},
                        _filters(dataset, table, args))
    statement = query.statement
    names = [c.name for c in query.columns]
    point: tuple[str, str] | None = None
    if fmt == "geojson" and dataset.geometry is not None:
        lon, lat = dataset.geometry.longitude, dataset.geometry.latitude
        if lon in names and lat in names:
            point = (lon, lat)
        elif not query.grouped:
            statement = statement.add_columns(table.c[lon].label("__lon"),
                                              table.c[lat].label("__lat"))
            point = ("__lon", "__lat")
    shape_at: str | None = None
    if fmt == "geojson" and shape is not None:
        if shape in names:
            shape_at = shape
        elif not query.grouped:
            statement = statement.add_columns(table.c[shape].label("__shape"))
            shape_at = "__shape"
    return _execute(conn, statement, args), query, point, shape_at


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return orjson.dumps(value).decode()
    return str(value)


def register(app: APIFlask, model: Any) -> None:
    """Add the /resource endpoints to the app (``model`` is its ReadModel)."""

    @app.get("/resource/<dataset_id>.<any(json, csv, geojson):fmt>")
    @app.input(SoqlAsOfQuery, location="query")
    @app.doc(summary="Query a dataset with SoQL (Socrata-compatible)", tags=["SoQL"],
             description=schemas.SOQL_HELP + " `as_of` (a snapshot id or ISO-8601 time) "
             "queries the records as they were then.",
             responses=formats.responses(formats.soql_response(MEDIA_TYPES), {
                 400: "Bad parameter (with the position in the query)",
                 404: "Unknown dataset"}))
    def soql_resource(dataset_id: str, fmt: str, query_data: dict[str, Any]) -> Response:
        dataset = model.dataset(dataset_id)
        args = request.args.to_dict(flat=False)
        # Features are Points from longitude/latitude or, as on the records endpoint, the
        # shapes of the geometry column.
        shape = exports.geometry_column(dataset) if dataset.geometry is None else None
        if fmt == "geojson" and dataset.geometry is None and shape is None:
            raise BadParameter("format", f"dataset {dataset.id!r} has no coordinates; "
                                         "use .json or .csv")
        with model.engine.connect() as conn:
            ensure_loaded(conn, dataset)
            table = _records_table(conn, dataset, model.metadata, args)
            rows, query, point, shape_at = _run(conn, dataset, table, fmt, shape, args)
        names = [c.name for c in query.columns]

        tz = ZoneInfo(dataset.timezone)
        types = [c.type for c in query.columns]
        records = [{n: format_value(v, t, tz) for n, v, t in zip(names, row, types,
                                                                 strict=False)}
                   for row in rows]
        headers = {"X-SODA2-Fields": orjson.dumps(names).decode(),
                   "X-SODA2-Types": orjson.dumps(types).decode()}
        if fmt == "csv":
            out = io.StringIO()
            writer = csv.writer(out, lineterminator="\r\n")
            writer.writerow(names)
            writer.writerows([_csv_cell(r[n]) for n in names] for r in records)
            return Response(out.getvalue(), mimetype="text/csv", headers=headers)
        if fmt == "geojson":
            features = []
            for row, record in zip(rows, records, strict=True):
                mapping = row._mapping
                x = mapping[point[0]] if point else None
                y = mapping[point[1]] if point else None
                geometry = ({"type": "Point", "coordinates": [float(x), float(y)]}
                            if x is not None and y is not None else None)
                if shape_at is not None:
                    geometry = exports.as_geometry(mapping[shape_at])
                    record = {k: v for k, v in record.items() if k != shape}
                features.append({"type": "Feature", "geometry": geometry,
                                 "properties": record})
            body = {"type": "FeatureCollection", "features": features}
            return Response(orjson.dumps(body), mimetype=MEDIA_TYPES["geojson"],
                            headers=headers)
        return Response(orjson.dumps(records), mimetype="application/json", headers=headers)
