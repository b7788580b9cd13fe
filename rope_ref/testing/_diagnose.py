"""Diagnosis by fitting: families of the usual RoPE mistakes, each fitted to the data and
reported with the fraction of the squared error it explains.

For an output ``a``, the reference ``d`` and the input ``x`` (float64 NumPy), a hypothesis h
simulates the output ``y_h`` a kernel with that mistake would give; it explains
``1 - sum((a - y_h)**2) / sum((a - d)**2)`` of the error (1: all of it, 0 or less: none). A
family with parameters (a shift, a base, a schedule's parameters, an inv_freq formula) is
fitted by estimating them from the data (per-pair phase slopes) and trying candidates; the
best candidate is reported with its parameters.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import _compat
from .._apply import apply_rope
from .._rope import Rope
from .._rotate import rotate as kernel
from .._typing import Array
from ..scaling import Scaling as _BaseScaling
from ._error_model import (
    Float8Format,
    _scheme,
    dynamic_length,
    pair_channels,
    pair_positions,
    round_float8,
    token_positions,
)

__all__ = [
    "EXPLAINED",
    "Hypothesis",
    "bf16",
    "diagnose",
    "fit_hypotheses",
    "low_precision_cos_sin",
]

#: a hypothesis that removes at least this fraction of the squared error "explains" the data
EXPLAINED = 0.9
#: hypotheses explaining less than this are not reported at all
MINIMUM = 1e-4


@dataclass(frozen=True)
class Hypothesis:
    """One fitted mistake (each parameter is kept as the attribute of the same name).

    Parameters
    ----------
    name : str
        What the mistake is, with its key parameters.
    explained : float
        Fraction of the squared error it removes, 0..1.
    params : dict
        The fitted values.
    text : str
        The name, the fraction, and notes.
    """

    name: str
    explained: float
    params: dict[str, Any] = field(default_factory=dict)
    text: str = ""


# ------------------------------------------------------------------------------- roundings
def bf16(a: Array) -> np.ndarray:
    """Round to bfloat16 (nearest even), returned as float32."""
    bits = np.asarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + np.uint64(0x7FFF) + ((bits >> np.uint64(16)) & np.uint64(1))) & np.uint64(
        0xFFFF0000
    )
    return rounded.astype(np.uint32).view(np.float32)


def f16(a: Array) -> np.ndarray:
    """Round to float16, returned as float32."""
    return np.asarray(a, dtype=np.float16).astype(np.float32)


def f32(a: Array) -> np.ndarray:
    """Round to float32."""
    return np.asarray(a, dtype=np.float32)


ROUNDERS: dict[str, Callable[[Any], np.ndarray]] = {
    "float32": f32,
    "float16": f16,
    "bfloat16": bf16,
}


# ------------------------------------------------------------------------------- inv_freq
def _ladder(rope: Rope) -> tuple[np.ndarray, np.ndarray]:
    """Numerators 2t and denominators D of the unscaled exponents 2t / D of each pair."""
    n = rope.n_pairs
    scheme = _scheme(rope)
    if scheme is not None and scheme.axis_position == "trailing":  # Axial: one ladder per axis
        g = n // scheme.n_axes
        t = np.arange(n) % g
        return 2.0 * t, np.full(n, float(rope.rotary_dim // scheme.n_axes))
    return 2.0 * np.arange(n), np.full(n, float(rope.rotary_dim))


def inv_freq32(rope: Rope, formula: str, seq_len: int | None) -> np.ndarray:
    """inv_freq in float32 as a kernel forms it.

    ``formula``: "rounded" (the exact frequencies correctly rounded), "reciprocal"
    (``1.0 / base ** (arange(0, d, 2) / d)``, Hugging Face), "power"
    (``base ** (-arange(0, d, 2) / d)``). The schedule's factors (exact ratios to the
    unscaled ladder) are then applied in float32: a division for a constant factor (Linear),
    a product otherwise.
    """
    if formula == "rounded":
        return np.asarray(rope.inv_freq(dtype=np.float32, seq_len=seq_len), dtype=np.float32)
    num, den = _ladder(rope)
    e = f32(f32(num) / f32(den))
    b = np.float32(rope.base)
    with np.errstate(over="ignore", under="ignore"):
        if formula == "reciprocal":
            inv = f32(np.float32(1.0) / f32(b**e))
        elif formula == "explog":  # flax / T5X: exp(arange(0, d, 2) * -(log(base) / d))
            inv = f32(np.exp(f32(f32(num) * f32(-f32(np.log(b)) / f32(den)))))
        else:
            inv = f32(b ** (-e))
    scaled = np.asarray(rope.inv_freq(seq_len=seq_len), dtype=np.float64)
    plain = np.exp(-(num / den) * math.log(rope.base))
    ratio = scaled / plain
    if np.allclose(ratio, 1.0, rtol=1e-12, atol=0):
        return inv
    if np.allclose(ratio, ratio[0], rtol=1e-12, atol=0):
        return f32(inv / np.float32(1.0 / ratio[0]))
    return f32(inv * f32(ratio))


FORMULAS = {
    "rounded": "inv_freq correctly rounded to float32",
    "reciprocal": "inv_freq = 1.0 / base ** (arange(0, d, 2) / d) in float32, as Hugging "
    "Face's rotary embeddings form it",
    "power": "inv_freq = base ** (-arange(0, d, 2) / d) in float32",
    "explog": "inv_freq = exp(arange(0, d, 2) * -(log(base) / d)) in float32, as flax and "
    "T5X form it",
}


def _per_pair(rope: Rope, p: np.ndarray) -> np.ndarray:
    """Per-pair positions (token shape + (n_pairs,)) from validated positions."""

    return pair_positions(rope, p)


def low_precision_cos_sin(
    rope: Rope,
    positions: Array,
    rounder: Callable[[np.ndarray], np.ndarray] = f32,
    *,
    role: str = "query",
    formula: str = "rounded",
    pos_rounder: Callable[[np.ndarray], np.ndarray] | None = None,
    theta_rounder: Callable[[np.ndarray], np.ndarray] | None = None,
    reduction: bool = False,
    seq_len: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin as a typical kernel makes them: ``positions * inv_freq`` and cos/sin in
    float32, every intermediate passed through ``rounder`` (float32 by default; ``bf16``
    for bfloat16 angles).

    Handles what rope_ref handles: dynamic schedules (the length read from the positions,
    as rope_ref does, unless ``seq_len``), multi-axis positions, attention factors and xPos.
    ``formula`` picks how inv_freq is formed (see :func:`inv_freq32`); ``pos_rounder`` /
    ``theta_rounder`` round only the positions / only inv_freq (default: ``rounder``);
    ``reduction=True`` reduces the angle modulo 2 pi in float32 before cos/sin (fast-math
    ``__sinf``/``__cosf``). Float32 NumPy arrays of shape
    ``rope.token_shape(positions.shape) + (n_pairs,)``.
    """
    pos = np.asarray(positions)
    sl = dynamic_length(rope, pos.astype(np.float64), seq_len)
    theta = (theta_rounder or rounder)(inv_freq32(rope, formula, sl))
    p = (pos_rounder or rounder)(pos.astype(np.float32))
    ang = rounder(_per_pair(rope, p) * theta)
    if reduction:
        two_pi = np.float32(2 * math.pi)
        k = np.floor(f32(ang * np.float32(1 / (2 * math.pi))))
        ang = f32(ang - f32(k * two_pi))
    c = f32(np.cos(ang.astype(np.float64)) if reduction else np.cos(ang))
    s = f32(np.sin(ang.astype(np.float64)) if reduction else np.sin(ang))
    f = np.float32(rope._attention_factor(sl))
    if f != 1:
        c, s = f32(c * f), f32(s * f)
    if rope.scaling is not None:
        xp = _compat.array_namespace()
        mag = rope.scaling.magnitude(
            xp, pos.astype(np.float64), rope, role=role, seq_len=sl, dtype=xp.float64
        )
        if mag is not None:
            mg = np.asarray(mag, dtype=np.float32)
            c, s = f32(c * mg), f32(s * mg)
    return c, s


