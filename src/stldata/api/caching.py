"""HTTP caching of the read API: ETag, Last-Modified, conditional GETs, Cache-Control.

The read model changes only when a snapshot is committed, so a response's validators are
derived from the committed snapshots it depends on (one dataset's under
``/api/v1/datasets/<id>``, every dataset's for the list), the path and query string, and
the ``Accept`` header, never from the body: streamed exports are not buffered to hash them.
They are computed before the view runs, so a conditional request that matches costs no
rendering, and a snapshot committed while a response is being rendered can only make that
response look older than it is (refetched once), never newer. The snapshot state they
come from is kept by each process until PostgreSQL notifies a change
(:mod:`stldata.store.snapshot_signal`), so most requests do not read it at all.

Responses pinned to a committed snapshot (``as_of=<snapshot id>`` on records, exports and
aggregates, ``/snapshots/<sid>`` and its diff) never change: their validators ignore later
snapshots and they may be cached for a year. The change feed is revalidated on every poll
(``no-cache``): an unchanged feed costs a 304.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from apiflask import APIFlask
from flask import Response, g, request

from stldata.api.geo import NEIGHBORHOODS

if TYPE_CHECKING:
    from stldata.api.app import ReadModel
    from stldata.catalog import Dataset

CURRENT = "public, max-age=60"
PINNED = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"

_DATASETS = re.compile(r"^/api/v1/datasets/?$")
_DATASET = re.compile(r"^/api/v1/datasets/(?P<id>[^/]+)(?P<rest>/.*)?$")
_PINNED_PATH = re.compile(r"^/snapshots/(?P<sid>[0-9]{1,18})(/diff)?/?$")
_AS_OF_VIEWS = re.compile(r"^/(records|aggregate|export\.\w+)/?$")
_DIGITS = re.compile(r"^\s*[0-9]+\s*$")  # not \d, which matches "１"
_EXEMPT = "_stldata_not_cached"

F = TypeVar("F", bound=Callable[..., Any])


def not_cached(view: F) -> F:
    """Mark a view whose answer does not follow snapshots (job status, say): no validators."""
    setattr(view, _EXEMPT, True)
    return view


@dataclass(frozen=True)
class Validators:
    etag: str
    last_modified: datetime | None
    cache_control: str
    #: The dataset's latest committed snapshot when the answer follows it (not pinned):
    #: read here once, so the view need not ask again.
    dataset_id: str | None = None
    latest_snapshot: int | None = None
    #: The planner's row count of the dataset's table (``pg_class.reltuples``; -1 never
    #: analyzed), read in the same statement: a page's total needs it, and asking again
    #: would be one more round trip per request. None when not read.
    table_rows: float | None = None


#: What a response's validators derive from the snapshot state: see :func:`_state`.
_State = tuple[str, datetime | None, int | None, float | None]


def _state(conn: sa.Connection, dataset: Dataset | None) -> _State:
    """What the read model's answers depend on: committed snapshots (and pinned types);
    with the time of the last commit, the latest snapshot id and, for a dataset, the
    planner's row count of its table (None for the list, or a table not created yet)."""
    scope = "" if dataset is None else "AND dataset_id = :ds"
    rows = "NULL" if dataset is None else (
        "(SELECT reltuples FROM pg_class WHERE oid = to_regclass(:table))")
    row = conn.execute(sa.text(
        "SELECT count(*), max(id), max(committed_at), "
        f"(SELECT count(*) FROM column_types WHERE true {scope}), "  # noqa: S608 - fixed text
        f"{rows} FROM snapshots WHERE status = 'committed' {scope}"),
        {"ds": None if dataset is None else dataset.id,
         "table": None if dataset is None else dataset.table_name}).one()
    return (f"{row[0]}:{row[1]}:{row[3]}", row[2], None if row[1] is None else int(row[1]),
            None if row[4] is None else float(row[4]))


def _pinned_ids(rest: str) -> list[int]:
    """The snapshots a response of the dataset is pinned to, if any: ``as_of=<snapshot
    id>``, ``/snapshots/<sid>`` and its diff (``against`` too)."""
    path = _PINNED_PATH.match(rest)
    ids = [int(path["sid"])] if path else []
    # Only views that read ``as_of`` are pinned by it; another would ignore it and answer
    # with current data, which must not be cached as immutable.
    params = ("as_of",) if _AS_OF_VIEWS.match(rest) else ("against",) if path else ()
    for param in params:
        value = request.args.get(param, "")
        if _DIGITS.match(value) and len(value.strip()) <= 18:
            ids.append(int(value))
    return ids


def _pinned_state(conn: sa.Connection, dataset_id: str, ids: list[int]
                  ) -> tuple[str, datetime | None] | None:
    """For a response pinned to committed snapshots of the dataset, their state; else None.

    Their commit times go into the tag, so a database rebuilt with other snapshots under
    the same ids does not answer 304 to a client of the old one.
    """
    row = conn.execute(sa.text(
        "SELECT count(*), max(committed_at), string_agg(committed_at::text, ',' ORDER BY id) "
        "FROM snapshots WHERE id = ANY(:ids) AND dataset_id = :ds AND status = 'committed'"),
        {"ids": sorted(set(ids)), "ds": dataset_id}).one()
    if row[0] != len(set(ids)):
        return None  # not (yet) a committed snapshot of the dataset: the view says so
    return f"pinned:{sorted(set(ids))}:{row[2]}", row[1]


