"""Cells and headers at the edges: integers past 64 bits, numbers with commas, repeated,
colliding and blank headers, non-ASCII headers, UTF-16 and other misnamed inputs.

Expected values are read off the files the tests write (the way a person reads them), not
from the ingester's own parsing.
"""

from __future__ import annotations

import codecs
import csv
import io
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest

from stldata.api.app import create_app
from stldata.catalog import Column
from stldata.catalog_writer import add_dataset, render_toml
from stldata.ingest.coerce import make_coercer
from stldata.ingest.decode import text_lines
from stldata.ingest.describe import describe_files
from stldata.ingest.errors import SourceError
from stldata.ingest.infer import TypeInference
from stldata.ingest.sniff import sniff
from stldata.runtime import Runtime
from stldata.settings import Settings

from conftest import CSB_SAMPLES, ingest, project, query, read_raw_csv

TZ = "America/Chicago"
BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1


def coerce(type_: str, text: str) -> Any:
    return make_coercer(Column("c", type=type_), TZ)(text)  # type: ignore[arg-type]


# --- integers and numbers ------------------------------------------------------------------

@pytest.mark.parametrize("text", ["99999999999999999999999999", "9223372036854775808",
                                  "-9223372036854775809", "1e20", "-1e19",
                                  "1e99999999999999999999", "18,446,744,073,709,551,616"])
def test_integers_beyond_64_bits_are_invalid_cells(text: str) -> None:
    # Independently: the number a person reads, outside PostgreSQL's bigint.
    digits = text.replace(",", "")
    if "e" not in digits:
        assert not BIGINT_MIN <= int(digits) <= BIGINT_MAX
    with pytest.raises(ValueError, match="out of range for a 64-bit integer"):
        coerce("integer", text)


def test_the_bigint_bounds_themselves_are_integers() -> None:
    assert coerce("integer", "9223372036854775807") == BIGINT_MAX
    assert coerce("integer", "-9223372036854775808") == BIGINT_MIN
    assert coerce("integer", "1e3") == 1000
    assert coerce("integer", "1,234.0") == 1234


@pytest.mark.parametrize("text", ["1e400", "-1e400", "1" * 400, "nan", "inf", "-Infinity"])
def test_numbers_that_are_not_finite_are_invalid_cells(text: str) -> None:
    with pytest.raises(ValueError, match="not a number|not finite"):
        coerce("number", text)


@pytest.mark.parametrize(("text", "expected"), [
    ("1,234", 1234.0), ("-1,234,567.89", -1234567.89), ("12,345,678", 12345678.0),
    ("1234.5", 1234.5), (".5", 0.5), ("+7", 7.0), ("1e308", 1e308)])
def test_well_formed_numbers_are_read(text: str, expected: float) -> None:
    assert coerce("number", text) == expected


@pytest.mark.parametrize("text", ["1,5", "12,34,5", "1,2345", ",123", "1,,234", "123,",
                                  "1_000", "１２", "١٢", "1 000", "0x10", "1.2.3"])
@pytest.mark.parametrize("type_", ["integer", "number"])
def test_malformed_numbers_are_invalid_cells_not_other_numbers(text: str, type_: str) -> None:
    with pytest.raises(ValueError, match="not a (whole )?number"):
        coerce(type_, text)


def test_a_decimal_comma_says_why() -> None:
    with pytest.raises(ValueError, match="commas must separate groups of three digits"):
        coerce("number", "1,5")


def test_non_ascii_digits_are_no_month_or_date() -> None:
    with pytest.raises(ValueError):
        coerce("month", "２０１７-05")
    with pytest.raises(ValueError):
        coerce("datetime", "１/2/2017")


@pytest.mark.parametrize(("values", "expected"), [
    (["1", "99999999999999999999999999"], "number"),
    (["1", "1e20"], "number"),
    (["1,5", "2,5"], "text"),
    (["1,234", "12", "-1,000,000"], "integer"),
    (["1,234.5", "2"], "number"),
    (["1_000", "2"], "text"),
    (["１２", "3"], "text"),
    (["1e400", "2"], "text"),
])
def test_inference_never_picks_a_type_a_value_does_not_fit(values: list[str],
                                                           expected: str) -> None:
    inference = TypeInference(["c"], TZ)
    for value in values:
        inference.add("c", value)
    assert inference.result() == {"c": expected}


# --- the pipeline: bad cells are quarantined, rows kept --------------------------------------

@pytest.fixture
def csb_rows() -> tuple[list[str], list[list[str]]]:
    header, rows = read_raw_csv(CSB_SAMPLES / "csb_requests_2018-01.csv")
    return header, rows[:4]


def write_csv(path: Path, header: list[str], rows: list[list[str]], delimiter: str = ",") -> Path:
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def record(runtime: Runtime, dataset_id: str, key: str) -> dict[str, Any]:
    response = create_app(runtime).test_client().get(
        f"/api/v1/datasets/{dataset_id}/records/{key}")
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()["record"]
    return body


