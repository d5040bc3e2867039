"""Kafka settings that cannot work are refused by name before anything is published,
rather than failing later as a client error that names no setting. No broker needed."""

from __future__ import annotations

import pytest

from stldata.settings import Settings

from conftest import invoke_cli


@pytest.mark.parametrize(("name", "value", "says"), [
    ("KAFKA_FLUSH_TIMEOUT", "inf", "finite number"),
    ("KAFKA_FLUSH_TIMEOUT", "1e12", "less than or equal to 86400"),
    ("KAFKA_FLUSH_TIMEOUT", "0.001", "greater than or equal to 1"),
    ("KAFKA_TOPIC_PREFIX", "bad prefix/", "may hold only ASCII letters"),
    ("KAFKA_TOPIC_PREFIX", "é.", "may hold only ASCII letters"),
    ("KAFKA_TOPIC_PREFIX", "p" * 101, "at most 100"),
    ("KAFKA_BOOTSTRAP", "127.0.0.1:99999", "'127.0.0.1:99999' is not host:port"),
    ("KAFKA_BOOTSTRAP", "127.0.0.1:0", "is not host:port"),
    ("KAFKA_BOOTSTRAP", "127.0.0.1", "'127.0.0.1' is not host:port"),
    ("KAFKA_BOOTSTRAP", "127.0.0.1:9092,", "'' is not host:port"),
])
def test_bad_kafka_settings_are_named(monkeypatch: pytest.MonkeyPatch, name: str, value: str,
                                      says: str) -> None:
    result = invoke_cli(monkeypatch, ["datasets"], **{name: value})
    assert result.exit_code == 1
    assert f"invalid setting: STLDATA_{name}" in result.output
    assert says in result.output


def test_good_kafka_settings_are_kept() -> None:
    settings = Settings(kafka_bootstrap=" 127.0.0.1:9092,[::1]:19092 ",
                        kafka_topic_prefix="team-a.v2_", kafka_flush_timeout=1)
    assert settings.kafka_bootstrap == "127.0.0.1:9092,[::1]:19092"
    assert settings.kafka_topic_prefix == "team-a.v2_"
    # Empty is unset: the embedded log.
    assert Settings(kafka_bootstrap="  ").kafka_bootstrap is None
