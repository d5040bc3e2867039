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
from psycopg import sql

from stldata.catalog import DATASET_TOPIC_PREFIX, Catalog, Dataset
from stldata.errors import StlDataError, TransientError, first_line
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
from stldata.projection.tables import ensure_table, stage_table_name
from stldata.store.column_types import resolve
from stldata.store.database import Conn, Database, is_connection_error
from stldata.store.snapshot_signal import announce_local_change

log = logging.getLogger(__name__)

GROUP_ID = "stldata-projector"
DEAD_LETTER_TOPIC = "stldata.dead-letter"
#: A dead letter keeps at most this much of the message it stands for (1 MiB): the
#: headers say where the whole message is.
DEAD_LETTER_MAX_BYTES = 1024 * 1024
#: After this long waiting for a committed snapshot's records, the projector says so.
WAITING_NOTICE_SECONDS = 60.0


def is_dataset_failure(exc: BaseException) -> bool:
    """Whether an error while projecting one dataset is that dataset's own problem (a
    statement PostgreSQL refused: too many columns, a row too big, a value out of range;
    a catalog entry that does not fit), so that its snapshot fails and the others go on.
    A lost connection or a broker away is not: the whole projector retries instead."""
    if isinstance(exc, psycopg.Error):
        return not is_connection_error(exc)
    return isinstance(exc, StlDataError) and not exc.transient


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
        #: Why PostgreSQL refused a dataset's tables, by dataset id, until it accepts them.
        self._table_failures: dict[str, str] = {}
        #: The commit the control topic waits on: its id, since when, when last said.
        self._waiting: tuple[int, float, float] | None = None

    def prepare(self) -> None:
        with self.conn.transaction():
            # Replicas start together, and CREATE TABLE IF NOT EXISTS is not safe against
            # itself: one at a time.
            self.conn.execute("SELECT pg_advisory_xact_lock(hashtext('stldata.prepare'))")
            for dataset in self.catalog:
                self._ensure_table(dataset.id)
        self.data.subscribe(list(self._topics), self._positions, lambda _: None)
        self.control.subscribe([CONTROL_TOPIC], self._positions, self._control_revoked)

    def _ensure_table(self, dataset_id: str) -> str | None:
        """Create or update one dataset's tables in a savepoint of the open transaction;
        the reason when PostgreSQL refuses them, so one bad dataset does not stop the
        others (its snapshots fail with that reason instead)."""
        try:
            with self.conn.transaction():
                ensure_table(self.conn, self._dataset(dataset_id))
        except Exception as exc:
            if not is_dataset_failure(exc):
                raise
            reason = (f"cannot create or update the table of dataset {dataset_id!r}: "
                      f"{first_line(exc)}")
            log.error("%s", reason)
            self._table_failures[dataset_id] = reason
            return reason
        self._table_failures.pop(dataset_id, None)
        return None

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
        if applied or messages:
            # Readers in this process see this step's commits at once; other processes
            # hear of them from PostgreSQL (stldata.store.snapshot_signal).
            announce_local_change()
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
            owner = m.topic.removeprefix(DATASET_TOPIC_PREFIX)
            if isinstance(event, RecordPut | RowRejected) and event.dataset_id != owner:
                # Counted with a snapshot of another dataset, it would leave that one
                # waiting forever for a count it can never reach, or applied short.
                dead.append((m, f"a {event.name} event of dataset {event.dataset_id!r} "
                                f"on the topic of dataset {owner!r}"))
            elif isinstance(event, RecordPut) and event.dataset_id in self.catalog.datasets:
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
                self._stage_dataset(dataset_id, batch)
            for r in rejected:
                self.conn.execute(
                    "INSERT INTO quarantine (dataset_id, snapshot_id, source_file, line, "
                    "raw_value, reason, position) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    (r.dataset_id, r.snapshot_id, r.partition, r.line, r.text, r.reason,
                     r.position or None))
            for sid, n in received.items():
                # Not for a snapshot already settled (failed while staging, say): nothing
                # waits for its count, and it would stay behind.
                self.conn.execute(
                    "INSERT INTO staged_counts (snapshot_id, received) SELECT %s, %s "
                    "WHERE NOT EXISTS (SELECT 1 FROM snapshots WHERE id = %s "
                    "AND status <> 'pending') ON CONFLICT (snapshot_id) DO UPDATE "
                    "SET received = staged_counts.received + excluded.received",
                    (sid, n, sid))
            save_offsets(self.conn, self.group_id, messages)
        log.debug("staged %d records, %d rejected rows", len(records), len(rejected))

    def _stage_dataset(self, dataset_id: str, batch: list[tuple[int, RecordPut]]) -> None:
        """Stage one dataset's records in a savepoint: when PostgreSQL refuses them (a
        row too big, a missing table), their snapshots fail and other datasets'
        records of the same batch are still staged."""
        reason = self._table_failures.get(dataset_id)
        if reason is None:
            try:
                with self.conn.transaction():
                    stage_records(self.conn, self._dataset(dataset_id), batch)
                return
            except Exception as exc:
                if not is_dataset_failure(exc):
                    raise
                reason = "its records could not be staged: " + first_line(exc)
        for sid in sorted({r.snapshot_id for _, r in batch}):
            self._fail_snapshot(dataset_id, sid, reason)

    def _fail_snapshot(self, dataset_id: str, snapshot_id: int, reason: str, *,
                       level: int = logging.ERROR) -> None:
        """Mark a pending (or not yet started) snapshot aborted with the reason and drop
        what was staged for it. Its source files are forgotten, so the next ingest of the
        same files publishes them again instead of finding them unchanged."""
        row = self.conn.execute(
            "INSERT INTO snapshots (id, dataset_id, status, mode, source, reason) "
            "VALUES (%s, %s, 'aborted', '', '', %s) ON CONFLICT (id) DO UPDATE "
            "SET status = 'aborted', reason = excluded.reason "
            "WHERE snapshots.status = 'pending' RETURNING 1",
            (snapshot_id, dataset_id, reason)).fetchone()
        if row is None:
            return  # settled already: it was committed, or failed with an earlier reason
        stage = stage_table_name(_table_owner(dataset_id))
        if self.conn.execute("SELECT to_regclass(%s)", (stage,)).fetchone() != (None,):
            self.conn.execute(sql.SQL("DELETE FROM {} WHERE _snapshot_id = %s").format(
                sql.Identifier(stage)), (snapshot_id,))
        self.conn.execute("DELETE FROM staged_counts WHERE snapshot_id = %s", (snapshot_id,))
        self.conn.execute("DELETE FROM quarantine WHERE snapshot_id = %s", (snapshot_id,))
        self.conn.execute("DELETE FROM source_files WHERE snapshot_id = %s", (snapshot_id,))
        log.log(level, "%s: snapshot %d failed and is marked aborted: %s", dataset_id,
                snapshot_id, reason)

    def _record_start(self, event: SnapshotStarted) -> None:
        # A snapshot that failed before its start was read (its records come on another
        # topic) has a row already, without these details.
        self.conn.execute(
            "INSERT INTO snapshots (id, dataset_id, status, mode, source, fetched_at, "
            "partitions) VALUES (%s, %s, 'pending', %s, %s, %s, %s) "
            "ON CONFLICT (id) DO UPDATE SET mode = excluded.mode, source = excluded.source, "
            "fetched_at = excluded.fetched_at, partitions = excluded.partitions "
            "WHERE snapshots.mode = ''",
            (event.snapshot_id, event.dataset_id, event.mode, event.source,
             event.fetched_at, orjson.dumps(event.partitions).decode()))

    def _known(self, dataset_id: str) -> bool:
        """Whether the dataset is in the catalog; when it is not, the catalog folder is
        read again, since `stldata add` may have added it after this process started."""
        if dataset_id in self.catalog.datasets:
            return True
        if self.catalog.folder is None:
            return False
        try:
            fresh = Catalog.load(self.catalog.folder)
        except StlDataError as exc:
            log.warning("could not read the catalog again to find dataset %r: %s",
                        dataset_id, exc.message)
            return False
        if dataset_id not in fresh.datasets:
            return False
        added = sorted(set(fresh.datasets) - set(self.catalog.datasets))
        log.info("catalog read again from %s: new datasets %s", self.catalog.folder,
                 ", ".join(added))
        self.catalog = fresh
        self._topics = {d.topic: d for d in fresh}
        with self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(hashtext('stldata.prepare'))")
            for new in added:
                self._ensure_table(new)
        # Every staged batch committed its offsets, so joining again with the new topics
        # resumes each partition exactly where it was.
        self.data.subscribe(list(self._topics), self._positions, lambda _: None)
        return True

    def _dead_letter(self, message: Message, reason: str) -> None:
        log.error("message %s/%d@%d cannot be applied (%s); sending it to %s", message.topic,
                  message.partition, message.offset, reason, DEAD_LETTER_TOPIC)
        value, cut = message.value, {}
        if len(value) > DEAD_LETTER_MAX_BYTES:
            # With its headers, a message near the log's size limit would not fit on the
            # dead-letter topic, and the projector would stop at it on every restart.
            value = value[:DEAD_LETTER_MAX_BYTES]
            cut = {"truncated_from": str(len(message.value)).encode()}
        self.dead_letters.send(DEAD_LETTER_TOPIC, value, key=message.key, headers={
            **cut, "reason": reason.encode(),
            # The topic's full name, as a Kafka tool would look it up (with the prefix).
            "topic": self.data.topic_name(message.topic).encode(),
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

        if not isinstance(event, SnapshotStarted | SnapshotCommitted | SnapshotAborted):
            self._dead_letter(message, f"unexpected {event.name} event on the control topic")
            with self.conn.transaction():
                save_offsets(self.conn, self.group_id, [message])
            return True

        if not self._known(event.dataset_id):
            # Its records are not read (its topic is not subscribed), so waiting for them
            # would block every later snapshot of every dataset behind it on this topic.
            with self.conn.transaction():
                self._skip_unknown(event)
                save_offsets(self.conn, self.group_id, [message])
            return True

        with self.conn.transaction():
            if isinstance(event, SnapshotStarted):
                # Columns whose type the ingester has just pinned get their table column.
                failure = self._ensure_table(event.dataset_id)
                self._record_start(event)
                if failure:
                    self._fail_snapshot(event.dataset_id, event.snapshot_id, failure)
            elif isinstance(event, SnapshotCommitted):
                if not self._is_pending(event.snapshot_id):
                    # Read again after a takeover: another member applied it meanwhile
                    # (its staged counts are gone, so waiting for them would never end).
                    log.info("%s: snapshot %d is already settled; commit event skipped",
                             event.dataset_id, event.snapshot_id)
                    save_offsets(self.conn, self.group_id, [message])
                    return True
                ready = self._ready(event)
                if ready is None:
                    # Applying it would serve records it does not hold; waiting would
                    # stop every later snapshot behind it. It fails, loudly, instead.
                    self._fail_snapshot(
                        event.dataset_id, event.snapshot_id,
                        f"more messages on the log carry snapshot id {event.snapshot_id} "
                        f"than its commit counts ({event.message_count}): another "
                        "publisher used the same id (a second database on this Kafka log, "
                        "or a message written by hand); ingest the dataset again")
                elif not ready:
                    self._note_waiting(event)
                    return False
                else:
                    self._apply(event)
            elif isinstance(event, SnapshotAborted) and self._is_pending(event.snapshot_id):
                sid = event.snapshot_id
                try:
                    with self.conn.transaction():
                        discard_staged(self.conn, self._dataset(event.dataset_id), sid)
                except Exception as exc:
                    # No staging table (PostgreSQL refused it): nothing was staged.
                    if not is_dataset_failure(exc):
                        raise
                self.conn.execute("DELETE FROM staged_counts WHERE snapshot_id = %s", (sid,))
                self.conn.execute("DELETE FROM quarantine WHERE snapshot_id = %s", (sid,))
                self.conn.execute("UPDATE snapshots SET status = 'aborted', reason = %s "
                                  "WHERE id = %s", (event.reason, sid))
                log.warning("%s: snapshot %d was aborted by the ingester: %s",
                            event.dataset_id, sid, event.reason)
            save_offsets(self.conn, self.group_id, [message])
        return True

    def _note_waiting(self, event: SnapshotCommitted) -> None:
        """Say, once a minute, which snapshot holds up the control topic: every later
        snapshot of every dataset waits behind it (its records may still be on their way,
        or never have been published)."""
        now = time.monotonic()
        if self._waiting is None or self._waiting[0] != event.snapshot_id:
            self._waiting = (event.snapshot_id, now, 0.0)
        _, since, said = self._waiting
        if now - since >= WAITING_NOTICE_SECONDS and now - said >= WAITING_NOTICE_SECONDS:
            row = self.conn.execute("SELECT received FROM staged_counts WHERE snapshot_id = %s",
                                    (event.snapshot_id,)).fetchone()
            log.warning("%s: snapshot %d is committed on the log but only %d of its %d "
                        "messages have arrived after %.0fs; every later snapshot waits "
                        "behind it. If its records were never published (a commit written "
                        "by hand, or records gone with the log's retention), the projector "
                        "cannot pass it", event.dataset_id,
                        event.snapshot_id, int(row[0]) if row else 0, event.message_count,
                        now - since)
            self._waiting = (event.snapshot_id, since, now)

    def _apply(self, event: SnapshotCommitted) -> None:
        """Apply a snapshot in a savepoint; when PostgreSQL refuses it, the snapshot
        fails with the reason and the projector goes on with the next event."""
        try:
            with self.conn.transaction():
                dataset = self._dataset(event.dataset_id)
                counts = apply_snapshot(self.conn, dataset, event)
        except Exception as exc:
            if not is_dataset_failure(exc):
                raise
            self._fail_snapshot(event.dataset_id, event.snapshot_id,
                                f"applying it failed: {first_line(exc)}")
            return
        log.info("%s: snapshot %d applied: %d added, %d changed, %d deleted, "
                 "%d unchanged", dataset.id, event.snapshot_id, counts.added,
                 counts.changed, counts.deleted, counts.unchanged)

    def _skip_unknown(self, event: SnapshotStarted | SnapshotCommitted | SnapshotAborted
                      ) -> None:
        """A control event of a dataset that is not in the catalog (removed since its
        ingest, or its entry unreadable): its snapshot is marked aborted, never waited
        for."""
        log.warning("%s: %s of snapshot %d skipped: the dataset is not in the catalog "
                    "(its entry was removed or cannot be read); the snapshot is marked "
                    "aborted. Fix the catalog entry, then ingest the dataset again",
                    event.dataset_id, event.name, event.snapshot_id)
        reason = (f"dataset {event.dataset_id!r} is not in the catalog of the projector"
                  if not isinstance(event, SnapshotAborted) else event.reason)
        if isinstance(event, SnapshotStarted):
            self._record_start(event)
        self._fail_snapshot(event.dataset_id, event.snapshot_id, reason,
                            level=logging.DEBUG)

    def _dataset(self, dataset_id: str) -> Dataset:
        """The catalog's dataset with the pinned types of its ``auto`` columns."""
        return resolve(self.conn, self.catalog.get(dataset_id))

    def _is_pending(self, snapshot_id: int) -> bool:
        """An abort only concerns a snapshot not yet committed (or never started here)."""
        row = self.conn.execute("SELECT status FROM snapshots WHERE id = %s",
                                (snapshot_id,)).fetchone()
        return row is None or row[0] == "pending"

    def _ready(self, event: SnapshotCommitted) -> bool | None:
        """Whether every message the commit counts is staged; None when more are staged
        than it counts: messages that this snapshot did not publish carry its id."""
        row = self.conn.execute("SELECT received FROM staged_counts WHERE snapshot_id = %s",
                                (event.snapshot_id,)).fetchone()
        received = int(row[0]) if row else 0
        if received > event.message_count:
            return None
        return received == event.message_count

    def lag(self) -> int:
        """Messages on the log not yet reflected in the read model."""
        return log_lag(self.conn, self.data, self.control, list(self._topics), self.group_id)

    def close(self) -> None:
        self.conn.close()
        self.data.close()
        self.control.close()


def _table_owner(dataset_id: str) -> Dataset:
    """A stand-in dataset that only names the tables of ``dataset_id``, for cleaning up
    after a dataset the catalog may no longer have."""
    from stldata.catalog import Source

    return Dataset(id=dataset_id, title="", description="", publisher="", license="",
                   source=Source(url=""), columns=(), key=())


def log_lag(conn: Conn, data: Consumer, control: Consumer | None, topics: list[str],
            group_id: str = GROUP_ID) -> int:
    """Messages on ``topics`` (and on the control topic, unless ``control`` is None) that
    the projector group has not applied yet."""
    partitions = [tp for t in topics for tp in data.partitions(t)]
    ends = data.end_offsets(partitions)
    control_parts = control.partitions(CONTROL_TOPIC) if control else []
    if control:
        ends.update(control.end_offsets(control_parts))
    with conn.transaction():
        committed = load_offsets(conn, group_id, [*partitions, *control_parts])
    return sum(max(0, ends[tp] - committed[tp]) for tp in ends)


def dead_letter_count(data: Consumer) -> int:
    """Messages ever written to the dead-letter topic (0 if it does not exist)."""
    return sum(data.end_offsets(data.partitions(DEAD_LETTER_TOPIC)).values())


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
            if not isinstance(exc, TransientError) and not is_connection_error(exc):
                # A statement PostgreSQL refused outside any one dataset's work: a new
                # projector would fail the same way, forever. Let the caller see it.
                raise
            if time.monotonic() - started > max_backoff:
                backoff = 1.0  # it had been running fine: a new failure, not a streak
            if isinstance(exc, StaleOffsets):
                # Another member (`stldata add`, a second `stldata project`) stored these
                # offsets first and applies what they carry: a normal hand-over.
                log.warning("projector handed over: %s; a new one resumes from the stored "
                            "offsets in %.0fs", exc, backoff)
            elif isinstance(exc, psycopg.OperationalError):
                # psycopg's text ("terminating connection due to administrator command")
                # does not say which server went away.
                log.error("projector lost PostgreSQL: %s; a new one starts in %.0fs",
                          first_line(exc), backoff)
            else:
                log.error("projector failed: %s; a new one starts in %.0fs", exc, backoff)
        finally:
            if projector is not None:
                projector.close()
        stop.wait(backoff)
        backoff = min(backoff * 2, max_backoff)


class ProjectorWatch:
    """The projector thread of a process that also serves the API (``stldata up``): it
    runs :func:`run_supervised` and keeps why it stopped, so ``/health`` can say so."""

    def __init__(self) -> None:
        #: Why the projector stopped for good; None while it runs (or was stopped).
        self.failure: str | None = None

    def run(self, make: Callable[[], Projector], *, stop: threading.Event) -> None:
        try:
            run_supervised(make, stop=stop)
        except Exception as exc:
            self.failure = f"projector stopped: {type(exc).__name__}: {first_line(exc)}"
            log.error("%s; new snapshots are no longer applied (restart to resume)",
                      self.failure, exc_info=exc)
            return
        if not stop.is_set():
            self.failure = "projector stopped"
            log.error("projector stopped although nobody asked it to")
