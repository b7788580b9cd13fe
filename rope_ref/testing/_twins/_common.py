"""Arithmetic and checks shared by the signature twins."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import array_api_compat
import numpy as np

from ... import _compat
from ..._errors import RopeTypeError, RopeValueError
from ..._rope import Rope
from ..._rotate import rotate
from ..._typing import Layout


def _check_float_array(xp: Any, a: Any, name: str) -> None:
    if not _compat.is_array(a):
        raise RopeTypeError(f"{name} must be an array, got {type(a).__name__}")
    if not _compat.is_real_floating(xp, a.dtype):
        raise RopeTypeError(f"{name} must have a real floating dtype, got {a.dtype}")


def _check_tables(xp: Any, cos: Any, sin: Any) -> None:
    _check_float_array(xp, cos, "cos")
    _check_float_array(xp, sin, "sin")
    if tuple(cos.shape) != tuple(sin.shape):
        raise RopeValueError(
            f"cos and sin must have the same shape, got {tuple(cos.shape)} and {tuple(sin.shape)}"
        )


def _rotate(xp: Any, x: Any, cos: Any, sin: Any, r: int, interleaved: bool, wd: Any) -> Any:
    """Rotate channels [0, r) of ``x`` by per-pair tables (r/2 pairs, already in the working
    dtype ``wd``), copy the rest, round once to ``x.dtype``.

    Half layout pairs (i, i + r/2), interleaved pairs (2i, 2i + 1). This is rope_ref's own
    rotation kernel (:func:`rope_ref._rotate.rotate`, the one :func:`rope_ref.apply_rope`
    runs), so equal tables give equal bits.
    """
    layout: Layout = "interleaved" if interleaved else "half"
    return rotate(xp, x, cos, sin, rotary_dim=r, layout=layout, wd=wd)


def _gather_rows(xp: Any, table: Any, idx: Any) -> Any:
    """``table[idx]`` along axis 0 for an integer array ``idx`` of any shape."""
    n = math.prod(idx.shape)
    rows = xp.take(table, xp.reshape(idx, (n,)), axis=0)
    return xp.reshape(rows, (*idx.shape, *table.shape[1:]))


def _concrete(*arrays: Any) -> bool:
    return all(not _compat.is_array(a) or _compat.is_concrete(a) for a in arrays)


# ---------------------------------------------------------------------------- conventions
# How ``rope-ref check`` calls a user's implementation the way its library's callers do.
# Each library module has an adapter ``prepare(fn, inputs) -> Call``; the adapter builds
# the arguments in that library's shapes (transposing, flattening, permuting channels where
# the library's convention differs from the case's layout: all exact), and ``Call.unpack``
# maps what the target returns back to the case's layout. Cases a convention cannot express
# raise ``Unfit`` with a reason shared by every case it applies to (skips are grouped by it).


class Unfit(Exception):
    """A battery case the convention cannot express (reported as skipped, with the reason)."""


@dataclass
class CaseInputs:
    """One battery case, ready for an adapter.

    ``x`` and ``k`` (queries and keys: independent data) are in the case's layout (bshd,
    bhsd or thd) and dtype, in namespace ``xp`` on ``device``; ``tok`` holds the token
    positions, (batch, seq) or (total,) for packed cases, as a NumPy int64 array;
    ``cu_seqlens`` the packed sequences' bounds (thd only)."""

    family: str
    rope: Rope
    xp: Any
    device: Any
    x: Any
    k: Any
    tok: np.ndarray
    cu_seqlens: np.ndarray | None
    row_limit: int = 1 << 17
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Call:
    """A prepared call: ``run()`` calls the target (in the runner's worker thread, under the
    per-case timeout); ``unpack(result)`` returns ``{"q": ..., "k": ...}`` (one or both) in
    the case's layout."""

    run: Callable[[], Any]
    unpack: Callable[[Any], dict[str, Any]]
    note: str = ""


def multi_axis(rope: Rope) -> bool:
    from .._cases import axis_scheme

    return axis_scheme(rope) is not None


def require_1d(rope: Rope, who: str) -> None:
    if multi_axis(rope):
        raise Unfit(f"{who} takes one position per token (no multi-axis M-RoPE/axial cases)")


