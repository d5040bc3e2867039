"""`stldata add`: a file nobody described becomes a served dataset in one command."""

from __future__ import annotations

import csv
import functools
import http.server
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path

import lxml.html  # type: ignore[import-untyped]
import pytest
from click.testing import CliRunner

from stldata.api.app import create_app
from stldata.catalog import Catalog, load_dataset
from stldata.catalog_writer import add_dataset
from stldata.cli import main
from stldata.errors import ConfigurationError
from stldata.ingest.errors import SourceError
from stldata.runtime import Runtime
from stldata.settings import Settings, get_settings

from conftest import ROOT, query

LOOKUP = ROOT / "tests" / "data" / "neighborhood_lookup.csv"
PAGE = ROOT / "data" / "stl-aldermen-meetings" / "stl_aldermen_detail.html"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """A catalog folder of the test's own: new entries land there, not in catalog/."""
    (tmp_path / "catalog").mkdir()
    return Settings(home=tmp_path / "home", database_url=database_url, batch_size=2000,
                    poll_interval=0.05, catalog_dir=tmp_path / "catalog")


def served(settings: Settings, dataset_id: str, **params: str) -> list[dict[str, object]]:
    runtime = Runtime.start(settings)
    client = create_app(runtime).test_client()
    items: list[dict[str, object]] = []
    response = client.get(f"/api/v1/datasets/{dataset_id}/records",
                          query_string={"limit": "1000", **params})
    while True:
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        items += body["items"]
        if not body["next"]:
            return items
        response = client.get(body["next"])


def test_a_fresh_csv_is_described_ingested_and_served(settings: Settings) -> None:
    added = add_dataset(settings, "neighborhood-lookup", str(LOOKUP))
    assert added.path == settings.catalog_dir / "neighborhood-lookup.toml"
    entry = tomllib.loads(added.path.read_text())
    assert entry["key"] == ["neighborhood_number"]
    assert entry["source"]["format"] == "csv" and entry["source"]["delimiter"] == ","
    types = {c["name"]: c["type"] for c in entry["columns"]}
    assert types == {"neighborhood_number": "integer", "neighborhood_name": "text",
                     "neighborhood_primary_district": "integer",
                     "neighborhood_addl_district": "integer"}
    assert next(c for c in entry["columns"] if c["name"] == "neighborhood_name")[
        "aliases"] == ["Neighborhood Name"]
    # Comments a person can review: why the key, what was inferred from how many values.
    text = added.path.read_text()
    assert "# Key: 'Neighborhood Number' is present and unique in all 89 rows." in text
    assert "inferred from 9 values" in text and "80 empty" in text

    with LOOKUP.open(newline="") as stream:
        header, *rows = list(csv.reader(stream))
    assert added.summary is not None and added.summary.published == len(rows) == 89
    items = served(settings, "neighborhood-lookup")
    got = {i["neighborhood_number"]: (i["neighborhood_name"],
                                      i["neighborhood_primary_district"],
                                      i["neighborhood_addl_district"]) for i in items}
    expected = {int(r[0]): (r[1], int(r[2]) if r[2] else None, int(r[3]) if r[3] else None)
                for r in rows}
    assert got == expected
    # Filters work on the inferred types.
    sixes = served(settings, "neighborhood-lookup", neighborhood_primary_district__gte="6")
    assert {i["neighborhood_number"] for i in sixes} == {
        int(r[0]) for r in rows if r[2] and int(r[2]) >= 6}


def test_an_html_table_page_becomes_a_dataset(settings: Settings) -> None:
    added = add_dataset(settings, "board-meetings", str(PAGE), title="Board meetings")
    entry = load_dataset(added.path)  # type: ignore[arg-type]
    assert entry.title == "Board meetings" and entry.source.format == "html"
    assert entry.key == ("week",)  # unique whole numbers, the shortest unique column
    # The page's table read independently: <caption>Meetings</caption>, one <tr> per week.
    page = lxml.html.parse(str(PAGE))
    (table,) = page.xpath("//table[caption[normalize-space()='Meetings']]")
    expected = {}
    for tr in table.xpath(".//tr[td]"):
        cells = [" ".join(td.text_content().split()) for td in tr.xpath("./td")]
        expected[int(cells[1])] = (cells[0], cells[2], cells[3] or None)
    items = served(settings, "board-meetings")
    assert {i["week"]: (i["week_of"], i["agenda"], i["minutes"]) for i in items} == expected
    assert len(items) == 15


def test_semicolon_file_with_null_spellings_and_no_unique_column(settings: Settings,
                                                                 tmp_path: Path) -> None:
    source = tmp_path / "inspections.txt"
    source.write_text("Inspection Date;Ward;Result\n"
                      "2019-03-01;7;PASS\n2019-03-01;7;PASS\n2019-03-02;NULL;FAIL\n"
                      "2019-03-04;NA;N/A\n", encoding="utf-8")
    added = add_dataset(settings, "inspections", str(source))
    entry = tomllib.loads(added.toml)
    assert entry["source"]["delimiter"] == ";"
    assert entry["source"]["null_values"] == ["", "NULL", "NA", "N/A"]
    assert entry["key"] == ["inspection_date", "ward", "result"]
    assert entry["duplicate_keys"] == "number"
    assert {c["name"]: c["type"] for c in entry["columns"]} == {
        "inspection_date": "date", "ward": "integer", "result": "text"}
    items = served(settings, "inspections", order="inspection_date")
    assert [(i["inspection_date"], i["ward"], i["result"]) for i in items] == [
        ("2019-03-01", 7, "PASS"), ("2019-03-01", 7, "PASS"), ("2019-03-02", None, "FAIL"),
        ("2019-03-04", None, None)]
    assert sorted(str(i["_key"]) for i in items)[:2] == ["2019-03-01|7|PASS",
                                                        "2019-03-01|7|PASS#2"]


