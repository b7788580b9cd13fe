"""Token-layout twins (flash-attn packed QKV, flashinfer ragged, TransformerEngine thd/CP)
against NumPy ports of each library's documented formula, written here independently."""

from __future__ import annotations

import numpy as np
import pytest

import rope_ref as rr
from rope_ref.testing import (
    flash_apply_rotary_emb_qkv,
    flashinfer_apply_rope,
    flashinfer_positions,
    te_apply_rotary_pos_emb,
    te_thd_positions,
)


def rotate_half(x, interleaved):
    """flash-attn / TE ``rotate_half``: [-x2, x1] (halves) or pairwise (interleaved)."""
    if not interleaved:
        x1, x2 = np.split(x, 2, axis=-1)
        return np.concatenate([-x2, x1], axis=-1)
    x1, x2 = x[..., ::2], x[..., 1::2]
    return np.stack([-x2, x1], axis=-1).reshape(x.shape)


def port_flash(x, cos, sin, offsets, interleaved):
    """flash-attn's ``apply_rotary_emb_torch`` with per-batch offsets; x (b, s, h, d)."""
    b, s = x.shape[:2]
    ro = cos.shape[-1] * 2
    out = x.astype(np.float64).copy()
    for i in range(b):
        c, sn = cos[offsets[i] : offsets[i] + s], sin[offsets[i] : offsets[i] + s]
        rep = (
            (lambda t: np.repeat(t, 2, axis=-1))
            if interleaved
            else (lambda t: np.concatenate([t, t], -1))
        )
        c, sn = rep(c)[:, None, :], rep(sn)[:, None, :]
        xr = x[i, ..., :ro].astype(np.float64)
        out[i, ..., :ro] = xr * c + rotate_half(xr, interleaved) * sn
    return out


@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("packed", ["mha", "gqa"])
def test_flash_qkv(bk, rng, interleaved, packed):
    b, s, d = 2, 5, 16
    rope = rr.Rope(d, rotary_dim=8)
    cos, sin = rope.cos_sin(np.arange(32))
    offsets = np.array([3, 11])
    if packed == "mha":
        qkv = rng.standard_normal((b, s, 3, 4, d))
        kw = {}
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    else:
        qkv = rng.standard_normal((b, s, 6 + 2 * 2, d))
        kw = {"num_heads_q": 6}
        q, k, v = qkv[:, :, :6], qkv[:, :, 6:8], qkv[:, :, 8:]
    got = bk.to_numpy(flash_apply_rotary_emb_qkv(
        bk.from_numpy(qkv), bk.from_numpy(cos), bk.from_numpy(sin), interleaved=interleaved,
        seqlen_offsets=bk.from_numpy(offsets), **kw))  # fmt: skip
    parts = [port_flash(q, cos, sin, offsets, interleaved),
             port_flash(k, cos, sin, offsets, interleaved), v]  # fmt: skip
    want = np.stack(parts, axis=2) if packed == "mha" else np.concatenate(parts, axis=2)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)
    assert not np.array_equal(got, qkv)  # something was rotated


def test_flashinfer_ragged(bk, rng):
    indptr, offsets = np.array([0, 3, 3, 8]), np.array([5, 0, 100])
    pos = bk.to_numpy(flashinfer_positions(bk.from_numpy(indptr), bk.from_numpy(offsets)))
    assert pos.tolist() == [5, 6, 7, 100, 101, 102, 103, 104]
    q, k = rng.standard_normal((8, 4, 16)), rng.standard_normal((8, 2, 16))
    theta, scale, rd = 5e5, 2.0, 12
    got_q, got_k = (bk.to_numpy(a) for a in flashinfer_apply_rope(
        bk.from_numpy(q), bk.from_numpy(k), bk.from_numpy(indptr), bk.from_numpy(offsets),
        rotary_dim=rd, interleave=False, rope_scale=scale, rope_theta=theta))  # fmt: skip
    # flashinfer's documented formula: angle = pos / rope_scale * theta ** (-2i / rotary_dim)
    for x, got in ((q, got_q), (k, got_k)):
        inv = theta ** (-np.arange(0, rd, 2) / rd)
        ang = (pos / scale)[:, None] * inv
        c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        want = x.copy()
        x1, x2 = x[..., : rd // 2], x[..., rd // 2 : rd]
        want[..., : rd // 2], want[..., rd // 2 : rd] = x1 * c - x2 * s, x2 * c + x1 * s
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-13)


def port_te(t, freqs, fmt, interleaved, cu_seqlens=None, cp_size=1, cp_rank=0, starts=None):
    """TransformerEngine's unfused ``apply_rotary_pos_emb`` (sbhd/bshd/thd), in NumPy."""

    def cp_freqs(f, seqlen):
        if cp_size == 1:
            return f
        seg, full = seqlen // 2, cp_size * seqlen
        return np.concatenate(
            [
                f[cp_rank * seg : (cp_rank + 1) * seg],
                f[full - (cp_rank + 1) * seg : full - cp_rank * seg],
            ]
        )

    def base(x, f, fmt, start=None):
        cur = x.shape[1] if fmt == "bshd" else x.shape[0]
        if start is not None:
            f = np.concatenate([f[i : i + cur] for i in start], axis=1)
        f = f[:cur]
        if fmt == "bshd":
            f = f.transpose(1, 0, 2, 3)
        rd = f.shape[-1]
        xr, xp_ = x[..., :rd], x[..., rd:]
        return np.concatenate(
            [xr * np.cos(f) + rotate_half(xr, interleaved) * np.sin(f), xp_], axis=-1
        )

    if fmt != "thd":
        seqlen = t.shape[0] if fmt == "sbhd" else t.shape[1]
        return base(t, cp_freqs(freqs, seqlen), fmt, starts)
    local = cu_seqlens // cp_size
    pieces = np.split(t, local[1:-1])
    out = [base(x[:, None], cp_freqs(freqs, x.shape[0]), "sbhd",
                None if starts is None else starts[i : i + 1])[:, 0]
           for i, x in enumerate(pieces)]  # fmt: skip
    return np.concatenate(out)


def te_freqs(rope, n, interleaved):
    ang = np.arange(n)[:, None] * rope.inv_freq()
    emb = np.repeat(ang, 2, axis=-1) if interleaved else np.concatenate([ang, ang], -1)
    return emb[:, None, None, :]


@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("fmt", ["sbhd", "bshd"])
@pytest.mark.parametrize("cp", [(1, 0), (2, 1), (4, 2)])
def test_te_dense(bk, rng, interleaved, fmt, cp):
    rope = rr.Rope(16, rotary_dim=8)
    freqs = te_freqs(rope, 64, interleaved)
    t = rng.standard_normal((6, 3, 2, 16) if fmt == "sbhd" else (3, 6, 2, 16))
    starts = np.array([0, 4, 9]) if cp[0] == 1 else None
    got = bk.to_numpy(te_apply_rotary_pos_emb(
        bk.from_numpy(t), bk.from_numpy(freqs), fmt, interleaved=interleaved,
        start_positions=None if starts is None else bk.from_numpy(starts),
        cp_size=cp[0], cp_rank=cp[1]))  # fmt: skip
    want = port_te(t, freqs, fmt, interleaved, cp_size=cp[0], cp_rank=cp[1], starts=starts)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-14)


