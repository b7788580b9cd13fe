"""rr.kv_cache_attention and the flash_attn_with_kvcache twin against an independent loop.

The loop below is written from flash-attn's documented semantics (its docstring and the
reference in its tests/test_flash_attn.py::test_flash_attn_kvcache), one batch row, head and
query at a time, with plain Python sums; it shares no code with rope_ref beyond the exact
cos/sin tables (``Rope.cos_sin``, checked against mpmath elsewhere).
"""

from __future__ import annotations

import math
from itertools import product

import numpy as np
import pytest

import rope_ref as rr
from rope_ref.testing import flash_attn_with_kvcache


def _rotate_row(x, cos, sin, interleaved):
    """One token's head vector rotated with per-pair cos/sin (float64, explicit pairs)."""
    y = x.astype(np.float64).copy()
    n = cos.shape[-1]
    for j in range(n):
        a, b = (2 * j, 2 * j + 1) if interleaved else (j, j + n)
        y[a] = x[a] * cos[j] - x[b] * sin[j]
        y[b] = x[b] * cos[j] + x[a] * sin[j]
    return y


def loop_reference(
    q,
    kc,
    vc,
    kn,
    vn,
    *,
    seqlens,
    tables,
    interleaved,
    block_table=None,
    batch_idx=None,
    leftpad=None,
    causal=False,
    window=(-1, -1),
    softcap=0.0,
    scale=None,
    sinks=None,
):
    """(out, lse, k_cache, v_cache), written from flash-attn's documented semantics."""
    b, sq, hq, d = q.shape
    hk, dv = kc.shape[2], vc.shape[3]
    kc, vc = kc.astype(np.float64).copy(), vc.astype(np.float64).copy()
    sn = 0 if kn is None else kn.shape[1]
    page = kc.shape[1]
    n_slots = page * block_table.shape[1] if block_table is not None else kc.shape[1]

    def where(bi, s):
        if block_table is not None:
            return block_table[bi, s // page], s % page
        return (bi if batch_idx is None else batch_idx[bi]), s

    local = window != (-1, -1)
    scale = d**-0.5 if scale is None else scale
    for bi in range(b):
        for i in range(sn):
            pos = seqlens[bi] + i
            for h in range(hk):
                row, s = where(bi, pos)
                k_rot = kn[bi, i, h].astype(np.float64)
                if tables is not None:
                    k_rot = _rotate_row(k_rot, tables[0][pos], tables[1][pos], interleaved)
                kc[row, s, h] = k_rot.astype(kn.dtype)  # the cache keeps its dtype
                vc[row, s, h] = vn[bi, i, h]
    out = np.zeros((b, sq, hq, dv))
    lse = np.full((b, hq, sq), -np.inf)
    g = hq // hk
    for bi, i, h in product(range(b), range(sq), range(hq)):
        qv = q[bi, i, h].astype(np.float64)
        if tables is not None:
            pos = seqlens[bi] + (i if (causal or local) else 0)
            qv = _rotate_row(qv, tables[0][pos], tables[1][pos], interleaved)
        total = seqlens[bi] + sn
        lp = 0 if leftpad is None else leftpad[bi]
        q_slot = total - sq + i
        left, right = window
        if causal:
            right = 0 if right < 0 else min(right, 0)
        scores, vals = [], []
        for s in range(n_slots):
            if s < lp or s >= total:
                continue
            if right >= 0 and s > q_slot + right:
                continue
            if left >= 0 and s < q_slot - left:
                continue
            row, off = where(bi, s)
            sc = scale * math.fsum(qv * kc[row, off, h // g])
            if softcap:
                sc = softcap * math.tanh(sc / softcap)
            scores.append(sc)
            vals.append(vc[row, off, h // g])
        extra = [] if sinks is None else [float(sinks[h])]
        if not scores:
            if extra:
                lse[bi, h, i] = extra[0]
            continue
        mx = max(scores + extra)
        w = [math.exp(sc - mx) for sc in scores]
        z = math.fsum(w + [math.exp(e - mx) for e in extra])
        out[bi, i, h] = [
            math.fsum(wj * vj[c] for wj, vj in zip(w, vals, strict=True)) / z for c in range(dv)
        ]
        lse[bi, h, i] = mx + math.log(z)
    return out, lse, kc, vc


def _setup(
    rng,
    *,
    b=2,
    sq=3,
    sn=3,
    hq=4,
    hk=2,
    d=16,
    dv=None,
    slots=24,
    page=None,
    n_pages=None,
    batch_cache=None,
):
    dv = d if dv is None else dv
    q = rng.standard_normal((b, sq, hq, d))
    kn = rng.standard_normal((b, sn, hk, d)) if sn else None
    vn = rng.standard_normal((b, sn, hk, dv)) if sn else None
    if page is None:
        bc = b if batch_cache is None else batch_cache
        kc, vc = rng.standard_normal((bc, slots, hk, d)), rng.standard_normal((bc, slots, hk, dv))
        table = None
    else:
        per_row = -(-slots // page)
        n_pages = n_pages or b * per_row + 3
        kc, vc = (rng.standard_normal((n_pages, page, hk, w)) for w in (d, dv))
        table = rng.permutation(n_pages)[: b * per_row].reshape(b, per_row)
        slots = per_row * page
    seqlens = rng.integers(0, slots - max(sn, sq) + 1, size=b)
    return q, kc, vc, kn, vn, seqlens, table


CONFIGS = [
    dict(name="contiguous-causal", causal=True),
    dict(name="contiguous-noncausal"),
    dict(name="window", window=(4, 1)),
    dict(name="causal-window-softcap", causal=True, window=(5, -1), softcap=5.0),
    dict(name="leftpad", causal=True, leftpad=True),
    dict(name="batch-idx", causal=True, batch_cache=5),
    dict(name="paged-16", causal=True, page=16),
    dict(name="paged-3", page=3, window=(3, 0)),
    dict(name="paged-1", causal=True, page=1),
    dict(name="decode", causal=True, sq=1, sn=1),
    dict(name="fewer-new-than-queries", causal=True, sq=4, sn=2),
    dict(name="no-new-keys", causal=True, sn=0, rope=False),
    dict(name="mqa-dv", causal=True, hk=1, dv=8),
    dict(name="sinks", causal=True, sinks=True),
    dict(name="scale", scale=0.3, interleaved=False),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=[c["name"] for c in CONFIGS])
def test_matches_loop(bk, cfg, rng):
    cfg = dict(cfg)
    cfg.pop("name")
    causal, window = cfg.pop("causal", False), cfg.pop("window", (-1, -1))
    softcap, scale = cfg.pop("softcap", 0.0), cfg.pop("scale", None)
    use_rope, interleaved = cfg.pop("rope", True), cfg.pop("interleaved", True)
    use_leftpad, use_sinks = cfg.pop("leftpad", False), cfg.pop("sinks", False)
    q, kc, vc, kn, vn, seqlens, table = _setup(rng, **cfg)
    b, hq, d = q.shape[0], q.shape[2], q.shape[3]
    batch_idx = None
    if kc.shape[0] > b and table is None:
        batch_idx = rng.permutation(kc.shape[0])[:b]
    leftpad = None
    if use_leftpad:
        leftpad = np.array([rng.integers(0, s + 1) for s in seqlens])
    sinks = rng.standard_normal(hq) if use_sinks else None
    rope = rr.Rope(d, layout="interleaved" if interleaved else "half") if use_rope else None
    n_slots = kc.shape[1] * (table.shape[1] if table is not None else 1)
    tables = rope.cos_sin(np.arange(n_slots)) if rope is not None else None
    want = loop_reference(
        q,
        kc,
        vc,
        kn,
        vn,
        seqlens=seqlens,
        tables=tables,
        interleaved=interleaved,
        block_table=table,
        batch_idx=batch_idx,
        leftpad=leftpad,
        causal=causal,
        window=window,
        softcap=softcap,
        scale=scale,
        sinks=sinks,
    )
    f = bk.from_numpy
    args = [f(a) for a in (q, kc, vc)] + [None if a is None else f(a) for a in (kn, vn)]
    kw = dict(
        cache_seqlens=f(seqlens), block_table=None if table is None else f(table),
        cache_batch_idx=None if batch_idx is None else f(batch_idx),
        cache_leftpad=None if leftpad is None else f(leftpad), causal=causal,
        softcap=softcap or None, scale=scale, return_lse=True,
    )  # fmt: skip
    got = rr.kv_cache_attention(
        *args, rope=rope, window=window, sinks=None if sinks is None else f(sinks), **kw
    )
    for g, w in zip(got, (want[0], want[2], want[3], want[1]), strict=True):
        g = bk.to_numpy(g)
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-13)
    # the cache values are the same bits, not just close
    np.testing.assert_array_equal(bk.to_numpy(got[2]), want[3])
    if sinks is None:
        # the flash-attn signature twin, with float64 tables from the same Rope
        kw2 = dict(kw)
        kw2.pop("causal"), kw2.pop("softcap"), kw2.pop("scale"), kw2.pop("return_lse")
        twin = flash_attn_with_kvcache(
            *args,
            rotary_cos=None if rope is None else f(tables[0]),
            rotary_sin=None if rope is None else f(tables[1]),
            softmax_scale=scale, causal=causal, window_size=window, softcap=softcap,
            rotary_interleaved=interleaved, return_softmax_lse=True, return_cache=True, **kw2,
        )  # fmt: skip
        for g, w in zip(twin, (want[0], want[1], want[2], want[3]), strict=True):
            np.testing.assert_allclose(bk.to_numpy(g), w, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("page", [None, 4])
def test_only_intended_slots_change_and_inputs_untouched(bk, page, rng):
    q, kc, vc, kn, vn, seqlens, table = _setup(rng, b=3, sq=2, sn=2, page=page, slots=20)
    before = [a.copy() for a in (q, kc, vc, kn, vn)]
    f = bk.from_numpy
    arrays = [f(a) for a in (q, kc, vc, kn, vn)]
    _, k2, v2 = rr.kv_cache_attention(
        *arrays,
        cache_seqlens=f(seqlens),
        rope=rr.Rope(16),
        block_table=None if table is None else f(table),
        causal=True,
    )
    for a, was in zip(arrays, before, strict=True):
        np.testing.assert_array_equal(bk.to_numpy(a), was)  # the caller's arrays
    expect_changed = np.zeros(kc.shape[:2], dtype=bool)
    page_size = kc.shape[1]
    for bi, s0 in enumerate(seqlens):
        for s in range(s0, s0 + kn.shape[1]):
            if table is None:
                expect_changed[bi, s] = True
            else:
                expect_changed[table[bi, s // page_size], s % page_size] = True
    for new, old in ((k2, kc), (v2, vc)):
        diff = np.any(bk.to_numpy(new) != old, axis=(2, 3))
        np.testing.assert_array_equal(diff, expect_changed)
    v_new = bk.to_numpy(v2)
    for bi, s0 in enumerate(seqlens):  # values are written as given
        for i in range(kn.shape[1]):
            s = s0 + i
            where = (bi, s) if table is None else (table[bi, s // page_size], s % page_size)
            np.testing.assert_array_equal(v_new[where], vn[bi, i])


def test_float32_rounds_once(rng):
    q, kc, vc, kn, vn, seqlens, _ = _setup(rng)
    q32, kc32, vc32, kn32, vn32 = (a.astype(np.float32) for a in (q, kc, vc, kn, vn))
    out, k2, _ = rr.kv_cache_attention(
        q32, kc32, vc32, kn32, vn32, cache_seqlens=seqlens, rope=rr.Rope(16), causal=True
    )
    assert out.dtype == np.float32 and k2.dtype == np.float32
    k_rot = rr.apply_rope(kn32, (seqlens[:, None] + np.arange(3))[:, :, None], rr.Rope(16))
    for bi, s0 in enumerate(seqlens):
        np.testing.assert_array_equal(k2[bi, s0 : s0 + 3], k_rot[bi])


def test_empty_rows_give_zero(rng):
    # leftpad at the end of the valid keys: nothing to attend to
    q, kc, vc, _, _, _, _ = _setup(rng, sn=0)
    seqlens = np.array([5, 0])
    out, _, _, lse = rr.kv_cache_attention(
        q, kc, vc, cache_seqlens=seqlens, cache_leftpad=np.array([5, 0]), return_lse=True
    )
    assert np.all(out == 0) and np.all(np.isneginf(lse))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(cache_seqlens=np.array([30, 0])), "cache_seqlens"),
        (dict(cache_seqlens=np.array([0.5, 1.0])), "cache_seqlens"),
        (dict(cache_seqlens=np.array([1, 2]), cache_batch_idx=np.array([0, 0])), "same cache"),
        (dict(cache_seqlens=np.array([1, 2]), cache_leftpad=np.array([9, 0])), "cache_leftpad"),
        (dict(cache_seqlens=np.array([1, 2]), window=(-2, 0)), "window"),
        (dict(cache_seqlens=np.array([1, 2]), causal="yes"), "causal"),
        (dict(cache_seqlens=np.array([1, 2]), rope=rr.Rope(8)), "head_dim"),
        (dict(cache_seqlens=np.array([1, 2, 3])), "cache_seqlens"),
    ],
)
def test_bad_input(rng, kwargs, match):
    q, kc, vc, kn, vn, _, _ = _setup(rng)
    with pytest.raises(rr.RopeError, match=match):
        rr.kv_cache_attention(q, kc, vc, kn, vn, **kwargs)


def test_rope_without_new_keys_is_an_error(rng):
    q, kc, vc, _, _, seqlens, _ = _setup(rng, sn=0)
    with pytest.raises(rr.RopeValueError, match="k_new"):
        rr.kv_cache_attention(q, kc, vc, cache_seqlens=seqlens, rope=rr.Rope(16))


def test_mismatched_dtypes(rng):
    q, kc, vc, kn, vn, seqlens, _ = _setup(rng)
    with pytest.raises(rr.RopeTypeError, match="k_new"):
        rr.kv_cache_attention(q, kc, vc, kn.astype(np.float32), vn, cache_seqlens=seqlens)


def test_traced_indices_are_a_typed_error(rng):
    jax = pytest.importorskip("jax")
    q, kc, vc, kn, vn, seqlens, _ = _setup(rng)

    @jax.jit
    def f(s):
        return rr.kv_cache_attention(q, kc, vc, kn, vn, cache_seqlens=s)[0]

    with pytest.raises(rr.RopeValueError, match="concrete"):
        f(jax.numpy.asarray(seqlens))
