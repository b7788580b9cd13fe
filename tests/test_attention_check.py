"""rope_ref.testing.assert_attention_close / attention_tolerance: correct kernels pass (torch
SDPA in float32/float64 up to 32768 keys, decode over 4096 keys, a float32 NumPy softmax with
float32 angles, rr.attention itself against mpmath), and each common attention bug fails and
is named by the fitted diagnosis, on every backend."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest

import rope_ref as rr
from rope_ref.testing import (
    AttentionMismatch,
    RopeToleranceWarning,
    assert_attention_close,
    attention_tolerance,
)

# --------------------------------------------------------------------------- a kernel with bugs


def kernel(
    xp,
    q,
    k,
    v,
    *,
    rope=None,
    causal=False,
    window=None,
    softcap=None,
    sinks=None,
    scale=None,
    q_positions=None,
    bug=None,
):
    """Softmax attention written with Array-API calls only, in q's dtype, with one injectable
    mistake. Positions: keys 0..Sk-1, queries the last Sq (or ``q_positions``)."""
    hq, sq, d = q.shape[-3:]
    hk, sk = k.shape[-3], k.shape[-2]
    group = hq // hk
    dev = getattr(q, "device", None)
    kpos = xp.arange(sk, dtype=xp.int64, device=dev)
    qpos = (
        xp.arange(sk - sq, sk, dtype=xp.int64, device=dev) if q_positions is None else q_positions
    )
    if rope is not None and bug != "rope_missing":
        q = rr.apply_rope(q, qpos + 1 if bug == "positions_shifted" else qpos, rope)
        if bug != "rope_q_only":
            k = rr.apply_rope(k, kpos, rope, role="key")
    heads = [h % hk if bug == "gqa_tiled" else h // group for h in range(hq)]
    idx = xp.asarray(heads, dtype=xp.int64, device=dev)
    kk, vv = xp.take(k, idx, axis=-3), xp.take(v, idx, axis=-3)
    sc = d**-0.5 if scale is None else scale
    sc = {"scale_missing": 1.0, "scale_doubled": 2 * sc}.get(bug, sc)
    s = xp.matmul(q, xp.matrix_transpose(kk)) * sc
    if softcap is not None and bug != "softcap_missing":
        s = softcap * xp.tanh(s / softcap)
    keep = xp.ones((sq, sk), dtype=xp.bool, device=dev)
    qq, kq = qpos[:, None], kpos[None, :]
    if causal:
        if bug == "causal_top_left":
            rows = xp.arange(sq, dtype=xp.int64, device=dev)[:, None]
            keep = xp.logical_and(keep, kq <= rows)
        else:
            keep = xp.logical_and(keep, kq <= qq)
    if window is not None:
        left, right = window
        left += {"window_left": 1}.get(bug, 0)
        right -= {"window_right": 1}.get(bug, 0)
        keep = xp.logical_and(keep, xp.logical_and(kq >= qq - left, kq <= qq + right))
    s = xp.where(keep, s, xp.full_like(s, -math.inf))
    m = xp.max(s, axis=-1, keepdims=True)
    use_sinks = sinks is not None and bug != "sinks_ignored"
    if use_sinks:
        sk_ = xp.reshape(sinks, (hq, 1, 1))
        m = xp.maximum(m, sk_)
    p = xp.exp(s - m)
    den = xp.sum(p, axis=-1, keepdims=True)
    if use_sinks:
        den = den + xp.exp(sk_ - m)
    out = xp.matmul(p, vv) / den
    lse = m[..., 0] + xp.log(den[..., 0])
    if bug == "lse_base2":
        lse = lse / math.log(2.0)
    return out, lse


def _inputs(bk, dtype, *, hq=4, hk=2, sq=6, sk=40, d=16, dv=8, seed=7, qscale=1.0):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((hq, sq, d)) * qscale
    k = rng.standard_normal((hk, sk, d))
    v = rng.standard_normal((hk, sk, dv))
    return tuple(bk.from_numpy(a, dtype) for a in (q, k, v))


ROPE = rr.Rope(16)
SINKS = np.array([0.5, -1.0, 1.5, 0.0])

# bug -> (semantics the kernel should implement, expected diagnosis)
BUGS = {
    "gqa_tiled": (dict(rope=ROPE), "GQA heads tiled"),
    "causal_top_left": (dict(causal=True, rope=ROPE), "causal mask aligned top-left"),
    "scale_missing": (dict(rope=ROPE), "scale missing"),
    "scale_doubled": (dict(rope=ROPE), "scale doubled"),
    "softcap_missing": (dict(softcap=1.0), "softcap missing"),
    "window_left": (dict(window=(5, 0), rope=ROPE), "window off by one (left +1)"),
    "window_right": (dict(window=(3, 2)), "window off by one (right -1)"),
    "sinks_ignored": (dict(sinks=SINKS, causal=True), "sinks ignored"),
    "lse_base2": (dict(causal=True), "lse in base 2"),
    "rope_missing": (dict(rope=ROPE, causal=True), "RoPE not applied"),
    "rope_q_only": (dict(rope=ROPE), "RoPE applied to q only"),
    "positions_shifted": (dict(rope=ROPE, causal=True), "query positions shifted by +1"),
}


def _dtype_for(bk):
    return "float64" if "float64" in bk.dtypes else "float32"


def _run(bk, sem, bug, dtype):
    q, k, v = _inputs(bk, dtype)
    kw = dict(sem)
    if "sinks" in kw:
        kw["sinks"] = bk.from_numpy(kw["sinks"], dtype)
    out, lse = kernel(bk.xp, q, k, v, bug=bug, **kw)
    return out, lse, (q, k, v), kw


@pytest.mark.parametrize("bug", sorted(BUGS))
def test_injected_bug_fails_and_is_named(bk, bug):
    sem, expected = BUGS[bug]
    dtype = _dtype_for(bk)
    out, lse, (q, k, v), kw = _run(bk, sem, None, dtype)
    report = assert_attention_close(out, q, k, v, lse=lse, **kw)  # the correct kernel
    assert report.passed and report.worst_ratio <= 1.0
    assert report.accuracy_class == "exact"

    out, lse, (q, k, v), kw = _run(bk, sem, bug, dtype)
    with pytest.raises(AttentionMismatch) as info:
        assert_attention_close(out, q, k, v, lse=lse, **kw)
    rep = info.value.report
    assert not rep.passed and rep.worst_ratio > 1.0
    best = rep.explanation
    assert best is not None, rep.message
    assert best.name == expected, rep.message
    assert best.fits and best.explained > 0.99, rep.message
    assert f"diagnosis: {expected}" in str(info.value)


def test_fitted_parameters_are_reported():
    from backends import by_name

    bk = by_name("numpy")
    out, lse, (q, k, v), kw = _run(bk, dict(rope=ROPE), "scale_missing", "float64")
    with pytest.raises(AssertionError) as info:
        assert_attention_close(out, q, k, v, lse=lse, **kw)
    best = info.value.report.explanation
    assert abs(best.parameter - 1.0) < 1e-6  # the fitted scale is 1, not 16**-0.5
    out, lse, (q, k, v), kw = _run(bk, dict(causal=True), "lse_base2", "float64")
    with pytest.raises(AssertionError) as info:
        assert_attention_close(out, q, k, v, lse=lse, **kw)
    best = info.value.report.explanation
    assert abs(best.parameter - 1 / math.log(2)) < 1e-9
    assert "out" not in info.value.report.worst["quantity"]  # the output itself is right
    # a scale off by 1 %: no usual value fits, the fitted family does
    q, k, v = _inputs(bk, "float64")
    out, lse = kernel(bk.xp, q, k, v, scale=1.01 * 16**-0.5)
    with pytest.raises(AssertionError) as info:
        assert_attention_close(out, q, k, v, lse=lse)
    best = info.value.report.explanation
    assert best.name.startswith("scale wrong") and best.fits
    assert abs(best.parameter / 16**-0.5 - 1.01) < 1e-4


# --------------------------------------------------------------------------- correct kernels


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("sk,sq", [(1024, 2), (32768, 2), (4096, 1)])
def test_torch_sdpa_passes(dtype, sk, sq):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(sk + sq)
    tdt = getattr(torch, dtype)
    q = torch.from_numpy(rng.standard_normal((1, 2, sq, 64))).to(tdt)
    k = torch.from_numpy(rng.standard_normal((1, 2, sk, 64))).to(tdt)
    v = torch.from_numpy(rng.standard_normal((1, 2, sk, 64))).to(tdt)
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    report = assert_attention_close(out, q, k, v)
    assert report.passed and 0 <= report.worst_ratio <= 1.0
    assert report.accuracy_class == "exact"


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_torch_sdpa_half_passes(dtype):
    """Half-precision SDPA: values stored in the half dtype, sums in float32 (the default
    model); a kernel declared to accumulate in the half dtype gets a wider allowance."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(21)
    tdt = getattr(torch, dtype)
    q = torch.from_numpy(rng.standard_normal((1, 2, 1, 64))).to(tdt)
    k, v = (torch.from_numpy(rng.standard_normal((1, 2, 4096, 64))).to(tdt) for _ in range(2))
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    report = assert_attention_close(out, q, k, v)
    assert report.passed
    wide = attention_tolerance(q, k, v, dtype=dtype, accumulate_dtype=dtype)
    assert np.all(wide.out > report.allowance_out)


