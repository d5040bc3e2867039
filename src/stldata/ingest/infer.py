"""Infer a column's type from every value of a source, not from its first rows.

Each column starts with every candidate type and loses those a value does not fit, so a
late odd value (an "N/A" on row 90,000) widens the type instead of aborting the load.
"""

from __future__ import annotations

from stldata.catalog import Column
from stldata.ingest.coerce import Coercer, make_coercer

#: Narrowest first: the first candidate still standing after every value wins.
PREFERENCE = ("boolean", "integer", "number", "month", "date", "datetime", "text")
_BOOLEAN_WORDS = {"y", "n", "yes", "no", "true", "false", "t", "f"}


class TypeInference:
    """Candidate types of some columns, narrowed value by value in constant memory."""

    def __init__(self, names: list[str], timezone: str) -> None:
        self._coercers: dict[str, Coercer] = {
            t: make_coercer(Column("probe", type=t), timezone)  # type: ignore[arg-type]
            for t in PREFERENCE if t not in ("text", "boolean")
        }
        self.candidates: dict[str, list[str]] = {n: list(PREFERENCE) for n in names}
        self.seen: dict[str, int] = dict.fromkeys(names, 0)

    def add(self, name: str, text: str) -> None:
        """Narrow ``name``'s candidates with one stripped, non-null value."""
        self.seen[name] += 1
        remaining = self.candidates[name]
        for type_ in list(remaining):
            if type_ == "text":
                continue
            if type_ == "boolean":
                fits = text.casefold() in _BOOLEAN_WORDS
            elif type_ == "date" and ":" in text:
                fits = False  # the date parser accepts a time and drops it; a date has none
            else:
                try:
                    self._coercers[type_](text)
                    fits = True
                except ValueError:
                    fits = False
            if not fits:
                remaining.remove(type_)

    def result(self) -> dict[str, str]:
        """The narrowest type each column fits; text for a column with no values."""
        return {n: (c[0] if self.seen[n] else "text") for n, c in self.candidates.items()}
