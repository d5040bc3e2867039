"""Several projector processes in one consumer group, as Kafka deployments run them.

One is SIGKILLed mid-stream: the survivor is handed its partitions after the session
timeout, starts them at the offsets stored in PostgreSQL with the rows, and the read model
ends exact: every record once, the snapshot applied once, every offset consumed once.
"""

from __future__ import annotations

import shutil
import signal
import threading
import time
from pathlib import Path

from stldata.log.events import CONTROL_TOPIC
from stldata.log.kafka import KafkaConsumer
from stldata.projection.projector import GROUP_ID, Projector
from stldata.runtime import Runtime
from stldata.store.identity import read_model_id

from conftest import (
    CRIME_SAMPLES,
    Spawned,
    ingest,
    project,
    query,
    read_raw_csv,
    stldata_env,
    wait_for,
)


def owns(log: str, group: str) -> bool:
    """Whether the last assignment change a process logged for a group was an assign."""
    last = ""
    for line in log.splitlines():
        if f"group {group}: assigned" in line or f"group {group}: revoked" in line:
            last = line
    return ": assigned" in last


def crime_truth() -> tuple[int, int]:
    """(rows, sum of Count) of the bundled months, read straight from the files."""
    rows = count = 0
    for path in sorted(CRIME_SAMPLES.iterdir()):
        header, data = read_raw_csv(path)
        column = header.index("Count")
        rows += len(data)
        count += sum(int(r[column]) for r in data)
    return rows, count


def test_survivor_takes_over_a_killed_projector_exactly(kafka_runtime: Runtime,
                                                        tmp_path: Path) -> None:
    rt = kafka_runtime
    prefix = rt.settings.kafka_topic_prefix
    dataset = rt.catalog.get("slmpd-crime")
    total, count_sum = crime_truth()

    producer = rt.producer()
    producer.ensure_topic(dataset.topic, rt.settings.topic_partitions)
    producer.ensure_topic(CONTROL_TOPIC, 1)
    producer.close()

    env = stldata_env(rt, tmp_path / "home", STLDATA_BATCH_SIZE="100",
                      STLDATA_POLL_INTERVAL="0.05")
    # The groups on the broker are named after this database's read model.
    model = read_model_id(rt.database)
    data_group, control_group = (f"{prefix}{GROUP_ID}.{model}",
                                 f"{prefix}{GROUP_ID}-control.{model}")
    # One after the other: starting together is test_projectors_start_together's subject.
    first = Spawned(["project"], env, tmp_path / "projector-0.log")
    wait_for("the first projector", lambda: "projector started" in first.text(), 60, first)
    projectors = [first, Spawned(["project"], env, tmp_path / "projector-1.log")]
    ingester = None
    try:
        wait_for("both projectors to own data partitions",
                 lambda: all(owns(p.text(), data_group) for p in projectors), 60, *projectors)
        wait_for("a control owner",
                 lambda: any(owns(p.text(), control_group) for p in projectors), 30,
                 *projectors)
        ingester = Spawned(["ingest", dataset.id],
                           stldata_env(rt, tmp_path / "home", STLDATA_BATCH_SIZE="500"),
                           tmp_path / "ingest.log")

        def staged() -> int:
            row = query(rt, "SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets "
                            "WHERE group_id = %s AND topic = %s", (GROUP_ID, dataset.topic))
            return int(row[0][0])

        # Kill the member that owns the control partition (and some data partitions)
        # with a fifth to four fifths of the records staged.
        wait_for("mid-stream", lambda: total * 0.2 <= staged() <= total * 0.8, 60,
                 *projectors)
        victim = next(p for p in projectors if owns(p.text(), control_group))
        survivor = next(p for p in projectors if p is not victim)
        seen = len(survivor.log.read_bytes())
        at_kill = staged()
        victim.proc.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        assert victim.wait(10) == -signal.SIGKILL

        assert ingester.wait(120) == 0, ingester.text()
        committed = wait_for("the snapshot to be applied", lambda: query(
            rt, "SELECT record_count FROM snapshots WHERE status = 'committed'"), 90, survivor)
        takeover = time.monotonic() - killed_at

        survivor.proc.send_signal(signal.SIGTERM)
        assert survivor.wait(30) == 0, survivor.text()[-3000:]
    finally:
        for p in [*projectors, *([ingester] if ingester else [])]:
            p.stop()

    print(f"killed at {at_kill}/{total} staged; applied {takeover:.1f}s after the kill")
    after_kill = survivor.log.read_bytes()[seen:].decode(errors="replace")
    taken = [line for line in after_kill.splitlines() if ": assigned " in line]
    assert any(f"{control_group}: assigned {CONTROL_TOPIC}[0]@" in line for line in taken)
    assert any(all(f"{dataset.topic}[{p}]@" in line for p in range(3)) for line in taken)

    assert committed[0][0] == total
    rows = query(rt, "SELECT count(*), count(DISTINCT _key), sum(count) FROM ds_slmpd_crime")
    assert rows[0] == (total, total, count_sum)
    versions = query(rt, "SELECT count(*), count(DISTINCT key) FROM record_versions")
    assert versions[0] == (total, total)
    assert query(rt, "SELECT count(*) FROM snapshots")[0][0] == 1

    # Every offset of every partition consumed exactly once: stored == log end.
    consumer = rt.consumer("offset-check")
    try:
        ends = consumer.end_offsets(consumer.partitions(dataset.topic))
    finally:
        consumer.close()
    stored = dict(query(rt, "SELECT partition, next_offset FROM consumer_offsets "
                            "WHERE group_id = %s AND topic = %s", (GROUP_ID, dataset.topic)))
    assert {tp.partition: end for tp, end in ends.items()} == stored
    assert sum(stored.values()) == total


