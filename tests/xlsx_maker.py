"""Write small .xlsx workbooks by hand (a zip of XML parts), for layouts the real files
lack: the 1904 date system, dates before 1970, booleans, a formula with a cached value."""

from __future__ import annotations

import zipfile
from pathlib import Path
from xml.sax.saxutils import escape

#: A cell: text, a number, a bool, ("date", serial), or ("formula", text, cached number).
Cell = str | int | float | bool | tuple[str, float] | tuple[str, str, float] | None


_XML = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
_OOXML = "http://schemas.openxmlformats.org"
_MAIN = f"{_OOXML}/spreadsheetml/2006/main"
_RELS = f"{_OOXML}/package/2006/relationships"
_REL = f"{_OOXML}/officeDocument/2006/relationships"
_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml"


def _column(index: int) -> str:
    name = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        name = chr(65 + rest) + name
    return name


def _cell(ref: str, value: Cell) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return f'<c r="{ref}" t="b"><v>{int(value)}</v></c>'
    if isinstance(value, int | float):
        return f'<c r="{ref}"><v>{value}</v></c>'
    if isinstance(value, str):
        text = f'<t xml:space="preserve">{escape(value)}</t>'
        return f'<c r="{ref}" t="inlineStr"><is>{text}</is></c>'
    if value[0] == "date":
        return f'<c r="{ref}" s="1"><v>{value[1]}</v></c>'
    return f'<c r="{ref}"><f>{escape(str(value[1]))}</f><v>{value[2]}</v></c>'


def write_xlsx(path: Path, sheets: dict[str, list[list[Cell]]], *, date1904: bool = False,
               merged: dict[str, list[str]] | None = None) -> Path:
    names = list(sheets)
    date_system = ' date1904="1"' if date1904 else ""
    numbers = range(1, len(names) + 1)
    overrides = "".join(f'<Override PartName="/xl/worksheets/sheet{i}.xml" '
                        f'ContentType="{_TYPE}.worksheet+xml"/>' for i in numbers)
    parts: dict[str, str] = {
        "[Content_Types].xml": (
            f'{_XML}<Types xmlns="{_OOXML}/package/2006/content-types">'
            '<Default Extension="rels" '
            'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            f'<Override PartName="/xl/workbook.xml" ContentType="{_TYPE}.sheet.main+xml"/>'
            f'<Override PartName="/xl/styles.xml" ContentType="{_TYPE}.styles+xml"/>'
            f"{overrides}</Types>"),
        "_rels/.rels": (
            f'{_XML}<Relationships xmlns="{_RELS}">'
            f'<Relationship Id="rId1" Type="{_REL}/officeDocument" Target="xl/workbook.xml"/>'
            "</Relationships>"),
        "xl/workbook.xml": (
            f'{_XML}<workbook xmlns="{_MAIN}" xmlns:r="{_REL}">'
            f"<workbookPr{date_system}/><sheets>"
            + "".join(f'<sheet name="{escape(n)}" sheetId="{i}" r:id="rId{i}"/>'
                      for i, n in zip(numbers, names, strict=True))
            + "</sheets></workbook>"),
        "xl/_rels/workbook.xml.rels": (
            f'{_XML}<Relationships xmlns="{_RELS}">'
            + "".join(f'<Relationship Id="rId{i}" Type="{_REL}/worksheet" '
                      f'Target="worksheets/sheet{i}.xml"/>' for i in numbers)
            + f'<Relationship Id="rId{len(names) + 1}" Type="{_REL}/styles" '
              'Target="styles.xml"/></Relationships>'),
        # Style 1 is Excel's built-in short date format (14), which makes a number a date.
        "xl/styles.xml": (
            f'{_XML}<styleSheet xmlns="{_MAIN}">'
            '<fonts count="1"><font/></fonts><fills count="1"><fill/></fills>'
            '<borders count="1"><border/></borders>'
            '<cellStyleXfs count="1"><xf numFmtId="0"/></cellStyleXfs>'
            '<cellXfs count="2"><xf numFmtId="0" xfId="0"/>'
            '<xf numFmtId="14" xfId="0" applyNumberFormat="1"/></cellXfs>'
            "</styleSheet>"),
    }
    for i, (name, rows) in zip(numbers, sheets.items(), strict=True):
        body = "".join(
            f'<row r="{r + 1}">'
            + "".join(_cell(f"{_column(c)}{r + 1}", v) for c, v in enumerate(row)) + "</row>"
            for r, row in enumerate(rows))
        merges = (merged or {}).get(name, [])
        merge_xml = (f'<mergeCells count="{len(merges)}">'
                     + "".join(f'<mergeCell ref="{m}"/>' for m in merges)
                     + "</mergeCells>") if merges else ""
        parts[f"xl/worksheets/sheet{i}.xml"] = (
            f'{_XML}<worksheet xmlns="{_MAIN}">'
            f"<sheetData>{body}</sheetData>{merge_xml}</worksheet>")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for part, text in parts.items():
            archive.writestr(part, text)
    return path