def records(runtime: Runtime, dataset_id: str) -> list[dict[str, Any]]:
    response = create_app(runtime).test_client().get(
        f"/api/v1/datasets/{dataset_id}/records", query_string={"limit": "1000"})
    assert response.status_code == 200, response.get_json()
    items: list[dict[str, Any]] = response.get_json()["items"]
    return items


def test_oversized_and_malformed_numbers_in_a_csb_file_are_quarantined(
        runtime: Runtime, tmp_path: Path,
        csb_rows: tuple[list[str], list[list[str]]]) -> None:
    header, rows = csb_rows
    at = {name: header.index(name) for name in ("REQUESTID", "NEIGHBORHOOD", "WARD", "SRX")}
    rows[0][at["NEIGHBORHOOD"]] = "99999999999999999999999999"
    rows[1][at["WARD"]] = "1,5"           # a decimal comma: not ward 15
    rows[2][at["SRX"]] = "1e400"          # not a finite double
    rows[3][at["REQUESTID"]] = "99999999999999999999999999"   # the key itself
    path = write_csv(tmp_path / "csb_edge.csv", header, rows)

    summary = ingest(runtime, "csb-311", path)
    project(runtime)

    # Every row kept (the one with an unreadable key under an empty key, as any bad key
    # cell is), every bad cell named.
    assert summary.rows_read == summary.published == 4
    found = query(runtime, "SELECT line, column_name, raw_value, reason FROM quarantine "
                           "ORDER BY line, column_name")
    by_cell = {(line, column): (raw, reason) for line, column, raw, reason in found}
    assert by_cell[(2, "neighborhood")][0] == "99999999999999999999999999"
    assert "out of range for a 64-bit integer" in by_cell[(2, "neighborhood")][1]
    assert by_cell[(3, "ward")][0] == "1,5"
    assert "commas must separate groups of three digits" in by_cell[(3, "ward")][1]
    assert by_cell[(4, "srx")][0] == "1e400"
    assert "not finite" in by_cell[(4, "srx")][1]
    assert by_cell[(5, "request_id")][0] == "99999999999999999999999999"
    assert "out of range for a 64-bit integer" in by_cell[(5, "request_id")][1]

    first = record(runtime, "csb-311", rows[0][at["REQUESTID"]])
    assert first["neighborhood"] is None
    assert first["ward"] == int(rows[0][at["WARD"]])
    assert first["_source"]["NEIGHBORHOOD"] == "99999999999999999999999999"
    second = record(runtime, "csb-311", rows[1][at["REQUESTID"]])
    assert second["ward"] is None and second["_source"]["WARD"] == "1,5"
    assert second["neighborhood"] == int(rows[1][at["NEIGHBORHOOD"]])
    third = record(runtime, "csb-311", rows[2][at["REQUESTID"]])
    assert third["srx"] is None and third["_source"]["SRX"] == "1e400"


def test_a_catalogued_header_naming_one_column_twice_is_an_error(
        runtime: Runtime, tmp_path: Path,
        csb_rows: tuple[list[str], list[list[str]]]) -> None:
    header, rows = csb_rows
    path = write_csv(tmp_path / "csb_two_wards.csv", [*header, "Ward"],
                     [[*r, "7"] for r in rows])
    with pytest.raises(SourceError) as caught:
        ingest(runtime, "csb-311", path)
    message = str(caught.value)
    assert "'WARD' (column 19)" in message and "'Ward' (column 20)" in message
    assert "both map to column 'ward'" in message
    assert query(runtime, "SELECT count(*) FROM quarantine") == [(0,)]


def test_repeated_headers_outside_the_catalog_keep_both_values_in_source(
        runtime: Runtime, tmp_path: Path,
        csb_rows: tuple[list[str], list[list[str]]]) -> None:
    header, rows = csb_rows
    path = write_csv(tmp_path / "csb_notes.csv", [*header, "NOTE", "NOTE", ""],
                     [[*r, f"first {n}", f"second {n}", f"blank {n}"]
                      for n, r in enumerate(rows)])
    ingest(runtime, "csb-311", path)
    project(runtime)
    key = rows[1][header.index("REQUESTID")]
    source = record(runtime, "csb-311", key)["_source"]
    width = len(header)
    assert source["NOTE"] == "first 1"
    assert source["NOTE (2)"] == "second 1"
    assert source[f"column_{width + 3}"] == "blank 1"


# --- stldata add: every header becomes a column with its values -----------------------------

@pytest.fixture
def add_settings(database_url: str, tmp_path: Path) -> Settings:
    (tmp_path / "catalog").mkdir()
    return Settings(home=tmp_path / "home", database_url=database_url, batch_size=2000,
                    poll_interval=0.05, catalog_dir=tmp_path / "catalog")


