"""``GET /api/v1/search``: ranked full-text search across every dataset.

Each dataset with text columns is searched with the same indexed document and ranking as
``/records?q=`` (see :func:`stldata.api.query.search_filter`); the answer lists, per
dataset with hits, its best records with their rank and links, best datasets first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from apiflask import APIFlask, Schema, fields, validators
from flask import request

from stldata.api.digits import WholeNumber
from stldata.api.exports import record_of
from stldata.api.paging import count_matches
from stldata.api.problems import BadParameter
from stldata.api.query import (
    RANK,
    RecordQuery,
    dataset_table,
    parsed_search,
    search_filter,
)
from stldata.api.ranking import ranked_page_select
from stldata.projection.search_index import search_document_sql

if TYPE_CHECKING:
    from stldata.api.app import ReadModel


class SearchQuery(Schema):
    q = fields.String(required=True, metadata={
        "description": "Words to find (English stemming; \"a phrase\", or, -word).",
        "example": "burglary"})
    limit = WholeNumber(load_default=5, validate=validators.Range(min=1, max=100),
                        metadata={"description": "Hits per dataset (1-100, default 5)."})


class SearchHit(Schema):
    key = fields.String(metadata={"example": "2018-06-01|18-027845|..."})
    rank = fields.Float(metadata={"description": "ts_rank of the record for the query."})
    record = fields.Dict(metadata={"description": "The record's columns."})
    links = fields.Dict(metadata={"example": {"self": "/api/v1/datasets/slmpd-crime/"
                                                      "records/<key>"}})


class DatasetHits(Schema):
    dataset = fields.String(metadata={"example": "slmpd-crime"})
    title = fields.String()
    total = fields.Integer(metadata={"description": "Matching records (estimated above "
                                                    "10000, see total_is_estimate)."})
    total_is_estimate = fields.Boolean()
    best_rank = fields.Float()
    hits = fields.List(fields.Nested(SearchHit))
    links = fields.Dict(metadata={"description": "`records`: every hit, paginated."})


class SearchResults(Schema):
    q = fields.String(metadata={"example": "burglary"})
    datasets = fields.List(fields.Nested(DatasetHits))


def register(app: APIFlask, model: ReadModel) -> None:
    @app.get("/api/v1/search")
    @app.input(SearchQuery, location="query")
    @app.output(SearchResults)
    @app.doc(summary="Search every dataset", tags=["Records"],
             description="Ranked full-text search over the text columns of every dataset. "
                         "Example: `/api/v1/search?q=stolen%20vehicle&limit=3`.",
             responses={400: "Bad parameter"})
    def search_all(query_data: dict[str, Any]) -> Any:
        if len(request.args.getlist("q")) > 1:
            raise BadParameter("q", "given more than once")
        text = str(query_data["q"])
        limit = int(query_data["limit"])
        if not text.strip():
            raise BadParameter("q", "is empty")
        results = []
        tsquery: str | None = None  # parsed once, for the first dataset that has a table
        with model.connect() as conn:
            for entry in model.runtime.catalog:
                dataset = model.dataset(entry.id)
                if search_document_sql(dataset) is None:
                    continue
                exists = conn.execute(sa.text("SELECT to_regclass(:t) IS NOT NULL"),
                                      {"t": dataset.table_name}).scalar()
                if not exists:
                    continue
                if tsquery is None:
                    tsquery = parsed_search(conn, text)
                hits = _search_dataset(conn, model, dataset, text, tsquery, limit)
                if hits is not None:
                    results.append(hits)
        results.sort(key=lambda r: -float(r["best_rank"]))
        return {"q": text, "datasets": results}


def _search_dataset(conn: sa.Connection, model: ReadModel, dataset: Any, text: str,
                    tsquery: str, limit: int) -> dict[str, Any] | None:
    table = dataset_table(dataset, model.metadata)
    match, rank = search_filter(dataset, text, table, tsquery=tsquery)
    names = list(dataset.column_types())
    columns = [table.c._key, *(table.c[n] for n in names), rank.label(RANK)]
    # Best first, ties by key; read through the dataset's ranking table when it has one.
    best = RecordQuery(filters=[match], order=[(RANK, True)], key_descending=False,
                       limit=limit, computed={RANK: rank}, search=text, tsquery=tsquery)
    statement = ranked_page_select(conn, table, best, columns)
    if statement is None:
        statement = (sa.select(*columns).where(match)
                     .order_by(sa.desc(RANK), table.c._key).limit(limit))
    rows = conn.execute(statement).mappings().all()[:limit]
    if not rows:
        return None
    total, estimated = count_matches(conn, table, RecordQuery(filters=[match]))
    tz = ZoneInfo(dataset.timezone)
    base = f"/api/v1/datasets/{dataset.id}"
    return {
        "dataset": dataset.id, "title": dataset.title, "total": total,
        "total_is_estimate": estimated, "best_rank": float(rows[0][RANK]),
        "hits": [{"key": row["_key"], "rank": float(row[RANK]),
                  "record": record_of(row, names, tz),
                  "links": {"self": f"{base}/records/{quote(row['_key'], safe='')}"}}
                 for row in rows],
        "links": {"records": f"{base}/records?" + urlencode({"q": text})},
    }
