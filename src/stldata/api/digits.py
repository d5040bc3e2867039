"""Whole numbers in query parameters are written in ASCII digits, and nothing else.

Python reads digits of every script: ``"１０".isdigit()`` is true, ``int("１０")`` is 10,
``int("1_000")`` is 1000, and a regular expression's ``\\d`` matches ``٣``. A parameter
read that way would accept ``limit=１０`` as 10, so every check here takes only 0-9.
"""

from __future__ import annotations

import re
from typing import Any

from marshmallow import fields

#: An optionally signed run of ASCII digits, with the spaces ``int()`` allows around it.
WHOLE_NUMBER = re.compile(r"\s*[+-]?[0-9]+\s*")


def is_ascii_digits(text: str) -> bool:
    """True when ``text`` is one or more of the digits 0-9 and nothing else."""
    return text.isascii() and text.isdigit()


def is_whole_number(text: str) -> bool:
    """True when ``int(text)`` would read ``text`` as ASCII digits (sign and spaces allowed)."""
    return WHOLE_NUMBER.fullmatch(text) is not None


class WholeNumber(fields.Integer):
    """marshmallow's Integer, but a query-string value must be ASCII digits.

    marshmallow passes strings to ``int()``, which reads ``１０`` and ``1_0`` as 10.
    """

    default_error_messages = {"invalid": "Not a whole number written in the digits 0-9."}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, str) and not is_whole_number(value):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)
