"""Exact rotation angles: cos(m * theta) and sin(m * theta) to within one ulp of exact math.

Why this module exists
----------------------
The naive table ``cos(m * theta)`` in float64 is off by about ``m * theta * 2**-53`` in absolute
terms (2.5e-7 at m = 2**31: 1e5-1e14 ulps of the value), because both ``theta`` and the product
are rounded before the argument reduction of ``cos`` amplifies the error (docs/accuracy.md,
"Where the error comes from").
A reference must be better than what it judges, so rope_ref forms the angle without rounding:

1. On the host, each frequency theta_j is known as an exact real number (a ``Decimal`` with 90
   significant digits). We store it in *turns*, tau_j = theta_j / (2 pi), as the fraction
   frac(tau_j) written in K digits of w bits (float64 work: w = 18, K = 8, i.e. 144 bits).
2. On the device, a position m (integer-valued, |m| < 2**53) is split exactly into three
   w-bit integer pieces with ``floor`` and power-of-two scaling. Every product piece * digit is
   an integer below 2**36, so it is exact in float64 whatever the backend, and summing the
   products into w-bit limbs gives m * frac(tau_j) *modulo 1* exactly (integer turns drop
   out, which is the whole argument reduction). Nothing here depends on the backend's libm or
   on a fused multiply-add being present or absent.
3. The fraction of a turn is centred on the nearest quarter turn (the quadrant Q), converted
   to a double-double and multiplied by 2 pi in double-double: the reduced angle
   r = r_hi + r_lo, |r| <= pi / 4, has a *relative* error near 2**-104 even when it is tiny.
4. cos and sin of (r_hi + r_lo) come from fixed minimax polynomials (the fdlibm / FreeBSD msun
   kernels ``__kernel_cos`` and ``__kernel_sin``, which take exactly such a head+tail argument),
   evaluated with plain + and *; the quadrant picks signs and swaps.

Non-integer positions take one extra, error-free-transformation path for their fractional part
(a Dekker two-product), which is exact on every backend that rounds each operation separately
(NumPy, CuPy, PyTorch eager, JAX on CPU: checked in the test suite).

The result is the same bits on every backend (no libm call is involved) and within one ulp of
the exact value; tests/data holds mpmath references and the measured numbers.

Namespaces without float64 (JAX without x64, PyTorch on MPS) run the same limb algorithm with
9-bit limbs in float32 and the backend's own sin/cos on the reduced angle: the result is then
accurate to float32, not float64.
"""

from __future__ import annotations

import decimal
import functools
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any

import numpy as np

from ._typing import Array, Namespace

__all__ = [
    "DECIMAL_PREC",
    "PI",
    "AngleTable",
    "angle_table",
    "exact_cos_sin",
    "pieces_needed",
    "table_digits",
    "to_float",
]

#: Significant digits carried by every host-side ``Decimal`` computation of frequencies.
DECIMAL_PREC = 90

# pi to 200 digits (checked against mpmath in tests/test_exact.py).
PI = Decimal(
    "3.14159265358979323846264338327950288419716939937510582097494459230781640628620899862803"
    "482534211706798214808651328230664709384460955058223172535940812848111745028410270193852"
    "110555964462294895493038196"
)


def context() -> decimal.Context:
    """A fresh decimal context (contexts are not shared between threads)."""
    return decimal.Context(prec=DECIMAL_PREC, rounding=decimal.ROUND_HALF_EVEN)


def to_float(value: Decimal) -> float:
    """Correctly rounded conversion of a Decimal to float64."""
    # float(Decimal) goes through the exact decimal string: correctly rounded.
    return float(value)


def _split_hi_lo(value: Decimal) -> tuple[float, float]:
    hi = to_float(value)
    lo = to_float(context().subtract(value, Decimal(hi)))
    return hi, lo


