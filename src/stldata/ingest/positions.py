"""Where a row sits in its source, in words a person can find it by.

Parsers give each row a number and each table a label: a CSV row's number is its line,
a sheet's row is its row number in Excel (the label names the sheet), and a PDF row is
``page * 1000 + row``. The quarantine stores both the number and this text.
"""

from __future__ import annotations

_PDF_LABEL = "table on page"


def position_text(label: str, line: int) -> str:
    """``line 12``, ``sheet Jan 2015 row 7``, ``page 9 row 3``, or ``<label> line N``."""
    if not label:
        return f"line {line}"
    if label.startswith("sheet "):
        return f"{label} row {line}"
    if label.startswith(_PDF_LABEL) and line >= 1000:
        return f"page {line // 1000} row {line % 1000}"
    if label.startswith("table "):
        # An HTML table: its rows are numbered by their line in the page's source.
        return f"line {line}"
    return f"{label} line {line}"
