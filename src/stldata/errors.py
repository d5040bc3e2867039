"""The one exception base of the project.

Every error carries its context as attributes and builds its message once, so a log line
or an API problem can show both. ``transient`` tells a caller whether retrying may help.
"""

from __future__ import annotations


class StlDataError(Exception):
    """Base class of every error this package raises on purpose."""

    transient: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RecordRefused(StlDataError):
    """The log refused one record outright (over Kafka's message size limit, say); the
    message names the record's file and line, since sending it again cannot help."""


class ConfigurationError(StlDataError):
    """A setting or a catalog file is wrong; the user has to fix it."""


class TransientError(StlDataError):
    """A dependency (database, broker, network) failed in a way that may pass."""

    transient = True


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (a driver's error runs on for several),
    or its type's name when it has none: what a log line or a CLI error shows."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
