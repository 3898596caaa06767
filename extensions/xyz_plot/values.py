"""Reading an axis's values text, as A1111 users write it.

    "1, 2, 5"        a comma list (CSV: "a, \"b, c\"" keeps the comma inside the quotes)
    "1-5"            every value from 1 to 5 (5-1 counts down)
    "1-5 (+2)"       a step: 1, 3, 5; "10-1 (-3)": 10, 7, 4, 1
    "1-10 [5]"       that many values spread evenly: 1, 3, 5, 7, 10 (whole numbers truncate, as A1111)
Ranges work for whole and decimal numbers and mix freely with plain values: "1, 4-6, 10".
Both ends are included when the steps reach them. Anything else is a ValueError.
"""

from __future__ import annotations

import csv
import io
import math
import re

MAX_VALUES = 10_000  # one range item; a typo like 1-1000000 must not allocate a million cells

_INT = r"[+-]?\s*\d+"
_FLOAT = r"[+-]?\s*(?:\d+(?:\.\d*)?|\.\d+)"


def _range_patterns(number: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    ends = rf"^\s*({number})\s*-\s*({number})\s*"
    stepped = re.compile(ends + rf"(?:\(\s*({number})\s*\))?\s*$")
    counted = re.compile(ends + r"\[\s*(\d+)\s*\]\s*$")
    return stepped, counted


_INT_RANGES = _range_patterns(_INT)
_FLOAT_RANGES = _range_patterns(_FLOAT)


def split_list(text: str) -> list[str]:
    """CSV items, spaces trimmed, empty items dropped (a trailing comma is harmless)."""
    rows = csv.reader(io.StringIO(text), skipinitialspace=True)
    return [item.strip() for row in rows for item in row if item.strip()]


def _number(text: str, kind: type) -> int | float:
    return kind(text.replace(" ", ""))


def _stepped(start: float, end: float, step: float | None, kind: type) -> list:
    if step is None:
        step = 1 if end >= start else -1
    if step == 0:
        raise ValueError("the step must not be 0")
    if (end - start) * step < 0:
        raise ValueError(f"a step of {step:+g} never gets from {start:g} to {end:g}")
    # Count first, then compute each value from the start: repeated float additions drift
    # (0.1 * 3 = 0.30000000000000004) and can overshoot or miss the end.
    count = math.floor((end - start) / step + 1e-9) + 1
    _check_count(count)
    if kind is int:
        return [int(start + i * step) for i in range(count)]
    return [round(start + i * step, 10) for i in range(count)]


def _counted(start: float, end: float, count: int, kind: type) -> list:
    if count < 1:
        raise ValueError("the count in [n] must be at least 1")
    _check_count(count)
    if count == 1:
        return [kind(start)]
    values = [start + (end - start) * i / (count - 1) for i in range(count)]
    return [int(v) for v in values] if kind is int else [round(v, 10) for v in values]


def _check_count(count: int) -> None:
    if count > MAX_VALUES:
        raise ValueError(f"it makes {count} values (at most {MAX_VALUES})")


def parse_numbers(text: str, kind: type) -> list:
    """The numbers of an int or float axis's values text, ranges expanded."""
    return parse_number_items(split_list(text), kind)


def parse_number_items(items: list[str], kind: type) -> list:
    """The numbers of already split items (a dropdown's picks, or split_list's output)."""
    stepped, counted = _INT_RANGES if kind is int else _FLOAT_RANGES
    values: list = []
    for item in items:
        try:
            if match := stepped.match(item):
                start, end, step = match.groups()
                step_value = _number(step, kind) if step is not None else None
                values += _stepped(_number(start, kind), _number(end, kind), step_value, kind)
            elif match := counted.match(item):
                start, end, count = match.groups()
                values += _counted(_number(start, kind), _number(end, kind), int(count), kind)
            else:
                values.append(_number(item, kind))
        except ValueError as exc:
            what = "whole number" if kind is int else "number"
            detail = str(exc) if match else f"not a {what} or a range like 1-5, 1-5 (+2), 1-5 [3]"
            raise ValueError(f"cannot read {item!r}: {detail}") from None
    if kind is float and any(not math.isfinite(v) for v in values):
        raise ValueError("values must be finite numbers")
    return values
