"""JSON sources: arrays of objects, API responses, NDJSON, and GeoJSON feature collections.

Every record becomes one row of raw text cells, so the rest of the ingest treats JSON like
any table. Nested objects are flattened to dotted column names (``{"a": {"b": 1}}`` gives
column ``a.b``, which the catalog can call ``a_b``); arrays stay one cell of JSON text.
Numbers keep the text the file spells them with (``27.0`` stays ``27.0``), so the
``_source`` of a record is what a person reads in the file.

GeoJSON features give their properties as columns and their geometry as one ``geometry``
cell of GeoJSON text in WGS84 longitude/latitude, reprojected with pyproj when the file's
legacy ``crs`` member (or the catalog's ``source.crs``) names another system.

A row's ``line`` is the line of the file on which its record starts (in NDJSON, its line);
in a minified file, where records share lines, it is the record's number (1 is the first).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError

from stldata.catalog import Source
from stldata.ingest.decode import decode_line
from stldata.ingest.errors import EmptySourceError, SourceError
from stldata.ingest.formats import Table
from stldata.ingest.reader import BadRow, RawRow

#: The header of the cell holding a feature's geometry.
GEOMETRY_COLUMN = "geometry"
WGS84 = CRS.from_user_input("OGC:CRS84")
#: Raw text kept of a row that cannot be a record, in the quarantine.
_SHOWN = 2000


class Number(float):
    """A JSON number that remembers how the file spells it (``27.0``, ``1e3``)."""

    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str) -> Number:
        number = super().__new__(cls, text)
        number.text = text
        return number


class _Collision(ValueError):
    pass


# One decoder and encoder for every value: json.loads and json.dumps with options build a
# new one per call, which dominates the time of reading a large NDJSON file.
_DECODE = json.JSONDecoder(parse_float=Number).decode
_ENCODE = json.JSONEncoder(ensure_ascii=False).encode


def loads(text: str) -> Any:
    """Parse JSON keeping each number's spelling; integers stay ints."""
    return _DECODE(text)


