"""The dataset catalog: one declarative TOML file per dataset.

A catalog entry says where a dataset comes from, how its source is read, which canonical
columns it has (with the header spellings seen across releases) and how a record is
identified. Ingest, projection and the API all read the same :class:`Dataset`.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from stldata.errors import ConfigurationError

ColumnType = Literal["text", "integer", "number", "boolean", "date", "datetime", "month",
                     "auto"]
#: ``auto`` is inferred from the whole first source the column appears in, then pinned.
COLUMN_TYPES: tuple[str, ...] = (
    "text", "integer", "number", "boolean", "date", "datetime", "month", "auto"
)

#: Column names become SQL identifiers, so they are kept to a safe, predictable shape.
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_DATASET_ID = re.compile(r"^[a-z][a-z0-9-]{0,62}$")


class CatalogError(ConfigurationError):
    def __init__(self, path: Path | str, problem: str) -> None:
        super().__init__(f"catalog file {path}: {problem}")
        self.path = str(path)
        self.problem = problem


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType = "text"
    description: str = ""
    aliases: tuple[str, ...] = ()
    required: bool = False
    #: Raw spellings that mean "no value" for this column only (e.g. a placeholder date).
    null_values: tuple[str, ...] = ()
    #: strptime formats tried before the built-in ones, for dates and datetimes.
    formats: tuple[str, ...] = ()
    #: Ignore a time zone suffix the publisher adds by mistake and read the local time.
    ignore_zone: bool = False
    #: Canonical value for each raw spelling (matched case-insensitively).
    values: dict[str, str] = field(default_factory=dict)
    #: This column is computed from another column of the same row instead of read.
    derive_from: str | None = None
    index: bool = False


@dataclass(frozen=True)
class Geometry:
    """Projected x/y source columns turned into WGS84 longitude/latitude columns."""

    x: str
    y: str
    crs: str
    longitude: str = "longitude"
    latitude: str = "latitude"
    #: lon/lat box outside which a point is treated as a geocoding error.
    bounds: tuple[float, float, float, float] = (-91.5, 38.0, -89.5, 39.5)


@dataclass(frozen=True)
class Source:
    url: str
    format: str = "csv"
    encoding: str = "auto"
    delimiter: str = ","
    null_values: tuple[str, ...] = ("",)
    #: Bundled files (globs relative to the repository) ingested when no source is given.
    samples: tuple[str, ...] = ()
    #: Which files of a folder belong to the dataset; matched case-insensitively.
    file_pattern: str = "*.csv"
    #: Workbook sheets to read: names or glob patterns, matched case-insensitively.
    sheets: tuple[str, ...] = ()
    #: 1-based row of the header in a sheet or table; 0 finds it by the column aliases.
    header_row: int = 0
    #: Regular expressions; a row whose first non-empty cell matches one is not data
    #: (a totals line, a page footer).
    skip_rows: tuple[str, ...] = ()
    #: Which table of an HTML page: a CSS selector, ``caption:TEXT`` or ``index:N``.
    table: str = ""
    #: Base URL that relative links of an HTML page are resolved against.
    base_url: str = ""
    #: PDF pages to read, 1-based: ``"9-10"``, ``"1,3"``; empty reads every page.
    pages: str = ""
    #: Every column name and alias of the dataset, so a parser can find a header row
    #: below title rows; filled in by :func:`load_dataset`.
    header_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class Dataset:
    id: str
    title: str
    description: str
    publisher: str
    license: str
    source: Source
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    mode: Literal["full", "increment"] = "full"
    duplicate_keys: Literal["number", "last"] = "last"
    timezone: str = "America/Chicago"
    geometry: Geometry | None = None
    catalog_path: str = ""

    @property
    def table_name(self) -> str:
        return "ds_" + self.id.replace("-", "_")

    @property
    def topic(self) -> str:
        return f"stldata.dataset.{self.id}"

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)

    def column_types(self) -> dict[str, str]:
        """Every served column and its type, geometry columns included."""
        types: dict[str, str] = {c.name: c.type for c in self.columns}
        if self.geometry:
            types[self.geometry.longitude] = "number"
            types[self.geometry.latitude] = "number"
        return types

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "publisher": self.publisher,
            "license": self.license,
            "mode": self.mode,
            "key": list(self.key),
            "timezone": self.timezone,
            "source": {"url": self.source.url, "format": self.source.format},
        }


def _tuple(value: Any, where: str, path: Path) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CatalogError(path, f"{where} must be a string or a list of strings")
    return tuple(value)


def _column(raw: dict[str, Any], path: Path) -> Column:
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise CatalogError(path, f"column name {name!r} must be lower_snake_case")
    type_ = raw.get("type", "text")
    if type_ not in COLUMN_TYPES:
        raise CatalogError(path, f"column {name}: type {type_!r} is not one of {COLUMN_TYPES}")
    values = raw.get("values", {})
    if not isinstance(values, dict):
        raise CatalogError(path, f"column {name}: values must be a table of spelling = value")

    known = {"name", "type", "description", "aliases", "required", "null_values", "formats",
             "ignore_zone", "values", "derive_from", "index"}
    unknown = set(raw) - known
    if unknown:
        raise CatalogError(path, f"column {name}: unknown keys {sorted(unknown)}")

    return Column(
        name=name,
        type=type_,
        description=str(raw.get("description", "")),
        aliases=_tuple(raw.get("aliases"), f"column {name}: aliases", path),
        required=bool(raw.get("required", False)),
        null_values=_tuple(raw.get("null_values"), f"column {name}: null_values", path),
        formats=_tuple(raw.get("formats"), f"column {name}: formats", path),
        ignore_zone=bool(raw.get("ignore_zone", False)),
        values={str(k).casefold(): str(v) for k, v in values.items()},
        derive_from=raw.get("derive_from"),
        index=bool(raw.get("index", False)),
    )


_PAGES = re.compile(r"^\s*\d+(\s*-\s*\d+)?(\s*,\s*\d+(\s*-\s*\d+)?)*\s*$")


def _source_layout(src: dict[str, Any], path: Path) -> dict[str, Any]:
    """The options of sheet, HTML and PDF sources, validated."""
    header_row = src.get("header_row", 0)
    if not isinstance(header_row, int) or isinstance(header_row, bool) or header_row < 0:
        raise CatalogError(path, f"source.header_row {header_row!r} must be a row number "
                                 "(1 is the first row) or 0 to find the header")
    skip_rows = _tuple(src.get("skip_rows"), "source.skip_rows", path)
    for pattern in skip_rows:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise CatalogError(path, f"source.skip_rows {pattern!r} is not a valid regular "
                                     f"expression: {exc}") from None
    table = src.get("table", "")
    if not isinstance(table, str):
        raise CatalogError(path, "source.table must be a CSS selector, 'caption:TEXT' or "
                                 "'index:N'")
    if table.startswith("index:") and not table[6:].strip().isdigit():
        raise CatalogError(path, f"source.table {table!r}: index must be a table number "
                                 "(0 is the first table)")
    if table.startswith("caption:") and not table[8:].strip():
        raise CatalogError(path, f"source.table {table!r}: caption text is empty")
    base_url = str(src.get("base_url", ""))
    if base_url and not base_url.startswith(("http://", "https://")):
        raise CatalogError(path, f"source.base_url {base_url!r} must be an http(s) URL")
    pages = str(src.get("pages", ""))
    if pages and (not _PAGES.match(pages) or "0" in re.findall(r"\d+", pages)):
        raise CatalogError(path, f"source.pages {pages!r} must be page numbers from 1, "
                                 "like '9-10' or '1,3'")
    return {"sheets": _tuple(src.get("sheets"), "source.sheets", path),
            "header_row": header_row, "skip_rows": skip_rows, "table": table,
            "base_url": base_url, "pages": pages}


def load_dataset(path: Path) -> Dataset:
    """Read and validate one catalog file."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(path, f"not valid TOML: {exc}") from exc

    for required in ("id", "title", "source", "columns", "key"):
        if required not in raw:
            raise CatalogError(path, f"missing required key {required!r}")
    if not _DATASET_ID.match(str(raw["id"])):
        raise CatalogError(path, f"id {raw['id']!r} must be lower-case letters, digits and -")

    src = raw["source"]
    columns = tuple(_column(c, path) for c in raw["columns"])
    source = Source(
        url=str(src.get("url", "")),
        format=str(src.get("format", "csv")),
        encoding=str(src.get("encoding", "auto")),
        delimiter=str(src.get("delimiter", ",")),
        null_values=_tuple(src.get("null_values", [""]), "source.null_values", path),
        samples=_tuple(src.get("samples"), "source.samples", path),
        file_pattern=str(src.get("file_pattern", "*.csv")),
        header_names=tuple(n for c in columns for n in (c.name, *c.aliases)),
        **_source_layout(src, path),
    )
    from stldata.ingest.formats import FORMATS

    if source.format not in FORMATS:
        raise CatalogError(path, f"source.format {source.format!r} is not one of {FORMATS}")

    names = [c.name for c in columns]
    if len(set(names)) != len(names):
        raise CatalogError(path, "column names repeat")
    for column in columns:
        if column.derive_from and column.derive_from not in names:
            raise CatalogError(path, f"column {column.name} derives from unknown "
                                     f"column {column.derive_from!r}")

    key = _tuple(raw["key"], "key", path)
    missing = [k for k in key if k not in names]
    if not key or missing:
        raise CatalogError(path, f"key names unknown columns {missing}")

    geometry = None
    if "geometry" in raw:
        g = raw["geometry"]
        geometry = Geometry(
            x=g["x"], y=g["y"], crs=g["crs"],
            longitude=g.get("longitude", "longitude"), latitude=g.get("latitude", "latitude"),
            bounds=tuple(g.get("bounds", Geometry.bounds)),
        )
        for col in (geometry.x, geometry.y):
            if col not in names:
                raise CatalogError(path, f"geometry column {col!r} is not a declared column")

    mode = raw.get("mode", "full")
    if mode not in ("full", "increment"):
        raise CatalogError(path, f"mode {mode!r} must be 'full' or 'increment'")
    duplicates = raw.get("duplicate_keys", "last")
    if duplicates not in ("number", "last"):
        raise CatalogError(path, f"duplicate_keys {duplicates!r} must be 'number' or 'last'")

    return Dataset(
        id=str(raw["id"]),
        title=str(raw["title"]),
        description=str(raw.get("description", "")),
        publisher=str(raw.get("publisher", "")),
        license=str(raw.get("license", "")),
        source=source,
        columns=columns,
        key=key,
        mode=mode,
        duplicate_keys=duplicates,
        timezone=str(raw.get("timezone", "America/Chicago")),
        geometry=geometry,
        catalog_path=str(path),
    )


class Catalog:
    """All datasets of a catalog folder, by id."""

    def __init__(self, datasets: list[Dataset]) -> None:
        self.datasets = {d.id: d for d in datasets}

    @classmethod
    def load(cls, folder: Path) -> Catalog:
        if not folder.is_dir():
            raise CatalogError(folder, "catalog folder does not exist")
        datasets = [load_dataset(p) for p in sorted(folder.glob("*.toml"))]
        ids = [d.id for d in datasets]
        if len(set(ids)) != len(ids):
            raise CatalogError(folder, f"dataset ids repeat: {ids}")
        return cls(datasets)

    def get(self, dataset_id: str) -> Dataset:
        try:
            return self.datasets[dataset_id]
        except KeyError:
            known = ", ".join(sorted(self.datasets)) or "none"
            raise ConfigurationError(
                f"unknown dataset {dataset_id!r}; the catalog has: {known}"
            ) from None

    def __iter__(self) -> Iterator[Dataset]:
        return iter(self.datasets.values())
