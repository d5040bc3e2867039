"""Property-based tests: the CSV reader and type inference on generated input."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from stldata.catalog import Source
from stldata.ingest.formats.csvfile import tables
from stldata.ingest.infer import TypeInference
from stldata.ingest.reader import RawRow

# Text a City export could hold: any printable character cp1252 can encode, commas,
# quotes and embedded line breaks included.
CELL = st.text(
    alphabet=st.characters(codec="cp1252", exclude_categories=("Cs", "Cc")) | st.sampled_from(
        [",", '"', "\n", " "]),
    max_size=20,
)


@settings(max_examples=150, deadline=None)
@given(rows=st.lists(st.lists(CELL, min_size=3, max_size=3), min_size=1, max_size=20),
       encoding=st.sampled_from(["cp1252", "utf-8", "utf-8-sig"]))
def test_csv_cells_round_trip_in_any_city_encoding(tmp_path_factory: object,
                                                   rows: list[list[str]], encoding: str
                                                   ) -> None:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\r\n")
    writer.writerow(["a", "b", "c"])
    writer.writerows(rows)
    path = Path(str(tmp_path_factory.mktemp("csv"))) / "x.csv"  # type: ignore[attr-defined]
    data = text.getvalue().encode(encoding)
    path.write_bytes(data)

    # Declared, the encoding always round-trips. Detected ("auto", per line), cp1252 text
    # round-trips unless the bytes of one of its lines also happen to be valid UTF-8 ("Ã©",
    # "Â" before a no-break space and the like), an ambiguity no detector can settle:
    # such sources declare encoding = "cp1252".
    declared = {"utf-8-sig": "utf-8"}.get(encoding, encoding)
    for option in (declared, "auto"):
        if option == "auto" and encoding == "cp1252" and _has_utf8_line(data):
            continue
        [table] = list(tables(path, "x.csv", Source(url="", encoding=option)))
        read = [r.cells for r in table.rows if isinstance(r, RawRow)]
        assert table.header == ["a", "b", "c"]
        assert read == rows


def _has_utf8_line(data: bytes) -> bool:
    """Whether some line holds non-ASCII bytes that also decode as UTF-8."""
    for line in data.split(b"\n"):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            continue
        if any(b > 127 for b in line):
            return True
    return False


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=-10**12, max_value=10**12), min_size=1, max_size=50),
       st.integers(min_value=0, max_value=49))
def test_integers_stay_integers_until_a_fraction_arrives(values: list[int], at: int) -> None:
    inference = TypeInference(["n"], "America/Chicago")
    for value in values:
        inference.add("n", str(value))
    assert inference.result()["n"] in ("integer", "boolean") or values == []
    inference.add("n", f"{values[at % len(values)]}.5")
    assert inference.result()["n"] == "number"
    inference.add("n", "n/a")
    assert inference.result()["n"] == "text"
