"""The two geographic datasets, from their real files to the read API: stl-neighborhoods
(the City's shapefile, and the same polygons as one GeoJSON file per neighborhood) and
arpa-direct-aid-by-zip (a CSV of counts joined to ZIP code polygons, population and
poverty). Expected values are read from the raw files here with csv, json and pyshp."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import shapefile  # type: ignore[import-untyped]
from pyproj import Transformer

from stldata.api.app import create_app
from stldata.catalog import Join, Source
from stldata.ingest.errors import SourceError
from stldata.ingest.ingester import Ingester
from stldata.runtime import Runtime

from conftest import ROOT, _fresh_database, _runtime, ingest, make_settings, project, query

NEIGHBORHOODS = ROOT / "data" / "stl-neighborhoods"
SHAPEFILE_ZIP = NEIGHBORHOODS / "neighborhoods_shapefile.zip"
GEOJSON_SAMPLES = NEIGHBORHOODS / "geojson"
ARPA = ROOT / "data" / "arpa-direct-aid-by-zip"
#: The full set of 88 per-neighborhood GeoJSON files, when the shared data is present.
SHARED_GEOJSON = Path("/work/shared/data/stl_neighborhoods/geojson_per_neighborhood")


def raw_shapefile() -> tuple[list[str], list[list[Any]], list[Any], str]:
    """Field names, records, shapes and .prj of the City's shapefile, read with pyshp."""
    with zipfile.ZipFile(SHAPEFILE_ZIP) as archive:
        parts = {Path(n).suffix: archive.read(n) for n in archive.namelist()}
    reader = shapefile.Reader(shp=io.BytesIO(parts[".shp"]), shx=io.BytesIO(parts[".shx"]),
                              dbf=io.BytesIO(parts[".dbf"]), encoding="utf-8")
    fields = [f[0] for f in reader.fields[1:]]
    return fields, [list(r) for r in reader.records()], list(reader.shapes()), \
        parts[".prj"].decode()


def raw_disbursements() -> dict[str, str]:
    with (ARPA / "STL_ZCTA_ARPA_Disbursements.csv").open(newline="") as stream:
        return {r["GEOID_ZCTA"]: r["arpa_dis"] for r in csv.DictReader(stream)}


def raw_csv_column(name: str, column: str) -> dict[str, str]:
    with (ARPA / name).open(newline="") as stream:
        return {r["GEOID_ZCTA"]: r[column] for r in csv.DictReader(stream)}


