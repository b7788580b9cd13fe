"""Golden softmax attention with RoPE: one-shot and chunked (online softmax) paths.

Heads come before the sequence, as in PyTorch's ``scaled_dot_product_attention``:
q is (..., Hq, Sq, D), k is (..., Hk, Sk, D), v is (..., Hk, Sk, Dv), and Hq is a multiple
of Hk. Grouped-query attention works by viewing q as (..., Hk, Hq/Hk, Sq, D) against k and v
of shape (..., Hk, 1, Sk, D): query head h uses key/value head h // (Hq/Hk) (Hugging Face's
``repeat_kv`` order), and nothing is copied.

Everything is computed in the widest float dtype of the namespace (float64 here) and the output
is rounded once to q.dtype.

How the pieces fit (the VJP in ``_vjp.py`` uses the same three):

* :func:`_prepare` validates every argument once and returns a frozen :class:`_Spec`.
* :func:`_absorb` adds a block of keys to the running softmax statistics of a block of
  queries (:class:`_Rows`); the one-shot path is one block, the chunked path many.
* :func:`_finish` turns the statistics into the output and the log-sum-exp.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from . import _compat, _validate
from . import _positions as _pos
from ._apply import apply_rope
from ._errors import RopeTypeError, RopeValueError
from ._rope import Rope

__all__ = ["DEFAULT_MEMORY_BUDGET", "attention"]

#: Bytes the one-shot path may spend on its (..., Hq, Sq, Sk) score-sized temporaries before
#: ``attention`` switches to the chunked path (override per call with ``memory_budget``).
DEFAULT_MEMORY_BUDGET = 256 * 2**20
_TEMPS = 4  # score-sized float64 temporaries alive at once (scores, keep mask, p, a spare)
_AUTO_BLOCK = 256  # widest automatic block
_FLOAT_MAX = 1.7976931348623157e308


def _is_array(x: Any) -> bool:
    return _compat.is_array(x)


def _prod(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


# ------------------------------------------------------------------------- the specification


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


@dataclass(frozen=True, kw_only=True)
class _Spec:
    """Every argument of :func:`attention` (and :func:`rope_ref.attention_vjp`), validated once.

    Arrays are in the working dtype ``wd``, q and k already rotated, and grouped for GQA:
    q (..., Hk, G, Sq, D), k and v (..., Hk, 1, Sk, *). Built only by :func:`_prepare`.
    """

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
    vg: Any  # (..., Hk, 1, Sk, Dv), non-finite entries replaced by 0 (flagged in v_bad)
    v_bad: Any  # (..., Hk, 1, Sk, 2 Dv): [v is +inf or NaN, v is -inf or NaN] as 1.0 / 0.0;
    # None when v is known to be finite
    qp: Any  # query positions (..., Hk, G, Sq) in wd, for causal/window; else None
    kp: Any  # key positions (..., Hk, 1, Sk)
    qs: Any  # query segment ids (..., 1, 1, Sq) or None
    ks: Any  # key segment ids (..., 1, 1, Sk) or None
    keep_mask: _MaskView | None
    add_mask: _MaskView | None
    sink: Any  # (..., Hk, G, 1) in wd, or None
    sinks_shape: tuple[int, ...] | None
    scale: float
    softcap: float | None
    causal: bool
    window: tuple[float | None, float | None] | None
    rope: Rope | None
    q_pos: Any  # the positions q and k were rotated at (defaults filled in)
    k_pos: Any
    seq_len: int | None
    dtypes: tuple[Any, Any, Any]  # q, k, v dtypes (the output takes q's)


def _check_window(window: Any) -> tuple[float | None, float | None] | None:
    if window is None:
        return None
    if not isinstance(window, (tuple, list)) or len(window) != 2:
        raise RopeTypeError(f"window must be a pair (left, right), got {window!r}")
    out: list[float | None] = []
    for side, w in zip(("left", "right"), window, strict=True):
        if w is None:
            out.append(None)
            continue
        value = _validate.as_real(w, f"window {side}", finite=False)
        if not value >= 0:
            raise RopeValueError(
                f"window {side} must be >= 0 (None for unbounded), got {w!r}; flash-attn's -1 "
                "for 'unbounded' is None here"
            )
        out.append(None if value == math.inf else value)
    return (out[0], out[1])


def _check_arrays(**named: Any) -> tuple[Any, Any]:
    """(namespace, device) of q, k, v and the optional arrays; q, k, v must be float arrays."""
    for name in ("q", "k", "v"):
        arr = named[name]
        if not _is_array(arr):
            raise RopeTypeError(f"{name} must be an array, got {type(arr).__name__}")
    xp = _compat.array_namespace(**named)
    device = _compat.check_same_device(**named)
    for name in ("q", "k", "v"):
        arr = named[name]
        if not _compat.is_real_floating(xp, arr.dtype):
            raise RopeTypeError(f"{name} must have a real floating dtype, got {arr.dtype}")
        if arr.ndim < 3:
            raise RopeValueError(
                f"{name} must be (..., heads, seq, dim), got shape {tuple(arr.shape)}"
            )
    return xp, device


def _check_shapes(q: Any, k: Any, v: Any) -> tuple[tuple[int, ...], int, int, int, int, int, int]:
    """(batch, Hq, Hk, Sq, Sk, D, Dv) after checking that q, k and v fit together."""
    batch = tuple(int(s) for s in q.shape[:-3])
    hq, sq, d = (int(s) for s in q.shape[-3:])
    hk, sk, dk = (int(s) for s in k.shape[-3:])
    if tuple(k.shape[:-3]) != batch or tuple(v.shape[:-3]) != batch:
        raise RopeValueError(
            f"q, k and v must share their leading (batch) axes: q {tuple(q.shape)}, "
            f"k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if dk != d:
        raise RopeValueError(f"q and k must have the same last axis (head_dim): {d} vs {dk}")
    if d == 0:
        raise RopeValueError(
            f"head_dim (the last axis of q and k) must be >= 1, got shape {tuple(q.shape)}"
        )
    if tuple(v.shape[-3:-1]) != (hk, sk):
        raise RopeValueError(
            f"v must have k's heads and length (..., {hk}, {sk}, Dv), got {tuple(v.shape)}"
        )
    if hk == 0 or hq % hk:
        raise RopeValueError(
            f"the number of query heads ({hq}) must be a multiple of the key/value heads ({hk})"
        )
    return batch, hq, hk, sq, sk, d, int(v.shape[-1])


def _check_scalars(
    *, rope: Any, d: int, causal: Any, scale: Any, softcap: Any
) -> tuple[bool, float, float | None]:
    """(causal, scale, softcap): numbers and flags of any library, as Python values."""
    causal = _validate.as_bool(causal, "causal")
    if rope is not None and not isinstance(rope, Rope):
        raise RopeTypeError(f"rope must be None or a rope_ref.Rope, got {type(rope).__name__}")
    if rope is not None and rope.head_dim != d:
        raise RopeValueError(f"rope.head_dim={rope.head_dim} but q and k have head_dim {d}")
    scale = d**-0.5 if scale is None else _validate.as_real(scale, "scale")
    if softcap is not None:
        softcap = _validate.as_real(softcap, "softcap", finite=False)
        if not (softcap > 0 and math.isfinite(softcap)):
            raise RopeValueError(f"softcap must be finite and > 0, got {softcap!r}")
    return causal, scale, softcap


def _is_multi_axis(rope: Rope | None) -> bool:
    return rope is not None and rope.axis_scheme is not None


def _positions(
    xp: Any,
    device: Any,
    arr: Any,
    *,
    name: str,
    rope: Rope | None,
    target: tuple[int, ...],
    start: int,
) -> Any:
    """Validated positions (default: start .. start + target[-1] - 1)."""
    if arr is None:
        return xp.arange(start, start + target[-1], device=device)
    arr = _pos.to_positions(arr, xp, device, name=name)
    _pos.check_positions(xp, arr, name=name)
    shape = tuple(arr.shape)
    tokens = rope.token_shape(shape, name=name) if (rope and _is_multi_axis(rope)) else shape
    _validate.broadcast_positions(tokens, target, name=name, target_name=f"{target}")
    return arr


def _segments(
    xp: Any, q: Any, segment_ids: Any, batch: tuple[int, ...], sq: int, sk: int
) -> tuple[Any, Any]:
    """Segment ids of queries (..., 1, 1, Sq) and keys (..., 1, 1, Sk), or (None, None)."""
    if segment_ids is None:
        return None, None
    if not isinstance(segment_ids, (tuple, list)) or len(segment_ids) != 2:
        raise RopeTypeError("segment_ids must be a pair (q_segment_ids, k_segment_ids)")
    out = []
    for name, arr, n in (
        ("segment_ids[0]", segment_ids[0], sq),
        ("segment_ids[1]", segment_ids[1], sk),
    ):
        if not _is_array(arr):
            raise RopeTypeError(f"{name} must be an array, got {type(arr).__name__}")
        _compat.array_namespace(q=q, **{name: arr})
        _compat.check_same_device(q=q, **{name: arr})
        if tuple(arr.shape) not in ((*batch, n), (n,)):
            raise RopeValueError(
                f"{name} must have shape {(*batch, n)} (batch axes, then the sequence), "
                f"got {tuple(arr.shape)}"
            )
        if not _compat.is_integral(xp, arr.dtype):
            raise RopeTypeError(f"{name} must have an integer dtype, got {arr.dtype}")
        out.append(xp.reshape(xp.broadcast_to(arr, (*batch, n)), (*batch, 1, 1, n)))
    return out[0], out[1]


def _no_plus_inf(xp: Any, arr: Any, name: str, why: str) -> None:
    """Reject +inf entries where the values can be read (not under jit, not lazy)."""
    if _compat.is_concrete(arr) and _prod(tuple(arr.shape)) and bool(xp.any(arr == xp.inf)):
        raise RopeValueError(f"{name} has +inf entries; {why}")


def _masks(
    xp: Any, mask: Any, wd: Any, target: tuple[int, ...], hk: int, g: int
) -> tuple[_MaskView | None, _MaskView | None]:
    """(boolean keep-mask, additive mask) views; at most one of them is set."""
    if mask is None:
        return None, None
    if not _is_array(mask):
        raise RopeTypeError(f"mask must be an array, got {type(mask).__name__}")
    _validate.broadcast_positions(
        tuple(mask.shape), target, name="mask", target_name="(..., Hq, Sq, Sk)"
    )
    if _compat.is_bool(xp, mask.dtype):
        return _MaskView(xp, mask, target, hk, g), None
    if not _compat.is_real_floating(xp, mask.dtype):
        raise RopeTypeError(f"mask must be boolean (True = keep) or real float, got {mask.dtype}")
    _no_plus_inf(
        xp,
        mask,
        "mask",
        "an additive mask adds to the scores, and a +inf score has no finite softmax (use "
        "-inf or False to drop a key, a finite value to favour one)",
    )
    return None, _MaskView(xp, xp.astype(mask, wd), target, hk, g)


def _sinks(xp: Any, sinks: Any, wd: Any, batch: tuple[int, ...], hq: int, hk: int, g: int) -> Any:
    """Sink logits as (..., Hk, G, 1) in the working dtype, or None."""
    if sinks is None:
        return None
    if not _is_array(sinks):
        raise RopeTypeError(f"sinks must be an array, got {type(sinks).__name__}")
    if not (_compat.is_real_floating(xp, sinks.dtype) or _compat.is_integral(xp, sinks.dtype)):
        raise RopeTypeError(f"sinks must have a real (integer or float) dtype, got {sinks.dtype}")
    _validate.broadcast_positions(
        tuple(sinks.shape), (*batch, hq), name="sinks", target_name=f"(..., Hq) = {(*batch, hq)}"
    )
    return xp.reshape(xp.broadcast_to(xp.astype(sinks, wd), (*batch, hq)), (*batch, hk, g, 1))


def _values(xp: Any, v: Any, wd: Any) -> tuple[Any, Any]:
    """(v with non-finite entries zeroed, [+inf or NaN, -inf or NaN] indicators).

    The indicators let a masked key's inf contribute nothing (instead of 0 * inf = NaN) while a
    kept key's inf still reaches the output. They are None when v is concrete and finite.
    """
    vw = xp.astype(v, wd)
    if _compat.is_concrete(vw) and bool(xp.all(xp.isfinite(vw))):
        return vw, None
    nan = xp.isnan(vw)
    up = xp.logical_or(vw == xp.inf, nan)
    down = xp.logical_or(vw == -xp.inf, nan)
    bad = xp.astype(xp.concat([up, down], axis=-1), wd)
    return xp.where(xp.isfinite(vw), vw, xp.zeros_like(vw)), bad


def _prepare(
    q: Any,
    k: Any,
    v: Any,
    /,
    *,
    rope: Rope | None = None,
    q_positions: Any = None,
    k_positions: Any = None,
    causal: Any = False,
    mask: Any = None,
    scale: Any = None,
    window: Any = None,
    softcap: Any = None,
    segment_ids: Any = None,
    sinks: Any = None,
    seq_len: int | None = None,
) -> _Spec:
    """Validate every argument of :func:`attention` once; rotate q and k; group for GQA."""
    xp, device = _check_arrays(
        q=q, k=k, v=v, q_positions=q_positions, k_positions=k_positions, mask=mask, sinks=sinks
    )
    batch, hq, hk, sq, sk, d, dv = _check_shapes(q, k, v)
    causal, scale, softcap = _check_scalars(
        rope=rope, d=d, causal=causal, scale=scale, softcap=softcap
    )
    win = _check_window(window)
    wd = _compat.work_dtype(xp, device)
    g = hq // hk
    positional = causal or win is not None
    if _is_multi_axis(rope):
        if q_positions is None or k_positions is None:
            raise RopeValueError(
                "multi-axis RoPE needs explicit q_positions and k_positions (one position per "
                "axis for every token)"
            )
        if positional:
            raise RopeValueError(
                "causal and window masks compare 1-D positions; with multi-axis RoPE pass a "
                "boolean mask= instead"
            )
    # default positions: keys 0..Sk-1, queries Sk-Sq..Sk-1 (bottom-right, the decode case)
    q_pos = _positions(
        xp,
        device,
        q_positions,
        name="q_positions",
        rope=rope,
        target=(*batch, hq, sq),
        start=sk - sq,
    )
    k_pos = _positions(
        xp, device, k_positions, name="k_positions", rope=rope, target=(*batch, hk, sk), start=0
    )
    qs, ks = _segments(xp, q, segment_ids, batch, sq, sk)
    keep_mask, add_mask = _masks(xp, mask, wd, (*batch, hq, sq, sk), hk, g)
    sink = _sinks(xp, sinks, wd, batch, hq, hk, g)

    # rotation first, in the working dtype (q and k rounded to nothing until the output)
    qw, kw = xp.astype(q, wd), xp.astype(k, wd)
    if rope is not None:
        qw = apply_rope(qw, q_pos, rope, seq_len=seq_len, role="query")
        kw = apply_rope(kw, k_pos, rope, seq_len=seq_len, role="key")
    vg, v_bad = _values(xp, v, wd)

    def grouped(p: Any, heads: int, n: int, is_q: bool) -> Any:
        full = xp.broadcast_to(xp.astype(p, wd), (*batch, heads, n))
        return xp.reshape(full, (*batch, hk, g, n)) if is_q else xp.expand_dims(full, axis=-2)

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
        dv=dv,
        qg=xp.reshape(qw, (*batch, hk, g, sq, d)),
        kg=xp.expand_dims(kw, axis=-3),
        vg=xp.expand_dims(vg, axis=-3),
        v_bad=None if v_bad is None else xp.expand_dims(v_bad, axis=-3),
        qp=grouped(q_pos, hq, sq, True) if positional else None,
        kp=grouped(k_pos, hk, sk, False) if positional else None,
        qs=qs,
        ks=ks,
        keep_mask=keep_mask,
        add_mask=add_mask,
        sink=sink,
        sinks_shape=None if sinks is None else tuple(sinks.shape),
        scale=scale,
        softcap=softcap,
        causal=causal,
        window=win,
        rope=rope,
        q_pos=q_pos,
        k_pos=k_pos,
        seq_len=seq_len,
        dtypes=(q.dtype, k.dtype, v.dtype),
    )


# ------------------------------------------------------------------------------ the softmax


def _keep(sp: _Spec, qsl: slice, ksl: slice, positional: bool = True) -> Any:
    """Boolean keep-mask for a block of queries x keys (None when everything is kept).

    A key is dropped by causal/window (by position), segments, a False in a boolean mask or a
    -inf in an additive mask.
    """
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
    if sp.add_mask is not None:
        both(sp.add_mask.block(qsl, ksl) != -xp.inf)  # NaN is kept (and spreads)
    return keep


def _times(xp: Any, x: Any, a: float) -> Any:
    """``a * x`` for a Python float ``a >= 0`` (inf allowed) without a floating-point
    overflow: products beyond the float range come out as +-inf, 0 * anything is 0."""
    if a <= 1.0:
        return x * a
    cap = _FLOAT_MAX / a * (1.0 - 2.0**-50)  # 0 when a is inf
    y = xp.clip(x, min=-cap, max=cap) * (a if cap > 0 else 1.0)
    return xp.where(x > cap, xp.inf, xp.where(x < -cap, -xp.inf, y))


def _reference(xp: Any, m: Any) -> Any:
    """The value subtracted from a row: its maximum m, 0 for an empty row (m = -inf) and NaN
    where m is +inf or NaN (such a row is NaN: non-finite q, k or mask entries)."""
    m = xp.where(m == xp.inf, xp.nan, m)
    return xp.where(m == -xp.inf, xp.zeros_like(m), m)


def _row_max(xp: Any, s: Any) -> Any:
    """Maximum over the last axis; -inf for no key (also where a library refuses to reduce
    an empty array, as Dask does when another axis is 0)."""
    if _prod(tuple(s.shape)) == 0:
        return xp.full(s.shape[:-1], -xp.inf, dtype=s.dtype, device=_compat.device_of(s))
    return xp.max(s, axis=-1)


@dataclass(frozen=True, kw_only=True)
class _Rows:
    """Running softmax statistics of a block of query rows (the online softmax).

    The row maximum is kept in two parts, ``|scale| * r0 + m``: the raw products q.k are
    shifted by their maximum before they are scaled, so that a huge scale cannot overflow
    the scores (with a softcap the scores are bounded and there is no shift).
    """

    shift: Any  # max of sign(scale) * q.k over the kept keys so far (-inf: none; None: softcap)
    r0: Any  # the shift subtracted: ``shift``, 0 while -inf, NaN if +inf (None: softcap)
    m: Any  # max of the shifted scores (-inf: none yet)
    denom: Any  # sum of exp(s - m) over the kept keys
    acc: Any  # sum of exp(s - m) * v (v's non-finite entries left out)
    bad: Any  # kept keys with v = +inf or NaN, then -inf or NaN, per channel (None: v finite)


@dataclass(frozen=True, kw_only=True)
class _Logits:
    """The scores of one block, in the units of the statistics they were absorbed into."""

    s: Any  # shifted scores, -inf where dropped
    keep: Any  # boolean keep-mask (None: every key kept)
    t: Any  # tanh of the softcap (None without softcap)
    p: Any = None  # exp(s - m0) with the m0 of the block's statistics (set by _absorb)


def _start(sp: _Spec, nq: int) -> _Rows:
    """Statistics of rows that have seen no key (every key block skipped)."""
    xp = sp.xp
    shape = (*sp.batch, sp.hk, sp.g, nq)
    bad = None if sp.v_bad is None else xp.zeros((*shape, 2 * sp.dv), dtype=sp.wd, device=sp.device)
    return _Rows(
        shift=xp.full(shape, -xp.inf, dtype=sp.wd, device=sp.device),
        r0=xp.zeros(shape, dtype=sp.wd, device=sp.device),
        m=xp.full(shape, -xp.inf, dtype=sp.wd, device=sp.device),
        denom=xp.zeros(shape, dtype=sp.wd, device=sp.device),
        acc=xp.zeros((*shape, sp.dv), dtype=sp.wd, device=sp.device),
        bad=bad,
    )


def _scores(
    sp: _Spec, rows: _Rows | None, qsl: slice, ksl: slice, positional: bool
) -> tuple[_Logits, Any, Any, Any]:
    """The block's scores relative to the new shift: (logits, new shift, its r0, old m in
    the new units); ``rows`` None for the first block (no statistics: old m is None).

    s = softcap * tanh(scale * q.k / softcap) or scale * (q.k - shift), plus the additive mask.
    ``positional=False`` leaves out the causal/window test (a block known to be inside it).
    """
    xp = sp.xp
    r = xp.matmul(sp.qg[..., qsl, :], xp.matrix_transpose(sp.kg[..., ksl, :]))
    if sp.scale < 0:
        r = -r  # |scale| * (-q.k): the maximum below is that of the scores
    a = abs(sp.scale)
    keep = _keep(sp, qsl, ksl, positional)
    shift = r0 = t = None
    m_old = None if rows is None else rows.m
    if sp.softcap is None:
        rk = r if keep is None else xp.where(keep, r, -xp.inf)
        shift = _row_max(xp, rk) if rows is None else xp.maximum(rows.shift, _row_max(xp, rk))
        r0 = _reference(xp, shift)
        if rows is not None:  # the old statistics move to the new shift (down, never up)
            m_old = m_old + _times(xp, xp.minimum(rows.r0 - r0, 0.0), a)
        masked = sp.add_mask is None and a > 0  # then dropped keys stay -inf in s
        s = rk if masked else r  # a temporary of ours: in place where the library allows it
        s -= r0[..., None]
        if a <= 1.0:  # (no overflow possible)
            s *= a
        else:
            s = _times(xp, s, a)
    else:
        t = xp.tanh(_times(xp, r, a / sp.softcap))
        s, masked = t * sp.softcap, False
    if sp.add_mask is not None:
        s = s + sp.add_mask.block(qsl, ksl)
    if keep is not None and not masked:
        s = xp.where(keep, s, -xp.inf)
    return _Logits(s=s, keep=keep, t=t), shift, r0, m_old


def _absorb(
    sp: _Spec, rows: _Rows | None, qsl: slice, ksl: slice, positional: bool = True
) -> tuple[_Rows, _Logits]:
    """Add the keys ``ksl`` to the statistics ``rows`` of the queries ``qsl`` (None: the
    first block; the one-shot path is one block of every key)."""
    xp = sp.xp
    lg, shift, r0, m_old = _scores(sp, rows, qsl, ksl, positional)
    if r0 is not None and sp.add_mask is None:
        # the key at the shift has s = 0, so the maximum is 0 once a key is kept (-inf
        # before; NaN in a row whose s are all NaN already): no pass over s is needed
        m0 = r0 * 0.0
        m = xp.where(shift == -xp.inf, shift, m0)
        p = xp.exp(lg.s)  # exp(-inf) = 0 for dropped keys
    else:
        m = _row_max(xp, lg.s) if m_old is None else xp.maximum(m_old, _row_max(xp, lg.s))
        m0 = _reference(xp, m)
        p = xp.exp(lg.s - m0[..., None])
    denom, acc = xp.sum(p, axis=-1), xp.matmul(p, sp.vg[..., ksl, :])
    bad = None
    if sp.v_bad is not None:  # count the non-finite v entries of the kept keys
        kept = (
            xp.ones(lg.s.shape, dtype=sp.wd, device=sp.device)
            if lg.keep is None
            else xp.astype(lg.keep, sp.wd)
        )
        bad = xp.matmul(kept, sp.v_bad[..., ksl, :])
    if rows is not None:
        alpha = xp.exp(m_old - m0)  # 0 while nothing was accumulated (m_old = -inf)
        denom, acc = rows.denom * alpha + denom, rows.acc * alpha[..., None] + acc
        bad = None if bad is None else rows.bad + bad
    return _Rows(shift=shift, r0=r0, m=m, denom=denom, acc=acc, bad=bad), replace(lg, p=p)


@dataclass(frozen=True, kw_only=True)
class _Stats:
    """Final statistics of a row: softmax weight of key n is exp(s_n - m0) / denom (s in the
    units of ``shift``), of the sink exp(sig - m0) / denom; ``sink_wins`` rows put all the
    weight on the sink (the keys' scores are below it by more than the float range)."""

    m0: Any
    denom: Any
    sig: Any  # the sink logit in the units of s (None without sinks)
    sink_wins: Any
    alpha: Any  # exp(m0 before the sink - m0): rescales the keys' exp(s - m0) (None: no sink)


def _finish(sp: _Spec, rows: _Rows) -> tuple[Any, Any, _Stats]:
    """(out, lse, statistics) of the rows: sinks join the normalizer, empty rows give 0 and
    lse -inf (or the sink), NaN spreads to the rows it touches."""
    xp = sp.xp
    base = xp.zeros_like(rows.m) if rows.r0 is None else _times(xp, rows.r0, abs(sp.scale))
    m, denom, acc, sig, wins, alpha = rows.m, rows.denom, rows.acc, None, None, None
    if sp.sink is not None:
        sink = xp.broadcast_to(sp.sink, m.shape)
        sig = sink - xp.where(xp.isinf(sink), xp.zeros_like(base), base)
        wins = sig == xp.inf
        sig = xp.where(wins, xp.zeros_like(sig), sig)
        m_new = xp.maximum(m, sig)
        m0 = _reference(xp, m_new)
        alpha = xp.exp(m - m0)
        denom = denom * alpha + xp.exp(sig - m0)
        acc = acc * alpha[..., None]
        m = m_new
    m0 = _reference(xp, m)
    empty = denom == 0
    safe = xp.where(empty, xp.ones_like(denom), denom)
    out = xp.where(empty[..., None], xp.zeros_like(acc), acc / safe[..., None])
    lse = xp.where(empty, -xp.inf, base + m0 + xp.log(safe))
    if rows.bad is not None:
        up, down = rows.bad[..., : sp.dv] > 0, rows.bad[..., sp.dv :] > 0
        out = xp.where(up, xp.inf, xp.where(down, -xp.inf, out))
        out = xp.where(xp.logical_and(up, down), xp.nan, out)
    if wins is not None:
        out = xp.where(wins[..., None], xp.zeros_like(out), out)
        lse = xp.where(wins, sink, lse)
    return out, lse, _Stats(m0=m0, denom=denom, sig=sig, sink_wins=wins, alpha=alpha)


def _weights(sp: _Spec, lg: _Logits, st: _Stats) -> tuple[Any, Any]:
    """The softmax weights P of the keys and of the sink (or None) for statistics of one
    block of all the keys (what the VJP needs). Dropped keys and empty rows have weight 0."""
    xp = sp.xp
    empty = st.denom == 0
    safe = xp.where(empty, xp.ones_like(st.denom), st.denom)
    inv = xp.where(empty, xp.zeros_like(safe), 1.0 / safe)
    p = lg.p * (inv if st.alpha is None else st.alpha * inv)[..., None]
    if lg.keep is not None:  # also in a NaN row: dropped keys stay out of it
        p = xp.where(lg.keep, p, xp.zeros_like(p))
    if st.sig is None:
        return p, None
    p_sink = xp.where(st.sink_wins, xp.ones_like(inv), xp.exp(st.sig - st.m0) * inv)
    return xp.where(st.sink_wins[..., None], xp.zeros_like(p), p), p_sink


def _one_shot(sp: _Spec) -> tuple[Any, Any]:
    everything = slice(None)
    rows, _ = _absorb(sp, None, everything, everything)
    out, lse, _ = _finish(sp, rows)
    return out, lse


def _blocks(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _chunked(sp: _Spec, chunk: int) -> tuple[Any, Any]:
    """Queries and keys in blocks, online softmax (running max, rescaled sums)."""
    xp = sp.xp
    skip = _block_skipper(sp)
    outs, lses = [], []
    for qsl in _blocks(sp.sq, chunk):
        rows = None
        for ksl in _blocks(sp.sk, chunk):
            state = "partial" if skip is None else skip(qsl, ksl)
            if state != "skip":
                rows, _ = _absorb(sp, rows, qsl, ksl, positional=state != "full")
        out, lse, _ = _finish(sp, rows or _start(sp, qsl.stop - qsl.start))
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


def _chunk_for(sp: _Spec, chunk_size: Any, memory_budget: Any) -> int:
    """Block size of the chunked path, or 0 for one shot."""
    if chunk_size is not None:
        chunk = _validate.as_int(chunk_size, "chunk_size", minimum=1)
    else:
        budget = (
            DEFAULT_MEMORY_BUDGET
            if memory_budget is None
            else _validate.as_int(memory_budget, "memory_budget", minimum=1)
        )
        rows = _prod(sp.batch) * sp.hq
        need = _TEMPS * 8 * rows * sp.sq * sp.sk
        if need <= budget:
            return 0
        # blocks that fit the budget, at most _AUTO_BLOCK wide: score blocks of a few MiB
        # stay in cache and let causal/window masks skip more (measured 2x faster on
        # (1, 8, 4096, 128) than 1024-wide blocks; 256 and 512 are close)
        side = math.isqrt(max(1, budget // (_TEMPS * 8 * rows)))
        chunk = max(16, min(_AUTO_BLOCK, side))
    empty = _prod((*sp.batch, sp.hq, sp.sq, sp.sk)) == 0
    return 0 if empty or (chunk >= sp.sq and chunk >= sp.sk) else chunk


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
        Hq a multiple of Hk (grouped-query / multi-query attention, by grouping); D >= 1.
        Any of Sq, Sk, Dv and the batch axes may be 0 (empty results of the right shape).
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
        (..., Hq, Sq, Sk). An additive -inf drops the key exactly like False (it contributes
        nothing, even where v is infinite). A +inf entry has no finite softmax and raises
        RopeValueError (under ``jax.jit`` or on Dask, where values cannot be read, such rows
        come out NaN).
    window : (left, right), optional
        Keep q_pos - left <= k_pos <= q_pos + right; None (or inf) on a side means unbounded.
    softcap : float, optional
        s -> softcap * tanh(s / softcap), after the scale (flash-attn, Gemma 2).
    segment_ids : (q_segment_ids, k_segment_ids), optional
        Integer arrays of shapes (..., Sq) and (..., Sk): packed sequences attend only within
        their segment (see :func:`packed_positions` to build them from cu_seqlens).
    sinks : array, optional
        Per-head sink logits (integer or real), broadcastable to (..., Hq): each adds
        exp(sink) to its head's softmax normalizer without a value (gpt-oss, StreamingLLM-style
        sinks). A -inf sink is no sink; a +inf sink takes all the weight (output 0, lse +inf).
    scale : float, optional
        Defaults to D ** -0.5. Any finite real number: the products q.k are shifted by their
        row maximum before they are scaled, so a huge scale (1e308) gives the limit
        (the weight on the best keys), never an overflow.
    return_lse : bool
        Also return the log-sum-exp of each row, shape (..., Hq, Sq), natural log, in the
        working dtype (float64); sinks count in it. A row with nothing kept has lse -inf.
        (An lse beyond the float range is +-inf.)
    chunk_size : int, optional
        Process queries and keys in blocks of this size with an online softmax (bounded
        memory; equal to the one-shot result to a few float64 ulps). Without it the chunked
        path is taken when the one-shot score temporaries (4 x 8 bytes x batch x Hq x Sq x Sk)
        would exceed ``memory_budget`` bytes (default ``DEFAULT_MEMORY_BUDGET`` = 256 MiB),
        with square blocks of at most 256 that fit the budget.
    memory_budget : int, optional
        Bytes (>= 1) the one-shot score temporaries may take before the chunked path is
        used when ``chunk_size`` is not given; default ``DEFAULT_MEMORY_BUDGET`` (256 MiB).
    seq_len : int, optional
        For dynamic RoPE schedules.

    Returns
    -------
    out : array (..., Hq, Sq, Dv) of q.dtype; with ``return_lse``, ``(out, lse)``.
    Rows with no key kept give output 0 and lse -inf (never NaN). NaN in q, k, v, an additive
    mask or sinks makes exactly the rows it reaches NaN (a row that drops the key is
    unaffected); infinite v entries reach the rows that keep the key.

    Raises
    ------
    RopeTypeError, RopeValueError
        For arrays of the wrong kind, shape, library or device, and for bad options (each
        message names the argument).

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
        rope=rope,
        q_positions=q_positions,
        k_positions=k_positions,
        causal=causal,
        mask=mask,
        scale=scale,
        window=window,
        softcap=softcap,
        segment_ids=segment_ids,
        sinks=sinks,
        seq_len=seq_len,
    )
    want_lse = _validate.as_bool(return_lse, "return_lse")
    chunk = _chunk_for(sp, chunk_size, memory_budget)
    out, lse = _chunked(sp, chunk) if chunk else _one_shot(sp)
    xp = sp.xp
    out = xp.reshape(out, (*sp.batch, sp.hq, sp.sq, sp.dv))
    lse = xp.reshape(lse, (*sp.batch, sp.hq, sp.sq))
    if out.dtype != sp.dtypes[0]:
        out = xp.astype(out, sp.dtypes[0])
    return (out, lse) if want_lse else out
