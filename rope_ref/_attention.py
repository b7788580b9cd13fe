"""Golden softmax attention with RoPE: one-shot and chunked (online softmax) paths.

Heads come before the sequence, as in PyTorch's ``scaled_dot_product_attention``:
q is (..., Hq, Sq, D), k is (..., Hk, Sk, D), v is (..., Hk, Sk, Dv), and Hq is a multiple
of Hk. Grouped-query attention works by viewing q as (..., Hk, Hq/Hk, Sq, D) against k and v
of shape (..., Hk, 1, Sk, D): query head h uses key/value head h // (Hq/Hk) (Hugging Face's
``repeat_kv`` order), and nothing is copied.

Everything is computed in the widest float dtype of the namespace (float64 here) and the output
is rounded once to q.dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from . import _compat, _validate
from ._apply import apply_rope
from ._errors import RopeTypeError, RopeValueError
from ._rope import Rope

__all__ = ["DEFAULT_MEMORY_BUDGET", "attention", "packed_positions"]

#: Bytes the one-shot path may spend on its (..., Hq, Sq, Sk) score-sized temporaries before
#: ``attention`` switches to the chunked path (override per call with ``memory_budget``).
DEFAULT_MEMORY_BUDGET = 256 * 2**20
_TEMPS = 4  # score-sized float64 temporaries alive at once (scores, keep mask, p, a spare)
_AUTO_BLOCK = 256  # widest automatic block


def _is_array(x: Any) -> bool:
    return _compat.is_array(x)


def _prod(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _check_window(window: Any) -> tuple[float | None, float | None] | None:
    if window is None:
        return None
    if not isinstance(window, (tuple, list)) or len(window) != 2:
        raise RopeTypeError(f"window must be a pair (left, right), got {window!r}")
    out: list[float | None] = []
    for side, w in zip(("left", "right"), window, strict=True):
        if w is None or (isinstance(w, (int, float)) and not isinstance(w, bool) and w == math.inf):
            out.append(None)
            continue
        if isinstance(w, bool) or not isinstance(w, (int, float)):
            raise RopeTypeError(f"window {side} must be a number or None, got {w!r}")
        if not w >= 0:
            raise RopeValueError(
                f"window {side} must be >= 0 (None for unbounded), got {w!r}; flash-attn's -1 "
                "for 'unbounded' is None here"
            )
        out.append(float(w))
    return (out[0], out[1])


class _MaskView:
    """A user mask kept in its own (broadcastable) shape; blocks are cut and grouped lazily,
    so a (Sq, Sk) mask is never expanded over batch and heads."""

    def __init__(self, xp: Any, mask: Any, target: tuple[int, ...], hk: int, g: int) -> None:
        pad = len(target) - mask.ndim
        self.xp = xp
        self.mask = xp.reshape(mask, (1,) * pad + tuple(mask.shape)) if pad else mask
        self.hk, self.g = hk, g

    def block(self, qsl: slice, ksl: slice) -> Any:
        m = self.mask
        qs = qsl if m.shape[-2] != 1 else slice(None)
        ks = ksl if m.shape[-1] != 1 else slice(None)
        blk = m[..., qs, ks]
        if blk.shape[-3] == 1:  # one mask for every head: (..., 1, 1, n, m)
            return self.xp.expand_dims(blk, axis=-3)
        return self.xp.reshape(blk, (*blk.shape[:-3], self.hk, self.g, *blk.shape[-2:]))


@dataclass
class _Spec:
    """Validated inputs, in the working dtype and grouped for GQA."""

    xp: Any
    wd: Any
    device: Any
    batch: tuple[int, ...]
    hq: int
    hk: int
    g: int
    sq: int
    sk: int
    d: int
    dv: int
    qg: Any  # (..., Hk, G, Sq, D), rotated
    kg: Any  # (..., Hk, 1, Sk, D), rotated
    vg: Any  # (..., Hk, 1, Sk, Dv)
    qp: Any  # query positions (..., Hk, G, Sq) or None
    kp: Any  # key positions (..., Hk, 1, Sk) or None
    qs: Any  # query segment ids (..., 1, 1, Sq) or None
    ks: Any
    keep_mask: Any
    add_mask: Any
    sink: Any
    scale: float
    softcap: float | None
    causal: bool
    window: tuple[float | None, float | None] | None
    out_dtype: Any


def _prepare(
    q: Any,
    k: Any,
    v: Any,
    rope: Rope | None,
    q_positions: Any,
    k_positions: Any,
    causal: bool,
    mask: Any,
    scale: Any,
    window: Any,
    softcap: Any,
    segment_ids: Any,
    sinks: Any,
    seq_len: int | None,
) -> _Spec:
    for name, arr in (("q", q), ("k", k), ("v", v)):
        if not _is_array(arr):
            raise RopeTypeError(f"{name} must be an array, got {type(arr).__name__}")
    xp = _compat.array_namespace(
        q=q, k=k, v=v, q_positions=q_positions, k_positions=k_positions, mask=mask, sinks=sinks
    )
    device = _compat.check_same_device(
        q=q, k=k, v=v, q_positions=q_positions, k_positions=k_positions, mask=mask, sinks=sinks
    )
    for name, arr in (("q", q), ("k", k), ("v", v)):
        if not _compat.is_real_floating(xp, arr.dtype):
            raise RopeTypeError(f"{name} must have a real floating dtype, got {arr.dtype}")
        if arr.ndim < 3:
            raise RopeValueError(
                f"{name} must be (..., heads, seq, dim), got shape {tuple(arr.shape)}"
            )
    batch = tuple(q.shape[:-3])
    hq, sq, d = (int(s) for s in q.shape[-3:])
    hk, sk, dk = (int(s) for s in k.shape[-3:])
    if tuple(k.shape[:-3]) != batch or tuple(v.shape[:-3]) != batch:
        raise RopeValueError(
            f"q, k and v must share their leading (batch) axes: q {tuple(q.shape)}, "
            f"k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if dk != d:
        raise RopeValueError(f"q and k must have the same last axis (head_dim): {d} vs {dk}")
    if tuple(v.shape[-3:-1]) != (hk, sk):
        raise RopeValueError(
            f"v must have k's heads and length (..., {hk}, {sk}, Dv), got {tuple(v.shape)}"
        )
    if hk == 0 or hq % hk:
        raise RopeValueError(
            f"the number of query heads ({hq}) must be a multiple of the key/value heads ({hk})"
        )
    if not isinstance(causal, bool):
        raise RopeTypeError(f"causal must be a bool, got {causal!r}")
    if rope is not None and not isinstance(rope, Rope):
        raise RopeTypeError(f"rope must be None or a rope_ref.Rope, got {type(rope).__name__}")
    if rope is not None and rope.head_dim != d:
        raise RopeValueError(f"rope.head_dim={rope.head_dim} but q and k have head_dim {d}")
    if scale is None:
        scale = d**-0.5
    elif isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise RopeTypeError(f"scale must be a finite real number, got {scale!r}")
    if softcap is not None:
        if isinstance(softcap, bool) or not isinstance(softcap, (int, float)):
            raise RopeTypeError(f"softcap must be a real number or None, got {softcap!r}")
        if not (softcap > 0 and math.isfinite(softcap)):
            raise RopeValueError(f"softcap must be finite and > 0, got {softcap!r}")
    win = _check_window(window)

    wd = _compat.work_dtype(xp, device)
    g = hq // hk
    multi_axis = (
        rope is not None and rope.scaling is not None and (rope.scaling.axis_position is not None)
    )

    # positions: default keys 0..Sk-1, queries Sk-Sq..Sk-1 (bottom-right, the decode case)
    def positions(arr: Any, name: str, target: tuple[int, ...], default_start: int, n: int) -> Any:
        if arr is None:
            return xp.arange(default_start, default_start + n, device=device)
        arr = _validate.to_positions(arr, xp, device, name=name)
        _validate.check_positions(xp, arr, name=name)
        shape = tuple(arr.shape)
        tokens = rope.token_shape(shape, name=name) if (multi_axis and rope) else shape
        _validate.broadcast_positions(tokens, target, name=name, target_name=f"{target}")
        return arr

    needs_pos_mask = causal or win is not None
    if multi_axis:
        if q_positions is None or k_positions is None:
            raise RopeValueError(
                "multi-axis RoPE needs explicit q_positions and k_positions (one position per "
                "axis for every token)"
            )
        if needs_pos_mask:
            raise RopeValueError(
                "causal and window masks compare 1-D positions; with multi-axis RoPE pass a "
                "boolean mask= instead"
            )
    q_pos = positions(q_positions, "q_positions", (*batch, hq, sq), sk - sq, sq)
    k_pos = positions(k_positions, "k_positions", (*batch, hk, sk), 0, sk)

    # rotation first, in the working dtype (q and k rounded to nothing until the output)
    qw, kw_, vw = xp.astype(q, wd), xp.astype(k, wd), xp.astype(v, wd)
    if rope is not None:
        qw = apply_rope(qw, q_pos, rope, seq_len=seq_len, role="query")
        kw_ = apply_rope(kw_, k_pos, rope, seq_len=seq_len, role="key")

    # grouped views: q (..., Hk, G, Sq, D); k, v (..., Hk, 1, Sk, *)
    qg = xp.reshape(qw, (*batch, hk, g, sq, d))
    kg = xp.expand_dims(kw_, axis=-3)
    vg = xp.expand_dims(vw, axis=-3)

    def grouped_pos(p: Any, heads: int, n: int, is_q: bool) -> Any:
        p = xp.astype(p, wd)
        full = xp.broadcast_to(p, (*batch, heads, n))
        if is_q:
            return xp.reshape(full, (*batch, hk, g, n))
        return xp.expand_dims(full, axis=-2)

    qp = grouped_pos(q_pos, hq, sq, True) if needs_pos_mask else None
    kp = grouped_pos(k_pos, hk, sk, False) if needs_pos_mask else None

    # segment ids (packed sequences)
    qs = ks = None
    if segment_ids is not None:
        if not isinstance(segment_ids, (tuple, list)) or len(segment_ids) != 2:
            raise RopeTypeError("segment_ids must be a pair (q_segment_ids, k_segment_ids)")
        q_seg, k_seg = segment_ids
        for name, arr, n in (("segment_ids[0]", q_seg, sq), ("segment_ids[1]", k_seg, sk)):
            if not _is_array(arr):
                raise RopeTypeError(f"{name} must be an array, got {type(arr).__name__}")
            if tuple(arr.shape) not in ((*batch, n), (n,)):
                raise RopeValueError(
                    f"{name} must have shape {(*batch, n)} (batch axes, then the sequence), "
                    f"got {tuple(arr.shape)}"
                )
        _compat.array_namespace(q=q, segment_ids=q_seg)
        _compat.array_namespace(q=q, segment_ids=k_seg)
        qs = xp.reshape(xp.broadcast_to(q_seg, (*batch, sq)), (*batch, 1, 1, sq))
        ks = xp.reshape(xp.broadcast_to(k_seg, (*batch, sk)), (*batch, 1, 1, sk))

    # mask: boolean keep-mask or additive float, broadcast to (..., Hq, Sq, Sk)
    keep_mask = add_mask = None
    if mask is not None:
        if not _is_array(mask):
            raise RopeTypeError(f"mask must be an array, got {type(mask).__name__}")
        target = (*batch, hq, sq, sk)
        _validate.broadcast_positions(
            tuple(mask.shape), target, name="mask", target_name="(..., Hq, Sq, Sk)"
        )
        if _compat.is_bool(xp, mask.dtype):
            keep_mask = _MaskView(xp, mask, target, hk, g)
        elif _compat.is_real_floating(xp, mask.dtype):
            add_mask = _MaskView(xp, xp.astype(mask, wd), target, hk, g)
        else:
            raise RopeTypeError(
                f"mask must be boolean (True = keep) or real float, got {mask.dtype}"
            )

    sink = None
    if sinks is not None:
        if not _is_array(sinks):
            raise RopeTypeError(f"sinks must be an array, got {type(sinks).__name__}")
        _validate.broadcast_positions(
            tuple(sinks.shape),
            (*batch, hq),
            name="sinks",
            target_name=f"(..., Hq) = {(*batch, hq)}",
        )
        sink = xp.reshape(xp.broadcast_to(xp.astype(sinks, wd), (*batch, hq)), (*batch, hk, g, 1))

    return _Spec(
        xp=xp,
        wd=wd,
        device=device,
        batch=batch,
        hq=hq,
        hk=hk,
        g=g,
        sq=sq,
        sk=sk,
        d=d,
        dv=int(v.shape[-1]),
        qg=qg,
        kg=kg,
        vg=vg,
        qp=qp,
        kp=kp,
        qs=qs,
        ks=ks,
        keep_mask=keep_mask,
        add_mask=add_mask,
        sink=sink,
        scale=float(scale),
        softcap=None if softcap is None else float(softcap),
        causal=causal,
        window=win,
        out_dtype=q.dtype,
    )


def _keep(sp: _Spec, qsl: slice, ksl: slice, positional: bool = True) -> Any:
    """Boolean keep-mask for a block of queries x keys (None when everything is kept)."""
    xp = sp.xp
    keep = None

    def both(a: Any) -> None:
        nonlocal keep
        keep = a if keep is None else xp.logical_and(keep, a)

    if positional and (sp.causal or sp.window is not None):
        qp = sp.qp[..., qsl][..., :, None]
        kp = sp.kp[..., ksl][..., None, :]
        if sp.causal:
            both(kp <= qp)
        if sp.window is not None:
            left, right = sp.window
            if left is not None:
                both(kp >= qp - left)
            if right is not None:
                both(kp <= qp + right)
    if sp.qs is not None:
        both(sp.qs[..., qsl][..., :, None] == sp.ks[..., ksl][..., None, :])
    if sp.keep_mask is not None:
        both(sp.keep_mask.block(qsl, ksl))
    return keep


def _scores(sp: _Spec, qsl: slice, ksl: slice, positional: bool = True) -> tuple[Any, Any]:
    """Masked scores of a block (-inf where dropped) and the keep mask (or None).

    ``positional=False`` leaves out the causal/window test (a block known to be inside it).
    """
    xp = sp.xp
    s = xp.matmul(sp.qg[..., qsl, :], xp.matrix_transpose(sp.kg[..., ksl, :]))
    s *= sp.scale  # a temporary of ours: in place where the library allows it
    if sp.softcap is not None:
        s = xp.tanh(s / sp.softcap) * sp.softcap
    if sp.add_mask is not None:
        s = s + sp.add_mask.block(qsl, ksl)
    keep = _keep(sp, qsl, ksl, positional)
    if keep is not None:
        s = xp.where(keep, s, -xp.inf)
    return s, keep


def _safe_log(xp: Any, x: Any) -> Any:
    pos = x > 0
    return xp.where(pos, xp.log(xp.where(pos, x, xp.ones_like(x))), -xp.inf)


def _finite_or_zero(xp: Any, m: Any) -> Any:
    return xp.where(xp.isfinite(m), m, xp.zeros_like(m))


def _one_shot(sp: _Spec) -> tuple[Any, Any]:
    xp = sp.xp
    s, _ = _scores(sp, slice(None), slice(None))
    m = xp.max(s, axis=-1)
    if sp.sink is not None:
        m = xp.maximum(m, sp.sink)
    m0 = _finite_or_zero(xp, m)
    p = xp.exp(s - m0[..., None])  # exp(-inf) = 0 for dropped keys
    denom = xp.sum(p, axis=-1)
    if sp.sink is not None:
        denom = denom + xp.exp(sp.sink - m0)
    num = xp.matmul(p, sp.vg)
    return _normalise(sp, num, denom, m0)


def _normalise(sp: _Spec, num: Any, denom: Any, m0: Any) -> tuple[Any, Any]:
    xp = sp.xp
    pos = denom > 0
    safe = xp.where(pos, denom, xp.ones_like(denom))
    out = xp.where(pos[..., None], num / safe[..., None], xp.zeros_like(num))
    lse = m0 + _safe_log(xp, denom)
    return out, lse


def _blocks(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _chunked(sp: _Spec, chunk: int) -> tuple[Any, Any]:
    """Queries and keys in blocks, online softmax (running max, rescaled sums)."""
    xp = sp.xp
    skip = _block_skipper(sp)
    outs, lses = [], []
    for qsl in _blocks(sp.sq, chunk):
        nq = qsl.stop - qsl.start
        shape = (*sp.batch, sp.hk, sp.g, nq)
        m = xp.full(shape, -xp.inf, dtype=sp.wd, device=sp.device)
        denom = xp.zeros(shape, dtype=sp.wd, device=sp.device)
        acc = xp.zeros((*shape, sp.dv), dtype=sp.wd, device=sp.device)
        for ksl in _blocks(sp.sk, chunk):
            state = "partial" if skip is None else skip(qsl, ksl)
            if state == "skip":
                continue
            s, _ = _scores(sp, qsl, ksl, positional=state != "full")
            m_new = xp.maximum(m, xp.max(s, axis=-1))
            m0 = _finite_or_zero(xp, m_new)
            alpha = xp.exp(m - m0)  # 0 while m is -inf (nothing accumulated yet)
            s -= m0[..., None]  # our temporary: in place where the library allows it
            p = xp.exp(s)
            denom = denom * alpha + xp.sum(p, axis=-1)
            acc = acc * alpha[..., None] + xp.matmul(p, sp.vg[..., ksl, :])
            m = m_new
        if sp.sink is not None:
            m_new = xp.maximum(m, sp.sink)
            m0 = _finite_or_zero(xp, m_new)
            alpha = xp.exp(m - m0)
            denom = denom * alpha + xp.exp(sp.sink - m0)
            acc = acc * alpha[..., None]
            m = m_new
        out, lse = _normalise(sp, acc, denom, _finite_or_zero(xp, m))
        outs.append(out)
        lses.append(lse)
    return xp.concat(outs, axis=-2), xp.concat(lses, axis=-1)


def _block_skipper(sp: _Spec) -> Any:
    """For causal/window masks on concrete positions, a test for blocks with no key kept.

    Only reads values when that is cheap and allowed (not under jax.jit, not on Dask); the
    result never changes the answer, only the work done (blocks wholly outside the mask are
    skipped, blocks wholly inside it need no mask).
    """
    if not (sp.causal or sp.window is not None) or sp.qp is None:
        return None
    if not (_compat.is_concrete(sp.qp) and _compat.is_concrete(sp.kp)):
        return None
    xp = sp.xp

    def bounds(p: Any, sl: slice) -> tuple[float, float]:
        blk = p[..., sl]
        return float(xp.min(blk)), float(xp.max(blk))

    def skip(qsl: slice, ksl: slice) -> str:
        """ "skip" (no pair kept), "full" (every pair inside causal/window) or "partial"."""
        qlo, qhi = bounds(sp.qp, qsl)
        klo, khi = bounds(sp.kp, ksl)
        full = True
        if sp.causal:
            if klo > qhi:
                return "skip"
            full = khi <= qlo
        if sp.window is not None:
            left, right = sp.window
            if left is not None:
                if khi < qlo - left:
                    return "skip"
                full = full and klo >= qhi - left
            if right is not None:
                if klo > qhi + right:
                    return "skip"
                full = full and khi <= qlo + right
        return "full" if full else "partial"

    return skip


def attention(
    q: Any,
    k: Any,
    v: Any,
    /,
    *,
    rope: Rope | None = None,
    q_positions: Any = None,
    k_positions: Any = None,
    causal: bool = False,
    mask: Any = None,
    scale: float | None = None,
    window: tuple[int | None, int | None] | None = None,
    softcap: float | None = None,
    segment_ids: tuple[Any, Any] | None = None,
    sinks: Any = None,
    return_lse: bool = False,
    chunk_size: int | None = None,
    memory_budget: int | None = None,
    seq_len: int | None = None,
) -> Any:
    r"""Softmax attention with RoPE, the reference for attention kernels.

    .. math:: o_m = \sum_n \mathrm{softmax}_n(s_{mn})\, v_n, \qquad
              s_{mn} = \mathrm{scale} \cdot (R_m q_m)^\top (R_n k_n)

    (RoFormer eq. 2 with eq. 14), then optionally ``softcap * tanh(s / softcap)``.

    Parameters
    ----------
    q, k, v : arrays (..., Hq, Sq, D), (..., Hk, Sk, D), (..., Hk, Sk, Dv)
        Hq a multiple of Hk (grouped-query / multi-query attention, by grouping).
    rope : Rope, optional
        When given, q and k are rotated at their positions first (keys with ``role="key"``).
    q_positions, k_positions : arrays, optional
        Broadcastable to (..., Hq, Sq) and (..., Hk, Sk). Defaults: keys 0 .. Sk - 1 and
        queries Sk - Sq .. Sk - 1, i.e. the last Sq positions (bottom-right alignment, the
        decode case, as in flash-attn). PyTorch's ``is_causal`` aligns top-left instead
        (query i sees keys 0..i); with Sq == Sk both agree.
    causal : bool
        Keep key position <= query position (by position, not index).
    mask : array, optional
        Boolean keep-mask (True = keep) or additive float mask, broadcastable to
        (..., Hq, Sq, Sk).
    window : (left, right), optional
        Keep q_pos - left <= k_pos <= q_pos + right; None on a side means unbounded.
    softcap : float, optional
        s -> softcap * tanh(s / softcap), after the scale (flash-attn, Gemma 2).
    segment_ids : (q_segment_ids, k_segment_ids), optional
        Shapes (..., Sq) and (..., Sk): packed sequences attend only within their segment
        (see :func:`packed_positions` to build them from cu_seqlens).
    sinks : array, optional
        Per-head sink logits, broadcastable to (..., Hq): each adds exp(sink) to its head's
        softmax normalizer without a value (gpt-oss, StreamingLLM-style sinks).
    scale : float, optional
        Defaults to D ** -0.5.
    return_lse : bool
        Also return the log-sum-exp of each row, shape (..., Hq, Sq), natural log, in the
        working dtype (float64); sinks count in it. A row with nothing kept has lse -inf.
    chunk_size : int, optional
        Process queries and keys in blocks of this size with an online softmax (bounded
        memory; equal to the one-shot result to a few float64 ulps). Without it the chunked
        path is taken when the one-shot score temporaries (4 x 8 bytes x batch x Hq x Sq x Sk)
        would exceed ``memory_budget`` bytes (default ``DEFAULT_MEMORY_BUDGET`` = 256 MiB),
        with square blocks of at most 256 that fit the budget.
    seq_len : int, optional
        For dynamic RoPE schedules.

    Returns
    -------
    out : array (..., Hq, Sq, Dv) of q.dtype; with ``return_lse``, ``(out, lse)``.
    Rows with no key kept give output 0 and lse -inf (never NaN).

    Examples
    --------
    >>> import numpy as np, rope_ref as rr
    >>> rng = np.random.default_rng(0)
    >>> q = rng.standard_normal((1, 4, 3, 8))                  # (batch, Hq, Sq, D)
    >>> k, v = rng.standard_normal((2, 1, 2, 5, 8))            # (batch, Hk=2, Sk, D): GQA
    >>> out, lse = rr.attention(q, k, v, rope=rr.Rope(8), causal=True, return_lse=True)
    >>> out.shape, lse.shape                                   # queries sit at positions 2, 3, 4
    ((1, 4, 3, 8), (1, 4, 3))
    >>> chunked = rr.attention(q, k, v, rope=rr.Rope(8), causal=True, chunk_size=2)
    >>> bool(np.max(np.abs(chunked - out)) < 1e-15)            # the online softmax agrees
    True
    """
    sp = _prepare(
        q,
        k,
        v,
        rope,
        q_positions,
        k_positions,
        causal,
        mask,
        scale,
        window,
        softcap,
        segment_ids,
        sinks,
        seq_len,
    )
    xp = sp.xp
    if chunk_size is not None:
        chunk = _validate.check_int("chunk_size", chunk_size, minimum=1)
    else:
        budget = (
            DEFAULT_MEMORY_BUDGET
            if memory_budget is None
            else _validate.check_int("memory_budget", memory_budget, minimum=1)
        )
        rows = _prod(sp.batch) * sp.hq
        need = _TEMPS * 8 * rows * sp.sq * sp.sk
        if need <= budget:
            chunk = 0
        else:
            # blocks that fit the budget, at most _AUTO_BLOCK wide: score blocks of a few MiB
            # stay in cache and let causal/window masks skip more (measured 2x faster on
            # (1, 8, 4096, 128) than 1024-wide blocks; 256 and 512 are close)
            side = math.isqrt(max(1, budget // (_TEMPS * 8 * rows)))
            chunk = max(16, min(_AUTO_BLOCK, side))
    if sp.sk == 0:  # no keys at all: every row is empty (sinks alone set the lse)
        shape = (*sp.batch, sp.hk, sp.g, sp.sq)
        out = xp.zeros((*shape, sp.dv), dtype=sp.wd, device=sp.device)
        lse = xp.full(shape, -xp.inf, dtype=sp.wd, device=sp.device)
        if sp.sink is not None:
            lse = xp.broadcast_to(sp.sink, shape)
    elif chunk == 0 or (chunk >= sp.sq and chunk >= sp.sk):
        out, lse = _one_shot(sp)
    else:
        out, lse = _chunked(sp, chunk)
    out = xp.reshape(out, (*sp.batch, sp.hq, sp.sq, sp.dv))
    lse = xp.reshape(lse, (*sp.batch, sp.hq, sp.sq))
    if out.dtype != sp.out_dtype:
        out = xp.astype(out, sp.out_dtype)
    return (out, lse) if return_lse else out


def packed_positions(cu_seqlens: Any, /) -> tuple[Any, Any]:
    """Segment ids and positions of packed sequences from cumulative lengths (flash-attn's
    ``cu_seqlens``: [0, len_0, len_0 + len_1, ...], int, non-decreasing).

    Returns ``(segment_ids, positions)``, each of shape (total,): token t belongs to sequence
    i when cu_seqlens[i] <= t < cu_seqlens[i + 1] and has position t - cu_seqlens[i]. Reads
    the total length, so ``cu_seqlens`` must be concrete (not traced or lazy).
    """
    if not _is_array(cu_seqlens):
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
