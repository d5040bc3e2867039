"""The read API: datasets, records, health, the landing page and the generated spec.

The OpenAPI document at ``/openapi.json`` and the Swagger UI at ``/docs`` come from the
schemas in :mod:`stldata.api.schemas`, the same ones that validate requests.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from apiflask import APIFlask, HTTPError
from flask import Response, g, has_request_context, render_template, request
from werkzeug.exceptions import HTTPException

import stldata
from stldata.api import schemas
from stldata.api.aggregate import register as register_aggregate
from stldata.api.caching import register_caching
from stldata.api.docs_assets import serve_docs_assets
from stldata.api.history import register_history
from stldata.api.limits import install_rate_limits
from stldata.api.problems import PROBLEM_JSON, ApiProblem, NotFound, problem_media_types
from stldata.api.quality import register_quality
from stldata.api.query import dataset_table
from stldata.api.records import register as register_records
from stldata.api.soql_routes import register as register_soql
from stldata.api.uri_limit import refuse_long_uris, refuse_undecodable_parameters
from stldata.catalog import Dataset
from stldata.errors import StlDataError
from stldata.log.factory import backend_name
from stldata.runtime import Runtime
from stldata.store.column_types import with_types
from stldata.store.snapshot_signal import SnapshotStateCache

log = logging.getLogger(__name__)

SNAPSHOT_FIELDS = ("id", "status", "source", "fetched_at", "committed_at", "sha256",
                   "rows_read", "record_count", "quarantined", "added", "changed", "deleted",
                   "unchanged", "row_count")


def _problem(status: int, title: str, detail: str, extra: dict[str, Any] | None = None
             ) -> Response:
    import orjson

    body = {"type": "about:blank", "title": title, "status": status, "detail": detail,
            "instance": request.path, **(extra or {})}
    return Response(orjson.dumps(body), status=status, mimetype=PROBLEM_JSON)


def _jsonable(value: Any, tz: ZoneInfo) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(tz).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


class ReadModel:
    """Queries over the read model for one app; one engine, tables built from the catalog."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        # Connections unused for a second are checked before use; under load none are.
        self.engine = runtime.database.engine(pool_size=8, max_overflow=8, ping_after_idle=1.0)
        # Request reads run in autocommit: a read needs no transaction, and BEGIN and
        # ROLLBACK would be two more round trips per request. (Exports' server-side
        # cursors and SoQL's statement timeout use self.engine, in a transaction.)
        self._reader = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        # The snapshot state behind each response's validators (stldata.api.caching).
        self.snapshot_states: SnapshotStateCache[Any] = SnapshotStateCache(
            runtime.database.url, seconds=runtime.settings.validator_cache_seconds)
        self.metadata = sa.MetaData()
        self._lag_lock = threading.Lock()
        self._consumers: Any = None
        #: Until when, and why, the log could not be read: probes meanwhile answer at once.
        self._lag_failure: tuple[float, str] | None = None

    @contextmanager
    def connect(self) -> Iterator[sa.Connection]:
        """The current request's connection: checked out of the pool (and its liveness
        pinged) once per request, however many steps read through it, and returned when
        the request ends (see :func:`create_app`). Outside a request, one of its own."""
        if not has_request_context():
            with self._reader.connect() as own:
                yield own
            return
        shared: sa.Connection | None = g.get("stldata_connection")
        if shared is None or shared.closed:
            shared = g.stldata_connection = self._reader.connect()
        try:
            yield shared
        except Exception:
            # A failed statement aborts the transaction; later steps start a new one.
            if not shared.invalidated:
                shared.rollback()
            raise

    def release(self) -> None:
        conn: sa.Connection | None = g.pop("stldata_connection", None)
        if conn is not None:
            conn.close()

    def dataset(self, dataset_id: str) -> Dataset:
        dataset = self.runtime.catalog.datasets.get(dataset_id)
        if dataset is None:
            raise NotFound(f"no dataset {dataset_id!r}; see /api/v1/datasets")
        if not any(c.type == "auto" for c in dataset.columns):
            return dataset
        with self.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT column_name, type FROM column_types WHERE dataset_id = :d"),
                {"d": dataset.id}).all()
        return with_types(dataset, {str(n): str(t) for n, t in rows})

    def latest_snapshots(self) -> dict[str, dict[str, Any]]:
        with self.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT DISTINCT ON (dataset_id) dataset_id, " + ", ".join(SNAPSHOT_FIELDS)
                + " FROM snapshots WHERE status = 'committed' "
                "ORDER BY dataset_id, id DESC")).mappings().all()
        out = {}
        for row in rows:
            snap = {k: (v.isoformat() if isinstance(v, datetime) else v)
                    for k, v in row.items() if k != "dataset_id"}
            out[str(row["dataset_id"])] = snap
        return out

    def describe(self, dataset: Dataset, snapshot: dict[str, Any] | None) -> dict[str, Any]:
        types = dataset.column_types()
        described = {c.name: c.description for c in dataset.columns}
        base = f"/api/v1/datasets/{dataset.id}"
        return {
            **dataset.describe(),
            "columns": [{"name": n, "type": t, "description": described.get(n, "")}
                        for n, t in types.items()],
            "row_count": snapshot.get("row_count") if snapshot else None,
            "latest_snapshot": snapshot,
            "links": {"self": base, "records": base + "/records"},
        }

    def lag(self) -> int:
        """Messages on the log not yet applied; raises :class:`LogUnavailable` saying why
        when the log cannot be read (a broker down takes its client's whole timeout, so a
        failure is remembered for :data:`LAG_RETRY_SECONDS`, and a probe that finds
        another one reading the lag does not queue behind it)."""
        from stldata.projection.projector import GROUP_ID, log_lag

        if not self._lag_lock.acquire(timeout=LAG_WAIT_SECONDS):
            raise LogUnavailable("another request is still reading the log's lag")
        try:
            if self._lag_failure and time.monotonic() < self._lag_failure[0]:
                raise LogUnavailable(self._lag_failure[1])
            if self._consumers is None:
                self._consumers = (self.runtime.consumer(GROUP_ID),
                                   self.runtime.consumer(GROUP_ID + "-control"))
            data, control = self._consumers
            try:
                with self.runtime.database.connect() as conn:
                    lag = log_lag(conn, data, control,
                                  [d.topic for d in self.runtime.catalog])
            except StlDataError as exc:
                self._lag_failure = (time.monotonic() + LAG_RETRY_SECONDS, exc.message)
                raise LogUnavailable(exc.message) from exc
            self._lag_failure = None
            return lag
        finally:
            self._lag_lock.release()


