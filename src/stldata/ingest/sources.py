"""Find the files of a source: a local file, a folder, an http(s) URL, or the samples
bundled with the catalog; the chosen members of each ZIP archive among them.

A URL is fetched conditionally: the ETag and Last-Modified the server sent with the last
fetch that was published go back as If-None-Match and If-Modified-Since, and a
304 Not Modified ends the ingest at once, without downloading or hashing anything.
"""

from __future__ import annotations

import fnmatch
import hashlib
import http.client
import logging
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path

import orjson

from stldata.catalog import Dataset
from stldata.ingest.archive import (
    WHOLE_ARCHIVE_FORMATS,
    ArchiveLimits,
    holds_shapefile,
    is_archive,
    read_members,
)
from stldata.ingest.errors import FetchError, SourceError
from stldata.settings import PROJECT_ROOT, Settings
from stldata.store.database import Database

log = logging.getLogger(__name__)

#: Prefix of the temporary folders of fetched files and inflated archive members;
#: :func:`cleanup_fetch` removes them.
_TEMP_PREFIX = "stldata-fetch-"
_ZIP_TYPES = ("application/zip", "application/x-zip-compressed")


@dataclass(frozen=True)
class SourceFile:
    """One file of a source, fetched to local disk, with its content hash."""

    path: Path
    #: Stable name of the file within the dataset (its partition for increments); a ZIP
    #: member is ``archive.zip!member/path``.
    partition: str
    origin: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Validators:
    """What a server said identifies the version of a URL it sent, and the files that
    version was published as."""

    etag: str | None = None
    last_modified: str | None = None
    #: (partition, sha256) of each file of the fetch, as published.
    files: tuple[tuple[str, str], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.etag or self.last_modified)


@dataclass
class ResolvedSource:
    origin: str
    files: list[SourceFile]
    #: The URL answered 304 Not Modified: nothing was downloaded.
    not_modified: bool = False
    #: Validators the server sent, by URL; saved only once the ingest has succeeded, so a
    #: failed ingest is never skipped as "not modified" next time.
    validators: dict[str, Validators] = field(default_factory=dict)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_url(source: str | None) -> bool:
    return bool(source) and "://" in str(source)


def _local_files(path: Path, dataset: Dataset) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        pattern = dataset.source.file_pattern.casefold()
        files = sorted(p for p in path.rglob("*")
                       if p.is_file() and fnmatch.fnmatch(p.name.casefold(), pattern))
        if not files:
            raise SourceError(str(path), f"folder has no files matching "
                                         f"{dataset.source.file_pattern!r}")
        return files
    raise SourceError(str(path), "no such file or folder")


def _conditional_headers(known: Validators | None) -> dict[str, str]:
    headers = {"User-Agent": "stldata"}
    if known and known.etag:
        headers["If-None-Match"] = known.etag
    if known and known.last_modified:
        headers["If-Modified-Since"] = known.last_modified
    return headers


#: File suffix for a format an HTTP content type names, for URLs without one.
_SUFFIXES = {"csv": ".csv", "xlsx": ".xlsx", "xls": ".xls", "pdf": ".pdf", "html": ".html",
             "json": ".json", "geojson": ".geojson", "ndjson": ".ndjson"}


def _download_name(url: str, headers: Message) -> str:
    from stldata.ingest.sniff import hint_of

    name = Path(urllib.parse.urlsplit(url).path).name or "download"
    # A file served from a URL without a suffix (``/download?id=7``) is named after its
    # content type, so an archive is still opened and the format sniffer gets the
    # server's word as a hint.
    content_type = headers.get_content_type() if headers else ""
    if content_type in _ZIP_TYPES and not is_archive(name):
        name += ".zip"
    elif not hint_of(name) and hint_of("", content_type) in _SUFFIXES:
        name += _SUFFIXES[hint_of("", content_type)]
    return name


