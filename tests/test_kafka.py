"""The Kafka log against a real broker: the client semantics the projector relies on, a
read model identical to the embedded log's, and malformed messages sent to dead letters.

Needs ``STLDATA_TEST_KAFKA_BOOTSTRAP`` (``make test`` sets it); each test works in a topic
and consumer-group namespace of its own (``kafka_topic_prefix``) on the shared broker.
"""

from __future__ import annotations

import os
import shutil
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from stldata.log.base import Message, TopicPartition
from stldata.log.events import CONTROL_TOPIC
from stldata.log.kafka import (
    MAX_MESSAGE_BYTES,
    KafkaConsumer,
    KafkaDeliveryError,
    KafkaLogError,
    KafkaProducer,
    KafkaRejectedError,
)
from stldata.projection.projector import DEAD_LETTER_TOPIC
from stldata.runtime import Runtime

from conftest import CRIME_SAMPLES, ingest, project, query, read_raw_csv


def consume(consumer: KafkaConsumer, count: int, timeout: float = 30.0) -> list[Message]:
    deadline = time.monotonic() + timeout
    out: list[Message] = []
    while len(out) < count and time.monotonic() < deadline:
        out += consumer.poll(1000, 0.2)
    return out


def from_offsets(offsets: dict[TopicPartition, int] | None = None):  # type: ignore[no-untyped-def]
    """An on_assign that starts each partition at a given offset (default 0)."""
    def on_assign(partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: (offsets or {}).get(tp, 0) for tp in partitions}
    return on_assign


def test_send_blocks_on_a_full_buffer_and_delivers_everything(kafka_bootstrap: str,
                                                               kafka_prefix: str) -> None:
    producer = KafkaProducer(kafka_bootstrap, default_partitions=3, topic_prefix=kafka_prefix,
                             buffer_max_messages=50)
    for i in range(3000):  # 60 times the buffer: send() must wait, never drop
        producer.send("buffered", f"{i}".encode(), key=f"k{i % 7}".encode(),
                      headers={"n": str(i).encode()})
    producer.flush()
    producer.close()

    consumer = KafkaConsumer(kafka_bootstrap, group_id="reader", topic_prefix=kafka_prefix)
    consumer.subscribe(["buffered"], from_offsets(), lambda _: None)
    messages = consume(consumer, 3000)
    assert consumer.end_offsets(consumer.partitions("buffered"))
    consumer.close()

    assert sorted(int(m.value) for m in messages) == list(range(3000))
    assert all(m.topic == "buffered" and m.headers == {"n": m.value} for m in messages)
    # One key, one partition, in send order.
    by_key: dict[bytes | None, list[Message]] = defaultdict(list)
    for m in messages:
        by_key[m.key].append(m)
    for same_key in by_key.values():
        assert len({m.partition for m in same_key}) == 1
        values = [int(m.value) for m in sorted(same_key, key=lambda m: m.offset)]
        assert values == sorted(values)


def test_a_rejected_message_fails_the_flush_and_the_producer_recovers(
        kafka_bootstrap: str, kafka_prefix: str) -> None:
    producer = KafkaProducer(kafka_bootstrap, topic_prefix=kafka_prefix,
                             topic_config={"max.message.bytes": "2000"})
    producer.ensure_topic("small", 1)
    producer.send("small", b"fits")
    producer.send("small", os.urandom(20_000))  # incompressible, ten times the limit
    with pytest.raises(KafkaDeliveryError) as caught:
        producer.flush()
    assert caught.value.undelivered >= 1 and caught.value.transient
    assert kafka_bootstrap in caught.value.message and "not delivered" in caught.value.message

    with pytest.raises(KafkaRejectedError):  # over the client's message.max.bytes
        producer.send("small", b"x" * (MAX_MESSAGE_BYTES + 2 * 1024 * 1024))
    producer.send("small", b"after")  # a failed flush leaves the producer usable
    producer.flush()
    producer.close()


def test_an_unreachable_broker_is_a_clear_transient_error(tmp_path: Path) -> None:
    closed = "127.0.0.1:9"  # discard port: nothing listens there
    producer = KafkaProducer(closed, flush_timeout=2)
    with pytest.raises(KafkaLogError) as caught:
        producer.send("anything", b"x")
    assert caught.value.transient and closed in caught.value.message
    consumer = KafkaConsumer(closed, group_id="g", request_timeout=1)
    with pytest.raises(KafkaLogError):
        consumer.partitions("anything")
    consumer.close()


