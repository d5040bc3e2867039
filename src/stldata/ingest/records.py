"""Clean raw rows into records: typed values, a stable key, a content hash, and the
issues found on the way (each one quarantined with its cell's raw text)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from pyproj import Transformer

from stldata.catalog import Dataset
from stldata.ingest.coerce import Coercer, Value, make_coercer
from stldata.ingest.reader import HeaderMap


@dataclass
class Issue:
    column: str | None
    raw: str | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"column": self.column, "raw": self.raw, "reason": self.reason}


@dataclass
class Record:
    key: str
    line: int
    values: dict[str, Value]
    source: dict[str, str]
    issues: list[Issue] = field(default_factory=list)

    @property
    def hash(self) -> str:
        """Changes exactly when the cleaned values change; the history keys on it."""
        digest = hashlib.blake2b(orjson.dumps(self.values, option=orjson.OPT_SORT_KEYS),
                                 digest_size=12)
        return digest.hexdigest()


class RecordBuilder:
    """Turns the raw cells of one file into records, using that file's header map."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self._coercers: dict[str, Coercer] = {
            c.name: make_coercer(c, dataset.timezone) for c in dataset.columns
        }
        base_nulls = {v.strip() for v in dataset.source.null_values}
        self._nulls = {c.name: base_nulls | {v.strip() for v in c.null_values}
                       for c in dataset.columns}
        self._read = [c for c in dataset.columns if not c.derive_from]
        self._derived = [c for c in dataset.columns if c.derive_from]
        self._transformer = (
            Transformer.from_crs(dataset.geometry.crs, "EPSG:4326", always_xy=True)
            if dataset.geometry else None
        )
        self._file = ""
        self._repeats: dict[str, int] = {}
        self._earlier: dict[str, list[str]] = {}

    def start_file(self, name: str) -> None:
        """Repeats are numbered within one file, so a month's keys never depend on which
        other files share its snapshot; superseded rows are tracked across the snapshot."""
        self._file = name
        self._repeats = {}

    def build(self, header: HeaderMap, line: int, cells: list[str]) -> Record:
        values: dict[str, Value] = {}
        issues: list[Issue] = []
        for column in self._read:
            position = header.positions.get(column.name)
            text = cells[position].strip() if position is not None else ""
            values[column.name] = self._coerce(column.name, text, issues)
        for column in self._derived:
            raw = values.get(column.derive_from or "")
            text = "" if raw is None else str(raw)
            values[column.name] = self._coerce(column.name, text, issues)

        source = dict(zip(header.header, cells, strict=False))
        return Record(key="", line=line, values=values, source=source, issues=issues)

    def _coerce(self, name: str, text: str, issues: list[Issue]) -> Value:
        if text in self._nulls[name]:
            return None
        try:
            return self._coercers[name](text)
        except ValueError as exc:
            issues.append(Issue(name, text, str(exc)))
            return None

    def finish_batch(self, records: Sequence[Record]) -> None:
        """Project coordinates and assign keys for a batch (pyproj is fast on arrays)."""
        if self._transformer and self.dataset.geometry:
            self._add_coordinates(records)
        for record in records:
            record.key = self._key(record)

    def _add_coordinates(self, records: Sequence[Record]) -> None:
        geometry = self.dataset.geometry
        assert geometry is not None and self._transformer is not None
        xs: list[float] = []
        ys: list[float] = []
        for record in records:
            x, y = record.values.get(geometry.x), record.values.get(geometry.y)
            # 0,0 is how the police export says "not geocoded".
            if isinstance(x, (int, float)) and isinstance(y, (int, float)) and (x or y):
                xs.append(float(x))
                ys.append(float(y))
            else:
                xs.append(float("nan"))
                ys.append(float("nan"))
        lons, lats = self._transformer.transform(xs, ys)

        west, south, east, north = geometry.bounds
        for record, x, lon, lat in zip(records, xs, lons, lats, strict=True):
            if x != x:
                record.values[geometry.longitude] = None
                record.values[geometry.latitude] = None
                continue
            if not (west <= lon <= east and south <= lat <= north):
                record.issues.append(Issue(
                    geometry.x, f"{record.values[geometry.x]},{record.values[geometry.y]}",
                    "coordinates fall outside the St. Louis region; position left empty",
                ))
                lon = lat = None
            record.values[geometry.longitude] = None if lon is None else round(lon, 7)
            record.values[geometry.latitude] = None if lat is None else round(lat, 7)

    def _key(self, record: Record) -> str:
        parts = [record.values.get(k) for k in self.dataset.key]
        key = "|".join("" if p is None else str(p) for p in parts)

        if self.dataset.duplicate_keys == "last":
            # The newest row of a key wins; it carries a note for every row it replaces,
            # since the notes on the rows it replaces are discarded with them.
            here = f"{self._file} line {record.line}"
            earlier = self._earlier.setdefault(key, [])
            for place in earlier:
                record.issues.append(Issue(None, key, f"duplicate key: the row at {place} "
                                                      f"is superseded by the row at {here}"))
            earlier.append(here)
            return key

        # Legitimate repeats (one row per victim) are numbered in file order.
        n = self._repeats.get(key, 0) + 1
        self._repeats[key] = n
        return key if n == 1 else f"{key}#{n}"
