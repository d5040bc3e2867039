"""Alembic environment: run migrations online against the configured database."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

config = context.config
engine = sa.create_engine(config.get_main_option("sqlalchemy.url") or "", poolclass=sa.NullPool)

with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        # Two processes starting at once (API and projector) must not migrate twice.
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(7316001)"))
        context.run_migrations()
engine.dispose()
