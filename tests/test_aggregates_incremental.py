"""Declared aggregates follow every snapshot incrementally and equal a fresh GROUP BY.

The flow publishes January 2017, adds May 2017, re-publishes January with a row moved to
another neighborhood, rows withdrawn and a row added, then re-publishes May cut in half:
after each snapshot the maintained table must equal the same aggregate computed from
scratch over the records, and counts per neighborhood must equal those read off the raw
files with the csv module.
"""

from __future__ import annotations

import csv
import io
import logging
import shutil
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from stldata.catalog import Catalog
from stldata.projection.aggregates import Plan, _grouped_state, plan
from stldata.runtime import Runtime

from conftest import (
    CRIME_SAMPLES,
    ROOT,
    _runtime,
    ingest,
    make_settings,
    project,
    query,
    read_raw_csv,
)

JANUARY = "january2017.csv"
MAY = "may2017.csv"

#: A second declaration that needs every kind of maintenance: distinct counts and min/max
#: (recomputed where rows left a group), float sums, and buckets of several kinds.
EXTRA = '''
[[aggregates]]
name = "by_district_dow"
group_by = ["district", "dow(date_occur)", "year(coded_month)"]
metrics = ["count", "count(complaint)", "count_distinct(crime)", "avg(x_coord)",
           "min(crime)", "max(date_occur)", "sum(count)"]
'''


@pytest.fixture
def crime_runtime(database_url: str, tmp_path: Path) -> Runtime:
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    text = (ROOT / "catalog" / "slmpd-crime.toml").read_text(encoding="utf-8")
    (catalog / "slmpd-crime.toml").write_text(text + EXTRA, encoding="utf-8")
    base = make_settings(database_url, tmp_path / "home")
    return _runtime(base.model_copy(update={"catalog_dir": catalog}))


def _plans(runtime: Runtime) -> list[Plan]:
    dataset = Catalog.load(runtime.settings.catalog_dir).get("slmpd-crime")
    return [plan(dataset, a) for a in dataset.aggregates]


def _normal(value: Any) -> Any:
    if isinstance(value, (float, Decimal)):
        return round(float(value), 4)
    return value


def _rows(runtime: Runtime, sql: str, params: tuple[Any, ...] = ()) -> Counter[tuple[Any, ...]]:
    return Counter(tuple(_normal(v) for v in row) for row in query(runtime, sql, params))


def _from_scratch(runtime: Runtime, p: Plan) -> Counter[tuple[Any, ...]]:
    from sqlalchemy.dialects.postgresql import psycopg

    compiled = _grouped_state(p, p.source(), None).compile(dialect=psycopg.dialect())
    with runtime.database.connect() as conn:
        rows = conn.execute(compiled.string, compiled.params).fetchall()  # type: ignore[arg-type]
    return Counter(tuple(_normal(v) for v in row) for row in rows)


def assert_in_step(runtime: Runtime) -> None:
    for p in _plans(runtime):
        names = ", ".join(f'"{c.name}"' for c in p.table().c)
        maintained = _rows(runtime, f"SELECT {names} FROM {p.table_name}")
        assert maintained == _from_scratch(runtime, p), p.aggregate.name
        assert maintained  # a table with rows, not two empty results


def raw_neighborhood_counts(folder: Path) -> Counter[int | None]:
    """Rows per neighborhood over every file of the folder, read with the csv module."""
    counts: Counter[int | None] = Counter()
    for path in sorted(folder.iterdir()):
        header, rows = read_raw_csv(path)
        at = header.index("Neighborhood")
        for row in rows:
            cell = row[at].strip()
            counts[int(cell) if cell else None] += 1
    return counts


def rewrite(path: Path, edit: Any) -> None:
    """Rewrite a publisher's file row by row (cp1252, CRLF), as a re-publication would."""
    lines = path.read_bytes().split(b"\r\n")
    while lines and not lines[-1]:
        lines.pop()
    rows = [next(csv.reader([line.decode("cp1252")])) for line in lines]
    rows = edit(rows)
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(rows)
    path.write_bytes(out.getvalue().encode("cp1252"))


