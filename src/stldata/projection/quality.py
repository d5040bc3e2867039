"""Quality figures the projection keeps per snapshot, for the quality report."""

from __future__ import annotations

from typing import Any

from stldata.log.events import SnapshotCommitted
from stldata.store.database import Conn


def store_coercions(conn: Conn, event: SnapshotCommitted) -> None:
    """Per column, how many cells each normalization changed in this snapshot."""
    rows = [(event.snapshot_id, event.dataset_id, column, kind, int(cells))
            for column, kinds in event.coercions.items() for kind, cells in kinds.items()]
    if not rows:
        return
    with conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO snapshot_coercions (snapshot_id, dataset_id, column_name, kind, "
            "cells) VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING", rows)


def with_repeats(event: SnapshotCommitted, repeats: dict[str, int]
                    ) -> tuple[int, list[dict[str, Any]]]:
    """The snapshot's quarantined rows and per-file figures, counting the rows that repeat
    a key (the 'last' policy) and have no issue of their own, per file.

    The ingester counts the rows with an issue; which rows repeat a key is known only when
    the snapshot is applied (stldata.projection.apply), so they are added here.
    """
    if not repeats:
        return event.quarantined, event.files
    files = [{**f, "with_issues": int(f.get("with_issues", 0))
              + repeats.get(str(f.get("file")), 0)} for f in event.files]
    return event.quarantined + sum(repeats.values()), files
