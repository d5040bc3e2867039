"""The read API against the loaded bundled datasets; expected values are computed from
the raw files or by plain Python over all records, never by the same SQL path."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from stldata.catalog import Catalog

from conftest import CRIME_SAMPLES, ROOT, pages, read_raw_csv

RECORDS = "/api/v1/datasets/slmpd-crime/records"



@pytest.fixture(scope="module")
def june(client: Any) -> list[dict[str, Any]]:
    """June 2018 records, and the raw rows they came from."""
    return pages(client, RECORDS + "?coded_month=2018-06&limit=1000")


def raw_june() -> list[dict[str, str]]:
    header, rows = read_raw_csv(CRIME_SAMPLES / "june2018.csv")
    return [dict(zip(header, r, strict=True)) for r in rows]


def test_equality_filters_match_the_raw_file(client: Any) -> None:
    raw = raw_june()
    for district in ("1", "4", "0"):
        expected = [r for r in raw if r["District"].strip() == district]
        items = pages(client, f"{RECORDS}?coded_month=2018-06&district={district}&limit=1000")
        assert len(items) == len(expected)
        assert sum(i["count"] for i in items) == sum(int(r["Count"]) for r in expected)


@pytest.mark.parametrize(
    ("op", "test"),
    [("gt", lambda v, x: v > x), ("gte", lambda v, x: v >= x), ("lt", lambda v, x: v < x),
     ("lte", lambda v, x: v <= x), ("ne", lambda v, x: v != x)],
)
def test_comparison_operators_on_integers(client: Any, june: list[dict[str, Any]], op: str,
                                          test: Any) -> None:
    raw = raw_june()
    items = pages(client, f"{RECORDS}?coded_month=2018-06&neighborhood__{op}=40&limit=1000")
    expected = [r for r in raw if test(int(r["Neighborhood"]), 40)]
    assert len(items) == len(expected)


def test_in_operator_and_text_values(client: Any) -> None:
    raw = raw_june()
    codes = ["31111", "65701"]
    items = pages(client, f"{RECORDS}?coded_month=2018-06&crime__in={','.join(codes)}"
                          "&limit=1000")
    assert len(items) == sum(1 for r in raw if r["Crime"].strip() in codes)
    assert {i["crime"] for i in items} == set(codes)


def test_datetime_range_in_local_time(client: Any) -> None:
    raw = raw_june()
    items = pages(client, f"{RECORDS}?coded_month=2018-06&date_occur__gte=2018-06-10"
                          "&date_occur__lt=2018-06-11T00:00:00&limit=1000")
    expected = [r for r in raw
                if datetime.strptime(r["DateOccur"], "%m/%d/%Y %H:%M").date().isoformat()
                == "2018-06-10"]
    assert len(items) == len(expected) > 0
    assert all(i["date_occur"].startswith("2018-06-10T") for i in items)
    assert all(i["date_occur"].endswith("-05:00") for i in items)


def test_ordering_and_keyset_pagination(client: Any, june: list[dict[str, Any]]) -> None:
    walked = pages(client, RECORDS + "?coded_month=2018-06&order=-date_occur,district&limit=333")
    assert len(walked) == len(june)
    assert len({i["_key"] for i in walked}) == len(june)

    # Expected order computed in Python: date descending with nulls last, then district,
    # then key.
    def sort_key(item: dict[str, Any]) -> tuple[Any, ...]:
        moment = item["date_occur"]
        stamp = -datetime.fromisoformat(moment).timestamp() if moment else float("inf")
        return (moment is None, stamp, item["district"], item["_key"])
    assert [i["_key"] for i in walked] == [i["_key"] for i in sorted(june, key=sort_key)]


def test_pagination_over_nullable_columns(client: Any) -> None:
    walked = pages(client, RECORDS + "?coded_month=2018-06&order=location_name&limit=250")
    names = [i["location_name"] for i in walked]
    present = [n for n in names if n is not None]
    assert present == sorted(present)
    assert names[len(present):] == [None] * (len(names) - len(present))
    assert len({i["_key"] for i in walked}) == len(walked) == 4282


def test_default_and_maximum_limits(client: Any) -> None:
    assert len(client.get(RECORDS).get_json()["items"]) == 100
    assert len(client.get(RECORDS + "?limit=1000").get_json()["items"]) == 1000
    assert client.get(RECORDS + "?limit=1001").status_code == 400


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("nosuch=1", "nosuch"),
        ("district__like=1", "district__like"),
        ("district=abc", "district"),
        ("date_occur__gt=yesterday", "date_occur__gt"),
        ("count__in=1,x", "count__in"),
        ("order=nosuch", "order"),
        ("order=district,-district", "order"),
        ("limit=0", "limit"),
        ("limit=abc", "limit"),
        ("cursor=not-a-cursor", "cursor"),
        ("district=99999999999999999999999", "district"),
        ("x_coord=nan", "x_coord"),
        ("flag_crime=maybe", "flag_crime"),
    ],
)
def test_bad_parameters_are_400_problems_naming_the_parameter(client: Any, query: str,
                                                              param: str) -> None:
    response = client.get(f"{RECORDS}?{query}")
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["status"] == 400
    assert [p["name"] for p in body["invalid_params"]] == [param]
    assert param.split("__")[0] in body["detail"]


def test_injection_attempts_are_plain_values(client: Any) -> None:
    for value in ("1' OR '1'='1", "'; DROP TABLE ds_slmpd_crime; --", "\u2028*/--"):
        response = client.get(RECORDS, query_string={"complaint": value})
        assert response.status_code == 200
        assert response.get_json()["items"] == []
    nul = client.get(RECORDS, query_string={"complaint": "a\u0000b"})
    assert nul.status_code == 400 and "NUL" in nul.get_json()["detail"]
    assert client.get(RECORDS + "?limit=1").status_code == 200


def test_record_by_key_and_unknown_things(client: Any, june: list[dict[str, Any]]) -> None:
    item = june[0]
    body = client.get(f"{RECORDS}/{item['_key']}").get_json()
    assert body["record"]["_key"] == item["_key"]
    assert body["record"]["description"] == item["description"]
    assert client.get(f"{RECORDS}/no-such-key").status_code == 404
    missing = client.get("/api/v1/datasets/nope/records")
    assert missing.status_code == 404 and missing.mimetype == "application/problem+json"


def test_datasets_listing_landing_page_docs_and_health(client: Any) -> None:
    listing = client.get("/api/v1/datasets").get_json()["datasets"]
    assert {d["id"] for d in listing} == {d.id for d in Catalog.load(ROOT / "catalog")}
    # The shared fixture loads these two; the other catalog datasets are listed empty.
    loaded = [d for d in listing if d["id"] in ("slmpd-crime", "csb-311")]
    assert len(loaded) == 2
    assert all(d["row_count"] > 0 and d["latest_snapshot"]["id"] for d in loaded)

    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    assert "/api/v1/datasets/{dataset_id}/records" in spec["paths"]
    params = spec["paths"]["/api/v1/datasets/{dataset_id}/records"]["get"]["parameters"]
    assert {"limit", "order", "cursor"} <= {p["name"] for p in params}

    assert b"swagger" in client.get("/docs").data.lower()
    landing = client.get("/").data.decode()
    assert "/api/v1/datasets/slmpd-crime/records" in landing and "/docs" in landing

    health = client.get("/health").get_json()
    assert health == {"status": "ok", "database": "ok", "log": "ok",
                      "log_backend": "embedded", "log_lag": 0}


def test_csb_statuses_and_local_times(client: Any) -> None:
    url = "/api/v1/datasets/csb-311/records?request_id=1049266"
    record = client.get(url).get_json()["items"][0]
    assert record["status"] == "in_progress" and record["status_raw"] == "Disptch"
    # The spurious Z is ignored: 05:29 is local time.
    assert record["opened_at"] == "2018-01-01T05:29:06-06:00"
    assert record["closed_at"] is None and record["caller_type"] == "WEB"
    assert record["ward"] == 11 and record["neighborhood"] == 1
    closed = pages(client, "/api/v1/datasets/csb-311/records?status=cancelled&limit=1000")
    assert {r["status_raw"] for r in closed} == {"CANCEL", "Cancel"}


def test_boolean_filters(client: Any, june: list[dict[str, Any]]) -> None:
    raw = raw_june()
    flagged = pages(client, f"{RECORDS}?coded_month=2018-06&flag_crime=true&limit=1000")
    assert len(flagged) == sum(1 for r in raw if r["FlagCrime"].strip() == "Y")
    not_flagged = pages(client, f"{RECORDS}?coded_month=2018-06&flag_crime__ne=true"
                                "&limit=1000")
    assert all(i["flag_crime"] is False for i in not_flagged)
    response = client.get(f"{RECORDS}?flag_crime__gt=true")
    assert response.status_code == 400
    assert response.get_json()["invalid_params"][0]["name"] == "flag_crime__gt"


@pytest.mark.parametrize("query", ["district__=5", "order=--date_occur"])
def test_malformed_parameter_names_are_400(client: Any, query: str) -> None:
    assert client.get(f"{RECORDS}?{query}").status_code == 400
