"""Position arrays in the conventions of popular libraries, built in the caller's namespace.

Kernels and model code spell positions in several ways: a start offset per sequence (KV-cache
decoding), cumulative sequence lengths of packed batches (flash-attn's ``cu_seqlens``), a
padding mask (Hugging Face ``generate``), a (t, h, w) grid of vision tokens (Qwen2-VL's
M-RoPE) or N-D patch coordinates (axial RoPE). These helpers turn each spelling into the
explicit positions that :func:`rope_ref.apply_rope` takes, so a test can state the positions a
kernel *should* use instead of re-deriving them inline.

Every helper returns an array of the namespace (and device) of its array argument, or a NumPy
array when all arguments are Python numbers. Integer outputs use the namespace's default
integer dtype unless an integer input fixes it.
"""

from __future__ import annotations

import math
from typing import Any

from .. import _compat, _validate
from .._deprecation import renamed_keywords
from .._errors import RopeTypeError, RopeValueError
from .._positions import MAX_POSITION, packed_positions

__all__ = [
    "axial_grid",
    "mrope_grid",
    "positions_from_cu_seqlens",
    "positions_from_offsets",
    "positions_from_padding_mask",
]

SIDES = ("left", "right", None)

#: The most elements a position helper builds (2**31, 16 GiB of int64): a larger request is
#: almost certainly a mistake (a byte count or a product of sizes passed as a size) and would
#: otherwise end in MemoryError or an hour of swapping.
MAX_ELEMENTS = 2**31


def _check_size(name: str, n: int, *, limit: int = MAX_ELEMENTS) -> None:
    """Reject a request for more than ``limit`` elements, naming the argument."""
    if n > limit:
        raise RopeValueError(
            f"{name} asks for {n} elements, more than the limit of {limit} (2**"
            f"{limit.bit_length() - 1}) this helper builds; pass smaller sizes"
        )


def _default_int(xp: Any, device: Any) -> Any:
    """The namespace's default integer dtype (int32 for JAX without x64, int64 elsewhere)."""
    try:
        return xp.__array_namespace_info__().default_dtypes(device=device)["integral"]
    except Exception:  # pragma: no cover - namespaces without the inspection API
        return xp.int64


def _namespace_for(xp: Any) -> Any:
    """A compat-wrapped namespace from a user-given module (``numpy``, ``torch``, ...) or None."""
    if xp is None:
        return _compat.array_namespace()
    try:
        probe = xp.asarray(0)
    except Exception as exc:
        raise RopeTypeError(f"xp must be an array namespace (module), got {xp!r}") from exc
    return _compat.array_namespace(xp=probe)


def _check_int_array(xp: Any, a: Any, name: str) -> None:
    if not _compat.is_integral(xp, a.dtype):
        raise RopeTypeError(f"{name} must have an integer dtype, got {a.dtype}")


def _offsets_array(xp: Any, offsets: Any, batch: int | None, name: str = "offsets") -> Any:
    """Validate per-sequence offsets: a Python int (returned as is) or a 1-D integer array."""
    if not _compat.is_array(offsets):
        value = _validate.check_int(name, offsets)
        _check_offset_range(name, value, value)
        return value
    _check_int_array(xp, offsets, name)
    if offsets.ndim != 1:
        raise RopeValueError(
            f"{name} must be an integer or a 1-D array (one offset per sequence), got shape "
            f"{tuple(offsets.shape)}"
        )
    if batch is not None and offsets.shape[0] != batch:
        raise RopeValueError(
            f"{name} has {offsets.shape[0]} entries but there are {batch} sequences"
        )
    if _compat.is_concrete(offsets) and math.prod(offsets.shape) > 0:
        _check_offset_range(name, int(xp.min(offsets)), int(xp.max(offsets)))
    return offsets


def _check_offset_range(name: str, lo: int, hi: int) -> None:
    """Offsets are positions: |offset| < 2**53 (apply_rope's range), which also keeps
    offset + arange(seq_len) from wrapping around in int64."""
    if hi >= MAX_POSITION or lo <= -MAX_POSITION:
        bad = hi if hi >= MAX_POSITION else lo
        raise RopeValueError(
            f"{name} holds {bad}: positions must satisfy |m| < 2**53 (and offset + seq_len "
            "must not wrap around)"
        )


