"""Types inferred for catalog columns declared ``type = "auto"``, pinned at first sight.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE TABLE column_types (
            dataset_id   text NOT NULL,
            column_name  text NOT NULL,
            type         text NOT NULL,
            snapshot_id  bigint NOT NULL,
            PRIMARY KEY (dataset_id, column_name)
        )""")


def downgrade() -> None:
    op.execute("DROP TABLE column_types")
