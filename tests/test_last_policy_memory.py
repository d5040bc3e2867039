"""The 'last' duplicate-key policy with no per-key memory in the ingester: every row is
published under its key, and the projection keeps the newest row of a key and quarantines
each row it supersedes, at its own file, line and position, set-based at apply time.

Expected values are worked out by hand from the small files below (and, for the bundled
3-1-1 files, by reading the raw CSVs independently of the ingester).
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Any

import orjson
import pytest

from stldata.api.app import create_app
from stldata.catalog import load_dataset
from stldata.ingest.reader import map_header
from stldata.ingest.records import RecordBuilder
from stldata.runtime import Runtime
from xlsx_maker import write_xlsx

from conftest import CSB_SAMPLES, ingest, project, query, read_raw_csv

VISITS = """
id = "visits"
title = "Visits"
key = ["visit_id"]
mode = "{mode}"
duplicate_keys = "last"
[source]
url = ""
format = "{format}"
{extra}
[[columns]]
name = "visit_id"
type = "integer"
required = true
[[columns]]
name = "n"
type = "integer"
"""

#: Published in this order: a.csv, then b.csv (files by name, rows by line).
A_CSV = "visit_id,n\n1,10\n2,x\n1,11\n3,5\n2,7\n1,y\n"   # lines 2..7
B_CSV = "visit_id,n\n3,6\n4,1\n2,8\n"                    # lines 2..4


def add_visits(runtime: Runtime, tmp_path: Path, *, mode: str = "full",
               format: str = "csv", extra: str = "") -> None:
    """The small catalog entry, added to the runtime's catalog (the projector's too)."""
    toml = tmp_path / "visits.toml"
    toml.write_text(VISITS.format(mode=mode, format=format, extra=extra))
    runtime.catalog.datasets["visits"] = load_dataset(toml)


def two_files(tmp_path: Path) -> Path:
    folder = tmp_path / "visits"
    folder.mkdir()
    (folder / "a.csv").write_text(A_CSV)
    (folder / "b.csv").write_text(B_CSV)
    return folder


def note(file: str, line: int, by_file: str, by_line: int) -> str:
    return (f"duplicate key: the row at {file} line {line} is superseded by the row at "
            f"{by_file} line {by_line}")


def quarantine(runtime: Runtime, sid: int) -> list[tuple[Any, ...]]:
    return query(runtime, "SELECT source_file, line, record_key, column_name, raw_value, "
                          "reason, position FROM quarantine WHERE snapshot_id = %s "
                          "ORDER BY source_file, line, reason", (sid,))


def check_two_files(runtime: Runtime, tmp_path: Path) -> None:
    add_visits(runtime, tmp_path)
    summary = ingest(runtime, "visits", two_files(tmp_path))
    project(runtime)
    sid = summary.snapshot_id
    assert sid is not None
    # Every row is published under its key as read: the ingester counts only the rows
    # with a cell issue (a.csv lines 3 and 7).
    assert (summary.rows_read, summary.published, summary.quarantined) == (9, 9, 2)

    # The newest row of each key wins, across the files of one snapshot.
    assert query(runtime, "SELECT visit_id, n, _partition, _line FROM ds_visits "
                          "ORDER BY visit_id") == [
        (1, None, "a.csv", 7), (2, 8, "b.csv", 4), (3, 6, "b.csv", 2), (4, 1, "b.csv", 3)]

    # Each superseded row is listed at its own file and line, naming the row that won;
    # the cell issue of a superseded row (a.csv line 3, 'x') goes with its row, and the
    # winner's own issue (a.csv line 7, 'y') is kept.
    assert quarantine(runtime, sid) == [
        ("a.csv", 2, "1", None, "1", note("a.csv", 2, "a.csv", 7), "line 2"),
        ("a.csv", 3, "2", None, "2", note("a.csv", 3, "b.csv", 4), "line 3"),
        ("a.csv", 4, "1", None, "1", note("a.csv", 4, "a.csv", 7), "line 4"),
        ("a.csv", 5, "3", None, "3", note("a.csv", 5, "b.csv", 2), "line 5"),
        ("a.csv", 6, "2", None, "2", note("a.csv", 6, "b.csv", 4), "line 6"),
        ("a.csv", 7, "1", "n", "y", "'y' is not a whole number", "line 7"),
    ]

    # Quarantined rows as the ingester counted them when it tracked keys: rows with an
    # issue (a3, a7) and rows repeating a key published before them (a4, a6, b2, b4).
    ((quarantined, files),) = query(runtime, "SELECT quarantined, files FROM snapshots "
                                             "WHERE id = %s", (sid,))
    assert quarantined == 6
    assert {f["file"]: f["with_issues"] for f in files} == {"a.csv": 4, "b.csv": 2}

    report = create_app(runtime).test_client().get(
        f"/api/v1/datasets/visits/snapshots/{sid}/quality").get_json()
    assert report["rows"] == {"read": 9, "accepted": 9, "rejected": 0, "quarantined": 6,
                              "superseded": 5, "records": 4}
    assert report["quarantine_entries"] == 6


def test_newest_row_wins_and_every_superseded_row_is_listed(runtime: Runtime,
                                                             tmp_path: Path) -> None:
    check_two_files(runtime, tmp_path)


def test_the_same_through_kafka(kafka_runtime: Runtime, tmp_path: Path) -> None:
    """Several log partitions: a key's messages are on one of them, in publishing order."""
    assert kafka_runtime.settings.topic_partitions > 1
    check_two_files(kafka_runtime, tmp_path)


