"""apply_rope and its two independent routes, on every backend, layout and dtype."""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import rope_numpy_formula, ulps

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


# ---------------------------------------------------------------- rotary_offset (MLA placement)
# (head_dim, rotary_dim, rotary_offset): DeepSeek's trailing 64 of 192, pass-through before and
# after, odd pass-through counts
OFFSETS = [(192, 64, 128), (24, 8, 6), (11, 4, 3), (10, 2, 0), (9, 6, 3)]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(("head_dim", "rotary_dim", "offset"), OFFSETS)
def test_rotary_offset_every_route(bk, layout, head_dim, rotary_dim, offset, rng):
    rope = rr.Rope(head_dim, rotary_dim=rotary_dim, rotary_offset=offset, layout=layout)
    x = rng.standard_normal((2, 3, 5, head_dim))
    pos = rng.integers(-(2**30), 2**30, size=5)
    cos, sin = rope.cos_sin(pos)
    assert cos.shape == (5, rotary_dim // 2)  # tables cover the pairs only, wherever they sit
    # independent assembly: the pair loop on the channels [offset, offset + rotary_dim)
    want = x.copy()
    want[..., offset : offset + rotary_dim] = rope_numpy_formula(
        x[..., offset : offset + rotary_dim], cos, sin, layout, rotary_dim
    )
    xb, pb = bk.from_numpy(x), bk.from_numpy(pos)
    got = bk.to_numpy(rr.apply_rope(xb, pb, rope))
    np.testing.assert_array_equal(got, want)
    for route in ROUTES[1:]:
        other = bk.to_numpy(route(xb, pb, rope))
        assert np.abs(other - want).max() <= 4 * 2.0**-52 * np.abs(x).max()
        # pass-through channels before and after are copied bit for bit
        np.testing.assert_array_equal(other[..., :offset], x[..., :offset])
        np.testing.assert_array_equal(
            other[..., offset + rotary_dim :], x[..., offset + rotary_dim :]
        )
    # R_{Theta,m}: identity rows outside the rotated block, the 64-wide rope's matrix inside
    m = int(pos[1])
    mat = np.asarray(rr.rotation_matrix(rope, m))
    inner = np.asarray(rr.rotation_matrix(rr.Rope(rotary_dim, layout=layout), m))
    blk = slice(offset, offset + rotary_dim)
    expect = np.eye(head_dim)
    expect[blk, blk] = inner
    np.testing.assert_array_equal(mat, expect)
    # the VJP: R^T g on the block, g elsewhere (the transpose of the matrix above)
    g = rng.standard_normal((5, head_dim))
    vjp = bk.to_numpy(rr.apply_rope_vjp(bk.from_numpy(g), bk.from_numpy(np.full(5, m)), rope))
    assert np.abs(vjp - g @ expect).max() <= 4 * 2.0**-52 * np.abs(g).max() * 2
    np.testing.assert_array_equal(vjp[..., :offset], g[..., :offset])


def test_rotary_offset_blocked_path_same_bits(monkeypatch, rng):
    from rope_ref import _blocks

    rope = rr.Rope(20, rotary_dim=8, rotary_offset=5)
    x = rng.standard_normal((3, 4, 33, 20)).astype(np.float32)
    pos = rng.integers(0, 2**20, size=33)
    whole = rr.apply_rope(x, pos, rope)
    monkeypatch.setattr(_blocks, "BLOCK_ELEMENTS", 64)  # many blocks, ragged last ones
    blocked = rr.apply_rope(x, pos, rope)
    np.testing.assert_array_equal(blocked, whole)
    np.testing.assert_array_equal(blocked[..., :5], x[..., :5])
    np.testing.assert_array_equal(blocked[..., 13:], x[..., 13:])


def test_rotary_offset_defaults_and_errors():
    assert rr.Rope(192, rotary_offset=128).rotary_dim == 64  # the rest of the head
    assert rr.Rope(16).rotary_offset == 0
    r = rr.Rope(192, rotary_dim=64, rotary_offset=128)
    assert "rotary_offset=128" in repr(r) and "rotary_offset" not in repr(rr.Rope(16))
    assert eval(repr(r), {"Rope": rr.Rope}) == r
    assert r != rr.Rope(192, rotary_dim=64)
    with pytest.raises(rr.RopeValueError, match=r"rotary_dim must be .* <= head_dim - rotary_"):
        rr.Rope(192, rotary_dim=66, rotary_offset=128)
    with pytest.raises(rr.RopeValueError, match=r"rotary_offset must be an integer in \[0, "):
        rr.Rope(16, rotary_offset=16)
    with pytest.raises(rr.RopeValueError, match="rotary_offset"):
        rr.Rope(16, rotary_offset=-2)
    with pytest.raises(rr.RopeTypeError, match="rotary_offset"):
        rr.Rope(16, rotary_offset=2.0)
    with pytest.raises(rr.RopeValueError, match=r"head_dim - rotary_offset = 16 - 3 = 13 is odd"):
        rr.Rope(16, rotary_offset=3)


@pytest.mark.parametrize(("src", "dst"), [("interleaved", "half"), ("half", "interleaved")])
def test_layout_conversion_with_offset(src, dst, rng):
    # RoPE_dst(P x) = P RoPE_src(x) with only the rotated block permuted
    d, r, o = 14, 6, 5
    perm = list(rr.layout_permutation(d, src=src, dst=dst, rotary_dim=r, rotary_offset=o))
    assert perm[:o] == list(range(o)) and perm[o + r :] == list(range(o + r, d))
    assert sorted(perm[o : o + r]) == list(range(o, o + r))
    x = rng.standard_normal((7, d))
    pos = np.arange(7) * 1001
    a = rr.apply_rope(x, pos, rr.Rope(d, rotary_dim=r, rotary_offset=o, layout=src))
    b = rr.apply_rope(x[..., perm], pos, rr.Rope(d, rotary_dim=r, rotary_offset=o, layout=dst))
    np.testing.assert_array_equal(b, a[..., perm])


def test_error_model_pair_channels_follow_offset():
    from rope_ref.testing._error_model import pair_channels

    for layout, (wa, wb) in {
        "half": ([5, 6, 7], [8, 9, 10]), "interleaved": ([5, 7, 9], [6, 8, 10])
    }.items():  # fmt: skip
        a, b = pair_channels(rr.Rope(13, rotary_dim=6, rotary_offset=5, layout=layout))
        assert list(a) == wa and list(b) == wb


def test_assert_close_sees_a_wrong_offset(rng):
    rope = rr.Rope(192, rotary_dim=64, rotary_offset=128, layout="interleaved")
    x = rng.standard_normal((4, 9, 192))
    pos = np.arange(9) + 100_000
    good = rr.apply_rope(x, pos, rope)
    rr.testing.assert_close(good, good.copy(), rope=rope, positions=pos, x=x)
    # rotating the leading 64 channels instead (the most common MLA port bug) fails the verdict
    wrong = rr.apply_rope(x, pos, rr.Rope(192, rotary_dim=64, layout="interleaved"))
    with pytest.raises(AssertionError):
        rr.testing.assert_close(wrong, good, rope=rope, positions=pos, x=x)
