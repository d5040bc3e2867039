"""Geographic record filters: a bounding box, a radius around a point, a neighborhood.

There is no PostGIS: points are PostgreSQL's built-in ``point`` in micro-degrees of
longitude and latitude, which the projection indexes with GiST (see
:mod:`stldata.projection.search_index`, which also says why micro-degrees), so ``<@ box``
and ``<@ polygon`` tests use that index. Distances are great-circle
(haversine) metres, with a bounding-box prefilter that the index serves. Neighborhood
polygons come from the ``stl-neighborhoods`` dataset (GeoJSON geometries in WGS84); each
ring is passed to PostgreSQL as a bound ``polygon`` value, outer rings OR'ed and holes
excluded. Every number and polygon is a bound parameter.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa

from stldata.api.problems import ApiProblem, BadParameter
from stldata.catalog import Dataset
from stldata.projection.search_index import POINT_SCALE, POINT_SCALE_SQL

#: Mean Earth radius (IUGG), metres.
EARTH_RADIUS_M = 6_371_008.8
MAX_RADIUS_M = 500_000.0
NEIGHBORHOODS = "stl-neighborhoods"

Ring = list[tuple[float, float]]
#: One polygon: its outer ring, then its holes.
Polygon = list[Ring]


class _PgPolygon(sa.types.UserDefinedType[str]):
    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "polygon"


@dataclass(frozen=True)
class PointColumns:
    longitude: sa.ColumnElement[float]
    latitude: sa.ColumnElement[float]

    @property
    def point(self) -> sa.ColumnElement[Any]:
        # The same expression as the GiST index, so the planner can use it: the scale is
        # SQL text, not a bound parameter.
        scale: sa.ColumnElement[float] = sa.literal_column(POINT_SCALE_SQL, sa.Float)
        return sa.func.point(self.longitude * scale, self.latitude * scale)


def point_columns(dataset: Dataset, table: sa.FromClause, param: str) -> PointColumns:
    if dataset.geometry is None:
        raise BadParameter(param, f"dataset {dataset.id!r} has no point coordinates "
                                  "(longitude/latitude) to filter on")
    return PointColumns(table.c[dataset.geometry.longitude],
                        table.c[dataset.geometry.latitude])


def _numbers(text: str, count: int, param: str, shape: str) -> list[float]:
    parts = text.split(",")
    if len(parts) != count:
        raise BadParameter(param, f"expected {shape}, got {text!r}")
    try:
        values = [_ascii_float(p) for p in parts]
    except ValueError:
        raise BadParameter(param, f"expected {shape} as numbers, got {text!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise BadParameter(param, f"expected finite numbers, got {text!r}")
    return values


def _ascii_float(text: str) -> float:
    """float() in ASCII only: Python's also reads "３８.６" and "3_8"."""
    if not text.isascii() or "_" in text:
        raise ValueError(text)
    return float(text)


def _check_lon_lat(lon: float, lat: float, param: str) -> None:
    if not -180 <= lon <= 180:
        raise BadParameter(param, f"longitude {lon} is outside -180..180")
    if not -90 <= lat <= 90:
        raise BadParameter(param, f"latitude {lat} is outside -90..90")


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    min_lon, min_lat, max_lon, max_lat = _numbers(text, 4, "bbox",
                                                  "minLon,minLat,maxLon,maxLat")
    _check_lon_lat(min_lon, min_lat, "bbox")
    _check_lon_lat(max_lon, max_lat, "bbox")
    if min_lon > max_lon or min_lat > max_lat:
        raise BadParameter("bbox", "minimum is greater than maximum; the order is "
                                   "minLon,minLat,maxLon,maxLat")
    return min_lon, min_lat, max_lon, max_lat


def in_box(points: PointColumns, box: Sequence[float]) -> sa.ColumnElement[bool]:
    min_lon, min_lat, max_lon, max_lat = (v * POINT_SCALE for v in box)
    pg_box = sa.func.box(sa.func.point(min_lon, min_lat), sa.func.point(max_lon, max_lat))
    return points.point.op("<@", is_comparison=True)(pg_box)


def parse_near(text: str, radius: str | None) -> tuple[float, float, float]:
    """``near=lat,lon`` and ``radius_m``: (lat, lon, radius in metres)."""
    lat, lon = _numbers(text, 2, "near", "lat,lon")
    _check_lon_lat(lon, lat, "near")
    if radius is None:
        raise BadParameter("radius_m", "required with near= (metres)")
    try:
        metres = _ascii_float(radius)
    except ValueError:
        raise BadParameter("radius_m", f"{radius!r} is not a number of metres") from None
    if not 0 < metres <= MAX_RADIUS_M:
        raise BadParameter("radius_m", f"must be more than 0 and at most {MAX_RADIUS_M:g}")
    return lat, lon, metres


def distance_m(points: PointColumns, lat: float, lon: float) -> sa.ColumnElement[float]:
    """Great-circle distance in metres from (lat, lon), by the haversine formula."""
    f = sa.func
    half_dlat = f.radians(points.latitude - lat) / 2
    half_dlon = f.radians(points.longitude - lon) / 2
    h = (f.power(f.sin(half_dlat), 2)
         + math.cos(math.radians(lat)) * f.cos(f.radians(points.latitude))
         * f.power(f.sin(half_dlon), 2))
    return sa.type_coerce(2 * EARTH_RADIUS_M * f.asin(f.sqrt(f.least(1.0, h))), sa.Float)


