"""Fixtures: a real PostgreSQL for the whole session, a fresh database for each test.

The server is the project's embedded one (started from the pip wheel), unless
``STLDATA_TEST_DATABASE_URL`` points at another server to use instead.
"""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from stldata.api.app import create_app
from stldata.catalog import Catalog
from stldata.cli import main as cli_main
from stldata.ingest.ingester import Ingester, IngestSummary
from stldata.runtime import Runtime
from stldata.settings import PROJECT_ROOT, Settings, get_settings
from stldata.store.database import Database
from stldata.store.migrate import upgrade

ROOT = PROJECT_ROOT
CRIME_SAMPLES = ROOT / "data" / "slmpd-crime"
CSB_SAMPLES = ROOT / "data" / "csb-311"


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests build their own settings; a developer's STLDATA_* must not leak in."""
    for name in list(os.environ):
        if name.startswith("STLDATA_") and name != "STLDATA_TEST_DATABASE_URL":
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """URL of the maintenance database of the test server."""
    external = os.environ.get("STLDATA_TEST_DATABASE_URL")
    if external:
        return external
    home = tmp_path_factory.mktemp("pg")
    database = Database.from_settings(Settings(home=home))
    parts = urlsplit(database.url)
    return urlunsplit((parts.scheme, parts.netloc, "/postgres", parts.query, ""))


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, ""))


def _fresh_database(server_url: str) -> Iterator[str]:
    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield _with_database(server_url, name)
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def make_settings(database_url: str, home: Path) -> Settings:
    return Settings(home=home, database_url=database_url, batch_size=2000,
                    poll_interval=0.05)


def _runtime(settings: Settings) -> Runtime:
    database = Database.from_settings(settings)
    upgrade(database)
    return Runtime(settings, Catalog.load(settings.catalog_dir), database)


@pytest.fixture
def database_url(server_url: str) -> Iterator[str]:
    yield from _fresh_database(server_url)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path / "home")


@pytest.fixture
def runtime(settings: Settings) -> Runtime:
    """An empty, migrated database of its own for a test that writes."""
    return _runtime(settings)


def ingest(runtime: Runtime, dataset_id: str, source: str | Path | None = None
           ) -> IngestSummary:
    """Ingest through the runtime's own log backend (Kafka when its settings say so)."""
    producer = runtime.producer()
    try:
        ingester = Ingester(runtime.settings, runtime.database, producer)
        return ingester.ingest(runtime.catalog.get(dataset_id),
                               str(source) if source else None)
    finally:
        producer.close()


def project(runtime: Runtime) -> None:
    projector = runtime.projector()
    try:
        projector.run(until_idle=True)
    finally:
        projector.close()


@pytest.fixture(scope="session")
def loaded(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    """Both bundled datasets ingested and projected, shared by read-only tests."""
    for url in _fresh_database(server_url):
        runtime = _runtime(make_settings(url, tmp_path_factory.mktemp("home")))
        ingest(runtime, "slmpd-crime")
        ingest(runtime, "csb-311")
        project(runtime)
        yield runtime


@pytest.fixture(scope="session")
def client(loaded: Runtime):  # type: ignore[no-untyped-def]
    app = create_app(loaded)
    app.config["TESTING"] = True
    return app.test_client()


def plan_of(conn: sa.Connection, statement: sa.Executable) -> str:
    """PostgreSQL's plan for a SQLAlchemy statement, as EXPLAIN prints it."""
    compiled = statement.compile(dialect=conn.dialect,
                                 compile_kwargs={"render_postcompile": True})
    return "\n".join(str(r[0]) for r in conn.exec_driver_sql(
        "EXPLAIN " + str(compiled), compiled.params))


def read_raw_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    """Read a publisher's CSV the plain way, independently of the ingester: strip a BOM,
    decode as cp1252 (falling back per line to UTF-8 is not needed for these files)."""
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    rows = list(csv.reader(data.decode("cp1252").splitlines()))
    return rows[0], [r for r in rows[1:] if r]


def invoke_cli(monkeypatch: pytest.MonkeyPatch, args: list[str], **settings: str) -> Result:
    """Run an ``stldata`` command in this process with ``STLDATA_<NAME>`` settings set
    (and read afresh: the settings are cached per process)."""
    for name, value in settings.items():
        monkeypatch.setenv(f"STLDATA_{name}", value)
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(cli_main, args)
    finally:
        get_settings.cache_clear()


def query(runtime: Runtime, sql: str, params: tuple[object, ...] = ()) -> list[tuple]:  # type: ignore[type-arg]
    with runtime.database.connect() as conn:
        return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]


