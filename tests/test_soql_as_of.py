"""SoQL time travel: ``as_of`` on /resource/{id}.json|.csv|.geojson.

The scenario (tests/history_scenario.py) publishes January 2017, adds May 2017, then
re-publishes January with one description corrected, one row withdrawn and one row added.
What each snapshot held is read off the raw files with the csv module; the SoQL answers
as of a snapshot must be exactly that, rows and aggregates alike.
"""

from __future__ import annotations

import csv
import io
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from flask.testing import FlaskClient

from history_scenario import Row, Scenario, record_rows, scenario_client, scenario_runtime
from history_scenario import get_json as _get

from conftest import query

URL = "/resource/slmpd-crime"
ALL = "50000"  # every row of the scenario (SoQL's default $limit is 1000)
ROW_SELECT = "complaint,crime,description,count"


@pytest.fixture(scope="module")
def scenario(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    yield from scenario_runtime(server_url, tmp_path_factory.mktemp("soql_as_of"))


@pytest.fixture(scope="module")
def api(scenario: Scenario) -> FlaskClient:
    return scenario_client(scenario)


def soql(api: FlaskClient, fmt: str = "json", status: int = 200, **params: str) -> Any:
    response = api.get(f"{URL}.{fmt}", query_string=params)
    assert response.status_code == status, response.get_data(as_text=True)
    if fmt == "csv" and status == 200:
        return list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    return response.get_json()


def by_crime(rows: list[Row]) -> dict[str, tuple[int, int]]:
    """Per crime code: (rows, sum of count), from rows read off the file."""
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for _, crime, _, count in rows:
        out[crime][0] += 1
        out[crime][1] += count
    return {k: (v[0], v[1]) for k, v in out.items()}


def test_rows_as_of_each_snapshot(api: FlaskClient, scenario: Scenario) -> None:
    for index, sid in enumerate(scenario.snapshots):
        rows = soql(api, as_of=str(sid), **{"$select": ROW_SELECT, "$limit": ALL})
        assert record_rows(rows) == scenario.expected(index), f"as_of={sid}"
    # Without as_of: the current records, those of the last snapshot.
    rows = soql(api, **{"$select": ROW_SELECT, "$limit": ALL})
    assert record_rows(rows) == scenario.expected(2)
    # The first two snapshots really differ (May was added), so as_of is not ignored.
    assert scenario.expected(0) != scenario.expected(1)


def test_aggregates_as_of_the_first_snapshot(api: FlaskClient, scenario: Scenario) -> None:
    first, second = scenario.snapshots[0], scenario.snapshots[1]
    params = {"$select": "crime, count(*) AS n, sum(count) AS total", "$group": "crime",
              "$limit": ALL}
    for sid, rows in ((first, scenario.january), (second, scenario.january + scenario.may)):
        got = {r["crime"]: (r["n"], int(r["total"]))
               for r in soql(api, as_of=str(sid), **params)}
        assert got == by_crime(rows), f"as_of={sid}"

    # One number: the rows of January as first published.
    body = soql(api, as_of=str(first), **{"$select": "count(*) AS n, sum(count) AS total"})
    assert body == [{"n": len(scenario.january),
                     "total": sum(r[3] for r in scenario.january)}]


def test_where_and_filters_see_the_past(api: FlaskClient, scenario: Scenario) -> None:
    """The corrected and the withdrawn row, looked up by complaint in each snapshot."""
    assert scenario.corrected is not None and scenario.withdrawn is not None
    for row in (scenario.corrected[0], scenario.withdrawn):
        complaint = row[0]
        for index, sid in enumerate(scenario.snapshots):
            expected = Counter(r for r in scenario.expected(index) if r[0] == complaint)
            got = soql(api, as_of=str(sid), complaint=complaint,
                       **{"$select": ROW_SELECT, "$limit": ALL})
            assert record_rows(got) == expected, (complaint, sid)
            got = soql(api, as_of=str(sid), **{"$select": ROW_SELECT, "$limit": ALL,
                                               "$where": f"complaint = '{complaint}'"})
            assert record_rows(got) == expected, (complaint, sid)
    old, new = scenario.corrected
    assert old in scenario.expected(0) and new not in scenario.expected(0)


def test_search_sees_the_past(api: FlaskClient, scenario: Scenario) -> None:
    """$q finds the corrected description only from the snapshot that corrected it."""
    assert scenario.corrected is not None
    old, new = scenario.corrected
    assert new[2].startswith("CORRECTED ")
    for index, sid in enumerate(scenario.snapshots):
        got = record_rows(soql(api, as_of=str(sid), **{
            "$select": ROW_SELECT, "$limit": ALL, "$q": "corrected"}))
        assert (new in got) == (new in scenario.expected(index)), sid
        assert old not in got


def test_as_of_a_time_is_the_last_snapshot_committed_by_then(api: FlaskClient,
                                                           scenario: Scenario) -> None:
    times: dict[int, datetime] = dict(query(scenario.runtime,
                                            "SELECT id, committed_at FROM snapshots"))
    first = scenario.snapshots[0]
    moment = times[first].isoformat()  # exactly at its commit: that snapshot
    rows = soql(api, as_of=moment, **{"$select": ROW_SELECT, "$limit": ALL})
    assert record_rows(rows) == scenario.expected(0)


def test_csv_and_geojson_as_of(api: FlaskClient, scenario: Scenario) -> None:
    first = str(scenario.snapshots[0])
    rows = soql(api, "csv", as_of=first, **{"$select": ROW_SELECT, "$limit": ALL})
    assert Counter((r["complaint"], r["crime"], r["description"], int(r["count"]))
                   for r in rows) == scenario.expected(0)

    body = soql(api, "geojson", as_of=first, **{"$select": ROW_SELECT, "$limit": ALL})
    assert body["type"] == "FeatureCollection"
    assert record_rows(f["properties"] for f in body["features"]) == scenario.expected(0)
    # Rows with coordinates in the file are Points (the others have no geometry).
    points = [f for f in body["features"] if f["geometry"] is not None]
    assert points and all(f["geometry"]["type"] == "Point" for f in points)


def test_bad_as_of_is_a_400_naming_it(api: FlaskClient, scenario: Scenario) -> None:
    other = query(scenario.runtime, "SELECT max(id) FROM snapshots")[0][0] + 1000
    cases = {
        "yesterday": "neither a snapshot id nor an ISO-8601 date or time",
        str(other): f"{other} is not a snapshot of dataset 'slmpd-crime'",
        "1999-01-01": "had no committed snapshot at or before",
        " ": "expected a snapshot id or an ISO-8601 date or time",
    }
    for value, reason in cases.items():
        for fmt in ("json", "csv", "geojson"):
            body = soql(api, fmt, 400, as_of=value, **{"$select": "count(*)"})
            assert body["invalid_params"][0]["name"] == "as_of", body
            assert reason in body["detail"], body
        # The same value means the same on /records and /aggregate: the same message.
        for path in ("records", "aggregate"):
            same = _get(api, f"/api/v1/datasets/slmpd-crime/{path}?as_of={value}", 400)
            assert same["detail"] == body["detail"], (path, same, body)

    response = api.get(f"{URL}.json?as_of={scenario.snapshots[0]}"
                       f"&as_of={scenario.snapshots[1]}")
    assert response.status_code == 400
    assert response.get_json()["invalid_params"][0]["name"] == "as_of"


def test_as_of_is_in_the_spec(api: FlaskClient) -> None:
    spec = _get(api, "/openapi.json")
    parameters = spec["paths"]["/resource/{dataset_id}.{fmt}"]["get"]["parameters"]
    as_of = next(p for p in parameters if p["name"] == "as_of")
    assert as_of["in"] == "query" and "snapshot" in as_of["description"]
