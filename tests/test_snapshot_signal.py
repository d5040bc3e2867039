"""The snapshot signal: each API process keeps the snapshot state behind its validators and
drops it when PostgreSQL notifies a change (stldata.store.snapshot_signal).

Against a real PostgreSQL: the notifications come from the migration's triggers, written
by another connection than the cache's, as another process's projector would.
"""

from __future__ import annotations

import gc
import itertools
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from stldata.api.app import create_app
from stldata.runtime import Runtime
from stldata.store.snapshot_signal import (
    HEARTBEAT_SECONDS,
    LISTENER_NAME,
    WAKE_SECONDS,
    SnapshotStateCache,
    announce_local_change,
)

from conftest import ingest, project, wait_for

CRIME = "/api/v1/datasets/slmpd-crime"


def _listeners(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
            "AND datname = current_database()", (LISTENER_NAME,)).fetchone()
    return int(row[0]) if row else 0


def _write(url: str, statement: str) -> None:
    """A statement from a connection of its own, committed: another writer's."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement)


@pytest.fixture
def cache(runtime: Runtime) -> Iterator[SnapshotStateCache[int]]:
    states: SnapshotStateCache[int] = SnapshotStateCache(runtime.database.url, seconds=60)
    states.lookup(None)  # starts its listener
    wait_for("the listener", lambda: states.listening, 10)
    yield states


def _changed_value(cache: SnapshotStateCache[int], load: Any, old: int) -> int:
    """The value of "crime" once it is no longer ``old`` (after the notification)."""
    def fresh() -> int | None:
        value = cache.read("crime", load)
        return None if value == old else value
    return wait_for("the notification", fresh, 10)


def _counter() -> Any:
    calls = itertools.count(1)
    return lambda: next(calls)


def test_a_value_is_kept_until_a_snapshot_changes(cache: SnapshotStateCache[int],
                                                  runtime: Runtime) -> None:
    load = _counter()
    assert cache.read("crime", load) == 1
    assert cache.read("crime", load) == 1  # kept: not read again
    assert cache.read(None, load) == 2  # another key is read on its own

    # A statement on snapshots, even one that changes no row, notifies after its commit.
    _write(runtime.database.url, "UPDATE snapshots SET status = status WHERE false")
    assert _changed_value(cache, load, 1) == 3
    assert cache.read("crime", load) == 3

    # So does one on the pinned column types.
    _write(runtime.database.url, "DELETE FROM column_types WHERE false")
    assert _changed_value(cache, load, 3) == 4


def test_a_value_read_before_a_change_is_not_kept(cache: SnapshotStateCache[int],
                                                  runtime: Runtime) -> None:
    # The reader read the state, then a commit was notified before it stored the value.
    token, value = cache.lookup("crime")
    assert value is None
    before = cache._generation
    _write(runtime.database.url, "UPDATE snapshots SET status = status WHERE false")
    wait_for("the notification", lambda: cache._generation != before, 10)
    cache.store(token, "crime", 1)
    assert cache.lookup("crime")[1] is None

    # The same for a commit announced by this process.
    token, _ = cache.lookup("crime")
    announce_local_change()
    cache.store(token, "crime", 2)
    assert cache.lookup("crime")[1] is None
    assert cache.read("crime", lambda: 3) == 3
    assert cache.read("crime", lambda: 4) == 3


def test_a_change_in_this_process_is_seen_at_once(cache: SnapshotStateCache[int]) -> None:
    assert cache.read("crime", lambda: 1) == 1
    announce_local_change()
    assert cache.read("crime", lambda: 2) == 2


def test_values_expire(runtime: Runtime) -> None:
    states: SnapshotStateCache[int] = SnapshotStateCache(runtime.database.url, seconds=0.3)
    states.lookup(None)
    wait_for("the listener", lambda: states.listening, 10)
    load = _counter()
    assert states.read("crime", load) == 1
    assert states.read("crime", load) == 1
    time.sleep(0.4)
    assert states.read("crime", load) == 2


def test_zero_seconds_reads_every_time_and_listens_to_nothing(runtime: Runtime) -> None:
    states: SnapshotStateCache[int] = SnapshotStateCache(runtime.database.url, seconds=0)
    load = _counter()
    assert [states.read("crime", load) for _ in range(3)] == [1, 2, 3]
    time.sleep(0.2)
    assert not states.listening
    assert _listeners(runtime.database.url) == 0


def test_nothing_is_cached_while_the_listener_is_away(cache: SnapshotStateCache[int],
                                                      runtime: Runtime) -> None:
    load = _counter()
    assert cache.read("crime", load) == 1
    _write(runtime.database.url,
           "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
           f"WHERE application_name = '{LISTENER_NAME}' AND datname = current_database()")
    wait_for("the listener to notice", lambda: not cache.listening, 10)
    # Without a listener a commit could go unnoticed: every read goes to the database.
    assert cache.read("crime", load) == 2
    assert cache.read("crime", load) == 3

    wait_for("the listener to reconnect", lambda: cache.listening, 15)
    assert cache.read("crime", load) == 4
    assert cache.read("crime", load) == 4
    _write(runtime.database.url, "UPDATE snapshots SET status = status WHERE false")
    assert _changed_value(cache, load, 4) == 5


def test_a_listener_that_hangs_is_not_trusted(cache: SnapshotStateCache[int],
                                              runtime: Runtime) -> None:
    """A connection gone half-open hangs the listener without an error: a commit would go
    unheard. Its backend is frozen here (SIGSTOP), as a lost network would leave it."""
    with psycopg.connect(runtime.database.url, autocommit=True) as conn:
        row = conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s "
                           "AND datname = current_database()", (LISTENER_NAME,)).fetchone()
    assert row is not None
    try:
        os.kill(row[0], signal.SIGSTOP)
    except OSError:
        pytest.skip("the test server's processes are not on this machine")
    try:
        load = _counter()
        assert cache.read("crime", load) == 1
        # Within a few seconds the silence is noticed: every read goes to the database.
        wait_for("the hang to be noticed", lambda: not cache.listening,
                 HEARTBEAT_SECONDS + WAKE_SECONDS + 5)
        assert cache.read("crime", load) == 2
        assert cache.read("crime", load) == 3
    finally:
        os.kill(row[0], signal.SIGCONT)
    wait_for("the listener to be heard again", lambda: cache.listening, 15)
    assert cache.read("crime", load) == 4
    assert cache.read("crime", load) == 4


def test_a_forked_process_starts_its_own_listener(cache: SnapshotStateCache[int]) -> None:
    assert cache.read("crime", lambda: 1) == 1
    # What a child forked after the parent's first use sees: the parent's flag and
    # entries, but no thread. It must not trust them.
    cache._pid = -1
    assert cache.lookup("crime")[1] is None
    wait_for("the child's listener", lambda: cache.listening, 10)
    assert cache.read("crime", lambda: 2) == 2


def test_the_listener_ends_with_its_cache(runtime: Runtime) -> None:
    states: SnapshotStateCache[int] = SnapshotStateCache(runtime.database.url, seconds=60)
    states.lookup(None)
    wait_for("the listener", lambda: _listeners(runtime.database.url) == 1, 10)
    del states
    gc.collect()
    wait_for("the listener to close", lambda: _listeners(runtime.database.url) == 0, 10)


# -- through the read API ------------------------------------------------------------


def _snapshot_reads(app: Any) -> list[str]:
    """Statements of the app's engine that read the snapshot state, as they run."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "FROM snapshots WHERE status = 'committed'" in statement:
            seen.append(statement)

    sa.event.listen(app.extensions["stldata.read_model"].engine, "before_cursor_execute",
                    record)
    return seen


