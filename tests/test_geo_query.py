"""Geographic filters: bbox, near/radius_m, within=neighborhood:.

A database of this module's own holds the June 2018 crime extract and the City's
neighborhood polygons (the bundled shapefile), both through the real ingest and
projection. Expected answers are computed in Python: a box test, the haversine formula,
and ray-casting point-in-polygon over the polygons as the API serves them; SLMPD's own
neighborhood numbers in the raw file are a real-world check on the polygons."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from stldata.api.app import create_app
from stldata.api.geo import neighborhood_lookup
from stldata.api.paging import build_select
from stldata.api.query import dataset_table, output_columns, parse_query
from stldata.projection.search_index import point_index_name
from stldata.runtime import Runtime
from stldata.settings import Settings

from conftest import (
    CRIME_SAMPLES,
    ROOT,
    _fresh_database,
    _runtime,
    ingest,
    make_settings,
    pages,
    plan_of,
    project,
)

RECORDS = "/api/v1/datasets/slmpd-crime/records"
HOODS = "/api/v1/datasets/stl-neighborhoods/records"
EARTH_RADIUS_M = 6_371_008.8


@pytest.fixture(scope="module")
def geo_client(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    for url in _fresh_database(server_url):
        runtime = _runtime(make_settings(url, tmp_path_factory.mktemp("geo")))
        ingest(runtime, "stl-neighborhoods")
        ingest(runtime, "slmpd-crime", CRIME_SAMPLES / "june2018.csv")
        project(runtime)
        app = create_app(runtime)
        app.config["TESTING"] = True
        yield app.test_client()



@pytest.fixture(scope="module")
def points(geo_client: Any) -> list[dict[str, Any]]:
    """Every June record with coordinates."""
    items = pages(geo_client, RECORDS + "?fields=longitude,latitude,neighborhood&limit=1000"
                                        "&longitude__isnull=false")
    assert len(items) > 4000
    return items


@pytest.fixture(scope="module")
def hoods(geo_client: Any) -> dict[str, dict[str, Any]]:
    """The neighborhood polygons as served, by name."""
    body = orjson.loads(geo_client.get(HOODS + "?format=geojson&limit=1000").data)
    assert len(body["features"]) == 88
    return {f["properties"]["name"]: f for f in body["features"]}


def haversine(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(h))


def in_ring(x: float, y: float, ring: list[list[float]]) -> bool:
    """Ray casting: a horizontal ray from the point crosses the ring an odd number of
    times."""
    inside = False
    for (x1, y1), (x2, y2) in zip(ring, ring[1:] + ring[:1], strict=True):
        if (y1 > y) != (y2 > y) and x < (x2 - x1) * (y - y1) / (y2 - y1) + x1:
            inside = not inside
    return inside


def polygons(geometry: dict[str, Any]) -> list[list[list[list[float]]]]:
    return ([geometry["coordinates"]] if geometry["type"] == "Polygon"
            else geometry["coordinates"])


def in_geometry(x: float, y: float, geometry: dict[str, Any]) -> bool:
    return any(in_ring(x, y, poly[0]) and not any(in_ring(x, y, h) for h in poly[1:])
               for poly in polygons(geometry))


def near_edge(x: float, y: float, geometry: dict[str, Any], tolerance: float = 1e-9) -> bool:
    """Points on a boundary (to 0.1 mm) are inside for PostgreSQL and either way for ray
    casting. Crimes geocoded to a boundary street's centre line are common."""
    for poly in polygons(geometry):
        for ring in poly:
            for (x1, y1), (x2, y2) in zip(ring, ring[1:] + ring[:1], strict=True):
                dx, dy = x2 - x1, y2 - y1
                t = max(0.0, min(1.0, ((x - x1) * dx + (y - y1) * dy) / (dx * dx + dy * dy
                                                                        or 1)))
                if math.hypot(x - x1 - t * dx, y - y1 - t * dy) < tolerance:
                    return True
    return False


def test_bbox(geo_client: Any, points: list[dict[str, Any]]) -> None:
    box = (-90.30, 38.60, -90.25, 38.65)
    items = pages(geo_client, RECORDS + "?bbox=" + ",".join(map(str, box)) + "&limit=1000")
    expected = {p["_key"] for p in points
                if box[0] <= p["longitude"] <= box[2] and box[1] <= p["latitude"] <= box[3]}
    assert {i["_key"] for i in items} == expected and len(expected) > 100


@pytest.mark.parametrize(("lat", "lon", "radius"), [(38.6270, -90.1994, 500.0),
                                                    (38.6400, -90.2600, 1500.0),
                                                    (38.5800, -90.2600, 120.0)])
