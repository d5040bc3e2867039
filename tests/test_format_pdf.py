"""PDF tables: the SLMPD neighborhood-to-district listing, from the FAQ to the read model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from stldata.catalog import Catalog, Dataset, Source
from stldata.ingest.errors import SourceError
from stldata.ingest.formats import parser_for
from stldata.ingest.reader import RawRow
from stldata.runtime import Runtime

from conftest import ROOT, ingest, project, query

FAQ = ROOT / "data" / "slmpd-neighborhood-districts" / "CrimeDataFrequentlyAskedQuestions.pdf"
HEADER = ["Neighborhood Number", "Neighborhood Name", "Neighborhood Primary District",
          "Neighborhood Addl District"]


def listing() -> Dataset:
    return Catalog.load(ROOT / "catalog").get("slmpd-neighborhood-districts")


def parse(path: Path, source: Source) -> list[tuple[str, list[str], list[RawRow]]]:
    found = []
    for table in parser_for("pdf")(path, path.name, source):
        rows = list(table.rows)
        assert all(isinstance(r, RawRow) for r in rows)
        found.append((table.label, table.header, rows))
    return found  # type: ignore[return-value]


def write_pdf(path: Path, content: bytes, *, pages: int = 1, encrypt: bool = False) -> Path:
    """A PDF whose pages all draw ``content``, optionally with a standard security handler
    whose user password is not empty (so it cannot be opened without it)."""
    content_ref = pages + 3
    kids = b" ".join(b"%d 0 R" % (3 + i) for i in range(pages))
    page = (b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
            b"/Resources << /Font << /F1 << /Type /Font /Subtype /Type1 /BaseFont /Helvetica "
            b">> >> >> >>" % content_ref)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, pages),
        *([page] * pages),
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
    ]
    if encrypt:
        objects.append(b"<< /Filter /Standard /V 1 /R 2 /P -4 /O <" + b"11" * 32
                       + b"> /U <" + b"22" * 32 + b"> >>")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    extra = (b" /Encrypt %d 0 R /ID [<%s> <%s>]" % (len(objects), b"ab" * 16, b"ab" * 16)
             if encrypt else b"")
    out += b"trailer\n<< /Size %d /Root 1 0 R%s >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, extra, xref)
    path.write_bytes(bytes(out))
    return path


def test_listing_reads_as_printed_over_two_pages() -> None:
    (label, header, rows), = parse(FAQ, listing().source)
    assert label == "table on pages 9-10"
    assert header == HEADER
    # Page 9 lists 1-50, page 10 repeats 49 and 50 and goes on to 86.
    numbers = [int(r.cells[0]) for r in rows]
    assert numbers == list(range(1, 51)) + list(range(49, 87))
    by_number = {r.cells[0]: r for r in rows}
    assert rows[0].cells == ["1", "Cardonlet", "1", ""]
    assert rows[0].line == 9003  # page 9, third row of the table (below the 2-line header)
    # Princeton Heights is split between districts 1 and 2; the blank cells stay empty.
    assert by_number["6"].cells == ["6", "Princeton Heights", "1", "2"]
    assert by_number["86"].cells == ["86", "Calvary-Bellefontaine Cemetaries", "6", ""]
    assert by_number["85"].cells[1] == "O'Fallon Park"
    assert sum(1 for r in rows if r.cells[3]) >= 1
    # No page footer ("Page 1 of 2", "Pg. 2 of 2") or repeated header became a row.
    assert not [r for r in rows if not r.cells[0].isdigit()]


def test_listing_loads_end_to_end(runtime: Runtime) -> None:
    summary = ingest(runtime, "slmpd-neighborhood-districts")
    project(runtime)
    assert summary.rows_read == 88
    rows = query(runtime, "SELECT neighborhood, name, district, additional_district, _source "
                          "FROM ds_slmpd_neighborhood_districts ORDER BY neighborhood")
    assert [r[0] for r in rows] == list(range(1, 87))
    assert rows[5][:4] == (6, "Princeton Heights", 1, 2)
    assert rows[0][:4] == (1, "Cardonlet", 1, None)
    # The source JSON is the cells as printed, under the table's own header.
    assert rows[0][4] == dict(zip(HEADER, ["1", "Cardonlet", "1", ""], strict=True))
    # 49 and 50 are printed twice; the page-10 row is kept, the repeat reported.
    assert query(runtime, "SELECT _line FROM ds_slmpd_neighborhood_districts "
                          "WHERE neighborhood IN (49, 50) ORDER BY 1") == [(10002,), (10003,)]
    assert query(runtime, "SELECT count(*) FROM ds_slmpd_neighborhood_districts "
                          "WHERE additional_district IS NOT NULL")[0][0] >= 1


def test_text_pages_have_no_table() -> None:
    source = dataclasses.replace(listing().source, pages="1-2")
    with pytest.raises(SourceError) as raised:
        parse(FAQ, source)
    assert str(raised.value) == f"{FAQ.name}: no table found on pages 1-2"


def test_pages_beyond_the_document_are_named() -> None:
    source = dataclasses.replace(listing().source, pages="11")
    with pytest.raises(SourceError) as raised:
        parse(FAQ, source)
    assert "pages '11' asked for, but the PDF has 10 pages" in str(raised.value)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("image-only", "PDF has no text on the chosen pages (a scanned image?)"),
        ("encrypted", "PDF is encrypted (password-protected)"),
        ("truncated", "not a readable PDF"),
    ],
)
def test_unreadable_pdfs_fail_clearly_and_keep_stored_data(
        runtime: Runtime, tmp_path: Path, kind: str, message: str) -> None:
    ingest(runtime, "slmpd-neighborhood-districts")
    project(runtime)
    state = "SELECT count(*), max(_snapshot_id) FROM ds_slmpd_neighborhood_districts"
    before = query(runtime, state)
    bad = tmp_path / FAQ.name
    if kind == "truncated":
        bad.write_bytes(FAQ.read_bytes()[:3000])
    else:
        # A filled rectangle and no text, as a scanned page has; or text behind a password.
        drawing = b"0.5 g 72 72 400 600 re f" if kind == "image-only" else (
            b"BT /F1 12 Tf 72 700 Td (Neighborhood Number) Tj ET")
        write_pdf(bad, drawing, pages=10, encrypt=kind == "encrypted")
    with pytest.raises(SourceError) as raised:
        ingest(runtime, "slmpd-neighborhood-districts", bad)
    project(runtime)
    assert str(raised.value).startswith(f"{FAQ.name}: {message}")
    assert query(runtime, state) == before



def test_empty_and_non_pdf_files_are_named_without_parser_internals(tmp_path: Path) -> None:
    source = listing().source
    empty = tmp_path / "empty.pdf"
    empty.write_bytes(b"")
    with pytest.raises(SourceError) as raised:
        parse(empty, source)
    assert str(raised.value) == "empty.pdf: file is empty; expected a PDF"
    text = tmp_path / "notes.pdf"
    text.write_bytes(b"just some words, no PDF structure at all\n")
    with pytest.raises(SourceError) as raised:
        parse(text, source)
    message = str(raised.value)
    assert message.startswith("notes.pdf: not a readable PDF (")
    assert "Error(" not in message and "PDFSyntaxError" not in message
