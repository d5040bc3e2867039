"""Three snapshots of slmpd-crime with additions, a correction and a withdrawal.

1. January 2017 alone.
2. May 2017 added (January unchanged, so its file is skipped).
3. January re-published: one description corrected, one row withdrawn, one row added.

What each snapshot should hold is computed here from the raw files with the csv module,
independently of the ingester, as tuples a person can read off the file.
"""

from __future__ import annotations

import csv
import io
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stldata.runtime import Runtime

from conftest import (
    CRIME_SAMPLES,
    _fresh_database,
    _runtime,
    ingest,
    make_settings,
    project,
    read_raw_csv,
)

JANUARY = "january2017.csv"
MAY = "may2017.csv"
CORRECTED_LINE = 10  # 0-based line of the January file (0 is the header)
WITHDRAWN_LINE = 20
ADDED_COMPLAINT = "17-999999"

#: A row as a person reads it: complaint, crime code, description, count.
Row = tuple[str, str, str, int]


def raw_rows(path: Path) -> list[Row]:
    header, rows = read_raw_csv(path)
    names = [h.strip().replace(" ", "").replace("-", "").lower() for h in header]
    at = {n: i for i, n in enumerate(names)}
    return [(r[at["complaint"]].strip(), r[at["crime"]].strip(),
             " ".join(r[at["description"]].split()), int(r[at["count"]])) for r in rows]


def record_rows(records: Iterable[dict[str, Any]]) -> Counter[Row]:
    return Counter((r["complaint"] or "", str(r["crime"]), r["description"] or "",
                    int(r["count"])) for r in records)


@dataclass
class Scenario:
    runtime: Runtime
    folder: Path
    snapshots: list[int] = field(default_factory=list)
    january: list[Row] = field(default_factory=list)   # as first published
    may: list[Row] = field(default_factory=list)
    january2: list[Row] = field(default_factory=list)  # as re-published
    corrected: tuple[Row, Row] | None = None           # (before, after)
    withdrawn: Row | None = None
    added: Row | None = None

    def expected(self, index: int) -> Counter[Row]:
        """Rows every snapshot of the scenario should hold, by its position (0, 1, 2)."""
        return Counter([self.january, self.january + self.may,
                        self.january2 + self.may][index])


def republish_january(folder: Path) -> None:
    """Rewrite January the way the department corrects a month."""
    lines = (folder / JANUARY).read_bytes().split(b"\r\n")
    cells = next(csv.reader([lines[CORRECTED_LINE].decode("cp1252")]))
    cells[10] = "CORRECTED " + cells[10]
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(cells)
    lines[CORRECTED_LINE] = out.getvalue().encode("cp1252")
    new = next(csv.reader([lines[30].decode("cp1252")]))
    new[0] = ADDED_COMPLAINT
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(new)
    added = out.getvalue().encode("cp1252")
    del lines[WITHDRAWN_LINE]
    while lines and not lines[-1]:
        lines.pop()
    lines.append(added)
    (folder / JANUARY).write_bytes(b"\r\n".join(lines) + b"\r\n")


def build(runtime: Runtime, tmp: Path) -> Scenario:
    folder = tmp / "crime"
    folder.mkdir()
    shutil.copy(CRIME_SAMPLES / JANUARY, folder / JANUARY)
    scenario = Scenario(runtime, folder)
    scenario.january = raw_rows(folder / JANUARY)

    for step in range(3):
        if step == 1:
            shutil.copy(CRIME_SAMPLES / MAY, folder / MAY)
            scenario.may = raw_rows(folder / MAY)
        if step == 2:
            republish_january(folder)
            scenario.january2 = raw_rows(folder / JANUARY)
        summary = ingest(runtime, "slmpd-crime", folder)
        project(runtime)
        assert summary.snapshot_id is not None
        scenario.snapshots.append(summary.snapshot_id)

    before, after = Counter(scenario.january), Counter(scenario.january2)
    gone, new = before - after, after - before
    # The withdrawn row, the corrected row's old text and the new row, read off the files.
    old_line = scenario.january[CORRECTED_LINE - 1]
    new_line = scenario.january2[CORRECTED_LINE - 1]
    scenario.corrected = (old_line, new_line)
    scenario.withdrawn = scenario.january[WITHDRAWN_LINE - 1]
    scenario.added = scenario.january2[-1]
    assert gone == Counter([old_line, scenario.withdrawn])
    assert new == Counter([new_line, scenario.added])
    return scenario


def scenario_runtime(server_url: str, tmp: Path) -> Iterator[Scenario]:
    """A database of its own with the three snapshots; for module-scoped fixtures."""
    for url in _fresh_database(server_url):
        runtime = _runtime(make_settings(url, tmp / "home"))
        yield build(runtime, tmp)


def scenario_client(scenario: Scenario) -> Any:
    """A test client of the read API over the scenario's database."""
    from stldata.api.app import create_app

    app = create_app(scenario.runtime)
    app.config["TESTING"] = True
    return app.test_client()


def get_json(api: Any, url: str, status: int = 200) -> Any:
    """The JSON body of a GET, after checking its status (the body is shown if not)."""
    response = api.get(url)
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json()
