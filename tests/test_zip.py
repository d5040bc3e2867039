"""ZIP archives as sources: members chosen by pattern, each a source file of its own, and
every zip bomb, forged header, unsafe name and corrupt archive refused with a clear error
while what is already stored stays as it was."""

from __future__ import annotations

import csv
import io
import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from stldata.ingest.archive import ArchiveError, ArchiveLimits, matches, read_members
from stldata.runtime import Runtime

from conftest import CSB_SAMPLES, ROOT, ingest, project, query

CENSUS = "stl-census-tracts-1940-1970"
CENSUS_SAMPLES = ROOT / "data" / CENSUS
DECADES = ("40", "50", "60", "70")
ROUTES_ZIP = ROOT / "data" / "metro-routes" / "metro_stl_gtfs_2023-06_routes.zip"


def census_file(decade: str) -> Path:
    return CENSUS_SAMPLES / f"STL_DEMOGRAPHICS_pop{decade}.csv"


def raw_rows(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"))))


def write_zip(path: Path, members: dict[str, bytes],
              compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name, (2023, 6, 1, 0, 0, 0)), data,
                             compress_type=compression)
    return path


def routes_text() -> bytes:
    with zipfile.ZipFile(ROUTES_ZIP) as archive:
        return archive.read("routes.txt")


def limited(runtime: Runtime, **limits: object) -> Runtime:
    return Runtime(runtime.settings.model_copy(update=limits), runtime.catalog,
                   runtime.database)


def leftovers(runtime: Runtime) -> list[Path]:
    return list(runtime.settings.state_dir.glob("stldata-fetch-*"))


# --- members, partitions and several files per dataset -----------------------------------


def test_one_csv_per_decade_in_a_zip_makes_one_snapshot(runtime: Runtime,
                                                        tmp_path: Path) -> None:
    members = {f"tables/STL_DEMOGRAPHICS_pop{d}.csv": census_file(d).read_bytes()
               for d in DECADES}
    # Other members of the archive are not part of the dataset.
    members["tables/STL_DEMOGRAPHICS_race40.csv"] = b"year,countyID,tractID,white\n"
    members["README.txt"] = b"NHGIS extract"
    archive = write_zip(tmp_path / "census.zip", members)

    summary = ingest(runtime, CENSUS, archive)
    project(runtime)

    expected = {f"census.zip!tables/STL_DEMOGRAPHICS_pop{d}.csv":
                len(raw_rows(census_file(d).read_bytes())) for d in DECADES}
    assert {f.partition: f.rows_read for f in summary.files} == expected
    assert summary.rows_read == sum(expected.values()) == 128 * 3 + 127
    stored = dict(query(runtime, f"SELECT _partition, count(*) FROM ds_{CENSUS.replace('-', '_')} "
                                 "GROUP BY _partition"))
    assert stored == expected

    # The members' bytes are hashed, not the archive's: the same members in a rebuilt
    # archive (another order, other neighbours) are unchanged.
    del members["README.txt"]
    rebuilt = write_zip(tmp_path / "census.zip", dict(reversed(list(members.items()))))
    assert ingest(runtime, CENSUS, rebuilt).snapshot_id is None
    assert leftovers(runtime) == []


def test_zip_members_of_an_increment_replace_their_own_records(runtime: Runtime,
                                                               tmp_path: Path) -> None:
    year_2009 = (CSB_SAMPLES / "csb_2009.csv").read_bytes()
    month = (CSB_SAMPLES / "csb_requests_2018-01.csv").read_bytes()
    archive = write_zip(tmp_path / "csb.zip", {"csb_2009.csv": year_2009,
                                               "csb_requests_2018-01.csv": month})
    ingest(runtime, "csb-311", archive)
    project(runtime)

    # 2009 is republished with its last line withdrawn; January 2018 is untouched.
    lines = year_2009.rstrip(b"\r\n").splitlines(keepends=True)
    header = next(csv.reader([lines[0].decode("cp1252")]))
    last = next(csv.reader([lines[-1].decode("cp1252")]))
    withdrawn = dict(zip(header, last, strict=True))["REQUESTID"]
    write_zip(archive, {"csb_2009.csv": b"".join(lines[:-1]),
                        "csb_requests_2018-01.csv": month})
    summary = ingest(runtime, "csb-311", archive)
    project(runtime)

    assert summary.skipped_files == ["csb.zip!csb_requests_2018-01.csv"]
    assert [f.partition for f in summary.files] == ["csb.zip!csb_2009.csv"]
    assert query(runtime, "SELECT count(*) FROM ds_csb_311 WHERE request_id = %s",
                 (int(withdrawn),))[0][0] == 0
    january = {r["REQUESTID"] for r in csv.DictReader(io.StringIO(month.decode("cp1252")))}
    assert query(runtime, "SELECT count(*) FROM ds_csb_311 WHERE _partition = "
                          "'csb.zip!csb_requests_2018-01.csv'")[0][0] == len(january)


