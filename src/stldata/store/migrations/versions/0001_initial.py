"""Initial schema: snapshots, record history, quarantine, the embedded log, offsets.

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Query side: one row per snapshot, written by the projector.
    op.execute("""
        CREATE TABLE snapshots (
            id            bigint PRIMARY KEY,
            dataset_id    text NOT NULL,
            status        text NOT NULL CHECK (status IN ('pending', 'committed', 'aborted')),
            mode          text NOT NULL,
            source        text NOT NULL,
            fetched_at    timestamptz,
            sha256        text,
            partitions    jsonb NOT NULL DEFAULT '[]',
            files         jsonb NOT NULL DEFAULT '[]',
            record_count  bigint,
            rows_read     bigint,
            quarantined   bigint,
            added         bigint,
            changed       bigint,
            deleted       bigint,
            unchanged     bigint,
            row_count     bigint,
            reason        text,
            started_at    timestamptz NOT NULL DEFAULT now(),
            committed_at  timestamptz
        )""")
    op.execute("CREATE INDEX snapshots_dataset ON snapshots (dataset_id, id)")

    # Every version of every record, with the snapshots it was valid for (historic puts).
    op.execute("""
        CREATE TABLE record_versions (
            id          bigserial PRIMARY KEY,
            dataset_id  text NOT NULL,
            key         text NOT NULL,
            hash        text,
            deleted     boolean NOT NULL DEFAULT false,
            values      jsonb,
            source      json,
            partition   text,
            line        integer,
            valid_from  bigint NOT NULL REFERENCES snapshots (id),
            valid_to    bigint REFERENCES snapshots (id)
        )""")
    op.execute("CREATE INDEX record_versions_key ON record_versions (dataset_id, key, valid_from)")
    op.execute("CREATE UNIQUE INDEX record_versions_open ON record_versions (dataset_id, key) "
               "WHERE valid_to IS NULL")

    op.execute("""
        CREATE TABLE quarantine (
            id           bigserial PRIMARY KEY,
            dataset_id   text NOT NULL,
            snapshot_id  bigint NOT NULL,
            source_file  text NOT NULL,
            line         integer,
            record_key   text,
            column_name  text,
            raw_value    text,
            reason       text NOT NULL
        )""")
    op.execute("CREATE INDEX quarantine_snapshot ON quarantine (snapshot_id)")

    # Messages staged per snapshot; each dataset's staged records live in its own
    # typed staging table, created by the projection with the dataset's table.
    op.execute("""
        CREATE TABLE staged_counts (
            snapshot_id  bigint PRIMARY KEY,
            received     bigint NOT NULL
        )""")

    # The embedded log: Kafka's model (topic, partition, offset) in PostgreSQL.
    op.execute("""
        CREATE TABLE log_partitions (
            topic        text NOT NULL,
            partition    integer NOT NULL,
            next_offset  bigint NOT NULL DEFAULT 0,
            PRIMARY KEY (topic, partition)
        )""")
    op.execute("""
        CREATE TABLE log_messages (
            topic       text NOT NULL,
            partition   integer NOT NULL,
            "offset"    bigint NOT NULL,
            key         bytea,
            value       bytea NOT NULL,
            headers     jsonb NOT NULL DEFAULT '{}',
            created_at  timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (topic, partition, "offset")
        )""")

    # Consumer positions, committed in the same transaction as the rows they produced.
    op.execute("""
        CREATE TABLE consumer_offsets (
            group_id     text NOT NULL,
            topic        text NOT NULL,
            partition    integer NOT NULL,
            next_offset  bigint NOT NULL,
            updated_at   timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (group_id, topic, partition)
        )""")

    # Command side: what was last published per source file, to skip unchanged sources.
    op.execute("CREATE SEQUENCE snapshot_ids")
    op.execute("""
        CREATE TABLE source_files (
            dataset_id    text NOT NULL,
            partition     text NOT NULL,
            sha256        text NOT NULL,
            snapshot_id   bigint NOT NULL,
            published_at  timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (dataset_id, partition)
        )""")


def downgrade() -> None:
    for table in ("source_files", "consumer_offsets", "log_messages", "log_partitions",
                  "staged_counts", "quarantine", "record_versions",
                  "snapshots"):
        op.execute(f"DROP TABLE IF EXISTS {table}")
    op.execute("DROP SEQUENCE IF EXISTS snapshot_ids")