def box_around(lat: float, lon: float, metres: float) -> tuple[float, float, float, float]:
    """A lon/lat box that contains every point within ``metres`` of (lat, lon)."""
    margin = 1.01  # rounding: a point just inside the radius must not fall outside
    dlat = math.degrees(metres / EARTH_RADIUS_M) * margin
    cos_lat = math.cos(math.radians(min(90.0, abs(lat) + dlat)))
    dlon = 180.0 if cos_lat < 1e-9 else min(180.0, dlat / cos_lat)
    return (max(-180.0, lon - dlon), max(-90.0, lat - dlat),
            min(180.0, lon + dlon), min(90.0, lat + dlat))


# --- neighborhoods ---------------------------------------------------------------------

def polygons_of(geometry: Any, where: str) -> list[Polygon]:
    """The polygons of a GeoJSON Polygon or MultiPolygon, as lon/lat rings."""
    if isinstance(geometry, (str, bytes)):
        geometry = orjson.loads(geometry)
    if not isinstance(geometry, dict):
        raise BadParameter("within", f"{where} has no geometry")
    kind, coordinates = geometry.get("type"), geometry.get("coordinates")
    raw: Any
    if kind == "Polygon":
        raw = [coordinates]
    elif kind == "MultiPolygon":
        raw = coordinates
    else:
        raise BadParameter("within", f"{where} is a {kind}, not a Polygon or MultiPolygon")
    try:
        polygons = [[[(float(p[0]), float(p[1])) for p in ring] for ring in polygon]
                    for polygon in raw]
    except (TypeError, ValueError, IndexError):
        raise BadParameter("within", f"{where} has malformed coordinates") from None
    if not polygons or any(not poly or any(len(r) < 3 for r in poly) for poly in polygons):
        raise BadParameter("within", f"{where} has an empty or degenerate ring")
    return polygons


def _pg_polygon(ring: Ring) -> sa.ColumnElement[Any]:
    text = "(" + ",".join(f"({x * POINT_SCALE!r},{y * POINT_SCALE!r})" for x, y in ring) + ")"
    return sa.cast(sa.literal(text, sa.Text), _PgPolygon())


def in_polygons(points: PointColumns, polygons: list[Polygon]) -> sa.ColumnElement[bool]:
    """Inside some outer ring and inside none of that polygon's holes; with a bounding-box
    prefilter over all the rings."""
    xs = [x for poly in polygons for x, _ in poly[0]]
    ys = [y for poly in polygons for _, y in poly[0]]
    inside = points.point.op("<@", is_comparison=True)
    alternatives = [sa.and_(inside(_pg_polygon(poly[0])),
                            *(sa.not_(inside(_pg_polygon(hole))) for hole in poly[1:]))
                    for poly in polygons]
    return sa.and_(in_box(points, (min(xs), min(ys), max(xs), max(ys))),
                   sa.or_(*alternatives))


def find_neighborhood(conn: sa.Connection, neighborhoods: Dataset, table: sa.FromClause,
                      value: str) -> tuple[str, list[Polygon]]:
    """The neighborhood named ``value`` (case-insensitive) or numbered ``value``."""
    for column in ("name", "geometry"):
        if column not in neighborhoods.column_types():
            raise BadParameter("within", f"dataset {NEIGHBORHOODS!r} has no {column!r} column")
    has_id = "neighborhood_id" in neighborhoods.column_types()
    columns = [table.c.name, table.c.geometry]
    if has_id:
        columns.append(table.c.neighborhood_id)
    rows = conn.execute(sa.select(*columns)).all()
    wanted = value.strip().casefold()
    for row in rows:
        number = str(row[2]) if has_id else None
        if (row[0] or "").casefold() == wanted or (number is not None and number == wanted):
            return str(row[0]), polygons_of(row[1], f"neighborhood {row[0]!r}")
    names = [str(r[0]) for r in rows if r[0]]
    close = difflib.get_close_matches(value, names, n=3)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else (
        "" if names else f"; the {NEIGHBORHOODS!r} dataset is not loaded")
    raise BadParameter("within", f"unknown neighborhood {value!r}{hint}")


def parse_within(text: str) -> tuple[str, str]:
    kind, sep, name = text.partition(":")
    if not sep or kind != "neighborhood" or not name.strip():
        raise BadParameter("within", f"expected neighborhood:<name or number>, got {text!r}")
    return kind, name.strip()


def neighborhood_lookup(conn: sa.Connection, resolve: Callable[[str], Dataset],
                        metadata: sa.MetaData) -> Callable[[str], list[Polygon]]:
    """A function from a neighborhood's name or number to its polygons, read from the
    ``stl-neighborhoods`` dataset on ``conn`` (``resolve`` gives a dataset by id)."""
    def lookup(value: str) -> list[Polygon]:
        from stldata.api.query import dataset_table  # query builds on this module

        try:
            neighborhoods = resolve(NEIGHBORHOODS)
        except ApiProblem:
            raise BadParameter("within", f"the {NEIGHBORHOODS!r} dataset is not in the "
                                         "catalog") from None
        exists = conn.execute(sa.text("SELECT to_regclass(:t) IS NOT NULL"),
                              {"t": neighborhoods.table_name}).scalar()
        if not exists:
            raise BadParameter("within", f"the {NEIGHBORHOODS!r} dataset is not loaded")
        table = dataset_table(neighborhoods, metadata)
        return find_neighborhood(conn, neighborhoods, table, value)[1]
    return lookup
