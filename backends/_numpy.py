from __future__ import annotations

from typing import Any

import numpy as np

from ._base import Backend


class NumpyBackend(Backend):
    name = "numpy"
    module = "numpy"

    @property
    def xp(self) -> Any:
        import array_api_compat.numpy as xp

        return xp

    @property
    def device(self) -> Any:
        return "cpu"

    def from_numpy(self, a: np.ndarray, dtype: str | None = None) -> Any:
        return np.array(a, dtype=dtype, copy=True)

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)


class ReadonlyNumpyBackend(NumpyBackend):
    """NumPy arrays that cannot be written to: any in-place write into an input raises."""

    name = "numpy-readonly"

    def from_numpy(self, a: np.ndarray, dtype: str | None = None) -> Any:
        out = np.array(a, dtype=dtype, copy=True)
        out.flags.writeable = False
        return out
