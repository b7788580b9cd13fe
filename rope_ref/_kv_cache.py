"""KV-cache decoding with rotary: the reference for flash-attn's ``flash_attn_with_kvcache``.

One call does what a decode kernel fuses: rotate the new keys at their slots, append them
(and the new values) to a contiguous or paged cache, rotate the queries, and attend over
every valid slot. Shapes follow flash-attn, sequence before heads: q (batch, seq, heads,
dim). Nothing is written in place: the updated caches come back as new arrays.

Slots and positions (as flash-attn's own test reference, ``tests/test_flash_attn.py``):

* batch row b holds valid keys in slots ``[leftpad_b, cache_seqlens_b + seqlen_new)``;
* new key i is rotated at position ``cache_seqlens_b + i`` and written to that slot;
* queries are rotated at ``cache_seqlens_b + i`` when causal or windowed, otherwise all at
  ``cache_seqlens_b`` (every query token counts as the next one);
* the causal mask and the window are aligned bottom-right to the valid keys: query i sits at
  slot ``cache_seqlens_b + seqlen_new - seqlen_q + i`` and keeps key slot j when
  ``j <= that slot + right`` and ``j >= that slot - left``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _compat
from ._apply import apply_rope
from ._attention import attention
from ._errors import RopeTypeError, RopeValueError
from ._rope import Rope
from ._typing import Array, Namespace
from ._validate import as_bool

__all__ = ["kv_cache_attention"]

# rotate(x_bshd_float, offsets (batch,) int64 numpy, per_token) -> rotated x, same shape
Rotator = Callable[[Any, np.ndarray, bool], Any]


def _host_ints(a: Array, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """The values of a small integer array (or a Python int) on the host, as int64."""
    if isinstance(a, bool) or (not _compat.is_array(a) and not isinstance(a, (int, np.integer))):
        raise RopeTypeError(f"{name} must be an int or an integer array, got {type(a).__name__}")
    if _compat.is_array(a):
        xp = _compat.array_namespace(**{name: a})
        if not _compat.is_integral(xp, a.dtype):
            raise RopeTypeError(f"{name} must have an integer dtype, got {a.dtype}")
        try:  # NumPy, torch, JAX arrays; a lazy Dask array is computed (it is small)
            host = np.asarray(a)
        except Exception:
            host = None
        if host is None and _compat.is_concrete(a):
            flat = xp.reshape(a, (-1,))
            host = np.array([int(flat[i]) for i in range(int(flat.shape[0]))]).reshape(
                tuple(a.shape)
            )
        if host is None:
            raise RopeValueError(
                f"{name} must be concrete (not traced): it decides which slots are written and read"
            )
        host = host.astype(np.int64)
    else:
        host = np.asarray(int(a), dtype=np.int64)
    if shape is not None and host.shape != shape:
        if host.ndim == 0 and name == "cache_seqlens":
            host = np.broadcast_to(host, shape)
        else:
            raise RopeValueError(f"{name} must have shape {shape}, got {host.shape}")
    return host


def _check_array(xp: Namespace, a: Array, name: str, ndim: int) -> None:
    if not _compat.is_array(a):
        raise RopeTypeError(f"{name} must be an array, got {type(a).__name__}")
    if not _compat.is_real_floating(xp, a.dtype):
        raise RopeTypeError(f"{name} must have a real floating dtype, got {a.dtype}")
    if a.ndim != ndim:
        raise RopeValueError(f"{name} must have {ndim} dimensions, got shape {tuple(a.shape)}")


def _window(window: Any, causal: bool) -> tuple[int | None, int | None] | None:
    """flash-attn's window_size (-1 = unbounded) as rr.attention's (left, right)."""
    if window is None:
        return (None, 0) if causal else None
    if not isinstance(window, (tuple, list)) or len(window) != 2:
        raise RopeTypeError(f"window must be a pair (left, right), got {window!r}")
    sides: list[int | None] = []
    for side, w in zip(("left", "right"), window, strict=True):
        if w is None:
            sides.append(None)
            continue
        if isinstance(w, bool) or not isinstance(w, (int, np.integer)):
            raise RopeTypeError(f"window {side} must be an int or None, got {w!r}")
        if w < -1:
            raise RopeValueError(f"window {side} must be >= -1 (-1 or None: unbounded), got {w}")
        sides.append(None if w == -1 else int(w))
    left, right = sides
    if causal:
        right = 0 if right is None else min(right, 0)
    if left is None and right is None:
        return None
    return (left, right)


def _logical_index(
    batch: int,
    seq_cache: int,
    block_table: np.ndarray | None,
    page: int,
    batch_idx: np.ndarray,
) -> np.ndarray:
    """Flat physical slot of each logical (batch, slot): shape (batch, seq_cache)."""
    s = np.arange(seq_cache)
    if block_table is None:
        return batch_idx[:, None] * seq_cache + s[None, :]
    return block_table[:, s // page] * page + (s % page)[None, :]


def kv_cache_attention(
    q: Array,
    k_cache: Array,
    v_cache: Array,
    k_new: Array = None,
    v_new: Array = None,
    *,
    cache_seqlens: Array,
    rope: Rope | None = None,
    block_table: Array = None,
    cache_batch_idx: Array = None,
    cache_leftpad: Array = None,
    causal: bool = False,
    window: Any = None,
    softcap: float | None = None,
    scale: float | None = None,
    sinks: Array = None,
    return_lse: bool = False,
) -> tuple[Any, ...]:
    r"""Attention over a KV cache after appending rotated new keys: flash-attn's
    ``flash_attn_with_kvcache``, computed exactly.

    Parameters
    ----------
    q : array (batch, seq_q, heads_q, dim)
        Queries, unrotated.
    k_cache, v_cache : arrays (batch_cache, seq_cache, heads_k, dim) / (..., dim_v)
        The caches; with ``block_table``, pages of shape (num_pages, page_size, heads_k,
        dim). Never written: the updated caches are returned.
    k_new, v_new : arrays (batch, seq_new, heads_k, dim) / (..., dim_v), optional
        New keys (unrotated) and values, written at slots ``cache_seqlens + i``. Give both or
        neither; their dtypes must equal the caches'.
    cache_seqlens : int or integer array (batch,)
        Valid length of each cache row before the new keys. Must be concrete.
    rope : Rope, optional
        Rotates new keys at ``cache_seqlens + i`` and queries at ``cache_seqlens + i``
        (causal or windowed) or all at ``cache_seqlens`` (otherwise), as flash-attn does.
        Requires ``k_new`` (flash-attn applies rotary only when new keys are appended).
    block_table : integer array (batch, max_pages), optional
        Paged cache: logical slot s of row b lives in page ``block_table[b, s // page_size]``
        at offset ``s % page_size``. Any page size.
    cache_batch_idx : integer array (batch,), optional
        Cache row used by each batch row (default 0 .. batch - 1); distinct when keys are
        written. Not with ``block_table``.
    cache_leftpad : integer array (batch,), optional
        First valid slot of each row (default 0); slots before it are masked.
    causal : bool
        Keep key slots up to the query's slot, aligned bottom-right to the valid keys.
    window : (left, right), optional
        Sliding window in slots, flash-attn's ``window_size``: -1 or None is unbounded.
    softcap, scale, sinks
        As in :func:`rope_ref.attention` (scale defaults to ``dim ** -0.5``; sinks of shape
        (heads_q,) or (batch, heads_q)).
    return_lse : bool
        Also return the natural-log log-sum-exp of shape (batch, heads_q, seq_q).

    Returns
    -------
    out : array (batch, seq_q, heads_q, dim_v)
        In q's dtype, computed in float64 (where the namespace has it) and rounded once.
    k_cache, v_cache : arrays
        New arrays equal to the inputs except at the written slots (the rotated new keys,
        rounded to the cache dtype, and the new values).
    lse : array (batch, heads_q, seq_q), only with ``return_lse=True``
        A row with no valid key gives output 0 and lse -inf.

    Raises
    ------
    RopeTypeError, RopeValueError
        On any inconsistent shape, dtype, index or argument; named in the message.

    Examples
    --------
    >>> import numpy as np, rope_ref as rr
    >>> g = np.random.default_rng(0)
    >>> kc, vc = g.standard_normal((2, 2, 16, 1, 8))             # room for 16 slots
    >>> q, kn, vn = g.standard_normal((3, 2, 1, 1, 8))           # one new token per row
    >>> out, kc2, vc2 = rr.kv_cache_attention(q, kc, vc, kn, vn, rope=rr.Rope(8),
    ...                                      cache_seqlens=np.array([3, 7]), causal=True)
    >>> out.shape, bool(np.all(kc2[0, 4:] == kc[0, 4:])), bool(np.all(vc2[1, 7] == vn[1, 0]))
    ((2, 1, 1, 8), True, True)
    """
    if rope is not None and not isinstance(rope, Rope):
        raise RopeTypeError(f"rope must be a rope_ref.Rope, got {type(rope).__name__}")
    if rope is not None and rope.head_dim != (int(q.shape[-1]) if _compat.is_array(q) else -1):
        raise RopeValueError(
            f"rope.head_dim = {rope.head_dim} must equal the last dimension of q "
            f"({tuple(q.shape) if _compat.is_array(q) else q!r})"
        )

    def rotate(x: Array, offsets: np.ndarray, per_token: bool) -> Any:
        assert rope is not None
        xp = _compat.array_namespace(x=x)
        s = int(x.shape[1])
        steps = np.arange(s) if per_token else np.zeros(s, dtype=np.int64)
        pos = (offsets[:, None] + steps[None, :])[:, :, None]  # (b, s, 1) vs (b, s, h)
        return apply_rope(x, xp.asarray(pos, device=_compat.device_of(x)), rope)

    return _kv_cache(
        q, k_cache, v_cache, k_new, v_new,
        cache_seqlens=cache_seqlens, rotate=None if rope is None else rotate,
        block_table=block_table, cache_batch_idx=cache_batch_idx,
        cache_leftpad=cache_leftpad, causal=causal, window=window, softcap=softcap,
        scale=scale, sinks=sinks, return_lse=return_lse,
    )  # fmt: skip


@dataclass(frozen=True)
class _Shapes:
    """Sizes read from the arrays, checked once."""

    b: int
    sq: int
    hq: int
    d: int
    hk: int
    dv: int
    sn: int


@dataclass(frozen=True)
class _Slots:
    """Host-side index maps: where each logical (row, slot) lives, which slots are written."""

    seq_cache: int
    flat_idx: np.ndarray  # (b, seq_cache) flat physical slot
    written: np.ndarray  # (b, seq_cache) bool
    seqlens: np.ndarray  # (b,)
    leftpad: np.ndarray  # (b,)


def _check_arrays(named: dict[str, Any], rotate: Rotator | None) -> tuple[Any, Any, _Shapes]:
    for name, a in named.items():
        if not _compat.is_array(a):
            raise RopeTypeError(f"{name} must be an array, got {type(a).__name__}")
    xp = _compat.array_namespace(**named)
    device = _compat.check_same_device(**named)
    for name, a in named.items():
        _check_array(xp, a, name, 4)
    q, k_cache, v_cache = named["q"], named["k_cache"], named["v_cache"]
    b, sq, hq, d = (int(n) for n in q.shape)
    hk, dv = int(k_cache.shape[2]), int(v_cache.shape[3])
    if tuple(k_cache.shape[:3]) != tuple(v_cache.shape[:3]):
        raise RopeValueError(
            f"k_cache and v_cache must agree in all but the last dimension, got "
            f"{tuple(k_cache.shape)} and {tuple(v_cache.shape)}"
        )
    if int(k_cache.shape[3]) != d:
        raise RopeValueError(f"k_cache's last dimension must equal q's ({d}), got {k_cache.shape}")
    if hk == 0 or hq % hk:
        raise RopeValueError(f"heads of q ({hq}) must be a multiple of heads of k_cache ({hk})")
    if d == 0:
        raise RopeValueError("dim (the last dimension of q) must be at least 1, got 0")
    if rotate is not None and "k_new" not in named:
        raise RopeValueError(
            "rotary needs k_new and v_new: flash-attn rotates only when new keys are appended "
            "(pass rope=None to attend over an already rotated cache)"
        )
    sn = int(named["k_new"].shape[1]) if "k_new" in named else 0
    if "k_new" in named:
        k_new, v_new = named["k_new"], named["v_new"]
        if tuple(k_new.shape) != (b, sn, hk, d) or tuple(v_new.shape) != (b, sn, hk, dv):
            raise RopeValueError(
                f"k_new and v_new must have shapes (batch, seq_new, heads_k, dim) = "
                f"({b}, seq_new, {hk}, {d}) and (..., {dv}), got {tuple(k_new.shape)} and "
                f"{tuple(v_new.shape)}"
            )
        for new, cache in (("k_new", "k_cache"), ("v_new", "v_cache")):
            if named[new].dtype != named[cache].dtype:
                raise RopeTypeError(
                    f"{new} must have the dtype of {cache} ({named[cache].dtype}), got "
                    f"{named[new].dtype}"
                )
    return xp, device, _Shapes(b, sq, hq, d, hk, dv, sn)


def _rows_and_table(
    k_cache: Array, sh: _Shapes, block_table: Array, cache_batch_idx: Array
) -> tuple[np.ndarray, np.ndarray | None, int, int]:
    """(cache rows, block table, page size, logical slots per row)."""
    rows = np.arange(sh.b)
    if block_table is not None:
        if cache_batch_idx is not None:
            raise RopeValueError("give block_table or cache_batch_idx, not both (as flash-attn)")
        table = _host_ints(block_table, "block_table")
        if table.ndim != 2 or table.shape[0] != sh.b:
            raise RopeValueError(
                f"block_table must have shape ({sh.b}, max_pages), got {table.shape}"
            )
        n_pages, page = int(k_cache.shape[0]), int(k_cache.shape[1])
        if page == 0 or (table.size and (table.min() < 0 or table.max() >= n_pages)):
            raise RopeValueError(
                f"block_table entries must lie in [0, {n_pages}) (the pages of k_cache)"
            )
        return rows, table, page, int(table.shape[1]) * page
    n_rows = int(k_cache.shape[0])
    if cache_batch_idx is not None:
        rows = _host_ints(cache_batch_idx, "cache_batch_idx", (sh.b,))
        if rows.size and (rows.min() < 0 or rows.max() >= n_rows):
            raise RopeValueError(f"cache_batch_idx entries must lie in [0, {n_rows})")
    elif n_rows < sh.b:
        raise RopeValueError(
            f"k_cache has {n_rows} rows for a batch of {sh.b}; pass cache_batch_idx or a "
            "larger cache"
        )
    return rows, None, 0, int(k_cache.shape[1])


def _slots(
    k_cache: Array,
    sh: _Shapes,
    cache_seqlens: Array,
    block_table: Array,
    cache_batch_idx: Array,
    cache_leftpad: Array,
) -> _Slots:
    seqlens = _host_ints(cache_seqlens, "cache_seqlens", (sh.b,))
    rows, table, page, seq_cache = _rows_and_table(k_cache, sh, block_table, cache_batch_idx)
    if seqlens.size and (seqlens.min() < 0 or (seqlens + sh.sn).max() > seq_cache):
        raise RopeValueError(
            f"cache_seqlens + seq_new must lie in [0, {seq_cache}] (the cache's slots), got "
            f"cache_seqlens {seqlens.tolist()} with seq_new {sh.sn}"
        )
    leftpad = np.zeros(sh.b, dtype=np.int64)
    if cache_leftpad is not None:
        leftpad = _host_ints(cache_leftpad, "cache_leftpad", (sh.b,))
        if leftpad.size and (leftpad.min() < 0 or np.any(leftpad > seqlens + sh.sn)):
            raise RopeValueError("cache_leftpad must lie in [0, cache_seqlens + seq_new]")
    flat_idx = _logical_index(sh.b, seq_cache, table, page, rows)
    s = np.arange(seq_cache)[None, :]
    written = (s >= seqlens[:, None]) & (s < (seqlens + sh.sn)[:, None])
    w_phys = flat_idx[written]
    if np.unique(w_phys).size != w_phys.size:
        raise RopeValueError(
            "two batch rows write the same cache slot (repeated cache_batch_idx, or pages "
            "shared in block_table): the result would depend on the order of writes"
        )
    return _Slots(seq_cache, flat_idx, written, seqlens, leftpad)


def _update(
    xp: Namespace, device: Any, cache: Array, new: Array, sl: _Slots, sh: _Shapes
) -> tuple[Any, Any]:
    """The cache with ``new`` at the written slots (physical layout), and its logical view
    (batch, seq_cache, ...); gathers only, so every backend (immutable ones too) works."""
    tail = tuple(int(n) for n in cache.shape[2:])
    phys = xp.reshape(cache, (-1, *tail))

    def index(a: np.ndarray) -> Any:
        return xp.asarray(a.reshape(-1), device=device)

    def logical(flat: Array) -> Any:
        return xp.reshape(xp.take(flat, index(sl.flat_idx), axis=0), (sh.b, sl.seq_cache, *tail))

    if new is None or not np.any(sl.written):
        return cache, logical(phys)
    src = np.arange(phys.shape[0]) + sh.b * sh.sn  # default: the old value
    bb, ss = np.nonzero(sl.written)
    src[sl.flat_idx[bb, ss]] = bb * sh.sn + (ss - sl.seqlens[bb])
    new_flat = xp.reshape(new, (-1, *tail))  # (b * sn, ...)
    merged = xp.take(xp.concat([new_flat, phys], axis=0), index(src), axis=0)
    return xp.reshape(merged, tuple(cache.shape)), logical(merged)


def _kv_cache(
    q: Array,
    k_cache: Array,
    v_cache: Array,
    k_new: Array,
    v_new: Array,
    *,
    cache_seqlens: Array,
    rotate: Rotator | None,
    block_table: Array,
    cache_batch_idx: Array,
    cache_leftpad: Array,
    causal: Any,
    window: Any,
    softcap: Any,
    scale: Any,
    sinks: Array,
    return_lse: Any,
) -> tuple[Any, ...]:
    """The shared body of :func:`kv_cache_attention` and its flash-attn signature twin;
    ``rotate`` carries the rotation (a Rope's exact tables, or the caller's tables)."""
    causal = as_bool(causal, "causal")
    return_lse = as_bool(return_lse, "return_lse")
    if (k_new is None) != (v_new is None):
        raise RopeValueError("give k_new and v_new together, or neither")
    named = {"q": q, "k_cache": k_cache, "v_cache": v_cache}
    if k_new is not None:
        named |= {"k_new": k_new, "v_new": v_new}
    xp, device, sh = _check_arrays(named, rotate)
    sl = _slots(k_cache, sh, cache_seqlens, block_table, cache_batch_idx, cache_leftpad)
    win = _window(window, causal)

    wd = _compat.work_dtype(xp, device)
    k_write = k_new
    if k_new is not None and rotate is not None:
        k_write = xp.astype(rotate(xp.astype(k_new, wd), sl.seqlens, True), k_cache.dtype)
    k_out, k_log = _update(xp, device, k_cache, k_write, sl, sh)
    v_out, v_log = _update(xp, device, v_cache, v_new, sl, sh)
    q_work = xp.astype(q, wd)
    if rotate is not None:
        q_work = rotate(q_work, sl.seqlens, causal or win is not None)

    # mask by slots: valid keys, and causal/window through positions aligned bottom-right
    slots = np.arange(sl.seq_cache)
    valid = (slots[None, :] >= sl.leftpad[:, None]) & (
        slots[None, :] < (sl.seqlens + sh.sn)[:, None]
    )
    q_slot = (sl.seqlens + sh.sn - sh.sq)[:, None] + np.arange(sh.sq)[None, :]
    k_slot = np.broadcast_to(slots, (sh.b, 1, sl.seq_cache)).copy()
    out = attention(
        xp.permute_dims(q_work, (0, 2, 1, 3)),
        xp.permute_dims(xp.astype(k_log, wd), (0, 2, 1, 3)),
        xp.permute_dims(xp.astype(v_log, wd), (0, 2, 1, 3)),
        q_positions=xp.asarray(q_slot[:, None, :], device=device),
        k_positions=xp.asarray(k_slot, device=device),
        window=win,
        mask=xp.asarray(valid[:, None, None, :], device=device),
        scale=scale,
        softcap=softcap,
        sinks=sinks,
        return_lse=return_lse,
    )
    lse = None
    if return_lse:
        out, lse = out
    out = xp.astype(xp.permute_dims(out, (0, 2, 1, 3)), q.dtype)
    return (out, k_out, v_out, lse) if return_lse else (out, k_out, v_out)
