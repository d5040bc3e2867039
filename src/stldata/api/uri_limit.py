"""The request target, checked before any view: over the length limit it is a 414
problem, not a server's HTML page; a parameter that is not UTF-8 text is a 400 that names
it, not text with replacement characters searched or compared as if a user had typed them.

Werkzeug's development server (``stldata serve``, ``stldata up``) reads the request line
with :mod:`http.server`, which refuses a line over 65,536 bytes itself and answers with an
HTML page before the app ever sees the request; no Flask error handler can change that. So
the apps check the same limit themselves (for any WSGI server that passes longer targets
on) and the development server gets a request handler whose errors are problem+json too.
"""

from __future__ import annotations

import re
from http import HTTPStatus
from urllib.parse import unquote_to_bytes

import orjson
from flask import Flask, request
from werkzeug.exceptions import RequestURITooLarge
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.serving import WSGIRequestHandler

from stldata.api.problems import PROBLEM_JSON, BadParameter

#: The longest request target (path and query) served: the request line limit of
#: :mod:`http.server`, so every server gives the same answer.
MAX_URI_BYTES = 65536
TOO_LONG = (f"the URL is longer than {MAX_URI_BYTES} bytes; send fewer or shorter query "
            "parameters")


def refuse_long_uris(app: Flask) -> None:
    """Answer 414 (as the app's problem+json) for a request target over the limit."""

    @app.before_request
    def check_uri_length() -> None:
        environ = request.environ
        target = environ.get("RAW_URI") or environ.get("REQUEST_URI")
        length = (len(target) if isinstance(target, str) else
                  len(request.path.encode()) + 1 + len(environ.get("QUERY_STRING", "")))
        if length > MAX_URI_BYTES:
            raise RequestURITooLarge(TOO_LONG)


#: A query string without these is ASCII once decoded, so valid UTF-8: most requests.
_NOT_ASCII = re.compile(r"%[89a-fA-F]|[^\x00-\x7f]")


def refuse_undecodable_parameters(app: Flask) -> None:
    """Answer 400 naming the parameter whose name or value is not UTF-8 once decoded.

    Werkzeug decodes the query string with replacement characters, so ``q=%ff`` would
    otherwise search for U+FFFD.
    """

    @app.before_request
    def check_parameters_decode() -> None:
        # WSGI passes the query string as latin-1 text of its raw bytes.
        raw = request.environ.get("QUERY_STRING", "")
        if not _NOT_ASCII.search(raw):
            return
        for pair in raw.split("&"):
            name, _, value = pair.partition("=")
            for part in (name, value):
                try:
                    unquote_to_bytes(part.replace("+", " ").encode("latin-1")).decode()
                except UnicodeError:
                    shown = unquote_to_bytes(name.encode("latin-1")).decode(errors="replace")
                    raise BadParameter(shown, "is not valid UTF-8 text; percent-encode "
                                              "the UTF-8 bytes of the text") from None


class ProblemRequestHandler(WSGIRequestHandler):
    """The development server's own refusals (414 URI too long, 400 bad request line,
    431 headers too large), written as problem+json like the app's."""

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        # Titled as the app's own problems are (werkzeug's names of the statuses).
        title = HTTP_STATUS_CODES.get(code, "Error")
        self.log_error("code %d, message %s", code, message)
        detail = TOO_LONG if code == HTTPStatus.REQUEST_URI_TOO_LONG else (
            explain or message or title)
        body = orjson.dumps({"type": "about:blank", "title": title, "status": code,
                             "detail": detail})
        self.send_response(code, message)
        self.send_header("Connection", "close")
        self.close_connection = True
        if code >= 200 and code not in (HTTPStatus.NO_CONTENT, HTTPStatus.NOT_MODIFIED):
            self.send_header("Content-Type", PROBLEM_JSON)
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and code >= 200 and code not in (
                HTTPStatus.NO_CONTENT, HTTPStatus.NOT_MODIFIED):
            self.wfile.write(body)
