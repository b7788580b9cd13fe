"""The fast paths of apply_rope change no bit: blocked rotation on eager CPU arrays, one table
per distinct position, and the table cache shared between calls (rope_ref/_tables.py)."""

from __future__ import annotations

import numpy as np
import pytest

import rope_ref as rr
from rope_ref import _apply, _blocks, _tables

ROPES = [
    rr.Rope(32, base=5e5),
    rr.Rope(32, layout="interleaved", rotary_dim=24),
    rr.Rope(32, scaling=rr.scaling.XPos()),
    rr.Rope(32, scaling=rr.scaling.DynamicNTK(4.0, 16)),
]
SHAPES = [  # (x shape, positions shape): broadcast patterns of the leading axes
    ((2, 3, 40, 32), (40,)),
    ((2, 3, 40, 32), (2, 1, 40)),
    ((2, 3, 40, 32), (2, 3, 40)),
    ((5, 40, 32), (5, 40)),
    ((40, 3, 32), (40, 1)),
    ((7, 32), (7,)),
]


def _unblocked(monkeypatch, fn):
    monkeypatch.setattr(_blocks, "BLOCK_ELEMENTS", 2**40)
    try:
        return fn()
    finally:
        monkeypatch.setattr(_blocks, "BLOCK_ELEMENTS", None)


@pytest.mark.parametrize("threads", ["1", "4"])
@pytest.mark.parametrize("rope", ROPES, ids=lambda r: f"{r.layout}-{type(r.scaling).__name__}")
@pytest.mark.parametrize("shapes", SHAPES, ids=lambda s: f"{s[0]}@{s[1]}")
def test_blocked_rotation_is_bit_identical(bk, monkeypatch, rope, shapes, threads):
    xshape, pshape = shapes
    monkeypatch.setenv("ROPE_REF_THREADS", threads)
    rng = np.random.default_rng(11)
    x = bk.from_numpy(rng.standard_normal(xshape), "float32")
    pos = bk.from_numpy(rng.integers(0, 5000, size=pshape))

    def run():
        return rr.apply_rope(x, pos, rope, role="key", seq_len=5000)

    ref = bk.to_numpy(_unblocked(monkeypatch, run))
    monkeypatch.setattr(_blocks, "BLOCK_ELEMENTS", 64)  # many blocks, ragged last ones
    _tables.clear_cache()
    y = run()
    assert tuple(y.shape) == xshape and y.dtype == x.dtype
    np.testing.assert_array_equal(bk.to_numpy(y), ref)
    # and the result is the float64 formula on the exact tables, rounded once
    c, s = (bk.to_numpy(t) for t in rope.cos_sin(pos, role="key", seq_len=5000))
    xn = bk.to_numpy(x).astype(np.float64)
    if rope.layout == "interleaved":
        a, b = np.arange(0, rope.rotary_dim, 2), np.arange(1, rope.rotary_dim, 2)
    else:
        a, b = np.arange(16), np.arange(16, 32)
    want = xn.copy()
    c = np.broadcast_to(c, (*xshape[:-1], c.shape[-1]))
    s = np.broadcast_to(s, (*xshape[:-1], s.shape[-1]))
    want[..., a] = xn[..., a] * c - xn[..., b] * s
    want[..., b] = xn[..., b] * c + xn[..., a] * s
    np.testing.assert_array_equal(bk.to_numpy(y), want.astype(np.float32))


def test_blocked_path_is_taken_for_large_inputs(monkeypatch):
    calls = []
    real = _apply._apply_blocked
    monkeypatch.setattr(_apply, "_apply_blocked", lambda *a: calls.append(1) or real(*a))
    x = np.ones((16, 256, 128), dtype=np.float32)
    rr.apply_rope(x, np.arange(256), rr.Rope(128))
    assert calls == [1]