def _wide_int(xp: Any, device: Any) -> Any:
    """The dtype positions are added in: int64 where the namespace has it (never a narrower
    dtype of the caller's: uint8 offsets 254 + 2 must give 256, not 0), else its default."""
    return getattr(xp, "int64", None) or _default_int(xp, device)


def _widen(xp: Any, a: Any, device: Any) -> Any:
    """An integer array in the wide dtype (a copy only where the dtype changes)."""
    dt = _wide_int(xp, device)
    return a if a.dtype == dt else xp.astype(a, dt)


def _from_offsets(xp: Any, device: Any, seq_len: int, offsets: Any) -> Any:
    """(batch, seq_len) positions offsets[:, None] + arange(seq_len); batch 1 for an int.

    Offsets in a small integer dtype are widened first (no wraparound)."""
    _check_size("seq_len", seq_len)
    if _compat.is_array(offsets):
        offsets = _widen(xp, offsets, device)
        ar = xp.arange(seq_len, dtype=offsets.dtype, device=device)
        return offsets[:, None] + ar[None, :]
    dt = _wide_int(xp, device)
    flat = xp.arange(offsets, offsets + seq_len, dtype=dt, device=device)
    return xp.reshape(flat, (1, seq_len))


@renamed_keywords(seqlen="seq_len")
def positions_from_offsets(seq_len: int, offsets: Any) -> Any:
    """Positions of sequences that start at per-sequence offsets (KV-cache decoding).

    Parameters
    ----------
    seq_len : int
        Tokens per sequence (>= 0). The older keyword ``seqlen=`` still works and warns
        (DeprecationWarning).
    offsets : int or 1-D integer array (batch,)
        Position of each sequence's first token (flash-attn's ``seqlen_offsets``, the cache
        length before this step).

    Returns
    -------
    array (batch, seq_len)
        ``offsets[:, None] + arange(seq_len)``; batch is 1 for an int offset (a NumPy array).
        In the namespace and on the device of ``offsets`` when it is an array; int64 (offsets
        in a smaller integer dtype are widened before the sum: uint8 254 + 2 is 256).

    Raises
    ------
    RopeTypeError
        ``seq_len`` or ``offsets`` is not an integer (or integer array).
    RopeValueError
        ``seq_len`` < 0, ``offsets`` not 0-d/1-D, or ``batch * seq_len`` above
        ``MAX_ELEMENTS`` (2**31).

    Examples
    --------
    >>> import numpy as np
    >>> from rope_ref.testing import positions_from_offsets
    >>> positions_from_offsets(3, np.array([0, 10])).tolist()
    [[0, 1, 2], [10, 11, 12]]
    """
    seq_len = _validate.check_int("seq_len", seq_len, minimum=0)
    xp = _compat.array_namespace(offsets=offsets)
    device = _compat.device_of(offsets) if _compat.is_array(offsets) else None
    offsets = _offsets_array(xp, offsets, None)
    batch = int(offsets.shape[0]) if _compat.is_array(offsets) else 1
    _check_size("batch * seq_len", batch * seq_len)
    return _from_offsets(xp, device, seq_len, offsets)


def positions_from_cu_seqlens(cu_seqlens: Any, offsets: Any = None) -> Any:
    """Positions of packed (variable-length) sequences: restart at 0 at each sequence start.

    Parameters
    ----------
    cu_seqlens : 1-D integer array (batch + 1,) or sequence of ints
        Cumulative lengths [0, len_0, len_0 + len_1, ...] (flash-attn's varlen convention);
        must be concrete (its last entry sets the output length).
    offsets : None, int or 1-D integer array (batch,)
        Added to every position of sequence i (``offsets[i]``), as flash-attn's
        ``seqlen_offsets`` with ``cu_seqlens``.

    Returns
    -------
    array (total,)
        Token t of sequence i (cu_seqlens[i] <= t < cu_seqlens[i + 1]) gets
        ``t - cu_seqlens[i] + offsets[i]``. Dtype that of ``cu_seqlens`` without offsets;
        with offsets int64 (sums are formed after widening, so small integer dtypes never
        wrap around).

    Raises
    ------
    RopeTypeError
        ``cu_seqlens`` (or an entry of the sequence) or ``offsets`` not integer, or
        ``cu_seqlens`` not an array or sequence.
    RopeValueError
        ``cu_seqlens`` not 1-D and non-empty, lazy or traced, not starting at 0 or
        decreasing somewhere; ``offsets`` not 0-d/1-D or without one entry per sequence.
    """
    if isinstance(cu_seqlens, (list, tuple)):
        np_xp = _compat.array_namespace()
        for i, v in enumerate(cu_seqlens):
            _validate.check_int(f"cu_seqlens[{i}]", v)
        cu_seqlens = np_xp.asarray(list(cu_seqlens), dtype=np_xp.int64)
    seg, pos = packed_positions(cu_seqlens)
    if offsets is None:
        return pos
    xp = _compat.array_namespace(cu_seqlens=cu_seqlens, offsets=offsets)
    device = _compat.check_same_device(cu_seqlens=cu_seqlens, offsets=offsets)
    offsets = _offsets_array(xp, offsets, int(cu_seqlens.shape[0]) - 1)
    pos = _widen(xp, pos, device)  # small integer dtypes would wrap when offsets are added
    if not _compat.is_array(offsets):
        return pos + offsets
    return pos + xp.take(_widen(xp, offsets, device), _widen(xp, seg, device), axis=0)


