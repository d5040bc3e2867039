"""Ingest jobs of the command API, kept in the ``ingest_jobs`` table.

A job is queued when the request is accepted, running while the ingester publishes, and
ends committed (a snapshot was published), unchanged (the source had not changed: no
snapshot), aborted (a snapshot was started and then aborted) or failed (the source was
unusable before any snapshot started).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from typing import Any

import sqlalchemy as sa

from stldata.store.database import pid_is_running

log = logging.getLogger(__name__)

STATES = ("queued", "running", "committed", "aborted", "failed", "unchanged")
FINAL_STATES = frozenset({"committed", "aborted", "failed", "unchanged"})

#: Identifies this process among command services sharing the database.
WORKER = f"{socket.gethostname()}:{os.getpid()}"

_FIELDS = ("id, dataset_id, state, source, snapshot_id, rows_so_far, bytes_read, bytes_total, "
           "rows_read, published, quarantined, files, error, created_at, started_at, ended_at")


def new_job_id() -> str:
    return secrets.token_hex(16)


class JobStore:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def create(self, job_id: str, dataset_id: str, source: str, api_key_id: int | None
               ) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO ingest_jobs (id, dataset_id, state, source, api_key_id, worker) "
                "VALUES (:i, :d, 'queued', :s, :k, :w)"),
                {"i": job_id, "d": dataset_id, "s": source, "k": api_key_id, "w": WORKER})

    def start(self, job_id: str) -> None:
        self._update(job_id, "state = 'running', started_at = now()", {})

    def progress(self, job_id: str, *, rows: int, bytes_read: int, bytes_total: int | None,
                 snapshot_id: int | None) -> None:
        self._update(job_id, "rows_so_far = :r, bytes_read = :b, bytes_total = :t, "
                             "snapshot_id = coalesce(:s, snapshot_id)",
                     {"r": rows, "b": bytes_read, "t": bytes_total, "s": snapshot_id})

    def finish(self, job_id: str, state: str, *, snapshot_id: int | None = None,
               counts: dict[str, Any] | None = None, error: str | None = None) -> None:
        assert state in FINAL_STATES
        counts = counts or {}
        from sqlalchemy.dialects.postgresql import JSONB

        statement = sa.text(
            "UPDATE ingest_jobs SET state = :state, ended_at = now(), error = :e, "
            "snapshot_id = coalesce(:s, snapshot_id), rows_read = :rr, published = :p, "
            "quarantined = :q, files = :f WHERE id = :i"
        ).bindparams(sa.bindparam("f", type_=JSONB))
        with self.engine.begin() as conn:
            conn.execute(statement, {
                "i": job_id, "state": state, "e": error, "s": snapshot_id,
                "rr": counts.get("rows_read"), "p": counts.get("published"),
                "q": counts.get("quarantined"), "f": counts.get("files")})

    def get(self, job_id: str) -> dict[str, Any] | None:
        """The job, with the state of its snapshot in the read model (``projection``)."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.text(
                f"SELECT {', '.join('j.' + f.strip() for f in _FIELDS.split(','))}, "
                "s.status AS projection FROM ingest_jobs j "
                "LEFT JOIN snapshots s ON s.id = j.snapshot_id WHERE j.id = :i"),
                {"i": job_id}).mappings().first()
        return dict(row) if row else None

    def fail_orphans(self) -> int:
        """Fail the unfinished jobs of command services on this host that have exited;
        their ingests died with them (the ingester aborts such snapshots on its next run)."""
        host = WORKER.rsplit(":", 1)[0]
        with self.engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT id, worker FROM ingest_jobs WHERE state IN ('queued', 'running') "
                "AND worker LIKE :h"), {"h": host.replace("%", r"\%") + ":%"}).all()
        dead = [str(r.id) for r in rows
                if not pid_is_running(int(str(r.worker).rsplit(":", 1)[1]))]
        for job_id in dead:
            log.warning("ingest job %s was left unfinished by a command service that "
                        "stopped; marking it failed", job_id)
            self.finish(job_id, "failed",
                        error="the command service running this ingest stopped before it "
                              "finished; start the ingest again")
        return len(dead)

    def _update(self, job_id: str, assignments: str, params: dict[str, Any]) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(f"UPDATE ingest_jobs SET {assignments} WHERE id = :i"),
                         {**params, "i": job_id})
