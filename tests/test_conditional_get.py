"""Conditional GET: a URL's ETag and Last-Modified go back with the next fetch, and a
304 Not Modified ends the ingest without a download or a snapshot.

The server runs on 127.0.0.1, honours If-None-Match and If-Modified-Since the way
HTTP servers do, and records every request it answers."""

from __future__ import annotations

import hashlib
import http.server
import io
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path

import pytest

from stldata.ingest.errors import SourceError
from stldata.runtime import Runtime

from conftest import ROOT, ingest, project, query

ROUTES_ZIP = ROOT / "data" / "metro-routes" / "metro_stl_gtfs_2023-06_routes.zip"


@dataclass
class Feed:
    """What the server publishes, and what it was asked."""

    body: bytes = b""
    modified: float = 0.0
    send_etag: bool = True
    send_last_modified: bool = True
    content_type: str = "application/octet-stream"
    requests: list[dict[str, str]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)

    def publish(self, body: bytes) -> None:
        self.body = body
        # Last-Modified has whole seconds; a new version must be a later second.
        self.modified = max(time.time(), self.modified + 1)

    @property
    def etag(self) -> str:
        return '"' + hashlib.sha256(self.body).hexdigest()[:16] + '"'


def handler_for(feed: Feed) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802  (the name http.server calls)
            feed.requests.append({k.casefold(): v for k, v in self.headers.items()})
            if self._not_modified():
                self._answer(304, b"")
                return
            self._answer(200, feed.body)

        def _not_modified(self) -> bool:
            # As RFC 9110 says: If-None-Match decides when present, else If-Modified-Since.
            match = self.headers.get("If-None-Match")
            if match is not None:
                return feed.send_etag and match == feed.etag
            since = self.headers.get("If-Modified-Since")
            if since is not None and feed.send_last_modified:
                return int(feed.modified) <= parsedate_to_datetime(since).timestamp()
            return False

        def _answer(self, status: int, body: bytes) -> None:
            feed.statuses.append(status)
            self.send_response(status)
            if feed.send_etag:
                self.send_header("ETag", feed.etag)
            if feed.send_last_modified:
                self.send_header("Last-Modified", formatdate(feed.modified, usegmt=True))
            self.send_header("Content-Type", feed.content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def feed() -> Iterator[tuple[Feed, str]]:
    state = Feed()
    state.publish(ROUTES_ZIP.read_bytes())
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler_for(state))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state, f"http://127.0.0.1:{httpd.server_address[1]}/gtfs/routes.zip"
    httpd.shutdown()


def routes_text() -> bytes:
    with zipfile.ZipFile(ROUTES_ZIP) as archive:
        return archive.read("routes.txt")


