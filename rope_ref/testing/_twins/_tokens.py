"""``rope-ref check`` adapters for token layouts: flash-attn's packed QKV, flashinfer's ragged
tensors, TransformerEngine's sbhd/bshd/thd (with context-parallel shards) and vLLM's strided
query/key views.

Each adapter builds the library's arguments from a battery case, exactly (transposes,
reshapes, concatenations and gathers only), calls the target as that library's callers do
and maps the result back to the case's layout. Parts of a buffer the target must not change
(flash-attn's v, the channels and heads around vLLM's strided views) are compared bit for
bit after the call; a change is reported as the case's error. The signature twins these
conventions are tested with live in :mod:`rope_ref.testing._twin_layouts` and
:mod:`._vllm`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ... import _compat
from ...scaling import Linear
from ._common import (
    Call,
    CaseInputs,
    Unfit,
    in_place_result,
    rebased_cos_sin,
    require_1d,
    require_plain,
    row_offsets,
    rows_note,
    segment_offsets,
    swap_12,
    table_window,
    tuple_of,
)
from ._vllm import IN_PLACE, VLLM_OP

__all__ = [
    "CP_SIZE",
    "flash_qkv_gqa_prepare",
    "flash_qkv_prepare",
    "flashinfer_pos_ids_prepare",
    "flashinfer_prepare",
    "te_cp_prepare",
    "te_prepare",
    "vllm_strided_prepare",
]

#: The context-parallel world size of the ``te-cp`` convention.
CP_SIZE = 2
#: Channels before each head's rotary view in ``vllm-strided`` (MLA's no-position part).
NOPE = 8


# ---------------------------------------------------------------------------- helpers
def _filler(ci: CaseInputs, shape: tuple[int, ...], salt: int) -> Any:
    """Deterministic standard-normal data of ``shape`` in the case's dtype (a made-up v, the
    channels around a strided view): the target must leave it as it is."""
    rng = np.random.default_rng([salt, *shape])
    a = ci.xp.asarray(rng.standard_normal(shape), device=ci.device)
    return ci.xp.astype(a, ci.x.dtype)


def _same(xp: Any, a: Any, b: Any) -> bool:
    return tuple(a.shape) == tuple(b.shape) and bool(xp.all(a == b))


def _array(a: Any, what: str, shape: tuple[int, ...]) -> Any:
    if not _compat.is_array(a):
        raise TypeError(f"{what} is a {type(a).__name__}, not an array")
    if tuple(a.shape) != shape:
        raise ValueError(f"{what} has shape {tuple(a.shape)}, expected {shape}")
    return a


def _returned_qkv(out: Any, shape: tuple[int, ...]) -> Any:
    """The qkv a flash-attn QKV target returned (apply_rotary_emb_qkv_ rotates qkv in place
    and returns it: None is not what it returns)."""
    if not _compat.is_array(out):
        raise TypeError(
            "the target must return qkv rotated (an array: flash-attn's apply_rotary_emb_qkv_ "
            f"rotates it in place and returns it), got {type(out).__name__}"
        )
    return _array(out, "the returned qkv", shape)


def _dense(ci: CaseInputs, a: Any) -> Any:
    """A dense case's array as (batch, seq, heads, head_dim)."""
    return swap_12(ci.xp, a) if ci.family == "bhsd" else a


def _undense(ci: CaseInputs, a: Any) -> Any:
    return swap_12(ci.xp, a) if ci.family == "bhsd" else a


def _flat_tokens(ci: CaseInputs, a: Any) -> Any:
    """Any case's array as (tokens, heads, head_dim)."""
    if ci.family == "thd":
        return a
    b = _dense(ci, a)
    return ci.xp.reshape(b, (-1, int(b.shape[2]), int(b.shape[3])))


def _unflat_tokens(ci: CaseInputs, a: Any, like: Any) -> Any:
    if ci.family == "thd":
        return a
    b, s, h, d = (int(n) for n in _dense(ci, like).shape)
    return _undense(ci, ci.xp.reshape(a, (b, s, h, d)))


