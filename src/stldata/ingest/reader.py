"""Read one CSV source file as rows keyed by canonical column name.

The header of each file is matched against the catalog's column names and aliases, so the
three header variants of one publisher map to one schema. Cells keep their raw text here;
cleaning happens in :mod:`stldata.ingest.records`.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from stldata.catalog import Dataset
from stldata.ingest.decode import text_lines
from stldata.ingest.errors import EmptySourceError, SourceError, UnknownColumnsError

# Quoted fields in some exports hold whole paragraphs.
csv.field_size_limit(10 * 1024 * 1024)

_NOT_ALNUM = re.compile(r"[^0-9a-z]+")


def normalize_header(name: str) -> str:
    """``"X-Coord"``, ``"x coord"`` and ``"XCoord"`` all become ``"xcoord"``."""
    return _NOT_ALNUM.sub("", name.replace("\ufeff", "").casefold())


@dataclass
class HeaderMap:
    """Where each canonical column sits in one file's header."""

    header: list[str]
    positions: dict[str, int]
    unmapped: list[str] = field(default_factory=list)


def map_header(dataset: Dataset, header: list[str], source: str) -> HeaderMap:
    wanted: dict[str, str] = {}
    for column in dataset.columns:
        if column.derive_from:
            continue
        for spelling in (column.name, *column.aliases):
            wanted.setdefault(normalize_header(spelling), column.name)

    positions: dict[str, int] = {}
    unmapped: list[str] = []
    for index, name in enumerate(header):
        canonical = wanted.get(normalize_header(name))
        if canonical is None or canonical in positions:
            unmapped.append(name)
        else:
            positions[canonical] = index

    missing = [c.name for c in dataset.columns if c.required and c.name not in positions]
    if not positions or missing:
        shown = ", ".join(repr(h) for h in header[:30])
        need = ", ".join(missing) if missing else "any catalog column"
        raise UnknownColumnsError(
            source,
            f"unknown column set: header has [{shown}] but dataset {dataset.id} needs {need} "
            f"(add the spelling to the column's aliases in {Path(dataset.catalog_path).name})",
        )
    return HeaderMap(header=header, positions=positions, unmapped=unmapped)


@dataclass
class RawRow:
    line: int
    cells: list[str]


@dataclass
class BadRow:
    line: int
    text: str
    reason: str


def read_rows(
    stream: BinaryIO, dataset: Dataset, source: str
) -> tuple[HeaderMap, Iterator[RawRow | BadRow]]:
    """Parse the header now (so a bad file fails before anything is published) and
    return an iterator over the data rows."""
    lines = text_lines(stream, source, dataset.source.encoding)
    reader = csv.reader(lines, delimiter=dataset.source.delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise EmptySourceError(source, "file is empty") from None
    except csv.Error as exc:
        raise SourceError(source, f"header line is not valid CSV: {exc}") from None
    if not any(h.strip() for h in header):
        raise EmptySourceError(source, "first line is blank; expected a header row")
    header_map = map_header(dataset, header, source)
    width = len(header)

    def rows() -> Iterator[RawRow | BadRow]:
        line = reader.line_num
        while True:
            start = line + 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield BadRow(start, "", f"not valid CSV: {exc}")
                return
            line = reader.line_num
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                continue
            if len(cells) != width:
                yield BadRow(start, ",".join(cells),
                             f"row has {len(cells)} fields but the header has {width}"
                             + (" (truncated line?)" if len(cells) < width else ""))
                continue
            yield RawRow(start, cells)

    return header_map, rows()
