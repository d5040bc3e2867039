"""Publish a dataset's source to the log as one snapshot.

Steps: find and hash the source files; skip the run if nothing changed since the last
publication; check every file's header before publishing anything; then stream each file
in batches (decode, map columns, coerce, project coordinates, key) and publish the
records between a snapshot-started and a snapshot-committed event. A failure midway
publishes snapshot-aborted, so the projector discards the partial snapshot.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from stldata.catalog import Dataset
from stldata.errors import RecordRefused, StlDataError, TransientError
from stldata.ingest.errors import EmptySourceError
from stldata.ingest.infer import TypeInference
from stldata.ingest.positions import position_text
from stldata.ingest.reader import BadRow, map_header
from stldata.ingest.records import Record, RecordBuilder
from stldata.ingest.sniff import open_tables
from stldata.ingest.sources import (
    SourceFile,
    cleanup_fetch,
    fetch_source,
    is_url,
    known_validators,
    save_validators,
)
from stldata.log.base import Producer
from stldata.log.events import (
    CONTROL_TOPIC,
    RecordPut,
    RowRejected,
    SnapshotAborted,
    SnapshotCommitted,
    SnapshotStarted,
)
from stldata.settings import Settings
from stldata.store.column_types import pin_types, pinned_types, with_types
from stldata.store.database import Database

log = logging.getLogger(__name__)

Progress = Callable[[int], None]


@dataclass
class FileStats:
    partition: str
    sha256: str
    rows_read: int = 0
    published: int = 0
    rejected: int = 0
    with_issues: int = 0
    unmapped_columns: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.partition, "sha256": self.sha256, "rows_read": self.rows_read,
                "published": self.published, "rejected": self.rejected,
                "with_issues": self.with_issues, "unmapped_columns": self.unmapped_columns}


@dataclass
class IngestSummary:
    dataset_id: str
    snapshot_id: int | None
    rows_read: int = 0
    published: int = 0
    quarantined: int = 0
    seconds: float = 0.0
    files: list[FileStats] = field(default_factory=list)
    skipped_files: list[str] = field(default_factory=list)
    #: The URL answered 304 Not Modified to a conditional fetch.
    not_modified: bool = False

    def line(self) -> str:
        if self.not_modified:
            return (f"{self.dataset_id}: source unchanged (HTTP 304 Not Modified), "
                    "no new snapshot")
        if self.snapshot_id is None:
            return (f"{self.dataset_id}: source unchanged "
                    f"({len(self.skipped_files)} files), no new snapshot")
        return (f"{self.dataset_id}: snapshot {self.snapshot_id}: {self.rows_read} rows read, "
                f"{self.published} published, {self.quarantined} quarantined, "
                f"{self.seconds:.1f}s")


#: Moves the snapshot id counter past every id already used, on the log (``newest``) or
#: in this database, when it is behind them; returns the new floor, or no row.
_SKIP_USED_IDS = """
    SELECT setval('snapshot_ids', used.id)
    FROM (SELECT greatest(%(newest)s,
                          (SELECT coalesce(max(id), 0) FROM snapshots),
                          (SELECT coalesce(max(snapshot_id), 0) FROM ingest_runs)) AS id) used,
         snapshot_ids counter
    WHERE used.id > 0 AND (used.id > counter.last_value OR NOT counter.is_called)"""


#: Snapshot ids tried before giving up when other databases keep taking them first.
CLAIM_ATTEMPTS = 5


class SnapshotIdTaken(TransientError):
    def __init__(self, dataset_id: str, attempts: int) -> None:
        super().__init__(f"{dataset_id}: {attempts} snapshot ids in a row were taken on the "
                         "log by other databases' ingests at the same moment; try again")


class Ingester:
    def __init__(self, settings: Settings, database: Database, producer: Producer) -> None:
        self.settings = settings
        self.database = database
        self.producer = producer

    def ingest(self, dataset: Dataset, source: str | None = None, *,
               progress: Callable[[int], Progress] | None = None) -> IngestSummary:
        started = time.monotonic()
        known = known_validators(self.database, dataset) if is_url(source) else {}
        resolved = fetch_source(dataset, source, self.settings,
                                workdir=self.settings.state_dir, known=known)
        if resolved.not_modified:
            summary = IngestSummary(dataset.id, None, not_modified=True,
                                    seconds=time.monotonic() - started)
            log.info("%s", summary.line())
            return summary
        origin, files = resolved.origin, resolved.files
        # One ingest per dataset at a time, so that two runs of the same unchanged file
        # make one snapshot and snapshots of a dataset are published in order.
        with self.database.connect(autocommit=True) as lock:
            lock.execute("SELECT pg_advisory_lock(hashtext(%s))", (f"ingest:{dataset.id}",))
            self._abort_orphans(dataset)
            summary = self._ingest_locked(dataset, origin, files, started, progress)
            # Only now: a failed ingest must fetch in full next time, not get a 304.
            save_validators(self.database, dataset.id, resolved.validators)
            return summary

    def _ingest_locked(self, dataset: Dataset, origin: str, files: list[SourceFile],
                       started: float, progress: Callable[[int], Progress] | None
                       ) -> IngestSummary:
        try:
            publish, skipped = self._changed_files(dataset, files)
            summary = IngestSummary(dataset.id, None, skipped_files=skipped)
            if not publish:
                log.info("%s: every source file is unchanged; no new snapshot", dataset.id)
                return summary

            for file in publish:
                self._check_header(dataset, file)

            summary.snapshot_id = self._start_run(dataset, origin)
            dataset = self._type_auto_columns(dataset, publish, summary.snapshot_id)
            self._publish(dataset, origin, publish, summary, progress)
            self._remember(dataset, publish, summary.snapshot_id)
        finally:
            cleanup_fetch(files)
        summary.seconds = time.monotonic() - started
        log.info("%s", summary.line())
        return summary

    def _changed_files(self, dataset: Dataset,
                       files: list[SourceFile]) -> tuple[list[SourceFile], list[str]]:
        with self.database.connect() as conn:
            rows = conn.execute("SELECT partition, sha256 FROM source_files "
                                "WHERE dataset_id = %s", (dataset.id,)).fetchall()
        known = {str(p): str(s) for p, s in rows}
        changed = [f for f in files if known.get(f.partition) != f.sha256]

        if dataset.mode == "full":
            # A full snapshot is the whole truth: any change republishes every file.
            same_set = set(known) == {f.partition for f in files}
            if not changed and same_set:
                return [], [f.partition for f in files]
            return files, []
        return changed, [f.partition for f in files if f not in changed]

    def _check_header(self, dataset: Dataset, file: SourceFile) -> None:
        """Fail on an unusable file before any of the snapshot is published."""
        found = False
        for table in open_tables(dataset.source, file.path, file.partition):
            where = f"{file.partition} {table.label}".strip()
            map_header(dataset, table.header, where)
            found = found or next(table.rows, None) is not None
        if not found:
            raise EmptySourceError(file.partition, "file has a header but no data rows")

    def _type_auto_columns(self, dataset: Dataset, files: list[SourceFile],
                           snapshot_id: int) -> Dataset:
        """Infer and pin the type of each ``auto`` column seen for the first time, from
        every value of this snapshot's files."""
        autos = [c for c in dataset.columns if c.type == "auto"]
        if not autos:
            return dataset
        with self.database.connect() as conn:
            pinned = pinned_types(conn, dataset.id)
        todo = [c for c in autos if c.name not in pinned]
        if todo:
            inference = TypeInference([c.name for c in todo], dataset.timezone)
            nulls = {c.name: {v.strip() for v in (*dataset.source.null_values, *c.null_values)}
                     for c in todo}
            for file in files:
                for table in open_tables(dataset.source, file.path, file.partition):
                    header = map_header(dataset, table.header, file.partition)
                    wanted = [(c.name, header.positions[c.name]) for c in todo
                              if c.name in header.positions]
                    for row in table.rows:
                        if isinstance(row, BadRow):
                            continue
                        for name, position in wanted:
                            text = row.cells[position].strip()
                            if text not in nulls[name]:
                                inference.add(name, text)
            inferred = inference.result()
            with self.database.transaction() as conn:
                pin_types(conn, dataset.id, inferred, snapshot_id)
            log.info("%s: inferred column types %s", dataset.id, inferred)
            pinned = {**pinned, **inferred}
        return with_types(dataset, pinned)

    def _start_run(self, dataset: Dataset, origin: str) -> int:
        # A snapshot id must be new to the log as well as to this database: a Kafka log
        # outlives the database, and a projector skips a commit whose id it has settled.
        newest = self.producer.newest_snapshot_id()
        with self.database.transaction() as conn:
            # Every id is taken under this lock, so moving the counter on cannot race.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('stldata.snapshot_ids'))")
            moved = conn.execute(_SKIP_USED_IDS, {"newest": newest}).fetchone()
            if moved is not None:
                log.info("%s: snapshot ids continue after %d, the newest on the log or in "
                         "the database", dataset.id, moved[0])
            row = conn.execute(
                "INSERT INTO ingest_runs (snapshot_id, dataset_id, state, source) "
                "VALUES (nextval('snapshot_ids'), %s, 'publishing', %s) RETURNING snapshot_id",
                (dataset.id, origin)).fetchone()
        assert row is not None
        return int(row[0])

    def _end_run(self, snapshot_id: int, state: str) -> None:
        with self.database.transaction() as conn:
            conn.execute("UPDATE ingest_runs SET state = %s, ended_at = now() "
                         "WHERE snapshot_id = %s", (state, snapshot_id))

    def _abort_orphans(self, dataset: Dataset) -> None:
        """Abort snapshots whose ingester died (SIGKILL, power loss) before its commit,
        so the projector frees what it staged for them."""
        with self.database.connect() as conn:
            rows = conn.execute("SELECT snapshot_id FROM ingest_runs WHERE dataset_id = %s "
                                "AND state = 'publishing'", (dataset.id,)).fetchall()
        if rows:
            # Explicitly, with its one partition: the ingest that stopped may have failed
            # before creating it (a send would create it with the dataset topics' count).
            self.producer.ensure_topic(CONTROL_TOPIC, 1)
        for (snapshot_id,) in rows:
            log.warning("%s: snapshot %d was left unfinished by an ingest that stopped; "
                        "aborting it", dataset.id, snapshot_id)
            self._send_control(SnapshotAborted(
                snapshot_id, dataset.id, "the ingest publishing it stopped before committing"))
            self._end_run(snapshot_id, "aborted")

    def _publish(self, dataset: Dataset, origin: str, files: list[SourceFile],
                 summary: IngestSummary, progress: Callable[[int], Progress] | None) -> None:
        snapshot_id = summary.snapshot_id
        assert snapshot_id is not None
        fetched_at = datetime.now(UTC).isoformat()
        self.producer.ensure_topic(CONTROL_TOPIC, 1)
        self.producer.ensure_topic(dataset.topic, self.settings.topic_partitions)
        for _ in range(CLAIM_ATTEMPTS):
            started = SnapshotStarted(snapshot_id, dataset.id, dataset.mode,
                                      [f.partition for f in files], origin, fetched_at)
            self._send_control(started)
            self.producer.flush()
            # Another database on the same log may have taken the same id meanwhile (its
            # ingest read the log before this start was on it). The first start of an id
            # on the control topic owns it: projectors ignore a later one.
            first = self.producer.first_start(snapshot_id)
            if first is None or first == started:
                break
            log.warning("%s: snapshot id %d was taken on the log by %s's snapshot from %s; "
                        "taking a new id", dataset.id, snapshot_id, first.dataset_id,
                        first.source)
            self._end_run(snapshot_id, "aborted")
            snapshot_id = summary.snapshot_id = self._start_run(dataset, origin)
        else:
            raise SnapshotIdTaken(dataset.id, CLAIM_ATTEMPTS)
        log.info("%s: snapshot %d started from %s (%d files)",
                 dataset.id, snapshot_id, origin, len(files))

        tick = progress(sum(f.size for f in files)) if progress else None
        builder = RecordBuilder(dataset)
        messages = 0
        try:
            for file in files:
                stats = self._publish_file(dataset, snapshot_id, file, builder, tick)
                summary.files.append(stats)
                summary.rows_read += stats.rows_read
                summary.published += stats.published
                summary.quarantined += stats.rejected + stats.with_issues
                messages += stats.published + stats.rejected
        except BaseException as exc:
            log.error("%s: snapshot %d aborted: %s", dataset.id, snapshot_id, exc)
            try:
                self._send_control(SnapshotAborted(snapshot_id, dataset.id, str(exc)[:2000]))
                self._end_run(snapshot_id, "aborted")
            except Exception:
                # The run stays 'publishing'; the next ingest of the dataset aborts it.
                log.exception("could not publish the abort of snapshot %d", snapshot_id)
            raise

        digest = hashlib.sha256("".join(f.sha256 for f in files).encode()).hexdigest()
        self._send_control(SnapshotCommitted(
            snapshot_id, dataset.id, summary.published, messages, summary.rows_read,
            summary.quarantined, origin, fetched_at, digest,
            [s.as_dict() for s in summary.files], coercions=builder.coercions))

    def _publish_file(self, dataset: Dataset, snapshot_id: int, file: SourceFile,
                      builder: RecordBuilder, tick: Progress | None) -> FileStats:
        stats = FileStats(file.partition, file.sha256)
        batch: list[Record] = []
        reported = 0
        for table in open_tables(dataset.source, file.path, file.partition):
            builder.label = table.label
            header = map_header(dataset, table.header,
                                f"{file.partition} {table.label}".strip())
            stats.unmapped_columns += [u for u in header.unmapped
                                       if u not in stats.unmapped_columns]
            for row in table.rows:
                stats.rows_read += 1
                if isinstance(row, BadRow):
                    self._reject(dataset, snapshot_id, file, row.line, row.text, row.reason,
                                 stats, position_text(table.label, row.line))
                    continue
                batch.append(builder.build(header, row.line, row.cells))
                if len(batch) >= self.settings.batch_size:
                    self._send_records(dataset, snapshot_id, file, builder, batch, stats)
                    batch = []
                    if tick:
                        consumed = table.consumed()
                        tick(max(0, consumed - reported))
                        reported = max(reported, consumed)
        self._send_records(dataset, snapshot_id, file, builder, batch, stats)
        if tick:
            tick(max(0, file.size - reported))
        if stats.unmapped_columns:
            log.info("%s: %s has columns the catalog does not map (kept in the source "
                     "JSON): %s", dataset.id, file.partition, ", ".join(stats.unmapped_columns))
        self.producer.flush()
        if stats.rejected:
            log.warning("%s: %s: %d rows rejected to quarantine", dataset.id, file.partition,
                        stats.rejected)
        return stats

    def _reject(self, dataset: Dataset, snapshot_id: int, file: SourceFile, line: int,
                text: str, reason: str, stats: FileStats, position: str = "") -> None:
        """A row that cannot be a record goes to the quarantine whole, through the log."""
        stats.rejected += 1
        self.producer.send(dataset.topic, RowRejected(
            snapshot_id, dataset.id, file.partition, line, text[:10000], reason,
            position).to_bytes())

    def _send_records(self, dataset: Dataset, snapshot_id: int, file: SourceFile,
                      builder: RecordBuilder, batch: list[Record], stats: FileStats) -> None:
        builder.finish_batch(batch)
        # Under 'last' the projection quarantines superseded rows at their position, which
        # it rebuilds from the line unless the row's table has a label (a sheet's name).
        row_positions = dataset.duplicate_keys == "last"
        for record in batch:
            if record.issues:
                stats.with_issues += 1
            try:
                self.producer.send(dataset.topic, RecordPut(
                    snapshot_id, dataset.id, record.key, file.partition, record.line,
                    record.hash, record.values, record.source,
                    record.issue_dicts(row_position=row_positions),
                ).to_bytes(), key=record.key.encode())
            except StlDataError as exc:
                if exc.transient:
                    raise
                raise RecordRefused(f"{file.partition} line {record.line} (key {record.key}): "
                                    f"{exc.message}") from exc
        stats.published += len(batch)
        # No flush per batch: the producer bounds its own buffer (Kafka's send blocks when
        # it is full; the embedded log writes every few thousand messages), and the file's
        # end flushes. Waiting on the log after every batch left the log idle while the
        # batch was cleaned, and the ingester idle while the log wrote.

    def _send_control(self, event: SnapshotStarted | SnapshotCommitted | SnapshotAborted
                      ) -> None:
        self.producer.send(CONTROL_TOPIC, event.to_bytes(),
                           key=event.dataset_id.encode(),
                           headers={"event": event.name.encode()})
        self.producer.flush()

    def _remember(self, dataset: Dataset, files: list[SourceFile], snapshot_id: int) -> None:
        with self.database.transaction() as conn:
            conn.execute("UPDATE ingest_runs SET state = 'committed', ended_at = now() "
                         "WHERE snapshot_id = %s", (snapshot_id,))
            for file in files:
                conn.execute(
                    "INSERT INTO source_files (dataset_id, partition, sha256, snapshot_id) "
                    "VALUES (%s, %s, %s, %s) ON CONFLICT (dataset_id, partition) DO UPDATE "
                    "SET sha256 = excluded.sha256, snapshot_id = excluded.snapshot_id, "
                    "published_at = now()",
                    (dataset.id, file.partition, file.sha256, snapshot_id))
