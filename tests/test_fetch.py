"""Sources fetched over HTTP, from a server on 127.0.0.1 that serves the sample files."""

from __future__ import annotations

import csv
from collections.abc import Iterator

import pytest

from stldata.ingest.errors import FetchError
from stldata.runtime import Runtime

from conftest import CSB_SAMPLES, ingest, project, query, serve_folder


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    yield from serve_folder(CSB_SAMPLES)


def test_ingest_from_a_url(runtime: Runtime, server: str) -> None:
    summary = ingest(runtime, "csb-311", f"{server}/csb_2009.csv")
    project(runtime)
    with (CSB_SAMPLES / "csb_2009.csv").open(newline="") as raw:
        ids = [row["REQUESTID"] for row in csv.DictReader(raw)]
    assert summary.rows_read == len(ids) == 802
    rows = query(runtime, "SELECT count(*), min(_partition), max(_partition) FROM ds_csb_311")
    assert rows[0] == (len(set(ids)), "csb_2009.csv", "csb_2009.csv")
    source = query(runtime, "SELECT source FROM snapshots")[0][0]
    assert source == f"{server}/csb_2009.csv"

    # The same bytes again: fetched, hashed, and found unchanged.
    assert ingest(runtime, "csb-311", f"{server}/csb_2009.csv").snapshot_id is None


def test_missing_url_is_a_clear_error(runtime: Runtime, server: str) -> None:
    with pytest.raises(FetchError, match="HTTP 404"):
        ingest(runtime, "csb-311", f"{server}/nope.csv")


def test_unreachable_host_is_a_clear_error(runtime: Runtime) -> None:
    # Port 9 on loopback: nothing listens, so the connection is refused at once.
    with pytest.raises(FetchError, match="fetch failed after 3 attempts"):
        ingest(runtime, "csb-311", "http://127.0.0.1:9/2019.csv")


@pytest.mark.parametrize(("url", "content_type", "name"), [
    ("http://127.0.0.1/export?id=7", "text/csv; charset=utf-8", "export.csv"),
    ("http://127.0.0.1/api/items", "application/json", "items.json"),
    ("http://127.0.0.1/layers/hoods", "application/geo+json", "hoods.geojson"),
    ("http://127.0.0.1/download", "application/zip", "download.zip"),
    ("http://127.0.0.1/crime.csv", "text/plain", "crime.csv"),
    ("http://127.0.0.1/report.PDF", "application/octet-stream", "report.PDF"),
    ("http://127.0.0.1/raw", "application/octet-stream", "raw"),
])
def test_downloads_without_a_suffix_are_named_by_content_type(url: str, content_type: str,
                                                              name: str) -> None:
    from email.message import Message

    from stldata.ingest.sources import _download_name

    headers = Message()
    headers["Content-Type"] = content_type
    assert _download_name(url, headers) == name
