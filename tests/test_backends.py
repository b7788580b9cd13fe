"""The backend adapters themselves: round trips, dtypes, read-only arrays."""

from __future__ import annotations

import numpy as np
import pytest

import backends
import rope_ref as rr

#: (significand bits, smallest normal exponent, largest exponent) of each candidate dtype
_FORMATS = {
    "float16": (11, -14, 15),
    "bfloat16": (8, -126, 127),
    "float32": (24, -126, 127),
    "float64": (53, -1022, 1023),
}


def _representable(name: str) -> np.ndarray:
    """Values exactly representable in ``name``, built from their bits' meaning (integer
    significands times powers of two, in float64), spanning the dtype's whole range: the
    extremes, the smallest subnormal, signed zeros, infinities, NaN, random significands."""
    p, emin, emax = _FORMATS[name]
    rng = np.random.default_rng(7)
    sig = rng.integers(2 ** (p - 1), 2**p, size=64, dtype=np.int64).astype(np.float64)
    exps = rng.integers(emin, emax + 1, size=64)
    vals = [np.ldexp(sig, exps - (p - 1)) * rng.choice([-1.0, 1.0], size=64)]
    largest = np.ldexp(2.0**p - 1, emax - (p - 1))
    vals.append(np.array([largest, -largest, 2.0**emin, 2.0 ** (emin - (p - 1)), 1.0, -1.5]))
    vals.append(np.array([0.0, -0.0, np.inf, -np.inf, np.nan]))
    return np.concatenate(vals).reshape(5, 15)


def test_representable_values_are_representable():
    # the construction above is checked against NumPy's own conversions where NumPy has them
    for name in ("float16", "float32", "float64"):
        a = _representable(name)
        np.testing.assert_array_equal(a.astype(name).astype(np.float64), a)
        assert np.array_equal(np.signbit(a.astype(name)), np.signbit(a))
    # bfloat16 is float32's top 16 bits: the low 16 bits of every value are zero
    b = _representable("bfloat16")
    assert not np.any(b.astype(np.float32).view(np.uint32) & 0xFFFF)
    np.testing.assert_array_equal(b.astype(np.float32).astype(np.float64), b)


def test_roundtrip(bk):
    # every declared dtype: from_numpy then to_numpy returns every representable value
    # exactly (and the sign of zero), in an array of that dtype
    for name in bk.dtypes:
        a = _representable(name)
        x = bk.from_numpy(a, name)
        assert x.dtype == bk.dtype(name), (name, x.dtype)
        back = np.asarray(bk.to_numpy(x))
        assert back.shape == a.shape
        got = back.astype(np.float64)
        np.testing.assert_array_equal(got, a, err_msg=f"{bk.name} {name}")
        assert np.array_equal(np.signbit(got), np.signbit(a)), (bk.name, name)
    bk.synchronize()


def test_readonly_backend_blocks_writes():
    b = backends.by_name("numpy-readonly")
    x = b.from_numpy(np.zeros(3))
    with pytest.raises(ValueError, match="read-only"):
        x[0] = 1.0


def test_selection_by_environment(monkeypatch):
    monkeypatch.setenv("ROPE_REF_BACKENDS", "numpy,strict")
    assert [b.name for b in backends.selected()] == ["numpy", "strict"]
    monkeypatch.setenv("ROPE_REF_BACKENDS", "")
    assert len(backends.selected()) == len(backends.ALL)
    with pytest.raises(KeyError, match="unknown backend"):
        backends.by_name("tensorflow")


# ---------------------------------------------------------------- the capability declaration
# Each adapter declares what it supports (backends/_base.py, CAPABILITY_FIELDS); the docs render
# that declaration as the support table (docs/backends.md). The tests below check, on every
# available backend, that each declared capability really holds, so the table cannot drift.


def _probe_dtype(bk, name: str) -> str | None:
    """None when ``name`` works end to end on ``bk`` (from_numpy, rope_ref in that dtype,
    to_numpy), else why not."""
    rope = rr.Rope(8, base=100.0)
    a = np.random.default_rng(3).integers(-8, 8, size=(3, 8)) / 4.0  # exact in every dtype
    pos = np.arange(3)
    try:
        x = bk.from_numpy(a, name)
        if x.dtype != bk.dtype(name):
            return f"from_numpy gave {x.dtype}"
        y = rr.apply_rope(x, bk.from_numpy(pos), rope)
        if y.dtype != x.dtype:
            return f"apply_rope returned {y.dtype}"
        got = bk.to_numpy(y).astype(np.float64)
    except Exception as exc:  # the library lacks the dtype, or rope_ref refuses it
        return f"{type(exc).__name__}: {exc}"
    u = rr.testing.unit_roundoff(name)
    want = rr.apply_rope(a, pos, rope)
    if not np.all(np.abs(got - want) <= u * np.abs(want) + u):  # one rounding of the exact value
        return "values are not the exact result rounded once"
    return None


def test_declared_dtypes_are_exactly_those_that_work(bk):
    assert set(bk.dtypes) <= set(backends.CANDIDATE_DTYPES)
    for name in backends.CANDIDATE_DTYPES:
        why = _probe_dtype(bk, name)
        if name in bk.dtypes:
            assert why is None, f"{bk.name} declares {name} but: {why}"
        else:
            assert why is not None, f"{bk.name} supports {name} but does not declare it"