def _head_tail(a: float, bits: int) -> tuple[float, float]:
    """Split a float exactly into a head rounded to ``bits`` significant bits and the tail."""
    if a == 0.0:
        return 0.0, 0.0
    f = Fraction(a)
    ex = abs(f).numerator.bit_length() - abs(f).denominator.bit_length()
    if Fraction(2) ** ex > abs(f):  # make 2**ex <= |a| < 2**(ex + 1)
        ex -= 1
    unit = Fraction(2) ** (ex - bits + 1)
    head = round(f / unit) * unit
    return float(head), float(f - head)


@dataclass(frozen=True)
class _Format:
    """Parameters of the limb arithmetic for one working precision (p significand bits)."""

    p: int  # significand bits of the working float format
    w: int  # bits per limb and per digit of tau
    n_pieces: int  # pieces a position is split into (covers |m| < 2**(w * n_pieces - 1))
    k_digits: int  # digits of frac(tau) kept (w * k_digits bits)
    veltkamp: int  # Veltkamp split shift for a two-product in this format

    @property
    def max_position(self) -> float:
        # Positions must be exactly representable and fit the pieces.
        return float(2 ** min(self.p, self.w * self.n_pieces - 1))


_FORMATS = {
    53: _Format(p=53, w=18, n_pieces=3, k_digits=8, veltkamp=27),
    24: _Format(p=24, w=9, n_pieces=3, k_digits=8, veltkamp=12),
}


def format_for_bits(p: int) -> _Format:
    try:
        return _FORMATS[p]
    except KeyError:  # pragma: no cover - only float32/float64 work dtypes exist here
        raise NotImplementedError(f"no exact-angle format for a {p}-bit significand") from None


@dataclass(frozen=True)
class AngleTable:
    """Host-side constants for a set of exact frequencies theta_j (all NumPy float64)."""

    digits: np.ndarray  # (k_digits, n) integer digits of frac(theta_j / 2pi), base 2**w
    tau_hi: np.ndarray  # (n,) theta_j / 2pi rounded to float64
    tau_hi_a: np.ndarray  # (n,) Veltkamp head of tau_hi
    tau_hi_b: np.ndarray  # (n,) Veltkamp tail of tau_hi
    tau_lo: np.ndarray  # (n,) float64 tail: tau_j - tau_hi
    fmt: _Format
    # Small frequencies (0 < tau_j < 2**-(p + 3), so |m| * tau_j < 1/8 turn for every valid m):
    # the angle m * theta_j needs no reduction and is formed directly as a double-double, since
    # frac(tau_j) in 144 bits would keep too few significant bits of it. None when no column
    # is small. Per column: the mask, theta * 2**S (hi, lo, Veltkamp head and tail), whether
    # S > 0 (theta so small that sin = angle and cos = 1 to within half an ulp), and the two
    # powers of two whose product is 2**-S (each exact; the second rounds once).
    small: np.ndarray | None = None
    theta_hi: np.ndarray | None = None
    theta_lo: np.ndarray | None = None
    theta_a: np.ndarray | None = None
    theta_b: np.ndarray | None = None
    tiny: np.ndarray | None = None
    unscale_a: np.ndarray | None = None
    unscale_b: np.ndarray | None = None


#: The largest frequency theta_j (radians per position) the exact tables accept: beyond it the
#: fractional-position path (double-double tau) and the 90-digit frequencies no longer determine
#: the angle modulo 2 pi to the last bit. Real models have theta_j <= 1 (base > 1).
MAX_THETA = 2.0**16


