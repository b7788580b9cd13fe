"""Token layouts of serving and training kernels: flash-attn's packed QKV, flashinfer's
ragged tensors, TransformerEngine's ``thd`` with context-parallel shards.

Each function takes the library's own arguments and computes with exact numerics; where a
library builds its own tables from ``rope_theta`` (flashinfer), the tables are rope_ref's
exact ones. The position helpers (``flashinfer_positions``, ``te_thd_positions``) give each
token's position, for use with :func:`rope_ref.apply_rope` directly.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from .. import _compat
from .._apply import apply_rope
from .._errors import RopeTypeError, RopeValueError
from .._rope import Rope
from .._rotate import rotate
from .._typing import Array, Layout
from .._validate import as_bool, as_int, as_real

__all__ = [
    "flash_apply_rotary_emb_qkv",
    "flashinfer_apply_rope",
    "flashinfer_apply_rope_pos_ids",
    "flashinfer_positions",
    "te_apply_rotary_pos_emb",
    "te_thd_positions",
]


def _host_ints(a: Array, name: str, ndim: int = 1) -> np.ndarray:
    if not _compat.is_array(a):
        raise RopeTypeError(f"{name} must be an integer array, got {type(a).__name__}")
    xp = _compat.array_namespace(**{name: a})
    if not _compat.is_integral(xp, a.dtype):
        raise RopeTypeError(f"{name} must have an integer dtype, got {a.dtype}")
    if a.ndim != ndim:
        raise RopeValueError(f"{name} must be {ndim}-D, got shape {tuple(a.shape)}")
    try:
        return np.asarray(a).astype(np.int64)
    except Exception as e:
        raise RopeValueError(f"{name} must be concrete (not traced): {e}") from None


def _cu_lengths(cu: np.ndarray, name: str) -> np.ndarray:
    if cu.size < 1 or cu[0] != 0 or np.any(np.diff(cu) < 0):
        raise RopeValueError(f"{name} must start at 0 and be non-decreasing, got {cu.tolist()}")
    return np.diff(cu)


def _like(positions: np.ndarray, ref: Any) -> Any:
    xp = _compat.array_namespace(ref=ref)
    return xp.asarray(positions, device=_compat.device_of(ref))


# --- flash-attn: packed QKV -------------------------------------------------------------


def flash_apply_rotary_emb_qkv(
    qkv: Array,
    cos: Array,
    sin: Array,
    cos_k: Array = None,
    sin_k: Array = None,
    interleaved: bool = False,
    inplace: bool = False,
    seqlen_offsets: Array = 0,
    num_heads_q: int | None = None,
) -> Any:
    """flash-attn's ``apply_rotary_emb_qkv_`` (packed QKV), computed exactly.

    Parameters
    ----------
    qkv : array (batch, seqlen, 3, nheads, headdim) or (batch, seqlen, hq + 2 * hk, headdim)
        Packed queries, keys and values; the second form (GQA) needs ``num_heads_q``.
    cos, sin : arrays (seqlen_ro, rotary_dim / 2)
        Tables for the queries (and the keys unless ``cos_k``/``sin_k`` are given).
    cos_k, sin_k : arrays, optional
        Separate key tables (xPos-style scaling in flash-attn).
    interleaved : bool
        GPT-J pairs when True, GPT-NeoX halves when False.
    inplace : bool
        Must be False: rope_ref never writes to its inputs (flash-attn's function always
        works in place; the returned array equals its result).
    seqlen_offsets : int or integer array (batch,)
        Position of each sequence's first token.
    num_heads_q : int, optional
        Query heads in the GQA-packed form.

    Returns
    -------
    array of qkv's shape and dtype: q and k rotated, v copied.

    Raises
    ------
    RopeTypeError, RopeValueError
        On bad shapes, tables or arguments.
    """
    from . import flash_apply_rotary_emb

    if as_bool(inplace, "inplace"):
        raise RopeValueError("inplace=True is not supported: rope_ref never writes its inputs")
    if not _compat.is_array(qkv):
        raise RopeTypeError(f"qkv must be an array, got {type(qkv).__name__}")
    if (cos_k is None) != (sin_k is None):
        raise RopeValueError("give cos_k and sin_k together, or neither")
    xp = _compat.array_namespace(qkv=qkv)
    ck, sk = (cos, sin) if cos_k is None else (cos_k, sin_k)

    def rot(t: Any, c: Any, s: Any) -> Any:
        return flash_apply_rotary_emb(t, c, s, interleaved, seqlen_offsets=seqlen_offsets)

    if qkv.ndim == 5:
        if num_heads_q is not None:
            raise RopeValueError("num_heads_q is only for the (b, s, hq + 2 * hk, d) form")
        if int(qkv.shape[2]) != 3:
            raise RopeValueError(f"qkv must have shape (b, s, 3, h, d), got {tuple(qkv.shape)}")
        q, k, v = qkv[:, :, 0, ...], qkv[:, :, 1, ...], qkv[:, :, 2, ...]
        return xp.stack([rot(q, cos, sin), rot(k, ck, sk), v], axis=2)
    if qkv.ndim != 4 or num_heads_q is None:
        raise RopeValueError(
            "qkv must be (b, s, 3, h, d), or (b, s, hq + 2 * hk, d) with num_heads_q; got "
            f"shape {tuple(qkv.shape)} and num_heads_q={num_heads_q!r}"
        )
    hq = as_int(num_heads_q, "num_heads_q", minimum=1)
    total = int(qkv.shape[2])
    if (total - hq) <= 0 or (total - hq) % 2:
        raise RopeValueError(
            f"qkv's head axis ({total}) must be num_heads_q ({hq}) + 2 * num_heads_k"
        )
    hk = (total - hq) // 2
    q, k, v = qkv[:, :, :hq, ...], qkv[:, :, hq : hq + hk, ...], qkv[:, :, hq + hk :, ...]
    return xp.concat([rot(q, cos, sin), rot(k, ck, sk), v], axis=2)


# --- flashinfer: ragged tensors -----------------------------------------------------------


def flashinfer_positions(indptr: Array, offsets: Array) -> Any:
    """Position of every token of a flashinfer ragged batch: token t of request i (with
    ``indptr[i] <= t < indptr[i + 1]``) is at ``t - indptr[i] + offsets[i]``.

    Parameters
    ----------
    indptr : integer array (batch + 1,)
        Segment starts; 0 first, non-decreasing.
    offsets : integer array (batch,)
        Position of each request's first token.

    Returns
    -------
    int64 array (nnz,) in the namespace and on the device of ``indptr``.

    Raises
    ------
    RopeTypeError, RopeValueError
        On non-integer, non-monotone or mismatched inputs.
    """
    ip = _host_ints(indptr, "indptr")
    off = _host_ints(offsets, "offsets")
    lengths = _cu_lengths(ip, "indptr")
    if off.shape != lengths.shape:
        raise RopeValueError(f"offsets must have shape ({lengths.size},), got {off.shape}")
    pos = np.concatenate([o + np.arange(n) for o, n in zip(off, lengths, strict=True)] or [[]])
    return _like(pos.astype(np.int64), indptr)


def _flashinfer_rope(head_dim: int, rotary_dim: Any, interleave: Any, scale: Any,
                     theta: Any) -> Rope:  # fmt: skip
    from ..scaling import Linear

    r = head_dim if rotary_dim is None else as_int(rotary_dim, "rotary_dim", minimum=2)
    layout: Literal["half", "interleaved"] = (
        "interleaved" if as_bool(interleave, "interleave") else "half"
    )
    s = as_real(scale, "rope_scale")
    if s <= 0:
        raise RopeValueError(f"rope_scale must be > 0, got {scale!r}")
    return Rope(head_dim, base=as_real(theta, "rope_theta"), rotary_dim=r, layout=layout,
                scaling=None if s == 1 else Linear(s))  # fmt: skip


def flashinfer_apply_rope_pos_ids(
    q: Array,
    k: Array,
    pos_ids: Array,
    rotary_dim: int | None = None,
    interleave: bool = False,
    rope_scale: float = 1,
    rope_theta: float = 1e4,
) -> tuple[Any, Any]:
    """flashinfer's ``apply_rope_pos_ids``, with exact tables.

    flashinfer computes ``cos(pos / rope_scale * rope_theta ** (-2j / rotary_dim))`` in the
    kernel; here the same angles come from a :class:`rope_ref.Rope` with a linear schedule
    of factor ``rope_scale``.

    Parameters
    ----------
    q, k : arrays (nnz, heads, head_dim)
        Ragged queries and keys (their own numbers of heads).
    pos_ids : integer array (nnz,)
        Position of each token.
    rotary_dim : int, optional
        Channels rotated (default head_dim); the rest pass through.
    interleave : bool
        GPT-J pairs when True, halves when False.
    rope_scale, rope_theta : float
        Linear position scale and base.

    Returns
    -------
    (q_rope, k_rope) : new arrays of the inputs' shapes and dtypes.

    Raises
    ------
    RopeTypeError, RopeValueError
        On bad shapes or arguments.
    """
    for name, a in (("q", q), ("k", k), ("pos_ids", pos_ids)):
        if not _compat.is_array(a):
            raise RopeTypeError(f"{name} must be an array, got {type(a).__name__}")
    if q.ndim != 3 or k.ndim != 3 or q.shape[0] != k.shape[0] or q.shape[2] != k.shape[2]:
        raise RopeValueError(
            f"q and k must be (nnz, heads, head_dim) with the same nnz and head_dim, got "
            f"{tuple(q.shape)} and {tuple(k.shape)}"
        )
    if tuple(pos_ids.shape) != (int(q.shape[0]),):
        raise RopeValueError(f"pos_ids must have shape ({q.shape[0]},), got {pos_ids.shape}")
    rope = _flashinfer_rope(int(q.shape[2]), rotary_dim, interleave, rope_scale, rope_theta)
    xp = _compat.array_namespace(pos_ids=pos_ids)
    pos = xp.reshape(pos_ids, (-1, 1))
    return apply_rope(q, pos, rope), apply_rope(k, pos, rope)


def flashinfer_apply_rope(
    q: Array,
    k: Array,
    indptr: Array,
    offsets: Array,
    rotary_dim: int | None = None,
    interleave: bool = False,
    rope_scale: float = 1,
    rope_theta: float = 1e4,
) -> tuple[Any, Any]:
    """flashinfer's ``apply_rope`` on a ragged batch (``indptr``, ``offsets``), exact.

    Parameters
    ----------
    q, k : arrays (nnz, heads, head_dim)
        Ragged queries and keys; request i owns rows ``indptr[i]:indptr[i + 1]``.
    indptr : integer array (batch + 1,)
        Segment starts.
    offsets : integer array (batch,)
        Position of each request's first token.
    rotary_dim, interleave, rope_scale, rope_theta
        As in :func:`flashinfer_apply_rope_pos_ids`.

    Returns
    -------
    (q_rope, k_rope) : new arrays of the inputs' shapes and dtypes.

    Raises
    ------
    RopeTypeError, RopeValueError
        On bad shapes, ``indptr`` not ending at nnz, or bad arguments.
    """
    pos = flashinfer_positions(indptr, offsets)
    if _compat.is_array(q) and int(pos.shape[0]) != int(q.shape[0]):
        raise RopeValueError(
            f"indptr[-1] ({pos.shape[0]}) must equal nnz = q.shape[0] ({q.shape[0]})"
        )
    return flashinfer_apply_rope_pos_ids(q, k, pos, rotary_dim, interleave, rope_scale, rope_theta)


# --- TransformerEngine: sbhd / bshd / thd with context parallelism ------------------------


def te_thd_positions(
    cu_seqlens: Array, *, cp_size: int = 1, cp_rank: int = 0, start_positions: Array = None
) -> Any:
    """Position of every token a context-parallel rank holds in TransformerEngine's ``thd``.

    ``cu_seqlens`` are the global (padded) cumulative lengths. Each sequence of length L is
    cut into ``2 * cp_size`` chunks of ``L / (2 * cp_size)`` tokens; rank r holds chunks r and
    ``2 * cp_size - 1 - r`` (the load-balanced causal split), so its tokens of that sequence
    sit at positions ``[r c, (r + 1) c)`` and ``[L - (r + 1) c, L - r c)`` with
    ``c = L / (2 cp_size)``. ``start_positions`` (only with ``cp_size == 1``, as in TE) shift
    each sequence.

    Parameters
    ----------
    cu_seqlens : integer array (batch + 1,)
        Global cumulative sequence lengths (each length divisible by ``2 * cp_size`` when
        ``cp_size > 1``).
    cp_size, cp_rank : int
        Context-parallel world size and this rank.
    start_positions : integer array (batch,), optional
        Offset of each sequence's first token.

    Returns
    -------
    int64 array (total / cp_size,) in the namespace and on the device of ``cu_seqlens``.

    Raises
    ------
    RopeTypeError, RopeValueError
        On bad sizes, ranks or lengths.
    """
    size = as_int(cp_size, "cp_size", minimum=1)
    rank = as_int(cp_rank, "cp_rank", minimum=0)
    if rank >= size:
        raise RopeValueError(f"cp_rank must be < cp_size ({size}), got {rank}")
    lengths = _cu_lengths(_host_ints(cu_seqlens, "cu_seqlens"), "cu_seqlens")
    starts = np.zeros(lengths.size, dtype=np.int64)
    if start_positions is not None:
        if size > 1:
            raise RopeValueError("start_positions needs cp_size == 1 (as in TransformerEngine)")
        starts = _host_ints(start_positions, "start_positions")
        if starts.shape != lengths.shape:
            raise RopeValueError(
                f"start_positions must have shape ({lengths.size},), got {starts.shape}"
            )
    parts = []
    for n, s0 in zip(lengths, starts, strict=True):
        if size == 1:
            parts.append(s0 + np.arange(n))
            continue
        if n % (2 * size):
            raise RopeValueError(
                f"with cp_size={size} every sequence length must be a multiple of "
                f"2 * cp_size = {2 * size} (TransformerEngine pads them), got {n}"
            )
        c = n // (2 * size)
        parts.append(np.concatenate([np.arange(rank * c, (rank + 1) * c),
                                     np.arange(n - (rank + 1) * c, n - rank * c)]))  # fmt: skip
    pos = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return _like(pos.astype(np.int64), cu_seqlens)


def te_apply_rotary_pos_emb(
    t: Any,
    freqs: Array,
    tensor_format: str = "sbhd",
    start_positions: Array = None,
    interleaved: bool = False,
    fused: bool = False,
    cu_seqlens: Array = None,
    cp_size: int = 1,
    cp_rank: int = 0,
) -> Any:
    """TransformerEngine's ``apply_rotary_pos_emb``: sbhd, bshd and thd (with ``cu_seqlens``
    and context-parallel shards).

    TE takes *angles* (``freqs`` of shape (s2, 1, 1, d2), d2 = rotary_dim, each pair's angle
    repeated: halves ``cat(f, f)``, or adjacent when interleaved), so the cosines here are
    float64 ``cos``/``sin`` of the angles given, widened exactly: as exact as the angles.
    For exact angles at any position, use :func:`te_thd_positions` with
    :func:`rope_ref.apply_rope`.

    Parameters
    ----------
    t : array (s, b, h, d), (b, s, h, d) or (total, h, d)
        Input, by ``tensor_format``.
    freqs : array (s2, 1, 1, d2)
        Angles; row p is used at position p.
    tensor_format : {"sbhd", "bshd", "thd"}
        Layout of ``t``.
    start_positions : integer array (b,), optional
        Per-sequence position offset (``cp_size == 1`` only).
    interleaved : bool
        Adjacent pairs when True, halves when False.
    fused : bool
        Accepted; the fused and unfused paths compute the same function.
    cu_seqlens : integer array (b + 1,), optional
        Required for ``thd``: global (padded) cumulative lengths.
    cp_size, cp_rank : int
        Context parallelism (``thd`` and sbhd/bshd shards).

    Returns
    -------
    array of t's shape and dtype, computed in float64 and rounded once.

    Raises
    ------
    RopeTypeError, RopeValueError
        On bad shapes, formats, positions beyond ``freqs`` or inconsistent arguments.
    """
    as_bool(fused, "fused")
    inter = as_bool(interleaved, "interleaved")
    if tensor_format not in ("sbhd", "bshd", "thd"):
        raise RopeValueError(
            f"tensor_format must be 'sbhd', 'bshd' or 'thd', got {tensor_format!r}"
        )
    for name, a in (("t", t), ("freqs", freqs)):
        if not _compat.is_array(a):
            raise RopeTypeError(f"{name} must be an array, got {type(a).__name__}")
    xp = _compat.array_namespace(t=t, freqs=freqs)
    if freqs.ndim != 4 or tuple(freqs.shape[1:3]) != (1, 1):
        raise RopeValueError(f"freqs must have shape (s2, 1, 1, d2), got {tuple(freqs.shape)}")
    s2, d2 = int(freqs.shape[0]), int(freqs.shape[3])
    if t.ndim != (3 if tensor_format == "thd" else 4):
        raise RopeValueError(f"t must be {tensor_format} ({len(tensor_format)}-D), got {t.shape}")
    d = int(t.shape[-1])
    if d2 < 2 or d2 % 2 or d2 > d:
        raise RopeValueError(f"freqs' last dimension d2 = {d2} must be even and <= d = {d}")
    tok = _te_token_positions(t, tensor_format, start_positions, cu_seqlens, cp_size, cp_rank)
    if tok.size and (tok.min() < 0 or tok.max() >= s2):
        raise RopeValueError(f"positions reach {int(tok.max())}, beyond the {s2} rows of freqs")
    # the per-pair angle of each position: the first of its two copies
    f = xp.reshape(freqs, (s2, d2))
    f = f[:, ::2] if inter else f[:, : d2 // 2]
    wd = _compat.work_dtype(xp, _compat.device_of(t))
    f = xp.astype(f, wd)
    idx = xp.asarray(tok.reshape(-1), device=_compat.device_of(t))
    ang = xp.reshape(xp.take(f, idx, axis=0), (*tok.shape, d2 // 2))
    layout: Layout = "interleaved" if inter else "half"
    return rotate(xp, t, xp.cos(ang), xp.sin(ang), rotary_dim=d2, layout=layout, wd=wd)


def _te_token_positions(
    t: Array,
    tensor_format: str,
    start_positions: Array,
    cu_seqlens: Array,
    cp_size: Any,
    cp_rank: Any,
) -> np.ndarray:
    """Each token's position in TE's layouts, shaped to broadcast against t.shape[:-1]."""
    size = as_int(cp_size, "cp_size", minimum=1)
    rank = as_int(cp_rank, "cp_rank", minimum=0)
    if tensor_format == "thd":
        if cu_seqlens is None:
            raise RopeValueError("cu_seqlens is required when tensor_format is 'thd'")
        thd = te_thd_positions(
            cu_seqlens, cp_size=size, cp_rank=rank, start_positions=start_positions
        )
        pos = _host_ints(thd, "positions")
        if pos.size != int(t.shape[0]):
            raise RopeValueError(
                f"t has {t.shape[0]} tokens; cu_seqlens / cp_size gives {pos.size}"
            )
        return pos[:, None]  # (total, 1) against (total, h)
    if cu_seqlens is not None:
        raise RopeValueError("cu_seqlens is only for tensor_format 'thd'")
    seq_axis = 0 if tensor_format == "sbhd" else 1
    s, b = int(t.shape[seq_axis]), int(t.shape[1 - seq_axis])
    seq = np.arange(s)
    if size > 1:  # this rank's shard of a sequence of length s * cp_size
        if start_positions is not None:
            raise RopeValueError("start_positions needs cp_size == 1")
        if rank >= size or s % 2:
            raise RopeValueError(f"cp_rank < cp_size and an even local length needed, got {s}")
        c, full = s // 2, s * size
        seq = np.concatenate([np.arange(rank * c, (rank + 1) * c),
                              np.arange(full - (rank + 1) * c, full - rank * c)])  # fmt: skip
    starts = np.zeros(b, dtype=np.int64)
    if start_positions is not None:
        starts = _host_ints(start_positions, "start_positions")
        if starts.shape != (b,):
            raise RopeValueError(f"start_positions must have shape ({b},), got {starts.shape}")
    grid = starts[:, None] + seq[None, :]  # (b, s)
    return (grid.T if tensor_format == "sbhd" else grid)[..., None]  # against (., ., h)
