"""Excel workbooks: University City's crime workbooks, from the sheets to the read model."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from datetime import date, timedelta
from pathlib import Path

import pytest
import python_calamine

from stldata.catalog import Catalog, CatalogError, Dataset, Source, load_dataset
from stldata.ingest.errors import SourceError
from stldata.ingest.formats import parser_for
from stldata.ingest.reader import RawRow
from stldata.runtime import Runtime
from xlsx_maker import write_xlsx

from conftest import ROOT, ingest, project, query

SAMPLES = ROOT / "data" / "ucity-crime"
SOUTH_WEST = SAMPLES / "South West Crime Report 2015.xlsx"
NORTH_EAST = SAMPLES / "North East Crime Report 2015.xlsx"
CRIMES = ["homicide", "arson", "assault", "larceny", "mv_theft", "burglary", "robbery", "rape"]


def ucity() -> Dataset:
    return Catalog.load(ROOT / "catalog").get("ucity-crime")


def parse(path: Path, source: Source | None = None) -> dict[str, tuple[list[str], list[RawRow]]]:
    """Sheet name -> (header, rows) as the parser yields them."""
    tables = {}
    options = source or ucity().source
    for table in parser_for(options.format)(path, path.name, options):
        rows = list(table.rows)
        assert all(isinstance(r, RawRow) for r in rows)
        tables[table.label.removeprefix("sheet ")] = (table.header, rows)  # type: ignore[misc]
    return tables


def totals_row(path: Path, sheet: str) -> list[float]:
    """The publisher's own INCIDENTS: row at the foot of a sheet, read straight from Excel."""
    rows = python_calamine.CalamineWorkbook.from_path(str(path)).get_sheet_by_name(
        sheet).to_python()
    last = [r for r in rows if r[0] == "INCIDENTS:"]
    assert len(last) == 1
    return [float(v) for v in last[0][2:10]]


def test_month_sheets_of_either_case_are_chosen() -> None:
    assert list(parse(NORTH_EAST))[:2] == ["January", "February"]
    sheets = list(parse(SOUTH_WEST))
    assert len(sheets) == 12 and sheets[0] == "JANUARY" and sheets[-1] == "DECEMBER"


def test_cells_read_as_a_person_reads_them() -> None:
    header, rows = parse(SOUTH_WEST)["MARCH"]
    assert header == ["LOCATION", "STREET", "HOMICIDE", "ARSON", "ASSAULT", "LARCENY",
                      "MV THEFT", "BURGLARY", "ROBBERY", "RAPE", "workbook", "sheet"]
    by_line = {r.line: r.cells for r in rows}
    # Row 35 of sheet MARCH, just below the header repeated at row 34.
    assert by_line[35] == ["7500-8800", "Delmar Blvd", "1", "0", "0", "1", "0", "0", "0", "0",
                           SOUTH_WEST.name, "MARCH"]
    # A14 is the number 8600 in Excel, not text: it reads as 8600, not 8600.0.
    assert by_line[14][:2] == ["8600", "Barby Ave"] and by_line[14][8] == "1"
    # Title rows, the repeated headers (34, 67), the partial header and the totals are gone.
    assert min(by_line) == 8 and max(by_line) == 92
    assert not {1, 2, 5, 6, 7, 33, 34, 66, 67, 93, 94} & set(by_line)
    assert len(rows) == 81


@pytest.mark.parametrize("path", [SOUTH_WEST, NORTH_EAST], ids=["south-west", "north-east"])
def test_every_month_adds_up_to_the_publishers_totals_row(path: Path) -> None:
    for sheet, (_, rows) in parse(path).items():
        sums = [sum(float(r.cells[i]) for r in rows) for i in range(2, 10)]
        assert sums == totals_row(path, sheet), sheet
        assert len(rows) == (81 if path == SOUTH_WEST else 28)


def test_cached_values_of_3d_sums_are_read() -> None:
    """Annual Totals holds =SUM(JANUARY:DECEMBER!F8) and the like; its cached values are the
    sums of the month sheets."""
    months = parse(SOUTH_WEST)
    annual_source = dataclasses.replace(ucity().source, sheets=("annual totals",))
    (_, annual), = parse(SOUTH_WEST, annual_source).values()
    summed: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0] * 8)
    for _, rows in months.values():
        for r in rows:
            for i in range(8):
                summed[(r.cells[0], r.cells[1])][i] += float(r.cells[2 + i])
    assert len(annual) == 81
    for row in annual:
        assert [float(c) for c in row.cells[2:10]] == summed[(row.cells[0], row.cells[1])]
    assert sum(float(r.cells[5]) for r in annual) == 101  # LARCENY total, row 2 of the sheet


