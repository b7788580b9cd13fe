"""Argument checks shared by the public functions. Each raises before any work is done."""

from __future__ import annotations

import operator
from typing import Any

from . import _compat
from ._errors import RopeTypeError, RopeValueError

__all__ = ["MAX_POSITION", "check_positions", "check_x", "to_positions"]

#: Positions must satisfy |position| < 2**53 (every integer below is exact in float64).
MAX_POSITION = 2.0**53


def check_int(name: str, value: Any, *, minimum: int | None = None) -> int:
    if isinstance(value, bool):
        raise RopeTypeError(f"{name} must be an integer, got the bool {value!r}")
    try:
        out = operator.index(value)
    except TypeError:
        raise RopeTypeError(
            f"{name} must be an integer, got {type(value).__name__} {value!r}"
        ) from None
    if minimum is not None and out < minimum:
        raise RopeValueError(f"{name} must be >= {minimum}, got {out}")
    return out


def to_positions(positions: Any, xp: Any, device: Any, *, name: str = "positions") -> Any:
    """Accept an array of ``xp`` or a Python number / nested sequence (converted to ``xp``)."""
    if _compat.is_array(positions):
        return positions
    if isinstance(positions, bool):
        raise RopeTypeError(f"{name} must be integer or real, got the bool {positions!r}")
    if isinstance(positions, complex):
        raise RopeTypeError(f"{name} must be integer or real, got the complex {positions!r}")
    if isinstance(positions, (int, float, list, tuple)):
        try:
            return xp.asarray(positions, device=device)
        except Exception as exc:
            raise RopeTypeError(f"{name} could not be converted to an array: {exc}") from exc
    raise RopeTypeError(
        f"{name} must be an array or a Python number, got {type(positions).__name__}"
    )


def check_positions(xp: Any, positions: Any, *, name: str = "positions") -> bool:
    """Check dtype (and values, where reading them is allowed). Returns whether integral."""
    dtype = positions.dtype
    if _compat.is_bool(xp, dtype):
        raise RopeTypeError(f"{name} must have an integer or real dtype, got {dtype}")
    if _compat.is_complex(xp, dtype):
        raise RopeTypeError(f"{name} must have an integer or real dtype, got {dtype}")
    integral = _compat.is_integral(xp, dtype)
    if not integral and not _compat.is_real_floating(xp, dtype):
        raise RopeTypeError(f"{name} must have an integer or real dtype, got {dtype}")
    if _compat.is_concrete(positions) and _size(positions) > 0:
        wd = _compat.work_dtype(xp, _compat.device_of(positions))
        p = xp.astype(positions, wd)
        if not integral and not bool(xp.all(xp.isfinite(p))):
            raise RopeValueError(f"{name} must be finite; got NaN or infinite values")
        limit = min(MAX_POSITION, 2.0 ** _compat.significand_bits(xp, wd))
        if not bool(xp.all(xp.abs(p) < limit)):
            raise RopeValueError(
                f"{name} must satisfy |position| < 2**{int(limit).bit_length() - 1} "
                f"(every integer below is exact in the working precision); "
                f"got max |position| = {float(xp.max(xp.abs(p)))!r}"
            )
    return integral


def _size(x: Any) -> int:
    n = 1
    for s in x.shape:
        if s is None:
            return 1
        n *= int(s)
    return n


def check_x(xp: Any, x: Any, head_dim: int, *, name: str = "x") -> None:
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