def _fetch(url: str, settings: Settings, into: Path,
           known: Validators | None = None) -> tuple[Path, Validators] | None:
    """Download with a timeout, a size limit and retries with backoff; ``None`` when the
    server answers 304 Not Modified to ``known``."""
    delay = 1.0
    for attempt in range(1, 4):
        try:
            request = urllib.request.Request(url, headers=_conditional_headers(known))
            with urllib.request.urlopen(request, timeout=settings.fetch_timeout) as response:
                target = into / _download_name(url, response.headers)
                with target.open("wb") as out:
                    copied = 0
                    while chunk := response.read(1 << 20):
                        copied += len(chunk)
                        if copied > settings.max_source_bytes:
                            raise FetchError(url, f"larger than STLDATA_MAX_SOURCE_BYTES "
                                                  f"({settings.max_source_bytes} bytes)")
                        out.write(chunk)
                return target, Validators(response.headers.get("ETag"),
                                          response.headers.get("Last-Modified"))
        except urllib.error.HTTPError as exc:
            if exc.code == 304 and known:
                log.info("%s: not modified since the last fetch (HTTP 304)", url)
                return None
            if exc.code < 500 or attempt == 3:
                raise FetchError(url, f"HTTP {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, TimeoutError, ConnectionError, ValueError,
                http.client.HTTPException) as exc:
            if attempt == 3:
                raise FetchError(url, f"fetch failed after {attempt} attempts: {exc}") from exc
        log.warning("fetch of %s failed (attempt %d of 3); retrying in %.0fs",
                    url, attempt, delay)
        time.sleep(delay)
        delay *= 2
    raise FetchError(url, "fetch failed")


def _check_url(url: str) -> None:
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError for a port that is not a number)
    except ValueError as exc:
        raise FetchError(url, f"not a valid URL: {exc}") from None
    if not parts.hostname:
        raise FetchError(url, "not a valid URL: no host")


def _temp_folder(workdir: Path | None) -> Path:
    if workdir:
        workdir.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=_TEMP_PREFIX, dir=workdir))


def resolve_source(dataset: Dataset, source: str | None, settings: Settings,
                   workdir: Path | None = None) -> tuple[str, list[SourceFile]]:
    """Return a description of the source and its files, each hashed."""
    resolved = fetch_source(dataset, source, settings, workdir)
    return resolved.origin, resolved.files


def fetch_source(dataset: Dataset, source: str | None, settings: Settings,
                 workdir: Path | None = None,
                 known: Mapping[str, Validators] | None = None) -> ResolvedSource:
    """Find, fetch and hash the source's files, opening ZIP archives; a URL in ``known``
    is fetched conditionally."""
    if source is not None and not source.strip():
        raise SourceError("--source", "is empty; leave it out to use the bundled samples")
    scheme = source.split("://", 1)[0].casefold() if source and "://" in source else ""
    if scheme and scheme not in ("http", "https"):
        raise SourceError(source or "", f"{scheme}:// URLs are not supported; use http(s) "
                                        "or a local path")
    temp: list[Path] = []
    try:
        validators: dict[str, Validators] = {}
        if source and scheme:
            _check_url(source)
            temp.append(_temp_folder(workdir))
            fetched = _fetch(source, settings, temp[0], (known or {}).get(source))
            if fetched is None:
                shutil.rmtree(temp[0], ignore_errors=True)
                return ResolvedSource(source, [], not_modified=True)
            paths = [fetched[0]]
            validators[source] = fetched[1]
            origin = source
        elif source:
            path = Path(source)
            paths = _local_files(path, dataset)
            origin = str(path.resolve())
        else:
            if not dataset.source.samples:
                raise SourceError(dataset.id, "no --source given and the catalog bundles no "
                                              "samples")
            paths = []
            for pattern in dataset.source.samples:
                matched = sorted(PROJECT_ROOT.glob(pattern))
                if not matched:
                    raise SourceError(pattern, "bundled sample pattern matches no file")
                paths += matched
            origin = f"bundled samples of {dataset.id}"

        files = _source_files(dataset, paths, origin, settings, workdir, temp)
    except BaseException:
        for folder in temp:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    for url, found in validators.items():
        validators[url] = Validators(found.etag, found.last_modified,
                                     tuple((f.partition, f.sha256) for f in files))
    return ResolvedSource(origin, files, validators=validators)


