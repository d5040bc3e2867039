"""The command API: start ingests over HTTP and follow their progress.

A separate service from the read API (port 5005 by default), with its own OpenAPI
document. Every operation needs an API key (``stldata keys create``); ingests run in
background threads and the request returns 202 with the run to poll.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import shutil
import unicodedata
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from apiflask import APIFlask, HTTPError
from flask import Request, Response, request
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.formparser import FormDataParser

import stldata
from stldata.api.docs_assets import serve_docs_assets
from stldata.api.limits import install_rate_limits, request_key
from stldata.api.problems import PROBLEM_JSON, ApiProblem, NotFound, problem_media_types
from stldata.api.uri_limit import refuse_long_uris, refuse_undecodable_parameters
from stldata.catalog import Dataset
from stldata.command import schemas
from stldata.command.jobs import JobStore, new_job_id
from stldata.command.keys import ApiKey, KeyStore, presented_token
from stldata.command.policy import Forbidden, SourcePolicy
from stldata.command.worker import IngestJob, IngestWorker
from stldata.runtime import Runtime

log = logging.getLogger(__name__)

REALM = 'Bearer realm="stldata command API"'
SECURITY: list[str | dict[str, list[Any]]] = ["BearerAuth", "ApiKeyAuth"]
JOB_ID_CHARS = frozenset("0123456789abcdef")
#: Longest file name most file systems store (NAME_MAX); a longer upload is refused.
MAX_NAME_BYTES = 255
#: A quoted ``filename="..."`` parameter of a part's Content-Disposition, as sent.
QUOTED_FILENAME = re.compile(r'(?:^|;)\s*filename\s*=\s*"((?:\\"|[^"])*)"', re.IGNORECASE)


class _LoudFormParser(FormDataParser):
    """Werkzeug's form parser, but a body it cannot read raises instead of reading as empty.

    Silently, a part header that is not UTF-8 (a file name in another encoding) leaves no
    parts at all, and the client would be told it sent none.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "silent": False})


class _CommandRequest(Request):
    form_data_parser_class = _LoudFormParser


class Unauthorized(ApiProblem):
    status = 401
    title = "Unauthorized"


class Unsupported(ApiProblem):
    status = 415
    title = "Unsupported Media Type"


def problem(status: int, title: str, detail: str, extra: dict[str, Any] | None = None,
            headers: dict[str, str] | None = None) -> Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail,
            "instance": request.path, **(extra or {})}
    return Response(orjson.dumps(body), status=status, mimetype=PROBLEM_JSON,
                    headers=headers or {})


def _install_error_handlers(app: APIFlask, max_bytes: int) -> None:
    @app.error_processor
    def http_error(error: HTTPError) -> Response:
        return problem(error.status_code, error.message or "Error", str(error.detail or
                                                                         error.message or ""))

    @app.errorhandler(ApiProblem)
    def api_problem(error: ApiProblem) -> Response:
        body = error.body(request.path)
        extra = {k: v for k, v in body.items()
                 if k not in ("type", "title", "status", "detail", "instance")}
        headers = {"WWW-Authenticate": REALM} if error.status == 401 else None
        return problem(error.status, error.title, error.detail, extra, headers)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(error: RequestEntityTooLarge) -> Response:
        return problem(413, "Content Too Large",
                       f"the request body is larger than STLDATA_COMMAND_MAX_UPLOAD_BYTES "
                       f"({max_bytes} bytes); fetch large sources from a URL or the source "
                       "folder instead", {"max_bytes": max_bytes})

    @app.errorhandler(HTTPException)
    def http_exception(error: HTTPException) -> Response:
        return problem(error.code or 500, error.name, error.description or error.name)

    @app.errorhandler(sa.exc.OperationalError)
    def database_down(error: sa.exc.OperationalError) -> Response:
        log.error("database error while serving %s", request.path, exc_info=error)
        return problem(503, "Service Unavailable", "the database is not reachable")


