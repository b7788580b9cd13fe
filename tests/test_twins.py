"""Signature twins (rope_ref.testing._twins) and position helpers (rope_ref.testing._positions).

Each twin is checked on every backend against an independent float64 NumPy port of the
library's own formula (flash-attn's ``apply_rotary_emb_torch`` with its ``rotate_half``,
Hugging Face's ``rotate_half``, vLLM's ``forward_native``, MLX's fallback), fed the same
tables, and against ``rope_ref.apply_rope`` when given rope_ref's tables. The position helpers
are checked against values written out by hand.
"""

from __future__ import annotations

import numpy as np
import pytest

import rope_ref as rr
from rope_ref import scaling
from rope_ref.testing._positions import (
    axial_grid,
    mrope_grid,
    positions_from_cu_seqlens,
    positions_from_offsets,
    positions_from_padding_mask,
)
from rope_ref.testing._twins import (
    flash_apply_rotary_emb,
    hf_apply_rotary_pos_emb,
    hf_cos_sin,
    mlx_rope,
    vllm_cos_sin_cache,
    vllm_rotary,
)

LAYOUTS = ["half", "interleaved"]


# ---------------------------------------------------------------- independent NumPy ports
def rotate_half(x):
    """Hugging Face / flash-attn (non-interleaved) rotate_half."""
    h = x.shape[-1] // 2
    return np.concatenate([-x[..., h:], x[..., :h]], axis=-1)


def rotate_every_two(x):
    """GPT-J / flash-attn (interleaved) rotate_every_two."""
    return np.stack([-x[..., 1::2], x[..., 0::2]], axis=-1).reshape(x.shape)


def flash_ref(x, cos, sin, interleaved, pos):
    """flash-attn's ``apply_rotary_emb_torch``: tables repeated to full width ("(2 d)" or
    "(d 2)"), gathered at ``pos`` (shape x.shape[:-2]), broadcast over heads."""
    x = np.asarray(x, dtype=np.float64)
    r = 2 * cos.shape[-1]
    c, s = np.asarray(cos, np.float64)[pos], np.asarray(sin, np.float64)[pos]
    if interleaved:
        c, s = np.repeat(c, 2, axis=-1), np.repeat(s, 2, axis=-1)
    else:
        c, s = np.concatenate([c, c], axis=-1), np.concatenate([s, s], axis=-1)
    c, s = c[..., None, :], s[..., None, :]
    xr = x[..., :r]
    rot = rotate_every_two(xr) if interleaved else rotate_half(xr)
    return np.concatenate([xr * c + rot * s, x[..., r:]], axis=-1)


def hf_ref(t, cos, sin, unsqueeze_dim=1):
    """transformers' apply_rotary_pos_emb with the partial-rotary split (GPT-NeoX, Phi)."""
    t = np.asarray(t, dtype=np.float64)
    c = np.expand_dims(np.asarray(cos, np.float64), unsqueeze_dim)
    s = np.expand_dims(np.asarray(sin, np.float64), unsqueeze_dim)
    r = c.shape[-1]
    tr, tp = t[..., :r], t[..., r:]
    return np.concatenate([tr * c + rotate_half(tr) * s, tp], axis=-1)


def vllm_ref(positions, query, head_size, cache, neox):
    """vLLM's RotaryEmbedding.forward_native for one of query/key."""
    pos = np.asarray(positions).reshape(-1)
    n = pos.size
    cos, sin = np.split(np.asarray(cache, np.float64)[pos], 2, axis=-1)
    shape = query.shape
    q = np.asarray(query, np.float64).reshape(n, -1, head_size)
    r = cache.shape[1]
    qr, qp = q[..., :r], q[..., r:]
    c, s = cos[:, None, :], sin[:, None, :]
    if neox:
        x1, x2 = np.split(qr, 2, axis=-1)
    else:
        x1, x2 = qr[..., ::2], qr[..., 1::2]
    o1, o2 = x1 * c - x2 * s, x2 * c + x1 * s
    out = np.concatenate([o1, o2], -1) if neox else np.stack([o1, o2], -1).reshape(qr.shape)
    return np.concatenate([out, qp], axis=-1).reshape(shape)


def mlx_ref(x, dims, traditional, base, scale, offset, freqs=None):
    """MLX's fast.rope fallback (mlx/fast.cpp) in float64 with NumPy's cos/sin."""
    x = np.asarray(x, dtype=np.float64)
    h = dims // 2
    off = np.asarray(offset, dtype=np.float64)
    if off.size > 1:
        off = off.reshape((-1,) + (1,) * (x.ndim - 2))
    positions = (np.arange(x.shape[-2]) + off) * scale
    if freqs is None:
        inv = np.exp(-np.arange(h) * (np.log(base) / h))
    else:
        inv = 1.0 / np.asarray(freqs, np.float64)
    theta = positions[..., None] * inv
    c, s = np.cos(theta), np.sin(theta)
    if traditional:
        x1, x2 = x[..., 0:dims:2], x[..., 1:dims:2]
        out = np.stack([x1 * c - x2 * s, x1 * s + x2 * c], -1).reshape(*x.shape[:-1], dims)
    else:
        x1, x2 = x[..., :h], x[..., h:dims]
        out = np.concatenate([x1 * c - x2 * s, x1 * s + x2 * c], -1)
    return np.concatenate([out, x[..., dims:]], axis=-1)


def tables(rng, rows, pairs):
    """cos/sin of random angles (a real table's structure, arbitrary values)."""
    ang = rng.uniform(-10.0, 10.0, size=(rows, pairs))
    return np.cos(ang), np.sin(ang)


def _unchanged(bk, arr, original):
    np.testing.assert_array_equal(bk.to_numpy(arr), original)


