"""The log interface that both backends implement."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from stldata.log.events import SnapshotStarted


@dataclass(frozen=True)
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, bytes] = field(default_factory=dict)
    timestamp_ms: int = 0


@dataclass(frozen=True)
class TopicPartition:
    topic: str
    partition: int


class Producer(Protocol):
    def ensure_topic(self, topic: str, partitions: int) -> None:
        """Create the topic if it does not exist (explicitly, never by auto-creation)."""

    def send(self, topic: str, value: bytes, *, key: bytes | None = None,
             headers: dict[str, bytes] | None = None) -> None:
        """Queue one message; it is durable only after :meth:`flush` returns."""

    def flush(self) -> None:
        """Block until every queued message is durably on the log, or raise."""

    def first_start(self, snapshot_id: int) -> SnapshotStarted | None:
        """The first snapshot-started event of this id among the newest control events
        (None when the log shares the database's counter, as the embedded log does)."""

    def newest_snapshot_id(self) -> int:
        """The highest snapshot id among the newest control events on the log (0 if
        none). A log that outlives the database (Kafka) may hold ids that the database's
        own counter has not reached: a new database, or one restored from a backup."""

    def close(self) -> None: ...


#: Given newly assigned partitions, return the next offset to read from each.
OnAssign = Callable[[list[TopicPartition]], dict[TopicPartition, int]]
#: Called with partitions taken away (rebalance), before others may read them.
OnRevoke = Callable[[list[TopicPartition]], None]


class Consumer(Protocol):
    """Reads topics as a member of a consumer group, from positions the caller owns.

    The projector stores offsets in PostgreSQL with the rows they produced, so consumers
    never commit offsets themselves: ``on_assign`` tells them where to start each
    partition, on start and after every rebalance.
    """

    def subscribe(self, topics: list[str], on_assign: OnAssign, on_revoke: OnRevoke) -> None:
        """Join the group for these topics; partitions arrive through ``on_assign``."""

    def partitions(self, topic: str) -> list[TopicPartition]: ...

    def poll(self, max_messages: int, timeout: float) -> Sequence[Message]: ...

    def end_offsets(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """The next offset to be written to each partition (for lag)."""

    def topic_name(self, topic: str) -> str:
        """The full name of a topic on the log (with the namespace prefix, if any)."""

    def close(self) -> None: ...