def rotate(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, rope: Rope) -> np.ndarray:
    """Rotate in float64 NumPy with given per-token, per-pair tables (broadcast): rope_ref's
    rotation kernel (:mod:`rope_ref._rotate`) in float64, not rounded."""

    c, s = np.asarray(cos, dtype=np.float64), np.asarray(sin, dtype=np.float64)
    x64 = np.asarray(x, dtype=np.float64)
    y = kernel(
        np, x64, c, s, rotary_dim=rope.rotary_dim, layout=rope.layout,
        offset=rope.rotary_offset, wd=np.float64,
    )  # fmt: skip
    return np.asarray(y)


def _tables_as_lead(rope: Rope, c: np.ndarray, lead: tuple[int, ...]) -> np.ndarray:
    return np.broadcast_to(c, (*lead, rope.n_pairs))


# ------------------------------------------------------------------------------- families
Candidate = tuple[str, dict[str, Any], Callable[[], np.ndarray]]
#: a float8 output: its format, the scale broadcast to the output, whether the kernel saturates
Quant = tuple[Float8Format, np.ndarray, bool]


class _Data:
    """What the families need, computed once."""

    def __init__(
        self,
        a: np.ndarray,
        d: np.ndarray,
        x: np.ndarray,
        pos: np.ndarray,
        rope: Rope,
        seq_len: int | None,
        role: str,
        dtype: str,
        quant: Quant | None = None,
    ) -> None:
        self.a, self.d, self.x, self.pos, self.rope = a, d, x, pos, rope
        self.seq_len, self.role, self.dtype = seq_len, role, dtype
        self.quant = quant
        self._y: np.ndarray | None = None
        self.lead = tuple(a.shape[:-1])
        fin = np.isfinite(a) & np.isfinite(d)
        self.fin = fin
        self.e0 = float(np.sum(np.where(fin, a - d, 0.0) ** 2))

    def apply(
        self, rope: Rope | None = None, pos: np.ndarray | None = None, x: np.ndarray | None = None
    ) -> np.ndarray:

        r = self.rope if rope is None else rope
        return np.asarray(
            apply_rope(
                self.x if x is None else x,
                self.pos if pos is None else pos,
                r,
                seq_len=self.seq_len,
                role=self.role,
            ),
            dtype=np.float64,
        )

    @property
    def y(self) -> np.ndarray:
        """The exact rotation of x, unclamped (computed once)."""
        if self._y is None:
            self._y = self.apply()
        return self._y

    def quantize(self, v: np.ndarray) -> np.ndarray:
        """A float8 output's value for a kernel whose rotation gave ``v``: ``v / s``
        clamped (a saturating kernel), rounded to the format, dequantized."""
        assert self.quant is not None
        fmt, s, sat = self.quant
        with np.errstate(all="ignore"):
            out: np.ndarray = round_float8(v / s, fmt, saturate=sat) * s
        return out

    def tables(self, c: np.ndarray, s: np.ndarray) -> np.ndarray:
        return rotate(
            self.x,
            _tables_as_lead(self.rope, c, self.lead),
            _tables_as_lead(self.rope, s, self.lead),
            self.rope,
        )

    def explained(self, y: np.ndarray) -> float:
        if self.e0 == 0:
            return 0.0
        if y.shape != self.a.shape:
            return -math.inf
        r = np.where(self.fin, self.a - y, 0.0)
        bad = self.fin & ~np.isfinite(y)
        if np.any(bad):
            return -math.inf
        return 1.0 - float(np.sum(r**2)) / self.e0


