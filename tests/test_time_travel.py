"""Time travel: records as of each snapshot, snapshots, diffs between them, a record's history.

The scenario (tests/history_scenario.py) publishes January 2017, adds May 2017, then
re-publishes January with one description corrected, one row withdrawn and one row added.
Expected contents come from the raw files, read with the csv module.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient

from history_scenario import (
    JANUARY,
    Scenario,
    raw_rows,
    record_rows,
    scenario_client,
    scenario_runtime,
)
from history_scenario import get_json as _get
from stldata.api.paging import build_select
from stldata.api.problems import BadParameter
from stldata.api.query import dataset_table, parse_query
from stldata.api.timetravel import resolve_as_of, table_as_of
from stldata.runtime import Runtime

from conftest import CRIME_SAMPLES, ingest, project, query, read_raw_csv

BASE = "/api/v1/datasets/slmpd-crime"


@pytest.fixture(scope="module")
def scenario(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    yield from scenario_runtime(server_url, tmp_path_factory.mktemp("history"))


@pytest.fixture(scope="module")
def api(scenario: Scenario) -> FlaskClient:
    return scenario_client(scenario)


def _all_pages(api: FlaskClient, url: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    items: list[dict[str, Any]] = []
    first: dict[str, Any] | None = None
    next_url: str | None = url
    while next_url:
        page = _get(api, next_url)
        first = first or page
        items.extend(page["items"])
        next_url = page["next"]
    assert first is not None
    return items, first


def test_table_as_of_holds_exactly_each_snapshots_rows(scenario: Scenario) -> None:
    dataset = scenario.runtime.catalog.get("slmpd-crime")
    engine = scenario.runtime.database.engine()
    for index, sid in enumerate(scenario.snapshots):
        table = table_as_of(dataset, sid, sa.MetaData())
        with engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(sa.select(table)).mappings()]
        assert record_rows(rows) == scenario.expected(index), f"snapshot {sid}"
        assert {r["_snapshot_id"] for r in rows} <= set(scenario.snapshots[: index + 1])


def test_records_as_of_each_snapshot_through_the_api(api: FlaskClient,
                                                     scenario: Scenario) -> None:
    for index, sid in enumerate(scenario.snapshots):
        items, _ = _all_pages(api, f"{BASE}/records?as_of={sid}&limit=1000")
        assert record_rows(items) == scenario.expected(index), f"as_of={sid}"
    # The current records are those of the last snapshot.
    items, _ = _all_pages(api, f"{BASE}/records?limit=1000")
    assert record_rows(items) == scenario.expected(2)


def test_filters_and_order_work_on_the_past_unchanged(scenario: Scenario) -> None:
    dataset = scenario.runtime.catalog.get("slmpd-crime")
    header, rows = read_raw_csv(CRIME_SAMPLES / JANUARY)
    district = header.index("District")
    expected = sum(1 for r in rows if r[district].strip() == "5")
    table = table_as_of(dataset, scenario.snapshots[0], sa.MetaData())
    parsed = parse_query(dataset, table,
                         {"district": ["5"], "order": ["-date_occur"], "limit": ["1000"]})
    with scenario.runtime.database.engine().connect() as conn:
        found = conn.execute(build_select(table, parsed,
                                          [table.c._key, table.c.district,
                                           table.c.date_occur])).all()
    assert len(found) == expected > 0
    dates = [r.date_occur for r in found if r.date_occur is not None]
    assert dates == sorted(dates, reverse=True) and dates[0].tzinfo is not None


def test_resolve_as_of_by_id_and_by_time(scenario: Scenario) -> None:
    dataset = scenario.runtime.catalog.get("slmpd-crime")
    first, second, third = scenario.snapshots
    times = dict(query(scenario.runtime, "SELECT id, committed_at FROM snapshots"))
    with scenario.runtime.database.engine().connect() as conn:
        assert resolve_as_of(conn, dataset, str(second)) == second
        assert resolve_as_of(conn, dataset, times[second].isoformat()) == second
        between = times[second] + (times[third] - times[second]) / 2
        assert resolve_as_of(conn, dataset, between.isoformat()) == second
        # Without an offset a time is local to the dataset (America/Chicago).
        local = (times[third] + timedelta(seconds=1)).astimezone(ZoneInfo("America/Chicago"))
        assert resolve_as_of(conn, dataset, local.replace(tzinfo=None).isoformat()) == third
        assert resolve_as_of(conn, dataset, "2999-01-01") == third

        for bad, reason in [("abc", "neither a snapshot id"), ("999999", "not a snapshot"),
                            ("2000-01-01", "no committed snapshot"), ("", "expected")]:
            with pytest.raises(BadParameter) as caught:
                resolve_as_of(conn, dataset, bad)
            assert caught.value.param == "as_of" and reason in caught.value.detail
        with pytest.raises(BadParameter, match="not a snapshot of dataset"):
            resolve_as_of(conn, scenario.runtime.catalog.get("csb-311"), str(first))


def test_bad_as_of_on_records_is_a_problem_naming_it(api: FlaskClient) -> None:
    body = _get(api, f"{BASE}/records?as_of=yesterday", 400)
    assert body["invalid_params"][0]["name"] == "as_of"


def test_snapshots_newest_first_with_counts(api: FlaskClient, scenario: Scenario) -> None:
    first, second, third = scenario.snapshots
    items, page = _all_pages(api, f"{BASE}/snapshots?limit=2")
    assert page["count"] == 2 and page["next"]
    assert [s["id"] for s in items] == [third, second, first]
    by_id = {s["id"]: s for s in items}
    assert by_id[first]["added"] == by_id[first]["record_count"] == len(scenario.january)
    assert by_id[second]["added"] == len(scenario.may)
    assert (by_id[third]["added"], by_id[third]["changed"], by_id[third]["deleted"]) == (
        1, 1, 1)
    assert by_id[third]["previous"] == second and by_id[first]["previous"] is None
    assert by_id[third]["row_count"] == len(scenario.january2) + len(scenario.may)
    assert [f["file"] for f in by_id[third]["files"]] == [JANUARY]

    one = _get(api, f"{BASE}/snapshots/{second}")["snapshot"]
    assert one == by_id[second]
    assert len(one["sha256"]) == 64 and one["committed_at"] and one["fetched_at"]
    assert _get(api, f"{BASE}/snapshots/999999", 404)["detail"].startswith("dataset")
    assert _get(api, "/api/v1/datasets/csb-311/snapshots")["items"] == []


def test_diff_of_the_republished_month(api: FlaskClient, scenario: Scenario) -> None:
    _, second, third = scenario.snapshots
    assert scenario.corrected and scenario.withdrawn and scenario.added
    body = _get(api, f"{BASE}/snapshots/{third}/diff")
    assert body["against"] == second
    assert body["summary"] == {"added": 1, "changed": 1, "removed": 1}
    by_change = {i["change"]: i for i in body["items"]}
    changed = by_change["changed"]
    assert changed["changed_columns"] == ["description"]
    assert changed["old"] == {"description": scenario.corrected[0][2]}
    assert changed["new"] == {"description": scenario.corrected[1][2]}
    assert by_change["removed"]["new"] is None
    assert record_rows([by_change["removed"]["old"]]) == Counter([scenario.withdrawn])
    assert by_change["added"]["old"] is None
    assert record_rows([by_change["added"]["new"]]) == Counter([scenario.added])

    explicit = _get(api, f"{BASE}/snapshots/{third}/diff?against={second}")
    assert explicit["items"] == body["items"]
    only = _get(api, f"{BASE}/snapshots/{third}/diff?change=removed")
    assert [i["change"] for i in only["items"]] == ["removed"]


def test_diff_across_snapshots_paginated_and_backwards(api: FlaskClient,
                                                      scenario: Scenario) -> None:
    first, second, third = scenario.snapshots
    assert scenario.corrected and scenario.withdrawn and scenario.added
    items, page = _all_pages(api, f"{BASE}/snapshots/{second}/diff?limit=250")
    assert page["summary"] == {"added": len(scenario.may), "changed": 0, "removed": 0}
    assert record_rows(i["new"] for i in items) == Counter(scenario.may)
    keys = [i["key"] for i in items]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)

    items, page = _all_pages(api, f"{BASE}/snapshots/{third}/diff?against={first}&limit=300")
    assert page["summary"] == {"added": len(scenario.may) + 1, "changed": 1, "removed": 1}
    assert record_rows(i["new"] for i in items if i["change"] == "added") == Counter(
        [*scenario.may, scenario.added])

    # Backwards: from the last snapshot to the first, May and the new row go away.
    items, page = _all_pages(api, f"{BASE}/snapshots/{first}/diff?against={third}&limit=1000")
    assert page["summary"] == {"added": 1, "changed": 1, "removed": len(scenario.may) + 1}
    assert record_rows(i["new"] for i in items if i["change"] == "added") == Counter(
        [scenario.withdrawn])
    changed = next(i for i in items if i["change"] == "changed")
    assert changed["new"] == {"description": scenario.corrected[0][2]}

    # The first snapshot's diff is everything it added.
    page = _get(api, f"{BASE}/snapshots/{first}/diff?limit=1")
    assert page["against"] is None
    assert page["summary"]["added"] == len(scenario.january)

    unknown = _get(api, f"{BASE}/snapshots/{third}/diff?against=999999", 400)
    assert unknown["invalid_params"][0]["name"] == "against"
    assert _get(api, f"{BASE}/snapshots/999999/diff", 404)
    bad = _get(api, f"{BASE}/snapshots/{third}/diff?change=moved", 400)
    assert bad["invalid_params"][0]["name"] == "change"
    other = _get(api, f"{BASE}/snapshots/{second}/diff?limit=1")["next"]
    cursor = other.split("cursor=")[1]
    mixed = _get(api, f"{BASE}/snapshots/{third}/diff?cursor={cursor}", 400)
    assert mixed["invalid_params"][0]["name"] == "cursor"


def _key_of(api: FlaskClient, sid: int, change: str) -> str:
    items = _get(api, f"{BASE}/snapshots/{sid}/diff?change={change}")["items"]
    assert len(items) == 1
    return str(items[0]["key"])


def test_history_of_a_corrected_and_a_withdrawn_record(api: FlaskClient,
                                                       scenario: Scenario) -> None:
    from urllib.parse import quote

    first, _, third = scenario.snapshots
    assert scenario.corrected
    corrected = _key_of(api, third, "changed")
    body = _get(api, f"{BASE}/records/{quote(corrected, safe='')}/history")
    assert body["key"] == corrected and body["current"] is True
    versions = body["versions"]
    assert [(v["valid_from"], v["valid_to"], v["deleted"]) for v in versions] == [
        (first, third, False), (third, None, False)]
    assert [v["record"]["description"] for v in versions] == [
        scenario.corrected[0][2], scenario.corrected[1][2]]
    assert versions[1]["partition"] == JANUARY and versions[1]["committed_at"]
    # The record endpoint of the same key still answers (the routes do not collide).
    assert _get(api, f"{BASE}/records/{quote(corrected, safe='')}")["record"]["_key"] == (
        corrected)

    withdrawn = _key_of(api, third, "removed")
    body = _get(api, f"{BASE}/records/{quote(withdrawn, safe='')}/history")
    assert body["current"] is False
    assert [(v["valid_from"], v["valid_to"], v["deleted"]) for v in body["versions"]] == [
        (first, third, False), (third, None, True)]
    assert body["versions"][1]["record"] is None
    assert record_rows([body["versions"][0]["record"]]) == Counter([scenario.withdrawn])

    assert _get(api, f"{BASE}/records/no-such-key/history", 404)


def test_the_spec_documents_the_history_endpoints(api: FlaskClient) -> None:
    spec = _get(api, "/openapi.json")
    for path in ("/api/v1/datasets/{dataset_id}/snapshots",
                 "/api/v1/datasets/{dataset_id}/snapshots/{sid}",
                 "/api/v1/datasets/{dataset_id}/snapshots/{sid}/diff",
                 "/api/v1/datasets/{dataset_id}/records/{key}/history",
                 "/api/v1/datasets/{dataset_id}/changes"):
        assert path in spec["paths"], path
        assert spec["paths"][path]["get"]["tags"] == ["History"]
    params = {p["name"] for p in
              spec["paths"]["/api/v1/datasets/{dataset_id}/snapshots/{sid}/diff"]["get"][
                  "parameters"]}
    assert {"against", "change", "limit", "cursor"} <= params
    schemas = spec["components"]["schemas"]
    assert schemas["DiffItem"]["properties"]["changed_columns"]["example"] == ["description"]


def test_raw_rows_reads_what_a_person_sees() -> None:
    """The test's own reading of the file: first data row of January 2017."""
    rows = raw_rows(CRIME_SAMPLES / JANUARY)
    assert rows[0] == ("17-005061", "21000", "RAPE -- FORCIBLE", 1)