def test_each_snapshot_lists_only_its_own_superseded_rows(runtime: Runtime,
                                                           tmp_path: Path) -> None:
    """An increment by file: a key repeated in a later snapshot is an update of the
    record, not a superseded row; within each snapshot the newest row still wins."""
    add_visits(runtime, tmp_path, mode="increment")
    folder = two_files(tmp_path)
    first = ingest(runtime, "visits", folder).snapshot_id
    (folder / "b.csv").write_text("visit_id,n\n4,2\n4,3\n5,9\n")
    second = ingest(runtime, "visits", folder).snapshot_id
    project(runtime)
    assert first is not None and second is not None
    assert [r[:2] for r in quarantine(runtime, first)] == [
        ("a.csv", 2), ("a.csv", 3), ("a.csv", 4), ("a.csv", 5), ("a.csv", 6), ("a.csv", 7)]
    # Only b.csv changed, so the second snapshot holds b.csv alone: its line 2 is
    # superseded by its line 3. Keys 2 and 3, dropped by b.csv, are deleted rather than
    # served from a.csv: their a.csv rows lost to b.csv in the first snapshot and were
    # never written (the increment's documented fall-back rule).
    assert quarantine(runtime, second) == [
        ("b.csv", 2, "4", None, "4", note("b.csv", 2, "b.csv", 3), "line 2")]
    assert query(runtime, "SELECT visit_id, n, _partition, _line FROM ds_visits "
                          "ORDER BY visit_id") == [
        (1, None, "a.csv", 7), (4, 3, "b.csv", 3), (5, 9, "b.csv", 4)]
    assert query(runtime, "SELECT quarantined FROM snapshots WHERE id = %s",
                 (second,)) == [(1,)]


def test_a_superseded_sheet_row_is_listed_at_its_sheet_and_row(runtime: Runtime,
                                                                tmp_path: Path) -> None:
    add_visits(runtime, tmp_path, format="xlsx", extra='sheets = ["*"]')
    book = write_xlsx(tmp_path / "visits.xlsx", {
        "Jan": [["visit_id", "n"], [1, 3], [2, 4]],
        "Feb": [["visit_id", "n"], [3, 1], [1, 5]]})
    sid = ingest(runtime, "visits", book).snapshot_id
    project(runtime)
    assert sid is not None
    assert quarantine(runtime, sid) == [
        ("visits.xlsx", 2, "1", None, "1", note("visits.xlsx", 2, "visits.xlsx", 3),
         "sheet Jan row 2")]
    assert query(runtime, "SELECT visit_id, n FROM ds_visits ORDER BY 1") == [
        (1, 5), (2, 4), (3, 1)]
    # The row's position rides on the log only as a position: no issue of its own.
    assert query(runtime, "SELECT quarantined FROM snapshots WHERE id = %s",
                 (sid,)) == [(1,)]


