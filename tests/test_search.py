"""Full-text search: ``q=`` on a dataset and ``/api/v1/search`` across datasets.

Expected matches are computed in Python from the raw June 2018 file: a record matches a
word when one of its text columns holds that word or an inflection the English stemmer
folds into it (listed by hand below)."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from stldata.api.paging import build_select
from stldata.api.query import dataset_table, output_columns, parse_query
from stldata.catalog import Column
from stldata.projection.search_index import search_index_name
from stldata.projection.tables import ensure_table
from stldata.runtime import Runtime

from conftest import CRIME_SAMPLES, plan_of, read_raw_csv

RECORDS = "/api/v1/datasets/slmpd-crime/records"
JUNE = RECORDS + "?coded_month=2018-06"
#: The raw columns that become the dataset's text columns.
TEXT = ("Complaint", "Crime", "Description", "ILEADSAddress", "ILEADSStreet", "LocationName",
        "LocationComment", "CADAddress", "CADStreet")
#: Words and the spellings that share their English stem.
FORMS = {
    "burglary": {"burglary", "burglaries"},
    "robbery": {"robbery", "robberies"},
    "residence": {"residence", "residences", "residential"},
    # The publisher truncates to VEHICL, which is also the stem of "vehicle".
    "vehicle": {"vehicle", "vehicles", "vehicl"},
}


def pages(client: Any, url: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while url:
        body = client.get(url).get_json()
        items += body["items"]
        url = body["next"]
    return items


def june_words() -> list[set[str]]:
    """The words of each June record's text columns, lower-cased."""
    header, rows = read_raw_csv(CRIME_SAMPLES / "june2018.csv")
    index = [header.index(c) for c in TEXT]
    return [set(re.findall(r"[a-z0-9]+", " ".join(r[i] for i in index).lower()))
            for r in rows]


def has(words: set[str], word: str) -> bool:
    return bool(words & FORMS[word])


@pytest.mark.parametrize("word", ["burglary", "robbery", "vehicle"])
def test_q_finds_every_record_with_the_word(client: Any, word: str) -> None:
    items = pages(client, f"{JUNE}&q={word}&limit=1000")
    expected = sum(1 for w in june_words() if has(w, word))
    assert len(items) == expected > 0
    assert len({i["_key"] for i in items}) == len(items)
    # Best first, and the keyset cursor walks ties of equal rank without losing any.
    ranks = [i["_rank"] for i in items]
    assert ranks == sorted(ranks, reverse=True) and all(r > 0 for r in ranks)
    walked = pages(client, f"{JUNE}&q={word}&limit=7")
    assert [i["_key"] for i in walked] == [i["_key"] for i in items]


def test_web_search_syntax_or_and_not(client: Any) -> None:
    words = june_words()
    either = pages(client, f"{JUNE}&q=burglary or robbery&limit=1000")
    assert len(either) == sum(1 for w in words if has(w, "burglary") or has(w, "robbery"))
    without = pages(client, f"{JUNE}&q=burglary -residence&limit=1000")
    assert len(without) == sum(1 for w in words
                               if has(w, "burglary") and not has(w, "residence")) > 0
    both = client.get(f"{JUNE}&q=burglary residence&limit=1").get_json()
    assert both["total"] == sum(1 for w in words
                                if has(w, "burglary") and has(w, "residence")) > 0


def test_q_combines_with_filters_order_and_fields(client: Any) -> None:
    items = pages(client, f"{JUNE}&q=burglary&district=3&order=date_occur"
                          "&fields=description,district&limit=1000")
    assert items and all(i["district"] == 3 for i in items)
    assert all("BURGLARY" in i["description"] for i in items)
    assert list(items[0]) == ["_key", "description", "district", "_rank"]


def test_search_uses_the_gin_index(loaded: Runtime) -> None:
    """The query's document expression is the indexed one: with sequential scans off,
    PostgreSQL reaches the records through the index."""
    dataset = loaded.catalog.get("slmpd-crime")
    table = dataset_table(dataset, sa.MetaData())
    query = parse_query(dataset, table, {"q": ["burglary"]})
    statement = build_select(table, query, output_columns(dataset, table, query))
    engine = loaded.database.engine()
    with engine.connect() as conn:
        conn.execute(sa.text("SET enable_seqscan = off"))
        plan = plan_of(conn, statement)
    engine.dispose()
    name = search_index_name(dataset)
    assert name and f"Bitmap Index Scan on {name}" in plan, plan


def test_search_across_datasets(client: Any) -> None:
    body = client.get("/api/v1/search?q=burglary&limit=3").get_json()
    crime = next(d for d in body["datasets"] if d["dataset"] == "slmpd-crime")
    every = client.get(f"{RECORDS}?q=burglary&limit=1").get_json()
    assert crime["total"] == every["total"] > 0
    assert crime["total_is_estimate"] is False
    assert len(crime["hits"]) == 3
    assert [h["rank"] for h in crime["hits"]] == sorted((h["rank"] for h in crime["hits"]),
                                                         reverse=True)
    for hit in crime["hits"]:
        record = client.get(hit["links"]["self"]).get_json()["record"]
        assert record["_key"] == hit["key"]
        assert "BURGLARY" in record["description"]
    listed = client.get(crime["links"]["records"] + "&limit=1000").get_json()
    assert listed["total"] == crime["total"]
    # Datasets without a hit are left out.
    assert all(d["total"] > 0 for d in body["datasets"])


def test_search_across_datasets_finds_311_requests(client: Any) -> None:
    body = client.get("/api/v1/search?q=" + quote("street lights")).get_json()
    names = [d["dataset"] for d in body["datasets"]]
    assert "csb-311" in names
    csb = body["datasets"][names.index("csb-311")]
    direct = client.get("/api/v1/datasets/csb-311/records?q=street+lights&limit=1000"
                        "&fields=description,problem_code").get_json()
    assert csb["total"] == direct["total"] > 0
    assert all("light" in " ".join(str(v) for v in i.values()).lower()
               for i in direct["items"])


def test_search_parameters_are_checked(client: Any) -> None:
    for url, param in (("/api/v1/search", "q"), ("/api/v1/search?q=x&limit=0", "limit"),
                       ("/api/v1/search?q=%20", "q")):
        response = client.get(url)
        assert response.status_code == 400, url
        assert [p["name"] for p in response.get_json()["invalid_params"]] == [param]


def test_search_index_follows_the_text_columns(runtime: Runtime) -> None:
    """A dataset that gains a text column gets a new index on the new document and loses
    the old one."""
    dataset = runtime.catalog.get("slmpd-crime")
    wider = replace(dataset, columns=(*dataset.columns, Column(name="extra_note")))

    def indexes() -> set[str]:
        with runtime.database.connect() as conn:
            rows = conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = %s",
                                (dataset.table_name,)).fetchall()
        return {str(r[0]) for r in rows}

    with runtime.database.transaction() as conn:
        ensure_table(conn, dataset)
    assert search_index_name(dataset) in indexes()
    with runtime.database.transaction() as conn:
        ensure_table(conn, wider)
    after = indexes()
    assert search_index_name(wider) in after and search_index_name(dataset) not in after
    assert search_index_name(wider) != search_index_name(dataset)
    assert f"{dataset.table_name}__point_udeg" in after
