"""Metro's GTFS stops and routes, read from the feed's ZIP, and the 1940-1970 census tract
populations, checked value by value against the raw files read here with csv and zipfile,
and served by the read API."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from stldata.api.app import create_app
from stldata.runtime import Runtime

from conftest import ROOT, ingest, project, query

STOPS_ZIP = ROOT / "data" / "metro-stops" / "metro_stl_gtfs_2023-06_stops.zip"
ROUTES_ZIP = ROOT / "data" / "metro-routes" / "metro_stl_gtfs_2023-06_routes.zip"
SHARED_FEED = Path("/work/shared/data/metro_stl_gtfs/metro_stl_gtfs_2023-06_no_stop_times.zip")
CENSUS = "stl-census-tracts-1940-1970"
CENSUS_SAMPLES = ROOT / "data" / CENSUS


def member_rows(archive: Path, member: str) -> list[dict[str, str]]:
    with zipfile.ZipFile(archive) as opened:
        text = opened.read(member).decode("utf-8-sig")
    return list(csv.DictReader(io.StringIO(text)))


def clean(text: str) -> str | None:
    """What the project stores for text: trimmed, one space between words (Metro writes
    'PAGE  @ GULF WB' with two), empty as no value; the raw text stays in _source."""
    return " ".join(text.split()) or None


def number_or_none(text: str) -> int | None:
    return int(text) if text.strip() else None


@pytest.fixture(scope="module")
def loaded(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The three datasets ingested from their bundled samples, on a database of their own."""
    from conftest import _fresh_database, _runtime, make_settings

    for url in _fresh_database(server_url):
        runtime = _runtime(make_settings(url, tmp_path_factory.mktemp("home")))
        summaries = {d: ingest(runtime, d) for d in ("metro-stops", "metro-routes", CENSUS)}
        project(runtime)
        yield runtime, summaries


@pytest.fixture(scope="module")
def client(loaded: Any) -> Any:
    app = create_app(loaded[0])
    app.config["TESTING"] = True
    return app.test_client()


# --- Metro stops ---------------------------------------------------------------------------


def test_stops_match_the_feed(loaded: Any) -> None:
    runtime, summaries = loaded
    raw = member_rows(STOPS_ZIP, "stops.txt")
    assert len(raw) == 5136
    assert [f.partition for f in summaries["metro-stops"].files] == [
        "metro_stl_gtfs_2023-06_stops.zip!stops.txt"]

    rows = query(runtime, "SELECT stop_id, stop_code, stop_name, stop_desc, "
                          "wheelchair_boarding, stop_lat, stop_lon, longitude, latitude, "
                          "_partition FROM ds_metro_stops")
    expected = {(r["stop_id"], r["stop_code"], clean(r["stop_name"]), clean(r["stop_desc"]),
                 number_or_none(r["wheelchair_boarding"]), float(r["stop_lat"]),
                 float(r["stop_lon"]), float(r["stop_lon"]), float(r["stop_lat"]),
                 "metro_stl_gtfs_2023-06_stops.zip!stops.txt") for r in raw}
    assert set(rows) == expected and len(rows) == len(raw)
    assert query(runtime, "SELECT count(*) FROM quarantine WHERE dataset_id = 'metro-stops'"
                 ) == [(0,)]


def test_wheelchair_codes_are_spelled_out(loaded: Any) -> None:
    runtime, _ = loaded
    raw = member_rows(STOPS_ZIP, "stops.txt")
    names = {"1": "accessible", "2": "not_accessible", "0": "unknown", "": None}
    expected: dict[str | None, int] = {}
    for r in raw:
        name = names[r["wheelchair_boarding"]]
        expected[name] = expected.get(name, 0) + 1
    assert dict(query(runtime, "SELECT wheelchair_access, count(*) FROM ds_metro_stops "
                               "GROUP BY 1")) == expected


def test_the_bundled_zip_holds_the_published_members(loaded: Any) -> None:
    if not SHARED_FEED.exists():
        pytest.skip("the published feed is not on this machine")
    with zipfile.ZipFile(SHARED_FEED) as published, zipfile.ZipFile(STOPS_ZIP) as bundled:
        for name in bundled.namelist():
            assert bundled.read(name) == published.read(name), name


def test_stops_from_the_whole_published_feed(runtime: Runtime) -> None:
    """The full feed (shapes, trips and all) gives the same stops: only stops.txt is read."""
    if not SHARED_FEED.exists():
        pytest.skip("the published feed is not on this machine")
    summary = ingest(runtime, "metro-stops", SHARED_FEED)
    project(runtime)
    assert [f.partition for f in summary.files] == [f"{SHARED_FEED.name}!stops.txt"]
    raw = member_rows(SHARED_FEED, "stops.txt")
    assert summary.rows_read == len(raw) == query(
        runtime, "SELECT count(*) FROM ds_metro_stops")[0][0]


