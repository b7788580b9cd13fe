"""The blocked attention VJP (rope_ref/_vjp_blocked.py): equal to the one-shot VJP to a few
ulps for every option on every backend, equal to torch.autograd in float64, empty inputs,
block sizes that do not divide the lengths, the chunking rules and bounded memory.

Tolerances. Both routes (and torch's) compute every gradient entry as sums of the same
terms in another order; each term is a product of a softmax weight (its own rounding: an
exp, a sum of Sk terms and a division) and sums of at most max(D, Dv) products. Standard
error analysis bounds the difference of two such evaluations by
``C * eps * M`` with ``C = 2 * (2 Sk + Sq G + D + Dv + 16)`` and ``M`` the same expression
evaluated on absolute values (``_magnitudes``: |P| |dO| |v| ...), times the row-sum bound of
the rotation's transpose for dq and dk. The measured worst ratio error / bound over every
case is printed by ``test_bound_margin`` (about 0.01: two orders of margin).
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import rope_ref as rr
from rope_ref import _attention, scaling
from rope_ref._errors import RopeTypeError, RopeValueError
from rope_ref._vjp import attention_vjp
from rope_ref._vjp_blocked import attention_vjp_blocked, vjp_blocks, vjp_chunk_for

EPS = float(np.finfo(np.float64).eps)
B, SQ, SK, D, DV = 2, 13, 17, 8, 5  # lengths that no block size below divides


def _qpos_perm():
    return np.random.default_rng(21).permutation(SQ) + 6


def _kpos_perm():
    return np.random.default_rng(22).permutation(SK)


def _additive_mask():
    m = np.random.default_rng(8).standard_normal((B, SQ, SK))
    m[:, 0, 3:] = -np.inf
    m[1, 4, :] = -np.inf  # a row with nothing kept
    return m[:, None]  # (B, 1, Sq, Sk): one mask for every head


def _bool_mask():
    m = np.random.default_rng(9).random((SQ, SK)) > 0.4
    m[:, 0] = True
    m[5, :] = False  # a row with nothing kept
    m[:, 7] = False  # a key nobody sees
    return m


CASES = {
    "plain": {},
    "rope-causal": {"rope": rr.Rope(8, base=100.0), "causal": True},
    "gqa-rope-causal": {"hq": 4, "rope": rr.Rope(8, layout="interleaved"), "causal": True},
    "causal-by-positions": {
        "rope": rr.Rope(8),
        "causal": True,
        "q_positions": _qpos_perm(),
        "k_positions": _kpos_perm(),
    },
    "bool-mask": {"mask": _bool_mask(), "rope": rr.Rope(8, rotary_dim=4)},
    "additive-mask": {"mask": _additive_mask(), "hq": 4},
    "window": {"window": (3, 1), "rope": rr.Rope(8), "causal": False},
    "window-causal-left": {"window": (4, None), "causal": True},
    "softcap": {"softcap": 1.5, "scale": 0.9, "rope": rr.Rope(8, layout="interleaved")},
    "softcap-causal-d_lse": {"softcap": 2.0, "causal": True, "d_lse": True},
    "negative-scale": {"scale": -0.7, "causal": True},
    "segments": {
        "segment_ids": (
            np.array([[0] * 5 + [1] * 8, [0] * 2 + [1] * 6 + [2] * 5]),
            np.array([0] * 6 + [1] * 6 + [2] * 5),
        )
    },
    "sinks": {"hq": 4, "sinks": np.array([0.5, -1.0, 2.0, 0.0]), "causal": True},
    "sinks-d_lse-broadcast-yarn": {
        "d_lse": True,
        "rope": rr.Rope(8, scaling=scaling.YaRN(16.0, 4096)),
        "sinks": np.array([[0.3], [-0.7]]),  # (batch, 1): one sink per batch row
    },
    "xpos-positions-sinks-d_lse": {
        "rope": rr.Rope(8, scaling=scaling.XPos()),
        "q_positions": np.arange(100, 100 + SQ),
        "k_positions": np.arange(96, 96 + SK),
        "causal": True,
        "d_lse": True,
        "sinks": np.array([0.1, 0.2]),
    },
}


def _data(opts, seed=0):
    hq = opts.get("hq", 2)
    g = np.random.default_rng(seed)
    q = g.standard_normal((B, hq, SQ, D))
    k = g.standard_normal((B, 2, SK, D))
    v = g.standard_normal((B, 2, SK, DV))
    d_out = g.standard_normal((B, hq, SQ, DV))
    d_lse = g.standard_normal((B, hq, SQ)) if opts.get("d_lse") else None
    return q, k, v, d_out, d_lse


def _kwargs(conv, opts):
    kw = {}
    for key, val in opts.items():
        if key in ("hq", "d_lse"):
            continue
        if key == "segment_ids":
            kw[key] = (conv(val[0]), conv(val[1]))
        elif isinstance(val, np.ndarray):
            kw[key] = conv(val)
        else:
            kw[key] = val
    return kw


def _keep(opts, hq):
    """The keep mask (B, Hq, Sq, Sk), built in NumPy from the definitions."""
    qpos = opts.get("q_positions", np.arange(SK - SQ, SK))
    kpos = opts.get("k_positions", np.arange(SK))
    keep = np.ones((B, hq, SQ, SK), dtype=bool)
    if opts.get("causal"):
        keep &= kpos[None, :] <= qpos[:, None]
    if "window" in opts:
        left, right = opts["window"]
        if left is not None:
            keep &= kpos[None, :] >= qpos[:, None] - left
        if right is not None:
            keep &= kpos[None, :] <= qpos[:, None] + right
    if "segment_ids" in opts:
        qs, ks = (
            np.broadcast_to(s, (B, n)) for s, n in zip(opts["segment_ids"], (SQ, SK), strict=True)
        )
        keep &= (qs[:, :, None] == ks[:, None, :])[:, None]
    mask = opts.get("mask")
    add = np.zeros((B, hq, SQ, SK))
    if mask is not None and mask.dtype == bool:
        keep &= mask
    elif mask is not None:
        keep &= mask != -np.inf
        add = np.where(keep, np.broadcast_to(mask, keep.shape), 0.0)
    return keep, add


def _rotated(opts, q, k):
    """(q rotated, k rotated, row-sum bounds of R_q^T and R_k^T): for magnitudes only."""
    rope = opts.get("rope")
    if rope is None:
        return q, k, 1.0, 1.0
    qpos = opts.get("q_positions", np.arange(SK - SQ, SK))
    kpos = opts.get("k_positions", np.arange(SK))
    qr = rr.apply_rope(q, qpos, rope, role="query")
    kr = rr.apply_rope(k, kpos, rope, role="key")
    # a pair's row of R^T is (c, s) or (-s, c): |c| + |s| <= sqrt(2) max(|c - s|, |c + s|),
    # and apply_rope of ones gives exactly c - s and c + s
    fq = np.sqrt(2) * np.max(np.abs(rr.apply_rope(np.ones((SQ, D)), qpos, rope, role="query")))
    fk = np.sqrt(2) * np.max(np.abs(rr.apply_rope(np.ones((SK, D)), kpos, rope, role="key")))
    return qr, kr, max(1.0, fq), max(1.0, fk)


def _magnitudes(opts, q, k, v, d_out, d_lse):
    """Per gradient, the largest sum of absolute terms (see the module docstring)."""
    hq = q.shape[1]
    g = hq // 2
    keep, add = _keep(opts, hq)
    scale = opts.get("scale", D**-0.5)
    qr, kr, fq, fk = _rotated(opts, q, k)
    kr, vv = np.repeat(kr, g, axis=1), np.repeat(v, g, axis=1)
    s = scale * qr @ np.swapaxes(kr, -1, -2)
    if opts.get("softcap"):
        s = opts["softcap"] * np.tanh(s / opts["softcap"])
    s = np.where(keep, s + add, -np.inf)
    sinks = opts.get("sinks")
    cols = [s]
    if sinks is not None:
        sig = np.broadcast_to(sinks, (B, hq)).astype(np.float64)
        cols.append(np.broadcast_to(sig[..., None, None], (B, hq, SQ, 1)))
    full = np.concatenate(cols, axis=-1)
    top = np.max(full, axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    e = np.exp(full - top)
    tot = np.sum(e, axis=-1, keepdims=True)
    p = np.where(tot > 0, e / np.where(tot > 0, tot, 1.0), 0.0)
    p_sink = p[..., SK:]
    p = p[..., :SK]
    out = p @ vv
    dl = 0.0 if d_lse is None else np.abs(d_lse)[..., None]
    a_row = np.sum(np.abs(d_out) * np.abs(out), axis=-1, keepdims=True) + dl
    a_ds = p * (np.abs(d_out) @ np.abs(np.swapaxes(vv, -1, -2)) + a_row)
    m_dq = fq * abs(scale) * np.max(a_ds @ np.abs(kr))
    m_dk = fk * abs(scale) * np.max(np.swapaxes(a_ds, -1, -2) @ np.abs(qr))
    m_dv = np.max(np.swapaxes(p, -1, -2) @ np.abs(d_out))
    mags = [m_dq, m_dk, m_dv]
    if sinks is not None:
        mags.append(np.sum(p_sink * a_row))
    c = 2 * (2 * SK + SQ * g + D + DV + 16)
    return [c * EPS * m for m in mags]


def _assert_within(got, want, tols):
    ratios = []
    assert len(got) == len(want) == len(tols)
    for a, b, tol in zip(got, want, tols, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        err = float(np.max(np.abs(a - b), initial=0.0))
        assert err <= tol, (err, tol)
        ratios.append(err / tol if tol else 0.0)
    return max(ratios)


def _run(bk, opts, fn, seed=0, **extra):
    q, k, v, d_out, d_lse = _data(opts, seed)
    conv = bk.from_numpy
    grads = fn(
        conv(q),
        conv(k),
        conv(v),
        conv(d_out),
        d_lse=None if d_lse is None else conv(d_lse),
        **_kwargs(conv, opts),
        **extra,
    )
    return [bk.to_numpy(x) for x in grads]


def _chunks(bk):
    # a jit-free JAX call or a Dask graph per block operation (slow): one block size there
    return {"dask": (8,), "jax": (5,)}.get(bk.name, (4, 5))


@pytest.mark.parametrize("name", list(CASES))
def test_blocked_equals_one_shot(bk, name):
    opts = CASES[name]
    want = _run(bk, opts, attention_vjp)
    tols = _magnitudes(opts, *_data(opts))
    assert len(want) == (4 if "sinks" in opts else 3)
    for chunk in _chunks(bk):
        got = _run(bk, opts, attention_vjp_blocked, chunk_size=chunk)
        _assert_within(got, want, tols)


def test_bound_margin(capsys):
    """The worst error / bound over every case and block size on NumPy (printed), and the
    bound is not vacuous: it is far below the gradients themselves."""
    from backends import by_name

    bk = by_name("numpy")
    worst = 0.0
    for opts in CASES.values():
        want = _run(bk, opts, attention_vjp)
        tols = _magnitudes(opts, *_data(opts))
        for a, t in zip(want, tols, strict=True):
            assert t < 1e-9 * max(1.0, float(np.max(np.abs(a))))
        for chunk in (1, 2, 3, 4, 5, 7, 16):
            got = _run(bk, opts, attention_vjp_blocked, chunk_size=chunk)
            worst = max(worst, _assert_within(got, want, tols))
    with capsys.disabled():
        print(f"\nblocked vs one-shot VJP: worst error / bound = {worst:.3g}")
    assert worst < 1.0


# ---------------------------------------------------------------------------- torch.autograd


def _torch_reference(torch, opts, q, k, v, d_out, d_lse):
    """float64 autograd of a plain softmax attention: rotation matrices, repeat_kv, masks."""
    hq = q.shape[1]
    rope = opts.get("rope")
    qpos = opts.get("q_positions", np.arange(SK - SQ, SK))
    kpos = opts.get("k_positions", np.arange(SK))
    if rope is None:
        rq, rk = np.eye(D), np.eye(D)
    else:  # column j of R_m is the rotation of e_j (xPos: with the role's factor)

        def basis(n):  # (j, position, D)
            return np.broadcast_to(np.eye(D)[:, None, :], (D, n, D))

        rq = np.moveaxis(rr.apply_rope(basis(SQ), qpos, rope, role="query"), 0, -1)
        rk = np.moveaxis(rr.apply_rope(basis(SK), kpos, rope, role="key"), 0, -1)
    keep, add = _keep(opts, hq)
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    sinks = opts.get("sinks")
    ts = None if sinks is None else torch.tensor(sinks, requires_grad=True)
    qr = torch.einsum("...ij,...j->...i", torch.tensor(rq), tq)
    kr = torch.einsum("...ij,...j->...i", torch.tensor(rk), tk)
    kr = kr.repeat_interleave(hq // 2, dim=-3)
    vv = tv.repeat_interleave(hq // 2, dim=-3)
    s = opts.get("scale", D**-0.5) * qr @ kr.transpose(-1, -2)
    if opts.get("softcap"):
        s = opts["softcap"] * torch.tanh(s / opts["softcap"])
    s = (s + torch.tensor(add)).masked_fill(~torch.tensor(keep), -torch.inf)
    if ts is not None:
        col = torch.broadcast_to(ts, (B, hq))[..., None, None].expand(B, hq, SQ, 1)
        s = torch.cat([s, col], dim=-1)
    lse = torch.logsumexp(s, dim=-1)
    finite = torch.isfinite(lse)
    p = torch.exp(s - torch.where(finite, lse, 0.0)[..., None])
    p = torch.where(finite[..., None], p, 0.0)
    if ts is not None:
        p = p[..., :-1]
    out = p @ vv
    loss = (out * torch.tensor(d_out)).sum()
    if d_lse is not None:
        loss = loss + torch.where(finite, lse * torch.tensor(d_lse), 0.0).sum()
    loss.backward()
    return [x.grad.numpy() for x in (tq, tk, tv)] + ([] if ts is None else [ts.grad.numpy()])


@pytest.mark.parametrize("name", list(CASES))
def test_blocked_matches_torch_autograd(name):
    torch = pytest.importorskip("torch")
    opts = CASES[name]
    data = _data(opts, seed=3)
    want = _torch_reference(torch, opts, *data)
    q, k, v, d_out, d_lse = (None if a is None else torch.tensor(a) for a in data)
    kw = _kwargs(torch.tensor, opts)
    tols = [4 * t for t in _magnitudes(opts, *data)]  # matrix rotations, logsumexp: 4x
    for chunk in (3, 6):
        got = attention_vjp_blocked(q, k, v, d_out, d_lse=d_lse, chunk_size=chunk, **kw)
        assert all(isinstance(a, torch.Tensor) and a.dtype == torch.float64 for a in got)
        _assert_within([a.numpy() for a in got], want, tols)


# ---------------------------------------------------------------------------- edges


@pytest.mark.parametrize(
    "shape",
    [(2, 2, 0, 8, 0), (2, 2, 5, 0, 3), (0, 2, 5, 7, 3), (2, 2, 0, 0, 3), (2, 2, 5, 7, 0)],
    ids=["sq0", "sk0", "batch0", "both0", "dv0"],
)
def test_empty_inputs(bk, shape):
    b, h, sq, sk, dv = shape
    conv = bk.from_numpy
    g = np.random.default_rng(5)
    q, k = g.standard_normal((b, h, sq, 8)), g.standard_normal((b, h, sk, 8))
    v, d_out = g.standard_normal((b, h, sk, dv)), g.standard_normal((b, h, sq, dv))
    sinks = np.array([0.5, -0.5])
    kw = {"rope": rr.Rope(8), "causal": True, "sinks": conv(sinks)}
    got = attention_vjp_blocked(conv(q), conv(k), conv(v), conv(d_out), chunk_size=2, **kw)
    got = [bk.to_numpy(x) for x in got]
    assert [x.shape for x in got] == [q.shape, k.shape, v.shape, sinks.shape]
    # no pair, or no value channel: without d_lse the loss <dO, out> is empty or 0, so every
    # gradient is 0 (d_sinks = sum P_sink (dlse - D) with dlse = 0 and D = dO . O = 0)
    for x in got:
        np.testing.assert_array_equal(x, 0.0)
    # the block loops themselves
    sp = _attention._prepare(conv(q), conv(k), conv(v), **kw)
    dq, dk, dvv, d_sink = vjp_blocks(sp, conv(d_out), None, 2)
    assert tuple(dq.shape) == q.shape and tuple(dk.shape) == k.shape
    assert tuple(dvv.shape) == v.shape and tuple(d_sink.shape) == (b, h, 1)
    for x in (dq, dk, dvv, d_sink):
        np.testing.assert_array_equal(bk.to_numpy(x), 0.0)


def test_no_value_channels_with_d_lse():
    """Dv = 0: only lse carries a gradient, dS = P dL; equal to the one-shot VJP."""
    g = np.random.default_rng(6)
    q, k = g.standard_normal((2, 2, SQ, D)), g.standard_normal((2, 2, SK, D))
    v, d_out = np.zeros((2, 2, SK, 0)), np.zeros((2, 2, SQ, 0))
    d_lse = g.standard_normal((2, 2, SQ))
    kw = {"rope": rr.Rope(D), "causal": True, "sinks": np.array([0.5, -0.5]), "d_lse": d_lse}
    want = attention_vjp(q, k, v, d_out, **kw)
    assert float(np.max(np.abs(want[0]))) > 0.1  # not a vacuous comparison
    for chunk in (3, 4):
        got = attention_vjp_blocked(q, k, v, d_out, chunk_size=chunk, **kw)
        for a, b in zip(got, want, strict=True):
            assert a.shape == b.shape
            np.testing.assert_allclose(
                a, b, rtol=0, atol=1e-14 * max(1.0, np.max(np.abs(b), initial=0.0))
            )


def test_block_larger_than_keys_only(bk):
    """Blocks wider than Sk but not Sq (and the reverse): still blocked, still equal."""
    opts = CASES["sinks"]
    want = _run(bk, opts, attention_vjp)
    tols = _magnitudes(opts, *_data(opts))
    for chunk in (SK - 1, SQ + 1):
        _assert_within(_run(bk, opts, attention_vjp_blocked, chunk_size=chunk), want, tols)


def test_float32_inputs_rounded_once(bk):
    opts = {"rope": rr.Rope(8), "causal": True}
    q, k, v, d_out, _ = _data(opts)
    conv = bk.from_numpy
    q32, v32 = (a.astype(np.float32) for a in (q, v))
    kw = {"rope": rr.Rope(8), "causal": True}
    got = attention_vjp_blocked(conv(q32), conv(k), conv(v32), conv(d_out), chunk_size=4, **kw)
    assert got[0].dtype == bk.dtype("float32") and got[2].dtype == bk.dtype("float32")
    assert got[1].dtype == bk.dtype("float64")
    wide = attention_vjp_blocked(
        conv(q32.astype(np.float64)),
        conv(k),
        conv(v32.astype(np.float64)),
        conv(d_out),
        chunk_size=4,
        **kw,
    )
    for a, w in zip(got, wide, strict=True):
        a = bk.to_numpy(a)
        np.testing.assert_array_equal(a, bk.to_numpy(w).astype(a.dtype))


def test_non_finite_inputs_reach_the_same_entries():
    """NaN in a dropped key and inf in a kept value: the NaN pattern and the finite values
    of the one-shot VJP."""
    opts = {"rope": rr.Rope(8), "causal": True}
    q, k, v, d_out, _ = _data(opts)
    k[0, 1, SK - 1, 2] = np.nan  # the last key: only the last query keeps it
    v[1, 0, 3, 1] = np.inf  # kept by every query of batch 1, head group 0
    v[1, 1, SK - 1, 0] = np.nan
    want = attention_vjp(q, k, v, d_out, **opts)
    for chunk in (3, 4):
        got = attention_vjp_blocked(q, k, v, d_out, chunk_size=chunk, **opts)
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
            ok = np.isfinite(b)
            assert np.isnan(b).any() or ok.all()
            np.testing.assert_allclose(a[ok], b[ok], rtol=0, atol=1e-13 * np.max(np.abs(b[ok])))


def test_inputs_are_not_written():
    opts = CASES["sinks-d_lse-broadcast-yarn"]
    arrays = _data(opts)
    copies = [a.copy() for a in arrays]
    q, k, v, d_out, d_lse = arrays
    attention_vjp_blocked(q, k, v, d_out, d_lse=d_lse, chunk_size=4, **_kwargs(np.asarray, opts))
    for a, c in zip(arrays, copies, strict=True):
        np.testing.assert_array_equal(a, c)


# ---------------------------------------------------------------------------- chunking rules


def _spec(b=1, h=2, sq=SQ, sk=SK):
    z = np.zeros
    return _attention._prepare(z((b, h, sq, D)), z((b, h, sk, D)), z((b, h, sk, DV)))


def test_chunk_rules():
    sp = _spec()
    assert vjp_chunk_for(sp, 4, None) == 4
    assert vjp_chunk_for(sp, 17, None) == 0  # one block holds everything: one shot
    assert vjp_chunk_for(sp, 16, None) == 16  # covers Sq, not Sk
    assert vjp_chunk_for(sp, None, None) == 0  # far under the default budget
    # the one-shot temporaries: 6 x 8 bytes x (1 x 2) x 13 x 17 = 21216 bytes
    assert vjp_chunk_for(sp, None, 21216) == 0
    assert vjp_chunk_for(sp, None, 21215) == 16  # the smallest automatic block
    big = _spec(sq=4096, sk=4096)
    chunk = vjp_chunk_for(big, None, None)  # 6 x 8 x 2 x 4096^2 = 1.5 GiB > 256 MiB
    assert chunk == 256
    assert 6 * 8 * 2 * chunk * chunk <= _attention.DEFAULT_MEMORY_BUDGET
    assert vjp_chunk_for(big, None, 6 * 8 * 2 * 100 * 100) == 100
    assert vjp_chunk_for(_spec(sq=0), 4, None) == 0  # empty: one shot


@pytest.mark.parametrize(
    ("kw", "err", "word"),
    [
        ({"chunk_size": 0}, RopeValueError, "chunk_size"),
        ({"chunk_size": 2.5}, (RopeTypeError, RopeValueError), "chunk_size"),
        ({"chunk_size": "4"}, (RopeTypeError, RopeValueError), "chunk_size"),
        ({"memory_budget": 0}, RopeValueError, "memory_budget"),
        ({"memory_budget": -5}, RopeValueError, "memory_budget"),
    ],
)
def test_bad_chunk_arguments_name_themselves(kw, err, word):
    q, k, v, d_out, _ = _data({})
    with pytest.raises(err, match=word):
        attention_vjp_blocked(q, k, v, d_out, **kw)


def test_bad_cotangents_name_themselves():
    q, k, v, d_out, _ = _data({})
    with pytest.raises(RopeValueError, match="d_out"):
        attention_vjp_blocked(q, k, v, d_out[..., :3], chunk_size=4)
    with pytest.raises(RopeValueError, match="d_lse"):
        attention_vjp_blocked(q, k, v, d_out, d_lse=np.zeros((B, 2, 3)), chunk_size=4)


def test_memory_budget_selects_blocks():
    """A budget below the one-shot need gives the blocked result (equal to one shot)."""
    opts = CASES["gqa-rope-causal"]
    want = _run_np(opts, attention_vjp)
    tols = _magnitudes(opts, *_data(opts))
    got = _run_np(opts, attention_vjp_blocked, memory_budget=1000)
    _assert_within(got, want, tols)


def _run_np(opts, fn, **extra):
    q, k, v, d_out, d_lse = _data(opts)
    return list(fn(q, k, v, d_out, d_lse=d_lse, **_kwargs(np.asarray, opts), **extra))


def test_memory_is_bounded():
    """(1, 1, 1024, 16) causal with RoPE in blocks of 64: the one-shot path would hold
    6 x 8 x 1024^2 = 48 MiB of score temporaries; the blocked path's NumPy allocations stay
    under 6 MiB (inputs, gradients and a few 64 x 64 blocks)."""
    g = np.random.default_rng(7)
    n, d = 1024, 16
    q, k, v, d_out = (g.standard_normal((1, 1, n, d)) for _ in range(4))
    tracemalloc.start()
    try:
        attention_vjp_blocked(q, k, v, d_out, rope=rr.Rope(d), causal=True, chunk_size=64)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 6 * 2**20, peak


# ---------------------------------------------------------------------------- the public entry


def test_public_attention_vjp_takes_the_blocked_path(bk):
    """rr.attention_vjp with chunk_size or a small memory_budget gives the blocked result
    (bit for bit: the same code), within the bound of the one-shot result without them."""
    opts = CASES["sinks-d_lse-broadcast-yarn"]
    one_shot = _run(bk, opts, rr.attention_vjp)
    tols = _magnitudes(opts, *_data(opts))
    chunk = _chunks(bk)[0]
    assert vjp_chunk_for(_spec(b=B, h=2), None, 1000) == 16  # the smallest automatic block
    for extra, size in (({"chunk_size": chunk}, chunk), ({"memory_budget": 1000}, 16)):
        blocked = _run(bk, opts, attention_vjp_blocked, chunk_size=size)
        got = _run(bk, opts, rr.attention_vjp, **extra)
        for a, b in zip(got, blocked, strict=True):
            np.testing.assert_array_equal(a, b)
        _assert_within(got, one_shot, tols)


def test_public_attention_vjp_validates_chunk_arguments():
    q, k, v, d_out, _ = _data({})
    with pytest.raises(RopeValueError, match="chunk_size"):
        rr.attention_vjp(q, k, v, d_out, chunk_size=0)
    with pytest.raises(RopeValueError, match="memory_budget"):
        rr.attention_vjp(q, k, v, d_out, memory_budget=0)