def test_near_is_great_circle_distance_nearest_first(geo_client: Any,
                                                     points: list[dict[str, Any]],
                                                     lat: float, lon: float,
                                                     radius: float) -> None:
    items = pages(geo_client, f"{RECORDS}?near={lat},{lon}&radius_m={radius:g}&limit=50")
    distances = {p["_key"]: haversine(lat, lon, p["latitude"], p["longitude"])
                 for p in points}
    expected = {k for k, d in distances.items() if d <= radius}
    assert {i["_key"] for i in items} == expected and expected
    served = [i["_distance"] for i in items]
    assert served == sorted(served)
    assert all(abs(i["_distance"] - distances[i["_key"]]) < 1e-3 for i in items)


def test_near_with_another_order_and_filters(geo_client: Any,
                                             points: list[dict[str, Any]]) -> None:
    items = pages(geo_client, f"{RECORDS}?near=38.6270,-90.1994&radius_m=2000"
                              "&order=-date_occur&district=4&limit=1000")
    assert items and all(i["district"] == 4 for i in items)
    moments = [i["date_occur"] for i in items if i["date_occur"]]
    assert moments == sorted(moments, reverse=True)
    near = {p["_key"] for p in points
            if haversine(38.6270, -90.1994, p["latitude"], p["longitude"]) <= 2000}
    assert {i["_key"] for i in items} <= near


@pytest.mark.parametrize("name", ["Academy", "Downtown West", "Tower Grove South",
                                  "Forest Park", "Carondelet"])
def test_within_neighborhood_is_point_in_polygon(geo_client: Any,
                                                 points: list[dict[str, Any]],
                                                 hoods: dict[str, dict[str, Any]],
                                                 name: str) -> None:
    hood = hoods[name]
    items = pages(geo_client, f"{RECORDS}?within=neighborhood:{name}&limit=1000")
    served = {i["_key"] for i in items}
    clear = [p for p in points if not near_edge(p["longitude"], p["latitude"],
                                                 hood["geometry"])]
    expected = {p["_key"] for p in clear
                if in_geometry(p["longitude"], p["latitude"], hood["geometry"])}
    assert {k for k in served if k in {p["_key"] for p in clear}} == expected
    assert expected or name == "Forest Park"
    # SLMPD codes each crime with its own neighborhood number: it agrees with the City's
    # polygons for most records (crimes on a boundary street go either way).
    number = hood["properties"]["neighborhood_id"]
    if items:
        agree = sum(1 for i in items if i["neighborhood"] == number)
        assert agree >= 0.75 * len(items)


def test_within_by_number_and_any_case(geo_client: Any) -> None:
    by_name = pages(geo_client, f"{RECORDS}?within=neighborhood:academy&limit=1000")
    by_number = pages(geo_client, f"{RECORDS}?within=neighborhood:51&limit=1000")
    assert [i["_key"] for i in by_name] == [i["_key"] for i in by_number] != []


def test_geography_combines_with_search_and_formats(geo_client: Any) -> None:
    url = f"{RECORDS}?within=neighborhood:Downtown%20West&q=larceny&format=geojson&limit=1000"
    body = orjson.loads(geo_client.get(url).data)
    assert body["type"] == "FeatureCollection" and body["features"]
    for feature in body["features"]:
        assert feature["geometry"]["type"] == "Point"
        lon, lat = feature["geometry"]["coordinates"]
        assert (lon, lat) == (feature["properties"]["longitude"],
                              feature["properties"]["latitude"])
        assert "LARCENY" in feature["properties"]["description"]


@pytest.mark.parametrize(
    ("query", "param", "phrase"),
    [
        ("within=neighborhood:Atlantis", "within", "Atlantis"),
        ("within=neighborhood:Acadmy", "within", "did you mean 'Academy'"),
        ("within=ward:3", "within", "neighborhood:"),
        ("bbox=1,2,3", "bbox", "minLon,minLat,maxLon,maxLat"),
        ("bbox=-90.2,38.6,-90.3,38.7", "bbox", "greater"),
        ("bbox=-200,38,-90,39", "bbox", "longitude"),
        ("bbox=a,b,c,d", "bbox", "numbers"),
        ("near=38.6,-90.2", "radius_m", "required"),
        ("near=38.6&radius_m=100", "near", "lat,lon"),
        ("near=95,-90.2&radius_m=100", "near", "latitude"),
        ("near=38.6,-90.2&radius_m=-5", "radius_m", "more than 0"),
        ("near=38.6,-90.2&radius_m=far", "radius_m", "far"),
        ("radius_m=100", "radius_m", "near"),
    ],
)
def test_bad_geography_is_a_400_naming_the_parameter(geo_client: Any, query: str,
                                                     param: str, phrase: str) -> None:
    response = geo_client.get(f"{RECORDS}?{query}")
    assert response.status_code == 400
    body = response.get_json()
    assert [p["name"] for p in body["invalid_params"]] == [param]
    assert phrase in body["detail"]


