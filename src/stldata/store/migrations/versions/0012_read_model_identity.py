"""Read-model identity: a random id of this database's read model.

Projectors of one read model share a Kafka consumer group, so that they split a log's
partitions between them. Two databases (a rebuild beside the old one, a second read side)
on one log must not: each has to read every partition. The group's name on the broker
carries this id (:func:`stldata.store.identity.read_model_id`); offsets stay in the
database as before.

Revision ID: 0012_read_model_identity
Revises: 0011_snapshot_signal
"""

from alembic import op

revision = "0012_read_model_identity"
down_revision = "0011_snapshot_signal"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE TABLE read_model (
            id       uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            -- One row: the table is the database's identity card.
            one_row  boolean NOT NULL DEFAULT true UNIQUE CHECK (one_row)
        )""")
    op.execute("INSERT INTO read_model DEFAULT VALUES")


def downgrade() -> None:
    op.execute("DROP TABLE read_model")