def test_torch_sdpa_gqa_causal_rope_decode_passes():
    """Decode (one query) over 4096 keys: rotated q/k (exact tables rounded to float32),
    grouped heads repeated for SDPA, bottom-right causal mask passed as a boolean mask."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    rope = rr.Rope(64, base=500000.0)
    sk, sq = 4096, 1
    q = torch.from_numpy(rng.standard_normal((1, 4, sq, 64))).float()
    k = torch.from_numpy(rng.standard_normal((1, 2, sk, 64))).float()
    v = torch.from_numpy(rng.standard_normal((1, 2, sk, 64))).float()
    qr = rr.apply_rope(q, torch.arange(sk - sq, sk), rope)
    kr = rr.apply_rope(k, torch.arange(sk), rope, role="key")
    keep = torch.ones(sq, sk, dtype=torch.bool).tril(diagonal=sk - sq)
    out = torch.nn.functional.scaled_dot_product_attention(
        qr, kr.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1), attn_mask=keep
    )
    report = assert_attention_close(out, q, k, v, rope=rope, causal=True, strict=True)
    assert report.passed and report.accuracy_class == "exact"
    # the same output judged as if it were tiled is caught and named
    with pytest.raises(AssertionError) as info:
        out_t = torch.nn.functional.scaled_dot_product_attention(
            qr, kr.repeat(1, 2, 1, 1), v.repeat(1, 2, 1, 1), attn_mask=keep
        )
        assert_attention_close(out_t, q, k, v, rope=rope, causal=True)
    assert info.value.report.explanation.name == "GQA heads tiled"
    # SDPA's own grouping (enable_gqa) is the grouped order
    out_g = torch.nn.functional.scaled_dot_product_attention(
        qr, kr, v, attn_mask=keep, enable_gqa=True
    )
    assert assert_attention_close(out_g, q, k, v, rope=rope, causal=True).passed


def test_torch_is_causal_is_top_left():
    """SDPA's is_causal aligns the mask top-left: judged against rope_ref's default
    (bottom-right, the decode convention) it fails and is named; with the queries' positions
    stated as 0..Sq-1 it passes."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    q = torch.from_numpy(rng.standard_normal((1, 2, 4, 32)))
    k, v = (torch.from_numpy(rng.standard_normal((1, 2, 64, 32))) for _ in range(2))
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    with pytest.raises(AssertionError) as info:
        assert_attention_close(out, q, k, v, causal=True)
    assert info.value.report.explanation.name == "causal mask aligned top-left"
    assert assert_attention_close(out, q, k, v, causal=True, q_positions=np.arange(4)).passed


