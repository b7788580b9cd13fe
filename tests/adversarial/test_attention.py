"""Adversarial inputs to rr.attention, rr.attention_vjp and rr.linear_attention (issue #13).

Every case gives a correct answer, checked against a small independent NumPy softmax (or a
limit worked out by hand), or a typed error that names the argument. Each runs on every
backend where it applies, one-shot and chunked.
"""

from __future__ import annotations

import numpy as np
import pytest

import rope_ref as rr

CHUNKS = [None, 2]  # one shot, and the online softmax over blocks of 2


def data(seed=0, batch=(1,), hq=4, hk=2, sq=5, sk=6, d=8, dv=3):
    g = np.random.default_rng(seed)
    return (
        g.standard_normal((*batch, hq, sq, d)),
        g.standard_normal((*batch, hk, sk, d)),
        g.standard_normal((*batch, hk, sk, dv)),
    )


def reference(q, k, v, *, keep=None, add=None, scale=None, sinks=None):
    """Softmax attention in float64 NumPy for rows of finite data: heads repeated for GQA,
    keep (bool) and add (additive) masks broadcast to (..., Hq, Sq, Sk), the sink a logit
    without a value. Returns (out, lse); a row with nothing kept gives 0 and -inf."""
    hq, hk = q.shape[-3], k.shape[-3]
    k, v = np.repeat(k, hq // hk, axis=-3), np.repeat(v, hq // hk, axis=-3)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    s = scale * np.einsum("...qd,...kd->...qk", q, k)
    if add is not None:
        s = s + add
    kept = np.ones(s.shape, bool) if keep is None else np.broadcast_to(keep, s.shape)
    kept = kept & (s != -np.inf)
    sink = None if sinks is None else np.broadcast_to(sinks, s.shape[:-2])[..., None]
    logits = np.where(kept, s, -np.inf)
    m = logits.max(axis=-1, initial=-np.inf)
    if sink is not None:
        m = np.maximum(m, sink)
    m = np.where(np.isfinite(m), m, 0.0)
    w = np.where(kept, np.exp(logits - m[..., None]), 0.0)
    total = w.sum(-1) + (0.0 if sink is None else np.exp(sink - m))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(total[..., None] > 0, (w @ v) / total[..., None], 0.0)
        lse = np.where(total > 0, m + np.log(total), -np.inf)
    return out, lse


def run(bk, q, k, v, **kw):
    """rr.attention on the backend (arrays converted), results back as NumPy."""
    conv = {
        key: bk.from_numpy(val) if isinstance(val, np.ndarray) else val for key, val in kw.items()
    }
    if "segment_ids" in kw:
        conv["segment_ids"] = tuple(bk.from_numpy(s) for s in kw["segment_ids"])
    out, lse = rr.attention(
        bk.from_numpy(q), bk.from_numpy(k), bk.from_numpy(v), return_lse=True, **conv
    )
    return bk.to_numpy(out), bk.to_numpy(lse)


def close(got, want, tol=1e-13):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    fin = np.isfinite(want)
    if fin.any():
        np.testing.assert_array_equal(got[~fin], want[~fin])
        assert np.max(np.abs(got[fin] - want[fin])) <= tol * max(1.0, np.abs(want[fin]).max())


def causal_keep(sq, sk):
    """Bottom-right causal keep-mask (queries at positions Sk - Sq .. Sk - 1)."""
    return np.arange(sk)[None, :] <= np.arange(sk - sq, sk)[:, None]


# ------------------------------------------------------------------------ NaN propagation


@pytest.mark.parametrize("chunk", CHUNKS)
def test_nan_in_q_reaches_only_its_row(bk, chunk):
    q, k, v = data()
    bad = q.copy()
    bad[0, 1, 2, 3] = np.nan
    keep = np.ones((5, 6), bool)
    keep[4] = False  # a fully masked row stays 0 / -inf beside the NaN row
    out, lse = run(bk, bad, k, v, mask=keep, chunk_size=chunk)
    want, want_lse = reference(q, k, v, keep=keep)
    want[0, 1, 2], want_lse[0, 1, 2] = np.nan, np.nan
    close(out, want)
    close(lse, want_lse)
    assert np.all(out[..., 4, :] == 0) and np.all(lse[..., 4] == -np.inf)


@pytest.mark.parametrize("chunk", CHUNKS)
def test_nan_in_k_reaches_the_rows_that_keep_the_key(bk, chunk):
    q, k, v = data(seed=1)
    bad = k.copy()
    bad[0, 0, 3, 5] = np.nan  # key 3 of kv head 0 (query heads 0 and 1)
    out, lse = run(bk, q, bad, v, causal=True, chunk_size=chunk)
    keep = causal_keep(5, 6)
    want, want_lse = reference(q, k, v, keep=keep)
    rows = keep[:, 3]  # query rows whose causal window contains key 3
    assert rows.any() and not rows.all()
    want[0, :2, rows], want_lse[0, :2, rows] = np.nan, np.nan
    close(out, want)
    close(lse, want_lse)


@pytest.mark.parametrize("chunk", CHUNKS)
def test_nan_in_additive_mask_and_sinks(bk, chunk):
    q, k, v = data(seed=2)
    add = np.zeros((5, 6))
    add[:, 0] = -np.inf
    add[1, 4] = np.nan  # row 1 of every head
    add[3, 0] = np.nan  # NaN where -inf was: the key is no longer dropped, row 3 is NaN
    sinks = np.array([0.5, np.nan, -1.0, 2.0])  # head 1
    out, lse = run(bk, q, k, v, mask=add, sinks=sinks, chunk_size=chunk)
    clean_add = np.where(np.isnan(add), 0.0, add)
    want, want_lse = reference(q, k, v, add=clean_add, sinks=np.nan_to_num(sinks))
    want[0, :, [1, 3]], want_lse[0, :, [1, 3]] = np.nan, np.nan
    want[0, 1], want_lse[0, 1] = np.nan, np.nan
    close(out, want)
    close(lse, want_lse)


@pytest.mark.parametrize("chunk", CHUNKS)
def test_nan_behind_a_dropped_key_changes_nothing(bk, chunk):
    """NaN in k, v or an additive mask at pairs that are dropped: no effect."""
    q, k, v = data(seed=3)
    keep = np.ones((5, 6), bool)
    keep[:, 2] = False
    k2, v2 = k.copy(), v.copy()
    k2[0, 1, 2, 0], v2[0, 0, 2, 1] = np.nan, np.nan
    out, lse = run(bk, q, k2, v2, mask=keep, chunk_size=chunk)
    want, want_lse = reference(q, k, v, keep=keep)
    close(out, want)
    close(lse, want_lse)
    additive = np.where(keep, 0.0, -np.inf)  # the same drop, as an additive mask
    out, lse = run(bk, q, k2, v2, mask=additive, chunk_size=chunk)
    close(out, want)
    close(lse, want_lse)
    causal = causal_keep(5, 6)
    add = np.where(causal, 0.0, np.nan)  # NaN only at the pairs causal drops
    out, lse = run(bk, q, k, v, mask=add, causal=True, chunk_size=chunk)
    want, want_lse = reference(q, k, v, keep=causal)
    close(out, want)
    close(lse, want_lse)


# ----------------------------------------------------------------- infinite values in v


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("how", ["causal", "bool", "additive"])
def test_inf_in_v_at_a_dropped_key_contributes_nothing(bk, chunk, how):
    q, k, v = data(seed=4)
    bad = v.copy()
    bad[0, 0, 4, 1] = np.inf  # key 4 of kv head 0, channel 1
    bad[0, 0, 5, 2] = -np.inf
    keep = causal_keep(5, 6)
    kw = {"causal": True}
    if how == "bool":
        kw = {"mask": keep}
    elif how == "additive":
        kw = {"mask": np.where(keep, 0.0, -np.inf)}
    out, lse = run(bk, q, k, bad, chunk_size=chunk, **kw)
    want, want_lse = reference(q, k, v, keep=keep)
    # rows that keep key 4 get +inf in channel 1, rows that keep key 5 get -inf in channel 2
    want[0, :2, keep[:, 4], 1] = np.inf
    want[0, :2, keep[:, 5], 2] = -np.inf
    close(out, want)
    close(lse, want_lse)


def test_opposite_infinities_in_v_give_nan_only_where_both_are_kept(bk):
    q, k, v = data(seed=5)
    bad = v.copy()
    bad[0, 1, 3, 0], bad[0, 1, 5, 0] = np.inf, -np.inf
    out, _ = run(bk, q, k, bad, causal=True)
    keep = causal_keep(5, 6)
    want, _ = reference(q, k, v, keep=keep)
    both, only3 = keep[:, 3] & keep[:, 5], keep[:, 3] & ~keep[:, 5]
    want[0, 2:, both, 0] = np.nan
    want[0, 2:, only3, 0] = np.inf
    close(out, want)


# ----------------------------------------------------------------------- extreme scores


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("scale", [1e308, -1e308, 1e300])
def test_huge_scale_gives_the_hard_maximum(bk, chunk, scale):
    """softmax(scale * s) -> all the weight on the key of the largest scale * q.k."""
    q, k, v = data(seed=6, sq=4, sk=7)
    keep = causal_keep(4, 7)
    out, lse = run(bk, q, k, v, scale=scale, causal=True, chunk_size=chunk)
    kk, vv = np.repeat(k, 2, axis=-3), np.repeat(v, 2, axis=-3)
    r = np.where(keep, np.sign(scale) * np.einsum("...qd,...kd->...qk", q, kk), -np.inf)
    best = np.argmax(r, axis=-1)
    close(out, np.take_along_axis(vv, best[..., None], axis=-2), tol=0)
    rmax = r.max(axis=-1)
    with np.errstate(over="ignore"):
        want_lse = abs(scale) * rmax  # + log(1): the other keys are exp(-huge) = 0 behind
    close(lse, want_lse)


def test_huge_scale_with_softcap_saturates(bk):
    q, k, v = data(seed=7)
    out, lse = run(bk, q, k, v, scale=1e308, softcap=2.0, chunk_size=3)
    r = np.einsum("...qd,...kd->...qk", q, np.repeat(k, 2, axis=-3))
    # softcap * tanh(+-huge) = +-softcap exactly
    want, want_lse = reference(
        q,
        k,
        v,
        scale=0.0,
        add=2.0 * np.sign(r),  # scores +-2 by the sign of q.k
    )
    close(out, want)
    close(lse, want_lse)


def test_plus_inf_in_an_additive_mask_is_a_typed_error(bk):
    q, k, v = data(seed=8)
    add = np.zeros((5, 6))
    add[2, 1] = np.inf
    if bk.lazy:  # no values are read: the rows come out NaN, as documented
        out, lse = run(bk, q, k, v, mask=add)
        assert np.isnan(out[..., 2, :]).all() and np.isnan(lse[..., 2]).all()
        want, _ = reference(q, k, v)
        close(np.delete(out, 2, axis=-2), np.delete(want, 2, axis=-2))
        return
    with pytest.raises(rr.RopeValueError, match=r"mask has \+inf entries"):
        run(bk, q, k, v, mask=add)


def test_plus_inf_mask_under_jit_gives_nan_rows(bk):
    if not bk.jit:
        pytest.skip(f"{bk.name} has no jit")
    q, k, v = data(seed=8)
    add = np.zeros((5, 6))
    add[2, 1] = np.inf
    fn = bk.compile(lambda q, k, v, m: rr.attention(q, k, v, mask=m))
    out = bk.to_numpy(fn(*(bk.from_numpy(a) for a in (q, k, v, add))))
    assert np.isnan(out[..., 2, :]).all()
    close(np.delete(out, 2, axis=-2), np.delete(reference(q, k, v)[0], 2, axis=-2))


@pytest.mark.parametrize("chunk", CHUNKS)
def test_infinite_sinks(bk, chunk):
    """A -inf sink is no sink; a +inf sink takes all the weight (output 0, lse +inf)."""
    q, k, v = data(seed=9)
    sinks = np.array([-np.inf, np.inf, 0.5, -np.inf])
    out, lse = run(bk, q, k, v, sinks=sinks, causal=True, chunk_size=chunk)
    want, want_lse = reference(
        q, k, v, keep=causal_keep(5, 6), sinks=np.array([-np.inf, 0, 0.5, -np.inf])
    )
    want[0, 1], want_lse[0, 1] = 0.0, np.inf
    close(out, want)
    close(lse, want_lse)


# ------------------------------------------------------------------------------ empties


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize(
    "shape",
    [
        {"sq": 0},
        {"sk": 0},
        {"sq": 0, "sk": 0},
        {"batch": (0,)},
        {"dv": 0},
    ],
    ids=["sq0", "sk0", "both0", "batch0", "dv0"],
)
def test_empty_inputs_give_empty_results(bk, chunk, shape):
    q, k, v = data(seed=10, **shape)
    sq, sk = q.shape[-2], k.shape[-2]
    sinks = np.array([0.0, 1.0, 2.0, 3.0])
    for kw in ({}, {"causal": True}, {"sinks": sinks}, {"causal": True, "sinks": sinks}):
        out, lse = run(bk, q, k, v, chunk_size=chunk, **kw)
        keep = causal_keep(sq, sk) if "causal" in kw else None
        want, want_lse = reference(q, k, v, keep=keep, sinks=kw.get("sinks"))
        close(out, want)
        close(lse, want_lse)
    out, lse = run(bk, q, k, v, chunk_size=chunk, rope=rr.Rope(8), causal=True)
    assert out.shape == (*q.shape[:-1], v.shape[-1]) and lse.shape == q.shape[:-1]


def test_empty_linear_attention(bk):
    q, k, v = (bk.from_numpy(a) for a in data(seed=11, sq=0, sk=0))
    for causal in (False, True):
        for rope in (None, rr.Rope(8)):
            out = rr.linear_attention(q, k, v, causal=causal, rope=rope)
            assert tuple(out.shape) == (1, 4, 0, 3) and out.dtype == q.dtype


def test_empty_attention_vjp(bk):
    """Sk = 0: no key, so dq = 0; with sinks the sink has all the weight: d_sink = sum d_lse."""
    q, k, v = data(seed=12, sk=0)
    d_out, d_lse = np.ones((1, 4, 5, 3)), np.arange(20.0).reshape(1, 4, 5)
    sinks = np.array([0.0, 1.0, 2.0, 3.0])
    got = rr.attention_vjp(
        *(bk.from_numpy(a) for a in (q, k, v, d_out)),
        sinks=bk.from_numpy(sinks),
        d_lse=bk.from_numpy(d_lse),
        rope=rr.Rope(8),
    )
    dq, dk, dv, ds = (bk.to_numpy(a) for a in got)
    assert dq.shape == q.shape and np.all(dq == 0)
    assert dk.shape == k.shape and dv.shape == v.shape
    np.testing.assert_array_equal(ds, d_lse[0].sum(-1))
    q, k, v = data(seed=12, sq=0)
    dq, dk, dv = (
        bk.to_numpy(a)
        for a in rr.attention_vjp(*(bk.from_numpy(a) for a in (q, k, v, np.ones((1, 4, 0, 3)))))
    )
    assert dq.shape == q.shape and np.all(dk == 0) and np.all(dv == 0)


def test_head_dim_zero_is_a_typed_error(bk):
    q, k, v = (bk.from_numpy(a) for a in data(d=0))
    for call in (
        lambda: rr.attention(q, k, v),
        lambda: rr.attention_vjp(q, k, v, bk.from_numpy(np.zeros((1, 4, 5, 3)))),
    ):
        with pytest.raises(rr.RopeValueError, match=r"head_dim .* must be >= 1"):
            call()
    q, k, v = (bk.from_numpy(a) for a in data(d=0, sk=5))
    with pytest.raises(rr.RopeValueError, match=r"head_dim .* must be >= 1"):
        rr.linear_attention(q, k, v)


# ------------------------------------------------------------------ argument validation


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"return_lse": "no"}, rr.RopeTypeError, r"return_lse must be a bool.*'no'"),
        ({"return_lse": 1}, rr.RopeTypeError, r"return_lse must be a bool"),
        ({"causal": "yes"}, rr.RopeTypeError, r"causal must be a bool"),
        ({"segment_ids": ("float", "float")}, rr.RopeTypeError, r"segment_ids\[0\].*integer"),
        ({"segment_ids": ("bool", "bool")}, rr.RopeTypeError, r"segment_ids\[0\].*integer"),
        ({"segment_ids": ("int", "complex")}, rr.RopeTypeError, r"segment_ids\[1\].*integer"),
        ({"sinks": "complex"}, rr.RopeTypeError, r"sinks must have a real"),
        ({"sinks": "bool"}, rr.RopeTypeError, r"sinks must have a real"),
        ({"scale": float("nan")}, rr.RopeValueError, r"scale must be finite"),
        ({"scale": 1 + 0j}, rr.RopeTypeError, r"scale must be a real number"),
        ({"softcap": float("inf")}, rr.RopeValueError, r"softcap must be finite and > 0"),
        ({"window": (np.nan, 1)}, rr.RopeValueError, r"window left must be finite"),
        ({"window": (1, "2")}, rr.RopeTypeError, r"window right must be a real number"),
        ({"chunk_size": 2.0}, rr.RopeTypeError, r"chunk_size must be an integer"),
        ({"memory_budget": True}, rr.RopeTypeError, r"memory_budget must be an integer"),
    ],
)
def test_bad_arguments_are_typed_errors(bk, kwargs, error, pattern):
    q, k, v = data(seed=13)
    kinds = {"float": "float64", "bool": "bool", "int": "int64", "complex": "complex128"}
    kw = dict(kwargs)
    if "segment_ids" in kw:
        kw["segment_ids"] = tuple(
            bk.from_numpy(np.zeros(n, dtype=kinds[t]))
            for t, n in zip(kw["segment_ids"], (5, 6), strict=True)
        )
    if "sinks" in kw:
        kw["sinks"] = bk.from_numpy(np.zeros(4, dtype=kinds[kw["sinks"]]))
    with pytest.raises(error, match=pattern):
        rr.attention(*(bk.from_numpy(a) for a in (q, k, v)), **kw)


