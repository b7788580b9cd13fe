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
* ``compile(fn)``: ``fn`` under the library's tracing compiler (only where ``jit`` is declared).

Each adapter also *declares* what it supports, as class attributes (``_base.CAPABILITY_FIELDS``):
``library``, ``dtypes`` (the floating dtypes that work end to end), ``lazy``, ``jit``,
``mutable``, ``device_kinds``, ``float64_note``, ``extra`` (the pip extra), ``tox_env`` and
``notes``. That one declaration is rendered as the support table of ``docs/backends.md``
(:func:`support_table`, the ``backend-table`` directive of ``docs/_ext/rr_backends.py``) and is
what ``tests/test_backends.py`` verifies on every available backend, so the table cannot claim
what the tests do not check.

Select backends with the environment variable ``ROPE_REF_BACKENDS`` (comma-separated names;
default: all).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ._base import CANDIDATE_DTYPES, CAPABILITY_FIELDS, Backend
from ._cupy import CupyBackend
from ._dask import DaskBackend
from ._jax import JaxBackend
from ._numpy import NumpyBackend, ReadonlyNumpyBackend
from ._strict import StrictBackend
from ._torch import TorchBackend

__all__ = [
    "ALL",
    "CANDIDATE_DTYPES",
    "CAPABILITY_FIELDS",
    "Backend",
    "SupportRow",
    "available",
    "by_name",
    "selected",
    "support_table",
]

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


@dataclass(frozen=True)
class SupportRow:
    """One row of the support table: a backend's declaration plus what this machine has."""

    name: str
    library: str
    version: str | None  # None: not installed here
    available: bool
    reason: str  # why not available ("" when available)
    dtypes: tuple[str, ...]
    lazy: bool
    jit: bool
    mutable: bool
    device_kinds: tuple[str, ...]
    float64_note: str
    extra: str | None
    tox_env: str
    notes: str

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def support_table(which: tuple[Backend, ...] | list[Backend] | None = None) -> list[SupportRow]:
    """The support table, one row per backend (all of them by default), from the declarations.

    Versions and availability are those of the running interpreter; everything else is the
    adapters' declared capabilities, which ``tests/test_backends.py`` verifies.
    """
    rows = []
    for b in ALL if which is None else which:
        ok = b.is_available()
        rows.append(
            SupportRow(
                name=b.name,
                version=b.version(),
                available=ok,
                reason="" if ok else b.reason(),
                **b.capabilities(),
            )
        )
    return rows
