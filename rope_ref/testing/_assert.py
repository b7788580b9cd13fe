"""assert_close: compare any Array-API arrays, with tolerances from an error model and
failure messages that locate and explain the error."""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable
from typing import Any

import array_api_compat
import numpy as np

from .. import _compat
from .._errors import RopeTypeError, RopeValueError
from .._rope import Rope

__all__ = ["assert_close", "default_tolerance", "diagnose", "to_numpy", "unit_roundoff"]

# unit roundoff u = 2**-p of the formats a kernel may compute in
_U = {"float64": 2.0**-53, "float32": 2.0**-24, "float16": 2.0**-11, "bfloat16": 2.0**-8}


def _dtype_name(dtype: Any) -> str:
    name = str(dtype).split(".")[-1].replace("'>", "").replace("dtype(", "").strip("')\"")
    for key in ("bfloat16", "float64", "float32", "float16"):  # bfloat16 before float16
        if key in name:
            return key
    return name


def unit_roundoff(dtype: Any) -> float:
    """u = 2**-p for the dtype under test (float64, float32, float16, bfloat16)."""
    name = _dtype_name(dtype)
    if name not in _U:
        raise RopeTypeError(f"dtype must be a real floating dtype, got {dtype}")
    return _U[name]


def to_numpy(x: Any) -> np.ndarray:
    """A NumPy copy of any Array-API array, through the array's own means.

    bfloat16 is widened to float32 (exactly) in the array's own namespace first; device arrays
    move with ``to_device("cpu")``; then DLPack, or ``__array__`` (Dask computes here). No
    framework is imported.
    """
    if isinstance(x, np.ndarray):
        return np.array(x, copy=True)
    if not _compat.is_array(x):
        return np.asarray(x)
    xp = array_api_compat.array_namespace(x)
    if _dtype_name(x.dtype) == "bfloat16":
        x = xp.astype(x, xp.float32)
    with contextlib.suppress(Exception):  # not every library names its host device "cpu"
        x = array_api_compat.to_device(x, "cpu")
    try:
        return np.array(np.from_dlpack(x), copy=True)
    except Exception:
        return np.array(x, copy=True)


def default_tolerance(
    dtype: Any,
    *,
    rope: Rope | None = None,
    positions: Any = None,
) -> tuple[float, float]:
    r"""(rtol, atol) for results of an implementation computing in ``dtype``.

    Error model (math sheet section 4): a kernel in a format with unit roundoff u makes a few
    roundings per output element, rtol = 8u. For RoPE outputs its angle m * theta_j is formed
    in that format (float32 at least: half-precision kernels form angles in float32, as they
    must), with an absolute phase error up to about
    :math:`\Delta\varphi(M) = 2 M \theta_1 u` at positions below M (theta_1, the largest
    frequency whose product with m rounds; theta_0 = 1 is exact), which moves each rotated
    pair by its norm times that phase (capped at 2, a rotation cannot move a pair further):
    atol = (2 M theta_1 u_angle + 8u) * max|desired| (with the
    attention factor included in desired). Without ``rope`` and ``positions``, atol = 8u times
    max|desired| (a floor for elements near zero).
    """
    u = unit_roundoff(dtype)
    rtol = 8 * u
    phase = 0.0
    if rope is not None and positions is not None:
        pos = to_numpy(positions).astype(np.float64)
        big_m = float(np.max(np.abs(pos))) if pos.size else 0.0
        theta = rope.inv_freq()
        theta1 = float(np.max(theta[1:])) if theta.size > 1 else 0.0
        # angles are formed in at least float32 (forming them in float16/bfloat16 is the bug
        # the diagnosis looks for), so the phase term uses min(u, 2**-24)
        phase = min(2.0 * big_m * theta1 * min(u, 2.0**-24), 2.0)
    return rtol, phase + 8 * u


def _ulps(actual: np.ndarray, desired: np.ndarray, dtype_name: str) -> np.ndarray:
    """|actual - desired| in units of the last place of desired, in the dtype under test."""
    p = {"float64": 53, "float32": 24, "float16": 11, "bfloat16": 8}.get(dtype_name, 53)
    mag = np.abs(desired)
    tiny = {
        "float64": 2.0**-1022,
        "float32": 2.0**-126,
        "float16": 2.0**-14,
        "bfloat16": 2.0**-126,
    }.get(dtype_name, 2.0**-1022)
    with np.errstate(divide="ignore"):
        e = np.floor(np.log2(np.maximum(mag, tiny)))
    unit = np.exp2(e - (p - 1))
    return np.abs(actual - desired) / unit


