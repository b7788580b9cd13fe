"""Verdicts for attention kernels: a per-row error model of softmax attention, a comparison
against ``rope_ref.attention`` computed in float64, and a diagnosis by fitting.

The derivation of every term is on the attention page ("Judging an attention kernel"). In one
line per stage, for query row m, kept key n, an implementation whose stored values (output,
rotated q/k, softmax weights) round with unit roundoff u_s and whose sums accumulate with u_c:

* logit error   delta_mn = scale [c(D) u_c A_mn + 6 (u_s + u_c) P_mn + phase_mn]
                + (u_s + 2 u_c)|s_mn|
  (A = sum_i |q_i||k_i|, P = sum_j |q_j||k_j| over rotary pairs, phase from angles formed in
  float32 when not strict), through the soft-cap's derivative, plus the additive mask's
  rounding and the softmax's own roundings u_c (2|s_mn - M_m| + 4 + 2 log2 n) + u_s;
* output        |do_c| <= e^{dbar} sum_n w_n e^{delta_n} delta_n (|v_nc| + |o_c|)  (exact for
  any logit perturbation of that size, not only to first order);
* accumulation  c(n) u_c (sum_n w_n |v_nc| + |o_c|), c(n) = min(n, 4 sqrt(n)) + 2 (blocked or
  pairwise sums of n terms; a plain sequential sum within the same bound with high probability);
* rounding      (2 u_c + u_s)|o_c|;
* lse           sum_n w_n e^{delta_n} delta_n (at most max_n delta_n) + c(n) u_c
                + (3 u_c + u_lse)|lse|.
"""

from __future__ import annotations

import functools
import itertools
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import numpy as np

from .._apply import apply_rope
from .._attention import attention
from .._errors import RopeTypeError, RopeValueError
from .._rope import Rope
from .._typing import Array
from ._compare import RopeToleranceWarning, to_numpy
from ._error_model import dtype_name as _dtype_name
from ._error_model import unit_roundoff

__all__ = [
    "AttentionHypothesis",
    "AttentionMismatch",
    "AttentionReport",
    "AttentionTolerance",
    "assert_attention_close",
    "attention_tolerance",
]

_U32 = 2.0**-24
_U64 = 2.0**-53
_LN2 = math.log(2.0)
_BLOCK_ELEMENTS = 1 << 20  # score-sized float64 temporaries per block of query rows


# --------------------------------------------------------------------------- the problem
@dataclass
class _Problem:
    """Every input in NumPy float64 (exact widening), with rr.attention's semantics resolved."""

    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    rope: Rope | None
    q_positions: np.ndarray | None  # as given (None: rr.attention's default)
    k_positions: np.ndarray | None
    causal: bool
    mask: np.ndarray | None
    scale: float
    window: tuple[Any, Any] | None
    softcap: float | None
    segment_ids: tuple[np.ndarray, np.ndarray] | None
    sinks: np.ndarray | None
    seq_len: int | None
    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def batch(self) -> tuple[int, ...]:
        return tuple(self.q.shape[:-3])

    @property
    def hq(self) -> int:
        return int(self.q.shape[-3])

    @property
    def hk(self) -> int:
        return int(self.k.shape[-3])

    @property
    def sq(self) -> int:
        return int(self.q.shape[-2])

    @property
    def sk(self) -> int:
        return int(self.k.shape[-2])

    @property
    def multi_axis(self) -> bool:
        r = self.rope
        return r is not None and r.axis_scheme is not None

    def kwargs(self) -> dict[str, Any]:
        return dict(
            rope=self.rope,
            q_positions=self.q_positions,
            k_positions=self.k_positions,
            causal=self.causal,
            mask=self.mask,
            scale=self.scale,
            window=self.window,
            softcap=self.softcap,
            segment_ids=self.segment_ids,
            sinks=self.sinks,
            seq_len=self.seq_len,
        )

    def run(self, **over: Any) -> tuple[np.ndarray, np.ndarray]:
        """rr.attention in float64 (out, lse), with some arguments replaced."""
        kw = self.kwargs()
        q, k, v = over.pop("q", self.q), over.pop("k", self.k), over.pop("v", self.v)
        kw.update(over)
        out, lse = attention(q, k, v, return_lse=True, **kw)
        return np.asarray(out, dtype=np.float64), np.asarray(lse, dtype=np.float64)

    def explicit_q_positions(self) -> np.ndarray:
        if self.q_positions is not None:
            return self.q_positions
        return np.arange(self.sk - self.sq, self.sk)

    def explicit_k_positions(self) -> np.ndarray:
        return np.arange(self.sk) if self.k_positions is None else self.k_positions

    def subset(self, rows: np.ndarray) -> _Problem:
        """The same problem restricted to some query rows (indices into the Sq axis); the
        query positions become explicit."""
        rows = np.asarray(rows, dtype=np.int64)
        qp = self.explicit_q_positions()
        trailing = self.multi_axis and self.rope.axis_scheme.axis_position == "trailing"  # type: ignore[union-attr]
        axis = -2 if trailing else -1
        if qp.ndim and qp.shape[axis] == self.sq and self.sq != 1:
            qp = np.take(qp, rows, axis=axis)
        mask = self.mask
        if mask is not None and mask.ndim >= 2 and mask.shape[-2] == self.sq and self.sq != 1:
            mask = np.take(mask, rows, axis=-2)
        seg = self.segment_ids
        if seg is not None:
            seg = (np.take(seg[0], rows, axis=-1), seg[1])
        return replace(
            self,
            q=np.take(self.q, rows, axis=-2),
            q_positions=qp,
            mask=mask,
            segment_ids=seg,
            rows=self.row_index()[rows],
        )

    def prerotated(self) -> _Problem:
        """The same problem with q and k rotated here (float64, exact tables) and no rope:
        hypotheses that leave the rotation alone then skip recomputing it."""
        if self.rope is None:
            return self
        qp, kp = self.explicit_q_positions(), self.explicit_k_positions()
        qr = apply_rope(self.q, qp, self.rope, seq_len=self.seq_len, role="query")
        kr = apply_rope(self.k, kp, self.rope, seq_len=self.seq_len, role="key")
        multi = self.multi_axis
        return replace(
            self,
            q=np.asarray(qr, dtype=np.float64),
            k=np.asarray(kr, dtype=np.float64),
            rope=None,
            q_positions=None if multi else qp,
            k_positions=None if multi else kp,
        )

    def row_index(self) -> np.ndarray:
        """Indices of these rows in the original Sq axis."""
        return np.arange(self.sq) if self.rows.size == 0 else self.rows


def _np64(x: Array, name: str) -> np.ndarray:
    if x is None:
        raise RopeTypeError(f"{name} must be an array, got None")
    arr = to_numpy(x)
    if not np.issubdtype(arr.dtype, np.floating):
        raise RopeTypeError(f"{name} must have a real floating dtype, got {arr.dtype}")
    return arr.astype(np.float64)


def _opt_np(x: Array) -> np.ndarray | None:
    return None if x is None else to_numpy(x)


def _problem(
    q: Array,
    k: Array,
    v: Array,
    *,
    rope: Rope | None,
    q_positions: Array,
    k_positions: Array,
    causal: bool,
    mask: Array,
    scale: float | None,
    window: Any,
    softcap: float | None,
    segment_ids: Array,
    sinks: Array,
    seq_len: int | None,
) -> _Problem:
    qn, kn, vn = _np64(q, "q"), _np64(k, "k"), _np64(v, "v")
    if qn.ndim < 3:
        raise RopeValueError(f"q must be (..., heads, seq, dim), got shape {qn.shape}")
    d = int(qn.shape[-1])
    if d < 1:  # as rr.attention says it
        raise RopeValueError(
            f"head_dim (the last axis of q and k) must be >= 1, got shape {qn.shape}"
        )
    if scale is None:
        scale = d**-0.5
    elif isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise RopeTypeError(f"scale must be a finite real number, got {scale!r}")
    seg = None
    if segment_ids is not None:
        if not isinstance(segment_ids, (tuple, list)) or len(segment_ids) != 2:
            raise RopeTypeError("segment_ids must be a pair (q_segment_ids, k_segment_ids)")
        seg = (to_numpy(segment_ids[0]), to_numpy(segment_ids[1]))
    mask_np = _opt_np(mask)
    if mask_np is not None and np.issubdtype(mask_np.dtype, np.floating):
        mask_np = mask_np.astype(np.float64)
    sinks_np = None if sinks is None else _np64(sinks, "sinks")
    return _Problem(
        q=qn,
        k=kn,
        v=vn,
        rope=rope,
        q_positions=_opt_np(q_positions),
        k_positions=_opt_np(k_positions),
        causal=causal,
        mask=mask_np,
        scale=float(scale),
        window=None if window is None else tuple(window),
        softcap=None if softcap is None else float(softcap),
        segment_ids=seg,
        sinks=sinks_np,
        seq_len=seq_len,
    )