# --- Kafka: a real broker for tests/test_kafka*.py ----------------------------------------
# Read at import, before the autouse fixture above clears STLDATA_* from the environment.
KAFKA_BOOTSTRAP = os.environ.get("STLDATA_TEST_KAFKA_BOOTSTRAP", "")
SKIP_KAFKA = os.environ.get("STLDATA_SKIP_KAFKA", "") == "1"
#: Where scripts/test.sh keeps the shared broker; its jars spare a test's own broker a
#: Maven run.
SHARED_STLDATA_HOME = os.environ.get("STLDATA_HOME", str(ROOT / "var"))


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """The test broker; without one the Kafka tests fail (or skip, if asked to)."""
    if KAFKA_BOOTSTRAP:
        return KAFKA_BOOTSTRAP
    if SKIP_KAFKA:
        pytest.skip("STLDATA_SKIP_KAFKA=1: Kafka tests skipped")
    pytest.fail("the Kafka tests need a broker: run `make test`, or start one with "
                "`scripts/kafka.sh start` and export STLDATA_TEST_KAFKA_BOOTSTRAP=<the "
                "address it prints> (STLDATA_SKIP_KAFKA=1 skips these tests)", pytrace=False)


@pytest.fixture
def kafka_prefix() -> str:
    """A namespace of topics and consumer groups of the test's own on the shared broker."""
    return f"t{uuid.uuid4().hex[:10]}."


def make_kafka_settings(database_url: str, home: Path, bootstrap: str, prefix: str,
                        **overrides: object) -> Settings:
    values: dict[str, object] = {
        "home": home, "database_url": database_url, "batch_size": 2000,
        "poll_interval": 0.05, "kafka_bootstrap": bootstrap, "kafka_topic_prefix": prefix,
        **overrides}
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def kafka_runtime(server_url: str, tmp_path: Path, kafka_bootstrap: str,
                  kafka_prefix: str) -> Iterator[Runtime]:
    """A migrated database of its own (distinct from ``runtime``'s) on the Kafka log."""
    for url in _fresh_database(server_url):
        yield open_kafka_runtime(url, tmp_path / "home-kafka", kafka_bootstrap, kafka_prefix)


def open_kafka_runtime(database_url: str, home: Path, bootstrap: str, prefix: str = "",
                       **overrides: object) -> Runtime:
    """A migrated runtime on a given database and broker (a test's own broker, say)."""
    return _runtime(make_kafka_settings(database_url, home, bootstrap, prefix, **overrides))


def stldata_env(runtime: Runtime, home: Path, **extra: str) -> dict[str, str]:
    """Environment for an ``stldata`` subprocess on the runtime's database and broker."""
    s = runtime.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("STLDATA_")}
    env.update(STLDATA_HOME=str(home), STLDATA_DATABASE_URL=runtime.database.url,
               STLDATA_KAFKA_BOOTSTRAP=s.kafka_bootstrap or "",
               STLDATA_KAFKA_TOPIC_PREFIX=s.kafka_topic_prefix, STLDATA_LOG_LEVEL="INFO",
               PYTHONUNBUFFERED="1", **extra)
    return env


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (for a server a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Spawned:
    """An ``stldata`` command (or another ``python -m`` module: a WSGI server, say)
    running in the background, its output in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path,
                 module: str = "stldata.cli") -> None:
        self.args, self.log = args, log
        with log.open("wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", module, *args],
                                         env=env, stdout=out, stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check_alive(self, waiting_for: str) -> None:
        if not self.alive():
            raise AssertionError(f"stldata {' '.join(self.args)} exited with "
                                 f"{self.proc.returncode} while waiting for {waiting_for}:\n"
                                 f"{self.text()[-4000:]}")

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.wait()

    def shut_down(self, timeout: float = 30) -> None:
        """Ask it to stop as Ctrl-C would (SIGTERM), and kill it if it has not within
        ``timeout`` seconds."""
        self.proc.terminate()
        try:
            self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()


T = TypeVar("T")


def wait_for(what: str, check: Callable[[], T], timeout: float, *running: Spawned) -> T:
    """Poll ``check`` until it returns something truthy; fail early if a process dies."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        for process in running:
            process.check_alive(what)
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def pages(client: Any, url: str) -> list[dict[str, Any]]:
    """Every item of a records listing, following ``next`` links to the end."""
    items: list[dict[str, Any]] = []
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        items += body["items"]
        url = body["next"]
    return items


def serve_folder(folder: Path) -> Iterator[str]:
    """Serve ``folder`` over HTTP on 127.0.0.1 (a free port) until the generator closes;
    yields the base URL. Tests fetch "remote" sources from it, never from the internet."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