def test_empty_rows_with_nan_are_explained():
    """A kernel that leaves fully masked rows as NaN (0/0) fails, and the message says why."""
    rng = np.random.default_rng(9)
    q, k, v = (rng.standard_normal((1, 3, 5, 8)) for _ in range(3))
    keep = np.ones((5, 5), bool)
    keep[1] = False
    out = rr.attention(q, k, v, mask=keep)
    assert assert_attention_close(out, q, k, v, mask=keep).passed
    out[..., 1, :] = np.nan
    with pytest.raises(AssertionError, match=re.escape("3 row(s) with no key kept hold NaN")):
        assert_attention_close(out, q, k, v, mask=keep)


def _hf_float32_attention(q, k, v, rope, qpos, kpos):
    """A float32 NumPy pipeline as Hugging Face writes it: inv_freq = 1 / base**(arange/d)
    in float32, angles by a float32 product, cos/sin in float32, softmax in float32."""
    d = q.shape[-1]
    inv = 1.0 / (np.float32(rope.base) ** (np.arange(0, d, 2, dtype=np.float32) / d))
    inv = inv.astype(np.float32)

    def rot(x, pos):
        ang = pos.astype(np.float32)[:, None] * inv[None, :]
        emb = np.concatenate([ang, ang], axis=-1)
        cos, sin = np.cos(emb), np.sin(emb)
        half = d // 2
        rh = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
        return (x * cos + rh * sin).astype(np.float32)

    qr, kr = rot(q, qpos), rot(k, kpos)
    s = (qr @ np.swapaxes(kr, -1, -2)) * np.float32(d**-0.5)
    s = s - s.max(-1, keepdims=True)
    p = np.exp(s)
    return ((p @ v) / p.sum(-1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("offset", [0, 30000])
def test_numpy_float32_pipeline_passes(offset):
    rng = np.random.default_rng(11)
    rope = rr.Rope(32)
    sk, sq = 2048, 4
    q = rng.standard_normal((2, sq, 32)).astype(np.float32)
    k = rng.standard_normal((2, sk, 32)).astype(np.float32)
    v = rng.standard_normal((2, sk, 32)).astype(np.float32)
    kpos = np.arange(sk) + offset
    qpos = kpos[-sq:]
    out = _hf_float32_attention(q, k, v, rope, qpos, kpos)
    report = assert_attention_close(out, q, k, v, rope=rope, q_positions=qpos, k_positions=kpos)
    assert report.passed
    assert report.accuracy_class in ("exact", "lower-precision angles")


def test_float32_angles_at_a_million_are_not_exact():
    """Angles formed in float32 near position 10**6 are off by up to ~0.06 rad: the default
    passes them as "lower-precision angles"; strict mode fails them."""
    rng = np.random.default_rng(12)
    rope = rr.Rope(32)
    sk, sq = 256, 2
    q, k, v = (rng.standard_normal((1, n, 32)).astype(np.float32) for n in (sq, sk, sk))
    kpos = np.arange(sk) + 1_000_000
    qpos = kpos[-sq:]
    out = _hf_float32_attention(q, k, v, rope, qpos, kpos)
    with pytest.warns(RopeToleranceWarning, match="cannot see"):
        rep = assert_attention_close(out, q, k, v, rope=rope, q_positions=qpos, k_positions=kpos)
    assert rep.passed and rep.accuracy_class == "lower-precision angles"
    with pytest.raises(AssertionError):
        assert_attention_close(
            out, q, k, v, rope=rope, q_positions=qpos, k_positions=kpos, strict=True
        )


def test_rr_attention_meets_its_float64_allowance_against_mpmath():
    """rr.attention (float64) against a 40-digit recomputation over 2048 keys, with RoPE at
    exact frequencies, a causal mask, a soft-cap and a sink."""
    mpmath = pytest.importorskip("mpmath")
    mp = mpmath.mp
    rng = np.random.default_rng(5)
    rope = rr.Rope(16, base=10000.0)
    sk, sq, d = 2048, 2, 16
    q = rng.standard_normal((1, sq, d)) * 2
    k = rng.standard_normal((1, sk, d)) * 2
    v = rng.standard_normal((1, sk, 4))
    sinks = np.array([1.0])
    kw = dict(rope=rope, causal=True, softcap=8.0, sinks=sinks)
    out, lse = rr.attention(q, k, v, return_lse=True, **kw)
    with mp.workdps(40):
        thetas = [mp.mpf(str(t)) for t in rope.thetas()]

        def rot(x, pos):
            y = [mp.mpf(float(c)) for c in x]
            h = d // 2
            for j in range(h):
                c, s = mp.cos(pos * thetas[j]), mp.sin(pos * thetas[j])
                a, b = y[j], y[j + h]
                y[j], y[j + h] = a * c - b * s, a * s + b * c
            return y

        kr = [rot(k[0, n], n) for n in range(sk)]
        exact_o, exact_l = np.zeros((1, sq, 4)), np.zeros((1, sq))
        for i in range(sq):
            pos = sk - sq + i
            qr = rot(q[0, i], pos)
            logits = []
            for n in range(pos + 1):
                s = mp.fsum(a * b for a, b in zip(qr, kr[n], strict=True)) / mp.sqrt(d)
                logits.append(8 * mp.tanh(s / 8))
            ws = [mp.exp(s) for s in logits]
            z = mp.fsum(ws) + mp.exp(mp.mpf(1))
            for c in range(4):
                exact_o[0, i, c] = float(
                    mp.fsum(w * mp.mpf(float(v[0, n, c])) for n, w in enumerate(ws)) / z
                )
            exact_l[0, i] = float(mp.log(z))
    tol = attention_tolerance(q, k, v, dtype="float64", strict=True, **kw)
    err_o = np.max(np.abs(out - exact_o), axis=-1)
    err_l = np.abs(lse - exact_l)
    assert np.all(err_o <= tol.out), (err_o, tol.out)
    assert np.all(err_l <= tol.lse), (err_l, tol.lse)
    # and the old default, 8u x max|out|, is not a bound the model relies on: the new one is
    # wider, by the accumulation over the kept keys
    assert np.all(tol.out > 8 * 2.0**-53 * np.max(np.abs(exact_o)))


# --------------------------------------------------------------------------- the report


def test_multi_axis_rope():
    """M-RoPE (positions with a leading axis of 3): positions reported per axis, and a
    shift of every axis is named."""
    rng = np.random.default_rng(6)
    rope = rr.Rope(16, scaling=rr.scaling.MRope(sections=(2, 3, 3)))
    q = rng.standard_normal((2, 6, 16)).astype(np.float32)
    k = rng.standard_normal((1, 6, 16)).astype(np.float32)
    v = rng.standard_normal((1, 6, 4)).astype(np.float32)
    pos = rng.integers(0, 10, size=(3, 6))
    kw = dict(rope=rope, q_positions=pos, k_positions=pos)
    out = rr.attention(q, k, v, **kw)
    assert assert_attention_close(out, q, k, v, **kw).passed
    bad = rr.attention(q, k, v, rope=rope, q_positions=pos + 1, k_positions=pos)
    with pytest.raises(AssertionError) as info:
        assert_attention_close(bad, q, k, v, **kw)
    rep = info.value.report
    assert rep.explanation.name == "query positions shifted by +1"
    row = rep.worst["row"]
    assert rep.worst["position"] == tuple(int(x) for x in pos[:, row])


def test_report_locates_the_worst_row():
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((2, 3, n, 8)) for n in (10, 10, 10))
    out = rr.attention(q, k, v, causal=True).copy()
    out[1, 2, 7, 3] += 1e-6
    with pytest.raises(AttentionMismatch) as info:
        assert_attention_close(out, q, k, v, causal=True)
    rep = info.value.report
    assert rep.worst["index"] == (1, 2, 7)
    assert rep.worst["position"] == 7
    assert rep.worst["quantity"] == "out"
    assert abs(rep.worst["error"] - 1e-6) < 1e-12
    assert [h for h, e, r in rep.by_head if r > 1] == [2]
    assert [(a, b) for a, b, e, r in rep.by_rows if r > 1] == [(7, 8)]
    msg = str(info.value)
    assert "batch (1,), head 2, query row 7 (position 7)" in msg
    assert "rows over their allowance: 1 of 60" in msg


def test_explicit_positions_are_reported():
    rng = np.random.default_rng(2)
    q, k, v = (rng.standard_normal((1, n, 8)) for n in (4, 6, 6))
    qpos = np.array([100, 101, 102, 103])
    kpos = np.arange(98, 104)
    out = rr.attention(q, k, v, q_positions=qpos, k_positions=kpos, causal=True).copy()
    out[0, 2] += 1e-3
    with pytest.raises(AssertionError) as info:
        assert_attention_close(out, q, k, v, q_positions=qpos, k_positions=kpos, causal=True)
    assert info.value.report.worst["position"] == 102


def test_non_finite_values():
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal((1, 4, 8)) for _ in range(3))
    keep = np.ones((4, 4), bool)
    keep[2] = False  # an empty row: output 0, lse -inf
    out, lse = rr.attention(q, k, v, mask=keep, return_lse=True)
    rep = assert_attention_close(out, q, k, v, lse=lse, mask=keep)
    assert rep.passed and rep.allowance_out[0, 2] == 0.0
    assert np.all(np.isfinite(rep.allowance_out)) and np.all(np.isfinite(rep.allowance_lse))
    nan_out = out.copy()
    nan_out[0, 2] = np.nan  # what an unguarded kernel gives for an empty row
    with pytest.raises(AssertionError):
        assert_attention_close(nan_out, q, k, v, mask=keep, diagnose=False)
    bad_lse = lse.copy()
    bad_lse[0, 2] = 0.0
    with pytest.raises(AssertionError):
        assert_attention_close(out, q, k, v, lse=bad_lse, mask=keep, diagnose=False)
    inf_lse = lse.copy()
    inf_lse[0, 1] = np.inf
    with pytest.raises(AssertionError):
        assert_attention_close(out, q, k, v, lse=inf_lse, mask=keep, diagnose=False)


