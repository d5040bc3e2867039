"""Tell a source's format from its bytes, its name and (for URLs) its content type.

A catalog entry may leave ``source.format`` out (or say ``auto``): each file is then
sniffed before it is parsed. The bytes decide first, because publishers' servers and file
names are often wrong (a ``.csv`` that is an HTML error page, ``text/plain`` for JSON);
the name and content type only settle what the bytes leave open (JSON or NDJSON, which
delimiter a one-column file would use).

Formats named here: ``csv``, ``xlsx``, ``zip``, ``shapefile`` (a ZIP holding a ``.shp``),
``pdf``, ``html``, ``json``, ``ndjson``, ``geojson``. Whether a parser exists for a
format is :mod:`stldata.ingest.formats`' business, not the sniffer's.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import re
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from stldata.catalog import Source
from stldata.ingest.decode import (
    BOMS,
    UTF16_NAMES,
    decode_line,
    looks_like_text,
    utf16_codec,
)
from stldata.ingest.errors import EmptySourceError, SourceError
from stldata.ingest.formats import Table, parser_for

#: Bytes read from the head of a file; enough for a header and a few dozen rows.
HEAD_BYTES = 256 * 1024
#: Delimiters tried for text tables, in order of preference on a tie.
DELIMITERS = (",", ";", "\t", "|")

#: Magic numbers of files people mistake for tables, so the error can name them.
_KNOWN_BINARY = (
    (b"\x1f\x8b", "a gzip-compressed file (decompress it first)"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!", "a RAR archive"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"SQLite format 3", "an SQLite database"),
    (b"PAR1", "a Parquet file"),
)
_CONTENT_TYPES = {
    "text/csv": "csv", "application/csv": "csv", "text/tab-separated-values": "csv",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "application/vnd.ms-excel": "xls",
    "application/zip": "zip", "application/x-zip-compressed": "zip",
    "application/pdf": "pdf", "text/html": "html", "application/xhtml+xml": "html",
    "application/json": "json", "text/json": "json",
    "application/geo+json": "geojson", "application/vnd.geo+json": "geojson",
    "application/x-ndjson": "ndjson", "application/ndjson": "ndjson",
    "application/jsonl": "ndjson", "application/x-jsonlines": "ndjson",
}
_EXTENSIONS = {
    ".csv": "csv", ".tsv": "csv", ".tab": "csv", ".txt": "csv", ".psv": "csv",
    ".xlsx": "xlsx", ".xlsm": "xlsx", ".xls": "xls", ".zip": "zip", ".pdf": "pdf", ".html": "html",
    ".htm": "html", ".json": "json", ".geojson": "geojson", ".ndjson": "ndjson",
    ".jsonl": "ndjson", ".shp": "shapefile",
}
_HTML = re.compile(rb"<\s*(!doctype\s+html|html[\s>]|table[\s>]|head[\s>]|body[\s>])",
                   re.IGNORECASE)
_GEOJSON = re.compile(rb'"type"\s*:\s*"(FeatureCollection|Feature)"')


@dataclass(frozen=True)
class Sniffed:
    """What a file is: its format and, for a text table, its delimiter."""

    format: str
    delimiter: str = ""
    #: Why: the evidence, for logs and ``stldata add``'s comments.
    evidence: str = ""


def hint_of(name: str, content_type: str = "") -> str:
    """The format a file's name or HTTP content type suggests, or ``""``."""
    media = content_type.split(";", 1)[0].strip().casefold()
    if media in _CONTENT_TYPES:
        return _CONTENT_TYPES[media]
    return _EXTENSIONS.get(Path(name.split("?", 1)[0]).suffix.casefold(), "")