@pytest.fixture(scope="module")
def geo(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    """Both datasets ingested from their bundled samples and projected."""
    for url in _fresh_database(server_url):
        runtime = _runtime(make_settings(url, tmp_path_factory.mktemp("geo")))
        ingest(runtime, "stl-neighborhoods")
        ingest(runtime, "arpa-direct-aid-by-zip")
        project(runtime)
        yield runtime


@pytest.fixture(scope="module")
def geo_client(geo: Runtime) -> Any:
    app = create_app(geo)
    app.config["TESTING"] = True
    return app.test_client()


def all_records(client: Any, dataset_id: str) -> list[dict[str, Any]]:
    body = client.get(f"/api/v1/datasets/{dataset_id}/records?limit=1000").get_json()
    assert body["next"] is None
    items: list[dict[str, Any]] = body["items"]
    return items


# --- stl-neighborhoods ----------------------------------------------------------------------

def test_neighborhoods_served_with_numbers_names_and_polygons(geo_client: Any) -> None:
    fields, records, shapes, _ = raw_shapefile()
    by_number = {r[fields.index("NHD_NUM")]: r[fields.index("NHD_NAME")] for r in records}
    items = all_records(geo_client, "stl-neighborhoods")
    assert len(items) == len(records) == 88
    assert {i["neighborhood_id"]: i["name"] for i in items} == by_number
    assert sorted(by_number) == list(range(1, 89))
    for item in items:
        geometry = item["geometry"]
        assert isinstance(geometry, dict), "geometry is served as a JSON object"
        assert geometry["type"] in ("Polygon", "MultiPolygon")
    # The shapefile's first record (not in number order) is 43 Franz Park.
    assert records[0][:2] == [43, "Franz Park"]


def test_neighborhood_polygon_is_the_shapefile_polygon_in_wgs84(geo_client: Any) -> None:
    """Every vertex of Franz Park, converted independently from the .prj with pyproj."""
    fields, records, shapes, prj = raw_shapefile()
    at = [r[fields.index("NHD_NUM")] for r in records].index(43)
    to_wgs84 = Transformer.from_crs(prj, "EPSG:4326", always_xy=True)
    expected = [[round(c, 7) for c in to_wgs84.transform(x, y)] for x, y in shapes[at].points]
    record = geo_client.get("/api/v1/datasets/stl-neighborhoods/records/43").get_json()
    geometry = record["record"]["geometry"]
    assert geometry["type"] == "Polygon"
    served = [p for ring in geometry["coordinates"] for p in ring]
    assert served == expected
    # A point a person can check on a map: Franz Park lies west of Forest Park.
    lon, lat = served[0]
    assert -90.31 < lon < -90.28 and 38.61 < lat < 38.64


def test_neighborhood_source_keeps_the_dbf_row(geo_client: Any) -> None:
    fields, records, _, _ = raw_shapefile()
    row = next(r for r in records if r[0] == 68)
    record = geo_client.get("/api/v1/datasets/stl-neighborhoods/records/68").get_json()
    source = record["record"]["_source"]
    assert source["NHD_NAME"] == row[fields.index("NHD_NAME")] == "O'Fallon"
    assert source["NHD_NUMTXT"] == row[fields.index("NHD_NUMTXT")]
    assert source["NHD_NUM"] == "68"


def test_neighborhoods_filter_by_name_and_number(geo_client: Any) -> None:
    body = geo_client.get("/api/v1/datasets/stl-neighborhoods/records?name=Carondelet"
                          ).get_json()
    assert [i["neighborhood_id"] for i in body["items"]] == [1]
    parks = geo_client.get("/api/v1/datasets/stl-neighborhoods/records?"
                           "neighborhood_id__gt=79").get_json()["items"]
    assert len(parks) == 9


def test_dataset_lists_geometry_column_type(geo_client: Any) -> None:
    body = geo_client.get("/api/v1/datasets/stl-neighborhoods").get_json()
    types = {c["name"]: c["type"] for c in body["columns"]}
    assert types == {"neighborhood_id": "integer", "name": "text", "geometry": "geometry"}


def test_geometry_column_is_jsonb(geo: Runtime) -> None:
    rows = query(geo, "SELECT data_type FROM information_schema.columns WHERE table_name = "
                      "'ds_stl_neighborhoods' AND column_name = 'geometry'")
    assert rows == [("jsonb",)]
    # PostgreSQL reads it as an object: the ring count of a polygon is a JSON query away.
    rows = query(geo, "SELECT geometry ->> 'type' FROM ds_stl_neighborhoods "
                      "WHERE neighborhood_id = 43")
    assert rows == [("Polygon",)]


def _vertices(geometry: dict[str, Any]) -> list[tuple[float, float]]:
    polygons = ([geometry["coordinates"]] if geometry["type"] == "Polygon"
                else geometry["coordinates"])
    return [(p[0], p[1]) for polygon in polygons for ring in polygon for p in ring]


def _geojson_folder() -> Path:
    return SHARED_GEOJSON if SHARED_GEOJSON.is_dir() else GEOJSON_SAMPLES


def test_geojson_files_give_the_same_neighborhoods_as_the_shapefile(
        geo_client: Any, runtime: Runtime) -> None:
    """Ingest the per-neighborhood GeoJSON files (the slu-openGIS release, reprojected by
    them) into a fresh database and compare with the shapefile converted by us."""
    folder = _geojson_folder()
    dataset = runtime.catalog.get("stl-neighborhoods")
    geojson = dataclasses.replace(dataset, source=dataclasses.replace(
        dataset.source, format="geojson", file_pattern="*.geojson"))
    producer = runtime.producer()
    try:
        summary = Ingester(runtime.settings, runtime.database, producer).ingest(
            geojson, str(folder))
    finally:
        producer.close()
    files = sorted(folder.glob("*.geojson"))
    assert summary.published == len(files) and summary.quarantined == 0
    project(runtime)

    # NHD_NUM is written 27.0 in these files; it is read as the integer 27.
    expected = {}
    for path in files:
        feature = json.loads(path.read_text(encoding="utf-8"))["features"][0]
        expected[int(feature["properties"]["NHD_NUM"])] = feature["properties"]["NHD_NAME"]
    rows = query(runtime, "SELECT neighborhood_id, name, geometry FROM ds_stl_neighborhoods")
    assert {r[0]: r[1] for r in rows} == expected

    shapefile_served = {i["neighborhood_id"]: i for i in all_records(geo_client,
                                                                     "stl-neighborhoods")}
    for number, name, geometry in rows:
        ours = shapefile_served[number]
        assert ours["name"] == name
        a, b = _vertices(geometry), _vertices(ours["geometry"])
        assert len(a) == len(b), name
        # Both are the City's polygon; two conversions agree to about a centimetre.
        worst = max(max(abs(p[0] - q[0]), abs(p[1] - q[1])) for p, q in zip(a, b, strict=True))
        assert worst < 2e-7, (name, worst)


def test_geojson_file_names_with_apostrophes_and_dots_are_partitions(runtime: Runtime) -> None:
    dataset = runtime.catalog.get("stl-neighborhoods")
    geojson = dataclasses.replace(dataset, source=dataclasses.replace(
        dataset.source, format="geojson", file_pattern="*.geojson"))
    producer = runtime.producer()
    try:
        Ingester(runtime.settings, runtime.database, producer).ingest(
            geojson, str(GEOJSON_SAMPLES))
    finally:
        producer.close()
    project(runtime)
    rows = query(runtime, "SELECT _partition, name FROM ds_stl_neighborhoods ORDER BY 1")
    assert ("O'Fallon.geojson", "O'Fallon") in rows
    assert ("St._Louis_Hills.geojson", "St. Louis Hills") in rows
    assert ("Belfontaine_Calvary_Cemetery.geojson", "Belfontaine/Calvary Cemetery") in rows
    assert len(rows) == len(list(GEOJSON_SAMPLES.glob("*.geojson")))


# --- arpa-direct-aid-by-zip -------------------------------------------------------------------

def test_arpa_rows_are_joined_to_polygons_population_and_poverty(geo_client: Any) -> None:
    counts = raw_disbursements()
    population = raw_csv_column("STL_ZCTA_St_Louis_City_Total_Pop.csv", "total_pop")
    poverty = raw_csv_column("STL_ZCTA_St_Louis_City_Poverty.csv", "pvty_pct")
    polygons = {f["properties"]["GEOID_ZCTA"]: f["geometry"] for f in json.loads(
        (ARPA / "STL_ZCTA_St_Louis_City.geojson").read_text())["features"]}
    # The file ends without a newline: a naive line count misses the last row (63155,NA).
    assert len(counts) == 30 and counts["63155"] == "NA"

    items = {i["zcta"]: i for i in all_records(geo_client, "arpa-direct-aid-by-zip")}
    assert set(items) == set(counts) == set(polygons)
    for zcta, item in items.items():
        expected = None if counts[zcta] == "NA" else int(counts[zcta])
        assert item["arpa_disbursements"] == expected
        assert item["total_pop"] == int(population[zcta])
        # 63155 has no residents: its poverty rate is NaN in the file, empty here.
        assert item["poverty_pct"] == (None if poverty[zcta] == "NaN" else float(poverty[zcta]))
        raw = polygons[zcta]
        assert item["geometry"]["type"] == raw["type"] == "MultiPolygon"
        assert _vertices(item["geometry"]) == [
            (round(p[0], 7), round(p[1], 7)) for p in _vertices(raw)]
    assert items["63117"]["arpa_disbursements"] == 0
    assert sum(i["arpa_disbursements"] or 0 for i in items.values()) == sum(
        int(v) for v in counts.values() if v != "NA")


def test_arpa_source_row_is_the_csv_row_plus_joined_cells(geo_client: Any) -> None:
    record = geo_client.get("/api/v1/datasets/arpa-direct-aid-by-zip/records/63101"
                            ).get_json()["record"]
    source = record["_source"]
    assert source["GEOID_ZCTA"] == "63101" and source["arpa_dis"] == raw_disbursements()[
        "63101"]
    assert json.loads(source["geometry"])["type"] == "MultiPolygon"


def test_join_file_missing_is_a_clear_error_and_nothing_is_published(
        runtime: Runtime, tmp_path: Path) -> None:
    ingest(runtime, "arpa-direct-aid-by-zip")
    project(runtime)
    before = query(runtime, "SELECT count(*) FROM ds_arpa_direct_aid_by_zip")
    dataset = runtime.catalog.get("arpa-direct-aid-by-zip")
    broken = dataclasses.replace(dataset, source=dataclasses.replace(
        dataset.source, joins=(Join(file="no_such_polygons.geojson", format="geojson",
                                    on="GEOID_ZCTA", join_on="GEOID_ZCTA"),)))
    producer = runtime.producer()
    try:
        with pytest.raises(SourceError, match="join file not found"):
            # A changed release (else an unchanged source makes no snapshot at all).
            changed = tmp_path / "STL_ZCTA_ARPA_Disbursements.csv"
            changed.write_text("GEOID_ZCTA,arpa_dis\n63101,62\n")
            Ingester(runtime.settings, runtime.database, producer).ingest(broken, str(changed))
    finally:
        producer.close()
    project(runtime)
    assert query(runtime, "SELECT count(*) FROM ds_arpa_direct_aid_by_zip") == before == [(30,)]


def test_unmatched_key_is_quarantined_with_reason(runtime: Runtime, tmp_path: Path) -> None:
    """A ZIP code the polygon file lacks: the row is quarantined, the others load."""
    text = (ARPA / "STL_ZCTA_ARPA_Disbursements.csv").read_text()
    (tmp_path / "STL_ZCTA_ARPA_Disbursements.csv").write_text(text + "\r\n63199,7")
    for name in ("STL_ZCTA_St_Louis_City.geojson", "STL_ZCTA_St_Louis_City_Total_Pop.csv",
                 "STL_ZCTA_St_Louis_City_Poverty.csv"):
        (tmp_path / name).write_bytes((ARPA / name).read_bytes())
    summary = ingest(runtime, "arpa-direct-aid-by-zip", tmp_path)
    project(runtime)
    assert summary.rows_read == 31 and summary.published == 30
    rows = query(runtime, "SELECT line, reason FROM quarantine WHERE dataset_id = "
                          "'arpa-direct-aid-by-zip'")
    assert len(rows) == 1
    line, reason = rows[0]
    assert line == 32
    assert "63199" in reason and "STL_ZCTA_St_Louis_City.geojson" in reason
    assert query(runtime, "SELECT count(*) FROM ds_arpa_direct_aid_by_zip") == [(30,)]


def test_join_on_a_float_spelled_key_matches_the_integer(tmp_path: Path) -> None:
    """NHD_NUM is 27.0 in the GeoJSON files and 27 elsewhere; the join treats them as one."""
    from stldata.ingest.formats import parser_for

    (tmp_path / "counts.csv").write_text("nhd,count\n68,5\n43,2\n")
    options = Source(url="", format="csv", joins=(Join(
        file=str(GEOJSON_SAMPLES / "O'Fallon.geojson"), format="geojson", on="nhd",
        join_on="NHD_NUM", columns=("NHD_NAME",)),))
    (table,) = parser_for("csv")(tmp_path / "counts.csv", "counts.csv", options)
    rows = list(table.rows)
    assert table.header == ["nhd", "count", "NHD_NAME"]
    assert rows[0].cells == ["68", "5", "O'Fallon"]  # type: ignore[union-attr]
    assert "no row of join file O'Fallon.geojson has NHD_NUM = '43'" in rows[1].reason  # type: ignore[union-attr]


def test_join_key_repeated_in_join_file_is_an_error(tmp_path: Path) -> None:
    from stldata.ingest.formats import parser_for

    (tmp_path / "a.csv").write_text("zip,n\n63101,1\n")
    (tmp_path / "b.csv").write_text("zip,pop\n63101,5\n63101,6\n")
    options = Source(url="", format="csv", joins=(Join(
        file="b.csv", format="csv", on="zip", join_on="zip"),))
    with pytest.raises(SourceError, match="holds key '63101' twice"):
        list(parser_for("csv")(tmp_path / "a.csv", "a.csv", options))


def test_soql_geojson_serves_the_geometry_column(geo_client: Any) -> None:
    polygons = {i["neighborhood_id"]: i["geometry"]
                for i in all_records(geo_client, "stl-neighborhoods")}
    response = geo_client.get("/resource/stl-neighborhoods.geojson",
                              query_string={"$limit": "1000"})
    assert response.status_code == 200, response.get_data(as_text=True)
    features = response.get_json()["features"]
    assert len(features) == len(polygons) == 88
    for f in features:
        assert "geometry" not in f["properties"]
        assert f["geometry"] == polygons[f["properties"]["neighborhood_id"]]
    # Without the column in $select the shapes come all the same.
    named = geo_client.get("/resource/stl-neighborhoods.geojson",
                           query_string={"$select": "name", "$where": "neighborhood_id = 43"})
    [franz] = named.get_json()["features"]
    assert franz["properties"] == {"name": "Franz Park"}
    assert franz["geometry"] == polygons[43]
