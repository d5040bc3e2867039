"""One dataset PostgreSQL refuses, or one the catalog no longer (or not yet) has, never
stops the projection of the others; a projector thread that dies shows in /health."""

from __future__ import annotations

import csv
import dataclasses
import logging
import threading
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from stldata.api.app import create_app
from stldata.catalog import (
    MAX_DATASET_COLUMNS,
    POSTGRES_MAX_COLUMNS,
    Catalog,
    CatalogError,
    Column,
    Dataset,
    load_dataset,
)
from stldata.cli import main
from stldata.projection.projector import ProjectorWatch
from stldata.projection.tables import SYSTEM_COLUMNS, ensure_table, stage_table_name
from stldata.runtime import Runtime
from stldata.settings import Settings, get_settings
from stldata.store.database import Database, is_connection_error
from stldata.store.migrate import upgrade

from conftest import ingest, invoke_cli, query

WARDS_TOML = """
id = "wards"
title = "Wards"
key = ["ward"]

[source]
url = "wards.csv"
format = "csv"
file_pattern = "*.csv"

[[columns]]
name = "ward"
type = "integer"

[[columns]]
name = "alderman"
"""

WARDS_CSV = "ward,alderman\n1,Sharon Tyus\n2,Lisa Middlebrook\n3,Shameem Clark Hubbard\n"


def wide_toml(dataset_id: str, columns: int, type_: str = "text") -> str:
    lines = [f'id = "{dataset_id}"', f'title = "{dataset_id}"', 'key = ["c0"]', "",
             "[source]", f'url = "{dataset_id}.csv"', 'format = "csv"',
             'file_pattern = "*.csv"']
    for i in range(columns):
        lines += ["", "[[columns]]", f'name = "c{i}"', f'type = "{type_}"']
    return "\n".join(lines) + "\n"


def write_wide_csv(path: Path, columns: int, rows: int) -> None:
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow([f"c{i}" for i in range(columns)])
        for r in range(rows):
            out.writerow([str(r * 10_000 + i) for i in range(columns)])


def widen(dataset: Dataset, columns: int, type_: str) -> Dataset:
    """The dataset with ``columns`` columns, made without the catalog loader (which
    refuses too many): like an entry written before the loader checked the count."""
    many = tuple(Column(name=f"c{i}", type=type_) for i in range(columns))  # type: ignore[arg-type]
    return dataclasses.replace(dataset, columns=many)


@pytest.fixture
def catalog_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "catalog"
    folder.mkdir()
    (folder / "wards.toml").write_text(WARDS_TOML)
    return folder


@pytest.fixture
def wards_csv(tmp_path: Path) -> Path:
    path = tmp_path / "wards.csv"
    path.write_text(WARDS_CSV)
    return path


def open_runtime(database_url: str, home: Path, catalog: Catalog) -> Runtime:
    settings = Settings(home=home, database_url=database_url, batch_size=2000,
                        poll_interval=0.05)
    database = Database.from_settings(settings)
    upgrade(database)
    return Runtime(settings, catalog, database)


def project_within(runtime: Runtime, seconds: float = 120) -> None:
    """Project until idle; a projector still busy after ``seconds`` is blocked."""
    errors: list[BaseException] = []
    stop = threading.Event()

    def run() -> None:
        projector = runtime.projector()
        try:
            projector.run(until_idle=True, stop=stop)
        except BaseException as exc:  # reported to the test below
            errors.append(exc)
        finally:
            projector.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    stop.set()
    thread.join(10)
    assert not thread.is_alive(), f"the projector did not catch up within {seconds}s"
    assert not errors, errors


def wards_rows(runtime: Runtime) -> list[tuple[object, ...]]:
    return query(runtime, "SELECT ward, alderman FROM ds_wards ORDER BY ward")


def expected_wards() -> list[tuple[object, ...]]:
    rows = list(csv.reader(WARDS_CSV.splitlines()))[1:]
    return [(int(ward), name) for ward, name in rows]


