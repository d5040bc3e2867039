"""Command API: API keys (stored hashed) and ingest jobs started over HTTP.

An ingest job is the command API's view of one request to ingest: it exists before the
ingester assigns a snapshot id (queued), and also when no snapshot is made at all (the
source was unchanged, or unusable), so it is a table of its own beside ``ingest_runs``.

Revision ID: 0009_command_api
Revises: 0004
"""

from alembic import op

revision = "0009_command_api"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE TABLE api_keys (
            id            bigserial PRIMARY KEY,
            name          text NOT NULL CHECK (name <> ''),
            -- Public part of the token, to find the row; the secret is only hashed.
            prefix        text NOT NULL UNIQUE,
            token_sha256  text NOT NULL,
            scopes        text[] NOT NULL,
            created_at    timestamptz NOT NULL DEFAULT now(),
            last_used_at  timestamptz,
            revoked_at    timestamptz
        )""")
    op.execute("""
        CREATE TABLE ingest_jobs (
            id           text PRIMARY KEY,
            dataset_id   text NOT NULL,
            state        text NOT NULL CHECK (state IN ('queued', 'running', 'committed',
                                                        'aborted', 'failed', 'unchanged')),
            source       text NOT NULL,
            api_key_id   bigint REFERENCES api_keys (id),
            -- host:pid of the command service running it, to fail jobs of a dead one.
            worker       text NOT NULL,
            snapshot_id  bigint,
            rows_so_far  bigint NOT NULL DEFAULT 0,
            bytes_read   bigint NOT NULL DEFAULT 0,
            bytes_total  bigint,
            rows_read    bigint,
            published    bigint,
            quarantined  bigint,
            files        jsonb,
            error        text,
            created_at   timestamptz NOT NULL DEFAULT now(),
            started_at   timestamptz,
            ended_at     timestamptz
        )""")
    op.execute("CREATE INDEX ingest_jobs_open ON ingest_jobs (worker) "
               "WHERE state IN ('queued', 'running')")


def downgrade() -> None:
    op.execute("DROP TABLE ingest_jobs")
    op.execute("DROP TABLE api_keys")