def _replace_rope(rope: Rope, **kw: Any) -> Rope:
    args: dict[str, Any] = dict(
        base=rope.base, rotary_dim=rope.rotary_dim, layout=rope.layout, scaling=rope.scaling
    )
    head_dim = kw.pop("head_dim", rope.head_dim)
    args.update(kw)
    return Rope(head_dim, **args)


def _families(D: _Data) -> Iterator[tuple[str, list[Candidate]]]:
    """Each family with its candidates (name, params, simulation)."""
    rope, pos = D.rope, D.pos
    other = "interleaved" if rope.layout == "half" else "half"
    yield (
        "layout",
        [
            (
                f"the other layout ({other!r} instead of {rope.layout!r})",
                {"layout": other},
                lambda: D.apply(_replace_rope(rope, layout=other)),
            )
        ],
    )
    ia, ib = pair_channels(rope)
    oa, ob = pair_channels(_replace_rope(rope, layout=other))

    def permuted(
        src_a: np.ndarray, src_b: np.ndarray, dst_a: np.ndarray, dst_b: np.ndarray
    ) -> np.ndarray:
        y = D.d.copy()
        y[..., dst_a] = D.d[..., src_a]
        y[..., dst_b] = D.d[..., src_b]
        return y

    yield (
        "permutation",
        [
            (
                f"the interleave permutation: the right result with its channels in {other} pair "
                "order",
                {"order": other},
                lambda: permuted(ia, ib, oa, ob),
            )
        ],
    )
    shifts = [1, -1, 2, -2]
    est = _estimate_shift(D)
    if est is not None and est not in shifts and est != 0:
        shifts.append(est)
    yield (
        "shift",
        [
            (f"positions shifted by {k:+d}", {"shift": k}, functools.partial(D.apply, pos=pos + k))
            for k in shifts
        ],
    )
    yield (
        "sign",
        [
            (
                "rotation by -m (sin sign flipped, or q/k rotated the wrong way)",
                {},
                lambda: D.apply(pos=-pos),
            )
        ],
    )
    if rope.scaling is not None and _scheme(rope) is None:
        yield (
            "no-scaling",
            [
                (
                    "the frequency scaling not applied",
                    {},
                    lambda: D.apply(_replace_rope(rope, scaling=None)),
                )
            ],
        )
    sl = dynamic_length(rope, pos, D.seq_len)
    af = rope._attention_factor(sl)
    if af != 1.0:
        yield (
            "factor",
            [
                (
                    f"the attention factor {af:.6g} missing from cos and sin",
                    {"factor": af},
                    lambda: D.d / af,
                ),
                (f"the attention factor {af:.6g} applied twice", {"factor": af}, lambda: D.d * af),
            ],
        )

    yield from _scale_families(D, af)
    if rope.scaling is not None and type(rope.scaling).magnitude is not _BaseScaling.magnitude:
        other_role = "key" if D.role == "query" else "query"

        def role_swapped() -> np.ndarray:
            return np.asarray(
                apply_rope(D.x, pos, rope, seq_len=D.seq_len, role=other_role), dtype=np.float64
            )

        yield (
            "role",
            [
                (
                    f"the {other_role}'s magnitude on a {D.role} (xPos role swapped: "
                    "queries scale up, keys down)",
                    {"role": other_role},
                    role_swapped,
                )
            ],
        )

    def swapped() -> np.ndarray:
        c, s = rope.cos_sin(pos, seq_len=D.seq_len, role=D.role)
        return D.tables(np.asarray(s), np.asarray(c))

    yield "swap", [("cos and sin swapped", {}, swapped)]

    def lp(**kw: Any) -> Callable[[], np.ndarray]:
        def run() -> np.ndarray:
            c, s = low_precision_cos_sin(rope, pos, role=D.role, seq_len=D.seq_len, **kw)
            return D.tables(c, s)

        return run

    yield (
        "float32-angles",
        [
            (
                f"angles formed in float32 ({FORMULAS[f]}; positions * inv_freq in float32, an "
                "elementwise product or a float32 matmul (n,1)@(1,k): the same products)",
                {"formula": f},
                lp(formula=f),
            )
            for f in ("rounded", "reciprocal", "power", "explog")
        ],
    )
    yield (
        "bfloat16-angles",
        [
            (
                "angles formed in bfloat16 (positions and inv_freq in bfloat16)",
                {"format": "bfloat16"},
                lp(rounder=bf16),
            ),
            (
                "angles formed in float16 (positions and inv_freq in float16)",
                {"format": "float16"},
                lp(rounder=f16),
            ),
        ],
    )
    yield (
        "half-positions",
        [
            (
                f"positions rounded to {n} before the float32 product",
                {"format": n},
                lp(pos_rounder=r, formula=f),
            )
            for n, r in (("bfloat16", bf16), ("float16", f16))
            for f in ("rounded", "reciprocal")
        ],
    )
    yield (
        "half-inv-freq",
        [
            (
                f"inv_freq stored in {n} (a model instantiated in {n}, then upcast), angles in "
                "float32",
                {"format": n, "formula": f},
                lp(theta_rounder=lambda t, r=r: r(t), formula=f),
            )
            for n, r in (("bfloat16", bf16), ("float16", f16))
            for f in ("reciprocal", "rounded")
        ],
    )
    yield (
        "fast-math",
        [
            (
                "fast-math sin/cos: the float32 angle reduced modulo 2 pi in float32 (CUDA "
                "__sinf/__cosf, use_fast_math) before sin/cos",
                {"formula": f},
                lp(reduction=True, formula=f),
            )
            for f in ("rounded", "reciprocal")
        ],
    )

    def tables_in(r: Callable[[Any], np.ndarray]) -> Callable[[], np.ndarray]:
        def run() -> np.ndarray:
            c, s = rope.cos_sin(pos, seq_len=D.seq_len, role=D.role)
            return D.tables(
                r(np.asarray(c)).astype(np.float64), r(np.asarray(s)).astype(np.float64)
            )

        return run

    yield (
        "table-dtype",
        [
            (
                f"cos/sin tables rounded to {n} (kept in the model dtype)",
                {"format": n},
                tables_in(r),
            )
            for n, r in ROUNDERS.items()
            if n != D.dtype
        ],
    )
    yield "base", list(_base_candidates(D))
    yield "channels", list(_channel_candidates(D))
    if rope.scaling is not None and dataclasses.is_dataclass(rope.scaling):
        yield "schedule", list(_schedule_candidates(D))
    # last: where a schedule parameter gives the same output, the parameter is named first
    yield "common", list(_common_candidates(D, skip_offsets={*shifts}))