def test_numpy_scalars_are_accepted_like_python_numbers(bk):
    q, k, v = (bk.from_numpy(a) for a in data(seed=14))
    plain = rr.attention(
        q,
        k,
        v,
        causal=True,
        window=(2, 1.5),
        softcap=3.0,
        scale=0.4,
        return_lse=True,
        chunk_size=2,
        memory_budget=10**6,
    )
    scalars = rr.attention(
        q,
        k,
        v,
        causal=np.bool_(True),
        window=(np.int64(2), np.float32(1.5)),
        softcap=np.float32(3.0),
        scale=np.float64(0.4),
        return_lse=np.bool_(True),
        chunk_size=np.int64(2),
        memory_budget=np.int32(10**6),
    )
    for a, b in zip(plain, scalars, strict=True):
        np.testing.assert_array_equal(bk.to_numpy(a), bk.to_numpy(b))
    lin = [
        bk.to_numpy(rr.linear_attention(q, k[..., :5, :], v[..., :5, :], causal=c, chunk_size=n))
        for c, n in ((True, 2), (np.bool_(True), np.int64(2)))
    ]
    np.testing.assert_array_equal(*lin)


def test_linear_attention_feature_map_is_checked(bk):
    q, k, v = (bk.from_numpy(a) for a in data(seed=15, sk=5))
    if not bk.lazy:
        with pytest.raises(rr.RopeValueError, match=r"feature_map must return non-negative"):
            rr.linear_attention(q, k, v, feature_map=lambda x: x)
    with pytest.raises(rr.RopeTypeError, match=r"feature_map must return an array"):
        rr.linear_attention(q, k, v, feature_map=lambda x: 1.0)
    with pytest.raises(rr.RopeTypeError, match=r"feature_map is an array of"):
        rr.linear_attention(q, k, v, feature_map=lambda x: _other_library(bk, x))
    with pytest.raises(rr.RopeValueError, match=r"feature_map must return an array of the input's"):
        rr.linear_attention(q, k, v, feature_map=lambda x: x[..., :1])


