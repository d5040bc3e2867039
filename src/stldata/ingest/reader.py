"""Match a table's header to the catalog's columns, and the row types parsers yield.

The header of each table is matched against the catalog's column names and aliases, so
the header variants of one publisher map to one schema. Cells keep their raw text here;
cleaning happens in :mod:`stldata.ingest.records`.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from stldata.catalog import Dataset
from stldata.ingest.errors import UnknownColumnsError

_NOT_ALNUM = re.compile(r"[\W_]+")
#: Letters NFKD does not take apart into a base letter and an accent.
_LETTERS = str.maketrans({"ø": "o", "æ": "ae", "œ": "oe", "ł": "l", "đ": "d", "ð": "d",
                          "þ": "th", "ı": "i", "ŋ": "n", "ħ": "h"})


def fold(text: str) -> str:
    """Case and accents folded: ``Größe`` → ``grosse``, ``Ünïcødé`` → ``unicode``; letters
    of other scripts (``名前``) are kept as they are."""
    folded = text.replace("\ufeff", "").casefold().translate(_LETTERS)
    return "".join(c for c in unicodedata.normalize("NFKD", folded)
                   if not unicodedata.combining(c))


def normalize_header(name: str) -> str:
    """``"X-Coord"``, ``"x coord"`` and ``"XCoord"`` all become ``"xcoord"``; ``"Größe"``
    and ``"Grosse"`` both ``"grosse"``."""
    return _NOT_ALNUM.sub("", fold(name))


def header_labels(header: list[str]) -> list[str]:
    """One distinct label per column of a header, so no column's values are lost.

    A blank header cell is ``column_N`` (N counts from 1), and a header whose name (as
    :func:`normalize_header` compares names) came before gets `` (2)``, `` (3)`` in order:
    ``id,name,name`` is ``id``, ``name``, ``name (2)``; ``Ward,ward`` is ``Ward``,
    ``ward (2)``. The labels key a row's ``_source`` and are what catalog names match, so
    ``stldata add`` names the second ``name`` column ``name_2`` and the ingester finds it.
    """
    labels: list[str] = []
    seen: dict[str, int] = {}
    taken: set[str] = set()
    for index, cell in enumerate(header):
        label = cell if cell.strip() else f"column_{index + 1}"
        normalized = normalize_header(label)
        seen[normalized] = seen.get(normalized, 0) + 1
        if seen[normalized] > 1 or label in taken:
            n = seen[normalized]
            while f"{label} ({n})" in taken:
                n += 1
            label = f"{label} ({n})"
        taken.add(label)
        labels.append(label)
    return labels


@dataclass
class HeaderMap:
    """Where each canonical column sits in one file's header."""

    #: The header's labels (:func:`header_labels`): distinct, so ``_source`` keeps each cell.
    header: list[str]
    positions: dict[str, int]
    unmapped: list[str] = field(default_factory=list)


def map_header(dataset: Dataset, header: list[str], source: str) -> HeaderMap:
    """Place each catalog column in ``header``. Two headers that both name one column
    (``Ward`` and ``ward``, or a name and one of its aliases) are an error naming both:
    reading either one alone would drop the other's values without a word."""
    wanted: dict[str, str] = {}
    for column in dataset.columns:
        if column.derive_from:
            continue
        for spelling in (column.name, *column.aliases):
            wanted.setdefault(normalize_header(spelling), column.name)

    labels = header_labels(header)
    positions: dict[str, int] = {}
    unmapped: list[str] = []
    for index, label in enumerate(labels):
        canonical = wanted.get(normalize_header(label))
        if canonical is None and label != header[index] and header[index].strip():
            # A repeated header the catalog has no own column for ("name (2)") would
            # otherwise be left out of the column its first occurrence fills.
            canonical = wanted.get(normalize_header(header[index]))
        if canonical is None:
            unmapped.append(label)
        elif canonical in positions:
            first = header[positions[canonical]]
            raise UnknownColumnsError(
                source,
                f"headers {first!r} (column {positions[canonical] + 1}) and "
                f"{header[index]!r} (column {index + 1}) both map to column {canonical!r} "
                f"of dataset {dataset.id}; rename one in the file, or give the second its "
                f"own column in {Path(dataset.catalog_path).name} (an alias {label!r})")
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
    return HeaderMap(header=labels, positions=positions, unmapped=unmapped)


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
