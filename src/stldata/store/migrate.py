"""Apply the Alembic migrations that own the fixed part of the schema.

Per-dataset record tables are derived from the catalog by the projection
(:mod:`stldata.projection.tables`), because their columns follow catalog files.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config

from stldata.store.database import Database

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(database: Database) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database.sqlalchemy_url.replace("%", "%%"))
    return config


def upgrade(database: Database) -> None:
    # Independent features add migrations as separate branches off a common parent;
    # "heads" applies every branch, so they need no artificial ordering between them.
    command.upgrade(alembic_config(database), "heads")
    log.info("database schema is at the latest migration")
