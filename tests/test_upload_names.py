"""Uploads to the command API keep the file's real name, which is its partition.

Re-uploading a workbook the catalog source already published must replace that workbook's
records, not add a renamed copy beside them; names a file cannot have are refused, named.
"""

from __future__ import annotations

import csv
import io
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import python_calamine

from stldata.command.app import create_command_app
from stldata.command.keys import KeyStore
from stldata.runtime import Runtime
from stldata.settings import PROJECT_ROOT

from conftest import CSB_SAMPLES, project, query, wait_for

UCITY = PROJECT_ROOT / "data" / "ucity-crime"
NORTH_EAST = UCITY / "North East Crime Report 2015.xlsx"
SOUTH_WEST = UCITY / "South West Crime Report 2015.xlsx"
CSB_2009 = CSB_SAMPLES / "csb_2009.csv"
MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august",
          "september", "october", "november", "december")


@dataclass
class Command:
    runtime: Runtime
    client: Any
    token: str

    def upload(self, dataset_id: str, *files: tuple[bytes, str]) -> Any:
        return self.client.post(
            f"/api/v1/datasets/{dataset_id}/ingest",
            headers={"Authorization": f"Bearer {self.token}"},
            data={"file": [(io.BytesIO(body), name) for body, name in files]})

    def raw_upload(self, dataset_id: str, body: bytes, disposition: str | bytes) -> Any:
        """A multipart body written by hand, for file names as a browser sends them."""
        if isinstance(disposition, str):
            disposition = disposition.encode()
        payload = (b"--b\r\nContent-Disposition: form-data; name=\"file\"; "
                   + disposition + b"\r\n\r\n" + body + b"\r\n--b--\r\n")
        return self.client.post(f"/api/v1/datasets/{dataset_id}/ingest", data=payload,
                                content_type="multipart/form-data; boundary=b",
                                headers={"Authorization": f"Bearer {self.token}"})

    def wait(self, response: Any) -> dict[str, Any]:
        assert response.status_code == 202, response.get_json()
        location = response.headers["Location"]

        def ended() -> dict[str, Any] | None:
            run: dict[str, Any] = self.client.get(
                location, headers={"X-API-Key": self.token}).get_json()
            return run if run["state"] not in ("queued", "running") else None
        return wait_for(f"the ingest at {location}", ended, 120)


@pytest.fixture
def command(runtime: Runtime) -> Command:
    app = create_command_app(runtime)
    app.config["TESTING"] = True
    _, token = KeyStore(runtime.database.engine(pool_size=1)).create("test", ["ingest"])
    return Command(runtime, app.test_client(), token)


def street_rows(path: Path) -> int:
    """The rows a person counts in a workbook: on each month sheet, every row naming a
    street with its eight counts (not the titles, the repeated headers or the totals)."""
    workbook = python_calamine.CalamineWorkbook.from_path(str(path))
    count = 0
    for sheet in workbook.sheet_names:
        if sheet.casefold() not in MONTHS:
            continue
        for row in workbook.get_sheet_by_name(sheet).to_python():
            if (isinstance(row[1], str) and row[1] not in ("", "STREET")
                    and all(isinstance(v, int | float) for v in row[2:10])):
                count += 1
    return count


def by_workbook(runtime: Runtime) -> dict[str, int]:
    return {str(w): int(n) for w, n in query(
        runtime, "SELECT workbook, count(*) FROM ds_ucity_crime GROUP BY workbook")}


