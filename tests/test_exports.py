"""Exports (CSV, JSON lines, GeoJSON) and the records page in those formats.

Row counts are checked against the table and the raw files, values by a CSV round trip
against the JSON records, streaming by the server-side cursor the export holds open, and
constant memory by tracemalloc's peak while exporting 10 times more rows."""

from __future__ import annotations

import csv
import io
import tracemalloc
from typing import Any

import orjson
import pytest

from stldata.api.app import create_app
from stldata.projection.tables import ensure_table
from stldata.runtime import Runtime

from conftest import CRIME_SAMPLES, pages, query, read_raw_csv

BASE = "/api/v1/datasets/slmpd-crime"



@pytest.fixture(scope="module")
def every_record(client: Any) -> dict[str, dict[str, Any]]:
    return {i["_key"]: i for i in pages(client, BASE + "/records?limit=1000")}


def table_count(runtime: Runtime) -> int:
    return int(query(runtime, "SELECT count(*) FROM ds_slmpd_crime")[0][0])


def as_csv_text(value: Any) -> str:
    """How a JSON record value reads in the CSV: empty for null, true/false, numbers as
    Python writes them."""
    if value is None:
        return ""
    if value is True or value is False:
        return "true" if value else "false"
    return str(value)


def test_csv_export_is_the_whole_table_and_round_trips(client: Any, loaded: Runtime,
                                                       every_record: dict[str, Any]) -> None:
    response = client.get(BASE + "/export.csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert 'filename="slmpd-crime.csv"' in response.headers["Content-Disposition"]
    text = response.data.decode("utf-8")
    assert not text.startswith("\ufeff")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    raw_total = sum(len(read_raw_csv(p)[1]) for p in CRIME_SAMPLES.iterdir())
    assert len(rows) == table_count(loaded) == raw_total == len(every_record)
    assert list(rows[0]) == list(next(iter(every_record.values())))
    for row in rows:
        record = every_record[row["_key"]]
        assert row == {k: as_csv_text(v) for k, v in record.items()}


def test_bom_for_excel(client: Any) -> None:
    data = client.get(BASE + "/export.csv?bom=true&coded_month=2018-06&fields=crime").data
    assert data.startswith(b"\xef\xbb\xbf_key,crime\r\n")
    assert len(data.decode("utf-8-sig").splitlines()) == 1 + 4282
    assert not client.get(BASE + "/export.csv?bom=false&limit_x=1".replace("&limit_x=1", "")
                          ).data.startswith(b"\xef\xbb\xbf")
    bad = client.get(BASE + "/export.csv?bom=maybe")
    assert bad.status_code == 400 and bad.get_json()["invalid_params"][0]["name"] == "bom"


def test_ndjson_export_equals_the_records(client: Any, loaded: Runtime,
                                          every_record: dict[str, Any]) -> None:
    response = client.get(BASE + "/export.ndjson")
    assert response.mimetype == "application/x-ndjson"
    lines = response.data.splitlines()
    assert len(lines) == table_count(loaded)
    for line in lines:
        record = orjson.loads(line)
        assert record == every_record[record["_key"]]


def test_geojson_export_has_a_point_per_located_record(client: Any, loaded: Runtime,
                                                       every_record: dict[str, Any]) -> None:
    response = client.get(BASE + "/export.geojson")
    assert response.mimetype == "application/geo+json"
    body = orjson.loads(response.data)
    assert body["type"] == "FeatureCollection"
    assert len(body["features"]) == table_count(loaded)
    located = 0
    for feature in body["features"]:
        record = every_record[feature["id"]]
        if record["longitude"] is None:
            assert feature["geometry"] is None
        else:
            located += 1
            assert feature["geometry"] == {"type": "Point", "coordinates": [
                record["longitude"], record["latitude"]]}
        assert feature["properties"]["description"] == record["description"]
    assert located > 0.9 * len(body["features"])


def test_exports_take_the_filters(client: Any) -> None:
    header, raw = read_raw_csv(CRIME_SAMPLES / "june2018.csv")
    district = header.index("District")
    text = client.get(BASE + "/export.csv?coded_month=2018-06&district=3"
                             "&fields=crime,district&order=-date_occur").data.decode()
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0] == ["_key", "crime", "district"]
    assert len(rows) - 1 == sum(1 for r in raw if r[district].strip() == "3") > 0
    assert {r[2] for r in rows[1:]} == {"3"}


@pytest.mark.parametrize("param", ["limit=5", "cursor=abc", "format=csv"])
def test_exports_refuse_paging_parameters(client: Any, param: str) -> None:
    response = client.get(f"{BASE}/export.csv?{param}")
    assert response.status_code == 400
    assert response.get_json()["invalid_params"][0]["name"] == param.split("=")[0]


