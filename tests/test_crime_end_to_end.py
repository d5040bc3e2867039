"""The bundled SLMPD crime months, from raw files through the log to the API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conftest import CRIME_SAMPLES, pages, query, read_raw_csv

MONTHS = sorted(CRIME_SAMPLES.iterdir())


def month_of(path: Path) -> tuple[str, int, int]:
    """(coded month, row count, sum of Count) straight from the raw file."""
    header, rows = read_raw_csv(path)
    names = [h.replace("-", "").replace(" ", "") for h in header]
    month_col = names.index("CodedMonth") if "CodedMonth" in names else names.index(
        "MonthReportedtoMSHP")
    count_col = names.index("Count")
    months = {r[month_col] for r in rows}
    assert len(months) == 1
    return months.pop(), len(rows), sum(int(r[count_col]) for r in rows)



@pytest.mark.parametrize("path", MONTHS, ids=[p.name for p in MONTHS])
def test_each_month_sums_and_counts_like_the_raw_file(client: Any, path: Path) -> None:
    month, rows, total = month_of(path)
    items = pages(client, f"/api/v1/datasets/slmpd-crime/records?coded_month={month}"
                              "&limit=1000")
    assert len(items) == rows
    assert sum(i["count"] for i in items) == total
    assert len({i["_key"] for i in items}) == rows


def test_row_count_in_metadata_matches_the_files(client: Any) -> None:
    body = client.get("/api/v1/datasets/slmpd-crime").get_json()
    assert body["row_count"] == sum(month_of(p)[1] for p in MONTHS)
    assert body["latest_snapshot"]["status"] == "committed"
    assert {c["name"]: c["type"] for c in body["columns"]}["date_occur"] == "datetime"


def test_source_text_survives_byte_for_byte(client: Any) -> None:
    """Rows with Windows-1252 characters, and a sample of the others, come back exactly
    as the publisher wrote them, in the file's column order."""
    runtime = client.application.extensions["stldata.read_model"].runtime
    checked = non_ascii = 0
    for path in MONTHS:
        header, rows = read_raw_csv(path)
        for line, row in enumerate(rows, start=2):
            special = any(ord(ch) > 127 for cell in row for ch in cell)
            if not special and line % 500:
                continue
            key = query(runtime, "SELECT _key FROM ds_slmpd_crime "
                                 "WHERE _partition = %s AND _line = %s", (path.name, line))[0][0]
            record = client.get(f"/api/v1/datasets/slmpd-crime/records/{key}").get_json()
            source = record["record"]["_source"]
            assert list(source) == header
            assert [v.encode("cp1252") for v in source.values()] == [
                c.encode("cp1252") for c in row]
            checked += 1
            non_ascii += special
    assert non_ascii >= 3 and checked > 50


def test_quirks_are_cleaned(loaded: Any) -> None:
    # The 01/01/1900 placeholder is empty, its raw text kept in the source row.
    placeholder = query(loaded, "SELECT date_occur, _source FROM ds_slmpd_crime "
                                "WHERE _source::text LIKE '%%01/01/1900 00:00%%'")
    assert placeholder and all(d is None for d, _ in placeholder)
    # 0,0 means not geocoded: no position, never a point in the Gulf of Guinea.
    rows = query(loaded, "SELECT count(*) FROM ds_slmpd_crime WHERE x_coord = 0 "
                         "AND longitude IS NOT NULL")
    assert rows[0][0] == 0
    bounds = query(loaded, "SELECT min(longitude), max(longitude), min(latitude), "
                           "max(latitude) FROM ds_slmpd_crime")[0]
    assert -91.5 <= bounds[0] < bounds[1] <= -89.5 and 38.0 <= bounds[2] < bounds[3] <= 39.5
    in_city = query(loaded, "SELECT avg((longitude BETWEEN -90.33 AND -90.16 AND latitude "
                            "BETWEEN 38.53 AND 38.78)::int) FROM ds_slmpd_crime "
                            "WHERE longitude IS NOT NULL")[0][0]
    assert in_city > 0.99
    # Leading spaces of crime codes and fixed-width padding are gone.
    padded = query(loaded, "SELECT count(*) FROM ds_slmpd_crime WHERE crime LIKE ' %%' "
                           "OR description LIKE '%% ' OR ileads_street LIKE '%% '")
    assert padded[0][0] == 0
    # The May 2017 variant with spaced column names maps to the same columns.
    may = query(loaded, "SELECT count(*), count(complaint), count(date_occur) "
                        "FROM ds_slmpd_crime WHERE _partition = 'may2017.csv'")[0]
    assert may[0] == 4548 and may[1] == 4548 and may[2] >= 4540
