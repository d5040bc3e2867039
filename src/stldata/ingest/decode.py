"""Turn the bytes of a text export into lines of str, whatever the publisher's encoding.

City exports are mostly Windows-1252, sometimes behind a UTF-8 byte order mark, and may
mix in UTF-8. Each physical line is decoded on its own: as UTF-8 when it is valid UTF-8
(cp1252 text almost never is), otherwise as cp1252, so one odd line never forces a
wrong guess on the whole file.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from typing import BinaryIO

from stldata.ingest.errors import BinarySourceError, EmptySourceError, SourceError

BOMS = (codecs.BOM_UTF8,)

#: Bytes that cp1252 leaves undefined; Latin-1 maps them to the C1 controls instead.
_CP1252_HOLES = {0x81, 0x8D, 0x8F, 0x90, 0x9D}


def _decode_cp1252(line: bytes) -> str:
    if any(b in _CP1252_HOLES for b in line):
        return "".join(
            bytes([b]).decode("latin-1") if b in _CP1252_HOLES else bytes([b]).decode("cp1252")
            for b in line
        )
    return line.decode("cp1252")


def decode_line(line: bytes, encoding: str = "auto") -> str:
    if encoding == "auto":
        try:
            return line.decode("utf-8")
        except UnicodeDecodeError:
            return _decode_cp1252(line)
    if encoding in ("cp1252", "windows-1252"):
        return _decode_cp1252(line)
    return line.decode(encoding)


def looks_like_text(sample: str) -> bool:
    """At most one control character in a hundred (tabs and line ends aside)."""
    controls = sum(1 for c in sample if ord(c) < 32 and c not in "\t\r\n\x0c")
    return controls <= len(sample) // 100


def utf16_codec(head: bytes) -> str:
    """``utf-16-le`` or ``utf-16-be`` when the bytes are UTF-16 text (Excel's "Unicode
    Text" export), by its byte order mark or, without one, by the NUL that mostly-ASCII
    text has in every other byte; ``""`` otherwise."""
    if head.startswith(codecs.BOM_UTF16_LE) and not head.startswith(codecs.BOM_UTF32_LE):
        return "utf-16-le"
    if head.startswith(codecs.BOM_UTF16_BE):
        return "utf-16-be"
    sample = head[:4096]
    sample = sample[:len(sample) - len(sample) % 2]
    if len(sample) < 4:
        return ""
    even, odd = sample[0::2], sample[1::2]
    if odd.count(0) >= 0.9 * len(odd) and even.count(0) <= 0.1 * len(even):
        return "utf-16-le"
    if even.count(0) >= 0.9 * len(even) and odd.count(0) <= 0.1 * len(odd):
        return "utf-16-be"
    return ""


UTF16_NAMES = {"utf-16": "UTF-16", "utf-16-le": "UTF-16 (little-endian)",
               "utf-16-be": "UTF-16 (big-endian)"}
#: Characters read per step from a UTF-16 file.
_CHUNK = 1 << 16


def _given_utf16(encoding: str) -> str:
    try:
        codec = codecs.lookup(encoding).name
    except LookupError:
        return ""
    return codec if codec in UTF16_NAMES else ""


def text_lines(stream: BinaryIO, name: str, encoding: str = "auto") -> Iterator[str]:
    """Yield decoded lines (line ends kept) of a binary stream.

    Raises :class:`EmptySourceError` for a file with no bytes and
    :class:`BinarySourceError` when a NUL byte shows the file is not text. UTF-16 text
    (by its byte order mark, or the catalog's encoding) is decoded as a whole.
    """
    codec = _given_utf16(encoding)
    if encoding == "auto" and stream.seekable():
        codec = utf16_codec(stream.read(4096))
        stream.seek(0)
    if codec:
        yield from _utf16_lines(stream, name, codec)
        return
    first = True
    offset = 0
    number = 0
    old_mac: bool | None = None
    for raw in stream:
        number += 1
        if first:
            first = False
            for bom in BOMS:
                if raw.startswith(bom):
                    raw = raw[len(bom):]
                    offset += len(bom)
        if b"\x00" in raw:
            at = offset + raw.index(b"\x00")
            if looks_like_text(decode_line(raw.replace(b"\x00", b""))):
                raise BinarySourceError(name, f"text with a NUL byte at line {number} (byte "
                                              f"{at}); a NUL is not valid in a text export: "
                                              "remove it or export the file again")
            raise BinarySourceError(name, f"binary content (NUL byte at byte {at}); "
                                          "expected a text CSV export")
        # Old Mac exports end every line with a bare CR, which reading by LF leaves in one
        # long "line"; a header ended by a bare CR marks such a file, whose lines are then
        # split at CRs (CRLF stays whole). Elsewhere a bare CR is a broken row for the
        # CSV reader to reject, not a line end.
        if old_mac is None:
            old_mac = 0 <= raw.find(b"\r") < len(raw) - 2
        pieces = raw.splitlines(keepends=True) if old_mac else (raw,)
        for piece in pieces:
            try:
                text = decode_line(piece, encoding)
            except UnicodeDecodeError as exc:
                raise SourceError(
                    name, f"bytes {offset + exc.start}-{offset + exc.end - 1} are not valid "
                          f"{encoding} ({exc.reason}); set the source's encoding to auto or "
                          "to the file's real one") from None
            except LookupError:
                raise SourceError(name, f"unknown encoding {encoding!r}") from None
            offset += len(piece)
            yield text
    if first:
        raise EmptySourceError(name, "file is empty (0 bytes)")


def _utf16_lines(stream: BinaryIO, name: str, codec: str) -> Iterator[str]:
    """The lines of UTF-16 text, split at LF (CRLF kept whole), the byte order mark
    dropped."""
    decoder = codecs.getincrementaldecoder(codec)(errors="strict")
    pending = ""
    number = 0
    start = True
    read = 0
    while True:
        chunk = stream.read(_CHUNK)
        try:
            text = pending + decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            raise SourceError(name, f"bytes {read + exc.start}-{read + exc.end - 1} are not "
                                    f"valid {UTF16_NAMES[codec]} ({exc.reason})") from None
        read += len(chunk)
        if start:
            if not text and not chunk:
                raise EmptySourceError(name, "file is empty (0 bytes)")
            text = text.removeprefix("\ufeff")
            start = False
        lines = text.split("\n")
        # The text after the last LF is the start of a line the next chunk ends.
        pending = lines.pop()
        if not chunk and pending:  # the last line, with no LF
            lines.append(pending)
        for line in lines:
            number += 1
            if "\x00" in line:
                raise BinarySourceError(name, f"{UTF16_NAMES[codec]} text with a NUL "
                                              f"character at line {number}")
            yield line + "\n"
        if not chunk:
            return
