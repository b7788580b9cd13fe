from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np


class Backend:
    """The protocol every adapter implements (see the package docstring)."""

    name: str = ""
    module: str = ""  # the import name whose presence makes the backend available
    dtypes: tuple[str, ...] = ("float16", "float32", "float64")
    lazy: bool = False  # arrays are lazy (Dask): no value reads inside rope_ref
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

    def version(self) -> str:
        from importlib.metadata import PackageNotFoundError, version

        dist = {"array_api_strict": "array-api-strict"}.get(self.module, self.module)
        try:
            return version(dist)
        except PackageNotFoundError:
            return "?"

    def from_numpy(self, a: np.ndarray, dtype: str | None = None) -> Any:
        raise NotImplementedError

    def to_numpy(self, x: Any) -> np.ndarray:
        raise NotImplementedError

    def synchronize(self) -> None:
        """Wait until queued device work is done (a no-op on the CPU)."""

    def dtype(self, name: str) -> Any:
        return getattr(self.xp, name)

    def __repr__(self) -> str:
        return f"<backend {self.name}>"