def test_declared_aggregates_follow_changed_and_removed_records(
        crime_runtime: Runtime, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    runtime = crime_runtime
    caplog.set_level(logging.INFO, logger="stldata.projection.aggregates")
    folder = tmp_path / "crime"
    folder.mkdir()
    shutil.copy(CRIME_SAMPLES / JANUARY, folder / JANUARY)
    table = "agg_slmpd_crime__by_neighborhood_month"

    def step() -> None:
        assert ingest(runtime, "slmpd-crime", folder).snapshot_id is not None
        project(runtime)
        assert_in_step(runtime)
        per_neighborhood = Counter({n: int(c) for n, c in query(
            runtime, f"SELECT g0, sum(_rows) FROM {table} GROUP BY g0")})
        assert per_neighborhood == raw_neighborhood_counts(folder)

    step()
    shutil.copy(CRIME_SAMPLES / MAY, folder / MAY)
    step()

    def republish_january(rows: list[list[str]]) -> list[list[str]]:
        header = rows[0]
        # The first header cell carries the file's byte order mark (read as cp1252).
        at = {name: next(i for i, h in enumerate(header) if h.endswith(name))
              for name in ("Neighborhood", "Count", "Complaint")}
        moved = rows[10]
        moved[at["Neighborhood"]] = "88" if moved[at["Neighborhood"]].strip() != "88" else "1"
        moved[at["Count"]] = "-1"
        added = list(rows[30])
        added[at["Complaint"]] = "17-999999"
        return [*rows[:20], *rows[26:], added]  # five rows withdrawn, one added

    rewrite(folder / JANUARY, republish_january)
    step()
    changed = query(runtime, "SELECT changed, deleted, added FROM snapshots ORDER BY id DESC "
                             "LIMIT 1")[0]
    assert changed[0] >= 1 and changed[1] >= 5 and changed[2] >= 1

    rewrite(folder / MAY, lambda rows: rows[: len(rows) // 2])
    step()

    # Built once from scratch at the first snapshot, then only moved by each change.
    built = [r for r in caplog.records if "built from the current records" in r.getMessage()]
    assert len(built) == 2  # one per declared aggregate
    assert {r[0] for r in query(runtime, "SELECT snapshot_id FROM aggregate_tables")} == {
        query(runtime, "SELECT max(id) FROM snapshots")[0][0]}


def test_sum_of_count_matches_the_raw_files(crime_runtime: Runtime, tmp_path: Path) -> None:
    """sum(count) per month of occurrence, computed from the CSV by hand, for May 2017."""
    runtime = crime_runtime
    folder = tmp_path / "crime"
    folder.mkdir()
    shutil.copy(CRIME_SAMPLES / MAY, folder / MAY)
    ingest(runtime, "slmpd-crime", folder)
    project(runtime)

    header, rows = read_raw_csv(folder / MAY)
    at_date, at_count = header.index("Date Occur"), header.index("Count")
    expected: Counter[str | None] = Counter()
    for row in rows:
        text = row[at_date].strip()
        month_text, _, rest = text.partition("/")
        year = rest.split("/")[1][:4]
        month = None if year == "1900" else f"{year}-{int(month_text):02d}"
        expected[month] += int(row[at_count])
    got = {(m.strftime("%Y-%m") if m else None): int(s) for m, s in query(
        runtime, "SELECT g1, sum(m1_sum) FROM agg_slmpd_crime__by_neighborhood_month "
                 "GROUP BY g1")}
    assert got == {k: v for k, v in expected.items()}


def test_an_undeclared_aggregate_is_dropped(crime_runtime: Runtime, tmp_path: Path) -> None:
    runtime = crime_runtime
    folder = tmp_path / "crime"
    folder.mkdir()
    shutil.copy(CRIME_SAMPLES / JANUARY, folder / JANUARY)
    ingest(runtime, "slmpd-crime", folder)
    project(runtime)
    assert query(runtime, "SELECT to_regclass('agg_slmpd_crime__by_district_dow')")[0][0]

    toml = runtime.settings.catalog_dir / "slmpd-crime.toml"
    toml.write_text(toml.read_text(encoding="utf-8").replace(EXTRA, ""), encoding="utf-8")
    runtime = _runtime(runtime.settings)
    shutil.copy(CRIME_SAMPLES / MAY, folder / MAY)
    ingest(runtime, "slmpd-crime", folder)
    project(runtime)
    assert query(runtime, "SELECT to_regclass('agg_slmpd_crime__by_district_dow')")[0][0] is None
    assert [r[0] for r in query(runtime, "SELECT name FROM aggregate_tables")] == [
        "by_neighborhood_month"]
    assert_in_step(runtime)


@pytest.mark.parametrize(("declaration", "words"), [
    ('name = "x"\ngroup_by = ["nope"]\nmetrics = ["count"]', "unknown column 'nope'"),
    ('name = "x"\ngroup_by = ["hour(coded_month)"]\nmetrics = ["count"]',
     "hour() applies to datetime"),
    ('name = "x"\ngroup_by = ["district"]\nmetrics = ["sum(beat)"]',
     "sum() applies to integer or number"),
    ('name = "x"\ngroup_by = ["district"]\nmetrics = ["median(count)"]',
     "unknown function 'median'"),
    ('name = "Bad Name"\ngroup_by = ["district"]\nmetrics = ["count"]', "lower_snake_case"),
    ('name = "x"\ngroup_by = ["district"]', "group_by and metrics are required"),
    ('name = "x"\ngroup_by = ["district"]\nmetrics = ["count"]\nwhere = "y"', "unknown keys"),
    ('name = "x"\ngroup_by = ["district", "district"]\nmetrics = ["count"]', "repeat"),
])
def test_bad_declarations_are_catalog_errors(tmp_path: Path, declaration: str,
                                             words: str) -> None:
    from stldata.catalog import CatalogError, load_dataset

    path = tmp_path / "slmpd-crime.toml"
    text = (ROOT / "catalog" / "slmpd-crime.toml").read_text(encoding="utf-8")
    path.write_text(text + "\n[[aggregates]]\n" + declaration + "\n", encoding="utf-8")
    with pytest.raises(CatalogError) as caught:
        load_dataset(path)
    assert words in str(caught.value)
