"""rr.attention and rr.linear_attention against independent routes, on every backend."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import rope_ref as rr
from rope_ref import _attention


def loop_reference(
    q,
    k,
    v,
    *,
    rope=None,
    q_pos=None,
    k_pos=None,
    causal=False,
    mask=None,
    scale=None,
    window=None,
    softcap=None,
    segments=None,
    sinks=None,
):
    """Per query, a Python loop over keys in float64 (RoFormer eq. 2 with eq. 14).

    Rotations use the matrix route (eq. 15), an independent code path from apply_rope.
    Returns (out, lse) as NumPy arrays."""
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    *batch, hq, sq, d = q.shape
    hk, sk, dv = k.shape[-3], k.shape[-2], v.shape[-1]
    g = hq // hk
    scale = d**-0.5 if scale is None else scale
    q_pos = np.arange(sk - sq, sk) if q_pos is None else np.asarray(q_pos)
    k_pos = np.arange(sk) if k_pos is None else np.asarray(k_pos)
    qp = np.broadcast_to(q_pos, (*batch, hq, sq))
    kp = np.broadcast_to(k_pos, (*batch, hk, sk))
    if rope is not None:
        q = _rot(q, qp, rope)
        k = _rot(k, kp, rope, role="key")
    out = np.zeros((*batch, hq, sq, dv))
    lse = np.zeros((*batch, hq, sq))
    full_mask = None if mask is None else np.broadcast_to(mask, (*batch, hq, sq, sk))
    for idx in np.ndindex(*batch, hq, sq):
        *b, h, i = idx
        kh = h // g
        logits, vals = [], []
        for j in range(sk):
            qpos, kpos = qp[(*b, h, i)], kp[(*b, kh, j)]
            if causal and kpos > qpos:
                continue
            if window is not None:
                left, right = window
                if left is not None and kpos < qpos - left:
                    continue
                if right is not None and kpos > qpos + right:
                    continue
            if segments is not None:
                qs, ks = (
                    np.broadcast_to(s_, (*batch, n))
                    for s_, n in zip(segments, (sq, sk), strict=True)
                )
                if qs[(*b, i)] != ks[(*b, j)]:
                    continue
            extra = 0.0
            if full_mask is not None:
                mv = full_mask[(*b, h, i, j)]
                if full_mask.dtype == bool:
                    if not mv:
                        continue
                else:
                    extra = float(mv)
            s_ = scale * float(np.dot(q[(*b, h, i)], k[(*b, kh, j)]))
            if softcap is not None:
                s_ = softcap * math.tanh(s_ / softcap)
            s_ += extra
            if s_ == -math.inf:
                continue
            logits.append(s_)
            vals.append(v[(*b, kh, j)])
        sink = None if sinks is None else float(np.broadcast_to(sinks, (*batch, hq))[(*b, h)])
        everything = logits + ([sink] if sink is not None else [])
        if not everything:
            out[idx] = 0.0
            lse[idx] = -math.inf
            continue
        m = max(everything)
        weights = [math.exp(x - m) for x in logits]
        total = math.fsum(weights) + (math.exp(sink - m) if sink is not None else 0.0)
        acc = np.zeros(dv)
        for w, val in zip(weights, vals, strict=True):
            acc += w * val
        out[idx] = acc / total
        lse[idx] = m + math.log(total)
    return out, lse


def _rot(x, pos, rope, role="query"):
    mats = rr.rotation_matrix(rope, pos)  # pos.shape + (D, D): the matrix route, eq. 15
    return np.einsum("...ij,...j->...i", mats, x)


def data(seed=0, batch=(2,), hq=4, hk=2, sq=5, sk=7, d=8, dv=6):
    g = np.random.default_rng(seed)
    return (
        g.standard_normal((*batch, hq, sq, d)),
        g.standard_normal((*batch, hk, sk, d)),
        g.standard_normal((*batch, hk, sk, dv)),
    )


def _sinks():
    return np.array([0.5, -1.0, 2.0, 0.0])


def _bool_mask():
    return np.random.default_rng(9).random((5, 7)) > 0.3


OPTIONS = {
    "plain": {},
    "rope": {"rope": rr.Rope(8, base=100.0)},
    "causal": {"causal": True, "rope": rr.Rope(8)},
    "bool-mask": {"mask": "bool"},
    "additive-mask": {"mask": "float"},
    "window": {"window": (2, 1), "rope": rr.Rope(8, layout="interleaved")},
    "window-left-only": {"window": (3, None), "causal": True},
    "softcap": {"softcap": 1.5, "scale": 0.9},
    "segments": {"segments": True},
    "sinks": {"sinks": True, "causal": True},
    "positions": {
        "q_pos": [100, 101, 102, 103, 104],
        "k_pos": [98, 99, 100, 101, 102, 103, 104],
        "causal": True,
        "rope": rr.Rope(8, rotary_dim=4),
    },
}


def _materialize(opts):
    opts = dict(opts)
    if opts.get("mask") == "bool":
        opts["mask"] = _bool_mask()
    elif opts.get("mask") == "float":
        m = np.random.default_rng(8).standard_normal((4, 5, 7))
        m[:, 0, 3:] = -np.inf
        opts["mask"] = m
    if opts.get("segments"):
        opts["segments"] = (
            np.array([[0, 0, 1, 1, 1], [0, 1, 1, 2, 2]]),
            np.array([[0, 0, 0, 1, 1, 1, 1], [0, 1, 1, 1, 2, 2, 2]]),
        )
    if opts.get("sinks"):
        opts["sinks"] = _sinks()
    return opts


def _call(bk, q, k, v, opts, **extra):
    conv = bk.from_numpy
    kw = {}
    for key, val in opts.items():
        if key == "q_pos":
            kw["q_positions"] = conv(np.asarray(val))
        elif key == "k_pos":
            kw["k_positions"] = conv(np.asarray(val))
        elif key == "segments":
            kw["segment_ids"] = (conv(val[0]), conv(val[1]))
        elif key in ("mask", "sinks"):
            kw[key] = conv(val)
        else:
            kw[key] = val
    return rr.attention(conv(q), conv(k), conv(v), return_lse=True, **kw, **extra)


@pytest.mark.parametrize("name", list(OPTIONS))
def test_matches_loop_reference(bk, name):
    q, k, v = data()
    opts = _materialize(OPTIONS[name])
    out, lse = _call(bk, q, k, v, opts)
    want_out, want_lse = loop_reference(q, k, v, **opts)
    out, lse = bk.to_numpy(out), bk.to_numpy(lse)
    assert out.shape == (2, 4, 5, 6) and lse.shape == (2, 4, 5)
    assert not np.isnan(out).any() and not np.isnan(lse).any()
    np.testing.assert_allclose(out, want_out, rtol=1e-13, atol=1e-14)
    finite = np.isfinite(want_lse)
    np.testing.assert_array_equal(np.isfinite(lse), finite)
    np.testing.assert_allclose(lse[finite], want_lse[finite], rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("name", list(OPTIONS))
@pytest.mark.parametrize("chunk", [1, 3])
def test_chunked_equals_one_shot(bk, name, chunk):
    q, k, v = data(seed=1)
    opts = _materialize(OPTIONS[name])
    a_out, a_lse = _call(bk, q, k, v, opts)
    b_out, b_lse = _call(bk, q, k, v, opts, chunk_size=chunk)
    a_out, b_out = bk.to_numpy(a_out), bk.to_numpy(b_out)
    a_lse, b_lse = bk.to_numpy(a_lse), bk.to_numpy(b_lse)
    scale = max(1.0, float(np.abs(a_out).max()))
    assert np.abs(a_out - b_out).max() <= 8 * 2.0**-52 * scale
    np.testing.assert_array_equal(np.isfinite(a_lse), np.isfinite(b_lse))
    fin = np.isfinite(a_lse)
    assert np.abs(a_lse[fin] - b_lse[fin]).max() <= 8 * 2.0**-52 * max(
        1.0, np.abs(a_lse[fin]).max()
    )


def test_memory_budget_switches_to_chunked(monkeypatch):
    q, k, v = data(seed=2, sq=40, sk=40)
    calls = []
    real = _attention._chunked
    monkeypatch.setattr(_attention, "_chunked", lambda sp, c: calls.append(c) or real(sp, c))
    a = rr.attention(q, k, v, causal=True)
    assert calls == []
    b = rr.attention(q, k, v, causal=True, memory_budget=1000)
    assert calls == [16]  # the smallest block it uses
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-15)


def test_gqa_equals_repeated_heads(bk):
    q, k, v = data(seed=3, hq=6, hk=2)
    rope = rr.Rope(8)
    got = bk.to_numpy(rr.attention(*(bk.from_numpy(a) for a in (q, k, v)), rope=rope, causal=True))
    k_rep, v_rep = np.repeat(k, 3, axis=-3), np.repeat(v, 3, axis=-3)
    want = rr.attention(q, k_rep, v_rep, rope=rope, causal=True)
    # same arithmetic; a backend's batched matmul may sum in another order (last-bit changes)
    np.testing.assert_allclose(got, want, rtol=0, atol=4 * 2.0**-52 * np.abs(want).max())
    mqa = rr.attention(q, k[:, :1], v[:, :1], rope=rope)
    np.testing.assert_array_equal(
        mqa,
        rr.attention(
            q, np.repeat(k[:, :1], 6, axis=-3), np.repeat(v[:, :1], 6, axis=-3), rope=rope
        ),
    )


def test_shift_invariance(bk):
    # Only n - m matters: shifting every position leaves the output unchanged (to ulps).
    q, k, v = data(seed=4)
    rope = rr.Rope(8, base=500.0)
    conv = bk.from_numpy
    outs = []
    for shift in (0, 12345, 2**30):
        kw = {
            "q_positions": conv(np.arange(2, 7) + shift),
            "k_positions": conv(np.arange(7) + shift),
        }
        outs.append(
            bk.to_numpy(
                rr.attention(
                    conv(q), conv(k), conv(v), rope=rope, causal=True, window=(4, None), **kw
                )
            )
        )
    for o in outs[1:]:
        np.testing.assert_allclose(o, outs[0], rtol=0, atol=1e-13)


def test_rows_with_nothing_kept(bk):
    q, k, v = data(seed=5)
    conv = bk.from_numpy
    # queries at positions before every key, causal: nothing kept
    out, lse = rr.attention(
        conv(q),
        conv(k),
        conv(v),
        causal=True,
        q_positions=conv(np.arange(-10, -5)),
        return_lse=True,
    )
    out, lse = bk.to_numpy(out), bk.to_numpy(lse)
    assert np.all(out == 0) and np.all(lse == -np.inf)
    # with sinks: output 0, lse is the sink
    out, lse = rr.attention(
        conv(q),
        conv(k),
        conv(v),
        causal=True,
        sinks=conv(_sinks()),
        q_positions=conv(np.arange(-10, -5)),
        return_lse=True,
    )
    assert np.all(bk.to_numpy(out) == 0)
    np.testing.assert_array_equal(bk.to_numpy(lse), np.broadcast_to(_sinks()[:, None], (2, 4, 5)))


def test_low_precision_rounds_once(bk):
    if "float32" not in bk.dtypes:
        pytest.skip(f"{bk.name} has no float32")
    q, k, v = data(seed=6)
    q32, k32, v32 = (bk.from_numpy(a, "float32") for a in (q, k, v))
    got = rr.attention(q32, k32, v32, rope=rr.Rope(8), causal=True)
    assert got.dtype == bk.xp.float32
    exact = [bk.to_numpy(a).astype(np.float64) for a in (q32, k32, v32)]
    want = rr.attention(*exact, rope=rr.Rope(8), causal=True).astype(np.float32)
    np.testing.assert_array_equal(bk.to_numpy(got), want)


def test_against_torch_sdpa_float64():
    torch = pytest.importorskip("torch")
    sdpa = torch.nn.functional.scaled_dot_product_attention
    q, k, v = data(seed=7, sq=7, sk=7)
    tq, tk, tv = (torch.from_numpy(a) for a in (q, k, v))
    # causal with Sq == Sk (top-left and bottom-right agree), GQA, custom scale
    want = sdpa(tq, tk, tv, is_causal=True, scale=0.3, enable_gqa=True).numpy()
    got = rr.attention(q, k, v, causal=True, scale=0.3)
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-14)
    mask = np.random.default_rng(1).random((7, 7)) > 0.4
    mask[:, 0] = True
    want = sdpa(tq, tk, tv, attn_mask=torch.from_numpy(mask), enable_gqa=True).numpy()
    np.testing.assert_allclose(rr.attention(q, k, v, mask=mask), want, rtol=1e-13, atol=1e-14)
    add = np.random.default_rng(2).standard_normal((7, 7))
    want = sdpa(tq, tk, tv, attn_mask=torch.from_numpy(add), enable_gqa=True).numpy()
    np.testing.assert_allclose(rr.attention(q, k, v, mask=add), want, rtol=1e-13, atol=1e-14)
    # bottom-right vs top-left: with Sq < Sk torch's is_causal means something else
    q3 = q[..., :3, :]
    top_left = sdpa(torch.from_numpy(q3), tk, tv, is_causal=True, enable_gqa=True).numpy()
    ours_tl = rr.attention(q3, k, v, causal=True, q_positions=np.arange(3))
    np.testing.assert_allclose(ours_tl, top_left, rtol=1e-13, atol=1e-14)
    assert np.abs(rr.attention(q3, k, v, causal=True) - top_left).max() > 1e-3


def test_packed_positions(bk):
    cu = bk.from_numpy(np.array([0, 3, 3, 7, 8]))
    if bk.lazy:  # the output length is cu_seqlens[-1]: a value, so lazy input is refused
        with pytest.raises(ValueError, match="cu_seqlens must be concrete"):
            rr.packed_positions(cu)
        return
    seg, pos = rr.packed_positions(cu)
    np.testing.assert_array_equal(bk.to_numpy(seg), [0, 0, 0, 2, 2, 2, 2, 3])
    np.testing.assert_array_equal(bk.to_numpy(pos), [0, 1, 2, 0, 1, 2, 3, 0])


def test_packed_sequences_equal_separate_runs():
    # Two sequences packed into one row with segment ids = each run alone.
    g = np.random.default_rng(10)
    cu = np.array([0, 4, 9])
    seg, pos = rr.packed_positions(cu)
    q, k, v = (
        g.standard_normal((2, 9, 8)),
        g.standard_normal((2, 9, 8)),
        g.standard_normal((2, 9, 8)),
    )
    rope = rr.Rope(8)
    packed = rr.attention(
        q, k, v, rope=rope, causal=True, segment_ids=(seg, seg), q_positions=pos, k_positions=pos
    )
    for a, b in itertools.pairwise(cu):
        alone = rr.attention(q[:, a:b], k[:, a:b], v[:, a:b], rope=rope, causal=True)
        np.testing.assert_allclose(packed[:, a:b], alone, rtol=0, atol=1e-15)


@pytest.mark.parametrize(
    ("kwargs", "kind", "match"),
    [
        (
            {"k": np.zeros((2, 3, 7, 8)), "v": np.zeros((2, 3, 7, 6))},
            ValueError,
            r"multiple of the key/value heads \(3\)",
        ),
        ({"k": np.zeros((2, 2, 7, 6))}, ValueError, "same last axis"),
        ({"v": np.zeros((2, 2, 6, 6))}, ValueError, "v must have k's heads and length"),
        ({"mask": np.zeros((3, 7), dtype=bool)}, ValueError, "mask of shape"),
        ({"window": (-1, 2)}, ValueError, "window left must be >= 0"),
        ({"window": (1,)}, TypeError, "window must be a pair"),
        (
            {"segment_ids": (np.zeros((2, 4)), np.zeros((2, 7)))},
            ValueError,
            r"segment_ids\[0\] must have shape \(2, 5\)",
        ),
        ({"softcap": 0.0}, ValueError, "softcap must be finite and > 0"),
        ({"softcap": -1.0}, ValueError, "softcap must be finite and > 0"),
        ({"causal": 1}, TypeError, "causal must be a bool"),
        ({"rope": rr.Rope(16)}, ValueError, "rope.head_dim=16"),
        ({"q_positions": np.arange(4)}, ValueError, "q_positions of shape"),
        ({"sinks": np.zeros(3)}, ValueError, "sinks of shape"),
        ({"scale": "x"}, TypeError, "scale must be a real number"),
        ({"chunk_size": 0}, ValueError, "chunk_size must be >= 1"),
    ],
)
def test_attention_bad_input(kwargs, kind, match):
    q, k, v = data()
    args = {"q": q, "k": k, "v": v}
    for key in ("q", "k", "v"):
        if key in kwargs:
            args[key] = kwargs.pop(key)
    with pytest.raises(kind, match=match) as info:
        rr.attention(args["q"], args["k"], args["v"], **kwargs)
    assert isinstance(info.value, rr.RopeError)


# ------------------------------------------------------------------ linear attention
def linear_loop(q, k, v, rope, pos, causal, phi):
    """RoFormer eq. 19 as a double loop in float64, rotations by the matrix route."""
    *batch, hq, s, d = q.shape
    hk = k.shape[-3]
    g = hq // hk
    fq, fk = phi(q), phi(k)
    p = np.broadcast_to(pos, (s,))
    mats = (
        rr.rotation_matrix(rope, p) if rope is not None else np.broadcast_to(np.eye(d), (s, d, d))
    )
    out = np.zeros((*batch, hq, s, v.shape[-1]))
    for idx in np.ndindex(*batch, hq):
        *b, h = idx
        kh = h // g
        for m in range(s):
            num = np.zeros(v.shape[-1])
            den = 0.0
            rqm = mats[m] @ fq[(*b, h, m)]
            for n in range(m + 1 if causal else s):
                w = float(rqm @ (mats[n] @ fk[(*b, kh, n)]))
                num += w * v[(*b, kh, n)]
                den += float(fq[(*b, h, m)] @ fk[(*b, kh, n)])
            out[(*b, h, m)] = num / den if den > 0 else 0.0
    return out


def elu1(x):
    return np.where(x > 0, x + 1, np.exp(np.minimum(x, 0)))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("with_rope", [False, True])
def test_linear_attention_matches_loop(bk, causal, with_rope):
    q, k, v = data(seed=11, sq=9, sk=9)
    rope = rr.Rope(8, base=50.0) if with_rope else None
    pos = np.arange(9) + 3
    kw = {"positions": bk.from_numpy(pos)} if with_rope else {}
    got = bk.to_numpy(
        rr.linear_attention(
            *(bk.from_numpy(a) for a in (q, k, v)), rope=rope, causal=causal, chunk_size=4, **kw
        )
    )
    want = linear_loop(q, k, v, rope, pos, causal, elu1)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_linear_attention_weights_can_be_negative():
    # The rotated numerator weights are not a probability distribution (paper, section 3.3).
    q, k, v = data(seed=12, sq=9, sk=9)
    rope = rr.Rope(8, base=2.0)
    ones = np.ones_like(v[..., :1])
    total = rr.linear_attention(q, k, ones, rope=rope, positions=np.arange(9) * 7)
    assert np.abs(total - 1).max() > 1e-3  # weights do not sum to 1 once rotated
    plain = rr.linear_attention(q, k, ones)
    np.testing.assert_allclose(plain, 1.0, rtol=1e-14)  # unrotated: a weighted average


def test_linear_attention_shift_invariance(bk):
    q, k, v = data(seed=14, sq=9, sk=9)
    rope = rr.Rope(8, base=300.0)
    outs = []
    for shift in (0, 10**9):
        args = (bk.from_numpy(a) for a in (q, k, v))
        outs.append(
            bk.to_numpy(
                rr.linear_attention(
                    *args,
                    rope=rope,
                    positions=bk.from_numpy(np.arange(9) + shift),
                    causal=True,
                    chunk_size=4,
                )
            )
        )
    np.testing.assert_allclose(outs[1], outs[0], rtol=0, atol=1e-13)


def test_per_head_and_batch_masks(bk):
    # masks with their own batch and head axes, cut in blocks and grouped for GQA
    q, k, v = data(seed=15)
    g = np.random.default_rng(3)
    for shape in [(5, 7), (4, 1, 7), (2, 1, 5, 7), (2, 4, 5, 7), (1, 7)]:
        mask = g.random(shape) > 0.3
        want, _ = loop_reference(q, k, v, mask=mask)
        for chunk in (None, 2):
            got = rr.attention(
                *(bk.from_numpy(a) for a in (q, k, v)), mask=bk.from_numpy(mask), chunk_size=chunk
            )
            np.testing.assert_allclose(bk.to_numpy(got), want, rtol=1e-13, atol=1e-14)


def test_linear_attention_feature_maps_and_shift():
    q, k, v = data(seed=13, sq=9, sk=9)
    rope = rr.Rope(8)
    relu = rr.linear_attention(q, k, v, rope=rope, feature_map="relu", causal=True)
    want = linear_loop(q, k, v, rope, np.arange(9), True, lambda x: np.maximum(x, 0))
    np.testing.assert_allclose(relu, want, rtol=1e-12, atol=1e-12)
    custom = rr.linear_attention(q, k, v, rope=rope, feature_map=lambda x: x * x)
    np.testing.assert_allclose(
        custom,
        linear_loop(q, k, v, rope, np.arange(9), False, lambda x: x * x),
        rtol=1e-12,
        atol=1e-12,
    )
    a = rr.linear_attention(q, k, v, rope=rope, positions=np.arange(9), causal=True)
    b = rr.linear_attention(q, k, v, rope=rope, positions=np.arange(9) + 10**9, causal=True)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-13)
    with pytest.raises(ValueError, match="feature_map must be one of"):
        rr.linear_attention(q, k, v, feature_map="softmax")


def test_no_keys_at_all(bk):
    # Sk = 0: every row is empty: output 0, lse -inf (or the sink), never an error or NaN
    q = bk.from_numpy(np.ones((1, 4, 3, 8)))
    k = bk.from_numpy(np.zeros((1, 2, 0, 8)))
    v = bk.from_numpy(np.zeros((1, 2, 0, 5)))
    out, lse = rr.attention(q, k, v, return_lse=True, causal=True)
    assert bk.to_numpy(out).shape == (1, 4, 3, 5) and np.all(bk.to_numpy(out) == 0)
    assert np.all(bk.to_numpy(lse) == -np.inf)
    _, lse = rr.attention(q, k, v, return_lse=True, sinks=bk.from_numpy(_sinks()))
    np.testing.assert_array_equal(bk.to_numpy(lse)[0], np.broadcast_to(_sinks()[:, None], (4, 3)))
