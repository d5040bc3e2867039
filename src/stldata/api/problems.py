"""Errors as ``application/problem+json`` (RFC 9457), each naming what was wrong."""

from __future__ import annotations

from typing import Any

from stldata.errors import StlDataError

PROBLEM_JSON = "application/problem+json"


class ApiProblem(StlDataError):
    """An error that becomes an HTTP problem response."""

    status = 400
    title = "Bad Request"

    def __init__(self, detail: str, *, param: str | None = None, reason: str | None = None,
                 extra: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.param = param
        self.reason = reason or detail
        self.extra = extra or {}

    def body(self, instance: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": "about:blank", "title": self.title, "status": self.status,
            "detail": self.detail, "instance": instance,
        }
        if self.param:
            body["invalid_params"] = [{"name": self.param, "reason": self.reason}]
        body.update(self.extra)
        return body


class BadParameter(ApiProblem):
    def __init__(self, param: str, reason: str) -> None:
        super().__init__(f"parameter {param!r}: {reason}", param=param, reason=reason)


class NotFound(ApiProblem):
    status = 404
    title = "Not Found"


def problem_media_types(spec: dict[str, Any] | str) -> dict[str, Any] | str:
    """Document error responses as the problem+json the apps send (APIFlask writes them
    as application/json); a spec processor."""
    if isinstance(spec, str):  # only for SPEC_FORMAT=yaml, which the apps do not use
        return spec
    for path, operations in spec.get("paths", {}).items():
        for operation in operations.values():
            if not isinstance(operation, dict):
                continue
            responses = operation.setdefault("responses", {})
            # Every route answers these before its view runs: a parameter that is not
            # UTF-8, a URL over the length limit, and (except the health check) a client
            # over its rate limit.
            responses.setdefault("400", _problem_response(
                "Bad parameter: the problem names it."))
            responses.setdefault("414", _problem_response(
                "URI too long: the URL is over 65,536 bytes."))
            if path != "/health":
                responses.setdefault("429", {
                    **_problem_response("Too many requests from this client; "
                                        "`Retry-After` says when to try again."),
                    "headers": {"Retry-After": {
                        "description": "Seconds to wait before the next request.",
                        "schema": {"type": "integer"}}}})
            for status, response in responses.items():
                content = response.get("content") if isinstance(response, dict) else None
                if str(status)[:1] in ("4", "5") and content and "application/json" in content:
                    content[PROBLEM_JSON] = content.pop("application/json")
    return spec


def _problem_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM_JSON: {"schema": {
        "type": "object",
        "properties": {"title": {"type": "string"}, "status": {"type": "integer"},
                       "detail": {"type": "string"}}}}}}

