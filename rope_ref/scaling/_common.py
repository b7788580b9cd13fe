"""Shared checks and exact helpers for the schedules."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from .._errors import RopeTypeError, RopeValueError
from .._exact import PI, context
from .._validate import as_bool, as_int, as_real

__all__ = ["TWO_PI", "ctx", "dec", "flag", "positive", "positive_int", "real"]

ctx = context
TWO_PI = context().multiply(2, PI)


def real(owner: str, name: str, value: Any) -> float:
    """A finite real number of any library (Python, NumPy scalar, 0-d array); not a bool."""
    return as_real(value, f"{owner}.{name}")


def positive(owner: str, name: str, value: Any) -> float:
    return as_real(value, f"{owner}.{name}", positive=True)


def positive_int(owner: str, name: str, value: Any) -> int:
    """A positive integer of any library; an integral float (8192.0) is accepted too."""
    label = f"{owner}.{name}"
    try:
        n = as_int(value, label)
    except RopeTypeError:
        v = as_real(value, label)
        if not v.is_integer():
            raise RopeTypeError(f"{label} must be a positive integer, got {value!r}") from None
        n = int(v)
    if n <= 0:
        raise RopeValueError(f"{label} must be a positive integer, got {value!r}")
    return n


def flag(owner: str, name: str, value: Any) -> bool:
    """A bool (True/False, np.bool_, 0-d bool array); not 0/1, not a string."""
    return as_bool(value, f"{owner}.{name}")


def dec(value: float) -> Decimal:
    """The exact value of a float as a Decimal."""
    return Decimal(value)


def g_mscale(scale: Decimal, mscale: Decimal) -> Decimal:
    """YaRN's magnitude 0.1 * mscale * ln(s) + 1 (1 when s <= 1)."""
    c = context()
    if scale <= 1:
        return Decimal(1)
    return c.add(c.multiply(c.multiply(Decimal("0.1"), mscale), c.ln(scale)), Decimal(1))
