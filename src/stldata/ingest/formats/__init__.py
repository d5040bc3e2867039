"""Source formats: each parser turns one source file into tables of raw text cells.

A parser yields :class:`Table` objects (a CSV file has one; a workbook may have one per
sheet). The ingester maps each table's header to the catalog's columns and cleans the
rows the same way whatever the format, so a new format is one module here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from stldata.catalog import Source
from stldata.ingest.errors import SourceError
from stldata.ingest.reader import BadRow, RawRow


@dataclass
class Table:
    header: list[str]
    rows: Iterator[RawRow | BadRow]
    #: Where in the file the table sits ("" for a whole-file table), for error messages.
    label: str = ""
    #: Bytes of the file consumed so far, for progress bars.
    consumed: Callable[[], int] = lambda: 0


#: A parser opens a file (named ``name`` in messages) with the catalog's source options.
Parser = Callable[[Path, str, Source], Iterator[Table]]


#: The module of each format. Modules are imported on first use, so a CSV-only run never
#: loads the Excel, HTML or PDF libraries.
_MODULES = {"csv": "csvfile", "xlsx": "xlsx", "xls": "xlsx", "html": "html", "pdf": "pdf",
            "json": "jsonfile", "ndjson": "jsonfile", "geojson": "jsonfile",
            "shapefile": "shapefile"}

FORMATS = tuple(_MODULES)


def parser_for(fmt: str) -> Parser:
    try:
        module = _MODULES[fmt]
    except KeyError:
        raise SourceError(fmt, f"no parser for format {fmt!r}; known: "
                               f"{', '.join(sorted(_MODULES))}") from None
    parser: Parser = importlib.import_module(f"stldata.ingest.formats.{module}").tables

    def parse(path: Path, name: str, options: Source) -> Iterator[Table]:
        if not options.joins:
            return parser(path, name, options)
        from stldata.ingest.joins import joined

        return joined(parser(path, name, options), path, name, options)
    return parse
