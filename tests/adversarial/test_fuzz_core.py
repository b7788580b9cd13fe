"""Hypothesis fuzzing of the core (issue #13): apply routes, cos_sin, every schedule's
constructor. Only typed errors (RopeError) or finite answers that agree with an independent
route: frequencies and angles by mpmath from the paper's formula, the rotation by a loop.

Profiles (tests/conftest.py): ``default`` (30 examples each, derandomized) runs with the suite;
``HYPOTHESIS_PROFILE=thorough`` (300 each) is the long run.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, event, given, note
from hypothesis import strategies as st

import rope_ref as rr
from rope_ref import scaling as sc

mpmath = pytest.importorskip("mpmath")

EPS = 2.0**-52  # float64 machine epsilon (unit roundoff u = EPS / 2)


def _mp_thetas(base: float, rotary_dim: int) -> list:
    """theta_j = base ** (-2j / rotary_dim) from the paper's formula, in mpmath."""
    b = mpmath.mpf(base)
    return [b ** (-mpmath.mpf(2 * j) / rotary_dim) for j in range(rotary_dim // 2)]


def _mp_tables(base, rotary_dim, positions):
    with mpmath.workprec(250):
        th = _mp_thetas(base, rotary_dim)
        pos = np.asarray(positions, dtype=np.float64).ravel()
        c = np.empty((pos.size, len(th)))
        s = np.empty_like(c)
        for i, m in enumerate(pos):
            for j, t in enumerate(th):
                a = mpmath.mpf(float(m)) * t
                c[i, j], s[i, j] = float(mpmath.cos(a)), float(mpmath.sin(a))
    return c.reshape((*np.shape(positions), -1)), s.reshape((*np.shape(positions), -1))


def _loop(x, cos, sin, rotary_dim, layout):
    """Eq. 34 pair by pair (float64), with the error bound of each output channel:
    |x_a| |dc| + |x_b| |ds| + rounding of two products and a sum <= 4 eps (|x_a| + |x_b|)
    when the tables are within one ulp (|dc| <= eps |c|, |ds| <= eps |s|)."""
    y = x.astype(np.float64).copy()
    bound = np.zeros_like(y)
    h = rotary_dim // 2
    for j in range(h):
        a, b = (j, j + h) if layout == "half" else (2 * j, 2 * j + 1)
        c, s = cos[..., j], sin[..., j]
        xa, xb = x[..., a], x[..., b]
        y[..., a] = xa * c - xb * s
        y[..., b] = xb * c + xa * s
        bound[..., a] = bound[..., b] = 4 * EPS * (np.abs(xa) + np.abs(xb))
    return y, bound


bases = st.one_of(
    st.floats(1.0001, 1e6),
    st.floats(1e6, 1.7e308),
    st.sampled_from([10_000.0, 500_000.0, 1e300, 2.0, 0.5, 1e-5]),
)
int_positions = st.integers(-(2**53) + 1, 2**53 - 1)
real_positions = st.one_of(
    int_positions.map(float),
    st.floats(-1e6, 1e6, allow_nan=False),
    st.floats(-(2.0**52), 2.0**52, allow_nan=False),
)


@st.composite
def ropes(draw):
    pairs = draw(st.integers(1, 6))
    extra = draw(st.integers(0, 3))
    base = draw(bases)
    layout = draw(st.sampled_from(["half", "interleaved"]))
    return 2 * pairs + extra, 2 * pairs, base, layout


@given(spec=ropes(), data=st.data())
def test_fuzz_routes_agree_with_an_independent_loop(spec, data):
    head_dim, rotary_dim, base, layout = spec
    try:
        rope = rr.Rope(head_dim, rotary_dim=rotary_dim, base=base, layout=layout)
    except rr.RopeError as exc:  # base < 1 beyond the exact domain: a typed error, said why
        assert base < 1 and "theta_j <= 2**16" in str(exc)
        return
    ints = data.draw(st.booleans())
    n = data.draw(st.integers(1, 4))
    pos = np.array(
        data.draw(st.lists(int_positions if ints else real_positions, min_size=n, max_size=n))
    )
    x = np.asarray(
        data.draw(
            st.lists(
                st.floats(-1e3, 1e3, allow_nan=False), min_size=n * head_dim, max_size=n * head_dim
            )
        )
    )
    x = x.reshape(n, head_dim)
    note(f"rope={rope!r} positions={pos!r}")
    c, s = _mp_tables(base, rotary_dim, pos)
    want, bound = _loop(x, c, s, rotary_dim, layout)
    for route in (rr.apply_rope, rr.apply_rope_complex, rr.apply_rope_matrix):
        got = route(x, pos, rope)
        assert got.shape == x.shape and got.dtype == x.dtype
        err = np.abs(got - want)
        assert np.all(err[:, :rotary_dim] <= bound[:, :rotary_dim] + 2.0**-1074), route.__name__
        np.testing.assert_array_equal(got[:, rotary_dim:], x[:, rotary_dim:])


@given(spec=ropes(), data=st.data())
def test_fuzz_cos_sin_within_one_ulp_of_mpmath(spec, data):
    head_dim, rotary_dim, base, layout = spec
    try:
        rope = rr.Rope(head_dim, rotary_dim=rotary_dim, base=base, layout=layout)
    except rr.RopeError:
        assume(False)
    pos = np.array(
        data.draw(st.lists(st.one_of(int_positions, real_positions), min_size=1, max_size=4))
    )
    note(f"rope={rope!r} positions={pos!r}")
    c, s = rope.cos_sin(pos)
    wc, ws = _mp_tables(base, rotary_dim, pos)
    # the mpmath frequencies come from the formula, the library's from 90-digit Decimals:
    # both exact far beyond float64, so the tables must be within one ulp (subnormal: 2**-1074)
    for got, want in ((c, wc), (s, ws)):
        ulp = np.maximum(np.spacing(np.abs(want)), 2.0**-1074)
        assert np.all(np.abs(got - want) <= ulp)


# ---------------------------------------------------------------- schedule constructors

_weird = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**70), 2**70),
    st.booleans(),
    st.sampled_from(
        [
            "4",
            None,
            1 + 2j,
            np.float32(2.0),
            np.int64(8),
            np.bool_(True),
            np.array(3.0),
            np.array([1.0, 2.0]),
        ]
    ),
)
_good_factor = st.floats(0.01, 100.0)
_good_length = st.integers(1, 10**6)