def positions_from_padding_mask(mask: Any, side: str | None = "left", *, pad_value: int = 0) -> Any:
    """Hugging Face-style position ids from an attention mask (1 = token, 0 = padding).

    Real tokens are numbered 0, 1, 2, ... in order along the last axis (``cumsum(mask) - 1``),
    so a left-padded row ``[0, 0, 1, 1, 1]`` gets ``[p, p, 0, 1, 2]`` and a right-padded row
    ``[1, 1, 1, 0, 0]`` gets ``[0, 1, 2, p, p]``, where ``p = pad_value``.

    Parameters
    ----------
    mask : array (..., seq) of bool or integers (0/1), or nested sequences
        The attention mask, e.g. (batch, seq).
    side : {"left", "right", None}
        Where the padding is expected. With "left" every row must be zeros then ones (what
        ``generate`` uses for decoder-only models), with "right" ones then zeros; a mask padded
        on the other side raises (a common mix-up). ``None`` accepts any 0/1 pattern. The
        check reads values, so it is skipped for lazy or traced masks. The positions
        themselves are the same formula for every side.
    pad_value : int
        Written at padding slots. The default 0 keeps them valid table indices; Hugging Face's
        ``generate`` (``prepare_inputs_for_generation``) writes 1
        (``position_ids.masked_fill_(attention_mask == 0, 1)``): pass ``pad_value=1`` to match
        its ids exactly. Padding slots are masked out of attention, so the value only matters
        when comparing ids.

    Returns
    -------
    array of ``mask.shape``
        Integer positions (the namespace's default integer dtype) in mask's namespace.

    Raises
    ------
    RopeTypeError
        ``mask`` is not an array or nested sequence, or has a dtype other than bool or
        integer; ``pad_value`` is not an integer.
    RopeValueError
        ``side`` not "left", "right" or None; a 0-d ``mask``; or, where the values can be
        read, entries other than 0 and 1 or a row padded on the other side.
    """
    if side not in SIDES:
        raise RopeValueError(f"side must be one of {SIDES}, got {side!r}")
    pad_value = _validate.check_int("pad_value", pad_value)
    if isinstance(mask, (list, tuple)):
        mask = _compat.array_namespace().asarray(mask)
    if not _compat.is_array(mask):
        raise RopeTypeError(f"mask must be an array, got {type(mask).__name__}")
    xp = _compat.array_namespace(mask=mask)
    if not (_compat.is_bool(xp, mask.dtype) or _compat.is_integral(xp, mask.dtype)):
        raise RopeTypeError(f"mask must have a bool or integer dtype, got {mask.dtype}")
    if mask.ndim < 1:
        raise RopeValueError("mask must have at least one axis (..., seq), got a 0-d array")
    device = _compat.device_of(mask)
    dt = _default_int(xp, device)
    # Widen before the cumulative sum: uint8 / bool masks would overflow or not add up.
    m = xp.astype(mask, dt)
    n = mask.shape[-1]
    if _compat.is_concrete(mask) and math.prod(mask.shape) > 0:
        if not bool(xp.all((m == 0) | (m == 1))):
            raise RopeValueError("mask must hold only 0 (padding) and 1 (token)")
        if n > 1 and side is not None:
            later, earlier = m[..., 1:], m[..., : n - 1]
            ok = xp.all(later >= earlier) if side == "left" else xp.all(later <= earlier)
            if not bool(ok):
                other = "right" if side == "left" else "left"
                raise RopeValueError(
                    f"mask is not {side}-padded (some row has padding after a token on the "
                    f"{other} side); pass side={other!r} or side=None if that is intended"
                )
    pos = xp.cumulative_sum(m, axis=-1) - 1
    return xp.where(m == 0, xp.full_like(pos, pad_value), pos)