def test_reupload_of_a_published_workbook_replaces_its_records(command: Command) -> None:
    north_east, south_west = street_rows(NORTH_EAST), street_rows(SOUTH_WEST)
    assert (north_east, south_west) == (12 * 28, 12 * 81)
    catalog = command.wait(command.client.post(
        "/api/v1/datasets/ucity-crime/ingest",
        headers={"Authorization": f"Bearer {command.token}"}))
    assert catalog["state"] == "committed", catalog
    project(command.runtime)
    published = {NORTH_EAST.name: north_east, SOUTH_WEST.name: south_west}
    assert by_workbook(command.runtime) == published

    # The same workbook under its real name (spaces and all) is the same partition with
    # the same bytes: nothing to publish, and the record count stays 1,308.
    again = command.upload("ucity-crime", (NORTH_EAST.read_bytes(), NORTH_EAST.name))
    assert again.get_json()["source"] == f"upload: {NORTH_EAST.name}"
    run = command.wait(again)
    assert run["state"] == "unchanged", run
    project(command.runtime)
    assert by_workbook(command.runtime) == published
    assert sum(published.values()) == 1308

    # New content under that name replaces the workbook's records and leaves the other's:
    # here South West's sheets published as North East (sent with a Windows path, which
    # is dropped).
    replaced = command.wait(command.raw_upload(
        "ucity-crime", SOUTH_WEST.read_bytes(),
        'filename="C:\\\\Users\\\\clerk\\\\North East Crime Report 2015.xlsx"'))
    assert replaced["state"] == "committed", replaced
    assert [f["file"] for f in replaced["files"]] == [NORTH_EAST.name]
    project(command.runtime)
    assert by_workbook(command.runtime) == {NORTH_EAST.name: south_west,
                                            SOUTH_WEST.name: south_west}
    sheets = query(command.runtime, "SELECT DISTINCT sheet FROM ds_ucity_crime "
                                    "WHERE workbook = %s", (NORTH_EAST.name,))
    assert {s for (s,) in sheets} == {m.upper() for m in MONTHS}  # South West's spelling
    partitions = query(command.runtime, "SELECT partition FROM source_files "
                                        "WHERE dataset_id = 'ucity-crime' ORDER BY 1")
    assert partitions == [(NORTH_EAST.name,), (SOUTH_WEST.name,)]


def test_unusual_names_are_kept_as_sent(command: Command) -> None:
    body = CSB_2009.read_bytes()
    longest = "x" * 251 + ".csv"  # 255 bytes: the most a file name may have
    sent = ["csb_é😀.csv", "../../../etc/csb_x.csv", "..csv", "a b  c.csv", longest]
    kept = ["csb_é😀.csv", "csb_x.csv", "..csv", "a b  c.csv", longest]
    response = command.upload("csb-311", *[(body, name) for name in sent])
    assert response.get_json()["source"] == "upload: " + ", ".join(kept)
    run = command.wait(response)
    assert run["state"] == "committed", run
    with CSB_2009.open(newline="", encoding="utf-8") as raw:
        rows = len(list(csv.DictReader(raw)))
    assert {f["file"]: f["rows_read"] for f in run["files"]} == dict.fromkeys(kept, rows)
    partitions = query(command.runtime, "SELECT partition FROM source_files "
                                        "WHERE dataset_id = 'csb-311'")
    assert {p for (p,) in partitions} == set(kept)
    # Nothing of the upload is left on disk, in the upload folder or beside it.
    uploads = command.runtime.settings.state_dir / "uploads"
    assert not uploads.exists() or not any(uploads.rglob("*"))
    assert not (command.runtime.settings.state_dir / "etc").exists()


@pytest.mark.parametrize(("name", "words"), [
    ("", "has no file name"),
    ("csb/", "has no file name"),
    (".", "has no file name"),
    ("..", "has no file name"),
    ("a/..", "has no file name"),
    ("folder/" * 5000, "has no file name"),
    ("csb\x00.csv", "control characters"),
    ("csb\x01.csv", "control characters"),
    ("csb\x7f.csv", "control characters"),
    ("x" * 252 + ".csv", "256 bytes long; the limit is 255"),
    ("é" * 126 + ".csv", "256 bytes long; the limit is 255"),  # 130 characters
])
def test_names_a_file_cannot_have_are_refused(command: Command, name: str,
                                              words: str) -> None:
    response = command.upload("csb-311", (CSB_2009.read_bytes(), name))
    assert response.status_code == 400, response.get_json()
    assert response.mimetype == "application/problem+json"
    problem = response.get_json()
    assert words in problem["detail"]
    assert len(problem["detail"]) < 300  # a long name is cut short, not echoed whole
    assert problem["invalid_params"][0]["name"] == "file"
    assert query(command.runtime, "SELECT count(*) FROM ingest_jobs")[0][0] == 0
    uploads = command.runtime.settings.state_dir / "uploads"
    assert not uploads.exists() or not any(uploads.iterdir())