def test_workbooks_load_end_to_end(runtime: Runtime) -> None:
    summary = ingest(runtime, "ucity-crime")
    project(runtime)
    assert summary.rows_read == summary.published == 12 * 81 + 12 * 28
    assert query(runtime, "SELECT count(*), count(DISTINCT sheet) FROM ds_ucity_crime")[0] == (
        12 * 81 + 12 * 28, 24)
    row = query(runtime, "SELECT location, homicide, larceny, _line, _source "
                         "FROM ds_ucity_crime WHERE sheet = 'MARCH' AND street = 'Delmar Blvd'")
    assert len(row) == 1
    location, homicide, larceny, line, source = row[0]
    assert (location, homicide, larceny, line) == ("7500-8800", 1, 1, 35)
    # The source JSON is the row's cells under the sheet's own header, in order.
    header, rows = parse(SOUTH_WEST)["MARCH"]
    assert source == dict(zip(header, next(r.cells for r in rows if r.line == 35),
                              strict=True))
    assert list(source) == header
    totals = query(runtime, "SELECT sum(larceny), sum(burglary) FROM ds_ucity_crime "
                            "WHERE workbook = %s", (SOUTH_WEST.name,))[0]
    assert totals == (101, 31)  # the Annual Totals sheet's INCIDENTS: row


def _state(runtime: Runtime) -> tuple[object, ...]:
    return query(runtime, "SELECT count(*), sum(larceny), max(_snapshot_id) "
                          "FROM ds_ucity_crime")[0]


@pytest.fixture
def stored(runtime: Runtime) -> Runtime:
    ingest(runtime, "ucity-crime", NORTH_EAST)
    project(runtime)
    return runtime


def test_truncated_workbook_fails_clearly_and_keeps_stored_data(stored: Runtime,
                                                                tmp_path: Path) -> None:
    before = _state(stored)
    bad = tmp_path / NORTH_EAST.name
    bad.write_bytes(NORTH_EAST.read_bytes()[:20000])
    with pytest.raises(SourceError) as raised:
        ingest(stored, "ucity-crime", bad)
    project(stored)
    assert str(raised.value).startswith(f"{NORTH_EAST.name}: not a readable Excel workbook")
    assert _state(stored) == before


def test_workbook_without_matching_sheets_fails_clearly(stored: Runtime,
                                                        tmp_path: Path) -> None:
    before = _state(stored)
    other = write_xlsx(tmp_path / "Summary 2015.xlsx",
                       {"Summary": [["LOCATION", "STREET"], ["1000", "Ahern Ave"]]})
    with pytest.raises(SourceError) as raised:
        ingest(stored, "ucity-crime", other)
    project(stored)
    message = str(raised.value)
    assert message.startswith("Summary 2015.xlsx: no sheet matches ['January'")
    assert "the workbook has ['Summary']" in message
    assert _state(stored) == before


def test_serial_dates_in_both_date_systems(tmp_path: Path) -> None:
    rows = [["Name", "Born", "Member", "Total"],
            ["a", ("date", 23451), True, ("formula", "SUM(Other!A1:A9)", 42)],
            ["b", ("date", 1), False, 1.5],
            ["c", ("date", 45000.75), None, 3]]
    source = Source(url="", format="xlsx")
    for date1904, epoch in ((False, date(1899, 12, 30)), (True, date(1904, 1, 1))):
        path = write_xlsx(tmp_path / f"dates{date1904}.xlsx", {"Data": rows}, date1904=date1904)
        (header, got), = parse(path, source).values()
        assert header == ["Name", "Born", "Member", "Total", "workbook", "sheet"]
        first = (epoch + timedelta(days=23451)).isoformat()
        assert first == ("1968-03-16" if date1904 else "1964-03-15")
        assert [r.cells[:4] for r in got] == [
            ["a", first, "TRUE", "42"],
            ["b", "1904-01-02" if date1904 else "1900-01-01", "FALSE", "1.5"],
            ["c", f"{(epoch + timedelta(days=45000)).isoformat()}T18:00:00", "", "3"],
        ]


