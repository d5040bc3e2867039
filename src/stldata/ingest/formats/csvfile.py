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


def _data_rows(path: Path, name: str, options: Source, width: int, position: list[int]
               ) -> Iterator[RawRow | BadRow]:
    with path.open("rb") as stream:
        reader = csv.reader(text_lines(stream, name, options.encoding),
                            delimiter=options.delimiter)
        next(reader)  # the header, checked by tables()
        for row in _rows(reader, width):
            position[0] = stream.tell()
            yield row


def _rows(reader: _csv.Reader, width: int) -> Iterator[RawRow | BadRow]:
    line = reader.line_num
    while True:
        start = line + 1
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