def test_consumer_joins_before_its_topic_exists_and_starts_where_told(
        kafka_bootstrap: str, kafka_prefix: str) -> None:
    consumer = KafkaConsumer(kafka_bootstrap, group_id="late", topic_prefix=kafka_prefix)
    assert consumer.partitions("late") == []
    assigned: list[list[TopicPartition]] = []

    def on_assign(partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        assigned.append(partitions)
        return {tp: 3 for tp in partitions}

    consumer.subscribe(["late"], on_assign, lambda _: None)
    assert consumer.poll(10, 0.5) == []

    producer = KafkaProducer(kafka_bootstrap, topic_prefix=kafka_prefix)
    producer.ensure_topic("late", 1)
    for i in range(10):
        producer.send("late", str(i).encode(), key=b"k")
    producer.flush()
    producer.close()

    messages = consume(consumer, 7)
    assert [m.offset for m in messages] == list(range(3, 10))
    assert [m.value for m in messages] == [str(i).encode() for i in range(3, 10)]
    assert assigned[-1] == [TopicPartition("late", 0)]
    tp = TopicPartition("late", 0)
    assert consumer.partitions("late") == [tp]
    assert consumer.end_offsets([tp]) == {tp: 10}
    consumer.close()


def _rows(runtime: Runtime, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    with runtime.database.connect() as conn:
        cursor = conn.execute(sql)  # type: ignore[arg-type]
        names = [c.name for c in cursor.description or []]
        return names, [tuple(r) for r in cursor.fetchall()]


#: Columns that differ between two runs of the same data by nature.
VOLATILE = {"id", "fetched_at", "started_at", "committed_at", "created_at", "updated_at",
            "published_at"}


def read_model(runtime: Runtime) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for table, order in (("ds_slmpd_crime", "_key"), ("snapshots", "id"),
                         ("record_versions", "dataset_id, key, valid_from"),
                         ("quarantine", "dataset_id, snapshot_id, source_file, line, "
                                        "record_key, column_name, reason, raw_value")):
        names, rows = _rows(runtime, f"SELECT * FROM {table} ORDER BY {order}")
        out[table] = [{n: v for n, v in zip(names, r, strict=True) if n not in VOLATILE}
                      for r in rows]
    return out


def test_kafka_read_model_equals_embedded(runtime: Runtime, kafka_runtime: Runtime) -> None:
    """Every month of crime through Kafka: the same rows, hashes, typed values, snapshot
    bookkeeping, history and quarantine as through the embedded log."""
    embedded = ingest(runtime, "slmpd-crime")
    project(runtime)
    kafka = ingest(kafka_runtime, "slmpd-crime")
    project(kafka_runtime)

    assert (kafka.published, kafka.quarantined) == (embedded.published, embedded.quarantined)
    expected, got = read_model(runtime), read_model(kafka_runtime)
    total = sum(len(read_raw_csv(p)[1]) for p in CRIME_SAMPLES.iterdir())
    assert len(expected["ds_slmpd_crime"]) == total
    for table in expected:
        assert got[table] == expected[table], table
    assert got["snapshots"][0]["status"] == "committed"


def first_dead_letters(bootstrap: str, prefix: str, count: int) -> Sequence[Message]:
    reader = KafkaConsumer(bootstrap, group_id="dead-letter-reader", topic_prefix=prefix)
    reader.subscribe([DEAD_LETTER_TOPIC], from_offsets(), lambda _: None)
    try:
        return consume(reader, count)
    finally:
        reader.close()


def test_malformed_messages_go_to_dead_letters_and_later_ones_apply(
        kafka_runtime: Runtime, kafka_bootstrap: str, kafka_prefix: str,
        tmp_path: Path) -> None:
    dataset = kafka_runtime.catalog.get("slmpd-crime")
    producer = kafka_runtime.producer()
    producer.ensure_topic(dataset.topic, kafka_runtime.settings.topic_partitions)
    producer.ensure_topic(CONTROL_TOPIC, 1)
    producer.send(dataset.topic, b"{not json", key=b"garbage")
    producer.send(CONTROL_TOPIC, b'{"event": "no-such-event"}', key=b"slmpd-crime")
    producer.flush()
    producer.close()

    folder = tmp_path / "crime"
    folder.mkdir()
    shutil.copy(CRIME_SAMPLES / "january2017.csv", folder)
    summary = ingest(kafka_runtime, "slmpd-crime", folder)
    project(kafka_runtime)

    rows = len(read_raw_csv(CRIME_SAMPLES / "january2017.csv")[1])
    assert summary.published == rows
    assert query(kafka_runtime, "SELECT count(*) FROM ds_slmpd_crime")[0][0] == rows
    assert query(kafka_runtime, "SELECT status FROM snapshots")[0][0] == "committed"

    dead = first_dead_letters(kafka_bootstrap, kafka_prefix, 2)
    # Topics by their full names on the broker, namespace included.
    by_topic = {m.headers["topic"].decode().removeprefix(kafka_prefix): m for m in dead}
    assert set(by_topic) == {dataset.topic, CONTROL_TOPIC}
    data = by_topic[dataset.topic]
    assert data.value == b"{not json" and data.key == b"garbage"
    assert data.headers["reason"].startswith(b"not JSON")
    assert data.headers["offset"] == b"0" and int(data.headers["partition"]) in range(3)
    assert by_topic[CONTROL_TOPIC].value == b'{"event": "no-such-event"}'
    assert by_topic[CONTROL_TOPIC].headers["reason"] == \
        b"not a known event: 'event' is 'no-such-event'"