# ---------------------------------------------------------------- flash-attn
@pytest.mark.parametrize("interleaved", [False, True], ids=["neox", "gptj"])
@pytest.mark.parametrize("rotary_dim", [16, 8, 6], ids=lambda r: f"r{r}")
@pytest.mark.parametrize("offsets", ["int", "array"])
def test_flash_matches_reference(bk, rng, interleaved, rotary_dim, offsets):
    b, s_len, nh, d = 2, 5, 3, 16
    x = rng.standard_normal((b, s_len, nh, d))
    cos, sin = tables(rng, 12, rotary_dim // 2)
    off_np = np.array([0, 7]) if offsets == "array" else np.array([3, 3])
    pos = off_np[:, None] + np.arange(s_len)
    want = flash_ref(x, cos, sin, interleaved, pos)
    off = bk.from_numpy(off_np) if offsets == "array" else 3
    xb = bk.from_numpy(x)
    got = flash_apply_rotary_emb(
        xb, bk.from_numpy(cos), bk.from_numpy(sin), interleaved=interleaved, seqlen_offsets=off
    )
    np.testing.assert_array_equal(bk.to_numpy(got), want)
    _unchanged(bk, xb, x)


@pytest.mark.parametrize("interleaved", [False, True], ids=["neox", "gptj"])
@pytest.mark.parametrize("offsets", ["none", "int", "array"])
def test_flash_varlen(bk, rng, interleaved, offsets):
    cu = np.array([0, 3, 8, 8, 10])
    x = rng.standard_normal((10, 2, 12))
    cos, sin = tables(rng, 9, 4)  # rotary_dim 8 of 12
    off_np = {"none": np.zeros(4, int), "int": np.full(4, 2), "array": np.array([1, 4, 0, 5])}
    pos = np.concatenate(
        [np.arange(cu[i + 1] - cu[i]) + off_np[offsets][i] for i in range(4)]
    ).astype(int)
    want = flash_ref(x, cos, sin, interleaved, pos)
    off = {"none": 0, "int": 2, "array": bk.from_numpy(off_np["array"])}[offsets]
    args = (bk.from_numpy(x), bk.from_numpy(cos), bk.from_numpy(sin))
    kw = dict(interleaved=interleaved, seqlen_offsets=off, max_seqlen=5)
    if bk.lazy:
        with pytest.raises(rr.RopeValueError, match="concrete"):
            flash_apply_rotary_emb(*args, cu_seqlens=bk.from_numpy(cu), **kw)
        return
    got = flash_apply_rotary_emb(*args, cu_seqlens=bk.from_numpy(cu), **kw)
    np.testing.assert_array_equal(bk.to_numpy(got), want)


def test_flash_float32_round_once(bk, rng):
    x = rng.standard_normal((1, 6, 2, 8)).astype(np.float32)
    cos, sin = (t.astype(np.float32) for t in tables(rng, 6, 4))
    xb = bk.from_numpy(x, "float32")
    got = flash_apply_rotary_emb(xb, bk.from_numpy(cos, "float32"), bk.from_numpy(sin, "float32"))
    assert got.dtype == xb.dtype
    out = bk.to_numpy(got)
    assert out.dtype == np.float32
    want = flash_ref(x, cos, sin, False, np.arange(6)[None, :]).astype(np.float32)
    np.testing.assert_array_equal(out, want)
    _unchanged(bk, xb, x)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_flash_agrees_with_apply_rope(bk, rng, layout):
    rope = rr.Rope(16, rotary_dim=12, layout=layout, base=500_000.0)
    cos, sin = rope.cos_sin(np.arange(40))
    x = rng.standard_normal((2, 6, 3, 16))
    off = np.array([5, 30])
    pos = (off[:, None] + np.arange(6))[:, :, None]  # (batch, seq, 1): over heads
    want = bk.to_numpy(rr.apply_rope(bk.from_numpy(x), bk.from_numpy(pos), rope))
    got = flash_apply_rotary_emb(
        bk.from_numpy(x),
        bk.from_numpy(cos),
        bk.from_numpy(sin),
        interleaved=layout == "interleaved",
        seqlen_offsets=bk.from_numpy(off),
    )
    np.testing.assert_array_equal(bk.to_numpy(got), want)


def test_flash_errors(bk, rng):
    x = bk.from_numpy(rng.standard_normal((2, 5, 3, 16)))
    c_np, s_np = tables(rng, 8, 8)
    cos, sin = bk.from_numpy(c_np), bk.from_numpy(s_np)
    with pytest.raises(rr.RopeValueError, match="inplace"):
        flash_apply_rotary_emb(x, cos, sin, inplace=True)
    with pytest.raises(rr.RopeValueError, match="seqlen_offsets"):
        flash_apply_rotary_emb(x, cos, sin, seqlen_offsets=4)  # 4 + 5 > 8
    with pytest.raises(rr.RopeValueError, match="seqlen_offsets"):
        flash_apply_rotary_emb(x, cos, sin, seqlen_offsets=-1)
    with pytest.raises(rr.RopeValueError, match="seqlen_offsets"):
        flash_apply_rotary_emb(x, cos, sin, seqlen_offsets=bk.from_numpy(np.array([0, 1, 2])))
    with pytest.raises(rr.RopeTypeError, match="seqlen_offsets"):
        flash_apply_rotary_emb(x, cos, sin, seqlen_offsets=1.5)
    with pytest.raises(rr.RopeValueError, match="x must have shape"):
        flash_apply_rotary_emb(x[0, ...], cos, sin)
    with pytest.raises(rr.RopeValueError, match="rotary_dim"):
        wide = bk.from_numpy(np.ones((8, 9)))
        flash_apply_rotary_emb(x, wide, wide)
    with pytest.raises(rr.RopeValueError, match="same shape"):
        flash_apply_rotary_emb(x, cos, sin[:, :4])
    with pytest.raises(rr.RopeValueError, match="seqlen_ro"):
        flash_apply_rotary_emb(x, cos[:4, :], sin[:4, :])
    with pytest.raises(rr.RopeTypeError, match="x must have a real floating"):
        flash_apply_rotary_emb(bk.from_numpy(np.ones((1, 2, 1, 16), dtype=np.int64)), cos, sin)
    with pytest.raises(rr.RopeTypeError, match="cos must be an array"):
        flash_apply_rotary_emb(x, [[1.0] * 8] * 8, sin)
    xv = bk.from_numpy(rng.standard_normal((10, 3, 16)))
    cu = bk.from_numpy(np.array([0, 4, 10]))
    with pytest.raises(rr.RopeValueError, match="max_seqlen"):
        flash_apply_rotary_emb(xv, cos, sin, cu_seqlens=cu)
    if not bk.lazy:
        with pytest.raises(rr.RopeValueError, match="max_seqlen"):
            flash_apply_rotary_emb(xv, cos, sin, cu_seqlens=cu, max_seqlen=4)  # a length 6
        with pytest.raises(rr.RopeValueError, match="total number of tokens"):
            flash_apply_rotary_emb(
                xv, cos, sin, cu_seqlens=bk.from_numpy(np.array([0, 4, 9])), max_seqlen=6
            )
        with pytest.raises(rr.RopeValueError, match="positions"):
            flash_apply_rotary_emb(
                xv,
                cos,
                sin,
                cu_seqlens=cu,
                max_seqlen=6,
                seqlen_offsets=bk.from_numpy(np.array([0, 3])),  # 3 + 6 > 8
            )
        with pytest.raises(rr.RopeValueError, match="positions"):
            flash_apply_rotary_emb(x, cos, sin, seqlen_offsets=bk.from_numpy(np.array([0, 4])))


def test_flash_lazy_out_of_table_tokens_unrotated(bk, rng):
    # Values of lazy offsets cannot be checked: tokens past the table stay unrotated, as in
    # flash-attn's kernel (masked loads of cos = 1, sin = 0).
    if not bk.lazy:
        pytest.skip("eager backends raise instead (test_flash_errors)")
    x = rng.standard_normal((2, 5, 1, 8))
    cos, sin = tables(rng, 8, 4)
    got = bk.to_numpy(
        flash_apply_rotary_emb(
            bk.from_numpy(x),
            bk.from_numpy(cos),
            bk.from_numpy(sin),
            seqlen_offsets=bk.from_numpy(np.array([0, 5])),
        )
    )
    np.testing.assert_array_equal(got[0], flash_ref(x, cos, sin, False, np.arange(5)[None])[0])
    inside = flash_ref(x[1:, :3], cos, sin, False, np.array([[5, 6, 7]]))[0]
    np.testing.assert_array_equal(got[1, :3], inside)
    np.testing.assert_array_equal(got[1, 3:], x[1, 3:])


# ---------------------------------------------------------------- Hugging Face
@pytest.mark.parametrize("rotary_dim", [16, 8], ids=["full", "partial"])
@pytest.mark.parametrize("unsqueeze_dim", [1, 2])
def test_hf_matches_reference(bk, rng, rotary_dim, unsqueeze_dim):
    b, s_len, d = 2, 5, 16
    if unsqueeze_dim == 1:
        q = rng.standard_normal((b, 4, s_len, d))
        k = rng.standard_normal((b, 2, s_len, d))
    else:
        q = rng.standard_normal((b, s_len, 4, d))
        k = rng.standard_normal((b, s_len, 2, d))
    c, s = tables(rng, b * s_len, rotary_dim // 2)
    cos = np.concatenate([c, c], -1).reshape(b, s_len, rotary_dim)
    sin = np.concatenate([s, s], -1).reshape(b, s_len, rotary_dim)
    qb, kb = bk.from_numpy(q), bk.from_numpy(k)
    gq, gk = hf_apply_rotary_pos_emb(
        qb, kb, bk.from_numpy(cos), bk.from_numpy(sin), unsqueeze_dim=unsqueeze_dim
    )
    np.testing.assert_array_equal(bk.to_numpy(gq), hf_ref(q, cos, sin, unsqueeze_dim))
    np.testing.assert_array_equal(bk.to_numpy(gk), hf_ref(k, cos, sin, unsqueeze_dim))
    _unchanged(bk, qb, q)
    _unchanged(bk, kb, k)


def test_hf_dtypes_and_legacy_position_ids(bk, rng):
    # q float32 and k float64: each rounded once to its own dtype. 2-D caches indexed by
    # position_ids (transformers < 4.38).
    q = rng.standard_normal((2, 3, 4, 8)).astype(np.float32)
    k = rng.standard_normal((2, 1, 4, 8))
    c, s = tables(rng, 10, 4)
    cache_c, cache_s = np.concatenate([c, c], -1), np.concatenate([s, s], -1)
    pid = np.array([[0, 1, 2, 3], [6, 7, 8, 9]])
    gq, gk = hf_apply_rotary_pos_emb(
        bk.from_numpy(q, "float32"),
        bk.from_numpy(k),
        bk.from_numpy(cache_c),
        bk.from_numpy(cache_s),
        position_ids=bk.from_numpy(pid),
    )
    oq, ok = bk.to_numpy(gq), bk.to_numpy(gk)
    assert oq.dtype == np.float32 and ok.dtype == np.float64
    np.testing.assert_array_equal(oq, hf_ref(q, cache_c[pid], cache_s[pid]).astype(np.float32))
    np.testing.assert_array_equal(ok, hf_ref(k, cache_c[pid], cache_s[pid]))


@pytest.mark.parametrize("rotary_dim", [16, 10], ids=["full", "partial"])
def test_hf_cos_sin_agrees_with_apply_rope(bk, rng, rotary_dim):
    rope = rr.Rope(16, rotary_dim=rotary_dim, base=1e6)
    q = rng.standard_normal((2, 3, 5, 16))
    k = rng.standard_normal((2, 1, 5, 16))
    pid = np.array([[0, 1, 2, 3, 4], [100_000, 100_001, 100_002, 100_003, 100_004]])
    qb, kb, pb = bk.from_numpy(q), bk.from_numpy(k), bk.from_numpy(pid)
    cos, sin = hf_cos_sin(rope, qb, pb)
    assert tuple(cos.shape) == (2, 5, rotary_dim)
    gq, gk = hf_apply_rotary_pos_emb(qb, kb, cos, sin)
    p3 = bk.from_numpy(pid[:, None, :])
    np.testing.assert_array_equal(bk.to_numpy(gq), bk.to_numpy(rr.apply_rope(qb, p3, rope)))
    np.testing.assert_array_equal(bk.to_numpy(gk), bk.to_numpy(rr.apply_rope(kb, p3, rope)))


def test_hf_cos_sin_values(bk):
    # duplicated halves, attention factor included, rounded once to x.dtype
    rope = rr.Rope(8, base=10_000.0, scaling=scaling.YaRN(4.0, 64))
    pid = np.array([[0, 1, 2, 7]])
    c64, s64 = rope.cos_sin(pid)
    factor = rope.attention_factor
    assert factor != 1.0
    cos, sin = (bk.to_numpy(t) for t in hf_cos_sin(rope, bk.from_numpy(np.ones(3)), pid.tolist()))
    np.testing.assert_array_equal(cos, np.concatenate([c64, c64], -1))
    np.testing.assert_array_equal(sin, np.concatenate([s64, s64], -1))
    ang = pid[..., None] * rope.inv_freq()
    np.testing.assert_allclose(cos[..., :4], factor * np.cos(ang), rtol=0, atol=1e-15)
    np.testing.assert_allclose(sin[..., 4:], factor * np.sin(ang), rtol=0, atol=1e-15)
    x32 = bk.from_numpy(np.ones(3, dtype=np.float32), "float32")
    c32, s32 = hf_cos_sin(rope, x32, bk.from_numpy(pid))
    assert c32.dtype == x32.dtype
    np.testing.assert_array_equal(bk.to_numpy(c32), cos.astype(np.float32))
    np.testing.assert_array_equal(bk.to_numpy(s32), sin.astype(np.float32))


def test_hf_errors(bk, rng):
    q = bk.from_numpy(rng.standard_normal((2, 3, 5, 8)))
    c, s = tables(rng, 10, 4)
    cos = bk.from_numpy(np.concatenate([c, c], -1).reshape(2, 5, 8))
    sin = bk.from_numpy(np.concatenate([s, s], -1).reshape(2, 5, 8))
    with pytest.raises(rr.RopeValueError, match="same shape"):
        hf_apply_rotary_pos_emb(q, q, cos, sin[:, :, :4])
    with pytest.raises(rr.RopeValueError, match="even"):
        hf_apply_rotary_pos_emb(q, q, cos[..., :3], sin[..., :3])
    with pytest.raises(rr.RopeValueError, match="exceeds k"):
        hf_apply_rotary_pos_emb(q, q[..., :4], cos, sin)
    with pytest.raises(rr.RopeValueError, match="unsqueeze_dim"):
        hf_apply_rotary_pos_emb(q, q, cos, sin, unsqueeze_dim=5)
    with pytest.raises(rr.RopeValueError, match="does not broadcast"):
        hf_apply_rotary_pos_emb(q, q, cos[:, :4, :], sin[:, :4, :])
    with pytest.raises(rr.RopeTypeError, match="q must have a real floating"):
        hf_apply_rotary_pos_emb(bk.from_numpy(np.ones((1, 1, 1, 8), dtype=np.int64)), q, cos, sin)
    with pytest.raises(rr.RopeTypeError, match="k must be an array"):
        hf_apply_rotary_pos_emb(q, None, cos, sin)
    with pytest.raises(rr.RopeTypeError, match="rope"):
        hf_cos_sin("rope", q, bk.from_numpy(np.arange(3)))
    with pytest.raises(rr.RopeTypeError, match="x must have a real floating"):
        hf_cos_sin(rr.Rope(8), bk.from_numpy(np.arange(3)), bk.from_numpy(np.arange(3)))


# ---------------------------------------------------------------- vLLM
@pytest.mark.parametrize("neox", [True, False], ids=["neox", "gptj"])
@pytest.mark.parametrize("rotary_dim", [16, 8], ids=["full", "partial"])
@pytest.mark.parametrize("flat", [True, False], ids=["flat", "3d"])
def test_vllm_matches_reference(bk, rng, neox, rotary_dim, flat):
    n, hs = 7, 16
    positions = rng.integers(0, 20, size=n)
    c, s = tables(rng, 20, rotary_dim // 2)
    cache = np.concatenate([c, s], -1)
    q = rng.standard_normal((n, 3 * hs) if flat else (n, 3, hs))
    k = rng.standard_normal((n, 2 * hs) if flat else (n, 2, hs))
    qb, kb = bk.from_numpy(q), bk.from_numpy(k)
    gq, gk = vllm_rotary(
        bk.from_numpy(positions),
        qb,
        kb,
        head_size=hs,
        cos_sin_cache=bk.from_numpy(cache),
        is_neox_style=neox,
    )
    assert tuple(gq.shape) == q.shape and tuple(gk.shape) == k.shape
    np.testing.assert_array_equal(bk.to_numpy(gq), vllm_ref(positions, q, hs, cache, neox))
    np.testing.assert_array_equal(bk.to_numpy(gk), vllm_ref(positions, k, hs, cache, neox))
    _unchanged(bk, qb, q)
    gq2, none = vllm_rotary(
        bk.from_numpy(positions),
        qb,
        None,
        head_size=hs,
        cos_sin_cache=bk.from_numpy(cache),
        is_neox_style=neox,
    )
    assert none is None
    np.testing.assert_array_equal(bk.to_numpy(gq2), bk.to_numpy(gq))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_vllm_cache_agrees_with_apply_rope(bk, rng, layout):
    rope = rr.Rope(16, rotary_dim=12, layout=layout, base=10_000.0)
    cache = vllm_cos_sin_cache(rope, 64, xp=bk.xp, device=bk.device)
    c, s = rope.cos_sin(np.arange(64))
    np.testing.assert_array_equal(bk.to_numpy(cache), np.concatenate([c, s], -1))
    positions = np.array([63, 0, 5, 17, 40])
    q = rng.standard_normal((5, 4, 16)).astype(np.float32)
    qb = bk.from_numpy(q, "float32")
    gq, _ = vllm_rotary(
        bk.from_numpy(positions),
        qb,
        None,
        head_size=16,
        cos_sin_cache=cache,
        is_neox_style=layout == "half",
    )
    assert gq.dtype == qb.dtype
    want = rr.apply_rope(qb, bk.from_numpy(positions[:, None]), rope)
    np.testing.assert_array_equal(bk.to_numpy(gq), bk.to_numpy(want))


def test_vllm_cache_dtype_and_default_namespace():
    rope = rr.Rope(8, scaling=scaling.YaRN(2.0, 16))
    cache = vllm_cos_sin_cache(rope, 10)
    assert isinstance(cache, np.ndarray) and cache.shape == (10, 8) and cache.dtype == np.float64
    c, s = rope.cos_sin(np.arange(10))  # attention factor included
    np.testing.assert_array_equal(cache, np.concatenate([c, s], -1))
    c32 = vllm_cos_sin_cache(rope, 10, dtype=np.float32)
    np.testing.assert_array_equal(c32, cache.astype(np.float32))
    with pytest.raises(rr.RopeValueError, match="one-axis"):
        vllm_cos_sin_cache(rr.Rope(8, scaling=scaling.MRope((2, 1, 1))), 10)
    with pytest.raises(rr.RopeValueError, match="max_position"):
        vllm_cos_sin_cache(rope, 0)
    with pytest.raises(rr.RopeTypeError, match="dtype"):
        vllm_cos_sin_cache(rope, 4, dtype=np.int32)


def test_vllm_errors(bk, rng):
    cache = bk.from_numpy(np.ones((10, 8)))
    pos = bk.from_numpy(np.array([0, 1, 2]))
    q = bk.from_numpy(rng.standard_normal((3, 32)))
    kw = dict(head_size=16, cos_sin_cache=cache)
    with pytest.raises(rr.RopeTypeError, match="positions"):
        vllm_rotary(bk.from_numpy(np.array([0.0, 1.0, 2.0])), q, None, **kw)
    with pytest.raises(rr.RopeValueError, match="query"):
        vllm_rotary(pos, bk.from_numpy(rng.standard_normal((3, 24))), None, **kw)
    with pytest.raises(rr.RopeValueError, match="key"):
        vllm_rotary(pos, q, bk.from_numpy(rng.standard_normal((4, 32))), **kw)
    with pytest.raises(rr.RopeValueError, match="rotary_dim"):
        vllm_rotary(pos, q, None, head_size=4, cos_sin_cache=cache)
    with pytest.raises(rr.RopeValueError, match="cos_sin_cache"):
        vllm_rotary(pos, q, None, head_size=16, cos_sin_cache=bk.from_numpy(np.ones(8)))
    with pytest.raises(rr.RopeTypeError, match="is_neox_style"):
        vllm_rotary(pos, q, None, is_neox_style="yes", **kw)
    if not bk.lazy:
        with pytest.raises(rr.RopeValueError, match="positions span"):
            vllm_rotary(bk.from_numpy(np.array([0, 10, 2])), q, None, **kw)


# ---------------------------------------------------------------- MLX
@pytest.mark.parametrize("traditional", [False, True], ids=["half", "traditional"])
@pytest.mark.parametrize("dims", [16, 8], ids=["full", "partial"])
@pytest.mark.parametrize(("scale", "offset"), [(1.0, 5), (0.5, "array"), (1.0, "scalar-array")])
def test_mlx_matches_reference(bk, rng, traditional, dims, scale, offset):
    x = rng.standard_normal((2, 3, 6, 16))
    off_np = {"array": np.array([0, 7]), "scalar-array": np.array(9)}.get(offset, offset)
    off = bk.from_numpy(off_np) if isinstance(offset, str) else offset
    xb = bk.from_numpy(x)
    got = bk.to_numpy(
        mlx_rope(xb, dims, traditional=traditional, base=10_000.0, scale=scale, offset=off)
    )
    # MLX's formula with NumPy's libm angles: agreement to a few ulps of the angle (< 20 here).
    want = mlx_ref(x, dims, traditional, 10_000.0, scale, off_np)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-13)
    np.testing.assert_array_equal(got[..., dims:], x[..., dims:])
    # The exact route: apply_rope with positions (offset + t) * scale and base over dims.
    pos = (np.arange(6) + np.asarray(off_np, np.float64).reshape(-1, 1, 1)) * scale
    pos = pos if np.ndim(off_np) and np.size(off_np) > 1 else pos.reshape(-1)
    rope = rr.Rope(16, rotary_dim=dims, layout="interleaved" if traditional else "half")
    exact = bk.to_numpy(rr.apply_rope(xb, bk.from_numpy(pos), rope))
    np.testing.assert_array_equal(got, exact)
    _unchanged(bk, xb, x)


@pytest.mark.parametrize("traditional", [False, True], ids=["half", "traditional"])
@pytest.mark.parametrize("kind", ["array", "list"])
def test_mlx_freqs_are_periods(bk, rng, traditional, kind):
    # Periods that are powers of two: theta = 1 / f exactly, so m * theta is exact in float64
    # and NumPy's cos/sin (correctly rounded to within an ulp) are a tight reference.
    if kind == "array" and bk.lazy:
        pytest.skip("lazy freqs cannot be read (test_mlx_errors)")

    def as_freqs(a):
        return bk.from_numpy(a) if kind == "array" else a.tolist()

    x = rng.standard_normal((1, 2, 5, 10))
    freqs = np.array([1.0, 2.0, 4.0, 0.5])
    got = mlx_rope(
        bk.from_numpy(x),
        8,
        traditional=traditional,
        base=None,
        scale=1.0,
        offset=3,
        freqs=as_freqs(freqs),
    )
    want = mlx_ref(x, 8, traditional, None, 1.0, 3, freqs=freqs)
    np.testing.assert_allclose(bk.to_numpy(got), want, rtol=0, atol=2e-15 * np.abs(x).max())
    # freqs = base ** (2j / dims) are the periods of the base ladder: the same rotation
    dims, base = 8, 10_000.0
    ladder = base ** (np.arange(0, dims, 2) / dims)
    kw = dict(traditional=traditional, scale=0.25, offset=2)
    a = mlx_rope(bk.from_numpy(x), dims, base=None, freqs=as_freqs(ladder), **kw)
    b = mlx_rope(bk.from_numpy(x), dims, base=base, **kw)
    np.testing.assert_allclose(bk.to_numpy(a), bk.to_numpy(b), rtol=0, atol=1e-14)


def test_mlx_float32(bk, rng):
    x = rng.standard_normal((2, 1, 4, 8)).astype(np.float32)
    xb = bk.from_numpy(x, "float32")
    got = mlx_rope(xb, 8, traditional=False, base=10_000.0, scale=1.0, offset=0)
    assert got.dtype == xb.dtype
    exact = rr.apply_rope(
        bk.from_numpy(x.astype(np.float64)), bk.from_numpy(np.arange(4)), rr.Rope(8)
    )
    np.testing.assert_array_equal(bk.to_numpy(got), bk.to_numpy(exact).astype(np.float32))
    _unchanged(bk, xb, x)


def test_mlx_errors(bk, rng):
    x = bk.from_numpy(rng.standard_normal((2, 3, 4, 8)))
    kw = dict(traditional=False, scale=1.0, offset=0)
    with pytest.raises(rr.RopeValueError, match="exactly one"):
        mlx_rope(x, 8, base=None, **kw)
    with pytest.raises(rr.RopeValueError, match="exactly one"):
        mlx_rope(x, 8, base=1e4, freqs=bk.from_numpy(np.ones(4)), **kw)
    with pytest.raises(rr.RopeValueError, match="dims"):
        mlx_rope(x, 7, base=1e4, **kw)
    with pytest.raises(rr.RopeValueError, match="dims"):
        mlx_rope(x, 10, base=1e4, **kw)
    with pytest.raises(rr.RopeValueError, match="at least 3 axes"):
        mlx_rope(x[0, 0, ...], 8, base=1e4, **kw)
    with pytest.raises(rr.RopeValueError, match="offset"):
        mlx_rope(x, 8, base=1e4, traditional=False, scale=1.0, offset=bk.from_numpy(np.arange(3)))
    with pytest.raises(rr.RopeTypeError, match="offset"):
        mlx_rope(x, 8, base=1e4, traditional=False, scale=1.0, offset=bk.from_numpy(np.ones(2)))
    with pytest.raises(rr.RopeTypeError, match="offset"):
        mlx_rope(x, 8, base=1e4, traditional=False, scale=1.0, offset=0.5)
    with pytest.raises(rr.RopeValueError, match="freqs"):
        mlx_rope(x, 8, base=None, freqs=bk.from_numpy(np.ones(3)), **kw)
    with pytest.raises(rr.RopeTypeError, match="traditional"):
        mlx_rope(x, 8, base=1e4, traditional=1, scale=1.0, offset=0)
    if not bk.lazy:
        with pytest.raises(rr.RopeValueError, match="positive"):
            mlx_rope(x, 8, base=None, freqs=bk.from_numpy(np.array([1.0, -2.0, 1.0, 1.0])), **kw)
    else:
        with pytest.raises(rr.RopeValueError, match="concrete"):
            mlx_rope(x, 8, base=None, freqs=bk.from_numpy(np.ones(4)), **kw)


# ---------------------------------------------------------------- position helpers
def test_positions_from_offsets(bk):
    got = positions_from_offsets(4, bk.from_numpy(np.array([0, 3])))
    np.testing.assert_array_equal(bk.to_numpy(got), [[0, 1, 2, 3], [3, 4, 5, 6]])
    one = positions_from_offsets(3, 5)
    assert isinstance(one, np.ndarray)
    np.testing.assert_array_equal(one, [[5, 6, 7]])
    with pytest.raises(rr.RopeValueError, match="offsets"):
        positions_from_offsets(2, bk.from_numpy(np.zeros((2, 2), dtype=np.int64)))
    with pytest.raises(rr.RopeTypeError, match="offsets"):
        positions_from_offsets(2, bk.from_numpy(np.zeros(2)))
    with pytest.raises(rr.RopeValueError, match="seq_len must be >= 0, got -1"):
        positions_from_offsets(-1, 0)
    np.testing.assert_array_equal(positions_from_offsets(seq_len=2, offsets=7), [[7, 8]])


def test_positions_from_offsets_old_seqlen_keyword_warns():
    with pytest.warns(DeprecationWarning, match=r"seqlen=\.\.\.\) is deprecated; pass seq_len"):
        old = positions_from_offsets(seqlen=3, offsets=np.array([0, 10]))
    np.testing.assert_array_equal(old, [[0, 1, 2], [10, 11, 12]])
    with pytest.raises(TypeError, match=r"seqlen= .* and seq_len= both"):
        positions_from_offsets(3, seqlen=3, offsets=0)


def test_positions_from_cu_seqlens(bk):
    np.testing.assert_array_equal(positions_from_cu_seqlens([0, 3, 5]), [0, 1, 2, 0, 1])
    cu = bk.from_numpy(np.array([0, 3, 3, 5]))
    if bk.lazy:
        with pytest.raises(rr.RopeValueError, match="concrete"):
            positions_from_cu_seqlens(cu)
        return
    np.testing.assert_array_equal(bk.to_numpy(positions_from_cu_seqlens(cu)), [0, 1, 2, 0, 1])
    np.testing.assert_array_equal(bk.to_numpy(positions_from_cu_seqlens(cu, 2)), [2, 3, 4, 2, 3])
    off = bk.from_numpy(np.array([10, 99, 20]))
    np.testing.assert_array_equal(
        bk.to_numpy(positions_from_cu_seqlens(cu, off)), [10, 11, 12, 20, 21]
    )
    with pytest.raises(rr.RopeValueError, match="3 sequences"):
        positions_from_cu_seqlens(cu, bk.from_numpy(np.array([1, 2])))


def test_positions_from_padding_mask(bk):
    mask = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    got = positions_from_padding_mask(bk.from_numpy(mask))
    np.testing.assert_array_equal(bk.to_numpy(got), [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]])
    hf = positions_from_padding_mask(bk.from_numpy(mask.astype(bool)), pad_value=1)
    np.testing.assert_array_equal(bk.to_numpy(hf), [[1, 1, 0, 1, 2], [0, 1, 2, 3, 4]])
    right = np.array([[1, 1, 1, 0, 0]])
    got = positions_from_padding_mask(bk.from_numpy(right), side="right", pad_value=-1)
    np.testing.assert_array_equal(bk.to_numpy(got), [[0, 1, 2, -1, -1]])
    np.testing.assert_array_equal(positions_from_padding_mask([[1, 0, 1]], side=None), [[0, 0, 1]])
    with pytest.raises(rr.RopeValueError, match="side"):
        positions_from_padding_mask(bk.from_numpy(mask), side="top")
    with pytest.raises(rr.RopeTypeError, match="mask"):
        positions_from_padding_mask(bk.from_numpy(mask.astype(np.float64)))
    if not bk.lazy:
        with pytest.raises(rr.RopeValueError, match="not left-padded"):
            positions_from_padding_mask(bk.from_numpy(right))
        with pytest.raises(rr.RopeValueError, match="only 0"):
            positions_from_padding_mask(bk.from_numpy(np.array([[1, 2]])))


def test_mrope_grid(bk):
    got = bk.to_numpy(mrope_grid(2, 2, 3, start=4, xp=bk.xp, device=bk.device))
    want = [
        [4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5],  # temporal
        [4, 4, 4, 5, 5, 5, 4, 4, 4, 5, 5, 5],  # height
        [4, 5, 6, 4, 5, 6, 4, 5, 6, 4, 5, 6],  # width
    ]
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(mrope_grid(1, 1, 2), [[0, 0], [0, 0], [0, 1]])
    # the layout Rope.cos_sin takes for M-RoPE: (3, tokens) -> tokens
    rope = rr.Rope(16, scaling=scaling.MRope((2, 3, 3)))
    cos, _ = rope.cos_sin(mrope_grid(2, 2, 3))
    assert cos.shape == (12, 8)
    with pytest.raises(rr.RopeValueError, match="h"):
        mrope_grid(1, 0, 1)


def test_axial_grid(bk):
    got = bk.to_numpy(axial_grid(2, 3, xp=bk.xp, device=bk.device))
    np.testing.assert_array_equal(got, [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]])
    np.testing.assert_array_equal(axial_grid(3), [[0], [1], [2]])
    np.testing.assert_array_equal(axial_grid(1, 2, 2), [[0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, 1]])
    rope = rr.Rope(16, scaling=scaling.Axial(2))
    cos, _ = rope.cos_sin(axial_grid(2, 3))
    assert cos.shape == (6, 8)
    with pytest.raises(rr.RopeValueError, match="at least one"):
        axial_grid()
    with pytest.raises(rr.RopeTypeError, match="sizes"):
        axial_grid(2, 1.5)