def test_a_crash_while_applying_leaves_the_notes_written_exactly_once(
        runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import stldata.projection.apply as apply

    add_visits(runtime, tmp_path)
    sid = ingest(runtime, "visits", two_files(tmp_path)).snapshot_id
    real = apply.maintain_aggregates

    def crash(*args: Any) -> None:
        raise RuntimeError("projector killed at the end of an apply")

    monkeypatch.setattr(apply, "maintain_aggregates", crash)
    with pytest.raises(RuntimeError, match="killed"):
        project(runtime)
    assert query(runtime, "SELECT count(*) FROM quarantine") == [(0,)]
    monkeypatch.setattr(apply, "maintain_aggregates", real)
    project(runtime)
    project(runtime)  # nothing left to do: no entry written twice
    assert len(quarantine(runtime, sid or 0)) == 6
    assert query(runtime, "SELECT count(*) FROM ds_visits") == [(4,)]


def test_bundled_311_files_keep_each_request_s_last_row(runtime: Runtime) -> None:
    """Read independently: every request id's last row (files by name, rows by line)."""
    rows: list[tuple[str, int, int]] = []
    for path in sorted(CSB_SAMPLES.glob("*.csv")):
        header, cells = read_raw_csv(path)
        at = header.index("REQUESTID")
        # No quoted line breaks in these files: data row i is on line i + 2.
        rows += [(path.name, i + 2, int(r[at])) for i, r in enumerate(cells)]
    last = {key: (file, line) for file, line, key in rows}
    expected = sorted(
        (file, line, str(key), note(file, line, *last[key]))
        for file, line, key in rows if last[key] != (file, line))

    sid = ingest(runtime, "csb-311").snapshot_id
    project(runtime)
    assert len(expected) > 80
    assert query(runtime, "SELECT source_file, line, record_key, reason FROM quarantine "
                          "WHERE snapshot_id = %s AND reason LIKE 'duplicate key%%' "
                          "ORDER BY 1, 2, 3", (sid,)) == expected
    served = query(runtime, "SELECT request_id, _partition, _line FROM ds_csb_311")
    assert {key: (file, line) for key, file, line in served} == last


def test_the_record_builder_keeps_nothing_per_key() -> None:
    """100,000 rows with distinct request ids through the builder, batch by batch: the
    memory it holds afterwards does not grow with the keys (the old dict of keys seen
    held well over 10 MB here)."""
    root = Path(__file__).resolve().parents[1]
    dataset = load_dataset(root / "catalog" / "csb-311.toml")
    header_cells, sample = read_raw_csv(CSB_SAMPLES / "csb_requests_2018-01.csv")
    header = map_header(dataset, header_cells, "generated.csv")
    at = header_cells.index("REQUESTID")
    builder = RecordBuilder(dataset)

    def run(first: int, count: int) -> None:
        for start in range(first, first + count, 2000):
            batch = []
            for i in range(start, start + 2000):
                cells = list(sample[i % len(sample)])
                cells[at] = str(10_000_000 + i)
                batch.append(builder.build(header, i + 2, cells))
            builder.finish_batch(batch)
            assert len({r.key for r in batch}) == len(batch)

    run(0, 4000)  # warm caches (coercers, pyproj)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        run(4000, 100_000)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 1_000_000, f"the builder holds {held:,} bytes after 100,000 keys"


def test_row_positions_are_sent_only_when_the_line_does_not_give_them() -> None:
    from stldata.ingest.records import Record

    csv_row = Record(key="1", line=7, values={}, source={})
    sheet_row = Record(key="1", line=7, values={}, source={}, label="sheet Jan")
    assert csv_row.issue_dicts(row_position=True) == []
    assert sheet_row.issue_dicts(row_position=True) == [{"row_position": "sheet Jan row 7"}]
    assert sheet_row.issue_dicts() == []
    assert orjson.loads(orjson.dumps(sheet_row.issue_dicts(row_position=True)))
