"""The ranking table beside a dataset table: kept equal to the table through every kind of
write, and the ranked pages read from it equal to ranking the records themselves."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from stldata.api import paging
from stldata.catalog import Column
from stldata.projection import apply
from stldata.projection.search_index import ranking_table_name
from stldata.projection.tables import ensure_table
from stldata.runtime import Runtime
from test_snapshots import MONTH, crime_folder, republish_month

from conftest import CRIME_SAMPLES, ingest, pages, project, query

TABLE = "ds_slmpd_crime"
RANKING = ranking_table_name(TABLE)
RECORDS = "/api/v1/datasets/slmpd-crime/records"


def mismatches(runtime: Runtime) -> tuple[int, int]:
    """(records whose document the ranking table lacks, ranking rows with no record)."""
    def count(left: str, right: str) -> int:
        return int(query(runtime, f"SELECT count(*) FROM (SELECT _key, _document FROM {left} "
                                  f"EXCEPT ALL SELECT _key, _document FROM {right}) d")[0][0])
    return count(TABLE, RANKING), count(RANKING, TABLE)


def test_the_ranking_table_follows_every_write(runtime: Runtime, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # A first load in bulk: the ranking table's index is dropped and built again too.
    monkeypatch.setattr(apply, "BULK_LOAD_ROWS", 1)
    folder = crime_folder(tmp_path, MONTH, "may2017.csv")
    ingest(runtime, "slmpd-crime", folder)
    project(runtime)
    loaded = query(runtime, f"SELECT count(*) FROM {TABLE}")[0][0]
    assert loaded > 8000
    assert query(runtime, f"SELECT count(*) FROM {RANKING}")[0][0] == loaded
    assert mismatches(runtime) == (0, 0)
    assert query(runtime, "SELECT count(*) FROM pg_indexes WHERE tablename = %s "
                          "AND indexdef LIKE '%%gin%%'", (RANKING,))[0][0] == 1
    # Filled once after the insert rather than by its trigger: in the search order (the
    # description), and with the trigger armed again for the writes below.
    assert query(runtime, "SELECT tgenabled FROM pg_trigger WHERE tgrelid = to_regclass(%s) "
                          "AND tgname = 'ranking_insert'", (TABLE,))[0][0] == "O"
    backwards = query(runtime, f"""
        SELECT count(*) FROM (
            SELECT t.description < lag(t.description) OVER (ORDER BY r.ctid) AS back
            FROM {RANKING} r JOIN {TABLE} t USING (_key)) o
        WHERE back""")[0][0]
    # Not zero: PostgreSQL extends a table several pages at a time and may hand them out
    # out of order, so whole pages can swap places (within a page the rows are in order).
    # In no order at all, about every second step would go backwards.
    assert backwards < loaded / 100

    # An increment that changes one record's description and drops another record.
    republish_month(folder, "ZEPPELIN ")
    ingest(runtime, "slmpd-crime", folder)
    project(runtime)

    assert query(runtime, "SELECT changed, deleted FROM snapshots WHERE id = 2")[0] == (1, 1)
    assert query(runtime, f"SELECT count(*) FROM {RANKING}")[0][0] == loaded - 1
    assert mismatches(runtime) == (0, 0)
    found = query(runtime, f"SELECT count(*) FROM {RANKING} "
                           "WHERE _document @@ to_tsquery('english', 'zeppelin')")
    assert found[0][0] == 1

    # A full snapshot of another month removes every record of the first two.
    runtime.catalog.datasets["slmpd-crime"] = replace(
        runtime.catalog.get("slmpd-crime"), mode="full")
    june = tmp_path / "june"
    june.mkdir()
    shutil.copy(CRIME_SAMPLES / "june2018.csv", june / "june2018.csv")
    ingest(runtime, "slmpd-crime", june)
    project(runtime)
    assert query(runtime, f"SELECT count(DISTINCT _partition) FROM {TABLE}")[0][0] == 1
    assert mismatches(runtime) == (0, 0)

    # Hand edits too, down to emptying the table.
    with runtime.database.transaction() as conn:
        conn.execute(f"UPDATE {TABLE} SET description = 'AARDVARK' WHERE _key = "
                     f"(SELECT min(_key) FROM {TABLE})")
    assert mismatches(runtime) == (0, 0)
    with runtime.database.transaction() as conn:
        conn.execute(f"TRUNCATE {TABLE}")
    assert query(runtime, f"SELECT count(*) FROM {RANKING}")[0][0] == 0


def test_new_text_columns_refill_the_ranking_table(runtime: Runtime, tmp_path: Path) -> None:
    ingest(runtime, "slmpd-crime", crime_folder(tmp_path, MONTH))
    project(runtime)
    dataset = runtime.catalog.get("slmpd-crime")
    digest = query(runtime, "SELECT obj_description(to_regclass(%s), 'pg_class')",
                   (RANKING,))[0][0]

    wider = replace(dataset, columns=(*dataset.columns, Column(name="extra_note")))
    with runtime.database.transaction() as conn:
        ensure_table(conn, wider)
        conn.execute(f"UPDATE {TABLE} SET extra_note = 'quokka' WHERE district = 3")

    assert query(runtime, "SELECT obj_description(to_regclass(%s), 'pg_class')",
                 (RANKING,))[0][0] != digest
    assert mismatches(runtime) == (0, 0)
    district = query(runtime, f"SELECT count(*) FROM {TABLE} WHERE district = 3")[0][0]
    assert district > 0 and query(runtime, f"SELECT count(*) FROM {RANKING} WHERE "
                                           "_document @@ to_tsquery('quokka')")[0][0] == district


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every statement run meanwhile; and every ranked page treated as a large result, the
    only kind read from the ranking table (the sample has a few thousand records)."""
    monkeypatch.setattr(paging, "planner_estimate", lambda *_, **__: 10**9)
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", record)
    yield seen
    sa.event.remove(sa.engine.Engine, "before_cursor_execute", record)


