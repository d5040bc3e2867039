"""An increment record that two files hold falls back to the other file's row when the
newer file is published again without it: its values, file, line and source row, with a
new version in its history."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path
from typing import Any

from stldata.api.app import create_app
from stldata.runtime import Runtime

from conftest import CRIME_SAMPLES, CSB_SAMPLES, ingest, project, query, read_raw_csv

CSB_FILE = "csb_requests_2018-01.csv"
CRIME_FILE = "january2017.csv"


def write_csv(path: Path, header: list[str], rows: list[list[str]], *,
              encoding: str = "utf-8") -> None:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_bytes(out.getvalue().encode(encoding))


def served(runtime: Runtime, dataset_id: str, key: str) -> dict[str, Any]:
    app = create_app(runtime)
    app.config["TESTING"] = True
    response = app.test_client().get(f"/api/v1/datasets/{dataset_id}/records/{key}")
    assert response.status_code == 200, response.get_json()
    record: dict[str, Any] = response.get_json()["record"]
    return record


def history(runtime: Runtime, dataset_id: str, key: str) -> list[tuple[Any, ...]]:
    return query(runtime, "SELECT partition, line, valid_from, valid_to, deleted, "
                          "values, source FROM record_versions "
                          "WHERE dataset_id = %s AND key = %s ORDER BY id", (dataset_id, key))


def snapshot_counts(runtime: Runtime, snapshot_id: int | None) -> tuple[Any, ...]:
    return query(runtime, "SELECT added, changed, deleted FROM snapshots WHERE id = %s",
                 (snapshot_id,))[0]


def test_csb_request_falls_back_to_the_older_file(runtime: Runtime, tmp_path: Path) -> None:
    folder = tmp_path / "csb"
    folder.mkdir()
    shutil.copy(CSB_SAMPLES / CSB_FILE, folder / CSB_FILE)
    header, rows = read_raw_csv(folder / CSB_FILE)
    column = {name: i for i, name in enumerate(header)}
    # An id's record is its last row ('last' policy); lines count from the header, 1.
    line_of = {r[column["REQUESTID"]]: n for n, r in enumerate(rows, start=2)}
    original = next(r for r in rows if r[column["REQUESTID"]] == "1049562")
    assert original[column["STATUS"]] == "NEW"
    first = ingest(runtime, "csb-311", folder)
    project(runtime)
    before = served(runtime, "csb-311", "1049562")
    assert before["status"] == "open" and before["_partition"] == CSB_FILE

    # A second file closes the request.
    closed = list(original)
    closed[column["STATUS"]] = "CLOSED"
    write_csv(folder / "csb_x.csv", header, [closed])
    second = ingest(runtime, "csb-311", folder)
    project(runtime)
    now = served(runtime, "csb-311", "1049562")
    assert (now["status"], now["status_raw"], now["_partition"], now["_line"]) == (
        "closed", "CLOSED", "csb_x.csv", 2)

    # That file again, holding only another request: 1049562 is the older file's again.
    other = list(rows[0])
    other[column["REQUESTID"]] = "9999001"
    write_csv(folder / "csb_x.csv", header, [other])
    third = ingest(runtime, "csb-311", folder)
    project(runtime)
    assert third.skipped_files == [CSB_FILE]

    record = served(runtime, "csb-311", "1049562")
    assert record["status_raw"] == original[column["STATUS"]] and record["status"] == "open"
    assert record["_partition"] == CSB_FILE
    assert record["_line"] == line_of["1049562"] == 252
    assert record["_source"] == dict(zip(header, original, strict=True))
    assert record["_snapshot_id"] == third.snapshot_id
    assert record["closed_at"] is None and record["ward"] == int(original[column["WARD"]])
    assert {k: v for k, v in record.items() if k != "_snapshot_id"} == {
        k: v for k, v in before.items() if k != "_snapshot_id"}

    versions = history(runtime, "csb-311", "1049562")
    assert [v[:5] for v in versions] == [
        (CSB_FILE, 252, first.snapshot_id, second.snapshot_id, False),
        ("csb_x.csv", 2, second.snapshot_id, third.snapshot_id, False),
        (CSB_FILE, 252, third.snapshot_id, None, False)]
    assert versions[2][5] == versions[0][5] and versions[2][6] == versions[0][6]
    assert versions[2][5]["status_raw"] == "NEW"
    # The unrelated request is added; the fallback is this snapshot's one change.
    assert snapshot_counts(runtime, third.snapshot_id) == (1, 1, 0)
    assert query(runtime, "SELECT count(*) FROM ds_csb_311")[0][0] == len(line_of) + 1


def test_csb_request_is_removed_when_no_file_holds_it(runtime: Runtime,
                                                      tmp_path: Path) -> None:
    folder = tmp_path / "csb"
    folder.mkdir()
    shutil.copy(CSB_SAMPLES / CSB_FILE, folder / CSB_FILE)
    header, rows = read_raw_csv(folder / CSB_FILE)
    new = list(rows[0])
    new[0] = "9999002"
    write_csv(folder / "csb_x.csv", header, [new])
    ingest(runtime, "csb-311", folder)
    project(runtime)
    write_csv(folder / "csb_x.csv", header, [rows[1]])
    third = ingest(runtime, "csb-311", folder)
    project(runtime)
    assert not query(runtime, "SELECT 1 FROM ds_csb_311 WHERE _key = '9999002'")
    assert [v[2:5] for v in history(runtime, "csb-311", "9999002")] == [
        (1, third.snapshot_id, False), (third.snapshot_id, None, True)]
    # rows[1] is now held by both files with the same values: the record stays as it was.
    assert snapshot_counts(runtime, third.snapshot_id) == (0, 0, 1)


def test_csb_fallback_within_one_snapshot(runtime: Runtime, tmp_path: Path) -> None:
    """Both files arrive in one snapshot: the older file's losing row was never written
    to history, so the record is removed rather than served with the dropped values."""
    folder = tmp_path / "csb"
    folder.mkdir()
    shutil.copy(CSB_SAMPLES / CSB_FILE, folder / CSB_FILE)
    header, rows = read_raw_csv(folder / CSB_FILE)
    original = next(r for r in rows if r[0] == "1049562")
    closed = list(original)
    closed[header.index("STATUS")] = "CLOSED"
    write_csv(folder / "csb_x.csv", header, [closed])
    ingest(runtime, "csb-311", folder)
    project(runtime)
    status = query(runtime, "SELECT status_raw, _partition FROM ds_csb_311 "
                            "WHERE _key = '1049562'")[0]
    write_csv(folder / "csb_x.csv", header, [rows[0]])
    ingest(runtime, "csb-311", folder)
    project(runtime)
    after = query(runtime, "SELECT status_raw, _partition FROM ds_csb_311 "
                           "WHERE _key = '1049562'")
    assert status == ("CLOSED", "csb_x.csv")  # published after the older file, it won
    # Never the dropped file's values, nor its name.
    assert after == []
    assert query(runtime, "SELECT deleted, valid_to FROM record_versions "
                          "WHERE key = '1049562' ORDER BY id") == [(False, 2), (True, None)]


def test_crime_row_falls_back_to_the_older_file(runtime: Runtime, tmp_path: Path) -> None:
    folder = tmp_path / "crime"
    folder.mkdir()
    shutil.copy(CRIME_SAMPLES / CRIME_FILE, folder / CRIME_FILE)
    header, rows = read_raw_csv(folder / CRIME_FILE)
    column = {name: i for i, name in enumerate(header)}
    first = ingest(runtime, "slmpd-crime", folder)
    project(runtime)

    # A row whose key is its complaint's only one (no '#2' numbering), from line 11.
    line = 11
    original = rows[line - 2]
    key = query(runtime, "SELECT _key FROM ds_slmpd_crime WHERE _partition = %s "
                         "AND _line = %s", (CRIME_FILE, line))[0][0]
    assert "#" not in key
    before = served(runtime, "slmpd-crime", key)
    assert before["_source"] == dict(zip(header, original, strict=True))

    corrected = list(original)
    corrected[column["Description"]] = "CORRECTED " + original[column["Description"]]
    write_csv(folder / "crime_x.csv", header, [corrected], encoding="cp1252")
    second = ingest(runtime, "slmpd-crime", folder)
    project(runtime)
    now = served(runtime, "slmpd-crime", key)
    assert now["_partition"] == "crime_x.csv" and now["description"].startswith("CORRECTED")

    unrelated = list(rows[0])
    unrelated[column["Complaint"]] = "99-999999"
    write_csv(folder / "crime_x.csv", header, [unrelated], encoding="cp1252")
    third = ingest(runtime, "slmpd-crime", folder)
    project(runtime)

    record = served(runtime, "slmpd-crime", key)
    assert record["description"] == " ".join(original[column["Description"]].split())
    assert (record["_partition"], record["_line"]) == (CRIME_FILE, line)
    assert record["_source"] == dict(zip(header, original, strict=True))
    assert {k: v for k, v in record.items() if k != "_snapshot_id"} == {
        k: v for k, v in before.items() if k != "_snapshot_id"}
    versions = history(runtime, "slmpd-crime", key)
    assert [v[:5] for v in versions] == [
        (CRIME_FILE, line, first.snapshot_id, second.snapshot_id, False),
        ("crime_x.csv", 2, second.snapshot_id, third.snapshot_id, False),
        (CRIME_FILE, line, third.snapshot_id, None, False)]
    assert versions[2][5] == versions[0][5]
    assert snapshot_counts(runtime, third.snapshot_id) == (1, 1, 0)
    assert query(runtime, "SELECT count(*) FROM ds_slmpd_crime WHERE _partition = %s",
                 (CRIME_FILE,))[0][0] == len(rows)


def test_csb_fallback_never_restores_a_row_the_older_file_replaced(runtime: Runtime,
                                                                   tmp_path: Path) -> None:
    """The older file is published again with the row the newer file serves: nothing is
    written for it (unchanged), so its history still holds the row it replaced. Dropping
    the key from the newer file must not bring that replaced row back."""
    folder = tmp_path / "csb"
    folder.mkdir()
    header, rows = read_raw_csv(CSB_SAMPLES / CSB_FILE)
    status = header.index("STATUS")
    original = next(r for r in rows if r[0] == "1049562")
    closed = list(original)
    closed[status] = "CLOSED"
    write_csv(folder / CSB_FILE, header, [original, rows[0]])
    ingest(runtime, "csb-311", folder)
    project(runtime)
    write_csv(folder / "csb_x.csv", header, [closed])
    ingest(runtime, "csb-311", folder)
    project(runtime)
    write_csv(folder / CSB_FILE, header, [closed, rows[1]])
    ingest(runtime, "csb-311", folder)
    project(runtime)
    write_csv(folder / "csb_x.csv", header, [rows[2]])
    ingest(runtime, "csb-311", folder)
    project(runtime)
    after = query(runtime, "SELECT status_raw, _partition, _line FROM ds_csb_311 "
                           "WHERE _key = '1049562'")
    assert after == []  # the older file's current row was never written: removed
    assert ("NEW",) not in query(runtime, "SELECT values ->> 'status_raw' FROM record_versions "
                                          "WHERE key = '1049562' AND valid_to IS NULL")
