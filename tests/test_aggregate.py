"""GET /api/v1/datasets/{id}/aggregate, checked against the raw bundled CSV files.

Expected values are computed here from data/slmpd-crime/*.csv with the csv module,
independently of the ingester and of SQL.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import pytest

from conftest import CRIME_SAMPLES, read_raw_csv

BASE = "/api/v1/datasets/slmpd-crime/aggregate"


def _cell(header: list[str], row: list[str], *names: str) -> str:
    for i, h in enumerate(header):
        if h.replace(" ", "").replace("-", "").lower().lstrip("\ufeffï»¿") in names:
            return row[i].strip()
    raise KeyError(names)


def _int(text: str) -> int | None:
    return int(text) if text.strip() else None


def _month(text: str) -> str | None:
    """'5/3/2017 14:05' or '05/03/2017 14:05' -> '2017-05'; the 1900 placeholder -> None."""
    if not text:
        return None
    month, _, rest = text.partition("/")
    year = rest.split("/")[1][:4]
    return None if year == "1900" else f"{year}-{int(month):02d}"


def raw_crimes() -> list[dict[str, Any]]:
    rows = []
    for path in sorted(CRIME_SAMPLES.iterdir()):
        header, body = read_raw_csv(path)
        for r in body:
            rows.append({
                "neighborhood": _int(_cell(header, r, "neighborhood")),
                "district": _int(_cell(header, r, "district")),
                "count": int(_cell(header, r, "count")),
                "crime": _cell(header, r, "crime"),
                "month": _month(_cell(header, r, "dateoccur", "dateoccured")),
            })
    return rows


@pytest.fixture(scope="module")
def crimes() -> list[dict[str, Any]]:
    return raw_crimes()


def get(client: Any, **params: str) -> dict[str, Any]:
    response = client.get(BASE, query_string=params)
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def test_count_and_sum_by_neighborhood(client: Any, crimes: list[dict[str, Any]]) -> None:
    body = get(client, group_by="neighborhood", metrics="count,sum(count)", limit="10000")
    counts: Counter[int | None] = Counter(r["neighborhood"] for r in crimes)
    sums: dict[int | None, int] = defaultdict(int)
    for r in crimes:
        sums[r["neighborhood"]] += r["count"]
    got = {i["neighborhood"]: (i["count"], i["sum_count"]) for i in body["items"]}
    assert got == {n: (counts[n], sums[n]) for n in counts}
    assert body["group_by"] == ["neighborhood"] and body["metrics"] == ["count", "sum_count"]
    assert not body["truncated"]
    # Rolled up from the declared aggregate (neighborhood x month), not grouped again.
    assert body["source"] == "aggregate:by_neighborhood_month"


def test_month_bucket_with_a_records_filter(client: Any,
                                            crimes: list[dict[str, Any]]) -> None:
    body = get(client, group_by="month(date_occur)", metrics="count", district="5",
               limit="10000")
    expected = Counter(r["month"] for r in crimes if r["district"] == 5)
    assert {i["month_date_occur"]: i["count"] for i in body["items"]} == expected
    # district is not a group of the declared aggregate: answered from the records.
    assert body["source"] == "records"
    months = [i["month_date_occur"] for i in body["items"]]
    assert months[:-1] == sorted(m for m in months if m is not None)[: len(months) - 1]


def test_declared_aggregate_and_records_agree(client: Any,
                                             crimes: list[dict[str, Any]]) -> None:
    declared = get(client, group_by="neighborhood,month(date_occur)",
                   metrics="count,sum(count),avg(count)", limit="10000")
    assert declared["source"] == "aggregate:by_neighborhood_month"
    # count_distinct is not declared: the same groups computed from the records.
    grouped = get(client, group_by="neighborhood,month(date_occur)",
                  metrics="count,sum(count),avg(count),count_distinct(crime)", limit="10000")
    assert grouped["source"] == "records"
    assert [{k: v for k, v in i.items() if k != "count_distinct_crime"}
            for i in grouped["items"]] == declared["items"]

    expected: dict[tuple[Any, Any], list[int]] = defaultdict(list)
    for r in crimes:
        expected[(r["neighborhood"], r["month"])].append(r["count"])
    got = {(i["neighborhood"], i["month_date_occur"]): i for i in declared["items"]}
    assert set(got) == set(expected)
    for key, values in expected.items():
        assert got[key]["count"] == len(values)
        assert got[key]["sum_count"] == sum(values)
        assert got[key]["avg_count"] == pytest.approx(sum(values) / len(values))


def test_having_order_and_limit(client: Any, crimes: list[dict[str, Any]]) -> None:
    body = get(client, group_by="neighborhood", having="count__gt:300", order="-count",
               limit="5")
    counts = Counter(r["neighborhood"] for r in crimes)
    big = sorted(((c, n) for n, c in counts.items() if c > 300 and n is not None),
                 key=lambda t: (-t[0], t[1]))
    assert [(i["count"], i["neighborhood"]) for i in body["items"]] == big[:5]
    assert body["truncated"] == (len(big) > 5)


def test_distinct_counts_and_extremes_per_district(client: Any,
                                                  crimes: list[dict[str, Any]]) -> None:
    body = get(client, group_by="district",
               metrics="count_distinct(crime),min(crime),max(crime),count(neighborhood)")
    by_district: dict[int | None, list[dict[str, Any]]] = defaultdict(list)
    for r in crimes:
        by_district[r["district"]].append(r)
    got = {i["district"]: i for i in body["items"]}
    assert set(got) == set(by_district)
    for district, rows in by_district.items():
        codes = [r["crime"] for r in rows]
        assert got[district]["count_distinct_crime"] == len(set(codes))
        assert got[district]["min_crime"] == min(codes)
        assert got[district]["max_crime"] == max(codes)
        assert got[district]["count_neighborhood"] == sum(
            r["neighborhood"] is not None for r in rows)


def test_no_group_gives_one_total(client: Any, crimes: list[dict[str, Any]]) -> None:
    body = get(client, metrics="count,sum(count)")
    assert body["items"] == [{"count": len(crimes),
                              "sum_count": sum(r["count"] for r in crimes)}]


@pytest.mark.parametrize(("params", "param", "words"), [
    ({"group_by": "nope"}, "group_by", "unknown column 'nope'"),
    ({"group_by": "week(date_occur)"}, "group_by", "unknown bucket 'week'"),
    ({"group_by": "hour(coded_month)"}, "group_by", "hour() applies to datetime"),
    ({"metrics": "median(count)"}, "metrics", "unknown function 'median'"),
    ({"metrics": "sum(description)"}, "metrics", "sum() applies to integer or number"),
    ({"metrics": "sum()"}, "metrics", "sum() needs a column"),
    ({"metrics": "count;drop table x"}, "metrics", "is not count or function"),
    ({"group_by": "district", "having": "count>3"}, "having", "name__op:value"),
    ({"group_by": "district", "having": "count__like:3"}, "having", "unknown operator"),
    ({"group_by": "district", "having": "crime__gt:3"}, "having", "not a group or metric"),
    ({"group_by": "district", "having": "count__gt:many"}, "having", "not a valid integer"),
    ({"group_by": "district", "order": "-neighborhood"}, "order", "not a group or metric"),
    ({"group_by": "district", "limit": "0"}, "limit", "from 1 to"),
    ({"group_by": "district", "nope": "1"}, "nope", "unknown column"),
    ({"group_by": "district", "cursor": "abc"}, "cursor", "not paginated"),
    ({"group_by": "district,district"}, "group_by", "given twice"),
])
def test_bad_requests_name_the_parameter(client: Any, params: dict[str, str], param: str,
                                         words: str) -> None:
    response = client.get(BASE, query_string=params)
    assert response.status_code == 400
    body = response.get_json()
    assert body["invalid_params"][0]["name"] == param
    assert words in body["detail"]


def test_unknown_dataset_is_404_and_an_empty_one_has_no_groups(client: Any) -> None:
    assert client.get("/api/v1/datasets/nope/aggregate").status_code == 404
    # In the catalog, but never ingested in this database: its table is empty.
    empty = client.get("/api/v1/datasets/ucity-crime/aggregate",
                       query_string={"group_by": "sheet"}).get_json()
    assert empty["items"] == [] and empty["count"] == 0
    assert client.get("/resource/ucity-crime.json").get_json() == []


def test_as_of_the_latest_snapshot_equals_now(client: Any) -> None:
    pytest.importorskip("stldata.api.timetravel")
    snapshot = client.get("/api/v1/datasets/slmpd-crime").get_json()["latest_snapshot"]["id"]
    now = get(client, group_by="district", metrics="count,sum(count)")
    then = get(client, group_by="district", metrics="count,sum(count)",
               as_of=str(snapshot))
    assert then["as_of_snapshot"] == snapshot and then["source"] == "records"
    assert then["items"] == now["items"]
    bad = client.get(BASE, query_string={"as_of": "yesterday-ish"})
    assert bad.status_code == 400 and bad.get_json()["invalid_params"][0]["name"] == "as_of"


def test_documented_in_the_openapi_spec(client: Any) -> None:
    spec = client.get("/openapi.json").get_json()
    operation = spec["paths"]["/api/v1/datasets/{dataset_id}/aggregate"]["get"]
    names = {p["name"] for p in operation["parameters"]}
    assert {"group_by", "metrics", "having", "order", "limit", "as_of"} <= names


def test_filter_on_a_declared_group_column_reads_the_table(
        client: Any, crimes: list[dict[str, Any]]) -> None:
    body = get(client, group_by="month(date_occur)", metrics="count,sum(count)",
               neighborhood__in="35,36", limit="10000")
    assert body["source"] == "aggregate:by_neighborhood_month"
    counts: Counter[str | None] = Counter()
    sums: dict[str | None, int] = defaultdict(int)
    for r in crimes:
        if r["neighborhood"] in (35, 36):
            counts[r["month"]] += 1
            sums[r["month"]] += r["count"]
    assert {i["month_date_occur"]: (i["count"], i["sum_count"]) for i in body["items"]} == {
        m: (counts[m], sums[m]) for m in counts}
