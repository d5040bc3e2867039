"""Describe a source nobody catalogued yet: its format, columns, their types and a key.

``stldata add`` reads the file once with the same parsers the ingester uses (sniffed
format, header found by the parser), infers each column's type from every value with
:class:`~stldata.ingest.infer.TypeInference`, notes which spellings of "no value" occur,
and proposes a record key: a column whose values are all present and unique, preferring
id-like names; failing that, every column, with repeats numbered.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from stldata.catalog import QUERY_PARAMETERS, Column, Source
from stldata.errors import ConfigurationError
from stldata.ingest.coerce import make_coercer
from stldata.ingest.errors import EmptySourceError, SourceError
from stldata.ingest.infer import TypeInference
from stldata.ingest.reader import BadRow, RawRow, fold, header_labels, normalize_header
from stldata.ingest.sniff import open_tables, resolve_options, sniff

#: Spellings publishers use for "no value"; each one found in the file is proposed.
NULL_SPELLINGS = ("NULL", "null", "NA", "N/A", "n/a", "#N/A", "None")
#: Names that say "identifier": preferred for the key when their values are unique.
_ID_LIKE = re.compile(r"(^|_)(id|key|code|number|num|no|uid|guid)$")
#: Above this many rows, only id-like columns are tracked as key candidates (memory).
_TRACK_ALL_ROWS = 200_000
_TIMEZONE = "America/Chicago"


@dataclass
class ColumnDraft:
    name: str
    header: str
    type: str = "text"
    values: int = 0
    nulls: int = 0
    example: str = ""
    #: Every distinct value while they are unique and present; None once they are not.
    distinct: set[str] | None = field(default_factory=set)


@dataclass
class Draft:
    """A catalog entry to be reviewed: what was found in the source and what is proposed."""

    dataset_id: str
    title: str
    url: str
    source: Source
    evidence: str
    columns: list[ColumnDraft]
    key: list[str]
    key_reason: str
    duplicate_keys: str
    rows: int
    rejected: int
    tables: list[str]
    null_values: list[str]
    samples: list[str] = field(default_factory=list)


def column_name(header: str, index: int) -> str:
    """A header as a lower_snake_case column name (an SQL identifier)."""
    # Accents dropped (Größe → grosse); letters with no Latin spelling (名前) left out.
    plain = fold(header).encode("ascii", "ignore").decode("ascii")
    name = re.sub(r"[^0-9a-z]+", "_", plain).strip("_")
    if not name:
        return f"column_{index + 1}"
    if not name[0].isalpha():
        name = "c_" + name
    if name in QUERY_PARAMETERS:
        # `?order=2` would sort, not filter: a name a filter can use as it stands.
        name += "_value"
    return name[:63].rstrip("_")


def _unique_names(header: list[str]) -> list[ColumnDraft]:
    """A column per header cell, each with its values: blank and repeated headers get the
    labels the ingester reads them by (:func:`header_labels`: ``column_2``, ``name (2)``),
    and names are made distinct (``name_2``) both as names and as the ingester compares
    them, so that no name is read as another column's header."""
    labels = header_labels(header)
    own = [normalize_header(label) for label in labels]
    columns: list[ColumnDraft] = []
    taken: set[str] = set()
    for index, label in enumerate(labels):
        others = set(own[:index] + own[index + 1:])
        base = column_name(label, index)
        name, n = base, 1
        while name in taken or normalize_header(name) in others:
            n += 1
            name = f"{base[:60]}_{n}"
        taken.add(name)
        columns.append(ColumnDraft(name, label.strip() or name))
    return columns