@pytest.mark.parametrize("interleaved", [False, True])
def test_te_zero_angles_are_the_identity_even_for_nonfinite_values(bk, rng, interleaved):
    # angle 0: cos 1 and sin 0 exactly, so R is the identity; an inf or NaN stays in its own
    # channel (the zero coefficient contributes nothing, no inf * 0 = NaN in the partner)
    t = rng.standard_normal((4, 2, 3, 16))
    t[0, 0, 0, 0], t[1, 1, 2, 9], t[2, 0, 1, 3], t[3, 1, 0, 12] = np.inf, -np.inf, np.nan, np.inf
    freqs = np.zeros((4, 1, 1, 8))
    got = te_apply_rotary_pos_emb(bk.from_numpy(t), bk.from_numpy(freqs), interleaved=interleaved)
    np.testing.assert_array_equal(bk.to_numpy(got), t)


@pytest.mark.parametrize("cp", [(1, 0), (2, 0), (2, 1), (4, 3)])
def test_te_thd_and_cp_shards(bk, rng, cp):
    size, rank = cp
    cu = np.array([0, 8, 8, 24, 40])  # global, padded to 2 * cp
    rope = rr.Rope(16, layout="half")
    freqs = te_freqs(rope, 64, False)
    local = cu // size
    t = rng.standard_normal((int(local[-1]), 3, 16))
    got = bk.to_numpy(te_apply_rotary_pos_emb(
        bk.from_numpy(t), bk.from_numpy(freqs), "thd", cu_seqlens=bk.from_numpy(cu),
        cp_size=size, cp_rank=rank))  # fmt: skip
    want = port_te(t, freqs, "thd", False, cu_seqlens=cu, cp_size=size, cp_rank=rank)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-14)
    # the exact route: positions from te_thd_positions, tables from the Rope
    pos = bk.to_numpy(te_thd_positions(bk.from_numpy(cu), cp_size=size, cp_rank=rank))
    exact = rr.apply_rope(t, pos[:, None], rope)
    np.testing.assert_allclose(got, exact, rtol=0, atol=1e-13)


def test_te_cp_ranks_cover_every_position_once():
    cu = np.array([0, 16, 48])
    for size in (1, 2, 4, 8):
        all_pos = np.concatenate([te_thd_positions(cu, cp_size=size, cp_rank=r)
                                  for r in range(size)])  # fmt: skip
        # every rank holds 1/size of each sequence; together every position once
        assert sorted(all_pos.tolist()) == sorted(list(range(16)) + list(range(32)))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: te_thd_positions(np.array([0, 6]), cp_size=2), "multiple of"),
        (lambda: te_thd_positions(np.array([0, 8]), cp_size=2, cp_rank=2), "cp_rank"),
        (lambda: te_thd_positions(np.array([0, 8, 4])), "non-decreasing"),
        (
            lambda: te_thd_positions(np.array([0, 8]), cp_size=2, start_positions=np.array([1])),
            "start_positions",
        ),
        (lambda: te_apply_rotary_pos_emb(np.ones((4, 1, 1, 8)), np.ones((2, 1, 1, 8))), "beyond"),
        (
            lambda: te_apply_rotary_pos_emb(np.ones((4, 2, 8)), np.ones((8, 1, 1, 8)), "thd"),
            "cu_seqlens",
        ),
        (lambda: flashinfer_positions(np.array([0, 2]), np.array([0, 1])), "offsets"),
        (
            lambda: flash_apply_rotary_emb_qkv(
                np.ones((1, 2, 7, 8)), np.ones((4, 2)), np.ones((4, 2)), num_heads_q=2
            ),
            "num_heads_q",
        ),
        (
            lambda: flash_apply_rotary_emb_qkv(
                np.ones((1, 2, 3, 1, 8)), np.ones((4, 2)), np.ones((4, 2)), inplace=True
            ),
            "inplace",
        ),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(rr.RopeError, match=match):
        call()
