"""The dataset catalog: one declarative TOML file per dataset.

A catalog entry says where a dataset comes from, how its source is read, which canonical
columns it has (with the header spellings seen across releases) and how a record is
identified. Ingest, projection and the API all read the same :class:`Dataset`.
"""

from __future__ import annotations

import logging
import re
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn

from stldata.errors import ConfigurationError

log = logging.getLogger(__name__)

ColumnType = Literal["text", "integer", "number", "boolean", "date", "datetime", "month",
                     "geometry", "auto"]
#: ``auto`` is inferred from the whole first source the column appears in, then pinned.
#: ``geometry`` is a GeoJSON geometry object in WGS84 longitude/latitude.
COLUMN_TYPES: tuple[str, ...] = (
    "text", "integer", "number", "boolean", "date", "datetime", "month", "geometry", "auto"
)

#: Column names become SQL identifiers, so they are kept to a safe, predictable shape.
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_DATASET_ID = re.compile(r"^[a-z][a-z0-9-]{0,62}$")

#: Parameters of the records API other than filters. A column may have one of these names
#: (filter it as ``order__eq=``), but ``stldata add`` proposes ``order_value`` instead.
QUERY_PARAMETERS = frozenset({"limit", "order", "cursor", "format", "fields", "q", "or",
                              "bbox", "near", "radius_m", "within", "as_of", "bom"})
#: PostgreSQL's limit on the columns of one table (MaxHeapAttributeNumber).
POSTGRES_MAX_COLUMNS = 1600
#: Columns a dataset's tables add to its own: the staging table has the most, nine
#: bookkeeping columns (stage.SYSTEM); the served table has six (tables.SYSTEM_COLUMNS)
#: plus the search document ``_document``. A test checks these against the real tables.
RESERVED_COLUMNS = 9
#: The most served columns (geometry's longitude and latitude included) a dataset can have.
MAX_DATASET_COLUMNS = POSTGRES_MAX_COLUMNS - RESERVED_COLUMNS


#: Each dataset's records travel on its own topic, named by this prefix and its id.
DATASET_TOPIC_PREFIX = "stldata.dataset."


class CatalogError(ConfigurationError):
    def __init__(self, path: Path | str, problem: str) -> None:
        super().__init__(f"catalog file {path}: {problem}")
        self.path = str(path)
        self.problem = problem


class TooManyColumns(CatalogError):
    """A dataset with more columns than its PostgreSQL tables can hold."""

    def __init__(self, path: Path | str, count: int) -> None:
        super().__init__(path, f"{count} columns, more than the {MAX_DATASET_COLUMNS} a "
                               f"dataset can have (PostgreSQL allows {POSTGRES_MAX_COLUMNS} "
                               f"per table, {RESERVED_COLUMNS} of them for bookkeeping); "
                               "split the source into several datasets or leave columns "
                               "out")
        self.count = count


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
    #: (pattern, replacement) rules: the first pattern matching the whole raw value
    #: rewrites it to the replacement (``\1`` and ``\g<name>`` refer to its groups)
    #: before the type is applied; a value no pattern matches is quarantined.
    normalize: tuple[tuple[str, str], ...] = ()
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
class Join:
    """Columns taken from another file whose rows match the source's rows on a key."""

    file: str
    format: str
    #: Header of the key in the source (matched like column aliases).
    on: str
    #: Header of the key in the join file.
    join_on: str
    #: Headers of the join file to add; empty takes every one but the key.
    columns: tuple[str, ...] = ()
    encoding: str = "auto"
    #: JSON: where the records sit in the join file, like ``data.items``.
    records_path: str = ""


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
    #: JSON: dotted path to the array of records in an API response, like ``data.items``.
    records_path: str = ""
    #: GeoJSON and shapefile: the CRS of the coordinates when the file states none (or
    #: states a wrong one), like ``EPSG:26915``; it overrides what the file says.
    crs: str = ""
    #: Files joined to every row of the source by a key (a ZIP code, a neighborhood).
    joins: tuple[Join, ...] = ()
    #: Which members of a ZIP archive are source files: names or glob patterns, matched
    #: case-insensitively against the member's path if the pattern has a ``/``, else its
    #: file name; empty uses ``file_pattern``.
    members: tuple[str, ...] = ()
    #: Every column name and alias of the dataset, so a parser can find a header row
    #: below title rows; filled in by :func:`load_dataset`.
    header_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class Aggregate:
    """A declared aggregate, kept up to date as snapshots are applied; see
    :mod:`stldata.projection.aggregates`. Terms are texts like ``month(date_occur)``."""

    name: str
    group_by: tuple[str, ...]
    metrics: tuple[str, ...]


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
    aggregates: tuple[Aggregate, ...] = ()
    #: Text columns whose order the ranking table keeps (a physical layout for search, like
    #: CLUSTER): searches for words of these columns then read adjacent rows.
    search_order: tuple[str, ...] = ()

    @property
    def table_name(self) -> str:
        return "ds_" + self.id.replace("-", "_")

    @property
    def topic(self) -> str:
        return DATASET_TOPIC_PREFIX + self.id

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


