"""Hypothesis fuzzing of rr.attention (one-shot and chunked), rr.linear_attention and
rr.attention_vjp against plain NumPy loops (issue #13): only typed errors or finite, correct
answers.

Shapes are small and the values come from a seeded generator (hypothesis draws the seed, the
shapes and the options), so an example costs milliseconds. ``HYPOTHESIS_PROFILE=thorough``
runs ten times more examples.

Tolerances, derived once for every example: inputs lie in [-1, 1], D <= 4, |scale| <= 2 and
additive masks in [-3, 3], so |s| <= 11 and every exp(s - m) carries a relative error below
(|s| + |m| + 2) eps < 25 eps; sums of <= 7 terms and one division add < 10 eps. Outputs are
averages of v (|v| <= 1), so |error| < 40 eps ~ 9e-15; we allow 1e-13 (450 eps: the
rotation tables add a few eps more, through the matrix route of the reference). Linear
attention's weights can cancel, so its bound scales with sum |w| |v| / den of each row.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import rope_ref as rr

EPS = 2.0**-52
TOL = 1e-13


def fuzz(bk, body, **strategies):
    """Run ``body(bk, **example)`` on examples drawn from ``strategies``: five times the
    default profile's count on NumPy (its examples cost milliseconds), the profile's count on
    other eager libraries, a tenth of it (at least 3) under JAX and Dask, where every new
    shape compiles or builds a graph (seconds per example)."""
    base = settings().max_examples
    if bk.name in ("numpy", "numpy-readonly"):
        count = 5 * base if base < 300 else base
    elif bk.jit or bk.lazy:
        count = max(3, base // 10)
    else:
        count = base

    @settings(max_examples=count)
    @given(**strategies)
    def run(**example):
        body(bk, **example)

    run()


# ------------------------------------------------------------------ independent routes


def _rotated(x, positions, rope, role):
    """x rotated at positions by RoFormer eq. 15 (the matrix route), or x itself."""
    if rope is None:
        return x
    mats = rr.rotation_matrix(rope, positions)  # (S, D, D)
    if rope.scaling is not None:  # (no scaling is drawn here; keep the reference honest)
        raise AssertionError("the reference rotates without scalings")
    del role
    return np.einsum("sij,...sj->...si", mats, x)


def loop_attention(q, k, v, o):
    """Softmax attention by loops over (batch, head, query, key), in float64 or complex128
    (for complex-step derivatives: the max is taken on real parts). Returns (out, lse)."""
    *batch, hq, sq, d = q.shape
    hk, sk = k.shape[-3], k.shape[-2]
    g = hq // hk
    qr = _rotated(q, o["q_pos"], o["rope"], "query")
    kr = _rotated(k, o["k_pos"], o["rope"], "key")
    scale = d**-0.5 if o["scale"] is None else o["scale"]
    dtype = np.result_type(q, k, v, 1.0)
    out = np.zeros((*batch, hq, sq, v.shape[-1]), dtype)
    lse = np.zeros((*batch, hq, sq), dtype)
    for idx in np.ndindex(*batch, hq, sq):
        *b, h, i = idx
        b = tuple(b)
        logits, vals = [], []
        for j in range(sk):
            if not _kept(o, b, h, i, j):
                continue
            s = scale * np.dot(qr[(*b, h, i)], kr[(*b, h // g, j)])
            if o["softcap"] is not None:
                s = o["softcap"] * np.tanh(s / o["softcap"])
            if o["add"] is not None:
                s = s + o["add"][(*b, h, i, j)]
            logits.append(s)
            vals.append(v[(*b, h // g, j)])
        sink = None if o["sinks"] is None else o["sinks"][(*b, h)]
        every = logits + ([sink] if sink is not None and np.real(sink) != -math.inf else [])
        if not every:
            out[idx], lse[idx] = 0.0, -math.inf
            continue
        m = max(x.real for x in every)
        weights = [np.exp(x - m) for x in logits]
        total = sum(np.exp(x - m) for x in every)
        out[idx] = sum((w * val for w, val in zip(weights, vals, strict=True)), 0.0) / total
        lse[idx] = m + np.log(total)
    return out, lse


def _kept(o, b, h, i, j):
    qp, kp = o["q_pos"][i], o["k_pos"][j]
    if o["causal"] and kp > qp:
        return False
    left, right = o["window"] if o["window"] is not None else (None, None)
    if (left is not None and kp < qp - left) or (right is not None and kp > qp + right):
        return False
    if o["segments"] is not None and o["segments"][0][i] != o["segments"][1][j]:
        return False
    if o["keep"] is not None and not o["keep"][(*b, h, i, j)]:
        return False
    return not (o["add"] is not None and o["add"][(*b, h, i, j)] == -math.inf)


def loop_linear(q, k, v, rope, causal, phi):
    """RoFormer eq. 19 by loops: weights (R_m phi(q_m)).(R_n phi(k_n)), normalizer
    phi(q_m).phi(k_n). Returns (out, bound): bound = sum |w| |v| / den per row."""
    *batch, hq, s, _ = q.shape
    g = hq // k.shape[-3]
    fq, fk = phi(q), phi(k)
    pos = np.arange(s)
    rq, rk = _rotated(fq, pos, rope, "query"), _rotated(fk, pos, rope, "key")
    out = np.zeros((*batch, hq, s, v.shape[-1]))
    bound = np.zeros((*batch, hq, s))
    for idx in np.ndindex(*batch, hq, s):
        *b, h, m = idx
        b = tuple(b)
        num, den, mag = np.zeros(v.shape[-1]), 0.0, 0.0
        for n in range(m + 1 if causal else s):
            w = float(rq[(*b, h, m)] @ rk[(*b, h // g, n)])
            num += w * v[(*b, h // g, n)]
            mag += abs(w) * float(np.abs(v[(*b, h // g, n)]).max(initial=0.0))
            den += float(fq[(*b, h, m)] @ fk[(*b, h // g, n)])
        out[idx] = num / den if den > 0 else 0.0
        bound[idx] = mag / den if den > 0 else 0.0
    return out, bound


# ------------------------------------------------------------------------- the examples


@st.composite
def problems(draw):
    """(q, k, v, options): small shapes, every option of rr.attention."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    batch = draw(st.sampled_from([(), (1,), (2,)]))
    hk = draw(st.integers(1, 2))
    hq = hk * draw(st.integers(1, 3))
    sq, sk = draw(st.integers(0, 5)), draw(st.integers(0, 6))
    d = draw(st.sampled_from([1, 2, 3, 4]))
    dv = draw(st.integers(0, 3))
    q = rng.uniform(-1, 1, (*batch, hq, sq, d))
    k = rng.uniform(-1, 1, (*batch, hk, sk, d))
    v = rng.uniform(-1, 1, (*batch, hk, sk, dv))
    o = {
        "rope": rr.Rope(d) if d % 2 == 0 and draw(st.booleans()) else None,
        "causal": draw(st.booleans()),
        "window": draw(
            st.none() | st.tuples(st.none() | st.integers(0, 3), st.none() | st.integers(0, 3))
        ),
        "scale": draw(st.none() | st.floats(-2, 2)),
        "softcap": draw(st.none() | st.floats(0.5, 5)),
        "keep": None,  # full (..., Hq, Sq, Sk) for the loop; "mask" is what rr gets
        "add": None,
        "mask": None,
        "segments": None,
        "sinks": None,
    }
    if draw(st.booleans()):  # explicit positions (else the bottom-right defaults)
        o["q_pos"] = rng.integers(0, 8, sq)  # a small range: causal and windows bite
        o["k_pos"] = rng.integers(0, 8, sk)
        o["explicit"] = True
    else:
        o["q_pos"], o["k_pos"], o["explicit"] = np.arange(sk - sq, sk), np.arange(sk), False
    full = (*batch, hq, sq, sk)
    mask = draw(st.sampled_from(["none", "bool", "add"]))
    if mask == "bool":
        o["mask"] = rng.random((sq, sk)) < 0.7
        o["keep"] = np.broadcast_to(o["mask"], full)
    elif mask == "add":
        o["mask"] = rng.choice([-math.inf, -2.5, 0.0, 1.5, 3.0], (hq, sq, sk))
        o["add"] = np.broadcast_to(o["mask"], full)
    if draw(st.booleans()):
        o["segments"] = (rng.integers(0, 3, sq), rng.integers(0, 3, sk))
    o["sinks_arg"] = None
    if draw(st.booleans()):
        o["sinks_arg"] = rng.uniform(-2, 2, hq)
        o["sinks_arg"][rng.random(hq) < 0.2] = -math.inf
        o["sinks"] = np.broadcast_to(o["sinks_arg"], (*batch, hq))
    return q, k, v, o