def require_plain(rope: Rope, who: str, allow_linear: bool = False) -> None:
    sc = rope.scaling
    if sc is None:
        return
    if allow_linear and type(sc).__name__ == "Linear":
        return
    raise Unfit(f"{who} has no frequency schedule ({type(sc).__name__} cases)")


def tuple_of(result: Any, n: int, who: str, names: str = "", in_place: str = "") -> tuple[Any, ...]:
    """The first ``n`` items of the tuple or list ``result``; a TypeError saying what is
    expected otherwise (``names``: the items, e.g. "(query, key)"; ``in_place``: where None
    is also allowed, for which kernels)."""
    if not isinstance(result, (tuple, list)) or len(result) < n:
        what = f"a tuple of {n} arrays" + (f" {names}" if names else "")
        if in_place:
            what += f", or None for {in_place}"
        raise TypeError(
            f"{who} must return {what}, got {type(result).__name__}"
            + (f" of length {len(result)}" if isinstance(result, (tuple, list)) else "")
        )
    return tuple(result[:n])


def writable(a: Any) -> bool:
    """Whether a kernel can write into ``a`` in place (JAX arrays are immutable)."""
    return not array_api_compat.is_jax_array(a)


def fresh_copy(xp: Any, a: Any) -> Any:
    """A new array equal to ``a`` (bit for bit) that the target may write into."""
    return xp.asarray(a, copy=True)


def in_place_result(out: Any, ci: CaseInputs, written: tuple[Any, ...], names: str,
                    kernel: str) -> Any:  # fmt: skip
    """``out``, or for None (an in-place kernel, such as ``kernel``, returns nothing) the
    arrays it was given to write into; None on an immutable backend is a TypeError."""
    if out is not None:
        return out
    if not writable(ci.x):
        raise TypeError(
            f"the target returned None, as an in-place kernel ({kernel}) does, but JAX "
            f"arrays are immutable: the kernel must return {names}"
        )
    return written


def perm_half_from_interleaved(r: int, d: int) -> np.ndarray:
    """Channel order that turns interleaved pairs (2i, 2i + 1) into half pairs (i, i + r/2)
    over the first r channels (the rest stay): ``x_half = x[..., perm]``."""
    return np.concatenate([np.arange(0, r, 2), np.arange(1, r, 2), np.arange(r, d)])


def perm_interleaved_from_half(r: int, d: int) -> np.ndarray:
    """The inverse: ``x_interleaved = x_half[..., perm]``."""
    return np.argsort(perm_half_from_interleaved(r, d))


def permute_last(xp: Any, a: Any, perm: np.ndarray, device: Any) -> Any:
    if np.array_equal(perm, np.arange(perm.size)):
        return a
    return xp.take(a, xp.asarray(perm, device=device), axis=a.ndim - 1)


def _relayout(ci: CaseInputs, a: Any, dst: str) -> Any:
    """``a``'s channels reordered from the other layout to ``dst`` (none when ci.rope's
    layout is the kernel's: then both are the same)."""
    r, d = ci.rope.rotary_dim, int(a.shape[-1])
    perm = perm_half_from_interleaved(r, d) if dst == "half" else perm_interleaved_from_half(r, d)
    return permute_last(ci.xp, a, perm, ci.device)


def to_layout(ci: CaseInputs, a: Any, layout: str) -> Any:
    """``a`` (in ci.rope's layout) with its channels reordered for a kernel of ``layout``."""
    return a if ci.rope.layout == layout else _relayout(ci, a, layout)


def from_layout(ci: CaseInputs, a: Any, layout: str) -> Any:
    """The inverse of :func:`to_layout` (applied to a kernel's output)."""
    return a if ci.rope.layout == layout else _relayout(ci, a, ci.rope.layout)


def row_offsets(tok: np.ndarray) -> np.ndarray | None:
    """For (batch, seq) positions that are offset + arange(seq) in every row: the offsets."""
    if tok.ndim != 2:
        return None
    off = tok[:, 0]
    if not np.array_equal(tok, off[:, None] + np.arange(tok.shape[1])[None, :]):
        return None
    return off.astype(np.int64)