# --- (1a) the catalog refuses what PostgreSQL would ------------------------------------


def test_the_loader_refuses_more_columns_than_a_table_can_have(tmp_path: Path) -> None:
    fits = tmp_path / "fits.toml"
    fits.write_text(wide_toml("fits", MAX_DATASET_COLUMNS))
    assert len(load_dataset(fits).columns) == MAX_DATASET_COLUMNS

    too_many = tmp_path / "too-many.toml"
    too_many.write_text(wide_toml("too-many", MAX_DATASET_COLUMNS + 1))
    with pytest.raises(CatalogError) as error:
        load_dataset(too_many)
    assert str(too_many) in error.value.message
    assert f"{MAX_DATASET_COLUMNS + 1} columns" in error.value.message

    # Geometry adds longitude and latitude to the served columns.
    with_geometry = tmp_path / "geo.toml"
    with_geometry.write_text(wide_toml("geo", MAX_DATASET_COLUMNS - 1)
                             + '\n[geometry]\nx = "c1"\ny = "c2"\ncrs = "EPSG:26915"\n')
    with pytest.raises(CatalogError, match=f"{MAX_DATASET_COLUMNS + 1} columns"):
        load_dataset(with_geometry)


def test_the_largest_dataset_the_loader_accepts_gets_its_tables(runtime: Runtime,
                                                                tmp_path: Path) -> None:
    """The reserve is right: at the limit, the staging table (the widest) has exactly
    PostgreSQL's maximum of columns and the served table fits too."""
    path = tmp_path / "widest.toml"
    path.write_text(wide_toml("widest", MAX_DATASET_COLUMNS))
    dataset = load_dataset(path)
    with runtime.database.connect() as conn, conn.transaction():
        ensure_table(conn, dataset)
    counts = dict(query(runtime, "SELECT table_name::text, count(*) FROM "
                                 "information_schema.columns WHERE table_name IN (%s, %s) "
                                 "GROUP BY table_name",
                        (dataset.table_name, stage_table_name(dataset))))
    assert counts[stage_table_name(dataset)] == POSTGRES_MAX_COLUMNS
    # Served table: the bookkeeping columns, the search document, the catalog's columns.
    assert counts[dataset.table_name] == len(SYSTEM_COLUMNS) + 1 + MAX_DATASET_COLUMNS