def kwargs(bk, o):
    """rr.attention's keyword arguments for the options, as arrays of the backend."""
    conv = bk.from_numpy
    kw = {key: o[key] for key in ("rope", "causal", "window", "scale", "softcap")}
    if o["explicit"]:
        kw["q_positions"], kw["k_positions"] = conv(o["q_pos"]), conv(o["k_pos"])
    if o["mask"] is not None:
        kw["mask"] = conv(o["mask"])
    if o["segments"] is not None:
        kw["segment_ids"] = tuple(conv(s) for s in o["segments"])
    if o["sinks_arg"] is not None:
        kw["sinks"] = conv(o["sinks_arg"])
    return kw


def assert_close(got, want, tol):
    got = np.asarray(got)
    assert got.shape == want.shape
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want))
    fin = np.isfinite(want)
    assert np.isfinite(got[fin]).all()
    err = np.abs(got[fin] - want[fin])
    assert err.size == 0 or np.all(err <= np.broadcast_to(tol, want.shape)[fin])


# --------------------------------------------------------------------------------- tests


def test_attention_matches_the_loop(bk):
    """One-shot (chunk None) and chunked paths against the loop: finite outputs (0 and lse
    -inf for rows with nothing kept), within TOL."""
    fuzz(bk, _attention_case, problem=problems(), chunk=st.none() | st.integers(1, 7))


