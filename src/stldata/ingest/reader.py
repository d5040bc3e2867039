"""Match a table's header to the catalog's columns, and the row types parsers yield.

The header of each table is matched against the catalog's column names and aliases, so
the header variants of one publisher map to one schema. Cells keep their raw text here;
cleaning happens in :mod:`stldata.ingest.records`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from stldata.catalog import Dataset
from stldata.ingest.errors import UnknownColumnsError

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
    """One data row: its position in the source (line, or row of a sheet) and its cells."""

    line: int
    cells: list[str]


@dataclass
class BadRow:
    """A row that cannot become a record; it is quarantined whole with its text."""

    line: int
    text: str
    reason: str
