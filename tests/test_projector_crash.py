"""A projector killed with SIGKILL mid-stream resumes to exactly the clean result."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from stldata.runtime import Runtime

from conftest import _fresh_database, _runtime, ingest, make_settings, project, query

FINGERPRINT = """
    SELECT count(*), md5(string_agg(_key || ':' || _hash || ':' || coalesce(count::text, '')
                                    || ':' || _snapshot_id, ',' ORDER BY _key))
    FROM ds_slmpd_crime"""
HISTORY = "SELECT count(*), count(DISTINCT (key, valid_from)) FROM record_versions"
QUARANTINE = """
    SELECT source_file, line, column_name, raw_value, reason FROM quarantine
    ORDER BY source_file, line, column_name, reason, raw_value"""
SNAPSHOTS = "SELECT id, status, added, changed, deleted, row_count FROM snapshots ORDER BY id"


def start_projector(runtime: Runtime) -> subprocess.Popen[bytes]:
    env = {**os.environ, "STLDATA_DATABASE_URL": runtime.database.url,
           "STLDATA_HOME": str(runtime.settings.home), "STLDATA_BATCH_SIZE": "500",
           "STLDATA_POLL_INTERVAL": "0.05", "STLDATA_LOG_LEVEL": "WARNING"}
    return subprocess.Popen([sys.executable, "-m", "stldata.cli", "project"], env=env)


def wait_for(runtime: Runtime, sql: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if query(runtime, sql)[0][0]:
                return
        except psycopg.errors.UndefinedTable:
            pass  # the projector has not created its tables yet
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {sql}")


@pytest.fixture
def clean_runtime(server_url: str, tmp_path: Path) -> Iterator[Runtime]:
    """A second database, loaded without any crash: the reference result."""
    for url in _fresh_database(server_url):
        runtime = _runtime(make_settings(url, tmp_path / "clean"))
        ingest(runtime, "slmpd-crime")
        ingest(runtime, "csb-311")
        project(runtime)
        yield runtime


def test_sigkill_mid_stream_then_restart_equals_a_clean_run(
        runtime: Runtime, clean_runtime: Runtime) -> None:
    ingest(runtime, "slmpd-crime")
    ingest(runtime, "csb-311")

    # Killed while staging: some batches committed, the one in flight lost.
    first = start_projector(runtime)
    wait_for(runtime, "SELECT count(*) > 2000 FROM stage_ds_slmpd_crime")
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert query(runtime, "SELECT count(*) FROM stage_ds_slmpd_crime")[0][0] > 0

    # Killed again later, while applying a snapshot or staging the next one.
    second = start_projector(runtime)
    wait_for(runtime, "SELECT count(*) > 0 FROM snapshots WHERE status = 'committed'")
    second.send_signal(signal.SIGKILL)
    second.wait()

    project(runtime)

    assert query(runtime, "SELECT count(*) FROM stage_ds_slmpd_crime")[0][0] == 0
    for sql in (FINGERPRINT, HISTORY, QUARANTINE, SNAPSHOTS):
        assert query(runtime, sql) == query(clean_runtime, sql), sql
    versions = query(runtime, HISTORY)[0]
    assert versions[0] == versions[1], "a version was written twice"
