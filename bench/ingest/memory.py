"""Peak memory of the ingester (and optionally the projector) on one file, for one dataset.

Runs ``stldata ingest DATASET --source FILE`` as a subprocess against a fresh
``STLDATA_HOME`` (its own embedded PostgreSQL, migrated first, untimed), with the embedded
log or, given ``--kafka BOOTSTRAP``, a broker's topics under a prefix of the run's own. The
peak RSS is the kernel's (``ru_maxrss`` from ``wait4``), exact rather than sampled. With
``--project`` it then runs ``stldata project --until-idle`` and checks the read model: for
csb-311, one record per distinct request id and one quarantine entry per superseded row.

Usage (a csb-311-shaped file from ``generate.py --dataset csb-311``)::

    .venv/bin/python bench/ingest/memory.py --dataset csb-311 --file /tmp/csb-1m.csv \\
        [--src /tmp/before/src] [--kafka 127.0.0.1:9092] [--project]

One ``--src`` per run (the package is imported once per process): run the copies side by
side for an A/B comparison. Results go to ``bench/out/memory-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate import PROJECT_ROOT  # noqa: E402
from run import BIN, EmbeddedServer, check_imports_from, run_measured  # noqa: E402


def key_counts(path: Path, column: str) -> tuple[int, int]:
    """Rows and distinct values of ``column`` in a CSV, read independently of stldata."""
    rows = 0
    keys: set[str] = set()
    with path.open(newline="", encoding="cp1252") as stream:
        reader = csv.reader(stream)
        at = next(reader).index(column)
        for cells in reader:
            if cells:
                rows += 1
                keys.add(cells[at])
    return rows, len(keys)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="csb-311")
    parser.add_argument("--file", type=Path, required=True, help="the source file")
    parser.add_argument("--key-column", default="REQUESTID",
                        help="the file's key column, to check the read model (csb-311)")
    parser.add_argument("--src", type=Path, help="measure the stldata package under DIR "
                        "(a copy of src/ with catalog/ and data/ beside it)")
    parser.add_argument("--kafka", metavar="BOOTSTRAP",
                        help="publish to this broker instead of the embedded log")
    parser.add_argument("--project", action="store_true",
                        help="also run the projector and check the read model")
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--out-dir", type=Path, default=PROJECT_ROOT / "bench" / "out")
    args = parser.parse_args(argv)

    source = args.file.resolve()
    workdir = Path(tempfile.mkdtemp(prefix="stldata-bench-memory-"))
    logs = workdir / "logs"
    logs.mkdir()
    code_src = args.src.resolve() if args.src else None
    if code_src:
        sys.path.insert(0, str(code_src))
    home = workdir / "home"
    server = EmbeddedServer(home)
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STLDATA_")}
        env["STLDATA_HOME"] = str(home)
        if code_src:
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(code_src), env.get("PYTHONPATH", "")) if p)
            check_imports_from(code_src, env)
        if args.kafka:
            env["STLDATA_KAFKA_BOOTSTRAP"] = args.kafka
            env["STLDATA_KAFKA_TOPIC_PREFIX"] = f"bench{uuid.uuid4().hex[:8]}."
        stldata = str(BIN / "stldata")
        subprocess.run([stldata, "migrate"], env=env, check=True, capture_output=True,
                       timeout=args.timeout)
        steps = [run_measured("ingest", [stldata, "ingest", args.dataset, "--source",
                                         str(source)],
                              env=env, log_path=logs / "ingest.log", timeout=args.timeout,
                              postmaster_pid=server.postmaster_pid)]
        checked: dict[str, Any] = {}
        if args.project:
            steps.append(run_measured("project", [stldata, "project", "--until-idle"],
                                      env=env, log_path=logs / "project.log",
                                      timeout=args.timeout,
                                      postmaster_pid=server.postmaster_pid))
            rows, keys = key_counts(source, args.key_column)
            table = "ds_" + args.dataset.replace("-", "_")
            checked = {
                "rows": rows, "distinct_keys": keys,
                "records": int(server.scalar(f"SELECT count(*) FROM {table}")),
                "superseded_entries": int(server.scalar(
                    "SELECT count(*) FROM quarantine WHERE reason LIKE 'duplicate key%'")),
                "snapshot_quarantined": int(server.scalar(
                    "SELECT quarantined FROM snapshots ORDER BY id DESC LIMIT 1")),
            }
            if (checked["records"], checked["superseded_entries"]) != (keys, rows - keys):
                raise SystemExit(f"read model does not match the file: {checked}")
        result = {
            "dataset": args.dataset, "file": str(source), "src": str(code_src or "working tree"),
            "log": "kafka" if args.kafka else "embedded",
            "load_average": os.getloadavg(), "cpus": os.cpu_count(),
            "steps": [{"step": s.system, "seconds": round(s.seconds, 1),
                       "peak_rss_mb": round(s.client_peak_rss_mb, 1),
                       "cpu_seconds": round(s.client_cpu_seconds, 1),
                       "other_cpu_share": round(s.other_cpu_share, 3)} for s in steps],
            "checked": checked,
            "command": " ".join([sys.executable, *sys.argv]),
        }
        print(json.dumps(result, indent=2))
        args.out_dir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        out = args.out_dir / f"memory-{stamp}-{uuid.uuid4().hex[:4]}.json"
        out.write_text(json.dumps(result, indent=2))
        print(f"written to {out}", file=sys.stderr)
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
