"""The embedded log: Kafka's topic/partition/offset model, durable in PostgreSQL.

It is the zero-setup default. Offsets are allocated under a row lock on
``log_partitions``, so the messages of one partition become visible in offset order and
a consumer that reads past offset N has seen every message before it.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections import defaultdict
from collections.abc import Sequence

import orjson
import psycopg

from stldata.log.base import Message, OnAssign, OnRevoke, TopicPartition
from stldata.log.events import SnapshotStarted
from stldata.store.database import Database

log = logging.getLogger(__name__)


def partition_for(key: bytes | None, partitions: int) -> int:
    """Stable key → partition, so that all versions of a record stay in order."""
    return 0 if key is None else zlib.crc32(key) % partitions


class EmbeddedProducer:
    """Queues messages in memory and writes them with one COPY per flush; a flush also
    happens by itself every ``max_queued`` messages, so the queue stays bounded when the
    caller only flushes at the end of a file."""

    def __init__(self, database: Database, *, default_partitions: int = 1,
                 max_queued: int = 5000) -> None:
        self._conn = database.connect()
        self._default_partitions = default_partitions
        self._max_queued = max_queued
        self._queued = 0
        self._partitions: dict[str, int] = {}
        self._queue: dict[tuple[str, int], list[tuple[bytes | None, bytes, bytes]]] = (
            defaultdict(list)
        )

    def ensure_topic(self, topic: str, partitions: int) -> None:
        with self._conn.transaction():
            for partition in range(partitions):
                self._conn.execute(
                    "INSERT INTO log_partitions (topic, partition) VALUES (%s, %s) "
                    "ON CONFLICT DO NOTHING", (topic, partition))
        self._partitions.pop(topic, None)

    def _partition_count(self, topic: str) -> int:
        count = self._partitions.get(topic)
        if count is None:
            row = self._conn.execute(
                "SELECT count(*) FROM log_partitions WHERE topic = %s", (topic,)).fetchone()
            self._conn.commit()
            count = int(row[0]) if row else 0
            if count == 0:
                self.ensure_topic(topic, self._default_partitions)
                count = self._default_partitions
            self._partitions[topic] = count
        return count

    def send(self, topic: str, value: bytes, *, key: bytes | None = None,
             headers: dict[str, bytes] | None = None) -> None:
        partition = partition_for(key, self._partition_count(topic))
        encoded = orjson.dumps({k: v.decode("latin-1") for k, v in (headers or {}).items()})
        self._queue[(topic, partition)].append((key, value, encoded))
        self._queued += 1
        if self._queued >= self._max_queued:
            self.flush()

    def flush(self) -> None:
        if not self._queue:
            return
        with self._conn.transaction():
            for (topic, partition), messages in sorted(self._queue.items()):
                row = self._conn.execute(
                    "UPDATE log_partitions SET next_offset = next_offset + %s "
                    "WHERE topic = %s AND partition = %s RETURNING next_offset",
                    (len(messages), topic, partition)).fetchone()
                assert row is not None, f"partition {topic}/{partition} vanished"
                first = int(row[0]) - len(messages)
                with self._conn.cursor().copy(
                    'COPY log_messages (topic, partition, "offset", key, value, headers) '
                    "FROM STDIN"
                ) as copy:
                    for offset, (key, value, headers) in enumerate(messages, first):
                        copy.write_row((topic, partition, offset, key, value,
                                        headers.decode()))
        self._queue.clear()
        self._queued = 0

    def newest_snapshot_id(self) -> int:
        return 0  # the log lives in the database that numbers the snapshots

    def first_start(self, snapshot_id: int) -> SnapshotStarted | None:
        return None  # likewise: no other database writes this log

    def close(self) -> None:
        self._conn.close()


class EmbeddedConsumer:
    """A group of one: the embedded log has a single consumer per group, which owns
    every partition of its topics. New partitions are picked up on each poll."""

    def __init__(self, database: Database) -> None:
        self._conn = database.connect(autocommit=True)
        self._positions: dict[TopicPartition, int] = {}
        self._topics: list[str] = []
        self._on_assign: OnAssign | None = None
        self._checked = 0.0

    def partitions(self, topic: str) -> list[TopicPartition]:
        rows = self._conn.execute(
            "SELECT partition FROM log_partitions WHERE topic = %s ORDER BY partition",
            (topic,)).fetchall()
        return [TopicPartition(topic, int(r[0])) for r in rows]

    def subscribe(self, topics: list[str], on_assign: OnAssign, on_revoke: OnRevoke) -> None:
        self._topics = list(topics)
        self._on_assign = on_assign
        self._positions = {}
        self._refresh()

    def _refresh(self) -> None:
        """Assign partitions created since the last look (a topic made by a new ingest)."""
        self._checked = time.monotonic()
        current = [tp for t in self._topics for tp in self.partitions(t)]
        new = [tp for tp in current if tp not in self._positions]
        if new and self._on_assign:
            self._positions.update(self._on_assign(new))

    def poll(self, max_messages: int, timeout: float) -> Sequence[Message]:
        deadline = time.monotonic() + timeout
        while True:
            if time.monotonic() - self._checked > 1.0:
                self._refresh()
            messages = self._fetch(max_messages)
            if messages or time.monotonic() >= deadline:
                return messages
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    def _fetch(self, max_messages: int) -> list[Message]:
        out: list[Message] = []
        for tp, position in self._positions.items():
            if len(out) >= max_messages:
                break
            try:
                rows = self._conn.execute(
                    'SELECT "offset", key, value, headers, created_at FROM log_messages '
                    'WHERE topic = %s AND partition = %s AND "offset" >= %s '
                    'ORDER BY "offset" LIMIT %s',
                    (tp.topic, tp.partition, position, max_messages - len(out))).fetchall()
            except psycopg.OperationalError:
                log.warning("embedded log read failed; will retry", exc_info=True)
                return out
            for offset, key, value, headers, created in rows:
                out.append(Message(
                    tp.topic, tp.partition, int(offset), bytes(key) if key else None,
                    bytes(value),
                    {k: v.encode("latin-1") for k, v in (headers or {}).items()},
                    int(created.timestamp() * 1000)))
            if rows:
                self._positions[tp] = int(rows[-1][0]) + 1
        return out

    def topic_name(self, topic: str) -> str:
        return topic  # no namespaces: the embedded log belongs to one database

    def end_offsets(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        out: dict[TopicPartition, int] = {}
        for tp in partitions:
            row = self._conn.execute(
                "SELECT next_offset FROM log_partitions WHERE topic = %s AND partition = %s",
                (tp.topic, tp.partition)).fetchone()
            out[tp] = int(row[0]) if row else 0
        return out

    def close(self) -> None:
        self._conn.close()
