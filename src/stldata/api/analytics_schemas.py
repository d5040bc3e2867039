"""Request and response schemas of the aggregate and SoQL endpoints (for the OpenAPI spec).

Column filters and Socrata's ``column=value`` depend on the dataset, so both query schemas
let unknown parameters through; the endpoints check them against the catalog.
"""

from __future__ import annotations

from apiflask import Schema, fields
from marshmallow import INCLUDE

from stldata.api.digits import WholeNumber

AGGREGATE_HELP = (
    "Group the records and compute metrics. `group_by`: comma-separated columns and date "
    "buckets `year(c)`, `month(c)`, `day(c)`, `dow(c)` (0 = Sunday), `hour(c)` (0-23); "
    "datetime buckets are in the dataset's time zone. `metrics`: `count`, `count(c)`, "
    "`sum(c)`, `avg(c)`, `min(c)`, `max(c)`, `count_distinct(c)` (default `count`). Output "
    "fields are named `month_date_occur`, `sum_count`... Every records filter applies "
    "(`district=5`, `date_occur__gte=2017-05-01`, `q=`...). `having`: comma-separated "
    "`name__op:value` with op eq, ne, gt, gte, lt, lte (`count__gt:10`). `order`: fields, "
    "`-` for descending (`-count`); groups are sorted ascending after it. `as_of`: a "
    "snapshot id or ISO-8601 time (time travel). Requests a declared aggregate covers "
    "(see the dataset's catalog) are answered from its maintained table: `source` says "
    "which."
)


class AggregateQuery(Schema):
    class Meta:
        unknown = INCLUDE

    group_by = fields.String(metadata={
        "description": "Comma-separated columns and buckets.",
        "example": "neighborhood,month(date_occur)"})
    metrics = fields.String(metadata={
        "description": "Comma-separated metrics (default count).",
        "example": "count,sum(count)"})
    having = fields.String(metadata={
        "description": "Comma-separated name__op:value conditions on groups.",
        "example": "count__gt:10"})
    order = fields.String(metadata={
        "description": "Comma-separated output fields; - for descending.",
        "example": "-count"})
    limit = WholeNumber(metadata={
        "description": "Groups to return, 1-10000 (default 1000)."})
    as_of = fields.String(metadata={
        "description": "Aggregate the records as they were at a snapshot id or time."})


class AggregatePage(Schema):
    dataset = fields.String()
    group_by = fields.List(fields.String(), metadata={"description": "Group fields."})
    metrics = fields.List(fields.String(), metadata={"description": "Metric fields."})
    source = fields.String(metadata={
        "description": "records, or aggregate:<name> when a declared aggregate answered.",
        "example": "aggregate:by_neighborhood_month"})
    as_of_snapshot = fields.Integer(allow_none=True)
    count = fields.Integer(metadata={"description": "Groups returned."})
    truncated = fields.Boolean(metadata={"description": "More groups exist than limit."})
    items = fields.List(fields.Dict(), metadata={"description": "One object per group."})


SOQL_HELP = (
    "Socrata-compatible query (SoQL). `$select` (expressions with `AS` aliases, `*`), "
    "`$where`, `$order` (`ASC`/`DESC`), `$group`, `$having`, `$limit` (default 1000, at "
    "most 50000), `$offset`, `$q` (full-text search) and `column=value` equality "
    "filters. Expressions: literals ('it''s', 12, 1.5, true, null), columns, + - * / %, "
    "||, = != <> < <= > >=, AND, OR, NOT, IS [NOT] NULL, [NOT] IN (...), [NOT] BETWEEN "
    "... AND ..., [NOT] LIKE, and the functions count(*), count, sum, avg, min, max, "
    "upper, lower, date_trunc_y, date_trunc_ym, date_trunc_ymd, date_extract_y, "
    "date_extract_m, date_extract_d, date_extract_dow, date_extract_hh, starts_with, "
    "contains, within_box(location, north_lat, west_lon, south_lat, east_lon). A string "
    "compared with a column is read as the column's type ('2017-05-01'). Errors are 400 "
    "problems naming the parameter and the position of the problem. The extension "
    "`.json`, `.csv` or `.geojson` picks the format; GeoJSON needs a dataset with "
    "coordinates."
)


class SoqlQuery(Schema):
    class Meta:
        unknown = INCLUDE

    select = fields.String(data_key="$select", metadata={
        "example": "neighborhood, count(*) AS crimes"})
    where = fields.String(data_key="$where", metadata={
        "example": "district = 5 AND date_occur >= '2017-05-01'"})
    order = fields.String(data_key="$order", metadata={"example": "crimes DESC"})
    group = fields.String(data_key="$group", metadata={"example": "neighborhood"})
    having = fields.String(data_key="$having", metadata={"example": "count(*) > 10"})
    limit = WholeNumber(data_key="$limit", metadata={
        "description": "Rows to return, 1-50000 (default 1000)."})
    offset = WholeNumber(data_key="$offset", metadata={"description": "Rows to skip."})
    q = fields.String(data_key="$q", metadata={"description": "Full-text search."})
