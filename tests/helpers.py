"""Small helpers shared by the tests (no assertions hidden here)."""

from __future__ import annotations

import numpy as np


def ulps(actual: np.ndarray, desired: np.ndarray) -> np.ndarray:
    """|actual - desired| in ulps of desired (float64)."""
    actual = np.asarray(actual, dtype=np.float64)
    desired = np.asarray(desired, dtype=np.float64)
    unit = np.where(desired == 0, np.spacing(0.0), np.spacing(np.abs(desired)))
    return np.abs(actual - desired) / unit


def rope_numpy_formula(x, cos, sin, layout, rotary_dim):
    """An independent float64 NumPy assembly of eq. (34) from given tables, by explicit index
    loops over pairs (used to check the library's slicing, stacking and pass-through)."""
    x = np.asarray(x, dtype=np.float64)
    y = x.copy()
    h = rotary_dim // 2
    for j in range(h):
        a, b = (j, j + h) if layout == "half" else (2 * j, 2 * j + 1)
        c, s = cos[..., j], sin[..., j]
        y[..., a] = x[..., a] * c - x[..., b] * s
        y[..., b] = x[..., b] * c + x[..., a] * s
    return y