# ---------------------------------------------------------------- small integer dtypes, sizes
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16])
def test_small_integer_offsets_do_not_wrap(bk, dtype):
    # uint8 254 + 2 used to give 0: offsets are widened before they are added
    hi = np.iinfo(dtype).max - 1
    off = bk.from_numpy(np.array([hi, 1], dtype=dtype))
    want = [[hi, hi + 1, hi + 2], [1, 2, 3]]
    np.testing.assert_array_equal(bk.to_numpy(positions_from_offsets(3, off)), want)
    if not bk.lazy:
        cu = bk.from_numpy(np.array([0, 3, 5], dtype=dtype))
        np.testing.assert_array_equal(
            bk.to_numpy(positions_from_cu_seqlens(cu, off)), [hi, hi + 1, hi + 2, 1, 2]
        )


def test_flash_and_mlx_twins_with_small_integer_offsets(bk, rng):
    # the same result as with int64 offsets, at positions past the small dtype's range
    rope = rr.Rope(8)
    x = rng.standard_normal((2, 3, 2, 8))
    cos, sin = rope.cos_sin(np.arange(300))
    off8, off64 = np.array([254, 1], np.uint8), np.array([254, 1], np.int64)
    pos = np.array([[254, 255, 256], [1, 2, 3]])
    want = rr.apply_rope(x, pos[:, :, None], rope)
    for off in (off8, off64):
        got = flash_apply_rotary_emb(
            bk.from_numpy(x),
            bk.from_numpy(cos),
            bk.from_numpy(sin),
            seqlen_offsets=bk.from_numpy(off),
        )
        np.testing.assert_array_equal(bk.to_numpy(got), want)
    xm = np.swapaxes(x, 1, 2)  # MLX: (B, heads, T, D)
    for off in (off8, off64):
        got = mlx_rope(
            bk.from_numpy(xm), 8, traditional=False, base=1e4, scale=1.0, offset=bk.from_numpy(off)
        )
        np.testing.assert_array_equal(bk.to_numpy(got), np.swapaxes(want, 1, 2))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: mrope_grid(10**6, 10**6, 10**6), "3 \\* t \\* h \\* w asks for"),
        (lambda: axial_grid(10**9, 10**9, 10**9), "prod\\(sizes\\)"),
        (lambda: vllm_cos_sin_cache(rr.Rope(128), 10**15), "max_position \\* rotary_dim"),
        (lambda: positions_from_offsets(10**12, np.arange(4)), "batch \\* seq_len"),
        (lambda: mrope_grid(1, 1, 1, start=2**63), "start"),
    ],
)
def test_position_helpers_reject_huge_sizes_up_front(call, match):
    import tracemalloc

    tracemalloc.start()
    try:
        with pytest.raises(rr.RopeValueError, match=match) as info:
            call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20  # nothing of the requested size was allocated
    if "asks for" in str(info.value):
        assert "2**31" in str(info.value)  # the limit is in the message


