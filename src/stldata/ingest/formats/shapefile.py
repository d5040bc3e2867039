"""ESRI shapefiles: the ``.shp`` geometry, ``.dbf`` attributes and ``.prj`` coordinate system,
read from a folder (the ``.shp`` names its siblings) or from a ZIP holding one shapefile.

Each shape is one row: its attributes as text cells and a ``geometry`` cell of GeoJSON in
WGS84 longitude/latitude, reprojected with pyproj from the ``.prj`` (or the catalog's
``source.crs``, which overrides it). A shapefile without a ``.prj`` and without a catalog
CRS is refused: guessing the system would put every polygon in the wrong place. The
``.dbf`` text encoding comes from the catalog's ``encoding``, else the ``.cpg``, else
UTF-8 when every record decodes as UTF-8, else Windows-1252.

A row's ``line`` is the shape's record number (1 is the first).
"""

from __future__ import annotations

import io
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, BinaryIO

import shapefile  # type: ignore[import-untyped]
from pyproj import Transformer

from stldata.catalog import Source
from stldata.ingest.errors import EmptySourceError, SourceError
from stldata.ingest.formats import Table
from stldata.ingest.formats.jsonfile import (
    GEOMETRY_COLUMN,
    looks_projected,
    reproject,
    to_json,
    transformer_to_wgs84,
)
from stldata.ingest.reader import BadRow, RawRow

#: The parts of a shapefile the parser reads; .sbn, .sbx and .shp.xml are not needed.
PARTS = (".shp", ".shx", ".dbf", ".prj", ".cpg")
#: Largest uncompressed shapefile part read from a ZIP into memory.
MAX_PART_BYTES = 1 << 30
#: .cpg spellings of code pages that Python names differently.
_CODE_PAGES = {"ansi 1252": "cp1252", "1252": "cp1252", "windows-1252": "cp1252",
               "88591": "latin-1", "8859_1": "latin-1", "iso 88591": "latin-1",
               "utf8": "utf-8", "utf-8": "utf-8", "65001": "utf-8"}


@dataclass
class Parts:
    """The bytes of one shapefile's parts, by extension."""

    data: dict[str, bytes]
    label: str

    def stream(self, ext: str) -> BinaryIO | None:
        return io.BytesIO(self.data[ext]) if ext in self.data else None


def tables(path: Path, name: str, options: Source) -> Iterator[Table]:
    """One table. The parts, CRS and encoding are checked and the first record read before
    the table is yielded, so a broken shapefile fails before anything is published."""
    parts = read_parts(path, name)
    what = parts.label or "the shapefile"
    crs = options.crs or parts.data.get(".prj", b"").decode("latin-1").strip()
    if not crs:
        raise SourceError(name, f"{what} has no .prj file stating its coordinate "
                                "system; set source.crs in the catalog (e.g. 'EPSG:102696' "
                                "or the WKT) so its coordinates can be converted to WGS84")
    transformer = _transformer(crs, name, from_catalog=bool(options.crs))
    encoding = _encoding(parts, options, name)
    with _reader(parts, encoding, name) as reader:
        fields = [str(f[0]) for f in reader.fields[1:]]  # [0] is the deletion flag
        if not len(reader):
            raise EmptySourceError(name, f"{what} has no records")
        try:
            first = next((s.__geo_interface__ for s in reader.iterShapes()
                          if s.shapeType != shapefile.NULL), None)
        except (shapefile.ShapefileException, ValueError, IndexError, EOFError,
                struct.error) as exc:
            raise SourceError(name, f"{what}: shapes cannot be read: {exc}") from None
        if transformer is None and first and looks_projected(_first(first)):
            raise SourceError(name, f"{what}: the CRS says longitude/latitude but "
                                    "coordinates are not; set source.crs in the catalog")
    header = fields + [GEOMETRY_COLUMN if GEOMETRY_COLUMN not in fields
                       else "shape.geometry"]
    yield Table(header, _rows(parts, encoding, name, transformer), label=parts.label)


def _first(geometry: dict[str, Any]) -> tuple[float, float] | None:
    coordinates: Any = geometry.get("coordinates")
    while isinstance(coordinates, list | tuple) and coordinates and isinstance(
            coordinates[0], list | tuple):
        coordinates = coordinates[0]
    if isinstance(coordinates, list | tuple) and len(coordinates) >= 2:
        return float(coordinates[0]), float(coordinates[1])
    return None


def read_parts(path: Path, name: str) -> Parts:
    """The parts of the shapefile at ``path``: a ``.zip`` holding one, or a ``.shp`` whose
    siblings share its name."""
    if zipfile.is_zipfile(path):
        return _zip_parts(path, name)
    if path.suffix.casefold() != ".shp":
        raise SourceError(name, "expected a .shp file or a .zip holding a shapefile")
    siblings = {p.name.casefold(): p for p in path.parent.iterdir() if p.is_file()}
    stem = path.stem.casefold()
    data: dict[str, bytes] = {}
    for ext in PARTS:
        sibling = siblings.get(stem + ext)
        if sibling is not None:
            data[ext] = sibling.read_bytes()
    _check_parts(data, name, path.name)
    return Parts(data, "")


