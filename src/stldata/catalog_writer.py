"""``stldata add``: turn a file nobody described into a catalog entry, then serve it.

The source is fetched like an ingest's, described (:mod:`stldata.ingest.describe`), and
written as ``<catalog>/<id>.toml`` with comments saying what was guessed and why, so a
person can review it. The entry is checked by the catalog's own loader before it is
written; an existing entry is never overwritten without ``force``.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from stldata.catalog import CatalogError, Dataset, Source, load_dataset
from stldata.errors import ConfigurationError, StlDataError
from stldata.ingest.describe import Draft, describe_files
from stldata.ingest.ingester import IngestSummary
from stldata.ingest.sources import cleanup_fetch, resolve_source
from stldata.settings import PROJECT_ROOT, Settings
from stldata.store.database import Database

if TYPE_CHECKING:
    from stldata.runtime import Runtime

log = logging.getLogger(__name__)

#: How long `stldata add` waits for its snapshot to be applied once its own projector is
#: done, or has lost the log to another one (`stldata up` or `stldata project`).
SETTLE_SECONDS = 30.0

_DATASET_ID = re.compile(r"^[a-z][a-z0-9-]{0,62}$")


@dataclass
class Added:
    draft: Draft
    toml: str
    path: Path | None = None
    summary: IngestSummary | None = None


def check_dataset_id(dataset_id: str) -> None:
    if not _DATASET_ID.match(dataset_id):
        raise ConfigurationError(
            f"invalid dataset id {dataset_id!r}: use lower-case letters, digits and '-', "
            "starting with a letter, at most 63 characters (like 'ucr-codes')")


def existing_entry(catalog_dir: Path, dataset_id: str) -> Path | None:
    """The catalog file that already defines ``dataset_id``, read leniently so that one
    broken file elsewhere does not hide it."""
    own = catalog_dir / f"{dataset_id}.toml"
    if own.exists():
        return own
    for path in sorted(catalog_dir.glob("*.toml")):
        try:
            if tomllib.loads(path.read_text(encoding="utf-8")).get("id") == dataset_id:
                return path
        except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError):
            continue
    return None


def describe_source(settings: Settings, dataset_id: str, source: str, *,
                    title: str | None = None, fmt: str | None = None,
                    key: list[str] | None = None) -> Draft:
    """Fetch (a URL) or find (a file) the source and describe it."""
    probe = Dataset(id=dataset_id, title="", description="", publisher="", license="",
                    source=Source(url=source, format=fmt or "auto", file_pattern="*"),
                    columns=(), key=())
    if Path(source).is_dir():
        raise ConfigurationError(f"{source} is a folder; give `stldata add` one file or URL "
                                 "(then ingest the folder with `stldata ingest ID --source`)")
    origin, files = resolve_source(probe, source, settings, workdir=settings.state_dir)
    try:
        url = source if "://" in source else str(Path(source).resolve())
        draft = describe_files(dataset_id, [(f.path, f.partition) for f in files], url,
                               title=title, fmt=fmt, key=key)
    finally:
        cleanup_fetch(files)
    if "://" not in source:
        draft.samples = _sample_glob(Path(source))
    return draft


def _sample_glob(path: Path) -> list[str]:
    """A bundled sample when the file lives in the checkout (samples are relative to it)."""
    try:
        return [str(path.resolve().relative_to(PROJECT_ROOT))]
    except ValueError:
        return []


#: TOML's short escapes; every other control character is written as \\uXXXX.
_TOML_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n",
                 "\f": "\\f", "\r": "\\r"}


def _toml_char(char: str) -> str:
    if char in _TOML_ESCAPES:
        return _TOML_ESCAPES[char]
    code = ord(char)
    if code < 0x20 or code == 0x7F:
        return f"\\u{code:04X}"
    if 0xD800 <= code <= 0xDFFF:
        # A lone surrogate (undecodable bytes read with surrogateescape) is no Unicode
        # scalar value, so TOML cannot hold it in any spelling.
        return "\\uFFFD"
    return char


def _s(value: str) -> str:
    """A TOML basic string. Characters outside the BMP (😀) are written as themselves:
    the \\uD83D\\uDE00 surrogate pair JSON would write is invalid in TOML."""
    return '"' + "".join(_toml_char(c) for c in value) + '"'


def _comment(text: str) -> str:
    """Text for a ``#`` comment, which must stay on its line and hold no control
    characters."""
    return "".join(" " if ord(c) < 0x20 or ord(c) == 0x7F
                   else "\uFFFD" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)


def _list(values: list[str]) -> str:
    return "[" + ", ".join(_s(v) for v in values) + "]"


def render_toml(draft: Draft) -> str:
    """The catalog entry, with comments on everything that was guessed."""
    src = draft.source
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        f"# {_comment(draft.title)}",
        f"# Written by `stldata add` on {now} from {_comment(draft.url)}",
        f"# ({draft.rows} rows in {_comment(', '.join(draft.tables))}"
        + (f"; {draft.rejected} rows unreadable" if draft.rejected else "") + ").",
        "# Everything below was guessed from the file: review the title, the column names",
        "# and types, the key and the null spellings, then run `stldata ingest "
        f"{draft.dataset_id} --source ...`.",
        f"id = {_s(draft.dataset_id)}",
        f"title = {_s(draft.title)}",
        'description = ""',
        'publisher = ""',
        'license = ""',
        'timezone = "America/Chicago"',
        "# full: each ingest is the whole dataset (records missing from it are deleted);",
        "# increment: each file replaces only the records that came from that file.",
        'mode = "full"',
        f"# Key: {_comment(draft.key_reason)}.",
        f"key = {_list(draft.key)}",
        f"duplicate_keys = {_s(draft.duplicate_keys)}"
        + ("   # a repeated key keeps its last row; the others are quarantined"
           if draft.duplicate_keys == "last" else ""),
        "",
        "[source]",
        f"url = {_s(draft.url)}",
        f"# Sniffed {_comment(draft.evidence)}.",
        f"format = {_s(src.format)}",
    ]
    if src.format == "csv":
        out += [f"delimiter = {_s(src.delimiter)}",
                'encoding = "auto"          # UTF-16 by its byte order mark, else each line '
                "UTF-8 or Windows-1252"]
    out.append(f"null_values = {_list(draft.null_values)}"
               + ("   # spellings of 'no value' found in the file"
                  if len(draft.null_values) > 1 else ""))
    if src.format == "xlsx":
        sheets = sorted({t.split(" sheet ", 1)[1] for t in draft.tables if " sheet " in t})
        out.append(f"sheets = {_list(sheets)}   # names or glob patterns")
    if src.format == "html":
        out.append('# table = "caption:..."   # which table of the page; the first data '
                   "table when unset")
        if "://" in draft.url:
            out.append(f"base_url = {_s(draft.url)}   # relative links resolve against it")
    if draft.samples:
        out.append(f"samples = {_list(draft.samples)}")
    out.append(f"file_pattern = {_s(_pattern(draft.url, src.format))}")
    for column in draft.columns:
        out += ["", "[[columns]]", f"name = {_s(column.name)}"]
        note = (f"inferred from {column.values} values" if column.values
                else "no values in the file")
        if column.example:
            note += f", e.g. {_comment(repr(column.example[:40]))}"
        if column.nulls:
            note += f"; {column.nulls} empty"
        out.append(f"type = {_s(column.type)}".ljust(24) + f"# {note}")
        if column.header != column.name:
            out.append(f"aliases = {_list([column.header])}")
        if column.name in draft.key and draft.duplicate_keys == "last":
            out += ["required = true", "index = true"]
    return "\n".join(out) + "\n"


def _pattern(url: str, fmt: str) -> str:
    suffix = Path(url.split("?", 1)[0]).suffix
    return f"*{suffix}" if suffix else "*"


def _check_entry(scratch: Path, target: Path) -> None:
    """Load the entry written to ``scratch`` with the catalog's own loader; errors name
    ``target``, where the entry is (or would be) written."""
    try:
        load_dataset(scratch)
    except CatalogError as exc:
        # The scratch file's name means nothing to the person who ran `stldata add`.
        raise CatalogError(target, f"the entry written for it is invalid ({exc.problem}); "
                                   "this is a bug in `stldata add`") from exc


def check_entry(catalog_dir: Path, draft: Draft, text: str) -> None:
    """Check the entry like :func:`write_entry` does, writing nothing to the catalog (a
    dry run fails exactly where the real run would)."""
    target = (existing_entry(catalog_dir, draft.dataset_id)
              or catalog_dir / f"{draft.dataset_id}.toml")
    with tempfile.TemporaryDirectory(prefix="stldata-add-") as scratch_dir:
        scratch = Path(scratch_dir) / target.name
        scratch.write_text(text, encoding="utf-8")
        _check_entry(scratch, target)


def write_entry(catalog_dir: Path, draft: Draft, text: str, *, force: bool) -> Path:
    """Check the entry with the catalog's loader, then write it; never overwrite an
    existing entry unless ``force``."""
    existing = existing_entry(catalog_dir, draft.dataset_id)
    if existing and not force:
        raise ConfigurationError(
            f"dataset {draft.dataset_id!r} is already in the catalog ({existing}); pass "
            "--force to replace its entry, or choose another id")
    target = existing or catalog_dir / f"{draft.dataset_id}.toml"
    catalog_dir.mkdir(parents=True, exist_ok=True)
    # Not *.toml, so a catalog loaded meanwhile never sees a half-written entry.
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    temp.write_text(text, encoding="utf-8")
    try:
        _check_entry(temp, target)
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
    return target


def snapshot_status(database: Database, snapshot_id: int) -> tuple[str, str | None]:
    """The snapshot's status and, when aborted, why; ``pending`` until a projector has
    read its start."""
    with database.connect() as conn:
        row = conn.execute("SELECT status, reason FROM snapshots WHERE id = %s",
                           (snapshot_id,)).fetchone()
    return (str(row[0]), row[1]) if row else ("pending", None)


def wait_until_settled(database: Database, snapshot_id: int, timeout: float,
                       interval: float = 0.25) -> tuple[str, str | None]:
    """Poll the snapshot's status until it is committed or aborted, or ``timeout``
    seconds have passed (then it is still ``pending``)."""
    deadline = time.monotonic() + timeout
    while True:
        status, reason = snapshot_status(database, snapshot_id)
        if status != "pending" or time.monotonic() >= deadline:
            return status, reason
        time.sleep(interval)


def project_snapshot(runtime: Runtime, dataset_id: str, snapshot_id: int | None, *,
                     settle_seconds: float = SETTLE_SECONDS) -> None:
    """Project the log until idle, then make sure the snapshot was applied: by this
    projector, or by another member of the group (`stldata up` running meanwhile) that
    stored the offsets first. Raises when the snapshot was aborted (PostgreSQL refused
    it, say) or is still not applied after ``settle_seconds``."""
    from stldata.projection.projector import StaleOffsets

    projector = runtime.projector()  # type: ignore[no-untyped-call]
    try:
        projector.run(until_idle=True)
    except StaleOffsets as exc:
        # The normal hand-over when another projector runs: it applies the snapshot.
        log.info("%s; another projector (`stldata up` or `stldata project`) is applying "
                 "the log, waiting up to %.0fs for it to apply snapshot %s", exc.message,
                 settle_seconds, snapshot_id)
    finally:
        projector.close()
    if snapshot_id is None:
        return  # the source was unchanged: no new snapshot to wait for
    status, reason = wait_until_settled(runtime.database, snapshot_id, settle_seconds)
    if status == "aborted":
        raise StlDataError(f"{dataset_id}: snapshot {snapshot_id} was aborted and is not "
                           f"served: {reason or 'no reason recorded'}")
    if status != "committed":
        raise StlDataError(f"{dataset_id}: snapshot {snapshot_id} is still not applied after "
                           f"{settle_seconds:.0f}s; it is applied once a projector (`stldata "
                           "up` or `stldata project`) catches up, see `stldata status`")


def add_dataset(settings: Settings, dataset_id: str, source: str, *,
                title: str | None = None, fmt: str | None = None,
                key: list[str] | None = None, force: bool = False,
                dry_run: bool = False) -> Added:
    """Describe the source, write its catalog entry, then ingest and project it."""
    check_dataset_id(dataset_id)
    existing = existing_entry(settings.catalog_dir, dataset_id)
    if existing and not force and not dry_run:
        raise ConfigurationError(
            f"dataset {dataset_id!r} is already in the catalog ({existing}); pass --force "
            "to replace its entry, or choose another id")
    draft = describe_source(settings, dataset_id, source, title=title, fmt=fmt, key=key)
    text = render_toml(draft)
    added = Added(draft, text)
    if dry_run:
        # The same check as a real run, so the dry run fails where the real one would.
        check_entry(settings.catalog_dir, draft, text)
        return added
    added.path = write_entry(settings.catalog_dir, draft, text, force=force)

    from stldata.ingest.ingester import Ingester
    from stldata.runtime import Runtime

    try:
        runtime = Runtime.start(settings)
        producer = runtime.producer()
        try:
            ingester = Ingester(settings, runtime.database, producer)
            added.summary = ingester.ingest(runtime.catalog.get(dataset_id), source)
        finally:
            producer.close()
        project_snapshot(runtime, dataset_id, added.summary.snapshot_id)
    except StlDataError as exc:
        raise StlDataError(f"{exc.message} (the catalog entry {added.path} was written; "
                           f"fix it or the source, then run `stldata ingest {dataset_id} "
                           f"--source ...`, or remove it with `rm {added.path}`)") from exc
    return added
