"""The projector: consume the log and keep the read model in PostgreSQL.

Records are staged as they arrive, in the same transaction as the offsets of the messages
that carried them. Control events are handled strictly in order: a snapshot's commit is
applied only once every message it counts has been staged, so readers never see half a
snapshot. Offsets live in PostgreSQL next to the rows, so a crash or restart replays from
exactly where the last transaction ended and never duplicates a row.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence

import orjson
import psycopg

from stldata.catalog import Catalog, Dataset
from stldata.errors import TransientError
from stldata.log.base import Consumer, Message, Producer, TopicPartition
from stldata.log.events import (
    CONTROL_TOPIC,
    MalformedEvent,
    RecordPut,
    RowRejected,
    SnapshotAborted,
    SnapshotCommitted,
    SnapshotStarted,
    decode_event,
)
from stldata.projection.apply import apply_snapshot, discard_staged
from stldata.projection.stage import group_by_dataset, log_position, stage_records
from stldata.projection.tables import ensure_table
from stldata.store.column_types import resolve
from stldata.store.database import Conn, Database

log = logging.getLogger(__name__)

GROUP_ID = "stldata-projector"
DEAD_LETTER_TOPIC = "stldata.dead-letter"



def load_offsets(conn: Conn, group_id: str,
                 partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
    rows = conn.execute("SELECT topic, partition, next_offset FROM consumer_offsets "
                        "WHERE group_id = %s", (group_id,)).fetchall()
    stored = {TopicPartition(str(t), int(p)): int(o) for t, p, o in rows}
    return {tp: stored.get(tp, 0) for tp in partitions}


class StaleOffsets(TransientError):
    """Another member stored offsets past this batch: the partition moved on (a rebalance
    while this process stalled). The transaction rolls back; a new projector resumes from
    the stored offsets."""

    def __init__(self, tp: TopicPartition, first: int) -> None:
        super().__init__(f"{tp.topic}[{tp.partition}]: offsets from {first} were already "
                         "stored by another member; this process lost the partition")


def save_offsets(conn: Conn, group_id: str, messages: Sequence[Message]) -> None:
    """Store the next offset of each partition, fenced: only if no message of the batch
    was stored before, so a member that lost its partitions cannot apply a batch twice."""
    first: dict[TopicPartition, int] = {}
    last: dict[TopicPartition, int] = {}
    for m in messages:
        tp = TopicPartition(m.topic, m.partition)
        first[tp] = min(first.get(tp, m.offset), m.offset)
        last[tp] = max(last.get(tp, -1), m.offset)
    for tp, offset in last.items():
        row = conn.execute(
            "INSERT INTO consumer_offsets (group_id, topic, partition, next_offset) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (group_id, topic, partition) DO UPDATE "
            "SET next_offset = excluded.next_offset, updated_at = now() "
            "WHERE consumer_offsets.next_offset <= %s RETURNING 1",
            (group_id, tp.topic, tp.partition, offset + 1, first[tp])).fetchone()
        if row is None:
            raise StaleOffsets(tp, first[tp])


class Projector:
    def __init__(self, database: Database, catalog: Catalog, *, data: Consumer,
                 control: Consumer, dead_letters: Producer, batch_size: int = 5000,
                 poll_interval: float = 0.5, group_id: str = GROUP_ID) -> None:
        self.database = database
        self.catalog = catalog
        self.data = data
        self.control = control
        self.dead_letters = dead_letters
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.group_id = group_id
        self.conn = database.connect()
        self._pending: list[Message] = []
        self._topics: dict[str, Dataset] = {d.topic: d for d in catalog}

    def prepare(self) -> None:
        with self.conn.transaction():
            # Replicas start together, and CREATE TABLE IF NOT EXISTS is not safe against
            # itself: one at a time.
            self.conn.execute("SELECT pg_advisory_xact_lock(hashtext('stldata.prepare'))")
            for dataset in self.catalog:
                ensure_table(self.conn, resolve(self.conn, dataset))
        self.data.subscribe(list(self._topics), self._positions, lambda _: None)
        self.control.subscribe([CONTROL_TOPIC], self._positions, self._control_revoked)

    def _positions(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Where to resume each newly assigned partition: the offsets stored with the rows."""
        with self.conn.transaction():
            return load_offsets(self.conn, self.group_id, partitions)

    def _control_revoked(self, partitions: list[TopicPartition]) -> None:
        # Buffered control events now belong to another member; it re-reads them.
        self._pending = []

    def run(self, *, until_idle: bool = False, stop: threading.Event | None = None) -> None:
        self.prepare()
        log.info("projector started (group %s, %d datasets)", self.group_id,
                 len(self._topics))
        idle_rounds = 0
        while not (stop and stop.is_set()):
            worked = self.step()
            if worked:
                idle_rounds = 0
                continue
            idle_rounds += 1
            if until_idle and idle_rounds >= 2 and self.lag() == 0 and not self._pending:
                log.info("projector caught up; exiting (--until-idle)")
                return
            time.sleep(self.poll_interval)

    def step(self) -> bool:
        """One round: stage new records, then apply control events that are ready."""
        messages = self.data.poll(self.batch_size, timeout=0)
        if messages:
            self._stage(messages)
        applied = self._control()
        return bool(messages) or applied

    def _stage(self, messages: Sequence[Message]) -> None:
        records: list[tuple[int, RecordPut]] = []
        rejected: list[RowRejected] = []
        received: dict[int, int] = defaultdict(int)
        dead: list[tuple[Message, str]] = []
        for m in messages:
            try:
                event = decode_event(m.value)
            except MalformedEvent as exc:
                dead.append((m, str(exc)))
                continue
            if isinstance(event, RecordPut) and event.dataset_id in self.catalog.datasets:
                records.append((log_position(m.partition, m.offset), event))
                received[event.snapshot_id] += 1
            elif isinstance(event, RowRejected):
                rejected.append(event)
                received[event.snapshot_id] += 1
            elif isinstance(event, RecordPut):
                dead.append((m, f"dataset {event.dataset_id!r} is not in the catalog"))
            else:
                dead.append((m, f"unexpected {event.name} event on a dataset topic"))

        for message, reason in dead:
            self._dead_letter(message, reason)

        with self.conn.transaction():
            for dataset_id, batch in group_by_dataset(records).items():
                stage_records(self.conn, self._dataset(dataset_id), batch)
            for r in rejected:
                self.conn.execute(
                    "INSERT INTO quarantine (dataset_id, snapshot_id, source_file, line, "
                    "raw_value, reason, position) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    (r.dataset_id, r.snapshot_id, r.partition, r.line, r.text, r.reason,
                     r.position or None))
            for sid, n in received.items():
                self.conn.execute(
                    "INSERT INTO staged_counts (snapshot_id, received) VALUES (%s, %s) "
                    "ON CONFLICT (snapshot_id) DO UPDATE "
                    "SET received = staged_counts.received + excluded.received", (sid, n))
            save_offsets(self.conn, self.group_id, messages)
        log.debug("staged %d records, %d rejected rows", len(records), len(rejected))

    def _dead_letter(self, message: Message, reason: str) -> None:
        log.error("message %s/%d@%d cannot be applied (%s); sent to %s", message.topic,
                  message.partition, message.offset, reason, DEAD_LETTER_TOPIC)
        self.dead_letters.send(DEAD_LETTER_TOPIC, message.value, key=message.key, headers={
            "reason": reason.encode(), "topic": message.topic.encode(),
            "partition": str(message.partition).encode(),
            "offset": str(message.offset).encode()})
        self.dead_letters.flush()

    def _control(self) -> bool:
        if not self._pending:
            self._pending = list(self.control.poll(self.batch_size, timeout=0))
        applied = False
        while self._pending:
            message = self._pending[0]
            if not self._handle_control(message):
                break
            self._pending.pop(0)
            applied = True
        return applied

    def _handle_control(self, message: Message) -> bool:
        """Apply one control event; False when it must wait for more records."""
        try:
            event = decode_event(message.value)
        except MalformedEvent as exc:
            self._dead_letter(message, str(exc))
            with self.conn.transaction():
                save_offsets(self.conn, self.group_id, [message])
            return True

        with self.conn.transaction():
            if isinstance(event, SnapshotStarted):
                # Columns whose type the ingester has just pinned get their table column.
                if event.dataset_id in self.catalog.datasets:
                    ensure_table(self.conn, self._dataset(event.dataset_id))
                self.conn.execute(
                    "INSERT INTO snapshots (id, dataset_id, status, mode, source, fetched_at, "
                    "partitions) VALUES (%s, %s, 'pending', %s, %s, %s, %s) "
                    "ON CONFLICT (id) DO NOTHING",
                    (event.snapshot_id, event.dataset_id, event.mode, event.source,
                     event.fetched_at, orjson.dumps(event.partitions).decode()))
            elif isinstance(event, SnapshotCommitted):
                if not self._is_pending(event.snapshot_id):
                    # Read again after a takeover: another member applied it meanwhile
                    # (its staged counts are gone, so waiting for them would never end).
                    log.info("%s: snapshot %d is already settled; commit event skipped",
                             event.dataset_id, event.snapshot_id)
                    save_offsets(self.conn, self.group_id, [message])
                    return True
                if not self._ready(event):
                    return False
                dataset = self._dataset(event.dataset_id)
                counts = apply_snapshot(self.conn, dataset, event)
                log.info("%s: snapshot %d applied: %d added, %d changed, %d deleted, "
                         "%d unchanged", dataset.id, event.snapshot_id, counts.added,
                         counts.changed, counts.deleted, counts.unchanged)
            elif isinstance(event, SnapshotAborted) and self._is_pending(event.snapshot_id):
                sid = event.snapshot_id
                discard_staged(self.conn, self._dataset(event.dataset_id), sid)
                self.conn.execute("DELETE FROM staged_counts WHERE snapshot_id = %s", (sid,))
                self.conn.execute("DELETE FROM quarantine WHERE snapshot_id = %s", (sid,))
                self.conn.execute("UPDATE snapshots SET status = 'aborted', reason = %s "
                                  "WHERE id = %s", (event.reason, sid))
                log.warning("%s: snapshot %d was aborted by the ingester: %s",
                            event.dataset_id, sid, event.reason)
            save_offsets(self.conn, self.group_id, [message])
        return True

    def _dataset(self, dataset_id: str) -> Dataset:
        """The catalog's dataset with the pinned types of its ``auto`` columns."""
        return resolve(self.conn, self.catalog.get(dataset_id))

    def _is_pending(self, snapshot_id: int) -> bool:
        """An abort only concerns a snapshot not yet committed (or never started here)."""
        row = self.conn.execute("SELECT status FROM snapshots WHERE id = %s",
                                (snapshot_id,)).fetchone()
        return row is None or row[0] == "pending"

    def _ready(self, event: SnapshotCommitted) -> bool:
        row = self.conn.execute("SELECT received FROM staged_counts WHERE snapshot_id = %s",
                                (event.snapshot_id,)).fetchone()
        received = int(row[0]) if row else 0
        if received > event.message_count:
            raise RuntimeError(f"snapshot {event.snapshot_id}: staged {received} messages "
                               f"but its commit counts {event.message_count}")
        return received == event.message_count

    def lag(self) -> int:
        """Messages on the log not yet reflected in the read model."""
        return log_lag(self.conn, self.data, self.control, list(self._topics), self.group_id)

    def close(self) -> None:
        self.conn.close()
        self.data.close()
        self.control.close()