@pytest.mark.parametrize("format_", ["csv", "ndjson", "geojson"])
def test_records_pages_in_each_format_walk_to_the_export(client: Any, format_: str) -> None:
    url: str | None = f"{BASE}/records?coded_month=2018-06&format={format_}&limit=900"
    keys: list[str] = []
    while url:
        response = client.get(url)
        assert response.status_code == 200
        assert response.headers["X-Total-Count"] == "4282"
        if format_ == "csv":
            keys += [r["_key"] for r in csv.DictReader(io.StringIO(response.data.decode()))]
        elif format_ == "ndjson":
            keys += [orjson.loads(line)["_key"] for line in response.data.splitlines()]
        else:
            body = orjson.loads(response.data)
            keys += [f["id"] for f in body["features"]]
            assert body["total"] == 4282
        link = response.headers.get("Link")
        url = link[1:link.index(">")] if link else None
    exported = [orjson.loads(line)["_key"] for line in client.get(
        f"{BASE}/export.ndjson?coded_month=2018-06").data.splitlines()]
    assert keys == exported and len(keys) == 4282


def test_export_streams_through_a_server_side_cursor(client: Any, loaded: Runtime) -> None:
    response = client.get(BASE + "/export.ndjson", buffered=False)
    chunks = iter(response.response)
    first = next(chunks)
    try:
        assert first.count(b"\n") == 2000  # one chunk of the cursor, not the whole table
        activity = query(loaded, "SELECT query FROM pg_stat_activity WHERE datname = "
                                 "current_database() AND pid <> pg_backend_pid()")
        statements = [str(r[0]) for r in activity]
        assert any(s.startswith(("FETCH FORWARD", "DECLARE")) for s in statements), statements
    finally:
        response.close()


def _synthetic_crimes(runtime: Runtime, count: int) -> None:
    dataset = runtime.catalog.get("slmpd-crime")
    with runtime.database.transaction() as conn:
        ensure_table(conn, dataset)
        conn.execute("TRUNCATE ds_slmpd_crime")
        # Index upkeep is not what this measures, and would dominate the time of the test.
        for (name,) in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = "
                                    "'ds_slmpd_crime' AND indexname NOT LIKE '%%pkey'"
                                    ).fetchall():
            conn.execute(f'DROP INDEX "{name}"')
        conn.execute(
            "INSERT INTO ds_slmpd_crime (_key, _snapshot_id, _hash, _source, coded_month, "
            "date_occur, count, crime, district, description, longitude, latitude) "
            "SELECT 'k' || g, 1, 'h', '{}'::json, date '2018-06-01', "
            "timestamptz '2018-06-01 12:00-05' + g * interval '1 minute', 1, '64701', g %% 9, "
            "'LARCENY-FROM MTR VEH UNDER $500 number ' || g, -90.2 + (g %% 1000) * 1e-4, "
            "38.6 + (g %% 777) * 1e-4 FROM generate_series(1, %s) g", (count,))


def _export_peak(client: Any, url: str) -> tuple[int, int]:
    """(rows, peak bytes allocated by Python) while streaming an export."""
    tracemalloc.start()
    try:
        response = client.get(url, buffered=False)
        rows = 0
        for chunk in response.response:
            rows += chunk.count(b"\n")
        response.close()
        return rows, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_export_memory_stays_constant(runtime: Runtime) -> None:
    app = create_app(runtime)
    client = app.test_client()
    _synthetic_crimes(runtime, 6_000)
    small_rows, small_peak = _export_peak(client, BASE + "/export.csv")
    _synthetic_crimes(runtime, 60_000)
    large_rows, large_peak = _export_peak(client, BASE + "/export.csv")
    assert (small_rows, large_rows) == (6_001, 60_001)  # with the header
    print(f"export peak: {small_peak / 1e6:.1f} MB for 6k rows, "
          f"{large_peak / 1e6:.1f} MB for 60k rows")
    # Ten times the rows, about the same memory: the rows are never all held at once.
    assert large_peak < 1.5 * small_peak + 1_000_000
    assert large_peak < 30_000_000


def test_openapi_documents_the_parameters_and_exports(client: Any) -> None:
    spec = client.get("/openapi.json").get_json()
    records = spec["paths"]["/api/v1/datasets/{dataset_id}/records"]["get"]
    documented = {p["name"]: p for p in records["parameters"]}
    for name in ("q", "fields", "or", "bbox", "near", "radius_m", "within", "format",
                 "as_of", "limit", "order", "cursor"):
        assert name in documented, name
    assert documented["within"]["schema"].get("example") or documented["within"].get(
        "example")
    assert "icontains" in records["description"] and "__year" in records["description"]
    page = records["responses"]["200"]["content"]["application/json"]["schema"]
    assert page  # RecordsPageOut, with total and total_is_estimate
    for format_, media in (("csv", "text/csv"), ("ndjson", "application/x-ndjson"),
                           ("geojson", "application/geo+json")):
        export = spec["paths"][f"/api/v1/datasets/{{dataset_id}}/export.{format_}"]["get"]
        assert media in export["responses"]["200"]["content"]
        assert "bom" in {p["name"] for p in export["parameters"]}
    search = spec["paths"]["/api/v1/search"]["get"]
    assert {"q", "limit"} <= {p["name"] for p in search["parameters"]}


def test_a_dataset_not_yet_projected_is_a_404_not_an_error(runtime: Runtime) -> None:
    client = create_app(runtime).test_client()
    for url in (BASE + "/records", BASE + "/export.csv", BASE + "/records?format=csv"):
        response = client.get(url)
        assert response.status_code == 404, url
        assert "not created its table" in response.get_json()["detail"]
