"""The ETag and Last-Modified of each fetched URL, for conditional GETs.

Revision ID: 0005_source_validators
Revises: 0004
"""

from alembic import op

revision = "0005_source_validators"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # ``files`` lists the (partition, sha256) the fetch was published as, so a validator
    # is trusted only while the read model still holds that version.
    op.execute("""
        CREATE TABLE source_validators (
            dataset_id     text NOT NULL,
            url            text NOT NULL,
            etag           text,
            last_modified  text,
            files          jsonb NOT NULL DEFAULT '[]'::jsonb,
            fetched_at     timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (dataset_id, url)
        )""")


def downgrade() -> None:
    op.execute("DROP TABLE source_validators")
