"""Telling readers that the read model changed, so they can keep what they derive from it.

Every cached answer of the read API depends on the committed snapshots (its ETag and
Last-Modified come from them; see :mod:`stldata.api.caching`), and reading that state
costs each request a round trip. It changes only when a snapshot's row or a pinned column
type changes, so each API process keeps it in a :class:`SnapshotStateCache` and drops the
cache when told of a change:

- **by PostgreSQL**, for writers anywhere: statement-level triggers on ``snapshots`` and
  ``column_types`` (migration ``0011``) ``NOTIFY`` :data:`CHANNEL` in the writing
  transaction. PostgreSQL delivers a notification only once its transaction is visible,
  so a statement started after the cache was dropped reads the new state. Between the
  commit and the notification's arrival (milliseconds) a process may still answer with
  the previous validators: the same answer a client may reuse for 60 seconds anyway
  (``Cache-Control: max-age=60``);
- **by a writer in the same process** (:func:`announce_local_change`, called by the
  projector after each step), so a process that projects and then reads sees its own
  writes at once.

A listener thread per cache holds one connection (``application_name``
:data:`LISTENER_NAME`). While it is not listening (starting, reconnecting after
PostgreSQL restarted, or hanging on a connection that went half-open: it must be heard
from every few seconds) nothing is cached and every request reads the state, as without
a cache. Entries also expire after ``seconds``: the state includes the planner's row count,
which ANALYZE changes without a snapshot, and a notification lost to a hand edit with
triggers disabled is forgotten within that time.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import psycopg
from psycopg.conninfo import make_conninfo

from stldata.errors import first_line

log = logging.getLogger(__name__)

CHANNEL = "stldata_snapshots"
LISTENER_NAME = "stldata-snapshot-listener"
#: How often the listener wakes without notifications: to check that its connection is
#: alive and that its cache is still in use.
WAKE_SECONDS = 2.0
#: A listener not heard from for this long (its wake and check hang) is not trusted.
HEARTBEAT_SECONDS = 3 * WAKE_SECONDS
#: Longest wait before connecting again after the listener lost PostgreSQL.
MAX_BACKOFF_SECONDS = 30.0
#: TCP keepalives on the listener's connection, so that a peer gone without closing the
#: socket is found in about a minute rather than the system's two hours.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
              "keepalives_count": 3}

T = TypeVar("T")
#: What a lookup hands back to :meth:`SnapshotStateCache.store`: the generations the
#: value was read in.
Token = tuple[int, int]

_local_lock = threading.Lock()
_local_generation = 0
#: Set once this process exits (by an exit hook registered with the first listener).
_exiting = threading.Event()
_exit_hook_registered = False


def announce_local_change() -> None:
    """Drop what every cache in this process holds: a writer here has committed."""
    global _local_generation
    with _local_lock:
        _local_generation += 1


class SnapshotStateCache(Generic[T]):
    """Values read from the snapshot state, by key, kept until the state changes.

    A reader calls :meth:`lookup`; on a miss it reads the state from PostgreSQL and hands
    the value back with the token it got, and :meth:`store` keeps it only if no change
    was announced in between (the read may have seen the state before that change).
    """

    def __init__(self, database_url: str, *, seconds: float) -> None:
        self.database_url = database_url
        self.seconds = seconds
        self._lock = threading.Lock()
        self._entries: dict[str | None, tuple[Token, float, T]] = {}
        self._generation = 0  # bumped by every notification and every (re)connection
        self._listening = False
        #: When the listener last heard from PostgreSQL: a connection that hangs (a
        #: half-open socket) stops it, and its cache must stop trusting it.
        self._heartbeat = 0.0
        self._pid: int | None = None  # the process whose thread listens

    @property
    def enabled(self) -> bool:
        return self.seconds > 0

    @property
    def listening(self) -> bool:
        return (self._listening and self._pid == os.getpid()
                and time.monotonic() - self._heartbeat < HEARTBEAT_SECONDS)

    def lookup(self, key: str | None) -> tuple[Token, T | None]:
        """(token, the cached value or None)."""
        self._ensure_listener()
        token = (self._generation, _local_generation)
        entry = self._entries.get(key)
        if entry is None or not self.listening or entry[0] != token:
            return token, None
        if time.monotonic() - entry[1] > self.seconds:
            return token, None
        return token, entry[2]

    def read(self, key: str | None, load: Callable[[], T]) -> T:
        """The cached value of ``key``, or ``load()``'s, kept when nothing changed since."""
        token, value = self.lookup(key)
        if value is not None:
            return value
        value = load()
        self.store(token, key, value)
        return value

    def store(self, token: Token, key: str | None, value: T) -> None:
        with self._lock:
            if not self.listening or token != (self._generation, _local_generation):
                return
            if len(self._entries) > 4096:  # more keys than any catalog: start over
                self._entries.clear()
            self._entries[key] = (token, time.monotonic(), value)

    # -- the listener thread's side ---------------------------------------------------

    def _changed(self) -> None:
        with self._lock:
            self._generation += 1
            self._entries.clear()

    def _alive(self) -> None:
        now = time.monotonic()
        if now - self._heartbeat >= HEARTBEAT_SECONDS:
            # Readers stopped trusting the listener meanwhile; what was kept before that
            # may have missed a commit whose notification is still on its way.
            self._changed()
        self._heartbeat = now

    def _set_listening(self, listening: bool) -> None:
        with self._lock:
            self._listening = listening
            self._heartbeat = time.monotonic()
            self._generation += 1
            self._entries.clear()

    def _ensure_listener(self) -> None:
        pid = os.getpid()
        if not self.enabled or self._pid == pid:
            return
        with self._lock:
            if self._pid == pid:
                return
            # First use in this process (or in a child forked after the parent's first
            # use, which inherits the flag but not the thread): start listening here.
            self._pid, self._listening = pid, False
            self._entries.clear()
            _register_exit_hook()
        thread = threading.Thread(target=_listen, args=(weakref.ref(self), self.database_url),
                                  name=LISTENER_NAME, daemon=True)
        thread.start()