def _pair_of(channel: int, rope: Rope) -> str:
    r = rope.rotary_dim
    if channel >= r:
        return f"channel {channel} (pass-through)"
    h = r // 2
    j = channel % h if rope.layout == "half" else channel // 2
    return f"rotary pair {j} (channel {channel}, {rope.layout} layout)"


def _buckets(err: np.ndarray, pos: np.ndarray) -> list[str]:
    """Max abs error per position range [0, 2**8), [2**8, 2**12), ... (by |position|)."""
    edges = [0, 2**8, 2**12, 2**16, 2**20, 2**24, 2**31, 2**53]
    apos = np.abs(pos)
    out = []
    for lo, hi in itertools.pairwise(edges):
        sel = (apos >= lo) & (apos < hi)
        if np.any(sel):
            out.append(
                f"    |position| in [{lo}, {hi}): max abs error {float(np.max(err[sel])):.3e}"
            )
    return out


def low_precision_cos_sin(
    rope: Rope,
    positions: Any,
    rounder: Callable[[np.ndarray], np.ndarray] = lambda a: np.asarray(a, dtype=np.float32),
    *,
    role: str = "query",
) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin as a typical kernel makes them: ``positions * inv_freq`` and cos/sin in
    float32, every intermediate passed through ``rounder`` (float32 by default; ``_bf16`` for
    bfloat16 angles). Handles what rope_ref handles: dynamic schedules (the length read from
    the positions, as rope_ref does), multi-axis positions, attention factors and xPos.
    Float32 NumPy arrays of shape ``rope.token_shape(positions.shape) + (n_pairs,)``."""
    pos = np.asarray(positions)
    scaling = rope.scaling
    seq_len = int(pos.max()) + 1 if scaling is not None and scaling.dynamic else None
    theta = rounder(rope.inv_freq(dtype=np.float32, seq_len=seq_len))
    p = rounder(pos.astype(np.float32))
    axes = None if scaling is None else scaling.pair_axes(rope)
    if axes is None:
        per_pair = p[..., None]
    else:
        leading = scaling.axis_position == "leading"  # type: ignore[union-attr]
        along = [p[k] if leading else p[..., k] for k in range(max(axes) + 1)]
        per_pair = np.stack([along[a] for a in axes], axis=-1)
    ang = rounder(per_pair * theta)
    f = np.float32(rope._attention_factor(seq_len))
    c = np.cos(ang).astype(np.float32) * f
    s = np.sin(ang).astype(np.float32) * f
    if scaling is not None:
        xp = _compat.array_namespace()
        mag = scaling.magnitude(xp, pos.astype(np.float64), rope, role=role, seq_len=seq_len,
                                dtype=xp.float64)
        if mag is not None:
            c, s = c * np.asarray(mag, dtype=np.float32), s * np.asarray(mag, dtype=np.float32)
    return c, s


def _rotate_np(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, rope: Rope) -> np.ndarray:
    """Rotate in float64 NumPy with given half-width tables (for the mistake simulations)."""
    y = x.astype(np.float64).copy()
    r, h = rope.rotary_dim, rope.rotary_dim // 2
    if rope.layout == "half":
        a, b = slice(0, h), slice(h, r)
    else:
        a, b = slice(0, r, 2), slice(1, r, 2)
    xa, xb = x[..., a].astype(np.float64), x[..., b].astype(np.float64)
    y[..., a] = xa * cos - xb * sin
    y[..., b] = xb * cos + xa * sin
    return y


def _bf16(a: np.ndarray) -> np.ndarray:
    """Round float32 values to bfloat16 (nearest even), returned as float32."""
    bits = np.asarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + np.uint64(0x7FFF) + ((bits >> np.uint64(16)) & np.uint64(1))) & np.uint64(
        0xFFFF0000
    )
    return rounded.astype(np.uint32).view(np.float32)


def _mistakes(x: np.ndarray, pos: np.ndarray, rope: Rope) -> list[tuple[str, Callable[[], Any]]]:
    """Simulations of the usual RoPE mistakes: (description, function giving that output)."""
    from .._apply import apply_rope

    out: list[tuple[str, Callable[[], Any]]] = []
    other: Any = "interleaved" if rope.layout == "half" else "half"
    swapped = Rope(
        rope.head_dim,
        base=rope.base,
        rotary_dim=rope.rotary_dim,
        layout=other,
        scaling=rope.scaling,
    )
    out.append(
        (
            f"the other layout ({other!r} instead of {rope.layout!r})",
            lambda: apply_rope(x, pos, swapped),
        )
    )
    out.append(("positions shifted by +1", lambda: apply_rope(x, pos + 1, rope)))
    out.append(("positions shifted by -1", lambda: apply_rope(x, pos - 1, rope)))
    out.append(
        (
            "rotation by -m (sin sign flipped, or q/k rotated the wrong way)",
            lambda: apply_rope(x, -pos, rope),
        )
    )
    if rope.scaling is not None:
        plain = Rope(rope.head_dim, base=rope.base, rotary_dim=rope.rotary_dim, layout=rope.layout)
        out.append(("the frequency scaling not applied", lambda: apply_rope(x, pos, plain)))
    if rope.attention_factor != 1.0:
        af = rope.attention_factor
        out.append(
            (
                f"the attention factor {af:.6g} missing from cos and sin",
                lambda: apply_rope(x, pos, rope) / af,
            )
        )
    cos, sin = rope.cos_sin(pos)
    out.append(("cos and sin swapped", lambda: _rotate_np(x, sin, cos, rope)))

    def low_precision(rounder: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        c, s = low_precision_cos_sin(rope, pos, rounder)
        return _rotate_np(x, c.astype(np.float64), s.astype(np.float64), rope)

    out.append(
        (
            "angles formed in float32 (positions * inv_freq in float32)",
            lambda: low_precision(lambda a: np.asarray(a, dtype=np.float32)),
        )
    )
    out.append(
        (
            "angles formed in bfloat16 (positions and inv_freq in bfloat16)",
            lambda: low_precision(_bf16),
        )
    )
    return out


def diagnose(
    actual: np.ndarray,
    x: np.ndarray,
    positions: np.ndarray,
    rope: Rope,
    *,
    rtol: float,
    atol: float,
    error: float,
) -> list[str]:
    """The usual RoPE mistakes whose simulation reproduces ``actual`` (NumPy arrays): within
    the tolerance, or 20 times closer than the reference (``error``, the max abs error)."""
    a_np = np.asarray(actual, dtype=np.float64)
    found = []
    for text, make in _mistakes(np.asarray(x, dtype=np.float64), np.asarray(positions), rope):
        try:
            cand = np.asarray(make(), dtype=np.float64)
        except Exception:
            continue
        if cand.shape != a_np.shape:
            continue
        c_err = np.abs(a_np - cand)
        if np.all(c_err <= atol + rtol * np.abs(cand)) or np.max(c_err) < 0.05 * error:
            found.append(f"{text} (max abs difference {float(np.max(c_err)):.2e})")
    return found


def assert_close(
    actual: Any,
    desired: Any,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    dtype: Any = None,
    rope: Rope | None = None,
    positions: Any = None,
    x: Any = None,
    check_dtype: bool = True,
    check_device: bool = True,
    check_namespace: bool = True,
    msg: str | None = None,
) -> None:
    """Assert ``|actual - desired| <= atol + rtol * |desired|`` element by element.

    ``actual`` and ``desired`` are arrays of any Array-API library on any device. Checked in
    order: namespace, shape, dtype, device, then values (``check_*`` turn the first checks
    off). Tolerances are given together or not at all; by default they come from
    :func:`default_tolerance` for ``dtype`` (default: actual's dtype) and, for RoPE outputs
    (``rope`` and ``positions`` given), the largest position times the frequencies.

    On failure the message names the worst element (index, and for RoPE outputs its position
    and rotary pair), both values, the absolute and relative error, the error in ulps of the
    dtype under test, how many elements fail, and the error per position range. Given the
    input ``x`` as well, it tries the usual mistakes (other layout, positions off by one,
    rotation sign, scaling or attention factor missing, cos/sin swapped, angles formed in
    float32 or bfloat16) and says which one explains the data.

    Examples
    --------
    >>> import numpy as np, rope_ref as rr
    >>> from rope_ref.testing import assert_close
    >>> rope = rr.Rope(head_dim=8, layout="half")
    >>> x = np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32)
    >>> pos = np.arange(16)
    >>> assert_close(rr.apply_rope(x, pos, rope), rr.apply_rope(x, pos, rope))
    >>> other = rr.Rope(head_dim=8, layout="interleaved")       # a layout mix-up
    >>> try:
    ...     assert_close(rr.apply_rope(x, pos, other), rr.apply_rope(x, pos, rope),
    ...                  rope=rope, positions=pos, x=x)
    ... except AssertionError as e:
    ...     print("interleaved" in str(e))
    True
    """
    __tracebackhide__ = True
    if (rtol is None) != (atol is None):
        raise RopeValueError("give rtol and atol together, or neither (for the default model)")
    for name, arr in (("actual", actual), ("desired", desired)):
        if not _compat.is_array(arr):
            raise RopeTypeError(f"{name} must be an array, got {type(arr).__name__}")
    head = f"{msg}: " if msg else ""
    if check_namespace:
        xa = array_api_compat.array_namespace(actual)
        xd = array_api_compat.array_namespace(desired)
        if xa is not xd:
            raise AssertionError(
                f"{head}namespaces differ: actual is {xa.__name__}, desired is {xd.__name__}"
            )
    if tuple(actual.shape) != tuple(desired.shape):
        raise AssertionError(
            f"{head}shapes differ: actual {tuple(actual.shape)}, desired {tuple(desired.shape)}"
        )
    if check_dtype and actual.dtype != desired.dtype:
        raise AssertionError(f"{head}dtypes differ: actual {actual.dtype}, desired {desired.dtype}")
    if check_device:
        da, dd = _compat.device_of(actual), _compat.device_of(desired)
        if da is not None and dd is not None and da != dd:
            raise AssertionError(f"{head}devices differ: actual on {da!r}, desired on {dd!r}")
    dtype_name = _dtype_name(dtype if dtype is not None else actual.dtype)
    if rtol is None or atol is None:
        rtol, atol_unit = default_tolerance(dtype_name, rope=rope, positions=positions)
        d_np = to_numpy(desired).astype(np.float64)
        scale = float(np.max(np.abs(d_np))) if d_np.size else 0.0
        atol = atol_unit * (scale if scale > 0 else 1.0)
    else:
        d_np = to_numpy(desired).astype(np.float64)
    a_np = to_numpy(actual).astype(np.float64)
    err = np.abs(a_np - d_np)
    bad = ~(err <= atol + rtol * np.abs(d_np))  # NaN counts as bad
    bad &= ~((a_np == d_np) | (np.isnan(a_np) & np.isnan(d_np)))
    if not np.any(bad):
        return
    n_bad, total = int(np.sum(bad)), bad.size
    score = np.where(bad, np.nan_to_num(err, nan=np.inf) - (atol + rtol * np.abs(d_np)), -np.inf)
    worst = np.unravel_index(int(np.argmax(score)), bad.shape)
    a_w, d_w, e_w = a_np[worst], d_np[worst], err[worst]
    rel = e_w / abs(d_w) if d_w != 0 else math.inf
    ulp = float(_ulps(np.asarray(a_w), np.asarray(d_w), dtype_name))
    lines = [
        f"{head}arrays are not close: {n_bad} of {total} elements exceed "
        f"atol={atol:.3e} + rtol={rtol:.3e} * |desired| (tolerances for {dtype_name})",
        f"  worst at index {tuple(int(i) for i in worst)}: actual {float(a_w)!r}, "
        f"desired {float(d_w)!r}",
        f"  abs error {e_w:.3e}, rel error {rel:.3e}, {ulp:.4g} ulp of {dtype_name}",
    ]
    pos_np = None
    if rope is not None and positions is not None and a_np.ndim >= 1:
        pos_np = np.broadcast_to(to_numpy(positions).astype(np.float64), a_np.shape[:-1])
        lines.append(f"  position {pos_np[worst[:-1]]:g}, {_pair_of(int(worst[-1]), rope)}")
        lines.append("  max abs error by |position|:")
        lines += _buckets(np.max(err, axis=-1), pos_np)
    if rope is not None and pos_np is not None and x is not None:
        found = diagnose(
            a_np,
            to_numpy(x),
            to_numpy(positions),
            rope,
            rtol=rtol,
            atol=atol,
            error=float(np.max(err)),
        )
        if found:
            lines.append("  the data is explained by: " + "; or ".join(found))
        else:
            lines.append("  none of the usual mistakes explains the data")
    raise AssertionError("\n".join(lines))
