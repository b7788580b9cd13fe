"""Signature twin of flash-attn's ``flash_attn_with_kvcache`` (exact numerics)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _compat
from .._errors import RopeTypeError, RopeValueError
from .._kv_cache import _kv_cache
from .._typing import Array
from .._validate import as_bool, as_real

__all__ = ["flash_attn_with_kvcache"]


def flash_attn_with_kvcache(
    q: Array,
    k_cache: Array,
    v_cache: Array,
    k: Array = None,
    v: Array = None,
    rotary_cos: Array = None,
    rotary_sin: Array = None,
    cache_seqlens: Array = None,
    cache_batch_idx: Array = None,
    cache_leftpad: Array = None,
    block_table: Array = None,
    softmax_scale: Any = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    rotary_interleaved: bool = True,
    alibi_slopes: Array = None,
    num_splits: int = 0,
    return_softmax_lse: bool = False,
    *,
    return_cache: bool = False,
) -> Any:
    """flash-attn's ``flash_attn.flash_attn_with_kvcache``, computed exactly.

    Same arguments, shapes and semantics as flash-attn 2 (see
    :func:`rope_ref.kv_cache_attention` for the slot and position rules): the new keys are
    rotated with the caller's tables at ``cache_seqlens + i`` and appended; queries are
    rotated at ``cache_seqlens + i`` when causal or local, otherwise all at
    ``cache_seqlens``. The tables are used as given, widened exactly to float64, so float64
    tables such as ``Rope.cos_sin(arange(n))`` give the golden result.

    Parameters
    ----------
    q, k_cache, v_cache, k, v
        flash-attn's (batch, seq, heads, dim) arrays; paged caches with ``block_table``.
    rotary_cos, rotary_sin : arrays (seqlen_ro, rotary_dim / 2), optional
        Rotary tables; only with ``k`` and ``v`` (as in flash-attn).
    cache_seqlens : int or integer array (batch,)
        Valid cache length per row before the new keys (required here; flash-attn's
        default None means a full cache, which this twin spells ``k_cache.shape[1]``).
    cache_batch_idx, cache_leftpad, block_table
        As in flash-attn.
    softmax_scale : float, optional
        Default ``dim ** -0.5``.
    causal : bool
        Bottom-right aligned causal mask.
    window_size : (int, int)
        Sliding window, -1 for unbounded.
    softcap : float
        0.0 turns it off.
    rotary_interleaved : bool
        True: pairs (x0, x1), (x2, x3), ...; False: GPT-NeoX halves.
    alibi_slopes : None
        Not supported (raises).
    num_splits : int
        Accepted and ignored: splitting changes only a kernel's rounding.
    return_softmax_lse : bool
        Also return the natural-log log-sum-exp (batch, heads, seq_q).
    return_cache : bool
        flash-attn updates its caches in place; rope_ref never writes to its inputs. With
        ``return_cache=True`` the updated caches are returned after the other results.

    Returns
    -------
    out, or (out, lse), as flash-attn; with ``return_cache`` also ``k_cache, v_cache``.

    Raises
    ------
    RopeTypeError, RopeValueError
        On inconsistent shapes, dtypes or indices, tables without new keys, or alibi slopes.
    """
    if alibi_slopes is not None:
        raise RopeValueError("alibi_slopes is not supported by this twin; pass None")
    if isinstance(num_splits, bool) or not isinstance(num_splits, (int, np.integer)):
        raise RopeTypeError(f"num_splits must be an int, got {num_splits!r}")
    interleaved = as_bool(rotary_interleaved, "rotary_interleaved")
    return_cache = as_bool(return_cache, "return_cache")
    cap = as_real(softcap, "softcap")
    if cap < 0:
        raise RopeValueError(f"softcap must be >= 0 (0 turns it off), got {softcap!r}")
    if (rotary_cos is None) != (rotary_sin is None):
        raise RopeValueError("give rotary_cos and rotary_sin together, or neither")
    if cache_seqlens is None:
        if not _compat.is_array(k_cache):
            raise RopeTypeError(f"k_cache must be an array, got {type(k_cache).__name__}")
        cache_seqlens = int(k_cache.shape[1]) if block_table is None else None
        if cache_seqlens is None:
            raise RopeValueError("cache_seqlens is required with block_table")
    rotate = None
    if rotary_cos is not None:
        from . import flash_apply_rotary_emb

        def rotate(x: Array, offsets: np.ndarray, per_token: bool) -> Any:
            xp = _compat.array_namespace(x=x)
            off = xp.asarray(offsets, device=_compat.device_of(x))
            cos = xp.astype(rotary_cos, xp.float64) if hasattr(xp, "float64") else rotary_cos
            sin = xp.astype(rotary_sin, xp.float64) if hasattr(xp, "float64") else rotary_sin
            if per_token:
                return flash_apply_rotary_emb(x, cos, sin, interleaved, seqlen_offsets=off)
            b, s, h, d = (int(n) for n in x.shape)
            flat = xp.reshape(x, (b, 1, s * h, d))  # every token at the offset itself
            y = flash_apply_rotary_emb(flat, cos, sin, interleaved, seqlen_offsets=off)
            return xp.reshape(y, (b, s, h, d))

    result = _kv_cache(
        q, k_cache, v_cache, k, v,
        cache_seqlens=cache_seqlens, rotate=rotate, block_table=block_table,
        cache_batch_idx=cache_batch_idx, cache_leftpad=cache_leftpad, causal=causal,
        window=tuple(window_size) if window_size is not None else None,
        softcap=cap if cap > 0 else None, scale=softmax_scale, sinks=None,
        return_lse=return_softmax_lse,
    )  # fmt: skip
    out, k_out, v_out = result[:3]
    main = (out, result[3]) if return_softmax_lse else out
    if not return_cache:
        return main
    return (*main, k_out, v_out) if return_softmax_lse else (out, k_out, v_out)
