"""What the command line prints: `stldata status` in columns whatever the dataset ids,
and `stldata up` reporting each ingest once."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from stldata.runtime import Runtime
from stldata.settings import PROJECT_ROOT

from conftest import (
    Spawned,
    free_port,
    ingest,
    invoke_cli,
    project,
    query,
    stldata_env,
    wait_for,
)


def test_status_columns_line_up_for_long_ids(runtime: Runtime,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    ingest(runtime, "csb-311")
    project(runtime)
    result = invoke_cli(monkeypatch, ["status"], HOME=str(runtime.settings.home),
                        DATABASE_URL=runtime.database.url)
    assert result.exit_code == 0, result.output
    *lines, control, dead = result.stdout.splitlines()  # log lines go to stderr
    assert (control, dead) == ("control events not yet applied: 0", "dead letters: 0")
    ids = [d.id for d in runtime.catalog]
    assert [line.split()[0] for line in lines] == ids
    longest = max(ids, key=len)
    assert longest == "slmpd-neighborhood-districts"  # 28 characters, over the old 24
    # Every column starts at the same place on every line.
    for word in ("last snapshot", "pending", "lag"):
        assert len({line.index(f" {word} ") for line in lines}) == 1, (word, lines)
    assert lines[0].index(" last snapshot ") == len(longest) + 1
    snapshot = query(runtime, "SELECT id FROM snapshots WHERE dataset_id = 'csb-311' "
                              "AND status = 'committed'")[0][0]
    csb = next(line for line in lines if line.startswith("csb-311 "))
    assert csb.split("last snapshot")[1].split()[0] == str(snapshot)
    assert all(line.split("last snapshot")[1].split()[0] == "-"
               for line in lines if not line.startswith("csb-311 "))



def _run_up(runtime: Runtime, tmp_path: Path, log: Path, level: str) -> str:
    """`stldata up` on a catalog of two datasets, until it serves; its whole output."""
    catalog = tmp_path / "catalog"
    if not catalog.exists():
        catalog.mkdir()
        for name in ("csb-311.toml", "ucity-crime.toml"):
            shutil.copy(PROJECT_ROOT / "catalog" / name, catalog / name)
    env = {**stldata_env(runtime, tmp_path / "home", STLDATA_CATALOG_DIR=str(catalog)),
           "STLDATA_LOG_LEVEL": level}
    up = Spawned(["up", "--port", str(free_port()), "--command-port", str(free_port())],
                 env, log)
    try:
        wait_for("the read API", lambda: "Ctrl-C stops" in up.text(), 180, up)
    finally:
        up.shut_down()
    return up.text()


def test_up_reports_each_ingest_once(runtime: Runtime, tmp_path: Path) -> None:
    first = _run_up(runtime, tmp_path, tmp_path / "up.log", "INFO")
    csb_rows = 0
    for path in (PROJECT_ROOT / "data" / "csb-311").glob("*.csv"):
        with path.open(newline="", encoding="utf-8") as raw:
            csb_rows += len(list(csv.DictReader(raw)))
    # ucity-crime: 28 street rows a month in North East, 81 in South West (see
    # tests/test_format_xlsx.py, which reads them off the workbooks).
    for dataset, rows in (("csb-311", csb_rows), ("ucity-crime", 12 * 81 + 12 * 28)):
        lines = [line for line in first.splitlines() if f"{dataset}: snapshot " in line
                 and " rows read" in line]
        assert len(lines) == 1, first
        assert f"{rows} rows read" in lines[0]

    # With INFO hidden, the summaries are printed instead, still once each.
    again = _run_up(runtime, tmp_path, tmp_path / "up-again.log", "WARNING")
    for dataset, pattern in (("csb-311", "*.csv"), ("ucity-crime", "*.xlsx")):
        files = len(list((PROJECT_ROOT / "data" / dataset).glob(pattern)))
        lines = [line for line in again.splitlines() if line.startswith(f"{dataset}: ")]
        assert lines == [f"{dataset}: source unchanged ({files} files), no new snapshot"], again
