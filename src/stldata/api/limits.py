"""Rate limits per client, shared by the read API and the command API (Flask-Limiter).

A client is its API key when the request carries a valid one (``Authorization: Bearer`` or
``X-API-Key``; revoked keys still count as themselves), else its remote address. A token
that is not a known key does not make a client of its own, so inventing tokens does not
escape the limit. One budget per client covers every route of an app; ``/health`` is
exempt. A client over its budget gets a 429 problem with ``Retry-After``.

Counters live where ``STLDATA_RATE_LIMIT_STORAGE_URI`` says: ``memory://`` by default, per
process, so several processes (or ``stldata up`` and a separate ``serve``) count apart.

Flask's ``TESTING`` mode turns limits off, so a test suite sharing one client is not
throttled; a test of the limits themselves sets ``RATELIMIT_IN_TESTING`` as well.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import orjson
import sqlalchemy as sa
from flask import Flask, Response, current_app, g, request
from flask_limiter import Limiter, RateLimitExceeded, RequestLimit

from stldata.api.problems import PROBLEM_JSON
from stldata.command.keys import ApiKey, KeyStore, presented_token
from stldata.runtime import Runtime

log = logging.getLogger(__name__)

#: Paths never limited: a load balancer's health probe must not be throttled.
EXEMPT_PATHS = frozenset({"/health"})


def request_key(keys: KeyStore) -> ApiKey | None:
    """The valid (possibly revoked) API key of the current request, looked up once."""
    if "stldata_api_key" not in g:
        token = presented_token(request.headers)
        key = None
        if token:
            try:
                key = keys.lookup(token)
            except sa.exc.SQLAlchemyError:
                # The limit then falls back to the address; the view reports the database.
                log.warning("could not look up an API key", exc_info=True)
        g.stldata_api_key = key
    key = g.stldata_api_key
    return key if isinstance(key, ApiKey) else None


def key_store(app: Flask, runtime: Runtime) -> KeyStore:
    """The app's key store, made on first use with a small pool of its own."""
    store = app.extensions.get("stldata.keys")
    if not isinstance(store, KeyStore):
        store = KeyStore(runtime.database.engine(pool_size=2, max_overflow=4))
        app.extensions["stldata.keys"] = store
    return store


def _too_many(limit: RequestLimit) -> Response:
    # The window's own reset time: RequestLimit.reset_at rounds up a further second.
    reset = float(limit.window[0])
    retry_after = max(1, math.ceil(reset - time.time()))
    body = {"type": "about:blank", "title": "Too Many Requests", "status": 429,
            "detail": f"rate limit of {limit.limit} per client exceeded; retry after "
                      f"{retry_after} seconds",
            "instance": request.path, "limit": str(limit.limit)}
    return Response(orjson.dumps(body), status=429, mimetype=PROBLEM_JSON,
                    headers={"Retry-After": str(retry_after),
                             "X-RateLimit-Limit": str(limit.limit.amount),
                             "X-RateLimit-Remaining": "0",
                             "X-RateLimit-Reset": str(math.ceil(reset))})


def install_rate_limits(app: Flask, runtime: Runtime, limit: str | None = None
                        ) -> Limiter | None:
    """Limit every route of ``app`` to ``limit`` (default ``STLDATA_RATE_LIMIT``) per client.

    An empty limit installs nothing.
    """
    settings = runtime.settings
    limit = settings.rate_limit if limit is None else limit
    if not limit:
        return None
    keys = key_store(app, runtime)

    def client() -> str:
        key = request_key(keys)
        return f"key:{key.id}" if key else f"addr:{request.remote_addr or 'unknown'}"

    limiter = Limiter(client, app=app, application_limits=[limit],
                      storage_uri=settings.rate_limit_storage_uri, on_breach=_too_many,
                      headers_enabled=False, strategy="moving-window")

    @limiter.request_filter
    def exempt() -> bool:
        if request.path in EXEMPT_PATHS:
            return True
        return bool(current_app.testing and not current_app.config.get("RATELIMIT_IN_TESTING"))

    def breached(error: RateLimitExceeded) -> Any:
        # The response built by _too_many; without it (it cannot fail) a plain 429.
        return error.response or error.get_response()

    app.register_error_handler(RateLimitExceeded, breached)
    app.extensions["stldata.limiter"] = limiter
    return limiter
