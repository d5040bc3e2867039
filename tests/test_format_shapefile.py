"""Shapefiles: the City's neighborhood shapefile read from its ZIP, and small shapefiles
written here with pyshp for the cases the City's does not have (no .prj, no .cpg,
Windows-1252 text, a folder instead of a ZIP, broken ZIPs)."""

from __future__ import annotations

import io
import json
import math
import zipfile
from pathlib import Path
from typing import Any

import pytest
import shapefile  # type: ignore[import-untyped]
from pyproj import CRS
from pyproj.enums import WktVersion

from stldata.catalog import Source, load_dataset
from stldata.ingest.coerce import parse_geometry
from stldata.ingest.errors import SourceError
from stldata.ingest.formats import parser_for
from stldata.ingest.ingester import Ingester
from stldata.ingest.reader import BadRow, RawRow
from stldata.runtime import Runtime

from conftest import ROOT, project, query

CITY_ZIP = ROOT / "data" / "stl-neighborhoods" / "neighborhoods_shapefile.zip"
ARCH = (-90.184776, 38.624691)
MERCATOR_PRJ = CRS.from_epsg(3857).to_wkt(WktVersion.WKT1_ESRI)


def web_mercator(lon: float, lat: float) -> tuple[float, float]:
    """EPSG:3857 by its textbook formula, not by pyproj."""
    radius = 6378137.0
    return (math.radians(lon) * radius,
            math.log(math.tan(math.pi / 4 + math.radians(lat) / 2)) * radius)


def parse(path: Path, **options: Any) -> tuple[list[str], list[RawRow | BadRow]]:
    (table,) = list(parser_for("shapefile")(path, path.name,
                                            Source(url="", format="shapefile", **options)))
    return table.header, list(table.rows)


def write_points(folder: Path, stem: str, points: list[tuple[float, float, str, int]], *,
                 prj: str | None = MERCATOR_PRJ, cpg: str | None = "UTF-8",
                 encoding: str = "utf-8") -> Path:
    """A point shapefile with fields NAME (C) and COUNT (N)."""
    folder.mkdir(parents=True, exist_ok=True)
    with shapefile.Writer(str(folder / stem), shapeType=shapefile.POINT,
                          encoding=encoding) as writer:
        writer.field("NAME", "C", size=40)
        writer.field("COUNT", "N", size=10)
        for x, y, name, count in points:
            writer.point(x, y)
            writer.record(name, count)
    if prj is not None:
        (folder / f"{stem}.prj").write_text(prj)
    if cpg is not None:
        (folder / f"{stem}.cpg").write_text(cpg)
    return folder / f"{stem}.shp"


def zip_folder(folder: Path, target: Path, inside: str = "") -> Path:
    with zipfile.ZipFile(target, "w") as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, inside + path.name)
    return target


# --- the City's shapefile -----------------------------------------------------------------------

def test_city_shapefile_rows_match_pyshp() -> None:
    with zipfile.ZipFile(CITY_ZIP) as archive:
        parts = {Path(n).suffix: archive.read(n) for n in archive.namelist()}
    reader = shapefile.Reader(shp=io.BytesIO(parts[".shp"]), dbf=io.BytesIO(parts[".dbf"]),
                              shx=io.BytesIO(parts[".shx"]), encoding="utf-8")
    fields = [f[0] for f in reader.fields[1:]]
    header, rows = parse(CITY_ZIP)
    assert header == [*fields, "geometry"]
    assert len(rows) == len(reader) == 88
    for row, record, shape in zip(rows, reader.records(), reader.shapes(), strict=True):
        assert isinstance(row, RawRow)
        assert row.cells[:2] == [str(record[0]), record[1]]
        assert row.cells[3] == record[3]  # NHD_NUMTXT, e.g. "43 Franz Park"
        geometry = json.loads(row.cells[-1])
        rings = ([geometry["coordinates"]] if geometry["type"] == "Polygon"
                 else geometry["coordinates"])
        assert sum(len(ring) for polygon in rings for ring in polygon) == len(shape.points)
        # Every vertex is in the City: the .prj's US survey feet became degrees.
        for polygon in rings:
            for ring in polygon:
                for lon, lat in ring:
                    assert -90.33 < lon < -90.16 and 38.53 < lat < 38.78
    assert rows[0].line == 1 and rows[0].cells[1] == "Franz Park"  # type: ignore[union-attr]


def test_shapefile_in_a_folder_inside_a_zip(tmp_path: Path) -> None:
    x, y = web_mercator(*ARCH)
    folder = tmp_path / "parts"
    write_points(folder, "arch", [(x, y, "Gateway Arch", 1)])
    archive = zip_folder(folder, tmp_path / "arch.zip", inside="layers/Arch/")
    header, rows = parse(archive)
    assert header == ["NAME", "COUNT", "geometry"]
    (row,) = rows
    assert isinstance(row, RawRow) and row.cells[:2] == ["Gateway Arch", "1"]
    geometry = parse_geometry(row.cells[2])
    assert geometry == {"type": "Point", "coordinates": [round(ARCH[0], 7), round(ARCH[1], 7)]}


def test_shapefile_read_from_its_folder_by_the_shp(tmp_path: Path) -> None:
    x, y = web_mercator(*ARCH)
    shp = write_points(tmp_path, "Arch", [(x, y, "Arch", 3), (x + 1000, y, "East", 4)])
    # Sibling parts are found whatever their case.
    (tmp_path / "Arch.dbf").rename(tmp_path / "ARCH.DBF")
    header, rows = parse(shp)
    assert [r.cells[:2] for r in rows if isinstance(r, RawRow)] == [["Arch", "3"],
                                                                   ["East", "4"]]


