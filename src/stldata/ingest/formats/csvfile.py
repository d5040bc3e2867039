"""CSV exports: any encoding the City uses, quoted fields, ragged and truncated rows."""

from __future__ import annotations

import _csv
import csv
from collections.abc import Iterator
from pathlib import Path

from stldata.catalog import Source
from stldata.ingest.decode import text_lines
from stldata.ingest.errors import EmptySourceError, SourceError
from stldata.ingest.formats import Table
from stldata.ingest.reader import BadRow, RawRow

# Quoted fields in some exports hold whole paragraphs.
csv.field_size_limit(10 * 1024 * 1024)


def tables(path: Path, name: str, options: Source) -> Iterator[Table]:
    """One table: the header line, then every data row with its line number.

    The header is read before the table is yielded, so an empty or headerless file fails
    before any of it is published. The rows open the file again on their own, so they
    can be read after this generator is exhausted.
    """
    with path.open("rb") as stream:
        reader = csv.reader(text_lines(stream, name, options.encoding),
                            delimiter=options.delimiter)
        try:
            header = next(reader)
        except StopIteration:
            raise EmptySourceError(name, "file is empty") from None
        except csv.Error as exc:
            raise SourceError(name, f"header line is not valid CSV: {exc}") from None
    if not any(h.strip() for h in header):
        raise EmptySourceError(name, "first line is blank; expected a header row")

    position = [0]
    yield Table(header, _data_rows(path, name, options, len(header), position),
                consumed=lambda: position[0])


class _Lines:
    """The decoded lines, with what the reader needs told apart from a closed quote: the
    quote marks of the row being read and whether the lines ran out."""

    def __init__(self, lines: Iterator[str]) -> None:
        self._lines = lines
        self.quotes = 0
        self.ended = False

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        try:
            line = next(self._lines)
        except StopIteration:
            self.ended = True
            raise
        if '"' in line:
            self.quotes += line.count('"')
        return line


def _data_rows(path: Path, name: str, options: Source, width: int, position: list[int]
               ) -> Iterator[RawRow | BadRow]:
    with path.open("rb") as stream:
        lines = _Lines(text_lines(stream, name, options.encoding))
        reader = csv.reader(lines, delimiter=options.delimiter)
        next(reader)  # the header, checked by tables()
        for row in _rows(reader, width, lines):
            position[0] = stream.tell()
            yield row


def _rows(reader: _csv.Reader, width: int, lines: _Lines | None = None
          ) -> Iterator[RawRow | BadRow]:
    line = reader.line_num
    while True:
        start = line + 1
        if lines is not None:
            lines.quotes = 0
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            # The reader starts afresh on the next line, so only this row is lost.
            line = reader.line_num
            yield BadRow(start, "", f"not valid CSV: {_plain(exc)}")
            continue
        line = reader.line_num
        if lines is not None and lines.ended and lines.quotes % 2:
            # The reader asked for a line past the end while in a quoted field: a quote
            # opened in this row is never closed, and the row swallowed the rest of the
            # file. Read as one row, its cells would hold other rows' text.
            yield BadRow(start, ",".join(cells)[:2000],
                         f"unterminated quote: a quoted field opened at line {start} is not "
                         f"closed before the end of the file (line {line}); the {line - start} "
                         "lines after it are read as part of it")
            return
        if not cells or (len(cells) == 1 and not cells[0].strip()):
            continue
        if len(cells) != width:
            yield BadRow(start, ",".join(cells),
                         f"row has {len(cells)} fields but the header has {width}"
                         + (" (truncated line?)" if len(cells) < width else ""))
            continue
        yield RawRow(start, cells)


def _plain(error: csv.Error) -> str:
    text = str(error)
    if "new-line character seen in unquoted field" in text:
        return "a bare carriage return (CR) inside an unquoted field"
    if "field larger than field limit" in text:
        return f"a field longer than {csv.field_size_limit()} characters"
    return text
