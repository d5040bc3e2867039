"""The Kafka event log, on confluent-kafka (librdkafka): the production backend.

The producer is idempotent (``acks=all``, no duplicates or reordering on retries), batches
and compresses for throughput, and never drops a message silently: :meth:`KafkaProducer.send`
blocks while the local buffer is full and :meth:`KafkaProducer.flush` raises
:class:`KafkaDeliveryError` when anything could not be written. Topics are created
explicitly through the admin API (brokers run with ``auto.create.topics.enable=false``).

The consumer never commits offsets to Kafka: the projector keeps them in PostgreSQL with
the rows they produced, and hands them back through ``on_assign`` after every rebalance.

``topic_prefix`` puts every topic and consumer group of this process in a namespace of its
own on a shared cluster (tests, several deployments); callers always see plain names.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import Consumer as _CKConsumer
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka import Message as _CKMessage
from confluent_kafka import Producer as _CKProducer
from confluent_kafka import TopicPartition as _CKTopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from stldata.errors import StlDataError, TransientError
from stldata.log.base import Message, OnAssign, OnRevoke, TopicPartition
from stldata.log.events import (
    CONTROL_TOPIC,
    MalformedEvent,
    SnapshotAborted,
    SnapshotCommitted,
    SnapshotStarted,
    decode_event,
)

log = logging.getLogger(__name__)



class _Repeats(logging.Filter):
    """librdkafka logs every failed reconnect; one line per kind every 30 s is plenty."""

    def __init__(self, every: float = 30.0) -> None:
        super().__init__()
        self._every = every
        self._seen: dict[tuple[int, str], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        kind = (record.levelno, str(record.getMessage())[:60])
        now = time.monotonic()
        if now - self._seen.get(kind, -1e9) < self._every:
            return False
        self._seen[kind] = now
        return True


#: librdkafka's own log lines (served on poll/consume/flush), instead of raw stderr.
_client_log = logging.getLogger(__name__ + ".client")
_client_log.addFilter(_Repeats())

#: Seven days: the log only has to cover a projector's downtime; the read model and the
#: sources are the records of truth, and re-ingesting republishes a whole snapshot.
DEFAULT_RETENTION_MS = 7 * 24 * 3600 * 1000

#: Errors after which retrying cannot help: credentials, ACLs, a broken configuration.
_PERMANENT_CODES = frozenset(
    getattr(KafkaError, name) for name in (
        "TOPIC_AUTHORIZATION_FAILED", "GROUP_AUTHORIZATION_FAILED",
        "CLUSTER_AUTHORIZATION_FAILED", "SASL_AUTHENTICATION_FAILED", "_AUTHENTICATION",
        "_INVALID_ARG", "_UNSUPPORTED_FEATURE", "INVALID_CONFIG", "_FATAL",
    ) if hasattr(KafkaError, name))


class KafkaLogError(TransientError):
    """The broker could not be reached or refused a request; retrying may help."""

    def __init__(self, message: str, *, bootstrap: str) -> None:
        super().__init__(f"Kafka ({bootstrap}): {message}")
        self.bootstrap = bootstrap


class KafkaDeliveryError(KafkaLogError):
    """Messages handed to the producer were not (or not certainly) written to the log."""

    def __init__(self, bootstrap: str, *, undelivered: int, sent: int, reason: str) -> None:
        super().__init__(
            f"{undelivered} of {sent} messages sent since the last flush were not delivered "
            f"({reason}); nothing after the last successful flush may be assumed written",
            bootstrap=bootstrap)
        self.undelivered = undelivered
        self.sent = sent
        self.reason = reason


class KafkaFatalError(StlDataError):
    """The client hit an error it cannot recover from (authorization, a fenced producer,
    a broken configuration); it has to be fixed and the process restarted."""

    def __init__(self, message: str, *, bootstrap: str) -> None:
        super().__init__(f"Kafka ({bootstrap}): {message}")
        self.bootstrap = bootstrap


class KafkaRejectedError(StlDataError):
    """The client refused a message outright (too large for ``message.max.bytes``, say);
    sending it again cannot help."""

    def __init__(self, message: str, *, bootstrap: str) -> None:
        super().__init__(f"Kafka ({bootstrap}): {message}")
        self.bootstrap = bootstrap


def _client_id(role: str) -> str:
    """Named after host and pid, so a group member can be traced to its process."""
    return f"stldata-{role}-{socket.gethostname()}-{os.getpid()}"


def _describe(error: KafkaError) -> str:
    return f"{error.name()}: {error.str()}"


#: The largest message the log writes: a record carries its cells twice (typed values and
#: source text), so a cell of a few megabytes (a long description, a geometry) must fit.
#: Kafka's own default is 1 MB; topics the log creates take this limit, and the producer's
#: request limit is one megabyte above it for the batch around the message.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
#: The largest message (value and key) the producer accepts: the rest of the topic's limit
#: is room for headers and the batch around one message.
MAX_RECORD_BYTES = MAX_MESSAGE_BYTES - 256 * 1024

#: Control events read for the newest snapshot id, per partition: a snapshot makes two or
#: three, so this covers the last few hundred snapshots of every database on the log.
CONTROL_TAIL = 1000


class _Topics:
    """Explicit topic creation through the admin API, with a cache of topics seen."""

    def __init__(self, bootstrap: str, *, replication_factor: int, retention_ms: int,
                 timeout: float, config: dict[str, str] | None) -> None:
        self._bootstrap = bootstrap
        self._admin = AdminClient({"bootstrap.servers": bootstrap,
                                   "client.id": _client_id("admin")}, logger=_client_log)
        self._replication_factor = replication_factor
        self._timeout = timeout
        self._config = {
            "cleanup.policy": "delete",
            "retention.ms": str(retention_ms),
            "retention.bytes": "-1",
            "min.insync.replicas": str(max(1, min(2, replication_factor - 1))),
            # Batches arrive compressed; keep them as they are.
            "compression.type": "producer",
            "max.message.bytes": str(MAX_MESSAGE_BYTES),
            **(config or {}),
        }
        self._known: dict[str, int] = {}
        self._lock = threading.Lock()

    def known(self, name: str) -> bool:
        return name in self._known

    def ensure(self, name: str, partitions: int) -> None:
        with self._lock:
            if name in self._known:
                return
            existing = self._partition_count(name)
            if existing is None:
                self._create(name, partitions)
                existing = self._wait_visible(name) or partitions
            elif existing != partitions:
                log.info("topic %s exists with %d partitions (asked for %d); keeping it, "
                         "since adding partitions would move keys", name, existing, partitions)
            self._known[name] = existing

    def _partition_count(self, name: str) -> int | None:
        found = _topic_partitions(self._admin, name, self._timeout, self._bootstrap)
        return len(found) if found else None

    def _create(self, name: str, partitions: int) -> None:
        new = NewTopic(name, num_partitions=partitions,
                       replication_factor=self._replication_factor, config=self._config)
        futures = self._admin.create_topics([new], operation_timeout=self._timeout,
                                            request_timeout=self._timeout)
        try:
            futures[name].result(timeout=self._timeout + 5)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                return  # created meanwhile by another process: fine
            raise KafkaLogError(
                f"cannot create topic {name} with {partitions} partition(s) (dataset "
                f"topics take STLDATA_TOPIC_PARTITIONS) and replication factor "
                f"{self._replication_factor} (STLDATA_KAFKA_REPLICATION_FACTOR): "
                f"{_describe(error) if isinstance(error, KafkaError) else exc}",
                bootstrap=self._bootstrap) from exc
        except TimeoutError as exc:
            raise KafkaLogError(f"creating topic {name} timed out after {self._timeout}s",
                                bootstrap=self._bootstrap) from exc
        log.info("created topic %s (%d partitions, replication %d)", name, partitions,
                 self._replication_factor)

    def _wait_visible(self, name: str) -> int | None:
        """The controller acknowledges a creation before every broker serves it."""
        deadline = time.monotonic() + self._timeout
        while True:
            count = self._partition_count(name)
            if count is not None or time.monotonic() >= deadline:
                return count
            time.sleep(0.05)


def _topic_partitions(client: Any, name: str, timeout: float, bootstrap: str) -> list[int]:
    """Partition ids of a topic, from an admin client or a consumer; none if it is absent."""
    try:
        metadata = client.list_topics(topic=name, timeout=timeout)
    except KafkaException as exc:
        raise KafkaLogError(f"cannot read metadata of topic {name}: {exc}",
                            bootstrap=bootstrap) from exc
    topic = metadata.topics.get(name)
    if topic is None or topic.error is not None:
        return []
    return sorted(topic.partitions)


class KafkaProducer:
    def __init__(self, bootstrap: str, *, default_partitions: int = 1, topic_prefix: str = "",
                 replication_factor: int = 1, flush_timeout: float = 120.0,
                 retention_ms: int = DEFAULT_RETENTION_MS,
                 buffer_max_messages: int = 50_000, buffer_max_kbytes: int = 32 * 1024,
                 linger_ms: int = 25, compression: str = "lz4",
                 topic_config: dict[str, str] | None = None,
                 config: dict[str, Any] | None = None) -> None:
        self.bootstrap = bootstrap
        self.flush_timeout = flush_timeout
        self._prefix = topic_prefix
        self._default_partitions = default_partitions
        self._topics = _Topics(bootstrap, replication_factor=replication_factor,
                               retention_ms=retention_ms, timeout=min(30.0, flush_timeout),
                               config=topic_config)
        self._sent = 0
        self._failed = 0
        self._first_failure: str | None = None
        self._fatal: str | None = None
        self._producer = _CKProducer({
            "bootstrap.servers": bootstrap,
            "client.id": _client_id("producer"),
            # No duplicates and no reordering when a batch is retried.
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": linger_ms,
            "batch.size": 1_000_000,
            "message.max.bytes": MAX_MESSAGE_BYTES + 1024 * 1024,
            "compression.type": compression,
            "queue.buffering.max.messages": buffer_max_messages,
            "queue.buffering.max.kbytes": buffer_max_kbytes,
            # A message not written within the flush timeout fails (and is reported)
            # instead of lingering in the queue.
            "message.timeout.ms": max(1000, int(flush_timeout * 1000)),
            # Java's partitioner, so other clients put a key on the same partition.
            "partitioner": "murmur2_random",
            # Back within seconds of a broker restart, not after a 10 s backoff.
            "reconnect.backoff.max.ms": 2000,
            "error_cb": self._on_error,
            "on_delivery": self._on_delivery,
            **(config or {}),
        }, logger=_client_log)

    def _name(self, topic: str) -> str:
        return self._prefix + topic

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            self._fatal = _describe(error)
            log.error("Kafka producer (%s) fatal error: %s", self.bootstrap, self._fatal)
        else:
            _log_client_error("producer", self.bootstrap, error)

    def _on_delivery(self, error: KafkaError | None, message: _CKMessage) -> None:
        if error is None:
            return
        self._failed += 1
        if self._first_failure is None:
            self._first_failure = (f"{message.topic()}[{message.partition()}]: "
                                   f"{_describe(error)}")

    def _check_fatal(self) -> None:
        if self._fatal:
            raise KafkaFatalError(f"producer failed: {self._fatal}", bootstrap=self.bootstrap)

    def ensure_topic(self, topic: str, partitions: int) -> None:
        self._topics.ensure(self._name(topic), partitions)

    def send(self, topic: str, value: bytes, *, key: bytes | None = None,
             headers: dict[str, bytes] | None = None) -> None:
        name = self._name(topic)
        size = len(value) + len(key or b"")
        if size > MAX_RECORD_BYTES:
            # Checked here, before compression: the broker checks the compressed batch, so
            # a message near the limit would pass or fail by how well it compresses, and
            # only at the flush, far from the row that made it.
            raise KafkaRejectedError(f"cannot send a {size}-byte message to {name} (limit "
                                     f"{MAX_RECORD_BYTES} bytes)", bootstrap=self.bootstrap)
        if not self._topics.known(name):
            # Created explicitly on first use (the dead-letter topic, say).
            self._topics.ensure(name, self._default_partitions)
        wire: dict[str, str | bytes | None] | None = dict(headers) if headers else None
        deadline: float | None = None
        while True:
            try:
                self._producer.produce(name, value, key, headers=wire)
                break
            except KafkaException as exc:
                self._check_fatal()
                error = exc.args[0] if exc.args else None
                reason = _describe(error) if isinstance(error, KafkaError) else str(exc)
                raise KafkaRejectedError(f"cannot send a {len(value)}-byte message to {name} "
                                         f"(limit {MAX_MESSAGE_BYTES} bytes): {reason}",
                                         bootstrap=self.bootstrap) from exc
            except BufferError:
                # The local buffer is full: wait for deliveries instead of dropping.
                self._check_fatal()
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.flush_timeout
                elif now >= deadline:
                    raise KafkaLogError(
                        f"the producer buffer ({len(self._producer)} messages) did not drain "
                        f"in {self.flush_timeout:.0f}s; the broker is not accepting writes",
                        bootstrap=self.bootstrap) from None
                self._producer.poll(0.05)
        self._sent += 1
        if self._sent % 1000 == 0:
            self._producer.poll(0)

    def flush(self) -> None:
        """Wait until every message sent is acknowledged by all in-sync replicas.

        Raises :class:`KafkaDeliveryError` naming how many messages failed or are still
        queued after ``flush_timeout``; those are purged, so the producer can be used again
        (to publish an abort, say) once the broker is back.
        """
        remaining = self._producer.flush(self.flush_timeout)
        if remaining:
            # Give up on them explicitly; their delivery reports arrive as failures.
            self._producer.purge(in_queue=True, in_flight=True, blocking=True)
            self._producer.poll(0)
            remaining = len(self._producer)
        sent, failed, first = self._sent, self._failed + remaining, self._first_failure
        self._sent, self._failed, self._first_failure = 0, 0, None
        self._check_fatal()
        if failed:
            reason = first or f"still queued after {self.flush_timeout:.0f}s"
            log.error("Kafka (%s): %d of %d messages not delivered: %s", self.bootstrap,
                      failed, sent, reason)
            raise KafkaDeliveryError(self.bootstrap, undelivered=failed, sent=sent,
                                     reason=reason)

    def newest_snapshot_id(self) -> int:
        return max((event.snapshot_id for event in self._control_tail()), default=0)

    def first_start(self, snapshot_id: int) -> SnapshotStarted | None:
        return next((event for event in self._control_tail()
                     if isinstance(event, SnapshotStarted)
                     and event.snapshot_id == snapshot_id), None)

    def _control_tail(self) -> list[SnapshotStarted | SnapshotCommitted | SnapshotAborted]:
        """The newest snapshot events of the control topic (:data:`CONTROL_TAIL` per
        partition), in log order, read by a consumer of no group, which commits nothing
        and joins nothing."""
        name = self._name(CONTROL_TOPIC)
        timeout = min(30.0, self.flush_timeout)
        reader = _CKConsumer({"bootstrap.servers": self.bootstrap,
                              "client.id": _client_id("snapshot-ids"),
                              "group.id": self._prefix + "stldata-snapshot-ids",
                              "enable.auto.commit": False}, logger=_client_log)
        try:
            ends: dict[int, int] = {}
            starts: list[_CKTopicPartition] = []
            for partition in _topic_partitions(reader, name, timeout, self.bootstrap):
                low, high = reader.get_watermark_offsets(_CKTopicPartition(name, partition),
                                                         timeout=timeout)
                if high > low:
                    ends[partition] = high
                    starts.append(_CKTopicPartition(name, partition,
                                                    max(low, high - CONTROL_TAIL)))
            reader.assign(starts)
            found: list[tuple[int, int, SnapshotStarted | SnapshotCommitted
                              | SnapshotAborted]] = []
            deadline = time.monotonic() + timeout
            while ends and time.monotonic() < deadline:
                # A short wait: consume() waits its whole timeout for fewer messages than
                # asked, and the tail is read on every ingest.
                for message in reader.consume(num_messages=1000, timeout=0.05):
                    if message.error() is not None:
                        continue
                    partition, offset = message.partition() or 0, message.offset() or 0
                    if offset + 1 >= ends.get(partition, 0):
                        ends.pop(partition, None)
                    try:
                        event = decode_event(message.value())
                    except MalformedEvent:
                        continue  # the projector dead-letters it; it numbers nothing
                    if isinstance(event, SnapshotStarted | SnapshotCommitted | SnapshotAborted):
                        found.append((partition, offset, event))
            if ends:
                raise KafkaLogError(f"cannot read the newest events of {name} within "
                                    f"{timeout:.0f}s", bootstrap=self.bootstrap)
            return [event for _, _, event in sorted(found, key=lambda f: (f[0], f[1]))]
        except KafkaException as exc:
            raise KafkaLogError(f"cannot read the newest events of {name}: {exc}",
                                bootstrap=self.bootstrap) from exc
        finally:
            reader.close()

    def close(self) -> None:
        queued = self._producer.flush(min(self.flush_timeout, 30.0))
        if queued or self._failed:
            log.error("Kafka producer (%s) closed with %d messages undelivered",
                      self.bootstrap, queued + self._failed)
        self._producer.close()


class KafkaConsumer:
    """One member of a consumer group; positions come from the caller on every assignment.

    Subscribed topics that do not exist yet are fine: the group picks them up within
    ``metadata_refresh`` seconds of their creation, and ``on_assign`` starts them at the
    stored offsets (0 for a new topic).
    """

    def __init__(self, bootstrap: str, *, group_id: str, topic_prefix: str = "",
                 session_timeout: float = 10.0, max_poll_interval: float = 900.0,
                 metadata_refresh: float = 2.0, request_timeout: float = 10.0,
                 config: dict[str, Any] | None = None) -> None:
        self.bootstrap = bootstrap
        self.group_id = topic_prefix + group_id
        self._prefix = topic_prefix
        self._timeout = request_timeout
        self._fatal: str | None = None
        self._missing: set[str] = set()
        self._closing = False
        self._warned_at: dict[int, float] = {}
        self._consumer = _CKConsumer({
            "bootstrap.servers": bootstrap,
            "client.id": _client_id("consumer"),
            "group.id": self.group_id,
            # Offsets live in PostgreSQL with the rows; Kafka's are never used.
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            # Eager rebalancing: every partition is revoked before any is reassigned, so
            # two members never stage the same partition at once.
            "partition.assignment.strategy": "roundrobin",
            "session.timeout.ms": int(session_timeout * 1000),
            "heartbeat.interval.ms": max(500, int(session_timeout * 1000 / 4)),
            # Applying a large snapshot keeps the projector from polling for minutes; the
            # default 5 min would make it leave the group in the middle of that.
            "max.poll.interval.ms": int(max_poll_interval * 1000),
            # How soon a subscribed topic that was just created is noticed.
            "topic.metadata.refresh.interval.ms": int(metadata_refresh * 1000),
            "fetch.wait.max.ms": 100,
            # Prefetch up to 16 MB (librdkafka's default is 64 MB): plenty to keep a
            # projector busy, and the bound on what the consumer holds in memory.
            "queued.max.messages.kbytes": 16 * 1024,
            "reconnect.backoff.max.ms": 2000,
            "allow.auto.create.topics": False,
            "enable.partition.eof": False,
            "error_cb": self._on_error,
            **(config or {}),
        }, logger=_client_log)

    def _name(self, topic: str) -> str:
        return self._prefix + topic

    def topic_name(self, topic: str) -> str:
        return self._name(topic)

    def _plain(self, name: str) -> str:
        return name[len(self._prefix):] if name.startswith(self._prefix) else name

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            self._fatal = _describe(error)
        else:
            _log_client_error("consumer", self.bootstrap, error)

    def subscribe(self, topics: list[str], on_assign: OnAssign, on_revoke: OnRevoke) -> None:
        def assigned(consumer: _CKConsumer, partitions: list[_CKTopicPartition]) -> None:
            if self._closing:  # leaving the group: no positions to look up
                consumer.assign([])
                return
            plain = [TopicPartition(self._plain(p.topic), p.partition) for p in partitions]
            positions = on_assign(plain) if plain else {}
            consumer.assign([_CKTopicPartition(self._name(tp.topic), tp.partition,
                                               positions[tp]) for tp in plain])
            if plain:
                log.info("group %s: assigned %s", self.group_id, _summary(plain, positions))

        def revoked(consumer: _CKConsumer, partitions: list[_CKTopicPartition]) -> None:
            plain = [TopicPartition(self._plain(p.topic), p.partition) for p in partitions]
            try:
                if plain:
                    on_revoke(plain)
                    log.info("group %s: revoked %d partitions", self.group_id, len(plain))
            finally:
                consumer.unassign()

        self._consumer.subscribe([self._name(t) for t in topics], on_assign=assigned,
                                 on_revoke=revoked, on_lost=revoked)

    def partitions(self, topic: str) -> list[TopicPartition]:
        """The topic's partitions; none when it does not exist (yet)."""
        name = self._name(topic)
        found = _topic_partitions(self._consumer, name, self._timeout, self.bootstrap)
        return [TopicPartition(topic, p) for p in found]

    def poll(self, max_messages: int, timeout: float) -> Sequence[Message]:
        if self._fatal:
            raise KafkaFatalError(f"consumer failed: {self._fatal}", bootstrap=self.bootstrap)
        out: list[Message] = []
        for m in self._consumer.consume(num_messages=max_messages, timeout=timeout):
            error = m.error()
            if error is not None:
                self._consumer_error(error, m)
                continue
            topic = m.topic()
            partition, offset = m.partition(), m.offset()
            assert topic is not None and partition is not None and offset is not None
            out.append(Message(self._plain(topic), partition, offset, _bytes(m.key()),
                               _bytes(m.value()) or b"", _headers(m), m.timestamp()[1]))
        return out

    def _consumer_error(self, error: KafkaError, message: _CKMessage) -> None:
        code = error.code()
        if code == KafkaError._PARTITION_EOF:
            return
        if code in (KafkaError.UNKNOWN_TOPIC_OR_PART, getattr(KafkaError, "UNKNOWN_TOPIC_ID",
                                                              code)):
            topic = message.topic() or error.str()
            if topic not in self._missing:
                self._missing.add(topic)
                log.info("group %s: topic %s is not available (not created yet, or the "
                         "broker is unreachable); it is picked up once it is",
                         self.group_id, topic)
            return
        if error.fatal() or code in _PERMANENT_CODES:
            raise KafkaFatalError(f"consumer error on {message.topic()}: {_describe(error)}",
                                  bootstrap=self.bootstrap)
        _log_client_error("consumer", self.bootstrap, error, self._warned_at)

    def end_offsets(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        out: dict[TopicPartition, int] = {}
        for tp in partitions:
            try:
                _, high = self._consumer.get_watermark_offsets(
                    _CKTopicPartition(self._name(tp.topic), tp.partition),
                    timeout=self._timeout, cached=False)
            except KafkaException as exc:
                raise KafkaLogError(f"cannot read the end offset of {tp.topic}[{tp.partition}]:"
                                    f" {exc}", bootstrap=self.bootstrap) from exc
            out[tp] = int(high)
        return out

    def close(self) -> None:
        self._closing = True
        try:
            self._consumer.close()
        except (KafkaException, RuntimeError):
            log.warning("Kafka consumer (%s) did not close cleanly", self.bootstrap,
                        exc_info=True)


def _bytes(value: str | bytes | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


def _headers(message: _CKMessage) -> dict[str, bytes]:
    raw = message.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    return {k: _bytes(v) or b"" for k, v in pairs}


_last_warning: dict[int, float] = {}


def _log_client_error(role: str, bootstrap: str, error: KafkaError,
                      last: dict[int, float] | None = None) -> None:
    """Connection trouble is retried by the client; say so once every 10 s per kind."""
    seen = _last_warning if last is None else last
    now = time.monotonic()
    if now - seen.get(error.code(), -1e9) < 10.0:
        return
    seen[error.code()] = now
    log.warning("Kafka %s (%s): %s (retrying)", role, bootstrap, _describe(error))


def _summary(partitions: list[TopicPartition], positions: dict[TopicPartition, int]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]@{positions.get(tp, 0)}"
                     for tp in partitions)
