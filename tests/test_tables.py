"""Table building (rope_ref/_tables.py) and the CPU block plan (rope_ref/_blocks.py): the
cache's byte count follows the dtype, and one knob sets every block size."""

from __future__ import annotations

import numpy as np
import pytest

import rope_ref as rr
from rope_ref import _blocks, _compat, _exact, _tables


@pytest.mark.parametrize(
    "dtype", ["float16", "float32", "float64", "complex64", "complex128", "int8", "int64", "bool"]
)
def test_nbytes_follows_the_dtype(bk, dtype):
    # the cache limit counts bytes from the element size of the actual dtype (float32 work on
    # libraries without float64 is half a float64 table), checked against NumPy's nbytes
    if dtype.startswith("float") and dtype not in bk.dtypes:
        pytest.skip(f"{bk.name} has no {dtype}")
    try:
        a = bk.from_numpy(np.zeros((3, 5, 7), dtype=dtype))
    except Exception as exc:  # a library without this dtype
        pytest.skip(f"{bk.name}: {type(exc).__name__}: {exc}")
    xp = _compat.array_namespace(a=a)
    want = bk.to_numpy(a).nbytes  # the dtype the library really holds (JAX without x64)
    assert _tables._nbytes(xp, a) == want
    assert want == 105 * np.dtype(str(bk.to_numpy(a).dtype)).itemsize


def test_one_knob_sets_every_block_size(monkeypatch):
    x = np.zeros(4)
    library = _blocks.block_plan(x)
    assert library is not None and library.threads >= 1
    monkeypatch.setattr(_blocks, "BLOCK_ELEMENTS", 640)
    plan = _blocks.block_plan(x)
    assert (plan.table, plan.apply, plan.threads) == (640, 640, library.threads)
    monkeypatch.setattr(_blocks, "BLOCK_ELEMENTS", None)
    assert _blocks.block_plan(x) == library


def test_knob_drives_the_table_blocks(monkeypatch):
    # 64 pairs and 640 elements per block: 10 positions per block, so 95 positions take 10
    # calls of the exact kernel (the last one ragged); unset, one call for so few positions
    calls = []
    real = _exact.exact_cos_sin

    def spy(xp, m, *a, **k):
        calls.append(int(m.shape[0]))
        return real(xp, m, *a, **k)

    monkeypatch.setattr(_exact, "exact_cos_sin", spy)
    rope = rr.Rope(128, base=5e5)
    pos = np.arange(95) * 1_000_003
    whole = rope.cos_sin(pos)
    assert calls == [95]
    calls.clear()
    monkeypatch.setattr(_blocks, "BLOCK_ELEMENTS", 640)
    blocked = rope.cos_sin(pos)
    assert calls == [10] * 9 + [5]
    for b, w in zip(blocked, whole, strict=True):
        np.testing.assert_array_equal(b, w)


def test_no_block_plan_for_lazy_or_traced_arrays(bk):
    x = bk.from_numpy(np.zeros(4))
    plan = _blocks.block_plan(x)
    if bk.lazy or bk.name.startswith("jax"):
        assert plan is None  # Dask's chunks and XLA's fusion are the library's own
    elif bk.name.startswith(("numpy", "strict", "torch")):
        assert plan is not None


def test_delegating_names_keep_working():
    # private names other modules still reach during the move: the same function, same bits
    rope = rr.Rope(16)
    pos = np.arange(7)
    wd = np.float64
    a = rope._cos_sin_work(np, pos, wd, integral=True, seq_len=None)
    b = _tables.build(rope, np, pos, wd, integral=True, seq_len=None)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert _exact.exact_cos_sin_blocked is _tables.blocked_cos_sin
    assert _compat.block_plan is _blocks.block_plan
