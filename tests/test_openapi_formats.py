"""The OpenAPI document describes every response format of records, exports and SoQL.

Each operation's 200 response lists every media type the code sends (exports.MEDIA_TYPES,
soql_routes.MEDIA_TYPES) with a schema and an example, and the headers it sends. The
examples are checked against their schemas and against what the API really answers on the
bundled sample data; real responses in every format are checked against the spec, by hand
and with schemathesis' conformance checks.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import jsonschema_rs
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
)

from stldata.api import exports, soql_routes
from stldata.api.app import create_app
from stldata.api.schemas import EXAMPLE_QUERY, SOQL_EXAMPLE_QUERIES
from stldata.runtime import Runtime

RECORDS = "/api/v1/datasets/{dataset_id}/records"
SOQL = "/resource/{dataset_id}.{fmt}"
CACHE = {"ETag", "Last-Modified", "Cache-Control"}


def bare(media_type: str) -> str:
    return media_type.split(";")[0].strip()


def export_path(format_: str) -> str:
    return f"/api/v1/datasets/{{dataset_id}}/export.{format_}"


#: Operation path -> (media types the code sends, headers it sends on a 200).
OPERATIONS: dict[str, tuple[set[str], set[str]]] = {
    RECORDS: ({bare(m) for m in exports.MEDIA_TYPES.values()},
              {"Link", "X-Total-Count", "X-Total-Is-Estimate", *CACHE}),
    **{export_path(f): ({bare(exports.MEDIA_TYPES[f])}, {"Content-Disposition", *CACHE})
       for f in exports.EXPORT_FORMATS},
    SOQL: ({bare(m) for m in soql_routes.MEDIA_TYPES.values()},
           {"X-SODA2-Fields", "X-SODA2-Types"}),
}


@pytest.fixture(scope="module")
def spec(client: Any) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return dict(response.get_json())


def ok_response(spec: dict[str, Any], path: str) -> dict[str, Any]:
    return dict(spec["paths"][path]["get"]["responses"]["200"])


def examples_of(media: dict[str, Any]) -> list[Any]:
    if "example" in media:
        return [media["example"]]
    return [e["value"] for e in media.get("examples", {}).values()]


def validator(spec: dict[str, Any], schema: dict[str, Any]) -> Any:
    """A JSON Schema validator of ``schema``, its ``$ref`` resolved in the spec."""
    return jsonschema_rs.Draft202012Validator({**schema, "components": spec["components"]})


def is_json(media_type: str) -> bool:
    return media_type == "application/json" or media_type.endswith("+json")


def test_every_format_is_documented_with_schema_example_and_headers(
        spec: dict[str, Any]) -> None:
    for path, (media_types, headers) in OPERATIONS.items():
        ok = ok_response(spec, path)
        assert set(ok["content"]) == media_types, path
        for media_type, media in ok["content"].items():
            assert media.get("schema"), (path, media_type)
            assert examples_of(media), (path, media_type)
            assert "example" not in media or "examples" not in media  # exclusive in OAS
        assert set(ok["headers"]) >= headers, path
        for name in headers:
            header = ok["headers"][name]
            assert header["description"] and header["schema"] and "example" in header


def test_examples_fit_their_schemas(spec: dict[str, Any]) -> None:
    for path in OPERATIONS:
        for media_type, media in ok_response(spec, path)["content"].items():
            check = validator(spec, media["schema"])
            for example in examples_of(media):
                if is_json(media_type):
                    check.validate(example)
                    continue
                assert isinstance(example, str) and example.endswith("\n")
                if media_type == "text/csv":
                    rows = list(csv.reader(io.StringIO(example)))
                    assert len(rows) >= 2 and {len(r) for r in rows} == {len(rows[0])}
                else:  # JSON lines: an object per line
                    lines = example.splitlines()
                    assert lines and all(isinstance(json.loads(line), dict)
                                         for line in lines)
        for header in ok_response(spec, path)["headers"].values():
            validator(spec, header["schema"]).validate(header["example"])


def _get(client: Any, url: str) -> Any:
    response = client.get(url)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response


def test_examples_are_what_the_api_answers(client: Any, spec: dict[str, Any]) -> None:
    """The examples were not made up: the API answers them, byte for byte where it can."""
    records = ok_response(spec, RECORDS)
    content, query = records["content"], urlencode(EXAMPLE_QUERY)
    base = "/api/v1/datasets/slmpd-crime"
    page = _get(client, f"{base}/records?{query}").get_json()
    example = content["application/json"]["example"]
    assert {**page, "snapshot_id": None} == {**example, "snapshot_id": None}
    for format_ in ("ndjson", "csv"):
        response = _get(client, f"{base}/records?{query}&format={format_}")
        assert response.get_data(as_text=True) == content[bare(
            exports.MEDIA_TYPES[format_])]["example"], format_
        assert response.headers["X-Total-Count"] == str(records["headers"][
            "X-Total-Count"]["example"])
        if format_ == "csv":
            assert response.headers["Link"] == records["headers"]["Link"]["example"]
    geojson = _get(client, f"{base}/records?{query}&format=geojson").get_json()
    assert geojson == content["application/geo+json"]["example"]

    # An export starts with the same records (it has every one; the examples have two).
    filters = urlencode([(k, v) for k, v in EXAMPLE_QUERY if k != "limit"])
    for format_ in exports.EXPORT_FORMATS:
        media_type = bare(exports.MEDIA_TYPES[format_])
        example = ok_response(spec, export_path(format_))["content"][media_type]["example"]
        body = _get(client, f"{base}/export.{format_}?{filters}").get_data(as_text=True)
        if format_ == "geojson":
            whole = json.loads(body)
            assert {**whole, "features": whole["features"][:2]} == example
        else:
            lines = example.count("\n")
            assert "".join(body.splitlines(keepends=True)[:lines]) == example, format_

    soql = ok_response(spec, SOQL)["content"]
    for name, params in SOQL_EXAMPLE_QUERIES.items():
        url = "/resource/slmpd-crime.{}?" + urlencode(params)
        rows = _get(client, url.format("json")).get_json()
        assert rows == soql["application/json"]["examples"][name]["value"], name
        if name == "grouped":
            csv_body = _get(client, url.format("csv")).get_data(as_text=True)
            assert csv_body == soql["text/csv"]["example"]
        else:
            features = _get(client, url.format("geojson")).get_json()
            assert features == soql["application/geo+json"]["example"]


#: Real requests in every format: (spec path, URL).
REQUESTS: list[tuple[str, str]] = [
    *[(RECORDS, f"/api/v1/datasets/{d}/records?limit=3&format={f}")
      for d in ("slmpd-crime", "csb-311") for f in ("json", "ndjson", "csv", "geojson")],
    (RECORDS, "/api/v1/datasets/slmpd-crime/records?complaint=no-such&format=csv"),
    *[(export_path(f), f"/api/v1/datasets/csb-311/export.{f}") for f in exports.EXPORT_FORMATS],
    *[(SOQL, f"/resource/{d}.{f}?$limit=3") for d in ("slmpd-crime", "csb-311")
      for f in ("json", "csv", "geojson")],
    (SOQL, "/resource/slmpd-crime.csv?$select=district,count(*)&$group=district"),
]


def test_responses_are_what_the_spec_says(client: Any, spec: dict[str, Any]) -> None:
    for path, url in REQUESTS:
        response = _get(client, url)
        ok = ok_response(spec, path)
        media_type = bare(response.headers["Content-Type"])
        assert media_type in ok["content"], (url, media_type)
        schema = ok["content"][media_type]["schema"]
        body = response.get_data(as_text=True)
        validator(spec, schema).validate(json.loads(body) if is_json(media_type) else body)
        for name, header in ok["headers"].items():
            if header["required"]:
                assert name in response.headers, (url, name)
            if name in response.headers:
                value: Any = response.headers[name]
                if header["schema"].get("type") == "integer":
                    value = int(value)
                validator(spec, header["schema"]).validate(value)
        # Headers the code sends are documented (besides the standard ones).
        sent = {h for h in response.headers.keys()
                if h not in ("Content-Type", "Content-Length", "Vary", "X-Accel-Buffering")}
        assert sent <= set(ok["headers"]), (url, sent - set(ok["headers"]))


def _on_200(check: Callable[..., Any]) -> Callable[..., Any]:
    """A conformance check of the 200 responses only: the error responses' documentation
    (application/json for what is sent as application/problem+json) is not this test's."""
    def wrapped(ctx: Any, response: Any, case: Any) -> Any:
        if response.status_code != 200:
            return None
        return check(ctx, response, case)
    wrapped.__name__ = check.__name__
    return wrapped


