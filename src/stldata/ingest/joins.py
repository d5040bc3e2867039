"""Join columns of other files onto every row of a source, by a key.

A catalog's ``[[source.joins]]`` names a file (any format the ingest reads), the key
column on each side and the columns to take, e.g. the polygon of each ZIP code from a
GeoJSON file onto a CSV of counts by ZIP code. Joins run on the raw text cells before
the header is mapped, so joined columns are mapped, coerced and quarantined like any
other. A source row whose key the join file lacks is rejected to the quarantine with
the reason, never dropped silently; a missing join file, an unknown key column or a key
the join file holds twice stops the ingest before anything is published.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from stldata.catalog import Join, Source
from stldata.ingest.errors import SourceError
from stldata.ingest.formats import Table, parser_for
from stldata.ingest.reader import BadRow, RawRow, normalize_header
from stldata.settings import PROJECT_ROOT

_WHOLE = re.compile(r"^[+-]?(\d+)\.0*$")


def join_key(text: str) -> str:
    """The key as compared: trimmed, and ``27.0`` equal to ``27`` (a float column in one
    file, an integer in the other). Leading zeros are kept: ZIP 06101 is not 6101."""
    text = text.strip()
    whole = _WHOLE.match(text)
    return whole.group(1) if whole else text


@dataclass
class Lookup:
    """The rows of a join file by key, and the columns taken from it."""

    join: Join
    name: str
    columns: list[str]
    rows: dict[str, tuple[int, list[str]]]


def locate(join: Join, source_path: Path) -> Path:
    """A relative join file is looked for beside the source file first, then from the
    repository root (where the bundled samples live)."""
    given = Path(join.file)
    if given.is_absolute():
        candidates = [given]
    else:
        candidates = [source_path.parent / given, PROJECT_ROOT / given]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise SourceError(join.file, "join file not found (looked in "
                                 f"{', '.join(str(c) for c in candidates)})")


def _position(header: list[str], wanted: str, where: str) -> int:
    target = normalize_header(wanted)
    for index, name in enumerate(header):
        if normalize_header(name) == target:
            return index
    shown = ", ".join(repr(h) for h in header[:30])
    raise SourceError(where, f"has no column {wanted!r} (columns: {shown})")


def load_lookup(join: Join, source_path: Path) -> Lookup:
    path = locate(join, source_path)
    name = f"join file {path.name}"
    options = Source(url=str(path), format=join.format, encoding=join.encoding,
                     records_path=join.records_path)
    rows: dict[str, tuple[int, list[str]]] = {}
    columns: list[str] = []
    for table in parser_for(join.format)(path, name, options):
        where = f"{name} {table.label}".strip()
        key_at = _position(table.header, join.join_on, where)
        wanted = list(join.columns) or [h for i, h in enumerate(table.header) if i != key_at]
        taken = [_position(table.header, column, where) for column in wanted]
        columns = columns or [table.header[i] for i in taken]
        for row in table.rows:
            if isinstance(row, BadRow):
                continue  # a source row needing it is rejected as unmatched, with reason
            key = join_key(row.cells[key_at])
            if not key:
                continue
            if key in rows:
                raise SourceError(where, f"holds key {key!r} twice (rows {rows[key][0]} and "
                                         f"{row.line}), so a join on {join.join_on!r} is "
                                         "ambiguous")
            rows[key] = (row.line, [row.cells[i] for i in taken])
    return Lookup(join, name, columns, rows)


def joined(tables: Iterator[Table], path: Path, name: str, options: Source
           ) -> Iterator[Table]:
    """The source's tables with the columns of every join appended to each row."""
    lookups = [load_lookup(join, path) for join in options.joins]
    for table in tables:
        where = f"{name} {table.label}".strip()
        header = list(table.header)
        keys: list[int] = []
        for lookup in lookups:
            keys.append(_position(table.header, lookup.join.on, where))
            known = {normalize_header(h) for h in header}
            repeated = [c for c in lookup.columns if normalize_header(c) in known]
            if repeated:
                raise SourceError(where, f"{lookup.name} would add columns {repeated} that "
                                         "the source already has; list the new ones in the "
                                         "join's columns")
            header += lookup.columns
        yield Table(header, _rows(table, lookups, keys), label=table.label,
                    consumed=table.consumed)


def _rows(table: Table, lookups: list[Lookup], keys: list[int]
          ) -> Iterator[RawRow | BadRow]:
    for row in table.rows:
        if isinstance(row, BadRow):
            yield row
            continue
        cells = list(row.cells)
        problem = ""
        for lookup, at in zip(lookups, keys, strict=True):
            key = join_key(row.cells[at])
            match = lookup.rows.get(key)
            if match is None:
                problem = (f"no row of {lookup.name} has {lookup.join.join_on} = {key!r} "
                           f"(joined on {lookup.join.on})" if key else
                           f"{lookup.join.on} is empty, so nothing of {lookup.name} joins")
                break
            cells += match[1]
        if problem:
            yield BadRow(row.line, ",".join(row.cells), problem)
        else:
            yield RawRow(row.line, cells)
