"""SoQL: the parser on its own, then /resource queries checked against the raw CSV files.

Expected results come from data/slmpd-crime/*.csv read with the csv module (see
test_aggregate.raw_crimes), never from the API or SQL.
"""

from __future__ import annotations

import csv
import io
from collections import Counter, defaultdict
from decimal import Decimal
from typing import Any

import pytest

from stldata.api.soql import (
    Between,
    Binary,
    Call,
    Column,
    InList,
    IsNull,
    Like,
    Literal,
    SoqlError,
    Unary,
    parse_expression,
    parse_order,
    parse_select,
)
from test_aggregate import raw_crimes

URL = "/resource/slmpd-crime.json"


@pytest.fixture(scope="module")
def crimes() -> list[dict[str, Any]]:
    return raw_crimes()


def rows(client: Any, url: str = URL, **params: str) -> Any:
    response = client.get(url, query_string=params)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def total(client: Any, **params: str) -> int:
    body = rows(client, **{"$select": "count(*)", **params})
    assert len(body) == 1
    return int(body[0]["count"])


# --- Parser ---------------------------------------------------------------------------

def test_precedence_and_forms() -> None:
    expr = parse_expression("a = 1 OR b = 2 AND NOT c IS NULL")
    assert expr == Binary("or", Binary("=", Column("a"), Literal(1)),
                          Binary("and", Binary("=", Column("b"), Literal(2)),
                                 Unary("not", IsNull(Column("c"), False))))
    assert parse_expression("1 + 2 * 3 - 4") == Binary(
        "-", Binary("+", Literal(1), Binary("*", Literal(2), Literal(3))), Literal(4))
    assert parse_expression("x NOT IN ('a', 'b')") == InList(
        Column("x"), (Literal("a"), Literal("b")), True)
    assert parse_expression("x between 1 and 2 and y not like 'a%'") == Binary(
        "and", Between(Column("x"), Literal(1), Literal(2), False),
        Like(Column("y"), Literal("a%"), True))
    assert parse_expression("count(*) <> -2.5") == Binary(
        "!=", Call("count", (), True), Literal(Decimal("-2.5")))
    assert parse_expression("'it''s' || `odd name`") == Binary(
        "||", Literal("it's"), Column("odd name"))
    assert parse_expression("TRUE and null is null") == Binary(
        "and", Literal(True), IsNull(Literal(None), False))


def test_select_and_order_lists() -> None:
    items = parse_select("*, upper(beat) AS b, count(*)")
    assert [(i.expr, i.alias) for i in items] == [
        (None, None), (Call("upper", (Column("beat"),)), "b"), (Call("count", (), True), None)]
    order = parse_order("b DESC NULLS FIRST, beat")
    assert [(o.expr, o.descending, o.nulls_first) for o in order] == [
        (Column("b"), True, True), (Column("beat"), False, None)]


@pytest.mark.parametrize(("text", "position", "words"), [
    ("district = ", 12, "ends too early"),
    ("a = 'open", 5, "string is not closed"),
    ("a = 1; DROP TABLE x", 6, "unexpected character ';'"),
    ("(a = 1", 7, "to close the '(' at position 1"),
    ("a = 1)", 6, "unexpected ')'"),
    ("a IS 5", 6, "expected NULL after IS"),
    ("a BETWEEN 1 OR 2", 13, "expected AND"),
    ("1.2.3 = a", 1, "is not a number"),
    ("9" * 80 + " = a", 1, "more than 60 digits"),
    ("a = 1e999999", 5, "out of range"),
    ("(" * 100 + "1" + ")" * 100, 65, "nested more than 64 levels"),
    ("a = \u2019b\u2019", 5, "unexpected character"),
    ("AND", 1, "unexpected keyword AND"),
    ("`open", 1, "quoted column name is not closed"),
    ("12abc", 3, "after a number"),
])
def test_parse_errors_give_positions(text: str, position: int, words: str) -> None:
    with pytest.raises(SoqlError) as caught:
        parse_expression(text)
    assert caught.value.position == position
    assert words in str(caught.value)


# --- Queries against the raw files ----------------------------------------------------

def test_group_order_limit(client: Any, crimes: list[dict[str, Any]]) -> None:
    body = rows(client, **{"$select": "neighborhood, count(*) AS n", "$group": "neighborhood",
                           "$order": "n DESC, neighborhood", "$limit": "5"})
    counts = Counter(r["neighborhood"] for r in crimes)
    expected = sorted(counts.items(), key=lambda t: (-t[1], t[0] is None, t[0] or 0))[:5]
    assert [(r["neighborhood"], r["n"]) for r in body] == expected


