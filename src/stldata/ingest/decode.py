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


def text_lines(stream: BinaryIO, name: str, encoding: str = "auto") -> Iterator[str]:
    """Yield decoded lines (line ends kept) of a binary stream.

    Raises :class:`EmptySourceError` for a file with no bytes and
    :class:`BinarySourceError` when a NUL byte shows the file is not text.
    """
    first = True
    offset = 0
    old_mac: bool | None = None
    for raw in stream:
        if first:
            first = False
            for bom in BOMS:
                if raw.startswith(bom):
                    raw = raw[len(bom):]
                    offset += len(bom)
        if b"\x00" in raw:
            at = offset + raw.index(b"\x00")
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