def sniff(path: Path, name: str = "", content_type: str = "") -> Sniffed:
    """The format of the file at ``path`` (called ``name`` in messages; its extension and
    the URL's ``content_type`` break ties). Raises :class:`SourceError` naming what was
    seen when the content is none of the known formats."""
    name = name or path.name
    with path.open("rb") as stream:
        head = stream.read(HEAD_BYTES)
        complete = not stream.read(1)
    if not head.strip():
        raise EmptySourceError(name, "file is empty; there is no format to recognise")
    hint = hint_of(name, content_type)

    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return _sniff_zip(path, name)
    if head.startswith(b"\xd0\xcf\x11\xe0"):
        # OLE2 compound file: a legacy .xls workbook (calamine reads it; another OLE2
        # document, such as a .doc, fails there with a clear "not a readable workbook").
        return Sniffed("xls", evidence="OLE2 compound file (a legacy Excel .xls workbook)")
    if head.lstrip().startswith(b"%PDF"):
        return Sniffed("pdf", evidence="starts with %PDF")
    for magic, what in _KNOWN_BINARY:
        if head.startswith(magic):
            raise SourceError(name, f"content is {what}, which is not a supported format")

    body = head
    for bom in BOMS:
        if body.startswith(bom):
            body = body[len(bom):]
    utf16 = utf16_codec(head)
    if utf16:
        return _sniff_utf16(head, utf16, name, hint)
    if b"\x00" in body[:4096]:
        _no_nul(body, head, name)
    stripped = body.lstrip()
    if stripped[:1] in (b"{", b"["):
        found = _sniff_json(stripped, complete, hint)
        if found:
            return found
    elif complete and hint != "csv" and _is_json(stripped):
        # A lone JSON value (42, "text", true) is a JSON document, for the JSON parser
        # to say it holds no records, not a one-column table with no rows.
        return Sniffed("json", evidence="a single JSON value")
    # Markup first (an XML prolog or a comment may come before the tag), not a text
    # that mentions a tag somewhere.
    if stripped[:1] == b"<" and _HTML.search(stripped[:4096]):
        return Sniffed("html", evidence="HTML tags at the start")
    return _sniff_text_table(body, name, hint)


def _sniff_utf16(head: bytes, codec: str, name: str, hint: str) -> Sniffed:
    """Excel's "Unicode Text" export: UTF-16 (tab-separated). The CSV parser decodes it
    (:func:`stldata.ingest.decode.text_lines`); other formats must be UTF-8."""
    text = head[:len(head) - len(head) % 2].decode(codec, errors="replace").lstrip("\ufeff")
    stripped = text.lstrip()
    if stripped[:1] in ("{", "[") or (stripped[:1] == "<" and _HTML.search(
            stripped[:4096].encode("utf-8", "replace"))):
        raise SourceError(name, f"{UTF16_NAMES[codec]} text that is JSON or HTML, which is "
                                "read only as UTF-8; save it as UTF-8")
    found = _sniff_text_table(text.encode("utf-8", "surrogatepass"), name, hint)
    return dataclasses.replace(found, evidence=f"{UTF16_NAMES[codec]} text; {found.evidence}")


def _no_nul(body: bytes, head: bytes, name: str) -> None:
    """Raise the error for content with a NUL byte that is not UTF-16: text with a stray
    NUL (named by its line) or binary content."""
    if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        raise SourceError(name, "UTF-32 text, which is not supported; save it as UTF-8")
    at = body.index(b"\x00")
    sample = body[:4096].replace(b"\x00", b"")
    lines = [decode_line(line) for line in sample.splitlines()]
    if lines and _looks_like_text(lines):
        line = body[:at].count(b"\n") + 1
        raise SourceError(name, f"text with a NUL byte at line {line} (byte "
                                f"{at + len(head) - len(body)}); a NUL is not valid in a text "
                                "export: remove it or export the file again")
    shown = " ".join(f"{b:02x}" for b in head[:8])
    raise SourceError(name, f"binary content of an unknown kind (first bytes {shown}); "
                            "expected CSV, XLSX, ZIP, PDF, HTML or JSON")


def _sniff_zip(path: Path, name: str) -> Sniffed:
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise SourceError(name, f"starts like a ZIP file (PK) but is not a readable one: "
                                f"{exc}") from None
    if any(m.startswith("xl/") for m in members):
        return Sniffed("xlsx", evidence="ZIP with an xl/ member (an Excel workbook)")
    if any(m.startswith(("word/", "ppt/")) for m in members):
        raise SourceError(name, "content is a Word or PowerPoint document, which is not a "
                                "supported format")
    shapes = [m for m in members if m.casefold().endswith(".shp")]
    if shapes:
        return Sniffed("shapefile", evidence=f"ZIP holding {shapes[0]}")
    return Sniffed("zip", evidence=f"ZIP archive of {len(members)} members")


def _sniff_json(text: bytes, complete: bool, hint: str) -> Sniffed | None:
    """JSON, NDJSON (one value per line) or GeoJSON; ``None`` when it is not JSON at all."""
    lines = [line for line in text.splitlines() if line.strip()]
    if complete:
        try:
            whole = orjson.loads(text)
        except orjson.JSONDecodeError:
            return _sniff_broken_json(text, lines, hint)
        if len(lines) == 1 and hint == "ndjson":
            return Sniffed("ndjson", evidence="a single JSON line, named as NDJSON")
        if isinstance(whole, dict) and whole.get("type") in ("FeatureCollection", "Feature"):
            return Sniffed("geojson", evidence=f'JSON with "type": "{whole["type"]}"')
        return Sniffed("json", evidence="a JSON document")
    # Larger than the head: one value per line shows in the first lines, and a GeoJSON
    # file names its type near the top.
    if len(lines) >= 2 and _is_json(lines[0]) and _is_json(lines[1]):
        return Sniffed("ndjson", evidence="one JSON value per line")
    if _GEOJSON.search(text[:65536]) and text[:1] == b"{":
        return Sniffed("geojson", evidence='JSON with "type": "FeatureCollection"')
    return Sniffed("json", evidence="a JSON document (starts with { or [)")


