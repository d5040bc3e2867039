"""Format sniffing: bundled samples, the shared real files, and crafted edge cases."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from stldata.catalog import Source, load_dataset
from stldata.ingest.errors import EmptySourceError, SourceError
from stldata.ingest.reader import RawRow
from stldata.ingest.sniff import hint_of, open_tables, resolve_options, sniff
from xlsx_maker import write_xlsx

from conftest import ROOT


@pytest.mark.parametrize(
    ("sample", "expected"),
    [
        ("csb-311/csb_2009.csv", "csv"),
        ("csb-311/csb_requests_2018-01.csv", "csv"),
        ("slmpd-crime/March2013.CSV", "csv"),
        ("slmpd-crime/january2017.csv", "csv"),  # UTF-8 BOM, cp1252 body
        ("slmpd-crime/may2017.csv", "csv"),
        ("ucity-crime/North East Crime Report 2015.xlsx", "xlsx"),
        ("slmpd-neighborhood-districts/CrimeDataFrequentlyAskedQuestions.pdf", "pdf"),
        ("stl-aldermen-meetings/stl_aldermen_detail.html", "html"),
    ],
)
def test_bundled_samples(sample: str, expected: str) -> None:
    found = sniff(ROOT / "data" / sample)
    assert found.format == expected
    if expected == "csv":
        assert found.delimiter == ","


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("data/arpa-direct-aid-by-zip/STL_ZCTA_St_Louis_City.geojson", "geojson"),
        ("data/stl-neighborhoods/neighborhoods_shapefile.zip", "shapefile"),
        ("data/metro-stops/metro_stl_gtfs_2023-06_stops.zip", "zip"),
        ("tests/data/neighborhood_lookup.csv", "csv"),
        ("tests/data/stl_zoning.html", "html"),
    ],
)
def test_real_files_of_every_kind(path: str, expected: str) -> None:
    assert sniff(ROOT / path).format == expected


def test_same_content_whatever_the_name(tmp_path: Path) -> None:
    """Bytes decide: an HTML error page saved as .csv is HTML, a CSV saved as .json is
    CSV."""
    page = tmp_path / "export.csv"
    page.write_bytes(b"<!DOCTYPE html>\n<html><body><table><tr><td>1</td></tr></table>")
    assert sniff(page).format == "html"
    table = tmp_path / "data.json"
    table.write_text("a,b\n1,2\n")
    assert sniff(table).format == "csv"


@pytest.mark.parametrize(
    ("text", "delimiter"),
    [
        ("id;name;amount\n1;Soulard;1,5\n2;The Hill;2,25\n", ";"),
        ("id\tname\n1\tSoulard, north\n2\tThe Hill\n", "\t"),
        ("id|name|ward\n1|Soulard|7\n2|The Hill|10\n", "|"),
        # Semicolons inside quoted fields do not make it semicolon-separated.
        ('id,note\n1,"a;b;c"\n2,"d;e;f"\n', ","),
        ("id,name\r1,Bare CR lines\r2,old Mac\r", ","),
    ],
)
def test_delimiters(tmp_path: Path, text: str, delimiter: str) -> None:
    path = tmp_path / "table.txt"
    path.write_text(text, newline="")
    found = sniff(path)
    assert (found.format, found.delimiter) == ("csv", delimiter)


def test_semicolon_file_is_read_with_its_delimiter(tmp_path: Path) -> None:
    path = tmp_path / "wards.csv"
    path.write_text("ward;alderman\n1;Sharon Tyus\n2;Lisa Middlebrook\n")
    (table,) = open_tables(Source(url="", format="auto", delimiter="auto"), path, path.name)
    assert table.header == ["ward", "alderman"]
    rows = list(table.rows)
    assert [r.cells for r in rows if isinstance(r, RawRow)] == [
        ["1", "Sharon Tyus"], ["2", "Lisa Middlebrook"]]


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("a.json", '[{"id": 1}, {"id": 2}]', "json"),
        ("a.json", '{\n  "data": {"items": [{"id": 1}]}\n}', "json"),
        ("a.txt", '{"id": 1}\n{"id": 2}\n{"id": 3}\n', "ndjson"),
        ("a.jsonl", '{"id": 1}\n', "ndjson"),
        ("a.json", '{"id": 1}\n', "json"),
        ("a.json", '{"type": "FeatureCollection", "features": []}', "geojson"),
        ("a.geojson", '{"type": "Feature", "geometry": null, "properties": {}}', "geojson"),
    ],
)
def test_json_kinds(tmp_path: Path, name: str, text: str, expected: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    assert sniff(path).format == expected


def test_large_ndjson_and_geojson_are_told_from_their_head(tmp_path: Path) -> None:
    lines = tmp_path / "big.ndjson"
    lines.write_text("".join(f'{{"id": {i}, "pad": "{"x" * 100}"}}\n' for i in range(5000)))
    assert sniff(lines).format == "ndjson"
    geo = tmp_path / "big.json"
    features = ",\n".join(json.dumps({"type": "Feature", "properties": {"n": i},
                                      "geometry": None}) for i in range(8000))
    geo.write_text('{\n"type": "FeatureCollection",\n"features": [\n' + features + "\n]}\n")
    assert geo.stat().st_size > 256 * 1024
    assert sniff(geo).format == "geojson"


def test_zip_kinds(tmp_path: Path) -> None:
    workbook = write_xlsx(tmp_path / "book.bin", {"S": [["a"], [1]]})
    assert sniff(workbook).format == "xlsx"
    shapes = tmp_path / "parcels.zip"
    with zipfile.ZipFile(shapes, "w") as archive:
        archive.writestr("parcels/parcels.shp", b"\x00\x00\x27\x0a")
        archive.writestr("parcels/parcels.dbf", b"")
    assert sniff(shapes).format == "shapefile"
    plain = tmp_path / "monthly.zip"
    with zipfile.ZipFile(plain, "w") as archive:
        archive.writestr("january.csv", "a,b\n1,2\n")
    assert sniff(plain).format == "zip"


def test_legacy_xls_is_recognised_by_its_ole2_header(tmp_path: Path) -> None:
    import xlwt

    book = xlwt.Workbook()
    book.add_sheet("Data").write(0, 0, "a")
    path = tmp_path / "export.bin"
    book.save(str(path))
    assert sniff(path).format == "xls"


def test_markdown_mentioning_a_table_tag_is_not_html(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("# Notes\nThe page has a <table class='data'> with 15 rows.\n")
    assert sniff(path).format == "csv"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"\x1f\x8b\x08\x00" + b"\x00" * 64, "gzip-compressed"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "PNG image"),
        (b"\x01\x02\x03\x00\x00\xff" * 20, "binary content of an unknown kind (first bytes "
                                           "01 02 03 00 00 ff 01 02)"),
        (b"PK\x03\x04 not really a zip", "not a readable one"),
    ],
)
def test_unknown_content_is_named(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "mystery.dat"
    path.write_bytes(content)
    with pytest.raises(SourceError) as raised:
        sniff(path)
    assert problem in str(raised.value) and "mystery.dat" in str(raised.value)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"  \n")
    with pytest.raises(EmptySourceError, match="empty.csv: file is empty"):
        sniff(path)


def test_hints_from_names_and_content_types() -> None:
    assert hint_of("x.TSV") == "csv"
    assert hint_of("data?page=2", "application/geo+json; charset=utf-8") == "geojson"
    assert hint_of("https://example.org/export.xlsx?v=3") == "xlsx"
    assert hint_of("noext") == ""


def test_catalog_without_format_is_auto_and_sniffed_per_file(tmp_path: Path) -> None:
    entry = tmp_path / "x.toml"
    entry.write_text("id = 'x'\ntitle = 't'\nkey = ['a']\ncolumns = [{name = 'a'}]\n"
                     "[source]\nurl = ''\n")
    source = load_dataset(entry).source
    assert (source.format, source.delimiter, source.file_pattern) == ("auto", "auto", "*")
    pipes = tmp_path / "a.txt"
    pipes.write_text("a|b\n1|2\n")
    resolved = resolve_options(source, pipes, pipes.name)
    assert (resolved.format, resolved.delimiter) == ("csv", "|")
    # A delimiter the catalog states wins over the sniffed one.
    entry.write_text(entry.read_text() + "delimiter = ';'\n")
    assert resolve_options(load_dataset(entry).source, pipes, pipes.name).delimiter == ";"


def test_broken_json_is_json_so_its_parser_names_the_error(tmp_path: Path) -> None:
    auto = Source(url="", format="auto", delimiter="auto")
    truncated = tmp_path / "broken.json"
    truncated.write_bytes(b'[{"a": 1, "b": 2},\n{"a": 3,')
    assert sniff(truncated).format == "json"
    with pytest.raises(SourceError, match=r"not valid JSON.*line 2"):
        for table in open_tables(auto, truncated, truncated.name):
            list(table.rows)
    # NDJSON with one bad line stays NDJSON (its bad line is quarantined, not the file).
    lines = tmp_path / "feed.txt"
    lines.write_bytes(b'{"a": 1}\n{"a": 2}\nnot json\n{"a": 4}\n')
    assert sniff(lines).format == "ndjson"
    # A CSV file whose first cell starts with "[" is still a table.
    table = tmp_path / "t.csv"
    table.write_bytes(b"[id],name\n1,a\n2,b\n")
    assert (sniff(table).format, sniff(table).delimiter) == ("csv", ",")
