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


def test_knob_drives_the_rotation_blocks(monkeypatch):
    from rope_ref import _apply

    calls = []
    real = _apply._apply_blocked
    monkeypatch.setattr(_apply, "_apply_blocked", lambda *a: calls.append(a[6]) or real(*a))
    x = np.random.default_rng(0).standard_normal((4, 10, 16))
    whole = rr.apply_rope(x, np.arange(10), rr.Rope(16))
    assert calls == []  # 640 elements: one pass under every library plan
    monkeypatch.setattr(_blocks, "BLOCK_ELEMENTS", 64)
    blocked = rr.apply_rope(x, np.arange(10), rr.Rope(16))
    assert calls == [64]
    np.testing.assert_array_equal(blocked, whole)


def test_no_block_plan_for_lazy_or_traced_arrays(bk):
    x = bk.from_numpy(np.zeros(4))
    plan = _blocks.block_plan(x)
    if bk.lazy or bk.name.startswith("jax"):
        assert plan is None  # Dask's chunks and XLA's fusion are the library's own
    elif bk.name.startswith(("numpy", "strict", "torch")):
        assert plan is not None


def test_tables_are_built_only_in_tables():
    # one builder: Rope is the specification (no table building left on it), _exact keeps
    # the kernels (no blocking), _compat only wraps array-api-compat (no block plan)
    assert not hasattr(rr.Rope, "_cos_sin_work")
    assert not hasattr(_exact, "exact_cos_sin_blocked")
    assert not hasattr(_exact, "BLOCK_ELEMENTS")
    assert not any(hasattr(_compat, n) for n in ("block_plan", "BlockPlan", "run_blocks"))


@pytest.mark.parametrize(
    "rope",
    [
        rr.Rope(64, scaling=rr.scaling.YaRN(4.0, 64)),
        rr.Rope(128, scaling=rr.scaling.YaRN(4.0, 64), axes=rr.scaling.MRope((16, 24, 24))),
        rr.Rope.preset("llama-3.1-8b"),
    ],
    ids=["yarn", "mrope-yarn", "preset"],
)
def test_rope_is_a_picklable_specification(rope):
    import pickle

    back = pickle.loads(pickle.dumps(rope))
    assert back == rope and hash(back) == hash(rope) and repr(back) == repr(rope)
    pos = np.arange(5) if rope.axis_scheme is None else np.tile(np.arange(5), (3, 1))
    for a, b in zip(back.cos_sin(pos), rope.cos_sin(pos), strict=True):
        np.testing.assert_array_equal(a, b)
