"""Command side: one row per ingest run, to find runs that died before committing.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE TABLE ingest_runs (
            snapshot_id  bigint PRIMARY KEY,
            dataset_id   text NOT NULL,
            state        text NOT NULL CHECK (state IN ('publishing', 'committed', 'aborted')),
            source       text NOT NULL,
            started_at   timestamptz NOT NULL DEFAULT now(),
            ended_at     timestamptz
        )""")
    op.execute("CREATE INDEX ingest_runs_open ON ingest_runs (dataset_id) "
               "WHERE state = 'publishing'")


def downgrade() -> None:
    op.execute("DROP TABLE ingest_runs")
