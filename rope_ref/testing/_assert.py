"""assert_close and its helpers (kept importable from here).

The comparison lives in :mod:`rope_ref.testing._compare`, the per-element error model in
``rope_ref.testing._error_model`` and the fitted diagnoses in
:mod:`rope_ref.testing._diagnose`. :func:`default_tolerance` is the scalar summary kept for
golden-file manifests and older callers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._rope import Rope
from .._typing import Array
from ._compare import RopeToleranceWarning, assert_close, compare, to_numpy
from ._compare import ulps as _ulps
from ._diagnose import bf16 as _bf16
from ._diagnose import diagnose, low_precision_cos_sin
from ._diagnose import rotate as _rotate_np
from ._error_model import U32, float8_format, unit_roundoff
from ._error_model import dtype_name as _dtype_name

__all__ = [
    "RopeToleranceWarning",
    "assert_close",
    "compare",
    "default_tolerance",
    "diagnose",
    "low_precision_cos_sin",
    "to_numpy",
    "unit_roundoff",
]

_ = (_ulps, _bf16, _rotate_np, _dtype_name)  # re-exported for older importers


def default_tolerance(
    dtype: Any,
    *,
    rope: Rope | None = None,
    positions: Array = None,
) -> tuple[float, float]:
    r"""(rtol, atol) for results of an implementation computing in ``dtype``: one scalar pair
    for manifests and tables (``assert_close`` itself uses a per-element allowance, see
    :func:`rope_ref.testing.compare`).

    ``rtol = 8u``; ``atol = (min(2 M theta_1 u_angle, 2) + 8u)`` in units of
    ``max|desired|``, with M the largest ``|position|``, theta_1 the largest frequency after
    theta_0 and u_angle = min(u, 2**-24); the rule is ``|a - d| <= atol * max|d| + rtol * |d|``.

    This is a scalar summary of the error model, used for the ``tolerance`` of golden-file
    manifests; it is not what :func:`assert_close` applies. It leaves pair 0 out (exact
    only while theta_0 = 1): under a schedule that changes theta_0 (linear, LongRoPE) it
    does not bound pair 0's phase error, and it is narrower than the per-element allowance
    for the fast pairs and wider for the slow ones. Without ``rope`` it equals
    ``assert_close``'s own allowance, ``8u |d| + 8u max|d|``.

    For a float8 dtype it summarizes the allowance of a float8 result against the exactly
    rounded float8 reference (A_8,8 of ``rope_ref.testing._error_model``, without ``x``,
    rotation in a float32 intermediate): the gap to the lattice neighbour plus the kernel's
    own rounding, ``|q - d| <= h(d) + D + h(c)`` with the half spacings ``h(v) <= u8 |v|``
    and ``|c| <= (1 + u8) |d| + D``, so ``rtol = 2 u8 + u8**2 + u_div (1 + u8)**2`` (one
    spacing at the bottom of a binade, ``2 u8 |d|``) and ``atol = (phase + 8 u32)(1 + u_div)
    (1 + u8)**2``, with u8 the format's unit roundoff, u32 = 2**-24 and u_div = 2 u32. The
    subnormal floor (twice half the smallest subnormal, an absolute amount) cannot be
    written as a multiple of ``max|desired|`` and is left out: elements near zero need the
    per-element allowance of :func:`compare`. As a scalar it cannot use the binade: at the
    top of one it allows up to two spacings where :func:`compare` allows one.

    Parameters
    ----------
    dtype : dtype or str
        The dtype under test.
    rope : Rope, optional
        With ``positions``, adds the phase term.
    positions : array, optional
        The positions.

    Returns
    -------
    tuple of float
        ``(rtol, atol)``, atol as a multiple of ``max|desired|``.
    """
    u = unit_roundoff(dtype)
    fmt = float8_format(dtype)
    if fmt is not None:
        u = U32  # the float32 intermediate's rounding drives the phase and "exact" terms
    rtol = 8 * u
    phase = 0.0
    if rope is not None and positions is not None:
        pos = to_numpy(positions).astype(np.float64)
        big_m = float(np.max(np.abs(pos))) if pos.size else 0.0
        theta = rope.inv_freq()
        theta1 = float(np.max(theta[1:])) if theta.size > 1 else 0.0
        phase = min(2.0 * big_m * theta1 * min(u, 2.0**-24), 2.0)
    if fmt is not None:
        u_div = 2 * U32
        grow = (1 + u_div) * (1 + fmt.u) ** 2
        rtol8 = 2 * fmt.u + fmt.u**2 + u_div * (1 + fmt.u) ** 2
        return rtol8, (phase + 8 * u) * grow
    return rtol, phase + 8 * u
