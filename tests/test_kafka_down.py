"""With the Kafka broker down, the read side goes on: ``stldata up`` serves what is stored
and ``/health`` says what is wrong with the log, at once, to every probe.

The "broker" is a port on 127.0.0.1 that nothing listens on; no broker is needed."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

from stldata.api.app import create_app
from stldata.runtime import Runtime

from conftest import (
    Spawned,
    free_port,
    ingest,
    open_kafka_runtime,
    project,
    stldata_env,
    wait_for,
)


def test_health_says_the_log_is_unreachable_and_does_not_queue_probes(
        runtime: Runtime, tmp_path: Path) -> None:
    ingest(runtime, "stl-neighborhoods")
    project(runtime)
    # The same database, read through a Kafka log that is down.
    down = open_kafka_runtime(runtime.database.url, tmp_path / "home-down",
                              f"127.0.0.1:{free_port()}")
    client = create_app(down).test_client()

    first = client.get("/health")
    assert first.status_code == 200
    body = first.get_json()
    assert body["status"] == "ok" and body["database"] == "ok"
    assert body["log_backend"] == "kafka" and body["log_lag"] is None
    assert body["log"].startswith(f"Kafka ({down.settings.kafka_bootstrap}): cannot read")

    # The failure stands for a while: the next probes answer at once, saying the same.
    started = time.monotonic()
    again = [client.get("/health").get_json() for _ in range(3)]
    assert time.monotonic() - started < 2
    assert [b["log"] for b in again] == [body["log"]] * 3
    # Records are served all along.
    records = client.get("/api/v1/datasets/stl-neighborhoods/records?limit=1")
    assert records.status_code == 200


def test_up_serves_the_stored_read_model_while_the_broker_is_down(
        runtime: Runtime, tmp_path: Path) -> None:
    ingest(runtime, "stl-neighborhoods")
    project(runtime)
    port = free_port()
    env = stldata_env(runtime, tmp_path / "home")
    env["STLDATA_KAFKA_BOOTSTRAP"] = f"127.0.0.1:{free_port()}"
    up = Spawned(["up", "--no-ingest", "--port", str(port), "--command-port",
                  str(free_port())], env, tmp_path / "up.log")
    try:
        wait_for("the read API", lambda: "Ctrl-C stops" in up.text(), 120, up)
        url = f"http://127.0.0.1:{port}/api/v1/datasets/stl-neighborhoods/records?limit=100"
        with urllib.request.urlopen(url, timeout=30) as response:
            assert len(json.load(response)["items"]) == 88
        assert "cannot catch up with the event log before serving" in up.text()
    finally:
        up.stop()
