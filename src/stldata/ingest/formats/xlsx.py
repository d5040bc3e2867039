"""Excel workbooks (.xlsx, and legacy .xls): chosen sheets, each one table, read from the
cached values. calamine reads both file kinds, so one parser serves the two formats.

Publishers lay sheets out for printing: merged title rows above the header, the header
repeated at every page break, a totals row at the end. The header is found by the catalog's
column aliases; repeated headers and merged title rows are dropped, and rows matching
``skip_rows`` (totals) are skipped. Formulas are never evaluated: the values Excel cached
when the file was saved are what the publisher saw. Every row gets two synthetic cells,
``workbook`` and ``sheet``, so sheets of many workbooks load into one dataset.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Sequence
from datetime import date, datetime, time, timedelta
from pathlib import Path

import python_calamine

from stldata.catalog import Source
from stldata.ingest.errors import EmptySourceError, SourceError
from stldata.ingest.formats import Table
from stldata.ingest.formats.grid import (
    find_header,
    header_cells,
    is_blank,
    is_repeated_header,
    row_skipper,
)
from stldata.ingest.reader import BadRow, RawRow

#: Headers of the cells the parser adds to every row.
WORKBOOK_COLUMN = "workbook"
SHEET_COLUMN = "sheet"

CellValue = int | float | str | bool | time | date | datetime | timedelta
Merged = list[tuple[tuple[int, int], tuple[int, int]]]


def tables(path: Path, name: str, options: Source) -> Iterator[Table]:
    """One table per chosen sheet, in workbook order.

    The workbook is opened and the sheets chosen before the first table is yielded, so a
    corrupt file or a workbook without the expected sheets fails before anything is
    published.
    """
    try:
        workbook = python_calamine.CalamineWorkbook.from_path(str(path))
    except python_calamine.PasswordError:
        raise SourceError(name, "workbook is password-protected") from None
    except (python_calamine.CalamineError, OSError, ValueError) as exc:
        raise SourceError(name, f"not a readable Excel workbook: {exc}") from None
    with workbook:
        for sheet_name in choose_sheets(workbook.sheet_names, options.sheets, name):
            yield _sheet_table(workbook, sheet_name, name, options)


def choose_sheets(names: Sequence[str], patterns: Sequence[str], source: str) -> list[str]:
    """Sheets whose names match a pattern (case-insensitive; months are spelled both ways);
    without patterns, the first sheet."""
    if not names:
        raise EmptySourceError(source, "workbook has no sheets")
    if not patterns:
        return [names[0]]
    folded = [p.casefold() for p in patterns]
    chosen = [n for n in names if any(fnmatch.fnmatchcase(n.casefold(), p) for p in folded)]
    if not chosen:
        raise SourceError(source, f"no sheet matches {list(patterns)}; the workbook has "
                                  f"{list(names)}")
    return chosen


def _sheet_table(workbook: python_calamine.CalamineWorkbook, sheet_name: str, source: str,
                 options: Source) -> Table:
    label = f"sheet {sheet_name}"
    try:
        sheet = workbook.get_sheet_by_name(sheet_name)
        # From A1, so a row's index is its row number in Excel minus one.
        values = sheet.to_python(skip_empty_area=False)
        merged: Merged = sheet.merged_cell_ranges or []
    except python_calamine.CalamineError as exc:
        raise SourceError(f"{source} {label}", f"sheet cannot be read: {exc}") from None
    grid = [[cell_text(v) for v in row] for row in values]
    at = find_header(grid, options)
    if at is None:
        raise EmptySourceError(f"{source} {label}", "sheet is empty")
    header = header_cells(grid[at])
    rows = _rows(grid, at, header, _title_rows(merged, len(header)), options, source,
                 sheet_name)
    return Table(header + [WORKBOOK_COLUMN, SHEET_COLUMN], rows, label=label)


def _title_rows(merged: Merged, width: int) -> set[int]:
    """Rows holding a cell merged across most of the table: a title, never a record."""
    return {row for (top, left), (bottom, right) in merged
            if right - left + 1 > width // 2 for row in range(top, bottom + 1)}


def _rows(grid: list[list[str]], at: int, header: list[str], titles: set[int],
          options: Source, source: str, sheet_name: str) -> Iterator[RawRow | BadRow]:
    skip = row_skipper(options)
    width = len(header)
    for index in range(at + 1, len(grid)):
        cells = grid[index]
        if (is_blank(cells) or index in titles or is_repeated_header(cells, header)
                or skip(cells)):
            continue
        line = index + 1
        if not is_blank(cells[width:]):
            yield BadRow(line, ",".join(cells),
                         f"sheet {sheet_name}: row has values beyond the header's {width} "
                         "columns")
            continue
        cells = cells[:width] + [""] * (width - len(cells))
        yield RawRow(line, cells + [source, sheet_name])


def cell_text(value: CellValue) -> str:
    """A cell as the text a person reads: whole numbers without ``.0``, dates in ISO-8601.

    calamine turns date-formatted serial numbers into dates using the workbook's own date
    system (1900 or 1904), so a date before 1970 or in a Mac workbook comes out right.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, datetime):
        if value.time() == time(0):
            return value.date().isoformat()
        return value.isoformat(timespec="seconds" if not value.microsecond else "auto")
    if isinstance(value, date | time):
        return value.isoformat()
    # A duration ([h]:mm format): hours may exceed 24.
    seconds = int(value.total_seconds())
    sign = "-" if seconds < 0 else ""
    hours, rest = divmod(abs(seconds), 3600)
    return f"{sign}{hours}:{rest // 60:02d}:{rest % 60:02d}"
