"""Columns declared ``auto`` get the narrowest type that fits every value of the source."""

from __future__ import annotations

from pathlib import Path

import pytest

from stldata.api.app import create_app
from stldata.catalog import load_dataset
from stldata.ingest.infer import TypeInference
from stldata.runtime import Runtime

from conftest import ingest, project, query


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["1", "-2", "03"], "integer"),
        (["1", "2", "12.5"], "number"),
        (["Y", "N", "y"], "boolean"),
        (["0", "1", "1"], "integer"),
        (["2017-05", "2018-12"], "month"),
        (["2017-05-01", "2018-12-31"], "date"),
        (["5/10/2017 13:30", "2018-01-05 16:18:08.673"], "datetime"),
        (["1", "2", "N/A"], "text"),
        ([], "text"),
    ],
)
def test_narrowest_type_over_every_value(values: list[str], expected: str) -> None:
    inference = TypeInference(["c"], "America/Chicago")
    for value in values:
        inference.add("c", value)
    assert inference.result() == {"c": expected}


CATALOG = """
id = "auto-demo"
title = "A dataset whose column types nobody declared"
key = ["id"]
mode = "full"
[source]
url = "https://example.org/demo.csv"
null_values = ["", "NA"]
[[columns]]
name = "id"
type = "integer"
required = true
[[columns]]
name = "amount"
type = "auto"
[[columns]]
name = "seen_at"
type = "auto"
[[columns]]
name = "note"
type = "auto"
[[columns]]
name = "flag"
type = "auto"
"""


def write_source(path: Path, rows: int, late: dict[str, str]) -> Path:
    lines = ["id,amount,seen_at,note,flag"]
    for i in range(1, rows + 1):
        cells = {"amount": str(i), "seen_at": f"1/{i % 28 + 1}/2019 10:00",
                 "note": str(i * 7), "flag": "Y" if i % 2 else "N"}
        if i == rows - 5:
            cells.update(late)  # odd values near the end of the file
        lines.append(f"{i},{cells['amount']},{cells['seen_at']},{cells['note']},"
                     f"{cells['flag']}")
    path.write_text("\r\n".join(lines) + "\r\n")
    return path


def test_late_odd_values_widen_the_type_and_never_abort(runtime: Runtime,
                                                       tmp_path: Path) -> None:
    (tmp_path / "auto-demo.toml").write_text(CATALOG)
    runtime.catalog.datasets["auto-demo"] = load_dataset(tmp_path / "auto-demo.toml")
    source = write_source(tmp_path / "demo.csv", 5000, {"amount": "12.5", "note": "N/A"})

    summary = ingest(runtime, "auto-demo", source)
    project(runtime)

    assert summary.rows_read == 5000 and summary.quarantined == 0
    types = dict(query(runtime, "SELECT column_name, data_type FROM information_schema.columns"
                                " WHERE table_name = 'ds_auto_demo'"))
    assert types["amount"] == "double precision"
    assert types["seen_at"] == "timestamp with time zone"
    assert types["note"] == "text"
    assert types["flag"] == "boolean"
    assert query(runtime, "SELECT count(*) FROM ds_auto_demo WHERE amount = 12.5")[0][0] == 1

    client = create_app(runtime).test_client()
    body = client.get("/api/v1/datasets/auto-demo/records?amount__gte=4990&limit=50").get_json()
    assert len(body["items"]) == 10  # 4990-5000 but 4995, whose amount is 12.5
    meta = client.get("/api/v1/datasets/auto-demo").get_json()
    assert {c["name"]: c["type"] for c in meta["columns"]}["flag"] == "boolean"

    # The type is pinned: a later source whose values do not fit is quarantined.
    write_source(source, 100, {"amount": "lots"})
    again = ingest(runtime, "auto-demo", source)
    project(runtime)
    assert again.quarantined == 1
    assert query(runtime, "SELECT type FROM column_types WHERE column_name = 'amount'"
                 ) == [("number",)]
    assert query(runtime, "SELECT raw_value FROM quarantine WHERE column_name = 'amount'"
                 ) == [("lots",)]
