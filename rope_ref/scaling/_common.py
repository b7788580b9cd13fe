"""Shared checks and exact helpers for the schedules."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from .._errors import RopeTypeError, RopeValueError
from .._exact import PI, context

__all__ = ["TWO_PI", "ctx", "dec", "positive", "positive_int", "real"]

ctx = context
TWO_PI = context().multiply(2, PI)


def real(owner: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RopeTypeError(
            f"{owner}.{name} must be a real number, got {type(value).__name__} {value!r}"
        )
    value = float(value)
    if not math.isfinite(value):
        raise RopeValueError(f"{owner}.{name} must be finite, got {value!r}")
    return value


def positive(owner: str, name: str, value: Any) -> float:
    value = real(owner, name, value)
    if value <= 0:
        raise RopeValueError(f"{owner}.{name} must be > 0, got {value!r}")
    return value


def positive_int(owner: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise RopeTypeError(
                f"{owner}.{name} must be a positive integer, got {type(value).__name__} {value!r}"
            )
    if value <= 0:
        raise RopeValueError(f"{owner}.{name} must be a positive integer, got {value!r}")
    return int(value)


def dec(value: float) -> Decimal:
    """The exact value of a float as a Decimal."""
    return Decimal(value)


def g_mscale(scale: Decimal, mscale: Decimal) -> Decimal:
    """YaRN's magnitude 0.1 * mscale * ln(s) + 1 (1 when s <= 1)."""
    c = context()
    if scale <= 1:
        return Decimal(1)
    return c.add(c.multiply(c.multiply(Decimal("0.1"), mscale), c.ln(scale)), Decimal(1))