def test_where_with_typed_string_literals(client: Any, crimes: list[dict[str, Any]]) -> None:
    may = total(client, **{"$where": "date_occur >= '2017-05-01' AND date_occur < "
                                     "'2017-06-01T00:00:00'"})
    assert may == sum(r["month"] == "2017-05" for r in crimes)
    assert total(client, **{"$where": "district = 5 AND count < 0"}) == sum(
        r["district"] == 5 and r["count"] < 0 for r in crimes)
    assert total(client, district="5") == sum(r["district"] == 5 for r in crimes)


def test_monthly_sums_with_date_trunc(client: Any, crimes: list[dict[str, Any]]) -> None:
    body = rows(client, **{"$select": "date_trunc_ym(date_occur) AS month, sum(count) AS total",
                           "$group": "month", "$order": "month", "$limit": "5000"})
    sums: dict[str | None, int] = defaultdict(int)
    for r in crimes:
        sums[r["month"]] += r["count"]
    got = {(r["month"][:7] if r["month"] else None): r["total"] for r in body}
    assert got == dict(sums)
    months = [r["month"] for r in body]
    assert months[-1] is None and months[:-1] == sorted(months[:-1])  # nulls last


def test_text_functions_and_operators(client: Any, crimes: list[dict[str, Any]]) -> None:
    codes = [r["crime"] for r in crimes]
    assert total(client, **{"$where": "starts_with(crime, '17')"}) == sum(
        c.startswith("17") for c in codes)
    assert total(client, **{"$where": "crime LIKE '%11'"}) == sum(c.endswith("11")
                                                                  for c in codes)
    assert total(client, **{"$where": "contains(crime, '38')"}) == sum("38" in c
                                                                       for c in codes)
    assert total(client, **{"$where": "crime IN ('38111', '10000')"}) == sum(
        c in ("38111", "10000") for c in codes)
    hoods = [r["neighborhood"] for r in crimes]
    assert total(client, **{"$where": "neighborhood BETWEEN 10 AND 20"}) == sum(
        h is not None and 10 <= h <= 20 for h in hoods)
    assert total(client, **{"$where": "neighborhood IS NULL"}) == hoods.count(None)
    assert total(client, **{"$where": "NOT (neighborhood * 2 + 1 > 21) OR neighborhood "
                                      "IS NULL"}) == sum(h is None or h * 2 + 1 <= 21
                                                         for h in hoods)
    body = rows(client, **{"$select": "upper(crime) AS c, crime || '-x' AS tagged, "
                                      "neighborhood / 4 AS quarter",
                           "$where": "neighborhood = 10", "$limit": "1"})
    assert body[0]["tagged"] == body[0]["c"] + "-x" and body[0]["quarter"] == 2.5


def test_having_and_aggregates(client: Any, crimes: list[dict[str, Any]]) -> None:
    body = rows(client, **{"$select": "district, count(*) AS n, min(crime), max(crime)",
                           "$group": "district", "$having": "n > 1000",
                           "$order": "district"})
    by_district: dict[int | None, list[str]] = defaultdict(list)
    for r in crimes:
        by_district[r["district"]].append(r["crime"])
    expected = [(d, len(c), min(c), max(c)) for d, c in by_district.items() if len(c) > 1000]
    expected.sort(key=lambda t: (t[0] is None, t[0] or 0))
    assert [(r["district"], r["n"], r["min_crime"], r["max_crime"]) for r in body] == expected


def test_offset_pages(client: Any) -> None:
    twenty = rows(client, **{"$select": "crime, complaint", "$limit": "20",
                             "$order": "crime"})
    second = rows(client, **{"$select": "crime, complaint", "$limit": "10", "$offset": "10",
                             "$order": "crime"})
    assert second == twenty[10:]
    assert len(rows(client)) == 1000  # Socrata's default limit


def test_csv_output(client: Any, crimes: list[dict[str, Any]]) -> None:
    response = client.get("/resource/slmpd-crime.csv", query_string={
        "$select": "neighborhood, count(*) AS n", "$group": "neighborhood",
        "$order": "neighborhood"})
    assert response.status_code == 200 and response.mimetype == "text/csv"
    table = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert table[0] == ["neighborhood", "n"]
    counts = Counter(r["neighborhood"] for r in crimes)
    assert {(int(h) if h else None): int(n) for h, n in table[1:]} == dict(counts)