def _listen(ref: weakref.ref[SnapshotStateCache[Any]], url: str) -> None:
    """Keep the cache told of changes until it is no longer used; reconnect when PostgreSQL
    goes away. Holds the cache only weakly, so an app that is dropped lets it go."""
    backoff, lost, refused = 1.0, False, False
    while (cache := ref()) is not None:
        del cache
        try:
            conn = psycopg.connect(make_conninfo(
                url, application_name=LISTENER_NAME, connect_timeout=10, **KEEPALIVES),
                autocommit=True)
        except psycopg.Error as exc:
            _warn(f"snapshot listener cannot connect to PostgreSQL ({first_line(exc)}); "
                  f"API requests read the snapshot state each time until it can, retrying "
                  f"in {backoff:.0f} s")
            lost = True
            time.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
            continue
        with conn:
            try:
                conn.execute(f"LISTEN {CHANNEL}")
            except psycopg.Error as exc:
                # PostgreSQL answered, and said no: a read replica or a pooler, which
                # will not change its mind soon. Said once, tried again at long intervals.
                if not refused:
                    _warn(f"snapshot listener: PostgreSQL refuses LISTEN ({first_line(exc)})"
                          "; API requests read the snapshot state each time. On a read "
                          "replica or behind a pooler that does not pass LISTEN through, "
                          "set STLDATA_VALIDATOR_CACHE_SECONDS=0 to stop trying")
                refused = True
                time.sleep(MAX_BACKOFF_SECONDS)
                continue
            if (cache := ref()) is None:
                return
            cache._set_listening(True)
            del cache
            if lost or refused:
                log.info("snapshot listener is listening again; API requests reuse the "
                         "snapshot state until a commit")
            backoff, lost, refused = 1.0, False, False
            try:
                if not _relay(ref, conn):
                    return
            except psycopg.Error as exc:
                if (cache := ref()) is None:
                    return
                cache._set_listening(False)
                del cache
                _warn(f"snapshot listener lost PostgreSQL ({first_line(exc)}); API "
                      "requests read the snapshot state each time until it reconnects")
                lost = True
        time.sleep(backoff)
        backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)


def _relay(ref: weakref.ref[SnapshotStateCache[Any]], conn: psycopg.Connection[Any]) -> bool:
    """Pass notifications on until the cache is gone (False) or the connection fails."""
    while True:
        for _notification in conn.notifies(timeout=WAKE_SECONDS):
            if (cache := ref()) is None:
                return False
            cache._changed()
            cache._alive()  # a notification is news from PostgreSQL too
            del cache
        # A server that went away without closing the socket is found here, or, if this
        # hangs, by the cache's heartbeat check.
        conn.execute("SELECT 1")
        if (cache := ref()) is None:
            return False
        cache._alive()
        del cache


def _register_exit_hook() -> None:
    # Registered after the embedded server's own exit handler, so it runs first: the
    # server stopping under the listener is then no news.
    global _exit_hook_registered
    if not _exit_hook_registered:
        _exit_hook_registered = True
        atexit.register(_exiting.set)


def _warn(message: str) -> None:
    # A process that is exiting stops its embedded server under the listener: no news.
    if not _exiting.is_set():
        log.warning(message)