def added_and_served(settings: Settings, dataset_id: str, path: Path
                     ) -> tuple[dict[str, Any], list[dict[str, Any]], Runtime]:
    added = add_dataset(settings, dataset_id, str(path))
    assert added.path is not None
    entry = tomllib.loads(added.path.read_text(encoding="utf-8"))
    runtime = Runtime.start(settings)
    return entry, records(runtime, dataset_id), runtime


def test_add_keeps_both_columns_of_a_repeated_header(add_settings: Settings,
                                                     tmp_path: Path) -> None:
    text = "id,name,name,value\n1,alpha,beta,3\n2,gamma,delta,4\n"
    path = tmp_path / "dup.csv"
    path.write_text(text)
    entry, items, runtime = added_and_served(add_settings, "dup-names", path)
    assert [c["name"] for c in entry["columns"]] == ["id", "name", "name_2", "value"]

    expected = {int(r[0]): (r[1], r[2], int(r[3]))
                for r in list(csv.reader(io.StringIO(text)))[1:]}
    assert {i["id"]: (i["name"], i["name_2"], i["value"]) for i in items} == expected
    source = record(runtime, "dup-names", "1")["_source"]
    assert source == {"id": "1", "name": "alpha", "name (2)": "beta", "value": "3"}


def test_add_keeps_headers_that_collide_once_normalized(add_settings: Settings,
                                                        tmp_path: Path) -> None:
    text = "Ward,ward,a b,a_b,A-B\n1,2,3,4,5\n6,7,8,9,10\n"
    path = tmp_path / "collide.csv"
    path.write_text(text)
    entry, items, _ = added_and_served(add_settings, "collide", path)
    names = [c["name"] for c in entry["columns"]]
    assert len(set(names)) == 5
    rows = list(csv.reader(io.StringIO(text)))[1:]
    got = sorted(tuple(i[n] for n in names) for i in items)
    assert got == sorted(tuple(int(v) for v in r) for r in rows)


def test_add_names_a_blank_header_and_keeps_its_values(add_settings: Settings,
                                                       tmp_path: Path) -> None:
    path = tmp_path / "blank.csv"
    path.write_text("id,,value\n1,x,3\n2,y,4\n")
    entry, items, _ = added_and_served(add_settings, "blank-header", path)
    assert [c["name"] for c in entry["columns"]] == ["id", "column_2", "value"]
    assert sorted((i["id"], i["column_2"], i["value"]) for i in items) == [
        (1, "x", 3), (2, "y", 4)]


def test_add_reads_a_semicolon_file_with_decimal_commas_as_text(add_settings: Settings,
                                                                tmp_path: Path) -> None:
    path = tmp_path / "semi.csv"
    path.write_text("id;name;amount\n1;a;1,5\n2;b;2,5\n")
    entry, items, _ = added_and_served(add_settings, "semi-amounts", path)
    assert entry["source"]["delimiter"] == ";"
    assert {c["name"]: c["type"] for c in entry["columns"]}["amount"] == "text"
    assert sorted((i["id"], i["amount"]) for i in items) == [(1, "1,5"), (2, "2,5")]


def test_add_with_non_ascii_headers_writes_valid_toml(add_settings: Settings,
                                                      tmp_path: Path) -> None:
    header = ["Größe", "名前", "😀", "Ünïcødé Ñame"]
    path = tmp_path / "unicode.csv"
    path.write_text(",".join(header) + "\n1,a,b,c\n2,d,e,f\n", encoding="utf-8")
    entry, items, _ = added_and_served(add_settings, "unicode-headers", path)
    columns = entry["columns"]
    assert [c["name"] for c in columns] == ["grosse", "column_2", "column_3", "unicode_name"]
    # Each alias is the header itself, emoji included, read back by a TOML parser.
    assert [c.get("aliases", [c["name"]])[0] for c in columns] == header
    assert sorted((i["grosse"], i["column_2"], i["column_3"], i["unicode_name"])
                  for i in items) == [(1, "a", "b", "c"), (2, "d", "e", "f")]


def test_toml_strings_hold_any_text() -> None:
    tricky = 'quote " backslash \\ tab \t newline \n bell \x07 del \x7f 😀 \U0010ffff'
    path = Path(__file__).parent / "data" / "neighborhood_lookup.csv"
    draft = describe_files("tricky", [(path, "lookup.csv")], "lookup.csv", title=tricky)
    text = render_toml(draft)
    assert tomllib.loads(text)["title"] == tricky
    assert "\\ud83d" not in text


# --- inputs that are not what they seem -----------------------------------------------------

