"""Declared aggregates: which tables exist, what they were built from, how far they are.

Revision ID: 0008_aggregates
Revises: 0004
"""

from alembic import op

revision = "0008_aggregates"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE TABLE aggregate_tables (
            dataset_id   text NOT NULL,
            name         text NOT NULL,
            table_name   text NOT NULL,
            definition   text NOT NULL,
            snapshot_id  bigint NOT NULL,
            updated_at   timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (dataset_id, name)
        )""")
    # A snapshot's changes are the versions it opened or closed; versions it closed are
    # found by this index without scanning the whole history (opened ones by valid_from,
    # which 0007's index covers).
    op.execute("CREATE INDEX IF NOT EXISTS record_versions_closed "
               "ON record_versions (dataset_id, valid_to)")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS record_versions_closed")
    op.execute("DROP TABLE aggregate_tables")
