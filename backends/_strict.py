from __future__ import annotations

from typing import Any

import numpy as np

from ._base import Backend


class StrictBackend(Backend):
    """array-api-strict at its strictest: passing here proves the code is pure Array API."""

    name = "strict"
    module = "array_api_strict"
    dists = ("array-api-strict",)
    library = "array-api-strict"
    dtypes = ("float32", "float64")
    extra = "strict"
    tox_env = "strict"
    notes = (
        "Only what the Array API standard (2024.12) allows: passing here proves the code "
        "is pure Array API. The standard has no float16 or bfloat16."
    )

    def setup(self) -> None:
        import array_api_strict

        array_api_strict.set_array_api_strict_flags(api_version="2024.12")

    @property
    def xp(self) -> Any:
        import array_api_strict

        return array_api_strict

    @property
    def device(self) -> Any:
        return self.xp.Device("CPU_DEVICE")

    def from_numpy(self, a: np.ndarray, dtype: str | None = None) -> Any:
        xp = self.xp
        a = np.asarray(a)
        dt = getattr(xp, dtype or a.dtype.name)
        if a.size == 0:  # tolist() cannot carry the shape of an empty array
            return xp.zeros(a.shape, dtype=dt, device=self.device)
        return (
            xp.asarray(a.tolist(), dtype=dt, device=self.device)
            if a.ndim
            else xp.asarray(a.item(), dtype=dt, device=self.device)
        )

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)
