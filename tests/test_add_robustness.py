"""`stldata add` beside a running projector, a snapshot PostgreSQL aborts, `--dry-run`
checks, and one bad catalog file that must not stop the other datasets."""

from __future__ import annotations

import csv
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

from stldata.api.app import create_app
from stldata.catalog import Catalog, CatalogError, TooManyColumns
from stldata.catalog_writer import add_dataset
from stldata.cli import main
from stldata.errors import ConfigurationError
from stldata.log.base import Message
from stldata.projection.projector import Projector, ProjectorWatch
from stldata.runtime import Runtime
from stldata.settings import Settings, get_settings
from test_projector_robustness import WARDS_CSV, WARDS_TOML

from conftest import ROOT, ingest


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """A catalog folder of the test's own: new entries land there, not in catalog/."""
    (tmp_path / "catalog").mkdir()
    return Settings(home=tmp_path / "home", database_url=database_url, batch_size=2000,
                    poll_interval=0.05, catalog_dir=tmp_path / "catalog")


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """The environment an `stldata` command reads, pointing at the test's settings."""
    monkeypatch.setenv("STLDATA_CATALOG_DIR", str(settings.catalog_dir))
    monkeypatch.setenv("STLDATA_HOME", str(settings.home))
    monkeypatch.setenv("STLDATA_DATABASE_URL", str(settings.database_url))
    monkeypatch.setenv("STLDATA_POLL_INTERVAL", "0.05")
    get_settings.cache_clear()
    yield settings
    get_settings.cache_clear()


def stldata(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(header)
        out.writerows(rows)


def read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))[1:]


def rows_of(settings: Settings, sql: str,
            params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(str(settings.database_url)) as conn:
        return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]


def served(settings: Settings, dataset_id: str) -> list[dict[str, Any]]:
    client = create_app(Runtime.start(settings)).test_client()
    response = client.get(f"/api/v1/datasets/{dataset_id}/records",
                          query_string={"limit": "1000"})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["next"] is None
    return list(body["items"])


def errors_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def another_member_stores_first(monkeypatch: pytest.MonkeyPatch,
                                other: Callable[[], None]) -> list[int]:
    """Make the first projector to stage a batch lose it: just before it stages, ``other``
    (a second member of the group) runs and stores the offsets of the same messages.
    That is the race of `stldata add` beside `stldata up`, made to happen every time.
    Returns a list that gets one item once the race was staged."""
    original = Projector._stage
    raced: list[int] = []

    def stage(self: Projector, messages: Sequence[Message]) -> None:
        if not raced:
            raced.append(len(messages))
            other()
        original(self, messages)

    monkeypatch.setattr(Projector, "_stage", stage)
    return raced


def project_to_idle(settings: Settings) -> None:
    projector = Runtime.start(settings).projector()
    try:
        projector.run(until_idle=True)
    finally:
        projector.close()


# --- (1) add beside a running projector -------------------------------------------------