def _sniff_broken_json(text: bytes, lines: list[bytes], hint: str) -> Sniffed | None:
    """Content that starts like JSON but does not parse as one document. It stays JSON (so
    the JSON parser names the broken line and column, and NDJSON quarantines its bad
    lines) unless the name says CSV: a table whose first cell starts with ``[`` or ``{``."""
    objects = sum(1 for line in lines if _is_json_object(line))
    if lines and all(_is_json(line) for line in lines):
        return Sniffed("ndjson", evidence="one JSON value per line")
    if len(lines) >= 2 and objects * 2 > len(lines):
        return Sniffed("ndjson", evidence=f"{objects} of {len(lines)} lines are JSON objects")
    if hint == "csv":
        return None
    if hint == "ndjson" and objects:
        return Sniffed("ndjson", evidence="JSON objects on lines, named as NDJSON")
    if text[:1] == b"{" and (hint == "geojson" or _GEOJSON.search(text[:65536])):
        return Sniffed("geojson", evidence='JSON with "type": "FeatureCollection" (broken)')
    return Sniffed("json", evidence="starts with { or [ but is not valid JSON")


def _is_json_object(line: bytes) -> bool:
    try:
        return isinstance(orjson.loads(line), dict)
    except orjson.JSONDecodeError:
        return False


def _is_json(line: bytes) -> bool:
    try:
        orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return True


def _sniff_text_table(body: bytes, name: str, hint: str) -> Sniffed:
    """A delimited text table: the delimiter that splits the first lines into the same
    number of fields (more than one) most consistently."""
    text_lines = _lines(body)
    if text_lines and not _looks_like_text(text_lines):
        raise SourceError(name, "content is not text, nor a known binary format (first "
                                f"line {text_lines[0][:60]!r})")
    best: tuple[float, int, int] | None = None
    chosen = ","
    for rank, delimiter in enumerate(DELIMITERS):
        widths = [len(row) for row in csv.reader(text_lines[:50], delimiter=delimiter)
                  if row and any(c.strip() for c in row)]
        if not widths:
            continue
        width, times = Counter(widths).most_common(1)[0]
        if width < 2:
            continue
        score = (times / len(widths), width, -rank)
        if best is None or score > best:
            best, chosen = score, delimiter
    if best is None:
        # One column: a list of values. A .tsv stays tab-separated all the same.
        chosen = "\t" if Path(name).suffix.casefold() in (".tsv", ".tab") else ","
        return Sniffed("csv", chosen, "text with one column")
    if hint not in ("", "csv"):
        evidence = f"a delimited text table (named as {hint}, but the content is a table)"
    else:
        evidence = "a delimited text table"
    return Sniffed("csv", chosen, f"{evidence}; fields split by {_delimiter_name(chosen)}")


def _lines(body: bytes) -> list[str]:
    """The first lines, decoded like the CSV parser decodes them; the last line is left
    out when the head cut it short."""
    raw = body.split(b"\n") if b"\n" in body else body.split(b"\r")
    if len(raw) > 1:
        raw = raw[:-1]
    return [decode_line(line.rstrip(b"\r")) for line in raw[:200]]


def _looks_like_text(lines: list[str]) -> bool:
    return looks_like_text("".join(lines[:20]))


def _delimiter_name(delimiter: str) -> str:
    return {",": "commas", ";": "semicolons", "\t": "tabs", "|": "pipes"}[delimiter]


def resolve_options(source: Source, path: Path, name: str, content_type: str = "") -> Source:
    """The source options for one file, with a sniffed format (and delimiter) when the
    catalog leaves them to ``auto``."""
    if source.format != "auto" and source.delimiter != "auto":
        return source
    found = sniff(path, name, content_type)
    fmt = found.format if source.format == "auto" else source.format
    delimiter = source.delimiter
    if delimiter == "auto":
        delimiter = found.delimiter or ","
        if fmt == "csv" and found.format != "csv":
            delimiter = ","
    return dataclasses.replace(source, format=fmt, delimiter=delimiter)


def open_tables(source: Source, path: Path, name: str) -> Iterator[Table]:
    """The tables of one source file, parsed as its catalog entry says or, for ``auto``,
    as its content shows."""
    options = resolve_options(source, path, name)
    return parser_for(options.format)(path, name, options)