def test_geojson_and_within_box(client: Any) -> None:
    box = "within_box(location, 38.65, -90.25, 38.60, -90.20)"
    inside = client.get("/resource/slmpd-crime.geojson",
                        query_string={"$where": box, "$limit": "50000"})
    assert inside.status_code == 200 and inside.mimetype == "application/geo+json"
    features = inside.get_json()["features"]
    assert features
    for f in features:
        lon, lat = f["geometry"]["coordinates"]
        assert 38.60 <= lat <= 38.65 and -90.25 <= lon <= -90.20
        assert f["properties"]["latitude"] == lat
    outside = total(client, **{"$where": f"NOT {box} AND latitude IS NOT NULL"})
    located = total(client, **{"$where": "latitude IS NOT NULL"})
    assert len(features) + outside == located
    no_coordinates = client.get("/resource/slmpd-neighborhood-districts.geojson")
    assert no_coordinates.status_code == 400


@pytest.mark.parametrize(("params", "param", "words"), [
    ({"$select": "nope"}, "$select", "unknown column 'nope'"),
    ({"$select": "median(count)"}, "$select", "unsupported function 'median'"),
    ({"$select": "pg_sleep(10)"}, "$select", "unsupported function 'pg_sleep'"),
    ({"$where": "count(*) > 1"}, "$where", "not allowed in $where"),
    ({"$select": "neighborhood, count(*)"}, "$select", "must be in $group"),
    ({"$select": "sum(count(*))"}, "$select", "inside another aggregate"),
    ({"$where": "district = 'abc'"}, "$where", "not a valid integer"),
    ({"$where": "district"}, "$where", "must be true or false"),
    ({"$where": "crime = 5"}, "$where", "cannot compare text with integer"),
    ({"$where": "crime + 1 = 2"}, "$where", "needs integer or number"),
    ({"$where": "district = 5 AND"}, "$where", "ends too early"),
    ({"$order": "nope DESC"}, "$order", "unknown column"),
    ({"$limit": "100000"}, "$limit", "from 0 to 50000"),
    ({"$offset": "-1"}, "$offset", "from 0 to"),
    ({"$foo": "1"}, "$foo", "unknown SoQL parameter"),
    ({"nope": "1"}, "nope", "unknown column"),
    ({"district": "five"}, "district", "not a valid integer"),
    ({"$select": "count(*) AS n, count(*) AS n"}, "$select", "used twice"),
    ({"$select": "date_extract_hh(coded_month)"}, "$select", "needs a datetime"),
])
def test_bad_queries_are_400_naming_the_parameter(client: Any, params: dict[str, str],
                                                  param: str, words: str) -> None:
    response = client.get(URL, query_string=params)
    assert response.status_code == 400, response.get_data(as_text=True)
    body = response.get_json()
    assert body["invalid_params"][0]["name"] == param
    assert words in body["detail"]


def test_error_names_the_position(client: Any) -> None:
    body = client.get(URL, query_string={"$where": "district = 5 AND fooz(1)"}).get_json()
    assert body["position"] == 18 and "fooz" in body["detail"]


@pytest.mark.parametrize("where", [
    "1=1; DROP TABLE ds_slmpd_crime",
    "district = 5 -- AND district = 6",
    "description = 'x'' OR ''1''=''1'",
    "description = 'x' OR 1=1 --'",
    "district = 99999999999999999999999",
    "district * 9223372036854775807 > 0",
    "district / 0 = 1",
    "district % 0 = 1",
    "description = 'caf\u00e9 \u2615 \U0001f600'",
    "description = '\\'; SELECT 1'",
    "(" * 60 + "district = 5" + ")" * 60,
    "(" * 300 + "1" + ")" * 300,
    "NOT " * 100 + "true",
    "`ds_slmpd_crime` = 1",
    "_key = 'x'",
    ":id = 1",
    "description LIKE '%' || chr(0) || '%'",
    "district IN (" + ",".join(["1"] * 1001) + ")",
    "date_occur > '2017-13-45'",
    "date_occur > 'now'",
    "latitude = 1e300 * 1e300",
    "x" * 20000,
    ",".join(["1"] * 5000),
])
def test_hostile_queries_are_400_or_answered_never_500(client: Any, where: str) -> None:
    before = total(client)
    response = client.get(URL, query_string={"$where": where, "$limit": "5"})
    assert response.status_code in (200, 400), (where, response.get_data(as_text=True))
    if response.status_code == 400:
        assert response.get_json()["invalid_params"][0]["name"] == "$where"
    assert total(client) == before  # nothing was dropped or changed


