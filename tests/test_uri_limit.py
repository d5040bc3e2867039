"""A URL over the length limit is a 414 problem+json, from the app (any WSGI server) and
from the development server `stldata serve` and `stldata up` run, which refuses an overlong
request line before the app sees it. A parameter that is not UTF-8 is a 400 naming it."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from werkzeug.serving import BaseWSGIServer, make_server

from stldata.api.app import create_app
from stldata.api.uri_limit import MAX_URI_BYTES, ProblemRequestHandler
from stldata.command.app import create_command_app
from stldata.runtime import Runtime


def padded(path: str, length: int) -> str:
    """``path`` with a query that makes the whole target ``length`` bytes long."""
    url = f"{path}?pad="
    return url + "a" * (length - len(url))


def assert_414(response: Any) -> None:
    assert response.status_code == 414
    assert response.mimetype == "application/problem+json"
    problem = response.get_json()
    assert problem["status"] == 414 and problem["title"] == "Request URI Too Long"
    assert f"longer than {MAX_URI_BYTES} bytes" in problem["detail"]


def test_read_api_answers_414_as_a_problem(client: Any) -> None:
    assert_414(client.get(padded("/api/v1/datasets", MAX_URI_BYTES + 1)))
    assert_414(client.get(padded("/no/such/route", 200_000)))  # before routing's 404
    at_limit = padded("/health", MAX_URI_BYTES)
    assert len(at_limit) == MAX_URI_BYTES
    assert client.get(at_limit).status_code == 200
    # Percent-escapes count as the bytes sent, not the characters they stand for.
    escaped = "/health?pad=" + "%20" * (MAX_URI_BYTES // 3)
    assert_414(client.get(escaped))


def test_command_api_answers_414_as_a_problem(runtime: Runtime) -> None:
    app = create_command_app(runtime)
    app.config["TESTING"] = True
    commands = app.test_client()
    assert_414(commands.post(padded("/api/v1/datasets/csb-311/ingest", MAX_URI_BYTES + 1)))
    assert commands.get(padded("/health", MAX_URI_BYTES)).status_code == 200


@pytest.fixture
def server(loaded: Runtime) -> Iterator[BaseWSGIServer]:
    """The read API on the development server, as `stldata serve` runs it."""
    served = make_server("127.0.0.1", 0, create_app(loaded), threaded=True,
                         request_handler=ProblemRequestHandler)
    thread = threading.Thread(target=served.serve_forever, daemon=True)
    thread.start()
    yield served
    served.shutdown()
    thread.join(timeout=10)


def raw_exchange(server: BaseWSGIServer, request: bytes) -> tuple[int, str, dict[str, Any]]:
    with socket.create_connection(("127.0.0.1", server.server_port), timeout=30) as sock:
        sock.sendall(request)
        response = http.client.HTTPResponse(sock)
        response.begin()
        body = response.read()
    return response.status, response.getheader("Content-Type") or "", json.loads(body)


def test_development_server_refusals_are_problems(server: BaseWSGIServer) -> None:
    # http.server refuses a request line over 65,536 bytes itself, before the app.
    target = padded("/api/v1/datasets", 70_000).encode()
    status, media, problem = raw_exchange(server, b"GET " + target + b" HTTP/1.1\r\n"
                                                  b"Host: 127.0.0.1\r\n\r\n")
    assert (status, media) == (414, "application/problem+json")
    assert problem["status"] == 414 and problem["title"] == "Request URI Too Long"
    assert f"longer than {MAX_URI_BYTES}" in problem["detail"]

    status, media, problem = raw_exchange(server, b"GET / NON SENSE HTTP/1.1\r\n\r\n")
    assert (status, media) == (400, "application/problem+json")
    assert problem["status"] == 400 and problem["title"] == "Bad Request"
    assert "Bad request syntax ('GET / NON SENSE HTTP/1.1')" == problem["detail"]

    # Just under the server's limit (the request line holds the method and version too),
    # the request reaches the app and is answered.
    target = padded("/health", MAX_URI_BYTES - 100).encode()
    status, media, body = raw_exchange(server, b"GET " + target + b" HTTP/1.1\r\n"
                                               b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n")
    assert (status, body["status"]) == (200, "ok")

    # Ordinary requests are untouched.
    status, media, body = raw_exchange(server, b"GET /health HTTP/1.1\r\n"
                                               b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n")
    assert status == 200 and body["status"] == "ok"


RECORDS = "/api/v1/datasets/slmpd-crime/records"


@pytest.mark.parametrize(("query", "named"), [
    ("q=%ff%fe", "q"),  # not UTF-8 at all
    ("district=3&q=caf%e9", "q"),  # latin-1 é, as an old form would send it
    ("q=%c3", "q"),  # a sequence cut short
    ("%ff=1", "\ufffd"),  # the name itself
    ("q=ok&description__icontains=%ed%a0%80", "description__icontains"),  # a surrogate
])
def test_a_parameter_that_is_not_utf8_is_named(client: Any, query: str, named: str) -> None:
    response = client.get(RECORDS + "?" + query)
    assert response.status_code == 400, response.get_data(as_text=True)
    problem = response.get_json()
    assert problem["invalid_params"][0]["name"] == named
    assert "not valid UTF-8" in problem["detail"]


def test_utf8_parameters_are_untouched(client: Any) -> None:
    # é percent-encoded as UTF-8, and a literal + for a space: an ordinary search.
    assert client.get(RECORDS + "?q=caf%C3%A9+burglary&limit=1").status_code == 200
    assert client.get(RECORDS + "?limit=1&description__icontains=%E2%80%94").status_code == 200
    assert client.get("/api/v1/datasets?x=%41").status_code == 200


def test_the_development_server_names_it_too(server: BaseWSGIServer) -> None:
    status, media, problem = raw_exchange(server, b"GET " + RECORDS.encode()
                                          + b"?q=%ff HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                          b"Connection: close\r\n\r\n")
    assert (status, media) == (400, "application/problem+json")
    assert problem["invalid_params"][0]["name"] == "q"


def test_command_api_names_a_parameter_that_is_not_utf8(runtime: Runtime) -> None:
    commands = create_command_app(runtime).test_client()
    response = commands.get("/api/v1/ingests/1?x=%ff")
    assert response.status_code == 400
    assert response.get_json()["invalid_params"][0]["name"] == "x"