def mrope_grid(
    t: int, h: int, w: int, start: int = 0, *, xp: Any = None, device: Any = None
) -> Any:
    """M-RoPE positions of a (t, h, w) grid of vision tokens (Qwen2-VL ``get_rope_index``).

    Tokens are ordered time-major, then rows, then columns (row-major over (t, h, w)), and
    token (i, j, k) gets the positions (start + i, start + j, start + k) on the temporal,
    height and width axes. ``h`` and ``w`` are the grid the language model sees (after any
    spatial merge: pass ``grid_h // merge_size``); no merge is applied here.

    Parameters
    ----------
    t, h, w : int
        Grid sizes (>= 1).
    start : int
        Added to every axis (the position after the preceding text, ``text_len + st_idx``).
    xp, device : optional
        Namespace (module such as ``numpy``, ``torch``) and device; NumPy by default.

    Returns
    -------
    array (3, t * h * w)
        Integer positions (int64), the layout ``rope.cos_sin`` takes for ``scaling.MRope``.

    Raises
    ------
    RopeValueError
        When ``3 * t * h * w`` exceeds ``MAX_ELEMENTS`` (2**31), checked before anything is
        allocated.
    """
    t = _validate.check_int("t", t, minimum=1)
    h = _validate.check_int("h", h, minimum=1)
    w = _validate.check_int("w", w, minimum=1)
    start = _validate.check_int("start", start)
    if abs(start) + max(t, h, w) > 2**62:
        raise RopeValueError(
            f"start must keep every position within +-2**62 (int64), got start={start} with "
            f"grid ({t}, {h}, {w})"
        )
    _check_size("3 * t * h * w", 3 * t * h * w)
    xp = _namespace_for(xp)
    dt = _wide_int(xp, device)
    shape = (t, h, w)
    axes = []
    for k, n in enumerate(shape):
        view = [1, 1, 1]
        view[k] = n
        a = xp.reshape(xp.arange(n, dtype=dt, device=device), tuple(view))
        axes.append(xp.reshape(xp.broadcast_to(a, shape), (t * h * w,)))
    return xp.stack(axes, axis=0) + start


def axial_grid(*sizes: int, xp: Any = None, device: Any = None) -> Any:
    """Integer coordinates of every cell of an N-D grid, row-major (the last axis fastest).

    ``axial_grid(2, 3)`` is [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]: the positions
    (trailing axis of size ``len(sizes)``) that ``scaling.Axial(n_axes=len(sizes))`` takes for
    patches in raster order.

    Parameters
    ----------
    *sizes : int
        Grid size along each axis (>= 1; at least one axis).
    xp, device : optional
        Namespace (module such as ``numpy``, ``torch``) and device; NumPy by default.

    Returns
    -------
    array (prod(sizes), len(sizes))
        int64 coordinates.

    Raises
    ------
    RopeValueError
        When ``prod(sizes) * len(sizes)`` exceeds ``MAX_ELEMENTS`` (2**31), checked before
        anything is allocated.
    """
    if not sizes:
        raise RopeValueError("axial_grid needs at least one size")
    sizes = tuple(_validate.check_int(f"sizes[{i}]", s, minimum=1) for i, s in enumerate(sizes))
    total = math.prod(sizes)
    _check_size("prod(sizes) * len(sizes)", total * len(sizes))
    xp = _namespace_for(xp)
    dt = _wide_int(xp, device)
    coords = []
    for k, n in enumerate(sizes):
        view = [1] * len(sizes)
        view[k] = n
        a = xp.reshape(xp.arange(n, dtype=dt, device=device), tuple(view))
        coords.append(xp.reshape(xp.broadcast_to(a, sizes), (total,)))
    return xp.stack(coords, axis=-1)
