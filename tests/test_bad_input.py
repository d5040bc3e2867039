"""Bad input gets a clear error or a quarantine entry, and never loses stored data."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stldata.runtime import Runtime

from conftest import CRIME_SAMPLES, ROOT, ingest, project, query

GOOD = "january2017.csv"


def run_cli(runtime: Runtime, *args: str, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STLDATA_DATABASE_URL": runtime.database.url,
           "STLDATA_HOME": str(runtime.settings.home), "STLDATA_LOG_LEVEL": "WARNING",
           **(env or {})}
    return subprocess.run([sys.executable, "-m", "stldata.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def stored(runtime: Runtime) -> Runtime:
    ingest(runtime, "slmpd-crime", CRIME_SAMPLES / GOOD)
    project(runtime)
    return runtime


def state(runtime: Runtime) -> tuple[object, ...]:
    return query(runtime, "SELECT count(*), sum(count), max(_snapshot_id), "
                          "(SELECT count(*) FROM record_versions) FROM ds_slmpd_crime")[0]


def header_line() -> bytes:
    return (CRIME_SAMPLES / GOOD).read_bytes().split(b"\r\n", 1)[0].lstrip(b"\xef\xbb\xbf")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "file is empty"),
        (None, "header but no data rows"),
        (b"PK\x03\x04\x14\x00\x00\x00\x08\x00garbage\xff\xfe", "binary content"),
        (b"\x89\xb3\xfa\x10\xe2,\xcc\x81\n\x9a\xbb,\x01\x02\n", "unknown column set"),
        (b"Name,Age,Town\r\nAnn,34,Ferguson\r\n", "unknown column set"),
    ],
    ids=["empty", "header-only", "binary", "binary-without-nul", "unknown-columns"],
)
def test_unusable_files_fail_clearly_and_keep_stored_data(
        stored: Runtime, tmp_path: Path, content: bytes | None, message: str) -> None:
    before = state(stored)
    bad = tmp_path / "february2017.csv"
    bad.write_bytes(header_line() + b"\r\n" if content is None else content)

    result = run_cli(stored, "ingest", "slmpd-crime", "--source", str(bad))
    project(stored)

    assert result.returncode == 1, result.stderr
    assert message in result.stderr and "february2017.csv" in result.stderr
    assert "Traceback" not in result.stderr
    assert state(stored) == before


def test_missing_source_is_named(stored: Runtime, tmp_path: Path) -> None:
    result = run_cli(stored, "ingest", "slmpd-crime", "--source", str(tmp_path / "nope.csv"))
    assert result.returncode == 1
    assert "nope.csv: no such file or folder" in result.stderr


def test_unknown_dataset_is_named(stored: Runtime) -> None:
    result = run_cli(stored, "ingest", "no-such-dataset")
    assert result.returncode == 1
    assert "unknown dataset 'no-such-dataset'" in result.stderr


def test_one_bad_file_in_a_folder_publishes_nothing(stored: Runtime, tmp_path: Path) -> None:
    before = state(stored)
    folder = tmp_path / "months"
    folder.mkdir()
    shutil.copy(CRIME_SAMPLES / "may2017.csv", folder / "may2017.csv")
    (folder / "june2017.csv").write_bytes(b"")

    result = run_cli(stored, "ingest", "slmpd-crime", "--source", str(folder))
    project(stored)

    assert result.returncode == 1 and "june2017.csv: file is empty" in result.stderr
    assert state(stored) == before
    assert query(stored, "SELECT count(*) FROM snapshots")[0][0] == 1


def test_truncated_last_line_is_quarantined_and_the_rest_loads(stored: Runtime,
                                                               tmp_path: Path) -> None:
    data = (CRIME_SAMPLES / "may2017.csv").read_bytes().rstrip(b"\r\n")
    cut = data[: data.rindex(b"\r\n") + 40]  # the last row stops after 40 bytes
    path = tmp_path / "may2017.csv"
    path.write_bytes(cut)

    result = run_cli(stored, "ingest", "slmpd-crime", "--source", str(path))
    project(stored)

    assert result.returncode == 0, result.stderr
    assert "1 quarantined" in result.stdout
    rows = query(stored, "SELECT count(*) FROM ds_slmpd_crime WHERE _partition = %s",
                 ("may2017.csv",))[0][0]
    assert rows == 4548 - 1
    entry = query(stored, "SELECT source_file, line, reason, raw_value FROM quarantine "
                          "WHERE snapshot_id = 2")
    assert len(entry) == 1
    assert entry[0][0] == "may2017.csv" and entry[0][1] == 4549
    assert "fields but the header has 26" in entry[0][2] and entry[0][3]


def test_a_failure_midway_aborts_the_snapshot(stored: Runtime, tmp_path: Path) -> None:
    """Good rows first, garbage later: the partial snapshot never reaches the read model."""
    before = state(stored)
    path = tmp_path / "may2017.csv"
    good = (CRIME_SAMPLES / "may2017.csv").read_bytes()
    path.write_bytes(good + b"\x00\x00garbage\r\n")
    nul_line = good.count(b"\n") + 1  # the line after the good ones

    result = run_cli(stored, "ingest", "slmpd-crime", "--source", str(path))
    project(stored)

    assert result.returncode == 1 and f"text with a NUL byte at line {nul_line} " in result.stderr
    assert state(stored) == before
    status = query(stored, "SELECT status, reason FROM snapshots WHERE id = 2")[0]
    assert status[0] == "aborted" and f"NUL byte at line {nul_line} " in status[1]
    assert query(stored, "SELECT count(*) FROM stage_ds_slmpd_crime")[0][0] == 0
    assert query(stored, "SELECT count(*) FROM quarantine WHERE snapshot_id = 2")[0][0] == 0

    # Once fixed, the same file name loads: the failed run left nothing behind.
    shutil.copy(CRIME_SAMPLES / "may2017.csv", path)
    assert run_cli(stored, "ingest", "slmpd-crime", "--source", str(path)).returncode == 0
    project(stored)
    assert query(stored, "SELECT count(*) FROM ds_slmpd_crime WHERE _partition = %s",
                 ("may2017.csv",))[0][0] == 4548


def test_a_broken_row_mid_file_loses_only_that_row(stored: Runtime, tmp_path: Path) -> None:
    data = (CRIME_SAMPLES / "may2017.csv").read_bytes().split(b"\r\n")
    # A bare carriage return inside an unquoted field of line 51 (a csv.Error).
    data[50] = data[50].replace(b",", b",\r", 1)
    path = tmp_path / "may2017.csv"
    path.write_bytes(b"\r\n".join(data))

    result = run_cli(stored, "ingest", "slmpd-crime", "--source", str(path))
    project(stored)

    assert result.returncode == 0, result.stderr
    rows = query(stored, "SELECT count(*) FROM ds_slmpd_crime WHERE _partition = %s",
                 ("may2017.csv",))[0][0]
    assert rows == 4548 - 1
    reasons = query(stored, "SELECT line, reason FROM quarantine WHERE snapshot_id = 2")
    assert reasons == [(51, "not valid CSV: a bare carriage return (CR) inside an unquoted "
                            "field")]


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["ingest", "slmpd-crime", "--source", "http://127.0.0.1:abc/x.csv"], {},
         "not a valid URL"),
        (["ingest", "slmpd-crime", "--source", "ftp://127.0.0.1/x.csv"], {},
         "ftp:// URLs are not supported"),
        (["ingest", "slmpd-crime", "--source", ""], {}, "--source: is empty"),
        (["datasets"], {"STLDATA_BATCH_SIZE": "0"}, "STLDATA_BATCH_SIZE"),
        (["datasets"], {"STLDATA_LOG_LEVEL": "LOUD"}, "STLDATA_LOG_LEVEL"),
        (["migrate"], {"STLDATA_DATABASE_URL": "postgresql://x@127.0.0.1:1/x"},
         "cannot reach PostgreSQL"),
    ],
)
def test_cli_errors_are_one_line(stored: Runtime, args: list[str], env: dict[str, str],
                                 message: str) -> None:
    result = run_cli(stored, *args, env=env)
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr


def test_an_ingest_killed_midway_is_aborted_by_the_next(stored: Runtime) -> None:
    """A run left 'publishing' (its process died) is aborted and its staging freed."""
    from stldata.log.embedded import EmbeddedProducer
    from stldata.log.events import CONTROL_TOPIC, RecordPut, SnapshotStarted

    producer = EmbeddedProducer(stored.database)
    with stored.database.transaction() as conn:
        conn.execute("INSERT INTO ingest_runs (snapshot_id, dataset_id, state, source) "
                     "VALUES (nextval('snapshot_ids'), 'slmpd-crime', 'publishing', 'x')")
    producer.send(CONTROL_TOPIC, SnapshotStarted(2, "slmpd-crime", "increment", ["x.csv"],
                                                 "x", "2026-01-01T00:00:00+00:00").to_bytes())
    producer.send("stldata.dataset.slmpd-crime", RecordPut(
        2, "slmpd-crime", "k", "x.csv", 2, "h", {}, {"a": "b"}, []).to_bytes(), key=b"k")
    producer.flush()
    producer.close()
    project(stored)
    assert query(stored, "SELECT status FROM snapshots WHERE id = 2")[0][0] == "pending"

    result = run_cli(stored, "ingest", "slmpd-crime", "--source",
                     str(CRIME_SAMPLES / "may2017.csv"))
    project(stored)

    assert result.returncode == 0, result.stderr
    assert query(stored, "SELECT status FROM snapshots WHERE id = 2")[0][0] == "aborted"
    assert query(stored, "SELECT count(*) FROM stage_ds_slmpd_crime")[0][0] == 0
    assert query(stored, "SELECT status FROM snapshots WHERE id = 3")[0][0] == "committed"


def test_one_unusable_dataset_does_not_stop_ingest_all(runtime: Runtime, tmp_path: Path
                                                       ) -> None:
    # A catalog entry whose source cannot be found (as `stldata add` leaves for a file that
    # later moved) beside two good ones: --all ingests the good ones and names the bad one.
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    for name in ("slmpd-neighborhood-districts.toml", "stl-aldermen-meetings.toml"):
        shutil.copy(ROOT / "catalog" / name, catalog / name)
    text = (ROOT / "catalog" / "stl-aldermen-meetings.toml").read_text()
    moved = text.replace('id = "stl-aldermen-meetings"', 'id = "aaa-moved"')
    moved = re.sub(r"samples = \[[^\]]*\]", "samples = []", moved)
    (catalog / "aaa-moved.toml").write_text(moved)

    done = run_cli(runtime, "ingest", "--all", env={"STLDATA_CATALOG_DIR": str(catalog)})
    assert done.returncode == 1
    assert "error: aaa-moved: " in done.stderr and "Traceback" not in done.stderr
    assert "slmpd-neighborhood-districts: snapshot" in done.stdout
    assert "stl-aldermen-meetings: snapshot" in done.stdout
