"""Keyset pages in index order: descending orders with nulls last, exact and estimated
totals, and the plans PostgreSQL picks for them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
import sqlalchemy as sa

from stldata.api.paging import EXACT_COUNT_LIMIT, page_selects, read_page
from stldata.api.query import (
    RecordQuery,
    dataset_table,
    encode_cursor,
    output_columns,
    parse_query,
)
from stldata.runtime import Runtime

from conftest import pages, plan_of

RECORDS = "/api/v1/datasets/slmpd-crime/records"


def stored(loaded: Runtime, where: str = "TRUE") -> list[tuple[str, datetime | None]]:
    """(key, date_occur) of the stored records, read with plain SQL."""
    table = loaded.catalog.get("slmpd-crime").table_name
    engine = loaded.database.engine()
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT _key, date_occur FROM {table} WHERE {where}"))
        found = [(str(k), d) for k, d in rows]
    engine.dispose()
    return found


def newest_first(records: list[tuple[str, datetime | None]]) -> list[str]:
    """Dates descending with the undated last; ties by key, descending too."""
    by_key = sorted(records, key=lambda r: r[0], reverse=True)
    ordered = sorted(by_key, key=lambda r: (r[1] is None, -(r[1].timestamp() if r[1] else 0)))
    return [key for key, _ in ordered]


@pytest.mark.parametrize(("filters", "where", "limit"), [
    ("", "TRUE", 997),  # more than the exact-count limit: pages read from the index
    ("&coded_month=2018-06", "coded_month = '2018-06-01'", 350),  # gathered and counted
])
def test_descending_pages_put_nulls_last(client: Any, loaded: Runtime, filters: str,
                                         where: str, limit: int) -> None:
    expected = newest_first(stored(loaded, where))
    assert any(d is None for _, d in stored(loaded, where)), "the sample has undated rows"

    walked = pages(client, f"{RECORDS}?order=-date_occur&limit={limit}{filters}")

    assert [i["_key"] for i in walked] == expected


def test_a_page_after_the_nulls_begin(client: Any, loaded: Runtime) -> None:
    # A district of June 2018 with undated records and a page's worth of dated ones.
    for district in range(1, 10):
        records = stored(loaded, f"coded_month = '2018-06-01' AND district = {district}")
        undated = sum(1 for _, d in records if d is None)
        if undated and len(records) - undated < 1000:
            break
    else:
        pytest.fail("no district of June 2018 has undated records")
    expected = newest_first(records)
    size = len(expected) - undated + 1  # the first page ends on the first undated record
    url = f"{RECORDS}?coded_month=2018-06&district={district}&order=-date_occur"

    first = client.get(f"{url}&limit={size}").get_json()
    rest = pages(client, first["next"]) if undated > 1 else []

    assert first["items"][-1]["date_occur"] is None
    assert [i["_key"] for i in first["items"] + rest] == expected
    assert first["total"] == len(expected) and first["total_is_estimate"] is False


def test_a_cursor_past_the_end_still_counts(client: Any, loaded: Runtime) -> None:
    june = stored(loaded, "coded_month = '2018-06-01'")
    # The default order is by key.
    past_the_end = encode_cursor([max(key for key, _ in june)], RecordQuery())

    body = client.get(f"{RECORDS}?coded_month=2018-06&cursor={past_the_end}").get_json()

    assert body["items"] == [] and body["next"] is None
    assert body["total"] == len(june) and body["total_is_estimate"] is False


def test_a_single_page_result_is_counted_exactly_whatever_the_estimate(
        loaded: Runtime) -> None:
    dataset = loaded.catalog.get("slmpd-crime")
    table = dataset_table(dataset, sa.MetaData())
    query = parse_query(dataset, table, {"district": ["3"], "coded_month": ["2018-06"],
                                         "limit": ["1000"]})
    expected = len(stored(loaded, "district = 3 AND coded_month = '2018-06-01'"))
    engine = loaded.database.engine()
    with engine.connect() as conn:
        # exact_limit=0 makes any estimate "large": the page alone decides the total.
        _, rows, total, estimated = read_page(conn, table, query,
                                              output_columns(dataset, table, query),
                                              exact_limit=0)
    engine.dispose()
    assert (len(rows), total, estimated) == (expected, expected, False)


def test_large_results_are_estimated_and_flagged(client: Any, loaded: Runtime) -> None:
    everything = len(stored(loaded))
    assert everything > EXACT_COUNT_LIMIT

    body = client.get(f"{RECORDS}?order=-date_occur&limit=5").get_json()

    assert body["total_is_estimate"] is True
    assert abs(body["total"] - everything) < everything * 0.05


@pytest.mark.parametrize("order", ["-date_occur", "date_occur", "-district", "district"])
def test_one_column_orders_are_read_from_the_index(loaded: Runtime, order: str) -> None:
    """With sorting disabled, a plan that still sorts means the ORDER BY does not match
    the (column, _key) index in either direction."""
    dataset = loaded.catalog.get("slmpd-crime")
    table = dataset_table(dataset, sa.MetaData())
    query = parse_query(dataset, table, {"order": [order]})
    statement = page_selects(table, query, output_columns(dataset, table, query))[0]
    engine = loaded.database.engine()
    with engine.connect() as conn:
        conn.execute(sa.text(f"ANALYZE {dataset.table_name}"))
        conn.execute(sa.text("SET enable_sort = off"))
        plan = plan_of(conn, statement)
    engine.dispose()
    column = order.lstrip("-")
    assert f"{dataset.table_name}__{column}" in plan, plan
    assert "Sort" not in plan, plan


def test_search_matches_can_be_listed_by_key(client: Any) -> None:
    ranked = pages(client, f"{RECORDS}?coded_month=2018-06&q=burglary&limit=1000")
    by_key = pages(client, f"{RECORDS}?coded_month=2018-06&q=burglary&order=-_key&limit=97")

    assert len(by_key) == len(ranked) > 97  # the same matches, several pages
    assert [i["_key"] for i in by_key] == sorted((i["_key"] for i in ranked), reverse=True)
    assert "_rank" in by_key[0] and all("burglar" in str(i).lower() for i in by_key)


def test_key_order_only_at_the_end(client: Any) -> None:
    response = client.get(f"{RECORDS}?order=_key,district")

    assert response.status_code == 400
    assert "_key can only be the last" in response.get_json()["invalid_params"][0]["reason"]


def test_the_stored_search_document_follows_the_text_columns(runtime: Runtime) -> None:
    """A dataset that gains a text column has its stored document computed again."""
    from dataclasses import replace

    from stldata.catalog import Column
    from stldata.projection.tables import ensure_table

    dataset = runtime.catalog.get("slmpd-crime")
    wider = replace(dataset, columns=(*dataset.columns, Column(name="extra_note")))
    with runtime.database.transaction() as conn:
        ensure_table(conn, dataset)
        conn.execute(f"INSERT INTO {dataset.table_name} (_key, _snapshot_id, _hash, _source,"
                     " description) VALUES ('k1', 1, 'h', '{}', 'stolen bicycle')")
    with runtime.database.transaction() as conn:
        ensure_table(conn, wider)
        conn.execute(f"UPDATE {dataset.table_name} SET extra_note = 'found in Forest Park'")

    with runtime.database.connect() as conn:
        found = conn.execute(
            f"SELECT _key FROM {dataset.table_name} WHERE _document @@ "
            "websearch_to_tsquery('english', 'bicycles forest')").fetchall()
    assert found == [("k1",)]


def test_a_request_checks_out_one_connection(loaded: Runtime) -> None:
    """Validators, the page, its count and its snapshot all read through one pooled
    connection: one checkout, so one liveness ping, per request."""
    from stldata.api.app import create_app

    app = create_app(loaded)
    model = app.extensions["stldata.read_model"]
    checkouts: list[int] = []
    sa.event.listen(model.engine, "checkout", lambda *_: checkouts.append(1))
    client = app.test_client()

    sid = client.get(f"{RECORDS}?limit=1").get_json()["snapshot_id"]
    for url in (f"{RECORDS}?district=3&limit=5", f"{RECORDS}?order=-date_occur&limit=5",
                "/api/v1/datasets/slmpd-crime/aggregate?group_by=district",
                "/api/v1/datasets/slmpd-crime/snapshots",
                f"/api/v1/datasets/slmpd-crime/snapshots/{sid}",
                f"/api/v1/datasets/slmpd-crime/snapshots/{sid}/diff",
                "/api/v1/datasets/slmpd-crime/changes?limit=5", "/api/v1/datasets"):
        checkouts.clear()
        assert client.get(url).status_code == 200
        assert len(checkouts) == 1, url
    assert model.engine.pool.checkedout() == 0  # every connection went back
