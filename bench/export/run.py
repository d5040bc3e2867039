"""Export benchmark: rows per second and the server's memory while streaming a large export.

Starts the project's embedded PostgreSQL in a temporary STLDATA_HOME, fills the
``slmpd-crime`` table with N synthetic records (plain SQL, not timed), serves the read API
on 127.0.0.1 with the same threaded WSGI server as ``stldata serve``, and downloads
``export.csv`` over HTTP in 64 KiB reads, sampling the server process's RSS (this process)
every 0.2 s. With a server-side cursor the RSS stays flat whatever N is.

    .venv/bin/python bench/export/run.py --rows 200000 --rows 1000000
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil
from werkzeug.serving import make_server

from stldata.api.app import create_app
from stldata.catalog import Catalog
from stldata.projection.tables import ensure_table
from stldata.runtime import Runtime
from stldata.settings import Settings
from stldata.store.database import Database
from stldata.store.migrate import upgrade

FILL = """
INSERT INTO ds_slmpd_crime (_key, _snapshot_id, _hash, _source, coded_month, date_occur,
    count, crime, district, description, ileads_street, longitude, latitude)
SELECT 'k' || g, 1, 'h', '{}'::json, date '2018-06-01',
    timestamptz '2018-06-01 12:00-05' + g * interval '1 minute', 1, '64701', g %% 9,
    'LARCENY-FROM MTR VEH UNDER $500', 'MARKET ST', -90.2 + (g %% 1000) * 1e-4,
    38.6 + (g %% 777) * 1e-4
FROM generate_series(%s::bigint, %s::bigint) g"""


def fill(runtime: Runtime, rows: int) -> None:
    dataset = runtime.catalog.get("slmpd-crime")
    with runtime.database.transaction() as conn:
        ensure_table(conn, dataset)
        conn.execute("TRUNCATE ds_slmpd_crime")
        conn.execute(FILL, (1, rows))
        conn.execute("ANALYZE ds_slmpd_crime")


def download(url: str) -> tuple[int, int, float, int]:
    """(bytes, lines, seconds, peak RSS of this process in bytes) for one export."""
    process = psutil.Process()
    peak = [process.memory_info().rss]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    size = lines = 0
    with urllib.request.urlopen(url) as response:  # noqa: S310 - 127.0.0.1 only
        while chunk := response.read(65536):
            size += len(chunk)
            lines += chunk.count(b"\n")
    elapsed = time.perf_counter() - started
    done.set()
    sampler.join()
    return size, lines, elapsed, peak[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, action="append",
                        help="records to export (repeat for several runs)")
    args = parser.parse_args()
    sizes = args.rows or [100_000, 500_000]
    with tempfile.TemporaryDirectory(prefix="stldata-export-bench-") as home:
        settings = Settings(home=Path(home))
        database = Database.from_settings(settings)
        upgrade(database)
        runtime = Runtime(settings, Catalog.load(settings.catalog_dir), database)
        server = make_server("127.0.0.1", 0, create_app(runtime), threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_port}/api/v1/datasets/slmpd-crime/export.csv"
        print("| rows | MB | seconds | rows/s | peak RSS (MB) |")
        print("|---:|---:|---:|---:|---:|")
        try:
            for rows in sizes:
                fill(runtime, rows)
                size, lines, seconds, rss = download(url)
                assert lines == rows + 1, (lines, rows)
                print(f"| {rows:,} | {size / 1e6:.0f} | {seconds:.1f} | "
                      f"{rows / seconds:,.0f} | {rss / 1e6:.0f} |", flush=True)
        finally:
            server.shutdown()


if __name__ == "__main__":
    main()