def _document_request_body(spec: dict[str, Any] | str) -> dict[str, Any] | str:
    """The ingest body is JSON or multipart, which APIFlask's input decorator cannot say."""
    if isinstance(spec, str):  # only for SPEC_FORMAT=yaml, which this app does not use
        return spec
    operation = spec["paths"]["/api/v1/datasets/{dataset_id}/ingest"]["post"]
    operation["requestBody"] = {
        "required": False,
        "description": "Leave out to ingest the catalog's source (its bundled samples). "
                       "JSON names another source; multipart uploads the files themselves.",
        "content": {
            "application/json": {"schema": {
                "type": "object", "additionalProperties": False,
                "properties": {"source": {
                    "type": "string", "nullable": True, "maxLength": 4096,
                    "description": "A path under STLDATA_COMMAND_SOURCE_DIR (relative to "
                                   "it) or an http(s) URL under a STLDATA_COMMAND_SOURCE_URLS "
                                   "prefix."}}}},
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["file"],
                "properties": {"file": {
                    "type": "array", "items": {"type": "string", "format": "binary"},
                    "description": "One or more source files; each name must match the "
                                   "dataset's file pattern."}}}},
        },
    }
    return spec


def create_command_app(runtime: Runtime, *, workers: IngestWorker | None = None) -> APIFlask:
    settings = runtime.settings
    app = APIFlask(__name__, title="STL Data API: commands", version=stldata.__version__,
                   spec_path="/openapi.json", docs_path="/docs")
    app.config.update(
        MAX_CONTENT_LENGTH=settings.command_max_upload_bytes,
        SECURITY_SCHEMES={
            "BearerAuth": {"type": "http", "scheme": "bearer",
                           "description": "An API key from `stldata keys create`."},
            "ApiKeyAuth": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        },
        INFO={"description": "Start ingests of STL Data API datasets and follow them. "
                             "Every operation needs an API key."},
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.request_class = _CommandRequest
    app.spec_processor(lambda spec: problem_media_types(_document_request_body(spec)))
    serve_docs_assets(app)  # Swagger UI from a pinned package, not a CDN
    refuse_long_uris(app)
    refuse_undecodable_parameters(app)
    _install_error_handlers(app, settings.command_max_upload_bytes)

    engine = runtime.database.engine(pool_size=4, max_overflow=4)
    # The rate limiter finds the key store here and shares it with the views.
    app.extensions["stldata.keys"] = keys = KeyStore(engine)
    jobs = JobStore(engine)
    policy = SourcePolicy(settings)
    jobs.fail_orphans()
    if workers is None:
        workers = IngestWorker(runtime, jobs, settings.command_workers)
    app.extensions["stldata.command.workers"] = workers
    install_rate_limits(app, runtime, settings.command_rate_limit)
    uploads = settings.state_dir / "uploads"

    def authorize(scope: str) -> ApiKey:
        if presented_token(request.headers) is None:
            raise Unauthorized("this operation needs an API key: send 'Authorization: "
                               "Bearer <key>' or 'X-API-Key: <key>'")
        key = request_key(keys)
        if key is None:
            raise Unauthorized("the API key is not valid")
        if key.revoked:
            raise Forbidden(f"the API key {key.name!r} was revoked")
        if not key.allows(scope):
            raise Forbidden(f"the API key {key.name!r} lacks the {scope!r} scope "
                            f"(it has {', '.join(key.scopes)})")
        keys.touch(key)
        return key

    def out(job: dict[str, Any]) -> dict[str, Any]:
        return {**job, "links": {
            "self": f"/api/v1/ingests/{job['id']}",
            "dataset": f"/api/v1/datasets/{job['dataset_id']}"}}

    @app.get("/health")
    @app.output(schemas.CommandHealth)
    @app.doc(summary="Service health", responses={503: "Database unreachable"})
    def health() -> Any:
        try:
            with engine.connect() as conn:
                queued = conn.execute(sa.text(
                    "SELECT count(*) FROM ingest_jobs WHERE state = 'queued'")).scalar_one()
        except sa.exc.OperationalError:
            return {"status": "unavailable", "database": "unreachable",
                    "workers": len(workers.threads), "queued": None}, 503
        return {"status": "ok", "database": "ok", "workers": len(workers.threads),
                "queued": int(queued)}

    @app.post("/api/v1/datasets/<dataset_id>/ingest")
    @app.output(schemas.IngestRunOut, status_code=202,
                description="Accepted; the Location header names the run to poll")
    @app.doc(summary="Start an ingest", tags=["Ingests"], security=SECURITY,
             description="Ingest the catalog's source, a source named in a JSON body, or "
                         "uploaded files. Runs in the background; poll the returned run.",
             responses={400: "Bad body or source", 401: "No or unknown API key",
                        403: "Key revoked or without the ingest scope, or source not "
                             "allowed", 404: "Unknown dataset",
                        413: "Body over STLDATA_COMMAND_MAX_UPLOAD_BYTES",
                        415: "Body neither JSON nor multipart",
                        429: "Rate limit exceeded"})
    def start_ingest(dataset_id: str) -> Any:
        key = authorize("ingest")
        dataset = runtime.catalog.datasets.get(dataset_id)
        if dataset is None:
            raise NotFound(f"no dataset {dataset_id!r} in the catalog")
        if (request.content_length or 0) > settings.command_max_upload_bytes:
            raise RequestEntityTooLarge()
        job_id = new_job_id()
        upload_dir: Path | None = None
        uploaded: list[tuple[str, FileStorage]] = []
        if request.mimetype == "multipart/form-data":
            uploaded = _uploaded_files(dataset)
            upload_dir = uploads / job_id
            source: str | None = str(upload_dir)
            label = "upload: " + ", ".join(name for name, _ in uploaded)
        else:
            source = _json_source()
            if source is not None:
                source = policy.check(source)
            label = source or f"catalog: bundled samples of {dataset.id}"
        try:
            if upload_dir is not None:
                upload_dir.mkdir(parents=True)
                for name, file in uploaded:
                    file.save(upload_dir / name)
            jobs.create(job_id, dataset.id, label, key.id)
        except BaseException:
            # A failed save or insert leaves no upload behind and no job to run.
            if upload_dir is not None:
                shutil.rmtree(upload_dir, ignore_errors=True)
            raise
        workers.submit(IngestJob(job_id, dataset, source, upload_dir))
        job = jobs.get(job_id)
        assert job is not None
        location = f"/api/v1/ingests/{job_id}"
        return out(job), 202, {"Location": location}

    @app.get("/api/v1/ingests/<run_id>")
    @app.output(schemas.IngestRunOut)
    @app.doc(summary="Progress of an ingest", tags=["Ingests"], security=SECURITY,
             responses={401: "No or unknown API key", 403: "Key revoked or without scope",
                        404: "Unknown run", 429: "Rate limit exceeded"})
    def get_ingest(run_id: str) -> Any:
        authorize("read")
        job = jobs.get(run_id) if len(run_id) == 32 and set(run_id) <= JOB_ID_CHARS else None
        if job is None:
            raise NotFound(f"no ingest run {run_id!r}")
        return out(job)

    return app


def _json_source() -> str | None:
    """The ``source`` of a JSON body; no body means the catalog's source."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        return None
    if not request.is_json:
        raise Unsupported(f"the body must be application/json or multipart/form-data, not "
                          f"{request.mimetype or 'untyped'}")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiProblem(f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiProblem("the body must be a JSON object like {\"source\": \"...\"}")
    unknown = sorted(set(body) - {"source"})
    if unknown:
        raise ApiProblem(f"unknown field {unknown[0]!r}; the body takes only 'source'",
                         param=unknown[0])
    source = body.get("source")
    if source is not None and not isinstance(source, str):
        raise ApiProblem("'source' must be a string", param="source")
    return source


def _uploaded_files(dataset: Dataset) -> list[tuple[str, FileStorage]]:
    try:
        files = request.files.getlist("file")
    except UnicodeDecodeError:
        raise ApiProblem("the uploaded file name is unreadable: a part's headers are not "
                         "UTF-8 text; send the file name in UTF-8", param="file") from None
    except ValueError as exc:
        raise ApiProblem(f"the multipart body cannot be read: {exc}", param="file") from None
    if not files:
        if "file" in request.form:
            # Werkzeug ends a header at a raw line break, which cuts a quoted file name
            # short and leaves a part without one: a plain field.
            raise ApiProblem("the 'file' part has no readable file name: a file name must be "
                             "quoted (filename=\"...\") and must not contain line breaks or "
                             "other control characters", param="file")
        raise ApiProblem("a multipart body needs one or more 'file' parts", param="file")
    named: list[tuple[str, FileStorage]] = []
    pattern = dataset.source.file_pattern
    for file in files:
        name = upload_name(sent_name(file))
        if not fnmatch.fnmatch(name.casefold(), pattern.casefold()):
            raise ApiProblem(f"uploaded file {name!r} does not match the dataset's file "
                             f"pattern {pattern!r}", param="file")
        if any(n == name for n, _ in named):
            raise ApiProblem(f"two uploaded files are named {name!r}", param="file")
        named.append((name, file))
    return named


def sent_name(file: FileStorage) -> str:
    """The file name of an uploaded part as the client wrote it.

    Werkzeug reads ``filename="..."`` as an HTTP quoted string, where a backslash escapes
    the next character, so ``C:\\Users\\me\\a.csv`` arrives as ``C:Usersmea.csv``. Browsers
    and most clients send backslashes as they are and escape only the quote (as ``%22`` or
    ``\\"``), so the name is read again from the part's own header with only those escapes
    undone; a backslash then still separates folders. An RFC 5987 ``filename*`` is
    percent-encoded, has no such escapes, and Werkzeug's reading of it stands.
    """
    disposition = file.headers.get("Content-Disposition", "")
    match = QUOTED_FILENAME.search(disposition)
    if match is None or "filename*" in disposition.casefold():
        return file.filename or ""
    return match.group(1).replace('\\"', '"').replace("%22", '"')


def upload_name(sent: str) -> str:
    """The partition of an uploaded file: the base name the client sent, as it is.

    A file's name is its partition (and, for workbooks, the ``workbook`` column), so it
    must be the very name the catalog source publishes the file under: re-uploading
    ``North East Crime Report 2015.xlsx`` then replaces that workbook's records instead of
    adding a renamed copy. Only the folders a client may send along (``a/b.csv``,
    ``C:\\Users\\b.csv``) are dropped, and the name is put in Unicode NFC form (macOS
    sends ``ö`` as ``o`` plus a combining mark, which would otherwise be another
    partition); a name that cannot be one file in the upload folder is refused rather than
    changed.
    """
    name = unicodedata.normalize("NFC", re.split(r"[/\\]", sent)[-1])
    if name in ("", ".", ".."):
        raise ApiProblem(f"uploaded file name {_shown(sent)} has no file name after its folders "
                         "are dropped; every uploaded file needs one", param="file")
    if any(unicodedata.category(c) == "Cc" for c in name):
        raise ApiProblem(f"uploaded file name {_shown(name)} contains control characters",
                         param="file")
    try:
        stored = os.fsencode(name)
    except UnicodeError:
        raise ApiProblem(f"uploaded file name {_shown(name)} cannot be stored as a file name on "
                         "this server", param="file") from None
    if len(stored) > MAX_NAME_BYTES:
        raise ApiProblem(f"uploaded file name is {len(stored)} bytes long; the limit is "
                         f"{MAX_NAME_BYTES} bytes", param="file")
    return name


def _shown(name: str) -> str:
    """A sent name quoted for an error message, cut short: it may be megabytes long."""
    return repr(name) if len(name) <= 100 else repr(name[:100]) + "..."
