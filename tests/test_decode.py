from __future__ import annotations

import csv
import io

import pytest

from stldata.ingest.decode import text_lines
from stldata.ingest.errors import BinarySourceError, EmptySourceError, SourceError


def lines(data: bytes) -> list[str]:
    return list(text_lines(io.BytesIO(data), "test.csv"))


def test_bom_then_cp1252_body() -> None:
    # A UTF-8 byte order mark in front of Windows-1252 text, as in january2017.csv.
    assert lines(b"\xef\xbb\xbfA,B\r\nRESIDENCE \x96 MULTI,O\x92BRIEN\r\n") == [
        "A,B\r\n", "RESIDENCE \u2013 MULTI,O\u2019BRIEN\r\n"]


def test_utf8_lines_stay_utf8() -> None:
    assert lines("D\u00c9COR\n".encode()) == ["D\u00c9COR\n"]


def test_cp1252_undefined_bytes_do_not_fail() -> None:
    assert lines(b"A\x81B\n") == ["A\x81B\n"]


def test_empty_file_is_an_error() -> None:
    with pytest.raises(EmptySourceError, match="empty"):
        lines(b"")


def test_binary_file_is_an_error() -> None:
    with pytest.raises(BinarySourceError, match="NUL byte at byte 4"):
        lines(b"PK\x03\x04\x00\x00garbage")


def test_a_declared_encoding_that_does_not_fit_is_named() -> None:
    with pytest.raises(SourceError, match=r"bytes 6-6 are not valid utf-8"):
        list(text_lines(io.BytesIO(b"A,B\r\nO\x92B\r\n"), "test.csv", "utf-8"))


def test_bare_carriage_returns_end_lines_as_old_mac_exports_do() -> None:
    data = b"code,name\r110,Homicide\r120,\"Rape\rforcible\"\r\n130,Robbery\r"
    lines = list(text_lines(io.BytesIO(data), "ucr.csv"))
    assert lines == ["code,name\r", "110,Homicide\r", "120,\"Rape\r", "forcible\"\r\n",
                     "130,Robbery\r"]
    rows = list(csv.reader(lines))
    assert rows == [["code", "name"], ["110", "Homicide"], ["120", "Rape\rforcible"],
                    ["130", "Robbery"]]