def test_existing_entries_are_kept_unless_forced(settings: Settings, tmp_path: Path) -> None:
    source = tmp_path / "a.csv"
    source.write_text("id,name\n1,one\n2,two\n")
    add_dataset(settings, "things", str(source))
    first = (settings.catalog_dir / "things.toml").read_text()
    source.write_text("id,name,extra\n1,one,x\n2,two,y\n")
    with pytest.raises(ConfigurationError, match="already in the catalog .*--force"):
        add_dataset(settings, "things", str(source))
    assert (settings.catalog_dir / "things.toml").read_text() == first
    assert query(Runtime.start(settings), "SELECT count(*) FROM ds_things")[0][0] == 2

    added = add_dataset(settings, "things", str(source), force=True)
    assert "extra" in {c.name for c in Catalog.load(settings.catalog_dir).get("things").columns}
    assert added.summary is not None and added.summary.published == 2
    assert [i["extra"] for i in served(settings, "things", order="id")] == ["x", "y"]


def test_key_option_and_its_errors(settings: Settings, tmp_path: Path) -> None:
    source = tmp_path / "a.csv"
    source.write_text("code,name\nA,one\nB,two\n")
    draft = add_dataset(settings, "codes", str(source), key=["name"], dry_run=True).draft
    assert draft.key == ["name"]
    with pytest.raises(ConfigurationError, match=r"--key names unknown columns \['nope'\]"):
        add_dataset(settings, "codes", str(source), key=["nope"], dry_run=True)
    with pytest.raises(ConfigurationError, match="invalid dataset id 'Bad_Id'"):
        add_dataset(settings, "Bad_Id", str(source))
    with pytest.raises(SourceError, match="no such file"):
        add_dataset(settings, "codes", str(tmp_path / "missing.csv"))
    assert not list(settings.catalog_dir.iterdir())


def test_cli_dry_run_prints_and_writes_nothing(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    monkeypatch.setenv("STLDATA_CATALOG_DIR", str(catalog))
    monkeypatch.setenv("STLDATA_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    try:
        source = tmp_path / "wards.tsv"
        source.write_text("Ward\tAlderman\n1\tSharon Tyus\n2\tLisa Middlebrook\n")
        result = CliRunner().invoke(main, ["add", "wards", "--source", str(source),
                                           "--dry-run"])
        assert result.exit_code == 0, result.output
        entry = tomllib.loads(result.output)
        assert entry["id"] == "wards" and entry["source"]["delimiter"] == "\t"
        assert entry["key"] == ["ward"]
        assert not list(catalog.iterdir())

        bad = CliRunner().invoke(main, ["add", "9lives", "--source", str(source)])
        assert bad.exit_code == 1 and "invalid dataset id '9lives'" in bad.output
        picture = tmp_path / "map.png"
        picture.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
        odd = CliRunner().invoke(main, ["add", "map", "--source", str(picture)])
        assert odd.exit_code == 1 and "map.png: content is a PNG image" in odd.output
        assert not list(catalog.iterdir())
    finally:
        get_settings.cache_clear()


@pytest.fixture
def web(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A folder served over HTTP on 127.0.0.1."""
    folder = tmp_path / "site"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", folder
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_url_is_fetched_described_and_its_links_made_absolute(
        settings: Settings, web: tuple[str, Path]) -> None:
    base, folder = web
    (folder / "meetings.html").write_bytes(PAGE.read_bytes())
    url = f"{base}/meetings.html"
    added = add_dataset(settings, "meetings", url)
    entry = load_dataset(added.path)  # type: ignore[arg-type]
    assert (entry.source.url, entry.source.base_url, entry.source.format) == (url, url, "html")
    items = served(settings, "meetings", week="15")
    # The first meeting's agenda link, relative in the page, is absolute against the URL.
    assert [i["agenda_url"] for i in items] == [
        f"{base}/internal-apps/legislative/upload/agenda/7-10-20%20AGENDA%2015%202.pdf"]


def test_a_pdf_table_with_a_two_line_header(settings: Settings) -> None:
    """The FAQ's table prints "Neighborhood" over "Number", "Primary District"...; the
    numbers 49 and 50 appear twice in it, so no column is a key."""
    pdf = ROOT / "data" / "slmpd-neighborhood-districts" / "CrimeDataFrequentlyAskedQuestions.pdf"
    draft = add_dataset(settings, "districts", str(pdf), dry_run=True).draft
    assert [(c.name, c.type) for c in draft.columns] == [
        ("neighborhood_number", "integer"), ("neighborhood_name", "text"),
        ("neighborhood_primary_district", "integer"), ("neighborhood_addl_district", "integer")]
    assert draft.rows == 88 and draft.duplicate_keys == "number"
    assert draft.key == [c.name for c in draft.columns]


def test_headers_named_like_query_parameters_become_filterable_columns(
        settings: Settings, tmp_path: Path) -> None:
    source = tmp_path / "keywords.csv"
    source.write_text("id,order,q,limit,format\n1,7,alpha,3,x\n2,8,beta,4,y\n")

    added = add_dataset(settings, "keywords", str(source))

    entry = tomllib.loads(added.path.read_text())
    names = {c["name"]: c.get("aliases") for c in entry["columns"]}
    assert names == {"id": None, "order_value": ["order"], "q_value": ["q"],
                     "limit_value": ["limit"], "format_value": ["format"]}
    # A filter on the column, not a sort, a search or a page size.
    assert [i["id"] for i in served(settings, "keywords", order_value="8")] == [2]
    assert [i["id"] for i in served(settings, "keywords", q_value="alpha")] == [1]