def test_add_refuses_a_file_with_too_many_columns_before_writing_anything(
        tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "many.csv"
    write_wide_csv(source, 3000, 1)
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    monkeypatch.setenv("STLDATA_CATALOG_DIR", str(catalog))
    monkeypatch.setenv("STLDATA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("STLDATA_DATABASE_URL", database_url)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(main, ["add", "t17-many-cols", "--source", str(source)])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1, result.output
    assert str(source) in result.output and "3000 columns" in result.output
    assert "cannot reach PostgreSQL" not in result.output
    assert not list(catalog.iterdir())
    # Nothing was published nor stored: the database was not even migrated.
    with psycopg.connect(database_url) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
                              ).fetchone()
    assert tables == (0,)


# --- (1b) a dataset PostgreSQL refuses fails alone -------------------------------------


def test_datasets_postgres_refuses_fail_alone_and_the_others_are_applied(
        database_url: str, tmp_path: Path, catalog_dir: Path, wards_csv: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    wards = load_dataset(catalog_dir / "wards.toml")
    # More columns than a table can have: CREATE/ALTER TABLE fails.
    too_wide = widen(dataclasses.replace(wards, id="too-wide", key=("c0",)), 1700, "text")
    # Fits the column limit, but 1,100 filled bigint columns (8,800 bytes) exceed the
    # 8,160 bytes of a row: staging its records fails.
    too_big = widen(dataclasses.replace(wards, id="too-big", key=("c0",)), 1100, "integer")
    runtime = open_runtime(database_url, tmp_path / "home",
                           Catalog([too_wide, too_big, wards]))
    for dataset, columns in ((too_wide, 1700), (too_big, 1100)):
        source = tmp_path / f"{dataset.id}.csv"
        write_wide_csv(source, columns, 3)
        ingest(runtime, dataset.id, source)
    ingest(runtime, "wards", wards_csv)  # its snapshot comes after theirs on the log

    with caplog.at_level(logging.ERROR, logger="stldata.projection.projector"):
        project_within(runtime)

    assert wards_rows(runtime) == expected_wards()
    snapshots = dict(query(runtime, "SELECT dataset_id, status FROM snapshots"))
    assert snapshots == {"too-wide": "aborted", "too-big": "aborted", "wards": "committed"}
    reasons = dict(query(runtime, "SELECT dataset_id, reason FROM snapshots "
                                  "WHERE status = 'aborted'"))
    assert "cannot create or update the table of dataset 'too-wide'" in reasons["too-wide"]
    assert "1600 columns" in reasons["too-wide"]
    assert "could not be staged" in reasons["too-big"]
    assert "row is too big" in reasons["too-big"]
    # Failed before its start event was read, the snapshot still gets its details.
    sources = dict(query(runtime, "SELECT dataset_id, source FROM snapshots"))
    assert sources["too-wide"] == str(tmp_path / "too-wide.csv")
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("too-wide" in m and "1600 columns" in m for m in errors), errors
    assert any(m.startswith("too-big: snapshot") for m in errors), errors
    # Nothing is left waiting for them, and their files are published again next time.
    assert query(runtime, "SELECT count(*) FROM staged_counts") == [(0,)]
    assert query(runtime, "SELECT dataset_id FROM source_files") == [("wards",)]
    assert query(runtime, "SELECT count(*) FROM stage_ds_too_big") == [(0,)]


# --- (1c) a dataset no longer in the catalog never blocks the others -------------------


def test_snapshots_of_a_dataset_removed_from_the_catalog_do_not_block(
        database_url: str, tmp_path: Path, catalog_dir: Path, wards_csv: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    gone_csv = tmp_path / "gone.csv"
    gone_csv.write_text("ward,alderman\n9,Someone\n")
    (catalog_dir / "gone.toml").write_text(WARDS_TOML.replace('"wards"', '"gone"'))
    both = open_runtime(database_url, tmp_path / "home", Catalog.load(catalog_dir))
    gone = ingest(both, "gone", gone_csv)
    ingest(both, "wards", wards_csv)

    (catalog_dir / "gone.toml").unlink()  # removed before any projector ran
    runtime = open_runtime(database_url, tmp_path / "home", Catalog.load(catalog_dir))
    with caplog.at_level(logging.WARNING, logger="stldata.projection.projector"):
        project_within(runtime)

    assert wards_rows(runtime) == expected_wards()
    assert query(runtime, "SELECT status, reason FROM snapshots WHERE id = %s",
                 (gone.snapshot_id,)) == [
        ("aborted", "dataset 'gone' is not in the catalog of the projector")]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for event in ("snapshot-started", "snapshot-committed"):
        assert any(m.startswith(f"gone: {event} of snapshot {gone.snapshot_id} skipped: "
                                "the dataset is not in the catalog")
                   for m in warnings), warnings
    # Its files are forgotten: put back in the catalog, the next ingest publishes them.
    assert query(runtime, "SELECT dataset_id FROM source_files") == [("wards",)]
    assert query(runtime, "SELECT to_regclass('ds_gone')") == [(None,)]


# --- (2) a dataset added while the projector runs --------------------------------------


def test_a_dataset_added_while_the_projector_runs_is_picked_up(
        database_url: str, tmp_path: Path, catalog_dir: Path, wards_csv: Path) -> None:
    runtime = open_runtime(database_url, tmp_path / "home", Catalog.load(catalog_dir))
    ingest(runtime, "wards", wards_csv)
    stop = threading.Event()
    watch = ProjectorWatch()
    thread = threading.Thread(target=watch.run, args=(runtime.projector,),
                              kwargs={"stop": stop}, daemon=True)
    thread.start()
    try:
        # Like `stldata add` from another process: a new entry, then its ingest.
        (catalog_dir / "council.toml").write_text(WARDS_TOML.replace('"wards"', '"council"'))
        other = open_runtime(database_url, tmp_path / "home", Catalog.load(catalog_dir))
        council_csv = tmp_path / "council.csv"
        council_csv.write_text("ward,alderman\n14,Carol Howard\n28,Heather Navarro\n")
        added = ingest(other, "council", council_csv)
        # And a later snapshot of a dataset the projector knew from the start.
        wards_csv.write_text(WARDS_CSV + "4,Dwinderlin Evans\n")
        ingest(other, "wards", wards_csv)

        def settled() -> bool:
            rows = query(runtime, "SELECT count(*) FROM snapshots WHERE status = 'pending'")
            committed = query(runtime, "SELECT count(*) FROM snapshots "
                                       "WHERE status = 'committed'")
            return rows == [(0,)] and committed == [(3,)]

        deadline = threading.Event()
        for _ in range(600):
            if settled() or not thread.is_alive():
                break
            deadline.wait(0.1)
        assert thread.is_alive() and watch.failure is None, watch.failure
        assert settled()
    finally:
        stop.set()
        thread.join(15)
    assert query(runtime, "SELECT status FROM snapshots WHERE id = %s",
                 (added.snapshot_id,)) == [("committed",)]
    assert query(runtime, "SELECT ward, alderman FROM ds_council ORDER BY ward") == [
        (14, "Carol Howard"), (28, "Heather Navarro")]
    assert wards_rows(runtime) == [*expected_wards(), (4, "Dwinderlin Evans")]


# --- (2) a projector thread that dies shows in /health ---------------------------------


def test_health_reports_a_dead_projector_thread(runtime: Runtime,
                                               caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(runtime)
    client = app.test_client()
    watch = ProjectorWatch()
    app.extensions["stldata.projector"] = watch
    assert client.get("/health").get_json()["status"] == "ok"

    def broken() -> object:
        raise RuntimeError("snapshot 7: staged 3 messages but its commit counts 2")

    with caplog.at_level(logging.ERROR, logger="stldata.projection.projector"):
        watch.run(broken, stop=threading.Event())  # type: ignore[arg-type]
    response = client.get("/health")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "degraded" and body["database"] == "ok"
    assert body["projector"] == ("projector stopped: RuntimeError: snapshot 7: staged 3 "
                                 "messages but its commit counts 2")
    assert any(r.levelno == logging.ERROR and "projector stopped" in r.getMessage()
               for r in caplog.records)


# --- error mapping ---------------------------------------------------------------------


def test_a_refused_statement_is_not_a_connection_error(runtime: Runtime) -> None:
    columns = ", ".join(f"c{i} int" for i in range(POSTGRES_MAX_COLUMNS + 1))
    with runtime.database.connect() as conn, pytest.raises(psycopg.Error) as refused:
        conn.execute(f"CREATE TABLE too_wide ({columns})")
    # psycopg files "too many columns" under OperationalError, like a lost connection.
    assert isinstance(refused.value, psycopg.OperationalError)
    assert not is_connection_error(refused.value)

    with pytest.raises(psycopg.OperationalError) as unreachable:
        psycopg.connect("postgresql://nobody@127.0.0.1:9/none", connect_timeout=2)
    assert is_connection_error(unreachable.value)


def test_the_cli_tells_a_refused_statement_from_an_unreachable_server(
        runtime: Runtime, catalog_dir: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    with runtime.database.connect() as conn:
        conn.execute("DROP TABLE snapshots CASCADE")  # a read model someone broke
        conn.commit()
    result = invoke_cli(monkeypatch, ["status"], CATALOG_DIR=str(catalog_dir),
                        HOME=str(tmp_path / "home"), DATABASE_URL=runtime.database.url)
    assert result.exit_code == 1, result.output
    assert result.output.strip() == ('error: PostgreSQL refused a statement: relation '
                                      '"snapshots" does not exist')