def _attention_case(bk, problem, chunk):
    q, k, v, o = problem
    out, lse = rr.attention(
        *(bk.from_numpy(a) for a in (q, k, v)), return_lse=True, chunk_size=chunk, **kwargs(bk, o)
    )
    out, lse = bk.to_numpy(out), bk.to_numpy(lse)
    want, want_lse = loop_attention(q, k, v, o)
    assert np.isfinite(out).all()
    assert_close(out, want, TOL)
    assert_close(lse, want_lse, TOL * np.maximum(1.0, np.abs(np.nan_to_num(want_lse))))


def test_attention_vjp_matches_complex_step(bk):
    """<grads, direction> against the complex-step derivative of the loop (exact to
    rounding: f(x + ih delta).imag / h, h = 1e-30) of L = sum(d_out * out) + sum(d_lse * lse)."""
    fuzz(bk, _vjp_case, problem=problems(), seed=st.integers(0, 2**32 - 1))


def _vjp_case(bk, problem, seed):
    q, k, v, o = problem
    rng = np.random.default_rng(seed)
    d_out = rng.uniform(-1, 1, (*q.shape[:-1], v.shape[-1]))
    d_lse = rng.uniform(-1, 1, q.shape[:-1])
    dirs = [rng.uniform(-1, 1, a.shape) for a in (q, k, v)]
    kw = kwargs(bk, o)
    conv = bk.from_numpy
    grads = rr.attention_vjp(conv(q), conv(k), conv(v), conv(d_out), d_lse=conv(d_lse), **kw)
    grads = [bk.to_numpy(g) for g in grads]
    assert all(np.isfinite(g).all() for g in grads)
    h = 1e-30
    o2 = dict(o)
    if o["sinks_arg"] is not None:
        sink_dir = np.where(np.isinf(o["sinks_arg"]), 0.0, rng.uniform(-1, 1, o["sinks_arg"].shape))
        o2["sinks"] = np.broadcast_to(o["sinks_arg"] + 1j * h * sink_dir, o["sinks"].shape)
        dirs.append(sink_dir)
    qc, kc, vc = (a + 1j * h * dd for a, dd in zip((q, k, v), dirs[:3], strict=True))
    out, lse = loop_attention(qc, kc, vc, o2)
    lse_imag = np.where(np.isneginf(lse.real), 0.0, lse.imag)
    want = (np.sum(d_out * out.imag) + np.sum(d_lse * lse_imag)) / h
    got = sum(float(np.sum(g * dd)) for g, dd in zip(grads, dirs, strict=True))
    size = sum(float(np.sum(np.abs(g * dd))) for g, dd in zip(grads, dirs, strict=True))
    assert abs(got - want) <= TOL * (1.0 + size)