def test_the_api_reads_the_state_once_and_follows_other_writers(runtime: Runtime) -> None:
    # Entries kept far longer than the wait below: only the notification can end it.
    client, reads = _served(runtime, validator_cache_seconds=600)
    first = client.get(CRIME + "/records?limit=3")
    etag = first.headers["ETag"]
    model = client.application.extensions["stldata.read_model"]
    wait_for("the listener", lambda: model.snapshot_states.listening, 10)
    client.get(CRIME + "/records?limit=3")
    count = len(reads)
    for _ in range(3):
        assert client.get(CRIME + "/records?limit=3").headers["ETag"] == etag
    # A 304 costs no statement at all.
    assert client.get(CRIME + "/records?limit=3",
                      headers={"If-None-Match": etag}).status_code == 304
    assert len(reads) == count

    # Another process commits: here, a column type pinned by hand, part of the state.
    _write(runtime.database.url, "INSERT INTO column_types VALUES ('slmpd-crime', "
           "'not_a_column', 'text', (SELECT max(id) FROM snapshots))")
    changed = wait_for("the new validators", lambda: client.get(
        CRIME + "/records?limit=3", headers={"If-None-Match": etag}).status_code == 200, 3)
    assert changed
    assert client.get(CRIME + "/records?limit=3").headers["ETag"] != etag


