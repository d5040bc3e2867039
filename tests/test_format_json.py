"""JSON, NDJSON and GeoJSON sources: records read as a person reads the file, nested objects
flattened, broken input named by line and column, coordinates converted to WGS84.
Expected values are computed here from the raw text with the json module or by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyproj import Transformer

from stldata.catalog import Dataset, Source, load_dataset
from stldata.ingest.coerce import parse_geometry
from stldata.ingest.errors import SourceError
from stldata.ingest.formats import Table, parser_for
from stldata.ingest.formats.jsonfile import flatten, loads
from stldata.ingest.ingester import Ingester, IngestSummary
from stldata.ingest.reader import BadRow, RawRow
from stldata.runtime import Runtime

from conftest import ROOT, project, query

ZCTA_GEOJSON = ROOT / "data" / "arpa-direct-aid-by-zip" / "STL_ZCTA_St_Louis_City.geojson"
#: The Gateway Arch, a point anyone can look up.
ARCH = (-90.184776, 38.624691)


def parse(path: Path, fmt: str, **options: Any) -> tuple[list[str], list[RawRow | BadRow]]:
    (table,) = list(parser_for(fmt)(path, path.name, Source(url="", format=fmt, **options)))
    return table.header, list(table.rows)


def as_dicts(header: list[str], rows: list[RawRow | BadRow]) -> list[dict[str, str]]:
    return [dict(zip(header, r.cells, strict=True)) for r in rows if isinstance(r, RawRow)]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- arrays of objects, nesting, numbers ------------------------------------------------------

API_RESPONSE = """{
  "meta": {"count": 3},
  "data": {"items": [
    {"id": 1, "name": "Tower Grove", "ward": {"number": 8, "alder": {"name": "A. B."}},
     "area": 27.0, "tags": ["park", "south"], "open": true, "note": null},
    {"id": 2, "name": "Forest Park \\u00e9t\\u00e9", "ward": {"number": 28},
     "area": 1.371e3, "open": false},
    {"id": 3, "name": "O'Fallon", "extra": {}}
  ]}
}"""


def test_records_path_and_nested_objects_flattened(tmp_path: Path) -> None:
    path = write(tmp_path, "api.json", API_RESPONSE)
    header, rows = parse(path, "json", records_path="data.items")
    raw = json.loads(API_RESPONSE)["data"]["items"]
    assert len(rows) == len(raw) == 3
    assert header == ["id", "name", "ward.number", "ward.alder.name", "area", "tags", "open",
                      "note", "extra"]
    first, second, third = as_dicts(header, rows)
    assert first["ward.alder.name"] == raw[0]["ward"]["alder"]["name"] == "A. B."
    assert first["ward.number"] == str(raw[0]["ward"]["number"])
    # Numbers keep the file's spelling: 27.0 is not 27, and 1.371e3 is not 1371.0.
    assert first["area"] == "27.0" and second["area"] == "1.371e3"
    assert json.loads(first["tags"]) == raw[0]["tags"]
    assert (first["open"], second["open"], first["note"]) == ("true", "false", "")
    assert second["name"] == raw[1]["name"] == "Forest Park été"
    # A member a record lacks is empty; an empty object stays visible as {}.
    assert second["ward.alder.name"] == "" and third["extra"] == "{}"
    # A row's line is where its record starts in the file.
    starts = [n for n, text in enumerate(API_RESPONSE.splitlines(), 1)
              if text.lstrip().startswith('{"id"')]
    assert [r.line for r in rows] == starts == [4, 6, 8]


def test_top_level_array(tmp_path: Path) -> None:
    records = [{"zip": "63101", "n": 61}, {"zip": "63102", "n": 22, "x": {"y": [1, 2]}}]
    path = write(tmp_path, "a.json", json.dumps(records))
    header, rows = parse(path, "json")
    assert as_dicts(header, rows) == [{"zip": "63101", "n": "61", "x.y": ""},
                                      {"zip": "63102", "n": "22", "x.y": "[1, 2]"}]


def test_record_that_is_not_an_object_is_rejected_alone(tmp_path: Path) -> None:
    path = write(tmp_path, "a.json", '[{"a": 1}, 5, {"a": 2}, {"a.b": 1, "a": {"b": 2}}]')
    header, rows = parse(path, "json")
    assert [r.cells for r in rows if isinstance(r, RawRow)] == [["1"], ["2"]]
    bad = [r for r in rows if isinstance(r, BadRow)]
    assert [(b.line, b.text) for b in bad] == [(2, "5"), (4, '{"a.b": 1, "a": {"b": 2}}')]
    assert "record 2 is a JSON number, not an object" in bad[0].reason
    assert "flatten to the same column a.b" in bad[1].reason


@pytest.mark.parametrize(("text", "options", "message"), [
    ('{"data": {"rows": []}}', {}, "is a JSON object, not an array of records; set "
                                   "source.records_path to the member holding them "
                                   "(members: data)"),
    ('{"data": {"rows": []}}', {"records_path": "data.items"},
     "records_path 'data.items': data has no 'items'; it has members rows"),
    ('{"data": {"rows": []}}', {"records_path": "data.rows"}, "holds no records"),
    ('"hello"', {}, "the file is a JSON string, not an array of records"),
    ("", {}, "file is empty"),
    ("[" * 100_000, {}, "not valid JSON|nested too deeply"),
])
def test_unusable_json_is_named(tmp_path: Path, text: str, options: dict[str, str],
                                message: str) -> None:
    path = write(tmp_path, "bad.json", text)
    with pytest.raises(SourceError, match=message.replace("(", r"\(").replace(")", r"\)")
                       if "|" not in message else message) as error:
        parse(path, "json", **options)
    assert "bad.json" in str(error.value)


def test_invalid_json_error_names_line_and_column(tmp_path: Path) -> None:
    text = '[\n  {"a": 1},\n  {"a": 2,, "b": 3}\n]\n'
    path = write(tmp_path, "broken.json", text)
    with pytest.raises(SourceError) as error:
        parse(path, "json")
    # Line 3, column 11 is the second comma: count it by hand in the text above.
    assert text.splitlines()[2][10] == ","
    assert str(error.value) == ("broken.json: not valid JSON: Expecting property name "
                                "enclosed in double quotes at line 3 column 11")


# --- NDJSON -----------------------------------------------------------------------------------

NDJSON = ('{"id": 1, "place": {"name": "Soulard"}}\n'
          '\n'
          '{"id": 2, "place": {"name": "The Hill"}, "n": 3.50}\n'
          '{"id": 3, "place": \n'
          '[1, 2]\n'
          '{"id": 4, "place": {"name": "Dutchtown"}}')


def test_ndjson_bad_line_is_rejected_and_the_rest_continue(tmp_path: Path) -> None:
    path = write(tmp_path, "events.ndjson", NDJSON)
    header, rows = parse(path, "ndjson")
    assert header == ["id", "place.name", "n"]
    good = [(r.line, r.cells) for r in rows if isinstance(r, RawRow)]
    assert good == [(1, ["1", "Soulard", ""]), (3, ["2", "The Hill", "3.50"]),
                    (6, ["4", "Dutchtown", ""])]
    bad = [r for r in rows if isinstance(r, BadRow)]
    assert [(b.line, b.text) for b in bad] == [(4, '{"id": 3, "place":'), (5, "[1, 2]")]
    assert bad[0].reason.startswith("line 4 is not valid JSON: Expecting value at column")
    assert bad[1].reason == "line 5 is a JSON array, not an object"


def test_ndjson_with_no_object_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "x.ndjson", "not json\n[1]\n")
    with pytest.raises(SourceError, match="no line is a JSON object"):
        parse(path, "ndjson")


# --- GeoJSON ----------------------------------------------------------------------------------

def feature_collection(features: list[dict[str, Any]], crs: str | None = None) -> str:
    document: dict[str, Any] = {"type": "FeatureCollection", "features": features}
    if crs:
        document["crs"] = {"type": "name", "properties": {"name": crs}}
    return json.dumps(document)


def point(x: float, y: float, **properties: Any) -> dict[str, Any]:
    return {"type": "Feature", "properties": properties,
            "geometry": {"type": "Point", "coordinates": [x, y]}}


def web_mercator(lon: float, lat: float) -> tuple[float, float]:
    """EPSG:3857 by its textbook formula, not by pyproj."""
    radius = 6378137.0
    return (math.radians(lon) * radius,
            math.log(math.tan(math.pi / 4 + math.radians(lat) / 2)) * radius)


def test_geojson_properties_and_geometry_of_a_real_file() -> None:
    header, rows = parse(ZCTA_GEOJSON, "geojson")
    raw = json.loads(ZCTA_GEOJSON.read_text())
    assert header == ["GEOID_ZCTA", "geometry"]
    assert len(rows) == len(raw["features"]) == 30
    for row, feature in zip(rows, raw["features"], strict=True):
        assert isinstance(row, RawRow)
        assert row.cells[0] == feature["properties"]["GEOID_ZCTA"]
        # WGS84 already: the geometry text is the file's own, numbers as written.
        assert json.loads(row.cells[1]) == feature["geometry"]
    first = ZCTA_GEOJSON.read_text().split('"geometry": ', 2)[1]
    assert rows[0].cells[1].replace(" ", "")[:60] == first.replace(" ", "")[:60]  # type: ignore[union-attr]


def test_web_mercator_is_converted_to_a_known_point(tmp_path: Path) -> None:
    x, y = web_mercator(*ARCH)
    path = write(tmp_path, "arch.geojson", feature_collection(
        [point(x, y, name="Gateway Arch")], "EPSG:3857"))
    header, rows = parse(path, "geojson")
    (record,) = as_dicts(header, rows)
    geometry = parse_geometry(record["geometry"])
    assert geometry == {"type": "Point", "coordinates": [round(ARCH[0], 7), round(ARCH[1], 7)]}


def test_utm_urn_crs_is_converted(tmp_path: Path) -> None:
    # UTM zone 15N coordinates of the Arch (made by pyproj's forward transform), written
    # with the OGC URN spelling of the CRS.
    east, north = Transformer.from_crs("EPSG:4326", "EPSG:26915", always_xy=True).transform(
        *ARCH)
    assert 740_000 < east < 750_000 and 4_270_000 < north < 4_290_000
    path = write(tmp_path, "arch.geojson", feature_collection(
        [point(east, north)], "urn:ogc:def:crs:EPSG::26915"))
    header, rows = parse(path, "geojson")
    lon, lat = parse_geometry(as_dicts(header, rows)[0]["geometry"])["coordinates"]
    assert abs(lon - ARCH[0]) < 1e-7 and abs(lat - ARCH[1]) < 1e-7


def test_catalog_crs_overrides_the_file(tmp_path: Path) -> None:
    x, y = web_mercator(*ARCH)
    path = write(tmp_path, "arch.geojson", feature_collection([point(x, y)]))
    with pytest.raises(SourceError, match="are not longitude/latitude and the file states no "
                                          "crs; set source.crs"):
        parse(path, "geojson")
    header, rows = parse(path, "geojson", crs="EPSG:3857")
    lon, lat = parse_geometry(as_dicts(header, rows)[0]["geometry"])["coordinates"]
    assert (lon, lat) == (round(ARCH[0], 7), round(ARCH[1], 7))


def test_unknown_crs_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "odd.geojson", feature_collection([point(1, 2)], "EPSG:999999"))
    with pytest.raises(SourceError, match="odd.geojson: the file's crs 'EPSG:999999' is not a "
                                          "coordinate reference system pyproj knows"):
        parse(path, "geojson")


def test_feature_ids_and_null_geometry(tmp_path: Path) -> None:
    features = [{"type": "Feature", "id": 7, "properties": {"name": "a"}, "geometry": None},
                {"type": "Feature", "properties": None,
                 "geometry": {"type": "Point", "coordinates": [-90.2, 38.6]}},
                {"type": "Polygon", "coordinates": []}]
    path = write(tmp_path, "f.geojson", feature_collection(features))
    header, rows = parse(path, "geojson")
    assert header == ["name", "geometry", "id"]
    assert [r.cells for r in rows if isinstance(r, RawRow)] == [
        ["a", "", "7"], ["", '{"type": "Point", "coordinates": [-90.2, 38.6]}', ""]]
    (bad,) = [r for r in rows if isinstance(r, BadRow)]
    assert bad.line == 3 and bad.reason == "feature 3 is not a GeoJSON Feature"


@pytest.mark.parametrize(("text", "reason"), [
    ('{"type": "Point", "coordinates": [-200, 38]}', "outside WGS84"),
    ('{"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1]]]}', "not closed"),
    ('{"type": "Circle", "coordinates": [0, 0]}', "not a GeoJSON geometry type"),
    ('{"type": "Point", "coordinates": [[0, 0]]}', "not [longitude, latitude]"),
    ("POINT (0 0)", "not JSON"),
])
def test_geometry_cells_that_are_not_wgs84_geojson_fail_with_reason(text: str,
                                                                   reason: str) -> None:
    with pytest.raises(ValueError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        parse_geometry(text)


def test_geometry_is_rounded_to_seven_decimals() -> None:
    geometry = parse_geometry('{"type": "LineString", "coordinates": '
                              '[[-90.298904631202291, 38.624587662755978, 140.5], [-90, 38]]}')
    assert geometry == {"type": "LineString",
                        "coordinates": [[-90.2989046, 38.6245877], [-90.0, 38.0]]}


# --- through the ingester: bad files leave what is stored intact -------------------------------

CATALOG = """
id = "{id}"
title = "test"
key = ["id"]
[source]
url = "file:"
format = "{fmt}"
file_pattern = "*"
{extra}
[[columns]]
name = "id"
type = "integer"
required = true
[[columns]]
name = "place_name"
[[columns]]
name = "geometry"
type = "geometry"
"""


def dataset(runtime: Runtime, tmp_path: Path, fmt: str, extra: str = "") -> Dataset:
    path = tmp_path / f"{fmt}.toml"
    path.write_text(CATALOG.format(id=f"t-{fmt}", fmt=fmt, extra=extra))
    loaded = load_dataset(path)
    runtime.catalog.datasets[loaded.id] = loaded
    return loaded


def run(runtime: Runtime, data: Dataset, source: Path) -> IngestSummary:
    producer = runtime.producer()
    try:
        return Ingester(runtime.settings, runtime.database, producer).ingest(data, str(source))
    finally:
        producer.close()


def test_ndjson_ingest_quarantines_the_bad_line(runtime: Runtime, tmp_path: Path) -> None:
    data = dataset(runtime, tmp_path, "ndjson")
    source = write(tmp_path, "events.ndjson", NDJSON)
    summary = run(runtime, data, source)
    project(runtime)
    assert summary.rows_read == 5 and summary.published == 3
    assert query(runtime, "SELECT id, place_name FROM ds_t_ndjson ORDER BY id") == [
        (1, "Soulard"), (2, "The Hill"), (4, "Dutchtown")]
    assert query(runtime, "SELECT line, raw_value FROM quarantine ORDER BY line") == [
        (4, '{"id": 3, "place":'), (5, "[1, 2]")]
    # _source is the line's values as the file spells them, keyed by dotted names.
    assert query(runtime, "SELECT _source::text FROM ds_t_ndjson WHERE id = 2") == [
        ('{"id":"2","place.name":"The Hill","n":"3.50"}',)]


def test_invalid_json_release_leaves_the_stored_records(runtime: Runtime,
                                                        tmp_path: Path) -> None:
    data = dataset(runtime, tmp_path, "json")
    good = write(tmp_path, "places.json", '[{"id": 1, "place": {"name": "Soulard"}}]')
    run(runtime, data, good)
    project(runtime)
    before = query(runtime, "SELECT id, place_name FROM ds_t_json")
    assert before == [(1, "Soulard")]

    broken = write(tmp_path, "places.json", '[{"id": 1, "place": {"name": "Soulard"}},\n'
                                            ' {"id": 2 "place": {}}]')
    with pytest.raises(SourceError, match=r"places.json: not valid JSON: Expecting ',' "
                                          r"delimiter at line 2 column 11"):
        run(runtime, data, broken)
    project(runtime)
    assert query(runtime, "SELECT id, place_name FROM ds_t_json") == before
    assert query(runtime, "SELECT count(*) FROM snapshots WHERE dataset_id = 't-json' "
                          "AND status = 'committed'") == [(1,)]


def test_geojson_unknown_crs_leaves_the_stored_records(runtime: Runtime,
                                                       tmp_path: Path) -> None:
    data = dataset(runtime, tmp_path, "geojson")
    x, y = web_mercator(*ARCH)
    write(tmp_path, "arch.geojson", feature_collection([point(x, y, id=1)], "EPSG:3857"))
    run(runtime, data, tmp_path / "arch.geojson")
    project(runtime)
    ((geometry,),) = query(runtime, "SELECT geometry FROM ds_t_geojson")
    assert geometry == {"type": "Point", "coordinates": [round(ARCH[0], 7), round(ARCH[1], 7)]}

    write(tmp_path, "arch.geojson", feature_collection([point(x, y, id=1)], "EPSG:0"))
    with pytest.raises(SourceError, match="'EPSG:0' is not a coordinate reference system"):
        run(runtime, data, tmp_path / "arch.geojson")
    project(runtime)
    assert query(runtime, "SELECT geometry FROM ds_t_geojson") == [(geometry,)]


def test_geometry_outside_wgs84_is_quarantined_and_the_row_kept(runtime: Runtime,
                                                               tmp_path: Path) -> None:
    data = dataset(runtime, tmp_path, "geojson")
    # The first feature is in range (so the file is not refused as projected); the second
    # is not, and only its geometry cell is quarantined.
    write(tmp_path, "p.geojson", feature_collection([point(-90.2, 38.6, id=1),
                                                     point(-90.2, 138.6, id=2)]))
    summary = run(runtime, data, tmp_path / "p.geojson")
    project(runtime)
    assert summary.published == 2
    assert query(runtime, "SELECT id, geometry IS NULL FROM ds_t_geojson ORDER BY id") == [
        (1, False), (2, True)]
    ((column, reason),) = query(runtime, "SELECT column_name, reason FROM quarantine")
    assert column == "geometry" and "outside WGS84" in reason


# --- properties -------------------------------------------------------------------------------

KEYS = st.text(st.characters(blacklist_characters=".", blacklist_categories=("Cs",)),
               min_size=1, max_size=8)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20),
                    st.floats(allow_nan=False, allow_infinity=False),
                    st.text(st.characters(blacklist_categories=("Cs",)), max_size=12))


def unflatten(cells: dict[str, str]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for name, text in cells.items():
        *parents, leaf = name.split(".")
        here = record
        for parent in parents:
            here = here.setdefault(parent, {})
        here[leaf] = text
    return record


def as_cells(value: Any) -> Any:
    """What each scalar becomes as a cell, computed with the json module."""
    if isinstance(value, dict):
        return {k: as_cells(v) if v != {} else "{}" for k, v in value.items()}
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value)


NESTED = st.recursive(SCALARS, lambda inner: st.dictionaries(KEYS, inner, max_size=4),
                      max_leaves=20)


@settings(deadline=None)
@given(st.dictionaries(KEYS, NESTED, max_size=5))
def test_flattening_round_trips(record: dict[str, Any]) -> None:
    """Flattened dotted names nest back into the record, every leaf a cell of its text."""
    text = json.dumps(record)
    cells = flatten(loads(text))
    assert unflatten(cells) == as_cells(json.loads(text))


JSON_VALUES = st.recursive(
    SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                     st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=30)


def rows_or_error(path: Path, fmt: str) -> list[RawRow | BadRow] | SourceError:
    try:
        tables: list[Table] = list(parser_for(fmt)(path, path.name,
                                                   Source(url="", format=fmt)))
        return [row for table in tables for row in table.rows]
    except SourceError as exc:
        assert path.name in str(exc)
        return exc


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=JSON_VALUES, fmt=st.sampled_from(["json", "ndjson", "geojson"]))
def test_any_json_value_gives_rows_or_a_clear_error(tmp_path: Path, value: Any,
                                                    fmt: str) -> None:
    path = tmp_path / f"any.{fmt}"
    path.write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")
    result = rows_or_error(path, fmt)
    if isinstance(result, list):
        # Each row of an array comes from one element; nothing is invented or lost.
        if fmt == "json" and isinstance(value, list):
            assert len(result) == len(value)
        for row in result:
            assert isinstance(row, RawRow | BadRow)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=200), fmt=st.sampled_from(["json", "ndjson", "geojson"]))
def test_arbitrary_bytes_never_crash(tmp_path: Path, data: bytes, fmt: str) -> None:
    path = tmp_path / f"junk.{fmt}"
    path.write_bytes(data)
    rows_or_error(path, fmt)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(depth=st.integers(1, 5000), fmt=st.sampled_from(["json", "ndjson"]))
def test_deep_nesting_never_crashes(tmp_path: Path, depth: int, fmt: str) -> None:
    path = tmp_path / f"deep.{fmt}"
    path.write_text('[{"a": ' * 1 + '{"b": ' * depth + "1" + "}" * depth + "}]"
                    if fmt == "json" else '{"b": ' * depth + "1" + "}" * depth)
    result = rows_or_error(path, fmt)
    if isinstance(result, list) and depth < 500:
        (row,) = result
        assert isinstance(row, RawRow) and row.cells == ["1"]


POSITIONS = st.lists(st.one_of(st.floats(allow_nan=False), st.integers(), st.booleans(),
                               st.none(), st.text(max_size=3)), max_size=3)
GEOMETRIES = st.one_of(
    st.none(), st.text(max_size=5),
    st.fixed_dictionaries({
        "type": st.sampled_from(["Point", "LineString", "Polygon", "MultiPolygon", "Odd"]),
        "coordinates": st.recursive(POSITIONS, lambda inner: st.lists(inner, max_size=3),
                                    max_leaves=12)}))
FEATURES = st.lists(st.fixed_dictionaries({
    "type": st.sampled_from(["Feature", "Feature", "Nope"]),
    "properties": st.one_of(st.none(), st.dictionaries(KEYS, NESTED, max_size=3)),
    "geometry": GEOMETRIES}), max_size=4)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(features=FEATURES, crs=st.sampled_from([None, "EPSG:3857", "EPSG:4326", "bogus"]))
def test_any_feature_collection_gives_rows_or_a_clear_error(
        tmp_path: Path, features: list[dict[str, Any]], crs: str | None) -> None:
    path = write(tmp_path, "any.geojson", feature_collection(features, crs))
    result = rows_or_error(path, "geojson")
    if isinstance(result, list):
        assert len(result) == len(features)
        for row in result:
            if isinstance(row, RawRow):
                geometry = row.cells[-1]
                # A geometry cell is JSON text the geometry type accepts or quarantines.
                if geometry:
                    try:
                        parse_geometry(geometry)
                    except ValueError:
                        pass


def test_records_of_a_real_geojson_file_carry_their_lines() -> None:
    _, rows = parse(ZCTA_GEOJSON, "geojson")
    starts = [n for n, text in enumerate(ZCTA_GEOJSON.read_text().splitlines(), 1)
              if text.startswith('{ "type": "Feature"')]
    assert [r.line for r in rows] == starts and len(starts) == 30


PRETTY = json.dumps({"type": "FeatureCollection", "features": [
    point(-90.2, 38.6, name="a"), point(-90.3, 38.7, name="b")]}, indent=1)


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(at=st.integers(0, len(PRETTY) - 1), insert=st.sampled_from(["", ",", "]", "}", ":",
                                                                     '"', "x", "1", " "]),
       fmt=st.sampled_from(["json", "geojson"]))
def test_broken_json_is_located_where_the_json_module_locates_it(
        tmp_path: Path, at: int, insert: str, fmt: str) -> None:
    """Delete or replace one character of a valid document: if the json module rejects
    the text, the error names the same line and column; if it accepts it, so do we."""
    text = PRETTY[:at] + insert + PRETTY[at + 1:]
    path = write(tmp_path, "edit.json", text)
    try:
        json.loads(text)
    except json.JSONDecodeError as expected:
        with pytest.raises(SourceError) as error:
            parse(path, fmt)
        assert (f"not valid JSON: {expected.msg} at line {expected.lineno} column "
                f"{expected.colno}") in str(error.value)
        return
    result = rows_or_error(path, fmt)
    assert isinstance(result, list | SourceError)


def test_legacy_epsg_crs_member_and_link_crs(tmp_path: Path) -> None:
    x, y = web_mercator(*ARCH)
    document = json.loads(feature_collection([point(x, y)]))
    document["crs"] = {"type": "EPSG", "properties": {"code": 3857}}
    path = write(tmp_path, "epsg.geojson", json.dumps(document))
    header, rows = parse(path, "geojson")
    lon, lat = parse_geometry(as_dicts(header, rows)[0]["geometry"])["coordinates"]
    assert (lon, lat) == (round(ARCH[0], 7), round(ARCH[1], 7))
    document["crs"] = {"type": "link", "properties": {"href": "http://example.org/crs"}}
    path.write_text(json.dumps(document))
    with pytest.raises(SourceError, match="is not a named CRS.*set source.crs"):
        parse(path, "geojson")


@pytest.mark.parametrize(("source", "message"), [
    ('records_path = "data..items"', "source.records_path 'data..items' must be dotted"),
    ('crs = "EPSG:0"', "source.crs 'EPSG:0' is not a coordinate reference system"),
    ('[[source.joins]]\nfile = "z.csv"\nformat = "xml"\non = "id"',
     "source.joins #1: format 'xml' is not one of"),
    ('[[source.joins]]\nfile = "z.csv"\nformat = "csv"', "source.joins #1: 'on' is required"),
    ('[[source.joins]]\nfile = "z.csv"\nformat = "csv"\non = "id"\nhow = "left"',
     r"source.joins #1: unknown keys \['how'\]"),
])
def test_bad_json_and_join_options_are_catalog_errors(tmp_path: Path, source: str,
                                                      message: str) -> None:
    from stldata.catalog import CatalogError

    path = tmp_path / "bad.toml"
    path.write_text(CATALOG.format(id="t-bad", fmt="json", extra=source))
    with pytest.raises(CatalogError, match=message):
        load_dataset(path)


def test_windows_1252_json_behind_a_bom_is_read(tmp_path: Path) -> None:
    path = tmp_path / "cafe.json"
    data = b"\xef\xbb\xbf" + '[{"name": "Café Ventana"}]'.encode("cp1252")
    path.write_bytes(data)
    assert parse(path, "json")[1][0].cells == ["Café Ventana"]  # type: ignore[union-attr]
    at = data.index(b"\xe9")  # the é, counted from the first byte of the file
    with pytest.raises(SourceError, match=f"cafe.json: bytes {at}-{at} are not valid utf-8"):
        parse(path, "json", encoding="utf-8")
