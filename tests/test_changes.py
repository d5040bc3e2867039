"""The change feed: ordered, resumable from an opaque cursor, and empty when nothing is new.

Runs on the scenario of tests/history_scenario.py (January, May, January re-published),
then ingests June 2018 to check that a client resumes where it stopped. Tests run in
file order; the last one adds the snapshot.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient

from history_scenario import Scenario, raw_rows, record_rows, scenario_client, scenario_runtime
from history_scenario import get_json as _get

from conftest import CRIME_SAMPLES, ingest, project

FEED = "/api/v1/datasets/slmpd-crime/changes"


@pytest.fixture(scope="module")
def scenario(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    yield from scenario_runtime(server_url, tmp_path_factory.mktemp("changes"))


@pytest.fixture(scope="module")
def api(scenario: Scenario) -> FlaskClient:
    return scenario_client(scenario)


def read_feed(api: FlaskClient, after: str | None, limit: int
              ) -> tuple[list[dict[str, Any]], str, int]:
    """Follow the feed to its end the way a client does; (events, cursor, pages)."""
    events: list[dict[str, Any]] = []
    url = f"{FEED}?limit={limit}" + (f"&after={after}" if after else "")
    pages = 0
    while True:
        page = _get(api, url)
        pages += 1
        events.extend(page["items"])
        assert page["count"] == len(page["items"]) <= limit
        if not page["more"]:
            return events, page["cursor"], pages
        url = page["next"]


def test_feed_lists_every_change_in_snapshot_order(api: FlaskClient, scenario: Scenario
                                                   ) -> None:
    first, second, third = scenario.snapshots
    assert scenario.corrected and scenario.withdrawn and scenario.added
    events, _, _ = read_feed(api, None, 1000)
    positions = [(e["snapshot_id"], e["key"]) for e in events]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)

    def of(sid: int, change: str) -> list[dict[str, Any]]:
        return [e for e in events if e["snapshot_id"] == sid and e["change"] == change]

    assert record_rows(e["record"] for e in of(first, "added")) == Counter(scenario.january)
    assert record_rows(e["record"] for e in of(second, "added")) == Counter(scenario.may)
    assert Counter(e["change"] for e in events if e["snapshot_id"] == third) == {
        "added": 1, "changed": 1, "removed": 1}
    assert len(events) == len(scenario.january) + len(scenario.may) + 3
    [changed] = of(third, "changed")
    assert changed["changed_columns"] == ["description"]
    assert changed["record"]["description"] == scenario.corrected[1][2]
    [removed] = of(third, "removed")
    # A removal carries the record as it was last, so a client knows what went away.
    assert record_rows([removed["record"]]) == Counter([scenario.withdrawn])
    [added] = of(third, "added")
    assert record_rows([added["record"]]) == Counter([scenario.added])
    assert all(e["committed_at"] for e in events)


def test_small_pages_give_the_same_feed(api: FlaskClient) -> None:
    whole, cursor, _ = read_feed(api, None, 1000)
    paged, paged_cursor, pages = read_feed(api, None, 317)
    assert paged == whole and paged_cursor == cursor
    assert pages == len(whole) // 317 + 1


def test_an_empty_page_keeps_the_cursor_to_poll_again(api: FlaskClient) -> None:
    _, cursor, _ = read_feed(api, None, 1000)
    for _ in range(2):
        page = _get(api, f"{FEED}?after={cursor}")
        assert page["items"] == [] and page["more"] is False
        assert page["cursor"] == cursor
        assert page["next"].endswith(f"after={cursor}&limit=100")


def test_bad_cursors_are_problems_naming_after(api: FlaskClient) -> None:
    _, cursor, _ = read_feed(api, None, 1000)
    for bad in ("nonsense", cursor[:-3], "WyJ4Il0"):
        body = _get(api, f"{FEED}?after={bad}", 400)
        assert body["invalid_params"][0]["name"] == "after"
    other = _get(api, f"/api/v1/datasets/csb-311/changes?after={cursor}", 400)
    assert "slmpd-crime" in other["detail"]
    assert _get(api, f"{FEED}?limit=0", 400)["invalid_params"][0]["name"] == "limit"
    assert _get(api, "/api/v1/datasets/nope/changes", 404)


def test_a_client_resumes_across_a_new_ingest(api: FlaskClient, scenario: Scenario) -> None:
    """Stop in the middle of snapshot 2, ingest June 2018, resume: nothing lost or repeated."""
    whole, end, _ = read_feed(api, None, 1000)
    # A client that read four pages of 1000 stopped inside the second snapshot.
    seen: list[dict[str, Any]] = []
    url = f"{FEED}?limit=1000"
    for _ in range(4):
        page = _get(api, url)
        seen.extend(page["items"])
        url = page["next"]
    stopped = page["cursor"]
    assert len(scenario.january) < len(seen) < len(scenario.january) + len(scenario.may)

    # A client that starts at the end of the feed sees nothing until the next snapshot.
    latest = _get(api, f"{FEED}?after=latest")
    assert latest["items"] == [] and latest["more"] is False
    assert _get(api, f"{FEED}?after={latest['cursor']}")["items"] == []

    shutil.copy(CRIME_SAMPLES / "june2018.csv", scenario.folder / "june2018.csv")
    summary = ingest(scenario.runtime, "slmpd-crime", scenario.folder)
    project(scenario.runtime)
    assert summary.snapshot_id is not None

    rest, _, _ = read_feed(api, stopped, 400)
    assert seen + rest[: len(whole) - len(seen)] == whole
    assert rest[len(whole) - len(seen):] == read_feed(api, end, 1000)[0]

    new, cursor, _ = read_feed(api, end, 1000)
    assert read_feed(api, latest["cursor"], 1000)[0] == new
    assert {e["snapshot_id"] for e in new} == {summary.snapshot_id}
    assert {e["change"] for e in new} == {"added"}
    june = raw_rows(CRIME_SAMPLES / "june2018.csv")
    assert record_rows(e["record"] for e in new) == Counter(june)
    assert _get(api, f"{FEED}?after={cursor}")["items"] == []
