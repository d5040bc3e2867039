"""Edges of the read API found by testing: forged cursors, oversized searches, SoQL sums
beyond 64 bits, and statistics fresh after a snapshot."""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from stldata.runtime import Runtime

from conftest import CRIME_SAMPLES, ingest, project

RECORDS = "/api/v1/datasets/slmpd-crime/records"


def forged(values: list[Any], order: str) -> str:
    data = json.dumps([f"o:{order}", *values]).encode()
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@pytest.mark.parametrize(("query", "order", "cursor"), [
    ("", "", ["k\u0000"]),
    ("&order=-_key", "-_key", ["k\u0000"]),
    ("&order=district", "district", [1, "k\u0000"]),
    ("&q=burglary", "-_rank", [0.5, "k\u0000"]),
])
def test_a_nul_in_a_cursor_key_is_a_bad_cursor(client: Any, query: str, order: str,
                                               cursor: list[Any]) -> None:
    response = client.get(f"{RECORDS}?cursor={forged(cursor, order)}{query}")

    assert response.status_code == 400
    problem = response.get_json()
    assert problem["invalid_params"][0]["name"] == "cursor"
    assert "not a cursor this API issued" in problem["detail"]


def test_a_cursor_of_one_order_is_refused_for_another(client: Any) -> None:
    first = client.get(f"{RECORDS}?order=-date_occur&limit=5").get_json()
    cursor = first["next"].split("cursor=")[1]

    response = client.get(f"{RECORDS}?order=date_occur&limit=5&cursor={cursor}")

    assert response.status_code == 400
    assert "does not match the order" in response.get_json()["detail"]


@pytest.mark.parametrize(("url", "param"), [
    (RECORDS + "?q=" + "-x%20" * 1000, "q"),
    (RECORDS + "?q=" + "a" * 501, "q"),
    ("/api/v1/search?q=" + "-x%20" * 40, "q"),
    ("/resource/slmpd-crime.json?$q=" + "-x%20" * 40, "$q"),
])
def test_oversized_searches_are_refused(client: Any, url: str, param: str) -> None:
    response = client.get(url)

    assert response.status_code == 400
    problem = response.get_json()
    assert problem["invalid_params"][0]["name"] == param
    assert "limit is" in problem["invalid_params"][0]["reason"]


def test_a_search_of_a_few_terms_still_runs(client: Any) -> None:
    words = "%20".join(["burglary"] + ["-zzzz"] * 31)  # 32 terms: the most allowed
    assert client.get(f"{RECORDS}?q={words}&limit=1").status_code == 200


def test_soql_sums_beyond_64_bits_come_out_exact(client: Any, loaded: Runtime) -> None:
    engine = loaded.database.engine()
    with engine.connect() as conn:
        total = conn.execute(sa.text("SELECT sum(count) FROM ds_slmpd_crime")).scalar_one()
    engine.dispose()
    factor = 10**18

    response = client.get(f"/resource/slmpd-crime.json?$select=sum(count)*{factor} AS x")

    assert response.status_code == 200
    assert response.get_json() == [{"x": str(Decimal(total) * factor)}]
    assert int(response.get_json()[0]["x"]) > 2**63


def test_statistics_follow_a_snapshot_that_grows_the_table(runtime: Runtime) -> None:
    ingest(runtime, "slmpd-crime", CRIME_SAMPLES / "june2018.csv")
    project(runtime)
    ingest(runtime, "slmpd-crime")  # every bundled month: far more than a tenth more
    project(runtime)

    with runtime.database.connect() as conn:
        rows = conn.execute("SELECT count(*) FROM ds_slmpd_crime").fetchone()
        stats = conn.execute("SELECT reltuples FROM pg_class "
                             "WHERE oid = 'ds_slmpd_crime'::regclass").fetchone()
    assert rows is not None and stats is not None
    assert stats[0] == rows[0]  # a table this small is analyzed from every row


@pytest.mark.parametrize(("query", "param"), [
    ("bbox=-90.3,３８.6,-90.2,38.7", "bbox"),
    ("near=38.6_27,-90.19&radius_m=100", "near"),
    ("near=38.627,-90.19&radius_m=１００", "radius_m"),
])
def test_places_are_read_in_ascii_digits(client: Any, query: str, param: str) -> None:
    response = client.get(f"{RECORDS}?{query}")

    assert response.status_code == 400
    assert response.get_json()["invalid_params"][0]["name"] == param