def segment_offsets(ci: CaseInputs) -> list[tuple[int, int, int]] | None:
    """Packed cases: (start, stop, offset) of each sequence when its positions are offset +
    arange(length); None when some sequence's are not."""
    assert ci.cu_seqlens is not None
    out = []
    for a, b in zip(ci.cu_seqlens[:-1], ci.cu_seqlens[1:], strict=True):
        seg = ci.tok[int(a) : int(b)]
        off = int(seg[0]) if seg.size else 0
        if not np.array_equal(seg, off + np.arange(seg.size)):
            return None
        out.append((int(a), int(b), off))
    return out


def swap_12(xp: Any, a: Any) -> Any:
    """(b, s, h, d) <-> (b, h, s, d)."""
    return xp.permute_dims(a, (0, 2, 1, 3))


def table_window(ci: CaseInputs, who: str, rebase: bool) -> tuple[int, int]:
    """Rows [p0, p1) of a per-position table covering the case's positions. Past the row
    limit, tables that the caller passes in (flash-attn, vLLM) start at the smallest position
    (``rebase``; positions are passed relative to it, which a kernel that gathers rows by
    index cannot tell apart); a kernel that builds its own table from row 0 cannot take it."""
    lo, hi = int(ci.tok.min()), int(ci.tok.max()) + 1
    if lo < 0:
        raise Unfit(f"{who} takes non-negative positions")
    if hi <= ci.row_limit:
        return 0, hi
    if rebase and hi - lo <= ci.row_limit:
        return lo, hi
    raise Unfit(f"{who} needs a table with a row per position: positions beyond --table-rows")


def cos_sin_rows(ci: CaseInputs, p0: int, p1: int, dtype: Any) -> tuple[Any, Any]:
    """(cos, sin) tables of rows p0 .. p1 - 1 (a dynamic schedule with the length the
    reference uses for the case: max(positions) + 1), rounded once to ``dtype``.

    The rows of the case's positions (the only rows a correct kernel reads) are rope_ref's
    exact values; the others, read only by a kernel that gathers the wrong rows, hold plain
    float64 ``cos(p * theta_j)`` (close to exact: such a kernel still fails as it should).
    Exact tables of 2**17 rows would cost seconds per case."""
    if type(ci.rope.scaling).__name__ == "XPos":
        raise Unfit("one table serves q and k here (no xPos cases)")
    seq_len = int(ci.tok.max()) + 1
    dyn = ci.rope.scaling is not None and ci.rope.scaling.dynamic
    sl = seq_len if dyn else None
    inv = np.asarray(ci.rope.inv_freq(seq_len=sl), dtype=np.float64)
    factor = ci.rope._attention_factor(sl)
    ang = np.arange(p0, p1, dtype=np.float64)[:, None] * inv[None, :]
    cos, sin = np.cos(ang) * factor, np.sin(ang) * factor
    used = np.unique(ci.tok)
    c_used, s_used = ci.rope.cos_sin(used, seq_len=sl)
    cos[used - p0], sin[used - p0] = c_used, s_used
    xp = ci.xp
    return (
        xp.astype(xp.asarray(cos, device=ci.device), dtype),
        xp.astype(xp.asarray(sin, device=ci.device), dtype),
    )


def rebased_cos_sin(ci: CaseInputs, who: str) -> tuple[int, int, Any, Any]:
    """``(p0, p1, cos, sin)``: the rows :func:`table_window` gives a kernel that takes its
    tables from the caller (``rebase=True``), from :func:`cos_sin_rows` in x's dtype."""
    p0, p1 = table_window(ci, who, rebase=True)
    cos, sin = cos_sin_rows(ci, p0, p1, ci.x.dtype)
    return p0, p1, cos, sin


def rows_note(p0: int, p1: int) -> str:
    """The case note naming the table rows passed (and whether they were rebased)."""
    return f"rows [{p0}, {p1})" + (" (rebased)" if p0 else "")


def rope_ref_prepare(fn: Any, ci: CaseInputs) -> Call:
    """``fn(x, positions, rope)``: rope_ref's own signature, positions broadcasting against
    ``x.shape[:-1]`` (multi-axis schemes with their axis of per-axis positions)."""
    from .._cases import positions_like

    pos = ci.xp.asarray(positions_like(ci.family, ci.tok, ci.rope), device=ci.device)
    x, rope = ci.x, ci.rope
    return Call(run=lambda: fn(x, pos, rope), unpack=lambda out: {"q": out})