def _normalize_rules(raw: Any, name: str, path: Path) -> tuple[tuple[str, str], ...]:
    where = f"column {name}: normalize"
    if not isinstance(raw, list):
        raise CatalogError(path, f"{where} must be a list of {{pattern, replace}} tables")
    rules: list[tuple[str, str]] = []
    for rule in raw:
        if (not isinstance(rule, dict) or set(rule) != {"pattern", "replace"}
                or not all(isinstance(v, str) for v in rule.values())):
            raise CatalogError(path, f"{where}: each rule is a table with a 'pattern' and a "
                                     f"'replace' string, not {rule!r}")
        try:
            # Substituting into "" checks the replacement's group references too.
            re.compile(rule["pattern"]).sub(rule["replace"], "")
        except re.error as exc:
            raise CatalogError(path, f"{where}: rule {rule['pattern']!r} -> "
                                     f"{rule['replace']!r} is not valid: {exc}") from None
        rules.append((rule["pattern"], rule["replace"]))
    return tuple(rules)


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
             "ignore_zone", "values", "derive_from", "index", "normalize"}
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
        normalize=_normalize_rules(raw.get("normalize", []), name, path),
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
            "base_url": base_url, "pages": pages, **_source_geo(src, path)}


def _check_crs(crs: str, where: str, path: Path) -> None:
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        CRS.from_user_input(crs)
    except CRSError:
        raise CatalogError(path, f"{where} {crs!r} is not a coordinate reference system "
                                 "pyproj knows (try EPSG:26915 or a WKT string)") from None


def _source_geo(src: dict[str, Any], path: Path) -> dict[str, Any]:
    """The options of JSON, GeoJSON and shapefile sources, and joins, validated."""
    records_path = src.get("records_path", "")
    if not isinstance(records_path, str) or (records_path and not all(
            records_path.split("."))):
        raise CatalogError(path, f"source.records_path {records_path!r} must be dotted "
                                 "member names, like 'data.items'")
    crs = src.get("crs", "")
    if not isinstance(crs, str):
        raise CatalogError(path, "source.crs must be a string, like 'EPSG:26915'")
    if crs:
        _check_crs(crs, "source.crs", path)
    raw_joins = src.get("joins", [])
    if not isinstance(raw_joins, list) or not all(isinstance(j, dict) for j in raw_joins):
        raise CatalogError(path, "source.joins must be a list of [[source.joins]] tables")
    return {"records_path": records_path, "crs": crs,
            "joins": tuple(_join(j, n, path) for n, j in enumerate(raw_joins, 1))}


