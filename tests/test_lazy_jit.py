"""jax.jit and Dask: no Python branching on array values, no hidden compute()."""

from __future__ import annotations

import numpy as np
import pytest

import rope_ref as rr

ROUTES = [rr.apply_rope, rr.apply_rope_complex, rr.apply_rope_matrix]


@pytest.mark.parametrize("route", ROUTES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_under_jax_jit(route, layout):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    rope = rr.Rope(16, rotary_dim=12, layout=layout, base=5e5)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 16)).astype(np.float32)
    pos = rng.integers(-(2**40), 2**40, size=5)
    f = jax.jit(lambda a, p: route(a, p, rope))
    got = np.asarray(f(jnp.asarray(x), jnp.asarray(pos)))
    # float32 output, the rounded float64 result: compare with NumPy eager exactly
    want = route(x, pos, rope)
    np.testing.assert_array_equal(got, want)
    # float positions take the fractional path, still jittable
    got_f = np.asarray(f(jnp.asarray(x), jnp.asarray(pos.astype(np.float64) + 0.25)))
    np.testing.assert_array_equal(got_f, route(x, pos.astype(np.float64) + 0.25, rope))


def test_cos_sin_and_matrix_under_jax_jit():
    # XLA may fuse multiply-adds inside the polynomial kernels, so jitted tables can differ
    # from eager ones in the last bit; they must still be within one ulp of mpmath.
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import mpmath_reference
    from _helpers import MPMATH_REF as REF
    from _helpers import mpmath_ref as _ref

    rope = rr.Rope(128, base=5e5)
    pos = REF["positions"]
    c, s = jax.jit(rope.cos_sin)(jnp.asarray(pos))
    for got, name in ((c, "cos"), (s, "sin")):
        hi, lo = _ref(128, 5e5, name)
        assert mpmath_reference.ulp_errors(np.asarray(got), hi, lo).max() < 1.0
    eager = rope.cos_sin(pos)
    assert np.abs(np.asarray(c) - eager[0]).max() <= 2.0**-53
    m = jax.jit(lambda p: rr.rotation_matrix(rope, p))(jnp.asarray(pos[:3]))
    np.testing.assert_allclose(
        np.asarray(m), rr.rotation_matrix(rope, pos[:3]), rtol=0, atol=2.0**-53
    )


def test_jax_gradient_through_apply_rope():
    # The rotation is linear in x: its VJP is the rotation by -m.
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    rope = rr.Rope(8)
    pos = jnp.arange(3)
    g = np.random.default_rng(1).standard_normal((3, 8))
    _, vjp = jax.vjp(lambda a: rr.apply_rope(a, pos, rope), jnp.zeros((3, 8)))
    (got,) = vjp(jnp.asarray(g))
    want = rr.apply_rope(g, -np.arange(3), rope)
    np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=1e-15)


class _NoCompute:
    """A Dask scheduler that fails on any compute (array-api-extra's lazy_xp_function idea)."""

    def __call__(self, dsk, keys, **kwargs):
        raise AssertionError("rope_ref called compute() on a Dask array")


@pytest.mark.parametrize("route", ROUTES, ids=lambda f: f.__name__)
def test_dask_stays_lazy(route):
    da = pytest.importorskip("dask.array")
    import dask

    rope = rr.Rope(16, rotary_dim=8, layout="interleaved")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 6, 16))
    pos = rng.integers(0, 1 << 30, size=6)
    xd = da.from_array(x, chunks=(2, 3, 16))
    pd = da.from_array(pos, chunks=3)
    with dask.config.set(scheduler=_NoCompute()):
        y = route(xd, pd, rope)
        c, _s = rope.cos_sin(pd.astype(np.float64) + 0.5)
    assert isinstance(y, da.Array) and isinstance(c, da.Array)
    np.testing.assert_array_equal(y.compute(), route(x, pos, rope))
    np.testing.assert_array_equal(c.compute(), rope.cos_sin(pos + 0.5)[0])


def test_dask_value_checks_are_skipped_not_computed():
    # Lazy positions cannot be inspected without computing; the checks that need values are
    # skipped (documented) and NaN positions give NaN rows instead of an error.
    da = pytest.importorskip("dask.array")
    import dask

    pd = da.from_array(np.array([0.0, np.nan, 2.0]), chunks=2)
    with dask.config.set(scheduler=_NoCompute()):
        c, _ = rr.Rope(4).cos_sin(pd)
    got = c.compute()
    assert np.isnan(got[1]).all() and np.isfinite(got[[0, 2]]).all()