#: repr() of each catalog entry, by the entry object: a request would otherwise spend
#: longer writing out its dataset's entry than reading the snapshot state.
_ENTRY_TEXTS: dict[int, tuple[Dataset, str]] = {}


def _entry_text(dataset: Dataset) -> str:
    known = _ENTRY_TEXTS.get(id(dataset))
    if known is not None and known[0] is dataset:
        return known[1]
    text = repr(dataset)
    if len(_ENTRY_TEXTS) > 1024:  # entries of catalogs read again since: let them go
        _ENTRY_TEXTS.clear()
    _ENTRY_TEXTS[id(dataset)] = (dataset, text)  # holding the entry keeps its id unique
    return text


def validators_for(model: ReadModel) -> Validators | None:
    """Validators of the current GET request, or None when it is not cached."""
    if request.method not in ("GET", "HEAD"):
        return None
    view = model_view()
    if view is not None and getattr(view, _EXEMPT, False):
        return None
    dataset_id: str | None = None
    rest = ""
    # The catalog entries go into the tag too: an edited title or column is a new state.
    catalog = model.runtime.catalog.datasets
    if _DATASETS.match(request.path):
        scope = "all:" + "".join(_entry_text(d) for _, d in sorted(catalog.items()))
    else:
        match = _DATASET.match(request.path)
        if match is None or match["id"] not in catalog:
            return None
        dataset_id, rest = match["id"], match["rest"] or ""
        scope = "dataset:" + _entry_text(catalog[dataset_id])

    latest = table_rows = None
    # within= reads the neighborhoods' current polygons too: their snapshots are part of
    # the answer's state, and no such answer is pinned.
    also = ([NEIGHBORHOODS] if dataset_id is not None and "within" in request.args
            and NEIGHBORHOODS in catalog and dataset_id != NEIGHBORHOODS else [])
    pinned = None
    if dataset_id is not None and not also and (pinned_ids := _pinned_ids(rest)):
        with model.connect() as conn:
            pinned = _pinned_state(conn, dataset_id, pinned_ids)
    if pinned is not None:
        (state, last_modified), policy = pinned, PINNED
    elif rest.rstrip("/") == "/changes":
        # A feed is polled to learn of a commit as soon as it happens: read each time.
        policy = REVALIDATE
        state, last_modified, latest, table_rows = _read_state(model, dataset_id)
    else:
        policy = CURRENT
        state, last_modified, latest, table_rows = model.snapshot_states.read(
            dataset_id, partial(_read_state, model, dataset_id))
        for other in also:
            other_state, other_modified = model.snapshot_states.read(
                other, partial(_read_state, model, other))[:2]
            state += f"|{other}:{other_state}"
            if other_modified is not None and (last_modified is None
                                               or other_modified > last_modified):
                last_modified = other_modified
    digest = hashlib.blake2b(digest_size=16)
    for part in (scope, state, request.path, request.query_string.decode("latin-1"),
                 request.headers.get("Accept", "")):
        digest.update(part.encode() + b"\x00")
    return Validators(digest.hexdigest(), last_modified, policy, dataset_id, latest,
                      table_rows)


def _read_state(model: ReadModel, dataset_id: str | None) -> _State:
    """The state of one dataset (None: of them all), read now."""
    dataset = None if dataset_id is None else model.runtime.catalog.datasets[dataset_id]
    with model.connect() as conn:
        return _state(conn, dataset)


def model_view() -> Callable[..., Any] | None:
    from flask import current_app

    endpoint = request.endpoint
    return current_app.view_functions.get(endpoint) if endpoint else None


def _not_modified(v: Validators) -> bool:
    # If-None-Match wins over If-Modified-Since when both are sent (RFC 9110 13.2.2).
    if request.if_none_match:
        return request.if_none_match.contains_weak(v.etag)
    since = request.if_modified_since
    if since is not None and v.last_modified is not None:
        # HTTP dates have whole seconds.
        return v.last_modified.replace(microsecond=0) <= since
    return False


def _stamp(response: Response, v: Validators) -> None:
    if "ETag" not in response.headers:
        response.set_etag(v.etag, weak=True)
    if v.last_modified is not None and "Last-Modified" not in response.headers:
        response.last_modified = v.last_modified
    if "Cache-Control" not in response.headers:
        response.headers["Cache-Control"] = v.cache_control
    response.vary.add("Accept")


def register_caching(app: APIFlask, model: ReadModel) -> None:
    @app.before_request
    def conditional_get() -> Response | None:
        v = validators_for(model)
        g.stldata_validators = v
        if v is None or not _not_modified(v):
            return None
        response = Response(status=304)
        _stamp(response, v)
        return response

    @app.after_request
    def cache_headers(response: Response) -> Response:
        v: Validators | None = g.get("stldata_validators")
        if v is not None and response.status_code == 200:
            _stamp(response, v)
        return response


def _read_for(dataset_id: str) -> Validators | None:
    """This request's validators when they read the dataset's current state."""
    v: Validators | None = g.get("stldata_validators")
    return v if v is not None and v.dataset_id == dataset_id else None


def latest_snapshot_read(dataset_id: str) -> int | None:
    """The latest committed snapshot of the dataset as this request's validators read it,
    or None when they did not (pinned, uncached, or no snapshot yet)."""
    v = _read_for(dataset_id)
    return None if v is None else v.latest_snapshot


def table_rows_read(dataset_id: str) -> float | None:
    """The planner's row count of the dataset's table as this request's validators read
    it, or None when they did not (pinned, uncached, or no table yet)."""
    v = _read_for(dataset_id)
    return None if v is None else v.table_rows