def test_a_utf16_excel_unicode_text_export_is_read(add_settings: Settings,
                                                   tmp_path: Path) -> None:
    rows = [["id", "name", "amount"], ["1", "Größe", "12.5"], ["2", "名前", "3"]]
    text = "\r\n".join("\t".join(r) for r in rows) + "\r\n"
    path = tmp_path / "unicode.txt"
    path.write_bytes(codecs.BOM_UTF16_LE + text.encode("utf-16-le"))
    entry, items, _ = added_and_served(add_settings, "utf16-export", path)
    assert entry["source"]["delimiter"] == "\t"
    assert sorted((i["id"], i["name"], i["amount"]) for i in items) == [
        (1, "Größe", 12.5), (2, "名前", 3.0)]


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_utf16_without_a_byte_order_mark_is_known_by_its_nuls(codec: str) -> None:
    text = "a,b\r\n1,ü\r\n2,z"
    lines = list(text_lines(io.BytesIO(text.encode(codec)), "x.csv"))
    assert lines == ["a,b\r\n", "1,ü\r\n", "2,z\n"]


def test_a_nul_byte_in_a_text_csv_is_named_by_its_line(add_settings: Settings,
                                                       tmp_path: Path) -> None:
    path = tmp_path / "nul.csv"
    path.write_bytes(b"id,name\n1,a\n2,b\x00c\n")
    with pytest.raises(SourceError, match=r"text with a NUL byte at line 3 \(byte 15\)"):
        add_dataset(add_settings, "nul-text", str(path), dry_run=True)


def test_an_unterminated_quote_is_named(add_settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "ragged.csv"
    path.write_bytes(b'id,name\n"1,a\n2,b\n3,c\n')
    with pytest.raises(SourceError, match="unterminated quote: a quoted field opened at "
                                          "line 2 is not closed before the end of the file"):
        add_dataset(add_settings, "ragged", str(path), dry_run=True)


def test_an_unterminated_quote_in_the_last_row_is_quarantined(
        runtime: Runtime, tmp_path: Path,
        csb_rows: tuple[list[str], list[list[str]]]) -> None:
    header, rows = csb_rows
    path = write_csv(tmp_path / "csb_quote.csv", header, rows[:3])
    with path.open("a", encoding="utf-8") as stream:
        stream.write(",".join(['"' + rows[3][0], *rows[3][1:]]) + "\n")
    summary = ingest(runtime, "csb-311", path)
    project(runtime)
    assert summary.rows_read == 4 and summary.published == 3
    reasons = query(runtime, "SELECT line, reason FROM quarantine")
    assert len(reasons) == 1 and reasons[0][0] == 5
    assert reasons[0][1].startswith("unterminated quote")


def test_a_json_scalar_says_what_it_is(add_settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "answer.json"
    path.write_text("42")
    with pytest.raises(SourceError, match="the file is a JSON number, not an array of "
                                          "records; expected an array of objects"):
        add_dataset(add_settings, "answer", str(path), dry_run=True)


def test_a_zip_with_a_repeated_member_names_the_archive_and_member(
        add_settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "twice.zip"
    with zipfile.ZipFile(path, "w") as archive, pytest.warns(UserWarning):
        archive.writestr("a.csv", "id,name\n1,a\n")
        archive.writestr("a.csv", "id,name\n2,b\n")
    with pytest.raises(SourceError) as caught:
        add_dataset(add_settings, "twice", str(path), dry_run=True)
    message = str(caught.value)
    assert message.startswith("twice.zip!a.csv: the archive holds 2 members with this name")
    assert str(tmp_path) not in message and "member-0" not in message


def test_utf16_big_endian_with_a_byte_order_mark_is_sniffed_and_read(tmp_path: Path) -> None:
    path = tmp_path / "export.txt"
    path.write_bytes(codecs.BOM_UTF16_BE + "id\tname\r\n1\tÄpfel\r\n".encode("utf-16-be"))
    found = sniff(path)
    assert (found.format, found.delimiter) == ("csv", "\t")
    assert "UTF-16 (big-endian)" in found.evidence
    with path.open("rb") as stream:
        assert list(text_lines(stream, path.name)) == ["id\tname\r\n", "1\tÄpfel\r\n"]


@pytest.mark.parametrize(("data", "message"), [
    (codecs.BOM_UTF16_LE + '[{"a": 1}]'.encode("utf-16-le"),
     r"UTF-16 \(little-endian\) text that is JSON or HTML, which is read only as UTF-8"),
    (codecs.BOM_UTF32_LE + "a,b\n".encode("utf-32-le"), "UTF-32 text, which is not supported"),
    (b"\x01\x02\x03\x00\x00\xff" * 20, "binary content of an unknown kind"),
])
def test_other_wide_or_binary_content_is_named(tmp_path: Path, data: bytes,
                                               message: str) -> None:
    path = tmp_path / "file.dat"
    path.write_bytes(data)
    with pytest.raises(SourceError, match=message):
        sniff(path)
