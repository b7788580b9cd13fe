"""flash-attn's ``apply_rotary_emb``, computed exactly."""

from __future__ import annotations

import math
from typing import Any

from ... import _compat, _validate
from ..._errors import RopeTypeError, RopeValueError
from .._positions import _from_offsets, _offsets_array, positions_from_cu_seqlens
from ._common import _check_float_array, _check_tables, _concrete, _gather_rows, _rotate

__all__ = ["flash_apply_rotary_emb"]


def flash_apply_rotary_emb(
    x: Any,
    cos: Any,
    sin: Any,
    interleaved: bool = False,
    inplace: bool = False,
    seqlen_offsets: Any = 0,
    cu_seqlens: Any = None,
    max_seqlen: int | None = None,
) -> Any:
    """flash-attn's ``flash_attn.layers.rotary.apply_rotary_emb``, computed exactly.

    Parameters
    ----------
    x : array (batch, seqlen, nheads, headdim), or (total, nheads, headdim) with cu_seqlens
        Queries or keys, sequence before heads (flash-attn's layout).
    cos, sin : arrays (seqlen_ro, rotary_dim / 2)
        Per-position, per-pair tables (no duplication); row p is used at position p. Any
        real floating dtype, widened exactly (flash-attn requires x's dtype; float64 tables
        such as ``Rope.cos_sin(arange(seqlen_ro))`` are accepted and give the golden result).
    interleaved : bool
        True: pairs (x0, x1), (x2, x3), ... (GPT-J). False: pairs (x_i, x_{i + rotary_dim/2})
        (GPT-NeoX).
    inplace : bool
        Must be False: rope_ref never writes to its inputs (raises otherwise).
    seqlen_offsets : int or integer array (batch,)
        Position of each sequence's first token (KV-cache decoding).
    cu_seqlens : integer array (batch + 1,), optional
        Cumulative sequence lengths of packed sequences; positions restart at each sequence
        start (plus its offset). Must be concrete.
    max_seqlen : int
        Required with ``cu_seqlens`` (as in flash-attn); no sequence may be longer.

    Returns
    -------
    array of ``x.shape`` and ``x.dtype``: channels [0, rotary_dim) rotated, the rest copied.

    Raises
    ------
    RopeValueError
        When a position falls outside the table: flash-attn asserts
        ``seqlen_offsets + seqlen <= seqlen_ro`` for an int offset (and its kernel silently
        leaves such tokens unrotated for tensor offsets); here any position outside
        [0, seqlen_ro) is an error when the values can be read. For lazy or traced inputs no
        values are read and such tokens are left unrotated, as flash-attn's kernel does.
    """
    _check_flags(inplace, interleaved)
    if not _compat.is_array(x):
        raise RopeTypeError(f"x must be an array, got {type(x).__name__}")
    xp = _compat.array_namespace(
        x=x, cos=cos, sin=sin, seqlen_offsets=seqlen_offsets, cu_seqlens=cu_seqlens
    )
    _check_float_array(xp, x, "x")
    _check_tables(xp, cos, sin)
    device = _compat.check_same_device(
        x=x, cos=cos, sin=sin, seqlen_offsets=seqlen_offsets, cu_seqlens=cu_seqlens
    )
    seqlen_ro, r = _table_geometry(x, cos)
    batch, seqlen = _sequences(x, cu_seqlens, max_seqlen)
    if seqlen > seqlen_ro:
        raise RopeValueError(
            f"cos/sin have seqlen_ro = {seqlen_ro} rows but the sequences are up to {seqlen} "
            "tokens long (flash-attn requires seqlen_ro >= seqlen)"
        )
    offsets = _offsets_array(xp, seqlen_offsets, batch, name="seqlen_offsets")
    if not _compat.is_array(offsets) and (offsets < 0 or offsets + seqlen > seqlen_ro):
        raise RopeValueError(
            f"seqlen_offsets + seqlen = {offsets} + {seqlen} must lie in [0, seqlen_ro = "
            f"{seqlen_ro}] (flash-attn asserts seqlen_offsets + seqlen <= seqlen_ro)"
        )
    pos = _token_positions(xp, device, x, cu_seqlens, offsets, seqlen, batch)
    pos, inside = _in_table(xp, pos, offsets, seqlen_ro)
    wd = _compat.work_dtype(xp, device)
    c = _gather_rows(xp, xp.astype(cos, wd), pos)
    s = _gather_rows(xp, xp.astype(sin, wd), pos)
    if inside is not None:
        c = xp.where(inside[..., None], c, xp.ones_like(c))
        s = xp.where(inside[..., None], s, xp.zeros_like(s))
    return _rotate(xp, x, c, s, r, interleaved, wd)