def _schedules(n_pairs: int, value, length, flag):
    lists = st.lists(value, min_size=n_pairs, max_size=n_pairs)
    optional = st.one_of(st.none(), value)
    return st.one_of(
        st.builds(sc.Linear, value),
        st.builds(sc.NTK, value),
        st.builds(sc.DynamicNTK, value, length),
        st.builds(
            sc.YaRN,
            value,
            length,
            beta_fast=value,
            beta_slow=value,
            mscale=optional,
            mscale_all_dim=optional,
            attention_factor=optional,
            truncate=flag,
        ),
        st.builds(sc.Llama3, value, value, value, length),
        st.builds(sc.LongRoPE, lists, lists, length, factor=value, attention_factor=optional),
        st.builds(sc.Proportional, value, value),
        st.builds(sc.XPos, scale_base=value, gamma=value, center=flag),
        st.builds(
            sc.MRope,
            st.lists(
                length.map(
                    lambda v: v % 5 if isinstance(v, int) and not isinstance(v, bool) else v
                ),
                min_size=1,
                max_size=4,
            ),
            interleaved=flag,
        ),
        st.builds(sc.Axial, st.one_of(st.integers(1, 4), length)),
    )


HOSTILE = _schedules(
    4,
    st.one_of(_good_factor, _weird),
    st.one_of(_good_length, _weird),
    st.one_of(st.booleans(), _weird),
)
VALID = _schedules(4, _good_factor, _good_length, st.booleans())


@pytest.mark.parametrize("kind", ["hostile", "valid"])
@given(data=st.data())
def test_fuzz_schedule_constructors_typed_errors_or_finite_tables(kind, data):
    n_pairs = 4
    try:
        scaling = data.draw(HOSTILE if kind == "hostile" else VALID)
        rope = rr.Rope(2 * n_pairs, scaling=scaling)
    except rr.RopeError as exc:
        event(f"constructor: {type(exc).__name__}")
        return
    note(repr(rope))
    axis = rope.scaling.axis_position
    n_axes = rope.scaling.n_axes
    pos1 = np.array([0, 1, 17, 4095])
    if axis == "leading":
        pos = np.stack([pos1] * n_axes)
    elif axis == "trailing":
        pos = np.stack([pos1] * n_axes, axis=-1)
    else:
        pos = pos1
    try:
        thetas = rope.thetas(seq_len=4096)
        c, s = rope.cos_sin(pos, seq_len=4096)
        ck, sk = rope.cos_sin(pos, seq_len=4096, role="key")
    except rr.RopeError as exc:
        # frequencies beyond the exact domain (e.g. Linear(0.01) of theta_0 = 1 is fine, but a
        # huge inverse factor is not): a typed error that says so
        assert "2**16" in str(exc) or "XPos" in str(exc), exc
        event("tables: typed error")
        return
    event(f"tables checked: {type(rope.scaling).__name__}")
    assert len(thetas) == n_pairs and all(t >= 0 for t in thetas)
    for t in (c, s, ck, sk):
        assert np.all(np.isfinite(t))
    # cos^2 + sin^2 = (attention factor * magnitude)^2 for every pair: the key and query
    # magnitudes of xPos are reciprocal, so their product is the factor squared alone
    f = rope._attention_factor(4096)
    norm = (c * ck + s * sk) if isinstance(rope.scaling, sc.XPos) else (c * c + s * s)
    # each table entry is within ~2 ulps (exact cos/sin, factor, magnitude roundings)
    tol = 16 * EPS * f * f
    assert np.all(np.abs(norm - f * f) <= tol)
    assert math.isfinite(f) and f > 0
