"""An injection corpus on every query and path parameter of every read API route.

Routes are discovered from the app's URL map and their query parameters from its OpenAPI
document, so routes added later are covered without editing this file. Each request must
end in a 4xx problem or a correct 2xx, never a 5xx; SQL in the input must never run: a
canary table survives every ``DROP TABLE``, and ``pg_sleep`` in the input does not delay.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest

from stldata.api.app import create_app
from stldata.runtime import Runtime

from conftest import query

CANARY = "injection_canary"
SLEEP = 5.0

#: Values no parameter should choke on, each named for the report.
CORPUS: dict[str, str] = {
    "quote": "'",
    "double quote": '"',
    "or true": "' OR '1'='1",
    "or true comment": "1' OR 1=1 --",
    "drop canary": f"1; DROP TABLE {CANARY}; --",
    "drop canary quoted": f"'); DROP TABLE {CANARY}; --",
    "drop canary dollar": f"$$; DROP TABLE {CANARY}; --",
    "union": "1 UNION SELECT usename, passwd FROM pg_shadow --",
    "sql comments": "1/**/OR/**/1=1",
    "line comment": "-- comment",
    "semicolon": ";",
    "sleep stacked": f"1; SELECT pg_sleep({SLEEP:g}); --",
    "sleep concat": f"'||pg_sleep({SLEEP:g})||'",
    "sleep or": f"1) OR pg_sleep({SLEEP:g}) IS NULL --",
    "sleep bare": f"pg_sleep({SLEEP:g})",
    "sleep case": f"CASE WHEN 1=1 THEN pg_sleep({SLEEP:g}) END",
    "nul": "\x00",
    "nul inside": "a\x00b",
    "rtl override": "\u202egnp.exe",
    "rtl mark": "\u200fabc\u200e",
    "fullwidth select": "ｓｅｌｅｃｔ",
    "emoji": "💥",
    "combining": "e\u0301\u0301\u0301",
    "newlines": "a\r\nb",
    "tab": "\t",
    "huge integer": "9" * 40,
    "bigint overflow": "9223372036854775808",
    "negative huge": "-" + "9" * 40,
    "float overflow": "1e309",
    "nan": "NaN",
    "infinity": "-Infinity",
    "deep parentheses": "(" * 2000 + ")" * 2000,
    "deep brackets": "[" * 2000 + "]" * 2000,
    "deep json": '{"a":' * 500 + "1" + "}" * 500,
    "long value": "a" * 20_000,
    "long commas": ",".join(["1"] * 5000),
    "traversal": "../../../../etc/passwd",
    "traversal encoded": "..%2f..%2f..%2fetc%2fpasswd",
    "traversal backslash": "..\\..\\..\\windows\\win.ini",
    "percent": "%",
    "like wildcards": "%_%",
    "template": "${jndi:ldap://127.0.0.1/a}{{7*7}}",
    "html": "<script>alert(1)</script>",
    "empty": "",
    "blank": " ",
}
#: Percent-encoded bytes that are not UTF-8, sent as they are.
RAW_QUERIES = ("%FF%FE", "%C0%AF", "%ED%A0%80")

#: Routes outside the data API, or that serve the documents themselves.
SKIPPED_ENDPOINTS = ("openapi.", "static")
PARAM = re.compile(r"<(?:[a-z]+(?:\([^)]*\))?:)?(\w+)>")


@dataclass
class Outcome:
    route: str
    where: str
    payload: str
    status: int
    seconds: float
    body: str

    def line(self) -> str:
        return (f"{self.route} {self.where} <- {self.payload}: {self.status} in "
                f"{self.seconds:.2f}s: {self.body[:200]!r}")


@pytest.fixture(scope="module")
def app(loaded: Runtime) -> Iterator[Any]:
    with loaded.database.connect() as conn:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {CANARY} (id int)")
        conn.execute(f"INSERT INTO {CANARY} VALUES (42)")
        conn.commit()
    app = create_app(loaded)
    # TESTING turns rate limits off; errors become 500 responses to record, not raised.
    app.config.update(TESTING=True, PROPAGATE_EXCEPTIONS=False)
    yield app
    with loaded.database.connect() as conn:
        conn.execute(f"DROP TABLE IF EXISTS {CANARY}")
        conn.commit()


@pytest.fixture(scope="module")
def baseline(loaded: Runtime) -> dict[str, str]:
    """Valid values of each path parameter, so one parameter at a time is attacked."""
    key = query(loaded, "SELECT _key FROM ds_csb_311 ORDER BY _key LIMIT 1")[0][0]
    snapshot = query(loaded, "SELECT max(id) FROM snapshots WHERE dataset_id = 'csb-311' "
                             "AND status = 'committed'")[0][0]
    return {"dataset_id": "csb-311", "key": str(key), "sid": str(snapshot), "fmt": "json"}


def routes(app: Any) -> list[tuple[str, list[str], list[str]]]:
    """(rule, path parameters, query parameters) of every GET route of the read API."""
    spec = app.spec
    found = []
    for rule in app.url_map.iter_rules():
        if "GET" not in rule.methods or rule.endpoint.startswith(SKIPPED_ENDPOINTS):
            continue
        spec_path = PARAM.sub(lambda m: "{" + m.group(1) + "}", rule.rule)
        operation = spec["paths"].get(spec_path, {}).get("get", {})
        params = [p["name"] for p in operation.get("parameters", []) if p["in"] == "query"]
        found.append((rule.rule, PARAM.findall(rule.rule), params))
    return found


def column_params(loaded: Runtime) -> list[str]:
    """Filters on a column of each type of csb-311, for routes that take them."""
    dataset = loaded.catalog.get("csb-311")
    by_type: dict[str, str] = {}
    for column in dataset.columns:
        by_type.setdefault(column.type, column.name)
    names = list(by_type.values())
    return [*names, f"{names[0]}__in", f"{names[-1]}__gte"]


def _size(response: Any) -> int:
    """Rows in a response: JSON items or features, else lines (CSV, NDJSON)."""
    if response.mimetype.endswith("json") and not response.mimetype.endswith("ndjson"):
        body = response.get_json(silent=True)
        if isinstance(body, dict):
            for name in ("items", "features", "data", "records", "groups"):
                if isinstance(body.get(name), list):
                    return len(body[name])
        return len(body) if isinstance(body, list) else 1
    return response.get_data().count(b"\n")


def narrowing(client: Any, url: str, key: str) -> list[tuple[str, str]]:
    """A filter to one record, for routes that take column filters, so that an attacked
    parameter a route ignores does not make every request a full export; empty for
    routes that take no filters."""
    whole = client.get(url)
    none = client.get(url, query_string=[("request_id", "0")])
    if whole.status_code != 200 or none.status_code != 200 or _size(none) >= _size(whole):
        return []
    return [("request_id", key)]


def build(rule: str, values: dict[str, str]) -> str:
    return PARAM.sub(lambda m: quote(values[m.group(1)], safe=""), rule)


def call(client: Any, url: str, query_string: Any) -> tuple[Any, float]:
    started = time.monotonic()
    response = client.get(url, query_string=query_string)
    body = response.get_data()  # streamed exports are read to their end
    return (response, body), time.monotonic() - started


def check(outcomes: list[Outcome], route: str, where: str, payload: str, name: str,
          result: tuple[Any, bytes], seconds: float, filtered: str | None = None) -> None:
    response, body = result
    text = body.decode("utf-8", "replace")
    outcome = Outcome(route, where, name, response.status_code, seconds, text)
    problems = []
    if response.status_code >= 500:
        problems.append("server error")
    elif response.status_code >= 400 and response.mimetype != "application/problem+json":
        problems.append("4xx that is not application/problem+json")
    if "pg_sleep" in payload and seconds > SLEEP * 0.8:
        problems.append("pg_sleep in the input delayed the response")
    if "root:x:0:0" in text or "[fonts]" in text:
        problems.append("a server file leaked")
    if (filtered and response.status_code == 200 and response.mimetype == "application/json"
            and "items" in (data := response.get_json())):
        # An equality filter that was accepted must match: no item differs from it.
        wrong = [i for i in data["items"] if filtered in i and str(i[filtered]) != payload]
        if wrong:
            problems.append(f"filter {filtered}={payload!r} returned {len(wrong)} other items")
    if problems:
        outcome.body = "; ".join(problems) + ": " + text
        outcomes.append(outcome)


def test_corpus_on_every_parameter_of_every_route(app: Any, loaded: Runtime,
                                                  baseline: dict[str, str]) -> None:
    client = app.test_client()
    tables_before = set(query(loaded, "SELECT tablename FROM pg_tables "
                                      "WHERE schemaname = 'public'"))
    discovered = routes(app)
    assert any(r == "/api/v1/datasets/<dataset_id>/records" for r, _, _ in discovered)
    columns = column_params(loaded)
    failures: list[Outcome] = []
    requests = 0
    timing: dict[str, float] = {}
    for rule, path_params, query_params in discovered:
        route_started = time.monotonic()
        url = build(rule, baseline)
        narrow = narrowing(client, url, baseline["key"]) if "dataset_id" in path_params \
            else []
        targets = list(query_params)
        if narrow:
            targets += [c for c in columns if c not in targets]
        for name in targets:
            fixed = [(k, v) for k, v in narrow if k != name]
            for label, payload in CORPUS.items():
                result, seconds = call(client, url, [*fixed, (name, payload)])
                filtered = name if "__" not in name and name in columns else None
                check(failures, rule, f"?{name}", payload, label, result, seconds, filtered)
                requests += 1
            prefix = "".join(f"{k}={quote(v)}&" for k, v in fixed)
            for raw in RAW_QUERIES:
                result, seconds = call(client, url, f"{prefix}{name}={raw}")
                check(failures, rule, f"?{name}", raw, f"raw {raw}", result, seconds)
                requests += 1
        for param in path_params:
            for label, payload in CORPUS.items():
                url = build(rule, {**baseline, param: payload})
                result, seconds = call(client, url, None)
                check(failures, rule, f"<{param}>", payload, label, result, seconds)
                requests += 1
        timing[rule] = time.monotonic() - route_started
    print("seconds per route:", {k: round(v, 1) for k, v in timing.items()})

    # One line per route, parameter and kind of problem, with its first example.
    grouped: dict[tuple[str, str, str], list[Outcome]] = {}
    for failure in failures:
        kind = failure.body.split(":", 1)[0]
        grouped.setdefault((failure.route, failure.where, kind), []).append(failure)
    assert not failures, f"{len(failures)} of {requests} requests failed:\n" + "\n".join(
        f"[{len(group)} payloads, e.g.] {group[0].line()}" for group in grouped.values())
    # Nothing the input said was executed: the canary and every table are still there.
    assert query(loaded, f"SELECT id FROM {CANARY}") == [(42,)]
    assert set(query(loaded, "SELECT tablename FROM pg_tables "
                             "WHERE schemaname = 'public'")) >= tables_before


def test_text_filters_take_sql_as_plain_text(app: Any, loaded: Runtime) -> None:
    """A value with SQL in it is compared as text: it matches only rows holding exactly
    that text, and a row that does hold it is found."""
    client = app.test_client()
    url = "/api/v1/datasets/csb-311/records"
    total = client.get(url, query_string={"limit": 1}).get_json()
    assert total["count"] == 1
    for payload in ("' OR '1'='1", "x' OR 1=1 --", "%", "_"):
        page = client.get(url, query_string={"description": payload}).get_json()
        assert page["items"] == []
    described = query(loaded, "SELECT description, count(*) FROM ds_csb_311 "
                              "WHERE description LIKE '%%''%%' GROUP BY 1 ORDER BY 2 DESC "
                              "LIMIT 1")
    if described:  # a description with a quote in it, if the data has one
        text, count = described[0]
        page = client.get(url, query_string={"description": text, "limit": 1000}).get_json()
        assert page["count"] == count
