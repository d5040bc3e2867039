"""Snapshot signal: NOTIFY readers when the snapshot state changes.

The read API keeps the committed-snapshot state behind its ETags in each process (see
:mod:`stldata.store.snapshot_signal`) and drops it when told of a change. Statement-level
triggers on ``snapshots`` and ``column_types`` notify channel ``stldata_snapshots`` in the
writing transaction, so every writer (the projector, a command, a hand edit) tells them;
PostgreSQL folds repeated notifications of one transaction into one.

Revision ID: 0011_snapshot_signal
Revises: 0004
"""

from alembic import op

revision = "0011_snapshot_signal"
down_revision = "0004"
branch_labels = None
depends_on = None

TABLES = ("snapshots", "column_types")


def upgrade() -> None:
    op.execute("""
        CREATE FUNCTION stldata_signal_snapshots() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('stldata_snapshots', TG_TABLE_NAME);
            RETURN NULL;
        END
        $$""")
    for table in TABLES:
        op.execute(f"""
            CREATE TRIGGER {table}_signal
            AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table}
            FOR EACH STATEMENT EXECUTE FUNCTION stldata_signal_snapshots()""")


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS stldata_signal_snapshots() CASCADE")
