"""Snapshot ids and stray messages on a Kafka log that outlives the database, or that
holds messages no ingester of this database wrote: nothing already published is lost,
and nothing stops the projector at the same message on every restart.

Against the real test broker (``make test``), each test in a topic namespace of its own.
"""

from __future__ import annotations

import csv
import logging
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from stldata.errors import RecordRefused
from stldata.log.events import (
    CONTROL_TOPIC,
    RecordPut,
    SnapshotAborted,
    SnapshotCommitted,
    SnapshotStarted,
)
from stldata.log.kafka import MAX_RECORD_BYTES, KafkaProducer
from stldata.projection import projector as projector_module
from stldata.projection.projector import DEAD_LETTER_MAX_BYTES, run_supervised
from stldata.runtime import Runtime
from test_kafka import first_dead_letters

from conftest import (
    CRIME_SAMPLES,
    _fresh_database,
    ingest,
    invoke_cli,
    open_kafka_runtime,
    project,
    query,
    read_raw_csv,
)

JANUARY, JUNE = "january2017.csv", "june2018.csv"


def month(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name.removesuffix(".csv")
    folder.mkdir()
    shutil.copy(CRIME_SAMPLES / name, folder)
    return folder


def rows_in(name: str) -> int:
    return len(read_raw_csv(CRIME_SAMPLES / name)[1])


@pytest.fixture
def second_runtime(server_url: str, tmp_path: Path, kafka_bootstrap: str,
                   kafka_prefix: str) -> Iterator[Runtime]:
    """Another new database on the same log (same broker, same topic namespace)."""
    for url in _fresh_database(server_url):
        yield open_kafka_runtime(url, tmp_path / "home-second", kafka_bootstrap, kafka_prefix)


def send(runtime: Runtime, topic: str, *events: bytes) -> None:
    producer = runtime.producer()
    producer.ensure_topic(topic, 1 if topic == CONTROL_TOPIC
                          else runtime.settings.topic_partitions)
    for value in events:
        producer.send(topic, value, key=b"stray")
    producer.flush()
    producer.close()


def stray_record(snapshot_id: int, dataset_id: str, **values: object) -> RecordPut:
    return RecordPut(snapshot_id, dataset_id, key="STRAY-1", partition="stray.csv", line=2,
                     hash="0" * 16, values=dict(values), source={}, issues=[])


def test_a_new_database_on_an_existing_log_numbers_its_snapshots_after_the_log(
        kafka_runtime: Runtime, second_runtime: Runtime, tmp_path: Path) -> None:
    first = ingest(kafka_runtime, "slmpd-crime", month(tmp_path, JANUARY))
    project(kafka_runtime)
    assert first.snapshot_id == 1

    # A second database on the same log (a rebuild, a restored backup, a new replica of
    # the read side) ingests before it has read anything from the log: its counter is at
    # 1, but 1 is taken on the log and the projector would skip that commit as settled.
    second = ingest(second_runtime, "slmpd-crime", month(tmp_path, JUNE))
    assert second.snapshot_id == 2
    project(second_runtime)
    project(kafka_runtime)

    both = rows_in(JANUARY) + rows_in(JUNE)
    for runtime in (kafka_runtime, second_runtime):
        assert query(runtime, "SELECT id, status FROM snapshots ORDER BY id") == [
            (1, "committed"), (2, "committed")]
        assert query(runtime, "SELECT count(*) FROM ds_slmpd_crime")[0][0] == both

    # Having read the log, the second database's next ids follow it as well.
    again = ingest(second_runtime, "slmpd-crime", month(tmp_path, "may2017.csv"))
    assert again.snapshot_id == 3


def test_malformed_and_misplaced_records_are_dead_letters_not_a_stuck_projector(
        kafka_runtime: Runtime, kafka_bootstrap: str, kafka_prefix: str,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    topic = kafka_runtime.catalog.get("slmpd-crime").topic
    not_an_object = orjson.loads(stray_record(1, "slmpd-crime").to_bytes())
    not_an_object["values"] = "a string"
    send(kafka_runtime, topic,
         orjson.dumps(not_an_object),  # values must be an object
         stray_record(1, "ucity-crime").to_bytes(),  # another dataset's record
         orjson.dumps([1, 2, 3]),  # JSON, but not an event
         orjson.dumps(SnapshotAborted(1, "slmpd-crime", "stray").__dict__))  # no 'event'

    ingest(kafka_runtime, "slmpd-crime", month(tmp_path, JANUARY))
    project(kafka_runtime)

    # Snapshot 1 has exactly its own records: none of the strays counted towards it.
    assert query(kafka_runtime, "SELECT id, status FROM snapshots") == [(1, "committed")]
    assert query(kafka_runtime, "SELECT count(*) FROM ds_slmpd_crime")[0][0] == \
        rows_in(JANUARY)

    dead = first_dead_letters(kafka_bootstrap, kafka_prefix, 4)
    reasons = sorted(m.headers["reason"].decode() for m in dead)
    assert reasons == [
        "a JSON list, not an event object",
        "a record-put event of dataset 'ucity-crime' on the topic of dataset 'slmpd-crime'",
        "not a known event: 'event' is None",
        "record-put event: field 'values' is str, not dict",
    ]
    # The topic header is the topic's full name on the broker, namespace included.
    assert {m.headers["topic"].decode() for m in dead} == {kafka_prefix + topic}

    # `stldata status` counts them, and the dataset's own lag is 0.
    result = invoke_cli(monkeypatch, ["status"], HOME=str(tmp_path / "home-status"),
                        DATABASE_URL=kafka_runtime.database.url,
                        KAFKA_BOOTSTRAP=kafka_bootstrap, KAFKA_TOPIC_PREFIX=kafka_prefix)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    crime = next(line for line in lines if line.startswith("slmpd-crime "))
    assert crime.split()[-2:] == ["lag", "0"]
    assert lines[-2:] == [
        "control events not yet applied: 0",
        "dead letters: 4 (messages the projector could not apply, with the reason in a "
        f"header; topic {kafka_prefix}stldata.dead-letter)"]


def test_out_of_range_misdated_misplaced_and_huge_messages_are_dead_letters(
        kafka_runtime: Runtime, kafka_bootstrap: str, kafka_prefix: str,
        tmp_path: Path) -> None:
    topic = kafka_runtime.catalog.get("slmpd-crime").topic
    huge = orjson.loads(stray_record(1, "slmpd-crime").to_bytes())
    huge["snapshot_id"] = 2**63  # over PostgreSQL's bigint
    send(kafka_runtime, topic, orjson.dumps(huge))
    send(kafka_runtime, topic, secrets.token_bytes(MAX_RECORD_BYTES - 100))  # near the limit
    misdated = SnapshotStarted(9, "slmpd-crime", "full", [], "x", "yesterday")
    send(kafka_runtime, CONTROL_TOPIC, misdated.to_bytes(),
         stray_record(9, "slmpd-crime").to_bytes())  # a record on the control topic

    ingest(kafka_runtime, "slmpd-crime", month(tmp_path, JANUARY))
    project(kafka_runtime)
    # None of them stopped the projector, and none took the id counter with it.
    assert query(kafka_runtime, "SELECT id, status FROM snapshots") == [(1, "committed")]
    assert query(kafka_runtime, "SELECT count(*) FROM ds_slmpd_crime")[0][0] == \
        rows_in(JANUARY)

    dead = {m.headers["reason"].decode().split(":")[0]: m
            for m in first_dead_letters(kafka_bootstrap, kafka_prefix, 4)}
    assert sorted(dead) == ["not JSON", "record-put event",
                            "snapshot-started event", "unexpected record-put event on the "
                                                      "control topic"]
    assert b"outside 1 to" in dead["record-put event"].headers["reason"]
    assert b"'yesterday' is not an ISO 8601 time" in \
        dead["snapshot-started event"].headers["reason"]
    garbage = dead["not JSON"]
    assert len(garbage.value) == DEAD_LETTER_MAX_BYTES
    assert garbage.headers["truncated_from"] == str(MAX_RECORD_BYTES - 100).encode()


def test_a_stray_record_with_a_snapshots_id_fails_that_snapshot_and_the_next_applies(
        kafka_runtime: Runtime, tmp_path: Path) -> None:
    # A record of the right dataset, on the right topic, carrying the id that the next
    # ingest will take: the commit then counts one message fewer than are staged.
    topic = kafka_runtime.catalog.get("slmpd-crime").topic
    send(kafka_runtime, topic, stray_record(1, "slmpd-crime", complaint="STRAY").to_bytes())
    folder = month(tmp_path, JANUARY)
    ingest(kafka_runtime, "slmpd-crime", folder)
    project(kafka_runtime)  # returns: the projector neither crashes nor waits

    status, reason = query(kafka_runtime, "SELECT status, reason FROM snapshots")[0]
    assert status == "aborted"
    assert "more messages on the log carry snapshot id 1 than its commit counts" in reason
    assert query(kafka_runtime, "SELECT count(*) FROM ds_slmpd_crime")[0][0] == 0

    # The failed snapshot's files are forgotten: the same files publish again, and apply.
    again = ingest(kafka_runtime, "slmpd-crime", folder)
    project(kafka_runtime)
    assert again.snapshot_id == 2
    assert query(kafka_runtime, "SELECT count(*) FROM ds_slmpd_crime")[0][0] == \
        rows_in(JANUARY)
    assert query(kafka_runtime, "SELECT count(*) FROM ds_slmpd_crime "
                                "WHERE complaint = 'STRAY'")[0][0] == 0


def test_the_control_topic_tail_gives_the_newest_snapshot_id(kafka_runtime: Runtime) -> None:
    producer = kafka_runtime.producer()
    try:
        assert producer.newest_snapshot_id() == 0  # no control topic yet
        producer.ensure_topic(CONTROL_TOPIC, 1)
        for sid in (7, 41, 12):
            producer.send(CONTROL_TOPIC, SnapshotAborted(sid, "slmpd-crime", "x").to_bytes())
        producer.send(CONTROL_TOPIC, b"not an event")
        producer.flush()
        assert producer.newest_snapshot_id() == 41
    finally:
        producer.close()


def with_long_description(tmp_path: Path, name: str, length: int) -> tuple[Path, str, str]:
    """January 2017 with the first row's Description replaced by ``length`` characters that
    do not compress; the folder, the row's complaint number and the new description."""
    header, rows = read_raw_csv(CRIME_SAMPLES / JANUARY)
    long_text = secrets.token_hex(length // 2)
    rows[0][header.index("Description")] = long_text
    folder = tmp_path / name
    folder.mkdir()
    with (folder / JANUARY).open("w", encoding="cp1252", newline="") as out:
        csv.writer(out).writerows([header, *rows])
    return folder, rows[0][header.index("Complaint")], long_text


def test_a_record_of_megabytes_passes_and_one_over_the_limit_is_refused_by_name(
        kafka_runtime: Runtime, tmp_path: Path) -> None:
    # A cell of 3 MB: the record carries it twice (values and source), three times
    # Kafka's default message limit; the log's topics take 16 MiB.
    folder, complaint, text = with_long_description(tmp_path, "three-mb", 3_000_000)
    ingest(kafka_runtime, "slmpd-crime", folder)
    project(kafka_runtime)
    assert query(kafka_runtime, "SELECT complaint FROM ds_slmpd_crime "
                                "WHERE description = %s", (text,)) == [(complaint,)]
    stored = query(kafka_runtime, "SELECT count(*) FROM ds_slmpd_crime")[0][0]
    assert stored == rows_in(JANUARY)

    # Twice 9 MB is over the limit: the ingest fails naming the row, the snapshot is
    # aborted, and what was stored stays.
    folder, complaint, _ = with_long_description(tmp_path, "nine-mb", 9_000_000)
    with pytest.raises(RecordRefused) as refused:
        ingest(kafka_runtime, "slmpd-crime", folder)
    message = refused.value.message
    assert message.startswith(f"{JANUARY} line 2 (key ") and complaint in message
    assert f"-byte message to {kafka_runtime.settings.kafka_topic_prefix}" in message
    assert message.endswith(f"(limit {MAX_RECORD_BYTES} bytes)")
    project(kafka_runtime)
    assert query(kafka_runtime, "SELECT status FROM snapshots ORDER BY id") == [
        ("committed",), ("aborted",)]
    assert query(kafka_runtime, "SELECT count(*) FROM ds_slmpd_crime")[0][0] == stored


def waiting(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "stldata.projection.projector" and r.levelno == logging.WARNING]


def test_a_commit_whose_records_never_come_is_reported(
        kafka_runtime: Runtime, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(projector_module, "WAITING_NOTICE_SECONDS", 0.0)
    commit = SnapshotCommitted(500, "metro-routes", record_count=3, message_count=3,
                               rows_read=3, quarantined=0, source="by hand",
                               fetched_at="2026-12-05T00:00:00+00:00", sha256="0" * 64)
    send(kafka_runtime, CONTROL_TOPIC, commit.to_bytes())

    projector = kafka_runtime.projector()
    try:
        projector.prepare()
        with caplog.at_level(logging.WARNING, logger="stldata.projection.projector"):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not waiting(caplog):
                projector.step()
                time.sleep(0.1)
    finally:
        projector.close()
    assert waiting(caplog)[0].startswith(
        "metro-routes: snapshot 500 is committed on the log but only 0 of its 3 messages "
        "have arrived after ")


def crime_rows(runtime: Runtime) -> int:
    """Rows of the crime table, or -1 before that database's projector has made it."""
    if not query(runtime, "SELECT to_regclass('ds_slmpd_crime') IS NOT NULL")[0][0]:
        return -1
    return int(query(runtime, "SELECT count(*) FROM ds_slmpd_crime")[0][0])


def test_two_databases_on_one_log_each_read_every_partition(
        kafka_runtime: Runtime, second_runtime: Runtime, tmp_path: Path) -> None:
    # Two read sides project the same log at the same time: with one consumer group
    # between them, each would get some of the partitions and miss the others' records.
    stop = threading.Event()
    threads = [threading.Thread(target=run_supervised, args=(runtime.projector,),
                                kwargs={"stop": stop}, daemon=True)
               for runtime in (kafka_runtime, second_runtime)]
    for thread in threads:
        thread.start()
    try:
        ingest(kafka_runtime, "slmpd-crime", month(tmp_path, JANUARY))
        rows = rows_in(JANUARY)
        deadline = time.monotonic() + 120
        counts: list[int] = []
        while time.monotonic() < deadline:
            counts = [crime_rows(runtime) for runtime in (kafka_runtime, second_runtime)]
            if counts == [rows, rows]:
                break
            time.sleep(0.2)
        assert counts == [rows, rows]
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)


def test_an_id_taken_on_the_log_meanwhile_is_given_up_for_a_new_one(
        kafka_runtime: Runtime, second_runtime: Runtime, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Two databases ingesting at the same moment both read the log before either start
    # event is on it, and both take id 1. Played in turn: the second database's first
    # read of the log is made to miss the first one's start, as it would in the race.
    first = ingest(kafka_runtime, "slmpd-crime", month(tmp_path, JANUARY))
    assert first.snapshot_id == 1
    reads: list[int] = []
    real = KafkaProducer.newest_snapshot_id

    def stale_once(producer: KafkaProducer) -> int:
        reads.append(1)
        return 0 if len(reads) == 1 else real(producer)

    monkeypatch.setattr(KafkaProducer, "newest_snapshot_id", stale_once)
    second = ingest(second_runtime, "metro-routes")
    assert second.snapshot_id == 2 and len(reads) == 2

    for runtime in (kafka_runtime, second_runtime):
        project(runtime)
        assert query(runtime, "SELECT id, dataset_id, status FROM snapshots ORDER BY id") == [
            (1, "slmpd-crime", "committed"), (2, "metro-routes", "committed")]
        assert query(runtime, "SELECT count(*) FROM ds_slmpd_crime")[0][0] == rows_in(JANUARY)
        assert query(runtime, "SELECT count(*) FROM ds_metro_routes")[0][0] == 61
