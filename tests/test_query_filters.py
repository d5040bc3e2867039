"""Record filters beyond equality: text matching, nulls, date parts, or-groups, fields,
counts and time travel. Every expected value is computed in Python from the raw
publisher's CSV, never by the same SQL path."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
import sqlalchemy as sa

from stldata.api.paging import EXACT_COUNT_LIMIT, count_matches
from stldata.api.query import RecordQuery, dataset_table
from stldata.runtime import Runtime

from conftest import CRIME_SAMPLES, pages, read_raw_csv

RECORDS = "/api/v1/datasets/slmpd-crime/records"
JUNE = RECORDS + "?coded_month=2018-06&limit=1000"



def raw_june() -> list[dict[str, str]]:
    """June 2018 rows with runs of blanks collapsed, as a reader sees them (the publisher
    pads fields with spaces)."""
    header, rows = read_raw_csv(CRIME_SAMPLES / "june2018.csv")
    return [{h: " ".join(v.split()) for h, v in zip(header, r, strict=True)} for r in rows]


def occurred(row: dict[str, str]) -> datetime | None:
    """DateOccur as local wall time; 01/01/1900 00:00 is the publisher's 'unknown'."""
    moment = datetime.strptime(row["DateOccur"], "%m/%d/%Y %H:%M")
    return None if moment.year == 1900 else moment


def described(items: list[dict[str, Any]]) -> Counter[str]:
    return Counter(i["description"] for i in items)


@pytest.mark.parametrize(
    ("op", "value", "test"),
    [
        ("contains", "THEFT", lambda v, x: x in v),
        ("icontains", "tHeFt", lambda v, x: x.lower() in v.lower()),
        ("startswith", "LARCENY", lambda v, x: v.startswith(x)),
        ("istartswith", "larceny-from", lambda v, x: v.lower().startswith(x.lower())),
        ("endswith", "INJURY", lambda v, x: v.endswith(x)),
        ("iendswith", "/no injury", lambda v, x: v.lower().endswith(x.lower())),
        ("contains", "$500 - $24,999", lambda v, x: x in v),
    ],
)
def test_text_operators_match_the_raw_file(client: Any, op: str, value: str,
                                           test: Callable[[str, str], bool]) -> None:
    items = pages(client, f"{JUNE}&description__{op}={value.replace('$', '%24')}")
    expected = [r["Description"] for r in raw_june()
                if r["Description"] and test(r["Description"], value)]
    assert len(expected) > 0
    assert described(items) == Counter(expected)


@pytest.mark.parametrize("wildcard", ["%", "_", "\\", "%THEFT", "LARCENY_"])
def test_like_wildcards_in_values_are_literal(client: Any, wildcard: str) -> None:
    response = client.get(RECORDS, query_string={
        "coded_month": "2018-06", "description__contains": wildcard, "limit": 1000})
    assert response.status_code == 200
    expected = [r for r in raw_june() if wildcard in r["Description"]]
    # As a pattern, % or _ would match every description; as text they match none.
    assert response.get_json()["total"] == len(expected) == 0


@pytest.mark.parametrize(("column", "raw"), [("location_name", "LocationName"),
                                             ("location_comment", "LocationComment"),
                                             ("cad_street", "CADStreet")])
def test_isnull(client: Any, column: str, raw: str) -> None:
    rows = raw_june()
    empty = pages(client, f"{JUNE}&{column}__isnull=true")
    present = pages(client, f"{JUNE}&{column}__isnull=false")
    # The catalog declares "NA" a null spelling of this dataset, as well as blank.
    assert len(empty) == sum(1 for r in rows if r[raw] in ("", "NA")) > 0
    assert len(present) == sum(1 for r in rows if r[raw] not in ("", "NA")) > 0
    assert all(i[column] is None for i in empty)


def test_isnull_on_a_datetime_finds_the_placeholder_dates(client: Any) -> None:
    items = pages(client, f"{JUNE}&date_occur__isnull=true")
    assert len(items) == sum(1 for r in raw_june() if occurred(r) is None) > 0