def _zip_parts(path: Path, name: str) -> Parts:
    """Read the one shapefile of a ZIP into memory (its parts are small next to the ZIP's
    other members, like ``.shp.xml`` metadata, which are not read)."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.infolist() if not m.is_dir()
                       and not Path(m.filename).name.startswith(".")
                       and "__MACOSX" not in m.filename]
            shps = [m for m in members if m.filename.casefold().endswith(".shp")]
            if not shps:
                raise SourceError(name, "ZIP holds no .shp file; members are "
                                        f"{[m.filename for m in members][:20]}")
            if len(shps) > 1:
                raise SourceError(name, "ZIP holds more than one shapefile "
                                        f"({[m.filename for m in shps]}); give one .shp "
                                        "or one shapefile per ZIP")
            stem = shps[0].filename[:-4].casefold()
            data: dict[str, bytes] = {}
            for member in members:
                ext = member.filename[len(stem):].casefold()
                if member.filename[:len(stem)].casefold() != stem or ext not in PARTS:
                    continue
                if member.file_size > MAX_PART_BYTES:
                    raise SourceError(name, f"{member.filename} is {member.file_size} bytes "
                                            f"uncompressed, over {MAX_PART_BYTES}")
                data[ext] = archive.read(member)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise SourceError(name, f"not a readable ZIP: {exc}") from None
    _check_parts(data, name, shps[0].filename)
    return Parts(data, shps[0].filename)


def _check_parts(data: dict[str, bytes], name: str, shp: str) -> None:
    if ".dbf" not in data:
        raise SourceError(name, f"{shp} has no .dbf file beside it; its attributes are "
                                "missing")


def _transformer(crs: str, name: str, *, from_catalog: bool) -> Transformer | None:
    # pyproj reads the ESRI flavour of WKT that .prj files hold.
    return transformer_to_wgs84(crs, name, "source.crs" if from_catalog else "the .prj")


def _encoding(parts: Parts, options: Source, name: str) -> str:
    if options.encoding != "auto":
        return _python_codec(options.encoding, name, "source.encoding")
    if ".cpg" in parts.data:
        stated = parts.data[".cpg"].decode("latin-1").strip()
        if stated:
            return _python_codec(stated, name, "the .cpg")
    # No code page stated: UTF-8 if every record reads as UTF-8, else Windows-1252.
    try:
        with _reader(parts, "utf-8", name) as reader:
            for _ in reader.iterRecords():
                pass
        return "utf-8"
    except (UnicodeDecodeError, shapefile.ShapefileException):
        # pyshp 3 reports undecodable text as a dbfFileException.
        return "cp1252"


def _python_codec(stated: str, name: str, where: str) -> str:
    codec = _CODE_PAGES.get(stated.casefold(), stated)
    try:
        "".encode(codec)
    except LookupError:
        raise SourceError(name, f"{where} names encoding {stated!r}, which Python does not "
                                "know; set source.encoding in the catalog") from None
    return codec


def _reader(parts: Parts, encoding: str, name: str) -> shapefile.Reader:
    try:
        return shapefile.Reader(shp=parts.stream(".shp"), shx=parts.stream(".shx"),
                                dbf=parts.stream(".dbf"), encoding=encoding)
    except (shapefile.ShapefileException, OSError, ValueError) as exc:
        raise SourceError(name, f"not a readable shapefile: {exc}") from None


def _rows(parts: Parts, encoding: str, name: str, transformer: Transformer | None
          ) -> Iterator[RawRow | BadRow]:
    with _reader(parts, encoding, name) as reader:
        for number in range(1, len(reader) + 1):
            try:
                record = reader.record(number - 1)
                if record is None:
                    continue  # marked deleted in the .dbf: the publisher removed it
                cells = [_cell(v) for v in record]
                geometry = _geometry(reader.shape(number - 1), transformer)
            except (UnicodeDecodeError, shapefile.ShapefileException, ValueError,
                    IndexError, EOFError, struct.error) as exc:
                yield BadRow(number, "", f"shape {number} cannot be read: {exc}")
                continue
            yield RawRow(number, cells + [geometry])


def _geometry(shape: shapefile.Shape, transformer: Transformer | None) -> str:
    if shape.shapeType == shapefile.NULL:
        return ""
    geometry = _lists(shape.__geo_interface__)
    if transformer is not None:
        geometry = reproject(geometry, transformer)
    return to_json(geometry)


def _lists(value: Any) -> Any:
    """pyshp's GeoJSON uses tuples; JSON has only arrays."""
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_lists(v) for v in value]
    return value


def _cell(value: Any) -> str:
    """A .dbf value as text: numbers as pyshp reads them, dates ISO-8601, logicals
    true/false, missing values empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return str(value)