def log_lag(conn: Conn, data: Consumer, control: Consumer, topics: list[str],
            group_id: str = GROUP_ID) -> int:
    partitions = [tp for t in topics for tp in data.partitions(t)]
    ends = data.end_offsets(partitions)
    control_parts = control.partitions(CONTROL_TOPIC)
    ends.update(control.end_offsets(control_parts))
    with conn.transaction():
        committed = load_offsets(conn, group_id, [*partitions, *control_parts])
    return sum(max(0, ends[tp] - committed[tp]) for tp in ends)


def run_supervised(make: Callable[[], Projector], *, stop: threading.Event,
                   max_backoff: float = 60.0) -> None:
    """Run projectors until ``stop``, replacing one that fails on a transient error (the
    broker or the database away, partitions lost to another member): the new one rejoins
    the group and resumes from the offsets stored with the rows."""
    backoff = 1.0
    while not stop.is_set():
        projector = None
        started = time.monotonic()
        try:
            projector = make()
            projector.run(stop=stop)
            return
        except (TransientError, psycopg.OperationalError) as exc:
            if time.monotonic() - started > max_backoff:
                backoff = 1.0  # it had been running fine: a new failure, not a streak
            log.error("projector failed: %s; a new one starts in %.0fs", exc, backoff)
        finally:
            if projector is not None:
                projector.close()
        stop.wait(backoff)
        backoff = min(backoff * 2, max_backoff)