def test_without_prj_is_an_error_unless_the_catalog_states_the_crs(tmp_path: Path) -> None:
    x, y = web_mercator(*ARCH)
    shp = write_points(tmp_path, "noprj", [(x, y, "Arch", 1)], prj=None)
    with pytest.raises(SourceError, match="noprj.shp: .*has no .prj file stating its "
                                          "coordinate system; set source.crs"):
        parse(shp)
    header, rows = parse(shp, crs="EPSG:3857")
    lon, lat = parse_geometry(rows[0].cells[2])["coordinates"]  # type: ignore[union-attr]
    assert (lon, lat) == (round(ARCH[0], 7), round(ARCH[1], 7))


def test_dbf_encoding_from_cpg_catalog_or_guess(tmp_path: Path) -> None:
    x, y = web_mercator(*ARCH)
    name = "Café Ventana"
    cp1252 = write_points(tmp_path / "a", "cafe", [(x, y, name, 1)], cpg=None,
                          encoding="cp1252")
    # No .cpg: the bytes are not UTF-8, so Windows-1252 is used.
    assert parse(cp1252)[1][0].cells[0] == name  # type: ignore[union-attr]
    (tmp_path / "a" / "cafe.cpg").write_text("1252")
    assert parse(cp1252)[1][0].cells[0] == name  # type: ignore[union-attr]
    # The catalog's encoding wins over the .cpg.
    assert parse(cp1252, encoding="latin-1")[1][0].cells[0] == name  # type: ignore[union-attr]
    (tmp_path / "a" / "cafe.cpg").write_text("KLINGON-8")
    with pytest.raises(SourceError, match="the .cpg names encoding 'KLINGON-8'"):
        parse(cp1252)


def test_deleted_dbf_record_is_skipped_and_shx_is_optional(tmp_path: Path) -> None:
    x, y = web_mercator(*ARCH)
    shp = write_points(tmp_path, "pts", [(x, y, "a", 1), (x, y, "b", 2), (x, y, "c", 3)])
    dbf = bytearray((tmp_path / "pts.dbf").read_bytes())
    # dBASE: bytes 8-9 are the header length, 10-11 the record length; a record whose
    # first byte is "*" is deleted.
    header_length = int.from_bytes(dbf[8:10], "little")
    record_length = int.from_bytes(dbf[10:12], "little")
    dbf[header_length + record_length] = ord("*")
    (tmp_path / "pts.dbf").write_bytes(bytes(dbf))
    (tmp_path / "pts.shx").unlink()
    _, rows = parse(shp)
    assert [(r.line, r.cells[:2]) for r in rows if isinstance(r, RawRow)] == [
        (1, ["a", "1"]), (3, ["c", "3"])]


@pytest.mark.parametrize(("make", "message"), [
    ("two", "ZIP holds more than one shapefile"),
    ("none", "ZIP holds no .shp file"),
    ("nodbf", "has no .dbf file beside it"),
    ("corrupt", "not a readable shapefile"),
])
def test_broken_shapefiles_are_named(tmp_path: Path, make: str, message: str) -> None:
    x, y = web_mercator(*ARCH)
    folder = tmp_path / "parts"
    write_points(folder, "one", [(x, y, "a", 1)])
    if make == "two":
        write_points(folder, "two", [(x, y, "b", 2)])
    elif make == "none":
        for path in folder.glob("*.shp"):
            path.unlink()
    elif make == "nodbf":
        (folder / "one.dbf").unlink()
    elif make == "corrupt":
        (folder / "one.shp").write_bytes(b"not a shapefile at all" * 10)
        (folder / "one.shx").unlink()
    archive = zip_folder(folder, tmp_path / "layer.zip")
    with pytest.raises(SourceError, match=message) as error:
        parse(archive)
    assert str(error.value).startswith("layer.zip: ")


# --- through the ingester ---------------------------------------------------------------------

CATALOG = """
id = "t-points"
title = "test"
key = ["name"]
[source]
url = "file:"
format = "shapefile"
file_pattern = "*.zip"
[[columns]]
name = "name"
required = true
[[columns]]
name = "count"
type = "integer"
[[columns]]
name = "geometry"
type = "geometry"
"""


def test_release_without_prj_leaves_the_stored_records(runtime: Runtime,
                                                       tmp_path: Path) -> None:
    (tmp_path / "points.toml").write_text(CATALOG)
    dataset = load_dataset(tmp_path / "points.toml")
    runtime.catalog.datasets[dataset.id] = dataset
    x, y = web_mercator(*ARCH)
    write_points(tmp_path / "v1", "points", [(x, y, "Arch", 5)])
    first = zip_folder(tmp_path / "v1", tmp_path / "points.zip")

    def run(path: Path) -> None:
        producer = runtime.producer()
        try:
            Ingester(runtime.settings, runtime.database, producer).ingest(dataset, str(path))
        finally:
            producer.close()

    run(first)
    project(runtime)
    stored = query(runtime, "SELECT name, count, geometry, _source->>'COUNT' FROM ds_t_points")
    assert stored == [("Arch", 5, {"type": "Point", "coordinates": [round(ARCH[0], 7),
                                                                    round(ARCH[1], 7)]}, "5")]

    write_points(tmp_path / "v2", "points", [(x, y, "Arch", 6)], prj=None)
    first.unlink()
    second = zip_folder(tmp_path / "v2", tmp_path / "points.zip")
    with pytest.raises(SourceError, match="has no .prj file"):
        run(second)
    project(runtime)
    assert query(runtime, "SELECT name, count, geometry, _source->>'COUNT' FROM ds_t_points"
                 ) == stored