# --------------------------------------------------------------------------- rounding model
@dataclass(frozen=True)
class _Rounding:
    u_s: float  # stored values: output, rotated q and k, softmax weights before P @ V
    u_c: float  # accumulation and elementwise arithmetic
    u_a: float | None  # angles formed with this unit (None: tables exact, then rounded)
    u_lse: float  # the lse's own storage
    rot: float = 0.0  # logit error of the rotation per unit of scale * sum_j |q_j| |k_j|


#: rotated q and k in the accumulation format, rounded once to the stored format: per pair
#: vector u_s (the storage rounding) + (2 sqrt 2 + 1) u_c (tables, products, sum), twice
#: (q and k) in the logit
_ROT_EXACT_S, _ROT_EXACT_C = 2.0, 8.0
#: rotation carried out in the stored format (tables, products, sum rounded there, as HF's
#: ``q * cos + rotate_half(q) * sin`` in bfloat16 does): (2 sqrt 2 + 1) u per pair vector, twice
_ROT_STORED = 8.0


def _rounding(dtype: Any, accumulate_dtype: Any, strict: bool, lse_dtype: Any) -> _Rounding:
    u_s = unit_roundoff(dtype)
    u_c = min(u_s, _U32) if accumulate_dtype is None else unit_roundoff(accumulate_dtype)
    u_lse = u_c if lse_dtype is None else unit_roundoff(lse_dtype)
    rot = _ROT_EXACT_S * u_s + _ROT_EXACT_C * u_c
    if not strict:
        rot = max(rot, _ROT_STORED * (u_s + u_c))
    u_a = None if strict else max(u_c, _U32)
    return _Rounding(u_s=u_s, u_c=u_c, u_a=u_a, u_lse=u_lse, rot=rot)


def _sum_factor(n: np.ndarray) -> np.ndarray:
    """c(n): error of a blocked/pairwise sum of n terms, in units of u times sum |terms|."""
    n = np.asarray(n, dtype=np.float64)
    out: np.ndarray = np.minimum(n, 4.0 * np.sqrt(n)) + 2.0
    return out


# --------------------------------------------------------------------------- semantics
def _pair_channels(rope: Rope) -> tuple[np.ndarray, np.ndarray]:
    h = rope.rotary_dim // 2
    if rope.layout == "half":
        a = np.arange(h)
        return a, a + h
    a = np.arange(0, rope.rotary_dim, 2)
    return a, a + 1


def _abs_positions(p: _Problem, pos: np.ndarray, target: tuple[int, ...]) -> np.ndarray:
    """|position| per token, broadcast to target (multi-axis: the largest over the axes)."""
    a = np.abs(np.asarray(pos, dtype=np.float64))
    if p.multi_axis:
        a = np.max(a, axis=0 if p.rope.axis_scheme.axis_position == "leading" else -1)  # type: ignore[union-attr]
    return np.broadcast_to(a, target)


def _phase_unit(rope: Rope, seq_len: int | None) -> np.ndarray:
    """theta_j (3 + 4 ln+(1/theta_j)): the angle error per unit |position| and per u_angle.

    An angle formed in a format with unit u: theta_j rounded (u), the position rounded (u),
    the product rounded (u), and theta_j computed as base**(-2j/d) or exp(2j * -(ln base / d))
    with the exponent formed in that format: up to 4 ln(1/theta_j) u relative (ln base 1 ulp,
    the quotient, the product; as the RoPE error model's C_ln). Uses the larger of the
    scaled and unscaled frequency (dynamic schedules pick theirs from the positions)."""
    scaled = np.array([float(t) for t in rope.thetas(seq_len=seq_len)])
    plain = np.array([float(t) for t in rope.unscaled_thetas()])
    th = np.maximum(scaled, plain)
    out: np.ndarray = th * (3.0 + 4.0 * np.maximum(0.0, -np.log(np.maximum(th, 1e-300))))
    return out


class _Terms(NamedTuple):
    """Everything the model needs for one block of rows of one (batch, head)."""

    s0: np.ndarray  # scale * q.k (rows, Sk)
    s: np.ndarray  # final logits, -inf where dropped
    a: np.ndarray  # scale * sum_i |q_i| |k_i|
    pp: np.ndarray | None  # scale * sum_j |q_j| |k_j| over rotary pairs
    ph: np.ndarray | None  # scale * sum_j |q_j||k_j| (phi_j(p_m) + phi_j(p_n)) / u_a
    keep: np.ndarray  # bool (rows, Sk)
    v_abs: np.ndarray  # (Sk, Dv)
    sink: np.ndarray | None  # (rows,)


