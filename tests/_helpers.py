"""Small helpers shared by the tests (no assertions hidden here): paths, an ulp measure,
an independent assembly of the rotation, and the float32/bfloat16 kernels the error-model and
diagnosis tests build on. Test modules import from here, never from each other or conftest."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from rope_ref import scaling as S

#: the repository root and the test data folder
ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"

F32 = np.float32


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


def f32(a):
    return np.asarray(a, dtype=np.float32)


def bf16(a):
    bits = np.asarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.astype(np.uint32).view(np.float32)


# ----------------------------------------------------------------------- float32 kernels
def ladder(rope):
    """Exponent numerators 2t and denominator D of each pair (Axial: one ladder per axis)."""
    n, sc = rope.n_pairs, rope.scaling
    if isinstance(sc, S.Axial):
        g = n // sc.n_axes
        return 2.0 * (np.arange(n) % g), float(rope.rotary_dim // sc.n_axes)
    return 2.0 * np.arange(n), float(rope.rotary_dim)


def inv_freq_f32(rope, formula, seq_len):
    """inv_freq as float32 kernels form it; a schedule's factors applied in float32."""
    if formula == "rounded":
        return f32(rope.inv_freq(dtype=np.float32, seq_len=seq_len))
    num, den = ladder(rope)
    e = f32(f32(num) / F32(den))
    b = F32(rope.base)
    if formula == "reciprocal":  # HF: 1.0 / base ** (arange(0, d, 2) / d)
        inv = f32(F32(1) / f32(b**e))
    elif formula == "explog":  # flax / T5X: exp(arange(0, d, 2) * -(log(base) / d))
        inv = f32(np.exp(f32(f32(num) * f32(-f32(np.log(b)) / F32(den)))))
    elif formula == "explog-ratio":  # exp(-(arange / d) * log(base))
        inv = f32(np.exp(f32(-e * f32(np.log(b)))))
    elif formula == "exp2log2":  # exp2(arange * -(log2(base) / d))
        inv = f32(np.exp2(f32(f32(num) * f32(-f32(np.log2(b)) / F32(den)))))
    else:  # base ** (-arange / d)
        inv = f32(b ** (-e))
    ratio = rope.inv_freq(seq_len=seq_len) / np.exp(-(num / den) * math.log(rope.base))
    if np.all(np.abs(ratio - 1) < 1e-12):
        return inv
    if np.all(np.abs(ratio / ratio[0] - 1) < 1e-12):  # one factor: divide, as HF's linear does
        return f32(inv / F32(1 / ratio[0]))
    return f32(inv * f32(ratio))


def per_pair(rope, p):
    """The position driving each pair, shape tokens + (n_pairs,), by an explicit loop."""
    sc = rope.scaling
    if isinstance(sc, S.MRope):
        if not sc.interleaved:
            axes = [k for k, s in enumerate(sc.sections) for _ in range(s)]
        else:
            n = len(sc.sections)
            axes = [
                j % n if (j % n >= 1 and j < n * sc.sections[j % n]) else 0
                for j in range(rope.n_pairs)
            ]
        return np.stack([p[a] for a in axes], axis=-1)
    if isinstance(sc, S.Axial):
        g = rope.n_pairs // sc.n_axes
        return np.stack([p[..., j // g] for j in range(rope.n_pairs)], axis=-1)
    return np.repeat(p[..., None], rope.n_pairs, axis=-1)


def _load_mpmath_reference() -> dict[str, np.ndarray]:
    with np.load(DATA / "mpmath_cos_sin.npz", allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


#: the exact tables computed with mpmath by scripts/mpmath_reference.py (hi + lo per value)
MPMATH_REF = _load_mpmath_reference()


def mpmath_ref(d: int, b: float, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(hi, lo) of the exact cos or sin table for head_dim d and base b."""
    return MPMATH_REF[f"d{d}_b{b:g}_{name}_hi"], MPMATH_REF[f"d{d}_b{b:g}_{name}_lo"]
