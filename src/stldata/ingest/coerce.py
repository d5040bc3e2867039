"""Coerce raw text cells to the catalog's column types.

A cell that does not fit its type never aborts a load: the coercer returns ``None`` and a
reason, the ingester quarantines the cell, and the row is kept with its raw text.
Values come out JSON-ready: ints, floats, bools, ISO-8601 strings for dates and times.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from stldata.catalog import Column

#: A geometry is a GeoJSON geometry object; every other type is a JSON scalar.
Value = str | int | float | bool | dict[str, Any] | None
Coercer = Callable[[str], Value]


class CoercionFailed(ValueError):
    """The cell's text is not a valid value of the column's type."""


_US_DATETIME = re.compile(
    r"^(\d{1,2})/(\d{1,2})/(\d{4})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}))?\s*([AaPp][Mm])?)?$",
    re.ASCII,  # \d is any script's digit otherwise, and int() reads them all
)
_MONTH = re.compile(r"^(\d{4})-(\d{1,2})$", re.ASCII)
_TRUE = {"y", "yes", "true", "t", "1"}
_FALSE = {"n", "no", "false", "f", "0"}


#: A number as exports write it: ASCII digits, an optional sign, decimals and exponent, and
#: commas only between well-formed groups of three (``1,234,567.89``). ``1,5`` (a decimal
#: comma), ``12,34,5``, ``1_000`` (Python's int() takes it) and non-ASCII digits (``１２``,
#: which int() and float() read as 12) are not numbers a person would read the same way.
_NUMBER = re.compile(
    r"[+-]?(?:(?:[0-9]+|[0-9]{1,3}(?:,[0-9]{3})+)(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
#: PostgreSQL's bigint, the type of an integer column.
INTEGER_MIN, INTEGER_MAX = -(2**63), 2**63 - 1


def _number_text(text: str, what: str) -> str:
    """The text with its thousands separators removed, or :class:`CoercionFailed`."""
    if not _NUMBER.fullmatch(text):
        if "," in text and all(c in "0123456789,.+-" for c in text):
            raise CoercionFailed(f"{text[:60]!r} is not {what}: commas must separate groups "
                                 "of three digits (1,234,567.89); a decimal comma is not read")
        raise CoercionFailed(f"{text[:60]!r} is not {what}")
    return text.replace(",", "")


def _parse_integer(text: str) -> int:
    if len(text) < 19 and text.isascii() and text.isdigit():
        return int(text)  # the common case, well inside the range: no regex, no Decimal
    plain = _number_text(text, "a whole number")
    # Exports from spreadsheets write whole numbers as 1.0 or 1e3; Decimal keeps every digit
    # (a float would round 2**63 + 1) and compares without building a huge int for 1e999999.
    out_of_range = CoercionFailed(f"{text[:60]!r} is out of range for a 64-bit integer "
                                  f"({INTEGER_MIN}..{INTEGER_MAX})")
    try:
        number = Decimal(plain)
        whole = number == number.to_integral_value()
    except ArithmeticError:  # an exponent beyond what Decimal holds: 1e99999999999999999999
        raise out_of_range from None
    if not whole:
        raise CoercionFailed(f"{text[:60]!r} is not a whole number")
    if not INTEGER_MIN <= number <= INTEGER_MAX:
        raise out_of_range
    return int(number)


def _parse_number(text: str) -> float:
    number = float(_number_text(text, "a number"))
    if not math.isfinite(number):
        raise CoercionFailed(f"{text[:60]!r} is out of range for a double precision number "
                             "(not finite)")
    return number


def _parse_boolean(text: str) -> bool:
    folded = text.casefold()
    if folded in _TRUE:
        return True
    if folded in _FALSE:
        return False
    raise CoercionFailed(f"{text!r} is not a yes/no value")


def parse_datetime(text: str, formats: tuple[str, ...] = ()) -> datetime:
    """Parse the spellings seen in City exports: US ``M/D/YYYY H:MM`` and ISO-8601."""
    for fmt in formats:
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue

    match = _US_DATETIME.match(text)
    if match:
        month, day, year, hour, minute, second, ampm = match.groups()
        h = int(hour or 0)
        if ampm:
            if not 1 <= h <= 12:
                raise CoercionFailed(f"{text!r} has hour {h} with AM/PM")
            h = h % 12 + (12 if ampm.lower() == "pm" else 0)
        try:
            return datetime(int(year), int(month), int(day), h, int(minute or 0),
                            int(second or 0))
        except ValueError as exc:
            raise CoercionFailed(f"{text!r} is not a valid date: {exc}") from None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise CoercionFailed(f"{text!r} is not a recognised date or time") from None


def make_coercer(column: Column, timezone: str) -> Coercer:
    """Build the function that turns one stripped, non-null cell into a typed value,
    rewritten first by the column's ``normalize`` rules if it has any."""
    typed = _typed_coercer(column, timezone)
    if not column.normalize:
        return typed
    rules = [(re.compile(pattern), replace) for pattern, replace in column.normalize]

    def normalized(text: str) -> Value:
        # The first pattern matching the whole value gives its spelling; a value no rule
        # knows is quarantined rather than passed on in a form the others are not.
        for pattern, replace in rules:
            match = pattern.fullmatch(text)
            if match:
                return typed(match.expand(replace))
        raise CoercionFailed(f"{text!r} matches none of the column's normalize patterns")
    return normalized