@pytest.mark.parametrize("dataset_id", ["csb-311", "stl-neighborhoods", "ucity-crime"])
def test_the_latest_snapshot_as_of_equals_the_current_table(runtime: Runtime,
                                                            dataset_id: str) -> None:
    """Every column type (datetime, boolean, number, geometry...) casts back exactly."""
    ingest(runtime, dataset_id)
    project(runtime)
    from stldata.api.app import ReadModel

    dataset = ReadModel(runtime).dataset(dataset_id)  # auto columns typed
    sid = query(runtime, "SELECT max(id) FROM snapshots WHERE dataset_id = %s",
                (dataset_id,))[0][0]
    metadata = sa.MetaData()
    current = dataset_table(dataset, metadata)
    past = table_as_of(dataset, sid, metadata)
    assert list(past.c.keys()) == list(current.c.keys())
    types = set(dataset.column_types().values())
    with runtime.database.engine().connect() as conn:
        now = {r["_key"]: dict(r) for r in conn.execute(sa.select(current)).mappings()}
        then = {r["_key"]: dict(r) for r in conn.execute(sa.select(past)).mappings()}
    assert now and then == now, f"{dataset_id}: types {sorted(types)}"


def test_records_page_names_the_snapshot_it_shows(api: FlaskClient,
                                                  scenario: Scenario) -> None:
    # A page's snapshot is not read off its rows (an empty page has none, and a row keeps
    # the snapshot that wrote it): it is the resolved as_of, else the latest committed one.
    for sid in scenario.snapshots:
        page = _get(api, f"{BASE}/records?as_of={sid}&limit=1")
        assert page["snapshot_id"] == sid
        assert page["items"][0]["_snapshot_id"] <= sid
    latest = _get(api, f"{BASE}/records?limit=1")
    assert latest["snapshot_id"] == scenario.snapshots[-1]
    empty = _get(api, f"{BASE}/records?description=no such description anywhere")
    assert (empty["count"], empty["snapshot_id"]) == (0, scenario.snapshots[-1])
    old_empty = _get(api, f"{BASE}/records?as_of={scenario.snapshots[0]}"
                          "&description=no such description anywhere")
    assert (old_empty["count"], old_empty["snapshot_id"]) == (0, scenario.snapshots[0])