def test_quotes_inside_strings_are_values(client: Any) -> None:
    # The whole text, quotes included, is compared as one bound value: no rows, no error.
    assert total(client, **{"$where": "description = 'x'' OR ''1''=''1'"}) == 0
    assert total(client, **{"$select": "count(*)", "description": "x' OR '1'='1"}) == 0


def test_documented_in_the_openapi_spec(client: Any) -> None:
    spec = client.get("/openapi.json").get_json()
    path = next(p for p in spec["paths"] if p.startswith("/resource/"))
    names = {p["name"] for p in spec["paths"][path]["get"]["parameters"]}
    assert {"$select", "$where", "$order", "$group", "$having", "$limit", "$offset",
            "$q"} <= names


def test_readme_examples_answer(client: Any) -> None:
    """Every /resource and /aggregate example in the README runs (csb-311 and slmpd-crime
    are loaded)."""
    from urllib.parse import unquote

    from conftest import ROOT

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    urls = [line.split("'")[1].removeprefix("http://127.0.0.1:5001")
            for line in readme.splitlines()
            if line.startswith("curl 'http://127.0.0.1:5001/")
            and ("/resource/" in line or "/aggregate?" in line)]
    assert len(urls) >= 7
    for url in urls:
        if "SID" in url:  # a placeholder for one of the dataset's snapshot ids
            dataset = url.split("/")[2].split(".")[0]
            snapshots = client.get(f"/api/v1/datasets/{dataset}/snapshots").get_json()
            url = url.replace("SID", str(snapshots["items"][0]["id"]))
        path, _, query = url.partition("?")
        params = [tuple(p.split("=", 1)) for p in query.split("&")]
        response = client.get(path, query_string=[(k, unquote(v)) for k, v in params])
        assert response.status_code == 200, (url, response.get_data(as_text=True))
        assert response.get_data()


@pytest.mark.parametrize("params", [
    {"$order": "1"}, {"$select": "count(*)", "$group": "1"},
    {"$select": "district, count(*)", "$group": "district", "$order": "count(*) DESC"},
    {"$where": "true"}, {"$where": "'x'"}, {"$where": "null"}, {"$where": "null = null"},
    {"$select": "sum(1)"}, {"$select": "avg(district) + 1"}, {"$select": "min(latitude)"},
    {"$select": "upper(null)"}, {"$select": "date_trunc_ym('2017-05-01')"},
    {"$where": "district IN (null)"}, {"$select": "lower(crime) AS `x y`"},
    {"$order": "upper(crime) DESC NULLS FIRST"}, {"$select": "count(*) AS n", "$order": "n"},
    {"$where": "district BETWEEN 'a' AND 5"}, {"$select": "contains(crime, crime)"},
    {"$where": "starts_with(crime, '%')"}, {"$where": "crime LIKE null"},
    {"$select": "*", "$order": "date_occur DESC"}, {"$select": "neighborhood || district"},
    {"$where": "within_box(location, 'a', 1, 2, 3)"}, {"$select": "-crime"},
    {"$select": "1 / 0"}, {"$select": "9223372036854775807 + district"}, {"$limit": "0"},
    {"$select": "date_extract_dow(date_occur) AS d, count(*)", "$group": "d"},
    {"$select": "date_trunc_y(coded_month), max(date_occur)",
     "$group": "date_trunc_y(coded_month)"},
    {"$select": "count(*)", "$having": "count(*) > 5"},
    {"$select": "district", "$group": "district", "$having": "district > 3"},
    {"$select": "district + 1 AS d1, count(*)", "$group": "district + 1"},
    {"$select": "*", "$group": "district"}, {"$select": "count(*)", "$where": "x("},
    {"$select": ",".join(["1"] * 5000)}, {"$select": "*,*"},
    {"$select": "count(*)", "$group": ",".join(["1"] * 5000)},
    {"$order": ",".join(["district"] * 300)}, {"$q": "burglary"},
    {"$q": "'; DROP TABLE ds_slmpd_crime; --"}, {"$q": ""},
    {"$$app_token": "abc", "$limit": "1"}, {"$select": "`count`, count(`count`)",
                                            "$group": "`count`"},
])
def test_odd_queries_are_400_or_answered_never_500(client: Any, params: dict[str, str]
                                                   ) -> None:
    response = client.get(URL, query_string=params)
    assert response.status_code in (200, 400), (params, response.get_data(as_text=True))
    if response.status_code == 400:
        assert response.get_json()["invalid_params"][0]["name"] in params