def describe_files(dataset_id: str, files: list[tuple[Path, str]], url: str, *,
                   title: str | None = None, fmt: str | None = None,
                   key: list[str] | None = None) -> Draft:
    """Describe the source made of ``files`` (path, name); the first file's header names
    the columns, and every value of every file is used to infer types."""
    if not files:
        raise EmptySourceError(url, "source has no files")
    first_path, first_name = files[0]
    found = sniff(first_path, first_name)
    options = Source(url=url, format=fmt or "auto", delimiter="auto")
    resolved = resolve_options(options, first_path, first_name)
    if resolved.format == "pdf":
        resolved = _two_line_header(resolved, first_path, first_name)
    evidence = f"{resolved.format}: {found.evidence}" if not fmt else f"{fmt}: given"

    columns: list[ColumnDraft] | None = None
    by_header: dict[str, int] = {}
    inference: TypeInference | None = None
    spellings: Counter[str] = Counter()
    rows = rejected = 0
    first_bad = ""
    tables: list[str] = []
    for path, name in files:
        for table in open_tables(resolved, path, name):
            tables.append(f"{name} {table.label}".strip())
            if columns is None:
                columns = _unique_names(table.header)
                by_header = {normalize_header(c.header): i for i, c in enumerate(columns)}
                inference = TypeInference([c.name for c in columns], _TIMEZONE)
            assert inference is not None
            # A later table is read by header names, like the ingester maps it.
            places = [(by_header[normalize_header(h)], i)
                      for i, h in enumerate(header_labels(table.header))
                      if normalize_header(h) in by_header]
            for row in table.rows:
                if isinstance(row, BadRow):
                    rejected += 1
                    first_bad = first_bad or f"line {row.line}: {row.reason}"
                    continue
                rows += 1
                present = {c for c, _ in places}
                for c, i in places:
                    text = row.cells[i].strip() if i < len(row.cells) else ""
                    _add_value(columns[c], text, inference, spellings, rows)
                for c, column in enumerate(columns):
                    if c not in present:
                        column.nulls += 1
                        column.distinct = None
    if columns is not None and rows == 0 and rejected:
        raise SourceError(first_name, f"no data row can be read ({rejected} unreadable); "
                                      f"the first at {first_bad}")
    if columns is None or rows == 0:
        raise EmptySourceError(first_name, "source has a header but no data rows; there is "
                                           "nothing to describe")
    assert inference is not None
    nulls = [""] + [s for s in NULL_SPELLINGS if spellings[s]]
    # A value first counted as a value turns out to be a null spelling: recount.
    types = inference.result()
    for column in columns:
        column.type = types[column.name]

    chosen, reason, duplicates = _key(columns, rows, key)
    source = dataclasses.replace(resolved, null_values=tuple(nulls))
    return Draft(dataset_id=dataset_id, title=title or _title(first_name), url=url,
                 source=source, evidence=evidence, columns=columns, key=chosen,
                 key_reason=reason, duplicate_keys=duplicates, rows=rows, rejected=rejected,
                 tables=tables, null_values=nulls)


def _two_line_header(options: Source, path: Path, name: str) -> Source:
    """A PDF header printed over two lines ("Neighborhood" over "Number") repeats names on
    its first line; the PDF parser joins the lines when that names the columns it is told
    of, so it is told of the joined names."""
    table = next(iter(open_tables(options, path, name)), None)
    if table is None:
        return options
    names = [normalize_header(h) for h in table.header if h.strip()]
    if len(set(names)) == len(names):
        return options
    first = next((r for r in table.rows if isinstance(r, RawRow)), None)
    if first is None:
        return options
    joined = [f"{h} {c}".strip() for h, c in zip(table.header, first.cells, strict=False)]
    if len({normalize_header(j) for j in joined}) < len(joined):
        return options
    return dataclasses.replace(options, header_names=tuple(joined))


def _add_value(column: ColumnDraft, text: str, inference: TypeInference,
               spellings: Counter[str], rows: int) -> None:
    if not text or text in NULL_SPELLINGS:
        if text:
            spellings[text] += 1
        column.nulls += 1
        column.distinct = None
        return
    column.values += 1
    if not column.example:
        column.example = text
    inference.add(column.name, text)
    if column.distinct is not None:
        if text in column.distinct or (rows > _TRACK_ALL_ROWS
                                       and not _ID_LIKE.search(column.name)):
            column.distinct = None
        else:
            column.distinct.add(text)


def _key(columns: list[ColumnDraft], rows: int, wanted: list[str] | None
         ) -> tuple[list[str], str, str]:
    names = [c.name for c in columns]
    if wanted:
        unknown = [k for k in wanted if k not in names]
        if unknown:
            raise ConfigurationError(f"--key names unknown columns {unknown}; the columns "
                                     f"are: {', '.join(names)}")
        return wanted, "given with --key", "last"
    candidates = [c for c in columns if c.distinct is not None and len(c.distinct) == rows
                  and c.type not in ("number", "boolean") and _unique_typed(c)]
    if candidates:
        # An id-like name first, then whole numbers, then the shortest text.
        best = min(candidates, key=lambda c: (
            not _ID_LIKE.search(c.name), c.type != "integer",
            sum(map(len, c.distinct or ())) / rows, names.index(c.name)))
        return ([best.name], f"{best.header!r} is present and unique in all {rows} rows",
                "last")
    return ([c.name for c in columns],
            "no column is present and unique in every row, so a record is its whole row; "
            "identical rows are numbered #2, #3 in file order", "number")


def _unique_typed(column: ColumnDraft) -> bool:
    """Distinct raw values stay distinct once typed ("01" and "1" are one integer)."""
    assert column.distinct is not None
    coerce = make_coercer(Column(column.name, type=column.type), _TIMEZONE)  # type: ignore[arg-type]
    try:
        return len({coerce(v) for v in column.distinct}) == len(column.distinct)
    except ValueError:
        return False


def _title(name: str) -> str:
    stem = Path(name.split("?", 1)[0]).stem
    words = re.sub(r"[_\-.]+", " ", stem).strip()
    return (words[:1].upper() + words[1:]) if words else "Untitled dataset"
