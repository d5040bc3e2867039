"""Time travel and the change feed read record_versions by snapshot, not by key.

The feed walks one dataset's versions in (snapshot, key) order, and a diff between two
snapshots starts from the versions written after the older one: both are ranges over
(dataset_id, valid_from, key), which the key-first index of 0001 cannot serve.

Revision ID: 0007_time_travel
Revises: 0004
"""

from alembic import op

revision = "0007_time_travel"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX IF NOT EXISTS record_versions_snapshot "
               "ON record_versions (dataset_id, valid_from, key)")
    # Time travel by date finds the last snapshot committed before a moment.
    op.execute("CREATE INDEX IF NOT EXISTS snapshots_committed "
               "ON snapshots (dataset_id, committed_at) WHERE status = 'committed'")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS snapshots_committed")
    op.execute("DROP INDEX IF EXISTS record_versions_snapshot")
