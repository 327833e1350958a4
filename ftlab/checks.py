"""Argument checks shared by the package, so every bad value fails early with a message naming it.

    n = positive_int("n_virtual_tokens", n)            # 1, 2, ...; refuses True, 2.0, 0
    k = whole("k", k, low=0, high=len(groups))          # an int in [0, len(groups)]
    alpha = number("alpha", alpha, above=0)             # a finite number > 0; refuses NaN, inf, True, "8"
    p = number("dropout", p, low=0, below=1)            # a finite number in [0, 1)

Every message reads "<name> must be <what is allowed>, got <value>", with an optional hint after it.
A value of the wrong type (bool, a float where an int is due, a string) raises WrongTypeError, which is
a TypeError and also a ValueError, so callers that catch either keep working. A value of the right type
outside the range raises ValueError. Whole numbers come back as int and the others as float, so a
numpy scalar or an int given for a float is stored as the plain Python type.
"""

from __future__ import annotations

import math
import numbers
from typing import NoReturn


class WrongTypeError(TypeError, ValueError):
    """An argument of the wrong type: a TypeError by kind, and a ValueError for callers that catch bad values."""


def _fail(error: type[Exception], name: str, what: str, value, hint: str) -> NoReturn:
    shown = f"{value!r} ({type(value).__name__})" if error is WrongTypeError else repr(value)
    raise error(f"{name} must be {what}, got {shown} {hint}".strip())


def _interval(low, high, low_open: bool, high_open: bool) -> str:
    """The allowed range in words: '>= 0', '< 1', 'in [0, 1)', or '' when there is no bound."""
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high}"
    return ""


def whole(name: str, value, low: int | None = None, high: int | None = None, hint: str = "") -> int:
    """`value` as an int in [low, high] (either bound may be None). bool and float are refused: True or
    2.0 where a count is due is usually a mistake upstream; numpy integers are accepted."""
    what = f"an integer {_interval(low, high, False, False)}".strip()
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        _fail(WrongTypeError, name, what, value, hint)
    if (low is not None and value < low) or (high is not None and value > high):
        _fail(ValueError, name, what, value, hint)
    return int(value)


def positive_int(name: str, value, hint: str = "") -> int:
    """`value` as an int >= 1 (see `whole`)."""
    return whole(name, value, low=1, hint=hint)


def number(name: str, value, *, low: float | None = None, high: float | None = None, above: float | None = None,
           below: float | None = None, hint: str = "") -> float:
    """`value` as a finite float within the bounds given: >= low, <= high, > above, < below.

    NaN and infinities are always refused (no argument here means "unbounded" by infinity), and so is bool.
    """
    if (low is not None and above is not None) or (high is not None and below is not None):
        raise TypeError("give at most one lower bound (low or above) and one upper bound (high or below)")
    lower, upper = (low if above is None else above), (high if below is None else below)
    what = f"a finite number {_interval(lower, upper, above is not None, below is not None)}".strip()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        _fail(WrongTypeError, name, what, value, hint)
    if not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high) or \
            (above is not None and value <= above) or (below is not None and value >= below):
        _fail(ValueError, name, what, value, hint)
    return float(value)