class _Model:
    """Rotated q/k, pair norms and per-token positions, shared by every block."""

    def __init__(self, p: _Problem) -> None:
        self.p = p
        batch, hq, hk, sq, sk = p.batch, p.hq, p.hk, p.sq, p.sk
        self.g = hq // hk
        qp = p.explicit_q_positions()
        kp = p.explicit_k_positions()
        if p.rope is not None:
            kw = dict(seq_len=p.seq_len)
            self.qr = np.asarray(apply_rope(p.q, qp, p.rope, role="query", **kw), np.float64)
            self.kr = np.asarray(apply_rope(p.k, kp, p.rope, role="key", **kw), np.float64)
            a, b = _pair_channels(p.rope)
            self.pq = np.hypot(self.qr[..., a], self.qr[..., b])
            self.pk = np.hypot(self.kr[..., a], self.kr[..., b])
            self.unit = _phase_unit(p.rope, p.seq_len)
            self.aq = _abs_positions(p, qp, (*batch, hq, sq))
            self.ak = _abs_positions(p, kp, (*batch, hk, sk))
        else:
            self.qr, self.kr = p.q, p.k
        self.qabs, self.kabs = np.abs(self.qr), np.abs(self.kr)
        self.vabs = np.abs(p.v)
        positional = p.causal or p.window is not None
        self.qpos = np.broadcast_to(qp, (*batch, hq, sq)) if positional else None
        self.kpos = np.broadcast_to(kp, (*batch, hk, sk)) if positional else None
        self.mask = None if p.mask is None else np.broadcast_to(p.mask, (*batch, hq, sq, sk))
        if p.segment_ids is not None:
            self.qseg = np.broadcast_to(p.segment_ids[0], (*batch, sq))
            self.kseg = np.broadcast_to(p.segment_ids[1], (*batch, sk))
        self.sinks = None if p.sinks is None else np.broadcast_to(p.sinks, (*batch, hq))

    def blocks(self) -> Any:
        """Yields (index prefix (b..., h), row slice, _Terms)."""
        p = self.p
        rows_per = max(1, _BLOCK_ELEMENTS // max(1, p.sk))
        for b in np.ndindex(*p.batch):
            for h in range(p.hq):
                g = h // self.g
                for r0 in range(0, p.sq, rows_per):
                    rs = slice(r0, min(p.sq, r0 + rows_per))
                    yield (*b, h), rs, self._terms(b, h, g, rs)

    def _terms(self, b: tuple[int, ...], h: int, g: int, rs: slice) -> _Terms:
        p = self.p
        bhr: Any = (*b, h, rs)
        bg: Any = (*b, g)
        br: Any = (*b, rs)
        bh: Any = (*b, h)
        qh, kh = self.qr[bhr], self.kr[bg]
        s0 = p.scale * (qh @ kh.T)
        a = abs(p.scale) * (self.qabs[bhr] @ self.kabs[bg].T)
        pp = ph = None
        if p.rope is not None:
            pq, pk = self.pq[bhr], self.pk[bg]
            pp = abs(p.scale) * (pq @ pk.T)
            fq = self.aq[bhr][:, None] * self.unit + 2.0
            fk = self.ak[bg][:, None] * self.unit + 2.0
            ph = abs(p.scale) * ((pq * fq) @ pk.T + pq @ (pk * fk).T)
        s = s0
        if p.softcap is not None:
            s = p.softcap * np.tanh(s0 / p.softcap)
        keep = np.ones(s.shape, dtype=bool)
        if self.mask is not None:
            blk = self.mask[bhr]
            if blk.dtype == np.bool_:
                keep &= blk
            else:
                s = s + blk
        if self.qpos is not None:
            qpos = self.qpos[bhr][:, None]
            assert self.kpos is not None
            kpos = self.kpos[bg][None, :]
            if p.causal:
                keep &= kpos <= qpos
            if p.window is not None:
                left, right = p.window
                if left is not None and left != math.inf:
                    keep &= kpos >= qpos - left
                if right is not None and right != math.inf:
                    keep &= kpos <= qpos + right
        if p.segment_ids is not None:
            keep &= self.qseg[br][:, None] == self.kseg[tuple(b)][None, :]
        keep &= s > -np.inf
        s = np.where(keep, s, -np.inf)
        sink = None if self.sinks is None else np.full(s.shape[0], self.sinks[bh])
        return _Terms(s0, s, a, pp, ph, keep, self.vabs[bg], sink)


class _Shared(NamedTuple):
    """The parts of the model that do not depend on the rounding units (one block)."""

    fin: np.ndarray  # kept (finite logit)
    s_fin: np.ndarray  # logits, 0 where dropped
    abs_s: np.ndarray  # |s| (0 where dropped)
    spread: np.ndarray  # 2 |s - M| + 4 + 2 log2 n: the softmax's own roundings, per u_c
    w: np.ndarray  # exact weights e^(s - lse)
    lse_c: np.ndarray  # (rows, 1), 0 where -inf
    n: np.ndarray  # keys kept (+1 for a sink)
    o_abs: np.ndarray
    vmax: np.ndarray  # (rows,) largest |v| among the kept keys


def _shared(t: _Terms, o: np.ndarray, lse: np.ndarray) -> _Shared:
    fin = np.isfinite(t.s)
    with np.errstate(invalid="ignore", over="ignore"):
        s_fin = np.where(fin, t.s, 0.0)
        n = np.sum(t.keep, axis=-1) + (0 if t.sink is None else 1)
        big_m = np.max(np.where(fin, t.s, -np.inf), axis=-1, initial=-np.inf)
        if t.sink is not None:
            big_m = np.maximum(big_m, t.sink)
        big_m = np.where(np.isfinite(big_m), big_m, 0.0)
        logn = np.log2(np.maximum(n, 1))
        spread = 2.0 * np.abs(s_fin - big_m[:, None]) + 4.0 + 2.0 * logn[:, None]
        lse_ok = np.isfinite(lse)
        lse_c = np.where(lse_ok, lse, 0.0)[:, None]
        # exact weights from the row's maximum (not from lse: a row masked everywhere with a
        # finite fill such as -1e30 or finfo.min has |lse| so large that s - lse loses the
        # logits' differences; rr.attention softmaxes s0 + fill like any other row)
        e = np.where(fin, np.exp(s_fin - big_m[:, None]), 0.0)
        z = np.sum(e, axis=-1)
        if t.sink is not None:
            z = z + np.exp(t.sink - big_m)
        w = e / np.where(z > 0, z, 1.0)[:, None]
        # the model's own logits must reproduce rr.attention's normaliser (to its rounding)
        lse_model = big_m + np.log(np.where(z > 0, z, 1.0))
    bad = lse_ok & ~(np.abs(lse_model - lse) <= 1e-8 + 1e-12 * np.abs(lse))
    if np.any(bad):  # pragma: no cover - guards against drift from rr.attention's semantics
        raise RuntimeError(
            "internal error: the attention error model's masks/logits disagree with "
            f"rope_ref.attention (normaliser {lse_model[bad][0]!r}, rope_ref.attention's "
            f"lse {lse[bad][0]!r}); please report"
        )
    vmax = np.max(
        np.where(t.keep, np.max(t.v_abs, axis=-1, initial=0.0), 0.0), axis=-1, initial=0.0
    )
    return _Shared(fin, s_fin, np.abs(s_fin), spread, w, lse_c, n, np.abs(o), vmax)


def _row_allowance(
    t: _Terms, c: _Shared, r: _Rounding, d: int, softcap: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """(output allowance, lse allowance) per row of one block, for one rounding model."""
    u_s, u_c = r.u_s, r.u_c
    gamma = float(_sum_factor(np.asarray(d))) * u_c
    delta = gamma * t.a + (u_s + 2.0 * u_c) * np.abs(t.s0)
    if t.pp is not None:
        delta += r.rot * t.pp
        if r.u_a is not None and t.ph is not None:
            # a pair moves by at most 2 |pair| whatever its phase error
            delta += np.minimum(r.u_a * t.ph, 4.0 * t.pp)
    with np.errstate(invalid="ignore", over="ignore"):
        if softcap is not None:
            arg = np.maximum(np.abs(t.s0) - delta, 0.0) / softcap
            sech2 = 1.0 / np.cosh(np.minimum(arg, 350.0)) ** 2
            capped = softcap * np.tanh(t.s0 / softcap)
            delta = (delta + u_c * np.abs(t.s0)) * sech2 + 3.0 * u_c * np.abs(capped)
        # the additive mask's sum, the softmax's roundings, the weights stored in u_s
        delta += u_c * (c.abs_s + c.spread) + u_s
        delta = np.where(c.fin, delta, 0.0)
        we = c.w * np.exp(np.minimum(delta, 700.0))  # e^(s + delta - lse), 0 where dropped
        dbar = np.sum(c.w * delta, axis=-1)
        wed = we * delta
        tot = np.sum(wed, axis=-1)
        grow = np.exp(np.minimum(dbar, 700.0))[:, None]
        d_o = grow * (wed @ t.v_abs + c.o_abs * tot[:, None])
        cn = _sum_factor(c.n)[:, None]
        acc = cn * u_c * (grow * (we @ t.v_abs) + c.o_abs + d_o)
        allow = d_o + acc + (2.0 * u_c + u_s) * (c.o_abs + d_o)
        allow = np.nan_to_num(allow, nan=np.inf)
        # both outputs are averages of the kept values (and 0 with a sink): a cap, never inf
        allow = np.minimum(allow, 2.0 * c.vmax[:, None])
        out_allow = np.max(allow, axis=-1, initial=0.0)
        dmax = np.max(delta, axis=-1, initial=0.0)
        x = np.minimum(cn[:, 0] * u_c, 0.5)
        lse_round = (3.0 * u_c + r.u_lse) * np.abs(c.lse_c[:, 0])
        lse_allow = np.minimum(tot, dmax) - np.log1p(-x) + lse_round
    empty = c.n == 0
    out_allow = np.where(empty, 0.0, out_allow)
    lse_allow = np.where(empty, 0.0, np.nan_to_num(lse_allow, nan=0.0, posinf=0.0))
    return out_allow, lse_allow


def _allowances(
    p: _Problem, roundings: Sequence[_Rounding], ref_out: np.ndarray, ref_lse: np.ndarray
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per-row allowances (out, lse), each of shape (..., Hq, Sq), for each rounding model."""
    model = _Model(p)
    shape = (*p.batch, p.hq, p.sq)
    res = [(np.zeros(shape), np.zeros(shape)) for _ in roundings]
    d = int(p.q.shape[-1])
    for idx, rs, t in model.blocks():
        at: Any = (*idx, rs)
        shared = _shared(t, ref_out[at], ref_lse[at])
        for (ao, al), r in zip(res, roundings, strict=True):
            ao[at], al[at] = _row_allowance(t, shared, r, d, p.softcap)
    return res


# --------------------------------------------------------------------------- public model
class AttentionTolerance(NamedTuple):
    """Per-row absolute allowances, each of shape (..., Hq, Sq).

    Parameters
    ----------
    out : numpy.ndarray
        The allowance on each row of the output (max over its Dv entries).
    lse : numpy.ndarray
        The allowance on each row's log-sum-exp.
    """

    out: np.ndarray
    lse: np.ndarray


def attention_tolerance(
    q: Array,
    k: Array,
    v: Array,
    *,
    dtype: Any,
    rope: Rope | None = None,
    q_positions: Array = None,
    k_positions: Array = None,
    causal: bool = False,
    mask: Array = None,
    scale: float | None = None,
    window: tuple[Any, Any] | None = None,
    softcap: float | None = None,
    segment_ids: tuple[Any, Any] | None = None,
    sinks: Array = None,
    seq_len: int | None = None,
    strict: bool = False,
    accumulate_dtype: Any = None,
    lse_dtype: Any = None,
) -> AttentionTolerance:
    r"""Per-row allowances for an attention kernel computing in ``dtype``, against exact math.

    The error model of softmax attention derived on the attention page ("Judging an attention
    kernel"): the logits' error (``|q|``, ``|k|`` channel by channel, the scale, the soft-cap's
    derivative, the rotation's rounding and, unless ``strict``, angles formed in float32),
    its effect on the softmax weights, the sums over the kept keys, max|v| and the rounding
    of the output. Arguments have :func:`rope_ref.attention`'s meaning.

    Parameters
    ----------
    q, k, v : arrays
        The kernel's inputs (any Array-API namespace); shapes as for ``rope_ref.attention``.
    dtype : dtype or str
        The dtype the kernel stores its output, rotated q/k and softmax weights in.
    rope, q_positions, k_positions, causal, mask, scale, window : optional
        As for :func:`rope_ref.attention`.
    softcap, segment_ids, sinks, seq_len : optional
        As for :func:`rope_ref.attention`.
    strict : bool
        True: rotation tables exact then rounded to ``dtype`` (accuracy class "exact"). False
        (default): the rotation angles may also be formed in float32 (the phase budget of
        "lower-precision angles").
    accumulate_dtype : dtype, optional
        Where sums accumulate; default ``dtype``, or float32 for float16/bfloat16 (as kernels do).
    lse_dtype : dtype, optional
        The dtype of the kernel's lse (default: the accumulation dtype).

    Returns
    -------
    AttentionTolerance
        ``out`` and ``lse``, NumPy float64 arrays of shape (..., Hq, Sq): the largest
        admissible ``max_c |out[..., c] - exact|`` and ``|lse - exact|`` per row; 0 for rows
        with no key kept (those must be exactly 0 and -inf). Finite and never NaN.

    Raises
    ------
    RopeTypeError, RopeValueError
        Invalid inputs, as :func:`rope_ref.attention` raises them.

    Examples
    --------
    >>> import numpy as np, rope_ref as rr
    >>> rng = np.random.default_rng(0)
    >>> q, k, v = rng.standard_normal((3, 1, 2, 4096, 64))
    >>> tol = rr.testing.attention_tolerance(q[..., -1:, :], k, v, dtype="float32")
    >>> tol.out.shape, bool(np.all(tol.out > 0) and np.all(tol.out < 1e-3))
    ((1, 2, 1), True)
    """
    _check_bool("strict", strict)
    _check_bool("causal", causal)
    p = _problem(
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
    ref_out, ref_lse = p.run()
    ((ao, al),) = _allowances(
        p, [_rounding(dtype, accumulate_dtype, strict, lse_dtype)], ref_out, ref_lse
    )
    return AttentionTolerance(ao, al)


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise RopeTypeError(f"{name} must be a bool, got {value!r}")


# --------------------------------------------------------------------------- the verdict
@dataclass
class AttentionHypothesis:
    """One fitted explanation of an attention mismatch.

    Parameters
    ----------
    name : str
        Short name of the mistake ("GQA heads tiled", "scale missing", ...).
    detail : str
        What was fitted, in words.
    explained : float
        Fraction of the (allowance-normalised) squared error it explains.
    fits : bool
        True when the data minus this hypothesis is within the allowance.
    parameter : object, optional
        The fitted value, where the family has one.
    """

    name: str  #: short name of the mistake ("GQA heads tiled", "scale missing", ...)
    detail: str  #: what was fitted, in words
    explained: float  #: fraction of the (allowance-normalised) squared error it explains
    fits: bool  #: True when the data minus this hypothesis is within the allowance
    parameter: Any = None  #: the fitted value, where the family has one

    def __str__(self) -> str:
        tag = "fits" if self.fits else "partial"
        return f"{self.name}: explains {100 * self.explained:.1f}% ({tag}); {self.detail}"


@dataclass
class AttentionReport:
    """The verdict of :func:`assert_attention_close` (returned on pass, attached on failure).

    Parameters
    ----------
    passed : bool
        The verdict.
    worst_ratio : float
        Max over rows of error / allowance (output and lse).
    message : str
        The full text (the failure message, or a summary on success).
    diagnosis : list of AttentionHypothesis or None
        Fitted explanations, best first (on failure).
    accuracy_class : str
        "exact", "lower-precision angles" or "fail".
    ratio_out : numpy.ndarray
        Error / allowance per output row, shape (..., Hq, Sq).
    ratio_lse : numpy.ndarray or None
        The same for the lse (None without one).
    allowance_out : numpy.ndarray
        The allowance per output row.
    allowance_lse : numpy.ndarray or None
        The allowance per lse entry (None without an lse).
    worst : dict
        The worst entry: index (batch..., head, row), position, quantity, error, allowance.
    by_head : list of tuple
        (head, max error, max ratio) per head.
    by_rows : list of tuple
        (first row, end row, max error, max ratio) per range of rows.
    """

    passed: bool
    worst_ratio: float  #: max over rows of error / allowance (output and lse)
    message: str
    diagnosis: list[AttentionHypothesis] | None
    accuracy_class: str  #: "exact", "lower-precision angles" or "fail"
    ratio_out: np.ndarray  #: (..., Hq, Sq)
    ratio_lse: np.ndarray | None
    allowance_out: np.ndarray
    allowance_lse: np.ndarray | None
    worst: dict[str, Any]  #: index (batch..., head, row), position, quantity, error, allowance
    by_head: list[tuple[int, float, float]]  #: (head, max error, max ratio)
    by_rows: list[tuple[int, int, float, float]]  #: (first row, end row, max error, max ratio)

    def __str__(self) -> str:
        return self.message

    @property
    def explanation(self) -> AttentionHypothesis | None:
        """The best hypothesis when it explains at least 90% of the error, else None."""
        if not self.diagnosis:
            return None
        best = self.diagnosis[0]
        return best if (best.fits or best.explained >= 0.9) else None


class AttentionMismatch(AssertionError):
    """Raised by :func:`assert_attention_close`; ``.report`` holds the full verdict.

    Parameters
    ----------
    report : AttentionReport
        The failing verdict; its message is the exception's message.
    """

    def __init__(self, report: AttentionReport) -> None:
        super().__init__(report.message)
        self.report = report


def _row_errors(actual: np.ndarray, desired: np.ndarray, *, last_axis: bool) -> np.ndarray:
    """max |actual - desired| per row; inf where non-finite values disagree (NaN never passes,
    inf must match inf of the same sign)."""
    with np.errstate(invalid="ignore"):
        diff = np.abs(actual - desired)
    same_inf = np.isinf(actual) & (actual == desired)
    diff = np.where(same_inf, 0.0, diff)
    diff = np.where(np.isnan(diff), np.inf, diff)
    return np.max(diff, axis=-1, initial=0.0) if last_axis else diff


def _ratio(err: np.ndarray, allow: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        r = err / allow
    return np.where(err == 0, 0.0, np.where(allow > 0, r, np.inf))


def _checked_lse(lse: Array, ref_lse: np.ndarray) -> tuple[np.ndarray | None, str | None]:
    """The lse under test as float64 NumPy and its dtype's name (None, None without one)."""
    if lse is None:
        return None, None
    lse_np = to_numpy(lse)
    if tuple(lse_np.shape) != tuple(ref_lse.shape):
        raise RopeValueError(
            f"lse must have shape (..., Hq, Sq) = {tuple(ref_lse.shape)}, got {tuple(lse_np.shape)}"
        )
    if not np.issubdtype(lse_np.dtype, np.floating):
        raise RopeTypeError(f"lse must have a real floating dtype, got {lse_np.dtype}")
    lse_dtype = _dtype_name(getattr(lse, "dtype", lse_np.dtype))
    return lse_np.astype(np.float64), lse_dtype


def _breakdown(
    comb_err: np.ndarray, comb_ratio: np.ndarray, sq: int
) -> tuple[list[tuple[int, float, float]], list[tuple[int, int, float, float]]]:
    """The largest error and error/allowance per head, and per band of query rows."""
    hd_axes = (*tuple(range(comb_ratio.ndim - 2)), comb_ratio.ndim - 1)
    by_head = [
        (h, float(e), float(r))
        for h, (e, r) in enumerate(
            zip(
                np.max(comb_err, axis=hd_axes, initial=0.0),
                np.max(comb_ratio, axis=hd_axes, initial=0.0),
                strict=True,
            )
        )
    ]
    by_rows = []
    edges = np.unique(np.linspace(0, sq, min(sq, 8) + 1).astype(int))
    for a, b in itertools.pairwise(edges):
        by_rows.append(
            (
                int(a),
                int(b),
                float(np.max(comb_err[..., a:b], initial=0.0)),
                float(np.max(comb_ratio[..., a:b], initial=0.0)),
            )
        )
    return by_head, by_rows


def assert_attention_close(
    out: Array,
    q: Array,
    k: Array,
    v: Array,
    *,
    lse: Array = None,
    rope: Rope | None = None,
    q_positions: Array = None,
    k_positions: Array = None,
    causal: bool = False,
    mask: Array = None,
    scale: float | None = None,
    window: tuple[Any, Any] | None = None,
    softcap: float | None = None,
    segment_ids: tuple[Any, Any] | None = None,
    sinks: Array = None,
    seq_len: int | None = None,
    dtype: Any = None,
    strict: bool = False,
    diagnose: bool = True,
    accumulate_dtype: Any = None,
) -> AttentionReport:
    """Check an attention kernel's output (and lse) against ``rope_ref.attention``.

    The reference is computed here, in float64 with exact rotation tables, from the same
    inputs; each row is compared with the allowance of :func:`attention_tolerance` for
    ``dtype`` plus the reference's own float64 allowance.

    Parameters
    ----------
    out : array (..., Hq, Sq, Dv)
        The kernel's output (any Array-API namespace, any device).
    q, k, v : arrays
        The inputs the kernel was given (q and k before any rotation).
    lse : array (..., Hq, Sq), optional
        The kernel's log-sum-exp (natural log); compared too when given.
    rope, q_positions, k_positions, causal, mask, scale, window : optional
        The semantics the kernel should implement, as for :func:`rope_ref.attention` (query
        positions default to the last Sq key positions: bottom-right causal alignment).
    softcap, segment_ids, sinks, seq_len : optional
        As for :func:`rope_ref.attention`.
    dtype : dtype, optional
        The dtype the kernel computes in (default: ``out``'s).
    strict : bool
        Only the accuracy class "exact" passes (no phase budget for angles formed in float32).
    diagnose : bool
        On failure, fit the common attention mistakes and name the one that explains the data.
    accumulate_dtype : dtype, optional
        Where the kernel accumulates its sums (default: ``dtype``, float32 for half dtypes).

    Returns
    -------
    AttentionReport
        ``passed`` (True), ``worst_ratio``, ``message``, ``accuracy_class`` and the per-row
        ratios.

    Raises
    ------
    AttentionMismatch
        (an ``AssertionError``) when a row exceeds its allowance: the message names the worst
        (batch, head, query row), its position, errors per head and per row range, and the
        diagnosis; ``.report`` holds the :class:`AttentionReport`.
    RopeTypeError, RopeValueError
        Invalid arguments (shape of ``out``/``lse`` not the reference's, bad semantics).

    Examples
    --------
    >>> import numpy as np, rope_ref as rr
    >>> from rope_ref.testing import assert_attention_close
    >>> rng = np.random.default_rng(0)
    >>> q, k, v = (rng.standard_normal((1, 2, 8, 16)).astype(np.float32) for _ in range(3))
    >>> s = q @ k.transpose(0, 1, 3, 2) / np.float32(4)
    >>> p = np.exp(s - s.max(-1, keepdims=True))
    >>> out = (p @ v) / p.sum(-1, keepdims=True)        # a float32 kernel
    >>> assert_attention_close(out, q, k, v).passed
    True
    >>> try:
    ...     assert_attention_close(out, q, k, v, causal=True)
    ... except AssertionError as e:
    ...     print(e.report.explanation.name)
    causal mask missing
    """
    _check_bool("strict", strict)
    _check_bool("diagnose", diagnose)
    _check_bool("causal", causal)
    p = _problem(
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
    ref_out, ref_lse = p.run()
    out_np = to_numpy(out)
    if tuple(out_np.shape) != tuple(ref_out.shape):
        raise RopeValueError(
            f"out must have the reference's shape (..., Hq, Sq, Dv) = {tuple(ref_out.shape)}, "
            f"got {tuple(out_np.shape)}"
        )
    if not np.issubdtype(out_np.dtype, np.floating):
        raise RopeTypeError(f"out must have a real floating dtype, got {out_np.dtype}")
    out_dtype = _dtype_name(getattr(out, "dtype", out_np.dtype)) if dtype is None else dtype
    lse_np, lse_dtype = _checked_lse(lse, ref_lse)
    out_np = out_np.astype(np.float64)

    exact = _rounding(out_dtype, accumulate_dtype, True, lse_dtype)
    loose = replace(
        exact,
        u_a=max(exact.u_c, _U32),
        rot=_rounding(out_dtype, accumulate_dtype, False, lse_dtype).rot,
    )
    models = [exact] + ([loose] if (rope is not None and not strict) else [])
    allowances = _allowances(p, models, ref_out, ref_lse)
    # the reference's own allowance (float64, exact tables): the model's terms grow at least
    # linearly with the units (to first order where the soft-cap's derivative enters), so the
    # exact-class allowance scaled by the ratio of the units bounds it (equal for float64)
    lam = _U64 / min(exact.u_s, exact.u_c, exact.u_lse)
    ref_o, ref_l = lam * allowances[0][0], lam * allowances[0][1]
    exact_o, exact_l = allowances[0][0] + ref_o, allowances[0][1] + ref_l
    if len(allowances) == 2:
        allow_o, allow_l = allowances[1][0] + ref_o, allowances[1][1] + ref_l
    else:
        allow_o, allow_l = exact_o, exact_l

    err_o = _row_errors(out_np, ref_out, last_axis=True)
    ratio_o = _ratio(err_o, allow_o)
    err_l = ratio_l = None
    exact_pass = bool(np.all(_ratio(err_o, exact_o) <= 1.0))
    if lse_np is not None:
        err_l = _row_errors(lse_np, ref_lse, last_axis=False)
        ratio_l = _ratio(err_l, allow_l)
        exact_pass = exact_pass and bool(np.all(_ratio(err_l, exact_l) <= 1.0))
    worst_o = float(np.max(ratio_o, initial=0.0))
    worst_l = float(np.max(ratio_l, initial=0.0)) if ratio_l is not None else 0.0
    passed = max(worst_o, worst_l) <= 1.0
    cls = "exact" if exact_pass else ("lower-precision angles" if passed else "fail")

    quantity = "lse" if worst_l > worst_o else "out"
    ratio_q = ratio_l if quantity == "lse" else ratio_o
    err_q = err_l if quantity == "lse" else err_o
    allow_q = allow_l if quantity == "lse" else allow_o
    assert ratio_q is not None and err_q is not None
    if ratio_q.size == 0:  # no query rows (or no batch, no head): nothing to compare
        return _empty_report(ratio_o, ratio_l, allow_o, allow_l, str(out_dtype), strict)
    widx = tuple(int(i) for i in np.unravel_index(int(np.argmax(ratio_q)), ratio_q.shape))
    worst = dict(
        index=widx,
        batch=widx[:-2],
        head=widx[-2],
        row=widx[-1],
        position=_position_of(p, widx),
        quantity=quantity,
        error=float(err_q[widx]),
        allowance=float(allow_q[widx]),
        actual=(lse_np[widx] if quantity == "lse" else out_np[widx]),  # type: ignore[index]
        desired=(ref_lse[widx] if quantity == "lse" else ref_out[widx]),
    )
    comb_err = err_o if err_l is None else np.maximum(err_o, err_l)
    comb_ratio = ratio_o if ratio_l is None else np.maximum(ratio_o, ratio_l)
    by_head, by_rows = _breakdown(comb_err, comb_ratio, p.sq)
    diagnosis = None
    if not passed and diagnose:
        diagnosis = _Diagnosis(
            p, out_np, lse_np, ref_out, ref_lse, allow_o, allow_l, comb_ratio
        ).run()
    report = AttentionReport(
        passed=passed,
        worst_ratio=max(worst_o, worst_l),
        message="",
        diagnosis=diagnosis,
        accuracy_class=cls,
        ratio_out=ratio_o,
        ratio_lse=ratio_l,
        allowance_out=allow_o,
        allowance_lse=None if lse_np is None else allow_l,
        worst=worst,
        by_head=by_head,
        by_rows=by_rows,
    )
    report.message = _message(report, p, str(out_dtype), strict)
    empty_nan = int(np.sum(np.isneginf(ref_lse) & np.any(np.isnan(out_np), axis=-1)))
    if empty_nan:
        report.message += (
            f"\n{empty_nan} row(s) with no key kept hold NaN: rope_ref defines such a row as "
            "output 0 and lse -inf (a kernel should not divide 0 by 0 there)"
        )
    pad = _fill_masked_rows(p, exact.u_c)
    if np.any(pad):
        report.message += (
            f"\n{int(np.sum(pad))} row(s) masked on every key with a finite fill (padding): "
            f"the accumulation (unit roundoff {exact.u_c:.3g}) cannot resolve their logits' "
            "differences, so their allowance is wide; they are not counted as blind"
        )
    # an output in the "exact" class is judged by the exact allowance: blind rows of the wider
    # class then say nothing about it (no warning); one that passes only through the wider
    # class, where that is as large as the output, passed blindly: warn. In the exact class a
    # few blind rows (outputs that average to nearly 0) are listed, and only a comparison
    # blind on every row with a key warns: the verdict still discriminates otherwise
    judged = np.where(pad, 0.0, exact_o if cls == "exact" else allow_o)
    vac = _vacuous_rows(judged, ref_out)
    live = int(np.sum(judged > 0))
    through_wide = cls != "exact" and allow_o is not exact_o
    wide = 0 if allow_o is exact_o else _vacuous_rows(np.where(pad, 0.0, allow_o), ref_out)
    if wide and cls == "exact":
        report.message += (
            f"\n{wide} row(s) where the 'lower-precision angles' allowance is as large as the "
            "output (an error such as a one-position RoPE shift could pass there); this "
            "output is in the exact class, and strict=True requires it"
        )
    if vac and not through_wide and vac < live:
        report.message += (
            f"\n{vac} of {live} row(s) have an allowance as large as their output (blind "
            "there); the other rows are judged"
        )
        vac = 0
    if passed and vac:
        hint = "use float64" if strict or rope is None else "strict=True judges them"
        warnings.warn(
            f"attention allowance is as large as the output itself on {vac} row(s): the "
            f"comparison cannot see errors there ({hint})",
            RopeToleranceWarning,
            stacklevel=2,
        )
    if not passed:
        raise AttentionMismatch(report)
    return report


def _fill_masked_rows(p: _Problem, u_c: float) -> np.ndarray:
    """Rows, shape (..., Hq, Sq), whose every key carries a finite additive mask value so
    large (at most -1 / (8 u_c): HF's finfo.min, -1e9, -1e30 fills of padded queries) that
    the accumulation format cannot resolve the logits' differences beside it."""
    shape = (*p.batch, p.hq, p.sq)
    m = p.mask
    if m is None or m.dtype == np.bool_ or p.sk == 0:
        return np.zeros(shape, dtype=bool)
    full = np.broadcast_to(m, (*shape, p.sk))
    with np.errstate(invalid="ignore"):
        pad: np.ndarray = np.all(full <= -1.0 / (8.0 * u_c), axis=-1) & np.any(
            np.isfinite(full), axis=-1
        )
    return pad


def _empty_report(
    ratio_o: np.ndarray,
    ratio_l: np.ndarray | None,
    allow_o: np.ndarray,
    allow_l: np.ndarray | None,
    dtype: str,
    strict: bool,
) -> AttentionReport:
    """The passing report of a comparison with no query rows (rr.attention's output is
    empty there too)."""
    worst = dict(
        index=(),
        batch=(),
        head=None,
        row=None,
        position=None,
        quantity="out",
        error=0.0,
        allowance=0.0,
        actual=None,
        desired=None,
    )
    return AttentionReport(
        passed=True,
        worst_ratio=0.0,
        message=f"attention matches ({dtype}{', strict' if strict else ''}): no query rows "
        f"to compare (out has shape {ratio_o.shape} + (Dv,))",
        diagnosis=None,
        accuracy_class="exact",
        ratio_out=ratio_o,
        ratio_lse=ratio_l,
        allowance_out=allow_o,
        allowance_lse=None if ratio_l is None else allow_l,
        worst=worst,
        by_head=[],
        by_rows=[],
    )


def _vacuous_rows(allow: np.ndarray, ref_out: np.ndarray) -> int:
    scale = np.max(np.abs(ref_out), axis=-1, initial=0.0)
    return int(np.sum((allow > 0) & (allow >= np.maximum(scale, 1e-300))))


def _position_of(p: _Problem, idx: tuple[int, ...]) -> Any:
    row = idx[-1]
    if p.q_positions is None:
        return int(p.sk - p.sq + row)
    qp = p.q_positions
    if p.multi_axis:
        lead = p.rope.axis_scheme.axis_position == "leading"  # type: ignore[union-attr]
        arr = np.moveaxis(qp, 0, -1) if lead else qp
        tok = np.broadcast_to(arr, (*p.batch, p.hq, p.sq, arr.shape[-1]))
        return tuple(int(x) if float(x).is_integer() else float(x) for x in tok[idx])
    val = float(np.broadcast_to(qp, (*p.batch, p.hq, p.sq))[idx])
    return int(val) if val.is_integer() else val


def _message(r: AttentionReport, p: _Problem, dtype: str, strict: bool) -> str:
    w = r.worst
    head = (
        f"attention {'matches' if r.passed else 'MISMATCH'} ({dtype}"
        f"{', strict' if strict else ''}): worst error/allowance {r.worst_ratio:.3g} "
        f"[class: {r.accuracy_class}]"
    )
    lines = [head]
    lines.append(
        f"worst row: batch {w['batch']}, head {w['head']}, query row {w['row']} "
        f"(position {w['position']}), {w['quantity']}: error {w['error']:.3g} vs allowance "
        f"{w['allowance']:.3g}"
    )
    if not r.passed:
        n_bad = int(np.sum(r.ratio_out > 1)) + (
            0 if r.ratio_lse is None else int(np.sum(r.ratio_lse > 1))
        )
        total = r.ratio_out.size + (0 if r.ratio_lse is None else r.ratio_lse.size)
        lines.append(f"rows over their allowance: {n_bad} of {total}")
        lines.append("per head (max error, max error/allowance):")
        for h, e, rt in r.by_head[:16]:
            lines.append(f"  head {h:3d}: {e:.3g}  ratio {rt:.3g}")
        if len(r.by_head) > 16:
            lines.append(f"  ... {len(r.by_head) - 16} more heads")
        lines.append("per query-row range (max error, max error/allowance):")
        for a, b, e, rt in r.by_rows:
            lines.append(f"  rows {a}..{b - 1}: {e:.3g}  ratio {rt:.3g}")
        if r.diagnosis is not None:
            if r.diagnosis and (r.diagnosis[0].fits or r.diagnosis[0].explained >= 0.9):
                lines.append(f"diagnosis: {r.diagnosis[0]}")
            else:
                lines.append("diagnosis: no single common mistake explains the error")
            for hyp in r.diagnosis[1:4]:
                lines.append(f"  also tried: {hyp}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- diagnosis
def _diag_rows(p: _Problem, ratio: np.ndarray, limit: int = 48) -> np.ndarray:
    if p.sq <= limit:
        return np.arange(p.sq)
    per_row = np.max(ratio.reshape(-1, p.sq), axis=0)
    worst = np.argsort(-per_row, kind="stable")[: limit // 2]
    spread = np.linspace(0, p.sq - 1, limit - worst.size).astype(np.int64)
    return np.unique(np.concatenate([worst, spread]))


def _golden(f: Callable[[float], float], lo: float, hi: float, iters: int = 30) -> float:
    gr = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = lo, hi
    c, d = b - gr * (b - a), a + gr * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(iters):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - gr * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + gr * (b - a)
            fd = f(d)
    return c if fc <= fd else d


class _Diagnosis:
    """The hypotheses about an attention mismatch, fitted on a subset of query rows: each
    family of common mistakes is one method; :meth:`run` tries them in order."""

    def __init__(
        self,
        p: _Problem,
        out: np.ndarray,
        lse: np.ndarray | None,
        ref_out: np.ndarray,
        ref_lse: np.ndarray,
        allow_o: np.ndarray,
        allow_l: np.ndarray,
        ratio: np.ndarray,
    ) -> None:
        rows = _diag_rows(p, ratio)
        self.p = p
        self.a_out = out[..., rows, :]
        self.a_lse = None if lse is None else lse[..., rows]
        self.ao = np.maximum(allow_o[..., rows], 1e-300)[..., None]
        self.al = np.maximum(allow_l[..., rows], 1e-300)
        self.ref_sub = (ref_out[..., rows, :], ref_lse[..., rows])
        e0 = self.normalised(*self.ref_sub)
        self.e_norm = float(np.dot(e0, e0))
        self.rotated = p.subset(rows)  # keeps the rope, for the hypotheses about the rotation
        self.sub = self.rotated.prerotated()
        self.hyps: list[AttentionHypothesis] = []
        self.scale_tried: dict[float, float] = {}
        self.shift_done: set[tuple[str, int]] = set()

    # ------------------------------------------------------------------ scoring
    def normalised(self, o: np.ndarray, ls: np.ndarray) -> np.ndarray:
        """The residual of a candidate against the actual output, in allowances."""
        a_out, a_lse = self.a_out, self.a_lse
        parts = [np.nan_to_num((a_out - o) / self.ao, nan=1e30, posinf=1e30, neginf=-1e30).ravel()]
        if a_lse is not None:
            fin = np.isfinite(ls) & np.isfinite(a_lse)
            both_inf = (~np.isfinite(ls)) & (ls == a_lse)
            r = np.where(
                fin, (a_lse - np.where(fin, ls, 0)) / self.al, np.where(both_inf, 0.0, 1e30)
            )
            parts.append(np.nan_to_num(r, nan=1e30).ravel())
        # rows allowed 0 (no key kept) give residuals near 1e300: capped so squares stay finite
        capped: np.ndarray = np.clip(np.concatenate(parts), -1e30, 1e30)
        return capped

    def score(self, o: np.ndarray, ls: np.ndarray) -> tuple[float, bool, float]:
        """(fraction of the squared error explained, fits everywhere, squared residual)."""
        r = self.normalised(o, ls)
        rr_ = float(np.dot(r, r))
        explained = max(0.0, 1.0 - rr_ / self.e_norm) if self.e_norm > 0 else 0.0
        return explained, bool(np.max(np.abs(r), initial=0.0) <= 1.0), rr_

    def add(
        self, name: str, detail: str, res: tuple[np.ndarray, np.ndarray], param: Any = None
    ) -> None:
        ex, fits, _ = self.score(*res)
        self.hyps.append(AttentionHypothesis(name, detail, ex, fits, param))

    def attempt(
        self,
        name: str,
        detail: str,
        fn: Callable[[], tuple[np.ndarray, np.ndarray]],
        param: Any = None,
    ) -> None:
        try:
            res = fn()
        except (RopeValueError, RopeTypeError, ValueError):
            return
        self.add(name, detail, res, param)

    # ------------------------------------------------------------------ families
    def gqa(self) -> None:
        """GQA: query head h reading kv head h % Hk (tiling) instead of h // G (grouping)."""
        p, sub = self.p, self.sub
        hk = p.hk
        g = p.hq // hk
        if not (g > 1 and hk > 1):
            return
        idx = np.arange(p.hq) % hk

        def tiled() -> tuple[np.ndarray, np.ndarray]:
            kp = sub.k_positions
            if kp is not None and kp.ndim >= 2 and kp.shape[-2] == hk:
                kp = np.take(kp, idx, axis=-2)
            return sub.run(
                k=np.take(sub.k, idx, axis=-3), v=np.take(sub.v, idx, axis=-3), k_positions=kp
            )

        self.attempt(
            "GQA heads tiled",
            f"query head h reads key/value head h % {hk} instead of h // {g}",
            tiled,
        )

    def causal(self) -> None:
        """Causal alignment by index (top-left: query i sees keys 0..i; bottom-right:
        0..i+Sk-Sq), a missing causal mask, or one applied where none was asked."""
        p, sub = self.p, self.sub
        sq, sk = p.sq, p.sk
        if p.causal and not p.multi_axis:
            ri = sub.row_index()
            aligned = (
                [("causal mask aligned top-left", 0), ("causal mask aligned bottom-right", sk - sq)]
                if sk != sq  # equal lengths: both alignments are the same mask
                else []
            )
            for name, off in aligned:
                keep = np.arange(sk)[None, :] <= (ri[:, None] + off)
                self.attempt(
                    name,
                    f"query row i keeps key indices <= i + {off}",
                    functools.partial(sub.run, causal=False, mask=_and_mask(sub.mask, keep)),
                )
            if p.window is None:
                # off by t: the query at position i keeps keys at positions <= i + t (the
                # queries are rotated already, so moving their positions moves the mask only)
                qp = sub.explicit_q_positions()
                for t in (1, -1, 2, -2):
                    self.attempt(
                        f"causal mask off by {t:+d}",
                        f"causal keeps keys <= i{t:+d} (position i of the query)",
                        functools.partial(sub.run, q_positions=qp + t),
                        t,
                    )
        if p.causal:
            self.attempt(
                "causal mask missing",
                "every key kept (no causal test)",
                lambda: sub.run(causal=False),
            )
        elif sk > 1 and not p.multi_axis:
            self.attempt(
                "causal mask applied",
                "keys after the query masked (causal)",
                lambda: sub.run(causal=True),
            )

    def softcap_window_sinks(self) -> None:
        """A softcap left out, a window off by one on either side, sinks ignored."""
        p, sub = self.p, self.sub
        if p.softcap is not None:
            self.attempt(
                "softcap missing",
                f"logits not capped (expected softcap={p.softcap:g})",
                lambda: sub.run(softcap=None),
            )
        if p.window is not None:
            for win in _window_neighbours(p.window):
                side, delta = win[2], win[3]
                self.attempt(
                    f"window off by one ({side} {delta:+d})",
                    f"window {win[:2]} instead of {p.window}",
                    functools.partial(sub.run, window=win[:2]),
                    win[:2],
                )
        if p.sinks is not None:
            self.attempt(
                "sinks ignored", "no sink logit in the normaliser", lambda: sub.run(sinks=None)
            )

    def lse_base(self) -> None:
        """The log-sum-exp scaled (base 2, or another factor fitted by least squares)."""
        a_lse, ref_sub = self.a_lse, self.ref_sub
        if a_lse is None:
            return
        fin = np.isfinite(a_lse) & np.isfinite(ref_sub[1])
        if not np.any(fin):
            return
        x, y = ref_sub[1][fin], a_lse[fin]
        den = float(np.dot(x, x))
        a = float(np.dot(x, y)) / den if den > 0 else 1.0
        name = "lse in base 2" if abs(a * _LN2 - 1.0) < 0.05 else "lse scaled"
        self.add(
            name,
            f"lse = {a:.6g} x natural-log lse (log2 would be {1 / _LN2:.6g})",
            (ref_sub[0], ref_sub[1] * a),
            a,
        )

    def rope_misuse(self) -> None:
        """RoPE not applied, applied to one side only, or with the other layout."""
        p, rotated = self.p, self.rotated
        if p.rope is None:
            return
        rope = p.rope
        qp, kp = rotated.explicit_q_positions(), rotated.explicit_k_positions()
        self.attempt("RoPE not applied", "q and k used unrotated", lambda: rotated.run(rope=None))

        def q_only() -> tuple[np.ndarray, np.ndarray]:
            qr = np.asarray(apply_rope(rotated.q, qp, rope, seq_len=p.seq_len), np.float64)
            return rotated.run(q=qr, rope=None)

        def k_only() -> tuple[np.ndarray, np.ndarray]:
            kr = np.asarray(
                apply_rope(rotated.k, kp, rope, seq_len=p.seq_len, role="key"), np.float64
            )
            return rotated.run(k=kr, rope=None)

        self.attempt("RoPE applied to q only", "keys not rotated", q_only)
        self.attempt("RoPE applied to k only", "queries not rotated", k_only)
        other: Any = "interleaved" if rope.layout == "half" else "half"
        self.attempt(
            f"RoPE layout {other}",
            f"pairs taken {other} instead of {rope.layout}",
            lambda: rotated.run(rope=replace(rope, layout=other)),
        )

    # ------------------------------------------------------------------ the scale family
    def scale_run(self, fitted: float) -> tuple[np.ndarray, np.ndarray]:
        return self.sub.run(scale=fitted)

    def scale_err(self, t: float) -> float:
        """The squared residual with the scale multiplied by exp(t) (memoised)."""
        key = round(t, 12)
        if key not in self.scale_tried:
            self.scale_tried[key] = self.score(*self.scale_run(self.p.scale * math.exp(t)))[2]
        return self.scale_tried[key]

    def add_scale(self, fitted: float) -> None:
        p = self.p
        d = int(p.q.shape[-1])
        self.add(
            _scale_name(fitted, p.scale, d),
            f"fitted scale {fitted:.6g} (expected {p.scale:.6g}; ratio {fitted / p.scale:.4g})",
            self.scale_run(fitted),
            fitted,
        )

    def scale_specials(self) -> None:
        """The scale's usual wrong values: missing, doubled, squared, halved."""
        s = self.p.scale
        if s > 0:
            for special in (1.0, 2.0 * s, s * s, 0.5 * s):
                if abs(special / s - 1.0) > 1e-9:
                    self.add_scale(special)

    def _refine_scale(self, t_best: float) -> float:
        """Gauss-Newton on the normalised residual: the golden search leaves the scale known
        to ~1e-4, far from what a float64 comparison resolves."""
        s = self.p.scale
        for _ in range(4):
            r0 = self.normalised(*self.scale_run(s * math.exp(t_best)))
            h = 1e-7
            jac = (self.normalised(*self.scale_run(s * math.exp(t_best + h))) - r0) / h
            jj = float(np.dot(jac, jac))
            if not (jj > 0 and math.isfinite(jj)):
                break
            step = -float(np.dot(jac, r0)) / jj
            if not math.isfinite(step) or abs(step) > 1.0:
                break
            if self.scale_err(t_best + step) > self.scale_err(t_best):
                break
            t_best += step
            if abs(step) < 1e-13:
                break
        return t_best

    def scale_fit(self) -> None:
        """A fitted scale: a grid on log(scale), a golden search, then Gauss-Newton."""
        s = self.p.scale
        if not s > 0:
            return
        grid = np.linspace(-4.0, 4.0, 9).tolist()
        vals = [self.scale_err(t) for t in grid]
        i = int(np.argmin(vals))
        lo, hi = grid[max(0, i - 1)], grid[min(len(grid) - 1, i + 1)]
        t_best = _golden(self.scale_err, lo, hi, 16)
        if self.scale_err(grid[i]) < self.scale_err(t_best):
            t_best = grid[i]
        fitted = s * math.exp(self._refine_scale(t_best))
        if all(
            abs(fitted / (h.parameter or 1e300) - 1) > 1e-6
            for h in self.hyps
            if h.name.startswith("scale")
        ):
            self.add_scale(fitted)

    # ------------------------------------------------------------------ position shifts
    def add_shift(self, who: str, shifts: Sequence[int]) -> None:
        """The best of the given shifts of the query (or key) positions, as one hypothesis."""
        best = None
        for t in shifts:
            if (who, t) in self.shift_done:
                continue
            self.shift_done.add((who, t))
            try:
                res = _shifted(self.rotated, self.sub, who, t)
            except (RopeValueError, ValueError):
                continue
            sc = self.score(*res)
            if best is None or sc[2] < best[0][2]:
                best = (sc, t)
        if best is not None:
            (ex, fits, _), t = best
            self.hyps.append(
                AttentionHypothesis(
                    f"{who} positions shifted by {t:+d}",
                    f"RoPE rotated the {'queries' if who == 'query' else 'keys'} at their "
                    f"positions {t:+d} (masks unchanged)",
                    ex,
                    fits,
                    t,
                )
            )

    # ------------------------------------------------------------------ all of them
    def run(self) -> list[AttentionHypothesis]:
        """Every family, in order; the wider ones only if no narrow one fits."""
        p = self.p
        self.gqa()
        self.causal()
        self.softcap_window_sinks()
        self.lse_base()
        self.rope_misuse()
        self.scale_specials()
        rope_shifts = p.rope is not None
        if rope_shifts:
            self.add_shift("query", (-1, 1))  # shifted by one, before the wider families
        if not any(h.fits for h in self.hyps):
            self.scale_fit()
            if rope_shifts:
                wide = sorted({-2, -1, 1, 2, p.sk - p.sq, p.sq - p.sk} - {0})
                self.add_shift("query", wide)
                self.add_shift("key", wide)
        self.hyps.sort(key=lambda h: (not h.fits, -h.explained))
        return self.hyps


def _window_neighbours(window: tuple[Any, Any]) -> list[tuple[Any, Any, str, int]]:
    """The windows one off on either finite side: (left, right, side, delta)."""
    left, right = window
    out: list[tuple[Any, Any, str, int]] = []
    for side, val in (("left", left), ("right", right)):
        if val is None or val == math.inf:
            continue
        for delta in (-1, 1):
            new = val + delta
            if new < 0:
                continue
            win = (new, right) if side == "left" else (left, new)
            out.append((*win, side, delta))
    return out


def _shifted(rotated: _Problem, pre: _Problem, who: str, t: int) -> tuple[Any, Any]:
    """Rotation of the queries (or keys) at position + t, masks at the true positions."""
    rope = rotated.rope
    assert rope is not None
    if who == "query":
        qp = rotated.explicit_q_positions()
        qr = apply_rope(rotated.q, qp + t, rope, seq_len=rotated.seq_len)
        return pre.run(q=np.asarray(qr, dtype=np.float64))
    kp = rotated.explicit_k_positions()
    kr = apply_rope(rotated.k, kp + t, rope, seq_len=rotated.seq_len, role="key")
    return pre.run(k=np.asarray(kr, dtype=np.float64))


def _and_mask(mask: np.ndarray | None, keep: np.ndarray) -> np.ndarray:
    if mask is None:
        return keep
    if mask.dtype == np.bool_:
        both: np.ndarray = np.logical_and(mask, keep)
        return both
    return np.where(keep, mask, -np.inf)


def _scale_name(fitted: float, scale: float, d: int) -> str:
    def near(a: float, b: float) -> bool:
        return abs(a / b - 1.0) < 0.005

    names = (
        (1.0, "scale missing"),
        (2.0 * scale, "scale doubled"),
        (scale * scale, "scale applied twice"),
        (0.5 * scale, "scale halved"),
        (1.0 / d, "scale 1/D instead of 1/sqrt(D)"),
    )
    for value, name in names:
        if near(fitted, value) and not near(value, scale):
            return name
    return f"scale wrong (x{fitted / scale:.4g})"