CHECKS = [not_a_server_error, *map(_on_200, (content_type_conformance,
                                             response_schema_conformance,
                                             response_headers_conformance))]


def _explore(strategy: Any) -> int:
    """Send the strategy's cases with the checks; return how many were sent."""
    sent = [0]

    @settings(max_examples=15, deadline=None, database=None,
              phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case: Any) -> None:
        sent[0] += 1
        case.call_and_validate(checks=CHECKS)

    run()
    return sent[0]


def test_schemathesis_conformance_of_every_format(loaded: Runtime,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCHEMATHESIS_CONFIG", raising=False)
    app = create_app(loaded)
    app.config["TESTING"] = True
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    ran, failures = 0, []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.method.upper() != "GET" or operation.path not in OPERATIONS:
            continue
        fmts = ["json", "csv", "geojson"] if operation.path == SOQL else [None]
        for fmt in fmts:
            path = {"dataset_id": "slmpd-crime", **({"fmt": fmt} if fmt else {})}
            strategy = operation.as_strategy(GenerationMode.POSITIVE, path_parameters=path)
            try:
                ran += _explore(strategy)
            except Exception as exc:  # every failing operation is reported
                failures.append(f"{operation.path} {fmt}: "
                                + " | ".join(str(exc).strip().splitlines()[:12]))
    assert ran >= 60
    assert not failures, "\n".join(failures)


def test_error_responses_are_documented_as_problems(client: Any) -> None:
    """The apps answer errors as application/problem+json, and the spec says so."""
    from stldata.command.app import create_command_app

    specs = [client.get("/openapi.json").get_json()]
    command = create_command_app(client.application.extensions["stldata.read_model"].runtime)
    specs.append(command.test_client().get("/openapi.json").get_json())
    for spec in specs:
        errors = [(path, status, response["content"])
                  for path, operations in spec["paths"].items()
                  for operation in operations.values()
                  for status, response in operation["responses"].items()
                  if status[0] in "45" and "content" in response]
        assert errors
        assert all(list(content) == ["application/problem+json"] for *_, content in errors)
    bad = client.get("/api/v1/datasets/slmpd-crime/records?limit=0")
    assert bad.status_code == 400 and bad.mimetype == "application/problem+json"


def test_every_operation_documents_the_limits_it_can_answer(client: Any) -> None:
    """A URL over the limit (414) and a client over its rate limit (429, with
    Retry-After) are answered before any view runs, so every operation lists them."""
    spec = client.get("/openapi.json").get_json()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "414" in responses, (method, path)
            if path == "/health":
                assert "429" not in responses  # the health check is never limited
                continue
            assert "Retry-After" in responses["429"]["headers"], (method, path)
            assert list(responses["429"]["content"]) == ["application/problem+json"]
