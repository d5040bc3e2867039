"""The members of a ZIP archive as source files, read safely.

A member is located by the offsets and sizes in the archive's directory and inflated by
this module, never extracted by its name: it is written to a file named by its number, so a
name like ``../../x`` never becomes a path on disk. Limits against zip bombs are checked
twice: first on the sizes the archive declares, then on the bytes actually produced while
inflating, so a member whose header understates its size stops at the first byte past what
it declared, and a bomb is never written out in full.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
import struct
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from stldata.ingest.errors import SourceError
from stldata.settings import Settings

#: A member this small cannot exhaust memory or disk, whatever its ratio (a header row
#: of empty columns compresses 50-fold), so the ratio limit starts above it.
RATIO_FLOOR = 1 << 20
#: Bytes of compressed input read, and of inflated output produced, per step.
_READ = 1 << 16
_INFLATE = 1 << 20
#: Local file header: signature, version, flags, method, time, date, crc, sizes, lengths.
_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")
_LOCAL_SIGNATURE = b"PK\x03\x04"
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")


class ArchiveError(SourceError):
    """A ZIP archive, or one of its members, cannot be read; nothing of it is published."""

    def __init__(self, archive: str, member: str | None, problem: str) -> None:
        super().__init__(f"{archive}!{member}" if member else archive, problem)
        self.archive = archive
        self.member = member


@dataclass(frozen=True)
class ArchiveLimits:
    max_total_bytes: int
    max_ratio: float
    max_members: int
    #: No member may inflate to more than a source file may be (STLDATA_MAX_SOURCE_BYTES).
    max_member_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ArchiveLimits:
        return cls(settings.zip_max_total_bytes, settings.zip_max_ratio,
                   settings.zip_max_members, settings.max_source_bytes)


@dataclass(frozen=True)
class Member:
    """One member, inflated to ``path``, with its name in the archive and content hash."""

    name: str
    path: Path
    sha256: str
    size: int


#: Formats whose parser reads a whole ZIP archive itself (a shapefile is a .shp, .dbf,
#: .shx and .prj that belong together), so their archives are not split into members.
WHOLE_ARCHIVE_FORMATS = ("shapefile",)


def is_archive(name: str) -> bool:
    return name.casefold().endswith(".zip")


def holds_shapefile(archive: Path) -> bool:
    """Whether a .shp is among the members (an unreadable archive is reported later)."""
    try:
        with zipfile.ZipFile(archive) as opened:
            return any(n.casefold().endswith(".shp") for n in opened.namelist())
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, OSError):
        return False


def unsafe_name(name: str) -> bool:
    """A name that would climb out of, or start above, an extraction folder."""
    posix = name.replace("\\", "/")
    return (posix.startswith("/") or bool(_WINDOWS_DRIVE.match(posix)) or "\x00" in posix
            or ".." in PurePosixPath(posix).parts)


def matches(name: str, patterns: tuple[str, ...]) -> bool:
    """A pattern with a ``/`` matches the member's whole path; one without, its file name.
    Both case-insensitively, as publishers change the case of names between releases."""
    path = name.casefold()
    base = path.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(path if "/" in p else base, p.casefold()) for p in patterns)


def read_members(archive: Path, label: str, patterns: tuple[str, ...], limits: ArchiveLimits,
                 into: Path) -> list[Member]:
    """Inflate the members matching ``patterns`` into ``into``, in archive order.

    ``label`` names the archive in errors and partitions (its file name, usually).
    """
    try:
        with zipfile.ZipFile(archive) as opened:
            entries = opened.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as exc:
        raise ArchiveError(label, None, f"not a readable ZIP archive: {exc}") from None

    if len(entries) > limits.max_members:
        raise ArchiveError(label, None, f"has {len(entries)} entries, more than "
                                        f"STLDATA_ZIP_MAX_MEMBERS ({limits.max_members})")
    for entry in entries:
        if unsafe_name(entry.filename):
            raise ArchiveError(label, entry.filename,
                               "member name points outside the archive (absolute or '..'); "
                               "the archive is refused and nothing of it is read")

    chosen = [e for e in entries if not e.is_dir() and matches(e.filename, patterns)]
    if not chosen:
        names = ", ".join(e.filename for e in entries[:20]) or "none"
        raise ArchiveError(label, None, f"no member matches {list(patterns)}; it holds: "
                                        f"{names}")
    repeated = [(n, times) for n, times in Counter(e.filename for e in chosen).items()
                if times > 1]
    if repeated:
        # A ZIP may hold one name twice (appended to, not rewritten); which is the
        # current file is anyone's guess, and both would claim one partition.
        raise ArchiveError(label, repeated[0][0],
                           f"the archive holds {repeated[0][1]} members with this name; "
                           "repack it with each file once")
    _check_declared(label, chosen, limits)

    members: list[Member] = []
    total = 0
    with archive.open("rb") as stream:
        for number, entry in enumerate(chosen, 1):
            suffix = re.sub(r"[^0-9A-Za-z]", "", PurePosixPath(entry.filename).suffix)[:10]
            target = into / f"member-{number:05d}{'.' + suffix if suffix else ''}"
            sha256, size = _inflate(stream, label, entry, target, limits, total)
            total += size
            members.append(Member(entry.filename, target, sha256, size))
    return members


def _check_declared(label: str, chosen: list[zipfile.ZipInfo], limits: ArchiveLimits) -> None:
    """Refuse a bomb on what the archive says about itself, before inflating anything."""
    total = 0
    for entry in chosen:
        if entry.flag_bits & 0x1:
            raise ArchiveError(label, entry.filename, "member is encrypted")
        if entry.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ArchiveError(label, entry.filename,
                               f"compression method {entry.compress_type} is not supported "
                               "(only stored and deflated members are read)")
        if entry.file_size > limits.max_member_bytes:
            raise ArchiveError(label, entry.filename,
                               f"declares {entry.file_size} bytes, more than "
                               f"STLDATA_MAX_SOURCE_BYTES ({limits.max_member_bytes})")
        _check_ratio(label, entry, entry.file_size, limits, "declares")
        total += entry.file_size
        if total > limits.max_total_bytes:
            raise ArchiveError(label, entry.filename,
                               f"the chosen members declare {total} bytes so far, more than "
                               f"STLDATA_ZIP_MAX_TOTAL_BYTES ({limits.max_total_bytes})")


def _check_ratio(label: str, entry: zipfile.ZipInfo, size: int, limits: ArchiveLimits,
                 verb: str) -> None:
    if size > RATIO_FLOOR and size > limits.max_ratio * max(entry.compress_size, 1):
        raise ArchiveError(label, entry.filename,
                           f"{verb} {size} bytes from {entry.compress_size} compressed, a "
                           f"ratio over STLDATA_ZIP_MAX_RATIO ({limits.max_ratio:g}); "
                           "refused as a possible zip bomb")


def _inflate(stream: BinaryIO, label: str, entry: zipfile.ZipInfo, target: Path,
             limits: ArchiveLimits, total_before: int) -> tuple[str, int]:
    """Write one member to ``target``, enforcing every limit on the bytes as they come."""
    stream.seek(entry.header_offset)
    header = stream.read(_LOCAL_HEADER.size)
    if len(header) < _LOCAL_HEADER.size or header[:4] != _LOCAL_SIGNATURE:
        raise ArchiveError(label, entry.filename, "member's local header is missing; the "
                                                  "archive is corrupt")
    name_length, extra_length = _LOCAL_HEADER.unpack(header)[9:11]
    stream.seek(entry.header_offset + _LOCAL_HEADER.size + name_length + extra_length)

    digest = hashlib.sha256()
    crc = 0
    size = 0
    with target.open("wb") as out:
        for piece in _decompressed(stream, label, entry):
            size += len(piece)
            if size > entry.file_size:
                raise ArchiveError(label, entry.filename,
                                   f"holds more than the {entry.file_size} bytes its header "
                                   "declares; the archive is corrupt or forged")
            if size > limits.max_member_bytes:
                raise ArchiveError(label, entry.filename,
                                   f"inflates past STLDATA_MAX_SOURCE_BYTES "
                                   f"({limits.max_member_bytes})")
            if total_before + size > limits.max_total_bytes:
                raise ArchiveError(label, entry.filename,
                                   f"the chosen members inflate past "
                                   f"STLDATA_ZIP_MAX_TOTAL_BYTES ({limits.max_total_bytes})")
            _check_ratio(label, entry, size, limits, "inflates to")
            out.write(piece)
            digest.update(piece)
            crc = zlib.crc32(piece, crc)
    if size != entry.file_size:
        raise ArchiveError(label, entry.filename,
                           f"holds {size} bytes but its header declares {entry.file_size}; "
                           "the archive is truncated or corrupt")
    if crc != entry.CRC:
        raise ArchiveError(label, entry.filename, "CRC check failed; the archive is corrupt")
    return digest.hexdigest(), size


def _decompressed(stream: BinaryIO, label: str, entry: zipfile.ZipInfo) -> Iterator[bytes]:
    """The member's bytes in pieces of at most ``_INFLATE``, however much one compressed
    block expands."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS) \
        if entry.compress_type == zipfile.ZIP_DEFLATED else None
    left = entry.compress_size
    try:
        while left > 0:
            chunk = stream.read(min(_READ, left))
            if not chunk:
                raise ArchiveError(label, entry.filename, "archive ends inside this member; "
                                                          "it is truncated")
            left -= len(chunk)
            if inflater is None:
                yield chunk
                continue
            data = chunk
            while True:
                piece = inflater.decompress(data, _INFLATE)
                data = inflater.unconsumed_tail
                if piece:
                    yield piece
                if not data and len(piece) < _INFLATE:
                    break
        if inflater is not None:
            if tail := inflater.flush():
                yield tail
            if not inflater.eof:
                raise ArchiveError(label, entry.filename, "compressed data ends early; the "
                                                          "archive is truncated or corrupt")
    except zlib.error as exc:
        raise ArchiveError(label, entry.filename,
                           f"compressed data is corrupt: {exc}") from None
