"""What sheets, HTML tables and PDF tables share: a grid of text cells with title rows
above the header, the header repeated on every printed page, and totals or page footers
that are not data."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from stldata.catalog import Source
from stldata.ingest.reader import normalize_header

#: How far down a grid the header is looked for when the catalog does not say.
HEADER_SEARCH_ROWS = 100


def is_blank(cells: Sequence[str]) -> bool:
    return not any(c.strip() for c in cells)


def find_header(rows: Sequence[Sequence[str]], options: Source) -> int | None:
    """Index of the header row: the catalog's ``header_row``, else the row among the first
    ones whose cells name the most catalog columns (title rows above it name fewer), else
    the first non-blank row. ``None`` when there is no such row."""
    if options.header_row:
        index = options.header_row - 1
        return index if index < len(rows) and not is_blank(rows[index]) else None
    names = {normalize_header(n) for n in options.header_names}
    best, best_score = None, 0
    for index, cells in enumerate(rows[:HEADER_SEARCH_ROWS]):
        score = len({normalize_header(c) for c in cells} & names)
        if score > best_score:
            best, best_score = index, score
    if best is not None:
        return best
    return next((i for i, cells in enumerate(rows) if not is_blank(cells)), None)


def is_repeated_header(cells: Sequence[str], header: Sequence[str]) -> bool:
    """A header printed again lower down (a page break), possibly without some cells."""
    filled = [(i, c) for i, c in enumerate(cells) if c.strip()]
    if len(filled) < min(2, sum(1 for h in header if h.strip())):
        return False
    return all(i < len(header) and normalize_header(c) == normalize_header(header[i])
               and normalize_header(c) for i, c in filled)


def row_skipper(options: Source) -> Callable[[Sequence[str]], bool]:
    """True for a row whose first non-empty cell matches one of ``skip_rows``."""
    patterns = [re.compile(p, re.IGNORECASE) for p in options.skip_rows]

    def skip(cells: Sequence[str]) -> bool:
        first = next((c.strip() for c in cells if c.strip()), "")
        return any(p.fullmatch(first) for p in patterns)
    return skip


def header_cells(cells: Sequence[str]) -> list[str]:
    """The header without its trailing empty cells (the sheet's used range is wider)."""
    width = len(cells)
    while width and not cells[width - 1].strip():
        width -= 1
    return list(cells[:width])