def _served(runtime: Runtime, **settings: Any) -> tuple[Any, list[str]]:
    """A test client of the API on crime records, with ``settings`` changed, and the list
    its reads of the snapshot state go to."""
    ingest(runtime, "slmpd-crime")
    project(runtime)
    app = create_app(Runtime(runtime.settings.model_copy(update=settings), runtime.catalog,
                             runtime.database))
    return app.test_client(), _snapshot_reads(app)


def test_the_change_feed_reads_the_state_on_every_poll(runtime: Runtime) -> None:
    client, reads = _served(runtime)
    for _ in range(3):
        assert client.get(CRIME + "/changes?limit=1").status_code == 200
    assert len(reads) == 3


def test_the_cache_can_be_turned_off(runtime: Runtime) -> None:
    client, reads = _served(runtime, validator_cache_seconds=0)
    for _ in range(3):
        assert client.get(CRIME + "/records?limit=3").status_code == 200
    assert len(reads) == 3
    assert _listeners(runtime.database.url) == 0


@pytest.mark.parametrize("value", ["-1", "abc", "nan", "inf", "1e400", "86401"])
def test_a_bad_cache_time_is_refused_by_name(value: str) -> None:
    from pydantic import ValidationError

    from stldata.settings import Settings

    with pytest.raises(ValidationError, match="validator_cache_seconds"):
        Settings(validator_cache_seconds=value, _env_file=None)  # type: ignore[arg-type]


def test_within_follows_the_neighborhoods_too(runtime: Runtime) -> None:
    """An answer filtered by ``within=neighborhood:`` depends on the neighborhoods'
    polygons: their snapshots are in its validators, and it is never pinned."""
    ingest(runtime, "stl-neighborhoods")
    client, _reads = _served(runtime, validator_cache_seconds=600)
    within = CRIME + "/records?within=neighborhood:Carondelet&limit=2"
    plain = CRIME + "/records?limit=2"
    sid = client.get(plain).get_json()["snapshot_id"]
    etags = {url: client.get(url).headers["ETag"] for url in (within, plain)}
    pinned = client.get(within + f"&as_of={sid}")
    assert pinned.status_code == 200
    assert "immutable" not in pinned.headers["Cache-Control"]

    # The neighborhoods change (a type pinned by hand stands for a new snapshot).
    _write(runtime.database.url, "INSERT INTO column_types VALUES ('stl-neighborhoods', "
           "'not_a_column', 'text', (SELECT max(id) FROM snapshots))")
    assert wait_for("new validators for within", lambda: client.get(
        within, headers={"If-None-Match": etags[within]}).status_code == 200, 3)
    # An answer that does not read them keeps its validators.
    assert client.get(plain, headers={"If-None-Match": etags[plain]}).status_code == 304