def _join(raw: dict[str, Any], number: int, path: Path) -> Join:
    where = f"source.joins #{number}"
    unknown = set(raw) - {"file", "format", "on", "join_on", "columns", "encoding",
                          "records_path"}
    if unknown:
        raise CatalogError(path, f"{where}: unknown keys {sorted(unknown)}")
    for key in ("file", "format", "on"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise CatalogError(path, f"{where}: {key!r} is required (a string)")
    on = str(raw["on"])
    join_on = raw.get("join_on", on)
    if not isinstance(join_on, str) or not join_on.strip():
        raise CatalogError(path, f"{where}: join_on must be a column name of the join file")
    return Join(file=str(raw["file"]), format=str(raw["format"]), on=on, join_on=join_on,
                columns=_tuple(raw.get("columns"), f"{where}: columns", path),
                encoding=str(raw.get("encoding", "auto")),
                records_path=str(raw.get("records_path", "")))


def _aggregates(raw: Any, columns: tuple[Column, ...], geometry: Geometry | None,
                path: Path) -> tuple[Aggregate, ...]:
    """``[[aggregates]]`` tables, their terms checked against the columns."""
    from stldata.aggregation import TermError, parse_group, parse_metric

    if not isinstance(raw, list) or not all(isinstance(a, dict) for a in raw):
        raise CatalogError(path, "aggregates must be a list of [[aggregates]] tables")
    types: dict[str, str] = {c.name: c.type for c in columns}
    if geometry:
        types.update({geometry.longitude: "number", geometry.latitude: "number"})
    out: list[Aggregate] = []
    for number, table in enumerate(raw, 1):
        name = table.get("name")
        if not isinstance(name, str) or not re.match(r"^[a-z][a-z0-9_]{0,29}$", name):
            raise CatalogError(path, f"aggregates #{number}: name {name!r} must be "
                                     "lower_snake_case, at most 30 characters")
        unknown = set(table) - {"name", "group_by", "metrics"}
        if unknown:
            raise CatalogError(path, f"aggregate {name}: unknown keys {sorted(unknown)}")
        group_by = _tuple(table.get("group_by"), f"aggregate {name}: group_by", path)
        metrics = _tuple(table.get("metrics"), f"aggregate {name}: metrics", path)
        if not group_by or not metrics:
            raise CatalogError(path, f"aggregate {name}: group_by and metrics are required")
        try:
            groups = [parse_group(g, types) for g in group_by]
            parsed = [parse_metric(m, types) for m in metrics]
        except TermError as exc:
            raise CatalogError(path, f"aggregate {name}: {exc}") from None
        names = [t.name for t in groups] + [m.name for m in parsed]
        if len(set(names)) != len(names):
            raise CatalogError(path, f"aggregate {name}: terms repeat or share a name")
        out.append(Aggregate(name, tuple(t.text for t in groups),
                             tuple(m.text for m in parsed)))
    if len({a.name for a in out}) != len(out):
        raise CatalogError(path, "aggregate names repeat")
    return tuple(out)


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
        # Left out (or "auto"), the format and delimiter are sniffed from each file.
        format=str(src.get("format", "auto")),
        encoding=str(src.get("encoding", "auto")),
        delimiter=str(src.get("delimiter", "auto" if src.get("format", "auto") == "auto"
                              else ",")),
        null_values=_tuple(src.get("null_values", [""]), "source.null_values", path),
        samples=_tuple(src.get("samples"), "source.samples", path),
        file_pattern=str(src.get("file_pattern", "*" if src.get("format", "auto") == "auto"
                                 else "*.csv")),
        members=_tuple(src.get("members"), "source.members", path),
        header_names=tuple(n for c in columns for n in (c.name, *c.aliases)),
        **_source_layout(src, path),
    )
    from stldata.ingest.formats import FORMATS

    if source.format != "auto" and source.format not in FORMATS:
        raise CatalogError(path, f"source.format {source.format!r} is not 'auto' nor one of "
                                 f"{FORMATS}")
    for number, join in enumerate(source.joins, 1):
        if join.format not in FORMATS:
            raise CatalogError(path, f"source.joins #{number}: format {join.format!r} is not "
                                     f"one of {FORMATS}")

    names = [c.name for c in columns]
    if len(set(names)) != len(names):
        raise CatalogError(path, "column names repeat")
    if len(columns) > MAX_DATASET_COLUMNS:
        # Checked before anything else reads them (and again with the geometry columns
        # below): PostgreSQL would refuse the dataset's table, and only once its records
        # were on the log.
        _too_many_columns(path, len(columns))
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

    search_order = _tuple(raw.get("search_order", []), "search_order", path)
    unknown = [n for n in search_order if n not in names]
    if unknown:
        raise CatalogError(path, f"search_order names unknown columns {unknown}")
    not_text = [n for n in search_order if next(c for c in columns if c.name == n).type
                != "text"]
    if not_text:
        raise CatalogError(path, f"search_order names {not_text}, which are not declared "
                                 "text columns")
    if len(set(search_order)) != len(search_order):
        raise CatalogError(path, "search_order names a column twice")

    dataset = Dataset(
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
        aggregates=_aggregates(raw.get("aggregates", []), columns, geometry, path),
        search_order=search_order,
    )
    if len(dataset.column_types()) > MAX_DATASET_COLUMNS:
        _too_many_columns(path, len(dataset.column_types()))
    return dataset