def test_add_succeeds_when_another_projector_applied_its_snapshot(
        cli_env: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    source = tmp_path / "wards.csv"
    source.write_text(WARDS_CSV)
    raced = another_member_stores_first(monkeypatch, lambda: project_to_idle(cli_env))

    with caplog.at_level(logging.INFO):
        result = stldata("add", "wards", "--source", str(source))

    assert raced, "the other projector never ran"
    assert result.exit_code == 0, result.output
    assert "served at /api/v1/datasets/wards/records" in result.output
    assert "error" not in result.output
    # The lost partition was seen, and taken for the hand-over it is.
    assert any("already stored by another member" in r.getMessage()
               and r.levelno == logging.INFO for r in caplog.records)
    assert errors_of(caplog) == []
    assert rows_of(cli_env, "SELECT status FROM snapshots") == [("committed",)]
    expected = {(int(w), name) for w, name in read_csv(source)}
    assert {(i["ward"], i["alderman"]) for i in served(cli_env, "wards")} == expected


def test_a_supervised_projector_that_loses_its_partition_warns_and_resumes(
        settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The side of `stldata up`: `stldata add`'s projector stores the offsets first."""
    (settings.catalog_dir / "wards.toml").write_text(WARDS_TOML)
    source = tmp_path / "wards.csv"
    source.write_text(WARDS_CSV)
    runtime = Runtime.start(settings)
    summary = ingest(runtime, "wards", source)
    # The supervised projector is the first to stage; the other member, like the
    # projector of `stldata add`, stores the offsets just before it.
    raced = another_member_stores_first(monkeypatch, lambda: project_to_idle(settings))

    stop = threading.Event()
    watch = ProjectorWatch()
    thread = threading.Thread(target=watch.run, args=(runtime.projector,),
                              kwargs={"stop": stop}, daemon=True)
    with caplog.at_level(logging.INFO):
        thread.start()
        try:
            for _ in range(200):
                if any(m.startswith("projector handed over") for m in
                       (r.getMessage() for r in caplog.records)):
                    break
                stop.wait(0.05)
        finally:
            stop.set()
            thread.join(15)
    assert not thread.is_alive()
    assert raced
    handed = [r for r in caplog.records if r.getMessage().startswith("projector handed over")]
    assert handed and handed[0].levelno == logging.WARNING
    assert "already stored by another member" in handed[0].getMessage()
    assert errors_of(caplog) == []
    assert watch.failure is None
    assert rows_of(settings, "SELECT id, status FROM snapshots") == [
        (summary.snapshot_id, "committed")]
    assert rows_of(settings, "SELECT ward, alderman FROM ds_wards ORDER BY ward") == [
        (int(w), name) for w, name in read_csv(source)]


def test_adds_beside_a_running_projector_all_succeed(
        cli_env: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Not forced: a supervised projector (as in `stldata up`) runs while datasets are
    added one after the other; whoever applies each snapshot, every add succeeds."""
    runtime = Runtime.start(cli_env)
    stop = threading.Event()
    watch = ProjectorWatch()
    thread = threading.Thread(target=watch.run, args=(runtime.projector,),
                              kwargs={"stop": stop}, daemon=True)
    sources = {}
    for n in range(3):
        path = tmp_path / f"part{n}.csv"
        write_csv(path, ["code", "label"], [[str(n * 1000 + i), f"label {n}-{i}"]
                                            for i in range(400)])
        sources[f"part-{n}"] = path
    with caplog.at_level(logging.INFO):
        thread.start()
        try:
            results = {d: stldata("add", d, "--source", str(p)) for d, p in sources.items()}
        finally:
            stop.set()
            thread.join(15)
    assert not thread.is_alive()
    for dataset_id, result in results.items():
        assert result.exit_code == 0, (dataset_id, result.output)
    assert errors_of(caplog) == []
    assert watch.failure is None
    assert rows_of(cli_env, "SELECT dataset_id, status FROM snapshots ORDER BY id") == [
        (d, "committed") for d in sources]
    for dataset_id, path in sources.items():
        assert {(i["code"], i["label"]) for i in served(cli_env, dataset_id)} == {
            (int(code), label) for code, label in read_csv(path)}


# --- (2) a snapshot PostgreSQL aborts is an error of `add` ------------------------------


def test_add_fails_when_its_snapshot_was_aborted(cli_env: Settings, tmp_path: Path) -> None:
    # 1,501 text columns of 18 characters: about 28 KB a row, over the 8,160 bytes of a
    # PostgreSQL row, though under the column limit, so the catalog accepts the entry.
    source = tmp_path / "fat.csv"
    header = [f"c{i}" for i in range(1501)]
    write_csv(source, header, [[f"row{r}-value-{i:06d}" for i in range(1501)]
                               for r in range(2)])

    result = stldata("add", "fat", "--source", str(source))

    assert result.exit_code == 1, result.output
    entry = cli_env.catalog_dir / "fat.toml"
    assert "served at" not in result.output
    assert "snapshot 1 was aborted" in result.output
    assert "row is too big" in result.output
    assert f"the catalog entry {entry} was written" in result.output
    assert f"rm {entry}" in result.output and "stldata ingest fat" in result.output
    assert entry.exists()
    (status, reason), = rows_of(cli_env, "SELECT status, reason FROM snapshots")
    assert status == "aborted" and "row is too big" in reason


# --- (3) --dry-run checks like the real run ----------------------------------------------


def test_dry_run_refuses_too_many_columns_like_the_real_run(
        cli_env: Settings, tmp_path: Path) -> None:
    source = tmp_path / "wide.csv"
    write_csv(source, [f"c{i}" for i in range(3000)], [[str(i) for i in range(3000)]])

    dry = stldata("add", "wide", "--source", str(source), "--dry-run")
    real = stldata("add", "wide", "--source", str(source))

    for result in (dry, real):
        assert result.exit_code == 1, result.output
        assert str(source) in result.output and "3000 columns" in result.output
        assert "id = " not in result.output  # no entry printed
    assert not list(cli_env.catalog_dir.iterdir())
    with pytest.raises(CatalogError) as raised:
        add_dataset(cli_env, "wide", str(source), dry_run=True)
    assert isinstance(raised.value.__cause__, TooManyColumns)
    assert raised.value.__cause__.count == 3000


# --- (3) one bad catalog file stops only its own dataset ---------------------------------


def wide_toml(dataset_id: str, columns: int) -> str:
    lines = [f'id = "{dataset_id}"', f'title = "{dataset_id}"', 'key = ["c0"]', "",
             "[source]", f'url = "{dataset_id}.csv"', 'format = "csv"']
    for i in range(columns):
        lines += ["", "[[columns]]", f'name = "c{i}"']
    return "\n".join(lines) + "\n"


@pytest.fixture
def bad_catalog(settings: Settings) -> Path:
    """wards.toml is fine; the other files each fail in their own way."""
    folder = settings.catalog_dir
    (folder / "wards.toml").write_text(WARDS_TOML)
    (folder / "wide.toml").write_text(wide_toml("wide", 3000))
    (folder / "broken.toml").write_text("id = [\n")
    # A column given as a string instead of a table.
    (folder / "odd.toml").write_text('id = "odd"\ntitle = "Odd"\nkey = ["a"]\n'
                                     'source = {url = ""}\ncolumns = ["a"]\n')
    (folder / "zz-copy.toml").write_text(WARDS_TOML.replace('title = "Wards"',
                                                            'title = "Copy"'))
    return folder


def test_the_loader_leaves_bad_entries_out_and_names_them(
        bad_catalog: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="stldata.catalog"):
        catalog = Catalog.load(bad_catalog)

    assert [d.id for d in catalog] == ["wards"]
    assert catalog.get("wards").title == "Wards"  # the first file keeps the id
    problems = {b.name: b.problem for b in catalog.broken}
    assert set(problems) == {"wide", "broken", "odd", "wards"}
    assert problems["wide"].startswith(f"catalog file {bad_catalog / 'wide.toml'}: ")
    assert "3000 columns" in problems["wide"]
    assert "not valid TOML" in problems["broken"]
    assert str(bad_catalog / "odd.toml") in problems["odd"]
    assert (f"dataset id 'wards' is already defined by {bad_catalog / 'wards.toml'}"
            in problems["wards"])
    # One ERROR per bad file, naming it and the reason.
    errors = errors_of(caplog)
    assert len(errors) == 4
    for name in ("wide", "broken", "odd", "zz-copy"):
        assert any(str(bad_catalog / f"{name}.toml") in m for m in errors), (name, errors)
    with pytest.raises(ConfigurationError, match=r"dataset 'wide' cannot be used: catalog "
                                                 r"file .*wide\.toml: 3000 columns"):
        catalog.get("wide")
    with pytest.raises(ConfigurationError, match="dataset 'broken' cannot be used: .*not "
                                                 "valid TOML"):
        catalog.get("broken")
    with pytest.raises(ConfigurationError, match="unknown dataset 'nope'"):
        catalog.get("nope")
    # Strict, the first bad entry raises.
    with pytest.raises(CatalogError, match="broken.toml: not valid TOML"):
        Catalog.load(bad_catalog, strict=True)


def test_the_bundled_catalog_is_valid_strictly() -> None:
    strict = Catalog.load(ROOT / "catalog", strict=True)
    assert Catalog.load(ROOT / "catalog").broken == []
    assert len(list(strict)) == len(list((ROOT / "catalog").glob("*.toml")))


def test_commands_go_on_with_the_other_datasets(
        cli_env: Settings, bad_catalog: Path, tmp_path: Path) -> None:
    listing = stldata("datasets")
    assert listing.exit_code == 0, listing.output
    lines = listing.output.splitlines()
    assert any(line.split()[:2] == ["wards", "full"] for line in lines), lines
    wide = next(line for line in lines if line.startswith("wide "))
    assert "unusable" in wide and "3000 columns" in wide and "wide.toml" in wide
    assert any(line.startswith("broken ") and "not valid TOML" in line for line in lines)

    refused = stldata("ingest", "wide")
    assert refused.exit_code == 1
    assert "dataset 'wide' cannot be used" in refused.output
    assert "3000 columns" in refused.output

    wards_csv = tmp_path / "wards.csv"
    wards_csv.write_text(WARDS_CSV)
    ingested = stldata("ingest", "wards", "--source", str(wards_csv))
    assert ingested.exit_code == 0, ingested.output
    projected = stldata("project", "--until-idle")
    assert projected.exit_code == 0, projected.output
    expected = {(int(w), name) for w, name in read_csv(wards_csv)}
    # What `stldata serve` and `up` serve: the runtime's catalog, bad entries left out.
    assert {(i["ward"], i["alderman"]) for i in served(cli_env, "wards")} == expected

    lookup = tmp_path / "codes.csv"
    write_csv(lookup, ["code", "name"], [["A", "alpha"], ["B", "beta"]])
    added = stldata("add", "codes", "--source", str(lookup))
    assert added.exit_code == 0, added.output
    assert {(i["code"], i["name"]) for i in served(cli_env, "codes")} == {
        ("A", "alpha"), ("B", "beta")}

    # --all tries every usable dataset (these two bundle no samples, so each fails on
    # its own), then names the bad entries, and exits 1.
    every = stldata("ingest", "--all")
    assert every.exit_code == 1
    for name in ("wards", "codes"):
        assert f"error: {name}: {name}: no --source given" in every.output, every.output
    for name in ("wide", "broken", "odd"):
        assert f"error: {name}: catalog file" in every.output, every.output