def _check_flags(inplace: Any, interleaved: Any) -> None:
    if not isinstance(inplace, bool):
        raise RopeTypeError(f"inplace must be a bool, got {inplace!r}")
    if inplace:
        raise RopeValueError(
            "inplace=True is not supported: rope_ref never writes to its inputs; call with "
            "inplace=False and use the returned array (flash-attn's in-place result equals it)"
        )
    if not isinstance(interleaved, bool):
        raise RopeTypeError(f"interleaved must be a bool, got {interleaved!r}")


def _table_geometry(x: Any, cos: Any) -> tuple[int, int]:
    """(seqlen_ro, rotary_dim) of (seqlen_ro, rotary_dim / 2) tables, checked against x."""
    if cos.ndim != 2:
        raise RopeValueError(
            f"cos and sin must have shape (seqlen_ro, rotary_dim / 2), got {tuple(cos.shape)}"
        )
    seqlen_ro, n_pairs = int(cos.shape[0]), int(cos.shape[1])
    r = 2 * n_pairs
    headdim = int(x.shape[-1]) if x.ndim else 0
    if n_pairs < 1 or r > headdim:
        raise RopeValueError(
            f"rotary_dim = 2 * cos.shape[-1] = {r} must be between 2 and headdim = {headdim} "
            f"(x of shape {tuple(x.shape)})"
        )
    return seqlen_ro, r


def _sequences(x: Any, cu_seqlens: Any, max_seqlen: Any) -> tuple[int, int]:
    """(batch, seqlen): from x's shape, or from cu_seqlens and max_seqlen (packed)."""
    if cu_seqlens is None:
        if x.ndim != 4:
            raise RopeValueError(
                f"x must have shape (batch, seqlen, nheads, headdim) without cu_seqlens, got "
                f"{tuple(x.shape)}"
            )
        return int(x.shape[0]), int(x.shape[1])
    if x.ndim != 3:
        raise RopeValueError(
            f"x must have shape (total, nheads, headdim) with cu_seqlens, got {tuple(x.shape)}"
        )
    if max_seqlen is None:
        raise RopeValueError("max_seqlen is required with cu_seqlens (as in flash-attn)")
    seqlen = _validate.check_int("max_seqlen", max_seqlen, minimum=0)
    if not _compat.is_array(cu_seqlens):
        raise RopeTypeError(f"cu_seqlens must be an array, got {type(cu_seqlens).__name__}")
    if cu_seqlens.ndim != 1 or cu_seqlens.shape[0] < 1:
        raise RopeValueError(
            f"cu_seqlens must be 1-D of length batch + 1, got shape {tuple(cu_seqlens.shape)}"
        )
    return int(cu_seqlens.shape[0]) - 1, seqlen


def _token_positions(
    xp: Any, device: Any, x: Any, cu_seqlens: Any, offsets: Any, seqlen: int, batch: int
) -> Any:
    """Each token's table row, shaped to broadcast over heads: (batch or 1, seqlen, 1), or
    (total, 1) for packed sequences (whose bounds are checked against x and max_seqlen)."""
    if cu_seqlens is None:
        return _from_offsets(xp, device, seqlen, offsets)[:, :, None]
    pos = positions_from_cu_seqlens(cu_seqlens, offsets)  # (total,); checks cu_seqlens
    if int(cu_seqlens[-1]) != int(x.shape[0]):
        raise RopeValueError(
            f"cu_seqlens[-1] = {int(cu_seqlens[-1])} must equal the total number of "
            f"tokens x.shape[0] = {int(x.shape[0])}"
        )
    if batch > 0:
        longest = int(xp.max(cu_seqlens[1:] - cu_seqlens[:-1]))
        if longest > seqlen:
            raise RopeValueError(
                f"a sequence has {longest} tokens, more than max_seqlen = {seqlen} "
                "(flash-attn would leave the extra tokens unwritten)"
            )
    return pos[:, None]