def _fitted_factor(D: _Data) -> float | None:
    """The least-squares constant k with ``actual ~ k * desired`` (a float8 output: over the
    elements neither saturates), or None where undetermined."""
    ok = D.fin & (D.d != 0)
    if D.quant is not None:
        fmt, s, _ = D.quant
        with np.errstate(invalid="ignore"):
            ok &= (np.abs(D.a) < fmt.fmax * s) & (np.abs(D.d) < fmt.fmax * s)
    dd = float(np.sum(np.where(ok, D.d, 0.0) ** 2))
    if dd == 0 or not math.isfinite(dd):
        return None
    k = float(np.sum(np.where(ok, D.a * D.d, 0.0))) / dd
    return k if math.isfinite(k) and k > 0 else None


def _near(k: float, ref: float, rel: float) -> bool:
    return ref > 0 and abs(k / ref - 1.0) < rel


def _scale_families(D: _Data, af: float) -> Iterator[tuple[str, list[Candidate]]]:
    """A float8 output's scale mistakes (each simulated through the quantization), and an
    output off by a constant factor k (fitted; left out where the attention factor or a
    float8 scale mistake names the same factor)."""
    named: list[float] = [af, 1.0 / af] if af != 1.0 else []
    if D.quant is not None:
        fmt, s, _ = D.quant
        s_one = float(s.flat[0]) if s.size and np.all(s == s.flat[0]) else None
        if s_one is not None:
            named += [1.0 / s_one, s_one * s_one]
        x8 = round_float8(D.x / s, fmt) * s
        yield (
            "float8-scale",
            [
                ("the scale applied twice (y / scale / scale)", {}, lambda: D.y / s),
                (
                    "the output is y * scale, not y / scale: the kernel multiplies by its scale "
                    "(flashinfer's quant_scale, TransformerEngine's scale) and scale= was given "
                    "as that multiplier (pass scale=1/quant_scale), or the kernel multiplies "
                    "where it should divide",
                    {},
                    lambda: D.y * s * s,
                ),
                (
                    "quantized before the rotation (x rounded to float8 with the scale, then "
                    "rotated and rounded again)",
                    {},
                    lambda: D.apply(x=x8),
                ),
            ],
        )
    k = _fitted_factor(D)
    if k is None or _near(k, 1.0, 1e-9) or any(_near(k, r, 1e-2) for r in named):
        return
    ks = [k, float(f"{k:.3g}")]
    if D.quant is not None:
        ks.append(1.0 / float(f"{1.0 / k:.3g}"))
    cands: list[Candidate] = []
    for kk in dict.fromkeys(ks):
        name = f"the output off by a constant factor {kk:.4g}"
        if D.quant is not None:
            name += f" (a float8 output: the scale off by a factor {1.0 / kk:.4g})"
        cands.append(
            (name, {"factor": kk, "fitted": True}, functools.partial(np.multiply, D.y, kk))
        )
    yield "constant-factor", cands


