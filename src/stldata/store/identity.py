"""The identity of this database's read model (migration 0012)."""

from __future__ import annotations

from stldata.store.database import Database


def read_model_id(database: Database) -> str:
    """A short, stable id of the read model this database holds (the first 12 hex digits
    of a random UUID made when the database was migrated)."""
    with database.connect() as conn:
        row = conn.execute("SELECT id FROM read_model").fetchone()
    if row is None:  # emptied by hand: any new id works, it only names a consumer group
        with database.transaction() as conn:
            row = conn.execute("INSERT INTO read_model DEFAULT VALUES "
                               "ON CONFLICT (one_row) DO UPDATE SET one_row = true "
                               "RETURNING id").fetchone()
    assert row is not None
    return str(row[0]).replace("-", "")[:12]
