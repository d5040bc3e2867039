"""Query benchmark: the same crime rows served by our read API and by Datasette.

One run:

1. generates (or reuses) a scaled SLMPD crime CSV with ``bench/ingest/generate.py``;
2. loads it through our own pipeline (``stldata migrate``, ``ingest``, ``project``) into an
   embedded PostgreSQL under ``--workdir`` (kept, so a rerun of the same size skips it);
3. copies the rows our pipeline produced into SQLite with sqlite-utils, with the same
   column types, the same indexes and a full-text index over the same text columns, so
   both systems answer from identical data;
4. starts both servers on free 127.0.0.1 ports: ours under granian (or gunicorn) with
   worker processes, Datasette in immutable mode with suggested facets off and a SQL
   time limit long enough for a count over every row, as a careful user would run them;
5. checks that each query gets the same answer from both, then drives each query at each
   concurrency for a fixed time with an asyncio load generator and prints requests per
   second and p50/p99 latency per query and system, and the ratio ours/Datasette.

Usage: ``.venv/bin/python bench/query/run.py --rows 1000000`` (see README.md beside it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import psycopg
import sqlite_utils

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "ingest"))
from generate import PROJECT_ROOT, generate  # noqa: E402

from stldata.catalog import Catalog, Dataset  # noqa: E402

DATASET = "slmpd-crime"
SQLITE_TABLE = "crimes"
BIN = Path(sys.executable).parent
SQLITE_TYPES: dict[str, type] = {"text": str, "integer": int, "number": float,
                                 "boolean": int, "date": str, "datetime": str, "month": str}


@dataclass(frozen=True)
class Query:
    """One question asked of both systems, and how to tell their answers are the same."""

    name: str
    ours: str
    datasette: str
    #: Reduces a JSON answer to what must match between the systems.
    ours_answer: Callable[[Any], Any]
    datasette_answer: Callable[[Any], Any]


@dataclass
class Result:
    query: str
    system: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def environment(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STLDATA_")}
    # Rate limits off: the load generator is one client, and Datasette has none.
    env.update(STLDATA_HOME=str(home), STLDATA_LOG_LEVEL="WARNING", STLDATA_RATE_LIMIT="")
    return env


def run(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, cwd=PROJECT_ROOT)
    return time.perf_counter() - started


def load_ours(csv_path: Path, home: Path, rows: int) -> dict[str, Any]:
    """Ingest and project the CSV once; the marker file makes reruns reuse the load."""
    marker = home / "bench-loaded.json"
    env = environment(home)
    stldata = str(BIN / "stldata")
    run([stldata, "migrate"], env)
    if marker.exists():
        # A load made by older code: the projector brings its tables and indexes to what
        # the current code builds (a no-op when they already are).
        run([stldata, "project", "--until-idle"], env)
        return dict(json.loads(marker.read_text()))
    ingest = run([stldata, "ingest", DATASET, "--source", str(csv_path)], env)
    project = run([stldata, "project", "--until-idle"], env)
    loaded = {"rows": rows, "ingest_s": round(ingest, 1), "project_s": round(project, 1)}
    marker.write_text(json.dumps(loaded))
    return loaded


def hold_server(home: Path) -> Any:
    """Attach to the embedded PostgreSQL of ``home`` and keep it up for the whole run.

    The project stops its server when the last process using it exits; holding a handle
    here means the load, the SQLite copy and the served API all meet one server.
    """
    from stldata.settings import Settings
    from stldata.store.database import Database

    return Database.from_settings(Settings(home=home, database_url=None,
                                           kafka_bootstrap=None, _env_file=None))


def text_columns(dataset: Dataset) -> list[str]:
    return [n for n, t in dataset.column_types().items() if t == "text"]


def build_sqlite(url: str, dataset: Dataset, db_path: Path) -> int:
    """Copy our projected rows into SQLite, typed, indexed and full-text indexed alike."""
    if db_path.exists():
        with sqlite3.connect(db_path) as conn:
            return int(conn.execute(f"SELECT count(*) FROM {SQLITE_TABLE}").fetchone()[0])
    types = dataset.column_types()
    columns = ["_key", *types]
    partial = db_path.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    db = sqlite_utils.Database(partial)
    table = db[SQLITE_TABLE]
    table.create({"_key": str, **{n: SQLITE_TYPES[t] for n, t in types.items()}},  # type: ignore[union-attr]
                 pk="_key")
    select = ", ".join(
        # Datetimes as local wall-clock ISO text, the form a Datasette user filters on.
        f"to_char({n} AT TIME ZONE 'America/Chicago', 'YYYY-MM-DD\"T\"HH24:MI:SS') AS {n}"
        if types[n] == "datetime" else (f"{n}::int AS {n}" if types[n] == "boolean" else n)
        for n in types)
    count = 0
    with psycopg.connect(url) as conn, conn.cursor(name="export") as cursor:
        cursor.itersize = 20_000
        cursor.execute(f"SELECT _key, {select} FROM {dataset.table_name}")
        batch: list[dict[str, Any]] = []
        for row in cursor:
            batch.append(dict(zip(columns, row, strict=True)))
            if len(batch) == 20_000:
                table.insert_all(batch)  # type: ignore[union-attr]
                count += len(batch)
                batch = []
        if batch:
            table.insert_all(batch)  # type: ignore[union-attr]
            count += len(batch)

    # The same secondary indexes as ours: (column, key) for every indexed catalog column.
    for column in (c.name for c in dataset.columns if c.index):
        table.create_index([column, "_key"])  # type: ignore[union-attr]
    table.enable_fts(text_columns(dataset), fts_version="FTS5")  # type: ignore[union-attr]
    db.vacuum()
    db.close()
    partial.rename(db_path)
    return count


def wait_until_up(url: str, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"{url} did not answer within {timeout:.0f}s")


def queries(dataset: Dataset) -> list[Query]:
    base = f"/api/v1/datasets/{dataset.id}"
    table = f"/crimes/{SQLITE_TABLE}.json"

    def ours_page(body: Any) -> Any:
        return (body.get("total"), len(body["items"]))

    def datasette_page(body: Any) -> Any:
        return (body.get("filtered_table_rows_count"), len(body["rows"]))

    # Ties on the sort column may be broken differently, so compare the sorted values.
    def ours_sorted(body: Any) -> Any:
        return [item["date_occur"][:19] for item in body["items"]]

    def datasette_sorted(body: Any) -> Any:
        return [row["date_occur"] for row in body["rows"]]

    def ours_counts(body: Any) -> Any:
        return sorted((row["neighborhood"], row["count"]) for row in body["items"])

    def datasette_counts(body: Any) -> Any:
        return sorted((row["neighborhood"], row["n"]) for row in body)

    count_sql = (f"select neighborhood, count(*) as n from {SQLITE_TABLE} "
                 "group by neighborhood")

    # Datasette's ?_search= filters by the FTS5 match and keeps the table's key order, so
    # "full-text search" asks both for the matches by key (ours: order=_key), the same
    # page; "ranked search" asks both for the best 100 by their own relevance (ts_rank
    # and FTS5's bm25 rank), whose pages differ, so there every row must be a match.
    def ours_keys(body: Any) -> Any:
        return [item["_key"] for item in body["items"]]

    def datasette_keys(body: Any) -> Any:
        return [row["_key"] for row in body["rows"]]

    def ours_matches(body: Any) -> Any:
        return [all("burglar" in json.dumps(i).lower() for i in body["items"]),
                len(body["items"])]

    def datasette_matches(body: Any) -> Any:
        return [all("burglar" in json.dumps(r).lower() for r in body), len(body)]

    ranked_sql = (f"select c.* from {SQLITE_TABLE} c join {SQLITE_TABLE}_fts f "
                  f"on f.rowid = c.rowid where {SQLITE_TABLE}_fts match :q "
                  "order by f.rank limit 100")
    window = {"date_occur__gte": "2018-03-01T00:00:00", "date_occur__lt": "2018-04-01T00:00:00"}
    return [
        Query("filtered page",
              base + "/records?" + urlencode({"district": 3, **window, "limit": 100}),
              table + "?" + urlencode({"district": 3, **window, "_size": 100,
                                       "_shape": "objects"}),
              ours_page, datasette_page),
        Query("sorted page",
              base + "/records?" + urlencode({"order": "-date_occur", "limit": 100}),
              table + "?" + urlencode({"_sort_desc": "date_occur", "_size": 100,
                                       "_shape": "objects", "_nocount": 1}),
              ours_sorted, datasette_sorted),
        Query("count by neighborhood",
              base + "/aggregate?" + urlencode({"group_by": "neighborhood",
                                                "metrics": "count"}),
              "/crimes.json?" + urlencode({"sql": count_sql, "_shape": "array"}),
              ours_counts, datasette_counts),
        Query("full-text search",
              base + "/records?" + urlencode({"q": "burglary", "order": "_key",
                                              "limit": 100}),
              table + "?" + urlencode({"_search": "burglary", "_size": 100,
                                       "_shape": "objects"}),
              ours_keys, datasette_keys),
        Query("ranked search",
              base + "/records?" + urlencode({"q": "burglary", "limit": 100}),
              "/crimes.json?" + urlencode({"sql": ranked_sql, "q": "burglary",
                                           "_shape": "array"}),
              ours_matches, datasette_matches),
    ]


async def fetch_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as response:
        body = await response.read()
        if response.status != 200:
            raise SystemExit(f"{url} answered {response.status}: {body[:300]!r}")
        return json.loads(body)


async def check_answers(ours: str, datasette: str, qs: list[Query]) -> dict[str, Any]:
    """Refuse to time a query the two systems answer differently."""
    checked: dict[str, Any] = {}
    async with aiohttp.ClientSession() as session:
        for q in qs:
            a = q.ours_answer(await fetch_json(session, ours + q.ours))
            b = q.datasette_answer(await fetch_json(session, datasette + q.datasette))
            checked[q.name] = {"ours": a if not isinstance(a, list) else len(a),
                               "datasette": b if not isinstance(b, list) else len(b),
                               "same": a == b}
    return checked


async def drive(url: str, concurrency: int, seconds: float, warmup: float
                ) -> tuple[list[float], int, float]:
    """Keep ``concurrency`` requests in flight for ``seconds``; latencies in ms."""
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async def worker(until: float, record: bool) -> None:
            nonlocal errors
            while time.perf_counter() < until:
                started = time.perf_counter()
                try:
                    async with session.get(url) as response:
                        await response.read()
                        ok = response.status == 200
                except aiohttp.ClientError:
                    ok = False
                if record:
                    if ok:
                        latencies.append((time.perf_counter() - started) * 1000)
                    else:
                        errors += 1

        await asyncio.gather(*(worker(time.perf_counter() + warmup, False)
                               for _ in range(concurrency)))
        started = time.perf_counter()
        await asyncio.gather(*(worker(started + seconds, True) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return latencies, errors, elapsed


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def wsgi_command(server: str, port: int, workers: int, threads: int) -> list[str]:
    """Ours as an operator runs it (see stldata/api/wsgi.py): several processes, each
    with a few threads for requests waiting on PostgreSQL."""
    if server == "granian":
        return [str(BIN / "granian"), "--interface", "wsgi", "--workers", str(workers),
                "--blocking-threads", str(threads), "--host", "127.0.0.1",
                "--port", str(port), "--log-level", "warning", "stldata.api.wsgi:app"]
    return [str(BIN / "gunicorn"), "--workers", str(workers), "--threads", str(threads),
            "--bind", f"127.0.0.1:{port}", "--log-level", "warning", "stldata.api.wsgi:app"]


def start_servers(home: Path, db_path: Path, server: str, workers: int, threads: int
                  ) -> tuple[str, str, list[subprocess.Popen[bytes]]]:
    ours_port, datasette_port = free_port(), free_port()
    ours = subprocess.Popen(wsgi_command(server, ours_port, workers, threads),
                            env=environment(home), cwd=PROJECT_ROOT)
    datasette = subprocess.Popen(
        [str(BIN / "datasette"), "serve", "--immutable", str(db_path),
         "--host", "127.0.0.1", "--port", str(datasette_port),
         "--setting", "suggest_facets", "off",
         "--setting", "sql_time_limit_ms", "60000",
         "--setting", "num_sql_threads", str(threads),
         "--setting", "max_returned_rows", "1000"],
        cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ours_url, datasette_url = f"http://127.0.0.1:{ours_port}", f"http://127.0.0.1:{datasette_port}"
    processes = [ours, datasette]
    try:
        wait_until_up(ours_url + "/health", ours)
        wait_until_up(datasette_url + "/-/versions.json", datasette)
    except BaseException:
        stop(processes)
        raise
    return ours_url, datasette_url, processes


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def print_table(results: list[Result]) -> None:
    by_key = {(r.query, r.system, r.concurrency): r for r in results}
    print(f"\n{'query':<24}{'conc':>5}  {'ours rps':>9} {'p50':>7} {'p99':>7}  "
          f"{'datasette rps':>13} {'p50':>7} {'p99':>7}  {'rps ratio':>9}")
    for (name, system, concurrency), ours in by_key.items():
        if system != "ours":
            continue
        other = by_key[(name, "datasette", concurrency)]
        ratio = ours.rps / other.rps if other.rps else float("inf")
        print(f"{name:<24}{concurrency:>5}  {ours.rps:>9.1f} {ours.p50_ms:>7.1f} "
              f"{ours.p99_ms:>7.1f}  {other.rps:>13.1f} {other.p50_ms:>7.1f} "
              f"{other.p99_ms:>7.1f}  {ratio:>9.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=15.0,
                        help="timed seconds per query, system and concurrency")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--server", choices=("granian", "gunicorn"), default="granian",
                        help="the WSGI server that runs ours")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2,
                        help="worker processes for ours")
    parser.add_argument("--threads", type=int, default=4,
                        help="threads per worker of ours, and Datasette's SQL threads")
    parser.add_argument("--workdir", type=Path, default=PROJECT_ROOT / "var" / "bench-query")
    parser.add_argument("--only", help="comma-separated query names to run")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]

    args.workdir.mkdir(parents=True, exist_ok=True)
    csv_path = args.workdir / f"slmpd-{args.rows}.csv"
    if not csv_path.exists():
        generate(csv_path, args.rows)
    home = args.workdir / f"home-{args.rows}"
    dataset = Catalog.load(PROJECT_ROOT / "catalog").get(DATASET)

    home.mkdir(parents=True, exist_ok=True)
    database = hold_server(home)
    loaded = load_ours(csv_path, home, args.rows)
    print(f"ours loaded: {loaded}", file=sys.stderr)
    # Datasette names a database after its file, so the file is crimes.db in a folder per size.
    sqlite_path = args.workdir / f"sqlite-{args.rows}" / "crimes.db"
    sqlite_path.parent.mkdir(exist_ok=True)
    started = time.perf_counter()
    copied = build_sqlite(database.url, dataset, sqlite_path)
    print(f"sqlite rows: {copied} ({time.perf_counter() - started:.0f}s)", file=sys.stderr)

    qs = queries(dataset)
    if args.only:
        wanted = {n.strip() for n in args.only.split(",")}
        qs = [q for q in qs if q.name in wanted]
    ours_url, datasette_url, processes = start_servers(home, sqlite_path, args.server,
                                                       args.workers, args.threads)
    results: list[Result] = []
    try:
        checked = asyncio.run(check_answers(ours_url, datasette_url, qs))
        print(json.dumps(checked, indent=1), file=sys.stderr)
        for q in qs:
            for concurrency in levels:
                for system, url in (("ours", ours_url + q.ours),
                                    ("datasette", datasette_url + q.datasette)):
                    latencies, errors, elapsed = asyncio.run(
                        drive(url, concurrency, args.seconds, args.warmup))
                    results.append(Result(
                        q.name, system, concurrency, len(latencies), errors,
                        round(elapsed, 2), len(latencies) / elapsed,
                        statistics.median(latencies) if latencies else float("nan"),
                        percentile(latencies, 0.99)))
                    print(f"{q.name} c={concurrency} {system}: {results[-1].rps:.1f} req/s",
                          file=sys.stderr)
    finally:
        stop(processes)

    print_table(results)
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_before": os.getloadavg()},
        "rows": args.rows, "loaded": loaded, "server": args.server, "workers": args.workers,
        "threads": args.threads, "answers": checked,
        "results": [asdict(r) for r in results],
    }
    out = args.workdir / f"results-{args.rows}-{int(time.time())}.json"
    out.write_text(json.dumps(report, indent=1))
    print(f"\nresults: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
