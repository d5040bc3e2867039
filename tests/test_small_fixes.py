"""Small fixes found by testing: bad parameters get a 400 that names the parameter and the
expected form, never a Python parser's message; hand-made cursors are refused."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

CRIME = "/api/v1/datasets/slmpd-crime"
#: Words of Python's own parsers that must never reach a client.
INTERNALS = ("invalid literal", "base 10", "isoformat", "could not convert", "Error(")


def cursor_of(values: list[Any], order: str = "") -> str:
    """A hand-made cursor for ``order`` (the order signature the API puts first)."""
    data = orjson.dumps([f"o:{order}", *values])
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@pytest.mark.parametrize(("url", "param", "expected"), [
    (f"{CRIME}/aggregate?group_by=district&having=count__gt:abc", "having",
     "a whole number such as 42"),
    (f"{CRIME}/records?district=abc", "district", "a whole number such as 42"),
    (f"{CRIME}/records?date_occur=abc", "date_occur", "ISO-8601 date or date-time"),
    (f"{CRIME}/records?as_of=abc", "as_of", "ISO-8601 date or time"),
    ("/resource/slmpd-crime.json?$where=date_occur > 'abc'", "$where",
     "ISO-8601 date or date-time"),
    ("/resource/slmpd-crime.json?$where=date_occur > '2017-13-45'", "$where",
     "ISO-8601 date or date-time"),
    ("/resource/slmpd-crime.json?$where=district = 'abc'", "$where", "a whole number"),
    ("/resource/slmpd-crime.json?district=abc", "district", "a whole number"),
])
def test_bad_values_name_the_parameter_and_the_expected_form(
        client: Any, url: str, param: str, expected: str) -> None:
    response = client.get(url)
    assert response.status_code == 400, response.get_data(as_text=True)
    problem = response.get_json()
    assert problem["invalid_params"][0]["name"] == param
    assert expected in problem["detail"]
    assert not any(word in problem["detail"] for word in INTERNALS), problem["detail"]


@pytest.mark.parametrize(("url", "words"), [
    # The default order is by record key; csb-311's keys are request ids, whole numbers.
    ("/api/v1/datasets/csb-311/records?cursor=" + cursor_of(["x"]), "whole numbers"),
    # Ordered by an integer column: one value too few, a string for the number, a bool.
    (f"{CRIME}/records?order=district&cursor=" + cursor_of(["x"], "district"),
     "order of this query"),
    # A cursor issued for another order: it would silently skip records.
    (f"{CRIME}/records?order=district&cursor=" + cursor_of([3, "k"], "-district"),
     "order of this query"),
    (f"{CRIME}/records?order=district&cursor=" + cursor_of(["3", "k"], "district"),
     "integer value"),
    (f"{CRIME}/records?order=district&cursor=" + cursor_of([True, "k"], "district"),
     "integer value"),
    (f"{CRIME}/records?order=date_occur&cursor=" + cursor_of([5, "k"], "date_occur"),
     "datetime value"),
])
def test_hand_made_cursors_are_refused(client: Any, url: str, words: str) -> None:
    response = client.get(url)
    assert response.status_code == 400, response.get_data(as_text=True)
    problem = response.get_json()
    assert problem["invalid_params"][0]["name"] == "cursor"
    assert words in problem["detail"]


def test_cursors_the_api_issues_still_page(client: Any) -> None:
    """Against the refusals above: real cursors of an integer order and key keep working."""
    for url in (f"{CRIME}/records?order=district&limit=7",
                "/api/v1/datasets/csb-311/records?limit=7"):
        first = client.get(url).get_json()
        second = client.get(first["next"]).get_json()
        assert second["count"] == 7
        assert not {i["_key"] for i in first["items"]} & {i["_key"] for i in second["items"]}


def test_group_by_of_only_commas_is_refused(client: Any) -> None:
    response = client.get(f"{CRIME}/aggregate?group_by=,,")
    assert response.status_code == 400
    assert response.get_json()["invalid_params"][0]["name"] == "group_by"
    # Leaving group_by out is still the grand total.
    assert client.get(f"{CRIME}/aggregate").get_json()["group_by"] == []