def test_dataset_without_coordinates_is_a_400(geo_client: Any) -> None:
    for query in ("bbox=-90.3,38.6,-90.2,38.7", "near=38.6,-90.2&radius_m=10",
                  "within=neighborhood:Academy"):
        response = geo_client.get(f"/api/v1/datasets/stl-aldermen-meetings/records?{query}")
        assert response.status_code == 400
        assert "no point coordinates" in response.get_json()["detail"]


DONUT = {
    # A square around downtown St. Louis with a square hole in the middle, and a second,
    # separate square: a MultiPolygon with a hole.
    "type": "MultiPolygon",
    "coordinates": [
        [[[-90.215, 38.620], [-90.180, 38.620], [-90.180, 38.640], [-90.215, 38.640],
          [-90.215, 38.620]],
         [[-90.205, 38.626], [-90.190, 38.626], [-90.190, 38.634], [-90.205, 38.634],
          [-90.205, 38.626]]],
        [[[-90.27, 38.60], [-90.25, 38.60], [-90.25, 38.62], [-90.27, 38.62],
          [-90.27, 38.60]]],
    ],
}


def test_polygon_with_a_hole_from_a_geojson_source(server_url: str, tmp_path: Path) -> None:
    """A neighborhood layer of one test polygon, ingested from GeoJSON through the real
    pipeline with a catalog of its own: records in the hole are outside."""
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    (catalog / "slmpd-crime.toml").write_text(
        (ROOT / "catalog" / "slmpd-crime.toml").read_text())
    (catalog / "stl-neighborhoods.toml").write_text('''
id = "stl-neighborhoods"
title = "Test zones"
key = ["neighborhood_id"]
[source]
url = "https://example.org/zones.geojson"
format = "geojson"
file_pattern = "*.geojson"
[[columns]]
name = "neighborhood_id"
type = "integer"
aliases = ["NHD_NUM"]
[[columns]]
name = "name"
aliases = ["NHD_NAME"]
[[columns]]
name = "geometry"
type = "geometry"
''')
    zones = tmp_path / "zones.geojson"
    zones.write_bytes(orjson.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"NHD_NUM": 1, "NHD_NAME": "Donut"},
         "geometry": DONUT}]}))
    for url in _fresh_database(server_url):
        settings = Settings(home=tmp_path / "home", database_url=url, batch_size=2000,
                            poll_interval=0.05, catalog_dir=catalog)
        runtime: Runtime = _runtime(settings)
        ingest(runtime, "stl-neighborhoods", zones)
        ingest(runtime, "slmpd-crime", CRIME_SAMPLES / "june2018.csv")
        project(runtime)
        client = create_app(runtime).test_client()
        every = pages(client, RECORDS + "?fields=longitude,latitude&longitude__isnull=false"
                                        "&limit=1000")
        inside = pages(client, RECORDS + "?within=neighborhood:donut&limit=1000")
    expected = {p["_key"] for p in every if in_geometry(p["longitude"], p["latitude"], DONUT)}
    in_hole = [p for p in every if in_ring(p["longitude"], p["latitude"],
                                           DONUT["coordinates"][0][1])]
    in_second = [p for p in every if in_ring(p["longitude"], p["latitude"],
                                             DONUT["coordinates"][1][0])]
    assert {i["_key"] for i in inside} == expected
    assert in_hole and in_second  # the test polygon exercises both the hole and the OR
    assert not {p["_key"] for p in in_hole} & expected


@pytest.mark.parametrize("query", [{"bbox": ["-90.30,38.60,-90.25,38.65"]},
                                   {"within": ["neighborhood:Academy"]},
                                   {"near": ["38.6270,-90.1994"], "radius_m": ["300"]}])
def test_geographic_filters_use_the_point_index(geo_client: Any,
                                                query: dict[str, list[str]]) -> None:
    runtime: Runtime = geo_client.application.extensions["stldata.read_model"].runtime
    dataset = runtime.catalog.get("slmpd-crime")
    metadata = sa.MetaData()
    table = dataset_table(dataset, metadata)
    engine = runtime.database.engine()
    with engine.connect() as conn:
        lookup = neighborhood_lookup(conn, runtime.catalog.get, metadata)
        parsed = parse_query(dataset, table, query, neighborhoods=lookup)
        statement = build_select(table, parsed, output_columns(dataset, table, parsed))
        conn.execute(sa.text("SET enable_seqscan = off"))
        plan = plan_of(conn, statement)
    engine.dispose()
    name = point_index_name(dataset)
    assert f"Index Scan using {name}" in plan or f"Index Scan on {name}" in plan, plan