def _pair_phases(D: _Data) -> tuple[np.ndarray, np.ndarray] | None:
    """Per (token, pair): the phase the output turned each pair by, and the position."""
    ia, ib = pair_channels(D.rope)
    za = D.a[..., ia] + 1j * D.a[..., ib]
    zx = D.x[..., ia] + 1j * D.x[..., ib]
    with np.errstate(invalid="ignore", divide="ignore"):
        ph = np.angle(za * np.conj(zx))

    try:
        m = token_positions(D.rope, D.pos, D.lead)
    except Exception:
        return None
    ok = (np.abs(zx) > 0) & np.isfinite(ph)
    ph = np.where(ok, ph, np.nan)
    return ph.reshape(-1, D.rope.n_pairs), np.asarray(m, dtype=np.float64).reshape(
        -1, D.rope.n_pairs
    )


def _slopes(D: _Data) -> np.ndarray | None:
    """Per pair, the frequency the output's phase grows with (nan where undetermined),
    from tokens one position step apart."""
    got = _pair_phases(D)
    if got is None:
        return None
    ph, m = got
    n = D.rope.n_pairs
    out = np.full(n, np.nan)
    for j in range(n):
        mj, pj = m[:, j], ph[:, j]
        keep = np.isfinite(pj)
        mj, pj = mj[keep], pj[keep]
        if mj.size < 2:
            continue
        order = np.argsort(mj, kind="stable")
        mj, pj = mj[order], pj[order]
        dm = np.diff(mj)
        sel = dm > 0
        if not np.any(sel):
            continue
        step = float(np.min(dm[sel]))
        use = sel & (dm == step)
        dphi = np.angle(np.exp(1j * np.diff(pj)[use]))
        w = float(np.median(dphi)) / step
        # refine over the widest span, then with the absolute phase at the largest |m|
        # (each step keeps the phase that the previous estimate predicts, unwrapped)
        span = float(mj[-1] - mj[0])
        if span > step:
            w = (w * span + float(np.angle(np.exp(1j * (pj[-1] - pj[0] - w * span))))) / span
        k = int(np.argmax(np.abs(mj)))
        if mj[k] != 0:
            w = (w * mj[k] + float(np.angle(np.exp(1j * (pj[k] - w * mj[k]))))) / mj[k]
        out[j] = w
    return out


def _estimate_shift(D: _Data) -> int | None:
    """The position shift that best matches the phase error per pair (rounded)."""
    got = _pair_phases(D)
    if got is None:
        return None
    ph, m = got
    theta = np.asarray(D.rope.inv_freq(seq_len=dynamic_length(D.rope, D.pos, D.seq_len)))
    want = np.angle(np.exp(1j * (m * theta)))
    err = np.angle(np.exp(1j * (ph - want)))
    # pairs whose frequency is small enough that the shift's phase does not wrap
    use = theta < 0.1
    if not np.any(use):
        return None
    k = np.nanmedian(err[:, use] / theta[use])
    if not np.isfinite(k) or abs(k) > 1e6:
        return None
    return round(float(k))


def _estimate_scale(D: _Data) -> float | None:
    """The factor the positions look scaled by: the median ratio of each pair's phase slope
    (the frequency the output turns with) to its frequency, rounded to 4 significant
    digits; None when undetermined or not positive."""
    slopes = _slopes(D)
    if slopes is None:
        return None
    theta = np.asarray(D.rope.inv_freq(seq_len=dynamic_length(D.rope, D.pos, D.seq_len)))
    good = np.isfinite(slopes) & (theta > 0)
    if not np.any(good):
        return None
    k = float(np.median(slopes[good] / theta[good]))
    if not math.isfinite(k) or not 1e-6 < k < 1e6:
        return None
    return float(f"{k:.4g}")