@pytest.mark.parametrize(
    ("param", "test"),
    [
        ("date_occur__year=2018", lambda d: d.year == 2018),
        ("date_occur__year__lt=2018", lambda d: d.year < 2018),
        ("date_occur__year__lte=2017", lambda d: d.year <= 2017),
        ("date_occur__year__gt=2017", lambda d: d.year > 2017),
        ("date_occur__year__gte=2016", lambda d: d.year >= 2016),
        ("date_occur__year__ne=2018", lambda d: d.year != 2018),
        ("date_occur__year__in=2015,2016", lambda d: d.year in (2015, 2016)),
        ("date_occur__month=5", lambda d: d.month == 5),
        ("date_occur__month__gte=6", lambda d: d.month >= 6),
        ("date_occur__day=15", lambda d: d.day == 15),
        ("date_occur__day__lt=8", lambda d: d.day < 8),
        ("date_occur__dow=0", lambda d: d.isoweekday() % 7 == 0),
        ("date_occur__dow__in=5,6", lambda d: d.isoweekday() % 7 in (5, 6)),
        ("date_occur__hour=0", lambda d: d.hour == 0),
        ("date_occur__hour__in=22,23", lambda d: d.hour in (22, 23)),
        ("date_occur__hour__gte=20", lambda d: d.hour >= 20),
    ],
)
def test_date_parts_in_local_time(client: Any, param: str,
                                  test: Callable[[datetime], bool]) -> None:
    items = pages(client, f"{JUNE}&{param}")
    expected = [r for r in raw_june() if (d := occurred(r)) is not None and test(d)]
    assert len(expected) > 0
    assert len(items) == len(expected)
    assert described(items) == Counter(r["Description"] for r in expected)


def test_date_parts_combine_with_ranges_on_the_same_column(client: Any) -> None:
    items = pages(client, f"{JUNE}&date_occur__year=2018&date_occur__month__lt=6"
                          "&date_occur__dow__ne=0")
    expected = [r for r in raw_june() if (d := occurred(r)) and d.year == 2018
                and d.month < 6 and d.isoweekday() != 7]
    assert len(items) == len(expected) > 0


def test_month_column_year_part_across_every_file(client: Any) -> None:
    """coded_month__year__gte=2015 is the four files coded since 2015; the total above
    the exact-count limit is the planner's estimate."""
    first = client.get(f"{RECORDS}?coded_month__year__gte=2015&limit=1").get_json()
    items = pages(client, f"{RECORDS}?coded_month__year__gte=2015&limit=1000"
                          "&fields=coded_month")
    files = ["august2015.csv", "january2017.csv", "may2017.csv", "june2018.csv"]
    assert len(items) == sum(len(read_raw_csv(CRIME_SAMPLES / f)[1]) for f in files)
    assert {i["coded_month"][:4] for i in items} == {"2015", "2017", "2018"}
    assert first["total_is_estimate"] is True and first["total"] > EXACT_COUNT_LIMIT


def test_or_groups(client: Any) -> None:
    rows = raw_june()
    items = pages(client, f"{JUNE}&or=crime:31111|district:3")
    expected = [r for r in rows if r["Crime"] == "31111" or r["District"] == "3"]
    assert len(items) == len(expected) > 0

    # Two or-groups both apply; each term takes any operator.
    items = pages(client, f"{JUNE}&or=district:3|district__eq:4"
                          "&or=description__icontains:theft|crime__startswith:5")
    expected = [r for r in rows if r["District"] in ("3", "4")
                and ("theft" in r["Description"].lower() or r["Crime"].startswith("5"))]
    assert len(items) == len(expected) > 0
    assert described(items) == Counter(r["Description"] for r in expected)

    # An escaped bar is part of a value, not a separator.
    items = pages(client, f"{JUNE}&or=location_comment__contains:%5C||district:6")
    assert len(items) == sum(1 for r in rows if "|" in r["LocationComment"]
                             or r["District"] == "6") > 0


def test_or_with_date_parts_and_in(client: Any) -> None:
    items = pages(client, f"{JUNE}&or=date_occur__hour__in:1,2|neighborhood__in:35,36")
    expected = [r for r in raw_june()
                if ((d := occurred(r)) and d.hour in (1, 2))
                or r["Neighborhood"] in ("35", "36")]
    assert len(items) == len(expected) > 0


def test_fields_choose_columns_and_keep_pagination(client: Any) -> None:
    items = pages(client, f"{RECORDS}?coded_month=2018-06&fields=crime,district"
                          "&order=-date_occur&limit=700")
    assert len(items) == len(raw_june())
    assert all(list(i) == ["_key", "crime", "district"] for i in items)
    assert len({i["_key"] for i in items}) == len(items)
    one = client.get(f"{RECORDS}?fields=_snapshot_id,description&limit=1").get_json()
    assert list(one["items"][0]) == ["_key", "_snapshot_id", "description"]


def test_total_is_exact_for_small_results(client: Any) -> None:
    body = client.get(f"{RECORDS}?coded_month=2018-06&district=3&limit=5").get_json()
    assert body["total"] == sum(1 for r in raw_june() if r["District"] == "3")
    assert body["total_is_estimate"] is False and body["count"] == 5
    everything = client.get(RECORDS + "?limit=1").get_json()
    assert everything["total_is_estimate"] is True
    assert everything["total"] > EXACT_COUNT_LIMIT


