"""HTTP caching: validators follow committed snapshots; conditional GETs answer 304.

One database for the module, January 2017 of slmpd-crime ingested; tests run in file
order and the last ones commit new snapshots to see validators change.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path

import pytest
from flask import Response
from flask.testing import FlaskClient

from stldata.api.app import create_app
from stldata.api.caching import not_cached
from stldata.runtime import Runtime

from conftest import (
    CRIME_SAMPLES,
    _fresh_database,
    _runtime,
    ingest,
    make_settings,
    project,
    query,
)

CRIME = "/api/v1/datasets/slmpd-crime"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("caching") / "crime"
    path.mkdir()
    shutil.copy(CRIME_SAMPLES / "january2017.csv", path)
    return path


@pytest.fixture(scope="module")
def runtime(server_url: str, folder: Path) -> Iterator[Runtime]:
    for url in _fresh_database(server_url):
        runtime = _runtime(make_settings(url, folder.parent / "home"))
        ingest(runtime, "slmpd-crime", folder)
        project(runtime)
        yield runtime


@pytest.fixture(scope="module")
def api(runtime: Runtime) -> FlaskClient:
    app = create_app(runtime)
    app.config["TESTING"] = True
    streamed: list[int] = []
    app.extensions["test.streamed"] = streamed

    # A streamed response like the export endpoints': caching must not read its body.
    @app.get(CRIME + "/test-stream")
    def stream() -> Response:
        def chunks() -> Iterator[bytes]:
            for i in range(3):
                streamed.append(i)
                yield f"chunk {i}\n".encode()
        return Response(chunks(), mimetype="text/plain")

    @app.get(CRIME + "/test-uncached")
    @not_cached
    def uncached() -> str:
        return "job status"

    return app.test_client()


def _latest_commit(runtime: Runtime, dataset_id: str | None = None) -> datetime:
    row = query(runtime, "SELECT max(committed_at) FROM snapshots WHERE status = 'committed'"
                + (" AND dataset_id = %s" if dataset_id else ""),
                (dataset_id,) if dataset_id else ())
    value: datetime = row[0][0]
    return value


def test_validators_and_cache_control_on_current_data(api: FlaskClient, runtime: Runtime
                                                      ) -> None:
    for url in (CRIME, CRIME + "/records?district=5", CRIME + "/snapshots",
                "/api/v1/datasets"):
        response = api.get(url)
        assert response.status_code == 200, url
        assert response.headers["ETag"].startswith('W/"'), url
        assert response.headers["Cache-Control"] == "public, max-age=60", url
        assert "Accept" in response.headers["Vary"]
        committed = _latest_commit(runtime).replace(microsecond=0)
        assert parsedate_to_datetime(response.headers["Last-Modified"]) == committed, url
    # The query string is part of the tag.
    assert (api.get(CRIME + "/records?district=5").headers["ETag"]
            != api.get(CRIME + "/records?district=6").headers["ETag"])
    assert (api.get(CRIME + "/records?district=5").headers["ETag"]
            == api.get(CRIME + "/records?district=5").headers["ETag"])


def test_if_none_match_gives_304_without_a_body(api: FlaskClient) -> None:
    url = CRIME + "/records?district=5&limit=3"
    first = api.get(url)
    again = api.get(url, headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and again.get_data() == b""
    assert again.headers["ETag"] == first.headers["ETag"]
    assert again.headers["Cache-Control"] == first.headers["Cache-Control"]
    listed = api.get(url, headers={"If-None-Match": f'W/"other", {first.headers["ETag"]}'})
    assert listed.status_code == 304
    assert api.get(url, headers={"If-None-Match": "*"}).status_code == 304
    assert api.get(url, headers={"If-None-Match": 'W/"stale"'}).status_code == 200
    # Another representation (a different Accept) is not the same resource state.
    other = api.get(url, headers={"If-None-Match": first.headers["ETag"],
                                  "Accept": "text/csv"})
    assert other.status_code != 304


def test_if_modified_since_gives_304(api: FlaskClient, runtime: Runtime) -> None:
    first = api.get(CRIME)
    modified = first.headers["Last-Modified"]
    assert api.get(CRIME, headers={"If-Modified-Since": modified}).status_code == 304
    later = format_datetime(datetime.now(UTC), usegmt=True)
    assert api.get(CRIME, headers={"If-Modified-Since": later}).status_code == 304
    earlier = format_datetime((_latest_commit(runtime) - timedelta(seconds=5)).astimezone(
        UTC), usegmt=True)
    response = api.get(CRIME, headers={"If-Modified-Since": earlier})
    assert response.status_code == 200 and response.get_json()["id"] == "slmpd-crime"
    # If-None-Match wins when both are sent.
    both = api.get(CRIME, headers={"If-Modified-Since": modified,
                                   "If-None-Match": 'W/"stale"'})
    assert both.status_code == 200


def test_errors_and_other_methods_carry_no_validators(api: FlaskClient) -> None:
    missing = api.get("/api/v1/datasets/nope")
    assert missing.status_code == 404 and "ETag" not in missing.headers
    bad = api.get(CRIME + "/records?as_of=never")
    assert bad.status_code == 400 and "ETag" not in bad.headers
    assert "ETag" not in api.get("/health").headers
    uncached = api.get(CRIME + "/test-uncached")
    assert uncached.status_code == 200 and "ETag" not in uncached.headers
    assert "Cache-Control" not in uncached.headers


def test_streamed_responses_are_not_buffered(api: FlaskClient) -> None:
    streamed: list[int] = api.application.extensions["test.streamed"]
    response = api.get(CRIME + "/test-stream", buffered=False)
    assert response.status_code == 200 and response.is_streamed
    # Headers came before the body was generated (the test client pulls one chunk to
    # start the response; buffering would have pulled all three).
    assert response.headers["ETag"] and len(streamed) < 3
    assert response.get_data() == b"chunk 0\nchunk 1\nchunk 2\n"
    assert streamed == [0, 1, 2]
    again = api.get(CRIME + "/test-stream", headers={"If-None-Match": response.headers["ETag"]})
    assert again.status_code == 304 and streamed == [0, 1, 2]  # never generated


def test_snapshot_pinned_responses_are_immutable(api: FlaskClient, runtime: Runtime) -> None:
    sid = query(runtime, "SELECT max(id) FROM snapshots")[0][0]
    for url in (f"{CRIME}/snapshots/{sid}", f"{CRIME}/snapshots/{sid}/diff",
                f"{CRIME}/records?as_of={sid}&district=5"):
        response = api.get(url)
        assert response.status_code == 200, url
        assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert parsedate_to_datetime(response.headers["Last-Modified"]) == _latest_commit(
            runtime).replace(microsecond=0)
    # A view that does not read as_of answers with current data: not pinned by it.
    ignored = api.get(f"{CRIME}?as_of={sid}")
    assert ignored.headers["Cache-Control"] == "public, max-age=60"
    # A snapshot that does not exist is not pinned (and the answer is an error anyway).
    missing = api.get(f"{CRIME}/records?as_of={sid + 100}")
    assert missing.status_code == 400 and "Cache-Control" not in missing.headers
    changes = api.get(CRIME + "/changes?limit=1")
    assert changes.headers["Cache-Control"] == "no-cache"


def test_a_new_snapshot_invalidates_the_validators(api: FlaskClient, runtime: Runtime,
                                                   folder: Path) -> None:
    sid = query(runtime, "SELECT max(id) FROM snapshots")[0][0]
    urls = [CRIME, CRIME + "/records?limit=5", "/api/v1/datasets", CRIME + "/changes?limit=5"]
    before = {url: api.get(url) for url in urls}
    pinned_url = f"{CRIME}/snapshots/{sid}/diff"
    pinned = api.get(pinned_url).headers["ETag"]
    csb = api.get("/api/v1/datasets/csb-311").headers["ETag"]
    for url, response in before.items():
        assert api.get(url, headers={"If-None-Match": response.headers["ETag"]}
                       ).status_code == 304, url

    time.sleep(1.1)  # so that Last-Modified, in whole seconds, moves too
    shutil.copy(CRIME_SAMPLES / "may2017.csv", folder)
    ingest(runtime, "slmpd-crime", folder)
    project(runtime)

    for url, response in before.items():
        fresh = api.get(url, headers={"If-None-Match": response.headers["ETag"]})
        assert fresh.status_code == 200, url
        assert fresh.headers["ETag"] != response.headers["ETag"]
        stale_since = api.get(url, headers={
            "If-Modified-Since": response.headers["Last-Modified"]})
        assert stale_since.status_code == 200, url
        assert (parsedate_to_datetime(fresh.headers["Last-Modified"])
                > parsedate_to_datetime(response.headers["Last-Modified"]))
    # The new snapshot is on the feed that was 304 a moment ago.
    assert api.get(CRIME + "/changes?limit=5").get_json()["items"]
    # A snapshot-pinned response, and another dataset's, did not change.
    assert api.get(pinned_url, headers={"If-None-Match": pinned}).status_code == 304
    assert api.get("/api/v1/datasets/csb-311", headers={"If-None-Match": csb}
                   ).status_code == 304


def test_another_datasets_snapshot_changes_only_the_list(api: FlaskClient,
                                                         runtime: Runtime) -> None:
    crime = api.get(CRIME).headers["ETag"]
    listed = api.get("/api/v1/datasets").headers["ETag"]
    ingest(runtime, "slmpd-neighborhood-districts")
    project(runtime)
    assert api.get(CRIME, headers={"If-None-Match": crime}).status_code == 304
    assert api.get("/api/v1/datasets", headers={"If-None-Match": listed}).status_code == 200
