from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np

#: The floating dtypes a backend may declare, in the order tables list them.
CANDIDATE_DTYPES = ("float16", "bfloat16", "float32", "float64")


class Backend:
    """The protocol every adapter implements (see the package docstring).

    The class attributes below ``name`` are the backend's *capability declaration*: the docs
    render them as the support table (``docs/backends.md``, ``backend-table`` directive) and
    ``tests/test_backends.py`` checks, on every available backend, that each one holds.
    """

    name: str = ""
    module: str = ""  # the import name whose presence makes the backend available
    #: distribution names whose installed version is reported (first one found)
    dists: tuple[str, ...] = ()
    #: the array library, as people name it
    library: str = ""
    #: the floating dtypes that work end to end: from_numpy, rope_ref in that dtype, to_numpy
    dtypes: tuple[str, ...] = ("float16", "float32", "float64")
    #: arrays are lazy (Dask): rope_ref builds a graph, reads no values, skips value checks
    lazy: bool = False
    #: rope_ref runs inside the library's tracing compiler (``compile(fn)`` gives it)
    jit: bool = False
    #: the adapter's arrays accept item assignment (``x[0] = 1.0``)
    mutable: bool = True
    #: kinds of device the adapter's arrays may live on ("cpu", "gpu", "tpu")
    device_kinds: tuple[str, ...] = ("cpu",)
    #: what float64 needs (rope_ref computes in the widest float of the namespace)
    float64_note: str = "native"
    #: the ``pip install rope-ref[EXTRA]`` extra that installs the library (None: a dependency)
    extra: str | None = None
    #: the tox environment that runs the test suite on this backend
    tox_env: str = ""
    #: what else a user should know, one sentence or two
    notes: str = ""
    _ready = False

    def is_available(self) -> bool:
        return importlib.util.find_spec(self.module) is not None

    def reason(self) -> str:
        return f"{self.module} is not installed"

    def setup(self) -> None:
        """One-time configuration; idempotent."""

    @property
    def xp(self) -> Any:
        raise NotImplementedError

    @property
    def device(self) -> Any:
        return None

    def version(self) -> str | None:
        """The installed version of the library, or None when it is not installed."""
        from importlib.metadata import PackageNotFoundError, version

        if importlib.util.find_spec(self.module) is None:
            return None
        for dist in self.dists or (self.module,):
            try:
                return version(dist)
            except PackageNotFoundError:
                continue
        return "?"

    def from_numpy(self, a: np.ndarray, dtype: str | None = None) -> Any:
        raise NotImplementedError

    def to_numpy(self, x: Any) -> np.ndarray:
        raise NotImplementedError

    def synchronize(self) -> None:
        """Wait until queued device work is done (a no-op on the CPU)."""

    def compile(self, fn: Any) -> Any:
        """``fn`` compiled by the library's tracer (backends that declare ``jit``)."""
        raise NotImplementedError(f"backend {self.name} declares no jit")

    def dtype(self, name: str) -> Any:
        return getattr(self.xp, name)

    def capabilities(self) -> dict[str, Any]:
        """The declaration as a dict (field name -> value), in table order."""
        return {field: getattr(self, field) for field in CAPABILITY_FIELDS}

    def __repr__(self) -> str:
        return f"<backend {self.name}>"


#: The declared fields, in the order the support table shows them.
CAPABILITY_FIELDS = (
    "library",
    "dtypes",
    "lazy",
    "jit",
    "mutable",
    "device_kinds",
    "float64_note",
    "extra",
    "tox_env",
    "notes",
)
