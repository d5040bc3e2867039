"""Quality report: where a quarantined row sits, and per-snapshot figures.

``quarantine.position`` says where the row is in words (``line 12``, ``sheet Jan row 7``,
``page 9 row 3``); ``line`` stays the parser's number. ``snapshot_coercions`` keeps, per
snapshot and column, how many cells each normalization changed (sent by the ingester with
the commit). ``snapshot_column_stats`` caches per-column statistics of a committed
snapshot's state, computed on first request: a committed snapshot never changes.

Revision ID: 0006_quality
Revises: 0004
"""

from alembic import op

revision = "0006_quality"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE quarantine ADD COLUMN IF NOT EXISTS position text")
    # Keyset pages of one snapshot's quarantine.
    op.execute("CREATE INDEX IF NOT EXISTS quarantine_snapshot_id ON quarantine "
               "(snapshot_id, id)")
    op.execute("""
        CREATE TABLE snapshot_coercions (
            snapshot_id  bigint NOT NULL,
            dataset_id   text NOT NULL,
            column_name  text NOT NULL,
            kind         text NOT NULL,
            cells        bigint NOT NULL,
            PRIMARY KEY (snapshot_id, column_name, kind)
        )""")
    op.execute("""
        CREATE TABLE snapshot_column_stats (
            snapshot_id     bigint NOT NULL,
            dataset_id      text NOT NULL,
            column_name     text NOT NULL,
            type            text NOT NULL,
            records         bigint NOT NULL,
            nulls           bigint NOT NULL,
            distinct_count  bigint NOT NULL,
            min_value       text,
            max_value       text,
            PRIMARY KEY (snapshot_id, column_name)
        )""")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS snapshot_column_stats")
    op.execute("DROP TABLE IF EXISTS snapshot_coercions")
    op.execute("DROP INDEX IF EXISTS quarantine_snapshot_id")
    op.execute("ALTER TABLE quarantine DROP COLUMN IF EXISTS position")