def test_member_patterns_match_names_or_paths_case_insensitively() -> None:
    assert matches("stops.txt", ("stops.txt",))
    assert matches("feed/STOPS.TXT", ("stops.txt",))
    assert not matches("stop_times.txt", ("stops.txt",))
    assert matches("2019/csb_2019.csv", ("*/*.csv",))
    assert not matches("csb_2019.csv", ("*/*.csv",))
    assert matches("Data/Year 2019.CSV", ("data/*.csv", "other.txt"))


def test_a_glob_over_folders_reads_only_those_members(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "years.zip", {
        "2019/a.csv": b"x\n1\n", "2020/b.CSV": b"x\n2\n", "top.csv": b"x\n3\n",
        "2020/notes.txt": b"n"})
    limits = ArchiveLimits(10**9, 200, 100, 10**9)
    members = read_members(archive, "years.zip", ("*/*.csv",), limits, tmp_path)
    assert [(m.name, m.path.read_bytes()) for m in members] == [
        ("2019/a.csv", b"x\n1\n"), ("2020/b.CSV", b"x\n2\n")]
    # Written under names of their own, never the member names.
    assert [m.path.name for m in members] == ["member-00001.csv", "member-00002.CSV"]


def test_a_stored_member_is_read_like_a_deflated_one(runtime: Runtime, tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "routes.zip", {"routes.txt": routes_text()},
                        compression=zipfile.ZIP_STORED)
    summary = ingest(runtime, "metro-routes", archive)
    assert summary.rows_read == len(raw_rows(routes_text())) == 61


# --- refused archives: each a clear error, nothing stored is lost ------------------------


@pytest.fixture
def stored(runtime: Runtime) -> Runtime:
    ingest(runtime, "metro-routes")
    project(runtime)
    return runtime


def state(runtime: Runtime) -> tuple[object, ...]:
    return (query(runtime, "SELECT count(*), string_agg(route_id, ',' ORDER BY route_id) "
                           "FROM ds_metro_routes")[0],
            query(runtime, "SELECT count(*) FROM snapshots")[0][0],
            query(runtime, "SELECT count(*) FROM record_versions")[0][0],
            query(runtime, "SELECT state, count(*) FROM ingest_runs GROUP BY state"))


def refused(runtime: Runtime, archive: Path, *expected: str) -> str:
    before = state(runtime)
    with pytest.raises(ArchiveError) as raised:
        ingest(runtime, "metro-routes", archive)
    project(runtime)
    message = str(raised.value)
    for part in expected:
        assert part in message, message
    assert state(runtime) == before
    assert leftovers(runtime) == []
    return message


