"""Errors of the command side; each names the file and what is wrong with it."""

from __future__ import annotations

from stldata.errors import StlDataError


class SourceError(StlDataError):
    """A source file cannot be used at all; nothing of it is published."""

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem


class EmptySourceError(SourceError):
    pass


class BinarySourceError(SourceError):
    pass


class UnknownColumnsError(SourceError):
    pass


class FetchError(SourceError):
    pass
