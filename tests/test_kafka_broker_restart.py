"""The broker stops and restarts while two ingests publish and a projector runs.

Runs a broker of its own (``scripts/kafka.sh`` with a separate ``STLDATA_HOME`` and a
pinned port, so the restarted broker keeps its address), leaving the shared one alone.
An ingest either completes or fails loudly (exit 1 and a message naming the broker and
the undelivered messages); the read model never shows part of a snapshot, and a failed
ingest, run again once the broker is back, completes.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from stldata.log.kafka import KafkaConsumer
from stldata.runtime import Runtime
from stldata.settings import PROJECT_ROOT

from conftest import (
    CRIME_SAMPLES,
    SHARED_STLDATA_HOME,
    Spawned,
    free_port,
    open_kafka_runtime,
    read_raw_csv,
    stldata_env,
    wait_for,
)

KAFKA_SH = PROJECT_ROOT / "scripts" / "kafka.sh"


@dataclass
class Broker:
    home: Path
    port: int

    def run(self, command: str) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STLDATA_")}
        env.update(STLDATA_HOME=str(self.home), STLDATA_KAFKA_PORT=str(self.port))
        done = subprocess.run(["bash", str(KAFKA_SH), command], env=env, capture_output=True,
                              text=True, timeout=180)
        assert done.returncode == 0, f"kafka.sh {command}: {done.stderr[-3000:]}"
        return done.stdout.strip()



@pytest.fixture
def own_broker(kafka_bootstrap: str, tmp_path: Path) -> Iterator[tuple[Broker, str]]:
    """A broker for this test alone (kafka_bootstrap only applies the fail/skip policy)."""
    broker = Broker(tmp_path / "kafka-home", free_port())
    # kafka.sh keeps resolved jars in $STLDATA_HOME/kafka/lib with the hash of the pom
    # they came from, and resolves again on a mismatch; a copy of the shared broker's
    # saves a Maven run (~10 s).
    for home in (Path(SHARED_STLDATA_HOME), PROJECT_ROOT / "var" / "test", PROJECT_ROOT / "var"):
        lib = home / "kafka" / "lib"
        if (lib / ".resolved").is_file():
            shutil.copytree(lib, broker.home / "kafka" / "lib")
            break
    started = time.monotonic()
    bootstrap = broker.run("start")
    print(f"own broker {bootstrap} up in {time.monotonic() - started:.1f}s")
    assert bootstrap == f"127.0.0.1:{broker.port}"
    try:
        yield broker, bootstrap
    finally:
        broker.run("stop")


@dataclass
class Watch:
    """Samples the read model while everything runs: a table holds no rows or a whole
    snapshot, never part of one."""

    runtime: Runtime
    seen: dict[str, set[int]] = field(default_factory=lambda: {"crime": set(), "csb": set()})
    stop: threading.Event = field(default_factory=threading.Event)
    samples: int = 0

    def run(self) -> None:
        with psycopg.connect(self.runtime.database.url, autocommit=True) as conn:
            while not self.stop.is_set():
                for name, table in (("crime", "ds_slmpd_crime"), ("csb", "ds_csb_311")):
                    try:
                        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
                        self.seen[name].add(int(row[0]) if row else 0)
                    except psycopg.errors.UndefinedTable:
                        self.seen[name].add(0)
                self.samples += 1
                time.sleep(0.02)


def published(consumer: KafkaConsumer, topic: str) -> int:
    try:
        return sum(consumer.end_offsets(consumer.partitions(topic)).values())
    except Exception:  # noqa: BLE001 - the topic may not be visible yet
        return 0


def test_broker_restart_mid_ingest_never_exposes_a_partial_snapshot(
        own_broker: tuple[Broker, str], database_url: str, tmp_path: Path) -> None:
    broker, bootstrap = own_broker
    rt = open_kafka_runtime(database_url, tmp_path / "home", bootstrap)
    # Two months of crime (a third of the bundle) keep the projection short.
    months = tmp_path / "crime"
    months.mkdir()
    for name in ("November2008.csv", "March2013.CSV"):
        shutil.copy(CRIME_SAMPLES / name, months / name)
    crime_rows = sum(len(read_raw_csv(p)[1]) for p in months.iterdir())
    crime, csb = rt.catalog.get("slmpd-crime"), rt.catalog.get("csb-311")
    home = tmp_path / "home"

    watch = Watch(rt)
    sampler = threading.Thread(target=watch.run, daemon=True)
    sampler.start()
    projector = Spawned(["project"], stldata_env(rt, home, STLDATA_BATCH_SIZE="500",
                                                 STLDATA_POLL_INTERVAL="0.05"),
                        tmp_path / "projector.log")
    # Small batches make the ingests long enough to be caught mid-stream. The 311 ingest
    # gives up after 2 s without the broker; the crime one waits (default 120 s).
    patient = Spawned(["ingest", crime.id, "--source", str(months)],
                      stldata_env(rt, home, STLDATA_BATCH_SIZE="50"),
                      tmp_path / "ingest-crime.log")
    hasty = Spawned(["ingest", csb.id], stldata_env(
        rt, home, STLDATA_BATCH_SIZE="20", STLDATA_KAFKA_FLUSH_TIMEOUT="2"),
        tmp_path / "ingest-csb.log")
    probe = KafkaConsumer(bootstrap, group_id="probe", request_timeout=2)
    try:
        wait_for("both ingests to be publishing", lambda: published(probe, crime.topic) > 500
                 and published(probe, csb.topic) > 500, 60, patient, hasty, projector)
        probe.close()
        stopped = time.monotonic()
        broker.run("stop")

        # The impatient ingest fails loudly while the broker is away...
        assert hasty.wait(60) == 1, hasty.text()
        assert "error: csb-311: Kafka (" in hasty.text() and "not delivered" in hasty.text()
        assert patient.alive() and projector.alive()

        broker.run("start")
        print(f"broker back after {time.monotonic() - stopped:.1f}s")
        # ... the patient one completes once it is back.
        assert patient.wait(120) == 0, patient.text()
        wait_for("the crime snapshot to be applied", lambda: rt_query(
            rt, "SELECT 1 FROM snapshots WHERE dataset_id = %s AND status = 'committed'",
            crime.id), 120, projector)

        # The failed ingest, run again, completes.
        again = Spawned(["ingest", csb.id], stldata_env(rt, home), tmp_path / "again.log")
        assert again.wait(120) == 0, again.text()
        wait_for("the 311 snapshot to be applied", lambda: rt_query(
            rt, "SELECT 1 FROM snapshots WHERE dataset_id = %s AND status = 'committed'",
            csb.id), 120, projector)
        projector.proc.send_signal(signal.SIGTERM)
        assert projector.wait(30) == 0, projector.text()[-3000:]
    finally:
        watch.stop.set()
        sampler.join(10)
        for process in (projector, patient, hasty):
            process.stop()

    snapshots = rt_query(rt, "SELECT dataset_id, status, record_count, row_count "
                             "FROM snapshots ORDER BY id")
    committed = {d: (records, rows) for d, status, records, rows in snapshots
                 if status == "committed"}
    # One snapshot per dataset committed; the 311 one that failed never is.
    assert sorted((d, s) for d, s, *_ in snapshots if s == "committed") == [
        (csb.id, "committed"), (crime.id, "committed")]
    assert [s for d, s, *_ in snapshots if d == csb.id][0] in ("pending", "aborted")
    assert committed[crime.id] == (crime_rows, crime_rows)
    csb_rows = committed[csb.id][1]
    assert rt_query(rt, "SELECT count(*) FROM ds_slmpd_crime")[0][0] == crime_rows
    assert rt_query(rt, "SELECT count(*) FROM ds_csb_311")[0][0] == csb_rows > 0
    # Never part of a snapshot, at any moment.
    assert watch.samples > 100
    assert watch.seen["crime"] <= {0, crime_rows}, sorted(watch.seen["crime"])
    assert watch.seen["csb"] <= {0, csb_rows}, sorted(watch.seen["csb"])


def rt_query(runtime: Runtime, sql: str, *params: object) -> list[tuple[object, ...]]:
    with psycopg.connect(runtime.database.url) as conn:
        return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]
