from __future__ import annotations

from typing import Any

import numpy as np

from ._base import Backend


class DaskBackend(Backend):
    """dask.array (lazy; chunked along the first axis so graphs have several tasks)."""

    name = "dask"
    module = "dask"
    dists = ("dask",)
    library = "Dask (dask.array)"
    lazy = True
    extra = "dask"
    tox_env = "dask"
    notes = (
        "Lazy: rope_ref builds the graph and computes nothing. Dynamic schedules "
        "(DynamicNTK, LongRoPE) need an explicit seq_len, since max(positions) would be a compute."
    )

    def is_available(self) -> bool:
        import importlib.util

        return importlib.util.find_spec("dask") is not None and (
            importlib.util.find_spec("dask.array") is not None
        )

    @property
    def xp(self) -> Any:
        import array_api_compat.dask.array as xp

        return xp

    @property
    def device(self) -> Any:
        return "cpu"

    def dtype(self, name: str) -> Any:
        import numpy as np

        return getattr(self.xp, name, None) or np.dtype(name)

    def from_numpy(self, a: np.ndarray, dtype: str | None = None) -> Any:
        import dask.array as da

        a = np.array(a, dtype=dtype, copy=True)
        chunks = tuple(max(1, (s + 1) // 2) for s in a.shape) if a.ndim else ()
        return da.from_array(a, chunks=chunks or -1)

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x.compute())