def test_declared_laziness(bk):
    from rope_ref import _compat

    rope = rr.Rope(8)
    x = bk.from_numpy(np.ones((3, 8)))
    y = rr.apply_rope(x, bk.from_numpy(np.arange(3)), rope)
    assert _compat.is_concrete(y) is (not bk.lazy)
    # value checks need values: a lazy backend defers them, an eager one raises at once
    bad = bk.from_numpy(np.array([0.0, np.nan, 1.0]))
    if bk.lazy:
        rr.apply_rope(x, bad, rope)
        with pytest.raises(ValueError, match="seq_len is required"):
            rr.apply_rope(x, bk.from_numpy(np.arange(3)), rr.Rope(8, scaling=_dynamic()))
    else:
        with pytest.raises(ValueError, match="finite"):
            rr.apply_rope(x, bad, rope)


def _dynamic():
    from rope_ref import scaling

    return scaling.DynamicNTK(2.0, 2)


def test_declared_jit(bk):
    from rope_ref import _compat

    rope = rr.Rope(16, rotary_dim=12, base=5e5)
    traced = []

    def fn(a, p):
        traced.append(_compat.is_concrete(a))
        return rr.apply_rope(a, p, rope)

    if not bk.jit:
        with pytest.raises(NotImplementedError, match="declares no jit"):
            bk.compile(fn)
        return
    x = np.random.default_rng(0).standard_normal((2, 5, 16)).astype(np.float32)
    pos = np.random.default_rng(1).integers(-(2**40), 2**40, size=5)
    got = bk.to_numpy(bk.compile(fn)(bk.from_numpy(x), bk.from_numpy(pos)))
    assert traced == [False]  # ran once, on tracers
    np.testing.assert_array_equal(got, rr.apply_rope(x, pos, rope))


def test_declared_mutability(bk):
    x = bk.from_numpy(np.zeros(3))
    if bk.mutable:
        x[0] = 1.0
        np.testing.assert_array_equal(bk.to_numpy(x), [1.0, 0.0, 0.0])
    else:
        with pytest.raises((TypeError, ValueError)):
            x[0] = 1.0


def _device_kind(device) -> str:
    s = str(device).lower()
    return "gpu" if ("cuda" in s or "gpu" in s) else ("tpu" if "tpu" in s else "cpu")


def test_declared_devices(bk):
    from rope_ref import _compat

    assert _device_kind(bk.device) in bk.device_kinds
    x = bk.from_numpy(np.ones((3, 8)), bk.dtypes[-1])
    y = rr.apply_rope(x, bk.from_numpy(np.arange(3)), rr.Rope(8))
    assert _compat.device_of(y) == _compat.device_of(x)  # results stay on the input's device
    bk.synchronize()


def test_declared_float64(bk):
    # rope_ref computes in the widest float of the namespace: float64 where declared
    cos, _ = rr.Rope(8).cos_sin(bk.from_numpy(np.arange(4)))
    widest = "float64" if "float64" in bk.dtypes else "float32"
    assert cos.dtype == bk.dtype(widest)
    assert bk.float64_note


def test_declared_extras_and_tox_envs():
    import configparser
    import re

    import tomllib
    from _helpers import ROOT

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(ROOT / "tox.ini")
    env_of = {}
    for line in tox["testenv"]["set_env"].splitlines():
        m = re.match(r"\s*(\w+):\s*ROPE_REF_BACKENDS\s*=\s*(\S+)", line)
        if m:
            for name in m.group(2).split(","):
                env_of[name] = m.group(1)
    for b in backends.ALL:
        assert env_of.get(b.name) == b.tox_env, b.name
        if b.extra is None:
            assert b.module in ("numpy",)  # a core dependency
        else:
            reqs = " ".join(extras[b.extra])
            assert b.dists[-1].split("-cuda")[0] in reqs or b.dists[0] in reqs, (b.name, reqs)
    assert set(env_of) == {b.name for b in backends.ALL}


def test_support_table_is_the_declaration():
    rows = backends.support_table()
    assert [r.name for r in rows] == [b.name for b in backends.ALL]
    for row, b in zip(rows, backends.ALL, strict=True):
        assert {k: getattr(row, k) for k in backends.CAPABILITY_FIELDS} == b.capabilities()
        assert row.available == b.is_available()
        assert (row.reason == "") == row.available
        if row.available:
            assert row.version is not None
        assert row.library and row.notes and row.tox_env


@pytest.mark.needs(eager=True)
def test_xp_fixture_and_needs_marker(bk, xp):
    # the xp fixture is the adapter's namespace; needs(eager=True) skipped the lazy backends
    assert xp is bk.xp and not bk.lazy
    x = np.random.default_rng(4).standard_normal((3, 8))
    got = rr.apply_rope(xp.asarray(x), xp.asarray(np.arange(3)), rr.Rope(8))
    np.testing.assert_array_equal(bk.to_numpy(got), rr.apply_rope(x, np.arange(3), rr.Rope(8)))
