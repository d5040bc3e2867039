"""Snapshots: no-op re-ingests, changed files, history of versions, deletions."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

from stldata.runtime import Runtime

from conftest import CRIME_SAMPLES, ingest, project, query

MONTH = "january2017.csv"


def crime_folder(tmp_path: Path, *names: str) -> Path:
    folder = tmp_path / "crime"
    folder.mkdir(exist_ok=True)
    for name in names:
        shutil.copy(CRIME_SAMPLES / name, folder / name)
    return folder


def republish_month(folder: Path, prefix: str) -> None:
    """Republish January with one description (line 10) prefixed and one row withdrawn."""
    lines = (folder / MONTH).read_bytes().split(b"\r\n")
    cells = next(csv.reader([lines[10].decode("cp1252")]))
    cells[10] = prefix + cells[10]
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(cells)
    lines[10] = out.getvalue().encode("cp1252")
    del lines[20]
    (folder / MONTH).write_bytes(b"\r\n".join(lines))


def test_identical_sources_make_no_new_snapshot(runtime: Runtime, tmp_path: Path) -> None:
    folder = crime_folder(tmp_path, MONTH, "may2017.csv")
    first = ingest(runtime, "slmpd-crime", folder)
    project(runtime)
    rows_before = query(runtime, "SELECT count(*) FROM ds_slmpd_crime")[0][0]

    again = ingest(runtime, "slmpd-crime", folder)
    project(runtime)

    assert first.snapshot_id is not None and again.snapshot_id is None
    assert query(runtime, "SELECT count(*) FROM snapshots")[0][0] == 1
    assert query(runtime, "SELECT count(*) FROM ds_slmpd_crime")[0][0] == rows_before
    assert query(runtime, "SELECT count(*) FROM record_versions")[0][0] == rows_before


def test_changed_file_makes_a_snapshot_with_history(runtime: Runtime, tmp_path: Path) -> None:
    folder = crime_folder(tmp_path, MONTH, "may2017.csv")
    ingest(runtime, "slmpd-crime", folder)
    project(runtime)
    may_before = query(runtime, "SELECT count(*), max(_snapshot_id) FROM ds_slmpd_crime "
                                "WHERE _partition = 'may2017.csv'")[0]

    republish_month(folder, "CORRECTED ")

    summary = ingest(runtime, "slmpd-crime", folder)
    project(runtime)

    assert summary.snapshot_id == 2 and summary.skipped_files == ["may2017.csv"]
    snap = query(runtime, "SELECT added, changed, deleted, status FROM snapshots "
                          "WHERE id = 2")[0]
    assert snap == (0, 1, 1, "committed")

    key = query(runtime, "SELECT key FROM record_versions WHERE valid_from = 2 "
                         "AND NOT deleted")[0][0]
    versions = query(runtime, "SELECT values ->> 'description', valid_from, valid_to "
                              "FROM record_versions WHERE key = %s ORDER BY valid_from", (key,))
    assert versions[0][1:] == (1, 2) and versions[1][1:] == (2, None)
    assert versions[1][0] == "CORRECTED " + versions[0][0]

    gone = query(runtime, "SELECT key FROM record_versions WHERE deleted AND valid_from = 2")
    assert len(gone) == 1
    assert not query(runtime, "SELECT 1 FROM ds_slmpd_crime WHERE _key = %s", (gone[0][0],))
    history = query(runtime, "SELECT valid_from, valid_to, deleted FROM record_versions "
                             "WHERE key = %s ORDER BY valid_from", (gone[0][0],))
    assert history == [(1, 2, False), (2, None, True)]

    # An increment replaces only its own file: May is untouched.
    assert query(runtime, "SELECT count(*), max(_snapshot_id) FROM ds_slmpd_crime "
                          "WHERE _partition = 'may2017.csv'")[0] == may_before


def test_full_snapshot_deletes_records_missing_from_it(runtime: Runtime, tmp_path: Path
                                                       ) -> None:
    from dataclasses import replace

    dataset = replace(runtime.catalog.get("slmpd-crime"), mode="full")
    runtime.catalog.datasets["slmpd-crime"] = dataset
    ingest(runtime, "slmpd-crime", crime_folder(tmp_path, MONTH))
    project(runtime)
    january = query(runtime, "SELECT count(*) FROM ds_slmpd_crime")[0][0]

    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(CRIME_SAMPLES / "may2017.csv", other / "may2017.csv")
    ingest(runtime, "slmpd-crime", other)
    project(runtime)

    assert query(runtime, "SELECT count(DISTINCT _partition) FROM ds_slmpd_crime")[0][0] == 1
    deleted = query(runtime, "SELECT count(*) FROM record_versions WHERE deleted")[0][0]
    assert deleted == january


def test_duplicate_request_ids_keep_the_last_row_and_say_so(runtime: Runtime) -> None:
    summary = ingest(runtime, "csb-311")
    project(runtime)
    rows = query(runtime, "SELECT count(*) FROM ds_csb_311")[0][0]
    superseded = query(runtime, "SELECT count(*) FROM quarantine "
                                "WHERE reason LIKE 'duplicate key%%'")[0][0]
    assert summary.rows_read == rows + superseded
    assert superseded > 80


def test_a_record_held_by_two_files_survives_one_dropping_it(runtime: Runtime,
                                                            tmp_path: Path) -> None:
    """Request 1055020 is in both the January 2018 file and the mixed-years file; when the
    file that won drops it, the record goes back to the other file's row."""
    from conftest import CSB_SAMPLES

    january, mixed = "csb_requests_2018-01.csv", "csb_testdata_mixed_years.csv"
    ingest(runtime, "csb-311", CSB_SAMPLES / january)
    ingest(runtime, "csb-311", CSB_SAMPLES / mixed)
    project(runtime)
    before = query(runtime, "SELECT count(*) FROM ds_csb_311")[0][0]
    assert query(runtime, "SELECT _partition FROM ds_csb_311 WHERE request_id = 1055020"
                 ) == [(mixed,)]

    def without_request(name: str) -> Path:
        lines = (CSB_SAMPLES / name).read_text().splitlines(keepends=True)
        kept = [line for line in lines if "1055020" not in line]
        assert len(kept) == len(lines) - 1
        (tmp_path / name).write_text("".join(kept))
        return tmp_path / name

    ingest(runtime, "csb-311", without_request(mixed))
    project(runtime)
    january_line = next(n for n, line in enumerate(
        (CSB_SAMPLES / january).read_text().splitlines(), start=1) if "1055020" in line)
    held = query(runtime, "SELECT _partition, _line FROM ds_csb_311 "
                          "WHERE request_id = 1055020")
    assert held == [(january, january_line)]
    assert query(runtime, "SELECT count(*) FROM ds_csb_311")[0][0] == before

    ingest(runtime, "csb-311", without_request(january))
    project(runtime)
    assert query(runtime, "SELECT count(*) FROM ds_csb_311 WHERE request_id = 1055020"
                 )[0][0] == 0
    assert query(runtime, "SELECT count(*) FROM ds_csb_311")[0][0] == before - 1