def _int_array(ci: CaseInputs, values: Any, dtype: str = "int32") -> Any:
    return ci.xp.asarray(np.asarray(values, dtype=np.int64), dtype=getattr(ci.xp, dtype),
                         device=ci.device)  # fmt: skip


# ---------------------------------------------------------------------------- flash-attn QKV
def _flash_qkv_tables(ci: CaseInputs, who: str) -> tuple[Any, Any, Any, int, int]:
    """(cos, sin, seqlen_offsets, p0, p1) for flash-attn's packed QKV (dense cases only)."""
    require_1d(ci.rope, who)
    if ci.family == "thd":
        raise Unfit(f"{who} takes (batch, seqlen, ...) tensors: no cu_seqlens (packed) cases")
    off = row_offsets(ci.tok)
    if off is None:
        raise Unfit(f"{who} takes positions offset + arange(seqlen) per sequence")
    p0, p1, cos, sin = rebased_cos_sin(ci, who)
    offs = [int(o) - p0 for o in off]
    seqlen_offsets: Any = offs[0]
    if len(set(offs)) > 1:
        seqlen_offsets = _int_array(ci, offs, "int64")
    return cos, sin, seqlen_offsets, p0, p1


def flash_qkv_prepare(fn: Any, ci: CaseInputs) -> Call:
    """``fn(qkv, cos, sin, interleaved=..., seqlen_offsets=...)`` with qkv (batch, seqlen, 3,
    nheads, headdim): the case's q and k and a made-up v that must come back unchanged."""
    who = "flash-attn's apply_rotary_emb_qkv_"
    cos, sin, offsets, p0, p1 = _flash_qkv_tables(ci, who)
    xp = ci.xp
    q, k = _dense(ci, ci.x), _dense(ci, ci.k)
    v = _filler(ci, tuple(int(n) for n in q.shape), 1)
    shape = (int(q.shape[0]), int(q.shape[1]), 3, int(q.shape[2]), int(q.shape[3]))
    inter = ci.rope.layout == "interleaved"

    def run() -> Any:  # a fresh buffer per call: flash-attn rotates it in place
        qkv = xp.stack([q, k, v], axis=2)
        return fn(qkv, cos, sin, interleaved=inter, seqlen_offsets=offsets)

    def unpack(out: Any) -> dict[str, Any]:
        out = _returned_qkv(out, shape)
        if not _same(xp, out[:, :, 2, ...], v):
            raise ValueError("v (qkv[:, :, 2]) was changed: only q and k are rotated")
        return {"q": _undense(ci, out[:, :, 0, ...]), "k": _undense(ci, out[:, :, 1, ...])}

    return Call(run=run, unpack=unpack, note=rows_note(p0, p1))