def test_bad_arguments():
    rng = np.random.default_rng(4)
    q, k, v = (rng.standard_normal((1, 4, 8)) for _ in range(3))
    out = rr.attention(q, k, v)
    with pytest.raises(rr.RopeValueError, match="out must have"):
        assert_attention_close(out[..., :3, :], q, k, v)
    with pytest.raises(rr.RopeValueError, match="lse must have"):
        assert_attention_close(out, q, k, v, lse=np.zeros(3))
    with pytest.raises(rr.RopeTypeError, match="strict"):
        assert_attention_close(out, q, k, v, strict=1)
    with pytest.raises(rr.RopeTypeError, match="dtype"):
        attention_tolerance(q, k, v, dtype="int32")
    with pytest.raises(rr.RopeTypeError):
        assert_attention_close(out, q, k, v, scale="0.5")


def test_allowance_model_properties():
    """Properties of the model itself (no kernel involved): it scales with u, grows with the
    number of kept keys like sqrt(n), covers the old 8u x max|out| floor, and its float32
    angle budget grows with the position."""
    rng = np.random.default_rng(9)
    q = rng.standard_normal((1, 1, 32))
    k, v = rng.standard_normal((2, 1, 16384, 32))
    t32 = attention_tolerance(q, k, v, dtype="float32", strict=True)
    t64 = attention_tolerance(q, k, v, dtype="float64", strict=True)
    ratio = float(t32.out[0, 0] / t64.out[0, 0])
    assert 2.0**29 * 0.9 < ratio < 2.0**29 * 1.1
    small = attention_tolerance(q, k[:, :256], v[:, :256], dtype="float32", strict=True)
    growth = float(t32.out[0, 0] / small.out[0, 0])
    assert 1.0 < growth < 64.0  # not linear in n (64x more keys)
    out = rr.attention(q, k, v)
    assert t64.out[0, 0] > 8 * 2.0**-53 * np.max(np.abs(out))
    rope = rr.Rope(32)
    near = attention_tolerance(q, k[:, :64], v[:, :64], dtype="float32", rope=rope)
    far = attention_tolerance(
        q,
        k[:, :64],
        v[:, :64],
        dtype="float32",
        rope=rope,
        q_positions=np.array([10**6 + 63]),
        k_positions=np.arange(10**6, 10**6 + 64),
    )
    exact = attention_tolerance(
        q,
        k[:, :64],
        v[:, :64],
        dtype="float32",
        rope=rope,
        strict=True,
        q_positions=np.array([10**6 + 63]),
        k_positions=np.arange(10**6, 10**6 + 64),
    )
    assert far.out[0, 0] > 100 * near.out[0, 0]
    assert exact.out[0, 0] < far.out[0, 0] / 100
    assert np.all(np.isfinite(far.lse))


