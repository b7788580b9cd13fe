from __future__ import annotations

from typing import Any

import numpy as np

from ._base import Backend


class CupyBackend(Backend):
    """CuPy on the current GPU; unavailable (with the reason) when there is no GPU."""

    name = "cupy"
    module = "cupy"
    dists = ("cupy-cuda12x", "cupy-cuda13x", "cupy-cuda11x", "cupy")
    library = "CuPy"
    device_kinds = ("gpu",)
    extra = "cupy"
    tox_env = "cupy"
    notes = (
        "Needs a CUDA GPU (the tox env cupy skips every test with the reason without one); "
        "results stay on the current device."
    )

    def is_available(self) -> bool:
        import importlib.util

        if importlib.util.find_spec("cupy") is None:
            return False
        try:
            import cupy

            return bool(cupy.cuda.runtime.getDeviceCount() > 0)
        except Exception:
            return False

    def reason(self) -> str:
        import importlib.util

        if importlib.util.find_spec("cupy") is None:
            return "cupy is not installed"
        return "cupy is installed but no CUDA GPU is usable"

    @property
    def xp(self) -> Any:
        import array_api_compat.cupy as xp

        return xp

    @property
    def device(self) -> Any:
        import cupy

        return cupy.cuda.Device()

    def from_numpy(self, a: np.ndarray, dtype: str | None = None) -> Any:
        import cupy

        return cupy.asarray(np.array(a, dtype=dtype, copy=True))

    def to_numpy(self, x: Any) -> np.ndarray:
        import cupy

        return cupy.asnumpy(x)

    def synchronize(self) -> None:
        import cupy

        cupy.cuda.Device().synchronize()