def test_a_stop_keeps_its_source_row(client: Any) -> None:
    raw = {r["stop_id"]: r for r in member_rows(STOPS_ZIP, "stops.txt")}
    body = client.get("/api/v1/datasets/metro-stops/records/127").get_json()["record"]
    assert body["_source"] == raw["127"]
    assert body["stop_name"] == raw["127"]["stop_name"] == "THEKLA @ EMERSON SB"
    assert body["stop_lat"] == float(raw["127"]["stop_lat"])
    assert body["wheelchair_access"] == "not_accessible"

    spaced = client.get("/api/v1/datasets/metro-stops/records/2441").get_json()["record"]
    assert spaced["_source"]["stop_name"] == raw["2441"]["stop_name"] == "PAGE  @ GULF WB"
    assert spaced["stop_name"] == "PAGE @ GULF WB"


# --- Metro routes --------------------------------------------------------------------------


ROUTE_TYPES = {"0": "light_rail", "1": "subway", "2": "rail", "3": "bus"}


def test_routes_match_the_feed(loaded: Any) -> None:
    runtime, summaries = loaded
    raw = member_rows(ROUTES_ZIP, "routes.txt")
    assert len(raw) == summaries["metro-routes"].rows_read == 61
    rows = query(runtime, "SELECT route_id, route_short_name, route_long_name, route_type, "
                          "route_type_name, route_color, route_text_color FROM ds_metro_routes")
    expected = {(r["route_id"], r["route_short_name"], r["route_long_name"],
                 int(r["route_type"]), ROUTE_TYPES[r["route_type"]], r["route_color"],
                 r["route_text_color"]) for r in raw}
    assert set(rows) == expected and len(rows) == len(raw)
    # MetroLink is published as rail (2), not light rail (0), and is kept so.
    assert sorted(query(runtime, "SELECT route_id, route_type, route_type_name FROM "
                                 "ds_metro_routes WHERE route_type <> 3")) == [
        ("18348B", 2, "rail"), ("18348R", 2, "rail")]


def test_routes_are_filtered_by_readable_type(client: Any) -> None:
    raw = member_rows(ROUTES_ZIP, "routes.txt")
    body = client.get("/api/v1/datasets/metro-routes/records?route_type_name=rail"
                      "&order=route_id").get_json()
    assert [(i["route_id"], i["route_long_name"], i["route_color"]) for i in body["items"]] == [
        (r["route_id"], r["route_long_name"], r["route_color"])
        for r in sorted(raw, key=lambda r: r["route_id"]) if r["route_type"] == "2"]
    buses = client.get("/api/v1/datasets/metro-routes/records?route_type=3&limit=1000")
    assert len(buses.get_json()["items"]) == sum(r["route_type"] == "3" for r in raw) == 59


def test_a_colour_that_is_not_hex_is_quarantined(runtime: Runtime, tmp_path: Path) -> None:
    text = "\n".join(["route_id,route_short_name,route_long_name,route_type,route_color,"
                      "route_text_color", "1,1,Gold,3,#FFCC00,000000", "2,2,Red,3,red,000000",
                      ""])
    archive = tmp_path / "feed.zip"
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("routes.txt", text)
    ingest(runtime, "metro-routes", archive)
    project(runtime)
    assert query(runtime, "SELECT route_id, route_color FROM ds_metro_routes ORDER BY 1") == [
        ("1", "FFCC00"), ("2", None)]
    assert query(runtime, "SELECT column_name, raw_value, reason FROM quarantine") == [
        ("route_color", "red", "'red' matches none of the column's normalize patterns")]


# --- Census tracts 1940-1970 ---------------------------------------------------------------


def census_raw() -> list[dict[str, Any]]:
    """Every tract of every decade, with its id normalized by plain string handling."""
    rows: list[dict[str, Any]] = []
    for decade in (1940, 1950, 1960, 1970):
        path = CENSUS_SAMPLES / f"STL_DEMOGRAPHICS_pop{str(decade)[2:]}.csv"
        with path.open(newline="", encoding="utf-8") as stream:
            for r in csv.DictReader(stream):
                raw_id = r["Geo_NAME"] if decade == 1970 else r["Geo_Name"]
                tract = raw_id.removeprefix("Census Tract ")
                if decade == 1960:
                    tract = tract[:-3]  # 0001A000: the tract, then a 000 suffix
                rows.append({"decade": decade, "tract": tract.lstrip("0"),
                             "tract_raw": raw_id, "population": int(r["SE_T001_001"]),
                             "geo_fips": r["Geo_FIPS"], "qualified_name": r["Geo_QName"],
                             "source": r})
    return rows


