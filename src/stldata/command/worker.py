"""Run accepted ingest jobs in background threads and record their progress.

Threads are daemons: stopping the service kills a running ingest, whose snapshot the
ingester aborts on its next run of that dataset and whose job the next start of the
service marks failed. Ingests of one dataset run one at a time (the ingester's own lock).
"""

from __future__ import annotations

import logging
import queue
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

from stldata.catalog import Dataset
from stldata.command.jobs import JobStore
from stldata.errors import StlDataError
from stldata.ingest.ingester import Ingester
from stldata.log.base import Producer
from stldata.log.events import CONTROL_TOPIC, SnapshotStarted
from stldata.runtime import Runtime

log = logging.getLogger(__name__)

#: Seconds between progress writes; the ingester reports after every batch.
REPORT_EVERY = 0.25


@dataclass(frozen=True)
class IngestJob:
    id: str
    dataset: Dataset
    #: What to hand the ingester: None for the catalog's source, else a path or URL.
    source: str | None
    #: A folder of uploaded files, deleted when the job ends.
    upload_dir: Path | None = None


class ProgressProducer:
    """A producer that counts the rows sent to a dataset's topic and notes the snapshot
    id, then passes everything on unchanged."""

    def __init__(self, inner: Producer, topic: str, report: Callable[[bool], None]) -> None:
        self.inner = inner
        self.topic = topic
        self.report = report
        self.rows = 0
        self.snapshot_id: int | None = None

    def ensure_topic(self, topic: str, partitions: int) -> None:
        self.inner.ensure_topic(topic, partitions)

    def send(self, topic: str, value: bytes, *, key: bytes | None = None,
             headers: dict[str, bytes] | None = None) -> None:
        self.inner.send(topic, value, key=key, headers=headers)
        if topic == self.topic:
            self.rows += 1
        elif topic == CONTROL_TOPIC and (headers or {}).get("event") == \
                SnapshotStarted.name.encode():
            self.snapshot_id = int(orjson.loads(value)["snapshot_id"])

    def flush(self) -> None:
        self.inner.flush()
        self.report(False)

    def newest_snapshot_id(self) -> int:
        return self.inner.newest_snapshot_id()

    def first_start(self, snapshot_id: int) -> SnapshotStarted | None:
        return self.inner.first_start(snapshot_id)

    def close(self) -> None:
        self.inner.close()


class IngestWorker:
    def __init__(self, runtime: Runtime, jobs: JobStore, threads: int) -> None:
        self.runtime = runtime
        self.jobs = jobs
        self.queue: queue.Queue[IngestJob] = queue.Queue()
        self.threads = [threading.Thread(target=self._work, name=f"ingest-worker-{n}",
                                         daemon=True) for n in range(threads)]
        for thread in self.threads:
            thread.start()

    def submit(self, job: IngestJob) -> None:
        self.queue.put(job)

    def _work(self) -> None:
        while True:
            job = self.queue.get()
            try:
                self.run(job)
            except Exception:
                # run() records every failure; this only guards the thread itself.
                log.exception("ingest job %s: unexpected error", job.id)
            finally:
                self.queue.task_done()

    def run(self, job: IngestJob) -> None:
        self.jobs.start(job.id)
        bytes_total: list[int | None] = [None]
        bytes_read = [0]
        last = [0.0]
        producer: ProgressProducer | None = None

        def report(final: bool) -> None:
            now = time.monotonic()
            if producer is None or (not final and now - last[0] < REPORT_EVERY):
                return
            last[0] = now
            self.jobs.progress(job.id, rows=producer.rows, bytes_read=bytes_read[0],
                               bytes_total=bytes_total[0], snapshot_id=producer.snapshot_id)

        def open_bar(total: int) -> Callable[[int], None]:
            bytes_total[0] = total

            def tick(n: int) -> None:
                bytes_read[0] += n
            return tick

        try:
            producer = ProgressProducer(self.runtime.producer(), job.dataset.topic, report)
            try:
                ingester = Ingester(self.runtime.settings, self.runtime.database, producer)
                summary = ingester.ingest(job.dataset, job.source, progress=open_bar)
            finally:
                producer.close()
        except Exception as exc:
            message = exc.message if isinstance(exc, StlDataError) else \
                f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, StlDataError):
                log.exception("ingest job %s of %s failed", job.id, job.dataset.id)
            started = producer.snapshot_id if producer else None
            report(True)
            self.jobs.finish(job.id, "aborted" if started is not None else "failed",
                             snapshot_id=started, error=message[:4000])
            return
        finally:
            if job.upload_dir is not None:
                shutil.rmtree(job.upload_dir, ignore_errors=True)

        report(True)
        counts = {"rows_read": summary.rows_read, "published": summary.published,
                  "quarantined": summary.quarantined,
                  "files": [f.as_dict() for f in summary.files]}
        state = "committed" if summary.snapshot_id is not None else "unchanged"
        self.jobs.finish(job.id, state, snapshot_id=summary.snapshot_id, counts=counts)
        log.info("ingest job %s: %s", job.id, summary.line())