def to_json(value: Any) -> str:
    """JSON text of a parsed value with numbers spelled as in the file."""
    if isinstance(value, Number):
        return value.text
    if isinstance(value, str):
        return _ENCODE(value)
    if isinstance(value, bool) or value is None:
        return "true" if value else "false" if value is not None else "null"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _ENCODE(value)
    if isinstance(value, list):
        return "[" + ", ".join([to_json(v) for v in value]) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join([_ENCODE(str(k)) + ": " + to_json(v)
                                for k, v in value.items()]) + "}"
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def cell_text(value: Any) -> str:
    """The text of one cell: empty for null, the file's spelling for a number, JSON text
    for an array or an empty object."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, Number):
        return value.text
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return to_json(value)


def flatten(record: dict[str, Any], prefix: str = "", texts: bool = True) -> dict[str, str]:
    """Nested objects as dotted names: ``{"a": {"b": 1}}`` is ``{"a.b": "1"}``. Without
    ``texts`` only the names are wanted (every cell is empty), which is quicker."""
    cells: dict[str, str] = {}
    for key, value in record.items():
        name = prefix + key
        if isinstance(value, dict) and value:
            for column, text in flatten(value, name + ".", texts).items():
                if column in cells:
                    raise _Collision(column)
                cells[column] = text
        elif name in cells:
            raise _Collision(name)
        else:
            cells[name] = cell_text(value) if texts else ""
    return cells


def tables(path: Path, name: str, options: Source) -> Iterator[Table]:
    """One table. The whole file is parsed (or, for NDJSON, scanned) before the table is
    yielded, so invalid JSON fails before anything is published."""
    if options.format == "ndjson":
        yield _ndjson_table(path, name, options)
        return
    document, lines = _load(path, name, options.encoding, options.records_path)
    where = "the file"
    if options.records_path:
        document = _walk(document, options.records_path, name)
        where = f"records_path {options.records_path!r}"
    kind = document.get("type") if isinstance(document, dict) else None
    if options.format == "geojson" or kind in ("FeatureCollection", "Feature"):
        yield _geojson_table(document, name, options, where, lines)
        return
    if isinstance(document, dict):
        members = ", ".join(list(document)[:20])
        raise SourceError(name, f"{where} is a JSON object, not an array of records; set "
                                f"source.records_path to the member holding them "
                                f"(members: {members})")
    if not isinstance(document, list):
        raise SourceError(name, f"{where} is a JSON {_kind(document)}, not an array of "
                                "records; expected an array of objects (or a "
                                "source.records_path naming the member that holds them)")
    yield _records_table(document, name, where, lines.get(id(document)))


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"


def _decode(data: bytes, name: str, encoding: str) -> str:
    if encoding == "auto":
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError:
            # JSON must be UTF-8, but hand-made exports are sometimes Windows-1252.
            return "".join(decode_line(line) for line in data.removeprefix(
                b"\xef\xbb\xbf").splitlines(keepends=True))
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise SourceError(name, f"bytes {exc.start}-{exc.end - 1} are not valid {encoding} "
                                f"({exc.reason})") from None
    except LookupError:
        raise SourceError(name, f"unknown encoding {encoding!r}") from None


#: Line numbers of the elements of the record arrays, by the array's id().
Lines = dict[int, list[int]]
_SPACE = re.compile(r"[ \t\n\r]*")
_RAW_DECODE = json.JSONDecoder(parse_float=Number).raw_decode


def _load(path: Path, name: str, encoding: str, records_path: str) -> tuple[Any, Lines]:
    """The document, and the line on which each record of the record array starts."""
    data = path.read_bytes()
    if not data.strip():
        raise EmptySourceError(name, "file is empty")
    text = _decode(data, name, encoding)
    lines: Lines = {}
    try:
        at = _SPACE.match(text, 0).end()  # type: ignore[union-attr]
        want = records_path.split(".") if records_path else []
        document, end = _value(text, at, want, lines)
        end = _SPACE.match(text, end).end()  # type: ignore[union-attr]
        if end != len(text):
            raise json.JSONDecodeError("Extra data", text, end)
        return document, lines
    except json.JSONDecodeError as exc:
        raise SourceError(name, f"not valid JSON: {exc.msg} at line {exc.lineno} column "
                                f"{exc.colno}") from None
    except RecursionError:
        raise SourceError(name, "JSON is nested too deeply to read") from None


def _value(text: str, at: int, want: list[str], lines: Lines) -> tuple[Any, int]:
    """Parse the value at ``at``. Objects on the way to the records (``want``, then a
    ``features`` member) are parsed member by member and the record array element by
    element, to learn where each record starts; everything else by the json module."""
    opening = text[at:at + 1]
    if opening == "[" and not want:
        return _array(text, at, lines)
    if opening == "{":
        return _object(text, at, want, lines)
    value, end = _RAW_DECODE(text, at)
    return value, end


def _object(text: str, at: int, want: list[str], lines: Lines) -> tuple[Any, int]:
    members: dict[str, Any] = {}
    at = _SPACE.match(text, at + 1).end()  # type: ignore[union-attr]
    if text[at:at + 1] == "}":
        return members, at + 1
    while True:
        if text[at:at + 1] != '"':
            raise json.JSONDecodeError("Expecting property name enclosed in double quotes",
                                       text, at)
        key, at = _RAW_DECODE(text, at)
        at = _SPACE.match(text, at).end()  # type: ignore[union-attr]
        if text[at:at + 1] != ":":
            raise json.JSONDecodeError("Expecting ':' delimiter", text, at)
        at = _SPACE.match(text, at + 1).end()  # type: ignore[union-attr]
        if want and key == want[0]:
            members[key], at = _value(text, at, want[1:], lines)
        elif not want and key == "features":
            members[key], at = _value(text, at, [], lines)
        else:
            members[key], at = _RAW_DECODE(text, at)
        at = _SPACE.match(text, at).end()  # type: ignore[union-attr]
        closing = text[at:at + 1]
        if closing == "}":
            return members, at + 1
        if closing != ",":
            raise json.JSONDecodeError("Expecting ',' delimiter", text, at)
        at = _SPACE.match(text, at + 1).end()  # type: ignore[union-attr]


def _array(text: str, at: int, lines: Lines) -> tuple[list[Any], int]:
    items: list[Any] = []
    starts: list[int] = []
    line, counted = 1, 0
    at = _SPACE.match(text, at + 1).end()  # type: ignore[union-attr]
    if text[at:at + 1] == "]":
        lines[id(items)] = starts
        return items, at + 1
    while True:
        line += text.count("\n", counted, at)
        counted = at
        starts.append(line)
        item, at = _RAW_DECODE(text, at)
        items.append(item)
        at = _SPACE.match(text, at).end()  # type: ignore[union-attr]
        closing = text[at:at + 1]
        if closing == "]":
            lines[id(items)] = starts
            return items, at + 1
        if closing != ",":
            raise json.JSONDecodeError("Expecting ',' delimiter", text, at)
        at = _SPACE.match(text, at + 1).end()  # type: ignore[union-attr]


def _walk(document: Any, records_path: str, name: str) -> Any:
    here: Any = document
    walked: list[str] = []
    for part in records_path.split("."):
        if isinstance(here, dict) and part in here:
            here = here[part]
        elif isinstance(here, list) and part.isdigit() and int(part) < len(here):
            here = here[int(part)]
        else:
            at = ".".join(walked) or "the top level"
            has = (f"it has members {', '.join(list(here)[:20])}" if isinstance(here, dict)
                   else f"it is a JSON {_kind(here)}")
            raise SourceError(name, f"records_path {records_path!r}: {at} has no "
                                    f"{part!r}; {has}")
        walked.append(part)
    return here


def _header(flat_records: list[dict[str, str]]) -> list[str]:
    """Every column of every record, in the order they first appear."""
    seen: dict[str, None] = {}
    for cells in flat_records:
        for column in cells:
            seen.setdefault(column, None)
    return list(seen)


def _flat_or_bad(number: int, record: Any, what: str, texts: bool = True
                 ) -> dict[str, str] | BadRow:
    if not isinstance(record, dict):
        return BadRow(number, _shown(record), f"{what} is a JSON {_kind(record)}, not an "
                                              "object")
    try:
        return flatten(record, texts=texts)
    except _Collision as exc:
        return BadRow(number, _shown(record), f"{what}: two members flatten to the same "
                                              f"column {exc}")
    except RecursionError:
        return BadRow(number, "", f"{what} is nested too deeply to read")


def _shown(value: Any) -> str:
    try:
        return to_json(value)[:_SHOWN]
    except RecursionError:
        return ""


def _places(count: int, starts: list[int] | None, noun: str) -> list[tuple[int, str]]:
    """Each record's line and how messages name it. When records share lines (a minified
    file) a line would not tell them apart, so their numbers (1 is the first) are used."""
    if (starts is not None and len(starts) == count
            and all(a < b for a, b in zip(starts, starts[1:], strict=False))):
        return [(line, f"{noun} {n} (line {line})") for n, line in enumerate(starts, 1)]
    return [(n, f"{noun} {n}") for n in range(1, count + 1)]


def _records_table(records: list[Any], name: str, where: str,
                   starts: list[int] | None) -> Table:
    if not records:
        raise EmptySourceError(name, f"{where} holds no records (an empty array)")
    rows: list[tuple[int, dict[str, str] | BadRow]] = [
        (line, _flat_or_bad(line, record, what))
        for (line, what), record in zip(_places(len(records), starts, "record"), records,
                                        strict=True)]
    header = _header([r for _, r in rows if not isinstance(r, BadRow)])
    if not header:
        raise SourceError(name, f"no record of {where} is an object with members")
    return Table(header, _rows(rows, header))


def _rows(rows: list[tuple[int, dict[str, str] | BadRow]], header: list[str]
          ) -> Iterator[RawRow | BadRow]:
    for line, row in rows:
        if isinstance(row, BadRow):
            yield row
        else:
            yield RawRow(line, [row.get(column, "") for column in header])


# --- NDJSON ---------------------------------------------------------------------------------

def _ndjson_lines(path: Path, name: str, encoding: str, position: list[int] | None = None,
                  texts: bool = True) -> Iterator[tuple[int, str, dict[str, str] | BadRow]]:
    """Each non-blank line: its number, text, and cells (or only their names, without
    ``texts``) or the reason it is not a record."""
    with path.open("rb") as stream:
        number = 0
        for raw in stream:
            number += 1
            if position is not None:
                position[0] += len(raw)
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if b"\x00" in raw:
                raise SourceError(name, f"line {number}: binary content (NUL byte); "
                                        "expected NDJSON text")
            try:
                text = decode_line(raw, encoding).strip()
            except (UnicodeDecodeError, LookupError) as exc:
                raise SourceError(name, f"line {number} cannot be decoded as {encoding}: "
                                        f"{exc}") from None
            if not text:
                continue
            try:
                value = loads(text)
            except json.JSONDecodeError as exc:
                yield number, text, BadRow(number, text[:_SHOWN],
                                           f"line {number} is not valid JSON: {exc.msg} at "
                                           f"column {exc.colno}")
                continue
            except RecursionError:
                yield number, text, BadRow(number, text[:_SHOWN],
                                           f"line {number} is nested too deeply to read")
                continue
            yield number, text, _flat_or_bad(number, value, f"line {number}", texts)


def _ndjson_table(path: Path, name: str, options: Source) -> Table:
    seen: dict[str, None] = {}
    first_error = ""
    lines = 0
    for _, _, cells in _ndjson_lines(path, name, options.encoding, texts=False):
        lines += 1
        if isinstance(cells, BadRow):
            first_error = first_error or cells.reason
            continue
        for column in cells:
            seen.setdefault(column, None)
    if not lines:
        raise EmptySourceError(name, "file is empty")
    header = list(seen)
    if not header:
        raise SourceError(name, f"no line is a JSON object with members ({first_error})"
                          if first_error else "no line is a JSON object with members")
    position = [0]
    return Table(header, _ndjson_rows(path, name, options, header, position),
                 consumed=lambda: position[0])


def _ndjson_rows(path: Path, name: str, options: Source, header: list[str],
                 position: list[int]) -> Iterator[RawRow | BadRow]:
    for number, _, cells in _ndjson_lines(path, name, options.encoding, position):
        if isinstance(cells, BadRow):
            yield cells
        else:
            yield RawRow(number, [cells.get(column, "") for column in header])


# --- GeoJSON --------------------------------------------------------------------------------

def stated_crs(document: dict[str, Any], name: str) -> str:
    """The CRS named by a GeoJSON 2008 ``crs`` member, or "" when there is none."""
    member = document.get("crs")
    if member is None:
        return ""
    properties = member.get("properties") if isinstance(member, dict) else None
    if isinstance(properties, dict):
        if member.get("type") == "name" and isinstance(properties.get("name"), str):
            return str(properties["name"])
        if member.get("type") == "EPSG" and isinstance(properties.get("code"), int):
            return f"EPSG:{properties['code']}"
    raise SourceError(name, f"GeoJSON crs member {to_json(member)[:200]} is not a named CRS "
                            "(type 'name' or 'EPSG'); set source.crs in the catalog")


def transformer_to_wgs84(crs: str, name: str, where: str) -> Transformer | None:
    """A transformer to WGS84 lon/lat, or None when ``crs`` is WGS84 lon/lat already."""
    try:
        source = CRS.from_user_input(crs)
    except CRSError:
        raise SourceError(name, f"{where} {crs!r} is not a coordinate reference system pyproj "
                                "knows; set source.crs in the catalog to the right one") from None
    if source.equals(WGS84) or source.to_epsg() == 4326:
        # GeoJSON positions are longitude first whatever the CRS's axis order says.
        return None
    return Transformer.from_crs(source, "EPSG:4326", always_xy=True)


def reproject(geometry: Any, transformer: Transformer) -> Any:
    """The geometry with every position transformed (heights dropped)."""
    positions: list[list[Any]] = []
    _collect(geometry, positions)
    xs = [float(p[0]) for p in positions]
    ys = [float(p[1]) for p in positions]
    lons, lats = transformer.transform(xs, ys)
    moved = iter(zip(lons, lats, strict=True))
    return _rebuild(geometry, moved)


def _is_position(value: Any) -> bool:
    return (isinstance(value, list) and len(value) >= 2
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value))


def _collect(value: Any, into: list[list[Any]]) -> None:
    if _is_position(value):
        into.append(value)
    elif isinstance(value, list):
        for item in value:
            _collect(item, into)
    elif isinstance(value, dict):
        _collect(value.get("coordinates"), into)
        _collect(value.get("geometries"), into)


def _rebuild(value: Any, moved: Iterator[tuple[float, float]]) -> Any:
    if _is_position(value):
        lon, lat = next(moved)
        return [lon, lat]
    if isinstance(value, list):
        return [_rebuild(item, moved) for item in value]
    if isinstance(value, dict):
        return {k: _rebuild(v, moved) if k in ("coordinates", "geometries") else v
                for k, v in value.items()}
    return value


def first_position(geometry: Any) -> tuple[float, float] | None:
    positions: list[list[Any]] = []
    _collect(geometry, positions)
    return (float(positions[0][0]), float(positions[0][1])) if positions else None


def looks_projected(position: tuple[float, float] | None) -> bool:
    return position is not None and not (-180 <= position[0] <= 180
                                         and -90 <= position[1] <= 90)


def _geojson_table(document: Any, name: str, options: Source, where: str,
                   lines: Lines) -> Table:
    kind = document.get("type") if isinstance(document, dict) else None
    if kind == "FeatureCollection":
        features = document.get("features")
        if not isinstance(features, list):
            raise SourceError(name, f"{where}: FeatureCollection has no 'features' array")
    elif kind == "Feature":
        features = [document]
    else:
        raise SourceError(name, f"{where} is not a GeoJSON FeatureCollection or Feature "
                                f"(type {kind!r})")
    if not features:
        raise EmptySourceError(name, f"{where}: the FeatureCollection has no features")

    crs = options.crs or stated_crs(document, name)
    transformer = (transformer_to_wgs84(crs, name, "source.crs" if options.crs
                                        else "the file's crs") if crs else None)
    geometries = [f.get("geometry") for f in features if isinstance(f, dict)]
    first = next((p for p in map(first_position, geometries) if p is not None), None)
    if not crs and looks_projected(first):
        assert first is not None
        raise SourceError(name, f"coordinates like {first[0]:g}, {first[1]:g} are not "
                                "longitude/latitude and the file states no crs; set "
                                "source.crs in the catalog to the system they are in")

    flat: list[tuple[int, dict[str, str], Any] | BadRow] = []
    has_id = False
    places = _places(len(features), lines.get(id(features)), "feature")
    for (line, what), feature in zip(places, features, strict=True):
        if not isinstance(feature, dict) or feature.get("type") != "Feature":
            flat.append(BadRow(line, _shown(feature), f"{what} is not a GeoJSON Feature"))
            continue
        properties = feature.get("properties") or {}
        cells = _flat_or_bad(line, properties, f"{what} properties")
        if isinstance(cells, BadRow):
            flat.append(cells)
            continue
        has_id = has_id or feature.get("id") is not None
        flat.append((line, cells, feature))

    records = [r[1] for r in flat if not isinstance(r, BadRow)]
    header = _header(records)
    id_column = ("feature.id" if "id" in header else "id") if has_id else ""
    geometry_column = GEOMETRY_COLUMN if GEOMETRY_COLUMN not in header else "feature.geometry"
    header += [geometry_column] + ([id_column] if id_column else [])
    return Table(header, _feature_rows(flat, header, transformer, geometry_column, id_column))


def _feature_rows(flat: list[tuple[int, dict[str, str], Any] | BadRow], header: list[str],
                  transformer: Transformer | None, geometry_column: str, id_column: str
                  ) -> Iterator[RawRow | BadRow]:
    for item in flat:
        if isinstance(item, BadRow):
            yield item
            continue
        line, cells, feature = item
        geometry = feature.get("geometry")
        if geometry is not None and transformer is not None:
            geometry = reproject(geometry, transformer)
        cells = {**cells, geometry_column: "" if geometry is None else _shown_all(geometry)}
        if id_column:
            cells[id_column] = cell_text(feature.get("id"))
        yield RawRow(line, [cells.get(column, "") for column in header])


def _shown_all(value: Any) -> str:
    try:
        return to_json(value)
    except RecursionError:
        return ""
