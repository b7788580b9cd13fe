"""apply_rope_vjp and attention_vjp against finite differences, adjoint identities and
torch.autograd, on every backend."""

from __future__ import annotations

import numpy as np
import pytest

import rope_ref as rr
from rope_ref import scaling
from rope_ref._vjp import apply_rope_vjp, attention_vjp

# ---------------------------------------------------------------------------- apply_rope_vjp

# (rope, role); xPos is the only schedule where the role matters
ROPES = {
    "half": (rr.Rope(8), "query"),
    "interleaved": (rr.Rope(8, base=500_000.0, layout="interleaved"), "key"),
    "partial-half": (rr.Rope(10, rotary_dim=6), "query"),
    "partial-interleaved": (rr.Rope(10, rotary_dim=4, layout="interleaved"), "query"),
    "yarn": (rr.Rope(8, scaling=scaling.YaRN(16.0, 4096)), "query"),
    "xpos-query": (rr.Rope(8, layout="interleaved", scaling=scaling.XPos()), "query"),
    "xpos-key": (rr.Rope(8, scaling=scaling.XPos()), "key"),
    "xpos-partial-key": (rr.Rope(10, rotary_dim=6, scaling=scaling.XPos()), "key"),
}


def _inner(a, b):
    """<a, b> and sum |a * b| (the scale the rounding error of <a, b> is relative to)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.sum(a * b)), float(np.sum(np.abs(a * b)))


@pytest.mark.parametrize("name", list(ROPES))
def test_apply_rope_vjp_finite_differences_and_adjoint(bk, name, rng):
    rope, role = ROPES[name]
    d = rope.head_dim
    # xPos factors grow like zeta^(-m/512) for keys: stay where they are finite
    top = 3000 if name.startswith("xpos") else 2**20
    pos = rng.integers(0, top, size=(2, 1, 5))
    x, u, g = (rng.standard_normal((2, 3, 5, d)) for _ in range(3))
    conv = bk.from_numpy
    p = conv(pos)

    dx = bk.to_numpy(apply_rope_vjp(conv(g), p, rope, role=role))
    assert dx.shape == x.shape and dx.dtype == np.float64
    # x + u, x - u and x in one call (a new leading axis; the positions broadcast over it)
    y = bk.to_numpy(rr.apply_rope(conv(np.stack([x + u, x - u, x])), p, rope, role=role))
    # the map is linear: a central difference with step 1 is exact up to rounding
    fd, fd_scale = _inner(g, (y[0] - y[1]) / 2.0)
    an, an_scale = _inner(dx, u)
    assert abs(fd - an) <= 1e-13 * max(fd_scale, an_scale)
    # adjoint identity <J x, g> == <x, J^T g>
    lhs, lhs_scale = _inner(y[2], g)
    rhs, rhs_scale = _inner(x, dx)
    assert abs(lhs - rhs) <= 1e-13 * max(lhs_scale, rhs_scale)
    if rope.rotary_dim < d:  # pass-through channels get the cotangent unchanged
        np.testing.assert_array_equal(dx[..., rope.rotary_dim :], g[..., rope.rotary_dim :])


def test_apply_rope_vjp_is_inverse_rotation(bk, rng):
    """Without factors the rotation is orthogonal: vjp(apply_rope(x)) == x."""
    rope = rr.Rope(8, layout="interleaved")
    x = rng.standard_normal((3, 4, 8))
    p = bk.from_numpy(rng.integers(0, 2**20, size=4))
    y = rr.apply_rope(bk.from_numpy(x), p, rope)
    np.testing.assert_allclose(bk.to_numpy(apply_rope_vjp(y, p, rope)), x, rtol=0, atol=1e-14)


def test_apply_rope_vjp_broadcast_cotangent(bk, rng):
    rope = rr.Rope(10, rotary_dim=6, scaling=scaling.XPos())
    xp = bk.xp
    a = rng.standard_normal((1, 1, 10))
    shape = (3, 4, 10)
    p = bk.from_numpy(np.arange(100, 104))
    g = xp.broadcast_to(bk.from_numpy(a), shape)  # zero strides where the library has them
    got = bk.to_numpy(apply_rope_vjp(g, p, rope, role="key"))
    want = bk.to_numpy(
        apply_rope_vjp(bk.from_numpy(np.broadcast_to(a, shape).copy()), p, rope, role="key")
    )
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(bk.to_numpy(g), np.broadcast_to(a, shape))


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_apply_rope_vjp_dtype(bk, dtype, rng):
    if dtype not in bk.dtypes:
        pytest.skip(f"{bk.name} has no {dtype}")
    rope = rr.Rope(8)
    g = rng.standard_normal((4, 8))
    p = bk.from_numpy(np.arange(4))
    got = apply_rope_vjp(bk.from_numpy(g, dtype), p, rope)
    assert got.dtype == bk.dtype(dtype)
    want = bk.to_numpy(apply_rope_vjp(bk.from_numpy(g.astype(dtype).astype(np.float64)), p, rope))
    np.testing.assert_array_equal(bk.to_numpy(got), want.astype(dtype))


# ---------------------------------------------------------------------------- attention_vjp


def _data(seed=0, hq=2, hk=2, sq=4, sk=6, d=8, dv=4):
    g = np.random.default_rng(seed)
    return (
        g.standard_normal((2, hq, sq, d)),
        g.standard_normal((2, hk, sk, d)),
        g.standard_normal((2, hk, sk, dv)),
    )


def _additive_mask():
    m = np.random.default_rng(8).standard_normal((2, 4, 6))
    m[:, 0, 3:] = -np.inf
    return m


def _bool_mask(empty_row=False):
    m = np.random.default_rng(9).random((4, 6)) > 0.3
    m[:, 0] = True
    if empty_row:
        m[1, :] = False
    return m


CASES = {
    "plain": {},
    "rope-causal": {"rope": rr.Rope(8, base=100.0), "causal": True},
    "gqa": {"hq": 4, "rope": rr.Rope(8, layout="interleaved"), "causal": True},
    "bool-mask-empty-row": {"mask": _bool_mask(empty_row=True), "rope": rr.Rope(8)},
    "additive-mask": {"mask": _additive_mask()},
    "window": {"window": (2, 1), "rope": rr.Rope(8, rotary_dim=4)},
    "softcap": {"softcap": 1.5, "scale": 0.9},
    "segments": {
        "segment_ids": (np.array([[0, 0, 1, 1], [0, 1, 1, 2]]), np.array([0, 0, 1, 1, 2, 2]))
    },
    "sinks": {"hq": 4, "sinks": np.array([0.5, -1.0, 2.0, 0.0]), "causal": True},
    "d_lse-sinks-broadcast": {
        "d_lse": True,
        "rope": rr.Rope(8, scaling=scaling.YaRN(16.0, 4096)),
        "sinks": np.array([[0.3], [-0.7]]),  # (batch, 1): one sink per batch row
    },
    "xpos-positions": {
        "rope": rr.Rope(8, scaling=scaling.XPos()),
        "q_positions": np.array([100, 101, 102, 103]),
        "k_positions": np.array([98, 99, 100, 101, 102, 103]),
        "causal": True,
        "d_lse": True,
        "sinks": np.array([0.1, 0.2]),
    },
}


def _kwargs(bk, opts):
    kw = {}
    for key, val in opts.items():
        if key in ("hq", "d_lse"):
            continue
        if key == "segment_ids":
            kw[key] = (bk.from_numpy(val[0]), bk.from_numpy(val[1]))
        elif isinstance(val, np.ndarray):
            kw[key] = bk.from_numpy(val)
        else:
            kw[key] = val
    return kw


@pytest.mark.parametrize("name", list(CASES))
def test_attention_vjp_finite_differences(bk, name):
    opts = CASES[name]
    q, k, v = _data(hq=opts.get("hq", 2))
    g = np.random.default_rng(1)
    d_out = g.standard_normal((*q.shape[:-1], v.shape[-1]))
    d_lse = g.standard_normal(q.shape[:-1]) if opts.get("d_lse") else None
    sinks = opts.get("sinks")
    kw = _kwargs(bk, opts)
    conv = bk.from_numpy

    grads = attention_vjp(
        conv(q),
        conv(k),
        conv(v),
        conv(d_out),
        d_lse=None if d_lse is None else conv(d_lse),
        **kw,
    )
    grads = [bk.to_numpy(a) for a in grads]
    assert len(grads) == (3 if sinks is None else 4)
    for got, ref in zip(grads, (q, k, v, sinks), strict=False):
        assert got.shape == ref.shape and got.dtype == np.float64
        assert np.isfinite(got).all()

    # one random direction through every input at once; a 4-point central difference
    # (error O(h^4)) of the scalar <d_out, out> + <d_lse, lse>. The four evaluations run as
    # one call, stacked on a new leading batch axis (one graph on the lazy backends).
    inputs = [q, k, v] + ([] if sinks is None else [sinks])
    dirs = [g.standard_normal(a.shape) for a in inputs]
    h = 1e-3
    steps = np.array([h, -h, 2 * h, -2 * h])
    stacked = [
        x + steps.reshape((4,) + (1,) * x.ndim) * u for x, u in zip(inputs, dirs, strict=True)
    ]
    kw4 = dict(kw)
    if "segment_ids" in opts:
        kw4["segment_ids"] = tuple(
            conv(np.broadcast_to(s, (4, 2, s.shape[-1])).copy()) for s in opts["segment_ids"]
        )
    if sinks is not None:  # sinks broadcast against (4, 2, Hq): pad between the two
        kw4["sinks"] = conv(stacked[3].reshape((4,) + (1,) * (2 - sinks.ndim) + sinks.shape))
    out, lse = rr.attention(*(conv(a) for a in stacked[:3]), return_lse=True, **kw4)
    vals = np.sum(bk.to_numpy(out) * d_out, axis=(1, 2, 3, 4))
    if d_lse is not None:
        lse = bk.to_numpy(lse)
        vals = vals + np.sum(np.where(np.isfinite(lse), lse, 0.0) * d_lse, axis=(1, 2, 3))
    fd = (8.0 * (vals[0] - vals[1]) - (vals[2] - vals[3])) / (12.0 * h)
    an = sum(float(np.sum(gr * u)) for gr, u in zip(grads, dirs, strict=True))
    assert abs(fd - an) <= 1e-8 * (1.0 + abs(an)), (fd, an)


def test_attention_vjp_empty_rows_give_zero(bk):
    q, k, v = _data()
    mask = np.ones((4, 6), dtype=bool)
    mask[2, :] = False
    d_out = np.random.default_rng(2).standard_normal((2, 2, 4, 4))
    conv = bk.from_numpy
    dq, dk, _ = attention_vjp(
        conv(q), conv(k), conv(v), conv(d_out), mask=conv(mask), rope=rr.Rope(8)
    )
    dq = bk.to_numpy(dq)
    assert np.isfinite(dq).all() and np.isfinite(bk.to_numpy(dk)).all()
    np.testing.assert_array_equal(dq[:, :, 2, :], 0.0)


def test_attention_vjp_dtypes_and_broadcast_cotangent(bk):
    q, k, v = _data(hq=4)
    xp = bk.xp
    dtype = "float32"
    conv = bk.from_numpy
    a = np.random.default_rng(3).standard_normal((1, 1, 1, 4))
    d_out = xp.broadcast_to(conv(a), (2, 4, 4, 4))
    kw = {"rope": rr.Rope(8), "causal": True}
    dq, dk, dv = attention_vjp(conv(q, dtype), conv(k), conv(v, dtype), d_out, **kw)
    assert dq.dtype == bk.dtype(dtype) and dv.dtype == bk.dtype(dtype)
    assert dk.dtype == bk.dtype("float64")
    q32, v32 = (x.astype(dtype).astype(np.float64) for x in (q, v))
    want = attention_vjp(
        conv(q32), conv(k), conv(v32), conv(np.broadcast_to(a, (2, 4, 4, 4)).copy()), **kw
    )
    for got, ref in zip((dq, dk, dv), want, strict=True):
        ref = bk.to_numpy(ref)
        np.testing.assert_array_equal(bk.to_numpy(got), ref.astype(bk.to_numpy(got).dtype))


def test_errors_name_the_argument():
    q, k, v = _data()
    d_out = np.zeros((2, 2, 4, 4))
    with pytest.raises(rr.RopeValueError, match="d_out"):
        attention_vjp(q, k, v, d_out[..., :3])
    with pytest.raises(rr.RopeTypeError, match="d_out"):
        attention_vjp(q, k, v, [[0.0]])
    with pytest.raises(rr.RopeValueError, match="d_lse"):
        attention_vjp(q, k, v, d_out, d_lse=np.zeros((2, 2, 3)))
    with pytest.raises(rr.RopeTypeError, match="cotangent"):
        apply_rope_vjp(np.zeros((4, 8), dtype=np.int64), np.arange(4), rr.Rope(8))
    with pytest.raises(rr.RopeValueError, match="cotangent"):
        apply_rope_vjp(np.zeros((4, 6)), np.arange(4), rr.Rope(8))
    with pytest.raises(rr.RopeValueError, match="role"):
        apply_rope_vjp(np.zeros((4, 8)), np.arange(4), rr.Rope(8), role="value")
    # apply_rope's own validation, naming the cotangent: one prepare step for both
    with pytest.raises(rr.RopeTypeError, match="cotangent must be an array"):
        apply_rope_vjp([[0.0] * 8], np.arange(1), rr.Rope(8))
    with pytest.raises(rr.RopeTypeError, match="cotangent"):
        apply_rope_vjp(np.ma.zeros((4, 8)), np.arange(4), rr.Rope(8))
    with pytest.raises(rr.RopeValueError, match=r"cotangent\.shape\[:-1\]"):
        apply_rope_vjp(np.zeros((4, 8)), np.arange(5), rr.Rope(8))


# ---------------------------------------------------------------------------- torch.autograd


def _torch_attention(torch, q, k, v, *, rq, rk, keep, add, scale, softcap, sinks):
    """A plain float64 torch attention: q, k rotated by constant matrices (eq. 15)."""
    hq, hk = q.shape[-3], k.shape[-3]
    qr = torch.einsum("...ij,...j->...i", rq, q)
    kr = torch.einsum("...ij,...j->...i", rk, k)
    kr = kr.repeat_interleave(hq // hk, dim=-3)  # Hugging Face repeat_kv order
    vv = v.repeat_interleave(hq // hk, dim=-3)
    s = scale * qr @ kr.transpose(-1, -2)
    if softcap is not None:
        s = softcap * torch.tanh(s / softcap)
    if add is not None:
        s = s + add
    if keep is not None:
        s = s.masked_fill(~keep, -torch.inf)
    if sinks is not None:
        col = sinks[..., None, None].expand(*s.shape[:-1], 1)
        s = torch.cat([s, col], dim=-1)
    lse = torch.logsumexp(s, dim=-1)
    p = torch.exp(s - lse[..., None])
    if sinks is not None:
        p = p[..., :-1]
    return p @ vv, lse


TORCH_CASES = {
    "plain": {},
    "rope-causal": {"rope": rr.Rope(8, base=100.0), "causal": True},
    "gqa-yarn": {"hq": 4, "rope": rr.Rope(8, layout="interleaved", scaling=scaling.YaRN(16.0, 64))},
    "bool-mask": {"mask": _bool_mask()},
    "additive-mask": {"mask": _additive_mask(), "rope": rr.Rope(8, rotary_dim=4)},
    "window": {"window": (2, 1), "rope": rr.Rope(8)},
    "softcap": {"softcap": 1.5, "scale": 0.9, "rope": rr.Rope(8, layout="interleaved")},
    "segments": {
        "segment_ids": (np.array([[0, 0, 1, 1], [0, 1, 1, 2]]), np.array([0, 0, 1, 1, 2, 2]))
    },
    "sinks": {"hq": 4, "sinks": np.array([0.5, -1.0, 2.0, 0.0]), "causal": True},
    "d_lse": {"d_lse": True, "rope": rr.Rope(8), "softcap": 2.0, "causal": True},
}


@pytest.mark.parametrize("name", list(TORCH_CASES))
def test_attention_vjp_matches_torch_autograd(name):
    torch = pytest.importorskip("torch")
    opts = TORCH_CASES[name]
    hq = opts.get("hq", 2)
    q, k, v = _data(seed=4, hq=hq)
    sq, sk, d = q.shape[-2], k.shape[-2], q.shape[-1]
    g = np.random.default_rng(5)
    d_out = g.standard_normal((*q.shape[:-1], v.shape[-1]))
    d_lse = g.standard_normal(q.shape[:-1]) if opts.get("d_lse") else None
    rope = opts.get("rope")
    qpos, kpos = np.arange(sk - sq, sk), np.arange(sk)

    # the keep mask and rotations, built in NumPy from the definitions
    keep = np.ones((2, hq, sq, sk), dtype=bool)
    if opts.get("causal"):
        keep &= kpos[None, :] <= qpos[:, None]
    if "window" in opts:
        left, right = opts["window"]
        keep &= (kpos[None, :] >= qpos[:, None] - left) & (kpos[None, :] <= qpos[:, None] + right)
    if "segment_ids" in opts:
        qs, ks = (
            np.broadcast_to(s, (2, n)) for s, n in zip(opts["segment_ids"], (sq, sk), strict=True)
        )
        keep &= (qs[:, :, None] == ks[:, None, :])[:, None]
    mask = opts.get("mask")
    add = None
    if mask is not None and mask.dtype == bool:
        keep &= mask
    elif mask is not None:
        add = torch.tensor(np.broadcast_to(mask, keep.shape).copy())
    if rope is None:
        rq = rk = np.eye(d)
    else:
        rq, rk = rr.rotation_matrix(rope, qpos), rr.rotation_matrix(rope, kpos)

    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    sinks = opts.get("sinks")
    ts = None if sinks is None else torch.tensor(sinks, requires_grad=True)
    out, lse = _torch_attention(
        torch,
        tq,
        tk,
        tv,
        rq=torch.tensor(rq),
        rk=torch.tensor(rk),
        keep=torch.tensor(keep),
        add=add,
        scale=opts.get("scale", d**-0.5),
        softcap=opts.get("softcap"),
        sinks=ts,
    )
    loss = (out * torch.tensor(d_out)).sum()
    if d_lse is not None:
        loss = loss + (lse * torch.tensor(d_lse)).sum()
    loss.backward()
    want = [tq.grad, tk.grad, tv.grad] + ([] if ts is None else [ts.grad])

    kw = {key: val for key, val in opts.items() if key not in ("hq", "d_lse")}
    kw = {
        key: (
            tuple(torch.tensor(s) for s in val)
            if key == "segment_ids"
            else torch.tensor(val)
            if isinstance(val, np.ndarray)
            else val
        )
        for key, val in kw.items()
    }
    got = attention_vjp(
        torch.tensor(q),
        torch.tensor(k),
        torch.tensor(v),
        torch.tensor(d_out),
        d_lse=None if d_lse is None else torch.tensor(d_lse),
        **kw,
    )
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert isinstance(a, torch.Tensor) and a.dtype == torch.float64
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-12)