def test_projectors_start_together(kafka_runtime: Runtime) -> None:
    """Replicas of a deployment start at the same moment; each creates the read-model
    tables it needs, so two of them must not trip over each other doing it."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def start() -> None:
        projector = kafka_runtime.projector()
        try:
            barrier.wait()
            projector.prepare()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            projector.close()

    threads = [threading.Thread(target=start) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, f"concurrent projector start-up failed: {errors[0]!r}"


def test_a_member_that_lost_its_partitions_cannot_stage_them_twice(
        kafka_runtime: Runtime, kafka_bootstrap: str, tmp_path: Path) -> None:
    """A member that stalls past max.poll.interval (a long apply, a GC pause, a network
    partition) loses its partitions while it still holds a polled batch; the new owner
    starts from the same stored offsets. Whichever commits second must not stage the batch
    again (double counts) nor leave the control stream stuck on an applied snapshot."""
    rt = kafka_runtime
    prefix = rt.settings.kafka_topic_prefix
    folder = tmp_path / "crime"
    folder.mkdir()
    shutil.copy(CRIME_SAMPLES / "january2017.csv", folder)
    rows = len(read_raw_csv(CRIME_SAMPLES / "january2017.csv")[1])
    ingest(rt, "slmpd-crime", folder)

    def member(name: str) -> Projector:
        # Kafka groups of their own: each is handed every partition, as both the stale
        # and the new owner are at the moment of a takeover. Offsets are the shared ones.
        return Projector(
            rt.database, rt.catalog, batch_size=1000, poll_interval=0.05,
            data=KafkaConsumer(kafka_bootstrap, group_id=name, topic_prefix=prefix),
            control=KafkaConsumer(kafka_bootstrap, group_id=name + "-control",
                                  topic_prefix=prefix),
            dead_letters=rt.producer())

    stale, owner = member("stale"), member("owner")
    try:
        stale.prepare()
        owner.prepare()
        batches = [wait_for("a batch", lambda p=p: p.data.poll(1000, 0.2), 30)
                   for p in (stale, owner)]
        assert [m.offset for m in batches[0]] == [m.offset for m in batches[1]]
        owner._stage(batches[1])
        try:
            stale._stage(batches[0])  # too late: the owner has staged these offsets
        except Exception as exc:  # noqa: BLE001 - refusing is the right outcome
            print(f"stale member refused: {exc!r}")
        owner.run(until_idle=True)
    finally:
        stale.close()
        owner.close()

    assert query(rt, "SELECT status, record_count FROM snapshots") == [("committed", rows)]
    assert query(rt, "SELECT count(*) FROM ds_slmpd_crime")[0][0] == rows
    assert query(rt, "SELECT count(*) FROM record_versions")[0][0] == rows


def test_a_commit_event_read_again_is_skipped(kafka_runtime: Runtime, tmp_path: Path) -> None:
    """Kafka delivers at least once: a member that loaded the control offset just before
    another applied a snapshot reads that commit event again. Its staged records are gone,
    so waiting for them would block the control stream for good; it must be skipped."""
    rt = kafka_runtime
    folder = tmp_path / "crime"
    folder.mkdir()
    shutil.copy(CRIME_SAMPLES / "january2017.csv", folder)
    rows = len(read_raw_csv(CRIME_SAMPLES / "january2017.csv")[1])
    ingest(rt, "slmpd-crime", folder)
    project(rt)
    with rt.database.connect() as conn:
        conn.execute("UPDATE consumer_offsets SET next_offset = 0 WHERE topic = %s",
                     (CONTROL_TOPIC,))

    projector = rt.projector()
    stop = threading.Event()
    failed: list[BaseException] = []

    def run() -> None:
        try:
            projector.run(until_idle=True, stop=stop)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failed.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(15)
    caught_up = not thread.is_alive()
    stop.set()
    thread.join(10)
    projector.close()

    assert caught_up and not failed, "the projector stayed stuck on an applied snapshot"
    assert query(rt, "SELECT status, record_count FROM snapshots") == [("committed", rows)]
    assert query(rt, "SELECT count(*) FROM ds_slmpd_crime")[0][0] == rows


def test_a_running_projector_outlives_a_lost_database_connection(
        kafka_runtime: Runtime, tmp_path: Path) -> None:
    """A database failover or restart drops every connection. ``stldata project`` is the
    long-running consumer of a Kafka deployment: it must carry on with a new connection
    (resuming from the stored offsets), not exit."""
    rt = kafka_runtime
    env = stldata_env(rt, tmp_path / "home", STLDATA_POLL_INTERVAL="0.05")
    projector = Spawned(["project"], env, tmp_path / "projector.log")
    try:
        wait_for("the projector", lambda: "projector started" in projector.text(), 60,
                 projector)
        with rt.database.connect(autocommit=True) as conn:
            dropped = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()
        assert dropped and dropped[0] >= 1

        folder = tmp_path / "crime"
        folder.mkdir()
        shutil.copy(CRIME_SAMPLES / "january2017.csv", folder)
        ingest(rt, "slmpd-crime", folder)
        wait_for("the snapshot to be applied", lambda: query(
            rt, "SELECT 1 FROM snapshots WHERE status = 'committed'"), 60, projector)
        projector.proc.send_signal(signal.SIGTERM)
        assert projector.wait(30) == 0, projector.text()[-3000:]
    finally:
        projector.stop()
    rows = len(read_raw_csv(CRIME_SAMPLES / "january2017.csv")[1])
    assert query(rt, "SELECT count(*) FROM ds_slmpd_crime")[0][0] == rows