@pytest.mark.parametrize(("disposition", "kept"), [
    # As a browser on Windows writes it: backslashes as they are, not escaped.
    ('filename="C:\\Users\\me\\csb_2009.csv"', "csb_2009.csv"),
    # As an HTTP quoted string, backslashes escaped.
    ('filename="C:\\\\Users\\\\me\\\\csb_2009.csv"', "csb_2009.csv"),
    ('filename="/home/me/csb_2009.csv"', "csb_2009.csv"),
    # A quote in the name, escaped both ways clients do.
    ('filename="csb \\"a\\" %22b%22.csv"', 'csb "a" "b".csv'),
    # RFC 5987: percent-encoded UTF-8 of C:\dir\csb_é.csv.
    ("filename*=UTF-8''C%3A%5Cdir%5Ccsb_%C3%A9.csv", "csb_é.csv"),
])
def test_a_raw_client_path_keeps_its_last_segment(command: Command, disposition: str,
                                                  kept: str) -> None:
    response = command.raw_upload("csb-311", CSB_2009.read_bytes(), disposition)
    assert response.status_code == 202, response.get_json()
    assert response.get_json()["source"] == f"upload: {kept}"
    run = command.wait(response)
    assert run["state"] == "committed", run
    assert [f["file"] for f in run["files"]] == [kept]
    partitions = query(command.runtime, "SELECT partition FROM source_files "
                                        "WHERE dataset_id = 'csb-311'")
    assert partitions == [(kept,)]


def test_a_name_in_either_unicode_spelling_is_one_partition(command: Command) -> None:
    nfc = "Nörth Éast 2015 ü.xlsx"
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfd != nfc and len(nfd) == len(nfc) + 3  # three combining marks
    body = NORTH_EAST.read_bytes()
    first = command.wait(command.upload("ucity-crime", (body, nfd)))
    assert first["state"] == "committed", first
    assert [f["file"] for f in first["files"]] == [nfc]
    # The same bytes under the composed spelling are the same partition: nothing new.
    again = command.wait(command.raw_upload("ucity-crime", body, f'filename="{nfc}"'))
    assert again["state"] == "unchanged", again
    project(command.runtime)
    assert by_workbook(command.runtime) == {nfc: street_rows(NORTH_EAST)}
    partitions = query(command.runtime, "SELECT partition FROM source_files "
                                        "WHERE dataset_id = 'ucity-crime'")
    assert partitions == [(nfc,)]


@pytest.mark.parametrize(("disposition", "words"), [
    (b'filename="csb\n2009.csv"', "no readable file name"),
    (b'filename="csb\r2009.csv"', "no readable file name"),
    (b'filename="csb\r\n2009.csv"', "no readable file name"),
    (b'filename="csb\n\n2009.csv"', "no readable file name"),
    ('filename="csb_é.csv"'.encode("latin-1"), "file name is unreadable"),
    (b'filename="csb_\xff\xfe.csv"', "file name is unreadable"),
])
def test_an_unreadable_raw_name_is_refused_naming_it(command: Command, disposition: bytes,
                                                     words: str) -> None:
    response = command.raw_upload("csb-311", CSB_2009.read_bytes(), disposition)
    assert response.status_code == 400, response.get_json()
    problem = response.get_json()
    assert words in problem["detail"]
    assert "needs one or more" not in problem["detail"]
    assert problem["invalid_params"][0]["name"] == "file"
    assert query(command.runtime, "SELECT count(*) FROM ingest_jobs")[0][0] == 0
