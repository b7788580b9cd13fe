"""apply_rope and its two independent routes, on every backend, layout and dtype."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import rope_numpy_formula, ulps

import rope_ref as rr

LAYOUTS = ["half", "interleaved"]
ROUTES = [rr.apply_rope, rr.apply_rope_complex, rr.apply_rope_matrix]
# (head_dim, rotary_dim): full, partial (GPT-NeoX 0.25, GPT-J 64 of 256), odd head_dim
SIZES = [(16, None), (24, 8), (80, 20), (9, 6)]


def _ids(sizes):
    return [f"d{d}-r{r or d}" for d, r in sizes]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(("head_dim", "rotary_dim"), SIZES, ids=_ids(SIZES))
def test_routes_agree(bk, layout, head_dim, rotary_dim, rng):
    rope = rr.Rope(head_dim, rotary_dim=rotary_dim, layout=layout, base=500_000.0)
    x = rng.standard_normal((2, 3, 7, head_dim))
    pos = rng.integers(-(2**40), 2**40, size=7)
    xb, pb = bk.from_numpy(x), bk.from_numpy(pos)
    outs = [bk.to_numpy(f(xb, pb, rope)) for f in ROUTES]
    for out in outs:
        assert out.shape == x.shape and out.dtype == np.float64
    # Each output element is c*x_a -/+ s*x_b: within 2 ulps of the largest term in each route.
    scale = np.abs(x).max()
    for other in outs[1:]:
        assert np.abs(other - outs[0]).max() <= 4 * 2.0**-52 * scale
    # Pass-through channels are copied bit for bit.
    r = rope.rotary_dim
    for out in outs:
        np.testing.assert_array_equal(out[..., r:], x[..., r:])


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(("head_dim", "rotary_dim"), SIZES, ids=_ids(SIZES))
def test_matches_pairwise_formula(bk, layout, head_dim, rotary_dim, rng):
    # The library's slicing/stacking against an explicit loop over pairs with the same tables.
    rope = rr.Rope(head_dim, rotary_dim=rotary_dim, layout=layout)
    x = rng.standard_normal((4, 5, head_dim))
    pos = rng.integers(0, 1 << 20, size=(4, 5))
    cos, sin = rope.cos_sin(pos)
    want = rope_numpy_formula(x, cos, sin, layout, rope.rotary_dim)
    got = bk.to_numpy(rr.apply_rope(bk.from_numpy(x), bk.from_numpy(pos), rope))
    np.testing.assert_array_equal(got, want)


def test_paper_example_two_dims(bk):
    # d = 2: one pair turning by m * theta_0 = m radians (theta_0 = 1): RoFormer eq. (13).
    rope = rr.Rope(2)
    x = bk.from_numpy(np.array([[1.0, 0.0], [0.0, 1.0], [3.0, 4.0]]))
    m = bk.from_numpy(np.array([1, 2, -3]))
    got = bk.to_numpy(rr.apply_rope(x, m, rope))
    want = np.array(
        [
            [np.cos(1.0), np.sin(1.0)],
            [-np.sin(2.0), np.cos(2.0)],
            [3 * np.cos(3.0) + 4 * np.sin(3.0), 4 * np.cos(3.0) - 3 * np.sin(3.0)],
        ]
    )
    np.testing.assert_allclose(got, want, rtol=0, atol=4e-16 * 5)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_low_precision_dtypes_round_once(bk, layout, dtype, rng):
    # float16/bfloat16/float32 inputs: the float64 result rounded once to x.dtype, exactly.
    if dtype not in bk.dtypes:
        pytest.skip(f"{bk.name} has no {dtype}")
    rope = rr.Rope(32, layout=layout, rotary_dim=24)
    pos = np.arange(100_000, 100_011)
    x = bk.from_numpy(rng.standard_normal((3, 11, 32)), dtype)
    exact_in = bk.to_numpy(x).astype(np.float64)  # what the low-precision input holds
    got = rr.apply_rope(x, bk.from_numpy(pos), rope)
    assert got.dtype == x.dtype
    want64 = rr.apply_rope(bk.from_numpy(exact_in), bk.from_numpy(pos), rope)
    want = bk.to_numpy(bk.xp.astype(want64, bk.dtype(dtype)))
    np.testing.assert_array_equal(bk.to_numpy(got), want)


def test_positions_forms(bk, rng):
    # (seq,), (batch, 1, seq), a scalar, a Python int and a list give consistent results.
    rope = rr.Rope(8)
    x = rng.standard_normal((2, 3, 4, 8))
    xb = bk.from_numpy(x)
    seq = np.array([5, 6, 7, 8])
    a = bk.to_numpy(rr.apply_rope(xb, bk.from_numpy(seq), rope))
    b = bk.to_numpy(rr.apply_rope(xb, bk.from_numpy(np.broadcast_to(seq, (2, 1, 4)).copy()), rope))
    np.testing.assert_array_equal(a, b)
    per_batch = np.array([[[0, 1, 2, 3]], [[10, 11, 12, 13]]])
    c = bk.to_numpy(rr.apply_rope(xb, bk.from_numpy(per_batch), rope))
    np.testing.assert_array_equal(
        c[1], bk.to_numpy(rr.apply_rope(bk.from_numpy(x[1]), bk.from_numpy(per_batch[1]), rope))
    )
    one = bk.to_numpy(rr.apply_rope(xb, 7, rope))
    np.testing.assert_array_equal(
        one, bk.to_numpy(rr.apply_rope(xb, bk.from_numpy(np.array(7)), rope))
    )
    lst = bk.to_numpy(rr.apply_rope(xb, [5, 6, 7, 8], rope))
    np.testing.assert_array_equal(lst, a)


def test_position_zero_is_identity(bk, rng):
    for layout in LAYOUTS:
        x = rng.standard_normal((3, 12))
        got = bk.to_numpy(
            rr.apply_rope(
                bk.from_numpy(x), bk.from_numpy(np.zeros(3, np.int64)), rr.Rope(12, layout=layout)
            )
        )
        np.testing.assert_array_equal(got, x)


def test_inputs_not_written(bk, rng):
    # The read-only backend raises on any write; here every backend checks values afterwards.
    rope = rr.Rope(16, rotary_dim=12, layout="interleaved")
    x = rng.standard_normal((2, 5, 16))
    pos = np.arange(5)
    xb, pb = bk.from_numpy(x), bk.from_numpy(pos)
    for f in ROUTES:
        f(xb, pb, rope)
    rope.cos_sin(pb)
    rr.rotation_matrix(rope, pb)
    np.testing.assert_array_equal(bk.to_numpy(xb), x)
    np.testing.assert_array_equal(bk.to_numpy(pb), pos)


def test_result_on_callers_namespace_and_device(bk, rng):
    x = bk.from_numpy(rng.standard_normal((3, 8)))
    y = rr.apply_rope(x, bk.from_numpy(np.arange(3)), rr.Rope(8))
    assert type(y) is type(x)
    import array_api_compat

    assert array_api_compat.device(y) == array_api_compat.device(x)
    c, _ = rr.Rope(8).cos_sin(bk.from_numpy(np.arange(3)))
    assert type(c) is type(x)


def test_cos_sin_dtype_argument(bk):
    pos = bk.from_numpy(np.arange(1000, 1010))
    c64, s64 = rr.Rope(16).cos_sin(pos)
    c32, s32 = rr.Rope(16).cos_sin(pos, dtype=bk.xp.float32)
    assert c32.dtype == bk.xp.float32
    np.testing.assert_array_equal(bk.to_numpy(c32), bk.to_numpy(c64).astype(np.float32))
    np.testing.assert_array_equal(bk.to_numpy(s32), bk.to_numpy(s64).astype(np.float32))


def test_linear_scaling_is_position_interpolation(bk):
    # Linear(s) at position m equals plain RoPE at m / s (exact for m divisible by s).
    rope = rr.Rope(32, scaling=rr.scaling.Linear(4.0))
    m = np.arange(0, 4000, 4)
    a = rope.cos_sin(bk.from_numpy(m))
    b = rr.Rope(32).cos_sin(bk.from_numpy(m // 4))
    for u, v in zip(a, b, strict=True):
        assert ulps(bk.to_numpy(u), bk.to_numpy(v)).max() <= 2.0 or (
            np.abs(bk.to_numpy(u) - bk.to_numpy(v)).max() <= 2.0**-53
        )