#: How long /health waits for another request that is reading the log's lag.
LAG_WAIT_SECONDS = 1.0
#: How long a failure to read the log's lag stands before the log is asked again.
LAG_RETRY_SECONDS = 15.0


class LogUnavailable(Exception):
    """The log's lag cannot be read now; the message says why."""


# APIFlask registers a response schema that is also nested in another one twice, under
# two names; the spec stays valid (both resolve), so the warning is only noise.
warnings.filterwarnings("ignore", message=r".*DatasetOut'> has already been added to the spec")


def create_app(runtime: Runtime) -> APIFlask:
    app = APIFlask(
        __name__, title="STL Data API", version=stldata.__version__,
        spec_path="/openapi.json", docs_path="/docs",
    )
    app.config.update(
        VALIDATION_ERROR_STATUS_CODE=400,
        VALIDATION_ERROR_DESCRIPTION="Bad parameter",
        INFO={"description": "Public data about St. Louis, cleaned once and served "
                             "through one documented API."},
    )
    # Records keep the column order of the catalog, and source rows that of the file.
    app.json.sort_keys = False  # type: ignore[attr-defined]
    model = ReadModel(runtime)
    app.extensions["stldata.read_model"] = model
    serve_docs_assets(app)  # Swagger UI from a pinned package, not a CDN
    refuse_long_uris(app)  # 414 as problem+json
    refuse_undecodable_parameters(app)  # 400 naming a parameter that is not UTF-8
    install_rate_limits(app, runtime)  # per client; /health exempt
    app.spec_processor(problem_media_types)
    app.teardown_request(lambda _error: model.release())

    @app.error_processor
    def http_error(error: HTTPError) -> Response:
        extra: dict[str, Any] = {}
        detail = error.message
        if error.status_code == 400 and isinstance(error.detail, dict):
            # Schema validation: name each offending parameter.
            params = [{"name": name, "reason": "; ".join(map(str, reasons))}
                      for location in error.detail.values() if isinstance(location, dict)
                      for name, reasons in location.items()]
            if params:
                extra["invalid_params"] = params
                detail = "; ".join(f"parameter {p['name']!r}: {p['reason']}" for p in params)
        return _problem(error.status_code, error.message or "Error", detail or "", extra)

    @app.errorhandler(ApiProblem)
    def api_problem(error: ApiProblem) -> Response:
        body = error.body(request.path)
        body.pop("instance", None)
        body.pop("type", None)
        body.pop("title", None)
        body.pop("status", None)
        body.pop("detail", None)
        return _problem(error.status, error.title, error.detail, body)

    @app.errorhandler(HTTPException)
    def http_exception(error: HTTPException) -> Response:
        return _problem(error.code or 500, error.name, error.description or error.name)

    @app.errorhandler(sa.exc.OperationalError)
    def database_down(error: sa.exc.OperationalError) -> Response:
        log.error("database error while serving %s", request.path, exc_info=error)
        return _problem(503, "Service Unavailable", "the database is not reachable")

    @app.get("/")
    @app.doc(hide=True)
    def landing() -> str:
        snapshots = model.latest_snapshots()
        datasets = [model.describe(model.dataset(d.id), snapshots.get(d.id))
                    for d in runtime.catalog]
        return render_template("index.html", datasets=datasets)

    @app.get("/health")
    @app.output(schemas.Health)
    @app.doc(summary="Service health", description="Database reachability and log lag.",
             responses={503: "Database unreachable, or the projector thread of "
                             "`stldata up` stopped (status degraded)"})
    def health() -> Any:
        try:
            with model.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except sa.exc.OperationalError:
            return {"status": "unavailable", "database": "unreachable",
                    "log_backend": backend_name(runtime.settings), "log_lag": None}, 503
        lag: int | None = None
        try:
            lag, log_state = model.lag(), "ok"
        except LogUnavailable as exc:
            # The read side still serves what is stored: ok, with the log's state said.
            log_state = str(exc)
        except Exception:
            log.warning("could not compute log lag", exc_info=True)
            log_state = "the log's lag could not be read (see the server log)"
        body = {"status": "ok", "database": "ok", "log": log_state,
                "log_backend": backend_name(runtime.settings), "log_lag": lag}
        # Set by `stldata up`, which runs the projector in a thread of this process: when
        # that thread died, new snapshots are no longer applied, so the service is not ok.
        watch = app.extensions.get("stldata.projector")
        failure = getattr(watch, "failure", None)
        if failure:
            return {**body, "status": "degraded", "projector": failure}, 503
        return body

    @app.get("/api/v1/datasets")
    @app.output(schemas.DatasetList)
    @app.doc(summary="List datasets", tags=["Datasets"])
    def list_datasets() -> Any:
        snapshots = model.latest_snapshots()
        return {"datasets": [model.describe(model.dataset(d.id), snapshots.get(d.id))
                             for d in runtime.catalog]}

    @app.get("/api/v1/datasets/<dataset_id>")
    @app.output(schemas.DatasetOut)
    @app.doc(summary="Dataset metadata", tags=["Datasets"], responses={404: "Unknown dataset"},
             description="Columns with types, row count, latest snapshot and source.")
    def get_dataset(dataset_id: str) -> Any:
        dataset = model.dataset(dataset_id)
        return model.describe(dataset, model.latest_snapshots().get(dataset.id))

    register_records(app, model)  # records (filters, q, geography, formats), exports, search

    @app.get("/api/v1/datasets/<dataset_id>/records/<path:key>")
    @app.output(schemas.RecordOut)
    @app.doc(summary="One record by key", tags=["Records"],
             responses={404: "Unknown dataset or record"})
    def get_record(dataset_id: str, key: str) -> Any:
        dataset = model.dataset(dataset_id)
        table = dataset_table(dataset, model.metadata)
        if "\x00" in key:
            raise NotFound(f"dataset {dataset.id!r} has no record with that key")
        with model.connect() as conn:
            row = conn.execute(sa.select(table).where(table.c._key == key)).mappings().first()
        if row is None:
            raise NotFound(f"dataset {dataset.id!r} has no record with key {key!r}")
        tz = ZoneInfo(dataset.timezone)
        record = {k: _jsonable(v, tz) for k, v in row.items() if k != "_hash"}
        return {"dataset": dataset.id, "record": record}

    register_history(app, model)
    register_quality(app, model)  # quality report and quarantine of a snapshot
    register_caching(app, model)
    register_aggregate(app, model)  # grouped metrics, declared aggregates
    register_soql(app, model)  # Socrata-compatible /resource/{id}.json|.csv|.geojson
    return app