def _source_files(dataset: Dataset, paths: list[Path], origin: str, settings: Settings,
                  workdir: Path | None, temp: list[Path]) -> list[SourceFile]:
    """Hash each file; an archive becomes one file per chosen member."""
    members = dataset.source.members or (dataset.source.file_pattern,)
    limits = ArchiveLimits.from_settings(settings)
    files: list[SourceFile] = []

    def add(file: SourceFile) -> None:
        # A file's partition is its name, so a month keeps its identity wherever it lives.
        if any(f.partition == file.partition for f in files):
            raise SourceError(str(file.path), f"two files of one source share the name "
                                              f"{file.partition!r}")
        files.append(file)

    for path in paths:
        size = path.stat().st_size
        if size > settings.max_source_bytes:
            raise SourceError(str(path), f"{size} bytes is over STLDATA_MAX_SOURCE_BYTES")
        if not is_archive(path.name) or _read_whole(dataset, path):
            add(SourceFile(path, path.name, origin, sha256_of(path), size))
            continue
        # A downloaded archive's members go beside it, so one cleanup removes both.
        folder = path.parent if path.parent in temp else _temp_folder(workdir)
        if folder not in temp:
            temp.append(folder)
        for member in read_members(path, path.name, members, limits, folder):
            add(SourceFile(member.path, f"{path.name}!{member.name}", origin, member.sha256,
                           member.size))
    return files


def _read_whole(dataset: Dataset, archive: Path) -> bool:
    """An archive its format's parser reads itself: a zipped shapefile, named as such or
    found by an ``auto`` format without a ``members`` option."""
    fmt = dataset.source.format
    return fmt in WHOLE_ARCHIVE_FORMATS or (
        fmt == "auto" and not dataset.source.members and holds_shapefile(archive))


def cleanup_fetch(files: list[SourceFile]) -> None:
    for file in files:
        if file.path.parent.name.startswith(_TEMP_PREFIX):
            shutil.rmtree(file.path.parent, ignore_errors=True)


def known_validators(database: Database, dataset: Dataset) -> dict[str, Validators]:
    """The validators of URLs whose last fetch is still what the read model holds.

    A validator is only trusted while the dataset's published files are the ones it was
    saved with: after an ingest from another source, a 304 would wrongly keep that
    source's data, so the URL is fetched in full again.
    """
    with database.connect() as conn:
        rows = conn.execute("SELECT url, etag, last_modified, files FROM source_validators "
                            "WHERE dataset_id = %s", (dataset.id,)).fetchall()
        published = {str(p): str(s) for p, s in conn.execute(
            "SELECT partition, sha256 FROM source_files WHERE dataset_id = %s",
            (dataset.id,)).fetchall()}
    known: dict[str, Validators] = {}
    for url, etag, last_modified, files in rows:
        recorded = {str(p): str(s) for p, s in files}
        same = all(published.get(p) == s for p, s in recorded.items())
        if dataset.mode == "full":
            same = same and set(published) == set(recorded)
        if same and recorded:
            known[str(url)] = Validators(etag, last_modified, tuple(recorded.items()))
    return known


def save_validators(database: Database, dataset_id: str,
                    validators: Mapping[str, Validators]) -> None:
    """Remember what each URL's server said, for the next conditional fetch."""
    with database.transaction() as conn:
        for url, found in validators.items():
            if not found:
                # Without an ETag or Last-Modified there is nothing to send back.
                conn.execute("DELETE FROM source_validators WHERE dataset_id = %s "
                             "AND url = %s", (dataset_id, url))
                continue
            conn.execute(
                "INSERT INTO source_validators (dataset_id, url, etag, last_modified, files) "
                "VALUES (%s, %s, %s, %s, %s::jsonb) ON CONFLICT (dataset_id, url) DO UPDATE "
                "SET etag = excluded.etag, last_modified = excluded.last_modified, "
                "files = excluded.files, fetched_at = now()",
                (dataset_id, url, found.etag, found.last_modified,
                 orjson.dumps([list(f) for f in found.files]).decode()))