def _too_many_columns(path: Path, count: int) -> NoReturn:
    raise TooManyColumns(path, count)


@dataclass(frozen=True)
class BrokenEntry:
    """A catalog file that cannot be used, and why. The rest of the catalog loads
    without it, so one bad entry never stops the other datasets."""

    path: str
    #: The id the file declares, when it declares a usable one.
    dataset_id: str | None
    #: The whole error message, naming the file.
    problem: str

    @property
    def name(self) -> str:
        """The id, else the file's name without ``.toml``: what a person types."""
        return self.dataset_id or Path(self.path).stem


def _declared_id(path: Path) -> str | None:
    """The id a catalog file declares, read leniently from a file that failed to load."""
    try:
        declared = tomllib.loads(path.read_text(encoding="utf-8")).get("id")
    except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError):
        return None
    return declared if isinstance(declared, str) and _DATASET_ID.match(declared) else None


class Catalog:
    """All datasets of a catalog folder, by id."""

    def __init__(self, datasets: list[Dataset], folder: Path | None = None,
                 broken: Sequence[BrokenEntry] = ()) -> None:
        self.datasets = {d.id: d for d in datasets}
        #: Where the catalog was read from, so a long-running process can read it again.
        self.folder = folder
        #: Entries left out because they cannot be used (see :meth:`load`).
        self.broken = list(broken)

    @classmethod
    def load(cls, folder: Path, *, strict: bool = False) -> Catalog:
        """Read every ``*.toml`` of the folder.

        A bad entry (invalid, unreadable, or repeating another's id) is logged at ERROR
        with its file and reason, kept in :attr:`broken` and left out, so the other
        datasets are still served, ingested and projected. ``strict`` raises on the
        first bad entry instead: for checks that the whole catalog is valid.
        """
        if not folder.is_dir():
            raise CatalogError(folder, "catalog folder does not exist")
        datasets: dict[str, Dataset] = {}
        broken: list[BrokenEntry] = []
        for path in sorted(folder.glob("*.toml")):
            try:
                dataset = load_dataset(path)
            except Exception as exc:
                if strict:
                    raise
                # Not only CatalogError: a table where a string belongs (say) raises
                # whatever the parser raises, and that file alone must be left out.
                problem = (exc.message if isinstance(exc, CatalogError) else
                           f"catalog file {path}: cannot be read "
                           f"({type(exc).__name__}: {exc})")
                broken.append(BrokenEntry(str(path), _declared_id(path), problem))
                continue
            first = datasets.get(dataset.id)
            if first is not None:
                if strict:
                    ids = [*datasets, dataset.id]
                    raise CatalogError(folder, f"dataset ids repeat: {ids}")
                broken.append(BrokenEntry(str(path), dataset.id, CatalogError(
                    path, f"dataset id {dataset.id!r} is already defined by "
                          f"{first.catalog_path}").message))
                continue
            datasets[dataset.id] = dataset
        for entry in broken:
            log.error("%s; dataset %r left out, the other datasets are loaded", entry.problem,
                      entry.name)
        return cls(list(datasets.values()), folder, broken)

    def get(self, dataset_id: str) -> Dataset:
        try:
            return self.datasets[dataset_id]
        except KeyError:
            pass
        for entry in self.broken:
            if entry.name == dataset_id or Path(entry.path).stem == dataset_id:
                raise ConfigurationError(f"dataset {dataset_id!r} cannot be used: "
                                         f"{entry.problem}")
        known = ", ".join(sorted(self.datasets)) or "none"
        raise ConfigurationError(f"unknown dataset {dataset_id!r}; the catalog has: {known}")

    def __iter__(self) -> Iterator[Dataset]:
        return iter(self.datasets.values())
