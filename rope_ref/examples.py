"""Two implementations to try ``rope-ref check`` on (NumPy, ``fn(x, positions, rope)``).

* :func:`exact` - rope_ref itself: passes every case.
* :func:`float32_angles` - the classic kernel: ``positions * inv_freq`` and cos/sin in float32
  (what Hugging Face computes under autocast-free float32). It passes the float32 cases in
  the accuracy class "lower-precision angles" (the error model allows each pair the phase
  error of float32 angles, position * theta'_j * (|ln theta'_j| + 6) * 2**-24), fails them
  under ``--strict`` (the "exact" class only), and fails float64 cases at large positions,
  where that phase error dwarfs float64 rounding; the check diagnoses "angles formed in
  float32".

    rope-ref check rope_ref.examples:exact --dtype float32 float64
    rope-ref check rope_ref.examples:float32_angles --dtype float64 --no-presets
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._apply import apply_rope
from ._rope import Rope
from ._rotate import rotate
from ._typing import Array
from .testing._diagnose import low_precision_cos_sin

__all__ = ["exact", "float32_angles"]


def exact(x: Array, positions: Array, rope: Rope) -> Any:
    """The reference itself."""
    return apply_rope(x, positions, rope)


def float32_angles(x: Array, positions: Array, rope: Rope) -> Any:
    """RoPE with angles and tables in float32, the arithmetic in x's dtype (NumPy only).

    What sets it apart from the reference is the tables: ``positions * inv_freq``, cos and
    sin in float32. The rotation itself, ``y_a = c x_a - s x_b``, ``y_b = c x_b + s x_a``
    (RoFormer eq. 34), is rope_ref's rotation kernel run in x's dtype instead of float64.
    """
    c32, s32 = low_precision_cos_sin(rope, positions)  # positions * inv_freq in float32
    x = np.asarray(x)
    cos, sin = c32.astype(x.dtype), s32.astype(x.dtype)
    return rotate(
        np, x, cos, sin, rotary_dim=rope.rotary_dim, layout=rope.layout,
        offset=rope.rotary_offset, wd=x.dtype,
    )  # fmt: skip
