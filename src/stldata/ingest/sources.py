"""Find the files of a source: a local file, a folder, an http(s) URL, or the samples
bundled with the catalog."""

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
from dataclasses import dataclass
from pathlib import Path

from stldata.catalog import Dataset
from stldata.ingest.errors import FetchError, SourceError
from stldata.settings import PROJECT_ROOT, Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceFile:
    """One file of a source, fetched to local disk, with its content hash."""

    path: Path
    #: Stable name of the file within the dataset (its partition for increments).
    partition: str
    origin: str
    sha256: str
    size: int


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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


def _fetch(url: str, settings: Settings, into: Path) -> Path:
    """Download with a timeout, a size limit and retries with backoff."""
    name = Path(url.split("?", 1)[0]).name or "download"
    target = into / name
    delay = 1.0
    for attempt in range(1, 4):
        try:
            request = urllib.request.Request(url, headers={"User-Agent": "stldata"})
            with urllib.request.urlopen(request, timeout=settings.fetch_timeout) as response, \
                    target.open("wb") as out:
                copied = 0
                while chunk := response.read(1 << 20):
                    copied += len(chunk)
                    if copied > settings.max_source_bytes:
                        raise FetchError(url, f"larger than STLDATA_MAX_SOURCE_BYTES "
                                              f"({settings.max_source_bytes} bytes)")
                    out.write(chunk)
            return target
        except urllib.error.HTTPError as exc:
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


def resolve_source(dataset: Dataset, source: str | None, settings: Settings,
                   workdir: Path | None = None) -> tuple[str, list[SourceFile]]:
    """Return a description of the source and its files, each hashed."""
    if source is not None and not source.strip():
        raise SourceError("--source", "is empty; leave it out to use the bundled samples")
    scheme = source.split("://", 1)[0].casefold() if source and "://" in source else ""
    if scheme and scheme not in ("http", "https"):
        raise SourceError(source or "", f"{scheme}:// URLs are not supported; use http(s) "
                                        "or a local path")
    if source and scheme:
        _check_url(source)
        if workdir:
            workdir.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="stldata-fetch-", dir=workdir))
        try:
            paths = [_fetch(source, settings, folder)]
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        origin = source
    elif source:
        path = Path(source)
        paths = _local_files(path, dataset)
        origin = str(path.resolve())
    else:
        if not dataset.source.samples:
            raise SourceError(dataset.id, "no --source given and the catalog bundles no samples")
        paths = []
        for pattern in dataset.source.samples:
            matched = sorted(PROJECT_ROOT.glob(pattern))
            if not matched:
                raise SourceError(pattern, "bundled sample pattern matches no file")
            paths += matched
        origin = f"bundled samples of {dataset.id}"

    files: list[SourceFile] = []
    for path in paths:
        size = path.stat().st_size
        if size > settings.max_source_bytes:
            raise SourceError(str(path), f"{size} bytes is over STLDATA_MAX_SOURCE_BYTES")
        # A file's partition is its name, so a month keeps its identity wherever it lives.
        if any(f.partition == path.name for f in files):
            raise SourceError(str(path), "two files of one source share this file name")
        files.append(SourceFile(path, path.name, origin, sha256_of(path), size))
    return origin, files


def cleanup_fetch(files: list[SourceFile]) -> None:
    for file in files:
        if file.path.parent.name.startswith("stldata-fetch-"):
            shutil.rmtree(file.path.parent, ignore_errors=True)