def _other_library(bk, x):
    if bk.library == "NumPy":
        import array_api_strict as xps

        return xps.ones((2,))
    return np.ones(tuple(x.shape))


def test_linear_attention_nan_reaches_only_its_rows(bk):
    q, k, v = data(seed=16, sk=5)
    bad = q.copy()
    bad[0, 2, 1, 0] = np.nan
    for causal in (False, True):
        out = bk.to_numpy(
            rr.linear_attention(*(bk.from_numpy(a) for a in (bad, k, v)), causal=causal)
        )
        clean = bk.to_numpy(
            rr.linear_attention(*(bk.from_numpy(a) for a in (q, k, v)), causal=causal)
        )
        assert np.isnan(out[0, 2, 1]).all()
        rows = np.ones(out.shape[:-1], bool)
        rows[0, 2, 1] = False
        np.testing.assert_allclose(out[rows], clean[rows], rtol=1e-14, atol=1e-15)


# ------------------------------------------------------------------------------- the VJP


def test_vjp_nan_reaches_only_what_it_touches(bk):
    """NaN in one query row: dq of that row and dk, dv of the keys it keeps are NaN; every
    other gradient entry equals the clean one (a dropped pair adds 0, not 0 * NaN)."""
    q, k, v = data(seed=17)
    d_out = np.random.default_rng(1).standard_normal((1, 4, 5, 3))
    bad = q.copy()
    bad[0, 0, 1, 2] = np.nan  # query head 0 (kv head 0), row 1 at position 2: keys 0..2
    conv = bk.from_numpy
    grads = [
        bk.to_numpy(g)
        for g in rr.attention_vjp(conv(bad), conv(k), conv(v), conv(d_out), causal=True)
    ]
    clean = [
        bk.to_numpy(g)
        for g in rr.attention_vjp(conv(q), conv(k), conv(v), conv(d_out), causal=True)
    ]
    nan_q = np.zeros(q.shape, bool)
    nan_q[0, 0, 1] = True
    nan_kv = np.zeros(k.shape[:-1], bool)
    nan_kv[0, 0, :3] = True
    for got, ref, where in zip(
        grads, clean, (nan_q, nan_kv[..., None], nan_kv[..., None]), strict=True
    ):
        where = np.broadcast_to(where, got.shape)
        assert np.isnan(got[where]).all()
        np.testing.assert_allclose(got[~where], ref[~where], rtol=1e-13, atol=1e-15)