def test_one_table_per_distinct_position(monkeypatch):
    rope = rr.Rope(16)
    seen = []
    real = _tables.build

    def spy(rope, xp, positions, *a, **k):
        seen.append(tuple(positions.shape))
        return real(rope, xp, positions, *a, **k)

    monkeypatch.setattr(_tables, "build", spy)
    _tables.clear_cache()
    pos = np.tile(np.arange(30, 60), (4, 1))  # batch 4 of the same positions
    x = np.random.default_rng(0).standard_normal((4, 2, 30, 16))
    y = rr.apply_rope(x, pos[:, None, :], rope)
    assert seen == [(30,)]  # 30 distinct positions, not 4 x 30
    for b in range(4):
        np.testing.assert_array_equal(y[b], rr.apply_rope(x[b], np.arange(30, 60), rope))


def test_cache_shares_tables_and_follows_content():
    rope = rr.Rope(16)
    _tables.clear_cache()
    rng = np.random.default_rng(1)
    q, k = rng.standard_normal((2, 3, 10, 16))
    pos = np.arange(10)
    yq = rr.apply_rope(q, pos, rope)
    rr.apply_rope(k, pos, rope)
    info = _tables.cache_info()
    assert (info["misses"], info["hits"]) == (1, 1)
    pos[3] = 1000  # the caller changes the positions in place: a new table, not the old one
    y2 = rr.apply_rope(q, pos, rope)
    assert not np.array_equal(y2[:, 3], yq[:, 3])
    np.testing.assert_array_equal(y2[:, 3], rr.apply_rope(q[:, 3], np.array([1000]), rope))
    # the public tables are the caller's own: writing to them changes nothing cached
    c, _ = rope.cos_sin(pos)
    c[...] = 0.0
    np.testing.assert_array_equal(rr.apply_rope(q, pos, rope), y2)


def test_cache_is_bounded():
    _tables.clear_cache()
    x = np.ones((3, 16))
    for i in range(3 * _tables.CACHE_ENTRIES):
        rr.apply_rope(x, np.arange(i, i + 3), rr.Rope(16))
    assert _tables.cache_info()["entries"] == _tables.CACHE_ENTRIES


@pytest.mark.parametrize("shapes", SHAPES[:5], ids=lambda s: f"{s[0]}@{s[1]}")
def test_blocked_rotation_keeps_inf_and_nan_in_their_pair(bk, monkeypatch, shapes):
    # the blocked path decides per block, from a per-row summary of the tables, whether an
    # exact-zero coefficient (sin at position 0) can meet inf/NaN in x: the same bits as the
    # unblocked path, and at position 0 the identity (inf stays, its partner unchanged)
    xshape, pshape = shapes
    rope = rr.Rope(32)
    rng = np.random.default_rng(12)
    xn = rng.standard_normal(xshape)
    pn = rng.integers(1, 5000, size=pshape)
    pn.reshape(-1)[::3] = 0  # several rows at position 0, in several blocks
    tok = np.broadcast_to(pn, xshape[:-1])  # each token's position
    zero_rows = np.argwhere(tok == 0)
    hit = tuple(zero_rows[len(zero_rows) // 2])
    xn[(*hit, 3)] = np.inf  # channel 3 pairs with 19 (half layout)
    xn[(*hit, 20)] = np.nan
    other = tuple(np.argwhere(tok != 0)[0])
    xn[(*other, 5)] = np.inf  # a nonzero angle: spreads to its partner, as the maths does
    x, pos = bk.from_numpy(xn, "float32"), bk.from_numpy(pn)
    ref = bk.to_numpy(_unblocked(monkeypatch, lambda: rr.apply_rope(x, pos, rope)))
    monkeypatch.setattr(_blocks, "BLOCK_ELEMENTS", 64)
    _tables.clear_cache()
    y = bk.to_numpy(rr.apply_rope(x, pos, rope))
    np.testing.assert_array_equal(y, ref)  # NaN where NaN, same bits elsewhere
    x32 = xn.astype(np.float32)
    np.testing.assert_array_equal(y[hit], x32[hit])  # position 0: the identity
    assert not np.isfinite(y[(*other, 5)])
    assert not np.isfinite(y[(*other, 21)])  # the partner of channel 5
