"""The tables are exact: cos/sin within one ulp of mpmath at every position, on every backend."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import mpmath
import mpmath_reference
import numpy as np
import pytest
from _helpers import MPMATH_REF, mpmath_ref, ulps
from hypothesis import assume, given
from hypothesis import strategies as st

import rope_ref as rr
from rope_ref import _blocks, _exact

REF = MPMATH_REF
GRID = [(int(d), float(b)) for d in REF["head_dims"] for b in REF["bases"]]


_ref = mpmath_ref


@pytest.mark.parametrize(("head_dim", "base"), GRID, ids=[f"d{d}-b{b:g}" for d, b in GRID])
def test_tables_within_one_ulp_of_mpmath(bk, head_dim, base):
    positions = REF["positions"]
    cos, sin = rr.Rope(head_dim, base=base).cos_sin(bk.from_numpy(positions))
    cos, sin = bk.to_numpy(cos), bk.to_numpy(sin)
    assert cos.dtype == np.float64
    for got, name in ((cos, "cos"), (sin, "sin")):
        hi, lo = _ref(head_dim, base, name)
        err = mpmath_reference.ulp_errors(got, hi, lo)
        worst = np.unravel_index(np.argmax(err), err.shape)
        assert err.max() < 1.0, (
            f"{name}: {err.max():.3f} ulp at position {positions[worst[0]]}, pair {worst[1]}"
        )


@pytest.mark.parametrize(("head_dim", "base"), [(128, 1e4), (64, 5e5)])
def test_same_bits_on_every_backend(bk, head_dim, base):
    # No libm is involved, so every backend must give NumPy's bits exactly.
    positions = REF["positions"]
    rope = rr.Rope(head_dim, base=base)
    want = rope.cos_sin(positions)
    got = rope.cos_sin(bk.from_numpy(positions))
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(bk.to_numpy(g), w)


def test_pi_constant_matches_mpmath():
    mpmath.mp.dps = 220
    assert abs(mpmath.mpf(str(_exact.PI)) - mpmath.pi) < mpmath.mpf(10) ** -195


@pytest.mark.parametrize("base", [1e4, 5e5, 1e6, 2.5, 1.0 + 2**-40])
@pytest.mark.parametrize("rotary_dim", [2, 64, 80, 128])
def test_inv_freq_correctly_rounded(base, rotary_dim):
    mpmath.mp.prec = 300
    rope = rr.Rope(rotary_dim, base=base)
    f64 = rope.inv_freq()
    f32 = rope.inv_freq(dtype=np.float32)
    assert f64.dtype == np.float64 and f32.dtype == np.float32
    assert f64.shape == (rotary_dim // 2,)
    for j in range(rotary_dim // 2):
        exact = mpmath.mpf(base) ** (mpmath.mpf(-2 * j) / rotary_dim)
        # the nearest float64 / float32 to the exact value, by mpmath's own rounding
        assert f64[j] == float(exact)
        below = np.float32(float(exact))
        candidates = [
            np.nextafter(below, np.float32(-1)),
            below,
            np.nextafter(below, np.float32(2)),
        ]
        dist = [abs(mpmath.mpf(float(c)) - exact) for c in candidates]
        assert f32[j] == candidates[int(np.argmin(dist))]


def test_inv_freq_on_backend(bk):
    got = bk.to_numpy(rr.Rope(64, base=5e5).inv_freq(bk.xp, device=bk.device))
    np.testing.assert_array_equal(got, rr.Rope(64, base=5e5).inv_freq())


@given(
    m=st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1),
    j=st.integers(min_value=0, max_value=63),
    base=st.sampled_from([1e4, 5e5, 1e6, 1234.5]),
)
def test_any_integer_position_within_one_ulp(m, j, base):
    # Beyond the stored grid: any |m| < 2**53, checked live against mpmath.
    mpmath.mp.prec = 400
    cos, sin = rr.Rope(128, base=base).cos_sin(np.asarray([m], dtype=np.int64))
    angle = mpmath.mpf(m) * mpmath.mpf(base) ** (mpmath.mpf(-2 * j) / 128)
    for got, want in ((cos[0, j], mpmath.cos(angle)), (sin[0, j], mpmath.sin(angle))):
        err = abs(mpmath.mpf(float(got)) - want) / mpmath.mpf(float(np.spacing(abs(float(want)))))
        assert err < 1.0, (m, j, float(got), float(want))


@given(
    m=st.floats(min_value=-(2.0**40), max_value=2.0**40, allow_nan=False),
    j=st.integers(min_value=0, max_value=63),
)
def test_real_positions_within_one_ulp(m, j):
    # Non-integer positions go through the fractional-part path. Relative accuracy is
    # documented for |m * theta| >= 2**-800 (tinier values lose bits to float64 underflow
    # in the residual below the last limb: absolute error under 1e-240).
    assume(m == 0 or abs(m) >= 2.0**-700)
    mpmath.mp.prec = 400
    cos, sin = rr.Rope(128).cos_sin(np.asarray([m]))
    angle = mpmath.mpf(m) * mpmath.mpf(10_000) ** (mpmath.mpf(-2 * j) / 128)
    for got, want in ((cos[0, j], mpmath.cos(angle)), (sin[0, j], mpmath.sin(angle))):
        err = abs(mpmath.mpf(float(got)) - want) / mpmath.mpf(float(np.spacing(abs(float(want)))))
        assert err < 1.0, (m, j, float(got), float(want))


def test_integer_and_float_positions_agree(bk):
    # The same integer values as int64 and as float64 (which takes the fractional path).
    m = REF["positions"]
    rope = rr.Rope(64, base=1e6)
    a = rope.cos_sin(bk.from_numpy(m))
    b = rope.cos_sin(bk.from_numpy(m.astype(np.float64)))
    for u, v in zip(a, b, strict=True):
        np.testing.assert_array_equal(bk.to_numpy(u), bk.to_numpy(v))


def test_plain_float64_is_far_off_at_large_positions():
    # The motivating failure (docs/accuracy.md): the naive table is ~1e9 ulps off at 2**31 - 1,
    # and the exact table is not. Guards against an exact path that silently became naive.
    m = np.asarray([2**31 - 1])
    rope = rr.Rope(128)
    cos, _ = rope.cos_sin(m)
    naive = np.cos(m[:, None] * rope.inv_freq())
    hi, lo = _ref(128, 1e4, "cos")
    row = int(np.nonzero(REF["positions"] == 2**31 - 1)[0][0])
    assert mpmath_reference.ulp_errors(naive, hi[row : row + 1], lo[row : row + 1]).max() > 1e6
    assert mpmath_reference.ulp_errors(cos, hi[row : row + 1], lo[row : row + 1]).max() < 1.0


def test_decimal_thetas_are_exact():
    # The host frequencies agree with mpmath to 80+ digits.
    mpmath.mp.dps = 100
    thetas = rr.Rope(256, base=5e5).thetas()
    for j, t in enumerate(thetas):
        exact = mpmath.mpf(5e5) ** (mpmath.mpf(-2 * j) / 256)
        assert abs(mpmath.mpf(str(t)) - exact) <= exact * mpmath.mpf(10) ** -85
    assert isinstance(thetas[0], Decimal) and Fraction(thetas[0]) == 1


def test_float32_work_format_is_float32_accurate():
    # Namespaces without float64 run the limb algorithm in float32.
    table = _exact.angle_table(rr.Rope(64).thetas(), 24)
    m = np.arange(-5000, 5000, 7, dtype=np.float32)
    cos, sin = _exact.exact_cos_sin(np, m, table, dtype=np.float32, device=None, integral=True)
    assert cos.dtype == np.float32
    want_c, want_s = rr.Rope(64).cos_sin(m.astype(np.int64))
    # this path calls the namespace's float32 cos/sin on the reduced angle: NumPy's are within
    # 2 ulps of the correctly rounded value on any CPU (its own accuracy tests), 2.5 * 2**-24
    # below 1, plus the rounding of the correction term: under 4 * 2**-24 wherever it runs
    # (measured: 1.1 with AVX2, 0.93 on NumPy's baseline path, 2.9 with a simulated 2-ulp libm)
    assert np.abs(cos - want_c).max() < 4 * 2.0**-24
    assert np.abs(sin - want_s).max() < 4 * 2.0**-24
    assert ulps(cos, want_c).shape == cos.shape


@pytest.mark.parametrize("threads", ["1", "3"])
def test_blocked_tables_equal_single_pass(bk, monkeypatch, threads):
    # Eager CPU namespaces compute big tables in cache-sized blocks (on threads for NumPy),
    # each block with only the position pieces its largest |m| needs; the bits are the same
    # as one pass with every piece.
    monkeypatch.setenv("ROPE_REF_THREADS", threads)
    monkeypatch.setattr(_blocks, "BLOCK_ELEMENTS", 64 * 37)  # 37 positions per block
    rope = rr.Rope(128, base=5e5)
    rng = np.random.default_rng(5)
    # blocks of small, medium and large positions: 1, 2 and 3 pieces, both signs
    mags = np.sort(
        np.concatenate(
            [
                rng.integers(0, 2**18, 1000),
                rng.integers(0, 2**36, 1000),
                rng.integers(0, 2**40, 1000),
            ]
        )
    )
    pos = (mags * rng.choice([-1, 1], size=mags.size)).reshape(3, 1000)
    table = _exact.angle_table(rope.thetas(), 53)
    want = _exact.exact_cos_sin(
        np, pos.astype(np.float64), table, dtype=np.float64, device=None, integral=True
    )
    got = rope.cos_sin(bk.from_numpy(pos))
    for g, w in zip(got, want, strict=True):
        assert g.shape == (3, 1000, 64)
        np.testing.assert_array_equal(bk.to_numpy(g), w)


def test_pieces_needed():
    fmt = _exact.angle_table(rr.Rope(8).thetas(), 53).fmt
    assert [
        _exact.pieces_needed(fmt, float(v))
        for v in (0, 2**18 - 1, 2**18, 2**36 - 1, 2**36, 2**53 - 1)
    ] == [1, 1, 2, 2, 3, 3]