def rezip(routes: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("routes.txt", routes)
    return out.getvalue()


def validators(runtime: Runtime) -> list[tuple[object, ...]]:
    return query(runtime, "SELECT url, etag, last_modified FROM source_validators")


@pytest.mark.parametrize("validator", ["etag", "last-modified", "both"])
def test_not_modified_is_a_cheap_no_op(runtime: Runtime, feed: tuple[Feed, str],
                                       validator: str) -> None:
    state, url = feed
    state.send_etag = validator in ("etag", "both")
    state.send_last_modified = validator in ("last-modified", "both")

    first = ingest(runtime, "metro-routes", url)
    project(runtime)
    assert first.snapshot_id is not None and first.rows_read == 61
    assert "if-none-match" not in state.requests[0]
    assert "if-modified-since" not in state.requests[0]
    last_modified = formatdate(state.modified, usegmt=True)
    assert validators(runtime) == [(url, state.etag if state.send_etag else None,
                                    last_modified if state.send_last_modified else None)]

    again = ingest(runtime, "metro-routes", url)
    assert again.not_modified and again.snapshot_id is None
    assert again.line() == ("metro-routes: source unchanged (HTTP 304 Not Modified), "
                            "no new snapshot")
    assert state.statuses == [200, 304]
    sent = state.requests[1]
    assert sent.get("if-none-match") == (state.etag if state.send_etag else None)
    assert sent.get("if-modified-since") == (last_modified if state.send_last_modified
                                             else None)
    assert query(runtime, "SELECT count(*) FROM snapshots")[0][0] == 1
    assert query(runtime, "SELECT count(*) FROM ingest_runs")[0][0] == 1


def test_a_new_version_is_fetched_and_published(runtime: Runtime,
                                                feed: tuple[Feed, str]) -> None:
    state, url = feed
    ingest(runtime, "metro-routes", url)
    project(runtime)
    old_etag = state.etag

    # Metro renames the Gold line.
    state.publish(rezip(routes_text().replace(b"18289,1,Gold,", b"18289,1,Gold Line,")))
    summary = ingest(runtime, "metro-routes", url)
    project(runtime)

    assert state.statuses == [200, 200]
    assert state.requests[1]["if-none-match"] == old_etag
    assert summary.snapshot_id == 2
    assert query(runtime, "SELECT route_long_name FROM ds_metro_routes "
                          "WHERE route_id = '18289'") == [("Gold Line",)]
    assert validators(runtime)[0][1] == state.etag

    assert ingest(runtime, "metro-routes", url).not_modified
    assert state.statuses == [200, 200, 304]


def test_a_failed_ingest_is_fetched_in_full_next_time(runtime: Runtime,
                                                      feed: tuple[Feed, str]) -> None:
    state, url = feed
    state.publish(rezip(b"agency_name,agency_url\nMetro,http://x\n"))
    with pytest.raises(SourceError, match="unknown column set"):
        ingest(runtime, "metro-routes", url)
    assert validators(runtime) == []

    # The server still has the same version, yet it is asked for it unconditionally,
    # since the ingest of it never succeeded.
    with pytest.raises(SourceError, match="unknown column set"):
        ingest(runtime, "metro-routes", url)
    assert "if-none-match" not in state.requests[1]
    assert state.statuses == [200, 200]


def test_validators_are_not_trusted_after_another_source(runtime: Runtime,
                                                         feed: tuple[Feed, str],
                                                         tmp_path: Path) -> None:
    state, url = feed
    ingest(runtime, "metro-routes", url)
    project(runtime)

    # A local release with one route fewer replaces what the URL gave.
    lines = routes_text().splitlines(keepends=True)
    local = tmp_path / "routes.zip"
    local.write_bytes(rezip(b"".join(lines[:-1])))
    ingest(runtime, "metro-routes", local)
    project(runtime)
    assert query(runtime, "SELECT count(*) FROM ds_metro_routes")[0][0] == 60

    # The URL has not changed, but a 304 would keep the local release: fetch it in full.
    summary = ingest(runtime, "metro-routes", url)
    project(runtime)
    assert "if-none-match" not in state.requests[1]
    assert state.statuses == [200, 200]
    assert summary.snapshot_id is not None
    assert query(runtime, "SELECT count(*) FROM ds_metro_routes")[0][0] == 61

    assert ingest(runtime, "metro-routes", url).not_modified


def test_a_server_without_validators_is_fetched_every_time(runtime: Runtime,
                                                           feed: tuple[Feed, str]) -> None:
    state, url = feed
    state.send_etag = state.send_last_modified = False
    ingest(runtime, "metro-routes", url)
    summary = ingest(runtime, "metro-routes", url)
    # Downloaded and hashed again, then found unchanged by its bytes.
    assert summary.snapshot_id is None and not summary.not_modified
    assert state.statuses == [200, 200]
    assert "if-none-match" not in state.requests[1]
    assert validators(runtime) == []


def test_a_zip_served_under_another_name_is_opened(runtime: Runtime,
                                                   feed: tuple[Feed, str]) -> None:
    state, url = feed
    state.content_type = "application/zip"
    download = url.replace("/gtfs/routes.zip", "/download?id=7")
    summary = ingest(runtime, "metro-routes", download)
    assert [f.partition for f in summary.files] == ["download.zip!routes.txt"]
    assert summary.rows_read == 61
    # The download and its inflated members are gone once the ingest is over.
    assert list(runtime.settings.state_dir.glob("stldata-fetch-*")) == []
