"""The quality report and the quarantine of a snapshot, checked against the raw files."""

from __future__ import annotations

import csv
import shutil
import tomllib
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from stldata.api.app import create_app
from stldata.ingest.positions import position_text
from stldata.runtime import Runtime
from stldata.settings import Settings
from xlsx_maker import write_xlsx

from conftest import CSB_SAMPLES, ROOT, ingest, project

CSB_NULLS = {"", "NULL", "NA"}


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Only the catalog entries these tests use, in a folder of their own."""
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    shutil.copy(ROOT / "catalog" / "csb-311.toml", catalog)
    return Settings(home=tmp_path / "home", database_url=database_url, batch_size=2000,
                    poll_interval=0.05, catalog_dir=catalog)


def get(runtime: Runtime, url: str) -> Any:
    response = create_app(runtime).test_client().get(url)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def raw_csb() -> list[tuple[str, int, dict[str, str]]]:
    """Every data row of the bundled 311 files as (file, first line, cells by header), in
    the order the ingester reads them (files by name, rows by line)."""
    rows = []
    for path in sorted(CSB_SAMPLES.glob("*.csv")):
        with path.open(newline="", encoding="cp1252") as stream:
            reader = csv.reader(stream)
            header = next(reader)
            line = reader.line_num
            for cells in reader:
                start, line = line + 1, reader.line_num
                if cells:
                    rows.append((path.name, start, dict(zip(header, cells, strict=True))))
    return rows


def cell(row: dict[str, str], *headers: str) -> str:
    return next((row[h] for h in headers if h in row), "")


def test_csb_quality_report_matches_the_raw_files(settings: Settings) -> None:
    runtime = Runtime.start(settings)
    summary = ingest(runtime, "csb-311")
    project(runtime)
    sid = summary.snapshot_id
    report = get(runtime, f"/api/v1/datasets/csb-311/snapshots/{sid}/quality")

    rows = raw_csb()
    last: dict[int, dict[str, str]] = {}
    for _, _, row in rows:
        last[int(row["REQUESTID"])] = row  # a repeated id keeps its last row
    assert report["rows"]["read"] == len(rows)
    assert report["rows"]["rejected"] == 0 and report["rows"]["accepted"] == len(rows)
    assert report["rows"]["superseded"] == len(rows) - len(last)
    assert report["rows"]["records"] == len(last)
    by_reason = {(r["column"], r["reason"]): r["count"] for r in report["quarantined_by_reason"]}
    assert by_reason[(None, "duplicate key")] == len(rows) - len(last)
    assert sum(by_reason.values()) == report["quarantine_entries"]

    columns = {c["name"]: c for c in report["columns"]}
    # Null rate and distinct values of a text column: NULL, NA and empty are all no value.
    cities = [cell(r, "CITY", "PROBCITY").strip() for r in last.values()]
    present = [c for c in cities if c not in CSB_NULLS]
    assert columns["city"]["nulls"] == len(cities) - len(present)
    assert columns["city"]["null_rate"] == round((len(cities) - len(present)) / len(last), 6)
    assert columns["city"]["distinct"] == len(set(present))
    # zip also reads "0" as no value.
    zips = [r.get("PROBZIP", "").strip() for r in last.values()]
    assert columns["zip"]["nulls"] == sum(1 for z in zips if z in CSB_NULLS | {"0"})
    # Ranges: wards as whole numbers, opening times as local America/Chicago times.
    wards = [int(w) for r in last.values() if (w := r["WARD"].strip()) not in CSB_NULLS]
    assert (columns["ward"]["min"], columns["ward"]["max"]) == (min(wards), max(wards))
    assert columns["ward"]["nulls"] == len(last) - len(wards)
    chicago = ZoneInfo("America/Chicago")
    opened = [datetime.fromisoformat(r["DATETIMEINIT"].strip().rstrip("Z")).replace(
        tzinfo=chicago) for r in last.values()]
    assert datetime.fromisoformat(columns["opened_at"]["min"]) == min(opened)
    assert datetime.fromisoformat(columns["opened_at"]["max"]) == max(opened)
    assert columns["request_id"]["distinct"] == len(last)

    # Coercions count every row read: STATUS spellings mapped to the canonical set,
    # NULL/NA/blank cells of CITY read as no value.
    mapping = {k.casefold(): v for k, v in next(
        c for c in tomllib.loads((ROOT / "catalog" / "csb-311.toml").read_text())["columns"]
        if c["name"] == "status")["values"].items()}
    statuses = [r["STATUS"].strip() for _, _, r in rows]
    mapped = sum(1 for s in statuses if s not in CSB_NULLS and mapping[s.casefold()] != s)
    raw_cities = [cell(r, "CITY", "PROBCITY") for _, _, r in rows]
    null_spelled = sum(1 for c in raw_cities if c.strip() in ("NULL", "NA")
                       or (c and not c.strip()))
    coercions = {(c["column"], c["kind"]): c["cells"] for c in report["coercions"]}
    assert mapped > 1000 and coercions[("status", "value_mapped")] == mapped
    assert null_spelled > 1000 and coercions[("city", "null_spelling")] == null_spelled


def test_quarantine_lists_superseded_rows_at_their_own_position(settings: Settings) -> None:
    runtime = Runtime.start(settings)
    sid = ingest(runtime, "csb-311").snapshot_id
    project(runtime)
    entries: list[dict[str, Any]] = []
    url: str | None = f"/api/v1/datasets/csb-311/snapshots/{sid}/quarantine?limit=40"
    while url:
        page = get(runtime, url)
        assert page["count"] == len(page["items"]) <= 40
        entries += page["items"]
        url = page["next"]
    report = get(runtime, f"/api/v1/datasets/csb-311/snapshots/{sid}/quality")
    assert len(entries) == report["quarantine_entries"] == len({e["id"] for e in entries})

    # Every row whose request id comes again later is listed with its own file and line.
    rows = raw_csb()
    seen: Counter[int] = Counter(int(r["REQUESTID"]) for _, _, r in rows)
    remaining = dict(seen)
    superseded = set()
    for name, line, row in rows:
        key = int(row["REQUESTID"])
        remaining[key] -= 1
        if remaining[key]:
            superseded.add((name, line, str(key)))
    listed = {(e["source_file"], e["line"], e["raw_value"]) for e in entries
              if e["reason"].startswith("duplicate key")}
    assert listed == superseded
    assert all(e["position"] == f"line {e['line']}" for e in entries)

    only = get(runtime, f"/api/v1/datasets/csb-311/snapshots/{sid}/quarantine"
                        "?column=srx&limit=1000")
    assert only["items"] and all(e["column"] == "srx" for e in only["items"])
    dupes = get(runtime, f"/api/v1/datasets/csb-311/snapshots/{sid}/quarantine"
                         "?reason=DUPLICATE%20KEY&limit=1000")
    assert len(dupes["items"]) == len(superseded)


SMALL = """
id = "ward-counts"
title = "Counts per ward"
key = ["ward"]
mode = "full"
[source]
url = ""
null_values = ["", "NULL"]
[[columns]]
name = "ward"
type = "integer"
required = true
[[columns]]
name = "count"
type = "integer"
[[columns]]
name = "seen"
type = "date"
"""


def test_old_snapshots_report_their_own_state(settings: Settings, tmp_path: Path) -> None:
    (settings.catalog_dir / "ward-counts.toml").write_text(SMALL)
    runtime = Runtime.start(settings)
    first = tmp_path / "first.csv"
    first.write_text("ward,count,seen\n1,10,2019-01-05\n2,,2019-02-01\n3,x,2019-03-09\n")
    one = ingest(runtime, "ward-counts", first).snapshot_id
    second = tmp_path / "second.csv"
    second.write_text("ward;count;seen\n1;7;2020-06-30\n4;12;NULL\n")
    two = ingest(runtime, "ward-counts", second).snapshot_id
    project(runtime)

    old = get(runtime, f"/api/v1/datasets/ward-counts/snapshots/{one}/quality")
    new = get(runtime, f"/api/v1/datasets/ward-counts/snapshots/{two}/quality")
    old_cols = {c["name"]: c for c in old["columns"]}
    new_cols = {c["name"]: c for c in new["columns"]}
    assert old["rows"]["records"] == 3 and new["rows"]["records"] == 2
    # Snapshot 1: count is empty once and 'x' once (quarantined, stored as empty).
    assert (old_cols["count"]["nulls"], old_cols["count"]["min"],
            old_cols["count"]["max"]) == (2, 10, 10)
    assert (old_cols["seen"]["min"], old_cols["seen"]["max"]) == ("2019-01-05", "2019-03-09")
    assert old["quarantined_by_reason"] == [
        {"column": "count", "reason": "… is not a whole number", "count": 1}]
    assert (new_cols["count"]["min"], new_cols["count"]["max"]) == (7, 12)
    assert (new_cols["seen"]["nulls"], new_cols["seen"]["min"]) == (1, "2020-06-30")
    assert {(c["column"], c["kind"]): c["cells"] for c in new["coercions"]} == {
        ("seen", "null_spelling"): 1}
    # Asked again, the kept figures are the same.
    assert get(runtime, f"/api/v1/datasets/ward-counts/snapshots/{one}/quality") == old
    (bad,) = get(runtime, f"/api/v1/datasets/ward-counts/snapshots/{one}/quarantine")["items"]
    assert (bad["source_file"], bad["position"], bad["column"], bad["raw_value"]) == (
        "first.csv", "line 4", "count", "x")


def test_sheet_rows_are_positioned_by_sheet_and_row(settings: Settings,
                                                    tmp_path: Path) -> None:
    (settings.catalog_dir / "ward-counts.toml").write_text(SMALL.replace(
        'url = ""', 'url = ""\nformat = "xlsx"\nsheets = ["*"]'))
    book = write_xlsx(tmp_path / "counts.xlsx", {
        "Jan": [["Ward", "Count", "Seen"], [1, 3, "2019-01-02"], [2, "three", "2019-01-03"]],
        "Feb": [["Ward", "Count", "Seen"], [3, 1, "2019-02-02"], [4, 2, "2019-02-03", "x"]]})
    runtime = Runtime.start(settings)
    sid = ingest(runtime, "ward-counts", book).snapshot_id
    project(runtime)
    items = get(runtime, f"/api/v1/datasets/ward-counts/snapshots/{sid}/quarantine")["items"]
    assert sorted((e["position"], e["column"], e["raw_value"]) for e in items) == [
        ("sheet Feb row 3", None, "4,2,2019-02-03,x"),
        ("sheet Jan row 3", "count", "three")]
    report = get(runtime, f"/api/v1/datasets/ward-counts/snapshots/{sid}/quality")
    assert report["rows"] == {
        "read": 4, "accepted": 3, "rejected": 1, "quarantined": 2, "superseded": 0,
        "records": 3}


def test_positions_in_words() -> None:
    assert position_text("", 12) == "line 12"
    assert position_text("sheet Jan 2015", 7) == "sheet Jan 2015 row 7"
    assert position_text("table on pages 9-10", 9003) == "page 9 row 3"
    assert position_text("table 'caption:Meetings'", 424) == "line 424"


@pytest.mark.parametrize(
    ("url", "detail"),
    [
        ("/api/v1/datasets/nope/snapshots/1/quality", "no dataset 'nope'"),
        ("/api/v1/datasets/csb-311/snapshots/999/quality", "has no snapshot 999"),
        ("/api/v1/datasets/csb-311/snapshots/999/quarantine", "has no snapshot 999"),
    ],
)
def test_unknown_dataset_or_snapshot_is_404(settings: Settings, url: str,
                                            detail: str) -> None:
    response = create_app(Runtime.start(settings)).test_client().get(url)
    assert response.status_code == 404
    assert response.content_type == "application/problem+json"
    assert detail in response.get_json()["detail"]


def test_bad_quarantine_parameters_are_400(settings: Settings) -> None:
    runtime = Runtime.start(settings)
    sid = ingest(runtime, "csb-311").snapshot_id
    project(runtime)
    client = create_app(runtime).test_client()
    base = f"/api/v1/datasets/csb-311/snapshots/{sid}/quarantine"
    for query, name in (("?column=a%00b", "column"), ("?reason=%00", "reason"),
                        ("?limit=0", "limit"), ("?cursor=x", "cursor"),
                        ("?column=nosuch", "column")):
        response = client.get(base + query)
        assert response.status_code == 400, query
        assert response.get_json()["invalid_params"][0]["name"] == name
    assert "nosuch" in client.get(base + "?column=nosuch").get_json()["detail"]
    # A catalog column without entries is a known column: an empty page, not a 400.
    quiet = client.get(base + "?column=status")
    assert quiet.status_code == 200 and quiet.get_json()["items"] == []
