"""The read API under the production WSGI servers the README documents (granian, gunicorn):
several worker processes on ``stldata.api.wsgi:app``, each with its own snapshot listener.

What a deployment must keep: pages, conditional GETs, a whole streamed export, validators
that follow a commit made elsewhere, and a clean stop on SIGTERM.
"""

from __future__ import annotations

import csv
import io
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import pytest

from stldata.runtime import Runtime

from conftest import (
    Spawned,
    _fresh_database,
    _runtime,
    free_port,
    ingest,
    make_settings,
    project,
    query,
    stldata_env,
    wait_for,
)

CRIME = "/api/v1/datasets/slmpd-crime"

SERVERS = {
    "granian": ["--interface", "wsgi", "--workers", "2", "--blocking-threads", "2",
                "--host", "127.0.0.1", "--port", "{port}", "stldata.api.wsgi:app"],
    "gunicorn": ["--workers", "2", "--threads", "2", "--bind", "127.0.0.1:{port}",
                 "stldata.api.wsgi:app"],
}


@pytest.fixture(scope="module")
def runtime(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    """A database of the module's own: the last test commits to it."""
    for url in _fresh_database(server_url):
        runtime = _runtime(make_settings(url, tmp_path_factory.mktemp("home")))
        ingest(runtime, "slmpd-crime")
        project(runtime)
        yield runtime


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Message, bytes]:
    """(status, headers, body); header names are matched without case, as HTTP says."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - 127.0.0.1
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


@pytest.mark.parametrize("server", sorted(SERVERS))
def test_served_by_a_production_server(server: str, runtime: Runtime, tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = [a.format(port=port) for a in SERVERS[server]]
    # Validators kept far longer than the waits below: only notifications can renew them.
    env = stldata_env(runtime, tmp_path / "home", STLDATA_RATE_LIMIT="",
                      STLDATA_VALIDATOR_CACHE_SECONDS="600")
    spawned = Spawned(args, env, tmp_path / f"{server}.log", module=server)
    try:
        wait_for(f"{server} to answer", lambda: _reachable(base + "/health"), 60, spawned)

        status, headers, body = _get(base + CRIME + "/records?limit=5&order=-date_occur")
        assert status == 200, body[:500]
        assert body.count(b'"_key"') == 5
        etag = headers["ETag"]
        # Whichever worker answers, the same validators, and a 304 for them.
        for _ in range(6):
            status, again, _ = _get(base + CRIME + "/records?limit=5&order=-date_occur",
                                    {"If-None-Match": etag})
            assert status == 304
            assert again["ETag"] == etag

        # The whole dataset, streamed.
        status, headers, body = _get(base + CRIME + "/export.csv")
        assert status == 200
        rows = list(csv.reader(io.StringIO(body.decode("utf-8"))))
        stored = query(runtime, "SELECT count(*) FROM ds_slmpd_crime")[0][0]
        assert len(rows) - 1 == stored > 0

        # A commit made outside the server's processes reaches every worker.
        _execute(runtime, "INSERT INTO column_types VALUES ('slmpd-crime', 'not_a_column', "
                          "'text', (SELECT max(id) FROM snapshots))")
        try:
            def all_changed() -> bool:
                return all(_get(base + CRIME + "/records?limit=5&order=-date_occur",
                                {"If-None-Match": etag})[0] == 200 for _ in range(6))
            assert wait_for("the new validators in every worker", all_changed, 3, spawned)
        finally:
            _execute(runtime, "DELETE FROM column_types WHERE column_name = 'not_a_column'")

        spawned.shut_down(timeout=30)
        assert spawned.proc.returncode == 0, spawned.text()[-3000:]
    finally:
        # SIGTERM first, even when the test failed: a killed server leaves its workers.
        spawned.shut_down(timeout=30)
    assert "Traceback" not in spawned.text(), spawned.text()[-3000:]


def _execute(runtime: Runtime, statement: str) -> None:
    with runtime.database.connect(autocommit=True) as conn:
        conn.execute(statement)  # type: ignore[arg-type]


def _reachable(url: str) -> bool:
    try:
        return _get(url)[0] == 200
    except OSError:
        return False
