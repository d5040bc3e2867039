"""Write a scaled SLMPD crime CSV by repeating real monthly rows under new complaint numbers.

The rows are the 2017-2019 variant-B files byte for byte (cp1252 bytes and CRLF kept), so
the benchmark parses exactly what the department publishes. Each pass over the files puts a
pass prefix in front of the ``Complaint`` number (``17-000886`` becomes ``R0003-17-000886``)
so that a repeated row is a new record rather than a second copy of an old one.

Usage: ``python bench/ingest/generate.py --rows 1000000 --out /tmp/slmpd-1m.csv``
"""

from __future__ import annotations

import argparse
import codecs
import sys
import time
from collections.abc import Iterator
from pathlib import Path

#: Checkout root: bench/ingest/generate.py → parents[2].
PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SOURCE = PROJECT_ROOT.parent / "shared" / "data" / "slmpd_crime"
YEARS = ("2017", "2018", "2019")

#: The 20-column header the department used from mid-2013 on (SOURCE.md calls it variant B).
VARIANT_B_HEADER = (
    b"Complaint,CodedMonth,DateOccur,FlagCrime,FlagUnfounded,FlagAdministrative,Count,"
    b"FlagCleanup,Crime,District,Description,ILEADSAddress,ILEADSStreet,Neighborhood,"
    b"LocationName,LocationComment,CADAddress,CADStreet,XCoord,YCoord"
)
CRLF = b"\r\n"


def _header_of(path: Path) -> bytes:
    with path.open("rb") as stream:
        first = stream.readline()
    return first.removeprefix(codecs.BOM_UTF8).rstrip(b"\r\n")


def source_files(root: Path) -> list[Path]:
    """The variant-B monthly files of 2017-2019, in a fixed order.

    May 2017 is published with a different, 26-column header; it is left out so every
    generated row lines up with the single header the output starts with.
    """
    files = sorted(p for year in YEARS for p in (root / year).glob("*")
                   if p.suffix.casefold() == ".csv")
    chosen = [p for p in files if _header_of(p) == VARIANT_B_HEADER]
    if not chosen:
        raise SystemExit(f"no variant-B SLMPD files under {root}")
    return chosen


def data_lines(path: Path) -> Iterator[bytes]:
    """The data rows of one file, each ending in CRLF, blank lines dropped.

    The files hold no quoted line breaks (every physical line is one record), so a byte
    line is a CSV row and no decoding is needed to keep the cp1252 bytes intact.
    """
    with path.open("rb") as stream:
        stream.readline()
        for line in stream:
            body = line.rstrip(b"\r\n")
            if body.strip():
                yield body + CRLF


def rekey(line: bytes, prefix: bytes) -> bytes:
    """Put ``prefix`` in front of the first field (Complaint), quoted or not."""
    if line.startswith(b'"'):
        return b'"' + prefix + line[1:]
    return prefix + line


def generate(out: Path, rows: int, root: Path = DEFAULT_SOURCE) -> int:
    """Stream ``rows`` data rows to ``out``; return the number written."""
    files = source_files(root)
    written = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb", buffering=1 << 20) as sink:
        sink.write(VARIANT_B_HEADER + CRLF)
        repetition = 0
        while written < rows:
            prefix = b"R%04d-" % repetition
            for path in files:
                for line in data_lines(path):
                    sink.write(rekey(line, prefix))
                    written += 1
                    if written == rows:
                        return written
            repetition += 1
    return written


#: The 3-1-1 month whose rows make a csb-311-shaped file (19 columns, request id first).
CSB_SOURCE = (PROJECT_ROOT.parent / "shared" / "data" / "csb_311_service_requests"
              / "csb_requests_2018-01.csv")
#: Each pass's request ids are the month's plus this times the pass number (1, 2, ...).
CSB_PASS_STRIDE = 10_000_000


def generate_csb(out: Path, rows: int, source: Path = CSB_SOURCE) -> tuple[int, int]:
    """Stream ``rows`` csb-311 rows to ``out``; return (rows written, distinct request ids).

    The January 2018 month repeated byte for byte, with each pass's REQUESTIDs moved by
    ``pass * 10,000,000``: distinct across passes, so the file has about as many keys as
    rows, while the ids the City itself repeats within the month (98 of its 8,812 rows)
    stay repeated within each pass, so the 'last' policy has rows to supersede.
    """
    with source.open("rb") as stream:
        header = stream.readline()
        lines = [line if line.endswith(b"\n") else line + b"\n"
                 for line in stream if line.strip()]
    written = 0
    keys: set[int] = set()
    with out.open("wb", buffering=1 << 20) as sink:
        sink.write(header)
        repetition = 1
        while written < rows:
            for line in lines:
                first, rest = line.split(b",", 1)
                key = repetition * CSB_PASS_STRIDE + int(first)
                keys.add(key)
                sink.write(b"%d,%s" % (key, rest))
                written += 1
                if written == rows:
                    return written, len(keys)
            repetition += 1
    return written, len(keys)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="data rows to write")
    parser.add_argument("--out", type=Path, required=True, help="CSV file to write")
    parser.add_argument("--source", type=Path,
                        help="folder of the SLMPD monthly files, or the 3-1-1 month for "
                             "csb-311 (default: under ../shared/data)")
    parser.add_argument("--dataset", choices=("slmpd-crime", "csb-311"),
                        default="slmpd-crime", help="the shape of file to write")
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error("--rows must be at least 1")

    started = time.perf_counter()
    if args.dataset == "csb-311":
        written, keys = generate_csb(args.out, args.rows, args.source or CSB_SOURCE)
        print(f"{keys} distinct request ids", file=sys.stderr)
    else:
        written = generate(args.out, args.rows, args.source or DEFAULT_SOURCE)
    print(f"wrote {written} rows ({args.out.stat().st_size / 1e6:.1f} MB) to {args.out} "
          f"in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