def test_check_adapters_channel_permutations_are_inverse():
    from rope_ref.testing._twins._common import (
        perm_half_from_interleaved,
        perm_interleaved_from_half,
    )

    for r, d in ((8, 8), (4, 10), (64, 256)):
        a, b = perm_half_from_interleaved(r, d), perm_interleaved_from_half(r, d)
        np.testing.assert_array_equal(a[b], np.arange(d))
        # interleaved pair j = channels (2j, 2j + 1) lands on half pair j = (j, j + r/2)
        for j in range(r // 2):
            assert (a[j], a[j + r // 2]) == (2 * j, 2 * j + 1)
        # a half-layout rotation of permuted data is the interleaved rotation
        x = np.random.default_rng(r).standard_normal((3, d))
        pos = np.arange(3)
        y_half = rr.apply_rope(x[:, a], pos, rr.Rope(d, rotary_dim=r))[:, b]
        y_int = rr.apply_rope(x, pos, rr.Rope(d, rotary_dim=r, layout="interleaved"))
        np.testing.assert_array_equal(y_half, y_int)


# ---------------------------------------------------------------- the shared rotation kernel
#: (cos, sin) of k quarter turns: exact, with exact zeros.
QUARTER = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])


def quarter_turned(x, layout, r):
    """x (..., seq=4, heads, d) with token k turned by k quarter turns in every pair of the
    first r channels, written out by hand (negations and swaps: exact)."""
    h = r // 2
    a, b = (
        (np.arange(h), np.arange(h, r))
        if layout == "half"
        else (np.arange(0, r, 2), 1 + np.arange(0, r, 2))
    )
    y = x.copy()
    for k in range(4):
        xa, xb = x[..., k, :, a], x[..., k, :, b]
        y[..., k, :, a], y[..., k, :, b] = [(xa, xb), (-xb, xa), (-xa, -xb), (xb, -xa)][k]
    return y


def with_nonfinite(x, layout):
    """inf, -inf and NaN in rotary channels (and inf in the pass-through channel 7)."""
    x = x.copy()
    x[..., 0, 0] = np.inf  # channel a of pair 0 in both layouts
    x[..., 1, 3] = -np.inf
    x[..., 0, 5] = np.nan
    x[..., 1, 7] = np.inf
    return x


@pytest.mark.parametrize("layout", LAYOUTS)
def test_twins_exact_zero_coefficients_keep_nonfinite_values_in_their_pair(bk, rng, layout):
    # tables with exact zeros (quarter turns): an inf or NaN in one channel of a pair must not
    # reach its partner through 0 * inf = NaN (R_{Theta,m} has a zero there), as in apply_rope
    r, d = 6, 8
    x = with_nonfinite(rng.standard_normal((1, 4, 2, d)), layout)
    want = quarter_turned(x, layout, r)
    cos = np.repeat(QUARTER[:, :1], r // 2, axis=1)
    sin = np.repeat(QUARTER[:, 1:], r // 2, axis=1)
    got = flash_apply_rotary_emb(
        bk.from_numpy(x), bk.from_numpy(cos), bk.from_numpy(sin), interleaved=layout != "half"
    )
    np.testing.assert_array_equal(bk.to_numpy(got), want)
    # vLLM: tokens flattened, cache rows [cos | sin]
    q = x[0].reshape(4, 2 * d)
    cache = bk.from_numpy(np.concatenate([cos, sin], axis=-1))
    gq, _ = vllm_rotary(
        bk.from_numpy(np.arange(4)),
        bk.from_numpy(q),
        None,
        head_size=d,
        cos_sin_cache=cache,
        is_neox_style=layout == "half",
    )
    np.testing.assert_array_equal(bk.to_numpy(gq).reshape(x.shape), want)
    if layout == "half":  # Hugging Face: full-width tables, duplicated halves; bshd
        c2, s2 = np.concatenate([cos, cos], -1)[None], np.concatenate([sin, sin], -1)[None]
        xb = bk.from_numpy(x)
        gq, _ = hf_apply_rotary_pos_emb(
            xb, xb, bk.from_numpy(c2), bk.from_numpy(s2), unsqueeze_dim=2
        )
        np.testing.assert_array_equal(bk.to_numpy(gq), want)
    # MLX builds its own tables: position 0 (cos 1, sin 0 exactly) is the identity
    x0 = x[:, :1].transpose(0, 2, 1, 3)  # (B, heads, T=1, D)
    g0 = mlx_rope(bk.from_numpy(x0), r, traditional=layout != "half", base=1e4, scale=1.0, offset=0)
    np.testing.assert_array_equal(bk.to_numpy(g0), x0)


def test_hf_tables_with_different_halves_are_applied_channel_by_channel(bk, rng):
    # transformers evaluates q * cos + rotate_half(q) * sin as written: with halves that differ
    # the first half of the output uses the first half of the table, the second the second
    q = rng.standard_normal((2, 3, 5, 12))
    cos = rng.standard_normal((2, 5, 8))
    sin = rng.standard_normal((2, 5, 8))
    qb = bk.from_numpy(q)
    gq, gk = hf_apply_rotary_pos_emb(qb, qb, bk.from_numpy(cos), bk.from_numpy(sin))
    want = hf_ref(q, cos, sin)
    np.testing.assert_array_equal(bk.to_numpy(gq), want)
    np.testing.assert_array_equal(bk.to_numpy(gk), want)


def test_vllm_cache_xp_is_keyword_only_and_the_old_spelling_warns(bk):
    import inspect

    rope = rr.Rope(16, rotary_dim=12, base=10_000.0)
    params = inspect.signature(vllm_cos_sin_cache).parameters
    assert params["xp"].kind is inspect.Parameter.KEYWORD_ONLY
    want = bk.to_numpy(vllm_cos_sin_cache(rope, 8, None, xp=bk.xp, device=bk.device))
    with pytest.warns(DeprecationWarning, match=r"xp to vllm_cos_sin_cache\(\) positionally"):
        old = vllm_cos_sin_cache(rope, 8, None, bk.xp, device=bk.device)
    np.testing.assert_array_equal(bk.to_numpy(old), want)
    c, s = rope.cos_sin(np.arange(8))
    np.testing.assert_array_equal(want, np.concatenate([c, s], -1))
    with pytest.raises(TypeError, match="multiple values for argument 'xp'"):
        vllm_cos_sin_cache(rope, 8, None, bk.xp, xp=bk.xp)
    with pytest.raises(TypeError, match="at most 3 positional"):
        vllm_cos_sin_cache(rope, 8, None, bk.xp, bk.device)