def test_header_below_titles_and_repeated_headers(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "book.xlsx", {"May 2020": [
        ["Ward report", None, None],
        ["TOTAL - 3", None, None],
        [None, None, None],
        ["Ward", "Count", "Note"],
        [1, 2, "x"],
        ["MAY 2020 (continued)", None, None],
        ["Ward", "Count", "Note"],
        [None, "Count", "Note"],
        [2, 1, None],
        ["Total:", 3, None],
    ]}, merged={"May 2020": ["A1:C1", "A6:C6"]})
    found = Source(url="", format="xlsx", sheets=("may*",), skip_rows=("total:?",),
                   header_names=("ward", "count"))
    (header, rows), = parse(path, found).values()
    assert header[:3] == ["Ward", "Count", "Note"]
    assert [(r.line, r.cells[:3]) for r in rows] == [(5, ["1", "2", "x"]), (9, ["2", "1", ""])]
    # Without the catalog's names the first row would be taken; header_row says where it is.
    fixed = dataclasses.replace(found, header_names=(), header_row=4)
    (header, fixed_rows), = parse(path, fixed).values()
    assert header[:3] == ["Ward", "Count", "Note"] and fixed_rows == rows


def test_values_beyond_the_header_are_quarantined(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "book.xlsx", {"S": [["Ward", "Count"], [1, 2, "stray"]]})
    table = next(parser_for("xlsx")(path, path.name, Source(url="", format="xlsx")))
    (row,) = list(table.rows)
    assert not isinstance(row, RawRow)
    assert row.line == 2 and "beyond the header's 2 columns" in row.reason


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ("header_row = -1", "source.header_row -1 must be a row number"),
        ("skip_rows = ['(']", "source.skip_rows '(' is not a valid regular expression"),
        ("sheets = 3", "source.sheets must be a string or a list of strings"),
    ],
)
def test_bad_sheet_options_are_named(tmp_path: Path, options: str, problem: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(f"id = 'x'\ntitle = 't'\nkey = ['a']\ncolumns = [{{name = 'a'}}]\n"
                    f"[source]\nurl = ''\nformat = 'xlsx'\n{options}\n")
    with pytest.raises(CatalogError) as raised:
        load_dataset(path)
    assert problem in str(raised.value) and "bad.toml" in str(raised.value)


def test_legacy_xls_workbooks_read_like_xlsx(tmp_path: Path) -> None:
    # A BIFF8 .xls as older City and County exports are: merged title, header below it,
    # a date before 1970 and two month sheets, written with xlwt, read by the same parser.
    import xlwt

    book = xlwt.Workbook()
    as_date = xlwt.easyxf(num_format_str="YYYY-MM-DD")
    for sheet, block in (("JANUARY", 7200), ("February", 1000)):
        ws = book.add_sheet(sheet)
        ws.write_merge(0, 0, 0, 2, "Crime by block (TOTAL 2)")
        for col, title in enumerate(["LOCATION", "STREET", "REPORTED"]):
            ws.write(1, col, title)
        ws.write(2, 0, block)
        ws.write(2, 1, "DELMAR")
        ws.write(2, 2, date(1965, 3, 2), as_date)
        ws.write(3, 0, "INCIDENTS:")
    path = tmp_path / "old.xls"
    book.save(str(path))

    source = Source(url="", format="xls", sheets=("january", "february"),
                    skip_rows=("INCIDENTS:",), header_names=("location", "street"))
    tables = parse(path, source)
    assert list(tables) == ["JANUARY", "February"]
    header, rows = tables["JANUARY"]
    assert header == ["LOCATION", "STREET", "REPORTED", "workbook", "sheet"]
    assert [r.cells for r in rows] == [["7200", "DELMAR", "1965-03-02", "old.xls", "JANUARY"]]
    assert [r.cells[0] for r in tables["February"][1]] == ["1000"]

    broken = tmp_path / "broken.xls"
    broken.write_bytes(path.read_bytes()[:600])
    with pytest.raises(SourceError, match="broken.xls: not a readable Excel workbook"):
        list(parser_for("xls")(broken, broken.name, source))
