"""Pick the log backend from the settings: Kafka when a bootstrap is set, else embedded."""

from __future__ import annotations

from stldata.log.base import Consumer, Producer
from stldata.log.embedded import EmbeddedConsumer, EmbeddedProducer
from stldata.settings import Settings
from stldata.store.database import Database


def backend_name(settings: Settings) -> str:
    return "kafka" if settings.kafka_bootstrap else "embedded"


def open_producer(settings: Settings, database: Database) -> Producer:
    if settings.kafka_bootstrap:
        from stldata.log.kafka import KafkaProducer

        return KafkaProducer(settings.kafka_bootstrap,
                             default_partitions=settings.topic_partitions,
                             topic_prefix=settings.kafka_topic_prefix,
                             replication_factor=settings.kafka_replication_factor,
                             flush_timeout=settings.kafka_flush_timeout)
    return EmbeddedProducer(database, default_partitions=settings.topic_partitions)


def open_consumer(settings: Settings, database: Database, group_id: str) -> Consumer:
    if settings.kafka_bootstrap:
        from stldata.log.kafka import KafkaConsumer
        from stldata.store.identity import read_model_id

        # One group per read model: projectors of this database share the partitions;
        # another database on the same log reads all of them with a group of its own.
        return KafkaConsumer(settings.kafka_bootstrap,
                             group_id=f"{group_id}.{read_model_id(database)}",
                             topic_prefix=settings.kafka_topic_prefix)
    return EmbeddedConsumer(database)
