r"""The error model behind ``assert_close``: an allowance per output element.

For a RoPE output element in rotary pair j of a token whose pair j turns with position m
(the position of the axis that drives pair j for multi-axis schemes), with rho the magnitude
of the desired pair (``hypot`` of its two channels; it includes the attention factor and the
xPos magnitude), the allowance is

.. math::

    A_{\text{exact}} = K_{\text{out}} u_{\text{out}} \rho + \text{tiny}

    A_{\text{angles}} = A_{\text{exact}} + \min\bigl(
        |m| \theta'_j (C_{\ln} |\ln\theta'_j| + C_{\text{angle}}) u_a
        + (|\ln \mu_j(m)| + C_{\text{table}}) u_a,\; 2\bigr) \rho

with u_out the unit roundoff of the dtype under test, u_a = min(u_out, 2**-24) (angles are
formed in float32 at least), theta'_j the frequency actually used (after scaling, with the
dynamic schedules' length), mu_j the xPos magnitude (1 otherwise), K_out = 8,
C_ln = 4, C_angle = 6, C_table = 4. The derivation is on the accuracy page ("The error model of
assert_close"). Pass-through channels are allowed K_out u_out |desired|.

Float8 outputs ("rotary then quantize")
---------------------------------------

A kernel with a float8 output computes the rotation in a wider *intermediate* dtype w
(float32, or bfloat16 / float16 when it rotates in the model's dtype first), scales by the
per-tensor (or per-head) scale s and rounds once to the float8 format:
``q = fp8(clamp(fl(y_w / s), -fmax, fmax))``. With y the exact rotation, the target is
T = clamp(y / s, -fmax, fmax) (``saturate=True``; the value such a kernel must produce), and
the errors chain as follows (all bounds per element; A_w is the intermediate's own allowance
from the model above, the pair allowance bounding each channel of the pair):

1. the intermediate: ``|y_w - y| <= A_w``;
2. the scaling, a division or a product with a rounded reciprocal, in w or in float32, the
   coarser: at most two roundings, ``u_div = 2 max(u_w, 2**-24)``, so
   ``|z - y/s| <= D/s`` with ``D = (1 + u_div) A_w + u_div |y|``;
3. the clamp is 1-Lipschitz: ``|c - T| <= |z - y/s| <= D/s``;
4. one rounding to the float8 format, to nearest: ``|fp8(c) - c| <= h(|c|)``, h(v) half the
   spacing of the format's lattice in the binade of v (``2**(e - p)`` for ``2**e <= v <
   2**(e+1)``, p the significand bits: 4 for e4m3, 3 for e5m2; below the smallest normal
   eta, half the smallest subnormal: e4m3fn 2**-10, e5m2 2**-17, e4m3fnuz 2**-11,
   e5m2fnuz 2**-18). h is non-decreasing, and ``|c| <= min(|T| + D/s, fmax)``. (u8 |c|,
   u8 = 2**-p, is the same bound at the bottom of a binade and twice it at the top.)

Against the unquantized reference y (``compare(..., scale=s)``: the comparison is made on the
dequantized values ``q * s`` against ``clamp(y, -fmax s, fmax s)``, in the reference's units):

.. math::

    A_{8} = s\, h\bigl(\min(|T| + D/s, f_{\max})\bigr) + D + 2^{-52} |T s|

(the last term: the float64 products q s).

Against the exactly rounded float8 reference d = fp8(T) (two float8 arrays, no scale:
``Case.expected()`` of a quantized case), in float8 units (D/s written D): T lies in d's
rounding interval ``[d - h_-(d), d + h_+(d)]`` (h_+ and h_- half the gaps to d's upper and
lower lattice neighbours: they differ at a power of two), c within D of T, and rounding is
monotone, so a correct result lies in ``[c_lo - h(c_lo), c_hi + h(c_hi)]`` with ``c_hi =
min(d + h_+ + D, fmax)`` and ``c_lo = max(d - h_- - D, -fmax)``. The allowance is the side
the result lies on:

.. math::

    A_{8,8} = c_{hi} + h(c_{hi}) - d \ \ (q > d), \qquad d - c_{lo} + h(c_{lo}) \ \ (q \le d)

which is the gap to the lattice neighbour on that side plus D while D is below a spacing
(binade crossings, the subnormal range and zero included): one float8 step. The
intermediate's allowance is taken at ``|T| <= |d| + h(|d|)``. Without more information one
step is allowed everywhere, since T may lie anywhere in d's rounding interval. Given the
input ``x`` (``compare(q8, d, x=x, rope=..., positions=...)``), y is known and the scale is
bounded from the reference itself, per row of the last axis (a per-tensor, per-head or
per-token scale is constant along it): ``|y| / (|d| + h_+) <= s <= |y| / (|d| - h_-)``
over the row's elements. Then T lies in ``[y / s_hi, y / s_lo]`` (clamped), c_hi and c_lo
are taken from that interval instead of d's, and one step is allowed only near a midpoint.

A pair with a saturated channel: the reference's clamped magnitude understates the pair's
true magnitude rho, and the intermediate's error on the *other* channel scales with rho
(unbounded from d alone). With ``x`` the row's lower bound on s bounds it: ``rho / s <=
|(y_a, y_b)| / s_lo``. Without ``x``, or in a row with no unsaturated element, the elements
whose partner saturates are not judged (any finite value in range passes) and the report
says so in ``blind_spots`` (a serious one: ``assert_close`` warns). A saturated channel
whose partner is not saturated is judged: ``fmax - c`` is largest where ``|y/s| = fmax``,
where rho is the clamped pair's.

Saturation: where ``|y / s| > fmax`` the saturating kernel's correct result is ``±fmax`` (the
target is clamped). A kernel that does not clamp overflows in the cast: NaN for the formats
without infinities (e4m3fn, the fnuz formats), ±inf for e5m2, wherever ``|z|`` exceeds
``fmax`` by half the top ulp (464 for e4m3fn, 61440 for e5m2). With ``saturate=False`` that
overflow is the expected value where ``|y/s| - D/s`` is beyond it, either is accepted within
``D/s`` of it; with ``saturate=True`` (the default) a NaN or inf where the target is finite is a
failure named as an overflow. Both classes of the model carry over: A_w is the intermediate's
"exact" or "lower-precision angles" allowance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._errors import RopeTypeError, RopeValueError
from .._rope import Rope

__all__ = [
    "C_ANGLE",
    "C_LN",
    "C_TABLE",
    "FLOAT8",
    "K_OUT",
    "Float8Format",
    "PairModel",
    "dtype_name",
    "float8_allowance",
    "float8_format",
    "float8_rounded_allowance",
    "half_spacing",
    "half_spacing_below",
    "pair_channels",
    "pair_model",
    "round_float8",
    "tiny",
    "unit_roundoff",
]

#: output rounding: a few roundings per element (tables rounded to the output dtype, two
#: products, a sum, the attention factor, the reference's own rounding)
K_OUT = 8.0
#: coefficient of |ln theta'| u in the angle's relative error: inv_freq = exp(t) with
#: t = ln theta' formed in float32 carries the relative errors of t's own roundings times |t|.
#: The exp/log form ``exp(arange(0, d, 2) * -(log(base) / d))`` rounds log(base) (1 ulp: 2u),
#: the quotient (u) and the product with the index (u): 4; ``base ** (-arange / d)`` and
#: ``1 / base ** (arange / d)`` round the exponent once (1); exp2/log2 forms as exp/log (4)
C_LN = 4.0
#: relative error of the angle m * theta' beyond C_ln |ln theta'| u: exp or pow (up to 2 ulp),
#: the reciprocal, the schedule's few operations, the position's rounding above 2**24 and the
#: product's rounding
C_ANGLE = 6.0
#: absolute error of cos/sin tables in the angle precision: 1-2 ulp of the function (a
#: vector of two such errors), the attention factor's product
C_TABLE = 4.0

# unit roundoff u = 2**-p of the formats a kernel may compute in
_U = {
    "float64": 2.0**-53,
    "float32": 2.0**-24,
    "float16": 2.0**-11,
    "bfloat16": 2.0**-8,
    "float8_e4m3fn": 2.0**-4,
    "float8_e4m3fnuz": 2.0**-4,
    "float8_e5m2": 2.0**-3,
    "float8_e5m2fnuz": 2.0**-3,
}
_TINY = {
    "float64": 2.0**-1022,
    "float32": 2.0**-126,
    "float16": 2.0**-14,
    "bfloat16": 2.0**-126,
    "float8_e4m3fn": 2.0**-6,
    "float8_e4m3fnuz": 2.0**-7,
    "float8_e5m2": 2.0**-14,
    "float8_e5m2fnuz": 2.0**-15,
}
#: significand bits (with the implicit one) of each format
BITS = {name: round(-math.log2(u)) for name, u in _U.items()}
U32 = 2.0**-24


def _abs_log(theta: np.ndarray) -> np.ndarray:
    """|ln theta|, 0 where theta is 0 (a pair that never turns: its angle is exactly 0)."""
    pos = theta > 0
    return np.where(pos, np.abs(np.log(np.where(pos, theta, 1.0))), 0.0)


def dtype_name(dtype: Any) -> str:
    """'float64', 'float32', 'float16', 'bfloat16' or a float8 format name
    ('float8_e4m3fn', 'float8_e4m3fnuz', 'float8_e5m2', 'float8_e5m2fnuz') for any library's
    dtype (or its name)."""
    name = str(dtype).split(".")[-1].replace("'>", "").replace("dtype(", "").strip("')\"")
    for key in ("float8_e4m3fnuz", "float8_e4m3fn", "float8_e5m2fnuz", "float8_e5m2"):
        if key in name:  # the fnuz formats differ in range (fmax, subnormals, no inf)
            return key
    for key in ("bfloat16", "float64", "float32", "float16"):  # bfloat16 before float16
        if key in name:
            return key
    return name


def unit_roundoff(dtype: Any) -> float:
    """u = 2**-p for the dtype under test (float64, float32, float16, bfloat16, float8).

    Parameters
    ----------
    dtype : dtype or str
        A real floating dtype of any library, or its name.

    Returns
    -------
    float
        The unit roundoff (half the spacing of the format just above 1).

    Raises
    ------
    RopeTypeError
        For a dtype that is not one of the real floating formats above.
    """
    name = dtype_name(dtype)
    if name not in _U:
        raise RopeTypeError(f"dtype must be a real floating dtype, got {dtype}")
    return _U[name]


def tiny(dtype: Any) -> float:
    """The smallest normal number of the dtype under test (the allowance's floor)."""
    return _TINY.get(dtype_name(dtype), 2.0**-1022)


@dataclass(frozen=True)
class Float8Format:
    """A float8 format: significand bits (the implicit one included), range and overflow.

    ``u`` is the unit roundoff, ``eta`` half the smallest subnormal (the absolute error of a
    rounding near zero), ``overflow`` the magnitude from which a rounding to nearest that
    does not saturate leaves the range (fmax plus half the spacing at the top; a value equal
    to it rounds to fmax only where fmax's last significand bit is even: e4m3fn).
    """

    name: str
    bits: int
    fmax: float
    min_normal: float
    min_subnormal: float
    has_inf: bool

    @property
    def u(self) -> float:
        """The unit roundoff 2**-bits."""
        return 2.0**-self.bits

    @property
    def eta(self) -> float:
        """Half the smallest subnormal."""
        return self.min_subnormal / 2

    @property
    def overflow(self) -> float:
        """fmax plus half the spacing of the top binade."""
        return self.fmax + 2.0 ** (math.floor(math.log2(self.fmax)) - self.bits)

    @property
    def overflow_value(self) -> float:
        """What a cast that does not saturate gives beyond ``overflow``: inf (e5m2, with the
        sign) or NaN (the formats without infinities)."""
        return math.inf if self.has_inf else math.nan


#: the float8 formats of PyTorch and ml_dtypes (OCP e4m3fn / e5m2 and the fnuz variants)
FLOAT8 = {
    f.name: f
    for f in (
        Float8Format("float8_e4m3fn", 4, 448.0, 2.0**-6, 2.0**-9, False),
        Float8Format("float8_e4m3fnuz", 4, 240.0, 2.0**-7, 2.0**-10, False),
        Float8Format("float8_e5m2", 3, 57344.0, 2.0**-14, 2.0**-16, True),
        Float8Format("float8_e5m2fnuz", 3, 57344.0, 2.0**-15, 2.0**-17, False),
    )
}


def float8_format(dtype: Any) -> Float8Format | None:
    """The :class:`Float8Format` of a float8 dtype (any library's, or its name), else None."""
    return FLOAT8.get(dtype_name(dtype))


def round_float8(v: np.ndarray, fmt: Float8Format, *, saturate: bool = True) -> np.ndarray:
    """``v`` (float64) rounded to nearest, ties to even, to the float8 format, held in float64.

    ``saturate=True`` clamps to [-fmax, fmax] first (infinities included); otherwise values
    that round beyond fmax become the format's overflow value (inf or NaN). NaN stays NaN.
    """
    v = np.asarray(v, dtype=np.float64)
    if saturate:
        v = np.clip(v, -fmt.fmax, fmt.fmax)
    fin = np.isfinite(v)
    a = np.where(fin, v, 0.0)
    _, e = np.frexp(a)  # |a| = f * 2**e with f in [0.5, 1): the leading bit is 2**(e - 1)
    lead = np.maximum(e - 1, round(math.log2(fmt.min_normal)))
    step = np.ldexp(1.0, lead - (fmt.bits - 1))
    q = np.rint(a / step) * step  # a / step is exact (a power of two); rint: ties to even
    over = np.abs(q) > fmt.fmax
    q = np.where(over, np.copysign(fmt.overflow_value, a), q)
    out: np.ndarray = np.where(fin, q, v if saturate else np.where(np.isnan(v), v, np.nan))
    if not saturate and fmt.has_inf:
        out = np.where(np.isinf(v), v, out)
    return out


def half_spacing(mag: Any, fmt: Float8Format) -> np.ndarray:
    """Half the spacing of the float8 lattice in the binade of ``|mag|`` (float8 units): the
    largest rounding error of a value of that magnitude. ``2**(e - bits)`` for ``2**e <= |mag|
    < 2**(e+1)`` in the normal range, ``eta`` (half the smallest subnormal) below it; a power
    of two gets the spacing above it."""
    a = np.abs(np.asarray(mag, dtype=np.float64))
    _, e = np.frexp(a)
    emin = round(math.log2(fmt.min_normal))
    lead = np.where(a >= fmt.min_normal, e - 1, emin)
    out: np.ndarray = np.ldexp(1.0, lead - fmt.bits)
    return out


def half_spacing_below(mag: Any, fmt: Float8Format) -> np.ndarray:
    """Half the distance from ``|mag|`` (a lattice point) down to its lower neighbour in
    magnitude: half the spacing of the binade below at a normal power of two above the
    smallest normal, :func:`half_spacing` elsewhere (``eta`` at zero)."""
    a = np.abs(np.asarray(mag, dtype=np.float64))
    f, _ = np.frexp(a)
    edge = (f == 0.5) & (a > fmt.min_normal)
    h = half_spacing(a, fmt)
    out: np.ndarray = np.where(edge, h / 2, h)
    return out


def scaling_error(a_w: Any, y_abs: Any, u_w: float) -> np.ndarray:
    """D = (1 + u_div) A_w + u_div |y|, u_div = 2 max(u_w, 2**-24): the error of the scaled
    intermediate, in the units of ``a_w`` and ``y_abs``."""
    u_div = 2.0 * max(u_w, U32)
    out: np.ndarray = (1.0 + u_div) * np.asarray(a_w) + u_div * np.asarray(y_abs)
    return out


def float8_allowance(
    target: np.ndarray,
    a_w: np.ndarray,
    y_abs: np.ndarray,
    fmt: Float8Format,
    u_w: float,
    scale: Any,
    *,
    rounded_reference: bool = False,
) -> np.ndarray:
    """The allowance of a float8 output against its unquantized reference (the module
    docstring's A_8), in the reference's units.

    ``target`` is |T s| (the clamped target in the reference's units), ``a_w`` the
    intermediate's allowance at that magnitude, ``y_abs`` |y| (the unclamped magnitude the
    scaling rounds), ``u_w`` the intermediate's unit roundoff. With ``rounded_reference``
    (``scale`` 1, ``target`` the rounded reference's |d|): the larger of the two sides of
    :func:`float8_rounded_allowance` at ``+|d|``, a symmetric summary of A_8,8.
    """
    d = scaling_error(a_w, y_abs, u_w)
    s = np.asarray(scale, dtype=np.float64)
    if rounded_reference:
        up, down = float8_rounded_allowance(np.abs(target), d, fmt)
        both: np.ndarray = np.maximum(up, down)
        return both
    c_mag = np.minimum(target / s + d / s, fmt.fmax)  # |c| <= |T| + D/s, and |c| <= fmax
    out: np.ndarray = s * half_spacing(c_mag, fmt) + d + 2.0**-52 * target
    return out


def float8_rounded_allowance(
    ref: np.ndarray, delta: np.ndarray, fmt: Float8Format
) -> tuple[np.ndarray, np.ndarray]:
    """A_8,8 of the module docstring: how far above (first) and below (second) the exactly
    rounded float8 reference ``ref`` (float8 values) a correct kernel's float8 result may
    lie, ``delta`` the error D/s of its scaled intermediate in float8 units.

    T lies in the rounding interval of ``ref`` (half a spacing to either lattice neighbour),
    the kernel's clamped value c within ``delta`` of T, and its result rounds c: it lies
    between ``c_lo - h(c_lo)`` and ``c_hi + h(c_hi)``. Both sides are one spacing (the
    spacing on that side of ``ref``, plus ``delta``) while ``delta`` is below a spacing.
    """
    r = np.asarray(ref, dtype=np.float64)
    mag = np.abs(r)
    h_up = np.where(r >= 0, half_spacing(mag, fmt), half_spacing_below(mag, fmt))
    h_down = np.where(r > 0, half_spacing_below(mag, fmt), half_spacing(mag, fmt))
    c_hi = np.minimum(r + h_up + delta, fmt.fmax)
    c_lo = np.maximum(r - h_down - delta, -fmt.fmax)
    up: np.ndarray = c_hi + half_spacing(c_hi, fmt) - r
    down: np.ndarray = r - c_lo + half_spacing(c_lo, fmt)
    return up, down


def pair_channels(rope: Rope) -> tuple[np.ndarray, np.ndarray]:
    """Channel indices (a_j, b_j) of each rotary pair j, in the rope's layout."""
    h = rope.rotary_dim // 2
    o = getattr(rope, "rotary_offset", 0)  # first rotated channel (MLA: the trailing ones)
    j = np.arange(h)
    if rope.layout == "half":
        return o + j, o + j + h
    return o + 2 * j, o + 2 * j + 1


def _scheme(rope: Rope) -> Any:
    """The object that says how positions drive pairs (multi-axis schemes), or None."""
    axes = getattr(rope, "axes", None)
    if axes is not None and getattr(axes, "axis_position", None) is not None:
        return axes
    s = rope.scaling
    if s is not None and getattr(s, "axis_position", None) is not None:
        return s
    return None


def pair_positions(rope: Rope, pos: np.ndarray) -> np.ndarray:
    """Per-pair positions, shape token_shape + (n_pairs,): the position that drives pair j."""
    scheme = _scheme(rope)
    if scheme is None:
        return np.broadcast_to(pos[..., None], (*pos.shape, rope.n_pairs))
    axes = scheme.pair_axes(rope)
    leading = scheme.axis_position == "leading"
    along = [pos[k] if leading else pos[..., k] for k in range(scheme.n_axes)]
    return np.stack([along[a] for a in axes], axis=-1)


def dynamic_length(rope: Rope, pos: np.ndarray, seq_len: int | None) -> int | None:
    """The length a dynamic schedule uses: ``seq_len``, else max(positions) + 1 (as
    ``apply_rope`` reads it); None for static schedules."""
    if seq_len is not None:
        return int(seq_len)
    s = rope.scaling
    if s is not None and s.dynamic and pos.size:
        return int(np.max(pos)) + 1
    return None


@dataclass(frozen=True)
class PairModel:
    """The allowance of every element, and what it is made of (NumPy float64 arrays).

    ``exact`` and ``angles`` have the output's shape; ``m`` (per-pair positions), ``rho``
    (desired pair magnitudes) and ``phase`` (the phase budget in radians, uncapped) have
    shape ``actual.shape[:-1] + (n_pairs,)``; ``theta`` the frequencies used.
    """

    exact: np.ndarray
    angles: np.ndarray
    m: np.ndarray
    rho: np.ndarray
    phase: np.ndarray
    theta: np.ndarray
    u_out: float
    u_angle: float
    seq_len: int | None


def token_positions(rope: Rope, positions: np.ndarray, lead: tuple[int, ...]) -> np.ndarray:
    """Per-pair positions broadcast to ``lead + (n_pairs,)``; a typed error naming
    ``positions`` when they do not broadcast against the output's leading axes."""
    tok = rope.token_shape(tuple(positions.shape))
    try:
        shape = np.broadcast_shapes(tok, lead)
    except ValueError:
        shape = None
    if shape != tuple(lead):
        raise RopeValueError(
            f"positions of shape {tuple(positions.shape)} (tokens {tok}) do not broadcast "
            f"against actual.shape[:-1] = {tuple(lead)}; expected positions whose token "
            "shape broadcasts to it, e.g. (seq,) or (batch, 1, seq)"
        )
    pp = pair_positions(rope, positions)
    return np.broadcast_to(pp, (*tuple(lead), rope.n_pairs))


def pair_model(
    desired: np.ndarray,
    rope: Rope,
    positions: np.ndarray,
    dtype: Any,
    *,
    seq_len: int | None = None,
    role: str = "query",
) -> PairModel:
    """The per-element allowance for a RoPE output (see the module docstring).

    ``desired`` is the reference output (float64 NumPy, non-finite values allowed: they get
    the floor), ``positions`` the positions as given to ``apply_rope``.
    """
    name = dtype_name(dtype)
    u_out = unit_roundoff(name)
    u_a = min(u_out, U32)
    floor = tiny(name)
    if desired.ndim < 1 or desired.shape[-1] != rope.head_dim:
        raise RopeValueError(
            f"the compared arrays have last axis {desired.shape[-1:]}, but rope.head_dim is "
            f"{rope.head_dim}: pass the rope the outputs were made with"
        )
    pos = np.asarray(positions, dtype=np.float64)
    lead = tuple(desired.shape[:-1])
    m = token_positions(rope, pos, lead)
    sl = dynamic_length(rope, pos, seq_len)
    theta = np.asarray(rope.inv_freq(seq_len=sl), dtype=np.float64)
    d = np.where(np.isfinite(desired), desired, 0.0)
    ia, ib = pair_channels(rope)
    rho = np.hypot(d[..., ia], d[..., ib])
    table = np.full(theta.shape, C_TABLE)
    mag_term: Any = 0.0
    if rope.scaling is not None:
        from .. import _compat

        xp = _compat.array_namespace()
        tok_pos = pos
        mag = rope.scaling.magnitude(xp, tok_pos, rope, role=role, seq_len=sl, dtype=xp.float64)
        if mag is not None:
            with np.errstate(divide="ignore"):
                lm = np.abs(np.log(np.asarray(mag, dtype=np.float64)))
            mag_term = np.broadcast_to(np.nan_to_num(lm, posinf=0.0), m.shape)
    phase = (np.abs(m) * theta * (C_LN * _abs_log(theta) + C_ANGLE) + table + mag_term) * u_a
    exact_pair = K_OUT * u_out * rho + floor
    angle_pair = exact_pair + np.minimum(phase, 2.0) * rho
    exact = K_OUT * u_out * np.abs(d) + floor
    angles = exact.copy()
    exact[..., ia] = exact_pair
    exact[..., ib] = exact_pair
    angles[..., ia] = angle_pair
    angles[..., ib] = angle_pair
    return PairModel(exact, angles, m, rho, phase, theta, u_out, u_a, sl)


def shift_threshold(model: PairModel) -> np.ndarray:
    """Per pair, the |position| from which a one-position error moves a pair less than the
    angle budget allows (inf where it never does)."""
    theta = model.theta
    move = 2.0 * np.abs(np.sin(theta / 2.0))
    per_m = theta * (C_LN * _abs_log(theta) + C_ANGLE) * model.u_angle
    room = move - C_TABLE * model.u_angle - K_OUT * model.u_out
    with np.errstate(divide="ignore", invalid="ignore"):
        thr = np.where(per_m > 0, room / per_m, math.inf)
    # a move below the output's own rounding is invisible to every class: not a blind spot
    # of the angle budget
    thr = np.where(move <= 4 * K_OUT * model.u_out, math.inf, thr)
    return np.maximum(thr, 0.0)
