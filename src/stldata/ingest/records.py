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
from stldata.ingest.positions import position_text
from stldata.ingest.reader import HeaderMap
from stldata.log.events import ROW_POSITION


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
    #: The label of the table the row came from (a sheet), for its position text.
    label: str = ""

    def issue_dicts(self, *, row_position: bool = False) -> list[dict[str, Any]]:
        """The issues as sent on the log, each with the position of its row; with
        ``row_position``, also the row's position when it is not plainly its line."""
        here = position_text(self.label, self.line)
        out = [{"position": here, **i.as_dict()} for i in self.issues]
        if row_position and here != f"line {self.line}":
            out.append({ROW_POSITION: here})
        return out

    @property
    def hash(self) -> str:
        """Changes exactly when the cleaned values change; the history keys on it."""
        digest = hashlib.blake2b(orjson.dumps(self.values, option=orjson.OPT_SORT_KEYS),
                                 digest_size=12)
        return digest.hexdigest()


#: What the quality report counts per column: a spelling mapped by the column's ``values``,
#: a non-empty cell read as no value (NULL, NA, spaces), spaces around a value removed,
#: runs of spaces inside a text made one.
COERCION_KINDS = ("value_mapped", "null_spelling", "trimmed", "spaces_collapsed")
_VALUE_MAPPED, _NULL_SPELLING, _TRIMMED, _SPACES_COLLAPSED = range(len(COERCION_KINDS))


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
        #: The label of the table being read (a sheet), set by the ingester per table.
        self.label = ""
        # Quality report: per column, how many cells each normalization changed.
        # Counted in a list per column (a slot per kind) on the per-cell path: cheap.
        self._tallies = {c.name: [0] * len(COERCION_KINDS) for c in dataset.columns}
        self._changed_kind = {
            c.name: _VALUE_MAPPED if c.values else _SPACES_COLLAPSED
            for c in dataset.columns if c.type in ("text", "auto")}

    def build(self, header: HeaderMap, line: int, cells: list[str]) -> Record:
        values: dict[str, Value] = {}
        issues: list[Issue] = []
        for column in self._read:
            position = header.positions.get(column.name)
            cell = cells[position] if position is not None else ""
            text = cell.strip()
            if text is not cell:  # str.strip() returns the very string when it strips nothing
                self._tallies[column.name][_TRIMMED if text else _NULL_SPELLING] += 1
            values[column.name] = self._coerce(column.name, text, issues)
        for column in self._derived:
            raw = values.get(column.derive_from or "")
            text = "" if raw is None else str(raw)
            values[column.name] = self._coerce(column.name, text, issues)

        source = dict(zip(header.header, cells, strict=False))
        return Record(key="", line=line, values=values, source=source, issues=issues,
                      label=self.label)

    def _coerce(self, name: str, text: str, issues: list[Issue]) -> Value:
        if text in self._nulls[name]:
            if text:
                self._tallies[name][_NULL_SPELLING] += 1
            return None
        try:
            value = self._coercers[name](text)
        except ValueError as exc:
            issues.append(Issue(name, text, str(exc)))
            return None
        if value is not text and name in self._changed_kind and value != text:
            self._tallies[name][self._changed_kind[name]] += 1
        return value

    @property
    def coercions(self) -> dict[str, dict[str, int]]:
        """Per column, how many cells each normalization changed (only non-zero counts)."""
        return {name: {kind: n for kind, n in zip(COERCION_KINDS, tally, strict=True) if n}
                for name, tally in self._tallies.items() if any(tally)}

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
        # Every row is published under its key as read, and the builder remembers no key:
        # its memory does not grow with the keys of a file. The projection resolves
        # repeats set-based when it applies the snapshot (stldata.projection.apply):
        # under 'number' it numbers them #2, #3 in file order (one row per victim);
        # under 'last' the newest row wins and each row it supersedes is quarantined.
        parts = [record.values.get(k) for k in self.dataset.key]
        return "|".join("" if p is None else str(p) for p in parts)
