"""One small adapter per array library, for tests, tox envs and benchmarks.

The library (``rope_ref``) never uses this package. Every adapter has the same short protocol:

* ``name``: the tag used in test ids and in ``ROPE_REF_BACKENDS`` (e.g. ``"torch"``).
* ``is_available()``: whether the library (and, for CuPy, a GPU) is present; ``reason()`` says
  why not.
* ``xp``: the Array-API namespace (compat-wrapped where the library needs it); ``device``.
* ``from_numpy(a, dtype=None)``: a new array on ``device``; ``dtype`` is a name
  (``"float32"``, ``"bfloat16"``, ...). ``to_numpy(x)``: back to NumPy (bfloat16 widened to
  float32, exactly).
* ``setup()``: one-time configuration (float64 on JAX). ``synchronize()``: wait for the device.
* ``dtypes``: the floating dtype names this backend supports.

Select backends with the environment variable ``ROPE_REF_BACKENDS`` (comma-separated names;
default: all).
"""

from __future__ import annotations

import os

from ._base import Backend
from ._cupy import CupyBackend
from ._dask import DaskBackend
from ._jax import JaxBackend
from ._numpy import NumpyBackend, ReadonlyNumpyBackend
from ._strict import StrictBackend
from ._torch import TorchBackend

__all__ = ["ALL", "Backend", "available", "by_name", "selected"]

#: Every adapter, in the order tests list them.
ALL: tuple[Backend, ...] = (
    NumpyBackend(),
    ReadonlyNumpyBackend(),
    StrictBackend(),
    TorchBackend(),
    JaxBackend(),
    DaskBackend(),
    CupyBackend(),
)


def by_name(name: str) -> Backend:
    for b in ALL:
        if b.name == name:
            return b
    raise KeyError(f"unknown backend {name!r}; known: {[b.name for b in ALL]}")


def selected() -> list[Backend]:
    """The backends named in ROPE_REF_BACKENDS (all of them when unset or empty)."""
    raw = os.environ.get("ROPE_REF_BACKENDS", "").strip()
    if not raw or raw == "all":
        return list(ALL)
    return [by_name(n.strip()) for n in raw.split(",") if n.strip()]


def available() -> list[Backend]:
    return [b for b in selected() if b.is_available()]