def _in_table(xp: Any, pos: Any, offsets: Any, seqlen_ro: int) -> tuple[Any, Any]:
    """(pos, inside): readable positions outside [0, seqlen_ro) raise; unreadable ones (lazy
    or traced offsets) are clamped to row 0 and ``inside`` marks the tokens to rotate."""
    if _concrete(offsets, pos) and math.prod(pos.shape) > 0:
        lo, hi = int(xp.min(pos)), int(xp.max(pos))
        if lo < 0 or hi >= seqlen_ro:
            raise RopeValueError(
                f"seqlen_offsets put tokens at positions [{lo}, {hi}] but cos/sin have rows for "
                f"[0, {seqlen_ro}) only (flash-attn requires seqlen_offsets + seqlen <= "
                "seqlen_ro)"
            )
        return pos, None
    if not _compat.is_array(offsets):
        return pos, None
    # Values unreadable (lazy/traced): keep the gather in bounds and leave out-of-table
    # tokens unrotated, which is what flash-attn's kernel does (masked loads of 1 and 0).
    inside = (pos >= 0) & (pos < seqlen_ro)
    return xp.where(inside, pos, xp.zeros_like(pos)), inside


# ---------------------------------------------------------------------------- check adapter
def flash_prepare(fn: Any, ci: Any) -> Any:
    """``fn(x, cos, sin, interleaved=..., seqlen_offsets=...)`` with x (batch, seqlen,
    nheads, headdim) and cos/sin (seqlen_ro, rotary_dim / 2) in x's dtype; packed cases as
    ``fn(x, cos, sin, interleaved=..., seqlen_offsets=..., cu_seqlens=..., max_seqlen=...)``.
    Positions must be offset + arange per sequence (int offset when all sequences share it,
    else an int64 array)."""
    from ._common import (
        Call,
        Unfit,
        rebased_cos_sin,
        require_1d,
        row_offsets,
        rows_note,
        segment_offsets,
        swap_12,
    )

    who = "flash-attn"
    require_1d(ci.rope, who)
    xp, dev = ci.xp, ci.device
    p0, p1, cos, sin = rebased_cos_sin(ci, who)
    kw: dict[str, Any] = {"interleaved": ci.rope.layout == "interleaved"}
    x = ci.x
    if ci.family == "thd":
        if not _compat.is_concrete(x):
            raise Unfit(f"{who}'s packed path reads cu_seqlens: not on a lazy backend")
        segs = segment_offsets(ci)
        if segs is None:
            raise Unfit(f"{who} takes positions offset + arange(seqlen) per sequence")
        offs = [o - p0 for _, _, o in segs]
        kw["cu_seqlens"] = xp.asarray(ci.cu_seqlens, dtype=xp.int32, device=dev)
        kw["max_seqlen"] = max(b - a for a, b, _ in segs)
    else:
        off = row_offsets(ci.tok)
        if off is None:
            raise Unfit(f"{who} takes positions offset + arange(seqlen) per sequence")
        offs = [int(o) - p0 for o in off]
        if ci.family == "bhsd":
            x = swap_12(xp, x)
    if len(set(offs)) == 1:
        kw["seqlen_offsets"] = offs[0]
    else:
        kw["seqlen_offsets"] = xp.asarray(offs, dtype=xp.int64, device=dev)

    def unpack(out: Any) -> dict[str, Any]:
        if not _compat.is_array(out):
            raise TypeError(
                f"the target must return x rotated (an array: flash-attn's apply_rotary_emb "
                f"returns it, with inplace=True too), got {type(out).__name__}"
            )
        return {"q": swap_12(xp, out) if ci.family == "bhsd" else out}

    note = rows_note(p0, p1)
    return Call(run=lambda: fn(x, cos, sin, **kw), unpack=unpack, note=note)