@pytest.mark.parametrize("fill", [-1e9, -1e30, float(np.finfo(np.float32).min)])
def test_rows_masked_everywhere_with_a_finite_fill(fill):
    # HF eager attention: an additive mask with finfo.min (or -1e9) on every key of a padded
    # query row. rr.attention softmaxes s0 + fill like any row: for -1e30 and finfo.min the
    # fill swallows the logits and the row is the plain mean of v; for -1e9 float64 keeps
    # them and the row is softmax(s0) @ v. The check must neither crash nor warn.
    rng = np.random.default_rng(11)
    s, d = 8, 16
    q, k, v = (rng.standard_normal((1, 1, s, d)) for _ in range(3))
    mask = np.zeros((s, s))
    mask[0, :] = fill
    mask[1:, 0] = fill  # the pad key, as left padding masks it for every other row
    ref = np.asarray(rr.attention(q, k, v, mask=mask))
    s0 = (q[0, 0, 0] @ k[0, 0].T) / math.sqrt(d)
    w = np.exp(s0 - s0.max()) / np.sum(np.exp(s0 - s0.max()))
    want_row0 = w @ v[0, 0] if fill == -1e9 else np.mean(v[0, 0], axis=0)
    np.testing.assert_allclose(ref[0, 0, 0], want_row0, rtol=1e-6, atol=1e-12)
    q32, k32, v32 = (a.astype(np.float32) for a in (q, k, v))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = assert_attention_close(
            ref.astype(np.float32), q32, k32, v32, mask=mask.astype(np.float32)
        )
        # a float32 kernel: uniform weights on the padded row (the fill swallows the logits)
        s32 = (q32 @ np.swapaxes(k32, -1, -2)) * np.float32(d**-0.5) + mask.astype(np.float32)
        e32 = np.exp(s32 - s32.max(-1, keepdims=True))
        out32 = (e32 / e32.sum(-1, keepdims=True)) @ v32
        assert assert_attention_close(out32, q32, k32, v32, mask=mask.astype(np.float32)).passed
    assert r.passed and "masked on every key" in r.message
    # the other rows are still judged: an error there fails
    bad = ref.astype(np.float32).copy()
    bad[0, 0, 3] += 0.05
    with pytest.raises(AttentionMismatch):
        assert_attention_close(bad, q32, k32, v32, mask=mask.astype(np.float32))