def test_a_highly_compressible_member_is_a_zip_bomb(stored: Runtime, tmp_path: Path) -> None:
    line = b"18289,1,Gold,3,FFFFFF,000000\n"
    bomb = routes_text() + line * (3 * (1 << 20) // len(line))
    archive = write_zip(tmp_path / "bomb.zip", {"routes.txt": bomb})
    with zipfile.ZipFile(archive) as opened:
        info = opened.getinfo("routes.txt")
    assert info.file_size / info.compress_size > 200
    refused(stored, archive, "bomb.zip!routes.txt", "STLDATA_ZIP_MAX_RATIO (200)",
            f"{info.file_size} bytes from {info.compress_size} compressed")


def test_a_small_member_is_not_held_to_the_ratio(stored: Runtime, tmp_path: Path) -> None:
    # Under 1 MiB a high ratio is harmless: 61 routes and 20,000 blank lines.
    archive = write_zip(tmp_path / "blank.zip", {"routes.txt": routes_text() + b"\n" * 20000})
    with zipfile.ZipFile(archive) as opened:
        info = opened.getinfo("routes.txt")
    assert info.file_size / info.compress_size > 20
    summary = ingest(stored, "metro-routes", archive)
    assert summary.rows_read == 61 and summary.quarantined == 0


def test_too_many_members(stored: Runtime, tmp_path: Path) -> None:
    members = {"routes.txt": routes_text(), **{f"extra/{n}.txt": b"x" for n in range(10)}}
    archive = write_zip(tmp_path / "many.zip", members)
    refused(limited(stored, zip_max_members=10), archive, "many.zip",
            "has 11 entries, more than STLDATA_ZIP_MAX_MEMBERS (10)")


def test_chosen_members_over_the_total_size(stored: Runtime, tmp_path: Path) -> None:
    text = routes_text()
    archive = write_zip(tmp_path / "years.zip", {"2022/routes.txt": text,
                                                 "2023/routes.txt": text})
    refused(limited(stored, zip_max_total_bytes=len(text) + 100), archive,
            "years.zip!2023/routes.txt", f"declare {2 * len(text)} bytes so far",
            f"STLDATA_ZIP_MAX_TOTAL_BYTES ({len(text) + 100})")


def _forge_size(archive: Path, member: str, declared: int) -> None:
    """Rewrite the member's uncompressed size in its local header and the central
    directory, as a forged archive would."""
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as opened:
        info = opened.getinfo(member)
    struct.pack_into("<I", data, info.header_offset + 22, declared)
    central = data.rindex(b"PK\x01\x02")  # the member is the last entry
    struct.pack_into("<I", data, central + 24, declared)
    archive.write_bytes(bytes(data))


def test_a_member_whose_header_lies_about_its_size(stored: Runtime, tmp_path: Path) -> None:
    line = b"18289,1,Gold,3,FFFFFF,000000\n"
    archive = write_zip(tmp_path / "forged.zip",
                        {"routes.txt": routes_text() + line * 200_000})
    _forge_size(archive, "routes.txt", 4000)
    with zipfile.ZipFile(archive) as opened:
        info = opened.getinfo("routes.txt")
    # What it declares passes every limit; only the bytes it inflates to give it away.
    assert info.file_size == 4000 and info.file_size < (1 << 20)
    refused(stored, archive, "forged.zip!routes.txt",
            "holds more than the 4000 bytes its header declares")

    # Nothing past the declared size reaches the disk: the inflated file stops at the lie.
    into = tmp_path / "inflated"
    into.mkdir()
    with pytest.raises(ArchiveError, match="more than the 4000 bytes"):
        read_members(archive, "forged.zip", ("routes.txt",),
                     ArchiveLimits.from_settings(stored.settings), into)
    assert [p.stat().st_size <= 4000 for p in into.iterdir()] == [True]


def test_a_header_that_overstates_the_size_is_corrupt(stored: Runtime, tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "long.zip", {"routes.txt": routes_text()})
    _forge_size(archive, "routes.txt", len(routes_text()) + 10)
    refused(stored, archive, "long.zip!routes.txt",
            f"holds {len(routes_text())} bytes but its header declares "
            f"{len(routes_text()) + 10}")


@pytest.mark.parametrize("name", ["../routes.txt", "feed/../../routes.txt", "/tmp/routes.txt",
                                  "..\\..\\routes.txt"])
def test_member_names_that_climb_out_are_refused(stored: Runtime, tmp_path: Path,
                                                 name: str) -> None:
    inside = tmp_path / "a" / "b"
    inside.mkdir(parents=True)
    archive = write_zip(inside / "slip.zip", {name: routes_text(), "routes.txt": routes_text()})
    with zipfile.ZipFile(archive) as opened:
        assert name in opened.namelist()
    refused(stored, archive, f"slip.zip!{name}", "points outside the archive")
    assert [p.name for p in tmp_path.rglob("routes.txt")] == []
    assert not Path("/tmp/routes.txt").exists()


def test_a_corrupt_archive(stored: Runtime, tmp_path: Path) -> None:
    whole = ROUTES_ZIP.read_bytes()
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(whole[: len(whole) // 2])
    refused(stored, truncated, "truncated.zip: not a readable ZIP archive")

    not_zip = tmp_path / "routes.zip"
    not_zip.write_bytes(routes_text())
    refused(stored, not_zip, "routes.zip: not a readable ZIP archive")


def test_corrupt_member_data(stored: Runtime, tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "damaged.zip", {"routes.txt": routes_text()})
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as opened:
        info = opened.getinfo("routes.txt")
    start = info.header_offset + 30 + len("routes.txt")
    for offset in range(start + 20, start + 60):
        data[offset] ^= 0x5A
    archive.write_bytes(bytes(data))
    message = refused(stored, archive, "damaged.zip!routes.txt")
    assert "corrupt" in message


def test_an_archive_without_the_member(stored: Runtime, tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "other.zip", {"agency.txt": b"agency_name\nMetro\n"})
    refused(stored, archive, "other.zip: no member matches ['routes.txt']",
            "it holds: agency.txt")


def test_the_cli_names_the_archive_member_and_limit(stored: Runtime, tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "many.zip",
                        {"routes.txt": routes_text(), "a.txt": b"", "b.txt": b""})
    env = {**os.environ, "STLDATA_DATABASE_URL": stored.database.url,
           "STLDATA_HOME": str(stored.settings.home), "STLDATA_LOG_LEVEL": "WARNING",
           "STLDATA_ZIP_MAX_MEMBERS": "2"}
    result = subprocess.run([sys.executable, "-m", "stldata.cli", "ingest", "metro-routes",
                             "--source", str(archive)], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1
    assert "many.zip: has 3 entries, more than STLDATA_ZIP_MAX_MEMBERS (2)" in result.stderr
