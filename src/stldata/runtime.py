"""Wiring shared by every entry point: settings, catalog, database, log backend."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from stldata.catalog import Catalog
from stldata.log.base import Consumer, Producer
from stldata.log.factory import open_consumer, open_producer
from stldata.settings import Settings, get_settings
from stldata.store.database import Database
from stldata.store.migrate import upgrade

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    catalog: Catalog
    database: Database

    @classmethod
    def start(cls, settings: Settings | None = None, *, migrate: bool = True) -> Runtime:
        settings = settings or get_settings()
        catalog = Catalog.load(settings.catalog_dir)
        database = Database.from_settings(settings)
        if migrate:
            upgrade(database)
        return cls(settings, catalog, database)

    def producer(self) -> Producer:
        return open_producer(self.settings, self.database)

    def consumer(self, group_id: str) -> Consumer:
        return open_consumer(self.settings, self.database, group_id)

    def projector(self):  # type: ignore[no-untyped-def]
        from stldata.projection.projector import GROUP_ID, Projector

        return Projector(
            self.database, self.catalog,
            data=self.consumer(GROUP_ID), control=self.consumer(GROUP_ID + "-control"),
            dead_letters=self.producer(), batch_size=self.settings.batch_size,
            poll_interval=self.settings.poll_interval)
