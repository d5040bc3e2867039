"""HTML tables: one table of a saved web page, chosen by CSS selector, caption or index.

Cells spanning several columns or rows are copied into each position they cover, so every
row has the header's width. Whitespace is collapsed to single spaces (pages indent cell text
with newlines). Links are kept: each column that holds links gets a ``<header>_url`` column
right after it with the absolute URLs (against the page's ``<base>`` or ``base_url``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin

import lxml.etree  # type: ignore[import-untyped]
import lxml.html  # type: ignore[import-untyped]
from cssselect import SelectorError

from stldata.catalog import Source
from stldata.ingest.errors import EmptySourceError, SourceError
from stldata.ingest.formats import Table
from stldata.ingest.formats.grid import find_header, is_blank, is_repeated_header, row_skipper
from stldata.ingest.reader import BadRow, RawRow

#: Characters a URL may hold as they are; anything else (spaces in file names) is escaped.
_URL_SAFE = ":/?#[]@!$&'()*+,;=%~"


@dataclass
class _Cell:
    text: str
    links: list[str] = field(default_factory=list)


def tables(path: Path, name: str, options: Source) -> Iterator[Table]:
    """The chosen table; the page is parsed and the table found before it is yielded."""
    data = path.read_bytes()
    if not data.strip():
        raise EmptySourceError(name, "file is empty")
    try:
        # From bytes, so lxml honours the page's own <meta> charset.
        page = lxml.html.document_fromstring(data)
    except (lxml.etree.ParserError, ValueError) as exc:
        raise SourceError(name, f"not a readable HTML page: {exc}") from None
    table = _choose(page, options.table, name)
    base = _base_url(page, options.base_url)
    grid = _grid(table)
    rows = [(line, [_Cell(c.text, [_absolute(base, u) for u in c.links]) for c in cells])
            for line, cells, _ in grid]
    texts = [[c.text for c in cells] for _, cells in rows]
    at = find_header(texts, options)
    if at is None:
        raise EmptySourceError(name, f"table {_describe(options.table)} has no rows")
    header = texts[at]
    # Rows of <th> cells right below the header name sub-columns ("Count" over "Open" and
    # "Closed"): their names are joined to the ones above.
    while at + 1 < len(grid) and grid[at + 1][2]:
        at += 1
        below = texts[at] + [""] * (len(header) - len(texts[at]))
        header = [h if b in ("", h) else f"{h} {b}".strip()
                  for h, b in zip(header, below, strict=False)]
    # A column gets a URL column when any of its cells links somewhere.
    linked = [any(i < len(cells) and cells[i].links for _, cells in rows[at + 1:])
              for i in range(len(header))]
    full_header = [h2 for i, h in enumerate(header)
                   for h2 in ((h, f"{h}_url") if linked[i] else (h,))]
    yield Table(full_header, _rows(rows[at + 1:], header, linked, options),
                label=f"table {_describe(options.table)}")


def _describe(selector: str) -> str:
    return repr(selector) if selector else "(first data table)"


def _choose(page: Any, selector: str, name: str) -> Any:
    everything = page.xpath("//table")
    if selector.startswith("index:"):
        index = int(selector[6:])
        if index >= len(everything):
            raise SourceError(name, f"no table {selector!r}: the page has "
                                    f"{len(everything)} tables")
        return everything[index]
    if selector.startswith("caption:"):
        wanted = " ".join(selector[8:].split()).casefold()
        for table in everything:
            caption = table.find("caption")
            if caption is not None and _text(caption).casefold() == wanted:
                return table
        raise SourceError(name, f"no table has the caption {selector[8:]!r}")
    if selector:
        try:
            found = page.cssselect(selector)
        except SelectorError as exc:
            raise SourceError(name, f"table selector {selector!r} is not valid CSS: "
                                    f"{exc}") from None
        found = [t for t in found if t.tag == "table"]
        if not found:
            raise SourceError(name, f"no table matches the CSS selector {selector!r}")
        return found[0]
    # Layout tables (page scaffolding, empty spacer tables) are not data.
    for table in everything:
        kind = f"{table.get('class', '')} {table.get('role', '')}".casefold()
        if "layout" in kind or "presentation" in kind:
            continue
        if any(not is_blank([c.text for c in cells]) for _, cells, _ in _grid(table)):
            return table
    raise SourceError(name, "page has no data table (the catalog's source.table is not set "
                            "and every <table> is empty or a layout table)")


def _base_url(page: Any, option: str) -> str:
    """A page's <base href> wins, as in a browser; it may itself be relative."""
    base = page.find(".//base[@href]")
    if base is not None:
        return urljoin(option, str(base.get("href")).strip())
    return option


def _absolute(base: str, href: str) -> str:
    return quote(urljoin(base, href.strip()), safe=_URL_SAFE)


def _text(element: Any) -> str:
    return " ".join(str(element.text_content()).split())


def _grid(table: Any) -> list[tuple[int, list[_Cell], bool]]:
    """Rows of the table (not of tables nested in it), spans expanded: each with its line in
    the page and whether it is made of header cells only."""
    rows = table.xpath("./tr | ./thead/tr | ./tbody/tr | ./tfoot/tr")
    # (row offset, column) -> a cell spanning down from a row above.
    pending: dict[tuple[int, int], _Cell] = {}
    grid: list[tuple[int, list[_Cell], bool]] = []
    for r, tr in enumerate(rows):
        cells: list[_Cell] = []
        column = 0
        found = tr.xpath("./td | ./th")
        for td in found:
            while (r, column) in pending:
                cells.append(pending.pop((r, column)))
                column += 1
            cell = _Cell(_text(td), [str(a.get("href")) for a in td.iter("a")
                                     if a.get("href") and not a.get("href").startswith("#")])
            for _ in range(_span(td, "colspan")):
                cells.append(cell)
                for dr in range(1, _span(td, "rowspan")):
                    pending[(r + dr, column)] = cell
                column += 1
        while (r, column) in pending:
            cells.append(pending.pop((r, column)))
            column += 1
        only_th = bool(found) and all(td.tag == "th" for td in found)
        grid.append((int(tr.sourceline or 0), cells, only_th))
    return grid


def _span(td: Any, attribute: str) -> int:
    try:
        return max(1, min(int(td.get(attribute, "1")), 1000))
    except ValueError:
        return 1


def _rows(rows: list[tuple[int, list[_Cell]]], header: list[str], linked: list[bool],
          options: Source) -> Iterator[RawRow | BadRow]:
    skip = row_skipper(options)
    width = len(header)
    for line, cells in rows:
        texts = [c.text for c in cells]
        if is_blank(texts) or is_repeated_header(texts, header) or skip(texts):
            continue
        if not is_blank(texts[width:]):
            yield BadRow(line, ",".join(texts),
                         f"row has values beyond the header's {width} columns")
            continue
        cells = cells[:width] + [_Cell("")] * (width - len(cells))
        out: list[str] = []
        for cell, has_links in zip(cells, linked, strict=True):
            out.append(cell.text)
            if has_links:
                out.append(" ".join(cell.links))
        yield RawRow(line, out)
