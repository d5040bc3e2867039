"""Which source files currently hold each record of an increment dataset.

A key can appear in several files (a month published under two names, a request listed
in two yearly exports). Re-publishing one of them without the key must not delete a
record that another current file still holds.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE TABLE record_sources (
            dataset_id  text NOT NULL,
            partition   text NOT NULL,
            key         text NOT NULL,
            PRIMARY KEY (dataset_id, partition, key)
        )""")
    op.execute("CREATE INDEX record_sources_key ON record_sources (dataset_id, key)")


def downgrade() -> None:
    op.execute("DROP TABLE record_sources")