@pytest.mark.parametrize(("text", "matches"), [
    ("burglary", "pages"), ("stolen -vehicle", "pages"), ("larceny or burglary", "pages"),
    ('"motor vehicle"', "some"),  # a phrase
    ("the", "none"),  # only a stop word: no lexeme to search for
])
def test_ranked_pages_equal_ranking_the_records(client: Any, loaded: Runtime,
                                                statements: list[str], text: str,
                                                matches: str) -> None:
    expected = query(loaded, f"""
        SELECT _key, ts_rank(_document, websearch_to_tsquery('english', %s))::float8
        FROM {TABLE} WHERE _document @@ websearch_to_tsquery('english', %s)
        ORDER BY 2 DESC, 1 DESC""", (text, text))

    walked = pages(client, f"{RECORDS}?q={quote(text)}&limit=37")

    assert [(i["_key"], i["_rank"]) for i in walked] == [tuple(r) for r in expected]
    assert any(RANKING in s for s in statements)
    sizes = {"pages": len(expected) > 37, "some": 0 < len(expected), "none": not expected}
    assert sizes[matches]  # "pages": several pages, joined by cursors


def test_ranked_pages_with_other_filters_rank_the_records(client: Any, loaded: Runtime,
                                                          statements: list[str]) -> None:
    expected = query(loaded, f"""
        SELECT _key FROM {TABLE}
        WHERE _document @@ websearch_to_tsquery('english', 'burglary') AND district = 3
        ORDER BY ts_rank(_document, websearch_to_tsquery('english', 'burglary')) DESC,
                 _key DESC""")

    walked = pages(client, f"{RECORDS}?q=burglary&district=3&limit=25")

    assert [i["_key"] for i in walked] == [r[0] for r in expected] and expected
    assert not any(RANKING in s for s in statements)
    # The search is parsed once a request, not again for each row the records' statements
    # rank or recheck (as a prepared statement's generic plan would).
    reading = [s for s in statements if f"FROM {TABLE}" in s]
    assert reading and not any("websearch_to_tsquery" in s for s in reading)


def out_of_order(runtime: Runtime, column: str, where: str = "TRUE") -> tuple[int, int]:
    """(places where the column's value goes down, records) in the ranking table's physical
    order. Rows are inserted in order, but the free space map can put a short row on an
    earlier page that still has room: a few places, not the many of the file's order."""
    values = [r[0] or "" for r in query(runtime, f"SELECT c.{column} FROM {RANKING} r "
                                                 f"JOIN {TABLE} c USING (_key) WHERE {where} "
                                                 "ORDER BY r.ctid")]
    return sum(1 for a, b in zip(values, values[1:], strict=False) if b < a), len(values)


def test_the_ranking_table_keeps_the_search_order(runtime: Runtime, tmp_path: Path) -> None:
    dataset = runtime.catalog.get("slmpd-crime")
    assert dataset.search_order == ("description",)
    ingest(runtime, "slmpd-crime", crime_folder(tmp_path, MONTH))
    project(runtime)
    downs, records = out_of_order(runtime, "description")
    assert records > 3000 and downs < records / 100
    assert out_of_order(runtime, "ileads_street")[0] > records / 10  # not in any other order

    # Another order: the table is filled again in it, and later writes follow it.
    by_street = replace(dataset, search_order=("ileads_street",))
    runtime.catalog.datasets["slmpd-crime"] = by_street
    with runtime.database.transaction() as conn:
        ensure_table(conn, by_street)
    downs, records = out_of_order(runtime, "ileads_street")
    assert downs < records / 100
    ingest(runtime, "slmpd-crime", crime_folder(tmp_path, "may2017.csv"))
    project(runtime)
    downs, records = out_of_order(runtime, "ileads_street", "c._partition = 'may2017.csv'")
    assert records > 4000 and downs < records / 100
    assert mismatches(runtime) == (0, 0)