def _offset_estimates(D: _Data) -> list[int]:
    """Constant position offsets the phase error suggests: the median of phase error over
    frequency among pairs slow enough not to wrap, for a few bounds on the frequency (a
    large offset wraps all but the slowest pairs), and the offset that restarts the
    positions at 0 (a dropped KV-cache offset)."""
    got = _pair_phases(D)
    out: list[int] = []
    if got is not None:
        ph, m = got
        theta = np.asarray(D.rope.inv_freq(seq_len=dynamic_length(D.rope, D.pos, D.seq_len)))
        err = np.angle(np.exp(1j * (ph - np.angle(np.exp(1j * (m * theta))))))
        for bound in (1e-1, 1e-2, 1e-3, 1e-4, 1e-5):
            use = theta < bound
            if not np.any(use) or not np.any(np.isfinite(err[:, use])):
                continue
            with np.errstate(all="ignore"):
                k = float(np.nanmedian(err[:, use] / theta[use]))
            if math.isfinite(k) and abs(k) < 1e9:
                out.append(round(k))
    if D.pos.size and np.all(np.isfinite(D.pos)):
        out.append(-round(float(np.min(D.pos))))
    return out


def _common_candidates(D: _Data, skip_offsets: set[int]) -> Iterator[Candidate]:
    """The most common pipeline bugs: no rotation, positions scaled or offset, rotary on
    the first channels only, one sequence's positions used for the whole batch."""
    rope, pos = D.rope, np.asarray(D.pos)
    yield (
        "rotation not applied (the input returned as it came, or every position 0)",
        {},
        functools.partial(D.apply, pos=np.zeros_like(pos)),
    )
    for k in (2.0, 3.0, 0.5):
        why = ": the rotation applied twice" if k == 2.0 else ""
        yield (
            f"positions scaled by {k:g} (x{k:g}{why})",
            {"scale": k},
            functools.partial(D.apply, pos=pos * k),
        )
    sc = rope.scaling
    f = float(getattr(sc, "factor", 1.0)) if type(sc).__name__ == "Linear" else 1.0
    if f > 0 and f != 1.0:
        # pos * f where the schedule divides (flashinfer's rope_scale, HF's factor read as a
        # multiplier): relative to the reference, positions scaled by f**2
        yield (
            f"the Linear factor inverted (positions x {f:g} instead of / {f:g}: scaled by "
            f"{f * f:g} relative to the reference)",
            {"scale": f * f},
            functools.partial(D.apply, pos=pos * (f * f)),
        )
    k_est = _estimate_scale(D)
    if k_est is not None and all(abs(k_est / k - 1) > 1e-3 for k in (1.0, 2.0, 3.0, 0.5, f * f)):
        yield (
            f"positions scaled by {k_est:.6g} (estimated from the per-pair phase slope)",
            {"scale": k_est, "fitted": True},
            functools.partial(D.apply, pos=pos * k_est),
        )
    seen = set(skip_offsets) | {0}
    for c in _offset_estimates(D):
        if c in seen:
            continue
        seen.add(c)
        yield (
            f"positions offset by a constant {c:+d}",
            {"offset": c},
            functools.partial(D.apply, pos=pos + c),
        )
    r = rope.rotary_dim

    def first(part: int) -> np.ndarray:  # built lazily: a schedule may refuse the width
        return D.apply(_replace_rope(rope, rotary_dim=part))

    for part in sorted({r // 2, r // 4, 3 * r // 4}, reverse=True):
        if part >= 2 and part % 2 == 0 and part < r:
            yield (
                f"rotary on the first {part} channels only (rotary_dim {part} instead of {r})",
                {"rotary_dim": part},
                functools.partial(first, part),
            )
    if _scheme(rope) is None and pos.ndim >= 2 and pos.shape[0] > 1:
        for b in range(min(pos.shape[0], 4)):
            one = np.broadcast_to(pos[b : b + 1], pos.shape)
            yield (
                f"one batch's positions used for all (batch {b}'s positions for every sequence)",
                {"batch": b},
                functools.partial(D.apply, pos=one),
            )


def _base_candidates(D: _Data) -> Iterator[Candidate]:
    rope = D.rope
    cands: list[float] = []
    estimated: set[float] = set()
    slopes = _slopes(D)
    if slopes is not None and _scheme(rope) is None:
        num, den = _ladder(rope)
        e = num / den
        good = np.isfinite(slopes) & (slopes > 0) & (e > 0)
        if np.sum(good) >= 2:
            # ln omega_j = ln s - e_j ln B: slope and intercept by least squares
            A = np.stack([np.ones(int(np.sum(good))), -e[good]], axis=1)
            coef, *_ = np.linalg.lstsq(A, np.log(slopes[good]), rcond=None)
            b_est = float(np.exp(coef[1]))
            if np.isfinite(b_est) and 1.0 < b_est < 1e12:
                cands.append(b_est)
                for digits in (1, 2, 3):
                    cands.append(float(f"{b_est:.{digits}g}"))
                estimated.update(cands)
    cands += [1e4, 5e5, 1e6, 1e5, 5e6, 1e7, 2.5e5, 1.5e5, 8e4, 75e4]
    seen: set[float] = {rope.base}
    for b in cands:
        if b in seen or not (b > 1.0) or abs(b / rope.base - 1) < 1e-6:
            continue
        seen.add(b)
        try:
            r = _replace_rope(rope, base=b)
        except Exception:
            continue
        how = "estimated from the per-pair phase slope" if b in estimated else "a common base"
        yield (
            f"a wrong base: {b:.6g} instead of {rope.base:.6g} ({how})",
            {"base": b},
            functools.partial(D.apply, r),
        )


def _channel_candidates(D: _Data) -> Iterator[Candidate]:
    rope = D.rope
    r, hd = rope.rotary_dim, rope.head_dim
    if r < hd:
        full = _replace_rope(rope, rotary_dim=hd)
        yield (
            "rotary applied to the whole head (rotary_dim ignored)",
            {"rotary_dim": hd},
            lambda: D.apply(full),
        )
        inner = _replace_rope(rope, head_dim=r)
        offsets = list(range(2, hd - r + 1, 2))
        if len(offsets) > 12:
            offsets = sorted({*offsets[:4], *offsets[-4:], (hd - r) // 2 // 2 * 2, hd - r})

        def at(s: int) -> np.ndarray:
            y = np.array(D.x, dtype=np.float64, copy=True)
            y[..., s : s + r] = D.apply(inner, x=D.x[..., s : s + r])
            return y

        for s in offsets:
            yield (
                f"rotary applied to channels {s}..{s + r - 1} instead of 0..{r - 1}",
                {"offset": s},
                functools.partial(at, s),
            )
    if rope.layout == "half" and r >= 4:
        # rotate_half splitting at the wrong place: pairs (i, i + h') for h' = h +- 1
        for dh in (-1, 1):
            h2 = r // 2 + dh

            def split(h2: int = h2) -> np.ndarray:
                c, s = D.rope.cos_sin(D.pos, seq_len=D.seq_len, role=D.role)
                c = _tables_as_lead(rope, np.asarray(c), D.lead)
                s = _tables_as_lead(rope, np.asarray(s), D.lead)
                y = np.array(D.x, dtype=np.float64, copy=True)
                n = min(h2, r - h2)
                xa, xb = D.x[..., :n].copy(), D.x[..., h2 : h2 + n].copy()
                y[..., :n] = xa * c[..., :n] - xb * s[..., :n]
                y[..., h2 : h2 + n] = xb * c[..., :n] + xa * s[..., :n]
                return y

            yield (
                f"pairs split at channel {h2} instead of {r // 2} (shifted channels)",
                {"split": h2},
                split,
            )


_COMMON = {
    "factor": (2.0, 4.0, 8.0, 16.0, 32.0, 40.0, 64.0),
    "beta_fast": (32.0, 16.0, 64.0, 8.0),
    "beta_slow": (1.0, 2.0, 0.5),
    "low_freq_factor": (1.0, 2.0, 4.0),
    "high_freq_factor": (4.0, 1.0, 2.0, 8.0),
    "original_max_position_embeddings": (2048, 4096, 8192, 16384, 32768, 131072),
    "max_position_embeddings": (2048, 4096, 8192, 32768, 131072),
}


def _schedule_candidates(D: _Data) -> Iterator[Candidate]:
    rope = D.rope
    sc = rope.scaling
    kind = type(sc).__name__
    for f in dataclasses.fields(sc):  # type: ignore[arg-type]
        if f.name not in _COMMON:
            continue
        v = getattr(sc, f.name)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        vals = [*list(_COMMON[f.name]), v * 2, v / 2]
        seen = {v}
        for w in vals:
            w = type(v)(w) if isinstance(v, int) else float(w)
            if w in seen or w <= 0:
                continue
            seen.add(w)
            try:
                new = dataclasses.replace(sc, **{f.name: w})  # type: ignore[type-var]
                r = _replace_rope(rope, scaling=new)
            except Exception:
                continue
            yield (
                f"wrong {kind} parameters: {f.name}={w:g} instead of {v:g}",
                {f.name: w},
                functools.partial(D.apply, r),
            )


#: above this many elements the families are fitted on a sample of tokens (the worst ones
#: and an even spread), which keeps a failure's diagnosis to a few seconds
LIMIT = 2**18


def _subsample(
    a: np.ndarray,
    d: np.ndarray,
    x: np.ndarray,
    pos: np.ndarray,
    rope: Rope,
    extra: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Tokens (rows of the flattened leading axes) to fit on, with their positions."""
    width = a.shape[-1]
    lead = a.shape[:-1]
    a2, d2, x2 = (t.reshape(-1, width) for t in (a, d, x))
    n = max(LIMIT // width, 1)
    err = np.max(np.where(np.isfinite(a2 - d2), np.abs(a2 - d2), np.inf), axis=1)
    worst = np.argsort(-err, kind="stable")[: n // 2]
    spread = np.linspace(0, a2.shape[0] - 1, n - worst.size).astype(np.int64)
    rows = np.unique(np.concatenate([worst, spread]))
    scheme = _scheme(rope)
    if scheme is None:
        p = np.broadcast_to(pos, lead).reshape(-1)[rows]
    elif scheme.axis_position == "leading":
        k, tok = pos.shape[0], pos.shape[1:]
        aligned = pos.reshape((k,) + (1,) * (len(lead) - len(tok)) + tok)
        p = np.broadcast_to(aligned, (k, *lead)).reshape(k, -1)[:, rows]
    else:
        k = pos.shape[-1]
        p = np.broadcast_to(pos, (*lead, k)).reshape(-1, k)[rows]
    e2 = None if extra is None else np.broadcast_to(extra, a.shape).reshape(-1, width)[rows]
    return a2[rows], d2[rows], x2[rows], p, e2


def _best_candidate(
    D: _Data, family: str, cands: list[Candidate]
) -> tuple[float, str, dict[str, Any], np.ndarray] | None:
    """The family's candidate that explains most (a float8 output: simulated through the
    quantization), its name noting candidates that give the same output; None if none ran."""
    best: tuple[float, str, dict[str, Any], np.ndarray] | None = None
    ties: list[str] = []
    for name, params, make in cands:
        try:
            with np.errstate(all="ignore"):
                y = np.asarray(make(), dtype=np.float64)
                if D.quant is not None:
                    y = D.quantize(y)
        except Exception:
            continue
        ex = D.explained(y)
        if params.get("fitted") and ex < EXPLAINED:
            # a parameter fitted to the data (a factor, an estimated scale) always removes
            # some of any error: it is a diagnosis only where it explains the data
            continue
        if best is not None and ex == best[0] and np.array_equal(y, best[3]):
            if name != best[1] and name not in ties:  # the same text twice says nothing
                ties.append(name)
        elif best is None or ex > best[0]:
            best = (ex, name, {"family": family, **params}, y)
            ties = []
    if best is not None and ties:
        name = best[1] + " (indistinguishable here from: " + "; ".join(ties) + ")"
        best = (best[0], name, best[2], best[3])
    return best


def fit_hypotheses(
    actual: np.ndarray,
    desired: np.ndarray,
    x: np.ndarray,
    positions: np.ndarray,
    rope: Rope,
    *,
    seq_len: int | None = None,
    role: str = "query",
    dtype: str = "float64",
    quant: Quant | None = None,
) -> tuple[Hypothesis, ...]:
    """Fit every family of the usual mistakes to ``actual`` (float64 NumPy arrays; ``x`` the
    input, ``desired`` the reference) and return the best candidate of each family that
    explains anything, best first. Candidates whose simulation cannot run on this data are
    skipped. Hypotheses that give the same output are merged (the text says so). ``quant``
    (a float8 output: format, scale, saturate; ``actual`` and ``desired`` dequantized)
    passes every simulation through the quantization and adds the scale mistakes."""
    a = np.asarray(actual, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    if x.shape != a.shape:
        return ()
    d = np.asarray(desired, dtype=np.float64)
    pos = np.asarray(positions)
    scale = None if quant is None else np.broadcast_to(quant[1], a.shape)
    if a.size > LIMIT:
        a, d, x, pos, scale = _subsample(a, d, x, pos, rope, scale)
    q = None if quant is None or scale is None else (quant[0], scale, quant[2])
    D = _Data(a, d, x, pos, rope, seq_len, role, dtype, q)
    if D.e0 == 0 or not math.isfinite(D.e0):
        return ()
    results: list[tuple[float, int, str, dict[str, Any], np.ndarray]] = []
    for order, (family, cands) in enumerate(_families(D)):
        best = _best_candidate(D, family, cands)
        if best is not None and best[0] >= MINIMUM:
            results.append((best[0], order, best[1], best[2], best[3]))
    results.sort(key=lambda t: (-round(t[0], 9), t[1]))
    out: list[Hypothesis] = []
    kept: list[tuple[Hypothesis, np.ndarray]] = []
    for ex, _, name, params, y in results:
        twin = next((h for h, yy in kept if np.array_equal(yy, y)), None)
        if twin is not None:
            if name in twin.text:  # the same text: nothing to add
                continue
            i = out.index(twin)
            merged = dataclasses.replace(
                twin, text=twin.text + f" (indistinguishable here from: {name})"
            )
            out[i] = merged
            kept = [(merged if h is twin else h, yy) for h, yy in kept]
            continue
        h = Hypothesis(
            name, float(ex), params, f"{name} (explains {100 * ex:.4g}% of the squared error)"
        )
        out.append(h)
        kept.append((h, y))
    return tuple(out)


def diagnose(
    actual: np.ndarray,
    x: np.ndarray,
    positions: np.ndarray,
    rope: Rope,
    *,
    rtol: float = 0.0,
    atol: float = 0.0,
    error: float = 0.0,
    seq_len: int | None = None,
    role: str = "query",
) -> list[str]:
    """The fitted mistakes that explain ``actual`` (at least ``EXPLAINED`` of the squared
    error against the reference), as texts, best first. ``rtol``, ``atol`` and ``error``
    are accepted for compatibility and unused."""

    del rtol, atol, error
    x64 = np.asarray(x, dtype=np.float64)
    want = np.asarray(apply_rope(x64, positions, rope, seq_len=seq_len, role=role))
    hyps = fit_hypotheses(actual, want, x64, positions, rope, seq_len=seq_len, role=role)
    return [h.text for h in hyps if h.explained >= EXPLAINED]
