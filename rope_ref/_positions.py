"""Positions: the one conversion and check every entry point applies, and the positions of
packed sequences.

A position m is an integer or real number with ``|m| < 2**53`` (every integer below is exact in
float64; ``2**24`` where the working dtype is float32). :func:`to_positions` accepts an array or
Python numbers, :func:`check_positions` checks the dtype and, where values can be read (not
lazy, traced or on the meta device), finiteness and range. :func:`packed_positions` gives the
segment ids and positions of packed sequences from flash-attn's ``cu_seqlens``; the testing
helpers (:mod:`rope_ref.testing`, ``positions_from_*``, ``mrope_grid``, ``axial_grid``) build
the other conventions on top of it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _compat
from ._errors import RopeTypeError, RopeValueError
from ._typing import Array, Namespace

__all__ = ["MAX_POSITION", "check_positions", "packed_positions", "to_positions"]

#: Positions must satisfy |position| < 2**53 (every integer below is exact in float64).
MAX_POSITION = 2.0**53


def reject_masked(value: Any, name: str) -> None:
    """NumPy masked arrays are rejected: the Array API has no masks, so a rotation would
    silently use (and move into the partner channel) the data under the mask."""
    if isinstance(value, np.ma.MaskedArray):
        raise RopeTypeError(
            f"{name} is a numpy.ma.MaskedArray; rope_ref does not support masks (the masked "
            f"data would be rotated into the partner channel): pass {name}.filled(value) or "
            f"{name}.data and re-apply the mask to the result"
        )


def to_positions(positions: Any, xp: Namespace, device: Any, *, name: str = "positions") -> Array:
    """Accept an array of ``xp`` or a Python number / nested sequence (converted to ``xp``)."""
    reject_masked(positions, name)
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


def check_positions(xp: Namespace, positions: Array, *, name: str = "positions") -> bool:
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


def _size(x: Array) -> int:
    n = 1
    for s in x.shape:
        if s is None:
            return 1
        n *= int(s)
    return n


def packed_positions(cu_seqlens: Any, /) -> tuple[Any, Any]:
    """Segment ids and positions of packed sequences from cumulative lengths (flash-attn's
    ``cu_seqlens``: [0, len_0, len_0 + len_1, ...], int, non-decreasing).

    Token t belongs to sequence i when cu_seqlens[i] <= t < cu_seqlens[i + 1] and has
    position t - cu_seqlens[i]. Reads the total length, so ``cu_seqlens`` must be concrete
    (not traced or lazy).

    Parameters
    ----------
    cu_seqlens : array (n_seqs + 1,)
        Integer cumulative lengths: 1-D, non-empty, starting at 0, non-decreasing.

    Returns
    -------
    segment_ids, positions : tuple of arrays
        Each of shape (total,) = (cu_seqlens[-1],), in cu_seqlens' namespace, device and
        dtype, ready for ``attention(segment_ids=(seg, seg))`` and ``q_positions`` /
        ``k_positions``.

    Raises
    ------
    RopeTypeError
        ``cu_seqlens`` is not an array or not of an integer dtype.
    RopeValueError
        ``cu_seqlens`` is not 1-D and non-empty, is lazy or traced, does not start at 0, or
        decreases somewhere.

    Examples
    --------
    >>> import numpy as np, rope_ref as rr
    >>> seg, pos = rr.packed_positions(np.array([0, 3, 5]))
    >>> seg.tolist(), pos.tolist()
    ([0, 0, 0, 1, 1], [0, 1, 2, 0, 1])
    """
    if not _compat.is_array(cu_seqlens):
        raise RopeTypeError(f"cu_seqlens must be an array, got {type(cu_seqlens).__name__}")
    xp = _compat.array_namespace(cu_seqlens=cu_seqlens)
    if not _compat.is_integral(xp, cu_seqlens.dtype):
        raise RopeTypeError(f"cu_seqlens must have an integer dtype, got {cu_seqlens.dtype}")
    if cu_seqlens.ndim != 1 or cu_seqlens.shape[0] < 1:
        raise RopeValueError(f"cu_seqlens must be 1-D and non-empty, got {tuple(cu_seqlens.shape)}")
    if not _compat.is_concrete(cu_seqlens):
        raise RopeValueError("cu_seqlens must be concrete: its last entry sets the output length")
    first = int(cu_seqlens[0])
    if first != 0:
        raise RopeValueError(f"cu_seqlens must start at 0, got {first}")
    if cu_seqlens.shape[0] > 1 and not bool(xp.all(cu_seqlens[1:] >= cu_seqlens[:-1])):
        raise RopeValueError("cu_seqlens must be non-decreasing")
    total = int(cu_seqlens[-1])
    device = _compat.device_of(cu_seqlens)
    idx = xp.arange(total, dtype=cu_seqlens.dtype, device=device)
    seg = xp.searchsorted(cu_seqlens[1:], idx, side="right")
    pos = idx - xp.take(cu_seqlens, seg)
    return xp.astype(seg, cu_seqlens.dtype), pos
