"""The command API end to end: keys, ingests from the catalog, uploads, named sources and
URLs, progress, and every refusal (401, 403, 404, 413, 415, 400), against a real PostgreSQL,
with the records then served by the read API and checked against the raw files."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from stldata.api.app import create_app
from stldata.cli import main
from stldata.command.app import create_command_app
from stldata.command.keys import KeyStore
from stldata.runtime import Runtime
from stldata.settings import get_settings

from conftest import (
    CSB_SAMPLES,
    Spawned,
    free_port,
    project,
    query,
    serve_folder,
    stldata_env,
    wait_for,
)

CSB_2009 = CSB_SAMPLES / "csb_2009.csv"


@dataclass
class Command:
    runtime: Runtime
    client: Any
    keys: KeyStore
    token: str

    def ingest(self, dataset_id: str, token: str | None = None, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {token or self.token}"}
        return self.client.post(f"/api/v1/datasets/{dataset_id}/ingest", headers=headers,
                                **kwargs)

    def run(self, location: str, token: str | None = None) -> dict[str, Any]:
        response = self.client.get(location, headers={"X-API-Key": token or self.token})
        assert response.status_code == 200, response.get_json()
        body: dict[str, Any] = response.get_json()
        return body

    def wait(self, location: str, timeout: float = 120) -> dict[str, Any]:
        """Poll the run until it ends, as a client would."""
        return wait_for(f"the ingest at {location}", lambda: (
            run if (run := self.run(location))["state"] not in ("queued", "running")
            else None), timeout)


def csb_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as raw:
        return list(csv.DictReader(raw))


def open_command(runtime: Runtime, **settings: Any) -> Command:
    configured = Runtime(runtime.settings.model_copy(update=settings), runtime.catalog,
                         runtime.database)
    app = create_command_app(configured)
    app.config["TESTING"] = True
    keys = KeyStore(runtime.database.engine(pool_size=1))
    _, token = keys.create("test client", ["ingest"])
    return Command(configured, app.test_client(), keys, token)


@pytest.fixture
def sources(tmp_path: Path) -> Path:
    folder = tmp_path / "sources"
    (folder / "csb").mkdir(parents=True)
    shutil.copy(CSB_2009, folder / "csb" / "csb_2009.csv")
    return folder


@pytest.fixture
def command(runtime: Runtime, sources: Path) -> Command:
    return open_command(runtime, command_source_dir=sources)


def read_client(runtime: Runtime) -> Any:
    app = create_app(runtime)
    app.config["TESTING"] = True
    return app.test_client()


def test_ingest_of_the_catalog_source_is_served_by_the_read_api(command: Command) -> None:
    response = command.ingest("csb-311")
    assert response.status_code == 202
    location = response.headers["Location"]
    accepted = response.get_json()
    assert location == f"/api/v1/ingests/{accepted['id']}" == accepted["links"]["self"]
    assert accepted["state"] in ("queued", "running")
    assert accepted["source"] == "catalog: bundled samples of csb-311"

    run = command.wait(location)
    files = sorted(CSB_SAMPLES.glob("*.csv"))
    raw = {f.name: csb_rows(f) for f in files}
    assert run["state"] == "committed", run
    assert run["error"] is None
    assert run["rows_read"] == sum(len(r) for r in raw.values()) == 9621
    assert run["rows_so_far"] == run["rows_read"]
    assert run["bytes_read"] == run["bytes_total"] == sum(f.stat().st_size for f in files)
    assert {f["file"]: f["rows_read"] for f in run["files"]} == {
        n: len(r) for n, r in raw.items()}
    assert run["projection"] is None  # no projector has seen the snapshot yet

    project(command.runtime)
    assert command.run(location)["projection"] == "committed"
    reader = read_client(command.runtime)
    described = reader.get("/api/v1/datasets/csb-311").get_json()
    assert described["latest_snapshot"]["id"] == run["snapshot_id"]
    # A request id repeated within a file keeps its last row, and the one id that two
    # files share is one record.
    ids = {row["REQUESTID"] for rows in raw.values() for row in rows}
    assert described["row_count"] == len(ids) == 9472

    last_row = {row["REQUESTID"]: row for row in raw["csb_2009.csv"]}
    for request_id in ("9155", "9289"):
        record = reader.get(f"/api/v1/datasets/csb-311/records/{request_id}").get_json()
        raw_row = last_row[request_id]
        assert record["record"]["description"] == " ".join(raw_row["DESCRIPTION"].split())
        assert record["record"]["address"] == " ".join(raw_row["PROBADDRESS"].split())

    # The same bytes again: accepted, then found unchanged, and no snapshot is made.
    again = command.wait(command.ingest("csb-311").headers["Location"])
    assert again["state"] == "unchanged" and again["snapshot_id"] is None
    assert query(command.runtime, "SELECT count(*) FROM snapshots")[0][0] == 1


def test_uploaded_file_is_ingested_and_served(command: Command) -> None:
    rows = csb_rows(CSB_2009)
    response = command.ingest("csb-311", data={
        "file": (io.BytesIO(CSB_2009.read_bytes()), "csb_2009.csv")})
    assert response.status_code == 202, response.get_json()
    assert response.get_json()["source"] == "upload: csb_2009.csv"
    run = command.wait(response.headers["Location"])
    assert run["state"] == "committed", run
    assert run["rows_read"] == run["rows_so_far"] == len(rows) == 802
    assert [f["file"] for f in run["files"]] == ["csb_2009.csv"]

    project(command.runtime)
    reader = read_client(command.runtime)
    page = reader.get("/api/v1/datasets/csb-311/records?limit=1000").get_json()
    assert page["count"] == len({r["REQUESTID"] for r in rows}) == 752
    last = {r["REQUESTID"]: r for r in rows}
    for item in page["items"]:
        raw = last[str(item["request_id"])]
        # Text is stored with runs of blanks collapsed.
        assert item["description"] == (" ".join(raw["DESCRIPTION"].split()) or None)
        assert item["address"] == (" ".join(raw["PROBADDRESS"].split()) or None)
    # The uploaded copy is removed once the ingest has published it.
    uploads = command.runtime.settings.state_dir / "uploads"
    assert not uploads.exists() or not any(uploads.iterdir())


def test_upload_of_an_unusable_file_fails_and_keeps_the_read_model(command: Command) -> None:
    good = command.wait(command.ingest("csb-311", data={
        "file": (io.BytesIO(CSB_2009.read_bytes()), "csb_2009.csv")}).headers["Location"])
    project(command.runtime)
    header_only = CSB_2009.read_bytes().splitlines(keepends=True)[0]
    response = command.ingest("csb-311", data={
        "file": (io.BytesIO(header_only), "csb_2010.csv")})
    run = command.wait(response.headers["Location"])
    assert run["state"] == "failed"
    assert "csb_2010.csv" in run["error"] and "no data rows" in run["error"]
    assert run["snapshot_id"] is None
    project(command.runtime)
    reader = read_client(command.runtime)
    described = reader.get("/api/v1/datasets/csb-311").get_json()
    assert described["latest_snapshot"]["id"] == good["snapshot_id"]
    assert described["row_count"] == 752


def test_upload_checks_file_names(command: Command) -> None:
    body = CSB_2009.read_bytes()
    wrong = command.ingest("csb-311", data={"file": (io.BytesIO(body), "csb_2009.xlsx")})
    assert wrong.status_code == 400
    assert "does not match the dataset's file pattern '*.csv'" in wrong.get_json()["detail"]
    twice = command.ingest("csb-311", data={"file": [(io.BytesIO(body), "a.csv"),
                                                     (io.BytesIO(body), "a.csv")]})
    assert twice.status_code == 400 and "two uploaded files" in twice.get_json()["detail"]
    nothing = command.ingest("csb-311", data={"other": "x"}, content_type="multipart/form-data")
    assert nothing.status_code == 400 and nothing.get_json()["invalid_params"][0]["name"] == \
        "file"
    # A traversal in the file name is reduced to a plain name inside the upload folder.
    sneaky = command.ingest("csb-311", data={
        "file": (io.BytesIO(body), "../../../csb_2009.csv")})
    assert sneaky.status_code == 202
    assert sneaky.get_json()["source"] == "upload: csb_2009.csv"
    assert command.wait(sneaky.headers["Location"])["state"] == "committed"
    assert query(command.runtime, "SELECT count(*) FROM ingest_jobs")[0][0] == 1


def test_source_path_under_the_source_folder(command: Command, sources: Path) -> None:
    response = command.ingest("csb-311", json={"source": "csb/csb_2009.csv"})
    assert response.status_code == 202, response.get_json()
    run = command.wait(response.headers["Location"])
    assert run["state"] == "committed" and run["rows_read"] == 802
    assert run["source"] == str((sources / "csb" / "csb_2009.csv").resolve())
    # A folder works too, and absolute paths inside the folder are accepted.
    folder = command.wait(command.ingest(
        "csb-311", json={"source": str(sources / "csb")}).headers["Location"])
    assert folder["state"] == "unchanged"


@pytest.mark.parametrize("source", [
    "../../etc/passwd", "/etc/passwd", "csb/../../..", "..", "/", "link/passwd",
    "csb/../../sources-other/x.csv",
])
def test_source_paths_outside_the_folder_are_forbidden(command: Command, sources: Path,
                                                       source: str) -> None:
    (sources / "link").symlink_to("/etc")
    response = command.ingest("csb-311", json={"source": source})
    assert response.status_code == 403
    body = response.get_json()
    assert response.mimetype == "application/problem+json"
    assert "STLDATA_COMMAND_SOURCE_DIR" in body["detail"]
    assert body["invalid_params"][0]["name"] == "source"
    assert query(command.runtime, "SELECT count(*) FROM ingest_jobs")[0][0] == 0


@pytest.mark.parametrize(("body", "status", "words"), [
    ({"source": "csb/nope.csv"}, 400, "no such file or folder"),
    ({"source": ""}, 400, "'source' is empty"),
    ({"source": "a\x00b"}, 400, "control characters"),
    ({"source": "x" * 5000}, 400, "longer than 4096"),
    ({"source": "a" * 300}, 400, "not a usable path: File name too long"),
    ({"source": 5}, 400, "must be a string"),
    ({"source": "file:///etc/passwd"}, 400, "not a usable http(s) URL"),
    ({"source": "ftp://127.0.0.1/x.csv"}, 400, "not a usable http(s) URL"),
    ({"source": "http://127.0.0.1:9/x.csv"}, 403, "STLDATA_COMMAND_SOURCE_URLS is empty"),
    ({"sauce": "x"}, 400, "unknown field 'sauce'"),
    (["csb"], 400, "must be a JSON object"),
])
def test_bad_json_bodies_are_named(command: Command, body: Any, status: int,
                                   words: str) -> None:
    response = command.ingest("csb-311", json=body)
    assert response.status_code == status, response.get_json()
    assert words in response.get_json()["detail"]
    assert query(command.runtime, "SELECT count(*) FROM ingest_jobs")[0][0] == 0


def test_other_bodies(command: Command) -> None:
    broken = command.ingest("csb-311", data=b"{not json", content_type="application/json")
    assert broken.status_code == 400 and "not valid JSON" in broken.get_json()["detail"]
    text = command.ingest("csb-311", data=b"source=x", content_type="text/plain")
    assert text.status_code == 415
    assert "application/json or multipart/form-data" in text.get_json()["detail"]


@pytest.fixture(scope="module")
def file_server() -> Iterator[str]:
    yield from serve_folder(CSB_SAMPLES)


def test_url_sources_only_under_allowed_prefixes(runtime: Runtime, file_server: str) -> None:
    command = open_command(runtime, command_source_urls=f"{file_server}/data/, "
                                                        "https://example.invalid/csb")
    for refused in (f"{file_server}/csb_2009.csv",          # outside /data/
                    f"{file_server}/database/csb_2009.csv",  # /data is not /database
                    f"{file_server}:1/data/x.csv",            # not a port: 400
                    "http://localhost:1/data/x.csv",          # another host
                    f"{file_server.replace('http:', 'https:')}/data/x.csv",
                    f"http://user@{file_server[7:]}/data/x.csv"):
        response = command.ingest("csb-311", json={"source": refused})
        assert response.status_code in (400, 403), (refused, response.get_json())
    # Allowed: under the prefix. The server has no /data/, so the fetch fails, named.
    response = command.ingest("csb-311", json={"source": f"{file_server}/data/csb_2009.csv"})
    assert response.status_code == 202
    run = command.wait(response.headers["Location"])
    assert run["state"] == "failed" and "HTTP 404" in run["error"]

    served = open_command(runtime, command_source_urls=file_server)
    response = served.ingest("csb-311", json={"source": f"{file_server}/csb_2009.csv"})
    run = served.wait(response.headers["Location"])
    assert run["state"] == "committed" and run["rows_read"] == 802
    assert run["source"] == f"{file_server}/csb_2009.csv"


def test_api_keys_401_and_403(command: Command) -> None:
    client = command.client
    url = "/api/v1/datasets/csb-311/ingest"
    for headers in ({}, {"Authorization": "Bearer nope"}, {"X-API-Key": "stl_" + "0" * 60},
                    {"Authorization": "Basic dXNlcjpwYXNz"},
                    {"Authorization": f"Bearer {command.token[:-1]}x"}):
        response = client.post(url, headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["WWW-Authenticate"].startswith("Bearer realm=")
        assert response.mimetype == "application/problem+json"
        assert "API key" in response.get_json()["detail"]

    reader_key, reader = command.keys.create("dashboard", ["read"])
    refused = client.post(url, headers={"X-API-Key": reader})
    assert refused.status_code == 403
    assert "lacks the 'ingest' scope" in refused.get_json()["detail"]

    accepted = command.ingest("csb-311", data={
        "file": (io.BytesIO(CSB_2009.read_bytes()), "csb_2009.csv")})
    location = accepted.headers["Location"]
    assert command.run(location, token=reader)["id"] == accepted.get_json()["id"]
    command.wait(location)

    command.keys.revoke(reader_key.id)
    revoked = client.get(location, headers={"Authorization": f"bearer {reader}"})
    assert revoked.status_code == 403 and "was revoked" in revoked.get_json()["detail"]
    assert client.get(location).status_code == 401
    # Nothing was started by the refused requests.
    assert query(command.runtime, "SELECT count(*) FROM ingest_jobs")[0][0] == 1
    used = {k.id: k.last_used_at for k in command.keys.list()}
    assert used[reader_key.id] is not None


def test_unknown_dataset_and_run_are_404(command: Command) -> None:
    missing = command.ingest("no-such-dataset")
    assert missing.status_code == 404 and "no-such-dataset" in missing.get_json()["detail"]
    headers = {"X-API-Key": command.token}
    for run_id in ("0" * 32, "nope", "../../etc/passwd", "' OR 1=1 --"):
        response = command.client.get(f"/api/v1/ingests/{run_id}", headers=headers)
        assert response.status_code == 404, run_id
        assert response.mimetype == "application/problem+json"


def test_body_over_the_limit_is_413(runtime: Runtime) -> None:
    command = open_command(runtime, command_max_upload_bytes=10_000)
    body = CSB_2009.read_bytes()
    assert len(body) > 10_000
    response = command.ingest("csb-311", data={"file": (io.BytesIO(body), "csb_2009.csv")})
    assert response.status_code == 413
    problem = response.get_json()
    assert response.mimetype == "application/problem+json"
    assert "STLDATA_COMMAND_MAX_UPLOAD_BYTES (10000 bytes)" in problem["detail"]
    assert problem["max_bytes"] == 10_000
    # Under the limit is fine.
    small = b"".join(body.splitlines(keepends=True)[:20])
    ok = command.ingest("csb-311", data={"file": (io.BytesIO(small), "csb_2009.csv")})
    assert ok.status_code == 202
    assert command.wait(ok.headers["Location"])["rows_read"] == 19
    assert query(runtime, "SELECT count(*) FROM ingest_jobs")[0][0] == 1


def test_keys_command_line(runtime: Runtime, tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STLDATA_DATABASE_URL", runtime.database.url)
    monkeypatch.setenv("STLDATA_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        created = runner.invoke(main, ["keys", "create", "--name", "loader", "--scope",
                                       "ingest", "--scope", "read"])
        assert created.exit_code == 0, created.output
        token = created.stdout.strip()
        assert token.startswith("stl_") and len(token) == 4 + 12 + 1 + 43
        stored = query(runtime, "SELECT name, token_sha256, scopes FROM api_keys")
        assert stored == [("loader", hashlib.sha256(token.encode()).hexdigest(),
                           ["ingest", "read"])]

        listed = runner.invoke(main, ["keys", "list"])
        assert listed.exit_code == 0
        assert "loader" in listed.output and "active" in listed.output
        assert token not in listed.output and token[17:] not in listed.output

        assert runner.invoke(main, ["keys", "revoke", "1"]).exit_code == 0
        assert "revoked 20" in runner.invoke(main, ["keys", "list"]).output
        missing = runner.invoke(main, ["keys", "revoke", "99"])
        assert missing.exit_code == 1 and "no API key with id 99" in missing.output
        bad = runner.invoke(main, ["keys", "create", "--name", "x", "--scope", "admin"])
        assert bad.exit_code == 2 and "admin" in bad.output
    finally:
        get_settings.cache_clear()


def _http(method: str, url: str, token: str | None = None, data: bytes | None = None,
          content_type: str | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method, data=data)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()



def test_up_serves_both_apis(runtime: Runtime, tmp_path: Path) -> None:
    """``stldata up`` runs the command API beside the read API; an ingest over HTTP is
    projected by its projector and served by its read API."""
    keys = KeyStore(runtime.database.engine(pool_size=1))
    _, token = keys.create("up test", ["ingest"])
    read_port, command_port = free_port(), free_port()
    env = stldata_env(runtime, tmp_path / "home", STLDATA_COMMAND_MAX_UPLOAD_BYTES="400000")
    up = Spawned(["up", "--no-ingest", "--port", str(read_port), "--command-port",
                  str(command_port)], env, tmp_path / "up.log")
    try:
        command = f"http://127.0.0.1:{command_port}"
        read = f"http://127.0.0.1:{read_port}"
        wait_for("the read API", lambda: "Ctrl-C stops" in up.text(), 60, up)
        status, _, body = _http("GET", f"{command}/health")
        assert status == 200, body
        spec = _http("GET", f"{command}/openapi.json")[2].decode()
        assert "/api/v1/ingests/{run_id}" in spec

        boundary = "stldata-test-boundary"
        upload = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                  f"filename=\"csb_2009.csv\"\r\nContent-Type: text/csv\r\n\r\n").encode() \
            + CSB_2009.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        status, headers, body = _http("POST", f"{command}/api/v1/datasets/csb-311/ingest",
                                      token, upload, f"multipart/form-data; boundary={boundary}")
        assert status == 202, body
        location = command + headers["Location"]

        def done() -> dict[str, Any] | None:
            run: dict[str, Any] = json.loads(_http("GET", location, token)[2])
            return run if run["projection"] == "committed" else None
        run = wait_for("the uploaded snapshot in the read model", done, 120, up)
        assert run["state"] == "committed" and run["rows_read"] == 802
        status, _, body = _http("GET", f"{read}/api/v1/datasets/csb-311")
        assert json.loads(body)["row_count"] == 752

        # Over the limit on a real socket: a 413 problem, not a dropped connection.
        big = upload.replace(CSB_2009.read_bytes(), CSB_2009.read_bytes() * 2)
        status, headers, body = _http("POST", f"{command}/api/v1/datasets/csb-311/ingest",
                                      token, big, f"multipart/form-data; boundary={boundary}")
        assert status == 413 and b"STLDATA_COMMAND_MAX_UPLOAD_BYTES" in body
        assert status == 413 and "problem+json" in headers["Content-Type"]
    finally:
        up.shut_down()


def test_runs_of_a_stopped_service_are_failed_on_restart(runtime: Runtime) -> None:
    exited = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                            capture_output=True, text=True, check=True)
    dead = f"{socket.gethostname()}:{int(exited.stdout)}"
    alive = f"{socket.gethostname()}:{os.getpid()}"
    with runtime.database.transaction() as conn:
        for job_id, state, worker in (("a" * 32, "running", dead), ("b" * 32, "queued", dead),
                                      ("c" * 32, "running", alive)):
            conn.execute("INSERT INTO ingest_jobs (id, dataset_id, state, source, worker) "
                         "VALUES (%s, 'csb-311', %s, 'test', %s)", (job_id, state, worker))
    command = open_command(runtime)
    states = {r[0][0]: (r[1], r[2]) for r in query(
        runtime, "SELECT id, state, error FROM ingest_jobs ORDER BY id")}
    assert states["a"][0] == states["b"][0] == "failed"
    assert "stopped before it finished" in states["a"][1]
    assert states["c"] == ("running", None)  # this very process is not dead
    assert command.run("/api/v1/ingests/" + "a" * 32)["state"] == "failed"