def test_vjp_inf_in_v_at_a_dropped_key_and_huge_scale(bk):
    q, k, v = data(seed=18)
    d_out = np.random.default_rng(2).standard_normal((1, 4, 5, 3))
    bad = v.copy()
    bad[0, 1, 5, 0] = np.inf  # the last key: only the last query row keeps it (causal)
    conv = bk.from_numpy
    dq, dk, dv = (
        bk.to_numpy(g)
        for g in rr.attention_vjp(conv(q), conv(k), conv(bad), conv(d_out), causal=True)
    )
    rq, rk, rv = (
        bk.to_numpy(g)
        for g in rr.attention_vjp(conv(q), conv(k), conv(v), conv(d_out), causal=True)
    )
    np.testing.assert_allclose(dq[0, 2:, :4], rq[0, 2:, :4], rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(dq[0, :2], rq[0, :2], rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(dv, rv, rtol=1e-13, atol=1e-15)  # dV = P^T dO: no v in it
    np.testing.assert_allclose(dk[0, 0], rk[0, 0], rtol=1e-13, atol=1e-15)  # kv head 0
    grads = [
        bk.to_numpy(g)
        for g in rr.attention_vjp(conv(q), conv(k), conv(v), conv(d_out), scale=1e308, causal=True)
    ]
    assert all(np.isfinite(g).all() for g in grads)
    # the limit is a hard selection: dV collects dO of the rows that chose each key
    dv_hard = np.zeros_like(v)
    r = np.where(
        causal_keep(5, 6), np.einsum("...qd,...kd->...qk", q, np.repeat(k, 2, axis=-3)), -np.inf
    )
    best = np.argmax(r, axis=-1)
    for h in range(4):
        for i in range(5):
            dv_hard[0, h // 2, best[0, h, i]] += d_out[0, h, i]
    np.testing.assert_allclose(grads[2], dv_hard, rtol=1e-15, atol=0)
