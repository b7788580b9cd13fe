"""Hypothesis fuzzing of the verdict (`compare` / `assert_close`): on any input it returns a
Report, raises AssertionError (a failed comparison) or a typed RopeError naming the argument,
never another exception, never a NaN or infinite tolerance; and its answers hold against
independent facts: the reference compared with itself is "exact", a one-unit error in a large
fraction of the elements of a float64 output fails."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rope_ref as rr
from rope_ref.testing import RopeToleranceWarning, compare
from rope_ref.testing.strategies import rope_inputs

pytestmark = pytest.mark.filterwarnings("ignore::rope_ref.testing.RopeToleranceWarning")


@settings(max_examples=40, deadline=None)
@given(inp=rope_inputs(max_position=2**20), strict=st.booleans())
def test_reference_against_itself_is_exact(inp, strict):
    x, pos, rope = inp.x, inp.positions, inp.rope
    want = rr.apply_rope(x, pos, rope, role=inp.role)
    report = compare(want, want.copy(), rope=rope, positions=pos, x=x, role=inp.role,
                     strict=strict)  # fmt: skip
    assert report.passed and report.accuracy_class == "exact"
    assert report.max_abs_error == 0.0
    assert math.isfinite(report.atol) and report.atol >= 0


@settings(max_examples=40, deadline=None)
@given(inp=rope_inputs(dtypes=("float64",), max_position=2**12), seed=st.integers(0, 2**16))
def test_large_errors_fail(inp, seed):
    x, pos, rope = inp.x, inp.positions, inp.rope
    want = rr.apply_rope(x, pos, rope, role=inp.role)
    scale = float(np.max(np.abs(want))) if want.size else 0.0
    if want.size == 0 or scale == 0.0:
        return
    g = np.random.default_rng(seed)
    bad = want + g.choice([-1.0, 1.0], size=want.shape) * scale  # every element off by max|y|
    with pytest.raises(AssertionError):
        rr.testing.assert_close(bad, want, rope=rope, positions=pos, role=inp.role)


_arrays = st.sampled_from(
    [np.zeros((0,)), np.zeros((3, 4)), np.ones((2, 8), np.float32), np.full((4,), np.nan),
     np.array([np.inf, -np.inf, 1.0]), np.array(1.0), np.arange(6.0).reshape(2, 3)]
)  # fmt: skip
_junk = st.one_of(
    st.none(), st.integers(-3, 3), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3), st.booleans(), st.just(np.float32(1e-3)), st.just([1e-3]),
)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(
    a=_arrays, d=_arrays, rtol=_junk, atol=_junk, strict=_junk, equal_nan=_junk,
    with_rope=st.booleans(), positions=st.one_of(st.none(), _arrays),
)  # fmt: skip
def test_only_reports_assertions_or_typed_errors(
    a, d, rtol, atol, strict, equal_nan, with_rope, positions
):
    kw = {"rtol": rtol, "atol": atol, "strict": strict, "equal_nan": equal_nan}
    if with_rope:
        kw |= {"rope": rr.Rope(int(a.shape[-1]) if a.ndim and a.shape[-1] % 2 == 0
                               and a.shape[-1] else 2), "positions": positions}  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RopeToleranceWarning)
        try:
            report = compare(a, d, **kw)
        except (rr.RopeError, AssertionError):
            return
    assert isinstance(report.passed, bool)
    assert report.accuracy_class in ("exact", "lower-precision angles", "fail")
    assert not math.isnan(report.atol) and not math.isinf(report.atol)
