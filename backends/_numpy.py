from __future__ import annotations

from typing import Any

import numpy as np

from ._base import Backend


class NumpyBackend(Backend):
    name = "numpy"
    module = "numpy"
    dists = ("numpy",)
    library = "NumPy"
    tox_env = "numpy"
    notes = (
        "The default namespace: rope_ref's own NumPy results (inv_freq() without xp, "
        "the battery's expected values) are of this kind. No bfloat16 (NumPy has none)."
    )

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
    mutable = False
    notes = (
        "NumPy arrays with writeable=False: any write into an input raises, which proves "
        "rope_ref never modifies its arguments."
    )

    def from_numpy(self, a: np.ndarray, dtype: str | None = None) -> Any:
        out = np.array(a, dtype=dtype, copy=True)
        out.flags.writeable = False
        return out
