"""Rate limits per client on the read API and the command API: 429 problems with
Retry-After, /health exempt, API keys counted apart from addresses, limits from settings."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from stldata.api.app import create_app
from stldata.command.app import create_command_app
from stldata.command.keys import KeyStore
from stldata.runtime import Runtime

from conftest import Spawned, free_port, invoke_cli, stldata_env, wait_for

DATASETS = "/api/v1/datasets"


def with_settings(runtime: Runtime, **settings: Any) -> Runtime:
    return Runtime(runtime.settings.model_copy(update=settings), runtime.catalog,
                   runtime.database)


def limited_client(app: Any) -> Any:
    app.config.update(TESTING=True, RATELIMIT_IN_TESTING=True)
    return app.test_client()


def from_address(address: str) -> dict[str, Any]:
    return {"environ_base": {"REMOTE_ADDR": address}}


def assert_too_many(response: Any, window: int) -> int:
    assert response.status_code == 429
    assert response.mimetype == "application/problem+json"
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= window
    body = response.get_json()
    assert body["status"] == 429 and body["title"] == "Too Many Requests"
    assert f"retry after {retry_after} seconds" in body["detail"]
    return retry_after


def test_read_api_limits_each_client(loaded: Runtime) -> None:
    client = limited_client(create_app(with_settings(loaded, rate_limit="5/minute")))
    first = from_address("10.0.0.1")
    # One budget covers every route of the app.
    urls = [DATASETS, DATASETS + "/csb-311", DATASETS + "/slmpd-crime/records?limit=1",
            DATASETS, DATASETS + "/nope"]
    assert [client.get(u, **first).status_code for u in urls] == [200, 200, 200, 200, 404]
    over = client.get(DATASETS + "/csb-311", **first)
    assert_too_many(over, 60)
    assert "5 per 1 minute" in over.get_json()["detail"]
    assert over.headers["X-RateLimit-Limit"] == "5"

    # The health probe is never limited; another address has its own budget.
    assert all(client.get("/health", **first).status_code == 200 for _ in range(10))
    assert client.get(DATASETS, **from_address("10.0.0.2")).status_code == 200


def test_api_keys_are_clients_of_their_own(loaded: Runtime) -> None:
    keys = KeyStore(loaded.database.engine(pool_size=1))
    _, token = keys.create("rate test", ["read"])
    client = limited_client(create_app(with_settings(loaded, rate_limit="3/minute")))
    address = from_address("10.0.0.3")
    for _ in range(3):
        assert client.get(DATASETS, **address).status_code == 200
    assert client.get(DATASETS, **address).status_code == 429
    # Same address, valid key: a budget of its own, by either header.
    keyed = [client.get(DATASETS, headers={"X-API-Key": token}, **address).status_code,
             client.get(DATASETS, headers={"Authorization": f"Bearer {token}"},
                        **address).status_code,
             client.get(DATASETS, headers={"X-API-Key": token}, **address).status_code]
    assert keyed == [200, 200, 200]
    assert client.get(DATASETS, headers={"X-API-Key": token}, **address).status_code == 429
    # An invented token is no key: it counts against the address, already spent.
    invented = "stl_000000000000_" + "A" * 43
    assert client.get(DATASETS, headers={"X-API-Key": invented}, **address).status_code == 429


def test_retry_after_is_long_enough_and_not_longer(loaded: Runtime) -> None:
    client = limited_client(create_app(with_settings(loaded, rate_limit="2 per 2 seconds")))
    assert client.get(DATASETS).status_code == 200
    assert client.get(DATASETS).status_code == 200
    retry_after = assert_too_many(client.get(DATASETS), 2)
    time.sleep(retry_after + 0.1)
    assert client.get(DATASETS).status_code == 200


def test_limits_are_off_when_empty_and_in_flask_testing_mode(loaded: Runtime) -> None:
    unlimited = create_app(with_settings(loaded, rate_limit=""))
    assert "stldata.limiter" not in unlimited.extensions
    client = unlimited.test_client()
    assert all(client.get(DATASETS).status_code == 200 for _ in range(8))
    # A test suite's shared client (TESTING without RATELIMIT_IN_TESTING) is not limited.
    testing = create_app(with_settings(loaded, rate_limit="2/minute"))
    testing.config["TESTING"] = True
    client = testing.test_client()
    assert all(client.get(DATASETS).status_code == 200 for _ in range(5))


def test_command_api_limits_each_client(runtime: Runtime) -> None:
    keys = KeyStore(runtime.database.engine(pool_size=1))
    _, token = keys.create("poller", ["read"])
    app = create_command_app(with_settings(runtime, command_rate_limit="3/minute",
                                           rate_limit="1000/minute"))
    client = limited_client(app)
    run = "/api/v1/ingests/" + "0" * 32
    headers = {"X-API-Key": token}
    assert [client.get(run, headers=headers).status_code for _ in range(3)] == [404] * 3
    assert_too_many(client.get(run, headers=headers), 60)
    assert_too_many(client.post("/api/v1/datasets/csb-311/ingest", headers=headers), 60)
    assert client.get("/health").status_code == 200
    # Requests without a key count against their address: 401s too.
    anonymous = from_address("10.0.0.9")
    assert [client.get(run, **anonymous).status_code for _ in range(3)] == [401] * 3
    assert client.get(run, **anonymous).status_code == 429


def test_bad_limit_setting_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    result = invoke_cli(monkeypatch, ["datasets"], COMMAND_RATE_LIMIT="lots per minute")
    assert result.exit_code == 1
    assert "invalid setting: STLDATA_COMMAND_RATE_LIMIT" in result.output
    assert "lots per minute" in result.output



def _get(url: str) -> tuple[int, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers)


def test_served_read_api_is_limited_from_the_environment(loaded: Runtime,
                                                         tmp_path: Path) -> None:
    port = free_port()
    env = stldata_env(loaded, tmp_path / "home", STLDATA_RATE_LIMIT="3/minute")
    served = Spawned(["serve", "--port", str(port)], env, tmp_path / "serve.log")
    try:
        wait_for("the read API", lambda: "Ctrl-C stops" in served.text(), 60, served)
        base = f"http://127.0.0.1:{port}"
        statuses = [_get(base + DATASETS)[0] for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        status, headers = _get(base + DATASETS)
        assert status == 429 and 1 <= int(headers["Retry-After"]) <= 60
        assert headers["Content-Type"] == "application/problem+json"
        assert _get(base + "/health")[0] == 200
    finally:
        served.shut_down()
