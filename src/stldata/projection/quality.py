"""Quality figures the projection keeps per snapshot, for the quality report."""

from __future__ import annotations

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
