"""PDF tables (pdfplumber): tables found on the chosen pages, a table continued on the next
page merged into one, page headers and footers dropped, blank cells kept empty.

PDF tables drawn with padding rectangles come out of pdfplumber with phantom columns and
with a cell's text in a column of its own; cells are therefore re-assigned to the columns
their text occupies. A header printed over two lines ("Neighborhood" / "Number") is joined
when that names more catalog columns. A row's position is ``page * 1000 + row``: line 9003
is the third row of the table on page 9.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pdfplumber
from pdfminer.pdfdocument import PDFPasswordIncorrect
from pdfminer.pdfparser import PDFSyntaxError
from pdfplumber.utils.exceptions import PdfminerException

from stldata.catalog import Source
from stldata.ingest.errors import EmptySourceError, SourceError
from stldata.ingest.formats import Table
from stldata.ingest.formats.grid import is_blank, is_repeated_header, row_skipper
from stldata.ingest.reader import RawRow, normalize_header

#: Page numbering printed inside a table's frame is not data.
_PAGE_FOOTER = re.compile(r"^(page|pg\.?)\s*\d+(\s*of\s*\d+)?$", re.IGNORECASE)


@dataclass
class _Found:
    header: list[str]
    pages: list[int]
    rows: list[RawRow] = field(default_factory=list)


def tables(path: Path, name: str, options: Source) -> Iterator[Table]:
    """Every table of the chosen pages, continuations merged; all of it is read before the
    first table is yielded (PDF tables are small), so errors come before publishing."""
    if path.stat().st_size == 0:
        raise EmptySourceError(name, "file is empty; expected a PDF")
    try:
        document = pdfplumber.open(path)
    except (PdfminerException, PDFSyntaxError, PDFPasswordIncorrect, ValueError,
            TypeError, KeyError) as exc:
        cause = exc.args[0] if isinstance(exc, PdfminerException) and exc.args else exc
        if isinstance(cause, PDFPasswordIncorrect):
            raise SourceError(name, "PDF is encrypted (password-protected); it cannot be "
                                    "read") from None
        # The parser's own words, without its exception class (a damaged or non-PDF file).
        why = str(cause).strip() or type(cause).__name__
        raise SourceError(name, f"not a readable PDF ({why})") from None
    with document:
        if not document.pages:
            raise SourceError(name, "not a readable PDF: no pages found (a truncated file?)")
        pages = _choose_pages(len(document.pages), options.pages, name)
        found: list[_Found] = []
        has_text = False
        for number in pages:
            page = document.pages[number - 1]
            try:
                has_text = has_text or bool(page.chars)
                grids = [_columns(t.rows, t.extract()) for t in page.find_tables()]
            except Exception as exc:  # pdfminer raises many types on damaged streams
                raise SourceError(name, f"page {number} cannot be read "
                                        f"({str(exc).strip() or type(exc).__name__})"
                                  ) from None
            for grid in grids:
                _add(found, grid, number, options)
    if not has_text:
        raise SourceError(name, "PDF has no text on the chosen pages (a scanned image?); "
                                "tables cannot be read from it")
    if not found:
        raise EmptySourceError(name, f"no table found on pages {_ranges(pages)}")
    for table in found:
        yield Table(table.header, iter(table.rows), label=f"table on pages "
                                                          f"{_ranges(table.pages)}")


def _choose_pages(count: int, spec: str, name: str) -> list[int]:
    if not spec:
        return list(range(1, count + 1))
    chosen: list[int] = []
    for part in spec.split(","):
        first, _, last = part.partition("-")
        chosen += range(int(first), int(last or first) + 1)
    beyond = [n for n in chosen if n > count]
    if beyond:
        raise SourceError(name, f"pages {spec!r} asked for, but the PDF has {count} pages")
    return chosen


def _ranges(pages: Sequence[int]) -> str:
    return f"{pages[0]}-{pages[-1]}" if len(pages) > 1 else str(pages[0])


def _columns(rows: Any, texts: list[list[str | None]]) -> list[list[str]]:
    """Cells re-assigned to the columns their text occupies (see the module docstring)."""
    cells = [[(box, _text(text)) for box, text in zip(row.cells, line, strict=True)
              if box is not None]
             for row, line in zip(rows, texts, strict=True)]
    spans = sorted((box[0], box[2]) for row in cells for box, text in row if text)
    columns: list[tuple[float, float]] = []
    for x0, x1 in spans:
        if columns and x0 < columns[-1][1] - 1:
            columns[-1] = (columns[-1][0], max(columns[-1][1], x1))
        else:
            columns.append((x0, x1))
    grid: list[list[str]] = []
    for row in cells:
        out = [""] * len(columns)
        for box, text in row:
            middle = (box[0] + box[2]) / 2
            for i, (x0, x1) in enumerate(columns):
                if x0 <= middle <= x1 and text:
                    out[i] = f"{out[i]} {text}".strip()
        grid.append(out)
    return grid


def _text(value: str | None) -> str:
    return " ".join((value or "").split())


def _header_depth(grid: list[list[str]], names: set[str]) -> tuple[list[str], int]:
    """The header, and how many rows it takes: lines are joined while that names more
    catalog columns."""
    header, depth = grid[0], 1
    score = _score(header, names)
    while depth < len(grid) and names:
        joined = [f"{h} {c}".strip() for h, c in zip(header, grid[depth], strict=True)]
        if _score(joined, names) <= score:
            break
        header, depth, score = joined, depth + 1, _score(joined, names)
    return header, depth


def _score(cells: Sequence[str], names: set[str]) -> int:
    return len({normalize_header(c) for c in cells} & names)


def _add(found: list[_Found], grid: list[list[str]], page: int, options: Source) -> None:
    grid = [r for r in grid if not is_blank(r)]
    if not grid:
        return
    names = {normalize_header(n) for n in options.header_names}
    header, depth = _header_depth(grid, names)
    last = found[-1] if found else None
    if last and [normalize_header(h) for h in header] == [
            normalize_header(h) for h in last.header]:
        table = last  # the header printed again on the next page: a continuation
    elif last and len(grid[0]) == len(last.header) and _score(grid[0], names) == 0:
        table, depth = last, 0  # continued without a header
    else:
        table = _Found(header, [])
        found.append(table)
    if page not in table.pages:
        table.pages.append(page)
    skip = row_skipper(options)
    for index, cells in enumerate(grid[depth:], start=depth + 1):
        first = next((c for c in cells if c), "")
        if is_repeated_header(cells, table.header) or skip(cells) or _PAGE_FOOTER.match(first):
            continue
        table.rows.append(RawRow(page * 1000 + index, cells))
