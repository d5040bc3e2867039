"""More small fixes found by testing: whole numbers are ASCII digits only, the quality
report keeps the wording of a range reason, and an as_of before the first snapshot is
reported as the client wrote it."""

from __future__ import annotations

import shutil
from datetime import UTC
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import pytest

from stldata.api.app import create_app
from stldata.runtime import Runtime
from stldata.settings import Settings
from test_quality import SMALL  # the ward-counts catalog entry

from conftest import ROOT, ingest, project, query

CRIME = "/api/v1/datasets/slmpd-crime"
#: Ten in fullwidth, Arabic-Indic and superscript digits, and with a digit separator:
#: Python's str.isdigit() and int() read all but the superscript as 10.
NOT_ASCII_TEN = ["１０", "١٠", "¹⁰", "1_0"]


@pytest.mark.parametrize("ten", NOT_ASCII_TEN)
@pytest.mark.parametrize(("url", "param"), [
    (f"{CRIME}/records?limit={{}}", "limit"),
    (f"{CRIME}/records?district={{}}", "district"),
    (f"{CRIME}/aggregate?group_by=district&limit={{}}", "limit"),
    ("/resource/slmpd-crime.json?$limit={}", "$limit"),
    ("/resource/slmpd-crime.json?$offset={}", "$offset"),
    (f"{CRIME}/snapshots?limit={{}}", "limit"),
    (f"{CRIME}/changes?limit={{}}", "limit"),
    ("/api/v1/search?q=theft&limit={}", "limit"),
])
def test_only_ascii_digits_are_a_whole_number(client: Any, url: str, param: str,
                                              ten: str) -> None:
    response = client.get(url.format(ten))
    assert response.status_code == 400, response.get_data(as_text=True)
    problem = response.get_json()
    assert problem["invalid_params"][0]["name"] == param, problem


@pytest.mark.parametrize(("url", "count"), [
    (f"{CRIME}/records?limit=10", 10),
    (f"{CRIME}/aggregate?group_by=district&limit=3", 3),
    ("/resource/slmpd-crime.json?$limit=10", 10),
    (f"{CRIME}/changes?limit=1", 1),
])
def test_ascii_digits_still_read(client: Any, url: str, count: int) -> None:
    response = client.get(url)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    items = body if isinstance(body, list) else body.get("items", body.get("groups"))
    assert len(items) == count


def test_soql_where_reads_only_ascii_digits(client: Any) -> None:
    response = client.get("/resource/slmpd-crime.json",
                          query_string={"$where": "district = １０"})
    assert response.status_code == 400, response.get_data(as_text=True)
    problem = response.get_json()
    assert problem["invalid_params"][0]["name"] == "$where"
    assert "１" in problem["detail"]


def test_as_of_before_the_first_snapshot_is_shown_as_written(client: Any,
                                                             loaded: Runtime) -> None:
    response = client.get(f"{CRIME}/records?as_of=0001-01-01")
    assert response.status_code == 400
    problem = response.get_json()
    assert problem["invalid_params"][0]["name"] == "as_of"
    detail = problem["detail"]
    # Chicago's local mean time of year 1, which the client never wrote, is not shown.
    assert "05:50" not in detail and "0001-01-01T" not in detail
    (first,), = query(loaded, "SELECT min(committed_at) FROM snapshots "
                              "WHERE dataset_id = 'slmpd-crime' AND status = 'committed'")
    assert ("had no committed snapshot at or before 0001-01-01; that is before its first "
            f"snapshot (committed {first.astimezone(UTC).isoformat(timespec='seconds')})"
            in detail), detail


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    shutil.copy(ROOT / "catalog" / "csb-311.toml", catalog)
    (catalog / "ward-counts.toml").write_text(SMALL)
    return Settings(home=tmp_path / "home", database_url=database_url, batch_size=2000,
                    poll_interval=0.05, catalog_dir=catalog)


def test_range_reasons_keep_their_own_numbers(settings: Settings, tmp_path: Path) -> None:
    counts = ["99999999999999999999", "-99999999999999999999", "1e30", "x", "2.5", "7"]
    source = tmp_path / "wards.csv"
    source.write_text("ward,count\n" + "".join(
        f"{ward},{count}\n" for ward, count in enumerate(counts, 1)))
    runtime = Runtime.start(settings)
    sid = ingest(runtime, "ward-counts", source).snapshot_id
    project(runtime)

    # What a person reads: three counts beyond a 64-bit integer, two not whole numbers.
    out_of_range = not_whole = 0
    for text in counts:
        try:
            number = Decimal(text)
        except InvalidOperation:
            not_whole += 1
            continue
        if number != number.to_integral_value():
            not_whole += 1
        elif not -(2**63) <= number < 2**63:
            out_of_range += 1
    assert (out_of_range, not_whole) == (3, 2)

    response = create_app(runtime).test_client().get(
        f"/api/v1/datasets/ward-counts/snapshots/{sid}/quality")
    assert response.status_code == 200, response.get_json()
    by_reason = {r["reason"]: r["count"] for r in response.get_json()["quarantined_by_reason"]
                 if r["column"] == "count"}
    assert by_reason == {
        f"… is out of range for a 64-bit integer ({-(2**63)}..{2**63 - 1})": out_of_range,
        "… is not a whole number": not_whole,
    }
