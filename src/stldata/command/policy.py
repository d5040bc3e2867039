"""Which sources a key holder may name over the command API.

The command line may ingest any file its user can read; the command API may not, or a key
holder could make the server read (and publish) any file on it, or fetch any address it
can reach. A local path must resolve, symlinks followed, inside ``STLDATA_COMMAND_SOURCE_DIR``;
a URL must fall under one of the ``STLDATA_COMMAND_SOURCE_URLS`` prefixes. With neither
set, only the catalog's own source and uploaded files can be ingested.
"""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from stldata.api.problems import ApiProblem
from stldata.settings import Settings

MAX_SOURCE_CHARS = 4096


class Forbidden(ApiProblem):
    status = 403
    title = "Forbidden"


@dataclass(frozen=True)
class UrlPrefix:
    scheme: str
    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, text: str) -> UrlPrefix:
        parts = urllib.parse.urlsplit(text.strip())
        scheme = parts.scheme.casefold()
        if scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"STLDATA_COMMAND_SOURCE_URLS: {text!r} is not an http(s) URL")
        port = parts.port or (443 if scheme == "https" else 80)
        return cls(scheme, parts.hostname.casefold(), port, parts.path or "/")

    def admits(self, other: UrlPrefix) -> bool:
        if (self.scheme, self.host, self.port) != (other.scheme, other.host, other.port):
            return False
        # Whole path segments only: /data must not admit /database.
        base = self.path if self.path.endswith("/") else self.path + "/"
        return other.path == self.path or other.path.startswith(base)


class SourcePolicy:
    def __init__(self, settings: Settings) -> None:
        self.directory = (settings.command_source_dir.resolve()
                          if settings.command_source_dir else None)
        self.prefixes = [UrlPrefix.parse(p) for p in settings.command_source_urls.split(",")
                         if p.strip()]

    def check(self, source: str) -> str:
        """Return the source to hand to the ingester, or raise a 400/403 problem."""
        if not source.strip():
            raise ApiProblem("'source' is empty; leave it out to ingest the catalog's source",
                             param="source")
        if len(source) > MAX_SOURCE_CHARS:
            raise ApiProblem(f"'source' is longer than {MAX_SOURCE_CHARS} characters",
                             param="source")
        if "\x00" in source or any(ord(c) < 32 for c in source):
            raise ApiProblem("'source' contains control characters", param="source")
        if "://" in source:
            return self._check_url(source.strip())
        return self._check_path(source.strip())

    def _check_url(self, url: str) -> str:
        try:
            parts = urllib.parse.urlsplit(url)
            wanted = UrlPrefix.parse(url)
        except ValueError as exc:
            raise ApiProblem(f"'source' is not a usable http(s) URL: {exc}",
                             param="source") from None
        if parts.username or parts.password:
            raise ApiProblem("'source' URLs may not carry user names or passwords",
                             param="source")
        if not self.prefixes:
            raise Forbidden("URL sources are not allowed on this server "
                            "(STLDATA_COMMAND_SOURCE_URLS is empty)", param="source")
        if not any(p.admits(wanted) for p in self.prefixes):
            raise Forbidden("'source' is not under a URL prefix this server allows "
                            "(STLDATA_COMMAND_SOURCE_URLS)", param="source")
        return url

    def _check_path(self, text: str) -> str:
        if self.directory is None:
            raise Forbidden("local path sources are not allowed on this server "
                            "(STLDATA_COMMAND_SOURCE_DIR is unset); upload the file "
                            "instead", param="source")
        # Relative paths are relative to the source folder, never to the server's cwd.
        try:
            resolved = Path(os.path.realpath(self.directory / text))
            inside = resolved == self.directory or resolved.is_relative_to(self.directory)
            exists = inside and resolved.exists()
        except (OSError, ValueError) as exc:  # a name too long for the file system, say
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            raise ApiProblem(f"'source' is not a usable path: {reason}",
                             param="source") from None
        if not inside:
            raise Forbidden("'source' is outside the folder this server allows "
                            "(STLDATA_COMMAND_SOURCE_DIR)", param="source")
        if not exists:
            raise ApiProblem("'source': no such file or folder in the source folder",
                             param="source")
        return str(resolved)