def flash_qkv_gqa_prepare(fn: Any, ci: CaseInputs) -> Call:
    """``fn(qkv, cos, sin, interleaved=..., seqlen_offsets=..., num_heads_q=...)`` with qkv
    (batch, seqlen, hq + 2 * hk, headdim), hq != hk where the case has 2 heads or more.

    The case has as many key heads as query heads; q and k share the tables here, so key
    heads ``[hk:]`` travel among the query heads (after the case's queries) and heads
    ``[:hk]`` in the key block: hk = heads // 2 (at least 1), hq = 2 * heads - hk."""
    who = "flash-attn's apply_rotary_emb_qkv_"
    cos, sin, offsets, p0, p1 = _flash_qkv_tables(ci, who)
    xp = ci.xp
    q, k = _dense(ci, ci.x), _dense(ci, ci.k)
    b, s, h, d = (int(n) for n in q.shape)
    hk = max(1, h // 2)
    hq = 2 * h - hk
    v = _filler(ci, (b, s, hk, d), 2)
    inter = ci.rope.layout == "interleaved"

    def run() -> Any:
        qkv = xp.concat([q, k[:, :, hk:, :], k[:, :, :hk, :], v], axis=2)
        return fn(qkv, cos, sin, interleaved=inter, seqlen_offsets=offsets, num_heads_q=hq)

    def unpack(out: Any) -> dict[str, Any]:
        out = _returned_qkv(out, (b, s, hq + 2 * hk, d))
        if not _same(xp, out[:, :, hq + hk :, :], v):
            raise ValueError(
                f"v (qkv[:, :, {hq + hk}:], the last num_heads_k = {hk} heads) was changed: "
                "only q and k are rotated"
            )
        k_out = xp.concat([out[:, :, hq : hq + hk, :], out[:, :, h:hq, :]], axis=2)
        return {"q": _undense(ci, out[:, :, :h, :]), "k": _undense(ci, k_out)}

    note = f"{rows_note(p0, p1)}, num_heads_q={hq}, num_heads_k={hk}"
    return Call(run=run, unpack=unpack, note=note)


# ---------------------------------------------------------------------------- flashinfer
def _flashinfer_kwargs(ci: CaseInputs, who: str) -> dict[str, Any]:
    """rotary_dim, interleave, rope_scale, rope_theta: flashinfer computes its own angles,
    ``pos / rope_scale * rope_theta ** (-2j / rotary_dim)``: plain RoPE or a linear schedule."""
    require_1d(ci.rope, who)
    require_plain(ci.rope, who, allow_linear=True)
    sc = ci.rope.scaling
    return {
        "rotary_dim": ci.rope.rotary_dim,
        "interleave": ci.rope.layout == "interleaved",
        "rope_scale": float(sc.factor) if isinstance(sc, Linear) else 1.0,
        "rope_theta": float(ci.rope.base),
    }


def _ragged_call(fn: Any, ci: CaseInputs, args: tuple[Any, ...], kw: dict[str, Any],
                 note: str) -> Call:  # fmt: skip
    q, k = _flat_tokens(ci, ci.x), _flat_tokens(ci, ci.k)

    def unpack(out: Any) -> dict[str, Any]:
        qo, ko = tuple_of(out, 2, "the target", "(q_rope, k_rope)")
        qo = _array(qo, "q_rope", tuple(int(n) for n in q.shape))
        ko = _array(ko, "k_rope", tuple(int(n) for n in k.shape))
        return {"q": _unflat_tokens(ci, qo, ci.x), "k": _unflat_tokens(ci, ko, ci.k)}

    return Call(run=lambda: fn(q, k, *args, **kw), unpack=unpack, note=note)


def flashinfer_prepare(fn: Any, ci: CaseInputs) -> Call:
    """``fn(q, k, indptr, offsets, rotary_dim=..., interleave=..., rope_scale=...,
    rope_theta=...)`` on ragged (nnz, heads, head_dim) tensors: packed cases with indptr =
    cu_seqlens, dense cases flattened (indptr = seq * arange(batch + 1)); offsets is each
    request's first position, so positions must be offset + arange per request."""
    who = "flashinfer's apply_rope"
    kw = _flashinfer_kwargs(ci, who)
    if ci.family == "thd":
        segs = segment_offsets(ci)
        if segs is None:
            raise Unfit(f"{who} takes positions offsets[i] + arange(length) per request")
        indptr, offs = ci.cu_seqlens, [o for _, _, o in segs]
    else:
        off = row_offsets(ci.tok)
        if off is None:
            raise Unfit(f"{who} takes positions offsets[i] + arange(length) per request")
        b, s = ci.tok.shape
        indptr, offs = s * np.arange(b + 1), list(off)
    args = (_int_array(ci, indptr), _int_array(ci, offs))
    return _ragged_call(fn, ci, args, kw, f"{len(offs)} requests")


def flashinfer_pos_ids_prepare(fn: Any, ci: CaseInputs) -> Call:
    """``fn(q, k, pos_ids, rotary_dim=..., interleave=..., rope_scale=..., rope_theta=...)``
    on ragged (nnz, heads, head_dim) tensors, pos_ids (nnz,) int32: any positions."""
    who = "flashinfer's apply_rope_pos_ids"
    kw = _flashinfer_kwargs(ci, who)
    if int(ci.tok.min()) < 0 or int(ci.tok.max()) >= 2**31:
        raise Unfit(f"{who} takes int32 positions >= 0")
    pos = _int_array(ci, ci.tok.reshape(-1))
    return _ragged_call(fn, ci, (pos,), kw, "")


# ---------------------------------------------------------------------------- TransformerEngine
def _te_freqs(ci: CaseInputs, who: str, p0: int, p1: int) -> Any:
    """TE's ``freqs`` (p1 - p0, 1, 1, rotary_dim): the angle of each pair, twice (halves
    ``cat(f, f)``, or adjacent copies for the interleaved layout), in the work dtype.

    The angles of the case's positions are the exact ones reduced to [-pi, pi]
    (``atan2`` of rope_ref's exact sin and cos: within an ulp of the true angle modulo
    2 pi), so that a kernel taking cos and sin of them in float64 gets the golden result;
    the other rows (read only by a kernel that gathers the wrong rows) hold plain
    ``p * theta_j``."""
    require_1d(ci.rope, who)
    if type(ci.rope.scaling).__name__ == "XPos":
        raise Unfit(f"{who} takes one table for q and k (no xPos cases)")
    seq_len = int(ci.tok.max()) + 1
    dyn = ci.rope.scaling is not None and ci.rope.scaling.dynamic
    sl = seq_len if dyn else None
    if ci.rope._attention_factor(sl) != 1.0:
        raise Unfit(f"{who} takes angles: no attention factor (YaRN/LongRoPE mscale cases)")
    inv = np.asarray(ci.rope.inv_freq(seq_len=sl), dtype=np.float64)
    ang = np.arange(p0, p1, dtype=np.float64)[:, None] * inv[None, :]
    used = np.unique(ci.tok)
    c, s = ci.rope.cos_sin(used, seq_len=sl)
    ang[used - p0] = np.arctan2(np.asarray(s), np.asarray(c))
    if ci.rope.layout == "interleaved":
        full = np.repeat(ang, 2, axis=1)
    else:
        full = np.concatenate([ang, ang], axis=1)
    xp = ci.xp
    wd = _compat.work_dtype(xp, ci.device)
    f = xp.asarray(full[:, None, None, :], device=ci.device)
    return f if f.dtype == wd else xp.astype(f, wd)


def te_prepare(fn: Any, ci: CaseInputs) -> Call:
    """``fn(t, freqs, tensor_format=..., interleaved=...[, start_positions=...][,
    cu_seqlens=...])``: bshd cases as "bshd", bhsd cases as "sbhd" (transposed), packed
    cases as "thd" with cu_seqlens; start_positions (int32, one per sequence) when some
    sequence does not start at position 0 (rebased beyond the table rows)."""
    who = "TransformerEngine's apply_rotary_pos_emb"
    xp = ci.xp
    if ci.family == "thd":
        segs = segment_offsets(ci)
        if segs is None:
            raise Unfit(f"{who} takes positions start_positions[i] + arange(length)")
        offs = [o for _, _, o in segs]
    else:
        off = row_offsets(ci.tok)
        if off is None:
            raise Unfit(f"{who} takes positions start_positions[i] + arange(seqlen)")
        offs = [int(o) for o in off]
    p0, p1 = table_window(ci, who, rebase=True)
    freqs = _te_freqs(ci, who, p0, p1)
    kw: dict[str, Any] = {"interleaved": ci.rope.layout == "interleaved"}
    if any(o - p0 for o in offs):
        kw["start_positions"] = _int_array(ci, [o - p0 for o in offs])
    x = ci.x
    if ci.family == "thd":
        kw["tensor_format"] = "thd"
        kw["cu_seqlens"] = _int_array(ci, ci.cu_seqlens)
    elif ci.family == "bhsd":
        kw["tensor_format"] = "sbhd"
        x = xp.permute_dims(x, (2, 0, 1, 3))
    else:
        kw["tensor_format"] = "bshd"

    def unpack(out: Any) -> dict[str, Any]:
        out = _array(out, "the result", tuple(int(n) for n in x.shape))
        return {"q": xp.permute_dims(out, (1, 2, 0, 3)) if ci.family == "bhsd" else out}

    note = f"{kw['tensor_format']}, {rows_note(p0, p1)}"
    return Call(run=lambda: fn(x, freqs, **kw), unpack=unpack, note=note)


def _cp_shards(lengths: list[int], starts: list[int]) -> tuple[list[np.ndarray], np.ndarray]:
    """For sequences of ``lengths`` (padded to multiples of 2 * CP_SIZE) whose padded rows
    start at ``starts``: each rank's row indices (chunks r and 2 * CP_SIZE - 1 - r of every
    sequence, in sequence order) and the padded row of each real token, in order."""
    n_chunks = 2 * CP_SIZE
    ranks: list[list[np.ndarray]] = [[] for _ in range(CP_SIZE)]
    real = []
    for n, a in zip(lengths, starts, strict=True):
        padded = -(-n // n_chunks) * n_chunks
        c = padded // n_chunks
        for r in range(CP_SIZE):
            ranks[r] += [a + np.arange(r * c, (r + 1) * c),
                         a + np.arange(padded - (r + 1) * c, padded - r * c)]  # fmt: skip
        real.append(a + np.arange(n))
    return [np.concatenate(p) for p in ranks], np.concatenate(real)


def te_cp_prepare(fn: Any, ci: CaseInputs) -> Call:
    """Context parallelism: ``fn(t_r, freqs, tensor_format=..., interleaved=...,
    cp_size=2, cp_rank=r[, cu_seqlens=...])`` once per rank r, each with that rank's shard
    (chunks r and 3 - r of every sequence, sequences padded at the end to multiples of 4;
    cu_seqlens the padded global bounds), the results put back in place."""
    who = "TransformerEngine's apply_rotary_pos_emb with cp_size > 1"
    require_1d(ci.rope, who)
    xp = ci.xp
    why = (
        f"{who} takes positions 0 .. length - 1 per sequence here (no start_positions with "
        "cp_size > 1: older TransformerEngine releases refuse them)"
    )
    if ci.family == "thd":
        assert ci.cu_seqlens is not None
        segs = segment_offsets(ci)
        if segs is None or any(o for _, _, o in segs):
            raise Unfit(why)
        lengths = [b - a for a, b, _ in segs]
    else:
        off = row_offsets(ci.tok)
        if off is None or off.any():
            raise Unfit(why)
        lengths = [int(ci.tok.shape[1])]
    n_chunks = 2 * CP_SIZE
    padded = [-(-n // n_chunks) * n_chunks for n in lengths]
    if max(padded) > ci.row_limit:
        raise Unfit(f"{who} needs a table with a row per position: positions beyond --table-rows")
    freqs = _te_freqs(ci, who, 0, max(padded))
    starts = list(np.cumsum([0, *padded[:-1]]))
    shards, real = _cp_shards(lengths, [int(a) for a in starts])
    order = np.argsort(np.concatenate(shards))  # padded row -> row of the ranks' results
    back = xp.asarray(order[real], device=ci.device)
    kw: dict[str, Any] = {"interleaved": ci.rope.layout == "interleaved", "cp_size": CP_SIZE}
    if ci.family == "thd":
        axis, kw["tensor_format"] = 0, "thd"
        kw["cu_seqlens"] = _int_array(ci, np.cumsum([0, *padded]))
        t = ci.x
    elif ci.family == "bhsd":
        axis, kw["tensor_format"] = 0, "sbhd"
        t = xp.permute_dims(ci.x, (2, 0, 1, 3))
    else:
        axis, kw["tensor_format"] = 1, "bshd"
        t = ci.x
    # the padded sequences: row g of each shard is token src[g] of t, or a zero row
    n_tok = int(t.shape[axis])
    src = np.full(sum(padded), n_tok, dtype=np.int64)
    src[real] = np.arange(n_tok)
    zshape = list(t.shape)
    zshape[axis] = 1
    t0 = xp.concat([t, xp.zeros(tuple(zshape), dtype=t.dtype, device=ci.device)], axis=axis)
    parts = [xp.take(t0, xp.asarray(src[i], device=ci.device), axis=axis) for i in shards]

    def run() -> Any:
        return [fn(p, freqs, cp_rank=r, **kw) for r, p in enumerate(parts)]

    def unpack(outs: Any) -> dict[str, Any]:
        got = [
            _array(o, f"the result of cp_rank={r}", tuple(int(n) for n in p.shape))
            for r, (o, p) in enumerate(zip(outs, parts, strict=True))
        ]
        y = xp.take(xp.concat(got, axis=axis), back, axis=axis)
        return {"q": xp.permute_dims(y, (1, 2, 0, 3)) if ci.family == "bhsd" else y}

    note = f"{kw['tensor_format']}, cp_size={CP_SIZE}, padded lengths {padded}"
    return Call(run=run, unpack=unpack, note=note)


# ---------------------------------------------------------------------------- vLLM strided
def vllm_strided_prepare(fn: Any, ci: CaseInputs) -> Call:
    """``fn(positions, query, key, head_size=..., cos_sin_cache=..., is_neox_style=...)`` with
    query and key (num_tokens, heads, head_size) views into one buffer (num_tokens, 3, heads,
    NOPE + head_size): token stride 3 * heads * (NOPE + head_size), head stride NOPE +
    head_size, each view starting NOPE channels into its head (MLA's rotary part, vLLM's
    split qkv). The NOPE channels and the v block must come back unchanged."""
    who = "vLLM"
    require_1d(ci.rope, who)
    xp = ci.xp
    p0, p1, cos, sin = rebased_cos_sin(ci, who)
    cache = xp.concat([cos, sin], axis=-1)
    q, k = _flat_tokens(ci, ci.x), _flat_tokens(ci, ci.k)
    n, h, d = (int(s) for s in q.shape)
    pos = xp.asarray(ci.tok.reshape(-1) - p0, dtype=xp.int64, device=ci.device)
    around = _filler(ci, (n, 3, h, NOPE), 3)
    v = _filler(ci, (n, h, d), 4)
    blocks = xp.stack([q, k, v], axis=1)  # (n, 3, h, d)
    neox = ci.rope.layout == "half"
    box: dict[str, Any] = {}

    def run() -> Any:
        buf = xp.concat([around, blocks], axis=-1)
        box["buf"] = buf
        query, key = box["views"] = buf[:, 0, :, NOPE:], buf[:, 1, :, NOPE:]
        return fn(pos, query, key, head_size=d, cos_sin_cache=cache, is_neox_style=neox)

    def unpack(out: Any) -> dict[str, Any]:
        buf = box["buf"]
        # None: read the views the target was given (on Dask a slice is a new array that
        # item assignment updates, not the buffer)
        out = in_place_result(out, ci, box["views"], "(query, key)", VLLM_OP)
        qo, ko = tuple_of(out, 2, "the target", "(query, key)", IN_PLACE)
        qo = _array(qo, "query", (n, h, d))
        ko = _array(ko, "key", (n, h, d))
        if not _same(xp, buf[..., :NOPE], around):
            raise ValueError(
                f"the buffer's channels [0, {NOPE}) of some head (outside the query/key "
                "views) were written: the kernel ignores the head or token stride"
            )
        if not _same(xp, buf[:, 2, :, NOPE:], v):
            raise ValueError("the v block next to query/key in the buffer was written")
        return {"q": _unflat_tokens(ci, qo, ci.x), "k": _unflat_tokens(ci, ko, ci.k)}

    note = f"{rows_note(p0, p1)}, head stride {NOPE + d}, token stride {3 * h * (NOPE + d)}"
    return Call(run=run, unpack=unpack, note=note)
