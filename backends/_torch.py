from __future__ import annotations

from typing import Any

import numpy as np

from ._base import Backend


class TorchBackend(Backend):
    """PyTorch on CUDA when present, else the CPU."""

    name = "torch"
    module = "torch"
    dists = ("torch",)
    library = "PyTorch"
    dtypes = ("float16", "bfloat16", "float32", "float64")
    device_kinds = ("cpu", "gpu")
    extra = "torch"
    tox_env = "torch"
    float64_note = "native (CUDA included; Apple MPS has none, so use the CPU there)"
    notes = (
        "On CUDA when a GPU is present, else the CPU; results stay on the input's device. "
        "bfloat16 is widened in torch itself, never through NumPy."
    )

    @property
    def xp(self) -> Any:
        import array_api_compat.torch as xp

        return xp

    @property
    def device(self) -> Any:
        import torch

        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def dtype(self, name: str) -> Any:
        import torch

        return getattr(torch, name)

    def from_numpy(self, a: np.ndarray, dtype: str | None = None) -> Any:
        import torch

        a = np.asarray(a)
        if dtype == "bfloat16":
            t = torch.from_numpy(np.array(a, dtype=np.float64, copy=True))
            return t.to(device=self.device, dtype=torch.bfloat16)
        t = torch.from_numpy(np.array(a, dtype=dtype, copy=True))
        return t.to(self.device)

    def to_numpy(self, x: Any) -> np.ndarray:
        import torch

        x = x.detach()
        if x.dtype == torch.bfloat16:
            x = x.to(torch.float32)  # exact widening
        return x.cpu().numpy()

    def synchronize(self) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