def test_linear_attention_matches_the_loop(bk):
    """rr.linear_attention against eq. 19 by loops, within TOL of each row's sum |w| |v| / den."""
    fuzz(
        bk,
        _linear_case,
        seed=st.integers(0, 2**32 - 1),
        shape=st.tuples(
            st.sampled_from([(), (2,)]), st.integers(1, 2), st.integers(1, 2), st.integers(0, 6)
        ),
        d=st.sampled_from([2, 4]),
        use_rope=st.booleans(),
        causal=st.booleans(),
        feature=st.sampled_from(["elu1", "relu"]),
        chunk=st.none() | st.integers(1, 4),
    )


def _linear_case(bk, seed, shape, d, use_rope, causal, feature, chunk):
    batch, hk, g, s = shape
    rng = np.random.default_rng(seed)
    q = rng.uniform(-1, 1, (*batch, hk * g, s, d))
    k = rng.uniform(-1, 1, (*batch, hk, s, d))
    v = rng.uniform(-1, 1, (*batch, hk, s, 2))
    rope = rr.Rope(d) if use_rope else None

    def phi(x):
        if feature == "elu1":
            return np.where(x > 0, x + 1.0, np.exp(np.minimum(x, 0.0)))
        return np.maximum(x, 0.0)

    got = rr.linear_attention(
        *(bk.from_numpy(a) for a in (q, k, v)),
        rope=rope,
        causal=causal,
        feature_map=feature,
        chunk_size=chunk,
    )
    want, bound = loop_linear(q, k, v, rope, causal, phi)
    assert np.isfinite(bk.to_numpy(got)).all()
    assert_close(bk.to_numpy(got), want, TOL * (1.0 + bound)[..., None])


SCALARS = ["causal", "scale", "window", "softcap", "return_lse", "chunk_size", "memory_budget"]
GARBAGE = (
    st.none()
    | st.booleans()
    | st.integers(-3, 5)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=3)
    | st.complex_numbers(max_magnitude=3)
    | st.sampled_from(
        [np.float32(1.5), np.int64(2), np.bool_(True), np.bool_(False), np.float64(np.nan)]
    )
    | st.sampled_from([np.array([1, 2]), np.array(3.0), [1, 2], (1,), {}])
    | st.tuples(
        st.none() | st.integers(-2, 3) | st.floats(allow_nan=True) | st.text(max_size=2),
        st.none() | st.integers(-2, 3) | st.sampled_from([np.int64(1), math.inf, "x"]),
    )
)


def test_scalar_arguments_give_typed_errors_or_answers(bk):
    """Anything as one scalar argument: a RopeError naming it, or a finite answer."""
    fuzz(bk, _scalar_case, name=st.sampled_from(SCALARS), value=GARBAGE)


def _scalar_case(bk, name, value):
    q, k, v = (
        bk.from_numpy(a)
        for a in (np.full((1, 2, 3, 4), 0.5), np.full((1, 1, 4, 4), 0.25), np.ones((1, 1, 4, 2)))
    )
    try:
        res = rr.attention(q, k, v, **{"causal": True, name: value})
    except rr.RopeError as exc:
        assert name.split("_")[0] in str(exc)
        return
    out = res[0] if isinstance(res, tuple) else res
    assert np.isfinite(bk.to_numpy(out)).all()
    if isinstance(res, tuple):
        assert np.isfinite(bk.to_numpy(res[1])).all()