@pytest.mark.parametrize("d", [64, 128])
def test_bf16_rope_attention_correct_is_quiet_and_a_shift_is_seen(d):
    # HF-style rotation in bfloat16 arithmetic (tables rounded to bf16) and SDPA: the correct
    # kernel passes with no warning (its output is in the exact class); q rotated at
    # position + 1 fails strict=True and never passes the default silently
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    base, s = 1e4, 128
    rope = rr.Rope(d, base=base)
    gen = torch.Generator().manual_seed(d)

    def rot_hf(x, pos):
        inv = 1.0 / (base ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
        f = pos.float()[:, None] * inv
        emb = torch.cat((f, f), -1)
        c, sn = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
        return x * c + torch.cat((-x[..., d // 2 :], x[..., : d // 2]), -1) * sn

    pos = torch.arange(s)
    q, k, v = (torch.randn(1, 2, s, d, generator=gen).bfloat16() for _ in range(3))
    kw = dict(
        rope=rope, q_positions=pos.numpy(), k_positions=pos.numpy(), causal=True, diagnose=False
    )
    good = F.scaled_dot_product_attention(rot_hf(q, pos), rot_hf(k, pos), v, is_causal=True)
    bad = F.scaled_dot_product_attention(rot_hf(q, pos + 1), rot_hf(k, pos), v, is_causal=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = assert_attention_close(good, q, k, v, **kw)
        rs = assert_attention_close(good, q, k, v, strict=True, **kw)
    assert r.accuracy_class == "exact" and r.worst_ratio < 0.1 and rs.worst_ratio < 0.2
    with pytest.raises(AttentionMismatch):
        assert_attention_close(bad, q, k, v, strict=True, **kw)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            rb = assert_attention_close(bad, q, k, v, **kw)
        except AttentionMismatch:
            rb = None
    if rb is not None:  # passed only through the wide class: said loudly
        assert rb.accuracy_class == "lower-precision angles"
        assert any(issubclass(w.category, RopeToleranceWarning) for w in caught)


def test_degenerate_shapes_as_rr_attention_gives_them():
    rng = np.random.default_rng(5)

    def qkv(sq, sk, d, dv):
        return (
            rng.standard_normal((1, 2, sq, d)),
            rng.standard_normal((1, 2, sk, d)),
            rng.standard_normal((1, 2, sk, dv)),
        )

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        q, k, v = qkv(0, 4, 8, 8)  # no query rows: an empty output passes
        r = assert_attention_close(np.zeros((1, 2, 0, 8)), q, k, v)
        assert r.passed and r.worst_ratio == 0.0 and r.ratio_out.shape == (1, 2, 0)
        q, k, v = qkv(4, 0, 8, 8)  # no keys: rr.attention gives zeros, which must match exactly
        assert np.all(np.asarray(rr.attention(q, k, v)) == 0.0)
        assert assert_attention_close(np.zeros((1, 2, 4, 8)), q, k, v).passed
        with pytest.raises(AttentionMismatch):
            assert_attention_close(np.full((1, 2, 4, 8), 1e-3), q, k, v, diagnose=False)
        q, k, v = qkv(4, 4, 8, 0)  # value dim 0
        assert assert_attention_close(np.zeros((1, 2, 4, 0)), q, k, v).passed
    q, k, v = qkv(4, 4, 0, 8)  # head dim 0: the same typed error as rr.attention
    with pytest.raises(rr.RopeValueError, match="head_dim") as ours:
        assert_attention_close(np.zeros((1, 2, 4, 8)), q, k, v)
    with pytest.raises(rr.RopeValueError, match="head_dim") as theirs:
        rr.attention(q, k, v)
    assert str(ours.value) == str(theirs.value)


def test_no_numpy_warning_escapes_the_diagnosis():
    # causal with Sq > Sk: rows with no key (allowance 0); a wrong output is a verdict, not a
    # RuntimeWarning (overflow in the diagnosis' residuals)
    rng = np.random.default_rng(0)
    q = rng.standard_normal((1, 2, 8, 16)).astype(np.float32)
    k, v = (rng.standard_normal((1, 2, 4, 16)).astype(np.float32) for _ in range(2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(AttentionMismatch):
            assert_attention_close(np.zeros((1, 2, 8, 16), np.float32), q, k, v, causal=True)


@pytest.mark.parametrize("t", [1, -1])
def test_causal_off_by_one_is_named(t):
    # one future key kept (t = +1) or the diagonal dropped (t = -1), by an independent loop
    rng = np.random.default_rng(7)
    s, d = 32, 16
    q, k, v = (rng.standard_normal((1, 2, s, d)) for _ in range(3))
    out = np.zeros((1, 2, s, d))
    for h in range(2):
        for i in range(s):
            keys = [j for j in range(s) if j <= i + t]
            if not keys:
                continue
            lg = np.array([q[0, h, i] @ k[0, h, j] for j in keys]) / math.sqrt(d)
            w = np.exp(lg - lg.max())
            out[0, h, i] = (w / w.sum()) @ v[0, h, keys]
    with pytest.raises(AttentionMismatch) as info:
        assert_attention_close(out, q, k, v, causal=True)
    best = info.value.report.explanation
    assert best is not None and best.name == f"causal mask off by {t:+d}"
    tried = [h.name for h in info.value.report.diagnosis]
    assert len(tried) == len(set(tried))  # no hypothesis listed twice


def test_a_few_blind_rows_of_a_correct_half_kernel_do_not_warn():
    # float16 attention without RoPE: rows whose output averages to nearly 0 have an allowance
    # as large as it; the other rows are judged, so the report lists them and does not warn
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 2, 8, 16)).astype(np.float32) for _ in range(3))
    out = np.asarray(rr.attention(*(a.astype(np.float64) for a in (q, k, v))))
    h = [a.astype(np.float16) for a in (out, q, k, v)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = assert_attention_close(*h)
    assert r.passed
    with pytest.raises(AttentionMismatch):  # and it still sees a 5% error
        assert_attention_close((h[0] * np.float16(1.05)).astype(np.float16), *h[1:], diagnose=False)
