"""A records page costs as few round trips to PostgreSQL as its answer needs: the table's
row estimate is read with the request's validators, a result somewhat over the exact-count
limit is counted in the page's own statement, and records are encoded a column at a time,
with exactly the text the per-row encoder writes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from stldata.api import exports
from stldata.api.app import create_app
from stldata.api.paging import TRUSTED_ESTIMATE_FACTOR, read_page
from stldata.api.query import (
    RecordQuery,
    dataset_table,
    encode_cursor,
    output_columns,
    parse_query,
    visible_names,
)
from stldata.api.records import json_records
from stldata.runtime import Runtime

RECORDS = "/api/v1/datasets/slmpd-crime/records"


@pytest.fixture
def analyzed(loaded: Runtime) -> Iterator[tuple[int, float]]:
    """(records stored, the planner's row count) of the crime table, freshly analyzed so
    the estimate is the table's own and no EXPLAIN is needed."""
    table = loaded.catalog.get("slmpd-crime").table_name
    with loaded.database.connect(autocommit=True) as conn:
        conn.execute(f"ANALYZE {table}")
        stored = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        reltuples = conn.execute("SELECT reltuples FROM pg_class WHERE oid = to_regclass(%s)",
                                 (table,)).fetchone()
    assert stored is not None and reltuples is not None
    yield int(stored[0]), float(reltuples[0])


def statements_of(loaded: Runtime, url: str) -> tuple[list[str], Any]:
    """The SQL statements one request sends, and its response."""
    app = create_app(loaded)
    model = app.extensions["stldata.read_model"]
    client = app.test_client()
    assert client.get(url).status_code == 200  # tables known, pool warm
    sent: list[str] = []
    sa.event.listen(model.engine, "before_cursor_execute",
                    lambda _c, _cur, statement, *_: sent.append(statement))
    response = client.get(url)
    model.engine.dispose()
    return sent, response


def test_an_unfiltered_sorted_page_is_two_statements(loaded: Runtime,
                                                     analyzed: tuple[int, float]) -> None:
    stored, reltuples = analyzed
    sent, response = statements_of(loaded, f"{RECORDS}?order=-date_occur&limit=100")

    # The validators (with the row estimate), then the page: no estimate of its own.
    assert len(sent) == 2, sent
    assert "reltuples" in sent[0] and "FROM snapshots" in sent[0]
    assert "ORDER BY" in sent[1]
    body = response.get_json()
    assert body["count"] == 100
    with loaded.database.connect() as conn:
        latest = conn.execute("SELECT max(id) FROM snapshots WHERE dataset_id = %s AND "
                              "status = 'committed'", ("slmpd-crime",)).fetchone()
    assert latest is not None and body["snapshot_id"] == latest[0]
    # More records than are counted exactly: the total is the planner's, flagged.
    assert stored > 10_000
    assert body["total_is_estimate"] is True
    assert body["total"] == max(int(reltuples), 10_001)
    assert response.headers["ETag"] and response.headers["Last-Modified"]


@pytest.mark.parametrize("query", [
    "order=-date_occur&limit=100",  # read from the index, estimated
    "coded_month=2018-06&order=-date_occur&limit=50",  # gathered and counted
    "district=99999",  # no record
    "order=-date_occur&limit=5&format=csv",
])
def test_validators_still_answer_conditional_requests(client: Any, loaded: Runtime,
                                                      query: str) -> None:
    url = f"{RECORDS}?{query}"
    first = client.get(url)
    etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
    assert first.status_code == 200 and first.headers["Cache-Control"] == "public, max-age=60"

    assert client.get(url, headers={"If-None-Match": etag}).status_code == 304
    assert client.get(url, headers={"If-Modified-Since": modified}).status_code == 304
    assert client.get(url).headers["ETag"] == etag


def test_a_filtered_page_still_asks_the_planner(loaded: Runtime,
                                                analyzed: tuple[int, float]) -> None:
    sent, response = statements_of(loaded, f"{RECORDS}?district=3&limit=5")

    assert any(s.startswith("EXPLAIN") for s in sent), sent
    assert sum("reltuples" in s for s in sent) == 1  # only with the validators
    assert response.get_json()["count"] == 5


def _whole_table(loaded: Runtime, args: dict[str, list[str]]
                 ) -> tuple[sa.Table, RecordQuery, list[sa.ColumnElement[Any]]]:
    dataset = loaded.catalog.get("slmpd-crime")
    table = dataset_table(dataset, sa.MetaData())
    query = parse_query(dataset, table, args)
    return table, query, output_columns(dataset, table, query)


def test_an_overestimated_result_is_counted_in_the_page_statement(
        loaded: Runtime, analyzed: tuple[int, float]) -> None:
    stored, _ = analyzed
    table, query, columns = _whole_table(loaded, {"order": ["-date_occur"], "limit": ["7"]})
    engine = loaded.database.engine()
    sent: list[str] = []
    sa.event.listen(engine, "before_cursor_execute",
                    lambda _c, _cur, statement, *_: sent.append(statement))
    with engine.connect() as conn:
        # The planner says twice as many as are stored, over the exact limit (= stored):
        # the count, stopping past the limit, finds every record and is exact.
        _, rows, total, estimated = read_page(conn, table, query, columns,
                                              exact_limit=stored, table_rows=2.0 * stored)
        assert len(sent) == 1 and "count(*)" in sent[0]
        # One fewer than stored is the limit: the count stops there, the total is the
        # estimate, flagged.
        sent.clear()
        _, _, over, over_estimated = read_page(conn, table, query, columns,
                                               exact_limit=stored - 1,
                                               table_rows=2.0 * stored)
        assert len(sent) == 1
    engine.dispose()
    assert (len(rows), total, estimated) == (8, stored, False)  # limit + 1 rows
    assert (over, over_estimated) == (2 * stored, True)
    assert 2 * stored <= TRUSTED_ESTIMATE_FACTOR * (stored - 1)


def test_a_counted_page_past_the_end_counts_on_its_own(
        loaded: Runtime, analyzed: tuple[int, float]) -> None:
    stored, _ = analyzed
    with loaded.database.connect() as raw:
        last = raw.execute(f"SELECT max(_key) FROM "  # noqa: S608 - catalog name
                           f"{loaded.catalog.get('slmpd-crime').table_name}").fetchone()
    assert last is not None
    cursor = encode_cursor([last[0]], RecordQuery())
    table, query, columns = _whole_table(loaded, {"cursor": [cursor]})
    engine = loaded.database.engine()
    with engine.connect() as conn:
        _, rows, total, estimated = read_page(conn, table, query, columns,
                                              exact_limit=stored, table_rows=2.0 * stored)
    engine.dispose()
    assert (rows, total, estimated) == ([], stored, False)


def test_json_records_write_what_the_row_encoder_writes(loaded: Runtime) -> None:
    dataset = loaded.catalog.get("slmpd-crime")
    table = dataset_table(dataset, sa.MetaData())
    query = parse_query(dataset, table, {"order": ["-date_occur"]})
    names = visible_names(dataset, query)
    keys = [c.name for c in output_columns(dataset, table, query)]
    types = dataset.column_types()
    assert types["date_occur"] == "datetime" and types["coded_month"] == "month"

    def row(occurred: datetime | None, month: date | None) -> list[Any]:
        values: list[Any] = [None] * len(keys)
        values[keys.index("_key")] = "k"
        values[keys.index("date_occur")] = occurred
        values[keys.index("coded_month")] = month
        values[keys.index("count")] = 1
        return values

    rows = [
        row(datetime(2018, 1, 1, 5, 59, tzinfo=UTC), date(2017, 12, 1)),
        row(datetime(2017, 7, 4, 3, 0, 0, 250, tzinfo=UTC), date(2017, 7, 1)),
        # Before standard time: Chicago's local mean time is 5:50:36 behind UTC, which
        # orjson would round to a whole minute.
        row(datetime(1850, 1, 1, tzinfo=UTC), date(1850, 1, 1)),
        row(None, None),
    ]
    layout = exports.Layout(dataset, names, keys)
    expected = orjson.dumps([layout.record(layout.values(r)) for r in rows])

    written = orjson.dumps(json_records(dataset, names, keys, rows))

    assert written == expected
    items = orjson.loads(written)
    assert items[0]["date_occur"] == "2017-12-31T23:59:00-06:00"
    assert items[1]["date_occur"] == "2017-07-03T22:00:00.000250-05:00"
    assert items[2]["date_occur"] == "1849-12-31T18:09:24-05:50:36"
    assert items[0]["coded_month"] == "2017-12-01" and items[3]["date_occur"] is None

    # Some columns only, in another order than selected.
    chosen = parse_query(dataset, table, {"fields": ["crime,date_occur"],
                                          "order": ["-coded_month"]})
    chosen_names = visible_names(dataset, chosen)
    chosen_keys = [c.name for c in output_columns(dataset, table, chosen)]
    picked = [[{"_key": "k", "crime": "0101", "date_occur": datetime(2017, 1, 1, tzinfo=UTC),
                "coded_month": date(2017, 1, 1)}.get(k) for k in chosen_keys]]
    assert orjson.loads(orjson.dumps(json_records(dataset, chosen_names, chosen_keys,
                                                  picked))) == [
        {"_key": "k", "crime": "0101", "date_occur": "2016-12-31T18:00:00-06:00"}]
