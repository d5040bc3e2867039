"""HTML tables: the Board of Aldermen's meeting table, from the saved page to the read model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from stldata.catalog import Catalog, Dataset, Source
from stldata.ingest.errors import SourceError
from stldata.ingest.formats import parser_for
from stldata.ingest.reader import RawRow
from stldata.runtime import Runtime

from conftest import ROOT, ingest, project, query

PAGE = ROOT / "data" / "stl-aldermen-meetings" / "stl_aldermen_detail.html"
#: Real pages of the same site that no bundled dataset reads (tests/data/README.md).
SHARED = ROOT / "tests" / "data"
SITE = "https://www.stlouis-mo.gov"
SESSION_PAGE = f"{SITE}/government/departments/aldermen/aldermanic-legislative-session.cfm"


def meetings() -> Dataset:
    return Catalog.load(ROOT / "catalog").get("stl-aldermen-meetings")


def parse(path: Path, source: Source) -> tuple[list[str], list[RawRow]]:
    (table,) = list(parser_for("html")(path, path.name, source))
    rows = list(table.rows)
    assert all(isinstance(r, RawRow) for r in rows)
    return table.header, rows  # type: ignore[return-value]


def test_meeting_table_cells_as_the_page_shows_them() -> None:
    header, rows = parse(PAGE, meetings().source)
    assert header == ["Week of", "Week of_url", "Week", "Agenda", "Agenda_url", "Minutes",
                      "Minutes_url"]
    assert len(rows) == 15
    assert [r.cells[2] for r in rows] == [str(n) for n in range(15, 0, -1)]
    # The first meeting row (page line 424): date and status word in one cell, no minutes.
    first = rows[0]
    assert first.line == 424
    assert first.cells == [
        "07/06/2020 current",
        f"{SESSION_PAGE}?agendaViewID=11509&detail=15&session=2020-2021",
        "15",
        "Agenda (7-10-20 AGENDA 15 2)",
        f"{SITE}/internal-apps/legislative/upload/agenda/7-10-20%20AGENDA%2015%202.pdf",
        "", ""]
    # An href with spaces and a comma (week 10's minutes) becomes a valid absolute URL.
    week10 = next(r for r in rows if r.cells[2] == "10")
    assert week10.cells[6] == (f"{SITE}/internal-apps/legislative/upload/minute/"
                               "June%2023,%202020Updated.pdf")
    assert week10.cells[3] == "Agenda (6-23-2020 AGENDA 10 (4))"


def test_table_chosen_by_css_selector_or_index_is_the_same() -> None:
    source = meetings().source
    by_caption = parse(PAGE, source)
    assert parse(PAGE, dataclasses.replace(source, table="table.data.striped")) == by_caption
    assert parse(PAGE, dataclasses.replace(source, table="index:0")) == by_caption
    assert parse(PAGE, dataclasses.replace(source, table="")) == by_caption


def test_meetings_load_end_to_end(runtime: Runtime) -> None:
    summary = ingest(runtime, "stl-aldermen-meetings")
    project(runtime)
    assert summary.published == 15 and summary.quarantined == 0
    rows = query(runtime, "SELECT week, week_of, minutes, minutes_url, agenda_url, _source "
                          "FROM ds_stl_aldermen_meetings ORDER BY week DESC")
    assert len(rows) == 15
    week, week_of, minutes, minutes_url, agenda_url, source = rows[0]
    assert (week, str(week_of), minutes, minutes_url) == (15, "2020-07-06", None, None)
    assert agenda_url.endswith("/agenda/7-10-20%20AGENDA%2015%202.pdf")
    # The source JSON is the row's cells, raw text ('current' included), in page order.
    header, parsed = parse(PAGE, meetings().source)
    assert source == dict(zip(header, parsed[0].cells, strict=True))
    assert list(source) == header
    assert str(rows[-1][1]) == "2020-04-21"


def test_page_without_a_data_table_fails_clearly_and_keeps_stored_data(
        runtime: Runtime, tmp_path: Path) -> None:
    ingest(runtime, "stl-aldermen-meetings")
    project(runtime)
    before = query(runtime, "SELECT count(*), max(_snapshot_id) FROM ds_stl_aldermen_meetings")
    zoning = tmp_path / "stl_zoning.html"
    zoning.write_bytes((SHARED / "stl_zoning.html").read_bytes())
    with pytest.raises(SourceError) as raised:
        ingest(runtime, "stl-aldermen-meetings", zoning)
    project(runtime)
    assert str(raised.value) == "stl_zoning.html: no table has the caption 'Meetings'"
    assert query(runtime, "SELECT count(*), max(_snapshot_id) "
                          "FROM ds_stl_aldermen_meetings") == before


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("", "stl_zoning.html: page has no data table (the catalog's source.table is not set"),
        ("table.data", "stl_zoning.html: no table matches the CSS selector 'table.data'"),
        ("index:3", "stl_zoning.html: no table 'index:3': the page has 1 tables"),
        ("table[", "stl_zoning.html: table selector 'table[' is not valid CSS"),
    ],
)
def test_missing_table_names_file_and_selector(table: str, message: str) -> None:
    source = Source(url="", format="html", table=table)
    with pytest.raises(SourceError) as raised:
        list(parser_for("html")(SHARED / "stl_zoning.html", "stl_zoning.html", source))
    assert str(raised.value).startswith(message)


def test_spans_whitespace_nested_tables_and_base(tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    page.write_text("""<html><head><base href="/reports/"></head><body>
<table class="LayoutTable"><tr><td>
  <table id="t"><caption>Wards</caption>
    <thead><tr><th rowspan="2">Ward</th><th colspan="2">Count</th></tr>
           <tr><th>Open</th><th>Closed</th></tr></thead>
    <tbody>
      <tr><td rowspan="2"><a href="w1.html">Ward
             1</a></td><td>3</td><td>&nbsp;4 </td></tr>
      <tr><td colspan="2">none</td></tr>
      <tr><td>Ward</td><td>Count Open</td><td>Count Closed</td></tr>
      <tr><td>2</td><td></td><td>7</td></tr>
    </tbody>
  </table>
</td></tr></table></body></html>""", encoding="utf-8")
    source = Source(url="", format="html", table="#t", base_url="https://example.org/a/b.html",
                    header_names=("ward", "count"))
    header, rows = parse(page, source)
    assert header == ["Ward", "Ward_url", "Count Open", "Count Closed"]
    assert [r.cells for r in rows] == [
        ["Ward 1", "https://example.org/reports/w1.html", "3", "4"],
        ["Ward 1", "https://example.org/reports/w1.html", "none", "none"],
        ["2", "", "", "7"],
    ]
    # The layout table around it is skipped when no table is named.
    default = dataclasses.replace(source, table="")
    assert parse(page, default) == (header, rows)