def test_search_order_names_text_columns(tmp_path: Path) -> None:
    from stldata.catalog import CatalogError, load_dataset

    text = (Path(__file__).parents[1] / "catalog" / "slmpd-crime.toml").read_text()
    for wrong, why in (('"district"', r"\['district'\], which are not declared text"),
                       ('"no_such_column"', r"unknown columns \['no_such_column'\]"),
                       ('"beat", "beat"', "names a column twice")):
        path = tmp_path / "slmpd-crime.toml"
        path.write_text(text.replace('search_order = ["description"]',
                                     f"search_order = [{wrong}]"))
        with pytest.raises(CatalogError, match=why):
            load_dataset(path)


def test_ranking_tables_never_share_a_name() -> None:
    long = "ds_" + "saint_louis_metro_transit_route_list_june_2023_"
    names = [ranking_table_name(t) for t in (TABLE, "ds_slmpd_crime__ranking", long + "_a",
                                            long + "_b", long + "__ranking")]
    assert len(set(names)) == len(names)
    # No dataset table (ds_ + an id of a-z, 0-9 and -) can be named like a ranking table.
    assert all("$" in n and len(n) <= 63 for n in names)


def test_long_ids_sharing_a_prefix_keep_their_own_ranking_tables(runtime: Runtime) -> None:
    routes = runtime.catalog.get("metro-routes")
    twins = [replace(routes, id=f"saint-louis-metro-transit-route-list-june-2023--{x}")
             for x in "ab"]
    with runtime.database.transaction() as conn:
        for twin in twins:
            ensure_table(conn, twin)
            conn.execute(f"INSERT INTO {twin.table_name} (_key, _snapshot_id, _hash, _source,"
                         " route_long_name) VALUES ('1', 1, 'h', '{}', %s)", (twin.id,))
    for twin in twins:
        documents = query(runtime, f"SELECT _document::text FROM "
                                   f"{ranking_table_name(twin.table_name)}")
        assert len(documents) == 1 and twin.id[-1] in documents[0][0]


def test_a_ranking_table_that_lost_its_triggers_is_filled_again(
        runtime: Runtime, tmp_path: Path) -> None:
    ingest(runtime, "slmpd-crime", crime_folder(tmp_path, MONTH))
    project(runtime)
    with runtime.database.transaction() as conn:
        conn.execute(f"DROP TRIGGER ranking_delete ON {TABLE}")
        conn.execute(f"DELETE FROM {TABLE} WHERE district = 3")
    assert mismatches(runtime)[1] > 0  # rows of deleted records are left behind

    with runtime.database.transaction() as conn:
        ensure_table(conn, runtime.catalog.get("slmpd-crime"))

    assert mismatches(runtime) == (0, 0)
    with runtime.database.transaction() as conn:
        conn.execute(f"DELETE FROM {TABLE} WHERE district = 4")
    assert mismatches(runtime) == (0, 0)


def test_a_cursor_without_a_rank_is_refused(client: Any) -> None:
    from stldata.api.query import RecordQuery, encode_cursor

    ranked = RecordQuery(order=[("_rank", True)])
    cursor = encode_cursor([None, "2017-01-01|x"], ranked)
    response = client.get(f"{RECORDS}?q=burglary&cursor={cursor}")
    assert response.status_code == 400
    assert response.get_json()["invalid_params"][0]["name"] == "cursor"


def test_search_across_datasets_takes_one_q(client: Any) -> None:
    response = client.get("/api/v1/search?q=burglary&q=larceny")
    assert response.status_code == 400
    assert response.get_json()["invalid_params"] == [
        {"name": "q", "reason": "given more than once"}]


def test_search_across_datasets_ranks_through_the_ranking_table(
        client: Any, loaded: Runtime, statements: list[str]) -> None:
    expected = query(loaded, f"""
        SELECT _key, ts_rank(_document, websearch_to_tsquery('english', 'burglary'))::float8
        FROM {TABLE} WHERE _document @@ websearch_to_tsquery('english', 'burglary')
        ORDER BY 2 DESC, 1 LIMIT 7""")

    body = client.get("/api/v1/search?q=burglary&limit=7").get_json()

    crime = next(d for d in body["datasets"] if d["dataset"] == "slmpd-crime")
    assert [(h["key"], h["rank"]) for h in crime["hits"]] == [tuple(r) for r in expected]
    assert any(RANKING in s for s in statements)