def test_census_tracts_match_the_decade_files(loaded: Any) -> None:
    runtime, summaries = loaded
    raw = census_raw()
    assert len(raw) == summaries[CENSUS].rows_read == 128 * 3 + 127
    rows = query(runtime, "SELECT decade, tract, tract_raw, population, geo_fips, "
                          "qualified_name FROM ds_stl_census_tracts_1940_1970")
    assert len(rows) == len(raw)
    assert set(rows) == {(r["decade"], r["tract"], r["tract_raw"], r["population"],
                          r["geo_fips"], r["qualified_name"]) for r in raw}
    assert query(runtime, "SELECT count(*) FROM quarantine WHERE dataset_id = %s",
                 (CENSUS,)) == [(0,)]


def test_census_totals_per_decade(loaded: Any) -> None:
    runtime, _ = loaded
    totals: dict[int, int] = {}
    for r in census_raw():
        totals[r["decade"]] = totals.get(r["decade"], 0) + r["population"]
    assert totals == {1940: 816048, 1950: 856796, 1960: 749985, 1970: 622236}
    assert dict(query(runtime, "SELECT decade, sum(population)::int FROM "
                               "ds_stl_census_tracts_1940_1970 GROUP BY decade")) == totals


def test_one_tract_id_across_three_spellings(client: Any) -> None:
    raw = [r for r in census_raw() if r["tract"] == "1A"]
    body = client.get(f"/api/v1/datasets/{CENSUS}/records?tract=1A&order=decade").get_json()
    assert [(i["decade"], i["tract_raw"], i["population"]) for i in body["items"]] == [
        (r["decade"], r["tract_raw"], r["population"]) for r in raw]
    assert [i["tract_raw"] for i in body["items"]] == ["1A", "0001A", "Census Tract 0001A000"]
    # 1970's renumbered tracts, a decimal split among them, keep their own numbers.
    split = client.get(f"/api/v1/datasets/{CENSUS}/records?decade=1970&tract=1017.99"
                       ).get_json()["items"]
    assert [(i["tract_raw"], i["geo_fips"]) for i in split] == [
        (r["tract_raw"], r["geo_fips"]) for r in census_raw()
        if r["decade"] == 1970 and r["tract"] == "1017.99"]


def test_a_census_record_keeps_its_raw_row(client: Any) -> None:
    raw = next(r for r in census_raw() if r["decade"] == 1960 and r["tract"] == "26E")
    key = quote("1960|26E", safe="")
    body = client.get(f"/api/v1/datasets/{CENSUS}/records/{key}").get_json()["record"]
    assert body["_source"] == raw["source"]
    assert body["_source"]["Geo_DECADE"] == "1960"
    assert body["population"] == raw["population"]


def test_census_datasets_are_listed(client: Any) -> None:
    listing = {d["id"]: d for d in client.get("/api/v1/datasets").get_json()["datasets"]}
    counts = {CENSUS: 511, "metro-stops": 5136, "metro-routes": 61}
    assert {i: listing[i]["row_count"] for i in counts} == counts


@pytest.mark.parametrize(
    ("rules", "problem"),
    [
        ("[{pattern = '([0-9]+', replace = '1'}]", "rule '([0-9]+' -> '1' is not valid"),
        ("[{pattern = '([0-9]+)', replace = '\\2'}]", "invalid group reference 2"),
        ("[{pattern = 'x'}]", "each rule is a table with a 'pattern' and a 'replace'"),
        ("'x'", "normalize must be a list of {pattern, replace} tables"),
    ],
)
def test_bad_normalize_rules_are_named(tmp_path: Path, rules: str, problem: str) -> None:
    from stldata.catalog import CatalogError, load_dataset

    path = tmp_path / "rules.toml"
    path.write_text("id = 'x'\ntitle = 't'\nkey = ['a']\nsource = {url = '', format = 'csv'}\n"
                    f"columns = [{{name = 'a', normalize = {rules}}}]\n")
    with pytest.raises(CatalogError) as raised:
        load_dataset(path)
    assert "column a: normalize" in str(raised.value) and problem in str(raised.value)
    assert "rules.toml" in str(raised.value)


def test_normalize_rewrites_before_the_type_applies() -> None:
    from stldata.catalog import Column
    from stldata.ingest.coerce import CoercionFailed, make_coercer

    decade = make_coercer(Column("decade", "integer", normalize=(
        (r"[1-9][0-9]*[A-Z]", "1940"), (r"Census Tract [0-9]{4}[A-Z][0-9]{3}", "1960"))),
        "America/Chicago")
    assert decade("26E") == 1940 and decade("Census Tract 0026E000") == 1960
    with pytest.raises(CoercionFailed, match="'0026E' matches none"):
        decade("0026E")