def _small_columns(thetas: tuple[Decimal, ...], fmt: _Format) -> dict[str, np.ndarray] | None:
    """The direct-angle constants of :class:`AngleTable` for the small frequencies."""
    ctx = context()
    two_pi = ctx.multiply(2, PI)
    limit = ctx.multiply(two_pi, Decimal(2) ** -(fmt.p + 3))
    flags = [Decimal(0) < t < limit for t in thetas]
    if not any(flags):
        return None
    n = len(thetas)
    out = {
        k: np.zeros(n)
        for k in ("theta_hi", "theta_lo", "theta_a", "theta_b", "unscale_a", "unscale_b")
    }
    out["small"] = np.asarray(flags, dtype=bool)
    out["tiny"] = np.zeros(n, dtype=bool)
    tiny_limit = Decimal(2) ** -(fmt.p + (fmt.p + 1) // 2 + 1)
    # the first power of two keeps r * 2**-a normal for r >= 1: a <= emax-ish of the format
    max_a = 1000 if fmt.p == 53 else 100
    for j, (t, flag) in enumerate(zip(thetas, flags, strict=True)):
        if not flag:
            out["unscale_a"][j] = out["unscale_b"][j] = 1.0
            continue
        shift = 0
        if t < tiny_limit:
            out["tiny"][j] = True
            # theta * 2**shift in [1, 2)
            shift = -int(ctx.logb(t))
            while ctx.multiply(t, Decimal(2) ** shift) < 1:
                shift += 1
            while ctx.multiply(t, Decimal(2) ** shift) >= 2:
                shift -= 1
        scaled = ctx.multiply(t, Decimal(2) ** shift)
        hi, lo = _split_hi_lo(scaled)
        if fmt.p != 53:
            hi32 = float(np.float32(hi))
            lo = float(np.float32(to_float(ctx.subtract(scaled, Decimal(hi32)))))
            hi = hi32
        out["theta_hi"][j], out["theta_lo"][j] = hi, lo
        out["theta_a"][j], out["theta_b"][j] = _head_tail(hi, fmt.p - fmt.veltkamp)
        a = min(shift, max_a)
        out["unscale_a"][j] = 2.0**-a
        out["unscale_b"][j] = 2.0 ** -(shift - a) if shift - a < 1074 else 0.0
    for arr in out.values():
        arr.setflags(write=False)
    return out


@functools.lru_cache(maxsize=256)
def angle_table(thetas: tuple[Decimal, ...], p: int = 53) -> AngleTable:
    """Precompute the digit tables for frequencies ``thetas`` (exact Decimals, > 0)."""
    fmt = format_for_bits(p)
    ctx = context()
    two_pi = ctx.multiply(2, PI)
    n = len(thetas)
    for j, theta in enumerate(thetas):
        if not (Decimal(0) <= theta <= Decimal(MAX_THETA)):
            from ._errors import RopeValueError

            raise RopeValueError(
                f"frequency theta_{j} = {float(theta):.6g} is outside [0, 2**16] (radians per "
                "position): the exact argument reduction covers 0 <= theta_j <= 2**16 "
                "(plain RoPE with base >= 1 has theta_j <= 1)"
            )
    total_bits = fmt.w * fmt.k_digits
    digits = np.zeros((fmt.k_digits, n), dtype=np.float64)
    tau_hi = np.zeros(n)
    tau_hi_a = np.zeros(n)
    tau_hi_b = np.zeros(n)
    tau_lo = np.zeros(n)
    mask = (1 << fmt.w) - 1
    for j, theta in enumerate(thetas):
        tau = ctx.divide(theta, two_pi)
        frac = ctx.subtract(tau, tau.to_integral_value(rounding=decimal.ROUND_FLOOR))
        scaled = ctx.multiply(frac, ctx.power(Decimal(2), total_bits))
        big = int(scaled.to_integral_value(rounding=decimal.ROUND_HALF_EVEN))
        big &= (1 << total_bits) - 1  # a rounding up to a whole turn is 0 mod 1
        for k in range(fmt.k_digits):
            shift = fmt.w * (fmt.k_digits - 1 - k)
            digits[k, j] = float((big >> shift) & mask)
        hi, lo = _split_hi_lo(tau)
        if p != 53:
            # float32 work: constants rounded to float32, the tail carried in float32 too.
            hi32 = float(np.float32(hi))
            lo = float(np.float32(to_float(ctx.subtract(tau, Decimal(hi32)))))
            hi = hi32
        tau_hi[j], tau_lo[j] = hi, lo
        tau_hi_a[j], tau_hi_b[j] = _head_tail(hi, fmt.p - fmt.veltkamp)
    for arr in (digits, tau_hi, tau_hi_a, tau_hi_b, tau_lo):
        arr.setflags(write=False)
    small = _small_columns(thetas, fmt) or {}
    return AngleTable(digits, tau_hi, tau_hi_a, tau_hi_b, tau_lo, fmt, **small)


# --------------------------------------------------------------------------------------------
# Device-side error-free transformations (pure Array API: +, -, *, floor, trunc).
# --------------------------------------------------------------------------------------------


def _two_sum(a: Array, b: Any) -> tuple[Any, Any]:
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _fast_two_sum(a: Array, b: Any) -> tuple[Any, Any]:
    # requires |a| >= |b| (or a == 0)
    s = a + b
    return s, b - (s - a)


def _split(a: Array, shift: int) -> tuple[Any, Any]:
    t = float(2**shift + 1) * a
    hi = t - (t - a)
    return hi, a - hi


def _two_prod_split(a: Array, b: Any, b_hi: Any, b_lo: Any, shift: int) -> tuple[Any, Any]:
    """a * b = p + e exactly, with b already split (on the host) into b_hi + b_lo."""
    p = a * b
    a_hi, a_lo = _split(a, shift)
    e = ((a_hi * b_hi - p) + a_hi * b_lo + a_lo * b_hi) + a_lo * b_lo
    return p, e


# fdlibm / FreeBSD msun k_cos.c and k_sin.c minimax coefficients, valid on |x| <= pi/4.
_C1 = 4.16666666666666019037e-02
_C2 = -1.38888888888741095749e-03
_C3 = 2.48015872894767294178e-05
_C4 = -2.75573143513906633035e-07
_C5 = 2.08757232129817482790e-09
_C6 = -1.13596475577881948265e-11
_S1 = -1.66666666666666324348e-01
_S2 = 8.33333333332248946124e-03
_S3 = -1.98412698298579493134e-04
_S4 = 2.75573137070700676789e-06
_S5 = -2.50507602534068634195e-08
_S6 = 1.58969099521155010221e-10


def _cos_sin_reduced(xp: Namespace, p: int, r_hi: Array, r_lo: Array) -> tuple[Any, Any]:
    """cos and sin of the reduced angle r_hi + r_lo (|r_lo| below an ulp of r_hi): the
    double-word kernels in float64, else the namespace's cos/sin of r_hi corrected to first
    order in r_lo."""
    if p == 53:
        return _kernel_cos(r_hi, r_lo), _kernel_sin(r_hi, r_lo)
    c0 = xp.cos(r_hi)
    s0 = xp.sin(r_hi)
    return c0 - r_lo * s0, s0 + r_lo * c0


def _kernel_cos(x: Array, y: Array) -> Any:
    """cos(x + y) for |x| <= pi/4, |y| <= ulp(x)/2 (fdlibm __kernel_cos)."""
    z = x * x
    w = z * z
    r = z * (_C1 + z * (_C2 + z * _C3)) + w * w * (_C4 + z * (_C5 + z * _C6))
    hz = 0.5 * z
    w = 1.0 - hz
    return w + (((1.0 - w) - hz) + (z * r - x * y))


def _kernel_sin(x: Array, y: Array) -> Any:
    """sin(x + y) for |x| <= pi/4, |y| <= ulp(x)/2 (fdlibm __kernel_sin, iy = 1)."""
    z = x * x
    w = z * z
    r = _S2 + z * (_S3 + z * _S4) + z * w * (_S5 + z * _S6)
    v = z * x
    return x - ((z * (0.5 * y - v * r) - y) - v * _S1)


@functools.cache
def _two_pi(fmt: _Format) -> tuple[float, float, float, float]:
    """2 pi as head + tail in the working format, and the head split for a two-product."""
    two_pi = context().multiply(2, PI)
    hi, lo = _split_hi_lo(two_pi)
    if fmt.p != 53:
        hi = float(np.float32(hi))
        lo = float(np.float32(to_float(context().subtract(two_pi, Decimal(hi)))))
    a, b = _head_tail(hi, fmt.p - fmt.veltkamp)
    return hi, lo, a, b


def _const(xp: Namespace, values: np.ndarray, dtype: Any, device: Any) -> Any:
    # Lists go through every namespace's asarray (array-api-strict, JAX under jit, Dask).
    return xp.asarray(values.tolist(), dtype=dtype, device=device)


def table_digits(xp: Namespace, table: AngleTable, dtype: Any, device: Any) -> list[Any]:
    """The digit rows of ``table`` as arrays of ``xp`` (one per digit, each of shape (n,))."""
    return [_const(xp, table.digits[k], dtype, device) for k in range(table.fmt.k_digits)]


def pieces_needed(fmt: _Format, top: float) -> int:
    """The fewest W-sized pieces that hold every integer of magnitude <= ``top``."""
    k = 1
    while k < fmt.n_pieces and top >= float(2 ** (fmt.w * k)):
        k += 1
    return k


def exact_cos_sin(
    xp: Namespace,
    m: Any,
    table: AngleTable,
    *,
    dtype: Any,
    device: Any,
    integral: bool,
    n_pieces: int | None = None,
    digits: list[Any] | None = None,
) -> tuple[Any, Any]:
    """cos and sin of m * theta_j for every j, shape ``m.shape + (n,)``, in ``dtype``.

    ``m`` is already validated and cast to ``dtype`` (the working float dtype: float64, or
    float32 where the namespace has no float64). ``integral`` says that m is known to hold
    integers (an integer input dtype), so the fractional-part path can be skipped.
    ``n_pieces`` (at most the format's) may be lowered when |m| is known to be below
    ``W ** n_pieces``: the dropped pieces would be exact zeros, so the bits do not change.
    """
    fmt = table.fmt
    n_pieces = fmt.n_pieces if n_pieces is None else n_pieces
    w_scale = float(2**fmt.w)
    inv_w = 1.0 / w_scale
    k_digits = fmt.k_digits
    m = m[..., None]

    # m = whole + frac with whole = trunc(m): both exact, frac in (-1, 1) with m's sign.
    whole = m if integral else xp.trunc(m)
    # Split the integer part whole = sum_i piece_i * W**i exactly (integer arithmetic below
    # 2**53); the top piece carries the sign, the others lie in [0, W).
    pieces: list[Any] = [None] * n_pieces
    rest = whole
    for i in range(n_pieces - 1, 0, -1):
        scale = float(2 ** (fmt.w * i))
        top = xp.floor(rest * (1.0 / scale))
        rest = rest - top * scale
        pieces[i] = top
    pieces[0] = rest

    if digits is None:
        digits = table_digits(xp, table, dtype, device)

    # limb j (value c_j * W**-(j+1), j = 0..K-1) collects piece_i * digit_{j+i}; products
    # landing at integer weights are whole turns and are dropped.
    limbs: list[Any] = []
    for j in range(k_digits):
        acc = None
        for i in range(n_pieces):
            if j + i < k_digits:
                term = pieces[i] * digits[j + i]
                acc = term if acc is None else acc + term
        limbs.append(acc)

    residuals: list[Any] = []
    if not integral:
        # fractional part f in (-1, 1): f * tau as a double-double, whole turns dropped,
        # then cut into signed limbs (trunc keeps every step exact).
        frac = m - whole
        tau_hi = _const(xp, table.tau_hi, dtype, device)
        ph, pl = _two_prod_split(
            frac,
            tau_hi,
            _const(xp, table.tau_hi_a, dtype, device),
            _const(xp, table.tau_hi_b, dtype, device),
            fmt.veltkamp,
        )
        pl = pl + frac * _const(xp, table.tau_lo, dtype, device)
        ph, pl = _fast_two_sum(ph, pl)
        ph = ph - xp.trunc(ph)
        for part in (ph, pl):
            x = part
            for j in range(k_digits):
                x = x * w_scale
                g = xp.trunc(x)
                x = x - g
                limbs[j] = limbs[j] + g
            # what lies below the last limb is kept, so tiny angles keep their relative accuracy
            residuals.append(x * float(2.0 ** (-fmt.w * k_digits)))

    # Carry normalisation: every limb into [0, W); the carry out of limb 0 is whole turns.
    for j in range(k_digits - 1, -1, -1):
        q = xp.floor(limbs[j] * inv_w)
        limbs[j] = limbs[j] - q * w_scale
        if j > 0:
            limbs[j - 1] = limbs[j - 1] + q

    # Nearest quarter turn: Q = floor(4 * frac + 1/2); the remainder lies in [-1/8, 1/8) turn.
    quarter = w_scale / 4.0
    quad = xp.floor((limbs[0] + w_scale / 8.0) * (1.0 / quarter))
    limbs[0] = limbs[0] - quad * quarter
    quad = xp.where(quad == 4.0, xp.zeros_like(quad), quad)

    # Merge limbs pairwise (each pair is exact in the working format), then sum the groups
    # smallest first with compensation (Ogita-Rump-Oishi Sum2): a double-double (xh, xl).
    groups = []
    for j in range(0, k_digits, 2):
        scale_a = float(2.0 ** (-fmt.w * (j + 1)))
        scale_b = float(2.0 ** (-fmt.w * (j + 2)))
        groups.append(limbs[j] * scale_a + limbs[j + 1] * scale_b)
    terms = groups + residuals[::-1]
    s = terms[-1]
    comp = xp.zeros_like(s)
    for g in reversed(terms[:-1]):
        s, e = _two_sum(g, s)
        comp = comp + e
    xh, xl = _fast_two_sum(s, comp)

    # r = 2 pi * x in double-double (relative error ~ 2**-104).
    two_pi_hi, two_pi_lo, a_hi, a_lo = _two_pi(fmt)
    p = xh * two_pi_hi
    xh_hi, xh_lo = _split(xh, fmt.veltkamp)
    e = ((xh_hi * a_hi - p) + xh_hi * a_lo + xh_lo * a_hi) + xh_lo * a_lo
    e = e + (xh * two_pi_lo + xl * two_pi_hi)
    r_hi, r_lo = _fast_two_sum(p, e)

    c, s_ = _cos_sin_reduced(xp, fmt.p, r_hi, r_lo)

    # angle = r + Q * pi/2
    # (Q = 0, 1, 2, 3): cos = c, -s, -c, s and sin = s, c, -s, -c: swap for odd Q, then
    # negate cos for Q in {1, 2} (odd xor Q >= 2) and sin for Q >= 2. Selection only: exact.
    odd = (quad == 1.0) | (quad == 3.0)
    high = quad >= 2.0
    c_sel = xp.where(odd, s_, c)
    s_sel = xp.where(odd, c, s_)
    cos = xp.where(odd != high, -c_sel, c_sel)
    sin = xp.where(high, -s_sel, s_sel)
    if table.small is not None:
        cos, sin = _small_angles(xp, m, table, cos, sin, dtype=dtype, device=device)
    return cos, sin


def _small_angles(
    xp: Namespace, m: Any, table: AngleTable, cos: Array, sin: Array, *, dtype: Any, device: Any
) -> tuple[Any, Any]:
    """Replace the columns of small frequencies by cos and sin of the direct angle m * theta.

    ``m`` has a trailing axis of size 1. The angle is below 1/8 turn, so no reduction is
    needed: r = m * theta_s (theta_s = theta * 2**S) as a double-double by an error-free
    product. Columns with S = 0 go through the same kernels as the reduced angles; for the
    tiny ones (S > 0) sin(r) = r and cos(r) = 1 to within half an ulp, and r * 2**-S is
    formed by two exact-or-once-rounded scalings, so subnormal results keep their accuracy.
    """
    fmt = table.fmt

    def const(values: Any) -> Any:
        return _const(xp, np.asarray(values, dtype=np.float64), dtype, device)

    p_, e = _two_prod_split(
        m, const(table.theta_hi), const(table.theta_a), const(table.theta_b), fmt.veltkamp
    )
    e = e + m * const(table.theta_lo)
    r_hi, r_lo = _fast_two_sum(p_, e)
    c, s_ = _cos_sin_reduced(xp, fmt.p, r_hi, r_lo)
    assert table.small is not None and table.tiny is not None
    small = xp.asarray(table.small.tolist(), device=device)
    tiny = xp.asarray(table.tiny.tolist(), device=device)
    s_tiny = (r_hi * const(table.unscale_a)) * const(table.unscale_b)
    c = xp.where(tiny, xp.ones_like(c), c)
    s_ = xp.where(tiny, s_tiny, s_)
    return xp.where(small, c, cos), xp.where(small, s_, sin)


# --------------------------------------------------------------------------------------------
# exp without libm (xPos magnitudes): the same bits on every backend.
# --------------------------------------------------------------------------------------------

# fdlibm / FreeBSD msun e_exp.c: exp(r) = 1 + r + r c / (2 - c) on |r| <= ln2 / 2.
_P1 = 1.66666666666666019037e-01
_P2 = -2.77777777770155933842e-03
_P3 = 6.61375632143793436117e-05
_P4 = -1.65339022054652515390e-06
_P5 = 4.13813679705723846039e-08

#: |argument| bound of :func:`exp_dd` per significand width, chosen so that exp of it times
#: any cos/sin table entry (|value| >= 2**-64 in practice) stays a normal number of the format:
#: backends that flush subnormals to zero (XLA on the CPU) then give the same bits as the rest
#: (float64: e**660 = 4.6e286, e**-660 = 2.2e-287; float32: e**+-60).
EXP_LIMIT = {53: 660.0, 24: 60.0}


@functools.cache
def _ln2(p: int) -> tuple[float, float, float]:
    """1 / ln 2, and ln 2 as head (with 11 spare bits, so k * head is exact) + tail."""
    ln2 = context().ln(Decimal(2))
    hi, _ = _head_tail(to_float(ln2), p - 11)
    lo = to_float(context().subtract(ln2, Decimal(hi)))
    inv = to_float(context().divide(1, ln2))
    if p != 53:
        hi, _ = _head_tail(float(np.float32(hi)), p - 8)
        lo = float(np.float32(to_float(context().subtract(ln2, Decimal(hi)))))
        inv = float(np.float32(inv))
    return inv, hi, lo


def _pow2(xp: Namespace, k: Array, p: int = 53) -> Any:
    """2**k for integer-valued k with |k| <= 1022 (float64; 126 for float32), by exact products
    of powers of two."""
    kabs = xp.abs(k)
    neg = k < 0
    out = xp.ones_like(k)
    for b in range(10 if p == 53 else 7):
        bit = xp.floor(kabs * (0.5**b)) - 2.0 * xp.floor(kabs * (0.5 ** (b + 1)))
        up, down = 2.0 ** (2**b), 2.0 ** -(2**b)
        factor = xp.where(neg, xp.full_like(k, down), xp.full_like(k, up))
        out = out * xp.where(bit > 0.5, factor, xp.ones_like(factor))
    return out


def exp_dd(xp: Namespace, hi: Any, lo: Any, p: int = 53) -> Any:
    """exp(hi + lo) for |hi| <= EXP_LIMIT[p], |lo| <= ulp(hi), with +, -, *, / and floor only.

    fdlibm's algorithm (k = round(x / ln 2), x - k ln 2 in head and tail, a rational minimax
    kernel, times 2**k) with the tail ``lo`` folded into the reduced argument. Each operation
    is rounded once, so NumPy, PyTorch, JAX (eager), Dask, CuPy and array-api-strict return the
    same bits; within 1 ulp of exp(hi + lo) in float64.
    """
    inv_ln2, ln2_hi, ln2_lo = _ln2(p)
    k = xp.floor(hi * inv_ln2 + 0.5)
    r_hi = hi - k * ln2_hi  # exact: k has <= 11 bits, ln2_hi 11 spare bits
    r_lo = k * ln2_lo - lo
    r = r_hi - r_lo
    t = r * r
    c = r - t * (_P1 + t * (_P2 + t * (_P3 + t * (_P4 + t * _P5))))
    y = 1.0 - ((r_lo - (r * c) / (2.0 - c)) - r_hi)
    return y * _pow2(xp, k, p)
