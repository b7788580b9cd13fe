"""Determinism and thread safety: the same inputs give the same bits, concurrently or not."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

import rope_ref as rr
from rope_ref import _exact, _tables


def _work(rope, x, pos):
    return rr.apply_rope(x, pos, rope), rope.cos_sin(pos), rope.inv_freq(dtype=np.float32)


def test_repeatable_bits(bk):
    rng = np.random.default_rng(3)
    x = bk.from_numpy(rng.standard_normal((2, 9, 32)))
    pos = bk.from_numpy(rng.integers(0, 2**31, size=9))
    rope = rr.Rope(32, base=5e5, rotary_dim=24)
    first = bk.to_numpy(rr.apply_rope(x, pos, rope))
    for _ in range(3):
        np.testing.assert_array_equal(bk.to_numpy(rr.apply_rope(x, pos, rope)), first)


def _run_threads(cold: bool):
    rng = np.random.default_rng(4)
    ropes = [
        rr.Rope(d, base=b, layout=lay)
        for d in (16, 32, 64)
        for b in (1e4, 5e5)
        for lay in ("half", "interleaved")
    ] + [rr.Rope(32, scaling=rr.scaling.YaRN(4.0, 64)), rr.Rope(32, scaling=rr.scaling.Linear(2.0))]
    xs = {r: rng.standard_normal((3, 7, r.head_dim)) for r in ropes}
    pos = rng.integers(0, 2**31, size=7)
    single = {r: _work(r, xs[r], pos) for r in ropes}
    if cold:
        _exact.angle_table.cache_clear()
        _tables._unscaled_thetas.cache_clear()
        _tables._scaled_thetas.cache_clear()
        _tables._rounded.cache_clear()
        _tables.clear_cache()
    # more distinct tables than the table cache holds, so threads also evict each other's
    jobs = [ropes[i % len(ropes)] for i in range(64)]
    assert len(ropes) > _tables.CACHE_ENTRIES
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda r: (r, _work(r, xs[r], pos)), jobs))
    for r, (y, (c, s), inv) in results:
        y0, (c0, s0), inv0 = single[r]
        np.testing.assert_array_equal(inv, inv0)
        np.testing.assert_array_equal(y, y0)
        np.testing.assert_array_equal(c, c0)
        np.testing.assert_array_equal(s, s0)


def test_eight_threads_warm_caches():
    _run_threads(cold=False)


def test_eight_threads_cold_caches():
    _run_threads(cold=True)
