from __future__ import annotations

from typing import Any

import numpy as np

from ._base import Backend


class JaxBackend(Backend):
    """JAX on its default device (the CPU here), with float64 enabled."""

    name = "jax"
    module = "jax"
    dists = ("jax",)
    library = "JAX"
    dtypes = ("float16", "bfloat16", "float32", "float64")
    jit = True
    mutable = False
    device_kinds = ("cpu", "gpu", "tpu")
    extra = "jax"
    tox_env = "jax"
    float64_note = (
        "needs jax_enable_x64 (setup() turns it on); without it the widest float is "
        "float32 and rope_ref computes in float32"
    )
    notes = (
        "Works eagerly and under jax.jit; traced values are not checked, and XLA may fuse "
        "multiply-adds so jitted cos/sin tables can differ from eager ones by 1 ulp."
    )

    def setup(self) -> None:
        import jax

        jax.config.update("jax_enable_x64", True)

    @property
    def xp(self) -> Any:
        self.setup()
        import jax.numpy as jnp

        return jnp

    @property
    def device(self) -> Any:
        import jax

        return jax.devices()[0]

    def from_numpy(self, a: np.ndarray, dtype: str | None = None) -> Any:
        import jax
        import jax.numpy as jnp

        self.setup()
        a = np.asarray(a)
        if dtype == "bfloat16":
            # rounded on the host by ml_dtypes (a JAX dependency): XLA's CPU convert from
            # float64 flushes bfloat16 subnormals to zero
            import ml_dtypes

            a = a.astype(ml_dtypes.bfloat16)
        elif dtype is not None:
            a = a.astype(dtype)
        return jax.device_put(jnp.asarray(a), self.device)

    def compile(self, fn: Any) -> Any:
        import jax

        self.setup()
        return jax.jit(fn)

    def to_numpy(self, x: Any) -> np.ndarray:
        import jax.numpy as jnp

        if x.dtype == jnp.bfloat16:
            x = x.astype(jnp.float32)
        return np.asarray(x)

    def synchronize(self) -> None:
        import jax

        jax.effects_barrier()