def _typed_coercer(column: Column, timezone: str) -> Coercer:
    tz = ZoneInfo(timezone)

    if column.type == "integer":
        return _parse_integer
    if column.type == "number":
        return _parse_number
    if column.type == "boolean":
        return _parse_boolean

    if column.type == "datetime":
        def to_datetime(text: str) -> str:
            moment = parse_datetime(text, column.formats)
            if moment.tzinfo is not None and column.ignore_zone:
                moment = moment.replace(tzinfo=None)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=tz)
            return moment.isoformat()
        return to_datetime

    if column.type == "date":
        def to_date(text: str) -> str:
            try:
                return date.fromisoformat(text).isoformat()
            except ValueError:
                return parse_datetime(text, column.formats).date().isoformat()
        return to_date

    if column.type == "geometry":
        return parse_geometry

    if column.type == "month":
        def to_month(text: str) -> str:
            match = _MONTH.match(text)
            if not match or not 1 <= int(match.group(2)) <= 12:
                raise CoercionFailed(f"{text!r} is not a YYYY-MM month")
            return f"{int(match.group(1)):04d}-{int(match.group(2)):02d}-01"
        return to_month

    if column.values:
        mapping = column.values

        def to_canonical(text: str) -> str:
            try:
                return mapping[text.casefold()]
            except KeyError:
                raise CoercionFailed(f"{text!r} is not a known spelling") from None
        return to_canonical

    return _collapse_spaces


#: Nesting depth of ``coordinates`` for each GeoJSON geometry type (a position is 1).
GEOMETRY_DEPTHS = {"Point": 1, "MultiPoint": 2, "LineString": 2, "MultiLineString": 3,
                   "Polygon": 3, "MultiPolygon": 4}
#: Decimals kept of a longitude or latitude: 7 is about 1 cm, finer than any survey here.
COORDINATE_DECIMALS = 7


def parse_geometry(text: str) -> dict[str, Any]:
    """A GeoJSON geometry in WGS84 lon/lat, checked and rounded to 7 decimals.

    Parsers hand geometries over as JSON text already reprojected to WGS84, so a
    coordinate outside -180..180, -90..90 means the source's CRS was wrong or missing.
    """
    try:
        geometry = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise CoercionFailed(f"{text[:60]!r} is not a GeoJSON geometry (not JSON)") from None
    return _geometry(geometry)


def _geometry(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CoercionFailed("a GeoJSON geometry must be an object with type and coordinates")
    kind = value.get("type")
    if kind == "GeometryCollection":
        members = value.get("geometries")
        if not isinstance(members, list):
            raise CoercionFailed("GeometryCollection has no list of geometries")
        return {"type": kind, "geometries": [_geometry(m) for m in members]}
    if kind not in GEOMETRY_DEPTHS:
        raise CoercionFailed(f"{str(kind)[:40]!r} is not a GeoJSON geometry type "
                             f"({', '.join(GEOMETRY_DEPTHS)}, GeometryCollection)")
    coordinates = _coordinates(value.get("coordinates"), GEOMETRY_DEPTHS[kind], str(kind))
    if kind in ("Polygon", "MultiPolygon"):
        polygons = [coordinates] if kind == "Polygon" else coordinates
        for rings in polygons:
            for ring in rings:
                if len(ring) < 4 or ring[0] != ring[-1]:
                    raise CoercionFailed(f"{kind} has a ring that is not closed or has "
                                         "fewer than 4 positions")
    return {"type": kind, "coordinates": coordinates}


def _coordinates(value: Any, depth: int, kind: str) -> Any:
    if depth == 1:
        if (not isinstance(value, list) or not 2 <= len(value) <= 3 or not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in value)):
            raise CoercionFailed(f"{kind} has a position that is not [longitude, latitude]")
        lon, lat = float(value[0]), float(value[1])
        if not (-180 <= lon <= 180 and -90 <= lat <= 90):
            raise CoercionFailed(f"{kind} has position {lon}, {lat} outside WGS84 "
                                 "longitude/latitude; is the source's CRS stated?")
        # Heights are not part of the read model's geometry.
        return [round(lon, COORDINATE_DECIMALS), round(lat, COORDINATE_DECIMALS)]
    if not isinstance(value, list):
        raise CoercionFailed(f"{kind} coordinates are not nested {depth} lists deep")
    return [_coordinates(v, depth - 1, kind) for v in value]


def _collapse_spaces(text: str) -> str:
    # Fixed-width exports pad inside values too; one space between words is what people type.
    return " ".join(text.split()) if "  " in text else text