def test_estimates_come_from_the_planner(loaded: Runtime) -> None:
    dataset = loaded.catalog.get("slmpd-crime")
    table = dataset_table(dataset, sa.MetaData())
    engine = loaded.database.engine()
    raw_total = sum(len(read_raw_csv(p)[1]) for p in CRIME_SAMPLES.iterdir())
    with engine.connect() as conn:
        conn.execute(sa.text(f"ANALYZE {dataset.table_name}"))
        conn.commit()
        exact = count_matches(conn, table, RecordQuery(), exact_limit=raw_total)
        estimate = count_matches(conn, table, RecordQuery(), exact_limit=100)
        filtered = count_matches(conn, table, RecordQuery(filters=[table.c.district == 3]),
                                 exact_limit=100)
    engine.dispose()
    assert exact == (raw_total, False)
    assert estimate[1] is True and abs(estimate[0] - raw_total) < raw_total * 0.05
    assert filtered[1] is True and filtered[0] > 100


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("date_occur__year=abc", "date_occur__year"),
        ("date_occur__month=13", "date_occur__month"),
        ("date_occur__dow=7", "date_occur__dow"),
        ("date_occur__hour__in=1,24", "date_occur__hour__in"),
        ("coded_month__hour=1", "coded_month__hour"),
        ("description__year=2018", "description__year"),
        ("date_occur__year__contains=1", "date_occur__year__contains"),
        ("date_occur__year__isnull=true", "date_occur__year__isnull"),
        ("district__contains=1", "district__contains"),
        ("location_name__isnull=maybe", "location_name__isnull"),
        ("district__gt__lt=1", "district__gt__lt"),
        ("or=nosuch:1", "or"),
        ("or=district", "or"),
        ("or=district__gt:abc|crime:1", "or"),
        ("or=limit:5", "or"),
        ("fields=nosuch", "fields"),
        ("format=xml", "format"),
        ("q=", "q"),
        ("order=_rank", "order"),
        ("order=_distance", "order"),
    ],
)
def test_bad_filters_are_400_naming_the_parameter(client: Any, query: str,
                                                  param: str) -> None:
    response = client.get(f"{RECORDS}?{query}")
    assert response.status_code == 400, response.data
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert [p["name"] for p in body["invalid_params"]] == [param]
    assert param in body["detail"]


def test_or_errors_name_the_term(client: Any) -> None:
    body = client.get(f"{RECORDS}?or=district:3|nosuch__gt:1").get_json()
    assert "nosuch__gt:1" in body["detail"] and "unknown column" in body["detail"]


def test_injection_through_new_operators_is_plain_text(client: Any) -> None:
    for value in ("' OR 1=1 --", "%' OR '1'='1", "x\\' OR 1=1"):
        for op in ("contains", "istartswith", "iendswith"):
            response = client.get(RECORDS, query_string={f"description__{op}": value})
            assert response.status_code == 200 and response.get_json()["items"] == []
        response = client.get(RECORDS, query_string={"or": f"description:{value}|district:99"})
        assert response.status_code == 200 and response.get_json()["items"] == []


def test_as_of_reads_the_past_through_the_same_filters(client: Any, loaded: Runtime) -> None:
    with loaded.database.connect() as conn:
        row = conn.execute("SELECT max(id) FROM snapshots WHERE dataset_id = 'slmpd-crime' "
                           "AND status = 'committed'").fetchone()
    assert row is not None
    now = client.get(f"{JUNE}&district=3&fields=crime").get_json()
    then = client.get(f"{JUNE}&district=3&fields=crime&as_of={row[0]}").get_json()
    assert then["total"] == now["total"] > 0
    assert sorted(i["_key"] for i in then["items"]) == sorted(i["_key"] for i in now["items"])
    bad = client.get(f"{RECORDS}?as_of=not-a-time")
    assert bad.status_code == 400 and bad.get_json()["invalid_params"][0]["name"] == "as_of"


@pytest.mark.parametrize("param", ["date_occur__year=1", "date_occur__year__gt=9999",
                                   "date_occur__year__lte=9999", "date_occur__year__in=1,9999",
                                   "coded_month__year__lt=1", "date_occur__year__ne=1"])
def test_extreme_years_are_answered(client: Any, param: str) -> None:
    rows = raw_june()
    body = client.get(f"{JUNE}&{param}&fields=date_occur").get_json()
    dated = sum(1 for r in rows if occurred(r) is not None)
    expected = {"date_occur__year__lte=9999": dated, "date_occur__year__ne=1": dated}
    assert body["total"] == expected.get(param, 0)
