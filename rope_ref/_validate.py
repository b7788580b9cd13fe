"""Argument checks shared by the public functions. Each raises before any work is done."""

from __future__ import annotations

import decimal
import math
import numbers
import operator
from typing import Any

from . import _compat
from ._errors import RopeTypeError, RopeValueError

# The position checks live in ``_positions`` (with packed_positions); these names keep the
# callers' ``_validate.to_positions(...)`` working.
from ._positions import MAX_POSITION as MAX_POSITION
from ._positions import check_positions as check_positions
from ._positions import reject_masked as reject_masked
from ._positions import to_positions as to_positions

__all__ = [
    "MAX_POSITION",
    "as_bool",
    "as_int",
    "as_real",
    "check_positions",
    "check_x",
    "to_positions",
]


# ---------------------------------------------------------------- scalar arguments
# One rule for every scalar argument of the library (base, factors, head_dim, scale, window,
# flags, ...): a Python number, a NumPy scalar (np.float32, np.int64, np.bool_) or a 0-d array
# of any Array-API library is accepted alike, by its kind (bool / integer / real). A bool is
# never a number and a number never a bool; strings, complex numbers, None, arrays with more
# than one element and lazy or traced 0-d arrays (whose value cannot be read) are rejected.


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _scalar_kind(value: Any, name: str, expected: str) -> tuple[str, Any]:
    """(kind, python value) of a scalar: kind is "bool", "int" or "real"."""
    if isinstance(value, bool):
        return "bool", value
    if isinstance(value, numbers.Integral):
        return "int", operator.index(value)
    if isinstance(value, (numbers.Real, decimal.Decimal)):
        return "real", value
    if isinstance(value, (str, bytes, complex, numbers.Complex)) or value is None:
        raise RopeTypeError(f"{name} must be {expected}, got {_describe(value)}")
    if _compat.is_array(value):
        shape = tuple(getattr(value, "shape", (None,)))
        if shape != ():
            raise RopeTypeError(
                f"{name} must be {expected} (a number or a 0-d array), got an array of shape "
                f"{shape}"
            )
        if not _compat.is_concrete(value):
            raise RopeTypeError(
                f"{name} must be {expected} known before the computation, got a lazy, traced "
                "or meta-device 0-d array (pass a Python number)"
            )
        try:
            xp = _compat.array_namespace(value=value)
            dtype = value.dtype
            if _compat.is_bool(xp, dtype):
                return "bool", bool(value)
            if _compat.is_integral(xp, dtype):
                return "int", int(value)
            if _compat.is_real_floating(xp, dtype):
                return "real", float(value)
        except RopeTypeError:
            raise
        except Exception as exc:  # e.g. a tensor on the 'meta' device has no value
            raise RopeTypeError(
                f"{name} must be {expected}, got a 0-d array whose value cannot be read "
                f"({type(exc).__name__}: {exc})"
            ) from None
        raise RopeTypeError(f"{name} must be {expected}, got a 0-d array of dtype {dtype}")
    raise RopeTypeError(f"{name} must be {expected}, got {_describe(value)}")


def as_real(
    value: Any,
    name: str,
    *,
    positive: bool = False,
    nonnegative: bool = False,
    finite: bool = True,
) -> float:
    """``value`` as a Python float: a real number of any library (not a bool, not a string).

    ``positive``: must be > 0; ``nonnegative``: must be >= 0; ``finite`` (default): no NaN
    or infinity. Raises RopeTypeError / RopeValueError naming ``name``.
    """
    kind, v = _scalar_kind(value, name, "a real number")
    if kind == "bool":
        raise RopeTypeError(f"{name} must be a real number, got the bool {value!r}")
    try:
        out = float(v)
    except ValueError:  # a signalling NaN Decimal
        raise RopeValueError(f"{name} must be finite, got {_describe(value)}") from None
    except OverflowError:
        raise RopeValueError(
            f"{name} must be a finite real number, got {_describe(value)} (too large for a float64)"
        ) from None
    if math.isnan(out) or (finite and math.isinf(out)):
        raise RopeValueError(f"{name} must be finite, got {out!r}")
    if positive and not out > 0:
        raise RopeValueError(f"{name} must be > 0, got {out!r}")
    if nonnegative and not out >= 0:
        raise RopeValueError(f"{name} must be >= 0, got {out!r}")
    return out


def as_int(value: Any, name: str, *, minimum: int | None = None) -> int:
    """``value`` as a Python int: an integer of any library (a bool or a float is rejected).

    Raises RopeTypeError / RopeValueError naming ``name`` (and ``minimum`` when below it).
    """
    kind, v = _scalar_kind(value, name, "an integer")
    if kind == "bool":
        raise RopeTypeError(f"{name} must be an integer, got the bool {value!r}")
    if kind != "int":
        raise RopeTypeError(f"{name} must be an integer, got {_describe(value)}")
    out = int(v)
    if minimum is not None and out < minimum:
        raise RopeValueError(f"{name} must be >= {minimum}, got {out}")
    return out


def as_bool(value: Any, name: str) -> bool:
    """``value`` as a Python bool: True/False, np.bool_ or a 0-d bool array (not 0/1, not a
    string such as "no")."""
    kind, v = _scalar_kind(value, name, "a bool (True or False)")
    if kind != "bool":
        raise RopeTypeError(f"{name} must be a bool (True or False), got {_describe(value)}")
    return bool(v)


def check_int(name: str, value: Any, *, minimum: int | None = None) -> int:
    """Older spelling of :func:`as_int` (argument order name, value)."""
    return as_int(value, name, minimum=minimum)


def check_x(xp: Any, x: Any, head_dim: int, *, name: str = "x") -> None:
    reject_masked(x, name)
    if not _compat.is_array(x):
        raise RopeTypeError(f"{name} must be an array, got {type(x).__name__}")
    if not _compat.is_real_floating(xp, x.dtype):
        raise RopeTypeError(f"{name} must have a real floating dtype, got {x.dtype}")
    if x.ndim < 1 or x.shape[-1] != head_dim:
        raise RopeValueError(
            f"{name} must have last axis of size head_dim={head_dim}, got shape {tuple(x.shape)}"
        )


def broadcast_positions(
    pshape: tuple[int, ...], target: tuple[int, ...], *, name: str = "positions", target_name: str
) -> None:
    """Positions must broadcast to ``target`` without growing it (no silent broadcasting)."""
    pshape = tuple(pshape)
    if len(pshape) > len(target):
        raise RopeValueError(f"{name} of shape {pshape} has more axes than {target_name} {target}")
    for p, t in zip(reversed(pshape), reversed(target), strict=False):
        if p != t and p != 1:
            raise RopeValueError(
                f"{name} of shape {pshape} does not broadcast to {target_name} {target}"
            )
