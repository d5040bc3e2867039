from __future__ import annotations

import pytest

from stldata.catalog import Column
from stldata.ingest.coerce import make_coercer

TZ = "America/Chicago"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("01/05/2017 13:30", "2017-01-05T13:30:00-06:00"),
        ("5/10/2017 13:30", "2017-05-10T13:30:00-05:00"),
        ("1/1/2005 0:01", "2005-01-01T00:01:00-06:00"),
        ("2018-01-05 16:18:08.673", "2018-01-05T16:18:08.673000-06:00"),
        ("2016-01-08 07:57:35.0", "2016-01-08T07:57:35-06:00"),
        ("2018-01-01T05:29:06Z", "2018-01-01T05:29:06+00:00"),
        ("1969-07-20 20:17:00", "1969-07-20T20:17:00-05:00"),
    ],
)
def test_datetimes_in_publisher_spellings(raw: str, expected: str) -> None:
    coerce = make_coercer(Column("t", type="datetime"), TZ)
    assert coerce(raw) == expected


def test_spurious_zone_is_ignored_when_the_catalog_says_so() -> None:
    coerce = make_coercer(Column("t", type="datetime", ignore_zone=True), TZ)
    assert coerce("2018-01-01T05:29:06Z") == "2018-01-01T05:29:06-06:00"


@pytest.mark.parametrize("raw", ["13/45/2017 10:00", "yesterday", "2017-02-30 10:00:00"])
def test_bad_datetimes_fail_with_the_raw_text(raw: str) -> None:
    coerce = make_coercer(Column("t", type="datetime"), TZ)
    with pytest.raises(ValueError, match="2017|yesterday"):
        coerce(raw)


@pytest.mark.parametrize(("raw", "expected"), [("1", 1), ("-1", -1), ("05", 5), ("3.0", 3),
                                               ("1,234", 1234)])
def test_integers(raw: str, expected: int) -> None:
    assert make_coercer(Column("n", type="integer"), TZ)(raw) == expected


@pytest.mark.parametrize("raw", ["COCHRAN", "1.5", "nan"])
def test_non_integers_fail(raw: str) -> None:
    with pytest.raises(ValueError, match="not a whole number"):
        make_coercer(Column("n", type="integer"), TZ)(raw)


def test_months_become_first_days() -> None:
    coerce = make_coercer(Column("m", type="month"), TZ)
    assert coerce("2017-05") == "2017-05-01"
    with pytest.raises(ValueError):
        coerce("2017-13")


def test_booleans() -> None:
    coerce = make_coercer(Column("b", type="boolean"), TZ)
    assert coerce("Y") is True
    assert coerce("n") is False
    with pytest.raises(ValueError):
        coerce("maybe")


def test_value_maps_are_case_insensitive_and_reject_unknown_spellings() -> None:
    coerce = make_coercer(Column("s", values={"closed": "closed", "cancel": "cancelled"}), TZ)
    assert coerce("CLOSED") == "closed"
    assert coerce("Cancel") == "cancelled"
    with pytest.raises(ValueError, match="not a known spelling"):
        coerce("Mystery")


def test_fixed_width_padding_inside_text_is_collapsed() -> None:
    coerce = make_coercer(Column("t"), TZ)
    assert coerce("LEAVING  SCENE") == "LEAVING SCENE"
